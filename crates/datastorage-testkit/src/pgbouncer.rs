//! A real PgBouncer (Debian's `pgbouncer`) in front of a test PostgreSQL, on a free loopback
//! port, in transaction pooling mode, stopped and removed on drop.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _};

use crate::pg::{free_port, is_root, PgDb};
use crate::process::ChildGuard;

/// Longest PgBouncer may take to listen after it starts.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// The `pgbouncer` binary: `DATASTORAGE_TEST_PGBOUNCER`, else Debian's.
pub fn pgbouncer_bin() -> PathBuf {
    std::env::var_os("DATASTORAGE_TEST_PGBOUNCER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/sbin/pgbouncer"))
}

/// What the pooler is set to.
#[derive(Debug, Clone)]
pub struct BouncerSettings {
    /// `default_pool_size`: server connections per database and user.
    pub pool_size: u32,
    /// `max_client_conn`.
    pub max_client_conn: u32,
    /// `query_wait_timeout`, seconds: how long a client may wait for a server connection
    /// before PgBouncer disconnects it.
    pub query_wait_timeout: u32,
}

impl Default for BouncerSettings {
    fn default() -> Self {
        Self {
            pool_size: 5,
            max_client_conn: 500,
            query_wait_timeout: 120,
        }
    }
}

/// A running PgBouncer.
pub struct PgBouncer {
    /// Its port on 127.0.0.1.
    pub port: u16,
    dir: tempfile::TempDir,
    _process: ChildGuard,
}

impl PgBouncer {
    /// PgBouncer in transaction mode in front of `db`'s server (every database of it, `*`),
    /// trusting its role, which is also the console's `admin_users` and `stats_users`; panics
    /// when it cannot start.
    pub fn start(db: &PgDb, settings: &BouncerSettings) -> Self {
        Self::try_start(db, settings).unwrap_or_else(|e| panic!("{e:#}"))
    }

    fn try_start(db: &PgDb, s: &BouncerSettings) -> anyhow::Result<Self> {
        let bin = pgbouncer_bin();
        ensure!(
            bin.exists(),
            "{} is missing: install the Debian package pgbouncer (scripts/test does) or set DATASTORAGE_TEST_PGBOUNCER",
            bin.display()
        );
        let dir = tempfile::Builder::new().prefix("ds-pgbouncer-").tempdir()?;
        let port = free_port();
        let path = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
        let password = db.password.as_deref().unwrap_or_default();
        std::fs::write(
            path("users.txt"),
            format!("\"{}\" \"{password}\"\n", db.user),
        )?;
        let server_password = db
            .password
            .as_ref()
            .map(|p| format!(" password={p}"))
            .unwrap_or_default();
        let config = format!(
            "[databases]\n\
             * = host={host} port={server_port}{server_password}\n\
             [pgbouncer]\n\
             listen_addr = 127.0.0.1\n\
             listen_port = {port}\n\
             unix_socket_dir =\n\
             auth_type = trust\n\
             auth_file = {users}\n\
             admin_users = {user}\n\
             stats_users = {user}\n\
             pool_mode = transaction\n\
             default_pool_size = {pool_size}\n\
             reserve_pool_size = 0\n\
             max_client_conn = {max_client_conn}\n\
             query_wait_timeout = {query_wait_timeout}\n\
             server_reset_query =\n\
             logfile = {log}\n\
             pidfile = {pid}\n",
            host = db.host,
            server_port = db.port,
            users = path("users.txt"),
            user = db.user,
            pool_size = s.pool_size,
            max_client_conn = s.max_client_conn,
            query_wait_timeout = s.query_wait_timeout,
            log = path("pgbouncer.log"),
            pid = path("pgbouncer.pid"),
        );
        std::fs::write(path("pgbouncer.ini"), config)?;
        let mut cmd = Command::new(&bin);
        if is_root() {
            // PgBouncer refuses to run as root; it switches to `postgres` itself with -u.
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()?;
            ensure!(ok.success(), "chown of the PgBouncer folder failed");
            cmd.args(["-u", "postgres"]);
        }
        let child = cmd
            .arg(path("pgbouncer.ini"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot run {}", bin.display()))?;
        let mut process = ChildGuard::new(child);
        let deadline = Instant::now() + START_TIMEOUT;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = process.try_wait() {
                anyhow::bail!(
                    "pgbouncer exited ({status}): {}",
                    std::fs::read_to_string(path("pgbouncer.log")).unwrap_or_default()
                );
            }
            ensure!(
                Instant::now() < deadline,
                "pgbouncer did not listen on 127.0.0.1:{port} within {START_TIMEOUT:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Self {
            port,
            dir,
            _process: process,
        })
    }

    /// Its log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pgbouncer.log")).unwrap_or_default()
    }

    /// Points `s` at this pooler for `db` (`database.pooler: pgbouncer`), with migrations and
    /// checks direct to `db`'s server.
    pub fn apply(&self, db: &PgDb, s: &mut datastorage::config::Settings) {
        db.apply(s);
        s.database.host = Some("127.0.0.1".to_owned());
        s.database.port = self.port;
        s.database.pooler = datastorage::config::Pooler::Pgbouncer;
        s.database.migration_host = Some(db.host.clone());
        s.database.migration_port = Some(db.port);
    }
}
