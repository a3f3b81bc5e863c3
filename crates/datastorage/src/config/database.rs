//! `database:`: backend, connection, pool knobs and the capacity budget.
//!
//! Every knob has a named default constant, so an omitted key never turns into a zero (an
//! upstream defect: an omitted `maxIdleConns` kept no idle connections at all).

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::secret::Secret;
use super::values::duration;

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
/// Default `database.waitOnStart`: a database started beside the service in Kubernetes usually
/// comes up within this.
pub const DEFAULT_WAIT_ON_START: Duration = Duration::from_secs(60);
/// Default connection headroom for migrations and admin sessions in the capacity budget.
pub const DEFAULT_CAPACITY_HEADROOM: u32 = 5;
/// Default `database.readReplica.maxReplicaLag`.
pub const DEFAULT_MAX_REPLICA_LAG: Duration = Duration::from_secs(10);
/// Default `database.readReplica.lagCheckInterval`.
pub const DEFAULT_LAG_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Which database backs the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Driver {
    /// PostgreSQL (production).
    Postgres,
    /// Embedded SQLite (default when no database is configured).
    Sqlite,
}

impl Driver {
    /// `postgres` or `sqlite`.
    pub fn as_str(self) -> &'static str {
        match self {
            Driver::Postgres => "postgres",
            Driver::Sqlite => "sqlite",
        }
    }
}

/// What `database.host` is: PostgreSQL itself, or a connection pooler in front of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pooler {
    /// PostgreSQL itself.
    #[default]
    None,
    /// PgBouncer in transaction pooling mode: a client's statements reach the same server
    /// connection only inside one transaction. The service then keeps no session state: no
    /// statement reused across transactions, no session settings (the timeouts are set per transaction
    /// with `SET LOCAL`), every statement inside a transaction, and migrations and the capacity
    /// check on a direct connection (`database.migrationHost`).
    Pgbouncer,
}

impl Pooler {
    /// `none` or `pgbouncer`.
    pub fn as_str(self) -> &'static str {
        match self {
            Pooler::None => "none",
            Pooler::Pgbouncer => "pgbouncer",
        }
    }
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

impl SslMode {
    /// The libpq name.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
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
    /// File holding the password: a YAML mapping with the password under `passwordKey` (and
    /// optionally the role under `usernameKey`), or a file whose whole content is the password
    /// (a mounted Kubernetes Secret key).
    pub secrets_file: Option<PathBuf>,
    /// Key of the password in `secretsFile`.
    pub password_key: String,
    /// Key of the role in `secretsFile`; when set and present there, it replaces `user`.
    pub username_key: Option<String>,
    /// TLS mode.
    pub ssl_mode: SslMode,
    /// CA certificates (PEM) that sign the server's certificate, for `verify-ca` and
    /// `verify-full`; unset: the public web roots.
    pub ssl_root_cert: Option<PathBuf>,
    /// Client certificate (PEM), for servers that authenticate clients by certificate.
    pub ssl_cert: Option<PathBuf>,
    /// Key of the client certificate (PEM).
    pub ssl_key: Option<PathBuf>,
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
    /// How long `serve` waits for the database at start, retrying with backoff while it is
    /// unreachable or not yet accepting connections (`0s`: do not wait). The listeners answer
    /// the probes meanwhile, `/readyz` with 503.
    #[serde(with = "duration")]
    pub wait_on_start: Duration,
    /// The connection budget check (PostgreSQL only).
    pub capacity: CapacitySettings,
    /// What `host` is: `none` (PostgreSQL) or `pgbouncer` (transaction pooling).
    pub pooler: Pooler,
    /// PostgreSQL itself, for migrations, the migration check and the capacity check, when
    /// `host` is a pooler (required then). Default: `host`.
    pub migration_host: Option<String>,
    /// Port of `migrationHost`. Default: 5432 with `migrationHost`, else `port`.
    pub migration_port: Option<u16>,
    /// A streaming replica that serves reads (see [`crate::db::replica`]).
    pub read_replica: Option<ReplicaSettings>,
}

/// The rules of a pool's sizes, for the pool under `prefix`: at least one connection, no more
/// idle than open, no more kept ahead than idle.
pub fn pool_size_problems(
    prefix: &str,
    max_open: u32,
    max_idle: u32,
    min_idle: u32,
) -> Vec<String> {
    let mut problems = Vec::new();
    if max_open == 0 {
        problems.push(format!("{prefix}.maxOpenConns must be at least 1"));
    }
    if max_idle > max_open {
        problems.push(format!(
            "{prefix}.maxIdleConns ({max_idle}) must not exceed {prefix}.maxOpenConns ({max_open})"
        ));
    }
    if min_idle > max_idle {
        problems.push(format!(
            "{prefix}.minIdleConns ({min_idle}) must not exceed {prefix}.maxIdleConns ({max_idle})"
        ));
    }
    problems
}

/// `database.readReplica:` — a streaming replica of the database, reached with the same
/// database name, role and TLS settings, with a pool of its own.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct ReplicaSettings {
    /// Its host (required).
    pub host: Option<String>,
    /// Its port.
    pub port: u16,
    /// Most connections of its pool.
    pub max_open_conns: u32,
    /// Most idle connections kept.
    pub max_idle_conns: u32,
    /// Idle connections kept open ahead of demand.
    pub min_idle_conns: u32,
    /// Connections older than this are closed (`0s`: never).
    #[serde(with = "duration")]
    pub conn_max_lifetime: Duration,
    /// Connections idle longer than this are closed (`0s`: never).
    #[serde(with = "duration")]
    pub conn_max_idle_time: Duration,
    /// Longest wait for a free connection; then the read goes to the primary.
    #[serde(with = "duration")]
    pub acquire_timeout: Duration,
    /// Longest time to open one connection.
    #[serde(with = "duration")]
    pub connect_timeout: Duration,
    /// Reads go to the primary while the replica is further behind than this.
    #[serde(with = "duration")]
    pub max_replica_lag: Duration,
    /// How often the replica's lag is sampled.
    #[serde(with = "duration")]
    pub lag_check_interval: Duration,
}

impl Default for ReplicaSettings {
    fn default() -> Self {
        Self {
            host: None,
            port: 5432,
            max_open_conns: DEFAULT_MAX_OPEN_CONNS,
            max_idle_conns: DEFAULT_MAX_IDLE_CONNS,
            min_idle_conns: 0,
            conn_max_lifetime: DEFAULT_CONN_MAX_LIFETIME,
            conn_max_idle_time: DEFAULT_CONN_MAX_IDLE_TIME,
            acquire_timeout: DEFAULT_ACQUIRE_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            max_replica_lag: DEFAULT_MAX_REPLICA_LAG,
            lag_check_interval: DEFAULT_LAG_CHECK_INTERVAL,
        }
    }
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
            username_key: None,
            ssl_mode: SslMode::Prefer,
            ssl_root_cert: None,
            ssl_cert: None,
            ssl_key: None,
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
            wait_on_start: DEFAULT_WAIT_ON_START,
            capacity: CapacitySettings::default(),
            pooler: Pooler::None,
            migration_host: None,
            migration_port: None,
            read_replica: None,
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

    /// Where migrations, the migration check and the capacity check connect: `migrationHost`
    /// and `migrationPort`, or `host` and `port`.
    pub fn direct_host_port(&self) -> (&str, u16) {
        match &self.migration_host {
            Some(h) => (h, self.migration_port.unwrap_or(5432)),
            None => (
                self.host.as_deref().unwrap_or("localhost"),
                self.migration_port.unwrap_or(self.port),
            ),
        }
    }

    /// Where direct sessions connect, for messages, as [`DatabaseSettings::target`].
    pub fn direct_target(&self) -> String {
        let (host, port) = self.direct_host_port();
        format!("PostgreSQL at {host}:{port}/{} as {}", self.name, self.user)
    }

    /// The settings of the read replica's pool: this database and role on `readReplica`'s
    /// host, with its pool knobs; `None` without a replica.
    pub fn replica(&self) -> Option<DatabaseSettings> {
        let r = self.read_replica.as_ref()?;
        Some(DatabaseSettings {
            host: r.host.clone(),
            port: r.port,
            max_open_conns: r.max_open_conns,
            max_idle_conns: r.max_idle_conns,
            min_idle_conns: r.min_idle_conns,
            conn_max_lifetime: r.conn_max_lifetime,
            conn_max_idle_time: r.conn_max_idle_time,
            acquire_timeout: r.acquire_timeout,
            connect_timeout: r.connect_timeout,
            pooler: Pooler::None,
            migration_host: None,
            migration_port: None,
            read_replica: None,
            ..self.clone()
        })
    }

    /// Rules of the pooler and replica keys.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Some(r) = &self.read_replica {
            if self.effective_driver() != Driver::Postgres {
                problems.push("database.readReplica needs database.driver postgres".to_owned());
            }
            if r.host.as_ref().is_none_or(|h| h.trim().is_empty()) {
                problems.push(
                    "database.readReplica.host is required: the replica's host name or IP address"
                        .to_owned(),
                );
            }
            problems.extend(pool_size_problems(
                "database.readReplica",
                r.max_open_conns,
                r.max_idle_conns,
                r.min_idle_conns,
            ));
            for (key, d) in [
                ("acquireTimeout", r.acquire_timeout),
                ("connectTimeout", r.connect_timeout),
                ("maxReplicaLag", r.max_replica_lag),
                ("lagCheckInterval", r.lag_check_interval),
            ] {
                if d.is_zero() {
                    problems.push(format!("database.readReplica.{key} must be greater than 0"));
                }
            }
        }
        if self.pooler == Pooler::Pgbouncer {
            if self.effective_driver() != Driver::Postgres {
                problems.push(
                    "database.pooler pgbouncer needs database.driver postgres (and database.host, the pooler)"
                        .to_owned(),
                );
            } else if self.migration_host.is_none() {
                problems.push("database.migrationHost is required with database.pooler pgbouncer: migrations hold a session-level lock and the capacity check reads the server itself, which a transaction-mode pooler cannot carry; set it to PostgreSQL's own address".to_owned());
            }
        }
        if self
            .migration_host
            .as_ref()
            .is_some_and(|h| h.trim().is_empty())
        {
            problems.push("database.migrationHost must be a host name or an IP address".to_owned());
        }
        problems
    }

    /// Where the service connects, for messages: `host:port/name as user`, or the SQLite file.
    /// Never the password.
    pub fn target(&self) -> String {
        match self.effective_driver() {
            Driver::Postgres => format!(
                "PostgreSQL at {}:{}/{} as {}",
                self.host.as_deref().unwrap_or_default(),
                self.port,
                self.name,
                self.user
            ),
            Driver::Sqlite => format!("SQLite database {}", self.sqlite_path.display()),
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn postgres() -> DatabaseSettings {
        DatabaseSettings {
            host: Some("primary".to_owned()),
            ..DatabaseSettings::default()
        }
    }

    #[test]
    fn a_read_replica_needs_a_host_and_sane_pool_sizes_each_named_by_its_key() {
        let mut db = postgres();
        db.read_replica = Some(ReplicaSettings {
            max_open_conns: 2,
            max_idle_conns: 3,
            lag_check_interval: Duration::ZERO,
            ..ReplicaSettings::default()
        });
        let problems = db.problems().join("\n");
        for key in [
            "database.readReplica.host is required",
            "database.readReplica.maxIdleConns (3) must not exceed database.readReplica.maxOpenConns (2)",
            "database.readReplica.lagCheckInterval must be greater than 0",
        ] {
            assert!(problems.contains(key), "{key} missing from:\n{problems}");
        }
    }

    #[test]
    fn the_replica_pool_is_the_primary_database_on_the_replica_host_with_its_own_knobs() {
        let mut db = postgres();
        db.pooler = Pooler::Pgbouncer;
        db.migration_host = Some("direct".to_owned());
        db.read_replica = Some(ReplicaSettings {
            host: Some("replica".to_owned()),
            port: 6543,
            max_open_conns: 7,
            ..ReplicaSettings::default()
        });
        assert!(db.problems().is_empty(), "{:?}", db.problems());
        let r = db.replica().unwrap();
        assert_eq!((r.host.as_deref(), r.port), (Some("replica"), 6543));
        assert_eq!(
            (r.name.as_str(), r.user.as_str()),
            ("datastorage", "datastorage")
        );
        assert_eq!(r.max_open_conns, 7);
        // Direct to the replica: no pooler, its migrations and checks on itself.
        assert_eq!(r.pooler, Pooler::None);
        assert_eq!(r.direct_host_port(), ("replica", 6543));
        assert!(r.read_replica.is_none());
        assert!(postgres().replica().is_none());
    }
}
