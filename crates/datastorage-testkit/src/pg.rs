//! Real PostgreSQL for tests and benchmarks: a fresh database per test on the shared test
//! server ([`PgDb`]), or a private throwaway cluster with special settings ([`TempCluster`]),
//! started with `initdb`/`pg_ctl` on a free loopback port and removed on drop.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{ensure, Context as _};
use datastorage::config::{Driver, Secret, Settings, SslMode};
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

/// The admin URL of the test server: `DATASTORAGE_TEST_PG_URL`, else the local default.
pub fn pg_admin_url() -> String {
    std::env::var("DATASTORAGE_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A free loopback TCP port (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A PostgreSQL database on a test server.
#[derive(Debug, Clone)]
pub struct PgDb {
    /// Host.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Role.
    pub user: String,
    /// Password, if the admin URL has one.
    pub password: Option<String>,
    /// Database name.
    pub name: String,
}

impl PgDb {
    /// A fresh, empty database on the test server.
    pub async fn create() -> Self {
        Self::create_on(&pg_admin_url()).await
    }

    /// A fresh, empty database on the server of `admin_url`.
    pub async fn create_on(admin_url: &str) -> Self {
        let name = format!("ds_test_{}", Uuid::new_v4().simple());
        Self::create_named(admin_url, &name)
            .await
            .unwrap_or_else(|e| panic!("{e:#}; run scripts/test or set DATASTORAGE_TEST_PG_URL"))
    }

    /// (Re)creates database `name` through `admin_url`: dropped first if it exists.
    pub async fn create_named(admin_url: &str, name: &str) -> anyhow::Result<Self> {
        let url = url::Url::parse(admin_url).context("the admin URL is a URL")?;
        let mut admin = PgConnection::connect(admin_url)
            .await
            .with_context(|| format!("cannot reach PostgreSQL at {admin_url}"))?;
        sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {name}"))
            .execute(&mut admin)
            .await?;
        sqlx::raw_sql(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await?;
        admin.close().await.ok();
        Ok(Self {
            host: url.host_str().unwrap_or("127.0.0.1").to_owned(),
            port: url.port().unwrap_or(5432),
            user: if url.username().is_empty() {
                "postgres".to_owned()
            } else {
                url.username().to_owned()
            },
            password: url.password().map(str::to_owned),
            name: name.to_owned(),
        })
    }

    /// Drops database `name` through `admin_url`, disconnecting its sessions; a failure is
    /// ignored (cleanup).
    pub async fn drop_named(admin_url: &str, name: &str) {
        if let Ok(mut admin) = PgConnection::connect(admin_url).await {
            let _ = sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&mut admin)
                .await;
            admin.close().await.ok();
        }
    }

    /// URL of this database.
    pub fn url(&self) -> String {
        let auth = match &self.password {
            Some(p) => format!("{}:{p}", self.user),
            None => self.user.clone(),
        };
        format!(
            "postgres://{auth}@{}:{}/{}",
            self.host, self.port, self.name
        )
    }

    /// A new connection; panics when there is none.
    pub async fn connect(&self) -> PgConnection {
        self.try_connect().await.unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// A new connection.
    pub async fn try_connect(&self) -> anyhow::Result<PgConnection> {
        PgConnection::connect(&self.url())
            .await
            .with_context(|| format!("cannot connect to database {}", self.name))
    }

    /// Runs statements on a new connection, in order (simple protocol, so `VACUUM` works);
    /// panics on an error.
    pub async fn sql(&self, statements: &[&str]) {
        self.try_sql(statements)
            .await
            .unwrap_or_else(|e| panic!("{e:#}"));
    }

    /// Runs statements on a new connection, in order (simple protocol, so `VACUUM` works).
    pub async fn try_sql(&self, statements: &[&str]) -> anyhow::Result<()> {
        let mut c = self.try_connect().await?;
        for s in statements {
            sqlx::raw_sql(s)
                .execute(&mut c)
                .await
                .with_context(|| s.to_string())?;
        }
        c.close().await.ok();
        Ok(())
    }

    /// Server connections the service holds on this database.
    pub async fn service_connections(&self) -> i64 {
        self.service_sessions("TRUE").await
    }

    /// Sessions of the service on this database that meet an SQL `condition` on
    /// `pg_stat_activity` (e.g. `wait_event_type = 'Lock'`).
    pub async fn service_sessions(&self, condition: &str) -> i64 {
        let mut c = self.connect().await;
        let n: i64 = sqlx::query_scalar(&format!(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 \
             AND application_name = 'datastorage' AND ({condition})"
        ))
        .bind(&self.name)
        .fetch_one(&mut c)
        .await
        .unwrap();
        c.close().await.ok();
        n
    }

    /// How many times each stored event id occurs, read from the table itself.
    pub async fn stored_ids(&self) -> HashMap<Uuid, i64> {
        let mut c = self.connect().await;
        let rows: Vec<(Uuid, i64)> =
            sqlx::query_as("SELECT event_id, count(*) FROM audit_events GROUP BY event_id")
                .fetch_all(&mut c)
                .await
                .unwrap();
        c.close().await.ok();
        rows.into_iter().collect()
    }

    /// Rows in `audit_events`.
    pub async fn count(&self) -> i64 {
        self.stored_ids().await.values().sum()
    }

    /// The `database:` section of a YAML config pointing here.
    pub fn yaml(&self) -> String {
        format!(
            "database:\n  driver: postgres\n  host: \"{}\"\n  port: {}\n  name: {}\n  user: {}\n  sslMode: disable\n",
            self.host, self.port, self.name, self.user
        )
    }

    /// Points `s` at this database.
    pub fn apply(&self, s: &mut Settings) {
        s.database.driver = Some(Driver::Postgres);
        s.database.host = Some(self.host.clone());
        s.database.port = self.port;
        s.database.name = self.name.clone();
        s.database.user = self.user.clone();
        s.database.password = self.password.clone().map(Secret::new);
        s.database.ssl_mode = SslMode::Disable;
    }
}

/// The PostgreSQL server binaries' folder: `DATASTORAGE_TEST_PG_BIN`, `pg_config --bindir`, else
/// the newest under `/usr/lib/postgresql`.
pub fn pg_bin() -> anyhow::Result<PathBuf> {
    if let Ok(dir) = std::env::var("DATASTORAGE_TEST_PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && p.join("initdb").exists() {
            return Ok(p);
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.flatten()
                .filter_map(|e| {
                    let v = e.file_name().to_str()?.parse().ok()?;
                    Some((v, e.path().join("bin")))
                })
                .filter(|(_, p)| p.join("initdb").exists())
                .collect()
        })
        .unwrap_or_default();
    versions.sort();
    versions.pop().map(|(_, p)| p).context(
        "PostgreSQL server binaries (initdb, pg_ctl) are needed; install postgresql or set DATASTORAGE_TEST_PG_BIN",
    )
}

pub(crate) fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0\n"))
        .unwrap_or(false)
}

/// `cmd args`, as the `postgres` account when running as root (initdb refuses root).
pub(crate) fn as_postgres(cmd: &Path, args: &[&str]) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(cmd).args(args);
        c
    } else {
        let mut c = Command::new(cmd);
        c.args(args);
        c
    }
}

/// How a [`TempCluster`] treats durability.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// `fsync=off`: fast, for tests.
    Off,
    /// PostgreSQL's stock settings, for measurements.
    Stock,
}

/// A private PostgreSQL cluster on a free loopback port, stopped and removed on drop.
pub struct TempCluster {
    /// Its port.
    pub port: u16,
    dir: tempfile::TempDir,
    bin: PathBuf,
    opts: String,
}

impl TempCluster {
    /// A test cluster (`fsync=off`) with these extra settings; panics when it cannot start.
    pub fn start(settings: &[(&str, &str)]) -> Self {
        pg_bin()
            .and_then(|bin| Self::try_start(&bin, settings, Durability::Off))
            .unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// A test cluster that also accepts TLS with `server`'s certificate and key (`ssl=on`).
    pub fn start_with_tls(settings: &[(&str, &str)], server: &crate::tls::CertFiles) -> Self {
        pg_bin()
            .and_then(|bin| Self::try_start_inner(&bin, settings, Durability::Off, Some(server)))
            .unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// `initdb` + `pg_ctl start` with `bin`'s binaries, listening on loopback only, with these
    /// extra settings.
    pub fn try_start(
        bin: &Path,
        settings: &[(&str, &str)],
        durability: Durability,
    ) -> anyhow::Result<Self> {
        Self::try_start_inner(bin, settings, durability, None)
    }

    fn try_start_inner(
        bin: &Path,
        settings: &[(&str, &str)],
        durability: Durability,
        tls: Option<&crate::tls::CertFiles>,
    ) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("ds-pg-").tempdir()?;
        if is_root() {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()?;
            ensure!(ok.success(), "chown of the cluster folder failed");
        }
        let data = dir.path().join("data");
        let data_s = data.to_string_lossy().into_owned();
        let out = as_postgres(
            &bin.join("initdb"),
            &["-D", &data_s, "-U", "postgres", "-A", "trust", "--no-sync"],
        )
        .output()?;
        ensure!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = free_port();
        let mut opts = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1",
            dir.path().display()
        );
        if durability == Durability::Off {
            opts.push_str(" -c fsync=off");
        }
        if let Some(files) = tls {
            // The server reads them as its own account, and refuses a key others can read.
            let (cert, key) = (data.join("server.crt"), data.join("server.key"));
            std::fs::copy(&files.cert, &cert)?;
            std::fs::copy(&files.key, &key)?;
            for (path, mode) in [(&cert, "644"), (&key, "600")] {
                let ok = Command::new("chmod").arg(mode).arg(path).status()?;
                ensure!(ok.success(), "chmod {mode} {}", path.display());
                if is_root() {
                    let ok = Command::new("chown")
                        .arg("postgres:postgres")
                        .arg(path)
                        .status()?;
                    ensure!(ok.success(), "chown of {}", path.display());
                }
            }
            opts.push_str(&format!(
                " -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
                cert.display(),
                key.display()
            ));
        }
        for (k, v) in settings {
            opts.push_str(&format!(" -c {k}={v}"));
        }
        let cluster = Self {
            port,
            dir,
            bin: bin.to_owned(),
            opts,
        };
        cluster.try_restart()?;
        Ok(cluster)
    }

    /// A streaming replica of `self` (`pg_basebackup -R`, WAL streamed during the copy) on a
    /// free loopback port, hot standby; panics when it cannot start.
    pub fn start_replica(&self) -> Self {
        self.try_start_replica().unwrap_or_else(|e| panic!("{e:#}"))
    }

    fn try_start_replica(&self) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("ds-pg-replica-")
            .tempdir()?;
        if is_root() {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()?;
            ensure!(ok.success(), "chown of the replica folder failed");
        }
        let data = dir.path().join("data");
        let out = as_postgres(
            &self.bin.join("pg_basebackup"),
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-D",
                &data.to_string_lossy(),
                "-R",
                "-X",
                "stream",
                "--no-sync",
            ],
        )
        .output()?;
        ensure!(
            out.status.success(),
            "pg_basebackup failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = free_port();
        let opts = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            dir.path().display()
        );
        let replica = Self {
            port,
            dir,
            bin: self.bin.clone(),
            opts,
        };
        replica.try_restart()?;
        Ok(replica)
    }

    /// The superuser URL of its `postgres` database.
    pub fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Where its data lives.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The server's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    /// The postmaster's process id, while it runs.
    pub fn postmaster_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.data_dir().join("postmaster.pid"))
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    }

    /// Stops it at once (`pg_ctl stop -m immediate`), as a crash would.
    pub fn stop(&self) {
        let _ = as_postgres(
            &self.bin.join("pg_ctl"),
            &[
                "-D",
                &self.data_dir().to_string_lossy(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        )
        .output();
    }

    /// Starts it again after [`TempCluster::stop`]; panics when it cannot.
    pub fn restart(&self) {
        self.try_restart().unwrap_or_else(|e| panic!("{e:#}"));
    }

    fn try_restart(&self) -> anyhow::Result<()> {
        let log = self.dir.path().join("log");
        let out = as_postgres(
            &self.bin.join("pg_ctl"),
            &[
                "-D",
                &self.data_dir().to_string_lossy(),
                "-l",
                &log.to_string_lossy(),
                "-o",
                &self.opts,
                "-w",
                "start",
            ],
        )
        .output()?;
        ensure!(
            out.status.success(),
            "pg_ctl start failed: {} {}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        Ok(())
    }
}

impl Drop for TempCluster {
    fn drop(&mut self) {
        self.stop();
    }
}
