//! The API the explorer reads, over loopback, on both backends: `GET /api/v1/audit/stats` (the
//! counts per bucket, category and outcome against what was written), `GET
//! /api/v1/audit/events/stream` (its events, filters, limit and end at shutdown), and the export
//! of a search (every filter of the query applies).

use std::time::Duration;

use datastorage_testkit::*;
use serde_json::{json, Value};

both!(
    stats_count_each_bucket_category_and_outcome_written,
    the_stream_sends_what_is_committed_and_meets_its_filters,
    an_export_holds_exactly_what_the_same_search_shows,
);

fn event(cid: &str, category: &str, outcome: &str, at: &str) -> Value {
    json!({
        "version": "1.0", "event_type": format!("{category}.x"), "event_timestamp": at,
        "event_category": category, "event_action": "act", "event_outcome": outcome,
        "correlation_id": cid, "event_data": {"k": cid},
    })
}

async fn stats_count_each_bucket_category_and_outcome_written(backend: Backend) {
    let app = TestApp::serve(backend).await;
    // Three hours of yesterday: 10:xx holds 3 gateway (2 success, 1 failure), 11:xx none,
    // 12:xx 2 workflow success and 1 gateway success.
    let day = (chrono::Utc::now() - chrono::Duration::days(1)).format("%Y-%m-%d");
    let writes = [
        ("a", "gateway", "success", "10:05:00"),
        ("b", "gateway", "success", "10:59:59.999"),
        ("c", "gateway", "failure", "10:30:00"),
        ("d", "workflow", "success", "12:00:00"),
        ("e", "workflow", "success", "12:10:00"),
        ("f", "gateway", "success", "12:20:00"),
        ("g", "gateway", "success", "13:00:00"),
    ];
    let batch: Vec<Value> = writes
        .iter()
        .map(|(cid, c, o, t)| event(cid, c, o, &format!("{day}T{t}Z")))
        .collect();
    assert_eq!(app.post_batch(&json!(batch)).await.status(), 201);
    let range = format!("since={day}T10:00:00Z&until={day}T13:00:00Z");
    let r = app
        .get(&format!("/api/v1/audit/stats?{range}&bucket=1h"))
        .await;
    assert_eq!(r.status(), 200);
    let s: Value = r.json().await.unwrap();
    assert_eq!(s["total"], 6, "13:00 is outside the range: {s}");
    assert_eq!(s["bucket_seconds"], 3600);
    let got: Vec<(String, String, String, u64)> = s["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["start"].as_str().unwrap()[11..16].to_owned(),
                b["event_category"].as_str().unwrap().to_owned(),
                b["event_outcome"].as_str().unwrap().to_owned(),
                b["count"].as_u64().unwrap(),
            )
        })
        .collect();
    let want = [
        ("10:00", "gateway", "failure", 1),
        ("10:00", "gateway", "success", 2),
        ("12:00", "gateway", "success", 1),
        ("12:00", "workflow", "success", 2),
    ]
    .map(|(a, b, c, n)| (a.to_owned(), b.to_owned(), c.to_owned(), n));
    assert_eq!(got, want);
    // Filters apply; automatic buckets stay few.
    let s: Value = app
        .get(&format!(
            "/api/v1/audit/stats?{range}&event_outcome=failure"
        ))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        (s["total"].clone(), s["bucket"].clone()),
        (json!(1), json!("5m"))
    );
    // Bad parameters are named.
    for (query, field) in [
        ("bucket=2h", "bucket"),
        ("limit=5", "limit"),
        ("since=7d&bucket=1m", "bucket"),
        ("nope=1", "nope"),
        ("since=tomorrow", "since"),
    ] {
        let r = app.get(&format!("/api/v1/audit/stats?{query}")).await;
        assert_eq!(r.status(), 400, "{query}");
        let p: Value = r.json().await.unwrap();
        assert!(p["field_errors"].get(field).is_some(), "{query}: {p}");
    }
    app.stop().await;
}

/// Reads server-sent events from a response, as `(event, id, data)`.
struct Sse {
    body: reqwest::Response,
    text: String,
}

impl Sse {
    fn new(r: reqwest::Response) -> Self {
        Self {
            body: r,
            text: String::new(),
        }
    }

    /// The next message (comments included, as `("comment", "", text)`), or `None` at the end.
    async fn next(&mut self) -> Option<(String, String, String)> {
        loop {
            if let Some(end) = self.text.find("\n\n") {
                let block: String = self.text.drain(..end + 2).collect();
                let (mut event, mut id, mut data) = (String::new(), String::new(), String::new());
                for line in block.lines() {
                    if let Some(c) = line.strip_prefix(':') {
                        return Some(("comment".into(), String::new(), c.trim().into()));
                    }
                    let (k, v) = line.split_once(':').unwrap_or((line, ""));
                    let v = v.strip_prefix(' ').unwrap_or(v);
                    match k {
                        "event" => event = v.into(),
                        "id" => id = v.into(),
                        "data" => data.push_str(v),
                        _ => {}
                    }
                }
                return Some((event, id, data));
            }
            let chunk = tokio::time::timeout(Duration::from_secs(10), self.body.chunk())
                .await
                .expect("the stream went silent")
                .ok()??;
            self.text.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// The next `audit_event`, skipping comments.
    async fn event(&mut self) -> Option<(String, Value)> {
        loop {
            let (event, id, data) = self.next().await?;
            if event == "audit_event" {
                return Some((id, serde_json::from_str(&data).unwrap()));
            }
            assert_ne!(event, "lagged", "{data}");
        }
    }
}

async fn subscribe(app: &TestApp, query: &str) -> reqwest::Response {
    reqwest::get(format!("{}/api/v1/audit/events/stream?{query}", app.base()))
        .await
        .unwrap()
}

async fn the_stream_sends_what_is_committed_and_meets_its_filters(backend: Backend) {
    let app = TestApp::serve_with(backend, |s| s.explorer.stream_max_subscribers = 2).await;
    let r = subscribe(&app, "event_category=gateway").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let mut gateway = Sse::new(r);
    assert_eq!(
        gateway.next().await,
        Some(("comment".into(), String::new(), "subscribed".into()))
    );
    let mut all = Sse::new(subscribe(&app, "").await);
    assert_eq!(all.next().await.unwrap().2, "subscribed");
    // The limit: a third subscriber waits for a place.
    let third = subscribe(&app, "").await;
    assert_eq!(third.status(), 503);
    assert!(third.headers().contains_key("retry-after"));
    // Paging and time bounds do not apply, and say so.
    let r = subscribe(&app, "since=1h").await;
    assert_eq!(r.status(), 400);

    let now = chrono::Utc::now().to_rfc3339();
    let id = uuid::Uuid::now_v7();
    let mut single = event("s-1", "gateway", "success", &now);
    single["event_id"] = json!(id);
    assert_eq!(app.post_event(&single).await.status(), 201);
    let batch = json!([
        event("b-1", "workflow", "success", &now),
        event("b-2", "gateway", "failure", &now)
    ]);
    assert_eq!(app.post_batch(&batch).await.status(), 201);
    // A replay writes nothing and sends nothing.
    assert_eq!(app.post_event(&single).await.status(), 201);
    assert_eq!(
        app.post_event(&event("s-2", "gateway", "success", &now))
            .await
            .status(),
        201
    );

    let (first, e) = gateway.event().await.unwrap();
    assert_eq!(first, id.to_string());
    assert_eq!(e["correlation_id"], "s-1");
    assert_eq!(e["event_data"], json!({"k": "s-1"}));
    let cids = [
        gateway.event().await.unwrap(),
        gateway.event().await.unwrap(),
    ]
    .map(|(_, e)| e["correlation_id"].as_str().unwrap().to_owned());
    assert_eq!(cids, ["b-2", "s-2"]);
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(all.event().await.unwrap().1["correlation_id"].clone());
    }
    assert_eq!(seen, ["s-1", "b-1", "b-2", "s-2"]);
    let stored: Value = app.get_event(&id.to_string()).await.json().await.unwrap();
    assert_eq!(stored["event_category"], e["event_category"]);
    assert_eq!(stored["event_timestamp"], e["event_timestamp"]);

    // Shutdown ends the streams instead of waiting for them.
    let stopping = tokio::spawn(app.stop());
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(4), all.next())
            .await
            .unwrap(),
        None
    );
    tokio::time::timeout(Duration::from_secs(4), stopping)
        .await
        .expect("shutdown did not wait for the open streams")
        .unwrap();
}

async fn an_export_holds_exactly_what_the_same_search_shows(backend: Backend) {
    let app = TestApp::serve(backend).await;
    let now = chrono::Utc::now().to_rfc3339();
    let mut batch = Vec::new();
    for i in 0..12 {
        let outcome = if i % 3 == 0 { "failure" } else { "success" };
        let mut e = event(&format!("x-{}", i % 2), "gateway", outcome, &now);
        e["actor_id"] = json!(format!("svc-{}", i % 2));
        batch.push(e);
    }
    assert_eq!(app.post_batch(&json!(batch)).await.status(), 201);
    let filters = "event_outcome=failure&actor_id=svc-0&since=1h";
    let page: Value = app.query(filters).await.json().await.unwrap();
    let mut want: Vec<String> = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_id"].as_str().unwrap().to_owned())
        .collect();
    want.sort();
    // Events 0 and 6 fail and are svc-0's.
    assert_eq!(want.len(), 2);
    let r = app
        .get(
            "/api/v1/audit/export?format=ndjson&event_outcome=failure&actor_id=svc-0&start_time=1h",
        )
        .await;
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    let mut got: Vec<String> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["event_id"].as_str().map(str::to_owned))
        .collect();
    got.sort();
    assert_eq!(got, want, "{text}");
    let r = app
        .get("/api/v1/audit/export?format=ndjson&event_outcome=maybe")
        .await;
    assert_eq!(r.status(), 400);
    let p: Value = r.json().await.unwrap();
    assert!(p["field_errors"].get("event_outcome").is_some(), "{p}");
    app.stop().await;
}
