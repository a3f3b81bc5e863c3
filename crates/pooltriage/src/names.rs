//! How names are compared: service and owner names, Kubernetes object names, file names.
//!
//! Rules: [`normalize_name`] ignores case and separators (`data-storage` is `DataStorage`);
//! [`words`] splits at separators and camelCase boundaries; [`identity_key`] also drops words
//! that say what kind of thing a name is (`service`, `deployment`, `db`, ...) and a plural `s`,
//! so a manifest's `webhook-service` and the code's `cmd/webhooks` compare equal.

/// Lower-case alphanumerics only: how service and owner names are compared.
pub fn normalize_name(name: &str) -> String {
    name.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// Splits a name into lower-case words at separators and camelCase boundaries.
pub fn words(name: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut prev_lower = false;
    for c in name.chars() {
        if !c.is_ascii_alphanumeric() {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            prev_lower = false;
            continue;
        }
        if c.is_ascii_uppercase() && prev_lower && !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
        }
        prev_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
        cur.push(c.to_ascii_lowercase());
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Words that say what kind of thing a name is rather than which service it is.
const NOISE_WORDS: &[&str] = &[
    "service",
    "services",
    "svc",
    "server",
    "deployment",
    "deploy",
    "statefulset",
    "daemonset",
    "job",
    "cronjob",
    "controller",
    "api",
    "app",
    "schema",
    "init",
    "migration",
    "migrations",
    "migrate",
    "migrator",
    "db",
    "database",
    "config",
    "configmap",
    "cm",
    "secret",
    "secrets",
    "hpa",
    "pdb",
    "tpl",
];

/// The comparison key of a name: words without the noise words, joined, a final plural `s`
/// dropped (`webhook-service` and `webhooks` → `webhook`; `data-storage-schema-init` →
/// `datastorage`). Falls back to all words when only noise remains (`api`).
pub fn identity_key(name: &str) -> String {
    let all = words(name);
    let kept: Vec<&String> = all
        .iter()
        .filter(|w| !NOISE_WORDS.contains(&w.as_str()))
        .collect();
    let mut key: String = if kept.is_empty() {
        all.concat()
    } else {
        kept.into_iter().map(String::as_str).collect()
    };
    if key.len() > 3 && key.ends_with('s') && !key.ends_with("ss") {
        key.pop();
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_split_at_separators_and_camel_case() {
        assert_eq!(words("SamplePool.go"), ["sample", "pool", "go"]);
        assert_eq!(words("conn_max-lifetime"), ["conn", "max", "lifetime"]);
        assert_eq!(words("ubi9Image"), ["ubi9", "image"]);
        assert!(words("--").is_empty());
    }

    #[test]
    fn identity_keys_ignore_kind_words_and_plurals() {
        assert_eq!(identity_key("webhook-service"), identity_key("webhooks"));
        assert_eq!(identity_key("data-storage-schema-init"), "datastorage");
        assert_eq!(identity_key("DataStorage"), "datastorage");
        assert_eq!(identity_key("holmesgpt-api"), "holmesgpt");
        assert_eq!(identity_key("api"), "api");
    }
}
