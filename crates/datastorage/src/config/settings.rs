//! [`Settings`]: the whole configuration tree, and the rules that span its sections.

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use serde_norway::Value;

use super::database::{DatabaseSettings, Driver};
use super::hash_chain::HashChainSettings;
use super::logging::LoggingSettings;
use super::server::{ServerSettings, MAX_MAX_BATCH_SIZE, MAX_MAX_BODY_SIZE, MIN_MAX_BODY_SIZE};

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

impl Settings {
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
