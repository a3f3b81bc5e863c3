//! Behind a real PgBouncer (Debian's 1.18) in transaction pooling mode (`database.pooler:
//! pgbouncer`): the API's write, read, chain, hold and stats paths work with a server pool far
//! smaller than the service's own; the session settings still hold (as `SET LOCAL` per
//! transaction: a lock wait ends at `database.lockTimeout`); migrations and the capacity check
//! go direct (`database.migrationHost`) and the check reads the pooler's console; and a pooler
//! with no free server connection answers 503 with `Retry-After`, never a hang or a 500.

use std::time::{Duration, Instant};

use datastorage_testkit::app::Listener;
use datastorage_testkit::*;
use reqwest::Method;
use serde_json::{json, Value};
use sqlx::{Connection, PgConnection};
use tokio::net::TcpListener;

/// Server connections of the pooler in the API test: far fewer than the service's pool.
const POOL_SIZE: u32 = 2;

async fn served(
    db: &PgDb,
    bouncer: &PgBouncer,
    tweak: impl FnOnce(&mut datastorage::config::Settings),
) -> TestApp {
    let api = TcpListener::bind("127.0.0.1:0").await.unwrap();
    TestApp::serve_on_db(api, db.clone(), |s| {
        bouncer.apply(db, s);
        tweak(s);
    })
    .await
}

/// Backends on `db`'s database now (the pooler's server connections, and any other).
async fn backends_on(db: &PgDb) -> i64 {
    let mut conn = PgConnection::connect(&pg_admin_url()).await.unwrap();
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND backend_type = 'client backend'",
    )
    .bind(&db.name)
    .fetch_one(&mut conn)
    .await
    .unwrap();
    conn.close().await.ok();
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_writes_reads_verifies_and_holds_through_pgbouncer_in_transaction_mode() {
    let db = PgDb::create().await;
    let bouncer = PgBouncer::start(
        &db,
        &BouncerSettings {
            pool_size: POOL_SIZE,
            ..BouncerSettings::default()
        },
    );
    let app = served(&db, &bouncer, |_| {}).await;

    // 64 concurrent single writes over 8 chains (group commit), then a batch of 100.
    let writes = (0..64).map(|i| {
        let app = &app;
        async move {
            let r = app.post_event(&event(&format!("pgb-{}", i % 8))).await;
            assert_eq!(r.status(), 201, "{:?}", r.text().await);
        }
    });
    futures::future::join_all(writes).await;
    let batch: Vec<Value> = (0..100).map(|_| event("pgb-batch")).collect();
    let r = app.post_batch(&json!(batch)).await;
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    assert!(
        backends_on(&db).await <= i64::from(POOL_SIZE),
        "PostgreSQL served more connections than the pooler's pool"
    );

    // Reads: a page, a count past the page, one event by id.
    let page: Value = app
        .query("correlation_id=pgb-batch&limit=10")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["data"].as_array().unwrap().len(), 10);
    assert_eq!(page["pagination"]["total"], 100, "{page}");
    let id = page["data"][0]["event_id"].as_str().unwrap().to_owned();
    let one = app.get_event(&id).await;
    assert_eq!(one.status(), 200);
    let all: Value = app.query("limit=1").await.json().await.unwrap();
    assert_eq!(all["pagination"]["total"], 164, "{all}");

    // Chains verify, in their snapshot transactions.
    for cid in ["pgb-0", "pgb-7", "pgb-batch"] {
        let v = app.verify(cid).await;
        assert_eq!(v["verdict"], "intact", "{cid}: {v}");
    }

    // A hold placed and listed, then released; stats counted.
    let r = app
        .json(
            Method::POST,
            "/api/v1/audit/legal-hold",
            &json!({"correlation_id": "pgb-3", "reason": "case 7"}),
        )
        .await;
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    let holds: Value = app
        .get("/api/v1/audit/legal-hold")
        .await
        .json()
        .await
        .unwrap();
    assert!(holds.to_string().contains("pgb-3"), "{holds}");
    let r = app
        .send(
            Listener::Api,
            Method::DELETE,
            "/api/v1/audit/legal-hold/pgb-3",
            Some("application/json"),
            json!({"release_reason": "closed"}).to_string(),
        )
        .await;
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    let stats: Value = app
        .get("/api/v1/audit/stats?since=1h&bucket=1h")
        .await
        .json()
        .await
        .unwrap();
    assert!(stats.to_string().contains("gateway"), "{stats}");
    assert!(backends_on(&db).await <= i64::from(POOL_SIZE));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lock_timeout_holds_behind_the_pooler_as_set_local() {
    let db = PgDb::create().await;
    let bouncer = PgBouncer::start(&db, &BouncerSettings::default());
    let app = served(&db, &bouncer, |s| {
        s.database.lock_timeout = Duration::from_millis(500);
        s.buffer.enabled = false;
    })
    .await;
    let r = app.post_event(&event("pgb-locked")).await;
    assert_eq!(r.status(), 201);
    // A session of its own, direct to PostgreSQL, holds the chain's head.
    let mut holder = db.connect().await;
    let mut tx = holder.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM audit_chain_heads WHERE correlation_id = 'pgb-locked' FOR UPDATE")
        .execute(&mut *tx)
        .await
        .unwrap();
    // A batch must wait for that head; PgBouncer dropped the startup options, so only the
    // SET LOCAL of each transaction can end the wait at 500 ms.
    let start = Instant::now();
    let r = app.post_batch(&json!([event("pgb-locked")])).await;
    let waited = start.elapsed();
    assert_eq!(r.status(), 503, "{:?}", r.text().await);
    assert!(r.headers().contains_key("retry-after"));
    assert!(waited < Duration::from_secs(10), "waited {waited:?}");
    tx.rollback().await.unwrap();
    let r = app.post_batch(&json!([event("pgb-locked")])).await;
    assert_eq!(r.status(), 201);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pooler_without_a_free_server_connection_answers_503_with_retry_after() {
    let db = PgDb::create().await;
    let bouncer = PgBouncer::start(
        &db,
        &BouncerSettings {
            pool_size: 1,
            query_wait_timeout: 2,
            ..BouncerSettings::default()
        },
    );
    // The outage buffer stays on: a full pooler is saturation, not an outage, so a write is
    // refused with 503 instead of being buffered with 202.
    let app = served(&db, &bouncer, |_| {}).await;
    assert_eq!(app.post_event(&event("pgb-full")).await.status(), 201);
    // Another client of the pooler holds its only server connection in a transaction.
    let url = format!(
        "postgres://{}@127.0.0.1:{}/{}",
        db.user, bouncer.port, db.name
    );
    let opts: sqlx::postgres::PgConnectOptions = url.parse().unwrap();
    let mut other =
        PgConnection::connect_with(&opts.statement_cache_capacity(0).extra_float_digits(None))
            .await
            .unwrap();
    sqlx::raw_sql("BEGIN; SELECT 1")
        .execute(&mut other)
        .await
        .unwrap();

    let start = Instant::now();
    let blocked = event("pgb-full");
    let (write, read) = tokio::join!(
        app.post_event(&blocked),
        app.query("correlation_id=pgb-full")
    );
    let waited = start.elapsed();
    for (what, r) in [("write", write), ("read", read)] {
        let status = r.status();
        let retry = r.headers().contains_key("retry-after");
        let body = r.text().await.unwrap();
        assert_eq!(status, 503, "{what}: {body}");
        assert!(retry, "{what}: no Retry-After");
        assert!(
            !body.contains("127.0.0.1"),
            "{what}: the body names the server: {body}"
        );
    }
    assert!(waited < Duration::from_secs(15), "waited {waited:?}");

    // Once the server connection is free again, both work.
    sqlx::raw_sql("COMMIT").execute(&mut other).await.unwrap();
    other.close().await.ok();
    assert_eq!(app.post_event(&event("pgb-full")).await.status(), 201);
    let page: Value = app
        .query("correlation_id=pgb-full")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["pagination"]["total"], 2, "{page}");
    assert!(
        bouncer.log_text().contains("query_wait_timeout"),
        "PgBouncer did not time the waits out"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_capacity_check_reads_the_pooler_and_judges_both_sides() {
    let db = PgDb::create().await;
    let bouncer = PgBouncer::start(
        &db,
        &BouncerSettings {
            pool_size: 3,
            max_client_conn: 40,
            ..BouncerSettings::default()
        },
    );
    let mut settings = datastorage::config::Settings::default();
    bouncer.apply(&db, &mut settings);
    settings.database.max_open_conns = 10;
    settings.database.capacity.replicas = 4;
    let cap = datastorage::db::capacity::check(&settings.database)
        .await
        .unwrap();
    let pooler = cap.pooler.clone().unwrap_or_else(|| panic!("{cap}"));
    assert_eq!(
        (
            pooler.max_client_conn,
            pooler.pool_size,
            pooler.reserve_pool
        ),
        (40, 3, 0)
    );
    assert_eq!(pooler.pool_mode, "transaction");
    // PostgreSQL sees the pooler's 3 + headroom; the pooler sees 4 x 10 = 40 clients.
    assert_eq!(
        cap.budget(),
        3 + i64::from(settings.database.capacity.headroom)
    );
    assert!(!cap.violated(), "{cap}");
    settings.database.capacity.replicas = 5;
    let cap = datastorage::db::capacity::check(&settings.database)
        .await
        .unwrap();
    assert!(cap.pooler_violated() && cap.violated(), "{cap}");
    assert!(
        cap.table().contains("50 > max_client_conn 40"),
        "{}",
        cap.table()
    );

    // Migrations ran direct: PgBouncer in transaction mode cannot carry their session lock.
    let applied = datastorage::db::Store::migrate(&settings.database)
        .await
        .unwrap();
    assert!(applied > 0);
    let mut direct_unknown = settings.clone();
    direct_unknown.database.migration_host = None;
    let err = direct_unknown.validate().unwrap_err();
    assert!(
        format!("{err:#}").contains("database.migrationHost is required"),
        "{err:#}"
    );
}
