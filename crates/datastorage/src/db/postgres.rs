//! PostgreSQL backend.
//!
//! Session settings (`statement_timeout`, `lock_timeout`, `idle_in_transaction_session_timeout`,
//! `application_name`) travel as startup parameters of each connection: per session, structured,
//! never spliced into a DSN string with the password. A batch is written with array parameters
//! (`UNNEST`), so the number of round trips does not grow with the batch.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::Arc;

use anyhow::Context as _;
use chrono::{DateTime, NaiveDate, Utc};
use datastorage_api::chain::{same_content, stored_content};
use datastorage_api::query::EventFilter;
use datastorage_api::{AuditEvent, ValidatedEvent};
use sqlx::postgres::{PgConnectOptions, PgRow, PgSslMode};
use sqlx::{ConnectOptions, Connection, PgConnection, Postgres, QueryBuilder, Row};
use uuid::Uuid;

use super::chain::{link, Hasher};
use super::pool::{Pool, PoolLimits, PooledConn};
use super::{ChainRows, DbError, EventData, RawJson, WriteOutcome};
use crate::config::{DatabaseSettings, SslMode};
use crate::metrics::PoolCounters;

/// Embedded PostgreSQL migrations.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Columns of `audit_events` as [`decode_row`] reads them.
const COLUMNS: &str = "event_id, event_timestamp, event_date, version, event_type, event_category, \
    event_action, event_outcome, actor_type, actor_id, actor_ip, resource_type, resource_id, \
    correlation_id, parent_event_id, parent_event_date, namespace, cluster_id, severity, duration_ms, \
    error_code, error_message, retention_days, is_sensitive, event_data, chain_sequence, \
    previous_event_hash, event_hash, hash_algorithm, hash_key_id";

/// Times a transaction is retried after a deadlock, serialization failure or concurrent insert
/// of the same id.
const MAX_TX_ATTEMPTS: u32 = 4;

/// Connect options from the settings, session settings included.
pub fn connect_options(db: &DatabaseSettings) -> PgConnectOptions {
    let ms = |d: std::time::Duration| d.as_millis().to_string();
    let mut opts = PgConnectOptions::new()
        .host(db.host.as_deref().unwrap_or("localhost"))
        .port(db.port)
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
        .options([
            ("statement_timeout", ms(db.statement_timeout)),
            ("lock_timeout", ms(db.lock_timeout)),
            (
                "idle_in_transaction_session_timeout",
                ms(db.idle_in_transaction_timeout),
            ),
        ])
        .log_slow_statements(
            tracing::log::LevelFilter::Warn,
            std::time::Duration::from_secs(1),
        );
    if let Some(p) = &db.password {
        opts = opts.password(p.expose());
    }
    opts
}

/// Connect options for one-off admin sessions (migrations, checks): the request timeouts are
/// lifted, so a long migration step, or waiting for another replica's migration lock, is not
/// cancelled. (A later `-c` option overrides an earlier one.)
pub fn admin_connect_options(db: &DatabaseSettings) -> PgConnectOptions {
    connect_options(db).options([("statement_timeout", "0"), ("lock_timeout", "0")])
}

/// Applies pending migrations on one dedicated connection (sqlx holds an advisory lock on that
/// same connection while it migrates, so concurrent replicas take turns).
pub async fn migrate(db: &DatabaseSettings) -> anyhow::Result<usize> {
    let mut conn = admin_connect_options(db)
        .connect()
        .await
        .context("cannot connect to PostgreSQL to migrate")?;
    let before = applied_versions(&mut conn).await?;
    MIGRATOR
        .run_direct(&mut conn)
        .await
        .context("migration failed")?;
    let after = applied_versions(&mut conn).await?;
    conn.close().await.ok();
    Ok(after.len().saturating_sub(before.len()))
}

/// Fails unless every embedded migration is applied.
pub async fn check_migrations(db: &DatabaseSettings) -> anyhow::Result<()> {
    let mut conn = admin_connect_options(db)
        .connect()
        .await
        .context("cannot connect to PostgreSQL")?;
    let applied = applied_versions(&mut conn).await?;
    conn.close().await.ok();
    let missing: Vec<i64> = MIGRATOR
        .iter()
        .map(|m| m.version)
        .filter(|v| !applied.contains(v))
        .collect();
    anyhow::ensure!(missing.is_empty(), "migrations {missing:?} are not applied; run `datastorage migrate`, or let `serve` apply them (database.migrateOnStart: true)");
    Ok(())
}

async fn applied_versions(conn: &mut PgConnection) -> anyhow::Result<HashSet<i64>> {
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        .fetch_one(&mut *conn)
        .await?;
    if !exists {
        return Ok(HashSet::new());
    }
    let rows: Vec<i64> = sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
        .fetch_all(&mut *conn)
        .await?;
    Ok(rows.into_iter().collect())
}

/// The PostgreSQL store.
#[derive(Debug, Clone)]
pub struct PgStore {
    /// The pool.
    pub pool: Pool<PgConnection>,
    pub(super) hasher: Arc<Hasher>,
}

impl PgStore {
    /// Builds the pool from the settings.
    pub fn open(
        db: &DatabaseSettings,
        counters: PoolCounters,
        hasher: Arc<Hasher>,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            pool: Pool::new(connect_options(db), PoolLimits::from_settings(db), counters),
            hasher,
        })
    }

    /// See [`super::Store::insert_events`].
    pub async fn insert_events(
        &self,
        events: &[ValidatedEvent],
        cancelled: &(dyn Fn() -> bool + Send + Sync),
    ) -> Result<Vec<WriteOutcome>, DbError> {
        let mut conn = self.pool.acquire().await?;
        let mut attempt = 1;
        let mut check_replays = false;
        loop {
            match write_batch(&mut conn, &self.hasher, events, check_replays, cancelled).await {
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
                Err(Failed::Sql(e))
                    if DbError::is_retryable_sqlx(&e) && attempt < MAX_TX_ATTEMPTS =>
                {
                    tracing::debug!(error = %e, attempt, "retrying write transaction");
                    attempt += 1;
                }
                Err(Failed::Sql(e)) => return Err(fail(conn, e)),
            }
        }
    }

    /// See [`super::Store::get_event`].
    pub async fn get_event(&self, id: Uuid) -> Result<Option<AuditEvent<RawJson>>, DbError> {
        let mut conn = self.pool.acquire().await?;
        let sql = format!("SELECT {COLUMNS} FROM audit_events WHERE event_id = $1");
        let row = match sqlx::query(&sql).bind(id).fetch_optional(&mut *conn).await {
            Ok(row) => row,
            Err(e) => return Err(fail(conn, e)),
        };
        row.map(|r| decode_row(&r).map_err(|e| DbError::Internal(anyhow::anyhow!(e))))
            .transpose()
    }

    /// See [`super::Store::query_events`].
    pub async fn query_events(
        &self,
        f: &EventFilter,
    ) -> Result<(Vec<AuditEvent<RawJson>>, u64), DbError> {
        let mut conn = self.pool.acquire().await?;
        let mut page =
            QueryBuilder::<Postgres>::new(format!("SELECT {COLUMNS} FROM audit_events WHERE TRUE"));
        push_filters(&mut page, f, true);
        page.push(" ORDER BY event_timestamp DESC, event_id DESC LIMIT ")
            .push_bind(i64::from(f.limit) + 1);
        if f.cursor.is_none() {
            page.push(" OFFSET ").push_bind(f.offset as i64);
        }
        let rows = match page.build().fetch_all(&mut *conn).await {
            Ok(rows) => rows,
            Err(e) => return Err(fail(conn, e)),
        };
        // Most queries (one correlation id, one page) end within the page: the total is known
        // without counting. Otherwise count, in a second round trip.
        let total = match f.total_from_page(rows.len()) {
            Some(n) => n,
            None => {
                let mut count =
                    QueryBuilder::<Postgres>::new("SELECT count(*) FROM audit_events WHERE TRUE");
                push_filters(&mut count, f, false);
                match count
                    .build_query_scalar::<i64>()
                    .fetch_one(&mut *conn)
                    .await
                {
                    Ok(n) => n as u64,
                    Err(e) => return Err(fail(conn, e)),
                }
            }
        };
        let events = rows
            .iter()
            .map(decode_row)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| DbError::Internal(anyhow::anyhow!(e)))?;
        Ok((events, total))
    }

    /// See [`super::Store::chain_rows`].
    pub async fn chain_rows(&self, correlation_id: &str) -> Result<ChainRows, DbError> {
        let mut conn = self.pool.acquire().await?;
        // One snapshot for rows and head, so a concurrent append cannot look like truncation.
        let result = async {
            let mut tx = conn.begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY").await?;
            let sql = format!("SELECT {COLUMNS} FROM audit_events WHERE correlation_id = $1 ORDER BY chain_sequence");
            let rows = sqlx::query(&sql).bind(correlation_id).fetch_all(&mut *tx).await?;
            let head: Option<(i64, String)> = sqlx::query_as(
                "SELECT last_sequence, last_hash FROM audit_chain_heads WHERE correlation_id = $1",
            )
            .bind(correlation_id)
            .fetch_optional(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>((rows, head))
        }
        .await;
        let (rows, head) = match result {
            Ok(v) => v,
            Err(e) => return Err(fail(conn, e)),
        };
        Ok(ChainRows {
            rows: rows.iter().map(decode_row).collect(),
            head,
        })
    }

    /// See [`super::Store::ping`].
    pub async fn ping(&self) -> Result<(), DbError> {
        let Some(mut conn) = self.pool.try_acquire().await? else {
            return Ok(()); // every connection is busy serving: the database answers
        };
        match sqlx::query("SELECT 1").execute(&mut *conn).await {
            Ok(_) => Ok(()),
            Err(e) => Err(fail(conn, e)),
        }
    }
}

/// Classifies `e`, and closes the connection when the error may have left it unusable.
fn fail(conn: PooledConn<PgConnection>, e: sqlx::Error) -> DbError {
    let err = DbError::from_sqlx(e);
    if matches!(err, DbError::Unavailable { .. } | DbError::Internal(_)) {
        conn.discard();
    }
    err
}

enum Failed {
    Sql(sqlx::Error),
    Db(DbError),
    /// The fast path met an id that is already stored.
    Replays,
}

impl From<sqlx::Error> for Failed {
    fn from(e: sqlx::Error) -> Self {
        Failed::Sql(e)
    }
}

/// One attempt at writing a batch, in its own transaction.
///
/// The fast path (`check_replays` false) assumes no event is a replay: its insert skips ids that
/// already exist, and if any was skipped the attempt is abandoned ([`Failed::Replays`]) and
/// repeated with the explicit replay check. A batch thus costs four round trips: `BEGIN`, the
/// head lock, one statement inserting every row and advancing the heads, `COMMIT`. Every
/// failure rolls back explicitly before the connection goes back to the pool, so no lock
/// outlives the attempt.
async fn write_batch(
    conn: &mut PgConnection,
    hasher: &Hasher,
    events: &[ValidatedEvent],
    check_replays: bool,
    cancelled: &(dyn Fn() -> bool + Send + Sync),
) -> Result<Vec<WriteOutcome>, Failed> {
    let mut tx = conn.begin().await?;
    match write_in_tx(&mut tx, hasher, events, check_replays).await {
        Ok(outcomes) if !cancelled() => {
            tx.commit().await?;
            Ok(outcomes)
        }
        Ok(_) => {
            tx.rollback().await?;
            Err(Failed::Db(DbError::Cancelled))
        }
        Err(e) => {
            let _ = tx.rollback().await;
            Err(e)
        }
    }
}

async fn write_in_tx(
    tx: &mut PgConnection,
    hasher: &Hasher,
    events: &[ValidatedEvent],
    check_replays: bool,
) -> Result<Vec<WriteOutcome>, Failed> {
    // Lock the heads of every chain in the batch, in a fixed order so writers cannot deadlock.
    let mut chains: Vec<&str> = events.iter().map(|e| e.correlation_id.as_str()).collect();
    chains.sort_unstable();
    chains.dedup();
    // One statement creates missing heads, locks all of them and returns them: a no-op update
    // takes the row lock and RETURNING gives the current values.
    let heads: Vec<(String, i64, String)> = sqlx::query_as(
        "INSERT INTO audit_chain_heads AS h (correlation_id, last_sequence, last_hash) \
         SELECT c, 0, '' FROM unnest($1::text[]) AS c ORDER BY c \
         ON CONFLICT (correlation_id) DO UPDATE SET last_sequence = h.last_sequence \
         RETURNING correlation_id, last_sequence, last_hash",
    )
    .bind(&chains)
    .fetch_all(&mut *tx)
    .await?;
    let mut heads: HashMap<String, (i64, String)> =
        heads.into_iter().map(|(c, s, h)| (c, (s, h))).collect();

    // Replays: a client-supplied id already stored answers like the first write.
    let supplied: Vec<Uuid> = events
        .iter()
        .filter(|e| e.id_supplied)
        .map(|e| e.event_id)
        .collect();
    let mut existing = HashMap::new();
    if check_replays && !supplied.is_empty() {
        let sql = format!("SELECT {COLUMNS} FROM audit_events WHERE event_id = ANY($1)");
        for row in sqlx::query(&sql)
            .bind(&supplied)
            .fetch_all(&mut *tx)
            .await?
        {
            let stored =
                decode_row(&row).map_err(|e| Failed::Db(DbError::Internal(anyhow::anyhow!(e))))?;
            existing.insert(stored.event_id, stored);
        }
    }
    let mut fresh = Vec::with_capacity(events.len());
    for e in events {
        match existing.get(&e.event_id) {
            Some(stored) if same_content(&stored_content(stored), e) => {}
            Some(_) => return Err(Failed::Db(DbError::Conflict(e.event_id))),
            None => fresh.push(e),
        }
    }

    let linked = link(hasher, &fresh, &mut heads);
    if !linked.is_empty() {
        let touched: HashSet<&str> = fresh.iter().map(|e| e.correlation_id.as_str()).collect();
        let new_heads: Vec<(&str, i64, &str)> = touched
            .iter()
            .map(|c| {
                let (s, h) = &heads[*c];
                (*c, *s, h.as_str())
            })
            .collect();
        let inserted = insert_rows(tx, &linked, &new_heads).await?;
        if inserted < linked.len() {
            return Err(Failed::Replays);
        }
    }

    Ok(events
        .iter()
        .map(|e| WriteOutcome {
            event_id: e.event_id,
            event_timestamp: existing
                .get(&e.event_id)
                .map_or(e.event_timestamp, |s| s.event_timestamp),
            replayed: existing.contains_key(&e.event_id),
        })
        .collect())
}

/// Inserts linked events and advances their chain heads, in one statement of array
/// parameters. Returns how many rows were inserted (ids already stored are skipped).
async fn insert_rows(
    conn: &mut PgConnection,
    linked: &[super::chain::Linked<'_>],
    heads: &[(&str, i64, &str)],
) -> Result<usize, sqlx::Error> {
    macro_rules! col {
        ($f:expr) => {
            linked.iter().map($f).collect::<Vec<_>>()
        };
    }
    let inserted: i64 = sqlx::query_scalar(
        "WITH ins AS (INSERT INTO audit_events (event_id, event_timestamp, event_date, version, event_type, \
         event_category, event_action, event_outcome, actor_type, actor_id, actor_ip, resource_type, \
         resource_id, correlation_id, parent_event_id, parent_event_date, namespace, cluster_id, \
         severity, duration_ms, error_code, error_message, retention_days, is_sensitive, event_data, \
         chain_sequence, previous_event_hash, event_hash, hash_algorithm, hash_key_id) \
         SELECT id, ts, (ts AT TIME ZONE 'UTC')::date, v, t, cat, act, o, aty, aid, aip, rty, rid, cid, \
                pid, pdate, ns, cl, sev, dur, ec, em, rd, sens, data, seq, prev, h, alg, kid \
         FROM unnest($1::uuid[], $2::timestamptz[], $3::text[], $4::text[], $5::text[], $6::text[], \
                     $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], \
                     $13::text[], $14::uuid[], $15::timestamptz[], $16::text[], $17::text[], \
                     $18::text[], $19::bigint[], $20::text[], $21::text[], $22::int[], $23::bool[], \
                     $24::jsonb[], $25::bigint[], $26::text[], $27::text[], $28::text[], $29::text[]) \
              AS u(id, ts, v, t, cat, act, o, aty, aid, aip, rty, rid, cid, pid, pdate, ns, cl, sev, \
                   dur, ec, em, rd, sens, data, seq, prev, h, alg, kid) \
         ON CONFLICT (event_id) DO NOTHING RETURNING 1), \
         upd AS (UPDATE audit_chain_heads AS hd SET last_sequence = v.s, last_hash = v.h \
                 FROM unnest($30::text[], $31::bigint[], $32::text[]) AS v(c, s, h) \
                 WHERE hd.correlation_id = v.c) \
         SELECT count(*) FROM ins",
    )
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
    .bind(heads.iter().map(|h| h.0).collect::<Vec<_>>())
    .bind(heads.iter().map(|h| h.1).collect::<Vec<_>>())
    .bind(heads.iter().map(|h| h.2).collect::<Vec<_>>())
    .fetch_one(conn)
    .await?;
    Ok(inserted as usize)
}

fn push_filters<'a>(qb: &mut QueryBuilder<'a, Postgres>, f: &'a EventFilter, with_cursor: bool) {
    let eq = |qb: &mut QueryBuilder<'a, Postgres>, column: &str, value: &'a Option<String>| {
        if let Some(v) = value {
            qb.push(format!(" AND {column} = ")).push_bind(v.as_str());
        }
    };
    eq(qb, "event_type", &f.event_type);
    eq(qb, "correlation_id", &f.correlation_id);
    eq(qb, "actor_id", &f.actor_id);
    eq(qb, "resource_type", &f.resource_type);
    eq(qb, "resource_id", &f.resource_id);
    eq(qb, "namespace", &f.namespace);
    eq(qb, "cluster_id", &f.cluster_id);
    eq(qb, "lower(severity)", &f.severity);
    if let Some(c) = f.event_category {
        qb.push(" AND event_category = ").push_bind(c.as_str());
    }
    if let Some(o) = f.event_outcome {
        qb.push(" AND event_outcome = ").push_bind(o.as_str());
    }
    if let Some(t) = f.since {
        qb.push(" AND event_timestamp >= ").push_bind(t);
    }
    if let Some(t) = f.until {
        qb.push(" AND event_timestamp < ").push_bind(t);
    }
    if let Some((k, v)) = &f.detail {
        qb.push(" AND event_data ->> ")
            .push_bind(k.as_str())
            .push(" = ")
            .push_bind(v.as_str());
    }
    if let (true, Some(c)) = (with_cursor, f.cursor) {
        qb.push(" AND (event_timestamp, event_id) < (")
            .push_bind(c.event_timestamp)
            .push(", ")
            .push_bind(c.event_id)
            .push(")");
    }
}

/// Reads one row; an undecodable row (edited by hand) is an error message, not a panic.
fn decode_row<D: EventData>(row: &PgRow) -> Result<AuditEvent<D>, String> {
    let r = || -> Result<AuditEvent<D>, sqlx::Error> {
        fn parse<T: FromStr<Err = String>>(col: &str, s: String) -> Result<T, sqlx::Error> {
            T::from_str(&s).map_err(|e| sqlx::Error::ColumnDecode {
                index: col.to_owned(),
                source: e.into(),
            })
        }
        let data: sqlx::types::Json<RawJson> = row.try_get("event_data")?;
        let event_data = D::from_raw(data.0).map_err(|e| sqlx::Error::ColumnDecode {
            index: "event_data".into(),
            source: e.into(),
        })?;
        Ok(AuditEvent {
            event_id: row.try_get("event_id")?,
            version: row.try_get("version")?,
            event_type: row.try_get("event_type")?,
            event_timestamp: row.try_get::<DateTime<Utc>, _>("event_timestamp")?,
            event_date: row.try_get::<NaiveDate, _>("event_date")?.to_string(),
            event_category: parse("event_category", row.try_get("event_category")?)?,
            event_action: row.try_get("event_action")?,
            event_outcome: parse("event_outcome", row.try_get("event_outcome")?)?,
            actor_type: row.try_get("actor_type")?,
            actor_id: row.try_get("actor_id")?,
            actor_ip: row.try_get("actor_ip")?,
            resource_type: row.try_get("resource_type")?,
            resource_id: row.try_get("resource_id")?,
            correlation_id: row.try_get("correlation_id")?,
            parent_event_id: row.try_get("parent_event_id")?,
            parent_event_date: row.try_get("parent_event_date")?,
            namespace: row.try_get("namespace")?,
            cluster_id: row.try_get("cluster_id")?,
            severity: row.try_get("severity")?,
            duration_ms: row.try_get("duration_ms")?,
            error_code: row.try_get("error_code")?,
            error_message: row.try_get("error_message")?,
            retention_days: row.try_get("retention_days")?,
            is_sensitive: row.try_get("is_sensitive")?,
            event_data,
            chain_sequence: row.try_get("chain_sequence")?,
            event_hash: row.try_get("event_hash")?,
            previous_event_hash: row.try_get("previous_event_hash")?,
            hash_algorithm: row.try_get("hash_algorithm")?,
            hash_key_id: row.try_get("hash_key_id")?,
            legal_hold: false,
        })
    };
    r().map_err(|e| e.to_string())
}
