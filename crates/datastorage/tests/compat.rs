//! Drop-in behaviour for upstream's clients (issue 14), on both backends, from what upstream's
//! own e2e and integration tests and its generated (ogen) client expect: no `null` where its
//! spec does not allow one, its health body, its problem slugs for verify-chain and large
//! bodies, `maxBatchSize: 0` as the default, its client's 1000-event batches, the future-skew
//! bound with late events still accepted, content-fingerprint replays for a client that never
//! sends ids, the service's own access records kept out of pages upstream's client reads, and a
//! slow body answered with a retryable 503 instead of a 4xx its client drops.
//! The upstream spec itself is run against the server by schemathesis in `scripts/test`.

use std::time::Duration;

use axum::http::Method;
use datastorage_testkit::events::event;
use datastorage_testkit::{both, Backend, TestApp};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

both!(
    query_pages_hold_no_null_and_absent_fields_are_left_out,
    verify_chain_problems_use_upstream_slugs,
    upstream_client_batches_of_1000_fit_the_default,
    far_future_timestamps_are_refused_and_late_ones_accepted,
    fingerprint_replays_make_retries_without_ids_idempotent,
);

/// Every key of `value`, recursively, whose value is `null`.
fn nulls(value: &Value, path: &str, found: &mut Vec<String>) {
    match value {
        Value::Null => found.push(path.to_owned()),
        Value::Object(map) => {
            for (k, v) in map {
                nulls(v, &format!("{path}.{k}"), found);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                nulls(v, &format!("{path}[{i}]"), found);
            }
        }
        _ => {}
    }
}

async fn query_pages_hold_no_null_and_absent_fields_are_left_out(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    // Upstream's e2e events often carry no actor or resource at all.
    let mut bare = event("compat-null");
    for key in [
        "actor_type",
        "actor_id",
        "resource_type",
        "resource_id",
        "severity",
    ] {
        bare.as_object_mut().unwrap().remove(key);
    }
    assert_eq!(app.post_event(&bare).await.status(), 201);
    assert_eq!(app.post_event(&event("compat-null")).await.status(), 201);
    let page: Value = app
        .query("correlation_id=compat-null")
        .await
        .json()
        .await
        .unwrap();
    let mut found = Vec::new();
    nulls(&page, "", &mut found);
    assert!(found.is_empty(), "nulls at {found:?} in {page}");
    let rows = page["data"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    let bare_row = rows
        .iter()
        .find(|r| r.get("resource_id").is_none())
        .expect("the event without resource fields");
    for key in [
        "actor_type",
        "actor_ip",
        "resource_type",
        "parent_event_id",
        "error_code",
    ] {
        assert!(bare_row.get(key).is_none(), "{key} in {bare_row}");
    }
    let id = bare_row["event_id"].as_str().unwrap();
    let single: Value = app.get_event(id).await.json().await.unwrap();
    let mut found = Vec::new();
    nulls(&single, "", &mut found);
    assert!(found.is_empty(), "nulls at {found:?} in {single}");

    // The reads above were recorded as the service's own access events; their event_data has no
    // upstream payload schema, so only a query for their chain shows them.
    let everything: Value = app.query("limit=1000").await.json().await.unwrap();
    let rows = everything["data"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{everything}");
    assert!(rows.iter().all(|r| r["correlation_id"] == "compat-null"));
    let access: Value = app
        .query("correlation_id=datastorage-access")
        .await
        .json()
        .await
        .unwrap();
    assert!(!access["data"].as_array().unwrap().is_empty(), "{access}");

    let health: Value = app.get("/healthz").await.json().await.unwrap();
    assert_eq!(health["status"], "healthy");
    let timestamp = health["timestamp"].as_str().unwrap();
    assert!(
        chrono::DateTime::parse_from_rfc3339(timestamp).is_ok(),
        "{health}"
    );
}

async fn verify_chain_problems_use_upstream_slugs(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let path = "/api/v1/audit/verify-chain";
    for (body, slug) in [
        (json!({}), "missing-correlation-id"),
        (json!({"correlation_id": null}), "missing-correlation-id"),
        (json!({"correlation_id": ""}), "invalid-correlation-id"),
        (json!({"correlation_id": 7}), "invalid-correlation-id"),
        (
            json!({"correlation_id": "x".repeat(300)}),
            "invalid-correlation-id",
        ),
    ] {
        let answer = app.json(Method::POST, path, &body).await;
        assert_eq!(answer.status(), 400, "{body}");
        let problem: Value = answer.json().await.unwrap();
        assert_eq!(
            problem["type"],
            format!("https://kubernaut.ai/problems/{slug}"),
            "{body}: {problem}"
        );
        assert!(
            problem["field_errors"]["correlation_id"].is_string(),
            "{problem}"
        );
    }
}

async fn upstream_client_batches_of_1000_fit_the_default(backend: Backend) {
    // Upstream's client flushes up to BatchSize (1000 in DefaultConfig) events as one batch and
    // drops a batch the server refuses; `server.maxBatchSize: 0` is upstream's "the default".
    let app = TestApp::spawn_with(backend, |s| {
        s.server.max_batch_size = 0;
        s.apply_upstream_forms();
    })
    .await;
    let batch: Vec<Value> = (0..1000)
        .map(|i| event(&format!("compat-batch-{}", i % 10)))
        .collect();
    let answer = app.post_batch(&Value::Array(batch)).await;
    assert_eq!(answer.status(), 201, "{:?}", answer.text().await);
    let ids: Value = answer.json().await.unwrap();
    assert_eq!(ids["event_ids"].as_array().unwrap().len(), 1000);
    let too_many: Vec<Value> = (0..1001).map(|_| event("compat-batch-x")).collect();
    let refused = app.post_batch(&Value::Array(too_many)).await;
    assert_eq!(refused.status(), 400);
    let problem: Value = refused.json().await.unwrap();
    assert!(problem["type"]
        .as_str()
        .unwrap()
        .ends_with("/batch-size-exceeded"));
}

async fn far_future_timestamps_are_refused_and_late_ones_accepted(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut far = event("compat-time");
    far["event_timestamp"] = json!("2849-01-01T00:00:00Z");
    let answer = app.post_event(&far).await;
    assert_eq!(answer.status(), 400);
    let problem: Value = answer.json().await.unwrap();
    assert!(problem["field_errors"]["event_timestamp"]
        .as_str()
        .unwrap()
        .contains("validation.maxFutureSkew"));
    // In a batch the item is named.
    let answer = app.post_batch(&json!([event("compat-time"), far])).await;
    assert_eq!(answer.status(), 400);
    let problem: Value = answer.json().await.unwrap();
    assert!(
        problem["field_errors"]["[1].event_timestamp"].is_string(),
        "{problem}"
    );

    let mut soon = event("compat-time");
    soon["event_timestamp"] =
        json!((chrono::Utc::now() + chrono::Duration::minutes(30)).to_rfc3339());
    assert_eq!(app.post_event(&soon).await.status(), 201);
    let mut late = event("compat-time");
    late["event_timestamp"] = json!("2019-03-01T08:00:00Z");
    assert_eq!(app.post_event(&late).await.status(), 201);
}

async fn fingerprint_replays_make_retries_without_ids_idempotent(backend: Backend) {
    let app = TestApp::spawn_with(backend, |s| s.validation.fingerprint_replays = true).await;
    let sent = event("compat-fp");
    let first: Value = app.post_event(&sent).await.json().await.unwrap();
    // The retry after a timeout: the same event, still without an id.
    let retry = app.post_event(&sent).await;
    assert_eq!(retry.status(), 201);
    let retry: Value = retry.json().await.unwrap();
    assert_eq!(retry["event_id"], first["event_id"]);
    assert!(
        retry["message"].as_str().unwrap().contains("replay"),
        "{retry}"
    );
    // A batch retried whole, with the same content twice inside it.
    let batch = json!([event("compat-fp-b"), sent.clone(), sent.clone()]);
    let answer: Value = app.post_batch(&batch).await.json().await.unwrap();
    let ids = answer["event_ids"].as_array().unwrap();
    assert_eq!(ids[1], first["event_id"]);
    assert_eq!(ids[2], first["event_id"]);
    let again: Value = app.post_batch(&batch).await.json().await.unwrap();
    assert_eq!(again["event_ids"], answer["event_ids"]);
    // A genuinely different event (another microsecond) is stored.
    let mut other = sent.clone();
    let t: chrono::DateTime<chrono::Utc> =
        sent["event_timestamp"].as_str().unwrap().parse().unwrap();
    other["event_timestamp"] = json!((t + chrono::Duration::microseconds(1)).to_rfc3339());
    let other: Value = app.post_event(&other).await.json().await.unwrap();
    assert_ne!(other["event_id"], first["event_id"]);
    let page: Value = app
        .query("correlation_id=compat-fp")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["pagination"]["total"], 2, "{page}");
    let verified = app.verify("compat-fp").await;
    assert_eq!(verified["is_valid"], true, "{verified}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_arrives_too_slowly_gets_a_retryable_503_not_a_4xx() {
    let app = TestApp::serve_with(Backend::Sqlite, |s| {
        s.server.read_timeout = Duration::from_millis(500);
    })
    .await;
    let address = app.base().trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    let head = format!(
        "POST /api/v1/audit/events HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: 400\r\n\r\n{{\"version\":"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buf = [0u8; 4096];
        loop {
            let n = stream.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buf[..n]);
            if answer.windows(4).any(|w| w == b"\r\n\r\n") && answer.ends_with(b"}") {
                break;
            }
        }
    })
    .await;
    assert!(read.is_ok(), "no answer to a stalled body");
    let text = String::from_utf8_lossy(&answer).to_lowercase();
    assert!(text.starts_with("http/1.1 503"), "{text}");
    assert!(text.contains("retry-after:"), "{text}");
    assert!(text.contains("/problems/body-timeout"), "{text}");
}
