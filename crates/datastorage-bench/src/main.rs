//! `datastorage-bench`: measures the DataStorage server against PostgreSQL's own ceiling on the
//! same machine, in one run, and writes `BENCHMARKS.md`.
//!
//! The run: a throwaway PostgreSQL cluster (or `--pg-url`), the release server binary started
//! with a generated config, then
//! 1. single-event POST at 1, 16, 64 clients, each right after pgbench's prepared single-row
//!    INSERT at the same concurrency;
//! 2. the bulk ceiling (multi-row INSERT, COPY with 1 and 2 streams), then batch POST of 100,
//!    500 and 1000 events (1000: the default `maxBatchSize`, upstream's client batch) at 4 and 16
//!    clients;
//! 3. the table topped up to `--rows` rows of real chained events, then pgbench's prepared
//!    SELECT and the server's query by correlation id;
//! 4. pool exhaustion: `maxOpenConns: 5`, 200 writers; then the same writers through a real
//!    PgBouncer in transaction mode (`default_pool_size` 5, `--pgbouncer-pool-size`) with
//!    `database.pooler: pgbouncer` and `maxOpenConns` 200 (`--skip-pgbouncer` leaves it out);
//! 5. chain verification: chains of 1 k, 10 k and `--verify-len` (100 k; quick 10 k) events
//!    seeded by COPY, each verified once and then 4 at once on a freshly started server, with
//!    its peak RSS above idle;
//! 6. a held chain: a separate session holds one chain head (`FOR UPDATE`) for `--hold`
//!    seconds while 16 writers of other chains run the single-event load, beside the same load
//!    with nothing held, and a few writes go to the held chain;
//! 7. concurrent large bodies: `--large-bodies` (32; quick 16) batches of 500 events and
//!    nearly 5 MiB at once, at the default `server.maxInFlightBodyBytes` and at
//!    `--large-budget-mib`, each on a fresh server, with its peak RSS;
//! 8. access control (issue 13), each configuration on a fresh server: single-event POST at
//!    `--auth-clients` (16) with `auth.mode: none` and with `auth.mode: tokens` (every request
//!    sends a bearer token; the tokens file holds its SHA-256), then, with tokens, the query by
//!    correlation id with `auth.recordReads` true (every query commits an access record) and
//!    false, on a table topped up to `--auth-rows` (200 k; quick 20 k);
//! 9. the single and batch scenarios again on SQLite, then chain verification there (chains
//!    written through the batch endpoint);
//! 10. only with `--lifecycle` (issue 15), each step on its own database: the in-place migration
//!     of an unpartitioned table of `--lifecycle-rows` (1 M; quick 100 k) seeded events, their
//!     NDJSON export with the server's peak RSS, and purges dropping daily partitions at 100 k
//!     rows and at `--lifecycle-rows`;
//! 11. only with `--buffer` (issue 16), for each outage-buffer backend (`--buffer-backends`,
//!     disk and redis), on throwaway clusters of its own that it stops and starts: writes of
//!     `--buffer-events` (100 k; quick 20 k) events in batches of 100 while PostgreSQL is down
//!     (answered 202), the buffer's size, the replay's time to an empty buffer at the default
//!     `buffer.replayRate` and at `--buffer-high-rate`, and the single-event load with and
//!     without a replay running;
//! 12. only with `--explorer` (issue 19), on databases of its own: `--explorer-rows` (1 M;
//!     quick 100 k) seeded events over the last 7 days, the search page's and a long chain's
//!     timeline's first result in headless Chromium over chromedriver, the API calls the page
//!     makes, then the single-event load at `--explorer-clients` (16) without, with
//!     `--explorer-subscribers` (100) stream subscribers of every event, with as many whose
//!     filter matches no write, and without again.
//!
//! `--skip-load` leaves out 1–3 (and `--skip-pool`, `--skip-verify`, `--skip-held`,
//! `--skip-bodies`, `--skip-auth`, `--skip-sqlite` the others), to run a part alone; 10, 11 and
//! 12 run only when asked for. The harness prints numbers; it asserts nothing about them.

mod auth;
mod bodies;
mod buffer;
mod events;
mod explorer;
mod held;
mod lifecycle;
mod load;
mod pg;
mod report;
mod server;
mod sys;
mod verify;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use clap::Parser;

use crate::events::Templates;
use crate::load::{Plan, Work};
use crate::pg::{Ceiling, Db, DbExt as _, Method};
use crate::report::{PgBouncerRun, PoolRun, Run, Scenario};
use crate::server::{Backend, Server, ServerConfig};
use crate::sys::{MachineInfo, Probe};
use datastorage_testkit::pg::{Durability, TempCluster};

/// Benchmark harness for DataStorage: throughput and latency against PostgreSQL's own ceiling.
#[derive(Debug, Parser)]
#[command(name = "datastorage-bench", version, about)]
struct Cli {
    /// Smoke run of about two minutes: 2 s scenarios, 100 k query rows, 5 s pool exhaustion,
    /// 10 k-event verified chains, a 5 s held chain, 16 large bodies, 2 s access-control runs.
    #[arg(long)]
    quick: bool,
    /// Admin URL of an existing PostgreSQL (a fresh database is created on it) instead of a
    /// throwaway cluster. PostgreSQL CPU is then not measured.
    #[arg(long, value_name = "URL")]
    pg_url: Option<String>,
    /// PostgreSQL binaries folder (initdb, pg_ctl, pgbench, postgres).
    #[arg(long, value_name = "DIR")]
    pg_bin: Option<PathBuf>,
    /// The server binary [default: target/release/datastorage in this workspace].
    #[arg(long, value_name = "FILE")]
    server_bin: Option<PathBuf>,
    /// Write the Markdown report here (it is printed either way).
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Measured seconds per server scenario [default: 15, quick 2].
    #[arg(long)]
    duration: Option<f64>,
    /// Warm-up seconds before each measured window [default: 3, quick 1].
    #[arg(long)]
    warmup: Option<f64>,
    /// Measured seconds per ceiling workload [default: 10, quick 2].
    #[arg(long)]
    ceiling_duration: Option<f64>,
    /// Measured seconds per SQLite scenario [default: 10, quick 2].
    #[arg(long)]
    sqlite_duration: Option<f64>,
    /// Seconds of the pool-exhaustion run [default: 30, quick 5].
    #[arg(long)]
    pool_duration: Option<f64>,
    /// Rows in audit_events for the query scenario [default: 1000000, quick 100000].
    #[arg(long)]
    rows: Option<u64>,
    /// Correlation ids the write scenarios draw from.
    #[arg(long, default_value_t = 20_000)]
    cids: u64,
    /// Length of each seeded chain.
    #[arg(long, default_value_t = 50)]
    chain_len: i64,
    /// database.maxOpenConns of the server under test.
    #[arg(long, default_value_t = 25)]
    max_open_conns: u32,
    /// database.maxIdleConns of the server under test [default: maxOpenConns, so the pool keeps
    /// what saturation load uses instead of closing and reopening connections all the time;
    /// see docs/tuning.md. 0: the server's own default, 5].
    #[arg(long)]
    max_idle_conns: Option<u32>,
    /// Clients of the query scenario (and of pgbench's SELECT).
    #[arg(long, default_value_t = 16)]
    query_clients: usize,
    /// Writers of the pool-exhaustion run.
    #[arg(long, default_value_t = 200)]
    pool_writers: usize,
    /// database.maxOpenConns of the pool-exhaustion run.
    #[arg(long, default_value_t = 5)]
    pool_max_open_conns: u32,
    /// Skip the SQLite scenarios.
    #[arg(long)]
    skip_sqlite: bool,
    /// Skip the pool-exhaustion run.
    #[arg(long)]
    skip_pool: bool,
    /// default_pool_size of the PgBouncer of the pool-exhaustion run through a pooler (its
    /// writers are --pool-writers, and the server's maxOpenConns as many).
    #[arg(long, default_value_t = 5)]
    pgbouncer_pool_size: u32,
    /// Skip the pool-exhaustion run through PgBouncer.
    #[arg(long)]
    skip_pgbouncer: bool,
    /// Skip the load scenarios and the ceiling (single, batch, query; parts 1–3).
    #[arg(long)]
    skip_load: bool,
    /// Longest chain verified; 1 k and 10 k chains are verified too when shorter
    /// [default: 100000, quick 10000].
    #[arg(long, value_name = "EVENTS")]
    verify_len: Option<u64>,
    /// Longest chain verified on SQLite, written through the batch endpoint
    /// [default: --verify-len].
    #[arg(long, value_name = "EVENTS")]
    sqlite_verify_len: Option<u64>,
    /// Skip chain verification.
    #[arg(long)]
    skip_verify: bool,
    /// Seconds the held-chain scenario holds its chain head [default: 30, quick 5].
    #[arg(long, value_name = "SECS")]
    hold: Option<f64>,
    /// Writers of other chains during the hold (and in the comparison without it).
    #[arg(long, default_value_t = 16)]
    held_clients: usize,
    /// Writes sent to the held chain during the hold.
    #[arg(long, default_value_t = 8)]
    held_writes: usize,
    /// Skip the held-chain scenario.
    #[arg(long)]
    skip_held: bool,
    /// Batch requests of nearly 5 MiB sent at once [default: 32, quick 16].
    #[arg(long, value_name = "N")]
    large_bodies: Option<usize>,
    /// server.maxInFlightBodyBytes of the second large-body round, MiB.
    #[arg(long, default_value_t = 512, value_name = "MIB")]
    large_budget_mib: u64,
    /// Skip the large-body rounds.
    #[arg(long)]
    skip_bodies: bool,
    /// Measured seconds per access-control run (writes without and with a token, queries with
    /// and without read records) [default: 10, quick 2].
    #[arg(long, value_name = "SECS")]
    auth_duration: Option<f64>,
    /// Rows audit_events is topped up to before the access-control queries
    /// [default: 200000, quick 20000].
    #[arg(long)]
    auth_rows: Option<u64>,
    /// Writers of the access-control write runs.
    #[arg(long, default_value_t = 16)]
    auth_clients: usize,
    /// Skip the access-control part.
    #[arg(long)]
    skip_auth: bool,
    /// Run the lifecycle part (issue 15; off by default): migration of an unpartitioned table,
    /// NDJSON export with the server's RSS, purges dropping partitions.
    #[arg(long)]
    lifecycle: bool,
    /// Rows of the lifecycle part's migrated table, export and large purge
    /// [default: 1000000, quick 100000].
    #[arg(long, value_name = "N")]
    lifecycle_rows: Option<u64>,
    /// Run the outage-buffer part (issue 16; off by default): writes while PostgreSQL is
    /// stopped, the buffer's size, the replay's throughput, live writes during a replay.
    #[arg(long)]
    buffer: bool,
    /// Events written during each outage of the buffer part [default: 100000, quick 20000].
    #[arg(long, value_name = "N")]
    buffer_events: Option<u64>,
    /// Concurrent writers during an outage (batches of 100 events, one request at a time each).
    #[arg(long, default_value_t = 8)]
    buffer_writers: usize,
    /// Outage-buffer backends measured, in order.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [buffer::Store::Disk, buffer::Store::Redis])]
    buffer_backends: Vec<buffer::Store>,
    /// buffer.replayRate of the buffer part's ceiling run, events/s.
    #[arg(long, default_value_t = 1_000_000)]
    buffer_high_rate: u32,
    /// Clients of the single-event load with and without a replay running.
    #[arg(long, default_value_t = 16)]
    buffer_live_clients: usize,
    /// Measured seconds of each live-load window of the buffer part [default: 10, quick 2];
    /// it must end before the replay does (100 k events at 5000 ev/s take 20 s).
    #[arg(long, value_name = "SECS")]
    buffer_live: Option<f64>,
    /// Run the explorer part (issue 19; off by default): the search page's first result in
    /// headless Chromium on a seeded table, the API calls the page makes, and the single-event
    /// load with and without stream subscribers.
    #[arg(long)]
    explorer: bool,
    /// Rows of the explorer's search table [default: 1000000, quick 100000].
    #[arg(long, value_name = "N")]
    explorer_rows: Option<u64>,
    /// Timed page loads of each explorer view, after one untimed [default: 10, quick 3].
    #[arg(long, value_name = "N")]
    explorer_loads: Option<usize>,
    /// Timed calls of each API request the explorer's views make, after 5 untimed.
    #[arg(long, default_value_t = 50, value_name = "N")]
    explorer_calls: usize,
    /// Clients of the single-event load with and without stream subscribers.
    #[arg(long, default_value_t = 16)]
    explorer_clients: usize,
    /// Stream subscribers during the explorer's load run with them.
    #[arg(long, default_value_t = 100)]
    explorer_subscribers: usize,
    /// chromedriver for the explorer part.
    #[arg(
        long,
        value_name = "FILE",
        env = "DATASTORAGE_CHROMEDRIVER",
        default_value = "/usr/bin/chromedriver"
    )]
    chromedriver: PathBuf,
    /// Chromium for the explorer part.
    #[arg(
        long,
        value_name = "FILE",
        env = "DATASTORAGE_CHROMIUM",
        default_value = "/usr/bin/chromium"
    )]
    chromium: PathBuf,
}

/// Verified chains are `cid-<VERIFY_CID_BASE + length>`, apart from every other chain.
const VERIFY_CID_BASE: u64 = 900_000_000;
/// Events per request when writing SQLite's verified chains (the server's default
/// `server.maxBatchSize`).
const VERIFY_SEED_BATCH: usize = 500;

/// maxIdleConns of the server under test: `None` leaves the server's default.
fn idle_conns(cli: &Cli) -> Option<u32> {
    match cli.max_idle_conns {
        Some(0) => None,
        Some(n) => Some(n),
        None => Some(cli.max_open_conns),
    }
}

/// Resolved durations and sizes.
#[derive(Debug, Clone, Copy)]
struct Sizes {
    duration: Duration,
    warmup: Duration,
    ceiling: Duration,
    sqlite: Duration,
    pool: Duration,
    rows: u64,
    verify_len: u64,
    sqlite_verify_len: u64,
    hold: Duration,
    large_bodies: usize,
    auth: Duration,
    auth_rows: u64,
    lifecycle_rows: u64,
    buffer_events: u64,
    buffer_live: Duration,
    explorer_rows: u64,
    explorer_loads: usize,
}

impl Cli {
    fn sizes(&self) -> Sizes {
        let q = self.quick;
        let secs = |v: Option<f64>, full: f64, quick: f64| {
            Duration::from_secs_f64(v.unwrap_or(if q { quick } else { full }).max(0.0))
        };
        Sizes {
            duration: secs(self.duration, 15.0, 2.0),
            warmup: secs(self.warmup, 3.0, 1.0),
            ceiling: secs(self.ceiling_duration, 10.0, 2.0),
            sqlite: secs(self.sqlite_duration, 10.0, 2.0),
            pool: secs(self.pool_duration, 30.0, 5.0),
            rows: self.rows.unwrap_or(if q { 100_000 } else { 1_000_000 }),
            verify_len: self.verify_len.unwrap_or(if q { 10_000 } else { 100_000 }),
            sqlite_verify_len: self.sqlite_verify_len.or(self.verify_len).unwrap_or(if q {
                10_000
            } else {
                100_000
            }),
            hold: secs(self.hold, 30.0, 5.0),
            large_bodies: self.large_bodies.unwrap_or(if q { 16 } else { 32 }).max(1),
            auth: secs(self.auth_duration, 10.0, 2.0),
            auth_rows: self.auth_rows.unwrap_or(if q { 20_000 } else { 200_000 }),
            lifecycle_rows: self
                .lifecycle_rows
                .unwrap_or(if q { 100_000 } else { 1_000_000 })
                .max(1),
            buffer_events: self
                .buffer_events
                .unwrap_or(if q { 20_000 } else { 100_000 })
                .max(1),
            buffer_live: secs(self.buffer_live, 10.0, 2.0),
            explorer_rows: self
                .explorer_rows
                .unwrap_or(if q { 100_000 } else { 1_000_000 })
                .max(2),
            explorer_loads: self.explorer_loads.unwrap_or(if q { 3 } else { 10 }).max(1),
        }
    }
}

/// One pool-exhaustion run: a fresh server on `cfg`, `writers` single-event writers for
/// `window`, no warm-up.
async fn pool_run(
    ctx: &Ctx,
    server_bin: &std::path::Path,
    cfg: &ServerConfig,
    db: &Db,
    postmaster: Option<u32>,
    writers: usize,
    window: Duration,
) -> Result<PoolRun> {
    let srv = Server::start(server_bin, cfg).await?;
    let probe = Probe {
        server: Some(srv.pid),
        postmaster,
    };
    db.try_sql(&["CHECKPOINT"]).await?;
    let s = ctx
        .scenario(
            &srv,
            probe,
            Work::Single,
            writers,
            Duration::ZERO,
            window,
            None,
        )
        .await;
    let run = PoolRun {
        max_open_conns: cfg.max_open_conns,
        writers,
        outcome: s.outcome,
        pool: s.pool,
        hwm_kib: srv.hwm_kib(),
        log_problems: srv.log_problems(),
    };
    srv.stop().await?;
    Ok(run)
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap_or_else(|_| PathBuf::from("."))
}

/// Progress on stderr, with the time since start.
struct Log(Instant);

impl Log {
    fn say(&self, msg: impl AsRef<str>) {
        eprintln!("[{:6.1}s] {}", self.0.elapsed().as_secs_f64(), msg.as_ref());
    }
}

/// Shared state of the run.
struct Ctx {
    log: Log,
    templates: Arc<Templates>,
    tck: f64,
    cids: u64,
}

impl Ctx {
    #[allow(clippy::too_many_arguments)]
    async fn scenario(
        &self,
        server: &Server,
        probe: Probe,
        work: Work,
        clients: usize,
        warmup: Duration,
        duration: Duration,
        table_rows: Option<i64>,
    ) -> Scenario {
        let m0 = server.metrics().await.unwrap_or_default();
        let plan = Plan {
            clients,
            warmup,
            duration,
            authorization: server.authorization.clone(),
        };
        let outcome = load::run(
            server.api,
            work,
            plan,
            &self.templates,
            self.cids,
            probe,
            self.tck,
        )
        .await;
        let m1 = server.metrics().await.unwrap_or_default();
        let s = Scenario {
            work,
            clients,
            outcome,
            pool: m1.minus(&m0).pool(),
            table_rows,
        };
        self.log.say(format!(
            "  {} @{}: {:.0}/s, p50 {:.2} ms, p99 {:.2} ms, errors {}",
            s.label(),
            clients,
            s.outcome.rate(),
            s.outcome.ms(0.5),
            s.outcome.ms(0.99),
            s.outcome.error_count()
        ));
        s
    }

    fn ceiling_done(&self, c: &Ceiling) {
        self.log.say(format!(
            "  ceiling {} ×{}: {:.0}/s (mean {:.2} ms)",
            c.name, c.clients, c.rate, c.latency_ms
        ));
    }
}

async fn verify_chain(addr: SocketAddr, cid: &str) -> String {
    let body = bytes::Bytes::from(format!(r#"{{"correlation_id":"{cid}"}}"#));
    match load::post(addr, "/api/v1/audit/verify-chain", body).await {
        Ok((s, b)) if s.is_success() => {
            let v: serde_json::Value = serde_json::from_slice(&b).unwrap_or_default();
            format!(
                "{cid}: is_valid={} ({} of {} events verified)",
                v["is_valid"], v["verified_events"], v["total_events"]
            )
        }
        Ok((s, b)) => format!("{cid}: HTTP {s}: {}", String::from_utf8_lossy(&b)),
        Err(e) => format!("{cid}: {e:#}"),
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let started = Instant::now();
    let ctx = Ctx {
        log: Log(started),
        templates: Arc::new(Templates::build()?),
        tck: sys::clk_tck(),
        cids: cli.cids.max(1),
    };
    let sz = cli.sizes();
    let repo = repo_root();
    let pg_bin = match &cli.pg_bin {
        Some(p) => p.clone(),
        None => datastorage_testkit::pg_bin()?,
    };
    let server_bin = cli
        .server_bin
        .clone()
        .unwrap_or_else(|| repo.join("target/release/datastorage"));
    ensure!(
        server_bin.exists(),
        "{} not found: run `cargo build --release -p datastorage-cli` (scripts/bench does)",
        server_bin.display()
    );
    // The server runs in its own folder, so a relative path would not resolve.
    let server_bin = server_bin.canonicalize()?;
    let mut run = Run {
        machine: MachineInfo::read(&pg_bin, &repo),
        mode: if cli.quick { "quick" } else { "full" }.to_owned(),
        ..Run::default()
    };

    // PostgreSQL.
    let cluster = match &cli.pg_url {
        Some(_) => None,
        None => {
            ctx.log.say("starting a throwaway PostgreSQL cluster");
            Some(TempCluster::try_start(
                &pg_bin,
                &[("max_connections", "200")],
                Durability::Stock,
            )?)
        }
    };
    let admin_url = match (&cli.pg_url, &cluster) {
        (Some(u), _) => u.clone(),
        (None, Some(c)) => c.admin_url(),
        (None, None) => unreachable!("a cluster starts when no URL is given"),
    };
    let db = Db::create_named(&admin_url, "datastorage_bench").await?;
    let postmaster = cluster.as_ref().and_then(TempCluster::postmaster_pid);
    let pg_settings = db
        .text(
            "SELECT string_agg(name || '=' || setting || coalesce(unit, ''), ', ' ORDER BY name) FROM pg_settings \
             WHERE name IN ('fsync','synchronous_commit','shared_buffers','max_connections','wal_level','full_page_writes','max_wal_size','checkpoint_timeout','work_mem')",
        )
        .await?;
    let data_fs = match &cluster {
        Some(c) => sys::fs_type(&c.data_dir()),
        None => "unknown (external server)".to_owned(),
    };
    run.facts.push((
        "PostgreSQL".to_owned(),
        match &cli.pg_url {
            Some(_) => "external (--pg-url); its CPU is not measured".to_owned(),
            None => format!("throwaway cluster, stock settings except listen_addresses=127.0.0.1, max_connections=200; data on {data_fs}"),
        },
    ));
    run.facts
        .push(("PostgreSQL settings".to_owned(), pg_settings));
    run.facts.push((
        "durations".to_owned(),
        format!(
            "server scenarios {:.0} s after {:.0} s warm-up; ceilings {:.0} s (+{:.0} s warm-up for INSERT/COPY, none for pgbench); SQLite {:.0} s; pool exhaustion {:.0} s",
            sz.duration.as_secs_f64(),
            sz.warmup.as_secs_f64(),
            sz.ceiling.as_secs_f64(),
            sz.warmup.as_secs_f64().min(2.0),
            sz.sqlite.as_secs_f64(),
            sz.pool.as_secs_f64()
        ),
    ));
    run.facts.push((
        "issue 12 parts".to_owned(),
        format!(
            "verify-chain on chains up to {} events (SQLite {}); a chain head held {:.0} s under single POST @{}; {} concurrent ~5 MiB batches at the default body budget and at {} MiB",
            sz.verify_len,
            sz.sqlite_verify_len,
            sz.hold.as_secs_f64(),
            cli.held_clients,
            sz.large_bodies,
            cli.large_budget_mib
        ),
    ));
    run.facts.push((
        "issue 13 part".to_owned(),
        format!(
            "single POST @{} with auth.mode none and tokens, query @{} with tokens and recordReads true and false, {:.0} s each after {:.0} s warm-up, on a table of at least {} rows",
            cli.auth_clients,
            cli.query_clients,
            sz.auth.as_secs_f64(),
            sz.warmup.as_secs_f64(),
            sz.auth_rows
        ),
    ));
    run.facts.push((
        "server config".to_owned(),
        format!(
            "release binary, generated config: maxOpenConns {}, maxIdleConns {} (other pool keys default), logging warn, auth.recordReads false outside the access-control part (its cost is measured there); {}",
            cli.max_open_conns,
            idle_conns(&cli).map_or("default (5)".to_owned(), |n| n.to_string()),
            server_bin.display()
        ),
    ));
    run.facts.push((
        "events".to_owned(),
        format!(
            "{} templates over all 14 categories, 19–24 fields, ~{} B event_data with a unique trace_id, correlation ids from a pool of {}, client UUIDv7 ids in half",
            events::TEMPLATES,
            events::EVENT_DATA_BYTES,
            ctx.cids
        ),
    ));

    // The scenarios of parts 1-3 measure the write and query paths themselves, so reads are not
    // recorded there; what recording them costs is part 8's (access control) measurement.
    let pg_cfg = ServerConfig {
        record_reads: Some(false),
        ..ServerConfig::new(
            Backend::Postgres {
                host: db.host.clone(),
                port: db.port,
                name: db.name.clone(),
                user: db.user.clone(),
                password: db.password.clone(),
            },
            cli.max_open_conns,
            idle_conns(&cli),
        )
    };
    // Chains `cid-0..n` the query scenario drew from, when it ran.
    let mut load_query_cids = None;
    if !cli.skip_load {
        ctx.log.say("starting the server on PostgreSQL");
        let srv = Server::start(&server_bin, &pg_cfg).await?;
        let probe = Probe {
            server: Some(srv.pid),
            postmaster,
        };
        let ceiling_probe = Probe {
            server: None,
            postmaster,
        };
        db.reset_ceiling_table().await?;
        let ceiling_secs = sz.ceiling.as_secs_f64().ceil().max(1.0) as u64;
        let ceiling_warmup = sz.warmup.min(Duration::from_secs(2));
        let insert_script = pg::pgbench_insert_script(&ctx.templates, ctx.cids)?;
        let rows_now = || async { db.scalar("SELECT count(*) FROM audit_events").await.ok() };

        // 1. Single events, each beside pgbench's prepared single-row INSERT.
        for clients in [1usize, 16, 64] {
            ctx.log.say(format!("single events, {clients} clients"));
            db.try_sql(&[&format!("TRUNCATE {}", pg::CEILING_TABLE), "CHECKPOINT"])
                .await?;
            let c = pg::pgbench(
                &pg_bin,
                &db,
                "pgbench prepared INSERT, 1 row/tx",
                &insert_script,
                clients,
                ceiling_secs,
                ceiling_probe,
                ctx.tck,
            )
            .await?;
            ctx.ceiling_done(&c);
            run.ceilings.push(c);
            db.try_sql(&["CHECKPOINT"]).await?;
            let rows = rows_now().await;
            let s = ctx
                .scenario(
                    &srv,
                    probe,
                    Work::Single,
                    clients,
                    sz.warmup,
                    sz.duration,
                    rows,
                )
                .await;
            run.pg.push(s);
        }

        // 2. Bulk: the ceiling, then the batch endpoint.
        ctx.log.say("bulk ceiling: multi-row INSERT and COPY");
        for method_streams in [
            (Method::MultiRow(100), 1),
            (Method::MultiRow(500), 1),
            (Method::MultiRow(500), 2),
            (Method::Copy(2000), 1),
            (Method::Copy(2000), 2),
        ] {
            db.try_sql(&[&format!("TRUNCATE {}", pg::CEILING_TABLE), "CHECKPOINT"])
                .await?;
            let c = pg::ceiling_write(
                &db,
                method_streams.0,
                method_streams.1,
                ceiling_warmup,
                sz.ceiling,
                &ctx.templates,
                ctx.cids,
                ceiling_probe,
                ctx.tck,
            )
            .await?;
            ctx.ceiling_done(&c);
            run.ceilings.push(c);
        }
        db.try_sql(&[&format!("TRUNCATE {}", pg::CEILING_TABLE), "CHECKPOINT"])
            .await?;
        for n in [100usize, 500, 1000] {
            for clients in [4usize, 16] {
                ctx.log.say(format!("batch of {n}, {clients} clients"));
                db.try_sql(&["CHECKPOINT"]).await?;
                let rows = rows_now().await;
                let s = ctx
                    .scenario(
                        &srv,
                        probe,
                        Work::Batch(n),
                        clients,
                        sz.warmup,
                        sz.duration,
                        rows,
                    )
                    .await;
                run.pg.push(s);
            }
        }

        // 3. Query table: top up with real chains, then SELECT ceiling and the query endpoint.
        let existing = db.scalar("SELECT count(*) FROM audit_events").await?;
        let need = sz.rows.saturating_sub(existing.max(0) as u64);
        let mut seeded_chains = 0;
        if need > 0 {
            ctx.log.say(format!(
                "seeding {need} rows ({existing} written by the scenarios) as chains of {}",
                cli.chain_len
            ));
            let t = Instant::now();
            seeded_chains = pg::seed(&db, &ctx.templates, ctx.cids, need, cli.chain_len).await?;
            run.notes.push(format!(
            "Query table: {existing} rows written through the API by the scenarios above, plus {} rows seeded by COPY in {:.1} s as {seeded_chains} chains of {} with hashes computed by datastorage-api's chain::chain_hash (correlation ids cid-{}..cid-{}).",
            seeded_chains * cli.chain_len as u64,
            t.elapsed().as_secs_f64(),
            cli.chain_len,
            ctx.cids,
            ctx.cids + seeded_chains - 1
        ));
        } else {
            run.notes.push(format!(
            "Query table: {existing} rows, all written through the API by the scenarios above; nothing seeded."
        ));
        }
        // Vacuum now, before either side measures: a freshly loaded table otherwise crosses the
        // autovacuum insert threshold while the second of the two query workloads runs, and that
        // one pays for the vacuum's CPU.
        ctx.log.say("VACUUM (ANALYZE) audit_events");
        db.try_sql(&["VACUUM (ANALYZE) audit_events", "CHECKPOINT"])
            .await?;
        let total_rows = db.scalar("SELECT count(*) FROM audit_events").await?;
        let query_cids = ctx.cids + seeded_chains;
        load_query_cids = Some(query_cids);
        let mut verified = vec![verify_chain(srv.api, "cid-0").await];
        if seeded_chains > 0 {
            verified.push(verify_chain(srv.api, &events::cid(ctx.cids)).await);
        }
        run.notes.push(format!(
            "Chain verification through the server after seeding: {}.",
            verified.join("; ")
        ));
        if sz.rows > 100_000 || cli.quick {
            run.notes.push(format!(
                "The query scenario ran on {total_rows} rows{}.",
                if cli.quick {
                    " (--quick: 100 k target, not the 1 M of a full run)"
                } else {
                    ""
                }
            ));
        }
        ctx.log.say(format!("query scenario on {total_rows} rows"));
        let c = pg::pgbench(
            &pg_bin,
            &db,
            "pgbench prepared SELECT by correlation_id, LIMIT 51",
            &pg::pgbench_select_script(query_cids),
            cli.query_clients,
            ceiling_secs,
            ceiling_probe,
            ctx.tck,
        )
        .await?;
        ctx.ceiling_done(&c);
        run.ceilings.push(c);
        let s = ctx
            .scenario(
                &srv,
                probe,
                Work::Query(query_cids),
                cli.query_clients,
                sz.warmup,
                sz.duration,
                Some(total_rows),
            )
            .await;
        run.pg.push(s);
        run.pg_hwm_kib = srv.hwm_kib();
        let problems = srv.log_problems();
        if !problems.is_empty() {
            run.notes.push(format!(
                "The PostgreSQL-backed server logged {} warning/error lines; first: `{}`",
                problems.len(),
                problems[0].replace('`', "'")
            ));
        }
        srv.stop().await?;
    } else {
        run.notes.push("--skip-load: the single, batch and query scenarios and the PostgreSQL ceiling did not run.".to_owned());
    }

    // 4. Pool exhaustion.
    if !cli.skip_pool {
        ctx.log.say(format!(
            "pool exhaustion: maxOpenConns {}, {} writers",
            cli.pool_max_open_conns, cli.pool_writers
        ));
        let cfg = ServerConfig {
            max_open_conns: cli.pool_max_open_conns,
            max_idle_conns: None,
            ..pg_cfg.clone()
        };
        let p = pool_run(
            &ctx,
            &server_bin,
            &cfg,
            &db,
            postmaster,
            cli.pool_writers,
            sz.pool,
        )
        .await?;
        ctx.log.say(format!(
            "  pool waits {:.0}, mean wait {:.2} ms, acquire timeouts {:.0}",
            p.pool.waits,
            p.pool.mean_wait_ms(),
            p.pool.timeouts
        ));
        run.pool = Some(p);
    }

    // 4b. The same writers through PgBouncer in transaction mode: as many client connections
    // as writers, a few server connections.
    if !cli.skip_pgbouncer {
        let writers = cli.pool_writers;
        ctx.log.say(format!(
            "pool exhaustion through PgBouncer: {writers} writers, maxOpenConns {writers}, default_pool_size {}",
            cli.pgbouncer_pool_size
        ));
        let bouncer = datastorage_testkit::PgBouncer::start(
            &db,
            &datastorage_testkit::BouncerSettings {
                pool_size: cli.pgbouncer_pool_size,
                max_client_conn: (writers as u32 + 50).max(100),
                ..Default::default()
            },
        );
        let cfg = ServerConfig {
            backend: Backend::Postgres {
                host: "127.0.0.1".to_owned(),
                port: bouncer.port,
                name: db.name.clone(),
                user: db.user.clone(),
                password: db.password.clone(),
            },
            max_open_conns: writers as u32,
            max_idle_conns: Some(writers as u32),
            database_yaml: Some(format!(
                "  pooler: pgbouncer\n  migrationHost: \"{}\"\n  migrationPort: {}\n",
                db.host, db.port
            )),
            ..pg_cfg.clone()
        };
        let p = pool_run(&ctx, &server_bin, &cfg, &db, postmaster, writers, sz.pool).await?;
        // PgBouncer keeps its server connections after the service's clients left.
        let backends = db
            .scalar("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND backend_type = 'client backend' AND application_name = 'datastorage'")
            .await
            .ok();
        ctx.log.say(format!(
            "  {:.0} events/s, {} errors; PostgreSQL backends of the service after the run: {}",
            p.outcome.rate(),
            p.outcome.errors.values().sum::<u64>(),
            backends.map_or_else(|| "unknown".to_owned(), |n| n.to_string())
        ));
        run.pgbouncer = Some(PgBouncerRun {
            pool_size: cli.pgbouncer_pool_size,
            server_backends: backends,
            run: p,
        });
        drop(bouncer);
    }

    // 5. Chain verification on PostgreSQL: a fresh server (started first, so the schema
    // exists even when nothing ran before), chains seeded by COPY while it idles.
    if !cli.skip_verify && sz.verify_len > 0 {
        ctx.log
            .say("chain verification on a fresh PostgreSQL-backed server");
        let srv = Server::start(&server_bin, &pg_cfg).await?;
        let lens = verify::chain_lengths(sz.verify_len);
        let chains: Vec<(u64, String)> = lens
            .iter()
            .map(|&n| (n, events::cid(VERIFY_CID_BASE + n)))
            .collect();
        ctx.log.say(format!(
            "chain verification: seeding chains of {} events by COPY",
            lens.iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ));
        let t = Instant::now();
        for &n in &lens {
            pg::seed(&db, &ctx.templates, VERIFY_CID_BASE + n, n, n as i64).await?;
        }
        let seeding = format!(
            "seeded by COPY straight into PostgreSQL in {:.1} s, hashes computed by datastorage-api's chain::chain_hash (the query table's seeder)",
            t.elapsed().as_secs_f64()
        );
        db.try_sql(&["ANALYZE audit_events", "CHECKPOINT"]).await?;
        let v = verify::measure(&srv, &chains, "PostgreSQL", seeding, |m| ctx.log.say(m)).await;
        srv.stop().await?;
        run.verify.push(v);
    }

    // 6. A held chain.
    if !cli.skip_held {
        let wait_limit = sz.hold + Duration::from_secs(20);
        ctx.log.say(format!(
            "held chain: lockTimeout, statementTimeout and writeTimeout {:.0} s",
            wait_limit.as_secs_f64()
        ));
        let cfg = ServerConfig {
            wait_limit: Some(wait_limit),
            ..pg_cfg.clone()
        };
        let srv = Server::start(&server_bin, &cfg).await?;
        let probe = Probe {
            server: Some(srv.pid),
            postmaster,
        };
        let h = held::run(
            &ctx,
            &srv,
            &db,
            probe,
            sz.hold,
            sz.warmup,
            wait_limit,
            cli.held_clients.max(1),
            cli.held_writes,
            cli.max_open_conns,
        )
        .await?;
        ctx.log.say(format!(
            "  p99 held ÷ p99 nothing held: {}; held-chain writes: {}",
            h.p99_ratio().map_or("–".to_owned(), |r| format!("{r:.2}")),
            report::held_replies(&h)
        ));
        srv.stop().await?;
        run.held = Some(h);
    }

    // 7. Concurrent large bodies, at the default body budget and at a large one.
    if !cli.skip_bodies {
        for budget in [None, Some(cli.large_budget_mib.max(5) << 20)] {
            ctx.log.say(format!(
                "large bodies: {} × {} events, ~{:.1} MiB each, at once; maxInFlightBodyBytes {}",
                sz.large_bodies,
                bodies::EVENTS_PER_BODY,
                bodies::BODY_BYTES as f64 / 1048576.0,
                budget.map_or("default (64 MiB)".to_owned(), |b| format!(
                    "{} MiB",
                    b >> 20
                ))
            ));
            let r = bodies::round(&ctx, &server_bin, &pg_cfg, &db, budget, sz.large_bodies).await?;
            ctx.log.say(format!(
                "  {:.2} s, {}, peak RSS {:.1} MiB ({:+.1} over idle {:.1})",
                r.wall,
                report::replies(&r.replies),
                r.mem.peak_kib as f64 / 1024.0,
                r.above_idle_mib(),
                r.idle_kib as f64 / 1024.0
            ));
            run.bodies.push(r);
        }
    }

    // 8. Access control: writes without and with a token, queries with and without records.
    if !cli.skip_auth {
        let a = auth::run(
            &ctx,
            &server_bin,
            &pg_cfg,
            &db,
            postmaster,
            auth::Opts {
                warmup: sz.warmup,
                duration: sz.auth,
                rows: sz.auth_rows,
                clients: cli.auth_clients.max(1),
                query_clients: cli.query_clients.max(1),
                chain_len: cli.chain_len,
                query_cids: load_query_cids,
            },
        )
        .await?;
        let ratio =
            |x: &Scenario, base: &Scenario| x.outcome.rate() / base.outcome.rate().max(1e-9);
        ctx.log.say(format!(
            "  tokens ÷ none: {:.2} events/s; recordReads true ÷ false: {:.2} queries/s; without a token: {}",
            ratio(&a.write_tokens, &a.write_none),
            ratio(&a.query_recorded, &a.query_unrecorded),
            a.without_token
        ));
        run.auth = Some(a);
    }

    // 10. The audit lifecycle (opt-in), each step on its own database.
    if cli.lifecycle {
        run.facts.push((
            "issue 15 part".to_owned(),
            format!(
                "migration of an unpartitioned table of {} rows, its NDJSON export, purges dropping daily partitions at {} rows",
                sz.lifecycle_rows,
                if sz.lifecycle_rows > lifecycle::PURGE_SMALL {
                    format!("{} and {}", lifecycle::PURGE_SMALL, sz.lifecycle_rows)
                } else {
                    sz.lifecycle_rows.to_string()
                }
            ),
        ));
        let l = lifecycle::run(
            &ctx,
            &server_bin,
            &pg_cfg,
            &admin_url,
            postmaster,
            lifecycle::Opts {
                rows: sz.lifecycle_rows,
            },
        )
        .await;
        run.lifecycle = Some(lifecycle::markdown(&l));
    }

    // 12. The explorer (opt-in), on databases of its own in the same cluster.
    if cli.explorer {
        run.facts.push((
            "issue 19 part".to_owned(),
            format!(
                "explorer: {} seeded rows over the last {} days, {} timed Chromium loads per view, {} timed calls per API request, single POST @{} for {:.0} s (+{:.0} s warm-up) without, with {} stream subscribers of every event, with as many of no write, and without again",
                sz.explorer_rows,
                explorer::SEED_DAYS,
                sz.explorer_loads,
                cli.explorer_calls.max(1),
                cli.explorer_clients.max(1),
                sz.duration.as_secs_f64(),
                sz.warmup.as_secs_f64(),
                cli.explorer_subscribers.max(1)
            ),
        ));
        let x = explorer::run(
            &ctx,
            &server_bin,
            &pg_cfg,
            &admin_url,
            postmaster,
            explorer::Opts {
                rows: sz.explorer_rows,
                chain_len: cli.chain_len.max(1),
                loads: sz.explorer_loads,
                calls: cli.explorer_calls.max(1),
                clients: cli.explorer_clients.max(1),
                subscribers: cli.explorer_subscribers.max(1),
                warmup: sz.warmup,
                duration: sz.duration,
                chromedriver: cli.chromedriver.clone(),
                chromium: cli.chromium.clone(),
            },
        )
        .await;
        run.explorer = Some(explorer::markdown(&x));
    }
    drop(cluster);

    // 11. The outage buffer (opt-in), on throwaway clusters of its own that it stops.
    if cli.buffer {
        run.facts.push((
            "issue 16 part".to_owned(),
            format!(
                "outage buffer, backends {}: {} events in batches of {} from {} writers per outage, replayRate default ({}) and {}, single POST @{} for {:.0} s (+{:.0} s warm-up) with and without a replay",
                cli.buffer_backends
                    .iter()
                    .map(|b| b.name())
                    .collect::<Vec<_>>()
                    .join(", "),
                sz.buffer_events,
                buffer::BATCH,
                cli.buffer_writers.max(1),
                buffer::DEFAULT_RATE,
                cli.buffer_high_rate.max(1),
                cli.buffer_live_clients.max(1),
                sz.buffer_live.as_secs_f64(),
                sz.warmup.as_secs_f64()
            ),
        ));
        let b = buffer::run(
            &ctx,
            &pg_bin,
            &server_bin,
            &pg_cfg,
            buffer::Opts {
                events: sz.buffer_events,
                writers: cli.buffer_writers.max(1),
                stores: cli.buffer_backends.clone(),
                high_rate: cli.buffer_high_rate.max(1),
                live_clients: cli.buffer_live_clients.max(1),
                live_warmup: sz.warmup,
                live: sz.buffer_live,
            },
        )
        .await;
        run.buffer = Some(buffer::markdown(&b));
    }

    // 9. SQLite.
    if !cli.skip_sqlite {
        ctx.log.say("SQLite: single and batch scenarios");
        let dir = tempfile::Builder::new()
            .prefix("ds-bench-sqlite-")
            .tempdir()?;
        let cfg = ServerConfig::new(
            Backend::Sqlite(dir.path().join("bench.db")),
            cli.max_open_conns,
            idle_conns(&cli),
        );
        let srv = Server::start(&server_bin, &cfg).await?;
        let probe = Probe {
            server: Some(srv.pid),
            postmaster: None,
        };
        let warm = sz.warmup.min(Duration::from_secs(2));
        for clients in [1usize, 16, 64] {
            let s = ctx
                .scenario(&srv, probe, Work::Single, clients, warm, sz.sqlite, None)
                .await;
            run.sqlite.push(s);
        }
        for n in [100usize, 500, 1000] {
            for clients in [4usize, 16] {
                let s = ctx
                    .scenario(&srv, probe, Work::Batch(n), clients, warm, sz.sqlite, None)
                    .await;
                run.sqlite.push(s);
            }
        }
        run.sqlite_hwm_kib = srv.hwm_kib();
        srv.stop().await?;

        // Chain verification on SQLite: its own file, chains written through the batch
        // endpoint, then a restarted server so the idle figure owes nothing to the writes.
        if !cli.skip_verify && sz.sqlite_verify_len > 0 {
            let lens = verify::chain_lengths(sz.sqlite_verify_len);
            let cfg = ServerConfig::new(
                Backend::Sqlite(dir.path().join("verify.db")),
                cli.max_open_conns,
                idle_conns(&cli),
            );
            ctx.log.say(format!(
                "SQLite chain verification: writing chains of {} events through the batch endpoint",
                lens.iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            let srv = Server::start(&server_bin, &cfg).await?;
            let mut gen = events::Gen::new(ctx.templates.clone(), 1, 0x5e1f);
            let t = Instant::now();
            let mut chains = Vec::new();
            for &n in &lens {
                let cid = events::cid(VERIFY_CID_BASE + n);
                verify::seed_through_api(srv.api, &mut gen, &cid, n, VERIFY_SEED_BATCH).await?;
                chains.push((n, cid));
            }
            let seeding = format!(
                "written through POST /api/v1/audit/events/batch, {VERIFY_SEED_BATCH} events per request, one request at a time, in {:.1} s ({:.0} events/s); the server was then restarted",
                t.elapsed().as_secs_f64(),
                lens.iter().sum::<u64>() as f64 / t.elapsed().as_secs_f64().max(1e-9)
            );
            srv.stop().await?;
            ctx.log
                .say("SQLite chain verification on the restarted server");
            let srv = Server::start(&server_bin, &cfg).await?;
            let v = verify::measure(&srv, &chains, "SQLite", seeding, |m| ctx.log.say(m)).await;
            srv.stop().await?;
            run.verify.push(v);
        }
    }

    run.elapsed = started.elapsed().as_secs_f64();
    let md = report::markdown(&run);
    println!("{md}");
    if let Some(path) = &cli.out {
        std::fs::write(path, &md).with_context(|| format!("cannot write {}", path.display()))?;
        ctx.log.say(format!("wrote {}", path.display()));
    }
    Ok(())
}
