//! End-to-end tests: the client and the buffered store against a real server on PostgreSQL.
//!
//! The database is never mocked. One test puts a tiny HTTP stub in front of the real server to
//! make it answer 429 with `Retry-After` first. The credential and TLS tests talk to small
//! stubs that check tokens and client certificates, which the real server does not do yet.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use datastorage_client::api::{EventQueryParams, ProblemType, VerifyChainRequest};
use datastorage_client::{
    AuditStore, BearerToken, Client, OverflowPolicy, RecordError, RetryPolicy, SpoolConfig,
    StoreConfig, StoreStats, Watermark, DEFAULT_FLUSH_INTERVAL,
};
use datastorage_testkit::{free_port as closed_port, request as event, Backend, PgDb, TestApp};
use tokio::net::TcpListener;
use tokio::time::Instant;
use uuid::Uuid;

/// Retries quick enough for tests.
fn fast_retry(deadline: Duration) -> RetryPolicy {
    RetryPolicy {
        initial_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(250),
        deadline,
    }
}

fn short_timeouts(base: &str) -> Client {
    Client::builder(base)
        .connect_timeout(Duration::from_millis(500))
        .request_timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_route_answers_with_typed_values_and_problems() {
    let app = TestApp::serve(Backend::Postgres).await;
    let client = Client::new(app.base()).unwrap();

    assert_eq!(client.healthz().await.unwrap().status, "healthy");
    assert_eq!(client.readyz().await.unwrap().status, "ready");

    let mut one = event(1);
    one.event_id = Some(Uuid::now_v7());
    let created = client.create_event(&one).await.unwrap();
    assert_eq!(Some(created.event_id), one.event_id);
    // A replay of the same id is idempotent: same id, nothing new written.
    let replay = client.create_event(&one).await.unwrap();
    assert_eq!(replay.event_id, created.event_id);

    let batch: Vec<_> = (2..5).map(event).collect();
    let ids = client.create_events_batch(&batch).await.unwrap().event_ids;
    assert_eq!(ids.len(), 3);

    let got = client.get_event(created.event_id).await.unwrap();
    assert_eq!(got.correlation_id, "corr-1");

    let page = client
        .query_events(&EventQueryParams {
            correlation_id: Some("corr-1".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page.pagination.total, 1);

    let verified = client
        .verify_chain(&VerifyChainRequest {
            correlation_id: "corr-1".into(),
        })
        .await
        .unwrap();
    assert!(verified.is_valid);

    let missing = client.get_event(Uuid::now_v7()).await.unwrap_err();
    assert_eq!(missing.status(), Some(404));
    assert!(missing.is_problem(ProblemType::NotFound) && !missing.is_retryable());

    let mut bad = event(9);
    bad.event_type = "x".repeat(101);
    let invalid = client.create_event(&bad).await.unwrap_err();
    assert!(invalid.is_problem(ProblemType::Validation), "{invalid:?}");
    assert!(invalid
        .problem()
        .unwrap()
        .field_errors
        .contains_key("event_type"));

    let unreachable = short_timeouts(&format!("http://127.0.0.1:{}", closed_port()));
    let down = unreachable.healthz().await.unwrap_err();
    assert!(down.is_retryable() && down.status().is_none(), "{down:?}");
    app.stop().await;
}

/// Polls the database every 50 ms until every id in `ids` is stored, for at most `limit`;
/// returns how long that took, or `None` if some id is still missing.
async fn stored_within(pg: &PgDb, ids: &[Uuid], limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    loop {
        let stored = pg.stored_ids().await;
        if ids.iter().all(|id| stored.contains_key(id)) {
            return Some(started.elapsed());
        }
        if started.elapsed() > limit {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Slack over the flush interval for one batch request and the database poll.
const FLUSH_MARGIN: Duration = Duration::from_millis(750);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_event_recorded_after_ten_idle_seconds_arrives_within_the_flush_interval() {
    let app = TestApp::serve(Backend::Postgres).await;
    let store = AuditStore::new(Client::new(app.base()).unwrap());
    // One event first, so that the idle period follows real traffic, not only the start.
    let first = store.try_record(event(0)).unwrap();
    assert!(
        stored_within(app.pg(), &[first], DEFAULT_FLUSH_INTERVAL + FLUSH_MARGIN)
            .await
            .is_some(),
        "the first event is sent by the timer: {:?}",
        store.stats()
    );
    tokio::time::sleep(Duration::from_secs(10)).await;

    let id = store.try_record(event(1)).unwrap();
    let took = stored_within(app.pg(), &[id], Duration::from_secs(10)).await;
    let took = took.unwrap_or_else(|| panic!("never sent: {:?}", store.stats()));
    assert!(
        took <= DEFAULT_FLUSH_INTERVAL + FLUSH_MARGIN,
        "an event after an idle period waited {took:?}"
    );
    let stats = store.stats();
    assert_eq!((stats.sent, stats.failed, stats.retried), (2, 0, 0));
    store.close(Duration::from_secs(10)).await.unwrap();
    app.stop().await;
}

/// The example service binary, which cargo builds beside the test binaries for `cargo test`:
/// `target/<profile>/examples/audited-service`. A run limited to `--test e2e` does not rebuild
/// it, so such a run can test a stale example; `cargo test -p datastorage-client` always builds
/// it.
fn example_service_binary() -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(std::path::Path::parent).unwrap();
    let bin = profile_dir.join("examples").join("audited-service");
    assert!(
        bin.exists(),
        "{} is missing: cargo test builds it (or cargo build -p datastorage-client --examples)",
        bin.display()
    );
    bin
}

/// `POST /orders` on the example service; answers the status and the audit event id.
async fn post_order(http: &reqwest::Client, base: &str, cid: &str, qty: u32) -> (u16, Uuid) {
    let answer = http
        .post(format!("{base}/orders"))
        .header("x-correlation-id", cid)
        .json(&serde_json::json!({ "item": "book", "quantity": qty }))
        .send()
        .await
        .unwrap();
    let status = answer.status().as_u16();
    let body: serde_json::Value = answer.json().await.unwrap();
    let id = body["audit_event_id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no audit event id in {body}"));
    (status, id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_example_service_delivers_its_events_within_two_seconds_after_idling() {
    use datastorage_testkit::process::ChildGuard;

    let app = TestApp::serve(Backend::Postgres).await;
    let port = closed_port();
    let base = format!("http://127.0.0.1:{port}");
    let logs = tempfile::tempdir().unwrap();
    let log_path = logs.path().join("audited-service.log");
    // Its log goes to standard output; both streams are kept in one file for failure messages.
    let log_file = std::fs::File::create(&log_path).unwrap();
    let mut service = ChildGuard::new(
        std::process::Command::new(example_service_binary())
            .env("LISTEN", format!("127.0.0.1:{port}"))
            .env("DATASTORAGE_URL", app.base())
            .env("RUST_LOG", "info")
            .env_remove("AUDIT_SPOOL_DIR")
            .env_remove("DATASTORAGE_TOKEN")
            .env_remove("DATASTORAGE_TOKEN_FILE")
            .env_remove("DATASTORAGE_CA_FILE")
            .env_remove("DATASTORAGE_CLIENT_CERT")
            .env_remove("DATASTORAGE_CLIENT_KEY")
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .spawn()
            .unwrap(),
    );
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let http = reqwest::Client::new();
    let up = eventually_async(Duration::from_secs(30), || async {
        let answer = http.get(format!("{base}/healthz")).send().await;
        answer.is_ok_and(|a| a.status().is_success())
    })
    .await;
    assert!(up, "the example service did not start:\n{}", log());

    // Idle: nothing recorded for a while, so the store's queue has been empty.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let cid = format!("example-{}", Uuid::now_v7());
    let (created, ok_id) = post_order(&http, &base, &cid, 2).await;
    let (refused, failed_id) = post_order(&http, &base, &cid, 0).await;
    assert_eq!((created, refused), (201, 422));
    let took = stored_within(app.pg(), &[ok_id, failed_id], Duration::from_secs(2)).await;
    assert!(
        took.is_some(),
        "the example's events were not stored within 2 s:\n{}",
        log()
    );
    // Its counters are JSON with the field names of StoreStats; the answers of the batch may
    // land a moment after the rows.
    let stats_url = format!("{base}/audit-stats");
    let mut stats = StoreStats::default();
    for _ in 0..40 {
        let answer = http.get(&stats_url).send().await.unwrap();
        assert!(answer.headers()[reqwest::header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("application/json"));
        let text = answer.text().await.unwrap();
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert!(json["batch_limit"].is_u64(), "{text}");
        stats = serde_json::from_str(&text).unwrap();
        if stats.sent == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        (stats.queued, stats.sent, stats.failed),
        (2, 2, 0),
        "{stats:?}"
    );

    datastorage_testkit::process::sigterm(service.id());
    let status = service.wait_exit(Duration::from_secs(20)).await;
    assert!(status.is_some_and(|s| s.success()), "{status:?}\n{}", log());
    assert!(log().contains("audit events flushed"), "{}", log());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_thousand_events_from_eight_tasks_arrive_exactly_once() {
    const TASKS: usize = 8;
    const PER_TASK: usize = 12_500;
    const TOTAL: usize = TASKS * PER_TASK;
    let app = TestApp::serve(Backend::Postgres).await;
    // 100,000 events arrive faster than any server writes them: the producers choose to wait for
    // room rather than drop (the default would drop, and count, the overflow).
    let config = StoreConfig {
        overflow: OverflowPolicy::Block {
            timeout: Duration::from_secs(120),
        },
        ..StoreConfig::default()
    };
    let store = AuditStore::with_config(Client::new(app.base()).unwrap(), config).unwrap();

    let mut producers = Vec::new();
    for t in 0..TASKS {
        let store = store.clone();
        producers.push(tokio::spawn(async move {
            let mut ids = Vec::with_capacity(PER_TASK);
            for i in 0..PER_TASK {
                ids.push(store.record(event(t * PER_TASK + i)).await.unwrap());
                if i % 500 == 0 {
                    tokio::task::yield_now().await;
                }
            }
            ids
        }));
    }
    let mut ids = HashSet::new();
    for p in producers {
        ids.extend(p.await.unwrap());
    }
    assert_eq!(ids.len(), TOTAL, "ids are unique");
    store.close(Duration::from_secs(300)).await.unwrap();

    let stored = app.pg().stored_ids().await;
    assert_eq!(stored.len(), TOTAL, "row count");
    for id in &ids {
        assert_eq!(stored.get(id), Some(&1), "{id} must be stored exactly once");
    }
    let stats = store.stats();
    assert_eq!(stats.queued, TOTAL as u64);
    assert_eq!(stats.sent, TOTAL as u64);
    assert_eq!((stats.dropped, stats.failed, stats.abandoned), (0, 0, 0));
    // At least one batch per DEFAULT_MAX_BATCH events: every event went in a batch.
    let batches = (TOTAL / datastorage_client::DEFAULT_MAX_BATCH) as u64;
    assert!(stats.batch_latency_count >= batches, "{stats:?}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_server_stopped_for_ten_seconds_mid_stream_loses_and_duplicates_nothing() {
    const EVENTS: usize = 20_000;
    let app = TestApp::serve(Backend::Postgres).await;
    let addr = app.base().trim_start_matches("http://").to_owned();
    let pg = app.pg().clone();
    let config = StoreConfig {
        retry: fast_retry(Duration::from_secs(120)),
        overflow: OverflowPolicy::Block {
            timeout: Duration::from_secs(60),
        },
        ..StoreConfig::default()
    };
    let store = AuditStore::with_config(short_timeouts(app.base()), config).unwrap();
    // A steady stream of about 20 s: 100 events every 100 ms.
    let producer = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut ids = Vec::with_capacity(EVENTS);
            for i in 0..EVENTS {
                ids.push(store.record(event(i)).await.unwrap());
                if i % 100 == 99 {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            ids
        })
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    app.stop().await;
    let stopped_at = store.stats().sent;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let during = store.stats();
    assert!(during.retried > 0, "the outage was felt: {during:?}");
    // At most the batches that were in flight when the server stopped were answered since.
    assert!(
        during.sent <= stopped_at + 2_000,
        "nothing sent while down: {during:?}"
    );
    let listener = TcpListener::bind(&addr).await.unwrap();
    let app = TestApp::serve_on_db(listener, pg, |_| {}).await;

    let ids = producer.await.unwrap();
    store.close(Duration::from_secs(120)).await.unwrap();
    let stats = store.stats();
    assert_eq!(
        (stats.sent, stats.dropped, stats.failed),
        (EVENTS as u64, 0, 0),
        "{stats:?}"
    );
    let stored = app.pg().stored_ids().await;
    assert_eq!(stored.len(), EVENTS, "row count");
    assert!(ids.iter().all(|id| stored.get(id) == Some(&1)));
    app.stop().await;
}

/// Arrival times of batch requests at the stub.
type Arrivals = Arc<Mutex<Vec<Instant>>>;

#[derive(Clone)]
struct Stub {
    upstream: String,
    http: reqwest::Client,
    arrivals: Arrivals,
}

/// First batch: 429 with `Retry-After: 2`. Later ones: forwarded to the real server.
async fn stub_batch(State(stub): State<Stub>, body: Bytes) -> Response {
    let first = {
        let mut arrivals = stub.arrivals.lock().unwrap();
        arrivals.push(Instant::now());
        arrivals.len() == 1
    };
    if first {
        let problem = r#"{"type":"https://kubernaut.ai/problems/rate-limited","title":"Too Many Requests","status":429}"#;
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [
                (header::RETRY_AFTER, "2"),
                (header::CONTENT_TYPE, "application/problem+json"),
            ],
            problem,
        )
            .into_response();
    }
    let answer = stub
        .http
        .post(format!("{}/api/v1/audit/events/batch", stub.upstream))
        .header(header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = StatusCode::from_u16(answer.status().as_u16()).unwrap();
    (status, answer.bytes().await.unwrap()).into_response()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_429_with_retry_after_is_not_retried_sooner() {
    let app = TestApp::serve(Backend::Postgres).await;
    let arrivals = Arrivals::default();
    let stub = Stub {
        upstream: app.base().to_owned(),
        http: reqwest::Client::new(),
        arrivals: arrivals.clone(),
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stub_base = format!("http://{}", listener.local_addr().unwrap());
    let router = axum::Router::new()
        .route("/api/v1/audit/events/batch", post(stub_batch))
        .with_state(stub);
    let server = tokio::spawn(async move { axum::serve(listener, router).await });

    let config = StoreConfig {
        // Backoff alone would retry after ~50 ms; only Retry-After can make it wait 2 s.
        retry: fast_retry(Duration::from_secs(30)),
        ..StoreConfig::default()
    };
    let store = AuditStore::with_config(Client::new(&stub_base).unwrap(), config).unwrap();
    let ids: Vec<_> = (0..10)
        .map(|i| store.try_record(event(i)).unwrap())
        .collect();
    store.flush().await;

    let arrivals = arrivals.lock().unwrap().clone();
    assert_eq!(arrivals.len(), 2, "one refused attempt, one retry");
    let gap = arrivals[1] - arrivals[0];
    assert!(gap >= Duration::from_secs(2), "retried after {gap:?}");
    let stats = store.stats();
    assert_eq!((stats.sent, stats.retried, stats.failed), (10, 10, 0));
    let stored = app.pg().stored_ids().await;
    assert!(ids.iter().all(|id| stored.get(id) == Some(&1)));
    server.abort();
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn overflow_drops_exactly_the_events_it_refuses() {
    const RECORDED: usize = 1_000;
    // The server's port is chosen now, but nothing listens there until every event is recorded.
    let port = closed_port();
    let base = format!("http://127.0.0.1:{port}");
    let config = StoreConfig {
        queue_capacity: 20,
        max_batch: 10,
        in_flight: 1,
        retry: fast_retry(Duration::from_secs(120)),
        ..StoreConfig::default()
    };
    let store = AuditStore::with_config(short_timeouts(&base), config).unwrap();
    let mut accepted = Vec::new();
    let mut refused = 0u64;
    for i in 0..RECORDED {
        match store.record(event(i)).await {
            Ok(id) => accepted.push(id),
            Err(RecordError::QueueFull) => refused += 1,
            Err(e) => panic!("unexpected {e}"),
        }
    }
    let stats = store.stats();
    assert!(refused > 0, "the queue must overflow");
    assert_eq!(stats.dropped, refused);
    assert_eq!(stats.queued, accepted.len() as u64);
    assert_eq!(stats.dropped + stats.queued, RECORDED as u64);

    // The server comes up; everything accepted arrives and nothing else does.
    let pg = PgDb::create().await;
    let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let app = TestApp::serve_on_db(listener, pg, |_| {}).await;
    store.close(Duration::from_secs(60)).await.unwrap();
    let stored = app.pg().stored_ids().await;
    let missing = RECORDED as u64 - stored.len() as u64;
    assert_eq!(
        missing,
        store.stats().dropped,
        "dropped equals the events missing"
    );
    assert!(accepted.iter().all(|id| stored.get(id) == Some(&1)));
    assert!(store.stats().retried > 0);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn close_returns_after_everything_accepted_is_written_and_refuses_later_records() {
    let app = TestApp::serve(Backend::Postgres).await;
    let config = StoreConfig {
        // Long enough that only close, not the timer, can explain a prompt drain.
        flush_interval: Duration::from_secs(60),
        overflow: OverflowPolicy::Block {
            timeout: Duration::from_secs(60),
        },
        ..StoreConfig::default()
    };
    let store = AuditStore::with_config(Client::new(app.base()).unwrap(), config).unwrap();
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0.. {
                match store.record(event(i)).await {
                    Ok(id) => ids.push(id),
                    Err(RecordError::Closed) => return ids,
                    Err(e) => panic!("unexpected {e}"),
                }
                if i % 100 == 0 {
                    tokio::task::yield_now().await;
                }
            }
            unreachable!()
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    store.close(Duration::from_secs(60)).await.unwrap();
    // Counted the moment close returned: nothing accepted may still be on its way.
    let stored = app.pg().stored_ids().await;
    let accepted = writer.await.unwrap();
    assert!(!accepted.is_empty());
    assert_eq!(stored.len(), accepted.len());
    assert!(accepted.iter().all(|id| stored.get(id) == Some(&1)));
    let stats = store.stats();
    assert_eq!(stats.sent, accepted.len() as u64);
    assert_eq!(stats.refused, 1, "the writer's one refused record");
    assert_eq!(store.record(event(0)).await, Err(RecordError::Closed));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn close_at_its_deadline_reports_what_is_left() {
    let base = format!("http://127.0.0.1:{}", closed_port());
    let config = StoreConfig {
        retry: fast_retry(Duration::from_secs(600)),
        ..StoreConfig::default()
    };
    let store = AuditStore::with_config(short_timeouts(&base), config).unwrap();
    for i in 0..100 {
        store.try_record(event(i)).unwrap();
    }
    let started = Instant::now();
    let left = store.close(Duration::from_millis(500)).await.unwrap_err();
    let took = started.elapsed();
    assert_eq!(left.remaining, 100);
    assert!(
        took >= Duration::from_millis(500) && took < Duration::from_secs(3),
        "{took:?}"
    );
    // The abandoned events are accounted for once the background tasks stop.
    for _ in 0..100 {
        if store.stats().abandoned == 100 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stats = store.stats();
    assert_eq!((stats.abandoned, stats.sent, stats.failed), (100, 0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lower_server_batch_limit_is_learned_and_nothing_is_dropped() {
    let app = TestApp::serve_with(Backend::Postgres, |s| s.server.max_batch_size = 50).await;
    let store = AuditStore::new(Client::new(app.base()).unwrap());
    let ids: Vec<_> = (0..2_000)
        .map(|i| store.try_record(event(i)).unwrap())
        .collect();
    store.close(Duration::from_secs(60)).await.unwrap();
    let stats = store.stats();
    assert_eq!(stats.batch_limit, 50);
    assert_eq!((stats.sent, stats.dropped, stats.failed), (2_000, 0, 0));
    let stored = app.pg().stored_ids().await;
    assert_eq!(stored.len(), 2_000);
    assert!(ids.iter().all(|id| stored.get(id) == Some(&1)));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn invalid_events_in_a_batch_fail_alone_and_the_rest_is_stored() {
    let app = TestApp::serve(Backend::Postgres).await;
    let store = AuditStore::new(Client::new(app.base()).unwrap());
    let mut good = Vec::new();
    for i in 0..100 {
        let mut e = event(i);
        if i % 25 == 7 {
            e.event_type = "x".repeat(101);
            store.try_record(e).unwrap();
        } else {
            good.push(store.try_record(e).unwrap());
        }
    }
    store.close(Duration::from_secs(30)).await.unwrap();
    let stats = store.stats();
    assert_eq!((stats.sent, stats.failed), (96, 4));
    let stored = app.pg().stored_ids().await;
    assert_eq!(stored.len(), 96);
    assert!(good.iter().all(|id| stored.get(id) == Some(&1)));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn block_policy_waits_for_room_then_drops_with_a_count() {
    let base = format!("http://127.0.0.1:{}", closed_port());
    let config = StoreConfig {
        queue_capacity: 5,
        max_batch: 5,
        in_flight: 1,
        overflow: OverflowPolicy::Block {
            timeout: Duration::from_millis(200),
        },
        retry: fast_retry(Duration::from_secs(600)),
        ..StoreConfig::default()
    };
    let store = AuditStore::with_config(short_timeouts(&base), config).unwrap();
    // One batch goes on the wire (and keeps retrying); five more fill the queue.
    let mut accepted = 0;
    let mut waited = Duration::ZERO;
    for i in 0..20 {
        let started = Instant::now();
        match store.record(event(i)).await {
            Ok(_) => accepted += 1,
            Err(RecordError::QueueFull) => {
                waited = started.elapsed();
                break;
            }
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert!(waited >= Duration::from_millis(200), "blocked {waited:?}");
    let stats = store.stats();
    assert_eq!((stats.queued, stats.dropped), (accepted, 1));
    let _ = store.close(Duration::from_millis(10)).await;
}

/// A store that spools after `retry_deadline` of failures, in `dir`.
fn spooling(dir: &std::path::Path, retry_deadline: Duration) -> StoreConfig {
    StoreConfig {
        retry: fast_retry(retry_deadline),
        spool: Some(SpoolConfig::new(dir)),
        ..StoreConfig::default()
    }
}

/// Polls `check` every 50 ms for at most `limit`.
async fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    check()
}

/// Polls the async `check` every 50 ms for at most `limit`.
async fn eventually_async<F: std::future::Future<Output = bool>>(
    limit: Duration,
    mut check: impl FnMut() -> F,
) -> bool {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    check().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn spooled_batches_survive_a_restart_of_the_store_and_are_replayed_once() {
    const EVENTS: usize = 2_000;
    let dir = tempfile::tempdir().unwrap();
    let port = closed_port();
    let base = format!("http://127.0.0.1:{port}");

    // First store: the server is down past the retry deadline, so every batch is spooled; close
    // then finds nothing to wait for.
    let store = AuditStore::with_config(
        short_timeouts(&base),
        spooling(dir.path(), Duration::from_millis(300)),
    )
    .unwrap();
    let ids: Vec<_> = (0..EVENTS)
        .map(|i| store.try_record(event(i)).unwrap())
        .collect();
    assert!(
        eventually(Duration::from_secs(30), || store.stats().spooled
            == EVENTS as u64)
        .await,
        "{:?}",
        store.stats()
    );
    store.close(Duration::from_millis(200)).await.unwrap();
    let stats = store.stats();
    assert_eq!((stats.sent, stats.failed, stats.abandoned), (0, 0, 0));
    assert!(stats.spool_bytes > 0);
    drop(store);

    // Second store on the same directory: the server is back, the spool is replayed.
    let pg = PgDb::create().await;
    let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let app = TestApp::serve_on_db(listener, pg, |_| {}).await;
    let store = AuditStore::with_config(
        Client::new(app.base()).unwrap(),
        spooling(dir.path(), Duration::from_secs(30)),
    )
    .unwrap();
    store.close(Duration::from_secs(60)).await.unwrap();
    let stats = store.stats();
    assert_eq!(stats.replayed, EVENTS as u64, "{stats:?}");
    assert_eq!((stats.spool_bytes, stats.spool_corrupt_records), (0, 0));
    let stored = app.pg().stored_ids().await;
    assert_eq!(stored.len(), EVENTS);
    assert!(ids.iter().all(|id| stored.get(id) == Some(&1)));
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(
        left.is_empty(),
        "segments deleted once acknowledged: {left:?}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_a_spool_close_at_its_deadline_spools_instead_of_abandoning() {
    let dir = tempfile::tempdir().unwrap();
    let port = closed_port();
    let base = format!("http://127.0.0.1:{port}");
    let store = AuditStore::with_config(
        short_timeouts(&base),
        spooling(dir.path(), Duration::from_secs(600)),
    )
    .unwrap();
    let ids: Vec<_> = (0..100)
        .map(|i| store.try_record(event(i)).unwrap())
        .collect();
    let started = Instant::now();
    store.close(Duration::from_millis(500)).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    let stats = store.stats();
    assert_eq!(
        (stats.spooled, stats.abandoned, stats.sent),
        (100, 0, 0),
        "{stats:?}"
    );
    drop(store);

    let pg = PgDb::create().await;
    let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let app = TestApp::serve_on_db(listener, pg, |_| {}).await;
    let store = AuditStore::with_config(
        Client::new(app.base()).unwrap(),
        spooling(dir.path(), Duration::from_secs(30)),
    )
    .unwrap();
    store.close(Duration::from_secs(30)).await.unwrap();
    assert_eq!(store.stats().replayed, 100);
    let stored = app.pg().stored_ids().await;
    assert!(ids.iter().all(|id| stored.get(id) == Some(&1)));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn past_the_watermark_batches_go_to_the_spool_and_are_replayed_once() {
    let dir = tempfile::tempdir().unwrap();
    let port = closed_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut config = spooling(dir.path(), Duration::from_secs(600));
    config.queue_capacity = 100;
    config.max_batch = 10;
    config.in_flight = 1;
    config.spool.as_mut().unwrap().watermark = Watermark::Events(50);
    // The producer waits for room; only the spool can make room while the server is down.
    config.overflow = OverflowPolicy::Block {
        timeout: Duration::from_secs(10),
    };
    let store = AuditStore::with_config(short_timeouts(&base), config).unwrap();
    // Far more than the queue holds: with the spool nothing is dropped.
    let mut ids = Vec::new();
    for i in 0..1_000 {
        ids.push(store.record(event(i)).await.unwrap());
    }
    let stats = store.stats();
    assert_eq!(stats.dropped, 0);
    assert!(
        eventually(Duration::from_secs(10), || store.stats().spooled > 0).await,
        "{stats:?}"
    );

    let pg = PgDb::create().await;
    let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let app = TestApp::serve_on_db(listener, pg, |_| {}).await;
    store.close(Duration::from_secs(60)).await.unwrap();
    let stats = store.stats();
    assert_eq!(stats.sent + stats.spooled, 1_000, "{stats:?}");
    assert_eq!(stats.replayed, stats.spooled, "{stats:?}");
    let stored = app.pg().stored_ids().await;
    assert_eq!(stored.len(), 1_000);
    assert!(ids.iter().all(|id| stored.get(id) == Some(&1)));
    app.stop().await;
}

// ---- The spool across a killed client process ----------------------------------------------
//
// The client runs as a child process: this very test binary, started again with
// `--ignored --exact spool_child_process`, steered by environment variables. Its event ids are
// derived from a seed, so the parent knows them without being told.

const CHILD_MODE: &str = "DS_SPOOL_CHILD_MODE";
const CHILD_URL: &str = "DS_SPOOL_CHILD_URL";
const CHILD_DIR: &str = "DS_SPOOL_CHILD_DIR";
const CHILD_SEED: &str = "DS_SPOOL_CHILD_SEED";
const CHILD_EVENTS: usize = 5_000;

fn child_event_id(seed: u64, i: usize) -> Uuid {
    Uuid::from_u128((u128::from(seed) << 64) | i as u128)
}

/// Not a test on its own: the client process of
/// `a_client_killed_while_the_server_is_down_loses_nothing_that_it_spooled`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "runs only as the child process of a spool test"]
async fn spool_child_process() {
    let Ok(mode) = std::env::var(CHILD_MODE) else {
        return;
    };
    let url = std::env::var(CHILD_URL).unwrap();
    let dir = std::env::var(CHILD_DIR).unwrap();
    let seed: u64 = std::env::var(CHILD_SEED).unwrap().parse().unwrap();
    let config = spooling(std::path::Path::new(&dir), Duration::from_millis(500));
    let store = AuditStore::with_config(short_timeouts(&url), config).unwrap();
    match mode.as_str() {
        // Record every event; report once all of them are on disk; wait to be killed.
        "record" => {
            for i in 0..CHILD_EVENTS {
                let mut e = event(i);
                e.event_id = Some(child_event_id(seed, i));
                store.try_record(e).unwrap();
            }
            let all = || store.stats().spooled == CHILD_EVENTS as u64;
            assert!(
                eventually(Duration::from_secs(60), all).await,
                "{:?}",
                store.stats()
            );
            println!("SPOOLED {}", store.stats().spooled);
            tokio::time::sleep(Duration::from_secs(120)).await;
            panic!("the parent should have killed this process");
        }
        // Record nothing; close drains the spool left by the killed process.
        "drain" => {
            let closed = store.close(Duration::from_secs(90)).await;
            let stats = store.stats();
            println!(
                "DRAINED replayed={} spool_bytes={} corrupt={} closed_ok={}",
                stats.replayed,
                stats.spool_bytes,
                stats.spool_corrupt_records,
                closed.is_ok()
            );
        }
        other => panic!("unknown child mode {other}"),
    }
}

fn spawn_child(mode: &str, url: &str, dir: &std::path::Path, seed: u64) -> std::process::Child {
    std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "spool_child_process", "--nocapture"])
        .env(CHILD_MODE, mode)
        .env(CHILD_URL, url)
        .env(CHILD_DIR, dir)
        .env(CHILD_SEED, seed.to_string())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// Reads the child's standard output until a line starting with `marker` (or its end).
fn wait_for_line(child: &mut std::process::Child, marker: &str) -> Option<String> {
    use std::io::BufRead as _;
    let stdout = child.stdout.as_mut().unwrap();
    let mut lines = std::io::BufReader::new(stdout).lines();
    lines.find_map(|line| line.ok().filter(|l| l.starts_with(marker)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_killed_while_the_server_is_down_loses_nothing_that_it_spooled() {
    let dir = tempfile::tempdir().unwrap();
    let port = closed_port();
    let url = format!("http://127.0.0.1:{port}");
    let seed = fastrand::u64(1..u64::MAX);

    // 1. The server is down; the client spools everything, then is killed with SIGKILL.
    let mut child = spawn_child("record", &url, dir.path(), seed);
    let reported = tokio::task::spawn_blocking(move || {
        let line = wait_for_line(&mut child, "SPOOLED");
        child.kill().unwrap(); // SIGKILL: no close, no destructor
        child.wait().unwrap();
        line
    })
    .await
    .unwrap();
    assert_eq!(reported.as_deref(), Some("SPOOLED 5000"));
    let segments = std::fs::read_dir(dir.path()).unwrap().count();
    assert!(segments > 0, "the spool is on disk");

    // 2. The client starts again on the same spool while the server is still down; then the
    //    server comes up and the spool is replayed.
    let mut child = spawn_child("drain", &url, dir.path(), seed);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pg = PgDb::create().await;
    let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let app = TestApp::serve_on_db(listener, pg, |_| {}).await;
    let (drained, status) = tokio::task::spawn_blocking(move || {
        let line = wait_for_line(&mut child, "DRAINED");
        (line, child.wait().unwrap())
    })
    .await
    .unwrap();
    assert!(status.success(), "{status:?}");
    assert_eq!(
        drained.as_deref(),
        Some("DRAINED replayed=5000 spool_bytes=0 corrupt=0 closed_ok=true")
    );

    let stored = app.pg().stored_ids().await;
    assert_eq!(stored.len(), CHILD_EVENTS, "row count");
    for i in 0..CHILD_EVENTS {
        let id = child_event_id(seed, i);
        assert_eq!(
            stored.get(&id),
            Some(&1),
            "event {i} ({id}) stored exactly once"
        );
    }
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "spool emptied"
    );
    app.stop().await;
}

// ---- Credentials and TLS, against in-process stubs ------------------------------------------
//
// The real server does not check credentials yet, so these tests talk to small axum stubs that
// do: `/healthz` and the batch route, each checking `Authorization: Bearer …` against the tokens
// the stub accepts at that moment. An accepted batch is answered 201 and its ids are kept.

/// What the credential stub has seen and what it accepts.
#[derive(Default)]
struct AuthState {
    /// Tokens accepted now; `None` checks nothing (the TLS test).
    accept: Option<HashSet<String>>,
    /// The bearer token of every request, in arrival order (`None`: no header).
    seen: Vec<Option<String>>,
    /// The id of every event of an accepted batch, repeats included.
    stored: Vec<Uuid>,
    /// Requests answered 401.
    refused: usize,
}

#[derive(Clone, Default)]
struct AuthStub(Arc<Mutex<AuthState>>);

impl AuthStub {
    fn accepting(tokens: &[&str]) -> Self {
        let stub = Self::default();
        stub.set_accepted(tokens);
        stub
    }

    fn set_accepted(&self, tokens: &[&str]) {
        self.state().accept = Some(tokens.iter().map(|t| (*t).to_owned()).collect());
    }

    fn state(&self) -> std::sync::MutexGuard<'_, AuthState> {
        self.0.lock().unwrap()
    }

    /// Records the request's token; whether it is let through.
    fn admit(&self, headers: &axum::http::HeaderMap) -> bool {
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::to_owned);
        let mut st = self.state();
        let allowed = match &st.accept {
            None => true,
            Some(accepted) => token.as_ref().is_some_and(|t| accepted.contains(t)),
        };
        st.seen.push(token);
        if !allowed {
            st.refused += 1;
        }
        allowed
    }

    fn router(self) -> axum::Router {
        axum::Router::new()
            .route("/healthz", axum::routing::get(auth_stub_healthz))
            .route("/api/v1/audit/events/batch", post(auth_stub_batch))
            .with_state(self)
    }

    /// Serves the stub on a loopback port over plain HTTP; its base URL.
    async fn serve(self) -> (String, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let router = self.router();
        let task = tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        (base, task)
    }
}

fn unauthorized() -> Response {
    let problem = r#"{"type":"https://kubernaut.ai/problems/unauthorized","title":"Unauthorized","status":401,"detail":"missing or invalid bearer token"}"#;
    (
        StatusCode::UNAUTHORIZED,
        [
            (header::CONTENT_TYPE, "application/problem+json"),
            (header::WWW_AUTHENTICATE, "Bearer"),
        ],
        problem,
    )
        .into_response()
}

async fn auth_stub_healthz(
    State(stub): State<AuthStub>,
    headers: axum::http::HeaderMap,
) -> Response {
    if !stub.admit(&headers) {
        return unauthorized();
    }
    axum::Json(serde_json::json!({ "status": "healthy" })).into_response()
}

async fn auth_stub_batch(
    State(stub): State<AuthStub>,
    headers: axum::http::HeaderMap,
    axum::Json(events): axum::Json<Vec<serde_json::Value>>,
) -> Response {
    if !stub.admit(&headers) {
        return unauthorized();
    }
    let ids: Vec<Uuid> = events
        .iter()
        .map(|e| {
            e["event_id"]
                .as_str()
                .and_then(|id| id.parse().ok())
                .unwrap_or_else(Uuid::now_v7)
        })
        .collect();
    stub.state().stored.extend(&ids);
    let answer = serde_json::json!({ "event_ids": ids, "message": "stored by the stub" });
    (StatusCode::CREATED, axum::Json(answer)).into_response()
}

/// Asserts that every id is in `stored` exactly once.
fn each_once(stored: &[Uuid], ids: &[Uuid]) {
    let mut counts = std::collections::HashMap::new();
    for id in stored {
        *counts.entry(*id).or_insert(0) += 1;
    }
    for id in ids {
        assert_eq!(counts.get(id), Some(&1), "{id} must arrive exactly once");
    }
}

/// Replaces a token file the way the kubelet does: a new file renamed over the old one.
fn rotate_token(path: &std::path::Path, token: &str) {
    let next = path.with_extension("next");
    std::fs::write(&next, format!("{token}\n")).unwrap();
    std::fs::rename(&next, path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_request_carries_the_bearer_token_and_debug_output_never_shows_it() {
    let stub = AuthStub::accepting(&["tok-alpha"]);
    let (base, server) = stub.clone().serve().await;
    let client = Client::builder(&base)
        .bearer_token(BearerToken::new("tok-alpha").unwrap())
        .build()
        .unwrap();
    assert!(!format!("{client:?}").contains("tok-alpha"));

    assert_eq!(client.healthz().await.unwrap().status, "healthy");
    let mut direct = event(1);
    direct.event_id = Some(Uuid::now_v7());
    client.create_events_batch(&[direct]).await.unwrap();
    let store = AuditStore::new(client.clone());
    let id = store.try_record(event(2)).unwrap();
    store.flush().await;
    let stats = store.stats();
    assert_eq!((stats.sent, stats.auth_failures), (1, 0), "{stats:?}");
    assert!(!format!("{store:?}").contains("tok-alpha"));
    {
        let st = stub.state();
        assert_eq!(st.seen, vec![Some("tok-alpha".to_owned()); 3]);
        assert!(st.stored.contains(&id));
    }

    // Without the token: a 401 that says it is an auth failure, not worth a retry.
    let anonymous = Client::new(&base).unwrap();
    let refused = anonymous.healthz().await.unwrap_err();
    assert_eq!(refused.status(), Some(401));
    assert!(
        refused.is_auth_failure() && !refused.is_retryable(),
        "{refused:?}"
    );
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rotated_token_file_is_sent_within_two_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("token");
    rotate_token(&path, "tok-first");
    let stub = AuthStub::accepting(&["tok-first", "tok-second"]);
    let (base, server) = stub.clone().serve().await;
    let client = Client::builder(&base)
        .bearer_token(BearerToken::from_file(&path).unwrap())
        .build()
        .unwrap();
    client.healthz().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    rotate_token(&path, "tok-second");
    let rotated = Instant::now();
    let took = loop {
        client.healthz().await.unwrap();
        if stub.state().seen.last().unwrap().as_deref() == Some("tok-second") {
            break rotated.elapsed();
        }
        assert!(rotated.elapsed() < Duration::from_secs(5), "never switched");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        took <= Duration::from_secs(2),
        "new token sent after {took:?}"
    );
    client.healthz().await.unwrap();
    assert_eq!(
        stub.state().seen.last().unwrap().as_deref(),
        Some("tok-second"),
        "the old token is not sent again"
    );

    // The server may refuse the old token before the client looked again: the refusal makes
    // the store look at the file at once and send the batch again with the new token. (This
    // client looks by itself only once an hour, so only the refusal can explain the switch.)
    let lazy = Client::builder(&base)
        .bearer_token(BearerToken::from_file_rechecked(&path, Duration::from_secs(3600)).unwrap())
        .build()
        .unwrap();
    rotate_token(&path, "tok-third");
    stub.set_accepted(&["tok-third"]);
    let store = AuditStore::with_config(
        lazy,
        StoreConfig {
            retry: fast_retry(Duration::from_secs(30)),
            ..StoreConfig::default()
        },
    )
    .unwrap();
    let ids: Vec<_> = (0..5)
        .map(|i| store.try_record(event(i)).unwrap())
        .collect();
    store.flush().await;
    let stats = store.stats();
    assert_eq!(
        (stats.sent, stats.failed, stats.auth_failures),
        (5, 0, 1),
        "{stats:?}"
    );
    each_once(&stub.state().stored, &ids);
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refused_credentials_keep_events_spooled_and_counted_until_the_server_accepts_them() {
    let dir = tempfile::tempdir().unwrap();
    let stub = AuthStub::accepting(&[]);
    let (base, server) = stub.clone().serve().await;
    let client = Client::builder(&base)
        .bearer_token(BearerToken::new("tok-alpha").unwrap())
        .build()
        .unwrap();
    let store =
        AuditStore::with_config(client, spooling(dir.path(), Duration::from_secs(60))).unwrap();
    let ids: Vec<_> = (0..50)
        .map(|i| store.try_record(event(i)).unwrap())
        .collect();
    // Settled at once: a refused batch is spooled, not retried in memory.
    store.flush().await;
    let stats = store.stats();
    assert_eq!(
        (stats.spooled, stats.sent, stats.failed, stats.retried),
        (50, 0, 0, 0),
        "{stats:?}"
    );
    assert!(
        stats.auth_failures >= 1 && stats.spool_bytes > 0,
        "{stats:?}"
    );

    // While the server keeps refusing, the replay tries again now and then; nothing is lost.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let stats = store.stats();
    assert_eq!((stats.replayed, stats.failed), (0, 0), "{stats:?}");
    assert!(
        stats.auth_failures >= 2,
        "the replay tried again: {stats:?}"
    );
    assert!(stub.state().stored.is_empty());

    stub.set_accepted(&["tok-alpha"]);
    assert!(
        eventually(Duration::from_secs(10), || store.stats().replayed == 50).await,
        "{:?}",
        store.stats()
    );
    each_once(&stub.state().stored, &ids);
    store.close(Duration::from_secs(10)).await.unwrap();
    let stats = store.stats();
    assert_eq!((stats.spool_bytes, stats.failed), (0, 0), "{stats:?}");
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fixed_token_file_resumes_the_replay_of_refused_batches() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("token");
    rotate_token(&path, "tok-expired");
    let stub = AuthStub::accepting(&["tok-fresh"]);
    let (base, server) = stub.clone().serve().await;
    let client = Client::builder(&base)
        .bearer_token(BearerToken::from_file(&path).unwrap())
        .build()
        .unwrap();
    let spool = dir.path().join("spool");
    let store = AuditStore::with_config(client, spooling(&spool, Duration::from_secs(60))).unwrap();
    let ids: Vec<_> = (0..20)
        .map(|i| store.try_record(event(i)).unwrap())
        .collect();
    store.flush().await;
    let stats = store.stats();
    assert_eq!(
        (stats.spooled, stats.sent, stats.failed),
        (20, 0, 0),
        "{stats:?}"
    );

    rotate_token(&path, "tok-fresh");
    let rotated = Instant::now();
    assert!(
        eventually(Duration::from_secs(10), || store.stats().replayed == 20).await,
        "{:?}",
        store.stats()
    );
    assert!(
        rotated.elapsed() < Duration::from_secs(3),
        "{:?}",
        rotated.elapsed()
    );
    each_once(&stub.state().stored, &ids);
    store.close(Duration::from_secs(10)).await.unwrap();
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_a_spool_refused_credentials_fail_the_batch_once_with_a_count() {
    let stub = AuthStub::accepting(&[]);
    let (base, server) = stub.clone().serve().await;
    let client = Client::builder(&base)
        .bearer_token(BearerToken::new("tok-revoked").unwrap())
        .build()
        .unwrap();
    let config = StoreConfig {
        retry: fast_retry(Duration::from_secs(60)),
        ..StoreConfig::default()
    };
    let store = AuditStore::with_config(client, config).unwrap();
    for i in 0..10 {
        store.try_record(event(i)).unwrap();
    }
    let started = Instant::now();
    store.flush().await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "not retried until the deadline"
    );
    let stats = store.stats();
    assert_eq!(
        (stats.failed, stats.auth_failures, stats.retried, stats.sent),
        (10, 1, 0, 0),
        "{stats:?}"
    );
    assert_eq!(stub.state().refused, 1, "one request, no retry");
    store.close(Duration::from_secs(5)).await.unwrap();
    server.abort();
}

/// A test CA, a server certificate for 127.0.0.1 and localhost, and a client certificate, all
/// made now.
struct TestPki {
    ca_pem: String,
    ca_der: tokio_rustls::rustls::pki_types::CertificateDer<'static>,
    server_cert: tokio_rustls::rustls::pki_types::CertificateDer<'static>,
    server_key: Vec<u8>,
    client_cert_pem: String,
    client_key_pem: String,
    /// Keeps the certificate files.
    _ca: datastorage_testkit::tls::TestCa,
}

impl TestPki {
    fn new() -> Self {
        use tokio_rustls::rustls::pki_types::pem::PemObject as _;
        use tokio_rustls::rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer};
        let ca = datastorage_testkit::tls::TestCa::new("datastorage test CA");
        let server = ca.server("datastorage");
        let client = ca.client("audited-service", &[]);
        let read = |path: &std::path::Path| std::fs::read_to_string(path).unwrap();
        Self {
            ca_pem: read(&ca.ca_cert),
            ca_der: CertificateDer::from_pem_file(&ca.ca_cert).unwrap(),
            server_cert: CertificateDer::from_pem_file(&server.cert).unwrap(),
            server_key: PrivatePkcs8KeyDer::from_pem_file(&server.key)
                .unwrap()
                .secret_pkcs8_der()
                .to_vec(),
            client_cert_pem: read(&client.cert),
            client_key_pem: read(&client.key),
            _ca: ca,
        }
    }

    /// A server that presents its certificate and requires a client certificate of the CA.
    fn server_config(&self) -> Arc<tokio_rustls::rustls::ServerConfig> {
        use tokio_rustls::rustls;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca_der.clone()).unwrap();
        let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
            .build()
            .unwrap();
        let key = rustls::pki_types::PrivatePkcs8KeyDer::from(self.server_key.clone());
        let config = rustls::ServerConfig::builder()
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![self.server_cert.clone()], key.into())
            .unwrap();
        Arc::new(config)
    }
}

/// A TCP listener that hands axum only connections whose TLS handshake succeeded, and counts
/// the others.
struct TlsListener {
    tcp: TcpListener,
    tls: tokio_rustls::TlsAcceptor,
    refused: Arc<std::sync::atomic::AtomicUsize>,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, addr)) = self.tcp.accept().await else {
                continue;
            };
            match tokio::time::timeout(Duration::from_secs(5), self.tls.accept(tcp)).await {
                Ok(Ok(tls)) => return (tls, addr),
                _ => {
                    self.refused
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn https_with_a_private_ca_and_a_required_client_certificate() {
    let pki = TestPki::new();
    let stub = AuthStub::default();
    let refused = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let listener = TlsListener {
        tcp: TcpListener::bind("127.0.0.1:0").await.unwrap(),
        tls: tokio_rustls::TlsAcceptor::from(pki.server_config()),
        refused: refused.clone(),
    };
    let base = format!("https://{}", listener.tcp.local_addr().unwrap());
    let router = stub.clone().router();
    let server = tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });

    // The CA bundle and the client certificate from files, as mounted in a pod.
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = (
        dir.path().join("ca.pem"),
        dir.path().join("tls.crt"),
        dir.path().join("tls.key"),
    );
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    std::fs::write(&cert, &pki.client_cert_pem).unwrap();
    std::fs::write(&key, &pki.client_key_pem).unwrap();
    let client = Client::builder(&base)
        .ca_bundle_file(&ca)
        .client_cert_files(&cert, &key)
        .build()
        .unwrap();
    assert_eq!(client.healthz().await.unwrap().status, "healthy");
    let store = AuditStore::new(client);
    let ids: Vec<_> = (0..5)
        .map(|i| store.try_record(event(i)).unwrap())
        .collect();
    store.close(Duration::from_secs(10)).await.unwrap();
    assert_eq!(store.stats().sent, 5, "{:?}", store.stats());
    each_once(&stub.state().stored, &ids);

    // Inline PEM, no client certificate: the server ends the handshake.
    let no_cert = Client::builder(&base)
        .ca_bundle_pem(pki.ca_pem.clone())
        .build()
        .unwrap();
    // In TLS 1.3 the client finishes its side of the handshake before the server checks for a
    // certificate, so the refusal reaches it either as the CertificateRequired alert or, when
    // the request was already on its way, as the connection closing under it. Either way no
    // HTTP answer comes back.
    let e = no_cert.healthz().await.unwrap_err();
    let text = format!("{e:?}");
    assert!(
        matches!(e, datastorage_client::Error::Transport(_))
            && (text.contains("CertificateRequired")
                || text.contains("connection was not ready")
                || text.contains("connection closed")),
        "{e:?}"
    );
    // The built-in roots do not know the test CA: the client refuses the server.
    let no_ca = Client::builder(&base)
        .client_cert_pem(pki.client_cert_pem.clone(), pki.client_key_pem.clone())
        .build()
        .unwrap();
    let e = no_ca.healthz().await.unwrap_err();
    assert!(
        matches!(e, datastorage_client::Error::Transport(_))
            && format!("{e:?}").contains("UnknownIssuer"),
        "{e:?}"
    );

    assert_eq!(
        stub.state().seen.len(),
        2,
        "only the first client got through"
    );
    assert!(
        eventually(Duration::from_secs(5), || refused
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 2)
        .await,
        "both failed handshakes ended at the server"
    );
    server.abort();
}
