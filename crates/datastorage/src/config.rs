//! Settings: one typed tree, loaded from a YAML file, then overridden by environment variables.
//!
//! Rules:
//! - Every key has a documented default (a named constant where it is a number or duration), so
//!   an omitted key never turns into a zero (an upstream defect: an omitted `maxIdleConns` kept no
//!   idle connections at all).
//! - An unknown key is an error that names the key and its source, at start.
//! - Cross-field rules live in one place, [`Settings::validate`], and name the keys involved.
//! - Environment overrides: `DATASTORAGE_` + the key path with `__` between levels; within a
//!   level case and `_` are ignored, so `DATASTORAGE_DATABASE__MAX_OPEN_CONNS=10` sets
//!   `database.maxOpenConns`. An unknown variable with the prefix is an error too.
//! - The database password comes from `DATASTORAGE_DATABASE__PASSWORD`, from `secretsFile` +
//!   `passwordKey` (as upstream), or, discouraged, from `password` in the file. It is held in a
//!   [`Secret`], which never prints.
//! - The upstream sections not built yet (`redis`, `retention`, `audit`) are accepted as they are
//!   and reported inactive.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_norway::Value;

/// Prefix of environment overrides.
pub const ENV_PREFIX: &str = "DATASTORAGE_";
/// Environment variable naming the config file when `--config` is not given.
pub const ENV_CONFIG_FILE: &str = "DATASTORAGE_CONFIG";
/// Environment variable the `events` commands read the server URL from (not a config key).
pub const ENV_SERVER_URL: &str = "DATASTORAGE_URL";

/// Default API port.
pub const DEFAULT_PORT: u16 = 8080;
/// Default metrics port.
pub const DEFAULT_METRICS_PORT: u16 = 9090;
/// Default `server.maxBodySize`: 5 MiB, as upstream.
pub const DEFAULT_MAX_BODY_SIZE: u64 = 5 * 1024 * 1024;
/// Smallest accepted `server.maxBodySize` (1 MiB): a full batch of small events must fit.
pub const MIN_MAX_BODY_SIZE: u64 = 1024 * 1024;
/// Largest accepted `server.maxBodySize` (50 MiB).
pub const MAX_MAX_BODY_SIZE: u64 = 50 * 1024 * 1024;
/// Largest accepted `server.maxBatchSize`.
pub const MAX_MAX_BATCH_SIZE: usize = 10_000;
/// Default read and write timeouts.
pub const DEFAULT_HTTP_TIMEOUT: Duration = Duration::from_secs(30);
/// Default time between readiness turning 503 and the listener closing.
pub const DEFAULT_SHUTDOWN_DELAY: Duration = Duration::from_secs(5);
/// Default time given to in-flight requests once the listener is closed.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(25);

/// Default `database.maxOpenConns` (upstream's).
pub const DEFAULT_MAX_OPEN_CONNS: u32 = 25;
/// Default `database.maxIdleConns` (upstream's).
pub const DEFAULT_MAX_IDLE_CONNS: u32 = 5;
/// Default `database.connMaxLifetime`.
pub const DEFAULT_CONN_MAX_LIFETIME: Duration = Duration::from_secs(5 * 60);
/// Default `database.connMaxIdleTime`.
pub const DEFAULT_CONN_MAX_IDLE_TIME: Duration = Duration::from_secs(10 * 60);
/// Default `database.acquireTimeout`: well under the HTTP timeouts, so a saturated pool answers
/// 503 quickly instead of holding the request until its deadline (an upstream defect).
pub const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// Default `database.connectTimeout`.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default `database.statementTimeout` (upstream's).
pub const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);
/// Default `database.lockTimeout` (upstream's).
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(10);
/// Default `database.idleInTransactionTimeout`.
pub const DEFAULT_IDLE_IN_TRANSACTION_TIMEOUT: Duration = Duration::from_secs(60);
/// Default SQLite file, relative to the working directory.
pub const DEFAULT_SQLITE_PATH: &str = "./data/datastorage.db";
/// Default connection headroom for migrations and admin sessions in the capacity budget.
pub const DEFAULT_CAPACITY_HEADROOM: u32 = 5;

/// The whole configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Settings {
    /// HTTP listeners and request limits.
    pub server: ServerSettings,
    /// Log level and format.
    pub logging: LoggingSettings,
    /// Database backend, connection and pool.
    pub database: DatabaseSettings,
    /// Keyed hash chains (HMAC-SHA-256).
    pub hash_chain: HashChainSettings,
    /// Upstream's Redis dead-letter queue: accepted, inactive (writes never fall back to a queue).
    pub redis: Option<Value>,
    /// Upstream's retention worker: accepted, inactive (not built yet).
    pub retention: Option<Value>,
    /// Upstream's audit section: accepted, inactive (not built yet).
    pub audit: Option<Value>,
}

/// `server:` — HTTP.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct ServerSettings {
    /// Address the API listens on.
    pub host: IpAddr,
    /// API port.
    pub port: u16,
    /// Address the metrics listener binds.
    pub metrics_host: IpAddr,
    /// Metrics port (`/metrics`, `/healthz`, `/readyz`).
    pub metrics_port: u16,
    /// Most events one batch request may carry.
    pub max_batch_size: usize,
    /// Longest time to receive a request body.
    #[serde(with = "duration")]
    pub read_timeout: Duration,
    /// Longest time to handle a request, after which it answers 503.
    #[serde(with = "duration")]
    pub write_timeout: Duration,
    /// Largest request body in bytes (a plain integer, or a string of one, as upstream).
    #[serde(deserialize_with = "int_or_string")]
    pub max_body_size: u64,
    /// Origins allowed for browser access; empty rejects all cross-origin requests.
    pub cors_allowed_origins: Vec<String>,
    /// Upstream's export-signing certificate folder: accepted, inactive (export not built yet).
    pub signer_cert_dir: Option<PathBuf>,
    /// Time between readiness turning 503 and the listener closing, so load balancers stop
    /// sending traffic first.
    #[serde(with = "duration")]
    pub shutdown_delay: Duration,
    /// Time in-flight requests get to finish once the listener is closed.
    #[serde(with = "duration")]
    pub shutdown_timeout: Duration,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            host: IpAddr::from([0, 0, 0, 0]),
            port: DEFAULT_PORT,
            metrics_host: IpAddr::from([0, 0, 0, 0]),
            metrics_port: DEFAULT_METRICS_PORT,
            max_batch_size: datastorage_api::DEFAULT_MAX_BATCH_SIZE,
            read_timeout: DEFAULT_HTTP_TIMEOUT,
            write_timeout: DEFAULT_HTTP_TIMEOUT,
            max_body_size: DEFAULT_MAX_BODY_SIZE,
            cors_allowed_origins: Vec::new(),
            signer_cert_dir: None,
            shutdown_delay: DEFAULT_SHUTDOWN_DELAY,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
        }
    }
}

/// `hashChain:` — keyed hash chains.
///
/// Without a key, chains use plain SHA-256: any edit is visible, but someone who can write to the
/// database could recompute every later hash. With a key, new rows are chained with
/// HMAC-SHA-256 and the key's id is stored per row; verification needs the key, which never
/// enters the database.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct HashChainSettings {
    /// File holding the active key (at least 32 bytes; a trailing newline is ignored).
    pub key_file: Option<PathBuf>,
    /// Id stored with every row the active key signs.
    pub key_id: Option<String>,
    /// Retired keys still needed to verify older rows: key id → key file.
    pub verify_key_files: BTreeMap<String, PathBuf>,
    /// With a key configured, still accept unkeyed (`sha256`) rows as valid: for rows written
    /// before the key was introduced. Off, such rows are reported, since anyone with write
    /// access to the database could have recomputed them.
    pub accept_unkeyed: bool,
}

/// `logging:`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct LoggingSettings {
    /// `error`, `warn`, `info`, `debug`, `trace`, or a `tracing` filter directive.
    pub level: String,
    /// `json` (one object per line) or `text`.
    pub format: LogFormat,
}

impl Default for LoggingSettings {
    fn default() -> Self {
        Self {
            level: "info".to_owned(),
            format: LogFormat::Json,
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable lines.
    Text,
}

/// Which database backs the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Driver {
    /// PostgreSQL (production).
    Postgres,
    /// Embedded SQLite (default when no database is configured).
    Sqlite,
}

/// PostgreSQL TLS mode, as libpq names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SslMode {
    /// No TLS.
    Disable,
    /// TLS when the server offers it.
    Prefer,
    /// TLS, server certificate not verified.
    Require,
    /// TLS, certificate verified against the CA.
    VerifyCa,
    /// TLS, certificate and host name verified.
    VerifyFull,
}

/// `database:` — backend, connection and pool.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct DatabaseSettings {
    /// `postgres` or `sqlite`; when absent, `postgres` if `host` is set, else `sqlite`.
    pub driver: Option<Driver>,
    /// PostgreSQL host.
    pub host: Option<String>,
    /// PostgreSQL port.
    pub port: u16,
    /// Database name.
    pub name: String,
    /// Role name.
    pub user: String,
    /// Password in the file itself (discouraged; prefer `secretsFile` or the environment).
    pub password: Option<Secret>,
    /// YAML file holding the password under `passwordKey` (a mounted Kubernetes Secret).
    pub secrets_file: Option<PathBuf>,
    /// Key of the password in `secretsFile`.
    pub password_key: String,
    /// TLS mode.
    pub ssl_mode: SslMode,
    /// Most connections open at once (in use + idle).
    pub max_open_conns: u32,
    /// Most idle connections kept; a returned connection beyond this is closed. When omitted:
    /// 5, or `maxOpenConns` if that is smaller.
    pub max_idle_conns: u32,
    /// Idle connections kept open ahead of demand.
    pub min_idle_conns: u32,
    /// Connections older than this are closed (`0s`: never).
    #[serde(with = "duration")]
    pub conn_max_lifetime: Duration,
    /// Connections idle longer than this are closed (`0s`: never).
    #[serde(with = "duration")]
    pub conn_max_idle_time: Duration,
    /// Longest wait for a free connection before answering 503.
    #[serde(with = "duration")]
    pub acquire_timeout: Duration,
    /// Longest time to open one connection.
    #[serde(with = "duration")]
    pub connect_timeout: Duration,
    /// PostgreSQL `statement_timeout`, set per session (`0s`: off).
    #[serde(with = "duration")]
    pub statement_timeout: Duration,
    /// PostgreSQL `lock_timeout` per session; SQLite's busy timeout (`0s`: off).
    #[serde(with = "duration")]
    pub lock_timeout: Duration,
    /// PostgreSQL `idle_in_transaction_session_timeout` per session (`0s`: off).
    #[serde(with = "duration")]
    pub idle_in_transaction_timeout: Duration,
    /// SQLite database file; its folder is created.
    pub sqlite_path: PathBuf,
    /// Apply pending migrations when `serve` starts.
    pub migrate_on_start: bool,
    /// The connection budget check (PostgreSQL only).
    pub capacity: CapacitySettings,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            driver: None,
            host: None,
            port: 5432,
            name: "datastorage".to_owned(),
            user: "datastorage".to_owned(),
            password: None,
            secrets_file: None,
            password_key: "password".to_owned(),
            ssl_mode: SslMode::Prefer,
            max_open_conns: DEFAULT_MAX_OPEN_CONNS,
            max_idle_conns: DEFAULT_MAX_IDLE_CONNS,
            min_idle_conns: 0,
            conn_max_lifetime: DEFAULT_CONN_MAX_LIFETIME,
            conn_max_idle_time: DEFAULT_CONN_MAX_IDLE_TIME,
            acquire_timeout: DEFAULT_ACQUIRE_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            statement_timeout: DEFAULT_STATEMENT_TIMEOUT,
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
            idle_in_transaction_timeout: DEFAULT_IDLE_IN_TRANSACTION_TIMEOUT,
            sqlite_path: PathBuf::from(DEFAULT_SQLITE_PATH),
            migrate_on_start: true,
            capacity: CapacitySettings::default(),
        }
    }
}

impl DatabaseSettings {
    /// The backend in effect.
    pub fn effective_driver(&self) -> Driver {
        self.driver.unwrap_or(if self.host.is_some() {
            Driver::Postgres
        } else {
            Driver::Sqlite
        })
    }
}

/// `database.capacity:` — the connection budget check.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct CapacitySettings {
    /// Peak replicas of this service (HPA maximum plus surge).
    pub replicas: u32,
    /// Connections kept free for migrations and admin sessions.
    pub headroom: u32,
    /// `warn` logs a violated budget; `fail` refuses to start.
    pub policy: CapacityPolicy,
}

impl Default for CapacitySettings {
    fn default() -> Self {
        Self {
            replicas: 1,
            headroom: DEFAULT_CAPACITY_HEADROOM,
            policy: CapacityPolicy::Warn,
        }
    }
}

/// What a violated connection budget does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CapacityPolicy {
    /// Log and go on.
    Warn,
    /// Refuse to start.
    Fail,
}

/// A secret string: `Debug`, `Display` and `Serialize` print `[redacted]`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// The secret itself; call only where it is handed to the driver.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("[redacted]")
    }
}

/// Go-style durations (`500ms`, `5m`, `1h30m`) in and out.
mod duration {
    use std::time::Duration;

    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string().replace(' ', ""))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        super::parse_duration(&s).map_err(D::Error::custom)
    }
}

/// Parses a Go-style duration; `0` alone is zero.
pub fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    let t = s.trim();
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(t).map_err(|e| {
        format!(
            "invalid duration {s:?}: {e} (use a Go-style duration such as 500ms, 30s, 5m or 1h30m)"
        )
    })
}

fn int_or_string<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum IntOrString {
        Int(u64),
        Str(String),
    }
    match IntOrString::deserialize(d)? {
        IntOrString::Int(n) => Ok(n),
        IntOrString::Str(s) => s.trim().parse().map_err(|_| {
            serde::de::Error::custom(format!(
                "expected a plain integer number of bytes, got {s:?}"
            ))
        }),
    }
}

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
                    _ => Value::String(raw),
                };
                set_path(&mut tree, &keys, value);
            }
            env_overrides.push(name);
        }
        let idle_given = lookup(&tree, &["database".to_owned(), "maxIdleConns".to_owned()])
            .is_some_and(|v| !v.is_null());
        let mut settings: Settings = serde_path_to_error::deserialize(tree).map_err(|e| {
            let path = e.path().to_string();
            anyhow!("{source}: invalid config at `{path}`: {}", e.into_inner())
        })?;
        if !idle_given {
            // Like Go's database/sql: an omitted maxIdleConns never exceeds maxOpenConns.
            let db = &mut settings.database;
            db.max_idle_conns = db.max_idle_conns.min(db.max_open_conns);
        }
        if let Some(p) = env_password {
            settings.database.password = Some(p);
        } else if let Some(secrets) = &settings.database.secrets_file {
            settings.database.password =
                Some(read_secret(secrets, &settings.database.password_key)?);
        }
        settings.validate().map_err(|e| anyhow!("{source}: {e}"))?;
        Ok(Loaded {
            settings,
            file: file.map(Path::to_path_buf),
            env_overrides,
        })
    }

    /// Cross-field rules. The message names every key involved.
    pub fn validate(&self) -> Result<()> {
        let s = &self.server;
        let db = &self.database;
        let mut problems = Vec::new();
        if s.port == s.metrics_port {
            problems.push(format!(
                "server.port and server.metricsPort must differ (both {})",
                s.port
            ));
        }
        if !(1..=MAX_MAX_BATCH_SIZE).contains(&s.max_batch_size) {
            problems.push(format!(
                "server.maxBatchSize must be between 1 and {MAX_MAX_BATCH_SIZE} (got {})",
                s.max_batch_size
            ));
        }
        if !(MIN_MAX_BODY_SIZE..=MAX_MAX_BODY_SIZE).contains(&s.max_body_size) {
            problems.push(format!("server.maxBodySize must be between {MIN_MAX_BODY_SIZE} and {MAX_MAX_BODY_SIZE} bytes (got {})", s.max_body_size));
        }
        for (key, d) in [
            ("server.readTimeout", s.read_timeout),
            ("server.writeTimeout", s.write_timeout),
            ("database.acquireTimeout", db.acquire_timeout),
            ("database.connectTimeout", db.connect_timeout),
        ] {
            if d.is_zero() {
                problems.push(format!("{key} must be greater than 0"));
            }
        }
        if db.max_open_conns == 0 {
            problems.push("database.maxOpenConns must be at least 1".to_owned());
        }
        if db.max_idle_conns > db.max_open_conns {
            problems.push(format!(
                "database.maxIdleConns ({}) must not exceed database.maxOpenConns ({})",
                db.max_idle_conns, db.max_open_conns
            ));
        }
        if db.min_idle_conns > db.max_idle_conns {
            problems.push(format!(
                "database.minIdleConns ({}) must not exceed database.maxIdleConns ({})",
                db.min_idle_conns, db.max_idle_conns
            ));
        }
        let hc = &self.hash_chain;
        match (&hc.key_file, hc.key_id.as_deref()) {
            (Some(_), None | Some("")) => {
                problems.push("hashChain.keyId is required with hashChain.keyFile".to_owned())
            }
            (None, Some(_)) => {
                problems.push("hashChain.keyId is set but hashChain.keyFile is not".to_owned())
            }
            _ => {}
        }
        if db.capacity.replicas == 0 {
            problems.push("database.capacity.replicas must be at least 1".to_owned());
        }
        if tracing_subscriber::EnvFilter::try_new(&self.logging.level).is_err() {
            problems.push(format!("logging.level {:?} is not a level (error, warn, info, debug, trace) or filter directive", self.logging.level));
        }
        match db.effective_driver() {
            Driver::Postgres => {
                if db.host.as_deref().is_none_or(str::is_empty) {
                    problems.push(
                        "database.host is required when database.driver is postgres".to_owned(),
                    );
                }
            }
            Driver::Sqlite => {
                if db.sqlite_path.as_os_str().is_empty() {
                    problems.push("database.sqlitePath must not be empty".to_owned());
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            bail!("invalid config: {}", problems.join("; "))
        }
    }

    /// Sections accepted from the upstream shape that do nothing yet.
    pub fn inactive_sections(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.redis.is_some() {
            v.push("redis");
        }
        if self.retention.is_some() {
            v.push("retention");
        }
        if self.audit.is_some() {
            v.push("audit");
        }
        if self.server.signer_cert_dir.is_some() {
            v.push("server.signerCertDir");
        }
        v
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

fn read_secret(path: &Path, key: &str) -> Result<Secret> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("database.secretsFile: cannot read {}", path.display()))?;
    let map: BTreeMap<String, Value> = serde_norway::from_str(&text).with_context(|| {
        format!(
            "database.secretsFile {} must be a YAML mapping of keys to values",
            path.display()
        )
    })?;
    match map.get(key) {
        Some(Value::String(s)) => Ok(Secret::new(s.clone())),
        Some(Value::Number(n)) => Ok(Secret::new(n.to_string())),
        _ => bail!(
            "database.secretsFile {} has no string key {key:?} (database.passwordKey)",
            path.display()
        ),
    }
}

/// A commented example config with every key at its default, as `config print-default` prints.
pub fn default_config_yaml() -> &'static str {
    include_str!("../config/default.yaml")
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn load_yaml(yaml: &str, env: &[(&str, &str)]) -> Result<Loaded> {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(yaml.as_bytes()).unwrap();
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        Settings::load(Some(f.path()), env)
    }

    #[test]
    fn the_upstream_config_file_loads_with_inactive_sections() {
        // A copy of shared/contract/upstream-config.yaml, byte for byte.
        let yaml = include_str!("../tests/data/upstream-config.yaml");
        let loaded = load_yaml(yaml, &[]).unwrap();
        let s = loaded.settings;
        assert_eq!(s.database.effective_driver(), Driver::Postgres);
        assert_eq!(s.database.max_open_conns, 25);
        assert_eq!(s.database.statement_timeout, Duration::from_secs(30));
        assert_eq!(s.server.max_body_size, 5_242_880);
        assert_eq!(s.database.ssl_mode, SslMode::Disable);
        assert_eq!(s.inactive_sections(), vec!["redis", "retention"]);
    }

    #[test]
    fn the_printed_default_config_loads_and_equals_the_defaults() {
        let loaded = load_yaml(default_config_yaml(), &[]).unwrap();
        let printed = serde_norway::to_value(&loaded.settings).unwrap();
        let defaults = serde_norway::to_value(Settings::default()).unwrap();
        assert_eq!(printed, defaults);
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
