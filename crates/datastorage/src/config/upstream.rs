//! The sections of upstream's config file that this service does not act on yet, typed with
//! upstream's key list, so an upstream file loads and a misspelt key still fails like any other
//! (`redis: {adr: x}` is an error, not silently nothing): `redis`, `telemetry`; plus `audit`,
//! whose HMAC key is applied to the hash chain. (`retention` is active: see `retention.rs`.)
//!
//! Key names, types and defaults follow upstream's `pkg/datastorage/config/config.go`.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// `redis:`, upstream's dead-letter queue for writes while the database is down.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct RedisSettings {
    /// `host:port` of Redis.
    pub addr: Option<String>,
    /// Upstream's `MAXLEN ~` of its streams.
    pub dlq_max_len: Option<u64>,
    /// YAML file holding the Redis password.
    pub secrets_file: Option<PathBuf>,
    /// Key of the password in `secretsFile`.
    pub password_key: Option<String>,
    /// TLS to Redis.
    pub tls: Option<ClientTls>,
    /// The password read from `secretsFile` at load.
    #[serde(skip)]
    pub password: Option<super::Secret>,
}

/// `telemetry:`, upstream's OTLP trace export.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct TelemetrySettings {
    /// OTLP/HTTP `host:port`, or `stdout`.
    pub endpoint: Option<String>,
    /// One log line per span.
    pub log_sink: bool,
    /// TLS to the collector.
    pub tls: Option<ClientTls>,
}

/// TLS of a client connection, in upstream's shape.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct ClientTls {
    /// Whether TLS is on.
    pub enabled: bool,
    /// CA certificates (PEM) that sign the server's certificate.
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM).
    pub cert_file: Option<PathBuf>,
    /// Client key (PEM).
    pub key_file: Option<PathBuf>,
}

/// `audit:`, upstream's HMAC key of the hash chain: applied as the active chain key when
/// `hashChain.keyFile` is not set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct AuditSettings {
    /// YAML file holding the key.
    pub hash_key_secrets_file: Option<PathBuf>,
    /// Key of the HMAC key in that file; its text is the key.
    pub hash_key_key: Option<String>,
}

/// Key id stored with rows signed with upstream's `audit` key.
pub const AUDIT_KEY_ID: &str = "audit";
