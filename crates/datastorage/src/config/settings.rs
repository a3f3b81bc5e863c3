//! [`Settings`]: the whole configuration tree, and the rules that span its sections.

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use super::auth::AuthSettings;
use super::buffer::{BufferBackend, BufferSettings};
use super::checkpoints::CheckpointSettings;
use super::database::{DatabaseSettings, Driver, SslMode};
use super::explorer::ExplorerSettings;
use super::hash_chain::HashChainSettings;
use super::logging::LoggingSettings;
use super::retention::RetentionSettings;
use super::server::{ServerSettings, MAX_MAX_BATCH_SIZE, MAX_MAX_BODY_SIZE, MIN_MAX_BODY_SIZE};
use super::signing::SigningSettings;
use super::upstream::{AuditSettings, RedisSettings, TelemetrySettings};
use super::validation::ValidationSettings;

/// The whole configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Settings {
    /// Upstream's deployment environment; `production` adds the checks upstream makes
    /// (TLS to the database, no `*` CORS origin).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// HTTP listeners and request limits.
    pub server: ServerSettings,
    /// Log level and format.
    pub logging: LoggingSettings,
    /// Database backend, connection and pool.
    pub database: DatabaseSettings,
    /// Keyed hash chains (HMAC-SHA-256).
    pub hash_chain: HashChainSettings,
    /// Access control: authentication mode, scopes, rate limits, access records.
    pub auth: AuthSettings,
    /// Rules an event must meet beyond the contract's: future skew, `event_data` schemas.
    pub validation: ValidationSettings,
    /// Upstream's HMAC key of the hash chain, applied when `hashChain.keyFile` is not set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audit: Option<AuditSettings>,
    /// The outage buffer: where writes go while the database cannot be reached.
    pub buffer: BufferSettings,
    /// Upstream's Redis section: the server of the outage buffer when `buffer.backend` is
    /// `redis`, else inactive.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisSettings>,
    /// Retention: the purge worker and the time partitions of `audit_events`.
    pub retention: RetentionSettings,
    /// The key that signs exports and checkpoints.
    pub signing: SigningSettings,
    /// The signed checkpoint log of chain heads.
    pub checkpoints: CheckpointSettings,
    /// The web explorer under `/ui/` and the live stream of events.
    pub explorer: ExplorerSettings,
    /// Upstream's trace export: accepted, inactive (not built yet).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub telemetry: Option<TelemetrySettings>,
    /// Upstream's TLS profile of its servers (`Old`, `Intermediate`, `Modern`): accepted,
    /// inactive (the listeners serve plain HTTP; TLS on them is not built yet).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_profile: Option<String>,
    /// Notes from loading (a value defaulted, a key applied under another name), logged at
    /// start.
    #[serde(skip)]
    pub notes: Vec<String>,
}

/// Log levels a bare `logging.level` may name (any case).
const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

impl Settings {
    /// Whether upstream's `environment: production` is set.
    pub fn is_production(&self) -> bool {
        self.environment
            .as_deref()
            .is_some_and(|e| e.eq_ignore_ascii_case("production"))
    }

    /// Applies the values upstream writes in its own forms: `server.maxBatchSize: 0` is the
    /// default, `server.endpointPropagationDelay` is `shutdownDelay`, log levels in any case.
    /// Each change is noted for the start-up log.
    pub fn apply_upstream_forms(&mut self) {
        let s = &mut self.server;
        if s.max_batch_size == 0 {
            s.max_batch_size = datastorage_api::DEFAULT_MAX_BATCH_SIZE;
            self.notes.push(format!(
                "server.maxBatchSize: 0 means the default, {}, as upstream",
                s.max_batch_size
            ));
        }
        if let Some(delay) = s.endpoint_propagation_delay {
            s.shutdown_delay = delay;
            self.notes.push(format!(
                "server.endpointPropagationDelay ({}) applied as server.shutdownDelay",
                super::values::format_duration(delay)
            ));
        }
        self.logging.level = self.logging.level.to_ascii_lowercase();
    }

    /// Cross-field rules. The message names every key involved.
    pub fn validate(&self) -> Result<()> {
        let s = &self.server;
        let db = &self.database;
        let mut problems = self.retention.problems();
        problems.extend(self.checkpoints.problems());
        problems.extend(self.explorer.problems());
        problems.extend(db.problems());
        problems.extend(self.buffer.problems(
            self.redis.as_ref().and_then(|r| r.addr.as_deref()),
            s.max_batch_size,
        ));
        if self.buffer.enabled && self.buffer.backend == BufferBackend::Redis {
            let redis = self.redis.clone().unwrap_or_default();
            if redis.tls.as_ref().is_some_and(|t| t.enabled) {
                problems.push("redis.tls.enabled: TLS to Redis is not built yet, and the outage buffer will not send audit events to Redis in plain text when TLS is asked for; use buffer.backend disk, or a Redis on a trusted network with redis.tls.enabled false".to_owned());
            }
        }
        let ports = [
            ("server.port", Some(s.port)),
            ("server.metricsPort", Some(s.metrics_port)),
            ("server.healthPort", s.health_port),
        ];
        for (i, (a, pa)) in ports.iter().enumerate() {
            for (b, pb) in &ports[i + 1..] {
                if pa.is_some() && pa == pb {
                    problems.push(format!(
                        "{a} and {b} must differ (both {})",
                        pa.unwrap_or_default()
                    ));
                }
            }
        }
        for (key, host) in [
            ("server.host", &s.host),
            ("server.metricsHost", &s.metrics_host),
        ] {
            if host.trim().is_empty() {
                problems.push(format!("{key} must be an IP address or a host name"));
            }
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
        if s.max_in_flight_body_bytes < s.max_body_size {
            problems.push(format!(
                "server.maxInFlightBodyBytes ({}) must be at least server.maxBodySize ({}), or no large body could ever be read",
                s.max_in_flight_body_bytes, s.max_body_size
            ));
        }
        if s.max_connections == 0 {
            problems.push("server.maxConnections must be at least 1".to_owned());
        }
        for (key, d) in [
            ("server.readTimeout", s.read_timeout),
            ("server.writeTimeout", s.write_timeout),
            ("server.headerReadTimeout", s.header_read_timeout),
            ("database.acquireTimeout", db.acquire_timeout),
            ("database.connectTimeout", db.connect_timeout),
        ] {
            if d.is_zero() {
                problems.push(format!("{key} must be greater than 0"));
            }
        }
        self.check_cors(&mut problems);
        if let Some(tls) = &s.tls {
            self.check_tls(tls, &mut problems);
        }
        self.check_auth(&mut problems);
        if let Some(p) = &self.tls_profile {
            if !["old", "intermediate", "modern"].contains(&p.to_ascii_lowercase().as_str()) {
                problems.push(format!(
                    "tlsProfile must be Old, Intermediate or Modern (got {p:?})"
                ));
            }
        }
        problems.extend(super::database::pool_size_problems(
            "database",
            db.max_open_conns,
            db.max_idle_conns,
            db.min_idle_conns,
        ));
        if db.ssl_cert.is_some() != db.ssl_key.is_some() {
            problems.push("database.sslCert and database.sslKey go together".to_owned());
        }
        for (key, file) in [
            ("database.sslRootCert", &db.ssl_root_cert),
            ("database.sslCert", &db.ssl_cert),
            ("database.sslKey", &db.ssl_key),
        ] {
            if let Some(path) = file {
                if let Err(e) = std::fs::metadata(path) {
                    problems.push(format!("{key}: cannot read {}: {e}", path.display()));
                }
            }
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
        if let Some(a) = &self.audit {
            match (&a.hash_key_secrets_file, a.hash_key_key.as_deref()) {
                (Some(_), None | Some("")) => problems.push(
                    "audit.hashKeyKey is required with audit.hashKeySecretsFile".to_owned(),
                ),
                (None, Some(_)) => problems
                    .push("audit.hashKeyKey is set but audit.hashKeySecretsFile is not".to_owned()),
                (Some(_), Some(_)) if hc.key_file.is_some() => problems.push(
                    "set the chain key once: hashChain.keyFile or audit.hashKeySecretsFile, not both"
                        .to_owned(),
                ),
                _ => {}
            }
        }
        if db.capacity.replicas == 0 {
            problems.push("database.capacity.replicas must be at least 1".to_owned());
        }
        if let Err(why) = check_level(&self.logging.level) {
            problems.push(format!("logging.level {why}"));
        }
        match db.effective_driver() {
            Driver::Postgres => {
                if db.host.as_deref().is_none_or(str::is_empty) {
                    problems.push(
                        "database.host is required when database.driver is postgres".to_owned(),
                    );
                }
                if self.is_production() && matches!(db.ssl_mode, SslMode::Disable | SslMode::Prefer)
                {
                    problems.push(format!(
                        "database.sslMode must be require, verify-ca or verify-full with environment: production (got {})",
                        db.ssl_mode.as_str()
                    ));
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

    fn check_tls(&self, tls: &super::server::ServerTls, problems: &mut Vec<String>) {
        if tls.cert_file.is_some() != tls.key_file.is_some() {
            problems.push("server.tls.certFile and server.tls.keyFile go together".to_owned());
        }
        if tls.cert_dir.is_some() && tls.cert_file.is_some() {
            problems.push(
                "set server.tls.certDir or server.tls.certFile and keyFile, not both".to_owned(),
            );
        }
        let files = tls.cert_and_key();
        if files.is_none() && (tls.client_ca_file.is_some() || tls.ca_file.is_some()) {
            problems.push("server.tls needs certFile and keyFile (or certDir): refusing to serve plain HTTP with TLS configured".to_owned());
        }
        let named = files
            .iter()
            .flat_map(|(c, k)| {
                let (ck, kk) = if tls.cert_dir.is_some() {
                    ("server.tls.certDir", "server.tls.certDir")
                } else {
                    ("server.tls.certFile", "server.tls.keyFile")
                };
                [(ck, c.clone()), (kk, k.clone())]
            })
            .chain(
                tls.client_ca_file
                    .iter()
                    .map(|f| ("server.tls.clientCaFile", f.clone())),
            );
        for (key, path) in named {
            if let Err(e) = std::fs::metadata(&path) {
                problems.push(format!(
                    "{key}: cannot read {}: {e}; refusing to start rather than serve plain HTTP",
                    path.display()
                ));
            }
        }
    }

    fn check_auth(&self, problems: &mut Vec<String>) {
        use super::auth::AuthMode;
        let auth = &self.auth;
        match auth.mode {
            Some(AuthMode::Tokens) if auth.tokens_file.is_none() => {
                problems.push("auth.mode is tokens but auth.tokensFile is not set".to_owned())
            }
            Some(AuthMode::Mtls)
                if self.server.tls.as_ref().is_none_or(|t| t.client_ca_file.is_none()) =>
            {
                problems.push("auth.mode is mtls but server.tls.clientCaFile is not set: the API listener must verify client certificates".to_owned())
            }
            Some(mode @ (AuthMode::Mtls | AuthMode::None)) if auth.metrics_require_auth => {
                problems.push(format!(
                    "auth.metricsRequireAuth needs a bearer-token mode (tokens or kubernetes); auth.mode is {}",
                    mode.as_str()
                ))
            }
            _ => {}
        }
        let cache = &auth.kubernetes.cache;
        if auth.kubernetes.timeout.is_zero() {
            problems.push("auth.kubernetes.timeout must be greater than 0".to_owned());
        }
        if cache.max_entries == 0 {
            problems.push("auth.kubernetes.cache.maxEntries must be at least 1".to_owned());
        }
        if auth.kubernetes.group.is_empty() || auth.kubernetes.resource.is_empty() {
            problems.push(
                "auth.kubernetes.group and auth.kubernetes.resource must not be empty".to_owned(),
            );
        }
    }

    fn check_cors(&self, problems: &mut Vec<String>) {
        let origins = &self.server.cors_allowed_origins;
        for (i, o) in origins.iter().enumerate() {
            let key = format!("server.corsAllowedOrigins[{i}]");
            if o == "*" {
                if origins.len() > 1 {
                    problems.push(format!("{key}: \"*\" (any origin) must be the only entry"));
                }
                if self.is_production() {
                    problems.push(format!(
                        "{key}: \"*\" (any origin) is refused with environment: production"
                    ));
                }
                continue;
            }
            let rest = o
                .strip_prefix("https://")
                .or_else(|| o.strip_prefix("http://"));
            let ok = rest.is_some_and(|r| {
                !r.is_empty() && !r.contains('/') && r.bytes().all(|b| b.is_ascii_graphic())
            });
            if !ok {
                problems.push(format!(
                    "{key}: {o:?} is not an origin: write scheme and host, e.g. \"https://ui.example\" (or \"*\" alone for any origin)"
                ));
            }
        }
    }

    /// Sections and keys accepted from the upstream shape that do nothing here yet, by name.
    pub fn inactive_keys(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        let redis_used = self.buffer.enabled && self.buffer.backend == BufferBackend::Redis;
        if self.redis.is_some() && !redis_used {
            v.push("redis");
        }
        if self.telemetry.is_some() {
            v.push("telemetry");
        }
        if self.tls_profile.is_some() {
            v.push("tlsProfile");
        }
        if self.server.signer_cert_dir.is_some() {
            v.push("server.signerCertDir");
        }
        if self.server.rate_limit.is_some() {
            v.push("server.rateLimit");
        }
        if self
            .server
            .tls
            .as_ref()
            .is_some_and(|t| t.ca_file.is_some())
        {
            v.push("server.tls.caFile");
        }
        if self.server.disable_profiling {
            v.push("server.disableProfiling");
        }
        v
    }
}

/// Whether `level` is a log level (any case) or a `tracing` filter directive. A bare word
/// that names no level is an error, not a directive for a target of that name (which would
/// silently log nothing).
fn check_level(level: &str) -> std::result::Result<(), String> {
    let bare = !level.contains(['=', ',', ':', '[']);
    if bare && !LEVELS.contains(&level.trim().to_ascii_lowercase().as_str()) {
        return Err(format!(
            "{level:?} is not a level: use one of {} (any case), or a tracing filter directive such as info,sqlx=warn",
            LEVELS.join(", ")
        ));
    }
    if tracing_subscriber::EnvFilter::try_new(level.to_ascii_lowercase()).is_err() {
        return Err(format!(
            "{level:?} is not a level ({}) or a tracing filter directive",
            LEVELS.join(", ")
        ));
    }
    Ok(())
}
