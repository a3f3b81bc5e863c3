//! PostgreSQL backend.
//!
//! Session settings (`statement_timeout`, `lock_timeout`, `idle_in_transaction_session_timeout`,
//! `application_name`) travel as startup parameters of each connection: per session, structured,
//! never spliced into a DSN string with the password. A batch is written with array parameters
//! (`UNNEST`), so the number of round trips does not grow with the batch.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::{DateTime, NaiveDate, Utc};
use datastorage_api::ValidatedEvent;
use serde_json::value::RawValue;
use sqlx::postgres::{PgConnectOptions, PgRow, PgSslMode};
use sqlx::{ConnectOptions, Connection, PgConnection, Postgres, Row};
use uuid::Uuid;

use super::error::{connect_failure, is_transient_connect_error, DbError, RETRY_AFTER_BUSY};
use super::partitions::{ensure_for, is_missing_partition};
use super::pool::{begin_statement, Pool, PooledConn};
use super::replica::Replica;
use super::shared::{
    chains_of, check_starters, fail, finish, first_writers, fresh_events, outcomes, shared_sql,
    Cancelled, Dialect, Failed, RowCodec, Sql, WriteOutcome, COLUMNS,
};
use crate::config::{format_duration, DatabaseSettings, PartitionInterval, Pooler, SslMode};
use crate::domain::chain::{link, Hasher, Linked};

/// Embedded PostgreSQL migrations.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Times a transaction is retried after a deadlock, serialization failure or concurrent insert
/// of the same id.
const MAX_TX_ATTEMPTS: u32 = 4;

/// The session settings of the pool's connections, by name and value.
fn session_settings(db: &DatabaseSettings) -> [(&'static str, String); 3] {
    let ms = |d: Duration| d.as_millis().to_string();
    [
        ("statement_timeout", ms(db.statement_timeout)),
        ("lock_timeout", ms(db.lock_timeout)),
        (
            "idle_in_transaction_session_timeout",
            ms(db.idle_in_transaction_timeout),
        ),
    ]
}

/// Connect options to `host:port`, without session settings.
fn options_to(db: &DatabaseSettings, host: &str, port: u16) -> PgConnectOptions {
    let mut opts = PgConnectOptions::new()
        .host(host)
        .port(port)
        .database(&db.name)
        .username(&db.user)
        .ssl_mode(match db.ssl_mode {
            SslMode::Disable => PgSslMode::Disable,
            SslMode::Prefer => PgSslMode::Prefer,
            SslMode::Require => PgSslMode::Require,
            SslMode::VerifyCa => PgSslMode::VerifyCa,
            SslMode::VerifyFull => PgSslMode::VerifyFull,
        })
        .application_name("datastorage")
        .log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_secs(1));
    if let Some(p) = &db.password {
        opts = opts.password(p.expose());
    }
    if let Some(ca) = &db.ssl_root_cert {
        opts = opts.ssl_root_cert(ca);
    }
    if let (Some(cert), Some(key)) = (&db.ssl_cert, &db.ssl_key) {
        opts = opts.ssl_client_cert(cert).ssl_client_key(key);
    }
    opts
}

/// Connect options of the pool's connections, to `host:port`. To PostgreSQL itself, the session
/// settings travel as startup parameters. Behind PgBouncer (`database.pooler`), the startup
/// parameters are only those it tracks, statements are not kept prepared (the cache is off:
/// each is parsed again inside its transaction), and the session settings come with every
/// transaction instead ([`per_transaction`]).
pub fn connect_options(db: &DatabaseSettings) -> PgConnectOptions {
    let opts = options_to(db, db.host.as_deref().unwrap_or("localhost"), db.port);
    match db.pooler {
        Pooler::None => opts.options(session_settings(db)),
        Pooler::Pgbouncer => opts.statement_cache_capacity(0).extra_float_digits(None),
    }
}

/// What every transaction of the pool runs after `BEGIN`, in the same round trip: behind a
/// pooler, `DEALLOCATE ALL`, then the session settings as `SET LOCAL` (they end with the
/// transaction, so no server connection keeps them); `None` when they are the connection's own.
///
/// sqlx names the statements it prepares per client connection (`sqlx_s_1`, …) even with its
/// cache off, and a prepared statement outlives the transaction on the server connection, which
/// the pooler then hands to other clients, whose names would collide. Dropping every prepared
/// statement first, while the transaction has the server connection to itself, leaves none to
/// collide with; nothing is lost, as no statement is reused across transactions.
pub fn per_transaction(db: &DatabaseSettings) -> Option<String> {
    (db.pooler != Pooler::None).then(|| {
        std::iter::once("DEALLOCATE ALL".to_owned())
            .chain(
                session_settings(db)
                    .iter()
                    .map(|(name, value)| format!("SET LOCAL {name} = {value}")),
            )
            .collect::<Vec<_>>()
            .join("; ")
    })
}

/// Connect options for PgBouncer's admin console (the `pgbouncer` database on the pooler), as
/// the service's role: only the startup parameters PgBouncer tracks.
pub fn console_options(db: &DatabaseSettings) -> PgConnectOptions {
    options_to(db, db.host.as_deref().unwrap_or("localhost"), db.port)
        .database("pgbouncer")
        .statement_cache_capacity(0)
        .extra_float_digits(None)
}

/// Connect options for one-off admin sessions (migrations, checks), to PostgreSQL itself
/// (`database.migrationHost` when set): the request timeouts are lifted, so a long migration
/// step, or waiting for another replica's migration lock, is not cancelled.
pub fn admin_connect_options(db: &DatabaseSettings) -> PgConnectOptions {
    let (host, port) = db.direct_host_port();
    let [_, _, idle] = session_settings(db);
    options_to(db, host, port).options([
        ("statement_timeout", "0".to_owned()),
        ("lock_timeout", "0".to_owned()),
        idle,
    ])
}

/// One admin session (migrations, checks), within `connectTimeout`; a failure names where it
/// connects and why.
pub async fn admin_connect(db: &DatabaseSettings) -> anyhow::Result<PgConnection> {
    connect_within(db, &admin_connect_options(db), &db.direct_target()).await
}

/// One connection with `opts` to `target` (named in messages), within `connectTimeout`.
async fn connect_within(
    db: &DatabaseSettings,
    opts: &PgConnectOptions,
    target: &str,
) -> anyhow::Result<PgConnection> {
    match tokio::time::timeout(db.connect_timeout, opts.connect()).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(anyhow::anyhow!(
            "{}",
            connect_failure(target, db.password.is_some(), &e)
        )),
        Err(_) => Err(anyhow::anyhow!(
            "cannot connect to {target}: no answer within {} (database.connectTimeout)",
            format_duration(db.connect_timeout)
        )),
    }
}

/// Connects once, retrying while the server is unreachable or not yet accepting connections
/// (starting, restarting, full), with backoff, for at most `patience`; each retry is logged. A
/// refusal that will not pass by itself (authentication, an unknown database) fails at once.
pub async fn wait_until_reachable(db: &DatabaseSettings, patience: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + patience;
    let mut wait = Duration::from_millis(250);
    let mut attempt = 1u32;
    loop {
        let outcome =
            tokio::time::timeout(db.connect_timeout, admin_connect_options(db).connect()).await;
        let (transient, why) = match outcome {
            Ok(Ok(conn)) => {
                conn.close().await.ok();
                if attempt > 1 {
                    tracing::info!(attempt, target = %db.direct_target(), "the database is reachable");
                }
                return Ok(());
            }
            Ok(Err(e)) => (
                is_transient_connect_error(&e),
                connect_failure(&db.direct_target(), db.password.is_some(), &e),
            ),
            Err(_) => (
                true,
                format!(
                    "cannot connect to {}: no answer within {} (database.connectTimeout)",
                    db.direct_target(),
                    format_duration(db.connect_timeout)
                ),
            ),
        };
        if !transient {
            anyhow::bail!("{why}");
        }
        if Instant::now() + wait > deadline {
            anyhow::bail!(
                "{why}; gave up after {attempt} attempts in {} (database.waitOnStart)",
                format_duration(patience)
            );
        }
        tracing::warn!(attempt, retry_in = %format_duration(wait), error = %why, "waiting for the database");
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(5));
        attempt += 1;
    }
}

/// Opens one connection as the pool opens them (through the pooler) and runs a transaction
/// as the pool runs them: `BEGIN`, the session settings, a statement, `COMMIT`.
pub async fn probe_pooled(db: &DatabaseSettings) -> anyhow::Result<()> {
    let mut conn = connect_within(db, &connect_options(db), &db.target()).await?;
    let settings = per_transaction(db);
    let mut tx = conn
        .begin_with(begin_statement("BEGIN", settings.as_deref()))
        .await?;
    sqlx::query("SELECT 1").execute(&mut *tx).await?;
    tx.commit().await?;
    conn.close().await.ok();
    Ok(())
}

/// Applies pending migrations on one dedicated connection (sqlx holds an advisory lock on that
/// same connection while it migrates, so concurrent replicas take turns).
pub async fn migrate(db: &DatabaseSettings) -> anyhow::Result<usize> {
    let conn = admin_connect(db).await.context("cannot migrate")?;
    migrate_on(conn, &MIGRATOR).await
}

/// Fails unless every embedded migration is applied.
pub async fn check_migrations(db: &DatabaseSettings) -> anyhow::Result<()> {
    let conn = admin_connect(db).await?;
    check_migrations_on(conn, &MIGRATOR).await
}

shared_sql!(PgStore, Postgres, PgConnection);

/// The PostgreSQL store.
#[derive(Debug, Clone)]
pub struct PgStore {
    /// The pool.
    pub pool: Pool<PgConnection>,
    /// The read replica, if configured.
    pub replica: Option<Arc<Replica>>,
    /// Links and checks chains.
    pub hasher: Arc<Hasher>,
    /// The span of a partition created for an event no partition holds yet.
    pub partitions: PartitionInterval,
}

impl PgStore {
    /// A connection for a read the replica may serve: the replica's while it is usable (then
    /// `true`), else the primary's.
    pub(crate) async fn read_conn(&self) -> Result<(PooledConn<PgConnection>, bool), DbError> {
        if let Some(conn) = match &self.replica {
            Some(replica) => replica.acquire().await,
            None => None,
        } {
            return Ok((conn, true));
        }
        Ok((self.pool.acquire().await?, false))
    }

    /// See [`crate::db::Store::insert_events`] (`Wait`) and [`crate::db::Store::insert_group`]
    /// (`Skip`): with `Skip`, the events of chains whose head another transaction holds are
    /// left out (their outcome is `None`) instead of waiting for it.
    pub async fn insert_events(
        &self,
        events: &[ValidatedEvent],
        locks: HeadLocks,
        cancelled: &Cancelled<'_>,
    ) -> Result<Vec<Option<WriteOutcome>>, DbError> {
        let mut conn = self.pool.acquire().await?;
        let mut attempt = 1;
        let mut check_replays = false;
        loop {
            let result = write_batch(
                &mut conn,
                &self.hasher,
                events,
                locks,
                check_replays,
                cancelled,
            )
            .await;
            match result {
                Ok(outcomes) => return Ok(outcomes),
                Err(Failed::Db(e)) => return Err(e),
                Err(Failed::Replays) if attempt < MAX_TX_ATTEMPTS => {
                    check_replays = true;
                    attempt += 1;
                }
                Err(Failed::Replays) => {
                    return Err(DbError::Internal(anyhow::anyhow!(
                        "event ids kept colliding with concurrent writes after {attempt} attempts"
                    )))
                }
                Err(Failed::Sql(e)) if is_missing_partition(&e) && attempt < MAX_TX_ATTEMPTS => {
                    // An event older (or further ahead) than every partition: create its
                    // partition, then write again.
                    let times = events.iter().map(|e| e.event_timestamp);
                    let step = self.partitions;
                    let created =
                        crate::db::pool::in_session!(conn, |c| ensure_for(c, times, step).await);
                    match created {
                        Ok(created) => tracing::info!(created, "created partitions for old events"),
                        Err(e) => return Err(fail(conn, e)),
                    }
                    attempt += 1;
                }
                Err(Failed::Sql(e))
                    if DbError::is_retryable_sqlx(&e) && attempt < MAX_TX_ATTEMPTS =>
                {
                    tracing::debug!(error = %e, attempt, "retrying write transaction");
                    attempt += 1;
                }
                Err(Failed::Retry) if attempt < MAX_TX_ATTEMPTS => attempt += 1,
                Err(Failed::Retry) => {
                    let message = "chain heads kept being created by concurrent writes";
                    return Err(DbError::Contention {
                        message: message.to_owned(),
                        cause: format!("{message} ({attempt} attempts)"),
                        retry_after: RETRY_AFTER_BUSY,
                    });
                }
                Err(Failed::Sql(e)) => return Err(fail(conn, e)),
            }
        }
    }
}

/// How a write takes the chain heads it appends to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadLocks {
    /// Wait for each head (up to `lockTimeout`): an atomic batch needs all of them.
    Wait,
    /// Skip heads another transaction holds, and leave their events out: a commit group of
    /// independent single events, so one stuck chain does not stall the others.
    Skip,
}

/// Takes the heads of chains `$1` (sorted, so writers cannot deadlock): creates the missing
/// ones, started by `$2` (the rows we insert are ours until commit), and locks the existing
/// ones. A head that exists but is not returned is held by another transaction (`SKIP
/// LOCKED`), or was created by one that committed after this statement's snapshot.
const LOCK_HEADS: &str = "WITH created AS ( \
        INSERT INTO audit_chain_heads (correlation_id, last_sequence, last_hash, started_by) \
        SELECT c, 0, '', b FROM unnest($1::text[], $2::text[]) AS u(c, b) ORDER BY c \
        ON CONFLICT (correlation_id) DO NOTHING \
        RETURNING correlation_id, last_sequence, last_hash, started_by), \
    locked AS ( \
        SELECT correlation_id, last_sequence, last_hash, started_by FROM audit_chain_heads \
        WHERE correlation_id = ANY($1) ORDER BY correlation_id FOR UPDATE{SKIP}) \
    SELECT correlation_id, last_sequence, last_hash, started_by FROM created \
    UNION ALL SELECT correlation_id, last_sequence, last_hash, started_by FROM locked";

/// A chain head as the lock statements return it: chain, last sequence, last hash, starter.
type HeadRow = (String, i64, String, Option<String>);

/// Locks heads that [`LOCK_HEADS`] could not see (created by a transaction that committed
/// while it ran).
const LOCK_MORE_HEADS: &str = "SELECT correlation_id, last_sequence, last_hash, started_by \
    FROM audit_chain_heads WHERE correlation_id = ANY($1) ORDER BY correlation_id FOR UPDATE";

static LOCK_HEADS_WAIT: LazyLock<String> = LazyLock::new(|| LOCK_HEADS.replace("{SKIP}", ""));
static LOCK_HEADS_SKIP: LazyLock<String> =
    LazyLock::new(|| LOCK_HEADS.replace("{SKIP}", " SKIP LOCKED"));

/// One attempt at writing a batch, in its own transaction.
///
/// The fast path (`check_replays` false) assumes no event is a replay: its insert skips ids that
/// already exist, and if any was skipped the attempt is abandoned ([`Failed::Replays`]) and
/// repeated with the explicit replay check. A batch thus costs four round trips: `BEGIN`, the
/// head lock, one statement inserting every row and advancing the heads, `COMMIT`.
async fn write_batch(
    conn: &mut PooledConn<PgConnection>,
    hasher: &Hasher,
    events: &[ValidatedEvent],
    locks: HeadLocks,
    check_replays: bool,
    cancelled: &Cancelled<'_>,
) -> Result<Vec<Option<WriteOutcome>>, Failed> {
    let mut tx = conn.begin(Postgres::BEGIN_WRITE).await?;
    let result = write_in_tx(&mut tx, hasher, events, locks, check_replays).await;
    finish(tx, result, cancelled).await
}

async fn write_in_tx(
    tx: &mut PgConnection,
    hasher: &Hasher,
    batch: &[ValidatedEvent],
    locks: HeadLocks,
    check_replays: bool,
) -> Result<Vec<Option<WriteOutcome>>, Failed> {
    let all: Vec<&ValidatedEvent> = batch.iter().collect();
    let first = first_writers(&all);
    let mut chains: Vec<&str> = first.keys().copied().collect();
    chains.sort_unstable();
    let starters: Vec<Option<&str>> = chains.iter().map(|c| first[c]).collect();
    let sql = match locks {
        HeadLocks::Wait => &*LOCK_HEADS_WAIT,
        HeadLocks::Skip => &*LOCK_HEADS_SKIP,
    };
    let rows: Vec<HeadRow> = sqlx::query_as(sql)
        .bind(&chains)
        .bind(&starters)
        .fetch_all(&mut *tx)
        .await?;
    let mut heads = HashMap::with_capacity(rows.len());
    let mut started_by = HashMap::with_capacity(rows.len());
    let take = |rows: Vec<HeadRow>,
                heads: &mut HashMap<String, (i64, String)>,
                started_by: &mut HashMap<String, Option<String>>| {
        for (c, s, h, b) in rows {
            started_by.insert(c.clone(), b);
            heads.insert(c, (s, h));
        }
    };
    take(rows, &mut heads, &mut started_by);
    if heads.len() < chains.len() && locks == HeadLocks::Wait {
        // Heads another transaction created and committed while our statement ran (its insert
        // waited for theirs): a new statement sees them. Taking them now, instead of starting
        // over, keeps concurrent batches that open the same new chains from retrying in turn.
        let missing: Vec<&str> = chains
            .iter()
            .copied()
            .filter(|c| !heads.contains_key(*c))
            .collect();
        let rows: Vec<HeadRow> = sqlx::query_as(LOCK_MORE_HEADS)
            .bind(&missing)
            .fetch_all(&mut *tx)
            .await?;
        take(rows, &mut heads, &mut started_by);
        if heads.len() < chains.len() {
            return Err(Failed::Retry);
        }
    }
    // Only the events of the chains we hold are written; the others wait for another try.
    let held: Vec<ValidatedEvent>;
    let events: &[ValidatedEvent] = if heads.len() == chains.len() {
        batch
    } else {
        held = batch
            .iter()
            .filter(|e| heads.contains_key(&e.correlation_id))
            .cloned()
            .collect();
        &held
    };

    // Replays: a client-supplied id already stored answers like the first write.
    let stored = if check_replays {
        stored_links(tx, events).await?
    } else {
        HashMap::new()
    };
    let fresh = fresh_events(hasher, events, &stored).map_err(Failed::Db)?;
    check_starters(hasher, &fresh, &started_by).map_err(Failed::Db)?;
    let linked = link(hasher, &fresh, &mut heads);
    if !linked.is_empty() {
        let new_heads: Vec<(&str, i64, &str)> = chains_of(&fresh)
            .into_iter()
            .map(|c| {
                let (s, h) = &heads[c];
                (c, *s, h.as_str())
            })
            .collect();
        let inserted = insert_rows(tx, &linked, &new_heads).await?;
        if inserted < linked.len() {
            return Err(Failed::Replays);
        }
    }
    let mut written = outcomes(events, &stored).into_iter();
    Ok(batch
        .iter()
        .map(|e| {
            heads
                .contains_key(&e.correlation_id)
                .then(|| written.next())
                .flatten()
        })
        .collect())
}

/// The insert of [`insert_rows`]: rows from array parameters, then the heads advanced, in one
/// statement.
static INSERT_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH ins AS (INSERT INTO audit_events ({COLUMNS}) \
         SELECT id, ts, (ts AT TIME ZONE 'UTC')::date, v, t, cat, act, o, aty, aid, aip, rty, rid, \
                cid, pid, pdate, ns, cl, sev, dur, ec, em, rd, sens, data, seq, prev, h, alg, kid, ib \
         FROM unnest($1::uuid[], $2::timestamptz[], $3::text[], $4::text[], $5::text[], $6::text[], \
                     $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], \
                     $13::text[], $14::uuid[], $15::timestamptz[], $16::text[], $17::text[], \
                     $18::text[], $19::bigint[], $20::text[], $21::text[], $22::int[], $23::bool[], \
                     $24::jsonb[], $25::bigint[], $26::text[], $27::text[], $28::text[], $29::text[], \
                     $30::text[]) \
              AS u(id, ts, v, t, cat, act, o, aty, aid, aip, rty, rid, cid, pid, pdate, ns, cl, sev, \
                   dur, ec, em, rd, sens, data, seq, prev, h, alg, kid, ib) \
         ON CONFLICT (event_id, event_timestamp) DO NOTHING RETURNING 1), \
         upd AS (UPDATE audit_chain_heads AS hd SET last_sequence = v.s, last_hash = v.h, updated_at = now() \
                 FROM unnest($31::text[], $32::bigint[], $33::text[]) AS v(c, s, h) \
                 WHERE hd.correlation_id = v.c) \
         SELECT count(*) FROM ins"
    )
});

/// Inserts linked events and advances their chain heads, in one statement of array
/// parameters. Returns how many rows were inserted (ids already stored are skipped).
async fn insert_rows(
    conn: &mut PgConnection,
    linked: &[Linked<'_>],
    heads: &[(&str, i64, &str)],
) -> Result<usize, sqlx::Error> {
    macro_rules! col {
        ($f:expr) => {
            linked.iter().map($f).collect::<Vec<_>>()
        };
    }
    let inserted: i64 = sqlx::query_scalar(&INSERT_SQL)
        .bind(col!(|l| l.event.event_id))
        .bind(col!(|l| l.event.event_timestamp))
        .bind(col!(|l| l.event.version.as_str()))
        .bind(col!(|l| l.event.event_type.as_str()))
        .bind(col!(|l| l.event.event_category.as_str()))
        .bind(col!(|l| l.event.event_action.as_str()))
        .bind(col!(|l| l.event.event_outcome.as_str()))
        .bind(col!(|l| l.event.actor_type.as_deref()))
        .bind(col!(|l| l.event.actor_id.as_deref()))
        .bind(col!(|l| l.event.actor_ip.as_deref()))
        .bind(col!(|l| l.event.resource_type.as_deref()))
        .bind(col!(|l| l.event.resource_id.as_deref()))
        .bind(col!(|l| l.event.correlation_id.as_str()))
        .bind(col!(|l| l.event.parent_event_id))
        .bind(col!(|l| l.event.parent_event_date))
        .bind(col!(|l| l.event.namespace.as_deref()))
        .bind(col!(|l| l.event.cluster_id.as_deref()))
        .bind(col!(|l| l.event.severity.as_deref()))
        .bind(col!(|l| l.event.duration_ms))
        .bind(col!(|l| l.event.error_code.as_deref()))
        .bind(col!(|l| l.event.error_message.as_deref()))
        .bind(col!(|l| l.event.retention_days))
        .bind(col!(|l| l.event.is_sensitive))
        .bind(col!(|l| sqlx::types::Json(&l.event.event_data)))
        .bind(col!(|l| l.sequence))
        .bind(col!(|l| l.previous_hash.as_str()))
        .bind(col!(|l| l.hash.as_str()))
        .bind(col!(|l| l.algorithm))
        .bind(col!(|l| l.key_id.as_deref()))
        .bind(col!(|l| l.event.ingested_by.as_deref()))
        .bind(heads.iter().map(|h| h.0).collect::<Vec<_>>())
        .bind(heads.iter().map(|h| h.1).collect::<Vec<_>>())
        .bind(heads.iter().map(|h| h.2).collect::<Vec<_>>())
        .fetch_one(conn)
        .await?;
    Ok(inserted as usize)
}

impl Dialect for Postgres {
    const BEGIN_WRITE: &'static str = "BEGIN";
    const BEGIN_SNAPSHOT: &'static str = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY";
    const MIGRATIONS_TABLE_EXISTS: &'static str =
        "SELECT to_regclass('_sqlx_migrations') IS NOT NULL";
    const DISCARD_WHEN_UNAVAILABLE: bool = true;

    fn push_time(qb: &mut Sql<'_, Self>, t: DateTime<Utc>) {
        qb.bind(t);
    }

    fn push_id(qb: &mut Sql<'_, Self>, id: Uuid) {
        qb.bind(id);
    }

    fn push_bucket(qb: &mut Sql<'_, Self>, origin: DateTime<Utc>, seconds: i64) {
        qb.push("floor(extract(epoch FROM event_timestamp - ")
            .bind(origin)
            .push(") / ")
            .bind(seconds)
            .push(")::bigint");
    }

    fn push_detail(qb: &mut Sql<'_, Self>, key: &str, value: &str) {
        qb.push(" AND event_data ->> ")
            .bind(key.to_owned())
            .push(" = ")
            .bind(value.to_owned());
    }
}

impl RowCodec for PgRow {
    fn time(&self, column: &str) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
        self.try_get(column)
    }

    fn id(&self, column: &str) -> Result<Option<Uuid>, sqlx::Error> {
        self.try_get(column)
    }

    fn date(&self, column: &str) -> Result<String, sqlx::Error> {
        Ok(self.try_get::<NaiveDate, _>(column)?.to_string())
    }

    fn json(&self, column: &str) -> Result<Box<RawValue>, sqlx::Error> {
        Ok(self
            .try_get::<sqlx::types::Json<Box<RawValue>>, _>(column)?
            .0)
    }
}
