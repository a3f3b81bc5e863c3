//! `server:`: the HTTP listeners, request limits and shutdown timing.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::values::{duration, int_or_string, option_duration};

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
/// Default longest time a client may take to send a request's headers (slow clients that hold
/// connections open without finishing a request are closed after it).
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Default most connections each listener keeps open at once.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Default bytes of request bodies being read or parsed at once, all requests together.
pub const DEFAULT_MAX_IN_FLIGHT_BODY_BYTES: u64 = 64 * 1024 * 1024;

/// `server:` — HTTP.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct ServerSettings {
    /// Address (IP or host name) the API listens on.
    pub host: String,
    /// API port.
    pub port: u16,
    /// Address (IP or host name) the metrics listener, and the health listener, bind.
    pub metrics_host: String,
    /// Metrics port (`/metrics`, `/healthz`, `/readyz`).
    pub metrics_port: u16,
    /// A third listener serving only `/healthz` and `/readyz`, as upstream's health port
    /// (8081); `null`: none (the probes are on the API and metrics ports anyway).
    pub health_port: Option<u16>,
    /// Most events one batch request may carry; `0` means the default (as upstream).
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
    /// Upstream's name for `shutdownDelay`; set at most one of the two.
    #[serde(with = "option_duration", skip_serializing_if = "Option::is_none")]
    pub endpoint_propagation_delay: Option<Duration>,
    /// Time in-flight requests get to finish once the listener is closed.
    #[serde(with = "duration")]
    pub shutdown_timeout: Duration,
    /// Longest time a client may take to send a request's headers; then the connection closes.
    #[serde(with = "duration")]
    pub header_read_timeout: Duration,
    /// Most connections each listener keeps open at once; more wait in the kernel's backlog.
    pub max_connections: usize,
    /// Bytes of request bodies being read or parsed at once, all requests together; a request
    /// beyond it answers 503 with `Retry-After`, which bounds the memory of concurrent large
    /// bodies.
    #[serde(deserialize_with = "int_or_string")]
    pub max_in_flight_body_bytes: u64,
    /// Upstream's switch for its profiling endpoints: accepted; this service has none.
    pub disable_profiling: bool,
    /// TLS of the API listener; unset: plain HTTP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<ServerTls>,
    /// Upstream's per-IP rate limit: accepted and inactive (a client chooses its own IP with
    /// `X-Forwarded-For`, so it limits nobody who does not want to be limited).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<UpstreamRateLimit>,
}

/// `server.tls`: the API listener's certificate, key and client CA, re-read when they change.
/// Upstream's shape (`certDir` holding `tls.crt` and `tls.key`) is accepted too.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct ServerTls {
    /// Certificate chain (PEM), leaf first.
    pub cert_file: Option<PathBuf>,
    /// Private key (PEM) of the certificate.
    pub key_file: Option<PathBuf>,
    /// Upstream's form: a folder holding `tls.crt` and `tls.key` (a mounted
    /// `kubernetes.io/tls` Secret); instead of `certFile` and `keyFile`.
    pub cert_dir: Option<PathBuf>,
    /// CA certificates (PEM) that sign client certificates. When set, clients may present a
    /// certificate, and one that does not verify is refused in the handshake; `auth.mode: mtls`
    /// needs it.
    pub client_ca_file: Option<PathBuf>,
    /// Upstream declares it and never reads it: accepted, inactive.
    pub ca_file: Option<PathBuf>,
}

impl ServerTls {
    /// The certificate and key files in force: `certFile`/`keyFile`, or `certDir`'s
    /// `tls.crt`/`tls.key`.
    pub fn cert_and_key(&self) -> Option<(PathBuf, PathBuf)> {
        match (&self.cert_file, &self.key_file, &self.cert_dir) {
            (Some(c), Some(k), _) => Some((c.clone(), k.clone())),
            (None, None, Some(dir)) => Some((dir.join("tls.crt"), dir.join("tls.key"))),
            _ => None,
        }
    }
}

/// `server.rateLimit`, in upstream's shape.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct UpstreamRateLimit {
    /// Whether upstream's limit is on.
    pub enabled: bool,
    /// Tokens per second per client IP.
    pub requests_per_second: f64,
    /// Bucket size.
    pub burst: u32,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".to_owned(),
            port: DEFAULT_PORT,
            metrics_host: "0.0.0.0".to_owned(),
            metrics_port: DEFAULT_METRICS_PORT,
            health_port: None,
            max_batch_size: datastorage_api::DEFAULT_MAX_BATCH_SIZE,
            read_timeout: DEFAULT_HTTP_TIMEOUT,
            write_timeout: DEFAULT_HTTP_TIMEOUT,
            max_body_size: DEFAULT_MAX_BODY_SIZE,
            cors_allowed_origins: Vec::new(),
            signer_cert_dir: None,
            shutdown_delay: DEFAULT_SHUTDOWN_DELAY,
            endpoint_propagation_delay: None,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_in_flight_body_bytes: DEFAULT_MAX_IN_FLIGHT_BODY_BYTES,
            disable_profiling: false,
            tls: None,
            rate_limit: None,
        }
    }
}
