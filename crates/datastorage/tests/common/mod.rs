//! Shared test helpers: real PostgreSQL and real SQLite, servers on loopback ports.
//!
//! PostgreSQL comes from `DATASTORAGE_TEST_PG_URL` (an admin URL; `scripts/test` starts a
//! throwaway cluster and sets it), else `postgres://postgres@127.0.0.1:5432/postgres`. Each test
//! gets its own freshly created database. [`TempCluster`] starts a private cluster with special
//! settings (for example a small `max_connections`).
#![allow(dead_code, missing_docs)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use datastorage::config::{Driver, Settings, SslMode};
use serde_json::{json, Value};
use sqlx::{Connection, PgConnection};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub fn pg_admin_url() -> String {
    std::env::var("DATASTORAGE_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A fresh, empty PostgreSQL database on the test server.
#[derive(Debug, Clone)]
pub struct PgDb {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Option<String>,
    pub name: String,
}

impl PgDb {
    pub async fn create() -> Self {
        Self::create_on(&pg_admin_url()).await
    }

    pub async fn create_on(admin_url: &str) -> Self {
        let url = url::Url::parse(admin_url).expect("DATASTORAGE_TEST_PG_URL is a URL");
        let name = format!("ds_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(admin_url)
            .await
            .unwrap_or_else(|e| panic!("cannot reach the test PostgreSQL at {admin_url} ({e}); run scripts/test or set DATASTORAGE_TEST_PG_URL"));
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .unwrap();
        admin.close().await.ok();
        Self {
            host: url.host_str().unwrap_or("127.0.0.1").to_owned(),
            port: url.port().unwrap_or(5432),
            user: if url.username().is_empty() {
                "postgres".to_owned()
            } else {
                url.username().to_owned()
            },
            password: url.password().map(str::to_owned),
            name,
        }
    }

    pub fn url(&self) -> String {
        match &self.password {
            Some(p) => format!(
                "postgres://{}:{p}@{}:{}/{}",
                self.user, self.host, self.port, self.name
            ),
            None => format!(
                "postgres://{}@{}:{}/{}",
                self.user, self.host, self.port, self.name
            ),
        }
    }

    pub async fn connect(&self) -> PgConnection {
        PgConnection::connect(&self.url()).await.unwrap()
    }

    /// Server connections the service holds on this database.
    pub async fn service_connections(&self) -> i64 {
        let mut c = self.connect().await;
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND application_name = 'datastorage'",
        )
        .bind(&self.name)
        .fetch_one(&mut c)
        .await
        .unwrap();
        c.close().await.ok();
        n
    }

    /// The `database:` section of a YAML config pointing here.
    pub fn yaml(&self) -> String {
        format!(
            "database:\n  driver: postgres\n  host: \"{}\"\n  port: {}\n  name: {}\n  user: {}\n  sslMode: disable\n",
            self.host, self.port, self.name, self.user
        )
    }

    pub fn apply(&self, s: &mut Settings) {
        s.database.driver = Some(Driver::Postgres);
        s.database.host = Some(self.host.clone());
        s.database.port = self.port;
        s.database.name = self.name.clone();
        s.database.user = self.user.clone();
        s.database.password = self.password.clone().map(datastorage::config::Secret::new);
        s.database.ssl_mode = SslMode::Disable;
    }
}

/// Which backend a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

/// An in-process server on loopback ports, started through `startup::run`.
pub struct TestApp {
    pub base: String,
    pub metrics_base: String,
    pub http: reqwest::Client,
    pub pg: Option<PgDb>,
    pub sqlite_path: Option<PathBuf>,
    _dir: tempfile::TempDir,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> Self {
        Self::spawn_with(backend, |_| {}).await
    }

    pub async fn spawn_with(backend: Backend, tweak: impl FnOnce(&mut Settings)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut settings = Settings::default();
        settings.server.shutdown_delay = Duration::ZERO;
        settings.server.shutdown_timeout = Duration::from_secs(5);
        let (pg, sqlite_path) = match backend {
            Backend::Postgres => {
                let db = PgDb::create().await;
                db.apply(&mut settings);
                (Some(db), None)
            }
            Backend::Sqlite => {
                let path = dir.path().join("data").join("test.db");
                settings.database.driver = Some(Driver::Sqlite);
                settings.database.sqlite_path = path.clone();
                (None, Some(path))
            }
        };
        tweak(&mut settings);
        let api = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let metrics = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (base, metrics_base) = (
            url_of(api.local_addr().unwrap()),
            url_of(metrics.local_addr().unwrap()),
        );
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(datastorage::startup::run(
            settings,
            api,
            metrics,
            async move {
                let _ = rx.await;
            },
        ));
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let app = Self {
            base,
            metrics_base,
            http,
            pg,
            sqlite_path,
            _dir: dir,
            shutdown: Some(tx),
            task: Some(task),
        };
        app.wait_ready().await;
        app
    }

    pub async fn wait_ready(&self) {
        for _ in 0..200 {
            if let Ok(r) = self.http.get(format!("{}/readyz", self.base)).send().await {
                if r.status() == 200 {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("server at {} did not become ready", self.base);
    }

    pub async fn post_event(&self, event: &Value) -> reqwest::Response {
        self.http
            .post(format!("{}/api/v1/audit/events", self.base))
            .json(event)
            .send()
            .await
            .unwrap()
    }

    pub async fn post_batch(&self, events: &Value) -> reqwest::Response {
        self.http
            .post(format!("{}/api/v1/audit/events/batch", self.base))
            .json(events)
            .send()
            .await
            .unwrap()
    }

    pub async fn query(&self, query: &str) -> reqwest::Response {
        self.http
            .get(format!("{}/api/v1/audit/events?{query}", self.base))
            .send()
            .await
            .unwrap()
    }

    pub async fn verify(&self, correlation_id: &str) -> Value {
        let r = self
            .http
            .post(format!("{}/api/v1/audit/verify-chain", self.base))
            .json(&json!({ "correlation_id": correlation_id }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.json().await.unwrap()
    }

    pub async fn metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.metrics_base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Runs SQL against the backing database directly (for tampering).
    pub async fn sql(&self, statements: &[&str]) {
        if let Some(pg) = &self.pg {
            let mut c = pg.connect().await;
            for s in statements {
                sqlx::query(s).execute(&mut c).await.unwrap();
            }
        } else {
            let path = self.sqlite_path.as_ref().unwrap();
            let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
                .await
                .unwrap();
            for s in statements {
                sqlx::query(s).execute(&mut c).await.unwrap();
            }
        }
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }
}

pub fn url_of(addr: SocketAddr) -> String {
    format!("http://{addr}")
}

/// Reads one sample of a metric from exposition text: the first line starting with `prefix`.
pub fn metric_value(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// A valid event for correlation id `cid`.
pub fn event(cid: &str) -> Value {
    json!({
        "version": "1.0",
        "event_type": "gateway.signal.received",
        "event_timestamp": chrono::Utc::now().to_rfc3339(),
        "event_category": "gateway",
        "event_action": "received",
        "event_outcome": "success",
        "actor_type": "service",
        "actor_id": "gateway-service",
        "resource_type": "Signal",
        "resource_id": "fp-abc123",
        "correlation_id": cid,
        "severity": "critical",
        "event_data": { "task_id": "task-1", "n": 1 }
    })
}

/// A free loopback TCP port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A private PostgreSQL cluster with special settings, removed on drop.
pub struct TempCluster {
    pub port: u16,
    dir: tempfile::TempDir,
    bin: PathBuf,
    opts: String,
}

fn pg_bin() -> PathBuf {
    if let Ok(dir) = std::env::var("DATASTORAGE_TEST_PG_BIN") {
        return PathBuf::from(dir);
    }
    let out = Command::new("pg_config").arg("--bindir").output();
    if let Ok(out) = out {
        if out.status.success() {
            return PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        }
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path().join("bin")))
                .collect()
        })
        .unwrap_or_default();
    versions.sort();
    versions
        .pop()
        .expect("PostgreSQL server binaries (initdb, pg_ctl) are needed; install postgresql")
}

fn as_postgres_user(cmd: &Path, args: &[&str]) -> Command {
    // initdb refuses to run as root; CI runs as root, so switch to the postgres account there.
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0"))
        .unwrap_or(false);
    if is_root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(cmd).args(args);
        c
    } else {
        let mut c = Command::new(cmd);
        c.args(args);
        c
    }
}

impl TempCluster {
    pub fn start(settings: &[(&str, &str)]) -> Self {
        let bin = pg_bin();
        let dir = tempfile::Builder::new().prefix("ds-pg-").tempdir().unwrap();
        let data = dir.path().join("data");
        let is_root = Command::new("id")
            .arg("-u")
            .output()
            .map(|o| o.stdout.starts_with(b"0"))
            .unwrap_or(false);
        if is_root {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(ok.success());
        }
        let out = as_postgres_user(
            &bin.join("initdb"),
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                "postgres",
                "-A",
                "trust",
                "--no-sync",
            ],
        )
        .output()
        .unwrap();
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = free_port();
        let mut opts = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            dir.path().display()
        );
        for (k, v) in settings {
            opts.push_str(&format!(" -c {k}={v}"));
        }
        let log = dir.path().join("log");
        let out = as_postgres_user(
            &bin.join("pg_ctl"),
            &[
                "-D",
                data.to_str().unwrap(),
                "-l",
                log.to_str().unwrap(),
                "-o",
                &opts,
                "-w",
                "start",
            ],
        )
        .output()
        .unwrap();
        assert!(
            out.status.success(),
            "pg_ctl start failed: {} {}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        Self {
            port,
            dir,
            bin,
            opts,
        }
    }

    pub fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    pub fn stop(&self) {
        let data = self.dir.path().join("data");
        let _ = as_postgres_user(
            &self.bin.join("pg_ctl"),
            &[
                "-D",
                data.to_str().unwrap(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        )
        .output();
    }

    pub fn restart(&self) {
        let data = self.dir.path().join("data");
        let log = self.dir.path().join("log");
        let out = as_postgres_user(
            &self.bin.join("pg_ctl"),
            &[
                "-D",
                data.to_str().unwrap(),
                "-l",
                log.to_str().unwrap(),
                "-o",
                &self.opts,
                "-w",
                "start",
            ],
        )
        .output()
        .unwrap();
        assert!(
            out.status.success(),
            "pg_ctl restart failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for TempCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The `datastorage` binary under test.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_datastorage")
}
