//! A read replica (`database.readReplica`) on a real streaming replica: a throwaway primary and
//! a hot standby made from it with `pg_basebackup -R`, both on loopback. Reads go to the
//! replica's pool while it keeps up (100 queries during a write load); a read by id of one's own
//! write finds it; after `pg_wal_replay_pause()` and 10 s of writes the lag metric shows the lag
//! and reads go to the primary; after `pg_wal_replay_resume()` the replica serves again; once it
//! is stopped as a crash would, reads go to the primary; writes never go to the replica.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use datastorage::config::ReplicaSettings;
use datastorage_testkit::*;
use serde_json::Value;
use tokio::net::TcpListener;

/// Waits up to 30 s until `name` (a metric line's prefix, labels included) satisfies `ok`.
async fn wait_metric(app: &TestApp, name: &str, ok: impl Fn(f64) -> bool) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = app.metrics().await;
        if let Some(v) = metric_value(&text, name).filter(|v| ok(*v)) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{name} never met the condition:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn metric(app: &TestApp, name: &str) -> f64 {
    metric_value(&app.metrics().await, name).unwrap_or(0.0)
}

const REPLICA_ACQUIRED: &str =
    "datastorage_db_pool_acquire_duration_seconds_count{pool=\"replica\"}";
const PRIMARY_ACQUIRED: &str =
    "datastorage_db_pool_acquire_duration_seconds_count{pool=\"primary\"}";

async fn total(app: &TestApp, query: &str) -> u64 {
    let r = app.query(query).await;
    assert_eq!(r.status(), 200);
    let page: Value = r.json().await.unwrap();
    page["pagination"]["total"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_go_to_the_replica_and_to_the_primary_while_it_lags_or_is_down() {
    let primary = TempCluster::start(&[]);
    let replica = primary.start_replica();
    let db = PgDb::create_on(&primary.admin_url()).await;
    let on_replica = PgDb {
        port: replica.port,
        ..db.clone()
    };
    let api = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app = Arc::new(
        TestApp::serve_on_db(api, db.clone(), |s| {
            s.database.read_replica = Some(ReplicaSettings {
                host: Some("127.0.0.1".to_owned()),
                port: replica.port,
                max_replica_lag: Duration::from_secs(2),
                lag_check_interval: Duration::from_millis(200),
                ..ReplicaSettings::default()
            });
        })
        .await,
    );
    wait_metric(&app, "datastorage_db_replica_usable", |v| v == 1.0).await;

    // 100 queries during a write load: the replica's pool serves them.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn({
        let (app, stop) = (Arc::clone(&app), Arc::clone(&stop));
        async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                assert_eq!(
                    app.post_event(&event(&format!("rep-{}", n % 10)))
                        .await
                        .status(),
                    201
                );
                n += 1;
            }
            n
        }
    });
    let before = metric(&app, REPLICA_ACQUIRED).await;
    for i in 0..100 {
        let r = app.query(&format!("correlation_id=rep-{}", i % 10)).await;
        assert_eq!(r.status(), 200);
    }
    stop.store(true, Ordering::Relaxed);
    let written = writer.await.unwrap();
    assert!(written > 0);
    let served = metric(&app, REPLICA_ACQUIRED).await - before;
    eprintln!("100 queries during {written} writes: {served} replica acquisitions");
    assert!(
        served >= 100.0,
        "the replica pool served {served} of 100 queries"
    );
    let fallbacks = app.metrics().await;
    assert!(
        metric_value(&fallbacks, "datastorage_db_replica_fallback_reads_total").is_none(),
        "no read fell back while the replica kept up:\n{fallbacks}"
    );

    // Reading one's own write by id, at once: found (on the primary if the replica lags).
    for i in 0..20 {
        let r = app.post_event(&event(&format!("own-{i}"))).await;
        assert_eq!(r.status(), 201);
        let id = r.json::<Value>().await.unwrap()["event_id"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(app.get_event(&id).await.status(), 200, "own write {i}");
    }

    // Replay paused, then writes: the lag passes maxReplicaLag and reads go to the primary,
    // which has the events the replica has not replayed.
    on_replica.sql(&["SELECT pg_wal_replay_pause()"]).await;
    let paused = Instant::now();
    let mut after_pause = 0;
    while paused.elapsed() < Duration::from_secs(10) {
        assert_eq!(app.post_event(&event("rep-paused")).await.status(), 201);
        after_pause += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let lag = wait_metric(&app, "datastorage_db_replica_lag_seconds", |v| v > 5.0).await;
    eprintln!("after 10 s of writes with replay paused: lag {lag:.1} s");
    wait_metric(&app, "datastorage_db_replica_usable", |v| v == 0.0).await;
    let primary_before = metric(&app, PRIMARY_ACQUIRED).await;
    assert_eq!(total(&app, "correlation_id=rep-paused").await, after_pause);
    assert!(metric(&app, PRIMARY_ACQUIRED).await > primary_before);
    assert!(
        metric(
            &app,
            "datastorage_db_replica_fallback_reads_total{reason=\"lag\"}"
        )
        .await
            >= 1.0
    );

    // Replay resumed: the replica catches up and serves again.
    on_replica.sql(&["SELECT pg_wal_replay_resume()"]).await;
    wait_metric(&app, "datastorage_db_replica_usable", |v| v == 1.0).await;
    let before = metric(&app, REPLICA_ACQUIRED).await;
    assert_eq!(total(&app, "correlation_id=rep-paused").await, after_pause);
    assert!(metric(&app, REPLICA_ACQUIRED).await > before);

    // The replica stops at once, as a crash would: reads still answer, from the primary.
    replica.stop();
    wait_metric(&app, "datastorage_db_replica_usable", |v| v == 0.0).await;
    for _ in 0..5 {
        assert_eq!(total(&app, "correlation_id=rep-paused").await, after_pause);
    }
    assert!(
        metric(
            &app,
            "datastorage_db_replica_fallback_reads_total{reason=\"down\"}"
        )
        .await
            >= 5.0
    );
    // Writes never went there: the replica is read-only, and they all succeeded.
    assert_eq!(app.post_event(&event("rep-after")).await.status(), 201);
}
