//! The audit lifecycle (issue 15) on PostgreSQL, each step on its own fresh database and a
//! server with the lifecycle workers on:
//! 1. the in-place migration of an unpartitioned `audit_events` of `rows` seeded events (valid
//!    chains) into the partitioned table, then verify-chain on a few of those chains;
//! 2. a streamed NDJSON export of every event of that database, with the server's peak memory;
//! 3. a purge that drops whole daily partitions, at 100 k rows and at `rows`, to show that a
//!    partition drop does not grow with the rows it removes.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use bytes::Bytes;
use chrono::{DateTime, SubsecRound as _, Utc};
use http_body_util::{BodyExt as _, Empty};
use hyper::Request;
use hyper_util::rt::TokioIo;
use sqlx::migrate::Migrator;
use sqlx::postgres::PgConnection;
use sqlx::Connection as _;
use tokio::net::TcpStream;

use crate::events;
use crate::load;
use crate::pg::{self, Db, DbExt as _};
use crate::server::{Backend, Server, ServerConfig};
use crate::sys::{vm_kib, CpuSnap, CpuUse, MemPeak, MemWatch, Probe};
use crate::Ctx;

/// The migration that partitions `audit_events` in place; the unpartitioned table is the
/// schema of every migration before it.
pub const PARTITIONS_VERSION: i64 = 20261202000002;
/// The small size of the purge comparison.
pub const PURGE_SMALL: u64 = 100_000;
/// Length of each chain seeded for the migration.
const CHAIN_LEN: i64 = 50;
/// Chains of the purge table.
const PURGE_CHAINS: i64 = 1000;
/// Days the purge table's events span, ending now.
const PURGE_DAYS: i64 = 40;
/// `retention_days` of every purge-table event.
const PURGE_RETENTION_DAYS: i32 = 30;
/// Chains verified after the migration.
const VERIFIED_CHAINS: usize = 3;
/// Longest wait for one admin or verification answer (beyond the server's own writeTimeout).
const CALL_TIMEOUT: Duration = Duration::from_secs(600);
/// Longest wait for the whole export.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(3600);
/// The peak-memory target of the export, MiB.
pub const EXPORT_RSS_TARGET_MIB: f64 = 150.0;

/// The database of steps 1 and 2.
const MIGRATED: &str = "datastorage_bench_lc_migrate";

/// Sizes of the part.
#[derive(Debug, Clone, Copy)]
pub struct Opts {
    /// Rows of the migrated (and exported) table, and the large purge size.
    pub rows: u64,
}

/// One verify-chain call.
#[derive(Debug, Clone)]
pub struct ChainCheck {
    /// The correlation id.
    pub cid: String,
    /// `is_valid` true.
    pub valid: bool,
    /// What it answered, shortened.
    pub reply: String,
    /// Seconds the call took.
    pub seconds: f64,
}

/// Step 1: the migration.
#[derive(Debug, Clone, Default)]
pub struct MigrationStep {
    /// Rows seeded.
    pub rows: u64,
    /// Chains seeded.
    pub chains: u64,
    /// Seconds seeding took (COPY).
    pub seed_seconds: f64,
    /// Migrations applied before seeding (versions).
    pub early: Vec<i64>,
    /// Migrations the timed step applied (version and description).
    pub applied: Vec<String>,
    /// `pg_total_relation_size('audit_events')` before, bytes.
    pub bytes_before: i64,
    /// Its sum over the partitions after, bytes.
    pub bytes_after: i64,
    /// `count(*)` before.
    pub count_before: i64,
    /// `count(*)` after.
    pub count_after: i64,
    /// Seconds of `MIGRATOR.run`.
    pub seconds: f64,
    /// CPU over the migration.
    pub cpu: CpuUse,
    /// Partitions after: (name, start, end).
    pub partitions: Vec<(String, String, String)>,
    /// Seconds from the server's readiness to its first checkpoint row (the checkpoint worker
    /// writes one at start), if it came within a minute.
    pub first_checkpoint: Option<f64>,
    /// Chains in that checkpoint.
    pub checkpoint_chains: Option<i64>,
    /// verify-chain calls.
    pub checks: Vec<ChainCheck>,
}

/// Step 2: the export.
#[derive(Debug, Clone, Default)]
pub struct ExportStep {
    /// Rows in `audit_events` right before the export.
    pub rows_before: i64,
    /// Rows right after (the export's own access record is written before it starts).
    pub rows_after: i64,
    /// HTTP status.
    pub status: u16,
    /// Lines received.
    pub lines: u64,
    /// Event lines whose `hash_chain_valid` is true.
    pub valid_lines: u64,
    /// Bytes received.
    pub bytes: u64,
    /// Whether the last line is the `export_signature` trailer.
    pub trailer: bool,
    /// The trailer's `total_events`.
    pub trailer_events: Option<u64>,
    /// Seconds to the first byte of the body.
    pub first_byte: f64,
    /// Seconds to the last byte.
    pub seconds: f64,
    /// Server VmRSS 1 s after start, KiB.
    pub idle_kib: u64,
    /// Server memory over the export.
    pub mem: MemPeak,
    /// CPU over the export.
    pub cpu: CpuUse,
    /// Seconds since the request at each tenth of `rows_before` lines received.
    pub tenths: Vec<f64>,
    /// The newest row after the export (`event_type` of the highest `event_timestamp`).
    pub newest: String,
    /// What went wrong on the way, if anything (transport error, timeout).
    pub error: Option<String>,
}

impl ExportStep {
    /// Event lines: every line but the trailer.
    pub fn events(&self) -> u64 {
        self.lines.saturating_sub(u64::from(self.trailer))
    }

    /// Seconds of the first and of the last tenth of the events.
    pub fn first_last_tenth(&self) -> Option<(f64, f64)> {
        match self.tenths.as_slice() {
            [first, .., before_last, last] => Some((*first, last - before_last)),
            _ => None,
        }
    }
}

/// Step 3: one purge.
#[derive(Debug, Clone, Default)]
pub struct PurgeStep {
    /// Rows inserted.
    pub size: u64,
    /// Seconds of the INSERT (and chain heads, ANALYZE).
    pub insert_seconds: f64,
    /// Partitions before the purge.
    pub partitions_before: i64,
    /// Of which one UTC day long.
    pub daily_before: i64,
    /// Rows the server's rule makes expired (`event_date + 30 < today`, UTC), counted by SQL.
    pub expired: i64,
    /// Rows in partitions that end before yesterday and hold nothing but expired rows.
    pub droppable_rows: i64,
    /// Such partitions.
    pub droppable: i64,
    /// The answer's `result`.
    pub result: String,
    /// The answer's `rows_purged`.
    pub rows_purged: u64,
    /// The answer's `partitions_dropped`.
    pub partitions_dropped: u64,
    /// The answer's `seconds`.
    pub server_seconds: f64,
    /// Seconds from sending to the answer.
    pub wall: f64,
    /// CPU over the call.
    pub cpu: CpuUse,
    /// Rows left.
    pub rows_after: i64,
    /// Rows older than 31 days left (expected 0).
    pub older_left: i64,
    /// Partitions after.
    pub partitions_after: i64,
    /// Rows of `audit_chain_purges` after (the runs recorded so chains still verify).
    pub purged_runs: i64,
    /// The reply when it was not a 200 with a report.
    pub error: Option<String>,
}

/// The whole part.
#[derive(Debug, Clone, Default)]
pub struct LifecycleRun {
    /// `rows`.
    pub rows: u64,
    /// Step 1.
    pub migration: Option<MigrationStep>,
    /// Step 2.
    pub export: Option<ExportStep>,
    /// Step 3, smallest first.
    pub purges: Vec<PurgeStep>,
    /// Steps that failed, with why.
    pub failures: Vec<String>,
    /// Whether the servers had `signing.keyFile` (a key written by `datastorage keys generate`).
    pub signing_key: bool,
    /// Warnings and errors each server logged (first few).
    pub log_problems: Vec<(String, Vec<String>)>,
}

impl LifecycleRun {
    /// Large purge's server seconds ÷ the 100 k one's.
    pub fn purge_ratio(&self) -> Option<f64> {
        let small = self.purges.iter().find(|p| p.size == PURGE_SMALL)?;
        let large = self.purges.iter().rfind(|p| p.size > PURGE_SMALL)?;
        (small.error.is_none() && large.error.is_none() && small.server_seconds > 0.0)
            .then(|| large.server_seconds / small.server_seconds)
    }

    /// Large purge's wall seconds ÷ the 100 k one's.
    pub fn purge_wall_ratio(&self) -> Option<f64> {
        let small = self.purges.iter().find(|p| p.size == PURGE_SMALL)?;
        let large = self.purges.iter().rfind(|p| p.size > PURGE_SMALL)?;
        (small.error.is_none() && large.error.is_none() && small.wall > 0.0)
            .then(|| large.wall / small.wall)
    }
}

/// Writes a signing key pair with `bin keys generate` into `dir`; returns the private key's
/// path (for `signing.keyFile`: checkpoints are written only with a key from a file).
fn signing_key(bin: &Path, dir: &Path) -> Result<PathBuf> {
    let out = std::process::Command::new(bin)
        .args(["keys", "generate", "--out"])
        .arg(dir)
        .output()
        .with_context(|| format!("cannot run {} keys generate", bin.display()))?;
    if !out.status.success() {
        bail!(
            "{} keys generate failed: {}",
            bin.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(dir.join("signing.key"))
}

/// The server config of this part on `db`: `base` with the lifecycle workers on, `retention`
/// as given (YAML of its keys, indented two spaces) and `signing.keyFile` when given.
fn config_on(base: &ServerConfig, db: &Db, retention: &str, key: Option<&Path>) -> ServerConfig {
    let mut extra = format!("retention:\n{retention}");
    if let Some(k) = key {
        extra.push_str(&format!("signing:\n  keyFile: \"{}\"\n", k.display()));
    }
    ServerConfig {
        backend: Backend::Postgres {
            host: db.host.clone(),
            port: db.port,
            name: db.name.clone(),
            user: db.user.clone(),
            password: db.password.clone(),
        },
        lifecycle_workers: true,
        extra_yaml: Some(extra),
        ..base.clone()
    }
}

/// A connection without a statement timeout.
async fn long_conn(db: &Db) -> Result<PgConnection> {
    let mut c = db.try_connect().await?;
    sqlx::raw_sql("SET statement_timeout = 0")
        .execute(&mut c)
        .await?;
    Ok(c)
}

async fn drop_database(admin_url: &str, name: &str) {
    Db::drop_named(admin_url, name).await;
}

/// Runs the part: every step, on databases created through `admin_url` (dropped afterwards).
pub async fn run(
    ctx: &Ctx,
    server_bin: &Path,
    base: &ServerConfig,
    admin_url: &str,
    postmaster: Option<u32>,
    o: Opts,
) -> LifecycleRun {
    let mut run = LifecycleRun {
        rows: o.rows,
        ..LifecycleRun::default()
    };
    let key_dir = tempfile::Builder::new()
        .prefix("ds-bench-lc-key-")
        .tempdir();
    let key = match key_dir
        .as_ref()
        .map_err(|e| anyhow::anyhow!("{e}"))
        .and_then(|d| signing_key(server_bin, d.path()))
    {
        Ok(k) => Some(k),
        Err(e) => {
            run.failures.push(format!(
                "no signing key (checkpoints are not written without one): {e:#}"
            ));
            None
        }
    };
    run.signing_key = key.is_some();
    let key = key.as_deref();
    match migrate_and_export(
        ctx, server_bin, base, admin_url, postmaster, o, key, &mut run,
    )
    .await
    {
        Ok(()) => {}
        Err(e) => {
            ctx.log
                .say(format!("  lifecycle: migration/export failed: {e:#}"));
            run.failures.push(format!("migration and export: {e:#}"));
        }
    }
    drop_database(admin_url, MIGRATED).await;
    let mut sizes = vec![PURGE_SMALL.min(o.rows)];
    if o.rows > PURGE_SMALL {
        sizes.push(o.rows);
    }
    for size in sizes {
        let name = format!("datastorage_bench_lc_purge_{size}");
        match purge(
            ctx, server_bin, base, admin_url, &name, postmaster, size, key,
        )
        .await
        {
            Ok((p, problems)) => {
                run.purges.push(p);
                run.log_problems
                    .push((format!("the purge server at {size} rows"), problems));
            }
            Err(e) => {
                ctx.log
                    .say(format!("  lifecycle: purge at {size} rows failed: {e:#}"));
                run.failures.push(format!("purge at {size} rows: {e:#}"));
            }
        }
        drop_database(admin_url, &name).await;
    }
    if let Some(r) = run.purge_ratio() {
        ctx.log.say(format!(
            "  purge at {} rows ÷ at {PURGE_SMALL}: {r:.2} (server seconds), {} (wall)",
            o.rows,
            run.purge_wall_ratio()
                .map_or("–".to_owned(), |w| format!("{w:.2}"))
        ));
    }
    run
}

/// Steps 1 and 2, on one database.
#[allow(clippy::too_many_arguments)]
async fn migrate_and_export(
    ctx: &Ctx,
    server_bin: &Path,
    base: &ServerConfig,
    admin_url: &str,
    postmaster: Option<u32>,
    o: Opts,
    key: Option<&Path>,
    run: &mut LifecycleRun,
) -> Result<()> {
    let db = Db::create_named(admin_url, MIGRATED).await?;
    let mut m = MigrationStep::default();
    let all = &datastorage::db::postgres::MIGRATOR;
    let early = Migrator {
        migrations: Cow::Owned(
            all.iter()
                .filter(|x| x.version < PARTITIONS_VERSION)
                .cloned()
                .collect(),
        ),
        ignore_missing: false,
        locking: true,
        no_tx: false,
    };
    m.early = early.iter().map(|x| x.version).collect();
    m.applied = all
        .iter()
        .filter(|x| x.version >= PARTITIONS_VERSION)
        .map(|x| format!("{}_{}", x.version, x.description))
        .collect();
    let mut conn = long_conn(&db).await?;
    early
        .run(&mut conn)
        .await
        .context("cannot apply the migrations before partitioning")?;
    ctx.log.say(format!(
        "lifecycle 1/3: seeding {} rows as chains of {CHAIN_LEN} into the unpartitioned table",
        o.rows
    ));
    let t = Instant::now();
    m.chains = pg::seed(&db, &ctx.templates, 0, o.rows, CHAIN_LEN).await?;
    m.seed_seconds = t.elapsed().as_secs_f64();
    m.rows = m.chains * CHAIN_LEN as u64;
    db.try_sql(&["VACUUM (ANALYZE) audit_events", "CHECKPOINT"])
        .await?;
    m.count_before = db.scalar("SELECT count(*) FROM audit_events").await?;
    m.bytes_before = db
        .scalar("SELECT pg_total_relation_size('audit_events')")
        .await?;
    ctx.log.say(format!(
        "  seeded {} rows ({} chains) in {:.1} s, {:.0} MiB; migrating to the partitioned table",
        m.count_before,
        m.chains,
        m.seed_seconds,
        m.bytes_before as f64 / 1048576.0
    ));
    let probe = Probe {
        server: None,
        postmaster,
    };
    let c0 = CpuSnap::take(probe);
    let t = Instant::now();
    all.run(&mut conn)
        .await
        .context("cannot apply the partitioning migrations")?;
    m.seconds = t.elapsed().as_secs_f64();
    m.cpu = c0.until(&CpuSnap::take(probe), ctx.tck);
    conn.close().await.ok();
    m.count_after = db.scalar("SELECT count(*) FROM audit_events").await?;
    m.bytes_after = db
        .scalar(
            "SELECT coalesce(sum(pg_total_relation_size(partition_name::regclass)), 0)::bigint FROM audit_partitions",
        )
        .await?;
    let mut c = db.try_connect().await?;
    let parts: Vec<(String, DateTime<Utc>, DateTime<Utc>)> = sqlx::query_as(
        "SELECT partition_name, range_start, range_end FROM audit_partitions ORDER BY range_start",
    )
    .fetch_all(&mut c)
    .await?;
    c.close().await.ok();
    m.partitions = parts
        .into_iter()
        .map(|(n, s, e)| {
            (
                n,
                s.format("%Y-%m-%d").to_string(),
                e.format("%Y-%m-%d").to_string(),
            )
        })
        .collect();
    ctx.log.say(format!(
        "  migration: {:.1} s, {:.0} rows/s, count {} → {} ({}), {} partitions",
        m.seconds,
        m.count_before as f64 / m.seconds.max(1e-9),
        m.count_before,
        m.count_after,
        if m.count_before == m.count_after {
            "match"
        } else {
            "MISMATCH"
        },
        m.partitions.len()
    ));

    // verify-chain on seeded chains, on a server of the migrated database.
    let cfg = config_on(base, &db, "  startDelay: 1h\n", key);
    let srv = Server::start(server_bin, &cfg).await?;
    let ready = Instant::now();
    for _ in 0..if key.is_some() { 150 } else { 0 } {
        let n = db
            .scalar("SELECT count(*) FROM audit_checkpoints")
            .await
            .unwrap_or(0);
        if n > 0 {
            m.first_checkpoint = Some(ready.elapsed().as_secs_f64());
            m.checkpoint_chains = db
                .scalar("SELECT chains FROM audit_checkpoints ORDER BY checkpoint_id LIMIT 1")
                .await
                .ok();
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let picks: Vec<u64> = match m.chains {
        0 => Vec::new(),
        n => {
            let mut v = vec![0, n / 2, n - 1];
            v.dedup();
            v.truncate(VERIFIED_CHAINS);
            v
        }
    };
    for i in picks {
        let cid = events::cid(i);
        let t = Instant::now();
        let body = Bytes::from(format!(r#"{{"correlation_id":"{cid}"}}"#));
        let (valid, reply) = match load::post_within(
            srv.api,
            "/api/v1/audit/verify-chain",
            body,
            CALL_TIMEOUT,
        )
        .await
        {
            Ok(r) if r.status.is_success() => {
                let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
                (
                    v["is_valid"] == serde_json::Value::Bool(true),
                    format!(
                        "is_valid {}, verdict {}, total_events {}, purged_events {}",
                        v["is_valid"], v["verdict"], v["total_events"], v["purged_events"]
                    ),
                )
            }
            Ok(r) => (
                false,
                format!(
                    "HTTP {}: {}",
                    r.status,
                    String::from_utf8_lossy(&r.body)
                        .chars()
                        .take(200)
                        .collect::<String>()
                ),
            ),
            Err(e) => (false, format!("{e:#}")),
        };
        let check = ChainCheck {
            cid,
            valid,
            reply,
            seconds: t.elapsed().as_secs_f64(),
        };
        ctx.log.say(format!(
            "  verify-chain {}: {} ({:.2} s)",
            check.cid, check.reply, check.seconds
        ));
        m.checks.push(check);
    }
    if let Some(s) = m.first_checkpoint {
        ctx.log.say(format!(
            "  first checkpoint {s:.1} s after the server was ready ({} chains)",
            m.checkpoint_chains
                .map_or("?".to_owned(), |c| c.to_string())
        ));
    }
    run.log_problems.push((
        "the server after the migration".to_owned(),
        srv.log_problems(),
    ));
    srv.stop().await?;
    let rows = m.count_after;
    run.migration = Some(m);

    // 2. Export, on a freshly started server of the same database.
    ctx.log.say(format!(
        "lifecycle 2/3: NDJSON export of {rows} events on a fresh server"
    ));
    db.try_sql(&["CHECKPOINT"]).await?;
    let srv = Server::start(server_bin, &cfg).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut x = ExportStep {
        idle_kib: vm_kib(srv.pid, "VmRSS").unwrap_or(0),
        rows_before: db.scalar("SELECT count(*) FROM audit_events").await?,
        ..ExportStep::default()
    };
    let probe = Probe {
        server: Some(srv.pid),
        postmaster,
    };
    let watch = MemWatch::start(srv.pid);
    let c0 = CpuSnap::take(probe);
    let t = Instant::now();
    let streamed = tokio::time::timeout(
        EXPORT_TIMEOUT,
        stream_lines(srv.api, "/api/v1/audit/export?format=ndjson", &mut x, t),
    )
    .await;
    x.seconds = t.elapsed().as_secs_f64();
    x.cpu = c0.until(&CpuSnap::take(probe), ctx.tck);
    x.mem = watch.finish().await;
    match streamed {
        Ok(Ok(())) => {}
        Ok(Err(e)) => x.error = Some(format!("{e:#}")),
        Err(_) => x.error = Some(format!("timed out after {} s", EXPORT_TIMEOUT.as_secs())),
    }
    x.rows_after = db.scalar("SELECT count(*) FROM audit_events").await?;
    x.newest = db
        .text("SELECT event_type || ' (' || correlation_id || ')' FROM audit_events ORDER BY event_timestamp DESC LIMIT 1")
        .await
        .unwrap_or_default();
    ctx.log.say(format!(
        "  export: HTTP {}, {} event lines + {} trailer (trailer total_events {}, table {} → {} rows), {:.1} MiB in {:.1} s ({:.0} events/s, first byte {:.2} s, first/last tenth {}), server RSS idle {:.1} MiB, peak {:.1} MiB{}",
        x.status,
        x.events(),
        if x.trailer { "1" } else { "no" },
        x.trailer_events.map_or("–".to_owned(), |n| n.to_string()),
        x.rows_before,
        x.rows_after,
        x.bytes as f64 / 1048576.0,
        x.seconds,
        x.events() as f64 / x.seconds.max(1e-9),
        x.first_byte,
        x.first_last_tenth()
            .map_or("–".to_owned(), |(a, b)| format!("{a:.1} s / {b:.1} s")),
        mib(x.idle_kib),
        mib(x.mem.peak_kib),
        x.error.as_ref().map_or(String::new(), |e| format!("; {e}"))
    ));
    run.log_problems
        .push(("the export server".to_owned(), srv.log_problems()));
    srv.stop().await?;
    run.export = Some(x);
    Ok(())
}

/// GETs `path` and reads the body as it comes, counting bytes and lines, keeping only the
/// current and the last complete line.
async fn stream_lines(
    addr: SocketAddr,
    path: &str,
    x: &mut ExportStep,
    started: Instant,
) -> Result<()> {
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("cannot connect to {addr}"))?;
    stream.set_nodelay(true)?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
            .await
            .context("HTTP handshake")?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = Request::get(path)
        .header(hyper::header::HOST, addr.to_string())
        .body(Empty::new())?;
    let resp = sender.send_request(req).await?;
    x.status = resp.status().as_u16();
    let mut body = resp.into_body();
    let (mut line, mut last) = (Vec::<u8>::new(), Vec::<u8>::new());
    let tenth = (x.rows_before.max(0) as u64 / 10).max(1);
    let mut next_mark = tenth;
    let mut first = true;
    const VALID: &[u8] = b"\"hash_chain_valid\":true}";
    while let Some(frame) = body.frame().await {
        let frame = frame.context("reading the export")?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if first {
            x.first_byte = started.elapsed().as_secs_f64();
            first = false;
        }
        x.bytes += data.len() as u64;
        let mut rest = &data[..];
        while let Some(p) = rest.iter().position(|&b| b == b'\n') {
            line.extend_from_slice(&rest[..p]);
            x.lines += 1;
            if x.lines == next_mark && x.tenths.len() < 10 {
                x.tenths.push(started.elapsed().as_secs_f64());
                next_mark += tenth;
            }
            if line.ends_with(VALID) {
                x.valid_lines += 1;
            }
            std::mem::swap(&mut last, &mut line);
            line.clear();
            rest = &rest[p + 1..];
        }
        line.extend_from_slice(rest);
    }
    if !line.is_empty() {
        x.lines += 1;
        last = line;
    }
    if x.status != 200 {
        bail!(
            "HTTP {}: {}",
            x.status,
            String::from_utf8_lossy(&last)
                .chars()
                .take(300)
                .collect::<String>()
        );
    }
    let v: serde_json::Value = serde_json::from_slice(&last).unwrap_or_default();
    let trailer = &v[datastorage_api::export::TRAILER_KEY];
    x.trailer = trailer.is_object();
    x.trailer_events = trailer["total_events"].as_u64();
    Ok(())
}

/// Step 3 at one size, on database `name`.
#[allow(clippy::too_many_arguments)]
async fn purge(
    ctx: &Ctx,
    server_bin: &Path,
    base: &ServerConfig,
    admin_url: &str,
    name: &str,
    postmaster: Option<u32>,
    size: u64,
    key: Option<&Path>,
) -> Result<(PurgeStep, Vec<String>)> {
    ctx.log.say(format!(
        "lifecycle 3/3: purge of daily partitions, {size} rows over {PURGE_DAYS} days"
    ));
    let db = Db::create_named(admin_url, name).await?;
    let cfg = config_on(
        base,
        &db,
        "  partitionInterval: daily\n  startDelay: 1h\n",
        key,
    );
    // The server migrates the empty database.
    let srv = Server::start(server_bin, &cfg).await?;
    let mut p = PurgeStep {
        size,
        ..PurgeStep::default()
    };
    let t = Instant::now();
    let t0 = (Utc::now() - chrono::Duration::days(PURGE_DAYS)).trunc_subsecs(6);
    let mut conn = long_conn(&db).await?;
    for k in 0..=PURGE_DAYS {
        sqlx::query("SELECT audit_ensure_partition($1, 'daily')")
            .bind(t0 + chrono::Duration::days(k))
            .execute(&mut conn)
            .await?;
    }
    let step_us = (PURGE_DAYS * 86_400_000_000) as f64 / size.max(1) as f64;
    sqlx::query(&format!(
        "INSERT INTO audit_events (event_id, event_timestamp, event_date, version, event_type, event_category, \
         event_action, event_outcome, correlation_id, retention_days, is_sensitive, event_data, chain_sequence, \
         previous_event_hash, event_hash, hash_algorithm) \
         SELECT md5('lc-event-' || i)::uuid, ts, (ts AT TIME ZONE 'UTC')::date, '1.0', 'lifecycle.purge', 'gateway', \
                'write', 'success', 'lc-' || (i % {PURGE_CHAINS}), {PURGE_RETENTION_DAYS}, false, \
                jsonb_build_object('i', i), i / {PURGE_CHAINS} + 1, \
                CASE WHEN i < {PURGE_CHAINS} THEN '' ELSE md5((i - {PURGE_CHAINS})::text) || md5((i - {PURGE_CHAINS} + 1)::text) END, \
                md5(i::text) || md5((i + 1)::text), $3 \
         FROM (SELECT i, $1::timestamptz + make_interval(secs => i * $2::float8 / 1e6) AS ts \
               FROM generate_series(0::bigint, $4::bigint - 1) AS i) s"
    ))
    .bind(t0)
    .bind(step_us)
    .bind(datastorage_api::chain::ALGORITHM_SHA256)
    .bind(size as i64)
    .execute(&mut conn)
    .await
    .context("cannot insert the purge table")?;
    sqlx::query(&format!(
        "INSERT INTO audit_chain_heads (correlation_id, last_sequence, last_hash) \
         SELECT 'lc-' || (i % {PURGE_CHAINS}), i / {PURGE_CHAINS} + 1, md5(i::text) || md5((i + 1)::text) \
         FROM generate_series(greatest($1::bigint - {PURGE_CHAINS}, 0), $1::bigint - 1) AS i"
    ))
    .bind(size as i64)
    .execute(&mut conn)
    .await
    .context("cannot insert the chain heads")?;
    sqlx::raw_sql("ANALYZE").execute(&mut conn).await?;
    sqlx::raw_sql("CHECKPOINT").execute(&mut conn).await?;
    p.insert_seconds = t.elapsed().as_secs_f64();
    let one = |sql: &'static str| sqlx::query_scalar::<_, i64>(sql);
    p.partitions_before = one("SELECT count(*) FROM audit_partitions")
        .fetch_one(&mut conn)
        .await?;
    p.daily_before = one(
        "SELECT count(*) FROM audit_partitions WHERE range_end - range_start = interval '1 day'",
    )
    .fetch_one(&mut conn)
    .await?;
    let today = "(now() AT TIME ZONE 'UTC')::date";
    p.expired = sqlx::query_scalar(&format!(
        "SELECT count(*) FROM audit_events WHERE event_date < {today} - 1 AND event_date + retention_days < {today}"
    ))
    .fetch_one(&mut conn)
    .await?;
    let (droppable, droppable_rows): (i64, i64) = sqlx::query_as(&format!(
        "SELECT count(*), coalesce(sum((SELECT count(*) FROM audit_events e WHERE e.event_timestamp >= p.range_start AND e.event_timestamp < p.range_end)), 0)::bigint \
         FROM audit_partitions p WHERE p.range_end <= ({today} - 1)::timestamp AT TIME ZONE 'UTC' \
         AND (p.range_end AT TIME ZONE 'UTC' - interval '1 microsecond')::date + {PURGE_RETENTION_DAYS} < {today}"
    ))
    .fetch_one(&mut conn)
    .await?;
    p.droppable = droppable;
    p.droppable_rows = droppable_rows;
    ctx.log.say(format!(
        "  inserted {size} rows in {:.1} s; {} partitions ({} daily), {} expired rows, {} partitions of {} rows wholly expired",
        p.insert_seconds, p.partitions_before, p.daily_before, p.expired, p.droppable, p.droppable_rows
    ));

    let probe = Probe {
        server: Some(srv.pid),
        postmaster,
    };
    let c0 = CpuSnap::take(probe);
    let t = Instant::now();
    let reply = load::post_within(
        srv.api,
        "/api/v1/admin/retention/run",
        Bytes::from_static(b"{}"),
        CALL_TIMEOUT,
    )
    .await;
    p.wall = t.elapsed().as_secs_f64();
    p.cpu = c0.until(&CpuSnap::take(probe), ctx.tck);
    match reply {
        Ok(r) if r.status.is_success() => {
            let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
            p.result = v["result"].as_str().unwrap_or("?").to_owned();
            p.rows_purged = v["rows_purged"].as_u64().unwrap_or(0);
            p.partitions_dropped = v["partitions_dropped"].as_u64().unwrap_or(0);
            p.server_seconds = v["seconds"].as_f64().unwrap_or(0.0);
        }
        Ok(r) => {
            p.error = Some(format!(
                "HTTP {}: {}",
                r.status,
                String::from_utf8_lossy(&r.body)
                    .chars()
                    .take(300)
                    .collect::<String>()
            ))
        }
        Err(e) => p.error = Some(format!("{e:#}")),
    }
    p.rows_after = one("SELECT count(*) FROM audit_events")
        .fetch_one(&mut conn)
        .await?;
    p.older_left =
        one("SELECT count(*) FROM audit_events WHERE event_timestamp < now() - interval '31 days'")
            .fetch_one(&mut conn)
            .await?;
    p.partitions_after = one("SELECT count(*) FROM audit_partitions")
        .fetch_one(&mut conn)
        .await?;
    p.purged_runs = one("SELECT count(*) FROM audit_chain_purges")
        .fetch_one(&mut conn)
        .await?;
    conn.close().await.ok();
    ctx.log.say(format!(
        "  purge at {size} rows: {} {} rows purged, {} partitions dropped, server {:.3} s, wall {:.3} s; rows older than 31 days left {}, rows left {}, {} purged runs recorded{}",
        p.result,
        p.rows_purged,
        p.partitions_dropped,
        p.server_seconds,
        p.wall,
        p.older_left,
        p.rows_after,
        p.purged_runs,
        p.error.as_ref().map_or(String::new(), |e| format!("; {e}"))
    ));
    let problems = srv.log_problems();
    srv.stop().await?;
    Ok((p, problems))
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// The report section.
pub fn markdown(run: &LifecycleRun) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "\n## Lifecycle (issue 15)\n");
    let _ = writeln!(
        out,
        "PostgreSQL (the same throwaway cluster), each step on its own freshly created database, with a server started for the step (generated config as above, `auth.recordReads: false`) with the lifecycle workers on: the checkpoint worker at its defaults (a signed checkpoint at start, then every 5 min; {}) and `retention.startDelay: 1h`, so the only purge is the harness's `POST /api/v1/admin/retention/run`. \
         Schema measured: `audit_events` range-partitioned by `event_timestamp`, monthly partitions after the migration (the default `retention.partitionInterval`), daily partitions (`retention.partitionInterval: daily`) for the purge. \
         Sizes: `--lifecycle-rows` {} (the migrated and exported table, and the large purge). \
         *other load* is CPU used by anything but the server, PostgreSQL and this harness during the timed call, in cores (a quiet machine shows 0.00).\n",
        if run.signing_key {
            "`signing.keyFile` a key pair written by `datastorage keys generate` for this part, without which no checkpoint is written"
        } else {
            "**no** `signing.keyFile`, so no checkpoint is written"
        },
        run.rows
    );
    for f in &run.failures {
        let _ = writeln!(out, "**Failed**: {}\n", f.replace('`', "'"));
    }
    if let Some(m) = &run.migration {
        let _ = writeln!(out, "### Migration of an unpartitioned table\n");
        let _ = writeln!(
            out,
            "The migrations before `{PARTITIONS_VERSION}` ({}) applied by `sqlx::migrate::Migrator` built from `datastorage::db::postgres::MIGRATOR`'s migrations, then {} rows seeded by COPY as {} valid chains of {CHAIN_LEN} (hashes by `chain::chain_hash`, {:.1} s) into the unpartitioned table, `VACUUM (ANALYZE)`; timed: `MIGRATOR.run` applying {} on one connection with `statement_timeout = 0` (the table is renamed, every row copied into the partitioned table, the indexes built on it).\n",
            m.early.iter().map(i64::to_string).collect::<Vec<_>>().join(", "),
            m.rows,
            m.chains,
            m.seed_seconds,
            m.applied.iter().map(|a| format!("`{a}`")).collect::<Vec<_>>().join(" and ")
        );
        let _ = writeln!(
            out,
            "| rows | size before MiB | size after MiB | migration s | rows/s | count(*) before | count(*) after | counts match | partitions after | PostgreSQL CPU s | other load (cores) |\n|---:|---:|---:|---:|---:|---:|---:|---|---|---:|---:|"
        );
        let _ = writeln!(
            out,
            "| {} | {:.0} | {:.0} | {:.1} | {:.0} | {} | {} | {} | {} | {} | {:.2} |",
            m.rows,
            m.bytes_before as f64 / 1048576.0,
            m.bytes_after as f64 / 1048576.0,
            m.seconds,
            m.count_before as f64 / m.seconds.max(1e-9),
            m.count_before,
            m.count_after,
            if m.count_before == m.count_after {
                "yes"
            } else {
                "**no**"
            },
            m.partitions
                .iter()
                .map(|(n, s, e)| format!("`{n}` [{s}, {e})"))
                .collect::<Vec<_>>()
                .join(", "),
            m.cpu.pg.map_or("–".to_owned(), |c| format!("{c:.1}")),
            m.cpu.others_cores()
        );
        let _ = writeln!(
            out,
            "\nThen a server on the migrated database{}; `POST /api/v1/audit/verify-chain` on seeded chains:\n",
            match (m.first_checkpoint, m.checkpoint_chains) {
                (Some(s), Some(c)) if s < 0.3 =>
                    format!(" (its first signed checkpoint, of {c} chain heads, was written by the time it was ready)"),
                (Some(s), Some(c)) =>
                    format!(" (its first signed checkpoint, of {c} chain heads, {s:.1} s after it was ready)"),
                (Some(s), None) => format!(" (its first signed checkpoint {s:.1} s after it was ready)"),
                _ => " (no checkpoint row within 30 s of its start)".to_owned(),
            }
        );
        let _ = writeln!(
            out,
            "| chain | is_valid true | answer | s |\n|---|---|---|---:|"
        );
        for c in &m.checks {
            let _ = writeln!(
                out,
                "| `{}` | {} | {} | {:.2} |",
                c.cid,
                if c.valid { "yes" } else { "**no**" },
                c.reply.replace('|', "\\|"),
                c.seconds
            );
        }
    }
    if let Some(x) = &run.export {
        let _ = writeln!(out, "\n### Export of every event, NDJSON\n");
        let _ = writeln!(
            out,
            "`GET /api/v1/audit/export?format=ndjson` of the migrated database, on a freshly started server, read as it streams (one connection, bytes and lines counted, no body kept). *idle* is VmRSS 1 s after start; *peak* is VmHWM after a reset right before the request, never below VmRSS sampled every 10 ms. The export's own access record is committed before its first byte; the table had {} rows before and {} after (newest row after: `{}`), and *lines = events + 1* checks the event lines against the rows before. *first / last tenth* are the seconds the first and the last tenth of those events took to arrive (equal when the export's rate is flat along the table).\n",
            x.rows_before,
            x.rows_after,
            x.newest.replace('`', "'")
        );
        let _ = writeln!(
            out,
            "| events (rows before) | event lines | + trailer | trailer total_events | `hash_chain_valid` true | lines = events + 1 | MiB shipped | first byte s | first / last tenth s | time s | events/s | MiB/s | idle RSS MiB | peak RSS MiB | peak − idle MiB | peak < {EXPORT_RSS_TARGET_MIB:.0} MiB | server CPU s | PostgreSQL CPU s | other load (cores) |\n|---:|---:|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|"
        );
        let events = x.events();
        let lines_ok = x.trailer && events as i64 == x.rows_before;
        let peak = mib(x.mem.peak_kib);
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {:.1} | {:.2} | {} | {:.1} | {:.0} | {:.1} | {:.1} | {:.1} | {:+.1} | {} | {} | {} | {:.2} |",
            x.rows_before,
            events,
            if x.trailer { "yes" } else { "**no**" },
            x.trailer_events.map_or("–".to_owned(), |n| n.to_string()),
            x.valid_lines,
            if lines_ok { "yes" } else { "**no**" },
            x.bytes as f64 / 1048576.0,
            x.first_byte,
            x.first_last_tenth()
                .map_or("–".to_owned(), |(a, b)| format!("{a:.1} / {b:.1}")),
            x.seconds,
            events as f64 / x.seconds.max(1e-9),
            x.bytes as f64 / 1048576.0 / x.seconds.max(1e-9),
            mib(x.idle_kib),
            peak,
            peak - mib(x.idle_kib),
            if peak < EXPORT_RSS_TARGET_MIB {
                "**PASS**"
            } else {
                "**SHORT**"
            },
            x.cpu.server.map_or("–".to_owned(), |c| format!("{c:.1}")),
            x.cpu.pg.map_or("–".to_owned(), |c| format!("{c:.1}")),
            x.cpu.others_cores()
        );
        if let Some(e) = &x.error {
            let _ = writeln!(out, "\nThe export failed: {}", e.replace('`', "'"));
        }
    }
    if !run.purges.is_empty() {
        let _ = writeln!(out, "\n### Purge dropping partitions\n");
        let _ = writeln!(
            out,
            "On a database the server migrated (empty), `audit_ensure_partition(t, 'daily')` for each of the {} UTC days from {PURGE_DAYS} days ago to today, then S rows inserted by one `INSERT … SELECT generate_series`, timestamps evenly spread over the last {PURGE_DAYS} days, `retention_days` {PURGE_RETENTION_DAYS}, {PURGE_CHAINS} chains (`lc-0`…, sequences in time order, placeholder 64-hex hashes), their chain heads, `ANALYZE`; timed: one `POST /api/v1/admin/retention/run`. \
             The server's rule: an event expires when `event_date + retention_days < today` (UTC), and a partition is dropped whole when every event in it has expired, so the expired rows are exactly those of whole partitions; *expired (SQL)* and *in wholly expired partitions* are counted before the call. The migration of the empty database creates the current month's partition monthly; it stays so (*partitions before* counts all, daily ones in brackets), and holds only today's rows, which are not expired.\n",
            PURGE_DAYS + 1
        );
        let _ = writeln!(
            out,
            "| S rows | insert s | partitions before (daily) | expired (SQL) | in wholly expired partitions (partitions) | result | rows purged | partitions dropped | server s | wall s | rows left | older than 31 days left | partitions after | runs in audit_chain_purges | server CPU s | PostgreSQL CPU s | other load (cores) |\n|---:|---:|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        for p in &run.purges {
            let _ = writeln!(
                out,
                "| {} | {:.1} | {} ({}) | {} | {} ({}) | {} | {} | {} | {:.3} | {:.3} | {} | {} | {} | {} | {} | {} | {:.2} |",
                p.size,
                p.insert_seconds,
                p.partitions_before,
                p.daily_before,
                p.expired,
                p.droppable_rows,
                p.droppable,
                p.error
                    .as_ref()
                    .map_or(p.result.clone(), |e| format!("**{}**", e.replace('|', "\\|"))),
                p.rows_purged,
                p.partitions_dropped,
                p.server_seconds,
                p.wall,
                p.rows_after,
                if p.older_left == 0 {
                    "0".to_owned()
                } else {
                    format!("**{}**", p.older_left)
                },
                p.partitions_after,
                p.purged_runs,
                p.cpu.server.map_or("–".to_owned(), |c| format!("{c:.2}")),
                p.cpu.pg.map_or("–".to_owned(), |c| format!("{c:.2}")),
                p.cpu.others_cores()
            );
        }
        match (run.purge_ratio(), run.purges.last()) {
            (Some(r), Some(large)) => {
                let _ = writeln!(
                    out,
                    "\nThe purge at {} rows took **{r:.2}×** the server seconds of the one at {PURGE_SMALL} ({}× the rows; wall {}×).",
                    large.size,
                    large.size / PURGE_SMALL,
                    run.purge_wall_ratio()
                        .map_or("–".to_owned(), |w| format!("{w:.2}"))
                );
            }
            _ => {
                let _ = writeln!(
                    out,
                    "\nOnly one size ran (rows ≤ {PURGE_SMALL}), or a run failed: no ratio."
                );
            }
        }
    }
    for (who, lines) in &run.log_problems {
        if let Some(first) = lines.first() {
            let _ = writeln!(
                out,
                "\n{} logged {} warning/error lines{}; first: `{}`",
                capitalize(who),
                lines.len(),
                if lines.len() >= 20 { " or more" } else { "" },
                first.replace('`', "'")
            );
        }
    }
    out
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    c.next().map_or(String::new(), |f| {
        f.to_uppercase().collect::<String>() + c.as_str()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_retention_section_is_written_once_with_the_workers_on() {
        let base = ServerConfig::new(Backend::Sqlite("/tmp/x.db".into()), 5, None);
        let db = Db {
            host: "127.0.0.1".to_owned(),
            port: 5432,
            user: "postgres".to_owned(),
            password: None,
            name: "x".to_owned(),
        };
        let key = Path::new("/tmp/k/signing.key");
        let cfg = config_on(
            &base,
            &db,
            "  partitionInterval: daily\n  startDelay: 1h\n",
            Some(key),
        );
        let y = crate::server::config_yaml(&cfg, 1, 2);
        assert_eq!(y.matches("\nretention:\n").count(), 1, "{y}");
        assert!(y.ends_with(
            "retention:\n  partitionInterval: daily\n  startDelay: 1h\nsigning:\n  keyFile: \"/tmp/k/signing.key\"\n"
        ));
        assert!(!y.contains("enabled: false"), "{y}");
        assert!(y.contains("  driver: postgres\n"));
    }

    #[test]
    fn the_ratio_needs_both_sizes_and_the_report_renders_without_results() {
        let p = |size, server_seconds| PurgeStep {
            size,
            server_seconds,
            wall: server_seconds,
            ..PurgeStep::default()
        };
        let mut run = LifecycleRun {
            purges: vec![p(PURGE_SMALL, 0.5)],
            ..LifecycleRun::default()
        };
        assert!(run.purge_ratio().is_none());
        run.purges.push(p(10 * PURGE_SMALL, 1.0));
        assert_eq!(run.purge_ratio(), Some(2.0));
        assert!(markdown(&run).contains("**2.00×**"));
        assert!(markdown(&LifecycleRun::default()).contains("## Lifecycle (issue 15)"));
        let x = ExportStep {
            tenths: (1..=10).map(f64::from).collect(),
            ..ExportStep::default()
        };
        assert_eq!(x.first_last_tenth(), Some((1.0, 1.0)));
    }
}
