//! The API suite, run against every backend: every test body is a function of the backend, and
//! the `every_backend!` macro instantiates it for PostgreSQL, SQLite, and PostgreSQL through
//! PgBouncer in transaction mode.

use std::collections::HashSet;

use axum::http::Method;
use datastorage_testkit::app::Listener;
use datastorage_testkit::*;
use serde_json::{json, Value};

every_backend!(
    post_then_get_returns_the_stored_event,
    batch_is_atomic_and_names_the_bad_item,
    batch_over_the_limit_is_rejected_with_its_own_slug,
    over_long_correlation_id_is_rejected_naming_the_field,
    malformed_oversized_and_non_json_bodies_get_their_own_problems,
    client_event_id_replay_writes_nothing_and_conflicting_content_is_409,
    duplicate_ids_inside_one_batch_are_rejected,
    queries_filter_paginate_newest_first_and_page_by_cursor,
    bad_query_parameters_are_named,
    verify_reports_sql_tampering_but_not_late_events,
    concurrent_writers_to_one_chain_keep_it_valid_and_lose_nothing,
    unknown_ids_routes_and_methods_get_problems,
    probes_openapi_and_metrics_are_served,
    group_commit_isolates_a_conflicting_event_from_its_neighbours,
    keyed_chains_resist_recomputation_without_the_key,
);

async fn post_then_get_returns_the_stored_event(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut e = event("rr-1");
    e["event_data"] = json!({"nested": {"a": [1, 2.5, "x"]}, "task_id": "t-9"});
    let r = app.post_event(&e).await;
    assert_eq!(r.status(), 201);
    let created: Value = r.json().await.unwrap();
    let id = created["event_id"].as_str().unwrap().to_owned();
    assert_eq!(
        uuid::Uuid::parse_str(&id).unwrap().get_version_num(),
        7,
        "server ids are UUIDv7"
    );

    let got: Value = app.get_event(&id).await.json().await.unwrap();
    assert_eq!(got["event_id"], id.as_str());
    assert_eq!(got["correlation_id"], "rr-1");
    assert_eq!(got["event_data"], e["event_data"]);
    assert_eq!(got["retention_days"], 2555);
    assert_eq!(got["chain_sequence"], 1);
    assert_eq!(got["previous_event_hash"], "");
    assert_eq!(got["event_hash"].as_str().unwrap().len(), 64);
    app.stop().await;
}

async fn batch_is_atomic_and_names_the_bad_item(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut bad = event("b-1");
    bad["correlation_id"] = json!("");
    let r = app
        .post_batch(&json!([event("b-1"), bad, event("b-1")]))
        .await;
    assert_eq!(r.status(), 400);
    let p: Value = r.json().await.unwrap();
    assert!(p["type"].as_str().unwrap().ends_with("/validation-error"));
    assert!(
        p["field_errors"]["[1].correlation_id"]
            .as_str()
            .unwrap()
            .contains("empty"),
        "{p}"
    );
    let q: Value = app.query("correlation_id=b-1").await.json().await.unwrap();
    assert_eq!(
        q["pagination"]["total"], 0,
        "nothing of a refused batch is stored"
    );

    // A good batch, with a parent event inside the same batch (an upstream defect refused it).
    let parent_id = uuid::Uuid::now_v7().to_string();
    let mut parent = event("b-1");
    parent["event_id"] = json!(parent_id);
    let mut child = event("b-1");
    child["parent_event_id"] = json!(parent_id);
    let r = app.post_batch(&json!([parent, child, event("b-2")])).await;
    assert_eq!(r.status(), 201);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["event_ids"].as_array().unwrap().len(), 3);
    assert_eq!(body["event_ids"][0], parent_id.as_str());
    let v = app.verify("b-1").await;
    assert_eq!(
        (v["is_valid"].as_bool(), v["total_events"].as_u64()),
        (Some(true), Some(2))
    );
    app.stop().await;
}

async fn batch_over_the_limit_is_rejected_with_its_own_slug(backend: Backend) {
    let app = TestApp::spawn_with(backend, |s| s.server.max_batch_size = 3).await;
    let r = app
        .post_batch(&json!([event("c"), event("c"), event("c"), event("c")]))
        .await;
    assert_eq!(r.status(), 400);
    let p: Value = r.json().await.unwrap();
    assert!(
        p["type"]
            .as_str()
            .unwrap()
            .ends_with("/batch-size-exceeded"),
        "{p}"
    );
    assert!(
        p["detail"].as_str().unwrap().contains("maxBatchSize (3)"),
        "{p}"
    );
    let r = app.post_batch(&json!([])).await;
    assert_eq!(r.status(), 400);
    let r = app.post_batch(&json!({"not": "an array"})).await;
    assert_eq!(r.status(), 400);
    app.stop().await;
}

async fn over_long_correlation_id_is_rejected_naming_the_field(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let r = app.post_event(&event(&"x".repeat(300))).await;
    assert_eq!(r.status(), 400);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let p: Value = r.json().await.unwrap();
    assert_eq!(p["status"], 400);
    let msg = p["field_errors"]["correlation_id"].as_str().unwrap();
    assert!(
        msg.contains("correlation_id") && msg.contains("255") && msg.contains("300"),
        "{msg}"
    );
    // Table of other bad inputs, each naming its field.
    let cases = [
        ("event_category", json!("bogus")),
        ("event_outcome", json!("meh")),
        ("event_timestamp", json!("2025-13-45")),
        ("event_data", json!("text")),
        ("actor_ip", json!("1".repeat(46))),
        ("duration_ms", json!(-5)),
    ];
    for (field, value) in cases {
        let mut e = event("v");
        e[field] = value.clone();
        let p: Value = app.post_event(&e).await.json().await.unwrap();
        assert!(
            p["field_errors"].get(field).is_some(),
            "{field}={value}: {p}"
        );
    }
    app.stop().await;
}

async fn malformed_oversized_and_non_json_bodies_get_their_own_problems(backend: Backend) {
    let app = TestApp::spawn_with(backend, |s| s.server.max_body_size = 1024 * 1024).await;
    let url = "/api/v1/audit/events";
    let r = app
        .send(
            Listener::Api,
            Method::POST,
            url,
            Some("application/json"),
            "{\"version\": ",
        )
        .await;
    assert_eq!(r.status(), 400);
    let p: Value = r.json().await.unwrap();
    assert!(
        p["type"].as_str().unwrap().ends_with("/malformed-json"),
        "{p}"
    );

    let mut big = event("big");
    big["event_data"] = json!({"blob": "y".repeat(1024 * 1024)});
    let r = app.post_event(&big).await;
    assert_eq!(r.status(), 413);
    let p: Value = r.json().await.unwrap();
    assert!(
        p["type"].as_str().unwrap().ends_with("/request-too-large"),
        "{p}"
    );

    let r = app
        .send(
            Listener::Api,
            Method::POST,
            url,
            Some("text/plain"),
            event("t").to_string(),
        )
        .await;
    assert_eq!(r.status(), 415);
    app.stop().await;
}

async fn client_event_id_replay_writes_nothing_and_conflicting_content_is_409(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let id = uuid::Uuid::now_v7().to_string();
    let mut e = event("idem");
    e["event_id"] = json!(id);
    for _ in 0..3 {
        let r = app.post_event(&e).await;
        assert_eq!(r.status(), 201);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["event_id"], id.as_str());
    }
    // The same event inside a batch replays too.
    let r = app.post_batch(&json!([e.clone(), event("idem")])).await;
    assert_eq!(r.status(), 201);
    let q: Value = app.query("correlation_id=idem").await.json().await.unwrap();
    assert_eq!(q["pagination"]["total"], 2, "three replays wrote nothing");

    let mut changed = e.clone();
    changed["event_action"] = json!("other");
    let r = app.post_event(&changed).await;
    assert_eq!(r.status(), 409);
    let p: Value = r.json().await.unwrap();
    assert!(
        p["type"].as_str().unwrap().ends_with("/event-id-conflict"),
        "{p}"
    );
    assert!(app.verify("idem").await["is_valid"].as_bool().unwrap());
    app.stop().await;
}

async fn duplicate_ids_inside_one_batch_are_rejected(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let id = uuid::Uuid::now_v7().to_string();
    let mut a = event("dup");
    a["event_id"] = json!(id);
    let r = app.post_batch(&json!([a.clone(), event("dup"), a])).await;
    assert_eq!(r.status(), 400);
    let p: Value = r.json().await.unwrap();
    assert!(
        p["field_errors"]["[2].event_id"]
            .as_str()
            .unwrap()
            .contains("[0].event_id"),
        "{p}"
    );
    let q: Value = app.query("correlation_id=dup").await.json().await.unwrap();
    assert_eq!(q["pagination"]["total"], 0);
    app.stop().await;
}

async fn queries_filter_paginate_newest_first_and_page_by_cursor(backend: Backend) {
    // Totals over every stored event: access records of the queries would add to them (they
    // have their own tests).
    let app = TestApp::spawn_with(backend, |s| s.auth.record_reads = false).await;
    let base = chrono::Utc::now() - chrono::Duration::hours(1);
    let mut batch = Vec::new();
    for i in 0..25 {
        let mut e = event(if i % 2 == 0 { "even" } else { "odd" });
        // Five events share a timestamp, so ordering needs the event_id tiebreak.
        e["event_timestamp"] = json!((base + chrono::Duration::seconds(i / 5)).to_rfc3339());
        e["event_outcome"] = json!(if i < 5 { "failure" } else { "success" });
        e["event_data"] = json!({"task_id": format!("task-{i}"), "flag": i == 3});
        batch.push(e);
    }
    let mut old = event("even");
    old["event_timestamp"] = json!((base - chrono::Duration::days(3)).to_rfc3339());
    batch.push(old);
    assert_eq!(app.post_batch(&Value::Array(batch)).await.status(), 201);

    let q: Value = app.query("limit=10&offset=0").await.json().await.unwrap();
    assert_eq!(
        q["pagination"],
        json!({"limit": 10, "offset": 0, "total": 26, "has_more": true, "next_cursor": q["pagination"]["next_cursor"]})
    );
    let rows = q["data"].as_array().unwrap();
    for w in rows.windows(2) {
        let key = |e: &Value| {
            (
                e["event_timestamp"].as_str().unwrap().to_owned(),
                e["event_id"].as_str().unwrap().to_owned(),
            )
        };
        let (a, b) = (key(&w[0]), key(&w[1]));
        let (ta, tb) = (
            chrono::DateTime::parse_from_rfc3339(&a.0).unwrap(),
            chrono::DateTime::parse_from_rfc3339(&b.0).unwrap(),
        );
        assert!(
            ta > tb || (ta == tb && a.1 > b.1),
            "newest first, event_id descending: {a:?} then {b:?}"
        );
    }
    let last: Value = app.query("limit=10&offset=20").await.json().await.unwrap();
    assert_eq!(last["pagination"]["has_more"], false);
    assert_eq!(last["data"].as_array().unwrap().len(), 6);
    assert_eq!(last["pagination"]["total"], 26, "total of the last page");
    let past: Value = app.query("limit=10&offset=40").await.json().await.unwrap();
    assert_eq!(past["data"].as_array().unwrap().len(), 0);
    assert_eq!(past["pagination"]["total"], 26, "total past the last page");
    let whole: Value = app.query("limit=30").await.json().await.unwrap();
    assert_eq!(
        whole["pagination"]["total"], 26,
        "total of one page holding all"
    );

    // Cursor paging visits every event exactly once.
    let mut seen = HashSet::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10 {
        let q = match &cursor {
            Some(c) => format!("limit=7&cursor={c}"),
            None => "limit=7".to_owned(),
        };
        let page: Value = app.query(&q).await.json().await.unwrap();
        assert_eq!(
            page["pagination"]["total"], 26,
            "total on every cursor page"
        );
        for e in page["data"].as_array().unwrap() {
            assert!(
                seen.insert(e["event_id"].as_str().unwrap().to_owned()),
                "no duplicates across pages"
            );
        }
        cursor = page["pagination"]["next_cursor"]
            .as_str()
            .map(str::to_owned);
        if cursor.is_none() {
            break;
        }
    }
    assert_eq!(seen.len(), 26);

    let count = |q: Value| q["pagination"]["total"].as_u64().unwrap();
    assert_eq!(
        count(app.query("correlation_id=odd").await.json().await.unwrap()),
        12
    );
    assert_eq!(
        count(
            app.query("event_outcome=FAILURE")
                .await
                .json()
                .await
                .unwrap()
        ),
        5,
        "case-insensitive enum filter"
    );
    assert_eq!(
        count(app.query("severity=Critical").await.json().await.unwrap()),
        26
    );
    assert_eq!(
        count(
            app.query("event_category=gateway&since=2d")
                .await
                .json()
                .await
                .unwrap()
        ),
        25,
        "relative since excludes the 3-day-old event"
    );
    assert_eq!(
        count(app.query("since=-2d").await.json().await.unwrap()),
        25,
        "-2d means 2 days ago, not the future"
    );
    let until = (base - chrono::Duration::days(1))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    assert_eq!(
        count(
            app.query(&format!("until={until}"))
                .await
                .json()
                .await
                .unwrap()
        ),
        1
    );
    assert_eq!(
        count(
            app.query("detail_key=task_id&detail_value=task-7")
                .await
                .json()
                .await
                .unwrap()
        ),
        1
    );
    assert_eq!(
        count(
            app.query("actor_id=gateway-service&resource_type=Signal&resource_id=fp-abc123")
                .await
                .json()
                .await
                .unwrap()
        ),
        26
    );
    app.stop().await;
}

async fn bad_query_parameters_are_named(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("offset=-1", "offset"),
        ("since=yesterday", "since"),
        ("event_outcome=maybe", "event_outcome"),
        ("detail_key=a.b&detail_value=x", "detail_key"),
        ("detail_key=a", "detail_value"),
        ("cursor=zzz", "cursor"),
        ("correlationId=x", "correlationId"),
    ] {
        let r = app.query(query).await;
        assert_eq!(r.status(), 400, "{query}");
        let p: Value = r.json().await.unwrap();
        assert!(p["field_errors"].get(field).is_some(), "{query}: {p}");
    }
    app.stop().await;
}

async fn verify_reports_sql_tampering_but_not_late_events(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for i in 0..5 {
        let mut e = event("chain");
        e["event_data"] = json!({"i": i});
        assert_eq!(app.post_event(&e).await.status(), 201);
    }
    // A late event: its timestamp is older than the chain head's.
    let mut late = event("chain");
    late["event_timestamp"] = json!("2020-01-01T00:00:00Z");
    assert_eq!(app.post_event(&late).await.status(), 201);
    let v = app.verify("chain").await;
    assert_eq!(v["is_valid"], true, "{v}");
    assert_eq!(v["total_events"], 6);

    // Tamper: edit one row's payload directly in the database.
    let (disable, enable) = match backend {
        Backend::Postgres | Backend::PgBouncer => (
            "ALTER TABLE audit_events DISABLE TRIGGER audit_events_append_only",
            "ALTER TABLE audit_events ENABLE TRIGGER audit_events_append_only",
        ),
        Backend::Sqlite => ("DROP TRIGGER audit_events_append_only", "SELECT 1"),
    };
    let edit = match backend {
        Backend::Postgres | Backend::PgBouncer => "UPDATE audit_events SET event_data = '{\"i\": 99}' WHERE correlation_id = 'chain' AND chain_sequence = 3",
        Backend::Sqlite => "UPDATE audit_events SET event_data = '{\"i\": 99}' WHERE correlation_id = 'chain' AND chain_sequence = 3",
    };
    app.sql(&[disable, edit, enable]).await;
    let v = app.verify("chain").await;
    assert_eq!(v["is_valid"], false, "{v}");
    let tampered = v["tampered_events"].as_array().unwrap();
    assert_eq!(tampered.len(), 1, "{v}");
    assert!(
        tampered[0]["message"]
            .as_str()
            .unwrap()
            .contains("content changed"),
        "{v}"
    );
    assert_eq!(v["verified_events"], 5);

    // Deleting the last row is caught by the head.
    let del = "DELETE FROM audit_events WHERE correlation_id = 'chain' AND chain_sequence = 6";
    app.sql(&[del]).await;
    let v = app.verify("chain").await;
    assert!(
        v["tampered_events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["message"]
                .as_str()
                .unwrap()
                .contains("removed from the end")),
        "{v}"
    );
    app.stop().await;
}

async fn concurrent_writers_to_one_chain_keep_it_valid_and_lose_nothing(backend: Backend) {
    // The total counts every stored event; access records are not what this test counts.
    let app =
        std::sync::Arc::new(TestApp::spawn_with(backend, |s| s.auth.record_reads = false).await);
    let mut tasks = Vec::new();
    for w in 0..8 {
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..15 {
                let r = if i % 3 == 0 {
                    app.post_batch(&json!([
                        event("hot"),
                        event("hot"),
                        event(&format!("cold-{w}"))
                    ]))
                    .await
                } else {
                    app.post_event(&event("hot")).await
                };
                assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
                let body: Value = r.json().await.unwrap();
                match body.get("event_ids") {
                    Some(ids_v) => ids.extend(
                        ids_v
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|v| v.as_str().unwrap().to_owned()),
                    ),
                    None => ids.push(body["event_id"].as_str().unwrap().to_owned()),
                }
            }
            ids
        }));
    }
    let mut acknowledged = HashSet::new();
    for t in tasks {
        acknowledged.extend(t.await.unwrap());
    }
    let v = app.verify("hot").await;
    assert_eq!(v["is_valid"], true, "{v}");
    // 8 writers x (5 batches x 2 + 10 singles) = 160 events on the hot chain.
    assert_eq!(v["total_events"], 160);
    let q: Value = app.query("limit=1").await.json().await.unwrap();
    assert_eq!(
        q["pagination"]["total"].as_u64().unwrap() as usize,
        acknowledged.len()
    );
    assert_eq!(acknowledged.len(), 200);
    std::sync::Arc::into_inner(app).unwrap().stop().await;
}

async fn unknown_ids_routes_and_methods_get_problems(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let r = app.get_event(&uuid::Uuid::now_v7().to_string()).await;
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let r = app.get_event("not-a-uuid").await;
    assert_eq!(r.status(), 400);
    let r = app.get("/api/v2/nothing").await;
    assert_eq!(r.status(), 404);
    let r = app
        .send(
            Listener::Api,
            Method::DELETE,
            "/api/v1/audit/events",
            None,
            "",
        )
        .await;
    assert_eq!(r.status(), 405);
    let r = app
        .json(Method::POST, "/api/v1/audit/verify-chain", &json!({}))
        .await;
    assert_eq!(r.status(), 400);
    let p: Value = r.json().await.unwrap();
    assert!(p["field_errors"]["correlation_id"].is_string(), "{p}");
    let v = app.verify("never-written").await;
    assert_eq!(
        (v["total_events"].as_u64(), v["is_valid"].as_bool()),
        (Some(0), Some(true))
    );
    app.stop().await;
}

async fn probes_openapi_and_metrics_are_served(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for listener in [Listener::Api, Listener::Metrics] {
        for probe in ["/healthz", "/readyz"] {
            let r = app.send(listener, Method::GET, probe, None, "").await;
            assert_eq!(r.status(), 200, "{probe} on {listener:?}");
        }
    }
    let spec: Value = app.get("/openapi.json").await.json().await.unwrap();
    assert!(spec["paths"]["/api/v1/audit/events/batch"].is_object());
    let docs = app.get("/docs/").await;
    assert_eq!(docs.status(), 200);
    let page = docs.text().await.unwrap();
    assert!(page.contains("swagger-ui"), "{page}");
    assert!(
        !page.contains("https://"),
        "the UI must not load assets from the network: {page}"
    );
    assert_eq!(app.post_event(&event("m")).await.status(), 201);
    assert_eq!(app.post_event(&event(&"x".repeat(300))).await.status(), 400);
    let text = app.metrics().await;
    assert_eq!(
        metric_value(
            &text,
            "datastorage_audit_events_written_total{category=\"gateway\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert!(text.contains("datastorage_http_requests_total{method=\"POST\",route=\"/api/v1/audit/events\",status=\"201\"} 1"), "{text}");
    assert!(text.contains("datastorage_http_requests_total{method=\"POST\",route=\"/api/v1/audit/events\",status=\"400\"} 1"), "{text}");
    assert!(
        text.contains("datastorage_audit_write_duration_seconds_count{kind=\"single\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("datastorage_db_pool_max_open_connections{pool=\"primary\"} 25"),
        "{text}"
    );
    assert!(
        metric_value(
            &text,
            "datastorage_db_pool_open_connections{pool=\"primary\"}"
        )
        .unwrap()
            >= 1.0
    );
    // Raw paths never become labels.
    let _ = app.get_event(&uuid::Uuid::now_v7().to_string()).await;
    let text = app.metrics().await;
    assert!(
        text.contains("route=\"/api/v1/audit/events/{event_id}\""),
        "{text}"
    );
    app.stop().await;
}

async fn group_commit_isolates_a_conflicting_event_from_its_neighbours(backend: Backend) {
    let app =
        std::sync::Arc::new(TestApp::spawn_with(backend, |s| s.database.max_open_conns = 2).await);
    let id = uuid::Uuid::now_v7().to_string();
    let mut original = event("iso");
    original["event_id"] = json!(id);
    assert_eq!(app.post_event(&original).await.status(), 201);
    let mut conflicting = original.clone();
    conflicting["event_action"] = json!("changed");

    // 60 concurrent single writes: one conflicting replay, two identical replays of a new id
    // (same id twice in flight), and 57 ordinary events, all likely to share groups.
    let twin = uuid::Uuid::now_v7().to_string();
    let mut tasks = Vec::new();
    for i in 0..60 {
        let app = app.clone();
        let body = match i {
            30 => conflicting.clone(),
            10 | 11 => {
                let mut e = event("iso");
                e["event_id"] = json!(twin);
                e["event_timestamp"] = json!("2026-01-01T00:00:00Z");
                e
            }
            _ => event("iso"),
        };
        tasks.push(tokio::spawn(async move {
            let r = app.post_event(&body).await;
            (i, r.status().as_u16(), r.text().await.unwrap())
        }));
    }
    for t in tasks {
        let (i, status, body) = t.await.unwrap();
        let expected = if i == 30 { 409 } else { 201 };
        assert_eq!(status, expected, "request {i}: {body}");
    }
    let v = app.verify("iso").await;
    assert_eq!(v["is_valid"], true, "{v}");
    // 1 original + 57 ordinary + the twin once.
    assert_eq!(v["total_events"], 59, "{v}");
    std::sync::Arc::into_inner(app).unwrap().stop().await;
}

async fn keyed_chains_resist_recomputation_without_the_key(backend: Backend) {
    let keys = tempfile::tempdir().unwrap();
    let key_file = keys.path().join("chain.key");
    std::fs::write(&key_file, "k".repeat(40) + "\n").unwrap();
    let kf = key_file.clone();
    let app = TestApp::spawn_with(backend, move |s| {
        s.hash_chain.key_file = Some(kf);
        s.hash_chain.key_id = Some("2026-11".into());
    })
    .await;
    for _ in 0..3 {
        assert_eq!(app.post_event(&event("keyed")).await.status(), 201);
    }
    let q: Value = app
        .query("correlation_id=keyed")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(q["data"][0]["hash_algorithm"], "hmac-sha256-v2");
    assert_eq!(q["data"][0]["hash_key_id"], "2026-11");
    assert_eq!(app.verify("keyed").await["is_valid"], true);

    // An attacker rewrites the last row and its hash with plain SHA-256 (what an unkeyed chain
    // would allow): the downgrade is reported.
    let last = q["data"][0].clone();
    let mut content: datastorage_api::AuditEvent = serde_json::from_value(last.clone()).unwrap();
    content.event_data = serde_json::from_value(json!({"forged": true})).unwrap();
    let forged = datastorage_api::chain::chain_hash(
        &content.previous_event_hash,
        &content,
        content.chain_sequence,
        datastorage_api::chain::Form::V2,
    );
    let id = last["event_id"].as_str().unwrap();
    // Forging needs both append-only triggers out of the way: the rows' and the heads'.
    let (disable, enable) = match backend {
        Backend::Postgres | Backend::PgBouncer => (
            "ALTER TABLE audit_events DISABLE TRIGGER audit_events_append_only; \
             ALTER TABLE audit_chain_heads DISABLE TRIGGER audit_chain_heads_forward_only"
                .to_owned(),
            "ALTER TABLE audit_events ENABLE TRIGGER audit_events_append_only; \
             ALTER TABLE audit_chain_heads ENABLE TRIGGER audit_chain_heads_forward_only"
                .to_owned(),
        ),
        Backend::Sqlite => (
            "DROP TRIGGER audit_events_append_only; DROP TRIGGER audit_chain_heads_forward_only"
                .to_owned(),
            "SELECT 1".to_owned(),
        ),
    };
    let edit = format!(
        "UPDATE audit_events SET event_data = '{{\"forged\": true}}', event_hash = '{forged}', \
         hash_algorithm = 'sha256-v2', hash_key_id = NULL WHERE event_id = '{id}'"
    );
    let head = format!(
        "UPDATE audit_chain_heads SET last_hash = '{forged}' WHERE correlation_id = 'keyed'"
    );
    app.sql(&[&disable, &edit, &head, &enable]).await;
    let v = app.verify("keyed").await;
    assert_eq!(v["is_valid"], false, "{v}");
    assert!(
        v["tampered_events"][0]["message"]
            .as_str()
            .unwrap()
            .contains("unkeyed sha256-v2 row"),
        "{v}"
    );
    app.stop().await;
}

/// One chain's head held by another transaction must not stall writers of other chains: their
/// writes finish while the head is still held, and the stuck chain's own writers wait for it
/// (or answer 503 once their patience runs out), never the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_chain_held_by_another_transaction_does_not_stall_writers_of_other_chains() {
    let app = std::sync::Arc::new(
        TestApp::spawn_with(Backend::Postgres, |s| {
            s.database.lock_timeout = std::time::Duration::from_secs(30);
            s.database.acquire_timeout = std::time::Duration::from_secs(2);
        })
        .await,
    );
    assert_eq!(app.post_event(&event("stuck")).await.status(), 201);
    // Another session holds the head of "stuck" in an open transaction.
    let mut holder = app.pg().connect().await;
    sqlx::raw_sql(
        "BEGIN; SELECT * FROM audit_chain_heads WHERE correlation_id = 'stuck' FOR UPDATE",
    )
    .execute(&mut holder)
    .await
    .unwrap();
    let held_since = std::time::Instant::now();

    let mut stuck = Vec::new();
    for _ in 0..10 {
        let app = app.clone();
        stuck.push(tokio::spawn(async move {
            app.post_event(&event("stuck")).await.status()
        }));
    }
    let mut others = Vec::new();
    for w in 0..40 {
        let app = app.clone();
        others.push(tokio::spawn(async move {
            let mut statuses = Vec::new();
            for _ in 0..10 {
                statuses.push(app.post_event(&event(&format!("free-{w}"))).await.status());
            }
            statuses
        }));
    }
    for t in others {
        for status in t.await.unwrap() {
            assert_eq!(status, 201, "a writer of another chain failed");
        }
    }
    let others_done = held_since.elapsed();
    assert!(
        stuck.iter().any(|t| !t.is_finished()),
        "some writers of the held chain should still be waiting for it"
    );
    sqlx::raw_sql("ROLLBACK")
        .execute(&mut holder)
        .await
        .unwrap();
    for t in stuck {
        let status = t.await.unwrap();
        assert!(
            status == 201 || status == 503,
            "a writer of the held chain: {status}"
        );
    }
    assert!(
        others_done < std::time::Duration::from_secs(30),
        "the other chains finished only after {others_done:?}, the held chain's lock timeout"
    );
    for w in 0..40 {
        let v = app.verify(&format!("free-{w}")).await;
        assert_eq!(v["total_events"], 10, "{v}");
    }
    assert_eq!(app.verify("stuck").await["is_valid"], true);
}
