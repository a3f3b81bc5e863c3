//! The outage buffer against the real binary, a throwaway PostgreSQL cluster the test stops and
//! starts, and the machine's Redis (127.0.0.1:6379): writes during an outage are answered 202
//! and stored exactly once when the database is back; a kill -9 loses nothing buffered; a full
//! buffer refuses with 503; a poison event is quarantined; saturation is not an outage.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use datastorage_testkit::process::*;
use datastorage_testkit::*;
use serde_json::{json, Value};
use sqlx::Connection as _;
use uuid::Uuid;

/// How long the tests wait for the buffer to drain once the database is back.
const DRAIN_LIMIT: Duration = Duration::from_secs(120);

struct Outage {
    cluster: TempCluster,
    db: PgDb,
    server: Server,
}

/// A throwaway cluster, a database on it, and the server with `buffer` (a whole `buffer:`
/// section, plus any other top-level sections).
async fn start(buffer: &str) -> Outage {
    let cluster = TempCluster::start(&[]);
    let db = PgDb::create_on(&cluster.admin_url()).await;
    // Short connect and acquire timeouts: an outage is seen within a second.
    let database = database_yaml(
        &db,
        "  connectTimeout: 1s\n  acquireTimeout: 2s\n  lockTimeout: 1s\n",
    );
    let server = Server::start(&format!("{database}{buffer}"), "").await;
    Outage {
        cluster,
        db,
        server,
    }
}

fn redis_buffer() -> String {
    format!(
        "buffer:\n  backend: redis\n  redisStream: ds-test:{}\n  claimIdle: 5s\nredis:\n  addr: 127.0.0.1:6379\n",
        Uuid::new_v4().simple()
    )
}

fn batch_url(server: &Server) -> String {
    format!("{}/batch", server.events_url())
}

/// Events of `chains` correlation ids, `n` in all, without ids (the upstream client sends none).
fn events(prefix: &str, n: usize, chains: usize) -> Vec<Value> {
    (0..n)
        .map(|i| {
            let mut e = event(&format!("{prefix}-{}", i % chains));
            e["event_data"] = json!({ "seq": i });
            e
        })
        .collect()
}

/// Ids of a 201 or 202 answer (single or batch).
fn answered_ids(body: &Value) -> Vec<Uuid> {
    let ids = match (&body["event_ids"], &body["event_id"]) {
        (Value::Array(ids), _) => ids.clone(),
        (_, id @ Value::String(_)) => vec![id.clone()],
        _ => panic!("no ids in {body}"),
    };
    ids.iter()
        .map(|v| v.as_str().unwrap().parse().unwrap())
        .collect()
}

#[derive(Default)]
struct Tally {
    /// Ids answered 201 or 202.
    accepted: Vec<Uuid>,
    /// Answers by status.
    statuses: HashMap<u16, usize>,
    /// Events given up on after 5 s (as the upstream client drops them).
    dropped: usize,
}

/// Sends `batches` like the upstream Go client: no event_id, no spool, retries for 5 s, then
/// drops the batch. Sleeps `pace` between batches.
async fn upstream_writer(
    http: reqwest::Client,
    url: String,
    batches: Vec<Vec<Value>>,
    pace: Duration,
    tally: Arc<Mutex<Tally>>,
) {
    for batch in batches {
        let give_up = Instant::now() + Duration::from_secs(5);
        loop {
            let answer = http
                .post(&url)
                .json(&batch)
                .timeout(Duration::from_secs(5))
                .send()
                .await;
            let status = answer.as_ref().map(|r| r.status().as_u16()).unwrap_or(0);
            *tally.lock().unwrap().statuses.entry(status).or_default() += 1;
            match answer {
                Ok(r) if status == 201 || status == 202 => {
                    let body: Value = r.json().await.unwrap();
                    let ids = answered_ids(&body);
                    assert_eq!(ids.len(), batch.len(), "{body}");
                    tally.lock().unwrap().accepted.extend(ids);
                    break;
                }
                Ok(r) if (400..500).contains(&status) => {
                    panic!("{status}: {}", r.text().await.unwrap_or_default())
                }
                _ if Instant::now() >= give_up => {
                    tally.lock().unwrap().dropped += batch.len();
                    break;
                }
                _ => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
        tokio::time::sleep(pace).await;
    }
}

/// Waits until the buffer holds nothing and the database is not known down.
async fn drained(server: &Server) {
    let deadline = Instant::now() + DRAIN_LIMIT;
    loop {
        let (events, buffering) = (
            server.metric("datastorage_buffer_events").await,
            server.metric("datastorage_buffering").await,
        );
        if events == 0.0 && buffering == 0.0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "buffer still holds {events} events after {DRAIN_LIMIT:?}\nlog:\n{}",
            server.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Every id in `accepted` is stored exactly once, and no id is stored twice.
async fn stored_exactly_once(db: &PgDb, accepted: &[Uuid]) {
    let stored = db.stored_ids().await;
    let twice: Vec<_> = stored.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "stored more than once: {twice:?}");
    let missing: Vec<_> = accepted
        .iter()
        .filter(|id| !stored.contains_key(id))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} accepted events are not stored, e.g. {:?}",
        missing.len(),
        accepted.len(),
        &missing[..missing.len().min(5)]
    );
    let distinct: HashSet<_> = accepted.iter().collect();
    assert_eq!(distinct.len(), accepted.len(), "an id was answered twice");
}

/// A session holding `audit_events` in an open transaction (`ROLLBACK` on it lets go).
async fn lock_events_table(db: &PgDb) -> sqlx::PgConnection {
    let mut blocker = sqlx::PgConnection::connect(&db.url()).await.unwrap();
    sqlx::query("BEGIN").execute(&mut blocker).await.unwrap();
    sqlx::query("LOCK TABLE audit_events IN ACCESS EXCLUSIVE MODE")
        .execute(&mut blocker)
        .await
        .unwrap();
    blocker
}

/// Every chain of `prefix-0..chains` verifies.
async fn chains_verify(server: &Server, prefix: &str, chains: usize) {
    for i in 0..chains {
        let cid = format!("{prefix}-{i}");
        let v: Value = server
            .http
            .post(format!("{}/api/v1/audit/verify-chain", server.base))
            .json(&json!({ "correlation_id": cid }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v["is_valid"], true, "{cid}: {v}");
        assert_eq!(v["verdict"], "intact", "{cid}: {v}");
    }
}

/// 20,000 events from four upstream-like writers while PostgreSQL is stopped for 30 s.
async fn outage_of_30s_loses_nothing(buffer: &str) {
    let o = start(buffer).await;
    let (chains, writers, per_batch) = (40, 4, 50);
    let all = events("outage", 20_000, chains);
    let tally = Arc::new(Mutex::new(Tally::default()));
    let mut tasks = Vec::new();
    for w in 0..writers {
        let batches: Vec<Vec<Value>> = all
            .chunks(per_batch)
            .skip(w)
            .step_by(writers)
            .map(<[Value]>::to_vec)
            .collect();
        tasks.push(tokio::spawn(upstream_writer(
            o.server.http.clone(),
            batch_url(&o.server),
            batches,
            Duration::from_millis(350),
            Arc::clone(&tally),
        )));
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    o.cluster.stop();
    let stopped = Instant::now();
    tokio::time::sleep(Duration::from_secs(10)).await;
    // Mid-outage: ready (the buffer takes writes), buffering, and the events are on hold.
    assert_eq!(o.server.readyz().await, 200, "{}", o.server.log_tail());
    assert_eq!(o.server.metric("datastorage_buffering").await, 1.0);
    assert!(o.server.metric("datastorage_buffer_events").await > 0.0);
    tokio::time::sleep(Duration::from_secs(30).saturating_sub(stopped.elapsed())).await;
    o.cluster.restart();
    for t in tasks {
        t.await.unwrap();
    }
    drained(&o.server).await;
    let tally = Arc::try_unwrap(tally).ok().unwrap().into_inner().unwrap();
    let buffered = o
        .server
        .metric("datastorage_buffer_accepted_events_total")
        .await;
    let replayed = o
        .server
        .metric("datastorage_buffer_replayed_events_total")
        .await;
    eprintln!(
        "answers {:?}; accepted {} (buffered {buffered}, replayed {replayed}); dropped {}",
        tally.statuses,
        tally.accepted.len(),
        tally.dropped
    );
    assert!(
        buffered >= 5_000.0,
        "the outage must have been buffered: {buffered}"
    );
    assert_eq!(replayed, buffered, "every buffered event replayed");
    assert_eq!(
        o.server
            .metric("datastorage_buffer_quarantined_events_total")
            .await,
        0.0
    );
    assert!(
        tally.accepted.len() >= 19_000,
        "an upstream-like client must lose (almost) nothing: {} accepted, {} dropped",
        tally.accepted.len(),
        tally.dropped
    );
    stored_exactly_once(&o.db, &tally.accepted).await;
    chains_verify(&o.server, "outage", chains).await;
    o.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_30s_outage_under_20000_events_loses_nothing_on_disk() {
    outage_of_30s_loses_nothing("").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_30s_outage_under_20000_events_loses_nothing_on_redis() {
    outage_of_30s_loses_nothing(&redis_buffer()).await;
}

/// Posts `events` one batch of `per_batch` at a time; every answer must be `status`.
async fn post_all(server: &Server, events: &[Value], per_batch: usize, status: u16) -> Vec<Uuid> {
    let mut ids = Vec::new();
    for batch in events.chunks(per_batch) {
        let r = server
            .http
            .post(batch_url(server))
            .json(&batch)
            .send()
            .await
            .unwrap();
        let got = r.status().as_u16();
        let body: Value = r.json().await.unwrap();
        assert_eq!(got, status, "{body}\nlog:\n{}", server.log_tail());
        ids.extend(answered_ids(&body));
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_with_5000_buffered_events_loses_none_of_them() {
    let mut o = start("").await;
    o.cluster.stop();
    let ids = post_all(&o.server, &events("kill", 5_000, 10), 100, 202).await;
    assert_eq!(o.server.metric("datastorage_buffer_events").await, 5_000.0);
    // The 202 came after the fsync: nothing is lost to the SIGKILL.
    o.server.proc.kill();
    o.cluster.restart();
    o.server.respawn().await;
    drained(&o.server).await;
    assert_eq!(o.db.count().await, 5_000);
    stored_exactly_once(&o.db, &ids).await;
    chains_verify(&o.server, "kill", 10).await;
    o.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_buffer_refuses_with_503_and_keeps_what_it_took() {
    let o = start("buffer:\n  maxBytes: 65536\n  segmentBytes: 16384\n").await;
    o.cluster.stop();
    let mut accepted = Vec::new();
    let refused = loop {
        let r = o
            .server
            .http
            .post(batch_url(&o.server))
            .json(&events("full", 10, 3))
            .send()
            .await
            .unwrap();
        if r.status() == 503 {
            break r;
        }
        assert_eq!(r.status(), 202);
        accepted.extend(answered_ids(&r.json().await.unwrap()));
        assert!(accepted.len() < 10_000, "64 KiB never filled");
    };
    assert!(refused.headers().contains_key("retry-after"));
    let problem: Value = refused.json().await.unwrap();
    let detail = problem["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("buffer.maxBytes"), "{problem}");
    assert!(
        o.server
            .metric("datastorage_buffer_refused_events_total")
            .await
            >= 10.0
    );
    // A full buffer takes nothing more, so readiness says so.
    assert_eq!(o.server.readyz().await, 503);
    o.cluster.restart();
    drained(&o.server).await;
    assert_eq!(o.db.count().await as usize, accepted.len());
    stored_exactly_once(&o.db, &accepted).await;
    o.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_event_is_quarantined_and_the_events_behind_it_are_stored() {
    let o = start("").await;
    // A rule the database enforces and validation does not know: poison on replay.
    o.db.sql(&[
        "ALTER TABLE audit_events ADD CONSTRAINT no_poison CHECK (event_type <> 'test.poison')",
    ])
    .await;
    o.cluster.stop();
    let mut ids = Vec::new();
    for (i, kind) in ["test.before", "test.poison", "test.after", "test.after"]
        .iter()
        .enumerate()
    {
        let mut e = event("poison-0");
        e["event_type"] = json!(kind);
        e["event_data"] = json!({ "i": i });
        let r = o.server.post(&e).await;
        assert_eq!(r.status(), 202);
        ids.push(answered_ids(&r.json().await.unwrap())[0]);
    }
    o.cluster.restart();
    drained(&o.server).await;
    assert_eq!(
        o.server
            .metric("datastorage_buffer_quarantined_events_total")
            .await,
        1.0
    );
    let stored = o.db.stored_ids().await;
    assert!(
        stored.contains_key(&ids[0])
            && stored.contains_key(&ids[2])
            && stored.contains_key(&ids[3])
    );
    assert!(!stored.contains_key(&ids[1]));
    let quarantine =
        std::fs::read_to_string(o.server.dir().join("data/buffer/quarantine.ndjson")).unwrap();
    let line: Value = serde_json::from_str(quarantine.trim()).unwrap();
    assert_eq!(line["write"]["events"][0]["event_id"], ids[1].to_string());
    assert!(
        line["error"].as_str().unwrap().contains("no_poison"),
        "{line}"
    );
    chains_verify(&o.server, "poison", 1).await;
    o.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saturation_is_a_503_not_an_outage() {
    let o = start("").await;
    // Another session holds the table: writes hit database.lockTimeout (the database answers,
    // it is busy), so they are refused with 503, never buffered.
    let mut blocker = lock_events_table(&o.db).await;
    let r = o.server.post(&event("busy")).await;
    assert_eq!(r.status(), 503, "{}", r.text().await.unwrap());
    assert_eq!(
        o.server
            .metric("datastorage_buffer_accepted_events_total")
            .await,
        0.0
    );
    assert_eq!(o.server.metric("datastorage_buffering").await, 0.0);
    sqlx::query("ROLLBACK").execute(&mut blocker).await.unwrap();
    // The database unreachable: the same write is buffered.
    o.cluster.stop();
    let r = o.server.post(&event("busy")).await;
    assert_eq!(r.status(), 202);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["status"], "accepted");
    o.cluster.restart();
    drained(&o.server).await;
    assert_eq!(o.db.count().await, 1);
    o.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_changes_nothing_while_the_database_is_up() {
    // Nothing listens on this port: the Redis of the buffer is down from the start.
    let buffer = format!(
        "buffer:\n  backend: redis\nredis:\n  addr: 127.0.0.1:{}\n",
        free_port()
    );
    let o = start(&buffer).await;
    assert_eq!(o.server.readyz().await, 200);
    let ids = post_all(&o.server, &events("noredis", 20, 2), 10, 201).await;
    stored_exactly_once(&o.db, &ids).await;
    // Both down: nothing can be kept, so 503.
    o.cluster.stop();
    let r = o.server.post(&event("noredis-0")).await;
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    o.cluster.restart();
    o.server.stop().await;
}

/// SIGTERM, and the exit within `limit`; the exit must be clean.
async fn terminate(server: &mut Server, limit: Duration) {
    sigterm(server.proc.id());
    let status = server.proc.wait_exit(limit).await;
    assert!(
        status.is_some_and(|s| s.success()),
        "no clean exit within {limit:?}\n{}",
        server.log_tail()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_replays_what_it_can_within_the_grace_period_and_leaves_the_rest_on_disk() {
    // A slow replay (200 events/s, 15 s for 3,000) and a 5 s grace period.
    let mut o = start("buffer:\n  replayRate: 200\n  replayBatchSize: 100\n").await;
    let config = std::fs::read_to_string(&o.server.config).unwrap();
    std::fs::write(
        &o.server.config,
        config.replace("server:\n", "server:\n  shutdownTimeout: 5s\n"),
    )
    .unwrap();
    o.server.proc.kill();
    o.server.respawn().await;
    o.cluster.stop();
    let mut ids = post_all(&o.server, &events("term", 3_000, 5), 100, 202).await;
    o.cluster.restart();
    let begun = Instant::now() + Duration::from_secs(20);
    while o
        .server
        .metric("datastorage_buffer_replayed_events_total")
        .await
        == 0.0
    {
        assert!(Instant::now() < begun, "{}", o.server.log_tail());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The drain at shutdown runs without the rate limit: all of it within the grace period.
    let signalled = Instant::now();
    terminate(&mut o.server, Duration::from_secs(20)).await;
    assert!(
        signalled.elapsed() < Duration::from_secs(8),
        "{:?}",
        signalled.elapsed()
    );
    assert_eq!(o.db.count().await, 3_000, "drained at shutdown");
    assert!(!o.server.log_text().contains("still holds writes"));

    // Now a drain that cannot finish: the table is locked, so nothing commits; the exit comes
    // at the grace period and the buffer keeps everything for the next start.
    o.server.respawn().await;
    o.cluster.stop();
    ids.extend(post_all(&o.server, &events("term", 1_000, 5), 100, 202).await);
    o.cluster.restart();
    let mut blocker = lock_events_table(&o.db).await;
    let signalled = Instant::now();
    terminate(&mut o.server, Duration::from_secs(30)).await;
    assert!(
        signalled.elapsed() < Duration::from_secs(15),
        "{:?}",
        signalled.elapsed()
    );
    assert!(
        o.server.log_text().contains("still holds writes"),
        "{}",
        o.server.log_tail()
    );
    sqlx::query("ROLLBACK").execute(&mut blocker).await.unwrap();
    assert_eq!(o.db.count().await, 3_000);
    o.server.respawn().await;
    drained(&o.server).await;
    stored_exactly_once(&o.db, &ids).await;
    assert_eq!(o.db.count().await, 4_000);
    chains_verify(&o.server, "term", 5).await;
    o.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_entries_of_a_killed_replica_are_claimed_and_stored_once() {
    let buffer = redis_buffer();
    let stream = buffer
        .lines()
        .find_map(|l| l.trim().strip_prefix("redisStream: "))
        .unwrap()
        .to_owned();
    let mut o = start(&buffer).await;
    o.cluster.stop();
    let ids = post_all(&o.server, &events("claim", 1_000, 4), 100, 202).await;
    // The database answers but the table is locked: the replay reads entries (now pending for
    // this consumer), and its commit waits out database.lockTimeout.
    o.cluster.restart();
    let mut blocker = lock_events_table(&o.db).await;
    let mut redis = redis::Client::open("redis://127.0.0.1:6379/")
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let pending = || {
        let mut redis = redis.clone();
        let stream = stream.clone();
        async move {
            let summary: redis::Value = redis::cmd("XPENDING")
                .arg(&stream)
                .arg("datastorage")
                .query_async(&mut redis)
                .await
                .unwrap();
            match summary {
                redis::Value::Array(parts) => match &parts[0] {
                    redis::Value::Int(n) => *n,
                    _ => 0,
                },
                _ => 0,
            }
        }
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while pending().await == 0 {
        assert!(Instant::now() < deadline, "{}", o.server.log_tail());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    o.server.proc.kill();
    assert!(
        pending().await > 0,
        "the killed replica left entries pending"
    );
    sqlx::query("ROLLBACK").execute(&mut blocker).await.unwrap();
    // A new replica (a new consumer name) claims them after buffer.claimIdle (5 s here).
    o.server.respawn().await;
    drained(&o.server).await;
    assert_eq!(pending().await, 0);
    stored_exactly_once(&o.db, &ids).await;
    assert_eq!(o.db.count().await, 1_000);
    chains_verify(&o.server, "claim", 4).await;
    let _: () = redis::cmd("DEL")
        .arg(&stream)
        .arg(format!("{stream}:events"))
        .query_async(&mut redis)
        .await
        .unwrap();
    o.server.stop().await;
}
