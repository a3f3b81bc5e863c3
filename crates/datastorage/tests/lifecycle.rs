//! The lifecycle after a write, on both backends where it applies: legal holds, retention, the
//! purge's single runner, and (PostgreSQL) time partitions.

use std::time::Duration;

use axum::http::Method;
use chrono::{DateTime, Datelike as _, Utc};
use datastorage_testkit::*;
use serde_json::{json, Value};

both!(
    a_hold_covers_later_events_and_retention_spares_it_until_released,
    verify_reports_a_chain_that_lost_its_oldest_events_to_retention_as_intact,
    hold_requests_are_validated_naming_the_field,
    held_rows_and_chain_heads_resist_sql,
    signed_checkpoints_reveal_tampering_a_chain_alone_cannot,
    category_floors_and_the_default_retention_apply,
);

/// An event of `cid`, `days_ago` days old, kept `retention_days`.
fn aged(cid: &str, days_ago: i64, retention_days: i64) -> Value {
    let mut e = event(cid);
    let t: DateTime<Utc> = Utc::now() - chrono::Duration::days(days_ago);
    e["event_timestamp"] = json!(t.to_rfc3339());
    e["retention_days"] = json!(retention_days);
    e
}

/// Whether the database refuses `sql` (run directly, as someone with database access would).
async fn sql_refused(app: &TestApp, sql: &str) -> bool {
    match &app.pg {
        Some(pg) => pg.try_sql(&[sql]).await.is_err(),
        None => {
            use sqlx::Connection as _;
            let path = app.sqlite_path.as_ref().unwrap();
            let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
                .await
                .unwrap();
            sqlx::raw_sql(sql).execute(&mut c).await.is_err()
        }
    }
}

async fn purge(app: &TestApp) -> Value {
    let r = app
        .json(Method::POST, "/api/v1/admin/retention/run", &json!({}))
        .await;
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

async fn count(app: &TestApp, cid: &str) -> u64 {
    let page: Value = app
        .query(&format!("correlation_id={cid}&limit=1"))
        .await
        .json()
        .await
        .unwrap();
    page["pagination"]["total"].as_u64().unwrap()
}

async fn a_hold_covers_later_events_and_retention_spares_it_until_released(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    // Held before any of its events exist (upstream would answer 404).
    let r = app
        .json(
            Method::POST,
            "/api/v1/audit/legal-hold",
            &json!({"correlation_id": "case-1", "reason": "SEC investigation #2026-7"}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let hold: Value = r.json().await.unwrap();
    assert_eq!(hold["events_affected"], 0);
    assert_eq!(hold["placed_by"], "anonymous");
    let again = app
        .json(
            Method::POST,
            "/api/v1/audit/legal-hold",
            &json!({"correlation_id": "case-1", "reason": "again"}),
        )
        .await;
    assert_eq!(again.status(), 409);
    let problem: Value = again.json().await.unwrap();
    assert!(problem["type"]
        .as_str()
        .unwrap()
        .ends_with("legal-hold-exists"));

    // Ten events after the hold, every one expired (5 days old, kept 1 day); and five of
    // another chain, expired too, with no hold.
    let held: Vec<Value> = (0..10).map(|_| aged("case-1", 5, 1)).collect();
    assert_eq!(app.post_batch(&json!(held)).await.status(), 201);
    let free: Vec<Value> = (0..5).map(|_| aged("free-1", 5, 1)).collect();
    assert_eq!(app.post_batch(&json!(free)).await.status(), 201);
    let page: Value = app
        .query("correlation_id=case-1&limit=100")
        .await
        .json()
        .await
        .unwrap();
    let events = page["data"].as_array().unwrap();
    assert_eq!(events.len(), 10);
    assert!(events.iter().all(|e| e["legal_hold"] == true), "{page}");
    let other: Value = app
        .query("correlation_id=free-1&limit=1")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(other["data"][0]["legal_hold"], false);

    let run = purge(&app).await;
    assert_eq!(run["result"], "ok", "{run}");
    assert_eq!(run["rows_purged"], 5, "only the unheld chain: {run}");
    assert_eq!(count(&app, "case-1").await, 10);
    assert_eq!(count(&app, "free-1").await, 0);

    // Listed while active.
    let list: Value = app
        .get("/api/v1/audit/legal-hold")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["total"], 1, "{list}");
    assert_eq!(list["holds"][0]["events_affected"], 10);

    let r = app
        .json(
            Method::DELETE,
            "/api/v1/audit/legal-hold/case-1",
            &json!({"release_reason": "case closed"}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let released: Value = r.json().await.unwrap();
    assert_eq!(released["released_by"], "anonymous");
    assert_eq!(released["release_reason"], "case closed");
    assert_eq!(released["events_released"], 10);
    let gone = app
        .json(
            Method::DELETE,
            "/api/v1/audit/legal-hold/case-1",
            &json!({"release_reason": "twice"}),
        )
        .await;
    assert_eq!(gone.status(), 404);

    // History is kept: who released it, when and why.
    let list: Value = app
        .get("/api/v1/audit/legal-hold?include_released=true")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["total"], 1, "{list}");
    let h = &list["holds"][0];
    assert_eq!(h["released_by"], "anonymous");
    assert_eq!(h["release_reason"], "case closed");
    assert!(h["released_at"].is_string());
    let active: Value = app
        .get("/api/v1/audit/legal-hold")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(active["total"], 0);

    let run = purge(&app).await;
    assert_eq!(run["rows_purged"], 10, "{run}");
    assert_eq!(count(&app, "case-1").await, 0);
    // The chain lost every event to retention, as recorded: still intact.
    let v = app.verify("case-1").await;
    assert_eq!(v["is_valid"], true, "{v}");
    assert_eq!(v["purged_events"], 10, "{v}");

    // Placing and releasing are audit events of their own.
    for action in ["legal_hold_placed", "legal_hold_released", "purge"] {
        let page: Value = app
            .query(&format!(
                "correlation_id=datastorage-access&event_type=datastorage.access.{action}"
            ))
            .await
            .json()
            .await
            .unwrap();
        assert!(
            page["pagination"]["total"].as_u64().unwrap() >= 1,
            "{action}: {page}"
        );
    }
    app.stop().await;
}

async fn verify_reports_a_chain_that_lost_its_oldest_events_to_retention_as_intact(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    let mut batch: Vec<Value> = (0..5).map(|_| aged("mixed", 10, 2)).collect();
    batch.extend((0..3).map(|_| aged("mixed", 0, 30)));
    assert_eq!(app.post_batch(&json!(batch)).await.status(), 201);
    let run = purge(&app).await;
    assert_eq!(run["rows_purged"], 5, "{run}");
    let v = app.verify("mixed").await;
    assert_eq!(v["is_valid"], true, "{v}");
    assert_eq!(v["verdict"], "intact", "{v}");
    assert_eq!(v["total_events"], 3, "{v}");
    assert_eq!(v["purged_events"], 5, "{v}");
    // A row deleted by hand is not retention: verify still sees it.
    let del = "DELETE FROM audit_events WHERE correlation_id = 'mixed' AND chain_sequence = 7";
    app.sql(&[del]).await;
    let v = app.verify("mixed").await;
    assert_eq!(v["is_valid"], false, "{v}");
    app.stop().await;
}

async fn hold_requests_are_validated_naming_the_field(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for (body, field) in [
        (json!({"reason": "x"}), "correlation_id"),
        (
            json!({"correlation_id": "", "reason": "x"}),
            "correlation_id",
        ),
        (
            json!({"correlation_id": "x".repeat(256), "reason": "x"}),
            "correlation_id",
        ),
        (json!({"correlation_id": "c"}), "reason"),
        (json!({"correlation_id": "c", "reason": 5}), "reason"),
        (
            json!({"correlation_id": "c", "reason": "r".repeat(1001)}),
            "reason",
        ),
    ] {
        let r = app
            .json(Method::POST, "/api/v1/audit/legal-hold", &body)
            .await;
        assert_eq!(r.status(), 400, "{body}");
        let p: Value = r.json().await.unwrap();
        assert!(p["field_errors"].get(field).is_some(), "{body}: {p}");
    }
    let r = app
        .json(Method::DELETE, "/api/v1/audit/legal-hold/c", &json!({}))
        .await;
    assert_eq!(r.status(), 400);
    let p: Value = r.json().await.unwrap();
    assert!(p["field_errors"].get("release_reason").is_some(), "{p}");
    let r = app
        .get("/api/v1/audit/legal-hold?include_released=maybe")
        .await;
    assert_eq!(r.status(), 400);
    app.stop().await;
}

async fn held_rows_and_chain_heads_resist_sql(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    assert_eq!(app.post_event(&event("sql-1")).await.status(), 201);
    let hold = json!({"correlation_id": "sql-1", "reason": "r"});
    let r = app
        .json(Method::POST, "/api/v1/audit/legal-hold", &hold)
        .await;
    assert_eq!(r.status(), 200);
    for sql in [
        "DELETE FROM audit_events WHERE correlation_id = 'sql-1'",
        "DELETE FROM audit_legal_holds",
        "UPDATE audit_legal_holds SET reason = 'other'",
        "UPDATE audit_chain_heads SET last_sequence = 0 WHERE correlation_id = 'sql-1'",
        "DELETE FROM audit_chain_heads WHERE correlation_id = 'sql-1'",
    ] {
        assert!(sql_refused(&app, sql).await, "{sql} was allowed");
    }
    assert_eq!(count(&app, "sql-1").await, 1);
    app.stop().await;
}

#[tokio::test]
async fn two_servers_never_purge_at_the_same_time() {
    let a = TestApp::spawn_with(Backend::Postgres, |s| s.retention.batch_size = 50).await;
    // A second server on the first one's database.
    let b = TestApp::spawn_with(Backend::Postgres, |s| {
        a.pg().apply(s);
        s.retention.batch_size = 50;
    })
    .await;
    // Enough expired events that one run takes many batches.
    for chunk in 0..6 {
        let events: Vec<Value> = (0..500)
            .map(|i| aged(&format!("old-{chunk}-{}", i % 7), 9, 1))
            .collect();
        assert_eq!(a.post_batch(&json!(events)).await.status(), 201);
    }
    let mut runs = Vec::new();
    for _ in 0..3 {
        runs.push(purge(&a));
        runs.push(purge(&b));
    }
    let results = futures::future::join_all(runs).await;
    let purged: u64 = results
        .iter()
        .map(|r| r["rows_purged"].as_u64().unwrap())
        .sum();
    assert_eq!(purged, 3000, "every expired event once: {results:?}");
    let mut db = a.pg().connect().await;
    let spans: Vec<(DateTime<Utc>, Option<DateTime<Utc>>, String)> = sqlx::query_as(
        "SELECT started_at, finished_at, holder FROM audit_purge_runs ORDER BY started_at",
    )
    .fetch_all(&mut db)
    .await
    .unwrap();
    assert!(spans.len() >= 2, "{spans:?}");
    for w in spans.windows(2) {
        let finished = w[0].1.expect("every run finished");
        assert!(
            finished <= w[1].0,
            "run of {} overlaps the next, of {}: {spans:?}",
            w[0].2,
            w[1].2
        );
    }
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn time_ranges_read_only_their_partitions_and_expired_partitions_are_dropped() {
    let app = TestApp::spawn_with(Backend::Postgres, |s| {
        s.retention.partition_interval = datastorage::config::PartitionInterval::Daily;
    })
    .await;
    // 40 days of events, one a day on each of 5 chains, kept 30 days.
    for day in 0..40 {
        let events: Vec<Value> = (0..5).map(|c| aged(&format!("d-{c}"), day, 30)).collect();
        assert_eq!(app.post_batch(&json!(events)).await.status(), 201);
    }
    let mut db = app.pg().connect().await;
    let parts: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_partitions")
        .fetch_one(&mut db)
        .await
        .unwrap();
    // Each day before the current month has a daily partition of its own; the days of the
    // current month share the monthly partition the migration made.
    let now = Utc::now();
    let month_start = now.date_naive().with_day(1).unwrap();
    let own_days = (0..40)
        .filter(|d| (now - chrono::Duration::days(*d)).date_naive() < month_start)
        .count() as i64;
    assert!(
        parts > own_days,
        "a partition per day before this month ({own_days}) and the migration's month: {parts}"
    );

    let since = (Utc::now() - chrono::Duration::days(35)).date_naive();
    let until = since + chrono::Duration::days(1);
    let expected: String = sqlx::query_scalar(&format!(
        "SELECT partition_name FROM audit_partitions WHERE range_start <= '{since}T00:00:00Z' \
         AND '{since}T00:00:00Z' < range_end"
    ))
    .fetch_one(&mut db)
    .await
    .unwrap();
    let plan: Vec<String> = sqlx::query_scalar(&format!(
        "EXPLAIN SELECT event_id FROM audit_events WHERE event_timestamp >= '{since}T00:00:00Z' \
         AND event_timestamp < '{until}T00:00:00Z'"
    ))
    .fetch_all(&mut db)
    .await
    .unwrap();
    let plan = plan.join("\n");
    let scanned: std::collections::BTreeSet<&str> = plan
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("audit_events_p") && !w.ends_with("_idx"))
        .collect();
    assert_eq!(
        scanned.into_iter().collect::<Vec<_>>(),
        vec![expected.as_str()],
        "{plan}"
    );

    let run = purge(&app).await;
    assert_eq!(
        run["partitions_dropped"], 9,
        "one a day, days 31 to 39: {run}"
    );
    // Days 0..=30 are kept (day 30 expires tomorrow); days 31..39 go.
    assert_eq!(run["rows_purged"], 9 * 5, "{run}");
    for c in 0..5 {
        assert_eq!(count(&app, &format!("d-{c}")).await, 31);
        let v = app.verify(&format!("d-{c}")).await;
        assert_eq!(v["is_valid"], true, "{v}");
        assert_eq!(v["purged_events"], 9, "{v}");
    }
    app.stop().await;
}

#[tokio::test]
async fn the_first_purge_runs_soon_after_start() {
    let app = TestApp::serve_with(Backend::Sqlite, |s| {
        s.retention.start_delay = Duration::from_millis(200);
    })
    .await;
    let r = app.post_event(&aged("early", 3, 1)).await;
    assert_eq!(r.status(), 201);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let m = app.metrics().await;
        if metric_value(&m, "datastorage_retention_runs_total{result=\"ok\"}").unwrap_or(0.0) >= 1.0
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no run within 10 s:\n{m}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    app.stop().await;
}

async fn post_chain(app: &TestApp, cid: &str, n: usize, action: &str) {
    let batch: Vec<Value> = (0..n)
        .map(|_| {
            let mut e = event(cid);
            e["event_action"] = json!(action);
            e
        })
        .collect();
    assert_eq!(app.post_batch(&json!(batch)).await.status(), 201);
}

async fn verdict(app: &TestApp, cid: &str) -> Value {
    app.verify(cid).await
}

async fn signed_checkpoints_reveal_tampering_a_chain_alone_cannot(backend: Backend) {
    let keys = tempfile::tempdir().unwrap();
    let key = keys.path().join("signing.key");
    let pem = datastorage_api::signing::SigningKey::generate()
        .to_pem()
        .unwrap();
    std::fs::write(&key, pem).unwrap();
    let app = TestApp::spawn_with(backend, |s| s.signing.key_file = Some(key.clone())).await;
    for cid in ["tamper-a", "tamper-b", "tamper-c"] {
        post_chain(&app, cid, 5, "created").await;
    }
    let r = app
        .json(Method::POST, "/api/v1/admin/checkpoints/run", &json!({}))
        .await;
    assert_eq!(r.status(), 200);
    let first: Value = r.json().await.unwrap();
    assert_eq!(first["checkpoint_id"], 1);
    assert_eq!(first["previous_hash"], "");
    let latest: Value = app
        .get("/api/v1/audit/checkpoints/latest")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(latest, first);
    // Nothing changed: no second checkpoint.
    let r = app
        .json(Method::POST, "/api/v1/admin/checkpoints/run", &json!({}))
        .await;
    assert_eq!(r.status(), 404);
    for cid in ["tamper-a", "tamper-b", "tamper-c"] {
        let v = verdict(&app, cid).await;
        assert_eq!(v["is_valid"], true, "{v}");
        assert_eq!(v["checkpoint"]["consistent"], true, "{v}");
        assert_eq!(v["checkpoint"]["sequence"], 5, "{v}");
    }
    // A chain written after the checkpoint: nothing covers it yet.
    post_chain(&app, "tamper-d", 5, "created").await;

    let (off, on) = match backend {
        Backend::Postgres | Backend::PgBouncer => (
            "ALTER TABLE audit_chain_heads DISABLE TRIGGER audit_chain_heads_forward_only",
            "ALTER TABLE audit_chain_heads ENABLE TRIGGER audit_chain_heads_forward_only",
        ),
        Backend::Sqlite => (
            "DROP TRIGGER audit_chain_heads_forward_only; DROP TRIGGER audit_chain_heads_no_delete",
            "SELECT 1",
        ),
    };
    let rewind = |cid: &str| {
        [
            format!(
                "DELETE FROM audit_events WHERE correlation_id = '{cid}' AND chain_sequence > 3"
            ),
            format!(
                "UPDATE audit_chain_heads SET last_sequence = 3, last_hash = (SELECT event_hash \
                 FROM audit_events WHERE correlation_id = '{cid}' AND chain_sequence = 3) \
                 WHERE correlation_id = '{cid}'"
            ),
        ]
    };
    let [del_a, head_a] = rewind("tamper-a");
    let [del_d, head_d] = rewind("tamper-d");
    app.sql(&[
        off,
        &del_a,
        &head_a,
        &del_d,
        &head_d,
        // The whole chain, with its head.
        "DELETE FROM audit_events WHERE correlation_id = 'tamper-b'",
        "DELETE FROM audit_chain_heads WHERE correlation_id = 'tamper-b'",
        // Rewritten: deleted, then written again by the service itself, so every hash is
        // recomputed and the new chain is consistent on its own.
        "DELETE FROM audit_events WHERE correlation_id = 'tamper-c'",
        "DELETE FROM audit_chain_heads WHERE correlation_id = 'tamper-c'",
        on,
    ])
    .await;
    post_chain(&app, "tamper-c", 5, "forged").await;

    // The limit of a chain alone: the rewound chain no checkpoint covers looks intact.
    let v = verdict(&app, "tamper-d").await;
    assert_eq!(v["is_valid"], true, "a chain alone cannot show it: {v}");
    assert!(v.get("checkpoint").is_none(), "{v}");

    let v = verdict(&app, "tamper-a").await;
    assert_eq!(v["is_valid"], false, "{v}");
    assert_eq!(v["verdict"], "tampered", "{v}");
    assert!(
        v["checkpoint"]["message"]
            .as_str()
            .unwrap()
            .contains("no longer holds"),
        "{v}"
    );
    let v = verdict(&app, "tamper-b").await;
    assert_eq!(v["is_valid"], false, "a deleted chain: {v}");
    assert!(
        v["checkpoint"]["message"]
            .as_str()
            .unwrap()
            .contains("no longer holds"),
        "{v}"
    );
    let v = verdict(&app, "tamper-c").await;
    assert_eq!(v["is_valid"], false, "a rewritten chain: {v}");
    assert!(
        v["checkpoint"]["message"]
            .as_str()
            .unwrap()
            .contains("rewritten"),
        "{v}"
    );

    // The next checkpoint links to the first and holds the chains changed since.
    let r = app
        .json(Method::POST, "/api/v1/admin/checkpoints/run", &json!({}))
        .await;
    assert_eq!(r.status(), 200);
    let second: Value = r.json().await.unwrap();
    assert_eq!(second["checkpoint_id"], 2);
    assert_eq!(second["previous_hash"], first["checkpoint_hash"]);
    // Checkpoints are append-only.
    for edit in [
        "UPDATE audit_checkpoints SET chains = 0",
        "DELETE FROM audit_checkpoint_heads",
    ] {
        assert!(sql_refused(&app, edit).await, "{edit} was allowed");
    }
    app.stop().await;
}

#[tokio::test]
async fn the_partition_migration_converts_a_table_keeping_every_chain_verifiable() {
    use datastorage::db::postgres::MIGRATOR;
    use datastorage::db::shared::COLUMNS;
    use futures::TryStreamExt as _;

    // Chains written through the API, over three months.
    let a = TestApp::spawn(Backend::Postgres).await;
    for c in 0..12 {
        let batch: Vec<Value> = (0..40)
            .map(|i| aged(&format!("mig-{c}"), 90 - 2 * i, 3650))
            .collect();
        assert_eq!(a.post_batch(&json!(batch)).await.status(), 201);
    }
    // A database at the schema before partitions, holding the same rows and heads.
    let b = PgDb::create().await;
    let before = sqlx::migrate::Migrator {
        migrations: MIGRATOR
            .migrations
            .iter()
            .filter(|m| m.version < 20261202000002)
            .cloned()
            .collect(),
        ignore_missing: false,
        locking: true,
        no_tx: false,
    };
    let mut cb = b.connect().await;
    before.run(&mut cb).await.unwrap();
    let mut ca = a.pg().connect().await;
    for (select, into) in [
        (
            format!("COPY (SELECT {COLUMNS}, created_at FROM audit_events) TO STDOUT"),
            format!("COPY audit_events ({COLUMNS}, created_at) FROM STDIN"),
        ),
        (
            "COPY (SELECT correlation_id, last_sequence, last_hash, started_by FROM audit_chain_heads) TO STDOUT".to_owned(),
            "COPY audit_chain_heads (correlation_id, last_sequence, last_hash, started_by) FROM STDIN".to_owned(),
        ),
    ] {
        let data: Vec<u8> = ca
            .copy_out_raw(select.as_str())
            .await
            .unwrap()
            .try_fold(Vec::new(), |mut all, chunk| async move {
                all.extend_from_slice(&chunk);
                Ok(all)
            })
            .await
            .unwrap();
        let mut sink = cb.copy_in_raw(into.as_str()).await.unwrap();
        sink.send(data).await.unwrap();
        sink.finish().await.unwrap();
    }
    let unpartitioned: String =
        sqlx::query_scalar("SELECT relkind::text FROM pg_class WHERE relname = 'audit_events'")
            .fetch_one(&mut cb)
            .await
            .unwrap();
    assert_eq!(unpartitioned, "r", "a plain table before");

    // The conversion, then a server on the converted database.
    MIGRATOR.run(&mut cb).await.unwrap();
    let kind: String =
        sqlx::query_scalar("SELECT relkind::text FROM pg_class WHERE relname = 'audit_events'")
            .fetch_one(&mut cb)
            .await
            .unwrap();
    assert_eq!(kind, "p", "partitioned after");
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_events")
        .fetch_one(&mut cb)
        .await
        .unwrap();
    assert_eq!(rows, 12 * 40);
    let months: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_partitions")
        .fetch_one(&mut cb)
        .await
        .unwrap();
    assert!(
        months >= 4,
        "a partition per month of rows, and the current one: {months}"
    );
    let app = TestApp::spawn_with(Backend::Postgres, |s| b.apply(s)).await;
    for c in 0..12 {
        let v = app.verify(&format!("mig-{c}")).await;
        assert_eq!(v["is_valid"], true, "{v}");
        assert_eq!(v["total_events"], 40, "{v}");
    }
    // And it goes on: new events append to the converted chains.
    assert_eq!(app.post_event(&event("mig-0")).await.status(), 201);
    assert_eq!(app.verify("mig-0").await["total_events"], 41);
    app.stop().await;
    a.stop().await;
}

#[tokio::test]
async fn checkpoints_are_published_off_host_and_retired_keys_still_verify() {
    use datastorage_api::signing::SigningKey;
    let dir = tempfile::tempdir().unwrap();
    let write_key = |name: &str| {
        let key = SigningKey::generate();
        let path = dir.path().join(name);
        std::fs::write(&path, key.to_pem().unwrap()).unwrap();
        (key, path)
    };
    let (old_key, old_path) = write_key("old.key");
    let (_, new_path) = write_key("new.key");
    // A receiver of published checkpoints: a real HTTP listener on loopback.
    let received = std::sync::Arc::new(tokio::sync::Mutex::new(Vec::<Value>::new()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/checkpoints", listener.local_addr().unwrap());
    let sink = std::sync::Arc::clone(&received);
    let server = tokio::spawn(async move {
        let app = axum::Router::new().route(
            "/checkpoints",
            axum::routing::post(move |axum::Json(v): axum::Json<Value>| {
                let sink = std::sync::Arc::clone(&sink);
                async move {
                    sink.lock().await.push(v);
                    axum::http::StatusCode::NO_CONTENT
                }
            }),
        );
        axum::serve(listener, app).await.unwrap();
    });
    let file = dir.path().join("checkpoints.jsonl");
    let db = PgDb::create().await;
    let app = TestApp::spawn_with(Backend::Postgres, |s| {
        db.apply(s);
        s.signing.key_file = Some(old_path.clone());
        s.checkpoints.publish_file = Some(file.clone());
        s.checkpoints.publish_url = Some(url.clone());
    })
    .await;
    post_chain(&app, "keyed-cp", 3, "created").await;
    let r = app
        .json(Method::POST, "/api/v1/admin/checkpoints/run", &json!({}))
        .await;
    assert_eq!(r.status(), 200);
    let written: Value = r.json().await.unwrap();
    assert_eq!(written["key_id"], old_key.key_id());
    let lines = std::fs::read_to_string(&file).unwrap();
    let published: Value = serde_json::from_str(lines.lines().last().unwrap()).unwrap();
    assert_eq!(published, written, "appended to checkpoints.publishFile");
    assert_eq!(
        received.lock().await.as_slice(),
        std::slice::from_ref(&written),
        "POSTed to publishUrl"
    );

    // The key is retired: a new one signs, the old one still verifies what it signed.
    let rotated = TestApp::spawn_with(Backend::Postgres, |s| {
        db.apply(s);
        s.signing.key_file = Some(new_path.clone());
        s.signing.verify_key_files = vec![old_path.clone()];
    })
    .await;
    let v = rotated.verify("keyed-cp").await;
    assert_eq!(v["checkpoint"]["consistent"], true, "{v}");
    // Without it, the checkpoint cannot be trusted, and verify says so.
    let forgot = TestApp::spawn_with(Backend::Postgres, |s| {
        db.apply(s);
        s.signing.key_file = Some(new_path.clone());
    })
    .await;
    let v = forgot.verify("keyed-cp").await;
    assert_eq!(v["is_valid"], false, "{v}");
    assert!(
        v["checkpoint"]["message"]
            .as_str()
            .unwrap()
            .contains("not configured"),
        "{v}"
    );
    server.abort();
    app.stop().await;
}

#[tokio::test]
async fn without_a_signing_key_no_checkpoint_is_written() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    post_chain(&app, "unsigned", 2, "created").await;
    let r = app
        .json(Method::POST, "/api/v1/admin/checkpoints/run", &json!({}))
        .await;
    assert_eq!(r.status(), 404);
    let p: Value = r.json().await.unwrap();
    assert!(
        p["detail"].as_str().unwrap().contains("signing.keyFile"),
        "{p}"
    );
    let v = app.verify("unsigned").await;
    assert_eq!(v["is_valid"], true, "{v}");
    assert!(v.get("checkpoint").is_none(), "{v}");
    app.stop().await;
}

async fn category_floors_and_the_default_retention_apply(backend: Backend) {
    let app = TestApp::spawn_with(backend, |s| {
        s.retention.default_days = 3;
        s.retention
            .category_minimum_days
            .insert("security".to_owned(), 3650);
    })
    .await;
    // Sent without retention_days: retention.defaultDays (3) applies.
    let mut unset = event("default-days");
    unset["event_timestamp"] = json!((Utc::now() - chrono::Duration::days(2)).to_rfc3339());
    assert_eq!(app.post_event(&unset).await.status(), 201);
    let page: Value = app
        .query("correlation_id=default-days")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["data"][0]["retention_days"], 3, "{page}");
    // Two expired events, one a security event: its category's floor keeps it.
    assert_eq!(app.post_event(&aged("floor-gw", 20, 1)).await.status(), 201);
    let mut sec = aged("floor-sec", 20, 1);
    sec["event_category"] = json!("security");
    assert_eq!(app.post_event(&sec).await.status(), 201);
    let run = purge(&app).await;
    assert_eq!(run["rows_purged"], 1, "{run}");
    assert_eq!(count(&app, "floor-gw").await, 0);
    assert_eq!(count(&app, "floor-sec").await, 1);
    assert_eq!(count(&app, "default-days").await, 1, "2 days old, kept 3");
    app.stop().await;
}
