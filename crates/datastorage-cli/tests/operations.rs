//! Operations: the real `datastorage` binary, started from a YAML config file through the real
//! startup path, driven over loopback against real PostgreSQL.
//!
//! The pool tests never call pool setters: the upstream defect was a config that was silently
//! ignored, so every knob here travels file → `Settings::load` → `startup::run` → pool, and the
//! effect is observed from outside (PostgreSQL's `pg_stat_activity`, HTTP answers, `/metrics`).
//!
//! Every child process sits in a guard whose `Drop` stops it (SIGTERM, then SIGKILL), every wait
//! is bounded, and every test body runs under an overall time limit.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use datastorage_testkit::process::*;
use datastorage_testkit::*;
use serde_json::{json, Value};
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

// ---------------------------------------------------------------------------------------------
// Helpers: processes, configs, load, sampling.
// ---------------------------------------------------------------------------------------------

/// One sample of a `pool="primary"` metric; panics when it is missing.
fn pool_metric(text: &str, name: &str) -> f64 {
    metric_value(text, &format!("{name}{{pool=\"primary\"}} "))
        .unwrap_or_else(|| panic!("{name}{{pool=\"primary\"}} is not exported:\n{text}"))
}

/// Polls `PgDb::service_connections()` every ~20 ms until stopped; keeps the maximum.
struct ConnSampler {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<(i64, usize)>,
}

impl ConnSampler {
    fn start(db: &PgDb) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (db, flag) = (db.clone(), Arc::clone(&stop));
        let task = tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(180);
            let (mut max, mut samples) = (0_i64, 0_usize);
            while !flag.load(Ordering::Relaxed) && Instant::now() < deadline {
                max = max.max(db.service_connections().await);
                samples += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (max, samples)
        });
        Self { stop, task }
    }

    /// Stops sampling; returns (max observed, samples taken).
    async fn finish(self) -> (i64, usize) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap()
    }
}

/// How the writers of [`concurrent_writers`] send their events.
#[derive(Clone, Copy)]
enum Writes {
    /// `POST /api/v1/audit/events`, one event per request.
    Single,
    /// Every other writer posts batches of two to `/batch` (which go straight to the pool), the
    /// rest single events: a burst the pool sees whatever single writes queue behind.
    Mixed,
}

/// `writers` tasks, each posting `per_writer` requests one after another on its own chain;
/// returns every answer (status, or the transport error).
async fn concurrent_writers(
    server: &Server,
    writers: usize,
    per_writer: usize,
    prefix: &str,
    writes: Writes,
) -> Vec<Result<u16, String>> {
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let (http, url, cid) = (
                server.http.clone(),
                server.events_url(),
                format!("{prefix}-{w}"),
            );
            let batch = matches!(writes, Writes::Mixed) && w % 2 == 1;
            tokio::spawn(async move {
                let mut out = Vec::with_capacity(per_writer);
                for _ in 0..per_writer {
                    let request = if batch {
                        http.post(format!("{url}/batch"))
                            .json(&json!([event(&cid), event(&cid)]))
                    } else {
                        http.post(&url).json(&event(&cid))
                    };
                    let r = request.send().await;
                    out.push(r.map(|r| r.status().as_u16()).map_err(|e| e.to_string()));
                }
                out
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all
}

fn assert_all(answers: &[Result<u16, String>], expected: u16, server: &Server) {
    let bad: Vec<_> = answers.iter().filter(|a| **a != Ok(expected)).collect();
    assert!(
        bad.is_empty(),
        "{} of {} answers were not {expected}: {:?}\nlog:\n{}",
        bad.len(),
        answers.len(),
        &bad[..bad.len().min(10)],
        server.log_tail()
    );
}

/// From a separate session: opens a transaction that holds the chain head of `cid` FOR UPDATE.
async fn lock_chain_head(db: &PgDb, cid: &str) -> PgConnection {
    let mut c = db.connect().await;
    sqlx::query("BEGIN").execute(&mut c).await.unwrap();
    sqlx::query("INSERT INTO audit_chain_heads (correlation_id, last_sequence, last_hash) VALUES ($1, 0, '') ON CONFLICT DO NOTHING")
        .bind(cid)
        .execute(&mut c)
        .await
        .unwrap();
    let locked =
        sqlx::query("SELECT * FROM audit_chain_heads WHERE correlation_id = $1 FOR UPDATE")
            .bind(cid)
            .fetch_all(&mut c)
            .await
            .unwrap();
    assert_eq!(
        locked.len(),
        1,
        "the chain head of {cid} exists and is locked"
    );
    c
}

async fn unlock(mut c: PgConnection) {
    sqlx::query("ROLLBACK").execute(&mut c).await.unwrap();
    c.close().await.ok();
}

/// Waits until a service session of `db` waits on a lock.
async fn wait_for_lock_waiter(db: &PgDb, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if db.service_sessions("wait_event_type = 'Lock'").await > 0 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// Asserts a 503 with `Retry-After` and the `service-unavailable` problem type; returns the body.
/// `what` names the request in messages.
async fn expect_503(resp: reqwest::Response, server: &Server, what: &str) -> Value {
    expect_503_of(resp, server, what, "service-unavailable").await
}

/// Asserts a 503 with `Retry-After` and a problem type ending in `slug`; returns the body.
async fn expect_503_of(resp: reqwest::Response, server: &Server, what: &str, slug: &str) -> Value {
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .map(|v| v.to_str().unwrap_or_default().to_owned());
    let text = resp.text().await.unwrap_or_default();
    assert_eq!(
        status,
        503,
        "{what}: expected 503, got {status}: {text}\nlog:\n{}",
        server.log_tail()
    );
    let retry_after =
        retry_after.unwrap_or_else(|| panic!("{what}: a 503 without Retry-After: {text}"));
    let secs: u64 = retry_after
        .parse()
        .unwrap_or_else(|_| panic!("{what}: Retry-After {retry_after:?} is not whole seconds"));
    assert!(secs >= 1, "{what}: Retry-After {secs}");
    let body: Value = serde_json::from_str(&text)
        .unwrap_or_else(|_| panic!("{what}: 503 body is not JSON: {text}"));
    let kind = body["type"].as_str().unwrap_or_default();
    assert!(
        kind.ends_with(slug),
        "{what}: problem type {kind:?}: {body}"
    );
    body
}

/// The `pool="primary"` sample lines of an exposition, for messages.
fn pool_lines(text: &str) -> String {
    text.lines()
        .filter(|l| l.contains("pool=\"primary\"") && !l.contains("_bucket"))
        .collect::<Vec<_>>()
        .join("\n")
}

// ---------------------------------------------------------------------------------------------
// Pool limits, through the real startup path.
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn max_open_conns_caps_server_connections_under_50_concurrent_requests() {
    within(TEST_TIMEOUT, async {
        let db = PgDb::create().await;
        let server = Server::start(&database_yaml(&db, "  maxOpenConns: 3\n  maxIdleConns: 3\n"), "").await;
        let sampler = ConnSampler::start(&db);
        let mut answers = Vec::new();
        for round in 0..8 {
            let tasks: Vec<_> = (0..50)
                .map(|i| {
                    let (http, url) = (server.http.clone(), server.events_url());
                    tokio::spawn(async move {
                        if i % 5 == 4 {
                            let r = http.get(format!("{url}?correlation_id=cap-{}&limit=20", i % 10)).send().await;
                            ("GET", r.map(|r| r.status().as_u16()).map_err(|e| e.to_string()))
                        } else {
                            let r = http.post(&url).json(&event(&format!("cap-{}", (i + round) % 10))).send().await;
                            ("POST", r.map(|r| r.status().as_u16()).map_err(|e| e.to_string()))
                        }
                    })
                })
                .collect();
            for t in tasks {
                answers.push(t.await.unwrap());
            }
        }
        let (max, samples) = sampler.finish().await;

        assert_eq!(answers.len(), 400);
        let bad: Vec<_> = answers
            .iter()
            .filter(|(kind, a)| *a != Ok(if *kind == "GET" { 200 } else { 201 }))
            .collect();
        assert!(bad.is_empty(), "answers other than 200/201 (no 5xx allowed): {:?}\nlog:\n{}", &bad[..bad.len().min(10)], server.log_tail());
        assert!(max > 0, "the sampler never saw a service connection ({samples} samples); is application_name set?");
        assert!(max <= 3, "maxOpenConns 3, yet PostgreSQL saw {max} service connections");
        let m = server.metrics().await;
        assert!(pool_metric(&m, "datastorage_db_pool_wait_count_total") > 0.0, "50 concurrent requests on 3 connections must wait:\n{}", pool_lines(&m));
        assert_eq!(pool_metric(&m, "datastorage_db_pool_max_open_connections"), 3.0);
        assert!(pool_metric(&m, "datastorage_db_pool_open_connections") <= 3.0);
        server.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn max_open_conns_4_with_64_writers_waits_without_errors() {
    within(TEST_TIMEOUT, async {
        let db = PgDb::create().await;
        // maxIdleConns must not exceed maxOpenConns (its default is 5), so it is set too.
        let server = Server::start(
            &database_yaml(&db, "  maxOpenConns: 4\n  maxIdleConns: 4\n"),
            "",
        )
        .await;
        let sampler = ConnSampler::start(&db);
        // Single-event POSTs, the way upstream's services write: saturation on this path must
        // show in the pool's DBStats (the pool alerts watch wait_count), not vanish upstream of it.
        let answers = concurrent_writers(&server, 64, 5, "acc", Writes::Single).await;
        let (max, samples) = sampler.finish().await;

        assert_eq!(answers.len(), 320);
        assert_all(&answers, 201, &server);
        assert!(
            max > 0,
            "the sampler never saw a service connection ({samples} samples)"
        );
        assert!(
            max <= 4,
            "maxOpenConns 4, yet PostgreSQL saw {max} service connections"
        );
        let m = server.metrics().await;
        assert!(
            pool_metric(&m, "datastorage_db_pool_wait_count_total") > 0.0,
            "64 concurrent writers on maxOpenConns 4 never waited for a connection (peak {max} server \
             connections); wherever they queued, the pool metrics do not show it:\n{}",
            pool_lines(&m)
        );
        assert!(
            pool_metric(&m, "datastorage_db_pool_wait_duration_seconds_total") > 0.0,
            "{}",
            pool_lines(&m)
        );
        assert_eq!(
            pool_metric(&m, "datastorage_db_pool_max_open_connections"),
            4.0
        );
        assert_eq!(
            pool_metric(&m, "datastorage_db_pool_acquire_timeouts_total"),
            0.0
        );
        server.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idle_connections_beyond_max_idle_conns_are_closed() {
    within(TEST_TIMEOUT, async {
        let db = PgDb::create().await;
        let server = Server::start(
            &database_yaml(&db, "  maxOpenConns: 10\n  maxIdleConns: 2\n"),
            "",
        )
        .await;
        let sampler = ConnSampler::start(&db);
        let answers = concurrent_writers(&server, 40, 3, "idle", Writes::Mixed).await;
        let (burst_max, _) = sampler.finish().await;
        assert_all(&answers, 201, &server);
        assert!(
            burst_max > 2,
            "the burst should open more than maxIdleConns connections (saw {burst_max})"
        );
        assert!(burst_max <= 10, "maxOpenConns 10, saw {burst_max}");

        // Quiet now: only maxIdleConns may stay open.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut now = db.service_connections().await;
        while now > 2 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
            now = db.service_connections().await;
        }
        assert!(
            now <= 2,
            "maxIdleConns 2, yet {now} service connections stay open when quiet"
        );
        let m = server.metrics().await;
        assert!(
            pool_metric(&m, "datastorage_db_pool_max_idle_closed_total") > 0.0,
            "{}",
            pool_lines(&m)
        );
        assert!(
            pool_metric(&m, "datastorage_db_pool_idle_connections") <= 2.0,
            "{}",
            pool_lines(&m)
        );
        assert!(
            pool_metric(&m, "datastorage_db_pool_open_connections") <= 2.0,
            "{}",
            pool_lines(&m)
        );
        assert_eq!(
            pool_metric(&m, "datastorage_db_pool_max_idle_connections"),
            2.0
        );
        server.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idle_connections_past_conn_max_idle_time_are_closed() {
    within(TEST_TIMEOUT, async {
        let db = PgDb::create().await;
        let server = Server::start(
            &database_yaml(&db, "  maxIdleConns: 5\n  connMaxIdleTime: 1s\n"),
            "",
        )
        .await;
        let sampler = ConnSampler::start(&db);
        let answers = concurrent_writers(&server, 20, 3, "idletime", Writes::Mixed).await;
        let (burst_max, _) = sampler.finish().await;
        assert_all(&answers, 201, &server);
        assert!(burst_max > 0, "the burst opened no connection");

        // Nothing touches the database now (no /readyz: its ping would open one).
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut now = db.service_connections().await;
        while now > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
            now = db.service_connections().await;
        }
        assert_eq!(
            now, 0,
            "connMaxIdleTime 1s, yet {now} idle service connections are still open"
        );
        let m = server.metrics().await;
        assert!(
            pool_metric(&m, "datastorage_db_pool_max_idle_time_closed_total") > 0.0,
            "{}",
            pool_lines(&m)
        );
        assert_eq!(
            pool_metric(&m, "datastorage_db_pool_open_connections"),
            0.0,
            "{}",
            pool_lines(&m)
        );
        server.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connections_past_conn_max_lifetime_are_closed() {
    within(TEST_TIMEOUT, async {
        let db = PgDb::create().await;
        let server = Server::start(&database_yaml(&db, "  connMaxLifetime: 1s\n"), "").await;
        let mut watcher = db.connect().await;
        let mut pids = HashSet::new();
        let mut answers = Vec::new();
        // Continuous light traffic for ~3 s: one writer, a short pause between writes.
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(3) {
            let r = server.http.post(server.events_url()).json(&event("lifetime")).send().await;
            answers.push(r.map(|r| r.status().as_u16()).map_err(|e| e.to_string()));
            let now: Vec<i32> = sqlx::query_scalar(
                "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND application_name = 'datastorage'",
            )
            .bind(&db.name)
            .fetch_all(&mut watcher)
            .await
            .unwrap();
            pids.extend(now);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        watcher.close().await.ok();
        assert!(answers.len() >= 5, "too little traffic to judge ({} writes)", answers.len());
        assert_all(&answers, 201, &server);
        assert!(pids.len() >= 2, "connMaxLifetime 1s over ~3 s of traffic should replace the connection; backends seen: {pids:?}");
        let m = server.metrics().await;
        assert!(pool_metric(&m, "datastorage_db_pool_max_lifetime_closed_total") > 0.0, "{}", pool_lines(&m));
        server.stop().await;
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Timeouts: acquire, statement, lock.
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acquire_timeout_answers_503_with_retry_after_and_is_counted() {
    within(TEST_TIMEOUT, async {
        let db = PgDb::create().await;
        let server = Server::start(
            &database_yaml(&db, "  maxOpenConns: 1\n  maxIdleConns: 1\n  acquireTimeout: 200ms\n  lockTimeout: 10s\n  statementTimeout: 30s\n"),
            "",
        )
        .await;
        // The chain's first event. With one connection, a start-up worker (partitions ahead)
        // may hold it for longer than 200 ms right after readiness: wait for it, this write is
        // not what the test is about.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let status = server.post(&event("held")).await.status();
            if status == 201 || Instant::now() >= deadline {
                assert_eq!(status, 201, "{}", server.log_tail());
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let locker = lock_chain_head(&db, "held").await;

        // This write takes the only connection and waits on the row lock.
        let blocked = {
            let (http, url) = (server.http.clone(), server.events_url());
            tokio::spawn(async move {
                let started = Instant::now();
                let r = http.post(url).json(&event("held")).send().await;
                (r.map(|r| r.status().as_u16()).map_err(|e| e.to_string()), started.elapsed())
            })
        };
        assert!(wait_for_lock_waiter(&db, Duration::from_secs(20)).await, "the write for 'held' never waited on the lock\nlog:\n{}", server.log_tail());
        tokio::time::sleep(Duration::from_millis(300)).await;

        // Every way into the pool gives up after acquireTimeout, well before lockTimeout (10 s)
        // would free the connection: a batch, a read, and a single event on another chain.
        let requests = [
            ("a batch POST for another chain", server.http.post(format!("{}/batch", server.events_url())).json(&json!([event("other-batch")]))),
            ("a GET query", server.http.get(format!("{}?correlation_id=other&limit=5", server.events_url()))),
            ("a single-event POST for another chain", server.http.post(server.events_url()).json(&event("other"))),
        ];
        for (what, request) in requests {
            let started = Instant::now();
            let resp = request.send().await.unwrap_or_else(|e| panic!("{what}: {e}"));
            let elapsed = started.elapsed();
            let what = format!("{what} (answered after {elapsed:?}, acquireTimeout 200ms, lockTimeout 10s)");
            let body = expect_503(resp, &server, &what).await;
            assert!(elapsed < Duration::from_secs(5), "{what}: too slow");
            let detail = body["detail"].as_str().unwrap_or_default();
            assert!(detail.contains("database.acquireTimeout"), "{what}: the 503 should name the pool wait: {body}");
        }

        // A saturated pool still counts as ready: load never takes the service out of rotation.
        assert_eq!(server.readyz().await, 200);
        let m = server.metrics().await;
        assert!(pool_metric(&m, "datastorage_db_pool_acquire_timeouts_total") >= 3.0, "{}", pool_lines(&m));
        assert!(pool_metric(&m, "datastorage_db_pool_wait_count_total") >= 3.0, "{}", pool_lines(&m));

        assert!(!blocked.is_finished(), "the write for 'held' should still wait on the lock");
        unlock(locker).await;
        let (answer, took) = tokio::time::timeout(Duration::from_secs(20), blocked)
            .await
            .expect("the blocked write finishes once the lock is released")
            .unwrap();
        assert_eq!(answer, Ok(201), "the blocked write (after {took:?})\nlog:\n{}", server.log_tail());
        server.stop().await;
    })
    .await;
}

/// `statementTimeout` and `lockTimeout` each reach every session: a write waiting on a locked
/// chain head is cancelled by the one that is short, with its own SQLSTATE in the answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn statement_and_lock_timeouts_are_set_per_session_and_cancel_waits() {
    // (setting under test, the database keys, what the 503 names)
    let cases = [
        (
            "statementTimeout 300ms",
            "  statementTimeout: 300ms\n  lockTimeout: 20s\n",
            "statement timeout",
        ),
        (
            "lockTimeout 300ms",
            "  statementTimeout: 30s\n  lockTimeout: 300ms\n",
            "lock timeout",
        ),
    ];
    for (setting, keys, cancelled_by) in cases {
        within(TEST_TIMEOUT, async {
            let db = PgDb::create().await;
            let server = Server::start(&database_yaml(&db, keys), "").await;
            assert_eq!(server.post(&event("held")).await.status(), 201);
            let locker = lock_chain_head(&db, "held").await;

            let started = Instant::now();
            let resp = server.post(&event("held")).await;
            let elapsed = started.elapsed();
            let body = expect_503(resp, &server, "a write to the locked chain").await;
            assert!(
                elapsed < Duration::from_secs(10),
                "{setting}, yet the answer took {elapsed:?} (the other timeout is 20 s or more)"
            );
            assert!(
                elapsed >= Duration::from_millis(250),
                "{setting}: answered after {elapsed:?}: it did not wait on the lock at all"
            );
            let detail = body["detail"].as_str().unwrap_or_default();
            assert!(
                detail.contains(cancelled_by),
                "{setting}: expected a cancel by {cancelled_by}: {body}"
            );

            unlock(locker).await;
            assert_eq!(
                server.post(&event("held")).await.status(),
                201,
                "{setting}: writes work again once the lock is gone"
            );
            server.stop().await;
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_answered_503_by_write_timeout_are_not_committed_later() {
    within(TEST_TIMEOUT, async {
        let db = PgDb::create().await;
        let server = Server::start(
            &database_yaml(&db, "  statementTimeout: 30s\n  lockTimeout: 10s\n"),
            "  writeTimeout: 1s\n",
        )
        .await;
        assert_eq!(server.post(&event("held")).await.status(), 201);
        let locker = lock_chain_head(&db, "held").await;

        // Both writes wait on the locked chain until server.writeTimeout answers 503. A client
        // told 503 retries, so the write must not land afterwards (without a client-supplied
        // id, the retry would store the event twice).
        let (batch_id, single_id) = (Uuid::now_v7(), Uuid::now_v7());
        let with_id = |id: Uuid| {
            let mut e = event("held");
            e["event_id"] = json!(id.to_string());
            e
        };
        let requests = [
            (
                "a batch POST",
                server
                    .http
                    .post(format!("{}/batch", server.events_url()))
                    .json(&json!([with_id(batch_id)])),
            ),
            (
                "a single-event POST",
                server
                    .http
                    .post(server.events_url())
                    .json(&with_id(single_id)),
            ),
        ];
        for (what, request) in requests {
            let started = Instant::now();
            let resp = request
                .send()
                .await
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            let elapsed = started.elapsed();
            let what =
                format!("{what} to the locked chain (answered after {elapsed:?}, writeTimeout 1s)");
            let body = expect_503_of(resp, &server, &what, "timeout").await;
            assert!(elapsed < Duration::from_secs(8), "{what}: too slow: {body}");
        }

        unlock(locker).await;
        // PostgreSQL grants the row lock in arrival order: once a later write to the same chain
        // has committed, every earlier waiter has finished, committed or rolled back.
        assert_eq!(server.post(&event("held")).await.status(), 201);
        let mut c = db.connect().await;
        let stored: Vec<Uuid> =
            sqlx::query_scalar("SELECT event_id FROM audit_events WHERE event_id = ANY($1)")
                .bind(vec![batch_id, single_id])
                .fetch_all(&mut c)
                .await
                .unwrap();
        c.close().await.ok();
        let late: Vec<&str> = [
            (batch_id, "the batch event"),
            (single_id, "the single event"),
        ]
        .iter()
        .filter(|(id, _)| stored.contains(id))
        .map(|(_, what)| *what)
        .collect();
        assert!(
            late.is_empty(),
            "answered 503, yet committed afterwards: {late:?}\nlog:\n{}",
            server.log_tail()
        );
        server.stop().await;
    })
    .await;
}

/// CRC-32 (ISO-HDLC, as zlib), for sqlx's migration lock id.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFF_u32;
    for b in bytes {
        crc ^= u32::from(*b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn migrate_waits_for_another_replicas_migration_despite_request_timeouts() {
    within(TEST_TIMEOUT, async {
        let db = PgDb::create().await;
        // Another replica is migrating: it holds sqlx's migration lock (an advisory lock keyed
        // by the database name) for 4 s. The request-path timeouts (1 s here; 10 s lock and 30 s
        // statement by default) must not cancel this replica's wait or a long migration step,
        // or replicas crash-loop whenever a migration outlasts them.
        let key = 0x3d32_ad9e_i64 * i64::from(crc32(db.name.as_bytes()));
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926, "CRC-32 check value");
        let mut other_replica = db.connect().await;
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(key)
            .execute(&mut other_replica)
            .await
            .unwrap();
        let release = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(4)).await;
            sqlx::query("SELECT pg_advisory_unlock_all()")
                .execute(&mut other_replica)
                .await
                .unwrap();
            other_replica.close().await.ok();
        });

        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("migrate.yaml");
        std::fs::write(
            &config,
            format!(
                "{}{}",
                server_yaml(free_port(), free_port(), ""),
                database_yaml(&db, "  statementTimeout: 1s\n  lockTimeout: 1s\n")
            ),
        )
        .unwrap();
        let watcher = {
            let db = db.clone();
            tokio::spawn(async move { wait_for_lock_waiter(&db, Duration::from_secs(4)).await })
        };
        let out = run_to_exit(&config, &["migrate"], Duration::from_secs(60)).await;
        assert!(
            watcher.await.unwrap(),
            "`migrate` never waited on the migration lock; is the lock id still sqlx's?"
        );
        release.await.unwrap();
        assert!(
            out.status.success(),
            "`migrate` gave up waiting for the other replica's migration after {:?} ({}):\n{}",
            out.elapsed,
            out.status,
            out.stderr
        );
        assert!(
            out.elapsed >= Duration::from_secs(3),
            "`migrate` finished after {:?}, before the lock was released",
            out.elapsed
        );
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Config errors, shutdown, outages, capacity, metric names.
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unknown_config_key_fails_start_and_names_the_key() {
    within(TEST_TIMEOUT, async {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("typo.yaml");
        // Loopback ports, so a server that wrongly started would still stay local.
        std::fs::write(
            &config,
            format!(
                "{}database:\n  maxOpenConn: 3\n",
                server_yaml(free_port(), free_port(), "")
            ),
        )
        .unwrap();
        let path = config.display().to_string();
        for command in ["serve", "check"] {
            let out = run_to_exit(&config, &[command], Duration::from_secs(20)).await;
            assert_eq!(
                out.status.code(),
                Some(2),
                "`{command}` with an unknown key: {}\nstderr:\n{}",
                out.status,
                out.stderr
            );
            assert!(
                out.elapsed < Duration::from_secs(10),
                "`{command}` took {:?} to refuse the config",
                out.elapsed
            );
            assert!(
                out.stderr.contains("maxOpenConn"),
                "`{command}` stderr should name the key:\n{}",
                out.stderr
            );
            assert!(
                out.stderr.contains(&path),
                "`{command}` stderr should name the file {path}:\n{}",
                out.stderr
            );
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_during_a_burst_loses_no_acknowledged_write() {
    within(TEST_TIMEOUT, async {
        const WRITERS: usize = 16;
        let db = PgDb::create().await;
        let mut server = Server::start(&database_yaml(&db, ""), "  shutdownDelay: 1s\n  shutdownTimeout: 10s\n").await;

        let attempted = Arc::new(Mutex::new(HashSet::<Uuid>::new()));
        let acked = Arc::new(Mutex::new(Vec::<(Uuid, Instant)>::new()));
        let other = Arc::new(Mutex::new(Vec::<u16>::new()));
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let (http, url) = (server.http.clone(), server.events_url());
                let (attempted, acked, other) = (Arc::clone(&attempted), Arc::clone(&acked), Arc::clone(&other));
                tokio::spawn(async move {
                    let deadline = Instant::now() + Duration::from_secs(40);
                    let mut last_error = None;
                    while Instant::now() < deadline {
                        let id = Uuid::now_v7();
                        let mut e = event(&format!("burst-{w}"));
                        e["event_id"] = json!(id.to_string());
                        attempted.lock().unwrap().insert(id);
                        match http.post(&url).json(&e).send().await {
                            Ok(r) if r.status() == 201 => acked.lock().unwrap().push((id, Instant::now())),
                            Ok(r) => other.lock().unwrap().push(r.status().as_u16()),
                            Err(e) => {
                                last_error = Some(e.to_string());
                                break; // the listener is gone
                            }
                        }
                    }
                    last_error
                })
            })
            .collect();

        tokio::time::sleep(Duration::from_secs(1)).await;
        let acked_before = acked.lock().unwrap().len();
        assert!(acked_before > 0, "the burst wrote nothing in its first second\nlog:\n{}", server.log_tail());
        let signalled = Instant::now();
        sigterm(server.proc.id());

        // During shutdownDelay readiness turns 503 while the listener still answers.
        let probe = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().unwrap();
        let mut readiness = Vec::new();
        while signalled.elapsed() < Duration::from_secs(3) {
            match probe.get(format!("{}/readyz", server.base)).send().await {
                Ok(r) => {
                    readiness.push(r.status().as_u16());
                    if r.status() == 503 {
                        break;
                    }
                }
                Err(_) => break,
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(readiness.last(), Some(&503), "/readyz during the shutdown delay answered {readiness:?}");

        let mut writer_errors = Vec::new();
        for w in writers {
            let r = tokio::time::timeout(Duration::from_secs(60), w).await.expect("writers stop once the listener closes");
            writer_errors.push(r.unwrap());
        }
        let status = server.proc.wait_exit(EXIT_TIMEOUT.saturating_sub(signalled.elapsed())).await;
        let exited_after = signalled.elapsed();
        let status = status.unwrap_or_else(|| panic!("still running {exited_after:?} after SIGTERM\nlog:\n{}", server.log_tail()));
        assert!(status.success(), "exit status after SIGTERM: {status}\nlog:\n{}", server.log_tail());
        assert!(exited_after <= EXIT_TIMEOUT, "exited {exited_after:?} after SIGTERM");
        assert!(writer_errors.iter().all(Option::is_some), "every writer should have stopped on a connection error: {writer_errors:?}");

        let other = other.lock().unwrap().clone();
        assert!(other.is_empty(), "answers other than 201 during the burst: {other:?}\nlog:\n{}", server.log_tail());
        let acked = acked.lock().unwrap().clone();
        let acked_after_signal = acked.iter().filter(|(_, at)| *at > signalled).count();
        assert!(acked_after_signal > 0, "no write was acknowledged during the shutdown delay; the burst did not overlap the shutdown");
        let acked: HashSet<Uuid> = acked.into_iter().map(|(id, _)| id).collect();
        let attempted = attempted.lock().unwrap().clone();

        let mut c = db.connect().await;
        let stored: HashSet<Uuid> = sqlx::query_scalar::<_, Uuid>("SELECT event_id FROM audit_events")
            .fetch_all(&mut c)
            .await
            .unwrap()
            .into_iter()
            .collect();
        c.close().await.ok();
        let lost: Vec<_> = acked.difference(&stored).collect();
        assert!(lost.is_empty(), "{} acknowledged writes are not stored (of {}): {:?}", lost.len(), acked.len(), &lost[..lost.len().min(5)]);
        let foreign: Vec<_> = stored.difference(&attempted).collect();
        assert!(foreign.is_empty(), "stored ids nobody sent: {foreign:?}");
        let unacked = stored.len() - acked.len();
        assert!(unacked <= WRITERS, "{unacked} stored rows were never acknowledged; at most one in-flight write per writer ({WRITERS}) may be");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_the_buffer_a_database_outage_answers_503_with_retry_after_and_recovers() {
    within(TEST_TIMEOUT, async {
        let cluster = tokio::task::block_in_place(|| TempCluster::start(&[]));
        let db = PgDb::create_on(&cluster.admin_url()).await;
        // Without the outage buffer (with it, see tests/outage_buffer.rs: 202).
        let database = database_yaml(&db, "  connectTimeout: 2s\n");
        let server = Server::start(&format!("{database}buffer:\n  enabled: false\n"), "").await;
        assert_eq!(server.post(&event("outage")).await.status(), 201);

        tokio::task::block_in_place(|| cluster.stop());
        for attempt in 0..3 {
            let started = Instant::now();
            let resp = server.post(&event("outage")).await;
            let elapsed = started.elapsed();
            expect_503(resp, &server, &format!("write {attempt} during the outage")).await;
            assert!(
                elapsed < Duration::from_secs(10),
                "attempt {attempt}: a 503 during the outage took {elapsed:?}"
            );
        }
        let started = Instant::now();
        assert_eq!(
            server.readyz().await,
            503,
            "/readyz while the database is down"
        );
        assert!(started.elapsed() < Duration::from_secs(10));

        tokio::task::block_in_place(|| cluster.restart());
        let deadline = Instant::now() + Duration::from_secs(20);
        let (mut write, mut ready) = (0, 0);
        while Instant::now() < deadline {
            write = server.post(&event("outage")).await.status().as_u16();
            ready = server.readyz().await;
            if write == 201 && ready == 200 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert_eq!(
            (write, ready),
            (201, 200),
            "after the database came back: POST {write}, /readyz {ready}\nlog:\n{}",
            server.log_tail()
        );
        server.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn capacity_check_refuses_start_when_the_budget_does_not_fit() {
    within(TEST_TIMEOUT, async {
        let cluster = tokio::task::block_in_place(|| TempCluster::start(&[("max_connections", "20")]));
        let db = PgDb::create_on(&cluster.admin_url()).await;
        let pool = |replicas: u32| {
            database_yaml(
                &db,
                &format!("  maxOpenConns: 5\n  maxIdleConns: 5\n  capacity:\n    replicas: {replicas}\n    policy: fail\n"),
            )
        };

        // 5 replicas x 5 + headroom 5 = 30 > 20 - 3 reserved: serve refuses, showing the sums.
        let dir = tempfile::tempdir().unwrap();
        let refused = dir.path().join("five.yaml");
        std::fs::write(&refused, format!("{}{}", server_yaml(free_port(), free_port(), ""), pool(5))).unwrap();
        let out = run_to_exit(&refused, &["serve"], Duration::from_secs(60)).await;
        assert!(!out.status.success(), "serve started although the budget does not fit:\n{}", out.stderr);
        assert!(out.stderr.contains("5 replicas x maxOpenConns 5"), "stderr should show the arithmetic:\n{}", out.stderr);
        assert!(out.stderr.contains("max_connections 20"), "stderr should show max_connections:\n{}", out.stderr);

        // `check` judges the same budget; --replicas overrides the file's replicas (2).
        let fits = dir.path().join("two.yaml");
        std::fs::write(&fits, format!("{}{}", server_yaml(free_port(), free_port(), ""), pool(2))).unwrap();
        let out = run_to_exit(&fits, &["check", "--replicas", "5"], Duration::from_secs(60)).await;
        assert_eq!(out.status.code(), Some(1), "check --replicas 5:\n{}\n{}", out.stdout, out.stderr);
        assert!(out.stdout.contains("DOES NOT FIT"), "{}", out.stdout);
        assert!(out.stdout.contains("max_connections"), "{}", out.stdout);
        let out = run_to_exit(&fits, &["check", "--replicas", "2"], Duration::from_secs(60)).await;
        assert_eq!(out.status.code(), Some(0), "check --replicas 2:\n{}\n{}", out.stdout, out.stderr);
        assert!(!out.stdout.contains("DOES NOT FIT"), "{}", out.stdout);

        // 2 replicas x 5 + 5 = 15 fits: serve starts and exports the figures.
        let server = Server::start(&pool(2), "").await;
        assert_eq!(server.readyz().await, 200);
        let m = server.metrics().await;
        assert_eq!(metric_value(&m, "datastorage_db_capacity_violated "), Some(0.0), "{}", pool_lines(&m));
        assert_eq!(metric_value(&m, "datastorage_db_capacity_max_connections "), Some(20.0), "{}", pool_lines(&m));
        assert_eq!(metric_value(&m, "datastorage_db_capacity_replicas "), Some(2.0), "{}", pool_lines(&m));
        assert_eq!(metric_value(&m, "datastorage_db_capacity_budget_connections "), Some(15.0), "{}", pool_lines(&m));
        server.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_metric_the_rules_and_dashboard_use_is_exported() {
    within(TEST_TIMEOUT, async {
        let file = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/metric-names.txt");
        let listed =
            std::fs::read_to_string(file).unwrap_or_else(|e| panic!("cannot read {file}: {e}"));
        let names: Vec<&str> = listed
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect();
        assert!(!names.is_empty(), "{file} lists no metric");

        let app = TestApp::spawn(Backend::Postgres).await;
        assert_eq!(app.post_event(&event("metrics-1")).await.status(), 201);
        assert_eq!(
            app.post_batch(&json!([event("metrics-2"), event("metrics-3")]))
                .await
                .status(),
            201
        );
        let text = app.metrics().await;
        app.stop().await;

        // Sample names of the exposition (a counter's `# TYPE` line omits `_total`).
        let samples: HashSet<&str> = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .filter_map(|l| l.split(['{', ' ']).next())
            .collect();
        let missing: Vec<&str> = names
            .iter()
            .copied()
            .filter(|n| !samples.contains(n) && !samples.contains(format!("{n}_bucket").as_str()))
            .collect();
        assert!(
            missing.is_empty(),
            "listed in deploy/metric-names.txt but not exported: {missing:?}\nexposition:\n{text}"
        );
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// TLS to PostgreSQL, least-privilege capacity, start-up order.
// ---------------------------------------------------------------------------------------------

/// Whether every session of the service on `db` uses TLS, and how many there are.
async fn service_sessions_over_tls(admin_url: &str, db: &str) -> (i64, i64) {
    let mut c = PgConnection::connect(admin_url).await.unwrap();
    let (all, tls): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE s.ssl) FROM pg_stat_activity a \
         JOIN pg_stat_ssl s USING (pid) WHERE a.datname = $1 AND a.application_name = 'datastorage'",
    )
    .bind(db)
    .fetch_one(&mut c)
    .await
    .unwrap();
    c.close().await.ok();
    (all, tls)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn serve_connects_over_tls_with_require_and_verify_full_and_refuses_a_wrong_ca() {
    within(TEST_TIMEOUT, async {
        let ca = datastorage_testkit::tls::TestCa::new("test database CA");
        let server_cert = ca.server("postgres");
        let cluster = tokio::task::block_in_place(|| TempCluster::start_with_tls(&[], &server_cert));
        let db = PgDb::create_on(&cluster.admin_url()).await;
        let database = |mode: &str, ca_file: &std::path::Path| {
            format!(
                "database:\n  driver: postgres\n  host: localhost\n  port: {}\n  name: {}\n  user: postgres\n  sslMode: {mode}\n  sslRootCert: {}\n",
                cluster.port,
                db.name,
                ca_file.display()
            )
        };
        for mode in ["require", "verify-full"] {
            let server = Server::start(&database(mode, &ca.ca_cert), "").await;
            assert_eq!(server.post(&event("tls")).await.status(), 201, "{mode}");
            let (all, tls) = service_sessions_over_tls(&cluster.admin_url(), &db.name).await;
            assert!(all >= 1 && tls == all, "{mode}: {tls} of {all} sessions use TLS");
            server.stop().await;
        }

        // verify-full against a CA that did not sign the server's certificate: refused at start.
        let other = datastorage_testkit::tls::TestCa::new("another CA");
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("wrong-ca.yaml");
        std::fs::write(
            &config,
            format!(
                "{}{}  waitOnStart: 0s\n",
                server_yaml(free_port(), free_port(), ""),
                database("verify-full", &other.ca_cert)
            ),
        )
        .unwrap();
        let out = run_to_exit(&config, &["serve"], Duration::from_secs(60)).await;
        assert!(!out.status.success(), "serve started with a CA that does not sign the server");
        assert!(
            out.stderr.contains("localhost:") && out.stderr.to_lowercase().contains("certificate"),
            "the refusal names the server and the certificate problem:\n{}",
            out.stderr
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn check_under_a_least_privilege_role_counts_other_clients_and_says_it_estimates() {
    within(TEST_TIMEOUT, async {
        let admin = PgDb::create().await;
        let role = format!("ds_lp_{}", &admin.name[8..16]);
        let mut c = admin.connect().await;
        sqlx::raw_sql(&format!(
            "CREATE ROLE {role} LOGIN PASSWORD 'lp-secret'; ALTER DATABASE {} OWNER TO {role}",
            admin.name
        ))
        .execute(&mut c)
        .await
        .unwrap();
        // Another role's client holds a connection to this database while `check` runs.
        let held = admin.connect().await;
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("lp.yaml");
        std::fs::write(
            &config,
            format!(
                "{}database:\n  driver: postgres\n  host: \"{}\"\n  port: {}\n  name: {}\n  user: {role}\n  password: lp-secret\n  sslMode: disable\n",
                server_yaml(free_port(), free_port(), ""),
                admin.host,
                admin.port,
                admin.name
            ),
        )
        .unwrap();
        let out = run_to_exit(&config, &["check"], Duration::from_secs(60)).await;
        let others: i64 = out
            .stdout
            .lines()
            .find(|l| l.contains("other clients' connections"))
            .and_then(|l| l.split_whitespace().nth(3))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no count of other clients:\n{}\n{}", out.stdout, out.stderr));
        assert!(others >= 2, "the held connection and this test's admin session count: {}", out.stdout);
        assert!(out.stdout.contains("estimated") && out.stdout.contains("pg_read_all_stats"), "{}", out.stdout);
        drop(held);
        sqlx::raw_sql(&format!("ALTER DATABASE {} OWNER TO postgres; DROP OWNED BY {role}; DROP ROLE {role}", admin.name))
            .execute(&mut c)
            .await
            .ok();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_capacity_refusal_comes_before_any_migration() {
    within(TEST_TIMEOUT, async {
        let cluster =
            tokio::task::block_in_place(|| TempCluster::start(&[("max_connections", "20")]));
        let db = PgDb::create_on(&cluster.admin_url()).await;
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("refused.yaml");
        std::fs::write(
            &config,
            format!(
                "{}{}",
                server_yaml(free_port(), free_port(), ""),
                database_yaml(
                    &db,
                    "  maxOpenConns: 5\n  capacity:\n    replicas: 5\n    policy: fail\n"
                )
            ),
        )
        .unwrap();
        let out = run_to_exit(&config, &["serve"], Duration::from_secs(60)).await;
        assert!(!out.status.success(), "{}", out.stderr);
        let mut c = db.connect().await;
        let migrated: bool =
            sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
                .fetch_one(&mut c)
                .await
                .unwrap();
        assert!(
            !migrated,
            "a refused start must not have migrated the database"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn serve_waits_for_a_database_that_comes_up_later_staying_unready_meanwhile() {
    within(TEST_TIMEOUT, async {
        let cluster = tokio::task::block_in_place(|| TempCluster::start(&[]));
        let db = PgDb::create_on(&cluster.admin_url()).await;
        tokio::task::block_in_place(|| cluster.stop());
        let started = Instant::now();
        let dir = tempfile::tempdir().unwrap();
        let (port, metrics_port) = (free_port(), free_port());
        let config = dir.path().join("late.yaml");
        std::fs::write(
            &config,
            format!(
                "{}{}",
                server_yaml(port, metrics_port, ""),
                database_yaml(&db, "  waitOnStart: 60s\n")
            ),
        )
        .unwrap();
        let log = dir.path().join("serve.log");
        let file = std::fs::File::create(&log).unwrap();
        let child = datastorage(&config, dir.path(), &["serve"])
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap();
        let mut child = ChildGuard::new(child);
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        // While the database is down: alive, not ready, writes refused with Retry-After.
        let mut probed = false;
        for _ in 0..100 {
            if let Ok(r) = http.get(format!("{base}/healthz")).send().await {
                assert_eq!(r.status(), 200);
                probed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(probed, "the listener should answer /healthz while waiting");
        let r = http.get(format!("{base}/readyz")).send().await.unwrap();
        assert_eq!(r.status(), 503);
        let r = http
            .post(format!("{base}/api/v1/audit/events"))
            .json(&event("late"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 503);
        assert!(r.headers().contains_key("retry-after"));
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(
            child.try_wait().is_none(),
            "serve must keep waiting:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::task::block_in_place(|| cluster.restart());
        let mut ready = false;
        for _ in 0..200 {
            if http
                .get(format!("{base}/readyz"))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
            {
                ready = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(ready, "ready once the database is up:\n{text}");
        assert!(
            text.contains("waiting for the database"),
            "each attempt is logged:\n{text}"
        );
        let r = http
            .post(format!("{base}/api/v1/audit/events"))
            .json(&event("late"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        assert!(started.elapsed() < Duration::from_secs(60));
        sigterm(child.id());
        let status = child
            .wait_exit(EXIT_TIMEOUT)
            .await
            .expect("exits after SIGTERM");
        assert!(status.success());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failed_connection_attempts_back_off_instead_of_hammering_a_full_server() {
    within(TEST_TIMEOUT, async {
        let cluster =
            tokio::task::block_in_place(|| TempCluster::start(&[("max_connections", "12")]));
        let db = PgDb::create_on(&cluster.admin_url()).await;
        // No idle connections kept: every request needs a new one.
        let server = Server::start(
            &database_yaml(
                &db,
                "  maxOpenConns: 4\n  maxIdleConns: 0\n  acquireTimeout: 500ms\n",
            ),
            "",
        )
        .await;
        assert_eq!(server.post(&event("full")).await.status(), 201);
        // Take every slot left, superuser ones included.
        let mut hogs = Vec::new();
        while let Ok(c) = PgConnection::connect(&cluster.admin_url()).await {
            hogs.push(c);
            assert!(hogs.len() < 50);
        }
        let refusals = |log: &str| log.matches("too many clients").count();
        let before = refusals(&cluster.log_text());
        let started = Instant::now();
        let mut answers = Vec::new();
        while started.elapsed() < Duration::from_secs(4) {
            let body = event("full");
            let batch: Vec<_> = (0..20).map(|_| server.post(&body)).collect();
            for r in futures::future::join_all(batch).await {
                answers.push(r.status().as_u16());
            }
        }
        let attempts = refusals(&cluster.log_text()) - before;
        assert!(
            answers.iter().all(|s| *s == 503),
            "every write answers 503 while the server is full"
        );
        // Backoff doubles from 100 ms to 5 s: about 6 attempts in 4 s, not one per request.
        assert!(
            attempts <= 15,
            "{attempts} refused connection attempts for {} requests in 4 s",
            answers.len()
        );
        drop(hogs);
        // Once slots free up, writes work again (after the current backoff runs out).
        let mut ok = false;
        for _ in 0..100 {
            if server.post(&event("full")).await.status() == 201 {
                ok = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            ok,
            "writes recover once connections are free\n{}",
            server.log_tail()
        );
        server.stop().await;
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Group commit: a group that fails part-way.
// ---------------------------------------------------------------------------------------------

/// Holds `audit_events` while `count` single writes queue behind it (one committer:
/// `maxOpenConns: 2`), then lets go, so they commit as one group; returns each answer's status
/// in request order and the number of distinct transactions that stored their rows (`xmin`).
async fn queued_group(
    server: &Server,
    db: &PgDb,
    round: &str,
    count: usize,
    poison_at: Option<usize>,
) -> (Vec<u16>, i64) {
    let mut blocker = PgConnection::connect(&db.url()).await.unwrap();
    sqlx::query("BEGIN").execute(&mut blocker).await.unwrap();
    sqlx::query("LOCK TABLE audit_events IN ACCESS EXCLUSIVE MODE")
        .execute(&mut blocker)
        .await
        .unwrap();
    // The one committer takes this write and waits on the lock.
    let first = tokio::spawn({
        let (http, url) = (server.http.clone(), server.events_url());
        let body = event(&format!("{round}-first"));
        async move { http.post(url).json(&body).send().await }
    });
    assert!(wait_for_lock_waiter(db, Duration::from_secs(10)).await);
    let mut writes = Vec::new();
    for i in 0..count {
        let mut e = event(&format!("{round}-{i}"));
        if poison_at == Some(i) {
            e["event_type"] = json!("test.poison");
        }
        let (http, url) = (server.http.clone(), server.events_url());
        writes.push(tokio::spawn(async move {
            http.post(url)
                .json(&e)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    // Every one of them queued for the busy committer (queued single writes count as waits).
    let deadline = Instant::now() + Duration::from_secs(10);
    while pool_metric(&server.metrics().await, "datastorage_db_pool_waiting") < count as f64 {
        assert!(Instant::now() < deadline, "{}", server.log_tail());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sqlx::query("ROLLBACK").execute(&mut blocker).await.unwrap();
    assert_eq!(first.await.unwrap().unwrap().status(), 201);
    let mut statuses = Vec::new();
    for w in writes {
        statuses.push(w.await.unwrap());
    }
    let transactions: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT xmin::text) FROM audit_events WHERE correlation_id LIKE $1 || '-%' AND correlation_id <> $1 || '-first'",
    )
    .bind(round)
    .fetch_one(&mut blocker)
    .await
    .unwrap();
    blocker.close().await.ok();
    (statuses, transactions)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_commit_group_that_fails_part_way_answers_each_request_for_itself() {
    within(TEST_TIMEOUT, async {
        let db = PgDb::create().await;
        let server = Server::start(&database_yaml(&db, "  maxOpenConns: 2\n"), "").await;
        assert_eq!(server.post(&event("warm-up")).await.status(), 201);
        // A rule the database enforces that validation does not know.
        db.sql(&["ALTER TABLE audit_events ADD CONSTRAINT no_poison CHECK (event_type <> 'test.poison')"])
            .await;

        // Without a bad event the 40 queued writes are one group: one transaction.
        let (statuses, transactions) = queued_group(&server, &db, "whole", 40, None).await;
        assert!(statuses.iter().all(|s| *s == 201), "{statuses:?}");
        assert_eq!(transactions, 1, "40 queued writes commit as one group");

        // With one the database refuses, the group fails part-way: that request alone gets
        // 400, each of the other 39 is written on its own and gets 201.
        let (statuses, transactions) = queued_group(&server, &db, "split", 40, Some(17)).await;
        for (i, s) in statuses.iter().enumerate() {
            assert_eq!(*s, if i == 17 { 400 } else { 201 }, "request {i}: {statuses:?}");
        }
        assert_eq!(transactions, 39, "the failed group's events are retried one by one");
        let stored: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM audit_events WHERE correlation_id LIKE 'split-%' AND correlation_id <> 'split-first'",
        )
        .fetch_one(&mut db.connect().await)
        .await
        .unwrap();
        assert_eq!(stored, 39);
        server.stop().await;
    })
    .await;
}
