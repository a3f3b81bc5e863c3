//! Kubernetes objects in YAML files: which documents of a file are Kubernetes objects, and what
//! the policy needs to know about each (identity, replicas, autoscaling target, database
//! credentials in the environment, ConfigMaps and Secrets it reads).
//!
//! Rules: a file is split into its YAML documents (`---` / `...` lines) and every document is
//! judged on its own. A document is a Kubernetes object when it parses (with `serde_norway`) as a
//! mapping with string `apiVersion` and `kind`. Helm template actions are neutralised before
//! parsing (a line holding only actions is blanked, inline `{{ ... }}` becomes a placeholder), so
//! templates parse too; a document that still does not parse but has top-level `apiVersion:` and
//! `kind:` lines counts as an object whose details are unknown. Line numbers always refer to the
//! original file.

use std::sync::LazyLock;

use regex::Regex;
use serde_norway::Value;

use crate::names::normalize_name;

/// One YAML document of a file.
#[derive(Debug, Clone)]
pub struct Document {
    /// 1-based first line of the document's content.
    pub first_line: usize,
    /// 1-based last line (inclusive).
    pub last_line: usize,
    /// True when the document is a Kubernetes object.
    pub kubernetes: bool,
    /// The parsed document, when it is a Kubernetes object that parsed.
    pub value: Option<Value>,
}

/// A scalar as written in the file, with its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scalar {
    /// The text after the key, as written (quotes and templates kept, comments removed).
    pub raw: String,
    /// 1-based line.
    pub line: usize,
}

/// An environment variable of a container that carries database credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    /// The variable's name (`DB_PASSWORD`).
    pub name: String,
    /// Where the value comes from: `secretKeyRef database-secrets/password`, `literal`, ...
    pub from: String,
    /// 1-based line of the `name:` entry.
    pub line: usize,
    /// 1-based column of the name.
    pub column: usize,
}

/// What the policy needs to know about one Kubernetes object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct K8sObject {
    /// `kind` (`Deployment`, `Job`, `ConfigMap`, ...).
    pub kind: String,
    /// `metadata.name`.
    pub name: Option<String>,
    /// 1-based first and last line of the document.
    pub first_line: usize,
    /// 1-based last line (inclusive).
    pub last_line: usize,
    /// 1-based line of `kind:`.
    pub kind_line: usize,
    /// Names that identify the workload, most specific first: `app.kubernetes.io/name`, `app`
    /// and `k8s-app` labels, `metadata.name`, container names, image names.
    pub identities: Vec<String>,
    /// Names of the ConfigMaps and Secrets it reads (`envFrom`, `valueFrom`, volumes).
    pub refs: Vec<String>,
    /// `spec.replicas` as written.
    pub replicas: Option<Scalar>,
    /// For a HorizontalPodAutoscaler: `spec.scaleTargetRef.name`.
    pub scale_target: Option<String>,
    /// For a HorizontalPodAutoscaler: `spec.maxReplicas` as written.
    pub max_replicas: Option<Scalar>,
    /// Container environment variables carrying database credentials.
    pub credentials: Vec<Credential>,
    /// True when the workload is a database server or pooler itself (PostgreSQL, pgvector,
    /// PgBouncer, MySQL, ... images, or `PGDATA` in its environment).
    pub db_server: bool,
    /// True when a Job/CronJob looks like a schema migration (name, labels, containers, image
    /// or command mention migrate/schema/flyway/liquibase/goose/dbmate/alembic/sqitch).
    pub migration: bool,
    /// For a Helm template document wrapped in `{{- if .Values.a.b }}`: the values path (`a.b`)
    /// that decides whether the object is rendered at all.
    pub condition: Option<String>,
}

impl K8sObject {
    /// True for long-running workloads (Deployment, StatefulSet, DaemonSet, ReplicaSet, Pod).
    pub fn is_long_running(&self) -> bool {
        matches!(
            self.kind.as_str(),
            "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Pod" | "DeploymentConfig"
        )
    }

    /// True for Jobs and CronJobs.
    pub fn is_job(&self) -> bool {
        matches!(self.kind.as_str(), "Job" | "CronJob")
    }

    /// `Kind/name`.
    pub fn label(&self) -> String {
        format!("{}/{}", self.kind, self.name.as_deref().unwrap_or("?"))
    }

    /// True when the 1-based `line` lies in the object's document.
    pub fn contains_line(&self, line: usize) -> bool {
        line >= self.first_line && line <= self.last_line
    }
}

static DOC_MARKER: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^(?:---(?:\s.*)?|\.\.\.\s*)$").expect("pattern compiles"));
static API_VERSION: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?m)^apiVersion:\s*\S").expect("pattern compiles"));
static KIND: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?m)^kind:\s*\S").expect("pattern compiles"));
static TEMPLATE_ACTION: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\{\{.*?\}\}").expect("pattern compiles"));

/// Splits `text` into its YAML documents and decides for each whether it is a Kubernetes object.
pub fn documents(text: &str) -> Vec<Document> {
    let lines: Vec<&str> = text.lines().collect();
    let mut ranges: Vec<(usize, usize)> = Vec::new(); // 0-based [start, end)
    let mut start = 0;
    for (i, line) in lines.iter().enumerate() {
        if DOC_MARKER.is_match(line.trim_end()) {
            if i > start {
                ranges.push((start, i));
            }
            start = i + 1;
        }
    }
    if lines.len() > start {
        ranges.push((start, lines.len()));
    }
    ranges
        .into_iter()
        .map(|(a, b)| {
            let body = lines[a..b].join("\n");
            let candidate = API_VERSION.is_match(&body) && KIND.is_match(&body);
            let (kubernetes, value) = if candidate {
                match serde_norway::from_str::<Value>(&neutralise_templates(&body)) {
                    Ok(v) => (is_object(&v), Some(v)),
                    Err(_) => (true, None),
                }
            } else {
                (false, None)
            };
            Document {
                first_line: a + 1,
                last_line: b,
                kubernetes,
                value: value.filter(|_| kubernetes),
            }
        })
        .collect()
}

fn is_object(v: &Value) -> bool {
    v.get("apiVersion").and_then(Value::as_str).is_some()
        && v.get("kind").and_then(Value::as_str).is_some()
}

/// Makes a Helm template parseable as YAML without moving lines: a line that holds only template
/// actions becomes empty, an inline action becomes the placeholder `TPL`.
fn neutralise_templates(body: &str) -> String {
    if !body.contains("{{") {
        return body.to_string();
    }
    body.lines()
        .map(|line| {
            if !line.contains("{{") {
                return line.to_string();
            }
            let rest = TEMPLATE_ACTION.replace_all(line, "");
            if rest.trim().is_empty() || rest.trim() == "-" {
                String::new()
            } else {
                TEMPLATE_ACTION.replace_all(line, "TPL").into_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The Kubernetes objects among a YAML file's documents (split by [`documents`]). `code` is the
/// file's code view (comments blanked), so values read from lines carry no trailing comments.
pub fn objects(docs: &[Document], code: &str) -> Vec<K8sObject> {
    let lines: Vec<&str> = code.lines().collect();
    docs.iter()
        .filter_map(|d| {
            let v = d.value.as_ref()?;
            Some(object(v, &lines, d.first_line, d.last_line))
        })
        .collect()
}

static REPLICAS: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^(\s+)replicas:\s*(\S.*?)\s*$").expect("pattern compiles"));
static MAX_REPLICAS: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^(\s+)maxReplicas:\s*(\S.*?)\s*$").expect("pattern compiles"));
static IF_VALUES: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^\s*\{\{-?\s*if\s+\.Values\.([A-Za-z0-9_.-]+)\s*-?\}\}\s*$")
        .expect("pattern compiles")
});
static KIND_LINE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^kind:").expect("pattern compiles"));
static DB_SERVER_IMAGE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)^(?:postgres|postgresql|pgvector|postgis|timescaledb|timescaledb-ha|spilo|patroni|pgbouncer|pgpool|pgpool-ii|pgcat|odyssey|crunchy-postgres|crunchy-pgbouncer|mysql|mariadb|percona|cockroach|cockroachdb)(?:[-_.]?\d[\w.-]*)?$|^(?:postgres|postgresql)-\w+$")
        .expect("pattern compiles")
});
/// Environment variable names that carry database credentials.
static CREDENTIAL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(?:[A-Z0-9]+_)*(?:DB|DATABASE|DATASOURCE|POSTGRES|POSTGRESQL|PG|PSQL|MYSQL|MARIADB|SQL)_?(?:PASSWORD|PASSWD|PASS|PWD|URL|URI|DSN|CONNECTION_?STRING|CONN_?STR(?:ING)?)$")
        .expect("pattern compiles")
});
const SERVER_ENV: &[&str] = &[
    "PGDATA",
    "POSTGRES_INITDB_ARGS",
    "POSTGRESQL_ADMIN_PASSWORD",
    "MYSQL_ROOT_PASSWORD",
];
const MIGRATION_WORDS: &[&str] = &[
    "migrat",
    "schema",
    "flyway",
    "liquibase",
    "goose",
    "dbmate",
    "alembic",
    "sqitch",
];

/// True when an environment variable name carries database credentials (`DB_PASSWORD`,
/// `DATABASE_URL`, `PGPASSWORD`, `POSTGRES_PASSWORD`, `AUDIT_DB_DSN`, ...).
pub fn is_credential_env(name: &str) -> bool {
    CREDENTIAL.is_match(&name.to_ascii_uppercase())
}

fn object(v: &Value, lines: &[&str], first: usize, last: usize) -> K8sObject {
    let s = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_string);
    let kind = s(v.get("kind")).unwrap_or_default();
    let name = s(v.get("metadata").and_then(|m| m.get("name")));
    let doc = |i: usize| lines.get(i - 1).copied().unwrap_or("");
    let kind_line = (first..=last)
        .find(|&i| KIND_LINE.is_match(doc(i)))
        .unwrap_or(first);
    let condition = (first..=last)
        .map(doc)
        .find(|l| !l.trim().is_empty())
        .and_then(|l| IF_VALUES.captures(l))
        .map(|c| c[1].to_string());
    let mut o = K8sObject {
        kind: kind.clone(),
        name: name.clone(),
        first_line: first,
        last_line: last,
        kind_line,
        condition,
        ..K8sObject::default()
    };
    let spec = v.get("spec");
    let template_meta = pod_template(&kind, spec).and_then(|t| t.get("metadata"));
    for meta in [v.get("metadata"), template_meta].into_iter().flatten() {
        for key in ["app.kubernetes.io/name", "app", "k8s-app"] {
            if let Some(l) = s(meta.get("labels").and_then(|l| l.get(key))) {
                push_unique(&mut o.identities, l);
            }
        }
    }
    if let Some(n) = &name {
        push_unique(&mut o.identities, n.clone());
    }
    let find_scalar = |re: &Regex| -> Option<Scalar> {
        (first..=last).find_map(|i| {
            let caps = re.captures(doc(i))?;
            Some(Scalar {
                raw: caps.get(2)?.as_str().to_string(),
                line: i,
            })
        })
    };
    if kind == "HorizontalPodAutoscaler" {
        o.scale_target = s(spec
            .and_then(|s| s.get("scaleTargetRef"))
            .and_then(|r| r.get("name")));
        o.max_replicas = find_scalar(&MAX_REPLICAS);
        return o;
    }
    let Some(pod) = pod_template(&kind, spec)
        .and_then(|t| t.get("spec"))
        .or_else(|| (kind == "Pod").then_some(spec).flatten())
    else {
        return o;
    };
    if spec.and_then(|s| s.get("replicas")).is_some() {
        o.replicas = find_scalar(&REPLICAS);
    }
    let containers: Vec<&Value> = ["initContainers", "containers"]
        .iter()
        .filter_map(|k| pod.get(*k).and_then(Value::as_sequence))
        .flatten()
        .collect();
    let mut haystack = format!(
        "{} {}",
        name.clone().unwrap_or_default(),
        o.identities.join(" ")
    );
    let mut search_from = first;
    let mut env_names: Vec<String> = Vec::new();
    for c in &containers {
        if let Some(n) = s(c.get("name")) {
            haystack.push(' ');
            haystack.push_str(&n);
            push_unique(&mut o.identities, n);
        }
        if let Some(image) = s(c.get("image")) {
            let base = image_name(&image);
            haystack.push(' ');
            haystack.push_str(&image);
            if DB_SERVER_IMAGE.is_match(&base) {
                o.db_server = true;
            }
            push_unique(&mut o.identities, base);
        }
        for key in ["command", "args"] {
            for part in c
                .get(key)
                .and_then(Value::as_sequence)
                .into_iter()
                .flatten()
            {
                if let Some(p) = part.as_str() {
                    haystack.push(' ');
                    haystack.push_str(p);
                }
            }
        }
        for from in c
            .get("envFrom")
            .and_then(Value::as_sequence)
            .into_iter()
            .flatten()
        {
            for key in ["configMapRef", "secretRef"] {
                if let Some(n) = s(from.get(key).and_then(|r| r.get("name"))) {
                    push_unique(&mut o.refs, n);
                }
            }
        }
        for env in c
            .get("env")
            .and_then(Value::as_sequence)
            .into_iter()
            .flatten()
        {
            let Some(env_name) = s(env.get("name")) else {
                continue;
            };
            env_names.push(env_name.clone());
            let value_from = env.get("valueFrom");
            let mut from = "literal".to_string();
            for key in ["secretKeyRef", "configMapKeyRef"] {
                if let Some(r) = value_from.and_then(|vf| vf.get(key)) {
                    let rn = s(r.get("name")).unwrap_or_default();
                    from = format!("{key} {rn}/{}", s(r.get("key")).unwrap_or_default());
                    push_unique(&mut o.refs, rn);
                }
            }
            if value_from.is_some() && from == "literal" {
                from = "valueFrom".to_string();
            }
            if !is_credential_env(&env_name) {
                continue;
            }
            // The `name:` line of this entry: searched after the previous credential's (the
            // usual order), else anywhere in the document (initContainers written last).
            let name_line = |i: usize| name_entry_column(doc(i), &env_name).map(|c| (i, c));
            let (line, column) = (search_from..=last)
                .find_map(name_line)
                .or_else(|| (first..=last).find_map(name_line))
                .unwrap_or((kind_line, 1));
            search_from = line + 1;
            o.credentials.push(Credential {
                name: env_name,
                from,
                line,
                column,
            });
        }
    }
    for vol in pod
        .get("volumes")
        .and_then(Value::as_sequence)
        .into_iter()
        .flatten()
    {
        if let Some(n) = s(vol.get("configMap").and_then(|c| c.get("name"))) {
            push_unique(&mut o.refs, n);
        }
        if let Some(n) = s(vol.get("secret").and_then(|c| c.get("secretName"))) {
            push_unique(&mut o.refs, n);
        }
    }
    if env_names.iter().any(|n| SERVER_ENV.contains(&n.as_str())) {
        o.db_server = true;
    }
    let hay = haystack.to_ascii_lowercase();
    o.migration = o.is_job() && MIGRATION_WORDS.iter().any(|w| hay.contains(w));
    o
}

/// The 1-based column of `name` when `line` is an env entry's `name: <name>` line (`- name:`,
/// quotes allowed).
fn name_entry_column(line: &str, name: &str) -> Option<usize> {
    let rest = line.trim_start();
    let rest = rest.strip_prefix('-').map_or(rest, str::trim_start);
    let value = rest.strip_prefix("name:")?.trim();
    let unquoted = value.trim_matches(|c| c == '"' || c == '\'');
    (unquoted == name && value.len() <= unquoted.len() + 2)
        .then(|| line.find(name).map(|i| i + 1))
        .flatten()
}

/// The pod template of a workload: `spec.template` (or `spec.jobTemplate.spec.template`).
fn pod_template<'a>(kind: &str, spec: Option<&'a Value>) -> Option<&'a Value> {
    let spec = spec?;
    if kind == "CronJob" {
        spec.get("jobTemplate")?.get("spec")?.get("template")
    } else {
        spec.get("template")
    }
}

/// `quay.io/org/data-storage:1.2@sha256:...` → `data-storage`.
fn image_name(image: &str) -> String {
    let no_digest = image.split('@').next().unwrap_or(image);
    let last = no_digest.rsplit('/').next().unwrap_or(no_digest);
    last.split(':').next().unwrap_or(last).to_string()
}

fn push_unique(v: &mut Vec<String>, s: String) {
    if !s.is_empty() && !v.contains(&s) {
        v.push(s);
    }
}

/// A PostgreSQL server setting declared in the repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgSetting {
    /// `max_connections` or `superuser_reserved_connections`.
    pub name: String,
    /// The value.
    pub value: u64,
    /// 1-based line.
    pub line: usize,
}

/// Finds PostgreSQL's server-side `max_connections` and `superuser_reserved_connections` in the
/// code view of a YAML or `postgresql.conf` file: `max_connections = 100` (postgresql.conf
/// syntax, also inside YAML block scalars, but not inside an embedded file that names another
/// format, such as an application's `config.toml: |`), `-c max_connections=100` and
/// `--max_connections=100` (server flags), `POSTGRES(QL)_MAX_CONNECTIONS` (image environment), and a
/// YAML key `max_connections: 100` when it sits under a PostgreSQL section (an ancestor key naming
/// postgres or `parameters`, as in CloudNativePG, Zalando and Crunchy manifests) and none of its
/// siblings is a client setting (`host`, `port`, `user`, `password`, ...), so an application's
/// own `max_connections` pool key is not mistaken for the server's.
pub fn postgres_settings(rel_path: &str, code: &str) -> Vec<PgSetting> {
    static CONF_OR_FLAG: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(
            r#"(?:^|[\s"'\[,=-])(max_connections|superuser_reserved_connections)\s*=\s*["']?(\d+)"#,
        )
        .expect("pattern compiles")
    });
    static YAML_KEY: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r#"^(\s*)(?:-\s+)?["']?(max_connections|superuser_reserved_connections|maxConnections)["']?\s*:\s*["']?(\d+)["']?\s*$"#)
            .expect("pattern compiles")
    });
    static ENV_KEY: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r#"(?:^|[\s"'-])(POSTGRES(?:QL)?_(MAX_CONNECTIONS|SUPERUSER_RESERVED_CONNECTIONS))["']?\s*[:=]\s*["']?(\d+)"#)
            .expect("pattern compiles")
    });
    static ENV_NAME: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r#"^\s*(?:-\s+)?name:\s*["']?(POSTGRES(?:QL)?_(MAX_CONNECTIONS|SUPERUSER_RESERVED_CONNECTIONS))["']?\s*$"#)
            .expect("pattern compiles")
    });
    static ENV_VALUE: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r#"^\s*value:\s*["']?(\d+)["']?\s*$"#).expect("pattern compiles")
    });
    let lines: Vec<&str> = code.lines().collect();
    let mut out = Vec::new();
    let mut push = |name: &str, value: &str, line: usize| {
        if let Ok(value) = value.parse() {
            out.push(PgSetting {
                name: name.to_ascii_lowercase(),
                value,
                line,
            });
        }
    };
    let path_says_postgres = rel_path.to_ascii_lowercase().contains("postgres");
    let yaml = !rel_path.ends_with(".conf");
    for (i, line) in lines.iter().enumerate() {
        if let Some(c) = CONF_OR_FLAG.captures(line) {
            let indent = line.len() - line.trim_start().len();
            if !(yaml && in_other_config_file(&yaml_context(&lines, i, indent).0)) {
                push(&c[1], &c[2], i + 1);
            }
            continue;
        }
        if let Some(c) = ENV_KEY.captures(line) {
            push(&c[2], &c[3], i + 1);
            continue;
        }
        if let Some(c) = ENV_NAME.captures(line) {
            if let Some(v) = lines.get(i + 1).and_then(|l| ENV_VALUE.captures(l)) {
                push(&c[2], &v[1], i + 1);
            }
            continue;
        }
        if let Some(c) = YAML_KEY.captures(line) {
            let indent = c[1].len();
            let (ancestors, siblings) = yaml_context(&lines, i, indent);
            let server_section = ancestors.iter().any(|a| {
                let k = a.to_ascii_lowercase();
                k.contains("postgres") || k == "parameters" || k == "pgparameters"
            }) || (ancestors.is_empty() && path_says_postgres);
            let client_sibling = siblings.iter().any(|s| {
                let k = normalize_name(s);
                [
                    "host", "hostname", "port", "user", "username", "password", "dsn", "url",
                    "sslmode", "dbname",
                ]
                .iter()
                .any(|c| k.ends_with(c))
            });
            let name = if &c[2] == "maxConnections" {
                "max_connections"
            } else {
                &c[2]
            };
            if server_section && !client_sibling {
                push(name, &c[3], i + 1);
            }
        }
    }
    out
}

/// True when the nearest enclosing key names an embedded file of a format that is not
/// PostgreSQL's (`config.toml: |`, `app.ini: |`): its `max_connections = 10` is an
/// application's pool, not the server's limit.
fn in_other_config_file(ancestors: &[String]) -> bool {
    const OTHER_FORMATS: &[&str] = &[
        ".toml",
        ".ini",
        ".cfg",
        ".properties",
        ".env",
        ".yaml",
        ".yml",
        ".json",
        ".hcl",
    ];
    ancestors.first().is_some_and(|k| {
        let k = k.to_ascii_lowercase();
        OTHER_FORMATS.iter().any(|ext| k.ends_with(ext))
    })
}

/// The keys of the enclosing mappings (nearest first) and the sibling keys of the key at line
/// `idx` with indentation `indent`, from indentation alone.
fn yaml_context(lines: &[&str], idx: usize, indent: usize) -> (Vec<String>, Vec<String>) {
    static KEY: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r#"^(\s*)(?:-\s+)?["']?([A-Za-z0-9_.\-/]+)["']?\s*:"#).expect("pattern compiles")
    });
    let indent_of = |l: &str| l.len() - l.trim_start().len();
    let mut ancestors = Vec::new();
    let mut want = indent;
    let mut block_start = 0;
    for j in (0..idx).rev() {
        let l = lines[j];
        if l.trim().is_empty() {
            continue;
        }
        let ind = indent_of(l);
        if ind < want {
            if let Some(c) = KEY.captures(l) {
                if ancestors.is_empty() {
                    block_start = j + 1;
                }
                ancestors.push(c[2].to_string());
                want = ind;
            }
            if ind == 0 {
                break;
            }
        }
    }
    let mut siblings = Vec::new();
    for (j, l) in lines.iter().enumerate().skip(block_start) {
        if l.trim().is_empty() || j == idx {
            continue;
        }
        let ind = indent_of(l);
        if j > idx && ind < indent {
            break;
        }
        if ind == indent {
            if let Some(c) = KEY.captures(l) {
                siblings.push(c[2].to_string());
            }
        }
    }
    (ancestors, siblings)
}

/// Parses a Helm values file, for resolving `{{ .Values.x }}` references.
pub fn parse_values(text: &str) -> Option<Value> {
    serde_norway::from_str::<Value>(text).ok()
}

/// The value at a dotted path (`database.maxOpenConns`) of a chart's values.
pub fn values_at<'a>(values: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(values, |cur, key| cur.get(key))
}

/// Helm's truthiness: `false`, `0`, `""`, null, an empty list or map (and a missing value) are
/// false.
pub fn is_truthy(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_f64().is_some_and(|f| f != 0.0),
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Sequence(s)) => !s.is_empty(),
        Some(Value::Mapping(m)) => !m.is_empty(),
        Some(Value::Tagged(t)) => is_truthy(Some(&t.value)),
    }
}

/// Resolves a scalar written in a manifest or template to a number: a (quoted) integer, or a
/// `{{ .Values.a.b }}` reference looked up in the chart's values (with `| default N` or
/// `required "..."` honoured).
pub fn resolve_number(raw: &str, values: Option<&Value>) -> Option<u64> {
    static VALUES_REF: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"\.Values\.([A-Za-z0-9_.-]+)").expect("pattern compiles"));
    static DEFAULT: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r#"\bdefault\s+["']?(\d+)["']?"#).expect("pattern compiles"));
    let t = raw.trim().trim_matches(|c| c == '"' || c == '\'');
    if let Ok(n) = t.parse::<u64>() {
        return Some(n);
    }
    if !t.contains("{{") {
        return None;
    }
    let from_values = VALUES_REF
        .captures(t)
        .zip(values)
        .and_then(|(c, vals)| values_at(vals, &c[1]))
        .and_then(|v| {
            v.as_u64()
                .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
        });
    from_values.or_else(|| DEFAULT.captures(t).and_then(|c| c[1].parse().ok()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::identity_key;

    fn objects_in(text: &str) -> Vec<K8sObject> {
        objects(&documents(text), text)
    }

    #[test]
    fn each_document_is_judged_on_its_own() {
        let text = "\
# app config first
database:
  max_open_conns: 10
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: x
---
kind: NotAnObject
spec: {}
";
        let docs = documents(text);
        let got: Vec<_> = docs
            .iter()
            .map(|d| (d.first_line, d.last_line, d.kubernetes))
            .collect();
        assert_eq!(got, [(1, 3, false), (5, 8, true), (10, 11, false)]);
    }

    #[test]
    fn helm_templates_parse_after_neutralising_actions() {
        let text = "\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include \"x.fullname\" . }}-datastorage
  labels:
    {{- include \"x.labels\" . | nindent 4 }}
spec:
  replicas: {{ .Values.replicas }}
  template:
    spec:
      containers:
        - name: datastorage
          image: \"kubernaut/datastorage:{{ .Chart.Version }}\"
";
        let objs = objects_in(text);
        assert_eq!(objs.len(), 1);
        assert_eq!(objs[0].kind, "Deployment");
        assert_eq!(
            objs[0].replicas.as_ref().map(|r| r.raw.as_str()),
            Some("{{ .Values.replicas }}")
        );
        assert_eq!(
            identity_key(objs[0].name.as_deref().unwrap()),
            "datastorage"
        );
    }

    #[test]
    fn credentials_refs_and_database_servers_are_recognised() {
        let text = "\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: webhook-service
spec:
  replicas: 3
  template:
    spec:
      containers:
        - name: webhook-service
          image: quay.io/acme/webhook-service:latest
          envFrom:
            - configMapRef:
                name: webhook-config
          env:
            - name: DB_USER
              value: app
            - name: DB_PASSWORD
              valueFrom:
                secretKeyRef:
                  name: database-secrets
                  key: password
---
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: postgres
spec:
  template:
    spec:
      containers:
        - name: postgres
          image: pgvector/pgvector:pg16
          env:
            - name: POSTGRES_PASSWORD
              value: secret
";
        let objs = objects_in(text);
        let web = &objs[0];
        assert_eq!(web.credentials.len(), 1);
        assert_eq!(web.credentials[0].name, "DB_PASSWORD");
        assert_eq!(web.credentials[0].line, 18);
        assert_eq!(
            web.credentials[0].from,
            "secretKeyRef database-secrets/password"
        );
        assert_eq!(web.refs, ["webhook-config", "database-secrets"]);
        assert_eq!(web.replicas.as_ref().unwrap().raw, "3");
        assert!(!web.db_server);
        assert!(objs[1].db_server, "the database itself is not a client");
        for n in [
            "DB_PASSWORD",
            "DATABASE_URL",
            "PGPASSWORD",
            "POSTGRES_PASSWORD",
            "audit_db_dsn",
        ] {
            assert!(is_credential_env(n), "{n}");
        }
        for n in ["DB_HOST", "REDIS_PASSWORD", "DB_MAX_OPEN_CONNS", "PASSWORD"] {
            assert!(!is_credential_env(n), "{n}");
        }
    }

    #[test]
    fn postgres_server_settings_are_found_but_client_pool_keys_are_not() {
        let yaml = "\
data:
  postgresql.conf: |
    max_connections = 100
    superuser_reserved_connections = 5
  args: [\"-c\", \"max_connections=200\"]
spec:
  postgresql:
    parameters:
      max_connections: \"300\"
app:
  data_storage:
    postgres_host: db
    max_connections: 25
env:
  - name: POSTGRESQL_MAX_CONNECTIONS
    value: \"400\"
";
        let got: Vec<_> = postgres_settings("deploy/x.yaml", yaml)
            .into_iter()
            .map(|s| (s.name, s.value, s.line))
            .collect();
        assert_eq!(
            got,
            [
                ("max_connections".to_string(), 100, 3),
                ("superuser_reserved_connections".to_string(), 5, 4),
                ("max_connections".to_string(), 200, 5),
                ("max_connections".to_string(), 300, 9),
                ("max_connections".to_string(), 400, 15),
            ]
        );
    }

    #[test]
    fn credential_lines_are_found_whatever_the_order_of_containers_and_init_containers() {
        let text = "\
apiVersion: v1
kind: Pod
metadata:
  name: api
spec:
  containers:
    - name: api
      env:
        - name: DB_PASSWORD
          value: x
  initContainers:
    - name: migrate
      env:
        - name: \"PGPASSWORD\"
          value: y
";
        let got: Vec<_> = objects_in(text)[0]
            .credentials
            .iter()
            .map(|c| (c.name.clone(), c.line, c.column))
            .collect();
        assert_eq!(
            got,
            [
                ("PGPASSWORD".to_string(), 14, 18),
                ("DB_PASSWORD".to_string(), 9, 17)
            ]
        );
    }

    #[test]
    fn max_connections_in_an_embedded_application_config_file_is_not_the_servers() {
        let yaml = "\
data:
  config.toml: |
    [database]
    url = \"postgres://app@db/app\"
    max_connections = 10
  postgresql.conf: |
    max_connections = 200
  custom.conf: |
    max_connections = 300
";
        let got: Vec<_> = postgres_settings("deploy/api/configmap.yaml", yaml)
            .into_iter()
            .map(|s| (s.value, s.line))
            .collect();
        assert_eq!(got, [(200, 7), (300, 9)]);
    }

    #[test]
    fn helm_values_resolve_numbers() {
        let values = parse_values("replicas: 3\ndb:\n  maxOpenConns: \"25\"\n");
        let v = values.as_ref();
        assert_eq!(resolve_number("\"50\"", v), Some(50));
        assert_eq!(resolve_number("{{ .Values.replicas }}", v), Some(3));
        assert_eq!(
            resolve_number("{{ .Values.db.maxOpenConns | quote }}", v),
            Some(25)
        );
        assert_eq!(
            resolve_number("{{ .Values.missing | default 7 }}", v),
            Some(7)
        );
        assert_eq!(resolve_number("{{ .Values.missing }}", v), None);
        assert_eq!(resolve_number("${REPLICAS}", v), None);
    }
}
