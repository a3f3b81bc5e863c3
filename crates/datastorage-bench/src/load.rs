//! The HTTP load generator: closed-loop clients, one keep-alive HTTP/1.1 connection each.
//!
//! Each client sends a request, waits for the whole answer, and sends the next. A warm-up runs
//! first and is discarded; then requests that complete inside the measured window are counted
//! and their latencies recorded (microseconds, HdrHistogram). Every loop is bounded by time and
//! by a request count, and every request by a timeout.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::HeaderValue;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::events::{Gen, Templates};
use crate::sys::{vm_kib, CpuSnap, CpuUse, Probe};

/// Longest wait for one answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Most requests one scenario sends, all clients together.
pub const MAX_REQUESTS: u64 = 5_000_000;

/// One keep-alive HTTP/1.1 connection.
pub struct Conn {
    addr: SocketAddr,
    host: String,
    authorization: Option<HeaderValue>,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Conn {
    /// A connection to `addr`, opened on first use.
    pub fn new(addr: SocketAddr) -> Self {
        Self::with_authorization(addr, None)
    }

    /// A connection to `addr` whose every request sends `authorization` (e.g.
    /// `Bearer <token>`) when given.
    pub fn with_authorization(addr: SocketAddr, authorization: Option<HeaderValue>) -> Self {
        Self {
            addr,
            host: addr.to_string(),
            authorization,
            sender: None,
        }
    }

    async fn open(&mut self) -> Result<&mut SendRequest<Full<Bytes>>> {
        if self.sender.as_ref().is_none_or(|s| s.is_closed()) {
            let stream = TcpStream::connect(self.addr)
                .await
                .with_context(|| format!("cannot connect to {}", self.addr))?;
            stream.set_nodelay(true)?;
            let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .context("HTTP handshake")?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            self.sender = Some(sender);
        }
        let sender = self.sender.as_mut().context("connection lost")?;
        sender.ready().await.context("connection not ready")?;
        Ok(sender)
    }

    /// Sends one request and reads the whole answer.
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        body: Bytes,
    ) -> Result<(StatusCode, Bytes)> {
        self.send_full(method, path, body)
            .await
            .map(|r| (r.status, r.body))
    }

    /// Sends one request and reads the whole answer, `Retry-After` included.
    pub async fn send_full(&mut self, method: Method, path: &str, body: Bytes) -> Result<Reply> {
        let host = self.host.clone();
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, host)
            .header(hyper::header::CONTENT_TYPE, "application/json");
        if let Some(a) = &self.authorization {
            req = req.header(hyper::header::AUTHORIZATION, a.clone());
        }
        let req = req.body(Full::new(body))?;
        let result = async {
            let sender = self.open().await?;
            let resp = sender.send_request(req).await?;
            let status = resp.status();
            let retry_after = resp
                .headers()
                .get(hyper::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let body = resp.into_body().collect().await?.to_bytes();
            anyhow::Ok(Reply {
                status,
                retry_after,
                body,
            })
        }
        .await;
        if result.is_err() {
            self.sender = None;
        }
        result
    }
}

/// An answer.
#[derive(Debug, Clone)]
pub struct Reply {
    /// Status.
    pub status: StatusCode,
    /// The `Retry-After` header, if any.
    pub retry_after: Option<String>,
    /// The whole body.
    pub body: Bytes,
}

impl Reply {
    /// The status, with the problem's `detail` for a 503 telling which limit answered, e.g.
    /// `201`, `503 (in-flight body budget)`, `503 (other: …)`.
    pub fn kind(&self) -> String {
        let code = self.status.as_u16();
        if code != 503 {
            return code.to_string();
        }
        format!("503 ({})", unavailable_reason(&self.body))
    }
}

/// Why a 503 answered, from its problem `detail`: `in-flight body budget` for
/// `server.maxInFlightBodyBytes`, otherwise the detail with quoted values (correlation ids)
/// elided, so answers of one kind group together.
pub fn unavailable_reason(body: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let detail = v["detail"].as_str().or(v["title"].as_str()).unwrap_or("");
    if detail.contains("maxInFlightBodyBytes") {
        return "in-flight body budget".to_owned();
    }
    let mut out = String::with_capacity(detail.len());
    let mut quoted = false;
    for c in detail.chars() {
        if c == '"' {
            if !quoted {
                out.push_str("\"…\"");
            }
            quoted = !quoted;
        } else if !quoted {
            out.push(c);
        }
    }
    out
}

/// One POST of a JSON body on a fresh connection, waiting at most `timeout`.
pub async fn post_within(
    addr: SocketAddr,
    path: &str,
    body: Bytes,
    timeout: Duration,
) -> Result<Reply> {
    tokio::time::timeout(timeout, Conn::new(addr).send_full(Method::POST, path, body))
        .await
        .context("timed out")?
}

/// One GET, on a fresh connection.
pub async fn get(addr: SocketAddr, path: &str) -> Result<(StatusCode, Bytes)> {
    tokio::time::timeout(
        REQUEST_TIMEOUT,
        Conn::new(addr).send(Method::GET, path, Bytes::new()),
    )
    .await
    .context("timed out")?
}

/// One POST of a JSON body, on a fresh connection.
pub async fn post(addr: SocketAddr, path: &str, body: Bytes) -> Result<(StatusCode, Bytes)> {
    tokio::time::timeout(
        REQUEST_TIMEOUT,
        Conn::new(addr).send(Method::POST, path, body),
    )
    .await
    .context("timed out")?
}

/// What each request does.
#[derive(Debug, Clone, Copy)]
pub enum Work {
    /// `POST /api/v1/audit/events`, one event.
    Single,
    /// `POST /api/v1/audit/events/batch` with this many events.
    Batch(usize),
    /// `GET /api/v1/audit/events?correlation_id=cid-<n>&limit=50`, `n` below this.
    Query(u64),
}

impl Work {
    /// Events (or queries) one request stands for.
    pub fn per_request(self) -> u64 {
        match self {
            Work::Batch(n) => n as u64,
            _ => 1,
        }
    }
}

/// How long and how wide, and with which credentials.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Concurrent clients.
    pub clients: usize,
    /// Discarded lead-in.
    pub warmup: Duration,
    /// Measured window.
    pub duration: Duration,
    /// The `Authorization` header every request sends (`auth.mode: tokens`), if any.
    pub authorization: Option<HeaderValue>,
}

/// What one scenario measured.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Successful requests completed in the window.
    pub requests: u64,
    /// Events (or queries) those requests stand for.
    pub units: u64,
    /// Latency of successful requests in the window, microseconds.
    pub hist: Histogram<u64>,
    /// Failures in the window by kind (`HTTP 503`, `transport`, `timeout`).
    pub errors: BTreeMap<String, u64>,
    /// The measured window, seconds.
    pub window: f64,
    /// Highest server VmRSS seen during the scenario, KiB.
    pub rss_peak_kib: Option<u64>,
    /// CPU over the measured window.
    pub cpu: CpuUse,
    /// Requests sent in the window that answered after it.
    pub late: Late,
}

impl Outcome {
    /// Units per second.
    pub fn rate(&self) -> f64 {
        if self.window > 0.0 {
            self.units as f64 / self.window
        } else {
            0.0
        }
    }

    /// Latency quantile in milliseconds.
    pub fn ms(&self, q: f64) -> f64 {
        self.hist.value_at_quantile(q) as f64 / 1000.0
    }

    /// Failed requests in the window.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

struct WorkerStats {
    requests: u64,
    hist: Histogram<u64>,
    errors: BTreeMap<String, u64>,
    late: Late,
}

/// Requests sent inside the measured window that answered after it ended: neither their
/// latency nor their failure is in the window's figures.
#[derive(Debug, Clone, Default)]
pub struct Late {
    /// How many.
    pub requests: u64,
    /// The slowest of them, microseconds.
    pub max_us: u64,
    /// Those that failed, by kind.
    pub errors: BTreeMap<String, u64>,
}

impl Late {
    fn add(&mut self, other: &Late) {
        self.requests += other.requests;
        self.max_us = self.max_us.max(other.max_us);
        for (k, v) in &other.errors {
            *self.errors.entry(k.clone()).or_default() += v;
        }
    }
}

fn new_hist() -> Histogram<u64> {
    // 1 µs .. 10 min, 3 significant digits.
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

async fn worker(
    addr: SocketAddr,
    authorization: Option<HeaderValue>,
    work: Work,
    mut gen: Gen,
    measure_from: Instant,
    end: Instant,
    max_requests: u64,
) -> WorkerStats {
    let mut conn = Conn::with_authorization(addr, authorization.clone());
    let mut stats = WorkerStats {
        requests: 0,
        hist: new_hist(),
        errors: BTreeMap::new(),
        late: Late::default(),
    };
    let mut sent = 0u64;
    while Instant::now() < end && sent < max_requests {
        sent += 1;
        let (method, path, body) = match work {
            Work::Single => (
                Method::POST,
                "/api/v1/audit/events".to_owned(),
                gen.single(),
            ),
            Work::Batch(n) => (
                Method::POST,
                "/api/v1/audit/events/batch".to_owned(),
                gen.batch(n),
            ),
            Work::Query(n) => (
                Method::GET,
                format!(
                    "/api/v1/audit/events?correlation_id=cid-{}&limit=50",
                    gen.pick(n)
                ),
                Bytes::new(),
            ),
        };
        let start = Instant::now();
        let result = tokio::time::timeout(REQUEST_TIMEOUT, conn.send(method, &path, body)).await;
        let done = Instant::now();
        let counted = done >= measure_from && done <= end;
        let late = !counted && start >= measure_from && start <= end;
        let failure = match result {
            Ok(Ok((status, _))) if status.is_success() => None,
            Ok(Ok((status, body))) if status == StatusCode::SERVICE_UNAVAILABLE => {
                Some(format!("HTTP 503 ({})", unavailable_reason(&body)))
            }
            Ok(Ok((status, _))) => Some(format!("HTTP {}", status.as_u16())),
            Ok(Err(_)) => Some("transport".to_owned()),
            Err(_) => {
                conn = Conn::with_authorization(addr, authorization.clone());
                Some("timeout".to_owned())
            }
        };
        if late {
            stats.late.requests += 1;
            let us = done.duration_since(start).as_micros() as u64;
            stats.late.max_us = stats.late.max_us.max(us);
            if let Some(kind) = &failure {
                *stats.late.errors.entry(kind.clone()).or_default() += 1;
            }
        }
        match failure {
            None if counted => {
                stats.requests += 1;
                let us = done.duration_since(start).as_micros().max(1) as u64;
                let _ = stats.hist.record(us.min(600_000_000));
            }
            None => {}
            Some(kind) => {
                if counted {
                    *stats.errors.entry(kind).or_default() += 1;
                }
                // Do not spin on a refused connection.
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
    stats
}

/// Runs `work` against the server at `addr` and measures it.
pub async fn run(
    addr: SocketAddr,
    work: Work,
    plan: Plan,
    templates: &Arc<Templates>,
    cids: u64,
    probe: Probe,
    tck: f64,
) -> Outcome {
    let begin = Instant::now();
    let measure_from = begin + plan.warmup;
    let end = measure_from + plan.duration;
    let per_client = (MAX_REQUESTS / plan.clients.max(1) as u64).max(1);
    let seed0 = fastrand::u64(..);
    let handles: Vec<_> = (0..plan.clients)
        .map(|i| {
            let gen = Gen::new(templates.clone(), cids, seed0.wrapping_add(i as u64));
            tokio::spawn(worker(
                addr,
                plan.authorization.clone(),
                work,
                gen,
                measure_from,
                end,
                per_client,
            ))
        })
        .collect();
    // Sample memory while the load runs and CPU at the window's edges.
    let mut rss_peak: Option<u64> = None;
    tokio::time::sleep_until(measure_from.into()).await;
    let cpu_start = CpuSnap::take(probe);
    while Instant::now() < end {
        if let Some(rss) = probe.server.and_then(|p| vm_kib(p, "VmRSS")) {
            rss_peak = Some(rss_peak.map_or(rss, |r| r.max(rss)));
        }
        let left = end.saturating_duration_since(Instant::now());
        tokio::time::sleep(left.min(Duration::from_millis(200))).await;
    }
    let cpu_end = CpuSnap::take(probe);
    let mut out = Outcome {
        requests: 0,
        units: 0,
        hist: new_hist(),
        errors: BTreeMap::new(),
        window: plan.duration.as_secs_f64(),
        rss_peak_kib: rss_peak,
        cpu: cpu_start.until(&cpu_end, tck),
        late: Late::default(),
    };
    for h in handles {
        // A worker ends by itself at most REQUEST_TIMEOUT after `end`.
        if let Ok(s) = h.await {
            out.requests += s.requests;
            let _ = out.hist.add(&s.hist);
            for (k, v) in s.errors {
                *out.errors.entry(k).or_default() += v;
            }
            out.late.add(&s.late);
        }
    }
    out.units = out.requests * work.per_request();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unavailable_reasons_group_by_kind() {
        let held = br#"{"status":503,"detail":"the chain of correlation_id \"cid-17\" is held by another writer; retry shortly"}"#;
        assert_eq!(
            unavailable_reason(held),
            "the chain of correlation_id \"…\" is held by another writer; retry shortly"
        );
        let budget = br#"{"detail":"too many large request bodies are being processed now (server.maxInFlightBodyBytes)"}"#;
        assert_eq!(unavailable_reason(budget), "in-flight body budget");
        assert_eq!(unavailable_reason(b"not json"), "");
    }
}
