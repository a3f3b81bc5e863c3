//! Pool values written into Kubernetes manifests and Helm templates.
//!
//! Rules: a YAML file under a `templates/` directory (Helm) is deploy YAML as a whole. Any other
//! YAML file is split into its documents and only the documents that are Kubernetes objects
//! themselves ([`crate::k8s::documents`]) are deploy YAML, so an application config in the first
//! document of a file that also carries a ConfigMap is not. Helm values files (`values*.yaml`)
//! are where values belong and are never scanned for pool keys. Within deploy YAML a pool key is
//! recognised by name, whatever its spelling (`DB_MAX_OPEN_CONNS`, `maxOpenConns`,
//! `max-open-conns`) and with an optional unit suffix (`conn_max_lifetime_minutes`,
//! `connMaxIdleTimeSeconds`): as a mapping key, as an env entry (`name:` then `value:` or
//! `valueFrom:`), as a `KEY=VALUE` line in an embedded env file, or as a `--flag=value` argument.

use std::sync::LazyLock;

use regex::Regex;

use crate::k8s::Document;
use crate::names::normalize_name;
use crate::value::{classify_yaml_scalar_with_fallback, ValueSource};

/// Name endings (lower-case, separators removed) that identify a connection-pool setting.
/// PostgreSQL's own server-side `max_connections` is deliberately absent: it is not a pool.
const POOL_KEY_ENDINGS: &[&str] = &[
    "maxopenconns",
    "maxidleconns",
    "connmaxlifetime",
    "connmaxidletime",
    "maxconns",
    "minconns",
    "maxconnlifetime",
    "maxconnidletime",
    "poolsize",
    "poolmaxsize",
    "poolminsize",
    "maximumpoolsize",
    "minimumidle",
    "maxoverflow",
    "poolmax",
    "poolmin",
    "poolmaxconnections",
    "dbmaxconnections",
    "databasemaxconnections",
];

/// Unit suffixes a pool key may carry (`conn_max_lifetime_minutes`, `max_idle_time_ms`).
const UNIT_SUFFIXES: &[&str] = &[
    "nanoseconds",
    "microseconds",
    "milliseconds",
    "millis",
    "ms",
    "us",
    "ns",
    "seconds",
    "secs",
    "sec",
    "s",
    "minutes",
    "mins",
    "min",
    "m",
    "hours",
    "hrs",
    "hr",
    "h",
    "duration",
];

/// Name endings of settings that cap a pool's size (what the max_connections check multiplies).
const MAX_POOL_KEY_ENDINGS: &[&str] = &[
    "maxopenconns",
    "maxconns",
    "poolsize",
    "poolmaxsize",
    "maximumpoolsize",
    "poolmax",
    "poolmaxconnections",
    "dbmaxconnections",
    "databasemaxconnections",
];

/// A pool value found in deploy YAML.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YamlHit {
    /// 1-based line of the value.
    pub line: usize,
    /// 1-based column of the value.
    pub column: usize,
    /// The key or environment variable name as written.
    pub setting: String,
    /// The value as written.
    pub value: String,
    /// Whether the value is written there or templated.
    pub source: ValueSource,
    /// For a templated value: the literal it falls back to (`| default 20`, `${X:-20}`).
    pub fallback: Option<String>,
}

fn ends_with_key(norm: &str, endings: &[&str]) -> bool {
    std::iter::once(norm)
        .chain(UNIT_SUFFIXES.iter().filter_map(|u| norm.strip_suffix(u)))
        .any(|stem| endings.iter().any(|e| stem.ends_with(e)))
}

/// True when `key`, with case and separators ignored, names a connection-pool setting: it ends
/// in a known pool key, optionally followed by a unit suffix (`DB_MAX_OPEN_CONNS`,
/// `conn_max_lifetime_minutes`, `connMaxIdleTimeSeconds`).
pub fn is_pool_key(key: &str) -> bool {
    ends_with_key(&normalize_name(key), POOL_KEY_ENDINGS)
}

/// True when a pool key caps the pool's size (`maxOpenConns`, `DB_MAX_CONNECTIONS`,
/// `poolSize`, `maximumPoolSize`), as opposed to idle counts and timeouts.
pub fn is_max_pool_key(key: &str) -> bool {
    let norm = normalize_name(key);
    MAX_POOL_KEY_ENDINGS.iter().any(|e| norm.ends_with(e))
}

/// True for Helm values files (`values.yaml`, `values-prod.yml`, ...), which are allowed to hold
/// literal values.
pub fn is_values_file(rel_path: &str) -> bool {
    let name = rel_path
        .rsplit('/')
        .next()
        .unwrap_or(rel_path)
        .to_ascii_lowercase();
    name.starts_with("values") && (name.ends_with(".yaml") || name.ends_with(".yml"))
}

/// True for files under a `templates/` directory (Helm charts).
fn is_helm_template(rel_path: &str) -> bool {
    rel_path.split('/').any(|c| c == "templates")
}

/// The 1-based, inclusive line ranges of a YAML file that are deploy YAML: none for a values
/// file, the whole file for a Helm template, otherwise the documents of `docs` (the file split
/// by [`crate::k8s::documents`]) that are Kubernetes objects.
pub fn ranges(rel_path: &str, text: &str, docs: &[Document]) -> Vec<(usize, usize)> {
    if is_values_file(rel_path) {
        return Vec::new();
    }
    if is_helm_template(rel_path) {
        return vec![(1, text.lines().count().max(1))];
    }
    docs.iter()
        .filter(|d| d.kubernetes)
        .map(|d| (d.first_line, d.last_line))
        .collect()
}

static KEY: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"^(\s*(?:-\s+)?)["']?([A-Za-z0-9_.\-]+)["']?\s*:(?:\s+(.*?))?\s*$"#)
        .expect("pattern compiles")
});
static ENV_LINE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(\s*)([A-Za-z_][A-Za-z0-9_.]*)=(\S.*?)\s*$").expect("pattern compiles")
});
static FLAG: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"--([a-z][a-z0-9.\-]*)=([^\s'\x22,\]]+)").expect("pattern compiles")
});

fn unquote(s: &str) -> &str {
    let s = s.trim();
    for q in ['"', '\''] {
        if s.len() >= 2 && s.starts_with(q) && s.ends_with(q) {
            return &s[1..s.len() - 1];
        }
    }
    s
}

fn is_scalar(value: &str) -> bool {
    let v = value.trim();
    !v.is_empty() && !matches!(v.as_bytes()[0], b'|' | b'>' | b'&' | b'*' | b'{' | b'[')
        || v.starts_with("{{")
}

/// Scans the code view of a YAML file (comments already blanked) for pool values, within the
/// given 1-based inclusive line ranges (see [`ranges`]).
pub fn scan(code: &str, ranges: &[(usize, usize)]) -> Vec<YamlHit> {
    let lines: Vec<&str> = code.lines().collect();
    let mut hits = Vec::new();
    for (idx, line) in lines.iter().enumerate() {
        if !ranges.iter().any(|&(a, b)| idx + 1 >= a && idx < b) {
            continue;
        }
        for caps in FLAG.captures_iter(line) {
            if is_pool_key(&caps[1]) {
                let m = caps.get(2).expect("group 2 always participates");
                hits.push(hit(idx, m.start(), &caps[1], m.as_str()));
            }
        }
        if let Some(caps) = ENV_LINE.captures(line) {
            if is_pool_key(&caps[2]) {
                let m = caps.get(3).expect("group 3 always participates");
                hits.push(hit(idx, m.start(), &caps[2], m.as_str()));
            }
            continue;
        }
        let Some(caps) = KEY.captures(line) else {
            continue;
        };
        let key_col = caps.get(1).map_or(0, |m| m.end());
        let key = &caps[2];
        let value = caps.get(3);
        if key == "name" {
            let Some(name) = value.map(|v| unquote(v.as_str())) else {
                continue;
            };
            if !is_pool_key(name) {
                continue;
            }
            if let Some(h) = env_value(&lines, idx, key_col, name) {
                hits.push(h);
            }
        } else if is_pool_key(key) {
            if let Some(v) = value.filter(|v| is_scalar(v.as_str())) {
                hits.push(hit(idx, v.start(), key, v.as_str()));
            }
        }
    }
    hits
}

/// Finds the `value:` / `valueFrom:` sibling of an env entry's `name:` line.
fn env_value(lines: &[&str], name_idx: usize, key_col: usize, name: &str) -> Option<YamlHit> {
    for (j, line) in lines.iter().enumerate().skip(name_idx + 1).take(8) {
        if line.trim().is_empty() {
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        if indent < key_col
            || (indent == key_col.saturating_sub(2) && line.trim_start().starts_with('-'))
        {
            return None;
        }
        let caps = KEY.captures(line)?;
        if caps[1].contains('-') {
            return None; // the next list item
        }
        match &caps[2] {
            "value" => {
                let v = caps.get(3)?;
                return Some(hit(j, v.start(), name, v.as_str()));
            }
            "valueFrom" => {
                let col = caps.get(2).map_or(0, |m| m.start());
                return Some(YamlHit {
                    line: j + 1,
                    column: col + 1,
                    setting: name.to_string(),
                    value: "valueFrom".to_string(),
                    source: ValueSource::Config,
                    fallback: None,
                });
            }
            _ => {}
        }
    }
    None
}

fn hit(idx: usize, col: usize, setting: &str, value: &str) -> YamlHit {
    let (source, fallback) = classify_yaml_scalar_with_fallback(value);
    YamlHit {
        line: idx + 1,
        column: col + 1,
        setting: setting.to_string(),
        value: value.trim().to_string(),
        source,
        fallback,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::k8s::documents;

    /// Scans a whole file as deploy YAML.
    fn scan_yaml(code: &str) -> Vec<YamlHit> {
        scan(code, &[(1, usize::MAX)])
    }

    fn deploy_ranges(rel_path: &str, text: &str) -> Vec<(usize, usize)> {
        ranges(rel_path, text, &documents(text))
    }

    fn is_deploy_yaml(rel_path: &str, text: &str) -> bool {
        !deploy_ranges(rel_path, text).is_empty()
    }

    #[test]
    fn pool_keys_match_in_any_spelling_but_not_server_max_connections() {
        for k in [
            "DB_MAX_OPEN_CONNS",
            "maxOpenConns",
            "max-idle-conns",
            "pool_size",
            "maximumPoolSize",
        ] {
            assert!(is_pool_key(k), "{k}");
        }
        for k in ["max_connections", "replicas", "maxSurge", "name"] {
            assert!(!is_pool_key(k), "{k}");
        }
    }

    #[test]
    fn pool_keys_with_unit_suffixes_match() {
        for k in [
            "conn_max_lifetime_minutes",
            "conn_max_idle_time_seconds",
            "max_open_conns",
            "connMaxLifetimeMs",
            "DB_CONN_MAX_IDLE_TIME_SECS",
            "pool_max_size",
        ] {
            assert!(is_pool_key(k), "{k}");
        }
        for k in ["max_connections_total", "timeout_seconds", "retry_count"] {
            assert!(!is_pool_key(k), "{k}");
        }
        let hits = scan_yaml("data:\n  config.yaml: |\n    conn_max_lifetime_minutes: 5\n");
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].setting, "conn_max_lifetime_minutes");
        assert_eq!(hits[0].source, ValueSource::Literal);
    }

    #[test]
    fn only_kubernetes_documents_of_a_multi_document_file_are_deploy_yaml() {
        let text = "\
app:
  name: demo
database:
  max_open_conns: 10
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: demo
data:
  DB_MAX_OPEN_CONNS: \"20\"
";
        assert_eq!(deploy_ranges("config/app.yaml", text), [(6, 11)]);
        let lines: Vec<usize> = scan(text, &deploy_ranges("config/app.yaml", text))
            .iter()
            .map(|h| h.line)
            .collect();
        assert_eq!(
            lines,
            [11],
            "the app config in document 1 is configuration, not a manifest"
        );
    }

    #[test]
    fn env_entries_config_keys_and_flags_are_found_with_their_source() {
        let yaml = "\
spec:
  containers:
    - name: app
      args: [\"--max-open-conns=40\"]
      env:
        - name: DB_MAX_OPEN_CONNS
          value: \"100\"
        - name: DB_MAX_IDLE_CONNS
          valueFrom:
            configMapKeyRef: {name: db, key: idle}
        - name: LOG_LEVEL
          value: debug
data:
  config.yaml: |
    database:
      maxOpenConns: 100
      maxIdleConns: {{ .Values.database.maxIdleConns }}
  app.env: |
    POOL_SIZE=7
";
        let hits = scan_yaml(yaml);
        let got: Vec<_> = hits
            .iter()
            .map(|h| (h.line, h.setting.as_str(), h.value.as_str(), h.source))
            .collect();
        assert_eq!(
            got,
            [
                (4, "max-open-conns", "40", ValueSource::Literal),
                (7, "DB_MAX_OPEN_CONNS", "\"100\"", ValueSource::Literal),
                (9, "DB_MAX_IDLE_CONNS", "valueFrom", ValueSource::Config),
                (16, "maxOpenConns", "100", ValueSource::Literal),
                (
                    17,
                    "maxIdleConns",
                    "{{ .Values.database.maxIdleConns }}",
                    ValueSource::Config
                ),
                (19, "POOL_SIZE", "7", ValueSource::Literal),
            ]
        );
    }

    #[test]
    fn values_files_are_not_deploy_yaml_but_templates_and_manifests_are() {
        assert!(!is_deploy_yaml(
            "charts/ds/values.yaml",
            "apiVersion: v1\nkind: X\n"
        ));
        assert!(!is_deploy_yaml("charts/ds/values-prod.yml", ""));
        assert!(is_deploy_yaml("charts/ds/templates/cm.yaml", "data: {}\n"));
        assert!(is_deploy_yaml(
            "deploy/ds.yaml",
            "apiVersion: apps/v1\nkind: Deployment\n"
        ));
        assert!(!is_deploy_yaml(
            "config/app.yaml",
            "database:\n  maxOpenConns: 25\n"
        ));
    }
}
