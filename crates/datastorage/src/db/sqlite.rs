//! SQLite backend: the embedded default, nothing to install.
//!
//! SQLite allows one writer at a time, so writes take an in-process lock before their
//! transaction (`BEGIN IMMEDIATE`, so a second process waits on the busy timeout instead of
//! failing half-way). Reads run in parallel (WAL mode). PostgreSQL-only settings
//! (`statementTimeout`, `idleInTransactionTimeout`, the capacity check) do not apply;
//! `lockTimeout` becomes SQLite's busy timeout.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::Arc;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use datastorage_api::chain::{same_content, stored_content};
use datastorage_api::query::EventFilter;
use datastorage_api::{AuditEvent, ValidatedEvent};
use serde_json::value::RawValue;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteRow, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection, QueryBuilder, Row, Sqlite, SqliteConnection};
use uuid::Uuid;

use super::chain::{link, Hasher};
use super::pool::{Pool, PoolLimits, PooledConn};
use super::{ChainRows, DbError, EventData, RawJson, WriteOutcome};
use crate::config::DatabaseSettings;
use crate::metrics::PoolCounters;

/// Embedded SQLite migrations.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

const COLUMNS: &str = "event_id, event_timestamp, event_date, version, event_type, event_category, \
    event_action, event_outcome, actor_type, actor_id, actor_ip, resource_type, resource_id, \
    correlation_id, parent_event_id, parent_event_date, namespace, cluster_id, severity, duration_ms, \
    error_code, error_message, retention_days, is_sensitive, event_data, chain_sequence, \
    previous_event_hash, event_hash, hash_algorithm, hash_key_id";

/// Connect options: WAL, `synchronous = NORMAL` (durable across process crashes; the last
/// transactions may be lost on power loss, as usual for WAL), foreign keys, busy timeout.
pub fn connect_options(db: &DatabaseSettings) -> SqliteConnectOptions {
    SqliteConnectOptions::new()
        .filename(&db.sqlite_path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(db.lock_timeout)
        .foreign_keys(true)
}

fn create_parent(db: &DatabaseSettings) -> anyhow::Result<()> {
    if let Some(dir) = db
        .sqlite_path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
    {
        std::fs::create_dir_all(dir).with_context(|| {
            format!(
                "database.sqlitePath: cannot create folder {}",
                dir.display()
            )
        })?;
    }
    Ok(())
}

/// Applies pending migrations.
pub async fn migrate(db: &DatabaseSettings) -> anyhow::Result<usize> {
    create_parent(db)?;
    let mut conn = connect_options(db)
        .connect()
        .await
        .with_context(|| format!("cannot open SQLite database {}", db.sqlite_path.display()))?;
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
    let mut conn = connect_options(db)
        .create_if_missing(false)
        .connect()
        .await
        .with_context(|| format!("cannot open SQLite database {}", db.sqlite_path.display()))?;
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

async fn applied_versions(conn: &mut SqliteConnection) -> anyhow::Result<HashSet<i64>> {
    let exists: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations')",
    )
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

/// The SQLite store.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    /// The pool.
    pub pool: Pool<SqliteConnection>,
    writer: Arc<tokio::sync::Mutex<()>>,
    pub(super) hasher: Arc<Hasher>,
}

impl SqliteStore {
    /// Builds the pool; creates the database folder.
    pub fn open(
        db: &DatabaseSettings,
        counters: PoolCounters,
        hasher: Arc<Hasher>,
    ) -> anyhow::Result<Self> {
        create_parent(db)?;
        Ok(Self {
            pool: Pool::new(connect_options(db), PoolLimits::from_settings(db), counters),
            writer: Arc::new(tokio::sync::Mutex::new(())),
            hasher,
        })
    }

    /// See [`super::Store::insert_events`].
    pub async fn insert_events(
        &self,
        events: &[ValidatedEvent],
        cancelled: &(dyn Fn() -> bool + Send + Sync),
    ) -> Result<Vec<WriteOutcome>, DbError> {
        // The writer lock comes first, so queued writers do not hold connections readers need.
        let _writer = self.writer.lock().await;
        let mut conn = self.pool.acquire().await?;
        match write_batch(&mut conn, &self.hasher, events, cancelled).await {
            Ok(outcomes) => Ok(outcomes),
            Err(Failed::Db(e)) => Err(e),
            Err(Failed::Sql(e)) => Err(fail(conn, e)),
        }
    }

    /// See [`super::Store::get_event`].
    pub async fn get_event(&self, id: Uuid) -> Result<Option<AuditEvent<RawJson>>, DbError> {
        let mut conn = self.pool.acquire().await?;
        let sql = format!("SELECT {COLUMNS} FROM audit_events WHERE event_id = ?");
        match sqlx::query(&sql)
            .bind(id.to_string())
            .fetch_optional(&mut *conn)
            .await
        {
            Ok(row) => row
                .map(|r| decode_row(&r).map_err(|e| DbError::Internal(anyhow::anyhow!(e))))
                .transpose(),
            Err(e) => Err(fail(conn, e)),
        }
    }

    /// See [`super::Store::query_events`].
    pub async fn query_events(
        &self,
        f: &EventFilter,
    ) -> Result<(Vec<AuditEvent<RawJson>>, u64), DbError> {
        let mut conn = self.pool.acquire().await?;
        let mut page =
            QueryBuilder::<Sqlite>::new(format!("SELECT {COLUMNS} FROM audit_events WHERE 1"));
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
        // The total is known from a page that ends within the limit; otherwise count.
        let total = match f.total_from_page(rows.len()) {
            Some(n) => n,
            None => {
                let mut count =
                    QueryBuilder::<Sqlite>::new("SELECT count(*) FROM audit_events WHERE 1");
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
        let result = async {
            // A read transaction: rows and head from one snapshot.
            let mut tx = conn.begin().await?;
            let sql = format!("SELECT {COLUMNS} FROM audit_events WHERE correlation_id = ? ORDER BY chain_sequence");
            let rows = sqlx::query(&sql).bind(correlation_id).fetch_all(&mut *tx).await?;
            let head: Option<(i64, String)> =
                sqlx::query_as("SELECT last_sequence, last_hash FROM audit_chain_heads WHERE correlation_id = ?")
                    .bind(correlation_id)
                    .fetch_optional(&mut *tx)
                    .await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>((rows, head))
        }
        .await;
        match result {
            Ok((rows, head)) => Ok(ChainRows {
                rows: rows.iter().map(decode_row).collect(),
                head,
            }),
            Err(e) => Err(fail(conn, e)),
        }
    }

    /// See [`super::Store::ping`].
    pub async fn ping(&self) -> Result<(), DbError> {
        let Some(mut conn) = self.pool.try_acquire().await? else {
            return Ok(());
        };
        match sqlx::query("SELECT 1").execute(&mut *conn).await {
            Ok(_) => Ok(()),
            Err(e) => Err(fail(conn, e)),
        }
    }
}

fn fail(conn: PooledConn<SqliteConnection>, e: sqlx::Error) -> DbError {
    let err = DbError::from_sqlx(e);
    if matches!(err, DbError::Internal(_)) {
        conn.discard();
    }
    err
}

enum Failed {
    Sql(sqlx::Error),
    Db(DbError),
}

impl From<sqlx::Error> for Failed {
    fn from(e: sqlx::Error) -> Self {
        Failed::Sql(e)
    }
}

/// One attempt at writing a batch in its own transaction. Every failure rolls back explicitly
/// before the connection goes back to the pool, so no lock outlives the attempt.
async fn write_batch(
    conn: &mut SqliteConnection,
    hasher: &Hasher,
    events: &[ValidatedEvent],
    cancelled: &(dyn Fn() -> bool + Send + Sync),
) -> Result<Vec<WriteOutcome>, Failed> {
    let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
    match write_in_tx(&mut tx, hasher, events).await {
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
    tx: &mut SqliteConnection,
    hasher: &Hasher,
    events: &[ValidatedEvent],
) -> Result<Vec<WriteOutcome>, Failed> {
    let mut heads = HashMap::new();
    let chains: HashSet<&str> = events.iter().map(|e| e.correlation_id.as_str()).collect();
    for c in &chains {
        let head: Option<(i64, String)> = sqlx::query_as(
            "SELECT last_sequence, last_hash FROM audit_chain_heads WHERE correlation_id = ?",
        )
        .bind(*c)
        .fetch_optional(&mut *tx)
        .await?;
        heads.insert((*c).to_owned(), head.unwrap_or((0, String::new())));
    }

    let mut existing = HashMap::new();
    let select = format!("SELECT {COLUMNS} FROM audit_events WHERE event_id = ?");
    for e in events.iter().filter(|e| e.id_supplied) {
        if let Some(row) = sqlx::query(&select)
            .bind(e.event_id.to_string())
            .fetch_optional(&mut *tx)
            .await?
        {
            let stored =
                decode_row(&row).map_err(|m| Failed::Db(DbError::Internal(anyhow::anyhow!(m))))?;
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
    for l in &linked {
        let e = l.event;
        sqlx::query(
            "INSERT INTO audit_events (event_id, event_timestamp, event_date, version, event_type, \
             event_category, event_action, event_outcome, actor_type, actor_id, actor_ip, resource_type, \
             resource_id, correlation_id, parent_event_id, parent_event_date, namespace, cluster_id, \
             severity, duration_ms, error_code, error_message, retention_days, is_sensitive, event_data, \
             chain_sequence, previous_event_hash, event_hash, hash_algorithm, hash_key_id) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(e.event_id.to_string())
        .bind(e.event_timestamp.timestamp_micros())
        .bind(e.event_timestamp.date_naive().to_string())
        .bind(&e.version)
        .bind(&e.event_type)
        .bind(e.event_category.as_str())
        .bind(&e.event_action)
        .bind(e.event_outcome.as_str())
        .bind(&e.actor_type)
        .bind(&e.actor_id)
        .bind(&e.actor_ip)
        .bind(&e.resource_type)
        .bind(&e.resource_id)
        .bind(&e.correlation_id)
        .bind(e.parent_event_id.map(|id| id.to_string()))
        .bind(e.parent_event_date.map(|t| t.timestamp_micros()))
        .bind(&e.namespace)
        .bind(&e.cluster_id)
        .bind(&e.severity)
        .bind(e.duration_ms)
        .bind(&e.error_code)
        .bind(&e.error_message)
        .bind(e.retention_days)
        .bind(e.is_sensitive)
        .bind(serde_json::to_string(&e.event_data).expect("a JSON map serializes"))
        .bind(l.sequence)
        .bind(&l.previous_hash)
        .bind(&l.hash)
        .bind(l.algorithm)
        .bind(l.key_id.as_deref())
        .execute(&mut *tx)
        .await?;
    }
    let touched: HashSet<&str> = fresh.iter().map(|e| e.correlation_id.as_str()).collect();
    for c in touched {
        let (seq, hash) = &heads[c];
        sqlx::query(
            "INSERT INTO audit_chain_heads (correlation_id, last_sequence, last_hash) VALUES (?, ?, ?) \
             ON CONFLICT (correlation_id) DO UPDATE SET last_sequence = excluded.last_sequence, last_hash = excluded.last_hash",
        )
        .bind(c)
        .bind(seq)
        .bind(hash)
        .execute(&mut *tx)
        .await?;
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

fn push_filters<'a>(qb: &mut QueryBuilder<'a, Sqlite>, f: &'a EventFilter, with_cursor: bool) {
    let eq = |qb: &mut QueryBuilder<'a, Sqlite>, column: &str, value: &'a Option<String>| {
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
        qb.push(" AND event_timestamp >= ")
            .push_bind(t.timestamp_micros());
    }
    if let Some(t) = f.until {
        qb.push(" AND event_timestamp < ")
            .push_bind(t.timestamp_micros());
    }
    if let Some((k, v)) = &f.detail {
        // The key is restricted to [A-Za-z0-9_] by validation; it is still bound, not spliced.
        // Booleans compare as `true`/`false`, as PostgreSQL's `->>` renders them.
        qb.push(" AND (CASE json_type(event_data, '$.' || ")
            .push_bind(k.as_str())
            .push(") WHEN 'true' THEN 'true' WHEN 'false' THEN 'false' ELSE CAST(json_extract(event_data, '$.' || ")
            .push_bind(k.as_str())
            .push(") AS TEXT) END) = ")
            .push_bind(v.as_str());
    }
    if let (true, Some(c)) = (with_cursor, f.cursor) {
        qb.push(" AND (event_timestamp, event_id) < (")
            .push_bind(c.event_timestamp.timestamp_micros())
            .push(", ")
            .push_bind(c.event_id.to_string())
            .push(")");
    }
}

fn decode_row<D: EventData>(row: &SqliteRow) -> Result<AuditEvent<D>, String> {
    let r = || -> Result<AuditEvent<D>, String> {
        let get_str = |c: &str| row.try_get::<String, _>(c).map_err(|e| e.to_string());
        let get_opt = |c: &str| {
            row.try_get::<Option<String>, _>(c)
                .map_err(|e| e.to_string())
        };
        let micros = |c: &str, v: i64| {
            DateTime::<Utc>::from_timestamp_micros(v)
                .ok_or_else(|| format!("{c}: timestamp out of range"))
        };
        let uuid = |c: &str, s: String| Uuid::parse_str(&s).map_err(|e| format!("{c}: {e}"));
        let ts: i64 = row.try_get("event_timestamp").map_err(|e| e.to_string())?;
        let parent_ts: Option<i64> = row
            .try_get("parent_event_date")
            .map_err(|e| e.to_string())?;
        let data = RawValue::from_string(get_str("event_data")?)
            .map_err(|e| format!("event_data: {e}"))?;
        let event_data = D::from_raw(data)?;
        Ok(AuditEvent {
            event_id: uuid("event_id", get_str("event_id")?)?,
            version: get_str("version")?,
            event_type: get_str("event_type")?,
            event_timestamp: micros("event_timestamp", ts)?,
            event_date: get_str("event_date")?,
            event_category: FromStr::from_str(&get_str("event_category")?)
                .map_err(|e| format!("event_category {e}"))?,
            event_action: get_str("event_action")?,
            event_outcome: FromStr::from_str(&get_str("event_outcome")?)
                .map_err(|e| format!("event_outcome {e}"))?,
            actor_type: get_opt("actor_type")?,
            actor_id: get_opt("actor_id")?,
            actor_ip: get_opt("actor_ip")?,
            resource_type: get_opt("resource_type")?,
            resource_id: get_opt("resource_id")?,
            correlation_id: get_str("correlation_id")?,
            parent_event_id: get_opt("parent_event_id")?
                .map(|s| uuid("parent_event_id", s))
                .transpose()?,
            parent_event_date: parent_ts
                .map(|v| micros("parent_event_date", v))
                .transpose()?,
            namespace: get_opt("namespace")?,
            cluster_id: get_opt("cluster_id")?,
            severity: get_opt("severity")?,
            duration_ms: row.try_get("duration_ms").map_err(|e| e.to_string())?,
            error_code: get_opt("error_code")?,
            error_message: get_opt("error_message")?,
            retention_days: row.try_get("retention_days").map_err(|e| e.to_string())?,
            is_sensitive: row.try_get("is_sensitive").map_err(|e| e.to_string())?,
            event_data,
            chain_sequence: row.try_get("chain_sequence").map_err(|e| e.to_string())?,
            event_hash: get_str("event_hash")?,
            previous_event_hash: get_str("previous_event_hash")?,
            hash_algorithm: get_str("hash_algorithm")?,
            hash_key_id: get_opt("hash_key_id")?,
            legal_hold: false,
        })
    };
    r()
}
