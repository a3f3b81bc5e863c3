//! SQLite backend: the embedded default, nothing to install.
//!
//! SQLite allows one writer at a time, so writes take an in-process lock before their
//! transaction (`BEGIN IMMEDIATE`, so a second process waits on the busy timeout instead of
//! failing half-way). Reads run in parallel (WAL mode). PostgreSQL-only settings
//! (`statementTimeout`, `idleInTransactionTimeout`, the capacity check) do not apply;
//! `lockTimeout` becomes SQLite's busy timeout.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use datastorage_api::ValidatedEvent;
use serde_json::value::RawValue;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteRow, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection, Row, Sqlite, SqliteConnection};
use uuid::Uuid;

use super::error::DbError;
use super::pool::Pool;
use super::shared::{
    check_starters, fail, finish, first_writers, fresh_events, outcomes, shared_sql, Cancelled,
    Dialect, Failed, RowCodec, Sql, WriteOutcome, COLUMNS,
};
use crate::config::DatabaseSettings;
use crate::domain::chain::{link, Hasher};

/// Embedded SQLite migrations.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

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
    let conn = connect_options(db)
        .connect()
        .await
        .with_context(|| format!("cannot open SQLite database {}", db.sqlite_path.display()))?;
    migrate_on(conn, &MIGRATOR).await
}

/// Fails unless every embedded migration is applied.
pub async fn check_migrations(db: &DatabaseSettings) -> anyhow::Result<()> {
    let conn = connect_options(db)
        .create_if_missing(false)
        .connect()
        .await
        .with_context(|| format!("cannot open SQLite database {}", db.sqlite_path.display()))?;
    check_migrations_on(conn, &MIGRATOR).await
}

shared_sql!(SqliteStore, Sqlite, SqliteConnection);

/// The SQLite store.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    /// The pool.
    pub pool: Pool<SqliteConnection>,
    writer: Arc<tokio::sync::Mutex<()>>,
    /// Links and checks chains.
    pub hasher: Arc<Hasher>,
}

impl SqliteStore {
    /// A store over `pool`; creates the database folder.
    pub fn new(
        db: &DatabaseSettings,
        pool: Pool<SqliteConnection>,
        hasher: Arc<Hasher>,
    ) -> anyhow::Result<Self> {
        create_parent(db)?;
        Ok(Self {
            pool,
            writer: Arc::new(tokio::sync::Mutex::new(())),
            hasher,
        })
    }

    /// A connection for a read (SQLite has no replica: always the pool's, `false`).
    pub(crate) async fn read_conn(
        &self,
    ) -> Result<(crate::db::pool::PooledConn<SqliteConnection>, bool), DbError> {
        Ok((self.pool.acquire().await?, false))
    }

    /// Takes the in-process writer lock: every write of this process holds it, one at a time.
    pub async fn write_lock(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.writer.lock().await
    }

    /// See [`crate::db::Store::insert_events`].
    pub async fn insert_events(
        &self,
        events: &[ValidatedEvent],
        cancelled: &Cancelled<'_>,
    ) -> Result<Vec<WriteOutcome>, DbError> {
        // The writer lock comes first, so queued writers do not hold connections readers need.
        let _writer = self.writer.lock().await;
        let mut conn = self.pool.acquire().await?;
        match write_batch(&mut conn, &self.hasher, events, cancelled).await {
            Ok(outcomes) => Ok(outcomes),
            Err(Failed::Db(e)) => Err(e),
            Err(Failed::Sql(e)) => Err(fail(conn, e)),
            // Every supplied id is checked before the insert, and one writer at a time holds
            // the database: nothing to retry.
            Err(Failed::Replays | Failed::Retry) => Err(DbError::Internal(anyhow::anyhow!(
                "a write collided although SQLite writes one at a time"
            ))),
        }
    }
}

/// One attempt at writing a batch in its own transaction (`BEGIN IMMEDIATE`, so a second
/// process waits on the busy timeout instead of failing half-way).
async fn write_batch(
    conn: &mut SqliteConnection,
    hasher: &Hasher,
    events: &[ValidatedEvent],
    cancelled: &Cancelled<'_>,
) -> Result<Vec<WriteOutcome>, Failed> {
    let mut tx = conn.begin_with(Sqlite::BEGIN_WRITE).await?;
    let result = write_in_tx(&mut tx, hasher, events).await;
    finish(tx, result, cancelled).await
}

async fn write_in_tx(
    tx: &mut SqliteConnection,
    hasher: &Hasher,
    events: &[ValidatedEvent],
) -> Result<Vec<WriteOutcome>, Failed> {
    let stored = stored_links(tx, events).await?;
    let fresh = fresh_events(hasher, events, &stored).map_err(Failed::Db)?;
    let first = first_writers(&fresh);
    let mut heads = HashMap::new();
    let mut started_by = HashMap::new();
    for (c, starter) in &first {
        let head: Option<(i64, String, Option<String>)> = sqlx::query_as(
            "SELECT last_sequence, last_hash, started_by FROM audit_chain_heads WHERE correlation_id = ?",
        )
        .bind(c)
        .fetch_optional(&mut *tx)
        .await?;
        let (sequence, hash, by) = head.unwrap_or((0, String::new(), starter.map(str::to_owned)));
        heads.insert((*c).to_owned(), (sequence, hash));
        started_by.insert((*c).to_owned(), by);
    }
    check_starters(hasher, &fresh, &started_by).map_err(Failed::Db)?;

    let linked = link(hasher, &fresh, &mut heads);
    let insert_sql = format!(
        "INSERT INTO audit_events ({COLUMNS}) VALUES ({})",
        ["?"; 31].join(", ")
    );
    for l in &linked {
        let e = l.event;
        sqlx::query(&insert_sql)
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
            .bind(e.ingested_by.as_deref())
            .execute(&mut *tx)
            .await?;
    }
    for (c, starter) in &first {
        let (seq, hash) = &heads[*c];
        sqlx::query(
            "INSERT INTO audit_chain_heads (correlation_id, last_sequence, last_hash, started_by, updated_at) VALUES (?, ?, ?, ?, ?) \
             ON CONFLICT (correlation_id) DO UPDATE SET last_sequence = excluded.last_sequence, last_hash = excluded.last_hash, \
             updated_at = excluded.updated_at",
        )
        .bind(c)
        .bind(seq)
        .bind(hash)
        .bind(starter)
        .bind(Utc::now().timestamp_micros())
        .execute(&mut *tx)
        .await?;
    }
    Ok(outcomes(events, &stored))
}

impl Dialect for Sqlite {
    const BEGIN_WRITE: &'static str = "BEGIN IMMEDIATE";
    // A read transaction: rows and head from one snapshot (WAL).
    const BEGIN_SNAPSHOT: &'static str = "BEGIN";
    const MIGRATIONS_TABLE_EXISTS: &'static str = "SELECT EXISTS (SELECT 1 FROM sqlite_master \
         WHERE type = 'table' AND name = '_sqlx_migrations')";
    // SQLite's FULL and IOERR leave the connection usable.
    const DISCARD_WHEN_UNAVAILABLE: bool = false;

    fn push_time(qb: &mut Sql<'_, Self>, t: DateTime<Utc>) {
        qb.bind(t.timestamp_micros());
    }

    fn push_id(qb: &mut Sql<'_, Self>, id: Uuid) {
        qb.bind(id.to_string());
    }

    fn push_bucket(qb: &mut Sql<'_, Self>, origin: DateTime<Utc>, seconds: i64) {
        // Integer microseconds: integer division.
        qb.push("((event_timestamp - ")
            .bind(origin.timestamp_micros())
            .push(") / ")
            .bind(seconds * 1_000_000)
            .push(")");
    }

    fn push_detail(qb: &mut Sql<'_, Self>, key: &str, value: &str) {
        // The key is restricted to [A-Za-z0-9_] by validation; it is still bound, not spliced.
        // Booleans compare as `true`/`false`, as PostgreSQL's `->>` renders them.
        qb.push(" AND (CASE json_type(event_data, '$.' || ")
            .bind(key.to_owned())
            .push(") WHEN 'true' THEN 'true' WHEN 'false' THEN 'false' ELSE CAST(json_extract(event_data, '$.' || ")
            .bind(key.to_owned())
            .push(") AS TEXT) END) = ")
            .bind(value.to_owned());
    }
}

impl RowCodec for SqliteRow {
    fn time(&self, column: &str) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
        self.try_get::<Option<i64>, _>(column)?
            .map(|micros| {
                DateTime::<Utc>::from_timestamp_micros(micros).ok_or_else(|| {
                    sqlx::Error::ColumnDecode {
                        index: column.to_owned(),
                        source: format!("{column}: timestamp out of range").into(),
                    }
                })
            })
            .transpose()
    }

    fn id(&self, column: &str) -> Result<Option<Uuid>, sqlx::Error> {
        self.try_get::<Option<String>, _>(column)?
            .map(|s| {
                Uuid::parse_str(&s).map_err(|e| sqlx::Error::ColumnDecode {
                    index: column.to_owned(),
                    source: format!("{column}: {e}").into(),
                })
            })
            .transpose()
    }

    fn date(&self, column: &str) -> Result<String, sqlx::Error> {
        self.try_get(column)
    }

    fn json(&self, column: &str) -> Result<Box<RawValue>, sqlx::Error> {
        RawValue::from_string(self.try_get(column)?).map_err(|e| sqlx::Error::ColumnDecode {
            index: column.to_owned(),
            source: format!("{column}: {e}").into(),
        })
    }
}
