//! The explorer (issue 19) on PostgreSQL, on databases of its own in the run's cluster:
//! 1. the search page's first result: `rows` real chained events seeded by COPY into the
//!    partitioned table (chains of `chain_len` whose starts are spread over the last
//!    [`SEED_DAYS`] days, and one chain of [`LONG_CHAIN`] events within the last day), the
//!    release server on it, then Chromium (headless, driven over WebDriver by chromedriver)
//!    loading `/ui/` views, each timed inside the page from navigation start to the first
//!    result row in the document;
//! 2. the API calls those views make, each timed one after another on one keep-alive
//!    connection after a few untimed ones;
//! 3. on a fresh database and server (a chain seeded for every correlation id the load
//!    draws from), the harness's single-event load four times: without stream subscribers,
//!    with `subscribers` subscribers of `GET /api/v1/audit/events/stream` (plain streaming
//!    GETs, each on its own connection, counting what they receive), with as many whose filter
//!    matches no write (held, never sent to), and without again, so the two runs without
//!    bracket the others and their spread is the noise.
//!
//! The harness's database connections are the test kit's ([`Db`]); chromedriver, Chromium, the
//! server and PostgreSQL are reached on loopback only. Every wait is bounded, and chromedriver
//! (with its Chromium) is ended by the harness that started it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, ClientBuilder};
use hdrhistogram::Histogram;
use http_body_util::{BodyExt as _, Empty};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::sync::watch;

use datastorage_testkit::free_port;

use crate::events;
use crate::load::{Conn, Work, REQUEST_TIMEOUT};
use crate::pg::{self, Db, DbExt as _, Spread};
use crate::report::Scenario;
use crate::server::{Backend, Server, ServerConfig};
use crate::sys::{CpuSnap, CpuUse, MemPeak, MemWatch, Probe};
use crate::Ctx;

/// Length of the long chain the timeline view shows: the page's cap (`timeline.js`, `CAP`),
/// fetched in [`TIMELINE_PAGE`]-event pages.
pub const LONG_CHAIN: u64 = 10_000;
/// The long chain is `cid-<LONG_CID>`, apart from the others (`cid-0..`).
const LONG_CID: u64 = 950_000_000;
/// Days the seeded chains' starts are spread over, ending now.
pub const SEED_DAYS: i64 = 7;
/// Hours before now the long chain begins (its events follow 1.5 s apart: about 4.2 h).
const LONG_CHAIN_HOURS: i64 = 20;
/// The category of the filtered search.
pub const CATEGORY: &str = "workflow";
/// The search page's page size (`search.js`, `PAGE`).
pub const SEARCH_PAGE: u32 = 50;
/// The timeline's page size (`timeline.js`, `PAGE`).
pub const TIMELINE_PAGE: u32 = 1000;
/// A result row of the search view.
const SEARCH_ROW: &str = "#results tbody tr[data-event-id]";
/// A row of the timeline's list.
const TIMELINE_ROW: &str = "#timeline-list [data-seq]";
/// What the views' event requests begin with (the stream's path does not match).
const EVENTS_API: &str = "/api/v1/audit/events?";
/// The stream (without filters: every committed event).
const STREAM_PATH: &str = "/api/v1/audit/events/stream";
/// A correlation id no write of the load uses: the filter of the subscribers that receive
/// nothing, to tell holding subscriptions from delivering to them.
pub const UNMATCHED_CID: &str = "explorer-unmatched";
/// Untimed calls before each API request's timed ones.
pub const WARMUP_CALLS: usize = 5;
/// The database of the search part.
const SEARCH_DB: &str = "datastorage_bench_explorer";
/// The database of the stream part.
const STREAM_DB: &str = "datastorage_bench_explorer_stream";
/// Length of the chains seeded for the stream part, one per correlation id of the load.
const STREAM_CHAIN_LEN: i64 = 5;
/// The server's default `explorer.streamMaxSubscribers`.
const DEFAULT_MAX_SUBSCRIBERS: usize = 256;
/// Longest wait for one page load's first row.
const LOAD_LIMIT: Duration = Duration::from_secs(30);
/// How often the harness asks the page whether the row is there.
const POLL: Duration = Duration::from_millis(10);
/// Longest wait for a WebDriver session.
const SESSION_LIMIT: Duration = Duration::from_secs(30);
/// Longest wait for every subscriber to be counted by the server.
const SUBSCRIBE_LIMIT: Duration = Duration::from_secs(30);
/// Longest wait, after the load, for the subscribers to have every event.
const SETTLE_LIMIT: Duration = Duration::from_secs(10);

/// Sizes of the part.
#[derive(Debug, Clone)]
pub struct Opts {
    /// Rows of the search table, the long chain included.
    pub rows: u64,
    /// Length of the other seeded chains.
    pub chain_len: i64,
    /// Timed page loads per view (after one that is not counted).
    pub loads: usize,
    /// Timed calls per API request.
    pub calls: usize,
    /// Clients of the single-event load.
    pub clients: usize,
    /// Stream subscribers during the second load run.
    pub subscribers: usize,
    /// Warm-up of each load run.
    pub warmup: Duration,
    /// Measured window of each load run.
    pub duration: Duration,
    /// chromedriver.
    pub chromedriver: PathBuf,
    /// Chromium.
    pub chromium: PathBuf,
}

/// The seeded search table.
#[derive(Debug, Clone, Default)]
pub struct Table {
    /// Rows in `audit_events`.
    pub rows: i64,
    /// Of which with `event_timestamp` in the last 24 h.
    pub rows_24h: i64,
    /// Of which also in [`CATEGORY`].
    pub rows_24h_category: i64,
    /// Chains of `chain_len` seeded.
    pub chains: u64,
    /// Their length.
    pub chain_len: i64,
    /// The long chain's correlation id.
    pub long_cid: String,
    /// Its events.
    pub long_len: u64,
    /// A seeded chain within the last 24 h (the search by correlation id).
    pub search_cid: String,
    /// Seconds of the COPY.
    pub seed_seconds: f64,
    /// Seconds of `VACUUM (ANALYZE)` and `CHECKPOINT` after it.
    pub vacuum_seconds: f64,
    /// The partitions, with their bounds.
    pub partitions: String,
    /// Total size of the partitions, bytes.
    pub bytes: i64,
    /// verify-chain on the long chain and on one other.
    pub verified: Vec<String>,
}

/// One page load, times in ms from the navigation's start (`performance.timeOrigin`).
#[derive(Debug, Clone, Default)]
pub struct PageLoad {
    /// When the page's observer saw the first row in the document.
    pub dom_ms: Option<f64>,
    /// When a task queued by the first animation frame after it ran (the frame painted).
    pub frame_ms: Option<f64>,
    /// When the first events request started (Resource Timing `startTime`).
    pub first_request_ms: Option<f64>,
    /// When the last events request before the row finished (`responseEnd`).
    pub last_response_ms: Option<f64>,
    /// Events requests before the row.
    pub requests: u32,
    /// Harness clock: `goto` sent → the poll that saw the row, ms.
    pub wall_ms: f64,
    /// Why the load has no time, if so.
    pub error: Option<String>,
}

/// One view, loaded again and again.
#[derive(Debug, Clone, Default)]
pub struct ViewRun {
    /// What it shows.
    pub name: String,
    /// Its `/ui/` path and query.
    pub path: String,
    /// The element waited for.
    pub selector: String,
    /// The load before the timed ones (a fresh browser profile for the first view).
    pub first: Option<PageLoad>,
    /// The timed loads.
    pub loads: Vec<PageLoad>,
}

impl ViewRun {
    /// Values of `f` over the timed loads that have one, sorted.
    pub fn sorted(&self, f: impl Fn(&PageLoad) -> Option<f64>) -> Vec<f64> {
        let mut v: Vec<f64> = self.loads.iter().filter_map(f).collect();
        v.sort_by(f64::total_cmp);
        v
    }
}

/// The median and the largest of sorted values.
pub fn p50_max(sorted: &[f64]) -> Option<(f64, f64)> {
    let n = sorted.len();
    if n == 0 {
        return None;
    }
    let p50 = if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    };
    Some((p50, sorted[n - 1]))
}

/// One API request, called again and again.
#[derive(Debug, Clone)]
pub struct ApiRun {
    /// Path and query.
    pub path: String,
    /// Which view sends it.
    pub used_for: String,
    /// The answer's total (`pagination.total`, or the stats' `total`).
    pub matches: Option<u64>,
    /// Items in the answer (events, or stats buckets).
    pub items: Option<usize>,
    /// Bytes of the answer's body.
    pub bytes: usize,
    /// Latency of the timed calls answered 2xx, µs.
    pub hist: Histogram<u64>,
    /// Failures of any call by kind.
    pub errors: BTreeMap<String, u64>,
}

/// The stream's subscribers over one load run.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The subscribers' query string (`None`: no filter, every event).
    pub filter: Option<String>,
    /// Events each subscriber should receive: every row the load added, or none when the
    /// filter matches none of them.
    pub expected: u64,
    /// Subscribers started.
    pub started: usize,
    /// Their answers by status (`200`, `503`, `transport`).
    pub answers: BTreeMap<String, u64>,
    /// Seconds until the server's `datastorage_stream_subscribers` read `started`.
    pub gauge_after: Option<f64>,
    /// `: subscribed` seen by this many.
    pub subscribed: usize,
    /// Fewest `audit_event` messages one subscriber received.
    pub received_min: u64,
    /// Most.
    pub received_max: u64,
    /// `lagged` messages, all subscribers.
    pub lagged_messages: u64,
    /// Events they said were missed, all subscribers.
    pub missed: u64,
    /// Subscribers whose received + missed events equal `expected`.
    pub complete: usize,
    /// Seconds after the load until every subscriber had them (or the wait ended).
    pub settle_seconds: f64,
    /// Δ `datastorage_stream_lagged_events_total`.
    pub lagged_metric: f64,
    /// Δ `datastorage_stream_dropped_events_total`.
    pub dropped_metric: f64,
    /// Δ `datastorage_stream_refused_subscriptions_total`.
    pub refused_metric: f64,
    /// Event sent (its `event_timestamp`, set by the load generator as it builds the request)
    /// → received by subscriber 0, µs.
    pub latency: Histogram<u64>,
    /// What went wrong on the way (first few).
    pub errors: Vec<String>,
}

/// One load run.
#[derive(Debug, Clone)]
pub struct Window {
    /// What ran beside it.
    pub label: String,
    /// The load.
    pub scenario: Scenario,
    /// The server's memory over the load run (warm-up included).
    pub mem: MemPeak,
    /// Rows before the load run.
    pub rows_before: i64,
    /// Rows after it.
    pub rows_after: i64,
    /// The subscribers, for the run with them.
    pub delivery: Option<Delivery>,
}

impl Window {
    /// Rows the load run added (warm-up included).
    pub fn added(&self) -> i64 {
        self.rows_after - self.rows_before
    }
}

/// The whole part.
#[derive(Debug, Clone)]
pub struct ExplorerRun {
    /// Sizes.
    pub opts: Opts,
    /// The search table.
    pub table: Option<Table>,
    /// `chromium --version`, `chromedriver --version`.
    pub browser: String,
    /// Whether the row observer was installed in every page (Chrome DevTools
    /// `Page.addScriptToEvaluateOnNewDocument`); without it only the harness's clock times.
    pub observer: bool,
    /// Each view.
    pub views: Vec<ViewRun>,
    /// CPU over all page loads (Chromium is in *other load*).
    pub browser_cpu: CpuUse,
    /// Each API request.
    pub api: Vec<ApiRun>,
    /// CPU over all API calls.
    pub api_cpu: CpuUse,
    /// How the stream part's table was filled before its runs.
    pub stream_table: Option<String>,
    /// The load runs, in order.
    pub windows: Vec<Window>,
    /// Steps that failed, with why.
    pub failures: Vec<String>,
    /// Warnings and errors each server logged, by message, with their counts.
    pub log_problems: Vec<(String, Vec<(usize, String)>)>,
    /// Load average when the part began.
    pub loadavg: String,
    /// Seconds the part took.
    pub seconds: f64,
}

/// Throughput with subscribers against the runs without.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Comparison {
    /// The runs without: mean events/s.
    pub without_mean: f64,
    /// |first − second| ÷ their mean.
    pub noise: f64,
    /// With ÷ the mean without.
    pub ratio: f64,
}

impl Comparison {
    /// Whether the ratio is within the noise: |1 − ratio| ≤ noise.
    pub fn within_noise(&self) -> bool {
        (1.0 - self.ratio).abs() <= self.noise
    }
}

impl ExplorerRun {
    /// With subscribers of every event against the two runs without.
    pub fn comparison(&self) -> Option<Comparison> {
        self.compare(|d| d.filter.is_none())
    }

    /// With subscribers whose filter matches no write against the two runs without.
    pub fn unmatched_comparison(&self) -> Option<Comparison> {
        self.compare(|d| d.filter.is_some())
    }

    /// The first run whose subscribers meet `pick` against the two runs without.
    fn compare(&self, pick: impl Fn(&Delivery) -> bool) -> Option<Comparison> {
        let rate = |w: &Window| w.scenario.outcome.rate();
        let without: Vec<f64> = self
            .windows
            .iter()
            .filter(|w| w.delivery.is_none())
            .map(rate)
            .collect();
        let with = self
            .windows
            .iter()
            .find(|w| w.delivery.as_ref().is_some_and(&pick))
            .map(rate)?;
        let [a, b] = without[..] else { return None };
        let mean = (a + b) / 2.0;
        (mean > 0.0).then(|| Comparison {
            without_mean: mean,
            noise: (a - b).abs() / mean,
            ratio: with / mean,
        })
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The first line `bin --version` prints, or why not.
fn version(bin: &Path) -> String {
    match Command::new(bin).arg("--version").output() {
        Ok(o) => String::from_utf8_lossy(&o.stdout)
            .lines()
            .next()
            .unwrap_or("?")
            .trim()
            .to_owned(),
        Err(e) => format!("{} ({e})", bin.display()),
    }
}

/// `base` on `db`, with `explorer.streamMaxSubscribers` raised when `subscribers` needs it.
fn config_on(base: &ServerConfig, db: &Db, subscribers: usize) -> ServerConfig {
    ServerConfig {
        backend: Backend::Postgres {
            host: db.host.clone(),
            port: db.port,
            name: db.name.clone(),
            user: db.user.clone(),
            password: db.password.clone(),
        },
        extra_yaml: (subscribers > DEFAULT_MAX_SUBSCRIBERS)
            .then(|| format!("explorer:\n  streamMaxSubscribers: {subscribers}\n")),
        ..base.clone()
    }
}

/// Runs the part on databases created through `admin_url` (dropped afterwards).
pub async fn run(
    ctx: &Ctx,
    server_bin: &Path,
    base: &ServerConfig,
    admin_url: &str,
    postmaster: Option<u32>,
    o: Opts,
) -> ExplorerRun {
    let started = Instant::now();
    let mut run = ExplorerRun {
        opts: o.clone(),
        table: None,
        browser: format!("{}; {}", version(&o.chromium), version(&o.chromedriver)),
        observer: false,
        views: Vec::new(),
        browser_cpu: CpuUse::default(),
        api: Vec::new(),
        api_cpu: CpuUse::default(),
        stream_table: None,
        windows: Vec::new(),
        failures: Vec::new(),
        log_problems: Vec::new(),
        loadavg: loadavg(),
        seconds: 0.0,
    };
    if let Err(e) = search_part(ctx, server_bin, base, admin_url, postmaster, &o, &mut run).await {
        ctx.log
            .say(format!("  explorer: search part failed: {e:#}"));
        run.failures.push(format!("search part: {e:#}"));
    }
    Db::drop_named(admin_url, SEARCH_DB).await;
    if let Err(e) = stream_part(ctx, server_bin, base, admin_url, postmaster, &o, &mut run).await {
        ctx.log
            .say(format!("  explorer: stream part failed: {e:#}"));
        run.failures.push(format!("stream part: {e:#}"));
    }
    Db::drop_named(admin_url, STREAM_DB).await;
    if let Some(c) = run.comparison() {
        ctx.log.say(format!(
            "  explorer: with subscribers ÷ without: {:.3} (noise between the runs without: {:.3}; {})",
            c.ratio,
            c.noise,
            if c.within_noise() { "within it" } else { "outside it" }
        ));
    }
    run.seconds = started.elapsed().as_secs_f64();
    run
}

/// Seeds the search table on a server that migrated it.
/// Chains of `chain_len` whose starts spread over the last [`SEED_DAYS`] days, the last one
/// ending a minute before `now` (its events 1.5 s apart, plus up to 1 s).
fn over_days(now: DateTime<Utc>, chain_len: i64) -> Spread {
    let chain_secs = chain_len * 3 / 2 + 1;
    Spread {
        from: now - chrono::Duration::days(SEED_DAYS),
        span: chrono::Duration::days(SEED_DAYS) - chrono::Duration::seconds(chain_secs + 60),
    }
}

async fn seed(ctx: &Ctx, db: &Db, o: &Opts) -> Result<Table> {
    let long_len = LONG_CHAIN.min(o.rows / 2).max(1);
    let chain_len = o.chain_len.max(1);
    let others = o.rows.saturating_sub(long_len);
    let now = Utc::now();
    let spread = over_days(now, chain_len);
    ctx.log.say(format!(
        "explorer: seeding {others} rows as chains of {chain_len} over the last {SEED_DAYS} days, and a chain of {long_len} in the last day"
    ));
    let t = Instant::now();
    let chains = pg::seed_spread(db, &ctx.templates, 0, others, chain_len, spread).await?;
    let long_start = now - chrono::Duration::hours(LONG_CHAIN_HOURS);
    pg::seed_spread(
        db,
        &ctx.templates,
        LONG_CID,
        long_len,
        long_len as i64,
        Spread::at(long_start),
    )
    .await?;
    let seed_seconds = t.elapsed().as_secs_f64();
    let t = Instant::now();
    db.try_sql(&["VACUUM (ANALYZE) audit_events", "CHECKPOINT"])
        .await?;
    let vacuum_seconds = t.elapsed().as_secs_f64();
    // A chain about half a day old: inside `since=24h`.
    let search_chain = chains.saturating_sub(chains / (2 * SEED_DAYS as u64));
    let table = Table {
        rows: db.scalar("SELECT count(*) FROM audit_events").await?,
        rows_24h: db
            .scalar("SELECT count(*) FROM audit_events WHERE event_timestamp >= now() - interval '24 hours'")
            .await?,
        rows_24h_category: db
            .scalar(&format!(
                "SELECT count(*) FROM audit_events WHERE event_timestamp >= now() - interval '24 hours' AND event_category = '{CATEGORY}'"
            ))
            .await?,
        chains,
        chain_len,
        long_cid: events::cid(LONG_CID),
        long_len,
        search_cid: events::cid(search_chain.min(chains.saturating_sub(1))),
        seed_seconds,
        vacuum_seconds,
        partitions: db
            .text(
                "SELECT string_agg(format('`%s` [%s, %s)', partition_name, to_char(range_start AT TIME ZONE 'UTC', 'YYYY-MM-DD'), to_char(range_end AT TIME ZONE 'UTC', 'YYYY-MM-DD')), ', ' ORDER BY range_start) FROM audit_partitions",
            )
            .await?,
        bytes: db
            .scalar("SELECT coalesce(sum(pg_total_relation_size(partition_name::regclass)), 0)::bigint FROM audit_partitions")
            .await?,
        verified: Vec::new(),
    };
    ctx.log.say(format!(
        "  {} rows ({} in the last 24 h, {} of them {CATEGORY}) seeded in {:.1} s, vacuumed in {:.1} s, {:.0} MiB; partitions {}",
        table.rows,
        table.rows_24h,
        table.rows_24h_category,
        table.seed_seconds,
        table.vacuum_seconds,
        table.bytes as f64 / 1048576.0,
        table.partitions
    ));
    Ok(table)
}

/// Steps 1 and 2.
async fn search_part(
    ctx: &Ctx,
    server_bin: &Path,
    base: &ServerConfig,
    admin_url: &str,
    postmaster: Option<u32>,
    o: &Opts,
    run: &mut ExplorerRun,
) -> Result<()> {
    let db = Db::create_named(admin_url, SEARCH_DB).await?;
    let cfg = config_on(base, &db, 0);
    // The server migrates the empty database; the seeding follows while it idles.
    let srv = Server::start(server_bin, &cfg).await?;
    let result = async {
        let mut table = seed(ctx, &db, o).await?;
        for cid in [&table.long_cid, &table.search_cid] {
            table.verified.push(crate::verify_chain(srv.api, cid).await);
        }
        ctx.log
            .say(format!("  verify-chain: {}", table.verified.join("; ")));
        let probe = Probe {
            server: Some(srv.pid),
            postmaster,
        };
        let views = [
            (
                "search, last 24 h".to_owned(),
                "/ui/?view=search&since=24h".to_owned(),
                SEARCH_ROW,
            ),
            (
                format!("search, last 24 h, category {CATEGORY}"),
                format!("/ui/?view=search&event_category={CATEGORY}&since=24h"),
                SEARCH_ROW,
            ),
            (
                format!("timeline of the {}-event chain", table.long_len),
                format!("/ui/?view=timeline&correlation_id={}", table.long_cid),
                TIMELINE_ROW,
            ),
            (
                format!("timeline of a {}-event chain", table.chain_len),
                format!("/ui/?view=timeline&correlation_id={}", table.search_cid),
                TIMELINE_ROW,
            ),
        ];
        let c0 = CpuSnap::take(probe);
        match browse(ctx, srv.api, o, &views, run).await {
            Ok(()) => {}
            Err(e) => {
                ctx.log.say(format!("  explorer: browser: {e:#}"));
                run.failures.push(format!("browser: {e:#}"));
            }
        }
        run.browser_cpu = c0.until(&CpuSnap::take(probe), ctx.tck);
        let api = [
            (
                format!("/api/v1/audit/events?since=24h&limit={SEARCH_PAGE}"),
                "search".to_owned(),
            ),
            (
                format!(
                    "/api/v1/audit/events?event_category={CATEGORY}&since=24h&limit={SEARCH_PAGE}"
                ),
                "search by category".to_owned(),
            ),
            (
                format!(
                    "/api/v1/audit/events?correlation_id={}&since=24h&limit={SEARCH_PAGE}",
                    table.search_cid
                ),
                format!("search by correlation id (a chain of {})", table.chain_len),
                ),
            (
                format!(
                    "/api/v1/audit/events?correlation_id={}&limit={TIMELINE_PAGE}",
                    table.long_cid
                ),
                format!(
                    "timeline, first of its {} pages",
                    table.long_len.div_ceil(u64::from(TIMELINE_PAGE))
                ),
            ),
            (
                "/api/v1/audit/stats?since=24h".to_owned(),
                "overview".to_owned(),
            ),
            (
                "/api/v1/audit/stats?since=7d".to_owned(),
                "overview, 7d".to_owned(),
            ),
        ];
        ctx.log.say(format!(
            "explorer: the page's API calls, {} timed each after {WARMUP_CALLS}",
            o.calls
        ));
        let c0 = CpuSnap::take(probe);
        for (path, used_for) in api {
            let a = time_api(srv.api, &path, &used_for, o.calls).await;
            ctx.log.say(format!(
                "  {path}: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms, total {}, {} items, {:.1} KiB{}",
                ms(&a.hist, 0.5),
                ms(&a.hist, 0.99),
                ms(&a.hist, 1.0),
                a.matches.map_or("–".to_owned(), |m| m.to_string()),
                a.items.map_or("–".to_owned(), |m| m.to_string()),
                a.bytes as f64 / 1024.0,
                if a.errors.is_empty() {
                    String::new()
                } else {
                    format!(", errors {}", answers_text(&a.errors))
                }
            ));
            run.api.push(a);
        }
        run.api_cpu = c0.until(&CpuSnap::take(probe), ctx.tck);
        run.table = Some(table);
        anyhow::Ok(())
    }
    .await;
    run.log_problems
        .push(("search server".to_owned(), srv.log_problem_kinds()));
    srv.stop().await?;
    result
}

/// chromedriver on a loopback port, ended (with its Chromium) on drop.
struct Driver {
    child: Child,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A command chromedriver passes to Chrome DevTools (`goog/cdp/execute`).
#[derive(Debug)]
struct Cdp {
    cmd: &'static str,
    params: Value,
}

impl WebDriverCompatibleCommand for Cdp {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/goog/cdp/execute",
            session_id.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _request_url: &url::Url) -> (hyper::Method, Option<String>) {
        (
            hyper::Method::POST,
            Some(json!({ "cmd": self.cmd, "params": self.params }).to_string()),
        )
    }
}

/// Installed in every new document before its own scripts: notes when an element matching one
/// of the selectors is first in the document (a mutation observer's callback runs at the end
/// of the task that inserted it, before the browser paints), and when a task queued by the next
/// animation frame runs (after that frame's paint).
fn observer_script(selectors: &[&str]) -> String {
    format!(
        r#"(() => {{
  const sels = {};
  const first = {{}};
  const frame = {{}};
  Object.defineProperty(window, '__dsFirst', {{ value: first }});
  Object.defineProperty(window, '__dsFrame', {{ value: frame }});
  const observer = new MutationObserver(() => {{
    for (const s of sels) {{
      if (s in first || !document.querySelector(s)) continue;
      first[s] = performance.now();
      requestAnimationFrame(() => setTimeout(() => {{ frame[s] = performance.now(); }}, 0));
      observer.disconnect();
    }}
  }});
  observer.observe(document, {{ childList: true, subtree: true }});
}})();"#,
        json!(selectors)
    )
}

/// Asked of the page until it answers an object without `pending`: null while no row is there.
const READ_SCRIPT: &str = r#"
const [sel, api] = arguments;
const first = window.__dsFirst || {};
const frame = window.__dsFrame || {};
const dom = sel in first ? first[sel] : null;
if (dom === null && !document.querySelector(sel)) return null;
if (dom !== null && !(sel in frame) && performance.now() - dom < 2000) return { pending: true };
const reqs = performance.getEntriesByType('resource')
  .filter((e) => e.name.includes(api) && (dom === null || e.responseEnd <= dom));
return {
  dom,
  frame: sel in frame ? frame[sel] : null,
  first_request: reqs.length ? Math.min(...reqs.map((e) => e.startTime)) : null,
  last_response: reqs.length ? Math.max(...reqs.map((e) => e.responseEnd)) : null,
  requests: reqs.length,
};
"#;

/// chromedriver, a headless Chromium session, and the row observer in every new document
/// (false when DevTools refused it).
async fn browser(o: &Opts) -> Result<(Driver, Client, bool)> {
    ensure!(
        o.chromedriver.exists() && o.chromium.exists(),
        "the explorer part needs chromedriver ({}) and Chromium ({}); scripts/test installs Debian's chromium-driver and chromium",
        o.chromedriver.display(),
        o.chromium.display()
    );
    let port = free_port();
    let child = Command::new(&o.chromedriver)
        .arg(format!("--port={port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {}", o.chromedriver.display()))?;
    let driver = Driver { child };
    let caps = json!({
        "goog:chromeOptions": {
            "binary": o.chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1400,900", "--lang=en-US", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update"],
        }
    });
    let Value::Object(caps) = caps else {
        bail!("capabilities are an object")
    };
    let deadline = Instant::now() + SESSION_LIMIT;
    let client = loop {
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        match ClientBuilder::new(connector)
            .capabilities(caps.clone())
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
        {
            Ok(c) => break c,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => bail!("no WebDriver session from chromedriver: {e}"),
        }
    };
    let observer = client
        .issue_cmd(Cdp {
            cmd: "Page.addScriptToEvaluateOnNewDocument",
            params: json!({ "source": observer_script(&[SEARCH_ROW, TIMELINE_ROW]) }),
        })
        .await
        .is_ok();
    Ok((driver, client, observer))
}

/// Loads `base + path` from a blank page and waits for `selector`.
async fn load_page(c: &Client, base: &str, path: &str, selector: &str) -> PageLoad {
    let mut p = PageLoad::default();
    if let Err(e) = c.goto("about:blank").await {
        p.error = Some(format!("about:blank: {e}"));
        return p;
    }
    let url = format!("{base}{path}");
    let t = Instant::now();
    match tokio::time::timeout(LOAD_LIMIT, c.goto(&url)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            p.error = Some(format!("navigation: {e}"));
            return p;
        }
        Err(_) => {
            p.error = Some(format!("navigation took over {} s", LOAD_LIMIT.as_secs()));
            return p;
        }
    }
    loop {
        let answer = c
            .execute(READ_SCRIPT, vec![json!(selector), json!(EVENTS_API)])
            .await;
        if let Ok(v) = &answer {
            if v.is_object() && v.get("pending").is_none() {
                p.wall_ms = t.elapsed().as_secs_f64() * 1000.0;
                p.dom_ms = v["dom"].as_f64();
                p.frame_ms = v["frame"].as_f64();
                p.first_request_ms = v["first_request"].as_f64();
                p.last_response_ms = v["last_response"].as_f64();
                p.requests = v["requests"].as_u64().unwrap_or(0) as u32;
                return p;
            }
        }
        if t.elapsed() > LOAD_LIMIT {
            p.error = Some(match answer {
                Err(e) => format!("no {selector} within {} s: {e}", LOAD_LIMIT.as_secs()),
                Ok(_) => format!("no {selector} within {} s", LOAD_LIMIT.as_secs()),
            });
            return p;
        }
        tokio::time::sleep(POLL).await;
    }
}

fn load_text(p: &PageLoad) -> String {
    match (&p.error, p.dom_ms) {
        (Some(e), _) => format!("failed: {e}"),
        (None, Some(d)) => format!(
            "row {d:.0} ms (frame {}, requests {} from {} to {}), wall {:.0} ms",
            opt_ms(p.frame_ms),
            p.requests,
            opt_ms(p.first_request_ms),
            opt_ms(p.last_response_ms),
            p.wall_ms
        ),
        (None, None) => format!("wall {:.0} ms (no observer)", p.wall_ms),
    }
}

/// Step 1: every view, once untimed and then `loads` times.
async fn browse(
    ctx: &Ctx,
    api: SocketAddr,
    o: &Opts,
    views: &[(String, String, &str)],
    run: &mut ExplorerRun,
) -> Result<()> {
    ctx.log.say(format!(
        "explorer: Chromium over chromedriver ({}), {} timed loads per view",
        run.browser, o.loads
    ));
    let (driver, client, observer) = browser(o).await?;
    run.observer = observer;
    if !observer {
        ctx.log
            .say("  DevTools refused the row observer: only the harness's clock times the loads");
    }
    let base = format!("http://{api}");
    for (name, path, selector) in views {
        let mut v = ViewRun {
            name: name.clone(),
            path: path.clone(),
            selector: (*selector).to_owned(),
            ..ViewRun::default()
        };
        let first = load_page(&client, &base, path, selector).await;
        ctx.log
            .say(format!("  {name}: first load {}", load_text(&first)));
        v.first = Some(first);
        for _ in 0..o.loads {
            v.loads
                .push(load_page(&client, &base, path, selector).await);
        }
        let dom = v.sorted(|l| l.dom_ms.filter(|_| l.error.is_none()));
        let wall = v.sorted(|l| l.error.is_none().then_some(l.wall_ms));
        let failed = v.loads.iter().filter(|l| l.error.is_some()).count();
        ctx.log.say(format!(
            "  {name}: row in the page p50 / max {}, harness wall p50 / max {}{}",
            p50_max(&dom).map_or("–".to_owned(), |(a, b)| format!("{a:.0} / {b:.0} ms")),
            p50_max(&wall).map_or("–".to_owned(), |(a, b)| format!("{a:.0} / {b:.0} ms")),
            if failed > 0 {
                format!(", {failed} failed")
            } else {
                String::new()
            }
        ));
        run.views.push(v);
    }
    if let Err(e) = client.close().await {
        ctx.log.say(format!("  closing the WebDriver session: {e}"));
    }
    drop(driver);
    Ok(())
}

fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

/// Step 2 for one request: [`WARMUP_CALLS`] untimed calls, then `calls` timed, one after
/// another on one keep-alive connection.
async fn time_api(addr: SocketAddr, path: &str, used_for: &str, calls: usize) -> ApiRun {
    let mut a = ApiRun {
        path: path.to_owned(),
        used_for: used_for.to_owned(),
        matches: None,
        items: None,
        bytes: 0,
        hist: new_hist(),
        errors: BTreeMap::new(),
    };
    let mut conn = Conn::new(addr);
    for i in 0..WARMUP_CALLS + calls {
        let t = Instant::now();
        let reply =
            tokio::time::timeout(REQUEST_TIMEOUT, conn.send(Method::GET, path, Bytes::new())).await;
        let us = (t.elapsed().as_micros() as u64).clamp(1, 600_000_000);
        let kind = match reply {
            Ok(Ok((status, body))) if status.is_success() => {
                if a.matches.is_none() {
                    let v: Value = serde_json::from_slice(&body).unwrap_or_default();
                    a.matches = v["pagination"]["total"]
                        .as_u64()
                        .or_else(|| v["total"].as_u64());
                    a.items = v["data"]
                        .as_array()
                        .or_else(|| v["buckets"].as_array())
                        .map(Vec::len);
                    a.bytes = body.len();
                }
                if i >= WARMUP_CALLS {
                    let _ = a.hist.record(us);
                }
                continue;
            }
            Ok(Ok((status, _))) => format!("HTTP {}", status.as_u16()),
            Ok(Err(_)) => "transport".to_owned(),
            Err(_) => {
                conn = Conn::new(addr);
                "timeout".to_owned()
            }
        };
        *a.errors.entry(kind).or_default() += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    a
}

/// Step 3: a fresh database and server; the load without, with and without subscribers.
async fn stream_part(
    ctx: &Ctx,
    server_bin: &Path,
    base: &ServerConfig,
    admin_url: &str,
    postmaster: Option<u32>,
    o: &Opts,
    run: &mut ExplorerRun,
) -> Result<()> {
    let db = Db::create_named(admin_url, STREAM_DB).await?;
    let cfg = config_on(base, &db, o.subscribers);
    ctx.log.say(format!(
        "explorer: single POST @{} for {:.0} s (+{:.0} s warm-up), without, with {} stream subscribers of every event and of none, and without again, on a fresh server",
        o.clients,
        o.duration.as_secs_f64(),
        o.warmup.as_secs_f64(),
        o.subscribers
    ));
    let srv = Server::start(server_bin, &cfg).await?;
    let result = async {
        // Every correlation id the load draws from gets a chain first, so that every write of
        // every run appends to an existing chain: no run pays for creating chain heads (the
        // first would, on an empty table).
        let t = Instant::now();
        let rows = ctx.cids * STREAM_CHAIN_LEN as u64;
        pg::seed_spread(
            &db,
            &ctx.templates,
            0,
            rows,
            STREAM_CHAIN_LEN,
            over_days(Utc::now(), STREAM_CHAIN_LEN),
        )
        .await?;
        db.try_sql(&["VACUUM (ANALYZE) audit_events", "CHECKPOINT"])
            .await?;
        run.stream_table = Some(format!(
            "{rows} rows first, seeded by COPY as one chain of {STREAM_CHAIN_LEN} for each of the load's {} correlation ids (`cid-0`…`{}`, starts spread over the last {SEED_DAYS} days) and vacuumed, in {:.1} s, so that every write of every run appends to an existing chain and no run pays for creating chain heads",
            ctx.cids,
            events::cid(ctx.cids - 1),
            t.elapsed().as_secs_f64()
        ));
        ctx.log.say(format!(
            "  seeded {rows} rows as chains of {STREAM_CHAIN_LEN} on the load's {} correlation ids in {:.1} s",
            ctx.cids,
            t.elapsed().as_secs_f64()
        ));
        let unmatched = format!("correlation_id={UNMATCHED_CID}");
        for (label, subscribers, filter) in [
            ("without subscribers (1)".to_owned(), 0, None),
            (
                format!("with {} subscribers", o.subscribers),
                o.subscribers,
                None,
            ),
            (
                format!("with {} subscribers of no write", o.subscribers),
                o.subscribers,
                Some(unmatched.as_str()),
            ),
            ("without subscribers (2)".to_owned(), 0, None),
        ] {
            let w = window(ctx, &srv, &db, postmaster, o, &label, subscribers, filter).await?;
            run.windows.push(w);
        }
        anyhow::Ok(())
    }
    .await;
    run.log_problems
        .push(("stream server".to_owned(), srv.log_problem_kinds()));
    srv.stop().await?;
    result
}

/// What one subscriber has read so far (read by the harness while it streams).
#[derive(Debug, Default)]
struct Counts {
    subscribed: AtomicBool,
    events: AtomicU64,
    lagged: AtomicU64,
    missed: AtomicU64,
}

/// Kind of the message being read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Kind {
    #[default]
    None,
    Event,
    Lagged,
    Other,
}

/// Bytes of a line kept when its content is not needed (enough for `event: ` and a name).
const KEEP: usize = 64;
/// Most bytes of one line kept when it is needed.
const KEEP_MAX: usize = 1 << 20;

/// A server-sent-events reader that counts `audit_event` and `lagged` messages, adds up the
/// `missed` counts, and (with `latency`) times each event from its `event_timestamp`.
#[derive(Debug)]
struct Sse {
    line: Vec<u8>,
    kind: Kind,
    subscribed: bool,
    events: u64,
    lagged: u64,
    missed: u64,
    latency: Option<Histogram<u64>>,
}

impl Sse {
    fn new(latency: bool) -> Self {
        Self {
            line: Vec::with_capacity(KEEP),
            kind: Kind::None,
            subscribed: false,
            events: 0,
            lagged: 0,
            missed: 0,
            latency: latency.then(new_hist),
        }
    }

    /// Reads the next bytes of the stream, received at `now`.
    fn feed(&mut self, mut data: &[u8], now: DateTime<Utc>) {
        while !data.is_empty() {
            match data.iter().position(|&b| b == b'\n') {
                Some(p) => {
                    self.push(&data[..p]);
                    self.end_line(now);
                    data = &data[p + 1..];
                }
                None => {
                    self.push(data);
                    break;
                }
            }
        }
    }

    /// Whether the current line's content matters: the data of a lag notice, or of an event
    /// when events are timed.
    fn keep_all(&self) -> bool {
        self.kind == Kind::Lagged || (self.kind == Kind::Event && self.latency.is_some())
    }

    fn push(&mut self, bytes: &[u8]) {
        let cap = if self.keep_all() { KEEP_MAX } else { KEEP };
        let room = cap.saturating_sub(self.line.len());
        self.line.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    fn end_line(&mut self, now: DateTime<Utc>) {
        let line = std::mem::take(&mut self.line);
        let l = line.strip_suffix(b"\r").unwrap_or(&line);
        if l.is_empty() {
            self.kind = Kind::None;
        } else if let Some(comment) = l.strip_prefix(b":") {
            if comment.trim_ascii_start().starts_with(b"subscribed") {
                self.subscribed = true;
            }
        } else if let Some(name) = l.strip_prefix(b"event:") {
            self.kind = match name.trim_ascii() {
                b"audit_event" => {
                    self.events += 1;
                    Kind::Event
                }
                b"lagged" => {
                    self.lagged += 1;
                    Kind::Lagged
                }
                _ => Kind::Other,
            };
        } else if let Some(data) = l.strip_prefix(b"data:") {
            match self.kind {
                Kind::Lagged => {
                    let v: Value = serde_json::from_slice(data.trim_ascii()).unwrap_or_default();
                    self.missed += v["missed"].as_u64().unwrap_or(0);
                }
                Kind::Event => {
                    if let (Some(h), Some(at)) = (self.latency.as_mut(), event_time(data)) {
                        let us = (now - at).num_microseconds().unwrap_or(0);
                        let _ = h.record((us.max(1) as u64).min(600_000_000));
                    }
                }
                Kind::None | Kind::Other => {}
            }
        }
        self.line = line;
        self.line.clear();
    }

    fn publish(&self, c: &Counts) {
        c.subscribed.store(self.subscribed, Ordering::Relaxed);
        c.events.store(self.events, Ordering::Relaxed);
        c.lagged.store(self.lagged, Ordering::Relaxed);
        c.missed.store(self.missed, Ordering::Relaxed);
    }
}

/// The `event_timestamp` of an event's JSON.
fn event_time(data: &[u8]) -> Option<DateTime<Utc>> {
    const KEY: &[u8] = b"\"event_timestamp\":\"";
    let at = data.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let rest = &data[at..];
    let end = rest.iter().position(|&b| b == b'"')?;
    let text = std::str::from_utf8(&rest[..end]).ok()?;
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// One subscriber: a GET of `path` (the stream) on its own connection, read until `stop` says so, the
/// stream ends, or `deadline`. Returns the answer's status and, with `timed`, the latencies.
async fn subscriber(
    addr: SocketAddr,
    path: Arc<str>,
    counts: Arc<Counts>,
    timed: bool,
    mut stop: watch::Receiver<bool>,
    deadline: Instant,
) -> Result<(u16, Option<Histogram<u64>>)> {
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("cannot connect to {addr}"))?;
    stream.set_nodelay(true)?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
            .await
            .context("HTTP handshake")?;
    // Aborted at the end, which closes the socket: the server lets the subscription go.
    let connection = tokio::spawn(async move {
        let _ = conn.await;
    });
    let result = read_stream(
        &mut sender,
        addr,
        &path,
        &counts,
        timed,
        &mut stop,
        deadline,
    )
    .await;
    connection.abort();
    result
}

async fn read_stream(
    sender: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    addr: SocketAddr,
    path: &str,
    counts: &Counts,
    timed: bool,
    stop: &mut watch::Receiver<bool>,
    deadline: Instant,
) -> Result<(u16, Option<Histogram<u64>>)> {
    let req = Request::get(path)
        .header(hyper::header::HOST, addr.to_string())
        .header(hyper::header::ACCEPT, "text/event-stream")
        .body(Empty::new())?;
    let resp = tokio::time::timeout(REQUEST_TIMEOUT, sender.send_request(req))
        .await
        .context("no answer")??;
    let status = resp.status().as_u16();
    if status != 200 {
        return Ok((status, None));
    }
    let mut sse = Sse::new(timed);
    let mut body = resp.into_body();
    loop {
        tokio::select! {
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    break;
                }
            }
            () = tokio::time::sleep_until(deadline.into()) => break,
            frame = body.frame() => match frame {
                None => break,
                Some(Err(e)) => {
                    sse.publish(counts);
                    return Err(anyhow::Error::new(e).context("reading the stream"));
                }
                Some(Ok(f)) => {
                    if let Ok(data) = f.into_data() {
                        sse.feed(&data, Utc::now());
                        sse.publish(counts);
                    }
                }
            },
        }
    }
    sse.publish(counts);
    Ok((status, sse.latency))
}

/// Polls `/metrics` until `datastorage_stream_subscribers` meets `ok`, at most `limit`.
async fn wait_gauge(srv: &Server, limit: Duration, ok: impl Fn(f64) -> bool) -> Option<f64> {
    let t = Instant::now();
    while t.elapsed() < limit {
        if let Ok(m) = srv.metrics().await {
            if ok(m.get("datastorage_stream_subscribers")) {
                return Some(t.elapsed().as_secs_f64());
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// Sum of a counter (`name_total`, as prometheus-client writes it, or `name`).
fn counter(m: &crate::server::Metrics, name: &str) -> f64 {
    m.get(&format!("{name}_total")) + m.get(name)
}

/// One load run, with `subscribers` subscribers (of the stream with `filter`, a query string)
/// streaming through it.
#[allow(clippy::too_many_arguments)]
async fn window(
    ctx: &Ctx,
    srv: &Server,
    db: &Db,
    postmaster: Option<u32>,
    o: &Opts,
    label: &str,
    subscribers: usize,
    filter: Option<&str>,
) -> Result<Window> {
    ctx.log
        .say(format!("  single POST @{}, {label}", o.clients));
    db.try_sql(&["CHECKPOINT"]).await?;
    let m0 = srv.metrics().await.unwrap_or_default();
    let (stop_tx, stop_rx) = watch::channel(false);
    let deadline = Instant::now() + SUBSCRIBE_LIMIT + o.warmup + o.duration + SETTLE_LIMIT * 3;
    let counts: Vec<Arc<Counts>> = (0..subscribers).map(|_| Arc::default()).collect();
    let path: Arc<str> = match filter {
        Some(q) => format!("{STREAM_PATH}?{q}").into(),
        None => STREAM_PATH.into(),
    };
    let tasks: Vec<_> = counts
        .iter()
        .enumerate()
        .map(|(i, c)| {
            tokio::spawn(subscriber(
                srv.api,
                Arc::clone(&path),
                Arc::clone(c),
                i == 0,
                stop_rx.clone(),
                deadline,
            ))
        })
        .collect();
    let mut gauge_after = None;
    if subscribers > 0 {
        // Every subscriber is in place before the load begins: the server counts it and it has
        // read `: subscribed`. Refused or failed ones end at once and are not waited for.
        let t = Instant::now();
        while t.elapsed() < SUBSCRIBE_LIMIT {
            let open = tasks.iter().filter(|h| !h.is_finished()).count();
            let g = srv
                .metrics()
                .await
                .map(|m| m.get("datastorage_stream_subscribers"))
                .unwrap_or(0.0);
            let ready = counts
                .iter()
                .filter(|c| c.subscribed.load(Ordering::Relaxed))
                .count();
            if g >= subscribers as f64 && gauge_after.is_none() {
                gauge_after = Some(t.elapsed().as_secs_f64());
            }
            if gauge_after.is_some() && ready >= subscribers {
                break;
            }
            if ready >= open && g >= ready as f64 && open < subscribers {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        ctx.log.say(format!(
            "    {} of {subscribers} subscribers streaming{}",
            counts
                .iter()
                .filter(|c| c.subscribed.load(Ordering::Relaxed))
                .count(),
            gauge_after.map_or(" (the gauge never read them all)".to_owned(), |s| format!(
                ", the gauge read {subscribers} after {s:.2} s"
            ))
        ));
    }
    let rows_before = db.scalar("SELECT count(*) FROM audit_events").await?;
    let probe = Probe {
        server: Some(srv.pid),
        postmaster,
    };
    let mem = MemWatch::start(srv.pid);
    let scenario = ctx
        .scenario(
            srv,
            probe,
            Work::Single,
            o.clients,
            o.warmup,
            o.duration,
            Some(rows_before),
        )
        .await;
    let mem = mem.finish().await;
    let rows_after = db.scalar("SELECT count(*) FROM audit_events").await?;
    let added = (rows_after - rows_before).max(0) as u64;
    let expected = if filter.is_some() { 0 } else { added };
    let t = Instant::now();
    if subscribers > 0 {
        while t.elapsed() < SETTLE_LIMIT {
            let all = counts.iter().all(|c| {
                c.events.load(Ordering::Relaxed) + c.missed.load(Ordering::Relaxed) >= expected
            });
            if all {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let settle_seconds = t.elapsed().as_secs_f64();
    let _ = stop_tx.send(true);
    let mut answers: BTreeMap<String, u64> = BTreeMap::new();
    let mut errors = Vec::new();
    let mut latency = new_hist();
    for h in tasks {
        match h.await {
            Ok(Ok((status, hist))) => {
                *answers.entry(status.to_string()).or_default() += 1;
                if let Some(hist) = hist {
                    let _ = latency.add(&hist);
                }
            }
            Ok(Err(e)) => {
                *answers.entry("transport".to_owned()).or_default() += 1;
                if errors.len() < 3 {
                    errors.push(format!("{e:#}"));
                }
            }
            Err(e) => {
                *answers.entry("task".to_owned()).or_default() += 1;
                if errors.len() < 3 {
                    errors.push(e.to_string());
                }
            }
        }
    }
    let delivery = if subscribers > 0 {
        // The next run has none: wait until the server has let every subscription go.
        let _ = wait_gauge(srv, SETTLE_LIMIT, |g| g <= 0.0).await;
        let m1 = srv.metrics().await.unwrap_or_default();
        let got = |c: &Arc<Counts>| c.events.load(Ordering::Relaxed);
        let d = Delivery {
            filter: filter.map(str::to_owned),
            expected,
            started: subscribers,
            answers,
            gauge_after,
            subscribed: counts
                .iter()
                .filter(|c| c.subscribed.load(Ordering::Relaxed))
                .count(),
            received_min: counts.iter().map(got).min().unwrap_or(0),
            received_max: counts.iter().map(got).max().unwrap_or(0),
            lagged_messages: counts
                .iter()
                .map(|c| c.lagged.load(Ordering::Relaxed))
                .sum(),
            missed: counts
                .iter()
                .map(|c| c.missed.load(Ordering::Relaxed))
                .sum(),
            complete: counts
                .iter()
                .filter(|c| got(c) + c.missed.load(Ordering::Relaxed) == expected)
                .count(),
            settle_seconds,
            lagged_metric: counter(&m1, "datastorage_stream_lagged_events")
                - counter(&m0, "datastorage_stream_lagged_events"),
            dropped_metric: counter(&m1, "datastorage_stream_dropped_events")
                - counter(&m0, "datastorage_stream_dropped_events"),
            refused_metric: counter(&m1, "datastorage_stream_refused_subscriptions")
                - counter(&m0, "datastorage_stream_refused_subscriptions"),
            latency,
            errors,
        };
        ctx.log.say(format!(
            "    {added} events written ({expected} for each subscriber); each subscriber received {}..{} ({} complete), lagged messages {}, missed {}, dropped by the feed {:.0}; sent → received p50 {:.1} ms, p99 {:.1} ms; answers {}",
            d.received_min,
            d.received_max,
            d.complete,
            d.lagged_messages,
            d.missed,
            d.dropped_metric,
            ms(&d.latency, 0.5),
            ms(&d.latency, 0.99),
            answers_text(&d.answers)
        ));
        Some(d)
    } else {
        None
    };
    Ok(Window {
        label: label.to_owned(),
        scenario,
        mem,
        rows_before,
        rows_after,
        delivery,
    })
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    if h.is_empty() {
        return 0.0;
    }
    h.value_at_quantile(q) as f64 / 1000.0
}

fn opt_ms(v: Option<f64>) -> String {
    v.map_or("–".to_owned(), |v| format!("{v:.0}"))
}

/// `12 × 200, 1 × 503`.
fn answers_text(by: &BTreeMap<String, u64>) -> String {
    if by.is_empty() {
        return "none".to_owned();
    }
    by.iter()
        .map(|(k, v)| format!("{v} × {k}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn us_per(cpu: Option<f64>, units: f64) -> String {
    match cpu {
        Some(c) if units > 0.0 => format!("{:.0}", c / units * 1e6),
        _ => "–".to_owned(),
    }
}

fn cores(cpu: Option<f64>, wall: f64) -> String {
    match cpu {
        Some(c) if wall > 0.0 => format!("{:.2}", c / wall),
        _ => "–".to_owned(),
    }
}

/// `p50 / max` of the timed loads, ms.
fn p50_max_text(sorted: &[f64]) -> String {
    p50_max(sorted).map_or("–".to_owned(), |(a, b)| format!("{a:.0} / {b:.0}"))
}

/// The report section.
pub fn markdown(run: &ExplorerRun) -> String {
    let o = &run.opts;
    let mut out = String::new();
    let _ = writeln!(out, "\n## Explorer (issue 19)\n");
    let table_text = match &run.table {
        Some(t) => format!(
            "{} rows: {} chains of {} whose starts are spread evenly over the last {SEED_DAYS} days (each chain's events 1.5 s apart), and `{}`, one chain of {} events beginning {LONG_CHAIN_HOURS} h ago; seeded by COPY in {:.1} s with hashes by `chain::chain_hash` (the query table's seeder), then `VACUUM (ANALYZE)` and `CHECKPOINT` ({:.1} s); {} of them in the last 24 h, {} of those in category `{CATEGORY}`; {:.0} MiB; partitions {}. verify-chain after seeding: {}",
            t.rows,
            t.chains,
            t.chain_len,
            t.long_cid,
            t.long_len,
            t.seed_seconds,
            t.vacuum_seconds,
            t.rows_24h,
            t.rows_24h_category,
            t.bytes as f64 / 1048576.0,
            t.partitions,
            t.verified.join("; ")
        ),
        None => "not seeded (see the failure below)".to_owned(),
    };
    let _ = writeln!(
        out,
        "PostgreSQL (the same throwaway cluster), each step on its own freshly created database with a server started for it (generated config as above: `auth.mode` default (none, loopback), `auth.recordReads: false`, every `explorer` key at its default). \
         Schema measured: the partitioned `audit_events` of the current migrations (range-partitioned by `event_timestamp`, monthly). \
         The search table: {table_text}. \
         Part load average at start: {}; the part took {:.0} s.\n",
        run.loadavg,
        run.seconds
    );
    for f in &run.failures {
        let _ = writeln!(out, "**Failed**: {}\n", f.replace('`', "'"));
    }
    if !run.views.is_empty() {
        let _ = writeln!(out, "### First result in the browser\n");
        let _ = writeln!(
            out,
            "{} (headless, `--window-size=1400,900`), driven over WebDriver (`fantoccini`) on loopback, one session for every load. \
             Each load: `about:blank`, then `goto` of the view's URL, a fresh navigation. {} \
             *row ms* is the time from the navigation's start (`performance.timeOrigin`) until the row is in the document: the observer's callback runs at the end of the task that inserted it, so the time includes that whole task (for the timeline: its list, its SVG chart of every event and the verify badge). \
             *frame ms* is when a task queued by the next animation frame ran, after that frame was painted. \
             *first request* / *last response* are the Resource Timing `startTime` of the view's first `GET /api/v1/audit/events` and `responseEnd` of its last one before the row (the timeline fetches its chain in pages of {TIMELINE_PAGE} events and verifies the chain beside them); *row − last response* is the page's own work once its data is in (parsing, rendering). \
             *harness wall* is the harness's clock from sending `goto` (which returns after the page's load event) until a poll (every {} ms, over WebDriver) saw the row. \
             One untimed load of each view comes first (*first load*: the first view's is on a fresh browser profile and a server that has not yet run the query); then {} timed loads. \
             CPU over all loads: server {} cores, PostgreSQL {} cores, other load (Chromium and chromedriver included) {:.2} cores.\n",
            run.browser,
            if run.observer {
                "Before any of its own scripts, each document gets a mutation observer (Chrome DevTools `Page.addScriptToEvaluateOnNewDocument`, outside the page's Content-Security-Policy), which notes `performance.now()` when the first element matching the view's selector is in the document."
            } else {
                "**DevTools refused the row observer**, so only the harness's clock times the loads."
            },
            POLL.as_millis(),
            o.loads,
            cores(run.browser_cpu.server, run.browser_cpu.wall),
            cores(run.browser_cpu.pg, run.browser_cpu.wall),
            run.browser_cpu.others_cores()
        );
        let _ = writeln!(
            out,
            "| view | URL | waits for | first load: row ms (wall ms) | timed loads | row ms p50 / max | under 1 s (max) | frame ms p50 / max | first request ms p50 | last response ms p50 | row − last response ms p50 | requests | harness wall ms p50 / max |\n|---|---|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|"
        );
        for v in &run.views {
            let ok = |l: &PageLoad| l.error.is_none();
            let dom = v.sorted(|l| l.dom_ms.filter(|_| ok(l)));
            let wall = v.sorted(|l| ok(l).then_some(l.wall_ms));
            let timed = v.loads.iter().filter(|l| ok(l)).count();
            let first = v.first.as_ref().map_or("–".to_owned(), |f| match &f.error {
                Some(_) => "failed".to_owned(),
                None => format!("{} ({:.0})", opt_ms(f.dom_ms), f.wall_ms),
            });
            let verdict = match p50_max(if dom.is_empty() { &wall } else { &dom }) {
                Some((_, max)) if timed == v.loads.len() && max < 1000.0 => "**PASS**",
                Some(_) => "**SHORT**",
                None => "–",
            };
            let requests = v.loads.iter().map(|l| l.requests).max().unwrap_or(0);
            let _ = writeln!(
                out,
                "| {} | `{}` | `{}` | {first} | {timed} of {} | **{}** | {verdict} | {} | {} | {} | {} | {requests} | {} |",
                v.name,
                v.path,
                v.selector,
                v.loads.len(),
                p50_max_text(&dom),
                p50_max_text(&v.sorted(|l| l.frame_ms.filter(|_| ok(l)))),
                p50_max(&v.sorted(|l| l.first_request_ms.filter(|_| ok(l))))
                    .map_or("–".to_owned(), |(p, _)| format!("{p:.0}")),
                p50_max(&v.sorted(|l| l.last_response_ms.filter(|_| ok(l))))
                    .map_or("–".to_owned(), |(p, _)| format!("{p:.0}")),
                p50_max(&v.sorted(|l| match (l.dom_ms, l.last_response_ms) {
                    (Some(d), Some(r)) if ok(l) => Some(d - r),
                    _ => None,
                }))
                .map_or("–".to_owned(), |(p, _)| format!("{p:.0}")),
                p50_max_text(&wall)
            );
        }
        for v in &run.views {
            for l in v.loads.iter().chain(v.first.as_ref()) {
                if let Some(e) = &l.error {
                    let _ = writeln!(
                        out,
                        "\nA load of *{}* failed: {}",
                        v.name,
                        e.replace('`', "'")
                    );
                    break;
                }
            }
        }
    }
    if !run.api.is_empty() {
        let _ = writeln!(out, "\n### The API calls the page makes\n");
        let _ = writeln!(
            out,
            "Each request as the page sends it (the same query string), {WARMUP_CALLS} untimed calls and then {} timed ones, one after another on one keep-alive HTTP/1.1 connection, after the browser loads above; latency is request sent → whole answer read. *total* is the answer's `pagination.total` (the search counts its matches when the first page does not show them) or the stats' `total`; *items* the events or buckets in it. \
             CPU over all calls: server {} cores, PostgreSQL {} cores, other load {:.2} cores.\n",
            o.calls,
            cores(run.api_cpu.server, run.api_cpu.wall),
            cores(run.api_cpu.pg, run.api_cpu.wall),
            run.api_cpu.others_cores()
        );
        let _ = writeln!(
            out,
            "| request | sent by | total | items | KiB | timed calls | p50 ms | p99 ms | max ms | errors |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---|"
        );
        for a in &run.api {
            let _ = writeln!(
                out,
                "| `GET {}` | {} | {} | {} | {:.1} | {} | **{:.1}** | **{:.1}** | {:.1} | {} |",
                a.path,
                a.used_for,
                a.matches.map_or("–".to_owned(), |m| m.to_string()),
                a.items.map_or("–".to_owned(), |m| m.to_string()),
                a.bytes as f64 / 1024.0,
                a.hist.len(),
                ms(&a.hist, 0.5),
                ms(&a.hist, 0.99),
                ms(&a.hist, 1.0),
                if a.errors.is_empty() {
                    "0".to_owned()
                } else {
                    answers_text(&a.errors)
                }
            );
        }
    }
    if !run.windows.is_empty() {
        stream_markdown(&mut out, run);
    }
    for (who, kinds) in &run.log_problems {
        if kinds.is_empty() {
            continue;
        }
        let total: usize = kinds.iter().map(|(n, _)| n).sum();
        let _ = writeln!(
            out,
            "\nThe {who} logged {total} warning/error lines: {}.",
            kinds
                .iter()
                .map(|(n, k)| format!("{n} × `{}`", k.replace('`', "'")))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    out
}

fn stream_markdown(out: &mut String, run: &ExplorerRun) {
    let o = &run.opts;
    let _ = writeln!(out, "\n### The stream's subscribers under the write load\n");
    let _ = writeln!(
        out,
        "A fresh database and server; the table holds {}. The harness's single-event load (`POST /api/v1/audit/events`, {} closed-loop clients, one keep-alive connection each, {:.0} s warm-up, then {:.0} s measured) four times on that server, in this order: without subscribers; with {} subscribers of every event; with {} subscribers whose filter (`?correlation_id={UNMATCHED_CID}`) matches none of the writes, so the server holds them and checks every event against them but sends nothing (it tells holding subscriptions from delivering to them); without again. \
         Each subscriber is a plain `GET {STREAM_PATH}` on its own connection, read as it streams by the harness, which counts `audit_event` messages, `lagged` messages and their `missed` counts; all are open, and `datastorage_stream_subscribers` on the metrics port reads {}, before the load begins, and they are closed after it once each has every event (or {} s passed). \
         *÷ without* divides by the mean of the two runs without; *noise* is the spread of those two, |first − second| ÷ their mean. \
         CPU is core-µs per event over the measured window (the server, every PostgreSQL process); *harness* is this process in cores: the load generator and, in the run with them, the subscribers' reading; *other load* is anything else, in cores. \
         *peak RSS* is the server's VmHWM over the whole run (reset at its start, never below VmRSS sampled every 10 ms).\n",
        run.stream_table.as_deref().unwrap_or("no seeded rows"),
        o.clients,
        o.warmup.as_secs_f64(),
        o.duration.as_secs_f64(),
        o.subscribers,
        o.subscribers,
        o.subscribers,
        SETTLE_LIMIT.as_secs()
    );
    let _ = write!(out, "| single POST @{} |", o.clients);
    for w in &run.windows {
        let _ = write!(out, " {} |", w.label);
    }
    let _ = writeln!(out, "\n|---|{}", "---:|".repeat(run.windows.len()));
    type Cell = Box<dyn Fn(&Window) -> String>;
    let rows: Vec<(&str, Cell)> = vec![
        (
            "throughput, events/s",
            Box::new(|w: &Window| format!("**{:.0}**", w.scenario.outcome.rate())),
        ),
        (
            "latency p50, ms",
            Box::new(|w: &Window| format!("{:.2}", w.scenario.outcome.ms(0.5))),
        ),
        (
            "latency p99, ms",
            Box::new(|w: &Window| format!("{:.2}", w.scenario.outcome.ms(0.99))),
        ),
        (
            "latency max, ms",
            Box::new(|w: &Window| format!("{:.2}", w.scenario.outcome.ms(1.0))),
        ),
        (
            "errors",
            Box::new(|w: &Window| {
                let e = &w.scenario.outcome.errors;
                if e.is_empty() {
                    "0".to_owned()
                } else {
                    answers_text(e)
                }
            }),
        ),
        (
            "server CPU, µs/event",
            Box::new(|w: &Window| {
                us_per(
                    w.scenario.outcome.cpu.server,
                    w.scenario.outcome.units as f64,
                )
            }),
        ),
        (
            "PostgreSQL CPU, µs/event",
            Box::new(|w: &Window| {
                us_per(w.scenario.outcome.cpu.pg, w.scenario.outcome.units as f64)
            }),
        ),
        (
            "harness (cores)",
            Box::new(|w: &Window| {
                let c = &w.scenario.outcome.cpu;
                cores(Some(c.harness), c.wall)
            }),
        ),
        (
            "other load (cores)",
            Box::new(|w: &Window| format!("{:.2}", w.scenario.outcome.cpu.others_cores())),
        ),
        (
            "whole machine busy (cores)",
            Box::new(|w: &Window| {
                let c = &w.scenario.outcome.cpu;
                cores(Some(c.machine), c.wall)
            }),
        ),
        (
            "server peak RSS, MiB",
            Box::new(|w: &Window| format!("{:.1}", mib(w.mem.peak_kib))),
        ),
        (
            "rows before → after",
            Box::new(|w: &Window| format!("{} → {}", w.rows_before, w.rows_after)),
        ),
    ];
    for (name, cell) in &rows {
        let _ = write!(out, "| {name} |");
        for w in &run.windows {
            let _ = write!(out, " {} |", cell(w));
        }
        let _ = writeln!(out);
    }
    match run.comparison() {
        Some(c) => {
            let _ = writeln!(
                out,
                "\nWith {} subscribers of every event ÷ without (mean {:.0} events/s): **{:.3}**; noise between the two runs without: **{:.3}**; the difference |1 − ratio| = {:.3} is {}.",
                o.subscribers,
                c.without_mean,
                c.ratio,
                c.noise,
                (1.0 - c.ratio).abs(),
                if c.within_noise() {
                    "**within the noise**"
                } else {
                    "**outside the noise**"
                }
            );
            if let Some(u) = run.unmatched_comparison() {
                let _ = writeln!(
                    out,
                    "With {} subscribers of no write ÷ without: **{:.3}** ({}).",
                    o.subscribers,
                    u.ratio,
                    if u.within_noise() {
                        "within the noise"
                    } else {
                        "outside the noise"
                    }
                );
            }
        }
        None => {
            let _ = writeln!(out, "\nNot every run finished: no ratio.");
        }
    }
    for w in &run.windows {
        let Some(d) = &w.delivery else { continue };
        let added = w.added();
        let _ = writeln!(
            out,
            "\nDelivery, {} (`GET {STREAM_PATH}{}`):\n",
            w.label,
            d.filter.as_ref().map_or(String::new(), |f| format!("?{f}"))
        );
        let _ = writeln!(out, "| | |\n|---|---|");
        let _ = writeln!(
            out,
            "| subscriptions (answers) | {} ({}); `: subscribed` seen by {}; `datastorage_stream_subscribers` read {} {} |",
            d.started,
            answers_text(&d.answers),
            d.subscribed,
            d.started,
            d.gauge_after
                .map_or("**never**".to_owned(), |s| format!("{s:.2} s after the GETs were sent"))
        );
        let _ = writeln!(
            out,
            "| events written during the run (rows added, warm-up included) / to be received by each subscriber | {added} / {} |",
            d.expected
        );
        let _ = writeln!(
            out,
            "| `audit_event` messages per subscriber, min / max | **{} / {}** |",
            d.received_min, d.received_max
        );
        let _ = writeln!(
            out,
            "| subscribers with received + missed = to be received | {} of {} (waited {:.2} s after the load) |",
            d.complete, d.started, d.settle_seconds
        );
        let _ = writeln!(
            out,
            "| `lagged` messages / missed events, all subscribers | {} / {} |",
            d.lagged_messages, d.missed
        );
        let _ = writeln!(
            out,
            "| Δ `datastorage_stream_lagged_events_total` / `_dropped_events_total` / `_refused_subscriptions_total` | {:.0} / {:.0} / {:.0} |",
            d.lagged_metric, d.dropped_metric, d.refused_metric
        );
        if !d.latency.is_empty() {
            let _ = writeln!(
                out,
                "| event sent → received by subscriber 0 (from the event's `event_timestamp`, set as the load generator builds the request), p50 / p99 / max ms | {:.1} / {:.1} / {:.1} |",
                ms(&d.latency, 0.5),
                ms(&d.latency, 0.99),
                ms(&d.latency, 1.0)
            );
        }
        if !d.errors.is_empty() {
            let _ = writeln!(
                out,
                "| subscriber errors (first {}) | {} |",
                d.errors.len(),
                d.errors.join("; ").replace('|', "\\|")
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reader_counts_events_lags_and_the_opening_comment_across_chunks() {
        let now = Utc::now();
        let at = (now - chrono::Duration::milliseconds(30)).to_rfc3339();
        let text = format!(
            ": subscribed\n\nevent: audit_event\nid: 1\ndata: {{\"event_id\":\"1\",\"event_timestamp\":\"{at}\",\"x\":1}}\n\n: keepalive\n\nevent: lagged\ndata: {{\"missed\":7}}\n\nevent: audit_event\nid: 2\ndata: {{\"event_timestamp\":\"{at}\"}}\n\n"
        );
        for split in [1, 3, 17, text.len()] {
            let mut s = Sse::new(true);
            for chunk in text.as_bytes().chunks(split) {
                s.feed(chunk, now);
            }
            assert!(s.subscribed, "split {split}");
            assert_eq!((s.events, s.lagged, s.missed), (2, 1, 7), "split {split}");
            let h = s.latency.as_ref().unwrap();
            assert_eq!(h.len(), 2);
            assert!((29_000..=31_000).contains(&h.value_at_quantile(0.5)));
        }
        // Without timing, event data is not kept.
        let mut s = Sse::new(false);
        s.feed(text.as_bytes(), now);
        assert_eq!((s.events, s.missed), (2, 7));
        assert!(s.latency.is_none());
    }

    #[test]
    fn the_ratio_uses_the_mean_without_and_their_spread() {
        assert_eq!(p50_max(&[]), None);
        assert_eq!(p50_max(&[1.0, 2.0, 9.0]), Some((2.0, 9.0)));
        assert_eq!(p50_max(&[1.0, 3.0]), Some((2.0, 3.0)));
        let c = Comparison {
            without_mean: 1000.0,
            noise: 0.04,
            ratio: 0.97,
        };
        assert!(c.within_noise());
        assert!(!Comparison { ratio: 0.9, ..c }.within_noise());
    }

    #[test]
    fn the_observer_script_names_the_selectors_and_the_section_renders_empty() {
        let s = observer_script(&[SEARCH_ROW, TIMELINE_ROW]);
        assert!(s.contains(r##"["#results tbody tr[data-event-id]","#timeline-list [data-seq]"]"##));
        assert!(event_time(b"{\"event_timestamp\":\"2026-12-01T10:00:00.5Z\"}").is_some());
        assert!(event_time(b"{}").is_none());
        let run = ExplorerRun {
            opts: Opts {
                rows: 10,
                chain_len: 5,
                loads: 1,
                calls: 1,
                clients: 1,
                subscribers: 1,
                warmup: Duration::ZERO,
                duration: Duration::ZERO,
                chromedriver: PathBuf::from("/x"),
                chromium: PathBuf::from("/y"),
            },
            table: None,
            browser: String::new(),
            observer: false,
            views: Vec::new(),
            browser_cpu: CpuUse::default(),
            api: Vec::new(),
            api_cpu: CpuUse::default(),
            stream_table: None,
            windows: Vec::new(),
            failures: vec!["x".to_owned()],
            log_problems: Vec::new(),
            loadavg: String::new(),
            seconds: 0.0,
        };
        let md = markdown(&run);
        assert!(md.contains("## Explorer (issue 19)"));
        assert!(md.contains("**Failed**: x"));
        assert!(run.comparison().is_none());
    }

    #[test]
    fn more_subscribers_than_the_default_limit_raise_it() {
        let base = ServerConfig::new(Backend::Sqlite("/tmp/x.db".into()), 5, None);
        let db = Db {
            host: "127.0.0.1".to_owned(),
            port: 5432,
            user: "postgres".to_owned(),
            password: None,
            name: "x".to_owned(),
        };
        assert!(config_on(&base, &db, 100).extra_yaml.is_none());
        let y = crate::server::config_yaml(&config_on(&base, &db, 300), 1, 2);
        assert!(
            y.ends_with("explorer:\n  streamMaxSubscribers: 300\n"),
            "{y}"
        );
    }
}
