//! The real `datastorage` binary in tests: child processes that are always stopped (a guard
//! whose `Drop` sends SIGTERM, then SIGKILL), config files, a served binary with typed calls,
//! and bounded waits.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

use crate::pg::{free_port, PgDb};

/// Longest a server may take to answer `/readyz` 200 after spawning (migrations included).
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest a server may take to exit after SIGTERM.
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(20);
/// Overall limit of one test body.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(240);

/// The `datastorage` binary of this build: `target/<profile>/datastorage`, beside the folder of
/// the running test executable (`target/<profile>/deps`). Cargo builds it for the integration
/// tests of `datastorage-cli`.
pub fn binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<test>");
    let bin = profile_dir.join("datastorage");
    assert!(
        bin.exists(),
        "{} is missing: build it (cargo build -p datastorage-cli) or run the tests of datastorage-cli",
        bin.display()
    );
    bin
}

/// Runs a test body under an overall limit; on expiry the body is dropped, so every guard in it
/// stops its process.
pub async fn within<F: Future>(limit: Duration, f: F) -> F::Output {
    match tokio::time::timeout(limit, f).await {
        Ok(v) => v,
        Err(_) => panic!("test did not finish within {limit:?}"),
    }
}

/// Sends SIGTERM to `pid`.
pub fn sigterm(pid: u32) {
    let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
}

/// A child process, stopped when dropped: SIGTERM, up to 10 s to exit, then SIGKILL.
pub struct ChildGuard {
    child: Option<Child>,
}

impl ChildGuard {
    /// Guards `child`.
    pub fn new(child: Child) -> Self {
        Self { child: Some(child) }
    }

    /// Its process id.
    pub fn id(&self) -> u32 {
        self.child.as_ref().expect("child present").id()
    }

    /// Its exit status, if it has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .expect("child present")
            .try_wait()
            .expect("try_wait")
    }

    /// Kills the process with SIGKILL (no shutdown of any kind) and reaps it.
    pub fn kill(&mut self) {
        let child = self.child.as_mut().expect("child present");
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Waits up to `limit` for the process to exit.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(None) = child.try_wait() {
            sigterm(child.id());
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(25));
            }
            let _ = child.kill();
        }
        let _ = child.wait();
    }
}

/// The `server:` and `logging:` sections: loopback only, the given ports, no shutdown delay
/// unless `extra` sets one, text logs.
pub fn server_yaml(port: u16, metrics_port: u16, extra: &str) -> String {
    let mut s = format!(
        "server:\n  host: 127.0.0.1\n  port: {port}\n  metricsHost: 127.0.0.1\n  metricsPort: {metrics_port}\n"
    );
    if !extra.contains("shutdownDelay") {
        s.push_str("  shutdownDelay: 0s\n");
    }
    s.push_str(extra);
    s.push_str("logging:\n  format: text\n  level: info\n");
    s
}

/// The `database:` section for `db` plus extra keys (each line indented by two spaces).
pub fn database_yaml(db: &PgDb, extra: &str) -> String {
    format!("{}{extra}", db.yaml())
}

/// A `datastorage` command with no inherited `DATASTORAGE_*` variables (they would override the
/// file), run in `dir` so a defaulted SQLite file could never land anywhere else.
pub fn datastorage(config: &Path, dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(binary());
    cmd.arg("--config")
        .arg(config)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null());
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("DATASTORAGE_") {
            cmd.env_remove(name);
        }
    }
    cmd
}

/// What a command that ran to its end printed.
pub struct Finished {
    /// How it exited.
    pub status: ExitStatus,
    /// Its standard output.
    pub stdout: String,
    /// Its standard error.
    pub stderr: String,
    /// How long it ran.
    pub elapsed: Duration,
}

/// Runs `datastorage --config FILE args…` to its end, at most `limit`.
pub async fn run_to_exit(config: &Path, args: &[&str], limit: Duration) -> Finished {
    let dir = tempfile::tempdir().unwrap();
    let (out, err) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let started = Instant::now();
    let child = datastorage(config, dir.path(), args)
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let mut child = ChildGuard::new(child);
    let status = child.wait_exit(limit).await;
    let stdout = std::fs::read_to_string(&out).unwrap_or_default();
    let stderr = std::fs::read_to_string(&err).unwrap_or_default();
    let status = status.unwrap_or_else(|| {
        panic!(
            "`datastorage {}` still running after {limit:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
            args.join(" ")
        )
    });
    Finished {
        status,
        stdout,
        stderr,
        elapsed: started.elapsed(),
    }
}

/// The last `lines` lines of `text`.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The binary serving from a config file in its own folder.
pub struct Server {
    /// The process.
    pub proc: ChildGuard,
    /// Base URL of its API listener.
    pub base: String,
    /// Base URL of its metrics listener.
    pub metrics_base: String,
    /// A client for it.
    pub http: reqwest::Client,
    /// Its config file.
    pub config: PathBuf,
    /// Its log file (stdout and stderr).
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

/// How a start attempt ended.
pub enum Start {
    /// `/readyz` answered 200.
    Ready,
    /// A port was taken meanwhile: try others.
    PortTaken,
    /// It failed, and why.
    Failed(String),
}

impl Server {
    /// Writes the config (`database` is a whole `database:` section, `server_extra` more lines
    /// of `server:`), runs `datastorage --config FILE serve` and waits for `/readyz` 200.
    pub async fn start(database: &str, server_extra: &str) -> Self {
        for _ in 0..3 {
            let dir = tempfile::tempdir().unwrap();
            let (port, metrics_port) = (free_port(), free_port());
            if port == metrics_port {
                continue;
            }
            let config = dir.path().join("datastorage.yaml");
            std::fs::write(
                &config,
                format!(
                    "{}{database}",
                    server_yaml(port, metrics_port, server_extra)
                ),
            )
            .unwrap();
            let log = dir.path().join("server.log");
            let file = std::fs::File::create(&log).unwrap();
            let child = datastorage(&config, dir.path(), &["serve"])
                .stdout(file.try_clone().unwrap())
                .stderr(file)
                .spawn()
                .unwrap();
            let mut server = Self {
                proc: ChildGuard::new(child),
                base: format!("http://127.0.0.1:{port}"),
                metrics_base: format!("http://127.0.0.1:{metrics_port}"),
                http: reqwest::Client::builder()
                    .timeout(Duration::from_secs(60))
                    .pool_max_idle_per_host(128)
                    .build()
                    .unwrap(),
                config,
                log,
                _dir: dir,
            };
            match server.wait_ready().await {
                Start::Ready => return server,
                Start::PortTaken => continue,
                Start::Failed(why) => panic!(
                    "server did not start: {why}\nconfig:\n{}\nlog:\n{}",
                    std::fs::read_to_string(&server.config).unwrap_or_default(),
                    server.log_tail()
                ),
            }
        }
        panic!("no free port pair after 3 attempts");
    }

    /// Waits for `/readyz` 200, the process's exit, or [`READY_TIMEOUT`].
    pub async fn wait_ready(&mut self) -> Start {
        let deadline = Instant::now() + READY_TIMEOUT;
        let probe = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        while Instant::now() < deadline {
            if let Some(status) = self.proc.try_wait() {
                let log = self.log_text();
                return if log.contains("cannot listen on") {
                    Start::PortTaken
                } else {
                    Start::Failed(format!("exited with {status}"))
                };
            }
            if let Ok(r) = probe.get(format!("{}/readyz", self.base)).send().await {
                if r.status() == 200 {
                    return Start::Ready;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Start::Failed(format!("/readyz not 200 within {READY_TIMEOUT:?}"))
    }

    /// Its whole log.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last 40 lines of its log.
    pub fn log_tail(&self) -> String {
        tail(&self.log_text(), 40)
    }

    /// `POST`/`GET` URL of the events route.
    pub fn events_url(&self) -> String {
        format!("{}/api/v1/audit/events", self.base)
    }

    /// `POST /api/v1/audit/events`.
    pub async fn post(&self, event: &Value) -> reqwest::Response {
        self.http
            .post(self.events_url())
            .json(event)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST failed: {e}\nlog:\n{}", self.log_tail()))
    }

    /// The status of `/readyz`.
    pub async fn readyz(&self) -> u16 {
        let probe = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        probe
            .get(format!("{}/readyz", self.base))
            .send()
            .await
            .unwrap_or_else(|e| panic!("/readyz failed: {e}\nlog:\n{}", self.log_tail()))
            .status()
            .as_u16()
    }

    /// The metrics text.
    pub async fn metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.metrics_base))
            .send()
            .await
            .unwrap_or_else(|e| panic!("/metrics failed: {e}"))
            .text()
            .await
            .unwrap()
    }

    /// A new process on the same config, directory and ports (its log appended to the same
    /// file), once the old one has exited (e.g. after `proc.kill()`); waits for `/readyz` 200.
    pub async fn respawn(&mut self) {
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = datastorage(&self.config, self._dir.path(), &["serve"])
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap();
        self.proc = ChildGuard::new(child);
        match self.wait_ready().await {
            Start::Ready => {}
            Start::PortTaken => panic!(
                "port taken on restart
log:
{}",
                self.log_tail()
            ),
            Start::Failed(why) => panic!(
                "restart failed: {why}
log:
{}",
                self.log_tail()
            ),
        }
    }

    /// Its working directory (relative paths of its config resolve here).
    pub fn dir(&self) -> &Path {
        self._dir.path()
    }

    /// The value of an unlabelled metric (or the sum of its series), 0 when absent.
    pub async fn metric(&self, name: &str) -> f64 {
        self.metrics()
            .await
            .lines()
            .filter(|l| {
                l.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// SIGTERM, then waits for the exit; the process must exit 0.
    pub async fn stop(mut self) {
        sigterm(self.proc.id());
        let status = self.proc.wait_exit(EXIT_TIMEOUT).await;
        let status = status.unwrap_or_else(|| {
            panic!(
                "server still running {EXIT_TIMEOUT:?} after SIGTERM\nlog:\n{}",
                self.log_tail()
            )
        });
        assert!(
            status.success(),
            "server exited with {status} after SIGTERM\nlog:\n{}",
            self.log_tail()
        );
    }
}
