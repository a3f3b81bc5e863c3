//! The server under test: `datastorage serve` as a child process with a generated config.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hyper::header::HeaderValue;
use tokio::process::{Child, Command};

use datastorage_testkit::free_port;

use crate::load;
use crate::sys::vm_kib;

/// Where the server stores events.
#[derive(Debug, Clone)]
pub enum Backend {
    /// A PostgreSQL database.
    Postgres {
        /// Host name or address.
        host: String,
        /// Port.
        port: u16,
        /// Database name.
        name: String,
        /// Role.
        user: String,
        /// Password, handed over in the environment.
        password: Option<String>,
    },
    /// A SQLite file.
    Sqlite(PathBuf),
}

/// `auth.mode` of the server under test.
#[derive(Debug, Clone, Default)]
pub enum AuthMode {
    /// No `auth.mode` key: the server's default (`none`, the API listening on loopback).
    #[default]
    Default,
    /// `auth.mode: none`, said explicitly.
    None,
    /// `auth.mode: tokens` with this tokens file; clients send its token.
    Tokens(Tokens),
}

/// One bearer token and the tokens file that lists its hash.
#[derive(Debug, Clone)]
pub struct Tokens {
    /// The tokens file: name, hex SHA-256 and scopes; never the token itself.
    pub file: PathBuf,
    /// The token clients send (`Authorization: Bearer <token>`).
    pub token: String,
}

impl Tokens {
    /// A new random token (`datastorage::auth::tokens::generate`), listed as `name` with
    /// `scopes` in `dir/tokens.yaml` by its hash (`datastorage::auth::tokens::hash`).
    pub fn create(dir: &Path, name: &str, scopes: &[&str]) -> Result<Self> {
        let token = datastorage::auth::tokens::generate()?;
        let file = dir.join("tokens.yaml");
        std::fs::write(
            &file,
            format!(
                "tokens:\n  - name: {name}\n    sha256: {}\n    scopes: [{}]\n",
                datastorage::auth::tokens::hash(&token),
                scopes.join(", ")
            ),
        )
        .with_context(|| format!("cannot write {}", file.display()))?;
        Ok(Self { file, token })
    }

    /// The `Authorization` header value, marked sensitive.
    pub fn authorization(&self) -> Result<HeaderValue> {
        let mut v = HeaderValue::from_str(&format!("Bearer {}", self.token))
            .context("the token is not a valid header value")?;
        v.set_sensitive(true);
        Ok(v)
    }
}

/// Settings the harness varies.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The backend.
    pub backend: Backend,
    /// `database.maxOpenConns`.
    pub max_open_conns: u32,
    /// `database.maxIdleConns`; `None` keeps the server's default (lowered to
    /// `max_open_conns` when that is smaller).
    pub max_idle_conns: Option<u32>,
    /// `server.maxInFlightBodyBytes`; `None` keeps the server's default (64 MiB).
    pub max_in_flight_body_bytes: Option<u64>,
    /// `database.lockTimeout`, `database.statementTimeout` and `server.writeTimeout`, all three
    /// (a statement waiting for a lock is bounded by all of them); `None` keeps the defaults.
    pub wait_limit: Option<Duration>,
    /// `auth.mode` (with `auth.tokensFile` for tokens).
    pub auth: AuthMode,
    /// `auth.recordReads`; `None` keeps the default (true: every query, read and verification
    /// writes an access record before it answers).
    pub record_reads: Option<bool>,
    /// Whether the retention and checkpoint workers run (`retention.enabled`,
    /// `checkpoints.enabled`); off but in the lifecycle part.
    pub lifecycle_workers: bool,
    /// YAML appended to the generated config as it is (top-level sections such as
    /// `retention:`; with `lifecycle_workers` false it must not repeat `retention:` or
    /// `checkpoints:`, which are written then).
    pub extra_yaml: Option<String>,
    /// Keys added to the generated `database:` section, each line indented two spaces (e.g.
    /// `  connectTimeout: 1s\n`); they must not repeat a key the harness writes there.
    pub database_yaml: Option<String>,
}

impl ServerConfig {
    /// The harness's usual server on `backend`: the pool as given, every other key default.
    pub fn new(backend: Backend, max_open_conns: u32, max_idle_conns: Option<u32>) -> Self {
        Self {
            backend,
            max_open_conns,
            max_idle_conns,
            max_in_flight_body_bytes: None,
            wait_limit: None,
            auth: AuthMode::Default,
            record_reads: None,
            lifecycle_workers: false,
            extra_yaml: None,
            database_yaml: None,
        }
    }
}

/// The config file text for `cfg` on the given ports.
pub fn config_yaml(cfg: &ServerConfig, api: u16, metrics: u16) -> String {
    let mut y = format!(
        "server:\n  host: 127.0.0.1\n  port: {api}\n  metricsHost: 127.0.0.1\n  metricsPort: {metrics}\n  shutdownDelay: 0s\n  shutdownTimeout: 10s\n"
    );
    if let Some(n) = cfg.max_in_flight_body_bytes {
        y.push_str(&format!("  maxInFlightBodyBytes: {n}\n"));
    }
    let wait = cfg.wait_limit.map(|d| format!("{}ms", d.as_millis()));
    if let Some(w) = &wait {
        y.push_str(&format!("  writeTimeout: {w}\n"));
    }
    y.push_str(&format!(
        "logging:\n  level: warn\n  format: text\ndatabase:\n  maxOpenConns: {}\n",
        cfg.max_open_conns
    ));
    if let Some(w) = &wait {
        y.push_str(&format!("  lockTimeout: {w}\n  statementTimeout: {w}\n"));
    }
    // maxIdleConns keeps its default (5) unless set, or unless that would exceed maxOpenConns.
    match cfg.max_idle_conns {
        Some(n) => y.push_str(&format!("  maxIdleConns: {}\n", n.min(cfg.max_open_conns))),
        None if cfg.max_open_conns < 5 => {
            y.push_str(&format!("  maxIdleConns: {}\n", cfg.max_open_conns));
        }
        None => {}
    }
    match &cfg.backend {
        Backend::Postgres {
            host,
            port,
            name,
            user,
            ..
        } => y.push_str(&format!(
            "  driver: postgres\n  host: \"{host}\"\n  port: {port}\n  name: \"{name}\"\n  user: \"{user}\"\n  sslMode: disable\n"
        )),
        Backend::Sqlite(path) => y.push_str(&format!(
            "  driver: sqlite\n  sqlitePath: \"{}\"\n",
            path.display()
        )),
    }
    if let Some(keys) = &cfg.database_yaml {
        y.push_str(keys);
        if !keys.ends_with('\n') {
            y.push('\n');
        }
    }
    // The lifecycle workers run in the lifecycle part only, where their cost is what is
    // measured; elsewhere a purge scan or a checkpoint of every head would land in the middle of
    // another part's window.
    if !cfg.lifecycle_workers {
        y.push_str("retention:\n  enabled: false\ncheckpoints:\n  enabled: false\n");
    }
    let mode = match &cfg.auth {
        AuthMode::Default => None,
        AuthMode::None => Some("  mode: none\n".to_owned()),
        AuthMode::Tokens(t) => Some(format!(
            "  mode: tokens\n  tokensFile: \"{}\"\n",
            t.file.display()
        )),
    };
    if mode.is_some() || cfg.record_reads.is_some() {
        y.push_str("auth:\n");
        y.push_str(mode.as_deref().unwrap_or(""));
        if let Some(r) = cfg.record_reads {
            y.push_str(&format!("  recordReads: {r}\n"));
        }
    }
    if let Some(extra) = &cfg.extra_yaml {
        y.push_str(extra);
        if !extra.ends_with('\n') {
            y.push('\n');
        }
    }
    y
}

/// A running server.
pub struct Server {
    child: Child,
    /// Its process id.
    pub pid: u32,
    /// API address.
    pub api: SocketAddr,
    /// Metrics address.
    pub metrics: SocketAddr,
    /// The `Authorization` header its clients send (`auth.mode: tokens`), if any.
    pub authorization: Option<HeaderValue>,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Server {
    /// Starts `bin serve` with `cfg` and waits until `/readyz` answers 200.
    pub async fn start(bin: &Path, cfg: &ServerConfig) -> Result<Self> {
        let authorization = match &cfg.auth {
            AuthMode::Tokens(t) => Some(t.authorization()?),
            AuthMode::Default | AuthMode::None => None,
        };
        let dir = tempfile::Builder::new().prefix("ds-bench-srv-").tempdir()?;
        let (api_port, metrics_port) = (free_port(), free_port());
        let config = dir.path().join("config.yaml");
        std::fs::write(&config, config_yaml(cfg, api_port, metrics_port))?;
        let log = dir.path().join("server.log");
        let logf = std::fs::File::create(&log)?;
        let mut cmd = Command::new(bin);
        cmd.arg("--config")
            .arg(&config)
            .arg("serve")
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(logf.try_clone()?)
            .stderr(logf)
            .kill_on_drop(true);
        // Only the generated file configures the server.
        for (k, _) in std::env::vars() {
            if k.starts_with("DATASTORAGE_") {
                cmd.env_remove(k);
            }
        }
        if let Backend::Postgres {
            password: Some(p), ..
        } = &cfg.backend
        {
            cmd.env("DATASTORAGE_DATABASE__PASSWORD", p);
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let pid = child.id().context("server exited at once")?;
        let mut server = Self {
            child,
            pid,
            api: SocketAddr::from(([127, 0, 0, 1], api_port)),
            metrics: SocketAddr::from(([127, 0, 0, 1], metrics_port)),
            authorization,
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok((s, _)) = load::get(server.api, "/readyz").await {
                if s.is_success() {
                    return Ok(server);
                }
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                bail!(
                    "server exited with {status} before becoming ready:\n{}",
                    server.log_tail()
                );
            }
            if Instant::now() > deadline {
                bail!("server not ready after 120 s:\n{}", server.log_tail());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The last lines of the server's log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Lines of the server's log that are warnings or errors (first 20, colours removed,
    /// cut at 400 characters).
    pub fn log_problems(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .take(20)
            .map(|l| strip_ansi(l).chars().take(400).collect())
            .collect()
    }

    /// Every warning and error line of the log, grouped by message (colours, the leading
    /// timestamp and the structured fields after the message removed), with how many times
    /// each occurred, in the order first seen.
    pub fn log_problem_kinds(&self) -> Vec<(usize, String)> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let mut kinds: Vec<(usize, String)> = Vec::new();
        for line in text
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        {
            let kind = problem_kind(&strip_ansi(line));
            match kinds.iter_mut().find(|(_, k)| *k == kind) {
                Some((n, _)) => *n += 1,
                None => kinds.push((1, kind)),
            }
        }
        kinds
    }

    /// Peak resident memory so far (VmHWM), KiB.
    pub fn hwm_kib(&self) -> Option<u64> {
        vm_kib(self.pid, "VmHWM")
    }

    /// `/metrics` parsed.
    pub async fn metrics(&self) -> Result<Metrics> {
        let (status, body) = load::get(self.metrics, "/metrics").await?;
        anyhow::ensure!(status.is_success(), "/metrics answered {status}");
        Ok(Metrics::parse(&String::from_utf8_lossy(&body)))
    }

    /// SIGTERM, then wait for the exit (killed after 20 s).
    pub async fn stop(mut self) -> Result<()> {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status();
        match tokio::time::timeout(Duration::from_secs(20), self.child.wait()).await {
            Ok(status) => {
                status?;
            }
            Err(_) => {
                self.child.kill().await?;
            }
        }
        Ok(())
    }
}

/// `s` without ANSI colour sequences (`ESC [ ... m`).
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A log line's message: without its leading timestamp, cut before the first structured
/// field (` name=`), at most 200 characters.
pub fn problem_kind(line: &str) -> String {
    let rest = line.trim_start();
    let rest = match rest.split_once(char::is_whitespace) {
        Some((first, tail)) if first.starts_with(|c: char| c.is_ascii_digit()) => tail.trim_start(),
        _ => rest,
    };
    let bytes = rest.as_bytes();
    let mut cut = rest.len();
    for (i, _) in rest.match_indices(' ') {
        let word: Vec<u8> = bytes[i + 1..]
            .iter()
            .copied()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == b'_' || *c == b'.')
            .collect();
        if !word.is_empty() && bytes.get(i + 1 + word.len()) == Some(&b'=') {
            cut = i;
            break;
        }
    }
    rest[..cut].chars().take(200).collect()
}

/// Samples of a Prometheus text exposition, summed over labels, by metric name.
#[derive(Debug, Clone, Default)]
pub struct Metrics(pub BTreeMap<String, f64>);

impl Metrics {
    /// Parses exposition text; samples of one name with different labels are added up.
    pub fn parse(text: &str) -> Self {
        let mut m = BTreeMap::new();
        for line in text.lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let name_end = line.find(['{', ' ']).unwrap_or(line.len());
            let name = &line[..name_end];
            let Some(value) = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) else {
                continue;
            };
            *m.entry(name.to_owned()).or_insert(0.0) += value;
        }
        Self(m)
    }

    /// The summed value of `name` (0 when absent).
    pub fn get(&self, name: &str) -> f64 {
        self.0.get(name).copied().unwrap_or(0.0)
    }

    /// Sums of `sub` by name: counters and histogram sums since `earlier`.
    pub fn minus(&self, earlier: &Metrics) -> Metrics {
        Metrics(
            self.0
                .iter()
                .map(|(k, v)| (k.clone(), v - earlier.get(k)))
                .collect(),
        )
    }

    /// Pool figures over a window: waits, seconds waited, acquire timeouts.
    pub fn pool(&self) -> PoolStats {
        PoolStats {
            waits: self.get("datastorage_db_pool_wait_count_total"),
            wait_seconds: self.get("datastorage_db_pool_wait_duration_seconds_total"),
            timeouts: self.get("datastorage_db_pool_acquire_timeouts_total"),
            idle_closed: self.get("datastorage_db_pool_max_idle_closed_total"),
            acquires: self.get("datastorage_db_pool_acquire_duration_seconds_count"),
            write_count: self.get("datastorage_audit_write_duration_seconds_count"),
            write_seconds: self.get("datastorage_audit_write_duration_seconds_sum"),
            http_count: self.get("datastorage_http_request_duration_seconds_count"),
            http_seconds: self.get("datastorage_http_request_duration_seconds_sum"),
            auth_checks: self.get("datastorage_auth_requests_total"),
            access_records: self.get("datastorage_access_records_total"),
        }
    }
}

/// Pool and server-side timing figures over a window.
#[derive(Debug, Clone, Copy, Default)]
pub struct PoolStats {
    /// Acquisitions that had to wait.
    pub waits: f64,
    /// Seconds spent waiting, all acquisitions together.
    pub wait_seconds: f64,
    /// Acquisitions that gave up (503).
    pub timeouts: f64,
    /// Connections closed because more than `maxIdleConns` were idle.
    pub idle_closed: f64,
    /// Acquisitions.
    pub acquires: f64,
    /// Writes observed by the server (single and batch requests).
    pub write_count: f64,
    /// Seconds spent in the store's write call, all writes together.
    pub write_seconds: f64,
    /// HTTP requests observed by the server.
    pub http_count: f64,
    /// Seconds spent handling them, server side.
    pub http_seconds: f64,
    /// Requests checked by access control, every `auth.mode` and result.
    pub auth_checks: f64,
    /// Access records (reads and denials), every result.
    pub access_records: f64,
}

impl PoolStats {
    /// Mean wait of the acquisitions that waited, milliseconds.
    pub fn mean_wait_ms(&self) -> f64 {
        if self.waits > 0.0 {
            self.wait_seconds / self.waits * 1000.0
        } else {
            0.0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_sum_labels_and_subtract() {
        let a = Metrics::parse(
            "# HELP x y\ndatastorage_db_pool_wait_count_total{pool=\"main\"} 3\nfoo_sum{a=\"b c\"} 1.5\nfoo_sum{a=\"d\"} 2\n",
        );
        let b = Metrics::parse(
            "datastorage_db_pool_wait_count_total{pool=\"main\"} 10\nfoo_sum{a=\"b c\"} 4\nfoo_sum{a=\"d\"} 2\ndatastorage_db_pool_wait_duration_seconds_total{pool=\"main\"} 0.7\n",
        );
        assert_eq!(a.get("foo_sum"), 3.5);
        let d = b.minus(&a);
        assert_eq!(d.get("foo_sum"), 2.5);
        let p = d.pool();
        assert_eq!(p.waits, 7.0);
        assert!((p.mean_wait_ms() - 100.0).abs() < 1e-9);
    }

    #[test]
    fn problem_kinds_drop_the_time_and_the_fields() {
        assert_eq!(
            problem_kind("2026-12-01T20:10:18.765008Z  WARN datastorage::writer: batch met a database outage; buffering it error=x cause=y z"),
            "WARN datastorage::writer: batch met a database outage; buffering it"
        );
        assert_eq!(problem_kind(" WARN a: b = c"), "WARN a: b = c");
    }

    #[test]
    fn ansi_colours_are_removed() {
        assert_eq!(
            strip_ansi("\u{1b}[2mtime\u{1b}[0m \u{1b}[33m WARN\u{1b}[0m x"),
            "time  WARN x"
        );
    }

    #[test]
    fn config_keeps_idle_conns_within_open_conns() {
        let cfg = ServerConfig::new(Backend::Sqlite(PathBuf::from("/tmp/x.db")), 5, None);
        let y = config_yaml(&cfg, 1, 2);
        assert!(!y.contains("maxIdleConns"));
        let cfg = ServerConfig {
            max_open_conns: 2,
            ..cfg
        };
        assert!(config_yaml(&cfg, 1, 2).contains("maxIdleConns: 2"));
        let cfg = ServerConfig {
            max_open_conns: 25,
            max_idle_conns: Some(25),
            ..cfg
        };
        assert!(config_yaml(&cfg, 1, 2).contains("maxIdleConns: 25"));
        let y = config_yaml(&cfg, 1, 2);
        for key in [
            "lockTimeout",
            "statementTimeout",
            "writeTimeout",
            "maxInFlightBodyBytes",
            "auth:",
        ] {
            assert!(!y.contains(key), "{key} set without being asked for:\n{y}");
        }
    }

    #[test]
    fn config_sets_the_body_budget_and_wait_limits_in_their_sections() {
        let cfg = ServerConfig {
            max_in_flight_body_bytes: Some(512 << 20),
            wait_limit: Some(Duration::from_secs(45)),
            ..ServerConfig::new(Backend::Sqlite(PathBuf::from("/tmp/x.db")), 25, None)
        };
        let y = config_yaml(&cfg, 1, 2);
        let (server, rest) = y.split_once("logging:").unwrap();
        assert!(server.contains("  maxInFlightBodyBytes: 536870912\n"));
        assert!(server.contains("  writeTimeout: 45000ms\n"));
        let database = rest.split_once("database:").unwrap().1;
        assert!(database.contains("  lockTimeout: 45000ms\n"));
        assert!(database.contains("  statementTimeout: 45000ms\n"));
    }

    #[test]
    fn config_sets_the_auth_section_and_the_tokens_file_lists_the_hash() {
        let dir = tempfile::tempdir().unwrap();
        let tokens = Tokens::create(dir.path(), "bench", &["audit:write", "audit:read"]).unwrap();
        let file = std::fs::read_to_string(&tokens.file).unwrap();
        assert!(file.contains(&format!(
            "    sha256: {}\n",
            datastorage::auth::tokens::hash(&tokens.token)
        )));
        assert!(file.contains("    scopes: [audit:write, audit:read]\n"));
        assert!(
            !file.contains(&tokens.token),
            "the file holds the token itself"
        );
        let a = tokens.authorization().unwrap();
        assert_eq!(a.to_str().unwrap(), format!("Bearer {}", tokens.token));
        assert!(a.is_sensitive());

        let base = ServerConfig::new(Backend::Sqlite(PathBuf::from("/tmp/x.db")), 25, None);
        let cfg = ServerConfig {
            auth: AuthMode::Tokens(tokens.clone()),
            record_reads: Some(false),
            ..base.clone()
        };
        let auth = config_yaml(&cfg, 1, 2)
            .split_once("\nauth:\n")
            .unwrap()
            .1
            .to_owned();
        assert_eq!(
            auth,
            format!(
                "  mode: tokens\n  tokensFile: \"{}\"\n  recordReads: false\n",
                tokens.file.display()
            )
        );
        let cfg = ServerConfig {
            auth: AuthMode::None,
            ..base
        };
        assert!(config_yaml(&cfg, 1, 2).ends_with("\nauth:\n  mode: none\n"));
    }
}
