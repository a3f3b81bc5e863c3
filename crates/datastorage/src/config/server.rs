//! `server:`: the HTTP listeners, request limits and shutdown timing.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::values::{duration, int_or_string};

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
