//! Chain verification: time and server memory of `POST /api/v1/audit/verify-chain` on long
//! chains, one call and then four at once (the server's limit), on a freshly started server so
//! its idle memory is known.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use bytes::Bytes;

use crate::events::Gen;
use crate::load;
use crate::server::Server;
use crate::sys::{vm_kib, MemPeak, MemWatch};

/// Longest wait for one verification (the server's `server.writeTimeout`, 30 s by default,
/// ends it sooner with a 503).
pub const VERIFY_TIMEOUT: Duration = Duration::from_secs(600);

/// Verifications the server runs at once (`MAX_CONCURRENT_VERIFICATIONS`); one more answers
/// 503.
pub const SERVER_LIMIT: usize = 4;

/// One verification.
#[derive(Debug, Clone)]
pub struct VerifyCall {
    /// Status (with the 503 reason), or the transport failure.
    pub reply: String,
    /// Seconds until the whole answer was read.
    pub secs: f64,
    /// `is_valid`, `verified_events`, `total_events` of a 200.
    pub verdict: Option<(bool, u64, u64)>,
}

/// One call, or several at once, on one chain.
#[derive(Debug, Clone)]
pub struct VerifyStep {
    /// Events in the chain.
    pub chain_len: u64,
    /// Its correlation id.
    pub cid: String,
    /// Calls sent at once.
    pub concurrent: usize,
    /// Seconds from sending the first to reading the last answer.
    pub wall: f64,
    /// Every call.
    pub calls: Vec<VerifyCall>,
    /// Server memory over the step.
    pub mem: MemPeak,
}

impl VerifyStep {
    /// Whether every call answered 200 with a valid chain of `chain_len` verified events.
    pub fn all_valid(&self) -> bool {
        self.calls.iter().all(|c| {
            c.verdict
                .is_some_and(|(ok, v, t)| ok && v == self.chain_len && t == self.chain_len)
        })
    }

    /// Replies by kind, e.g. `4 × 200`.
    pub fn replies(&self) -> String {
        let mut by: BTreeMap<&str, usize> = BTreeMap::new();
        for c in &self.calls {
            *by.entry(c.reply.as_str()).or_default() += 1;
        }
        by.iter()
            .map(|(k, n)| format!("{n} × {k}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Mean seconds per call.
    pub fn mean_secs(&self) -> f64 {
        self.calls.iter().map(|c| c.secs).sum::<f64>() / self.calls.len().max(1) as f64
    }
}

/// Verification on one backend.
#[derive(Debug, Clone, Default)]
pub struct VerifyRun {
    /// `PostgreSQL` or `SQLite`.
    pub backend: String,
    /// How the chains were written.
    pub seeding: String,
    /// Server VmRSS once started and idle, KiB.
    pub idle_kib: u64,
    /// Server VmHWM at that moment (start-up peak), KiB.
    pub start_hwm_kib: u64,
    /// Every step, shortest chain first.
    pub steps: Vec<VerifyStep>,
    /// Warnings and errors the server logged (first few).
    pub log_problems: Vec<String>,
}

impl VerifyRun {
    /// The step on the chain of `len` events with `concurrent` calls.
    pub fn step(&self, len: u64, concurrent: usize) -> Option<&VerifyStep> {
        self.steps
            .iter()
            .find(|s| s.chain_len == len && s.concurrent == concurrent)
    }

    /// Longest chain verified.
    pub fn longest(&self) -> Option<u64> {
        self.steps.iter().map(|s| s.chain_len).max()
    }

    /// Peak RSS of a step above the server's idle RSS, MiB.
    pub fn above_idle_mib(&self, s: &VerifyStep) -> f64 {
        s.mem.peak_kib.saturating_sub(self.idle_kib) as f64 / 1024.0
    }
}

/// Chain lengths verified: 1 k and 10 k (when shorter than `longest`), then `longest`.
pub fn chain_lengths(longest: u64) -> Vec<u64> {
    let mut v: Vec<u64> = [1_000, 10_000]
        .into_iter()
        .filter(|&n| n < longest)
        .collect();
    if longest > 0 {
        v.push(longest);
    }
    v
}

async fn call(addr: SocketAddr, cid: String) -> VerifyCall {
    let body = Bytes::from(serde_json::json!({ "correlation_id": cid }).to_string());
    let t = Instant::now();
    let reply = load::post_within(addr, "/api/v1/audit/verify-chain", body, VERIFY_TIMEOUT).await;
    let secs = t.elapsed().as_secs_f64();
    match reply {
        Ok(r) => {
            let verdict = r.status.is_success().then(|| {
                let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
                (
                    v["is_valid"].as_bool().unwrap_or(false),
                    v["verified_events"].as_u64().unwrap_or(0),
                    v["total_events"].as_u64().unwrap_or(0),
                )
            });
            VerifyCall {
                reply: r.kind(),
                secs,
                verdict,
            }
        }
        Err(e) => VerifyCall {
            reply: format!("{e:#}"),
            secs,
            verdict: None,
        },
    }
}

/// `concurrent` verifications of `cid` at once, with the server's memory over them.
pub async fn step(server: &Server, cid: &str, len: u64, concurrent: usize) -> VerifyStep {
    let watch = MemWatch::start(server.pid);
    let t = Instant::now();
    let tasks: Vec<_> = (0..concurrent)
        .map(|_| tokio::spawn(call(server.api, cid.to_owned())))
        .collect();
    let mut calls = Vec::with_capacity(concurrent);
    for task in tasks {
        calls.push(task.await.unwrap_or_else(|e| VerifyCall {
            reply: format!("task failed: {e}"),
            secs: 0.0,
            verdict: None,
        }));
    }
    let wall = t.elapsed().as_secs_f64();
    VerifyStep {
        chain_len: len,
        cid: cid.to_owned(),
        concurrent,
        wall,
        calls,
        mem: watch.finish().await,
    }
}

/// Measures a freshly started, idle `server`: for each chain (shortest first), one
/// verification, then [`SERVER_LIMIT`] at once.
pub async fn measure(
    server: &Server,
    chains: &[(u64, String)],
    backend: &str,
    seeding: String,
    say: impl Fn(String),
) -> VerifyRun {
    // Let start-up work (migrations, pool warm-up) settle before reading the idle figure.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut run = VerifyRun {
        backend: backend.to_owned(),
        seeding,
        idle_kib: vm_kib(server.pid, "VmRSS").unwrap_or(0),
        start_hwm_kib: vm_kib(server.pid, "VmHWM").unwrap_or(0),
        ..VerifyRun::default()
    };
    for (len, cid) in chains {
        for concurrent in [1, SERVER_LIMIT] {
            let s = step(server, cid, *len, concurrent).await;
            say(format!(
                "  verify {len} events ×{concurrent}: {:.2} s, {}, peak RSS {:.1} MiB ({:+.1} over idle {:.1}){}",
                s.wall,
                s.replies(),
                s.mem.peak_kib as f64 / 1024.0,
                run.above_idle_mib(&s),
                run.idle_kib as f64 / 1024.0,
                if s.all_valid() { "" } else { " — NOT all valid" }
            ));
            run.steps.push(s);
        }
    }
    run.log_problems = server.log_problems();
    run
}

/// Writes a chain of `len` events on `cid` through `POST /api/v1/audit/events/batch`,
/// `batch` events per request, one request at a time.
pub async fn seed_through_api(
    addr: SocketAddr,
    gen: &mut Gen,
    cid: &str,
    len: u64,
    batch: usize,
) -> Result<()> {
    let mut conn = load::Conn::new(addr);
    let mut left = len;
    while left > 0 {
        let n = left.min(batch as u64) as usize;
        let (status, body) = tokio::time::timeout(
            load::REQUEST_TIMEOUT,
            conn.send(
                hyper::Method::POST,
                "/api/v1/audit/events/batch",
                gen.batch_on(cid, n),
            ),
        )
        .await??;
        ensure!(
            status.is_success(),
            "seeding {cid}: batch answered {status}: {}",
            String::from_utf8_lossy(&body)
        );
        left -= n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_lengths_ascend_to_the_longest() {
        assert_eq!(chain_lengths(100_000), vec![1_000, 10_000, 100_000]);
        assert_eq!(chain_lengths(10_000), vec![1_000, 10_000]);
        assert_eq!(chain_lengths(500), vec![500]);
        assert!(chain_lengths(0).is_empty());
    }
}
