//! Concurrent large bodies: many batch requests of nearly `server.maxBodySize` sent at once, on
//! a freshly started server, at the default in-flight body budget and at a large one, with the
//! server's peak memory and what each request got.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use tokio::sync::Barrier;

use crate::events::Gen;
use crate::load;
use crate::pg::{Db, DbExt as _};
use crate::server::{Server, ServerConfig};
use crate::sys::{vm_kib, MemPeak, MemWatch};
use crate::Ctx;

/// The server's default `server.maxBodySize`.
pub const MAX_BODY_SIZE: usize = 5 * 1024 * 1024;
/// The server's default `server.maxInFlightBodyBytes`.
pub const DEFAULT_BUDGET: u64 = 64 * 1024 * 1024;
/// Body size sent: just under `MAX_BODY_SIZE`.
pub const BODY_BYTES: usize = MAX_BODY_SIZE - 32 * 1024;
/// Events per body (the server's default `server.maxBatchSize`).
pub const EVENTS_PER_BODY: usize = 500;
/// Longest wait for one answer.
const TIMEOUT: Duration = Duration::from_secs(120);

/// One round: every body sent at once.
#[derive(Debug, Clone)]
pub struct BodiesRound {
    /// `server.maxInFlightBodyBytes` in effect.
    pub budget: u64,
    /// Requests sent at once.
    pub clients: usize,
    /// Bytes of each body.
    pub body_bytes: usize,
    /// Events in each body.
    pub events: usize,
    /// Bytes of the `blob` string in each event's `event_data`.
    pub blob_bytes: usize,
    /// Replies by kind (`201`, `503 (in-flight body budget)`, transport failures).
    pub replies: BTreeMap<String, usize>,
    /// 503 answers that carried `Retry-After`.
    pub retry_after: usize,
    /// Seconds from sending to the last answer.
    pub wall: f64,
    /// Seconds per request, sorted.
    pub latencies: Vec<f64>,
    /// Server VmRSS once started and idle, KiB.
    pub idle_kib: u64,
    /// Server memory over the round.
    pub mem: MemPeak,
    /// Server VmRSS two seconds after the last answer, KiB.
    pub settled_kib: u64,
    /// Rows added to `audit_events`.
    pub rows: i64,
    /// Warnings and errors the server logged (first few).
    pub log_problems: Vec<String>,
}

impl BodiesRound {
    /// Replies of kind `prefix…`.
    pub fn count(&self, prefix: &str) -> usize {
        self.replies
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(_, n)| n)
            .sum()
    }

    /// Peak RSS above idle, MiB.
    pub fn above_idle_mib(&self) -> f64 {
        self.mem.peak_kib.saturating_sub(self.idle_kib) as f64 / 1024.0
    }

    /// Latency quantile, seconds.
    pub fn quantile(&self, q: f64) -> f64 {
        if self.latencies.is_empty() {
            return 0.0;
        }
        let i = ((self.latencies.len() - 1) as f64 * q).round() as usize;
        self.latencies[i.min(self.latencies.len() - 1)]
    }
}

/// Starts a server with `budget` (`None`: its default), sends `clients` bodies at once, and
/// stops it.
pub async fn round(
    ctx: &Ctx,
    bin: &Path,
    cfg: &ServerConfig,
    db: &Db,
    budget: Option<u64>,
    clients: usize,
) -> Result<BodiesRound> {
    let bodies: Vec<_> = (0..clients)
        .map(|i| {
            Gen::new(ctx.templates.clone(), ctx.cids, 0xb0d1 + i as u64)
                .padded_batch(EVENTS_PER_BODY, BODY_BYTES)
        })
        .collect();
    let body_bytes = bodies.first().map_or(0, |b| b.len());
    let blob_bytes = bodies
        .first()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(b).ok())
        .and_then(|v| v[0]["event_data"]["blob"].as_str().map(str::len))
        .unwrap_or(0);
    let cfg = ServerConfig {
        max_in_flight_body_bytes: budget,
        ..cfg.clone()
    };
    db.try_sql(&["CHECKPOINT"]).await?;
    let server = Server::start(bin, &cfg).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle_kib = vm_kib(server.pid, "VmRSS").unwrap_or(0);
    let rows0 = db.scalar("SELECT count(*) FROM audit_events").await?;
    let barrier = Arc::new(Barrier::new(clients + 1));
    let tasks: Vec<_> = bodies
        .into_iter()
        .map(|body| {
            let (addr, barrier) = (server.api, Arc::clone(&barrier));
            tokio::spawn(async move {
                barrier.wait().await;
                let t = Instant::now();
                let r = load::post_within(addr, "/api/v1/audit/events/batch", body, TIMEOUT).await;
                (r, t.elapsed().as_secs_f64())
            })
        })
        .collect();
    let watch = MemWatch::start(server.pid);
    barrier.wait().await;
    let t = Instant::now();
    let mut replies = BTreeMap::new();
    let (mut retry_after, mut latencies) = (0, Vec::with_capacity(clients));
    for task in tasks {
        let (kind, secs) = match task.await {
            Ok((Ok(r), secs)) => {
                if r.status.as_u16() == 503 && r.retry_after.is_some() {
                    retry_after += 1;
                }
                (r.kind(), secs)
            }
            Ok((Err(e), secs)) => (format!("failed: {e:#}"), secs),
            Err(e) => (format!("task failed: {e}"), 0.0),
        };
        *replies.entry(kind).or_default() += 1;
        latencies.push(secs);
    }
    let wall = t.elapsed().as_secs_f64();
    let mem = watch.finish().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let settled_kib = vm_kib(server.pid, "VmRSS").unwrap_or(0);
    let rows = db.scalar("SELECT count(*) FROM audit_events").await? - rows0;
    latencies.sort_by(f64::total_cmp);
    let log_problems = server.log_problems();
    server.stop().await?;
    Ok(BodiesRound {
        budget: budget.unwrap_or(DEFAULT_BUDGET),
        clients,
        body_bytes,
        events: EVENTS_PER_BODY,
        blob_bytes,
        replies,
        retry_after,
        wall,
        latencies,
        idle_kib,
        mem,
        settled_kib,
        rows,
        log_problems,
    })
}
