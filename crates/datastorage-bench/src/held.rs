//! A held chain: one PostgreSQL session holds a chain head (`SELECT … FOR UPDATE` in an open
//! transaction) for the whole scenario while writers of other chains run the single-event load,
//! measured beside the same load with nothing held; a few writes to the held chain meanwhile
//! show what its writers get.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use sqlx::Connection as _;

use crate::events::Gen;
use crate::load::{self, Work};
use crate::pg::{Db, DbExt as _};
use crate::report::Scenario;
use crate::server::Server;
use crate::sys::Probe;
use crate::Ctx;

/// The chain the scenario holds; the load draws its chains from `cid-<n>`, so never this one.
pub const HELD_CID: &str = "bench-held-chain";

/// One write to the held chain.
#[derive(Debug, Clone)]
pub struct HeldWrite {
    /// Status (with the 503 reason), or the transport failure.
    pub reply: String,
    /// Seconds after the hold began that it was sent.
    pub sent_at: f64,
    /// Seconds after the hold began that its answer was read.
    pub answered_at: f64,
}

/// The held-chain scenario.
#[derive(Debug, Clone)]
pub struct HeldRun {
    /// Seconds the head was held.
    pub hold: f64,
    /// Warm-up seconds of each load window.
    pub warmup: f64,
    /// `database.lockTimeout`, `database.statementTimeout` and `server.writeTimeout`, seconds.
    pub wait_limit: f64,
    /// `database.maxOpenConns`.
    pub max_open_conns: u32,
    /// The load with nothing held.
    pub baseline: Scenario,
    /// The same load while the head was held.
    pub held: Scenario,
    /// Writes to the held chain during the hold.
    pub writes: Vec<HeldWrite>,
    /// Seconds after the hold began that it was released.
    pub released_at: f64,
    /// Backends waiting for a lock, sampled in the middle of the held window.
    pub lock_waiters: Option<i64>,
    /// Verification of the held chain afterwards.
    pub chain_check: String,
    /// Server VmHWM at the end, KiB.
    pub hwm_kib: Option<u64>,
    /// Warnings and errors the server logged (first few).
    pub log_problems: Vec<String>,
}

impl HeldRun {
    /// p99 with the head held ÷ p99 with nothing held.
    pub fn p99_ratio(&self) -> Option<f64> {
        let base = self.baseline.outcome.ms(0.99);
        (base > 0.0).then(|| self.held.outcome.ms(0.99) / base)
    }
}

/// Window lengths for a hold of `hold`: (warm-up, measured). The measured window ends a
/// second before the release, so every counted request ran while the head was held.
pub fn windows(hold: Duration, warmup: Duration) -> (Duration, Duration) {
    let warmup = warmup.min(hold / 4);
    let measured = hold
        .saturating_sub(warmup)
        .saturating_sub(Duration::from_secs(1))
        .max(Duration::from_millis(500));
    (warmup, measured)
}

/// Runs the scenario on `server`, which must run with a `wait_limit` above `hold`.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    ctx: &Ctx,
    server: &Server,
    db: &Db,
    probe: Probe,
    hold: Duration,
    warmup: Duration,
    wait_limit: Duration,
    clients: usize,
    writes: usize,
    max_open_conns: u32,
) -> Result<HeldRun> {
    let mut gen = Gen::new(ctx.templates.clone(), 1, 0x4e1d);
    // The head must exist to be held: one write creates it.
    let first = load::post_within(
        server.api,
        "/api/v1/audit/events",
        gen.single_on(HELD_CID),
        load::REQUEST_TIMEOUT,
    )
    .await?;
    ensure!(
        first.status.is_success(),
        "the first write to {HELD_CID} answered {}",
        first.kind()
    );
    let (warmup, measured) = windows(hold, warmup);
    let rows = || async { db.scalar("SELECT count(*) FROM audit_events").await.ok() };

    ctx.log
        .say(format!("  nothing held: single POST @{clients}"));
    db.try_sql(&["CHECKPOINT"]).await?;
    let baseline = ctx
        .scenario(
            server,
            probe,
            Work::Single,
            clients,
            warmup,
            measured,
            rows().await,
        )
        .await;

    db.try_sql(&["CHECKPOINT"]).await?;
    let table_rows = rows().await;
    let mut holder = db.try_connect().await?;
    sqlx::query("BEGIN").execute(&mut holder).await?;
    sqlx::query("SELECT last_sequence FROM audit_chain_heads WHERE correlation_id = $1 FOR UPDATE")
        .bind(HELD_CID)
        .fetch_one(&mut holder)
        .await
        .context("cannot lock the held chain's head")?;
    let t0 = Instant::now();
    ctx.log.say(format!(
        "  {HELD_CID} held for {:.0} s: single POST @{clients} on other chains, {writes} writes to the held chain",
        hold.as_secs_f64()
    ));
    let patience = hold + wait_limit + Duration::from_secs(30);
    let tasks: Vec<_> = (0..writes)
        .map(|_| {
            let (addr, body) = (server.api, gen.single_on(HELD_CID));
            tokio::spawn(async move {
                tokio::time::sleep_until((t0 + warmup).into()).await;
                let sent_at = t0.elapsed().as_secs_f64();
                let reply = load::post_within(addr, "/api/v1/audit/events", body, patience).await;
                HeldWrite {
                    reply: match reply {
                        Ok(r) => r.kind(),
                        Err(e) => format!("{e:#}"),
                    },
                    sent_at,
                    answered_at: t0.elapsed().as_secs_f64(),
                }
            })
        })
        .collect();
    let sampler = {
        let db = db.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until((t0 + warmup + measured / 2).into()).await;
            db.scalar(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()",
            )
            .await
            .ok()
        })
    };
    let held = ctx
        .scenario(
            server,
            probe,
            Work::Single,
            clients,
            warmup,
            measured,
            table_rows,
        )
        .await;
    tokio::time::sleep_until((t0 + hold).into()).await;
    sqlx::query("COMMIT").execute(&mut holder).await?;
    let released_at = t0.elapsed().as_secs_f64();
    holder.close().await.ok();
    let mut done = Vec::with_capacity(writes);
    for t in tasks {
        if let Ok(w) = t.await {
            done.push(w);
        }
    }
    let lock_waiters = sampler.await.ok().flatten();
    Ok(HeldRun {
        hold: hold.as_secs_f64(),
        warmup: warmup.as_secs_f64(),
        wait_limit: wait_limit.as_secs_f64(),
        max_open_conns,
        baseline,
        held,
        writes: done,
        released_at,
        lock_waiters,
        chain_check: crate::verify_chain(server.api, HELD_CID).await,
        hwm_kib: server.hwm_kib(),
        log_problems: server.log_problems(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_measured_window_ends_before_the_release() {
        let (w, m) = windows(Duration::from_secs(30), Duration::from_secs(3));
        assert_eq!((w, m), (Duration::from_secs(3), Duration::from_secs(26)));
        let (w, m) = windows(Duration::from_secs(5), Duration::from_secs(1));
        assert_eq!((w, m), (Duration::from_secs(1), Duration::from_secs(3)));
        let (w, m) = windows(Duration::from_secs(1), Duration::from_secs(3));
        assert!(w + m <= Duration::from_secs(1));
    }
}
