//! The outage buffer (issue 16) on PostgreSQL, for each buffer backend (`disk`, `redis`), on
//! throwaway clusters of its own that it stops (`pg_ctl stop -m immediate`, as a crash) and
//! starts again:
//! 1. a cluster and a server with `buffer:` for the backend, `database.connectTimeout: 1s` and
//!    `database.acquireTimeout: 2s` so an outage is seen within a second;
//! 2. the cluster stopped, then `events` events written as batches of [`BATCH`] by `writers`
//!    concurrent writers: every answer counted by status (202 expected), the accept rate, and
//!    the buffer's size (`datastorage_buffer_bytes`, and the segment files for `disk`);
//! 3. the cluster started again, and the time from its readiness until
//!    `datastorage_buffer_events` is 0: at the default `buffer.replayRate` (5000 events/s),
//!    and, on a fresh cluster and server, at `replayRate: high_rate` for the raw ceiling;
//! 4. on the first server, the single-event load for a fixed window with no replay (after the
//!    first replay drained), then a second outage of the same size and the same load while its
//!    replay runs.
//!
//! The harness opens no database connection of its own: databases come from the test kit
//! ([`Db::create_named`]) and the counts from [`crate::pg::DbExt`] on them. Redis is reached by
//! `redis-cli` only, to read its persistence settings and delete this run's keys.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _, Result};
use bytes::Bytes;
use hdrhistogram::Histogram;
use hyper::Method;

use datastorage_testkit::pg::{Durability, TempCluster};

use crate::events::Gen;
use crate::load::{self, Conn, Work};
use crate::pg::{Db, DbExt as _};
use crate::report::Scenario;
use crate::server::{Backend, Metrics, Server, ServerConfig};
use crate::sys::{proc_ticks, CpuSnap, CpuUse, Probe};
use crate::Ctx;

/// Events per request while the database is down.
pub const BATCH: usize = 100;
/// The server's default `buffer.replayRate`, events/s (not written into the config).
pub const DEFAULT_RATE: u32 = 5_000;
/// The server's default `buffer.replayBatchSize`.
pub const DEFAULT_REPLAY_BATCH: usize = 500;
/// Where Redis runs on this machine.
pub const REDIS_ADDR: &str = "127.0.0.1:6379";
/// The database of every session.
const DB_NAME: &str = "datastorage_bench_buffer";
/// Keys added to the `database:` section: an outage is seen within a second.
const DB_KEYS: &str = "  connectTimeout: 1s\n  acquireTimeout: 2s\n";
/// How often the drain is polled (`/metrics`).
const POLL: Duration = Duration::from_millis(50);
/// Longest wait for the buffer's gauges to show what was accepted.
const SETTLE_LIMIT: Duration = Duration::from_secs(5);
/// Longest wait for the replay's first commit after PostgreSQL is back.
const FIRST_REPLAY_LIMIT: Duration = Duration::from_secs(60);

/// A backend of the outage buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Store {
    /// Segment files in `buffer.dir`, each record fsynced.
    Disk,
    /// A Redis stream.
    Redis,
}

impl Store {
    /// Its `buffer.backend` value.
    pub fn name(self) -> &'static str {
        match self {
            Store::Disk => "disk",
            Store::Redis => "redis",
        }
    }
}

/// Sizes of the part.
#[derive(Debug, Clone)]
pub struct Opts {
    /// Events written during each outage.
    pub events: u64,
    /// Concurrent writers during an outage.
    pub writers: usize,
    /// Backends measured, in order.
    pub stores: Vec<Store>,
    /// `buffer.replayRate` of the ceiling session.
    pub high_rate: u32,
    /// Clients of the live load.
    pub live_clients: usize,
    /// Warm-up of each live window.
    pub live_warmup: Duration,
    /// Measured live window.
    pub live: Duration,
}

/// Writing during an outage.
#[derive(Debug, Clone)]
pub struct Accept {
    /// Events sent.
    pub events_sent: u64,
    /// Requests sent.
    pub requests: u64,
    /// Answers by kind (`202`, `503 (reason)`, `transport`, `timeout`).
    pub answers: BTreeMap<String, u64>,
    /// Events of the requests answered 202.
    pub accepted: u64,
    /// Seconds from the first request to the last answer.
    pub seconds: f64,
    /// Seconds from the first request to the first answer (the outage being noticed).
    pub first_answer: f64,
    /// Latency of the requests answered 202, µs.
    pub hist: Histogram<u64>,
    /// CPU over the phase (PostgreSQL is down).
    pub cpu: CpuUse,
    /// CPU of `redis-server` over the phase, core-seconds (`redis`).
    pub redis_cpu: Option<f64>,
    /// Δ `datastorage_buffer_accepted_events_total` over the phase.
    pub accepted_metric: f64,
    /// Δ `datastorage_buffer_refused_events_total`.
    pub refused_metric: f64,
    /// `datastorage_buffer_events` once settled.
    pub gauge_events: f64,
    /// `datastorage_buffer_bytes` once settled.
    pub gauge_bytes: f64,
    /// Bytes of the files in `buffer.dir` (`disk`).
    pub file_bytes: Option<u64>,
}

impl Accept {
    /// Events answered 202 per second.
    pub fn rate(&self) -> f64 {
        self.accepted as f64 / self.seconds.max(1e-9)
    }
}

/// The replay after an outage.
#[derive(Debug, Clone, Default)]
pub struct Replay {
    /// `buffer.replayRate`.
    pub rate: u32,
    /// Seconds of `pg_ctl start` (crash recovery included), until it accepts connections.
    pub restart_seconds: f64,
    /// Seconds from PostgreSQL's readiness to the first replayed event seen on `/metrics`.
    pub first_replayed: Option<f64>,
    /// Seconds from PostgreSQL's readiness until `datastorage_buffer_events` was 0.
    pub drained: Option<f64>,
    /// Δ `datastorage_buffer_replayed_events_total` (this outage).
    pub replayed: f64,
    /// Δ `datastorage_buffer_quarantined_events_total`.
    pub quarantined: f64,
    /// CPU from PostgreSQL's readiness to the drain.
    pub cpu: CpuUse,
    /// CPU of `redis-server` over the same window, core-seconds (`redis`).
    pub redis_cpu: Option<f64>,
    /// Rows of `audit_events` added by this outage (before the stop → after the drain), when
    /// no other load ran.
    pub rows_added: Option<i64>,
}

impl Replay {
    /// Replayed events per second, from PostgreSQL's readiness to the drain.
    pub fn rate_from_ready(&self) -> Option<f64> {
        self.drained.filter(|d| *d > 0.0).map(|d| self.replayed / d)
    }

    /// Replayed events per second, from the first replayed event seen to the drain.
    pub fn rate_from_first(&self) -> Option<f64> {
        match (self.first_replayed, self.drained) {
            (Some(f), Some(d)) if d > f => Some(self.replayed / (d - f)),
            _ => None,
        }
    }
}

/// One outage.
#[derive(Debug, Clone)]
pub struct Outage {
    /// What it was for.
    pub label: String,
    /// Writing while down.
    pub accept: Accept,
    /// The replay.
    pub replay: Replay,
}

/// The live load beside the replay.
#[derive(Debug, Clone)]
pub struct Live {
    /// With no replay (after the first outage drained).
    pub baseline: Scenario,
    /// During the second outage's replay.
    pub during: Scenario,
    /// Δ accepted events over the baseline run and over the run during the replay (live
    /// writes answered 202: expected 0 once the database is marked up).
    pub buffered: (f64, f64),
    /// Events the replay committed over the run during the replay (warm-up included), and
    /// that run's seconds.
    pub replayed_during: (f64, f64),
    /// Seconds from PostgreSQL's readiness to the end of the measured window.
    pub window_end: f64,
}

impl Live {
    /// Whether the replay still ran when the measured window ended.
    pub fn window_inside_replay(&self, replay: &Replay) -> bool {
        replay.drained.is_some_and(|d| d >= self.window_end)
    }
}

/// One backend.
#[derive(Debug, Clone)]
pub struct StoreRun {
    /// The backend.
    pub store: Store,
    /// Outages, in order: default rate, default rate with the live load, high rate.
    pub outages: Vec<Outage>,
    /// The live load.
    pub live: Option<Live>,
    /// Steps that failed, with why.
    pub failures: Vec<String>,
    /// Warnings and errors each server logged, by message, with their counts.
    pub log_problems: Vec<(String, Vec<(usize, String)>)>,
}

/// The whole part.
#[derive(Debug, Clone)]
pub struct BufferRun {
    /// Sizes.
    pub opts: Opts,
    /// Per backend.
    pub stores: Vec<StoreRun>,
    /// File system of `buffer.dir`.
    pub dir_fs: String,
    /// Redis's `appendonly` / `appendfsync`, as read by `redis-cli`.
    pub redis_persistence: Option<String>,
    /// Redis's version.
    pub redis_version: Option<String>,
    /// Load average when the part began.
    pub loadavg: String,
    /// Correlation ids the events draw from.
    pub cids: u64,
    /// Seconds the part took.
    pub seconds: f64,
}

/// Sum of a counter (`name_total`, as prometheus-client writes it, or `name`).
fn counter(m: &Metrics, name: &str) -> f64 {
    m.get(&format!("{name}_total")) + m.get(name)
}

async fn metrics_at(addr: SocketAddr) -> Result<Metrics> {
    let (status, body) = load::get(addr, "/metrics").await?;
    anyhow::ensure!(status.is_success(), "/metrics answered {status}");
    Ok(Metrics::parse(&String::from_utf8_lossy(&body)))
}

/// Bytes of the files under `dir`.
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

fn redis_cli(args: &[&str]) -> Result<String> {
    let (host, port) = REDIS_ADDR.split_once(':').unwrap_or((REDIS_ADDR, "6379"));
    let out = std::process::Command::new("redis-cli")
        .args(["-h", host, "-p", port])
        .args(args)
        .output()
        .context("cannot run redis-cli")?;
    anyhow::ensure!(
        out.status.success(),
        "redis-cli {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Redis's persistence settings, e.g. `appendonly no, appendfsync everysec`.
fn redis_persistence() -> Result<String> {
    let mut parts = Vec::new();
    for key in ["appendonly", "appendfsync"] {
        let text = redis_cli(&["CONFIG", "GET", key])?;
        let value = text.lines().nth(1).unwrap_or("?").trim().to_owned();
        parts.push(format!("{key} {value}"));
    }
    Ok(parts.join(", "))
}

/// A field of `INFO server` (`process_id`, `redis_version`).
fn redis_info(field: &str) -> Option<String> {
    let text = redis_cli(&["INFO", "server"]).ok()?;
    text.lines().find_map(|l| {
        l.trim()
            .strip_prefix(&format!("{field}:"))
            .map(str::to_owned)
    })
}

/// CPU of `redis-server` between two tick readings, core-seconds.
fn redis_secs(pid: Option<u32>, t0: Option<u64>, tck: f64) -> Option<f64> {
    let t1 = pid.and_then(proc_ticks)?;
    Some(t1.saturating_sub(t0?) as f64 / tck)
}

/// Cores busy with anything but the server, PostgreSQL, this harness and Redis.
fn others(cpu: &CpuUse, redis: Option<f64>) -> f64 {
    (cpu.others_cores() - redis.unwrap_or(0.0) / cpu.wall.max(1e-9)).max(0.0)
}

/// Removes this run's keys (the stream, its event counter, its quarantine).
fn redis_cleanup(stream: &str) -> Result<()> {
    let (counter, quarantine) = (format!("{stream}:events"), format!("{stream}:quarantine"));
    redis_cli(&["DEL", stream, &counter, &quarantine]).map(drop)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// `pg_ctl stop -m immediate` (blocking, off the async threads' duty).
fn stop_cluster(c: &TempCluster) {
    tokio::task::block_in_place(|| c.stop());
}

/// `pg_ctl start` again; a failure (the test kit panics) becomes an error.
fn restart_cluster(c: &TempCluster) -> Result<()> {
    tokio::task::block_in_place(|| {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| c.restart()))
            .map_err(|_| anyhow!("the throwaway cluster did not start again"))
    })
}

/// The server config of a session: `base` on `db`, with the buffer for `store`.
fn config_on(
    base: &ServerConfig,
    db: &Db,
    store: Store,
    dir: &Path,
    stream: &str,
    rate: Option<u32>,
) -> ServerConfig {
    let mut extra = format!(
        "buffer:\n  backend: {}\n  dir: \"{}\"\n",
        store.name(),
        dir.display()
    );
    if let Some(r) = rate {
        extra.push_str(&format!("  replayRate: {r}\n"));
    }
    if store == Store::Redis {
        extra.push_str(&format!(
            "  redisStream: {stream}\nredis:\n  addr: {REDIS_ADDR}\n"
        ));
    }
    ServerConfig {
        backend: Backend::Postgres {
            host: db.host.clone(),
            port: db.port,
            name: db.name.clone(),
            user: db.user.clone(),
            password: db.password.clone(),
        },
        extra_yaml: Some(extra),
        database_yaml: Some(DB_KEYS.to_owned()),
        ..base.clone()
    }
}

/// A cluster, a database and a server for one session.
struct Session {
    cluster: TempCluster,
    db: Db,
    srv: Server,
    dir: tempfile::TempDir,
    stream: String,
    /// `redis-server`'s pid (`redis`), for its CPU.
    redis_pid: Option<u32>,
}

impl Session {
    async fn start(
        pg_bin: &Path,
        server_bin: &Path,
        base: &ServerConfig,
        store: Store,
        rate: Option<u32>,
    ) -> Result<Self> {
        let cluster =
            TempCluster::try_start(pg_bin, &[("max_connections", "200")], Durability::Stock)?;
        let db = Db::create_named(&cluster.admin_url(), DB_NAME).await?;
        let dir = tempfile::Builder::new()
            .prefix("ds-bench-buffer-")
            .tempdir()?;
        let stream = format!("bench:{}", uuid::Uuid::new_v4().simple());
        let cfg = config_on(base, &db, store, dir.path(), &stream, rate);
        let srv = Server::start(server_bin, &cfg).await?;
        let redis_pid = (store == Store::Redis)
            .then(|| redis_info("process_id").and_then(|p| p.parse().ok()))
            .flatten();
        Ok(Self {
            cluster,
            db,
            srv,
            dir,
            stream,
            redis_pid,
        })
    }

    fn probe(&self) -> Probe {
        Probe {
            server: Some(self.srv.pid),
            postmaster: self.cluster.postmaster_pid(),
        }
    }

    async fn rows(&self) -> Option<i64> {
        self.db
            .scalar("SELECT count(*) FROM audit_events")
            .await
            .ok()
    }

    /// Stops the server and the cluster, removes the Redis keys; returns the server's log
    /// problems by message.
    async fn finish(self, store: Store, failures: &mut Vec<String>) -> Vec<(usize, String)> {
        let problems = self.srv.log_problem_kinds();
        if let Err(e) = self.srv.stop().await {
            failures.push(format!("stopping the server: {e:#}"));
        }
        if store == Store::Redis {
            if let Err(e) = redis_cleanup(&self.stream) {
                failures.push(format!("removing the Redis keys of {}: {e:#}", self.stream));
            }
        }
        drop(self.dir);
        drop(self.cluster);
        problems
    }
}

/// Writes `events` events as batches of [`BATCH`] from `writers` writers, one keep-alive
/// connection each; every request is bounded by [`load::REQUEST_TIMEOUT`].
async fn write_while_down(
    ctx: &Ctx,
    srv: &Server,
    events: u64,
    writers: usize,
    redis_pid: Option<u32>,
) -> Accept {
    let requests = events.div_ceil(BATCH as u64);
    let next = Arc::new(AtomicU64::new(0));
    let probe = Probe {
        server: Some(srv.pid),
        postmaster: None,
    };
    let m0 = metrics_at(srv.metrics).await.unwrap_or_default();
    let c0 = CpuSnap::take(probe);
    let r0 = redis_pid.and_then(proc_ticks);
    let start = Instant::now();
    let seed0 = fastrand::u64(..);
    let tasks: Vec<_> = (0..writers.max(1))
        .map(|w| {
            let next = next.clone();
            let mut gen = Gen::new(
                ctx.templates.clone(),
                ctx.cids,
                seed0.wrapping_add(w as u64),
            );
            let addr = srv.api;
            tokio::spawn(async move {
                let mut conn = Conn::new(addr);
                let mut answers: BTreeMap<String, u64> = BTreeMap::new();
                let mut hist = new_hist();
                let (mut accepted, mut sent, mut first) = (0u64, 0u64, None::<Duration>);
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= requests {
                        break;
                    }
                    let n = (events - i * BATCH as u64).min(BATCH as u64) as usize;
                    sent += n as u64;
                    let body: Bytes = gen.batch(n);
                    let t = Instant::now();
                    let reply = tokio::time::timeout(
                        load::REQUEST_TIMEOUT,
                        conn.send_full(Method::POST, "/api/v1/audit/events/batch", body),
                    )
                    .await;
                    first.get_or_insert(start.elapsed());
                    let kind = match reply {
                        Ok(Ok(r)) => r.kind(),
                        Ok(Err(_)) => "transport".to_owned(),
                        Err(_) => {
                            conn = Conn::new(addr);
                            "timeout".to_owned()
                        }
                    };
                    if kind == "202" {
                        accepted += n as u64;
                        let _ = hist.record((t.elapsed().as_micros() as u64).clamp(1, 600_000_000));
                    } else {
                        // Do not spin on a refusal.
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    *answers.entry(kind).or_default() += 1;
                }
                (answers, hist, accepted, sent, first)
            })
        })
        .collect();
    let mut a = Accept {
        events_sent: 0,
        requests,
        answers: BTreeMap::new(),
        accepted: 0,
        seconds: 0.0,
        first_answer: f64::INFINITY,
        hist: new_hist(),
        cpu: CpuUse::default(),
        redis_cpu: None,
        accepted_metric: 0.0,
        refused_metric: 0.0,
        gauge_events: 0.0,
        gauge_bytes: 0.0,
        file_bytes: None,
    };
    for t in tasks {
        if let Ok((answers, hist, accepted, sent, first)) = t.await {
            for (k, v) in answers {
                *a.answers.entry(k).or_default() += v;
            }
            let _ = a.hist.add(&hist);
            a.accepted += accepted;
            a.events_sent += sent;
            if let Some(f) = first {
                a.first_answer = a.first_answer.min(f.as_secs_f64());
            }
        }
    }
    a.seconds = start.elapsed().as_secs_f64();
    a.cpu = c0.until(&CpuSnap::take(probe), ctx.tck);
    a.redis_cpu = redis_secs(redis_pid, r0, ctx.tck);
    let m1 = metrics_at(srv.metrics).await.unwrap_or_default();
    a.accepted_metric = counter(&m1, "datastorage_buffer_accepted_events")
        - counter(&m0, "datastorage_buffer_accepted_events");
    a.refused_metric = counter(&m1, "datastorage_buffer_refused_events")
        - counter(&m0, "datastorage_buffer_refused_events");
    if !a.first_answer.is_finite() {
        a.first_answer = 0.0;
    }
    a
}

fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

/// Waits (at most [`SETTLE_LIMIT`]) until the buffer's gauges show what was accepted (the
/// server refreshes its bytes about once a second), then reads them.
async fn settle_gauges(srv: &Server, a: &mut Accept, dir: &Path, store: Store) {
    let deadline = Instant::now() + SETTLE_LIMIT;
    // Past the server's next refresh, so the bytes gauge covers the last append.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    loop {
        if let Ok(m) = metrics_at(srv.metrics).await {
            a.gauge_events = m.get("datastorage_buffer_events");
            a.gauge_bytes = m.get("datastorage_buffer_bytes");
            if a.gauge_events >= a.accepted as f64 && a.gauge_bytes > 0.0 {
                break;
            }
        }
        if Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if store == Store::Disk {
        a.file_bytes = Some(dir_bytes(dir));
    }
}

/// What the drain watcher saw.
#[derive(Debug, Clone, Default)]
struct Watched {
    first_replayed: Option<f64>,
    drained: Option<f64>,
    replayed: f64,
    quarantined: f64,
    cpu: CpuUse,
    redis_cpu: Option<f64>,
}

/// Polls `/metrics` from `ready` until the buffer is empty and everything of this outage is
/// replayed or quarantined (`target` events over `base`), or until `limit`.
#[allow(clippy::too_many_arguments)]
async fn watch_drain(
    metrics: SocketAddr,
    base: Metrics,
    target: f64,
    ready: Instant,
    limit: Duration,
    probe: Probe,
    redis_pid: Option<u32>,
    tck: f64,
) -> Watched {
    let c0 = CpuSnap::take(probe);
    let r0 = redis_pid.and_then(proc_ticks);
    let mut w = Watched::default();
    let base_replayed = counter(&base, "datastorage_buffer_replayed_events");
    let base_quarantined = counter(&base, "datastorage_buffer_quarantined_events");
    while ready.elapsed() < limit {
        if let Ok(m) = metrics_at(metrics).await {
            w.replayed = counter(&m, "datastorage_buffer_replayed_events") - base_replayed;
            w.quarantined = counter(&m, "datastorage_buffer_quarantined_events") - base_quarantined;
            if w.first_replayed.is_none() && w.replayed > 0.0 {
                w.first_replayed = Some(ready.elapsed().as_secs_f64());
            }
            if m.get("datastorage_buffer_events") <= 0.0 && w.replayed + w.quarantined >= target {
                w.drained = Some(ready.elapsed().as_secs_f64());
                break;
            }
        }
        tokio::time::sleep(POLL).await;
    }
    w.cpu = c0.until(&CpuSnap::take(probe), tck);
    w.redis_cpu = redis_secs(redis_pid, r0, tck);
    w
}

/// How long a drain of `events` at `rate` may take before the harness gives up.
fn drain_limit(events: u64, rate: u32) -> Duration {
    Duration::from_secs_f64(120.0 + 3.0 * events as f64 / f64::from(rate.max(1)))
}

/// One outage: stop, write, start again, and (with `live`) the live load during the replay.
async fn outage(
    ctx: &Ctx,
    s: &Session,
    store: Store,
    o: &Opts,
    rate: u32,
    label: &str,
    live: Option<&Scenario>,
) -> Result<(Outage, Option<Live>)> {
    let rows_before = s.rows().await;
    ctx.log.say(format!(
        "  {label}: stopping PostgreSQL, writing {} events as batches of {BATCH} from {} writers",
        o.events, o.writers
    ));
    stop_cluster(&s.cluster);
    let mut accept = write_while_down(ctx, &s.srv, o.events, o.writers, s.redis_pid).await;
    settle_gauges(&s.srv, &mut accept, s.dir.path(), store).await;
    ctx.log.say(format!(
        "    {} events answered 202 in {:.2} s ({:.0} ev/s), answers {}; buffer {:.0} events, {:.1} MiB (gauge){}",
        accept.accepted,
        accept.seconds,
        accept.rate(),
        answers_text(&accept.answers),
        accept.gauge_events,
        accept.gauge_bytes / 1048576.0,
        accept
            .file_bytes
            .map_or(String::new(), |b| format!(", files {:.1} MiB", b as f64 / 1048576.0))
    ));
    let base = metrics_at(s.srv.metrics).await.unwrap_or_default();
    let target = accept.accepted_metric.max(accept.accepted as f64);
    let t = Instant::now();
    restart_cluster(&s.cluster)?;
    let restart_seconds = t.elapsed().as_secs_f64();
    let ready = Instant::now();
    let probe = s.probe();
    let watcher = tokio::spawn(watch_drain(
        s.srv.metrics,
        base.clone(),
        target,
        ready,
        drain_limit(o.events, rate),
        probe,
        s.redis_pid,
        ctx.tck,
    ));
    let mut live_run = None;
    if let Some(baseline) = live {
        // The replay's first commit says the server has marked the database up: live writes
        // go to it from then on.
        let base_replayed = counter(&base, "datastorage_buffer_replayed_events");
        while ready.elapsed() < FIRST_REPLAY_LIMIT {
            let m = metrics_at(s.srv.metrics).await.unwrap_or_default();
            if counter(&m, "datastorage_buffer_replayed_events") > base_replayed {
                break;
            }
            tokio::time::sleep(POLL).await;
        }
        let starts_at = ready.elapsed().as_secs_f64();
        ctx.log.say(format!(
            "    replay began {starts_at:.2} s after PostgreSQL was back; single POST @{} for {:.0} s (+{:.0} s warm-up) during the replay",
            o.live_clients,
            o.live.as_secs_f64(),
            o.live_warmup.as_secs_f64()
        ));
        let m0 = metrics_at(s.srv.metrics).await.unwrap_or_default();
        let t0 = Instant::now();
        let rows = s.rows().await;
        let during = ctx
            .scenario(
                &s.srv,
                probe,
                Work::Single,
                o.live_clients,
                o.live_warmup,
                o.live,
                rows,
            )
            .await;
        let m1 = metrics_at(s.srv.metrics).await.unwrap_or_default();
        live_run = Some(Live {
            baseline: baseline.clone(),
            during,
            buffered: (
                0.0,
                counter(&m1, "datastorage_buffer_accepted_events")
                    - counter(&m0, "datastorage_buffer_accepted_events"),
            ),
            replayed_during: (
                counter(&m1, "datastorage_buffer_replayed_events")
                    - counter(&m0, "datastorage_buffer_replayed_events"),
                t0.elapsed().as_secs_f64(),
            ),
            window_end: starts_at + (o.live_warmup + o.live).as_secs_f64(),
        });
    }
    let w = watcher.await.unwrap_or_default();
    let rows_after = s.rows().await;
    let replay = Replay {
        rate,
        restart_seconds,
        first_replayed: w.first_replayed,
        drained: w.drained,
        replayed: w.replayed,
        quarantined: w.quarantined,
        cpu: w.cpu,
        redis_cpu: w.redis_cpu,
        rows_added: match (live, rows_before, rows_after) {
            (None, Some(b), Some(a)) => Some(a - b),
            _ => None,
        },
    };
    ctx.log.say(format!(
        "    PostgreSQL started in {:.2} s; first replayed event after {}, buffer empty after {} ({} ev/s from PostgreSQL's readiness; replayRate {rate}); replayed {:.0}, quarantined {:.0}{}",
        replay.restart_seconds,
        secs(replay.first_replayed),
        secs(replay.drained),
        rate_text(replay.rate_from_ready()),
        replay.replayed,
        replay.quarantined,
        replay
            .rows_added
            .map_or(String::new(), |r| format!(", rows added {r}"))
    ));
    Ok((
        Outage {
            label: label.to_owned(),
            accept,
            replay,
        },
        live_run,
    ))
}

fn secs(v: Option<f64>) -> String {
    v.map_or("–".to_owned(), |s| format!("{s:.2} s"))
}

fn rate_text(v: Option<f64>) -> String {
    v.map_or("–".to_owned(), |r| format!("{r:.0}"))
}

/// `12 × 202, 1 × 503 (…)`.
fn answers_text(by: &BTreeMap<String, u64>) -> String {
    if by.is_empty() {
        return "none".to_owned();
    }
    by.iter()
        .map(|(k, v)| format!("{v} × {k}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The first session of a backend: an outage drained with nothing else running, the live load
/// with no replay, then a second outage with the live load during its replay.
async fn default_rate_session(
    ctx: &Ctx,
    pg_bin: &Path,
    server_bin: &Path,
    base: &ServerConfig,
    store: Store,
    o: &Opts,
    run: &mut StoreRun,
) -> Result<()> {
    ctx.log.say(format!(
        "outage buffer, {}: a throwaway cluster and a server at the default replayRate ({DEFAULT_RATE} ev/s)",
        store.name()
    ));
    let s = Session::start(pg_bin, server_bin, base, store, None).await?;
    let result = async {
        let (first, _) = outage(ctx, &s, store, o, DEFAULT_RATE, "outage 1", None).await?;
        run.outages.push(first);
        ctx.log.say(format!(
            "  single POST @{} with no replay ({:.0} s + {:.0} s warm-up)",
            o.live_clients,
            o.live.as_secs_f64(),
            o.live_warmup.as_secs_f64()
        ));
        let m0 = metrics_at(s.srv.metrics).await.unwrap_or_default();
        let rows = s.rows().await;
        let baseline = ctx
            .scenario(
                &s.srv,
                s.probe(),
                Work::Single,
                o.live_clients,
                o.live_warmup,
                o.live,
                rows,
            )
            .await;
        let m1 = metrics_at(s.srv.metrics).await.unwrap_or_default();
        let buffered_base = counter(&m1, "datastorage_buffer_accepted_events")
            - counter(&m0, "datastorage_buffer_accepted_events");
        let (second, live) = outage(
            ctx,
            &s,
            store,
            o,
            DEFAULT_RATE,
            "outage 2 (live load during the replay)",
            Some(&baseline),
        )
        .await?;
        run.outages.push(second);
        if let Some(mut l) = live {
            l.buffered.0 = buffered_base;
            ctx.log.say(format!(
                "  live single POST @{}: {:.0} ev/s with no replay, {:.0} ev/s during it ({:.2}); p99 {:.2} → {:.2} ms",
                o.live_clients,
                l.baseline.outcome.rate(),
                l.during.outcome.rate(),
                l.during.outcome.rate() / l.baseline.outcome.rate().max(1e-9),
                l.baseline.outcome.ms(0.99),
                l.during.outcome.ms(0.99)
            ));
            run.live = Some(l);
        }
        anyhow::Ok(())
    }
    .await;
    let problems = s.finish(store, &mut run.failures).await;
    run.log_problems.push((
        format!("The {} server at the default replayRate", store.name()),
        problems,
    ));
    result
}

/// The ceiling session: a fresh cluster and server at `replayRate: high_rate`, one outage.
async fn high_rate_session(
    ctx: &Ctx,
    pg_bin: &Path,
    server_bin: &Path,
    base: &ServerConfig,
    store: Store,
    o: &Opts,
    run: &mut StoreRun,
) -> Result<()> {
    ctx.log.say(format!(
        "outage buffer, {}: a fresh cluster and server at replayRate {}",
        store.name(),
        o.high_rate
    ));
    let s = Session::start(pg_bin, server_bin, base, store, Some(o.high_rate)).await?;
    let result = outage(
        ctx,
        &s,
        store,
        o,
        o.high_rate,
        "outage at a high replayRate",
        None,
    )
    .await
    .map(|(x, _)| run.outages.push(x));
    let problems = s.finish(store, &mut run.failures).await;
    run.log_problems.push((
        format!("The {} server at replayRate {}", store.name(), o.high_rate),
        problems,
    ));
    result
}

/// Runs the part: for each backend, the default-rate session and the high-rate session.
pub async fn run(
    ctx: &Ctx,
    pg_bin: &Path,
    server_bin: &Path,
    base: &ServerConfig,
    o: Opts,
) -> BufferRun {
    let started = Instant::now();
    let dir_fs = crate::sys::fs_type(&std::env::temp_dir());
    let mut out = BufferRun {
        opts: o.clone(),
        stores: Vec::new(),
        dir_fs,
        redis_persistence: None,
        redis_version: None,
        loadavg: loadavg(),
        cids: ctx.cids,
        seconds: 0.0,
    };
    for &store in &o.stores {
        let mut run = StoreRun {
            store,
            outages: Vec::new(),
            live: None,
            failures: Vec::new(),
            log_problems: Vec::new(),
        };
        if store == Store::Redis {
            match redis_persistence() {
                Ok(p) => {
                    out.redis_persistence = Some(p);
                    out.redis_version = redis_info("redis_version");
                }
                Err(e) => {
                    ctx.log
                        .say(format!("  outage buffer, redis: skipped: {e:#}"));
                    run.failures
                        .push(format!("Redis at {REDIS_ADDR} not reachable: {e:#}"));
                    out.stores.push(run);
                    continue;
                }
            }
        }
        if let Err(e) =
            default_rate_session(ctx, pg_bin, server_bin, base, store, &o, &mut run).await
        {
            ctx.log.say(format!(
                "  outage buffer, {}: default-rate session failed: {e:#}",
                store.name()
            ));
            run.failures.push(format!("default-rate session: {e:#}"));
        }
        if let Err(e) = high_rate_session(ctx, pg_bin, server_bin, base, store, &o, &mut run).await
        {
            ctx.log.say(format!(
                "  outage buffer, {}: high-rate session failed: {e:#}",
                store.name()
            ));
            run.failures.push(format!("high-rate session: {e:#}"));
        }
        out.stores.push(run);
    }
    out.seconds = started.elapsed().as_secs_f64();
    out
}

fn mib(bytes: f64) -> String {
    format!("{:.1}", bytes / 1048576.0)
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

fn us_per(cpu: Option<f64>, units: f64) -> String {
    match cpu {
        Some(c) if units > 0.0 => format!("{:.0}", c / units * 1e6),
        _ => "–".to_owned(),
    }
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.2}", a / b)
    } else {
        "–".to_owned()
    }
}

fn rate_name(rate: u32) -> String {
    if rate == DEFAULT_RATE {
        format!("{rate} (default)")
    } else {
        rate.to_string()
    }
}

fn errors(s: &Scenario) -> String {
    let e = &s.outcome.errors;
    if e.is_empty() {
        return "0".to_owned();
    }
    e.iter()
        .map(|(k, v)| format!("{v} × {k}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The report section.
pub fn markdown(run: &BufferRun) -> String {
    let o = &run.opts;
    let mut out = String::new();
    let _ = writeln!(out, "\n## Outage buffer (issue 16)\n");
    let _ = writeln!(
        out,
        "For each backend, PostgreSQL on throwaway clusters of this part's own (the test kit's `TempCluster`, stock settings, fsync on, `max_connections=200`, loopback), stopped with `pg_ctl stop -m immediate` (as a crash: every connection is cut) and started again with `pg_ctl start -w` (crash recovery included). \
         The server: the release binary, generated config as above plus `database.connectTimeout: 1s` and `database.acquireTimeout: 2s` (an outage is seen within a second), `buffer.backend` as named, `buffer.dir` a fresh folder on {} (`disk`; segment files fsynced per record before the 202), every other `buffer` key at its default (`replayBatchSize` {DEFAULT_REPLAY_BATCH}, `probeInterval` 1s, `maxBytes` 1 GiB, `segmentBytes` 8 MiB); \
         `redis`: the machine's Redis{} at {REDIS_ADDR} ({}), a stream `bench:<uuid>` of its own per server, its keys deleted afterwards. \
         Schema measured: the partitioned `audit_events` of the current migrations, empty at the start of each session. Part load average at start: {}; the part took {:.0} s.\n",
        run.dir_fs,
        run.redis_version.as_deref().map_or(String::new(), |v| format!(" {v}")),
        run.redis_persistence.as_deref().map_or("not reached".to_owned(), |p| format!("`{p}`: the 202 is Redis's acknowledgement, in memory, not an fsync")),
        run.loadavg,
        run.seconds
    );
    let _ = writeln!(
        out,
        "Each outage: the cluster is stopped, then {} events are sent as `POST /api/v1/audit/events/batch` of {BATCH} events (the harness's generated events, correlation ids from the pool of {}) by {} writers at once, one keep-alive connection each, one request after another; a request is not retried. \
         *accept ev/s* = events answered 202 ÷ seconds from the first request to the last answer (the first requests meet the outage and wait for it to be noticed: *first answer s*). *buffer MiB* is `datastorage_buffer_bytes` once it shows every accepted event (the segment files' size for `disk`, the stream's `MEMORY USAGE` for `redis`); *files MiB* is the size of the files in `buffer.dir`. \
         Then the cluster is started: *pg_ctl start s* is how long that took; *first replayed s* and *drained s* are seconds from PostgreSQL's readiness to the first `datastorage_buffer_replayed_events_total` increment and until `datastorage_buffer_events` is 0 (and every accepted event is replayed or quarantined), polled every {} ms. \
         *replay ev/s* = events replayed (Δ `datastorage_buffer_replayed_events_total`) ÷ *drained s*; *after first* divides by *drained s − first replayed s* instead (the probe's delay left out); *÷ replayRate* is *replay ev/s* ÷ the configured `buffer.replayRate`. \
         The default-rate session: outage 1 with nothing else running, the live load with no replay, then outage 2 with the live load during its replay; the high-rate session is a fresh cluster and server with `buffer.replayRate: {}`. \
         CPU is core-µs per event: over the writes (PostgreSQL down) and over the replay (PostgreSQL's readiness → drained); *Redis CPU* is `redis-server`'s own (its pid from `INFO server`); *other load* is CPU used by anything but the server, PostgreSQL, Redis and this harness, in cores (a quiet machine shows 0.00).\n",
        o.events,
        run.cids,
        o.writers,
        POLL.as_millis(),
        o.high_rate
    );
    for s in &run.stores {
        for f in &s.failures {
            let _ = writeln!(
                out,
                "**Failed** ({}): {}\n",
                s.store.name(),
                f.replace('`', "'")
            );
        }
    }
    let _ = writeln!(out, "### Accepting while PostgreSQL is down\n");
    let _ = writeln!(
        out,
        "| backend | outage | events sent (requests) | answers | events answered 202 | Δ accepted / refused (metric) | accept s | first answer s | accept ev/s | request p50 / p99 / max ms | buffer MiB (gauge) | files MiB | bytes per event | server CPU µs/ev | Redis CPU µs/ev | other load (cores) |\n|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for s in &run.stores {
        for x in &s.outages {
            let a = &x.accept;
            let _ = writeln!(
                out,
                "| {} | {} | {} ({}) | {} | {} | {:.0} / {:.0} | {:.2} | {:.2} | **{:.0}** | {:.1} / {:.1} / {:.1} | {} | {} | {:.0} | {} | {} | {:.2} |",
                s.store.name(),
                x.label,
                a.events_sent,
                a.requests,
                answers_text(&a.answers),
                a.accepted,
                a.accepted_metric,
                a.refused_metric,
                a.seconds,
                a.first_answer,
                a.rate(),
                ms(&a.hist, 0.5),
                ms(&a.hist, 0.99),
                ms(&a.hist, 1.0),
                mib(a.gauge_bytes),
                a.file_bytes.map_or("–".to_owned(), |b| mib(b as f64)),
                a.gauge_bytes / (a.accepted.max(1)) as f64,
                us_per(a.cpu.server, a.accepted as f64),
                us_per(a.redis_cpu, a.accepted as f64),
                others(&a.cpu, a.redis_cpu)
            );
        }
    }
    let _ = writeln!(out, "\n### Replay once PostgreSQL is back\n");
    let _ = writeln!(
        out,
        "| backend | outage | replayRate | pg_ctl start s | first replayed s | drained s | events replayed | quarantined | replay ev/s | after first ev/s | ÷ replayRate | rows added = replayed | server CPU µs/ev | PostgreSQL CPU µs/ev | Redis CPU µs/ev | other load (cores) |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|"
    );
    for s in &run.stores {
        for x in &s.outages {
            let r = &x.replay;
            let live = r.rows_added.is_none();
            let _ = writeln!(
                out,
                "| {} | {} | {} | {:.2} | {} | {} | {:.0} | {:.0} | **{}** | {} | {} | {} | {} | {} | {} | {:.2} |",
                s.store.name(),
                x.label,
                rate_name(r.rate),
                r.restart_seconds,
                r.first_replayed.map_or("–".to_owned(), |v| format!("{v:.2}")),
                r.drained.map_or("**not drained**".to_owned(), |v| format!("{v:.2}")),
                r.replayed,
                r.quarantined,
                rate_text(r.rate_from_ready()),
                rate_text(r.rate_from_first()),
                r.rate_from_ready()
                    .map_or("–".to_owned(), |v| format!("{:.2}", v / f64::from(r.rate))),
                match r.rows_added {
                    Some(n) if n as f64 == r.replayed => format!("yes ({n})"),
                    Some(n) => format!("**no** ({n})"),
                    None => "– (live load too)".to_owned(),
                },
                if live { "–".to_owned() } else { us_per(r.cpu.server, r.replayed) },
                if live { "–".to_owned() } else { us_per(r.cpu.pg, r.replayed) },
                if live { "–".to_owned() } else { us_per(r.redis_cpu, r.replayed) },
                others(&r.cpu, r.redis_cpu)
            );
        }
    }
    for s in &run.stores {
        let Some(l) = &s.live else { continue };
        let Some(during_replay) = s
            .outages
            .iter()
            .find(|x| x.replay.rows_added.is_none())
            .map(|x| &x.replay)
        else {
            continue;
        };
        let _ = writeln!(
            out,
            "\n### Live writes during the replay, {}\n",
            s.store.name()
        );
        let (rep, rep_secs) = l.replayed_during;
        let _ = writeln!(
            out,
            "The harness's single-event load (`POST /api/v1/audit/events`, {} closed-loop clients, {:.0} s warm-up, then {:.0} s measured) on the default-rate server: with no replay (after outage 1 drained), and during outage 2's replay, started once the replay's first commit showed the database marked up. \
             The measured window ended {:.1} s after PostgreSQL's readiness and the buffer drained after {}: the window {} the replay. \
             Over the load run during the replay (warm-up included, {:.1} s) the replay committed {:.0} events ({:.0} ev/s against its replayRate of {}). Ratios are *during the replay ÷ no replay*{}.\n",
            l.baseline.clients,
            o.live_warmup.as_secs_f64(),
            l.baseline.outcome.window,
            l.window_end,
            secs(during_replay.drained),
            if l.window_inside_replay(during_replay) { "lay wholly inside" } else { "was **not** wholly inside" },
            rep_secs,
            rep,
            rep / rep_secs.max(1e-9),
            during_replay.rate,
            if s.store == Store::Redis {
                "; *other load* here includes `redis-server`"
            } else {
                ""
            }
        );
        let (b, d) = (&l.baseline.outcome, &l.during.outcome);
        let _ = writeln!(
            out,
            "| single POST @{} | no replay | during the replay | during ÷ no replay |\n|---|---:|---:|---:|",
            l.baseline.clients
        );
        let _ = writeln!(
            out,
            "| throughput, events/s | {:.0} | {:.0} | **{}** |",
            b.rate(),
            d.rate(),
            ratio(d.rate(), b.rate())
        );
        for (name, q) in [("p50", 0.5), ("p95", 0.95), ("p99", 0.99), ("max", 1.0)] {
            let r = ratio(d.ms(q), b.ms(q));
            let _ = writeln!(
                out,
                "| latency {name}, ms | {:.2} | {:.2} | {} |",
                b.ms(q),
                d.ms(q),
                if name == "p99" { format!("**{r}**") } else { r }
            );
        }
        type Pick = fn(&CpuUse) -> Option<f64>;
        let rows: [(&str, Pick); 2] = [("server CPU", |c| c.server), ("PostgreSQL CPU", |c| c.pg)];
        for (name, f) in rows {
            let _ = writeln!(
                out,
                "| {name}, µs per live event (the replay's work included during it) | {} | {} | |",
                us_per(f(&b.cpu), b.units as f64),
                us_per(f(&d.cpu), d.units as f64)
            );
        }
        let _ = writeln!(
            out,
            "| other load (cores) | {:.2} | {:.2} | |",
            b.cpu.others_cores(),
            d.cpu.others_cores()
        );
        let _ = writeln!(
            out,
            "| errors | {} | {} | |",
            errors(&l.baseline),
            errors(&l.during)
        );
        let _ = writeln!(
            out,
            "| live events answered 202 (Δ `datastorage_buffer_accepted_events_total`, warm-up included) | {:.0} | {:.0} | |",
            l.buffered.0, l.buffered.1
        );
        let _ = writeln!(
            out,
            "| rows in audit_events before | {} | {} | |",
            l.baseline.table_rows.map_or("–".into(), |r| r.to_string()),
            l.during.table_rows.map_or("–".into(), |r| r.to_string())
        );
    }
    for s in &run.stores {
        for (who, lines) in &s.log_problems {
            if lines.is_empty() {
                continue;
            }
            let total: usize = lines.iter().map(|(n, _)| n).sum();
            let _ = writeln!(
                out,
                "\n{who} logged {total} warning/error lines: {}.",
                lines
                    .iter()
                    .map(|(n, k)| format!("{n} × `{}`", k.replace('`', "'")))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn config_has_the_buffer_and_the_short_timeouts() {
        let db = Db {
            host: "127.0.0.1".into(),
            port: 5999,
            user: "postgres".into(),
            password: None,
            name: "x".into(),
        };
        let base = ServerConfig::new(Backend::Sqlite(PathBuf::from("/tmp/x.db")), 25, Some(25));
        let cfg = config_on(
            &base,
            &db,
            Store::Redis,
            Path::new("/tmp/b"),
            "bench:1",
            None,
        );
        let y = crate::server::config_yaml(&cfg, 1, 2);
        let database = y.split_once("database:\n").unwrap().1;
        let database = database.split_once("retention:").unwrap().0;
        assert!(
            database.contains("  connectTimeout: 1s\n  acquireTimeout: 2s\n"),
            "{y}"
        );
        assert!(y.contains("buffer:\n  backend: redis\n  dir: \"/tmp/b\"\n  redisStream: bench:1\nredis:\n  addr: 127.0.0.1:6379\n"), "{y}");
        assert!(!y.contains("replayRate"));
        let cfg = config_on(
            &base,
            &db,
            Store::Disk,
            Path::new("/tmp/b"),
            "s",
            Some(1_000_000),
        );
        let y = crate::server::config_yaml(&cfg, 1, 2);
        assert!(
            y.ends_with("buffer:\n  backend: disk\n  dir: \"/tmp/b\"\n  replayRate: 1000000\n"),
            "{y}"
        );
    }

    #[test]
    fn counters_read_with_or_without_total() {
        let m = Metrics::parse("datastorage_buffer_replayed_events_total 7\nx 1\n");
        assert_eq!(counter(&m, "datastorage_buffer_replayed_events"), 7.0);
        assert_eq!(counter(&m, "x"), 1.0);
    }

    #[test]
    fn replay_rates() {
        let r = Replay {
            rate: 5000,
            first_replayed: Some(1.0),
            drained: Some(21.0),
            replayed: 100_000.0,
            ..Replay::default()
        };
        assert_eq!(r.rate_from_ready(), Some(100_000.0 / 21.0));
        assert_eq!(r.rate_from_first(), Some(5000.0));
        assert_eq!(Replay::default().rate_from_ready(), None);
    }
}
