//! PostgreSQL: a throwaway cluster, the ceiling workloads (multi-row INSERT, COPY, pgbench), and
//! seeding the query table with real, chained rows.

use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};
use datastorage_testkit::PgDb;
use sqlx::postgres::PgConnection;
use sqlx::Connection;

use crate::events::{cid, now_texts, Gen, Templates, ROW_COLUMNS};
use crate::sys::{CpuSnap, CpuUse, Probe};

/// Name of the scratch table the ceiling workloads write to.
pub const CEILING_TABLE: &str = "bench_ceiling";

/// The benchmark database: a [`PgDb`] of the test kit.
pub type Db = PgDb;

/// Queries the harness runs on its database.
pub trait DbExt {
    /// One integer.
    async fn scalar(&self, sql: &str) -> Result<i64>;
    /// One text.
    async fn text(&self, sql: &str) -> Result<String>;
    /// (Re)creates the scratch ceiling table: the same columns, defaults, constraints and
    /// indexes as `audit_events`, no triggers.
    async fn reset_ceiling_table(&self) -> Result<()>;
}

impl DbExt for PgDb {
    async fn scalar(&self, sql: &str) -> Result<i64> {
        let mut c = self.try_connect().await?;
        let v: i64 = sqlx::query_scalar(sql).fetch_one(&mut c).await?;
        c.close().await.ok();
        Ok(v)
    }

    async fn text(&self, sql: &str) -> Result<String> {
        let mut c = self.try_connect().await?;
        let v: String = sqlx::query_scalar(sql).fetch_one(&mut c).await?;
        c.close().await.ok();
        Ok(v)
    }

    async fn reset_ceiling_table(&self) -> Result<()> {
        self.try_sql(&[
            &format!("DROP TABLE IF EXISTS {CEILING_TABLE}"),
            &format!("CREATE TABLE {CEILING_TABLE} (LIKE audit_events INCLUDING ALL)"),
            "CHECKPOINT",
        ])
        .await
    }
}

/// What a ceiling workload measured.
#[derive(Debug, Clone)]
pub struct Ceiling {
    /// What ran.
    pub name: String,
    /// Concurrent sessions.
    pub clients: usize,
    /// Rows (or transactions) per second.
    pub rate: f64,
    /// Mean latency per statement or transaction, ms.
    pub latency_ms: f64,
    /// CPU over the window.
    pub cpu: CpuUse,
    /// Failures reported.
    pub failures: u64,
}

/// How ceiling rows are written.
#[derive(Debug, Clone, Copy)]
pub enum Method {
    /// `INSERT ... VALUES (...), (...)` with bound parameters, this many rows per statement.
    MultiRow(usize),
    /// `COPY ... FROM STDIN` (text), this many rows per COPY.
    Copy(usize),
}

fn insert_sql(rows: usize) -> String {
    let cols = ROW_COLUMNS.len();
    let mut sql = format!(
        "INSERT INTO {CEILING_TABLE} ({}) VALUES ",
        ROW_COLUMNS.join(", ")
    );
    for r in 0..rows {
        if r > 0 {
            sql.push(',');
        }
        sql.push('(');
        for (c, name) in ROW_COLUMNS.iter().enumerate() {
            if c > 0 {
                sql.push(',');
            }
            let n = r * cols + c + 1;
            if *name == "event_data" {
                sql.push_str(&format!("${n}::jsonb"));
            } else {
                sql.push_str(&format!("${n}"));
            }
        }
        sql.push(')');
    }
    sql
}

async fn write_statement(
    conn: &mut PgConnection,
    method: Method,
    sql: &str,
    gen: &mut Gen,
    seq: &AtomicI64,
) -> Result<u64> {
    match method {
        Method::MultiRow(n) => {
            let mut q = sqlx::query(sql);
            for _ in 0..n {
                let r = gen.row(seq.fetch_add(1, Ordering::Relaxed));
                let e = r.event;
                q = q
                    .bind(e.event_id)
                    .bind(e.event_timestamp)
                    .bind(e.event_timestamp.date_naive())
                    .bind(e.correlation_id)
                    .bind(r.seq)
                    .bind(r.data)
                    .bind(e.version)
                    .bind(e.event_type)
                    .bind(e.event_category.as_str())
                    .bind(e.event_action)
                    .bind(e.event_outcome.as_str())
                    .bind(e.actor_type)
                    .bind(e.actor_id)
                    .bind(e.actor_ip)
                    .bind(e.resource_type)
                    .bind(e.resource_id)
                    .bind(e.parent_event_id)
                    .bind(e.parent_event_date)
                    .bind(e.namespace)
                    .bind(e.cluster_id)
                    .bind(e.severity)
                    .bind(e.duration_ms)
                    .bind(e.error_code)
                    .bind(e.error_message)
                    .bind(e.retention_days)
                    .bind(e.is_sensitive)
                    .bind(r.previous_hash)
                    .bind(r.hash)
                    .bind(datastorage_api::chain::ALGORITHM_SHA256);
            }
            Ok(q.execute(&mut *conn).await?.rows_affected())
        }
        Method::Copy(n) => {
            let (ts, date) = now_texts();
            let mut buf = String::with_capacity(n * 1300);
            for _ in 0..n {
                gen.copy_row(seq.fetch_add(1, Ordering::Relaxed), &ts, &date, &mut buf);
            }
            let mut copy = conn.copy_in_raw(sql).await?;
            copy.send(buf.into_bytes()).await?;
            Ok(copy.finish().await?)
        }
    }
}

/// Writes ceiling rows with `streams` sessions for `warmup + duration`; counts rows whose
/// statement committed inside the measured window.
#[allow(clippy::too_many_arguments)]
pub async fn ceiling_write(
    db: &Db,
    method: Method,
    streams: usize,
    warmup: Duration,
    duration: Duration,
    templates: &Arc<Templates>,
    cids: u64,
    probe: Probe,
    tck: f64,
) -> Result<Ceiling> {
    let sql = match method {
        Method::MultiRow(n) => insert_sql(n),
        Method::Copy(_) => format!(
            "COPY {CEILING_TABLE} ({}) FROM STDIN",
            ROW_COLUMNS.join(", ")
        ),
    };
    let seq = Arc::new(AtomicI64::new(1));
    let begin = Instant::now();
    let measure_from = begin + warmup;
    let end = measure_from + duration;
    let mut tasks = Vec::new();
    for i in 0..streams {
        let (db, sql, seq) = (db.clone(), sql.clone(), seq.clone());
        let mut gen = Gen::new(templates.clone(), cids, 0xc0de + i as u64);
        tasks.push(tokio::spawn(async move {
            let mut conn = db.try_connect().await?;
            let (mut rows, mut stmts, mut busy) = (0u64, 0u64, Duration::ZERO);
            // Bounded by time, and by a statement count as a backstop.
            for _ in 0..1_000_000 {
                if Instant::now() >= end {
                    break;
                }
                let t0 = Instant::now();
                let n = write_statement(&mut conn, method, &sql, &mut gen, &seq).await?;
                let done = Instant::now();
                if done >= measure_from && done <= end {
                    rows += n;
                    stmts += 1;
                    busy += done - t0;
                }
            }
            conn.close().await.ok();
            anyhow::Ok((rows, stmts, busy))
        }));
    }
    tokio::time::sleep_until(measure_from.into()).await;
    let c0 = CpuSnap::take(probe);
    tokio::time::sleep_until(end.into()).await;
    let c1 = CpuSnap::take(probe);
    let (mut rows, mut stmts, mut busy) = (0u64, 0u64, Duration::ZERO);
    for t in tasks {
        let (r, s, b) = t.await??;
        rows += r;
        stmts += s;
        busy += b;
    }
    let name = match method {
        Method::MultiRow(n) => format!("multi-row INSERT, {n} rows/statement"),
        Method::Copy(n) => format!("COPY, {n} rows/COPY"),
    };
    Ok(Ceiling {
        name,
        clients: streams,
        rate: rows as f64 / duration.as_secs_f64(),
        latency_ms: if stmts > 0 {
            busy.as_secs_f64() * 1000.0 / stmts as f64
        } else {
            0.0
        },
        cpu: c0.until(&c1, tck),
        failures: 0,
    })
}

/// A pgbench script value: a SQL string literal, refusing text pgbench would read as a
/// variable (`:name`).
fn sql_literal(s: &str) -> Result<String> {
    let b = s.as_bytes();
    for (i, &c) in b.iter().enumerate() {
        if c == b':'
            && b.get(i + 1)
                .is_some_and(|n| n.is_ascii_alphanumeric() || *n == b'_')
        {
            bail!("pgbench would read {s:?} as holding a variable");
        }
    }
    Ok(format!("'{}'", s.replace('\'', "''")))
}

fn opt_literal(v: Option<&str>) -> Result<String> {
    v.map_or(Ok("NULL".to_owned()), sql_literal)
}

/// The pgbench script of a prepared single-row INSERT of template 0 into the ceiling table:
/// fresh id, correlation id from the pool, unique sequence, and `event_data` built per
/// execution so PostgreSQL parses its JSON every time, as it does for a real client.
pub fn pgbench_insert_script(templates: &Templates, cids: u64) -> Result<String> {
    let t = &templates.0[1];
    let e = &t.validated;
    let mut data = serde_json::to_string(&e.event_data)?;
    data = data.replace("\":", "\": ");
    data.pop(); // the closing brace; the sequence is appended per execution
    let cols = [
        "event_id",
        "event_timestamp",
        "event_date",
        "correlation_id",
        "chain_sequence",
        "event_data",
        "version",
        "event_type",
        "event_category",
        "event_action",
        "event_outcome",
        "actor_type",
        "actor_id",
        "actor_ip",
        "resource_type",
        "resource_id",
        "namespace",
        "cluster_id",
        "severity",
        "duration_ms",
        "retention_days",
        "is_sensitive",
        "previous_event_hash",
        "event_hash",
        "hash_algorithm",
    ];
    let values = [
        "gen_random_uuid()".to_owned(),
        "now()".to_owned(),
        "current_date".to_owned(),
        "'cid-' || :c::text".to_owned(),
        ":s".to_owned(),
        format!(
            "({} || ', \"seq\": ' || :s::text || '}}')::jsonb",
            sql_literal(&data)?
        ),
        sql_literal(&e.version)?,
        sql_literal(&e.event_type)?,
        sql_literal(e.event_category.as_str())?,
        sql_literal(&e.event_action)?,
        sql_literal(e.event_outcome.as_str())?,
        opt_literal(e.actor_type.as_deref())?,
        opt_literal(e.actor_id.as_deref())?,
        opt_literal(e.actor_ip.as_deref())?,
        opt_literal(e.resource_type.as_deref())?,
        opt_literal(e.resource_id.as_deref())?,
        opt_literal(e.namespace.as_deref())?,
        opt_literal(e.cluster_id.as_deref())?,
        opt_literal(e.severity.as_deref())?,
        e.duration_ms.map_or("NULL".to_owned(), |d| d.to_string()),
        e.retention_days.to_string(),
        e.is_sensitive.to_string(),
        sql_literal(&t.fake_hash)?,
        sql_literal(&t.fake_hash)?,
        sql_literal(datastorage_api::chain::ALGORITHM_SHA256)?,
    ];
    Ok(format!(
        "\\set c random(0, {})\n\\set s random(1, 4000000000000000000)\nINSERT INTO {CEILING_TABLE} ({}) VALUES ({});\n",
        cids.max(1) - 1,
        cols.join(", "),
        values.join(", ")
    ))
}

/// The pgbench script of the prepared page query the server runs for
/// `?correlation_id=X&limit=50` (same columns, order and limit + 1).
pub fn pgbench_select_script(cids: u64) -> String {
    let cols: Vec<&str> = ROW_COLUMNS.iter().copied().chain(["created_at"]).collect();
    format!(
        "\\set c random(0, {})\nSELECT {} FROM audit_events WHERE correlation_id = 'cid-' || :c::text ORDER BY event_timestamp DESC, event_id DESC LIMIT 51;\n",
        cids.max(1) - 1,
        cols.join(", ")
    )
}

/// pgbench's summary numbers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PgbenchSummary {
    /// Transactions per second, without connection time.
    pub tps: f64,
    /// Mean latency, ms.
    pub latency_ms: f64,
    /// Failed transactions.
    pub failed: u64,
}

/// Reads pgbench's stdout.
pub fn parse_pgbench(out: &str) -> Option<PgbenchSummary> {
    let num = |prefix: &str| {
        out.lines()
            .find(|l| l.trim_start().starts_with(prefix))
            .and_then(|l| l.split_once('='))
            .and_then(|(_, v)| v.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
    };
    let failed = out
        .lines()
        .find(|l| l.starts_with("number of failed transactions"))
        .and_then(|l| l.split_once(':'))
        .and_then(|(_, v)| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Some(PgbenchSummary {
        tps: num("tps")?,
        latency_ms: num("latency average").unwrap_or(0.0),
        failed,
    })
}

/// Runs pgbench with `script` (`-M prepared -c clients -j min(2, clients) -T secs`).
#[allow(clippy::too_many_arguments)]
pub async fn pgbench(
    bin: &Path,
    db: &Db,
    name: &str,
    script: &str,
    clients: usize,
    secs: u64,
    probe: Probe,
    tck: f64,
) -> Result<Ceiling> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("script.sql");
    std::fs::write(&file, script)?;
    let mut cmd = tokio::process::Command::new(bin.join("pgbench"));
    cmd.args(["-n", "-M", "prepared", "-f"])
        .arg(&file)
        .args(["-c", &clients.to_string()])
        .args(["-j", &clients.min(2).to_string()])
        .args(["-T", &secs.max(1).to_string()])
        .args(["-h", &db.host, "-p", &db.port.to_string(), "-U", &db.user])
        .arg(&db.name)
        .kill_on_drop(true);
    if let Some(p) = &db.password {
        cmd.env("PGPASSWORD", p);
    }
    let c0 = CpuSnap::take(probe);
    let out = tokio::time::timeout(Duration::from_secs(secs + 120), cmd.output())
        .await
        .context("pgbench did not finish")??;
    let c1 = CpuSnap::take(probe);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let Some(s) = parse_pgbench(&stdout).filter(|_| out.status.success()) else {
        bail!(
            "pgbench {name} failed: {}\n{stdout}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    Ok(Ceiling {
        name: name.to_owned(),
        clients,
        rate: s.tps,
        latency_ms: s.latency_ms,
        cpu: c0.until(&c1, tck),
        failures: s.failed,
    })
}

/// Rows of one chain the seeder builds at a time.
const SEED_PIECE: i64 = 1000;

/// When seeded chains begin: chain `i` of `n` at `from + span × i / n`; its events follow
/// 1.5 s apart (plus up to 1 s), in sequence order.
#[derive(Debug, Clone, Copy)]
pub struct Spread {
    /// Start of the first chain.
    pub from: DateTime<Utc>,
    /// Time from the first chain's start to the last one's.
    pub span: chrono::Duration,
}

impl Spread {
    /// Every chain from `from`.
    pub fn at(from: DateTime<Utc>) -> Self {
        Self {
            from,
            span: chrono::Duration::zero(),
        }
    }

    /// The start of chain `i` of `n`.
    pub fn start(&self, i: u64, n: u64) -> DateTime<Utc> {
        let micros = self.span.num_microseconds().unwrap_or(0) as i128;
        let off = micros * i128::from(i) / i128::from(n.max(1));
        self.from + chrono::Duration::microseconds(off as i64)
    }
}

/// Adds valid chains of `chain_len` rows for correlation ids `cid-<first>..` until `rows` rows
/// are added, with their `audit_chain_heads`, through two COPY streams; every chain begins 30
/// days ago. Returns chains added.
pub async fn seed(
    db: &Db,
    templates: &Arc<Templates>,
    first: u64,
    rows: u64,
    chain_len: i64,
) -> Result<u64> {
    let from = Utc::now() - chrono::Duration::days(30);
    seed_spread(db, templates, first, rows, chain_len, Spread::at(from)).await
}

/// Creates the monthly partitions of `audit_events` (the server's default
/// `retention.partitionInterval`) that the times from `from` to `to` fall in, when the table is
/// partitioned; the unpartitioned table of earlier migrations (the lifecycle part seeds one)
/// has no `audit_ensure_partition` and is left alone. COPY fails on a row no partition holds.
async fn ensure_partitions(db: &Db, from: DateTime<Utc>, to: DateTime<Utc>) -> Result<()> {
    let (from, to) = (from.to_rfc3339(), to.to_rfc3339());
    db.try_sql(&[&format!(
        "DO $$ BEGIN \
         IF to_regprocedure('audit_ensure_partition(timestamptz, text)') IS NOT NULL THEN \
         PERFORM audit_ensure_partition(d, 'monthly') FROM generate_series('{from}'::timestamptz, '{to}'::timestamptz, interval '1 day') AS d; \
         PERFORM audit_ensure_partition('{to}'::timestamptz, 'monthly'); \
         END IF; END $$"
    )])
    .await
}

/// [`seed`], with the chains' starts spread as `spread` says; the partitions their events
/// fall in are created first.
pub async fn seed_spread(
    db: &Db,
    templates: &Arc<Templates>,
    first: u64,
    rows: u64,
    chain_len: i64,
    spread: Spread,
) -> Result<u64> {
    let chains = rows.div_ceil(chain_len as u64);
    // The last chain's last event: 1.5 s per event after its start, plus up to 1 s.
    let last = spread.start(chains.saturating_sub(1), chains)
        + chrono::Duration::milliseconds(chain_len * 1500 + 1000);
    ensure_partitions(db, spread.from, last).await?;
    let streams = 2u64;
    let mut tasks = Vec::new();
    for s in 0..streams {
        let (db, templates) = (db.clone(), templates.clone());
        let (lo, hi) = (
            first + chains * s / streams,
            first + chains * (s + 1) / streams,
        );
        tasks.push(tokio::spawn(async move {
            // Rows are built on a blocking thread (hashing is CPU work) and streamed in chunks.
            let (tx, mut rx) = tokio::sync::mpsc::channel::<(String, String)>(4);
            let producer = tokio::task::spawn_blocking(move || {
                let mut gen = Gen::new(templates, 1, 0x5eed + lo);
                let (mut rows, mut heads) = (String::new(), String::new());
                for n in lo..hi {
                    let c = cid(n);
                    let start = spread.start(n - first, chains);
                    let mut hash = String::new();
                    // A long chain goes out in pieces, so memory stays flat whatever its length.
                    let mut first_seq = 1;
                    while first_seq <= chain_len {
                        let last = (first_seq + SEED_PIECE - 1).min(chain_len);
                        gen.chain_rows(&c, first_seq..=last, &mut hash, start, &mut rows);
                        first_seq = last + 1;
                        if first_seq > chain_len {
                            heads.push_str(&format!("{c}\t{chain_len}\t{hash}\n"));
                        }
                        if rows.len() > 2 << 20 {
                            let chunk = (std::mem::take(&mut rows), std::mem::take(&mut heads));
                            if tx.blocking_send(chunk).is_err() {
                                return;
                            }
                        }
                    }
                }
                let _ = tx.blocking_send((rows, heads));
            });
            let mut conn = db.try_connect().await?;
            let mut tx = conn.begin().await?;
            let mut events = tx
                .copy_in_raw(&format!(
                    "COPY audit_events ({}) FROM STDIN",
                    ROW_COLUMNS.join(", ")
                ))
                .await?;
            let mut all_heads = String::new();
            while let Some((rows, heads)) = rx.recv().await {
                events.send(rows.into_bytes()).await?;
                all_heads.push_str(&heads);
            }
            events.finish().await?;
            let mut h = tx
                .copy_in_raw(
                    "COPY audit_chain_heads (correlation_id, last_sequence, last_hash) FROM STDIN",
                )
                .await?;
            h.send(all_heads.into_bytes()).await?;
            h.finish().await?;
            tx.commit().await?;
            producer.await?;
            conn.close().await.ok();
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(chains)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pgbench_output_parses() {
        let out = "transaction type: x.sql\nscaling factor: 1\nnumber of clients: 16\nnumber of transactions actually processed: 1000\nnumber of failed transactions: 0 (0.000%)\nlatency average = 2.051 ms\ninitial connection time = 12.3 ms\ntps = 7801.123456 (without initial connection time)\n";
        let s = parse_pgbench(out).unwrap();
        assert_eq!(
            s,
            PgbenchSummary {
                tps: 7801.123456,
                latency_ms: 2.051,
                failed: 0
            }
        );
        assert!(parse_pgbench("nothing").is_none());
    }

    #[test]
    fn scripts_hold_no_accidental_pgbench_variables() {
        let t = Templates::build().unwrap();
        let s = pgbench_insert_script(&t, 100).unwrap();
        assert!(s.contains("random(0, 99)"));
        let sql = s.lines().nth(2).unwrap();
        // Only :c and :s are variables; `::jsonb` is a cast.
        let vars: Vec<&str> = sql
            .match_indices(':')
            .filter(|(i, _)| {
                let b = sql.as_bytes();
                b.get(i + 1).is_some_and(|c| c.is_ascii_alphanumeric())
                    && (*i == 0 || b[i - 1] != b':')
            })
            .map(|(i, _)| &sql[i..i + 2])
            .collect();
        assert!(vars.iter().all(|v| *v == ":c" || *v == ":s"), "{vars:?}");
        assert!(sql_literal("a:b").is_err());
        assert_eq!(sql_literal("it's").unwrap(), "'it''s'");
        assert!(pgbench_select_script(10).contains("LIMIT 51"));
    }

    #[test]
    fn insert_sql_numbers_every_parameter() {
        let sql = insert_sql(2);
        assert!(sql.contains(&format!("${}", 2 * ROW_COLUMNS.len())));
        assert!(!sql.contains(&format!("${}", 2 * ROW_COLUMNS.len() + 1)));
        assert_eq!(sql.matches("::jsonb").count(), 2);
    }
}
