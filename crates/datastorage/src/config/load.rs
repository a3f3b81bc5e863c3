//! Loading: the YAML file, then `DATASTORAGE_*` environment overrides, then the password from
//! its source, then validation. Every error names the key and where it came from.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde_norway::Value;

use super::secret::Secret;
use super::settings::Settings;
use super::values::plain_words;

/// Prefix of environment overrides.
pub const ENV_PREFIX: &str = "DATASTORAGE_";
/// Environment variable naming the config file when `--config` is not given.
pub const ENV_CONFIG_FILE: &str = "DATASTORAGE_CONFIG";
/// Environment variable the `events` commands read the server URL from (not a config key).
pub const ENV_SERVER_URL: &str = "DATASTORAGE_URL";

/// Where the settings came from, for messages.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The settings, validated, with the password resolved.
    pub settings: Settings,
    /// The file read, if any.
    pub file: Option<PathBuf>,
    /// Environment variables applied.
    pub env_overrides: Vec<String>,
}

impl Settings {
    /// Loads `file` (if any), applies `DATASTORAGE_*` variables from `env`, resolves the
    /// password and validates. Every error names the key and where it came from.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Loaded> {
        let source = file.map_or_else(|| "defaults".to_owned(), |p| p.display().to_string());
        let mut tree = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read config file {}", path.display()))?;
                let value: Value = serde_norway::from_str(&text)
                    .with_context(|| format!("config file {} is not valid YAML", path.display()))?;
                match value {
                    Value::Null => Value::Mapping(Default::default()),
                    v @ Value::Mapping(_) => v,
                    _ => bail!(
                        "config file {}: the top level must be a mapping of sections",
                        path.display()
                    ),
                }
            }
            None => Value::Mapping(Default::default()),
        };
        // The default tree lists every known key; env overrides are matched against it.
        let known = serde_norway::to_value(Settings::default()).expect("defaults serialize");
        let mut env_overrides = Vec::new();
        let mut env_keys: Vec<(String, String)> = Vec::new();
        let mut env_password = None;
        let mut env: Vec<(String, String)> = env.into_iter().collect();
        env.sort();
        for (name, raw) in env {
            let Some(path) = name.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            if name == ENV_CONFIG_FILE
                || name == ENV_SERVER_URL
                || path.starts_with("TEST_")
                || is_service_link(path)
            {
                continue;
            }
            let segments: Vec<&str> = path.split("__").collect();
            let keys = resolve_env_path(&known, &segments)
                .ok_or_else(|| anyhow!("environment variable {name} does not name a config key (the form is DATASTORAGE_<SECTION>__<KEY>, e.g. DATASTORAGE_DATABASE__MAX_OPEN_CONNS)"))?;
            if keys == ["database", "password"] {
                env_password = Some(Secret::new(raw));
            } else {
                let default = lookup(&known, &keys);
                let value = match default {
                    Some(Value::Number(_) | Value::Bool(_) | Value::Sequence(_)) => {
                        serde_norway::from_str(&raw).with_context(|| {
                            format!("environment variable {name}: cannot parse {raw:?}")
                        })?
                    }
                    // An unset option: a number or boolean if it reads as one, else text.
                    Some(Value::Null) => match serde_norway::from_str::<Value>(&raw) {
                        Ok(v @ (Value::Number(_) | Value::Bool(_))) => v,
                        _ => Value::String(raw),
                    },
                    _ => Value::String(raw),
                };
                env_keys.push((keys.join("."), name.clone()));
                set_path(&mut tree, &keys, value);
            }
            env_overrides.push(name);
        }
        let source = match env_overrides.as_slice() {
            [] => source,
            vars => format!("{source} with {}", vars.join(", ")),
        };
        let idle_given = lookup(&tree, &["database".to_owned(), "maxIdleConns".to_owned()])
            .is_some_and(|v| !v.is_null());
        let mut settings: Settings = serde_path_to_error::deserialize(tree).map_err(|e| {
            let path = e.path().to_string();
            let why = plain_words(&e.into_inner().to_string());
            match env_keys
                .iter()
                .find(|(key, _)| path.starts_with(key.as_str()))
            {
                Some((_, var)) => {
                    anyhow!("environment variable {var}: invalid value for `{path}`: {why}")
                }
                None => anyhow!("{source}: invalid config at `{path}`: {why}"),
            }
        })?;
        settings.apply_upstream_forms();
        if !idle_given {
            // Like Go's database/sql: an omitted maxIdleConns never exceeds maxOpenConns.
            let db = &mut settings.database;
            db.max_idle_conns = db.max_idle_conns.min(db.max_open_conns);
        }
        let db = &mut settings.database;
        let from_file = match &db.secrets_file {
            Some(path) => Some(read_secrets(
                "database",
                path,
                &db.password_key,
                db.username_key.as_deref(),
            )?),
            None => None,
        };
        if let Some((_, Some(user))) = &from_file {
            db.user.clone_from(user);
        }
        if let Some(p) = env_password {
            db.password = Some(p);
        } else if let Some((password, _)) = from_file {
            db.password = Some(password);
        }
        let redis_used =
            settings.buffer.enabled && settings.buffer.backend == super::BufferBackend::Redis;
        if let Some(redis) = settings.redis.as_mut().filter(|_| redis_used) {
            if let Some(path) = &redis.secrets_file {
                let key = redis.password_key.as_deref().unwrap_or("password");
                redis.password = Some(read_secrets("redis", path, key, None)?.0);
            }
        }
        settings.validate().map_err(|e| anyhow!("{source}: {e}"))?;
        Ok(Loaded {
            settings,
            file: file.map(Path::to_path_buf),
            env_overrides,
        })
    }
}

/// Variables Kubernetes injects for a Service named `datastorage` (service links), which share
/// the prefix but are not config.
fn is_service_link(path: &str) -> bool {
    path == "SERVICE_HOST"
        || path.starts_with("SERVICE_PORT")
        || path == "PORT"
        || path.starts_with("PORT_")
}

/// Matches `DATASTORAGE_A__B` segments to real key names, ignoring case and `_`.
fn resolve_env_path(known: &Value, segments: &[&str]) -> Option<Vec<String>> {
    let norm = |s: &str| s.replace('_', "").to_ascii_lowercase();
    let mut node = known;
    let mut keys = Vec::new();
    for seg in segments {
        let Value::Mapping(map) = node else {
            return None;
        };
        let (key, child) = map.iter().find_map(|(k, v)| {
            let k = k.as_str()?;
            (norm(k) == norm(seg)).then(|| (k.to_owned(), v))
        })?;
        keys.push(key);
        node = child;
    }
    // Only leaves (scalars, lists, or unset options) can be set from the environment.
    (!matches!(node, Value::Mapping(_))).then_some(keys)
}

fn lookup<'a>(tree: &'a Value, keys: &[String]) -> Option<&'a Value> {
    keys.iter().try_fold(tree, |node, k| node.get(k.as_str()))
}

fn set_path(tree: &mut Value, keys: &[String], value: Value) {
    let mut node = tree;
    for k in &keys[..keys.len() - 1] {
        let Value::Mapping(map) = node else { return };
        node = map
            .entry(Value::String(k.clone()))
            .or_insert_with(|| Value::Mapping(Default::default()));
        if !node.is_mapping() {
            *node = Value::Mapping(Default::default());
        }
    }
    if let Value::Mapping(map) = node {
        map.insert(Value::String(keys[keys.len() - 1].clone()), value);
    }
}

/// The password (and, with `username_key`, the role) from `database.secretsFile`: a YAML
/// mapping of keys to values (upstream's form), or a file whose whole content is the password
/// (a mounted Kubernetes Secret key), one trailing newline ignored.
fn read_secrets(
    section: &str,
    path: &Path,
    password_key: &str,
    username_key: Option<&str>,
) -> Result<(Secret, Option<String>)> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{section}.secretsFile: cannot read {}", path.display()))?;
    let map = match serde_norway::from_str::<Value>(&text) {
        Ok(Value::Mapping(map)) => map,
        // Not a mapping: the file is the password itself.
        _ => {
            let raw = text.strip_suffix('\n').unwrap_or(&text);
            let raw = raw.strip_suffix('\r').unwrap_or(raw);
            if raw.is_empty() {
                bail!("{section}.secretsFile {} is empty", path.display());
            }
            return Ok((Secret::new(raw), None));
        }
    };
    let text_of = |key: &str| match map.get(key) {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    let password = text_of(password_key).ok_or_else(|| {
        anyhow!(
            "{section}.secretsFile {} has no string key {password_key:?} ({section}.passwordKey)",
            path.display()
        )
    })?;
    Ok((Secret::new(password), username_key.and_then(text_of)))
}

/// A commented example config with every key at its default, as `config print-default` prints.
pub fn default_config_yaml() -> &'static str {
    include_str!("../../config/default.yaml")
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::time::Duration;

    use super::*;
    use crate::config::database::{
        Driver, SslMode, DEFAULT_ACQUIRE_TIMEOUT, DEFAULT_CONN_MAX_IDLE_TIME,
        DEFAULT_MAX_IDLE_CONNS, DEFAULT_MAX_OPEN_CONNS,
    };

    fn load_yaml(yaml: &str, env: &[(&str, &str)]) -> Result<Loaded> {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(yaml.as_bytes()).unwrap();
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        Settings::load(Some(f.path()), env)
    }

    #[test]
    fn the_upstream_config_file_loads_with_inactive_sections() {
        // A copy of shared/contract/upstream-config.yaml, byte for byte.
        let yaml = include_str!("../../tests/data/upstream-config.yaml");
        let loaded = load_yaml(yaml, &[]).unwrap();
        let s = loaded.settings;
        assert_eq!(s.database.effective_driver(), Driver::Postgres);
        assert_eq!(s.database.max_open_conns, 25);
        assert_eq!(s.database.statement_timeout, Duration::from_secs(30));
        assert_eq!(s.server.max_body_size, 5_242_880);
        assert_eq!(s.database.ssl_mode, SslMode::Disable);
        assert_eq!(s.inactive_keys(), vec!["redis"]);
        assert!(s.retention.enabled);
        assert_eq!(s.retention.interval, Duration::from_secs(24 * 3600));
        assert_eq!(s.retention.default_days, 2555);
        assert!(
            !s.retention.partition_drop_enabled,
            "upstream's file turns it off"
        );
    }

    #[test]
    fn the_config_of_upstreams_configmap_loads_applying_what_it_can_and_naming_the_rest() {
        // The real file, with the secrets file it names replaced by a temporary one.
        let mut secrets = tempfile::NamedTempFile::new().unwrap();
        secrets
            .write_all(b"username: \"db_user_from_secret\"\npassword: \"slm_password_dev\"\n")
            .unwrap();
        let yaml = include_str!("../../tests/data/upstream-configmap.yaml").replace(
            "/etc/datastorage/secrets/db-secrets.yaml",
            &secrets.path().display().to_string(),
        );
        let s = load_yaml(&yaml, &[]).unwrap().settings;
        assert_eq!(s.server.health_port, Some(8081));
        assert_eq!(
            s.database.user, "db_user_from_secret",
            "usernameKey applied"
        );
        assert_eq!(
            s.database.password.as_ref().unwrap().expose(),
            "slm_password_dev"
        );
        assert_eq!(s.database.max_open_conns, 100);
        assert_eq!(s.database.conn_max_lifetime, Duration::from_secs(15 * 60));
        assert_eq!(s.inactive_keys(), vec!["redis"]);
        assert_eq!(s.retention.batch_size, 1000);
    }

    #[test]
    fn typos_inside_upstream_sections_fail_like_any_other_unknown_key() {
        for (yaml, key) in [
            ("retention:\n  enabeld: true\n", "enabeld"),
            ("redis:\n  adr: r:6379\n", "adr"),
            ("audit:\n  hashKey: k\n", "hashKey"),
            ("telemetry:\n  endpont: x\n", "endpont"),
            ("server:\n  rateLimit:\n    enable: true\n", "enable"),
        ] {
            let err = load_yaml(yaml, &[]).unwrap_err().to_string();
            assert!(
                err.contains(key) && err.contains("unknown field"),
                "{yaml}: {err}"
            );
        }
    }

    #[test]
    fn a_bare_word_that_is_no_level_is_an_error_and_levels_take_any_case() {
        let err = load_yaml("logging:\n  level: verbose\n", &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("logging.level") && err.contains("verbose"),
            "{err}"
        );
        for level in ["INFO", "Warn", "debug", "info,sqlx=warn"] {
            let yaml = format!("logging:\n  level: \"{level}\"\n");
            assert!(load_yaml(&yaml, &[]).is_ok(), "{level}");
        }
    }

    #[test]
    fn durations_numbers_and_hosts_are_read_the_way_people_write_them() {
        let s = load_yaml(
            "database:\n  connMaxLifetime: 0\n  connMaxIdleTime: 0s\nserver:\n  host: localhost\n",
            &[],
        )
        .unwrap()
        .settings;
        assert_eq!(s.database.conn_max_lifetime, Duration::ZERO);
        assert_eq!(s.server.host, "localhost");
        let err = load_yaml("database:\n  connMaxLifetime: 30\n", &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("connMaxLifetime") && err.contains("unit"),
            "{err}"
        );
        let err = load_yaml("database:\n  maxOpenConns: ten\n", &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("database.maxOpenConns")
                && err.contains("whole number from 0 to 4294967295"),
            "{err}"
        );
    }

    #[test]
    fn an_error_in_an_environment_variable_names_the_variable() {
        let err = load_yaml("", &[("DATASTORAGE_DATABASE__MAX_OPEN_CONNS", "many")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("DATASTORAGE_DATABASE__MAX_OPEN_CONNS"),
            "{err}"
        );
        let err = load_yaml("", &[("DATASTORAGE_SERVER__READ_TIMEOUT", "soon")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("environment variable DATASTORAGE_SERVER__READ_TIMEOUT"),
            "{err}"
        );
        let s = load_yaml("", &[("DATASTORAGE_SERVER__HEALTH_PORT", "8081")])
            .unwrap()
            .settings;
        assert_eq!(s.server.health_port, Some(8081));
    }

    #[test]
    fn a_secrets_file_holding_only_the_password_is_accepted() {
        let mut secrets = tempfile::NamedTempFile::new().unwrap();
        secrets.write_all(b"just-the-password\n").unwrap();
        let yaml = format!(
            "database:\n  host: db\n  secretsFile: {}\n",
            secrets.path().display()
        );
        let s = load_yaml(&yaml, &[]).unwrap().settings;
        assert_eq!(s.database.password.unwrap().expose(), "just-the-password");
    }

    #[test]
    fn upstream_forms_apply_with_a_note() {
        let s = load_yaml(
            "server:\n  maxBatchSize: 0\n  endpointPropagationDelay: 2s\n",
            &[],
        )
        .unwrap()
        .settings;
        assert_eq!(
            s.server.max_batch_size,
            datastorage_api::DEFAULT_MAX_BATCH_SIZE
        );
        assert_eq!(s.server.shutdown_delay, Duration::from_secs(2));
        assert_eq!(s.notes.len(), 2, "{:?}", s.notes);
    }

    #[test]
    fn cors_origins_are_checked_and_a_lone_star_means_any() {
        assert!(load_yaml("server:\n  corsAllowedOrigins: [\"*\"]\n", &[]).is_ok());
        for bad in [
            "[\"*\", \"https://a.example\"]",
            "[\"ftp://a.example\"]",
            "[\"https://a.example/path\"]",
            "[\"a.example\"]",
        ] {
            let yaml = format!("server:\n  corsAllowedOrigins: {bad}\n");
            let err = load_yaml(&yaml, &[]).unwrap_err().to_string();
            assert!(err.contains("server.corsAllowedOrigins[0]"), "{bad}: {err}");
        }
        let err = load_yaml(
            "environment: production\nserver:\n  corsAllowedOrigins: [\"*\"]\n",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("production"), "{err}");
    }

    #[test]
    fn the_printed_default_config_loads_and_equals_the_defaults() {
        let loaded = load_yaml(default_config_yaml(), &[]).unwrap();
        let printed = serde_norway::to_value(&loaded.settings).unwrap();
        let defaults = serde_norway::to_value(Settings::default()).unwrap();
        assert_eq!(printed, defaults);
    }

    /// Every key path under `value`, leaves and empty maps alike, dotted.
    fn key_paths(value: &serde_norway::Value, prefix: &str, out: &mut Vec<String>) {
        match value {
            serde_norway::Value::Mapping(map) if !map.is_empty() => {
                for (k, v) in map {
                    let k = k.as_str().unwrap();
                    let path = if prefix.is_empty() {
                        k.to_owned()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    key_paths(v, &path, out);
                }
            }
            _ => out.push(prefix.to_owned()),
        }
    }

    /// Settings with every optional section and key present, so its serialization names every
    /// key a config file may hold.
    fn every_key() -> Vec<String> {
        use crate::config::server::{ServerTls, UpstreamRateLimit};
        use crate::config::upstream::{AuditSettings, ClientTls, RedisSettings, TelemetrySettings};
        let mut s = Settings {
            environment: Some(String::new()),
            tls_profile: Some(String::new()),
            audit: Some(AuditSettings::default()),
            redis: Some(RedisSettings {
                tls: Some(ClientTls::default()),
                ..Default::default()
            }),
            telemetry: Some(TelemetrySettings {
                tls: Some(ClientTls::default()),
                ..Default::default()
            }),
            ..Default::default()
        };
        s.server.tls = Some(ServerTls::default());
        s.server.rate_limit = Some(UpstreamRateLimit::default());
        s.server.endpoint_propagation_delay = Some(Duration::ZERO);
        let mut out = Vec::new();
        key_paths(&serde_norway::to_value(&s).unwrap(), "", &mut out);
        out
    }

    #[test]
    fn every_key_is_in_the_readme_config_reference() {
        let readme = include_str!("../../../../README.md");
        let start = readme.find("## Configuration reference").unwrap();
        let end = start + readme[start..].find("\n---").unwrap();
        let reference = &readme[start..end];
        let missing: Vec<String> = every_key()
            .into_iter()
            .filter(|path| {
                let (section, rest) = path.split_once('.').unwrap_or((path, ""));
                let in_section = reference
                    .find(&format!("### `{section}`"))
                    .map(|i| {
                        let body = &reference[i..];
                        let body = &body[..body[4..].find("\n### ").map_or(body.len(), |j| j + 4)];
                        // In the first cell of one of the section's table rows.
                        body.lines().any(|line| {
                            line.split('|')
                                .nth(1)
                                .is_some_and(|cell| cell.contains(&format!("`{rest}`")))
                        })
                    })
                    .unwrap_or(false);
                !in_section && !reference.contains(&format!("`{path}`"))
            })
            .collect();
        assert!(
            missing.is_empty(),
            "config keys the README does not document: {missing:?}"
        );
    }

    #[test]
    fn every_key_of_the_defaults_is_in_the_default_file() {
        let printed: serde_norway::Value = serde_norway::from_str(default_config_yaml()).unwrap();
        let mut in_file = Vec::new();
        key_paths(&printed, "", &mut in_file);
        let mut defaults = Vec::new();
        key_paths(
            &serde_norway::to_value(Settings::default()).unwrap(),
            "",
            &mut defaults,
        );
        let missing: Vec<&String> = defaults.iter().filter(|k| !in_file.contains(k)).collect();
        assert!(
            missing.is_empty(),
            "keys config/default.yaml does not show: {missing:?}"
        );
        for section in [
            "environment",
            "audit",
            "redis",
            "retention",
            "telemetry",
            "tlsProfile",
        ] {
            assert!(
                default_config_yaml().contains(&format!("# {section}:")),
                "config/default.yaml does not mention {section}"
            );
        }
    }

    #[test]
    fn an_unknown_key_names_the_key_and_the_file() {
        let err = load_yaml("database:\n  maxOpenConn: 3\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("database"), "{err}");
        assert!(err.contains("maxOpenConn"), "{err}");
        assert!(err.contains(".tmp") || err.contains("tmp"), "{err}");
    }

    #[test]
    fn env_overrides_match_keys_ignoring_case_and_underscores() {
        let l = load_yaml(
            "database:\n  host: db\n",
            &[
                ("DATASTORAGE_DATABASE__MAX_OPEN_CONNS", "7"),
                ("DATASTORAGE_DATABASE__CONN_MAX_LIFETIME", "1h30m"),
                ("DATASTORAGE_DATABASE__CAPACITY__REPLICAS", "6"),
                ("DATASTORAGE_DATABASE__PASSWORD", "123"),
            ],
        )
        .unwrap();
        assert_eq!(l.settings.database.max_open_conns, 7);
        assert_eq!(
            l.settings.database.conn_max_lifetime,
            Duration::from_secs(5400)
        );
        assert_eq!(l.settings.database.capacity.replicas, 6);
        assert_eq!(l.settings.database.password.unwrap().expose(), "123");
    }

    #[test]
    fn an_unknown_env_variable_is_named() {
        let err = load_yaml("", &[("DATASTORAGE_DATABASE__MAX_OPEN", "7")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("DATASTORAGE_DATABASE__MAX_OPEN"), "{err}");
        let err = load_yaml("", &[("DATASTORAGE_DATABASE_MAX_OPEN_CONNS", "7")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("DATASTORAGE_DATABASE_MAX_OPEN_CONNS"), "{err}");
    }

    #[test]
    fn kubernetes_service_link_variables_are_not_config() {
        let env = [
            ("DATASTORAGE_PORT", "tcp://10.0.0.1:8080"),
            ("DATASTORAGE_PORT_8080_TCP_ADDR", "10.0.0.1"),
            ("DATASTORAGE_SERVICE_HOST", "10.0.0.1"),
            ("DATASTORAGE_SERVICE_PORT_HTTP", "8080"),
        ];
        assert!(load_yaml("", &env).is_ok());
    }

    #[test]
    fn invalid_combinations_name_the_keys() {
        let err = load_yaml("database:\n  maxOpenConns: 2\n  maxIdleConns: 5\n", &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("database.maxIdleConns") && err.contains("database.maxOpenConns"),
            "{err}"
        );
        let err = load_yaml("database:\n  connMaxLifetime: five\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("connMaxLifetime"), "{err}");
        let err = load_yaml("hashChain:\n  keyFile: /k\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("hashChain.keyId"), "{err}");
        let err = load_yaml("server:\n  maxBodySize: \"12\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("server.maxBodySize"), "{err}");
    }

    #[test]
    fn the_password_comes_from_the_secrets_file_and_never_prints() {
        let mut secrets = tempfile::NamedTempFile::new().unwrap();
        secrets.write_all(b"dbpass: s3cr3t-value\n").unwrap();
        let yaml = format!(
            "database:\n  host: db\n  secretsFile: {}\n  passwordKey: dbpass\n",
            secrets.path().display()
        );
        let s = load_yaml(&yaml, &[]).unwrap().settings;
        assert_eq!(
            s.database.password.as_ref().unwrap().expose(),
            "s3cr3t-value"
        );
        assert!(!format!("{s:?}").contains("s3cr3t"));
        assert!(!serde_norway::to_string(&s).unwrap().contains("s3cr3t"));
        let yaml = format!(
            "database:\n  host: db\n  secretsFile: {}\n",
            secrets.path().display()
        );
        let err = load_yaml(&yaml, &[]).unwrap_err().to_string();
        assert!(err.contains("passwordKey"), "{err}");
    }

    #[test]
    fn an_omitted_max_idle_conns_follows_a_small_max_open_conns() {
        let s = load_yaml("database:\n  maxOpenConns: 3\n", &[])
            .unwrap()
            .settings
            .database;
        assert_eq!(s.max_idle_conns, 3);
        let err = load_yaml("database:\n  maxOpenConns: 3\n  maxIdleConns: 5\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("database.maxIdleConns"), "{err}");
    }

    #[test]
    fn omitted_pool_keys_take_documented_defaults_not_zero() {
        let s = load_yaml("database:\n  host: db\n", &[])
            .unwrap()
            .settings
            .database;
        assert_eq!(
            (s.max_open_conns, s.max_idle_conns),
            (DEFAULT_MAX_OPEN_CONNS, DEFAULT_MAX_IDLE_CONNS)
        );
        assert_eq!(s.conn_max_idle_time, DEFAULT_CONN_MAX_IDLE_TIME);
        assert_eq!(s.acquire_timeout, DEFAULT_ACQUIRE_TIMEOUT);
    }
}
