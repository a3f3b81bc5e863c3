//! Storage: PostgreSQL and SQLite behind one interface, [`Store`].
//!
//! SQL lives here, in small functions per backend; handlers never see SQL. Both backends:
//! - apply their embedded migrations (`migrations/postgres`, `migrations/sqlite`) on one dedicated
//!   connection before the pool exists, so pooled connections never hold statements prepared
//!   against an older schema;
//! - write a whole batch in one transaction: lock the chain heads of its correlation ids, drop
//!   replays of client-supplied ids (an id already stored with different content is a conflict),
//!   assign sequence numbers and hashes ([`chain::link`]), insert, advance the heads;
//! - read with explicit column lists (never `SELECT *`) and order newest first with an
//!   `event_id` tiebreak;
//! - classify every database error once, in [`DbError::from_sqlx`].

pub mod capacity;
pub mod chain;
pub mod group_commit;
pub mod pool;
pub mod postgres;
pub mod sqlite;

use std::time::Duration;

use datastorage_api::query::EventFilter;
use datastorage_api::{AuditEvent, JsonObject, ValidatedEvent};
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::config::{DatabaseSettings, Driver};
use crate::metrics::PoolCounters;
use pool::{AcquireError, PoolSnapshot};

/// How long to ask clients to wait after a 503 caused by a saturated pool.
pub const RETRY_AFTER_BUSY: Duration = Duration::from_secs(1);
/// How long to ask clients to wait after a 503 caused by an unreachable database.
pub const RETRY_AFTER_DOWN: Duration = Duration::from_secs(5);

/// A database failure, classified.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The database cannot serve now (pool exhausted, connection lost, timeout, lock wait);
    /// the client should retry after the given time.
    #[error("{message}")]
    Unavailable {
        /// What happened, safe to show.
        message: String,
        /// Suggested wait.
        retry_after: Duration,
    },
    /// Too much contention to finish now (lock or statement timeout, deadlock or serialization
    /// failure after retries, SQLite busy); the client should retry. Unlike
    /// [`DbError::Unavailable`], it may concern only some of the events of a shared write.
    #[error("{message}")]
    Contention {
        /// What happened, safe to show.
        message: String,
        /// Suggested wait.
        retry_after: Duration,
    },
    /// The write was abandoned before commit because its requester went away; nothing stored.
    #[error("the write was abandoned before commit")]
    Cancelled,
    /// A client-supplied `event_id` is already stored with different content.
    #[error("event_id {0} is already stored with different content")]
    Conflict(Uuid),
    /// The data broke a database rule that validation should have caught.
    #[error("the database refused the data: {0}")]
    Data(String),
    /// A bug or an unexpected state.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<AcquireError> for DbError {
    fn from(e: AcquireError) -> Self {
        let retry_after = match e {
            AcquireError::Timeout(_) => RETRY_AFTER_BUSY,
            _ => RETRY_AFTER_DOWN,
        };
        DbError::Unavailable {
            message: e.to_string(),
            retry_after,
        }
    }
}

impl DbError {
    /// A copy of this error for each of several requests that share one failure.
    pub fn duplicate(&self) -> Self {
        match self {
            DbError::Unavailable {
                message,
                retry_after,
            } => DbError::Unavailable {
                message: message.clone(),
                retry_after: *retry_after,
            },
            DbError::Contention {
                message,
                retry_after,
            } => DbError::Contention {
                message: message.clone(),
                retry_after: *retry_after,
            },
            DbError::Cancelled => DbError::Cancelled,
            DbError::Conflict(id) => DbError::Conflict(*id),
            DbError::Data(m) => DbError::Data(m.clone()),
            DbError::Internal(e) => DbError::Internal(anyhow::anyhow!("{e:#}")),
        }
    }

    /// Classifies a sqlx error: lost connections, timeouts and resource limits are
    /// `Unavailable`, data exceptions and constraint violations are `Data`, the rest `Internal`.
    pub fn from_sqlx(e: sqlx::Error) -> Self {
        use sqlx::Error as E;
        match &e {
            E::Io(_)
            | E::Tls(_)
            | E::PoolTimedOut
            | E::PoolClosed
            | E::WorkerCrashed
            | E::Protocol(_) => DbError::Unavailable {
                message: format!("lost the database connection: {e}"),
                retry_after: RETRY_AFTER_DOWN,
            },
            E::Database(db) => {
                let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
                match classify_code(&code) {
                    Class::Contention => DbError::Contention {
                        message: format!(
                            "the database could not finish the request: {}",
                            db.message()
                        ),
                        retry_after: RETRY_AFTER_BUSY,
                    },
                    Class::Unavailable => DbError::Unavailable {
                        message: format!(
                            "the database could not finish the request: {}",
                            db.message()
                        ),
                        retry_after: RETRY_AFTER_BUSY,
                    },
                    Class::Data => DbError::Data(db.message().to_owned()),
                    Class::Internal => DbError::Internal(anyhow::Error::new(e)),
                }
            }
            _ => DbError::Internal(anyhow::Error::new(e)),
        }
    }

    /// Whether repeating the whole transaction may succeed (serialization failure, deadlock,
    /// or a concurrent insert of the same id).
    pub(crate) fn is_retryable_sqlx(e: &sqlx::Error) -> bool {
        matches!(e, sqlx::Error::Database(db) if matches!(db.code().as_deref(), Some("40001" | "40P01" | "23505" | "2067" | "1555")))
    }
}

enum Class {
    Contention,
    Unavailable,
    Data,
    Internal,
}

/// PostgreSQL SQLSTATEs and SQLite extended result codes.
fn classify_code(code: &str) -> Class {
    match code {
        // PostgreSQL: lock not available (lock_timeout), query canceled (statement_timeout),
        // serialization failure / deadlock after retries.
        "55P03" | "57014" | "40001" | "40P01" => Class::Contention,
        // PostgreSQL: connection exceptions, resource limits, operator intervention (shutdown).
        c if c.starts_with("08") || c.starts_with("53") || c.starts_with("57") => {
            Class::Unavailable
        }
        // PostgreSQL: data exceptions and integrity constraint violations.
        c if c.starts_with("22") || c.starts_with("23") => Class::Data,
        // SQLite: BUSY and LOCKED (busy timeout), then FULL and IOERR.
        c if c.parse::<u32>().is_ok_and(|n| matches!(n & 0xff, 5 | 6)) => Class::Contention,
        c if c.parse::<u32>().is_ok_and(|n| matches!(n & 0xff, 10 | 13)) => Class::Unavailable,
        // SQLite: CONSTRAINT, MISMATCH, TOOBIG.
        c if c.parse::<u32>().is_ok_and(|n| matches!(n & 0xff, 18..=20)) => Class::Data,
        _ => Class::Internal,
    }
}

/// What one write did with one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteOutcome {
    /// The event's id.
    pub event_id: Uuid,
    /// Stored timestamp.
    pub event_timestamp: chrono::DateTime<chrono::Utc>,
    /// True when the id was already stored with the same content: nothing was written.
    pub replayed: bool,
}

/// How a decoded row holds `event_data`: parsed into a [`JsonObject`] (to recompute hashes and
/// compare replays), or as [`RawJson`], the stored text checked and passed through to answers
/// (parsing and re-encoding it was a fifth of the CPU of a query).
pub trait EventData: Sized {
    /// From the stored JSON text, which must be an object.
    fn from_raw(raw: Box<RawValue>) -> Result<Self, String>;
}

/// Stored JSON text, valid JSON, passed through unparsed (every read endpoint answers with it, so
/// one event looks the same whichever endpoint returned it).
pub type RawJson = Box<RawValue>;

impl EventData for JsonObject {
    fn from_raw(raw: Box<RawValue>) -> Result<Self, String> {
        serde_json::from_str(raw.get()).map_err(|e| format!("event_data: not a JSON object: {e}"))
    }
}

impl EventData for RawJson {
    fn from_raw(raw: Box<RawValue>) -> Result<Self, String> {
        if raw.get().trim_start().starts_with('{') {
            Ok(raw)
        } else {
            Err("event_data: not a JSON object".to_owned())
        }
    }
}

/// The rows of one chain, in sequence order, and its head.
#[derive(Debug, Clone)]
pub struct ChainRows {
    /// Rows ordered by `chain_sequence`.
    pub rows: Vec<Result<AuditEvent, String>>,
    /// `(last_sequence, last_hash)` of the head, if the chain exists.
    pub head: Option<(i64, String)>,
}

/// The storage backend in use.
#[derive(Debug, Clone)]
pub enum Store {
    /// PostgreSQL.
    Postgres(postgres::PgStore),
    /// SQLite.
    Sqlite(sqlite::SqliteStore),
}

macro_rules! dispatch {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            Store::Postgres($s) => $e,
            Store::Sqlite($s) => $e,
        }
    };
}

impl Store {
    /// Applies pending migrations on a dedicated connection.
    pub async fn migrate(db: &DatabaseSettings) -> anyhow::Result<usize> {
        match db.effective_driver() {
            Driver::Postgres => postgres::migrate(db).await,
            Driver::Sqlite => sqlite::migrate(db).await,
        }
    }

    /// Fails unless every embedded migration is applied (for `migrateOnStart: false`).
    pub async fn check_migrations(db: &DatabaseSettings) -> anyhow::Result<()> {
        match db.effective_driver() {
            Driver::Postgres => postgres::check_migrations(db).await,
            Driver::Sqlite => sqlite::check_migrations(db).await,
        }
    }

    /// Builds the pool. Connections open lazily.
    pub fn open(
        db: &DatabaseSettings,
        counters: PoolCounters,
        hasher: chain::Hasher,
    ) -> anyhow::Result<Self> {
        let hasher = std::sync::Arc::new(hasher);
        Ok(match db.effective_driver() {
            Driver::Postgres => Store::Postgres(postgres::PgStore::open(db, counters, hasher)?),
            Driver::Sqlite => Store::Sqlite(sqlite::SqliteStore::open(db, counters, hasher)?),
        })
    }

    /// Walks one chain and reports every broken link.
    pub async fn verify_chain(
        &self,
        correlation_id: &str,
    ) -> Result<datastorage_api::VerifyChainResponse, DbError> {
        let rows = self.chain_rows(correlation_id).await?;
        let hasher = match self {
            Store::Postgres(s) => &s.hasher,
            Store::Sqlite(s) => &s.hasher,
        };
        Ok(chain::verify(hasher, correlation_id, rows))
    }

    /// Writes events atomically, in order. Every event gets an outcome in input order.
    pub async fn insert_events(
        &self,
        events: &[ValidatedEvent],
    ) -> Result<Vec<WriteOutcome>, DbError> {
        self.insert_events_unless(events, &|| false).await
    }

    /// Like [`Store::insert_events`], but rolls back with [`DbError::Cancelled`] when
    /// `cancelled` says so just before the commit.
    pub async fn insert_events_unless(
        &self,
        events: &[ValidatedEvent],
        cancelled: &(dyn Fn() -> bool + Send + Sync),
    ) -> Result<Vec<WriteOutcome>, DbError> {
        dispatch!(self, s => s.insert_events(events, cancelled).await)
    }

    /// One event by id.
    pub async fn get_event(&self, id: Uuid) -> Result<Option<AuditEvent<RawJson>>, DbError> {
        dispatch!(self, s => s.get_event(id).await)
    }

    /// One page of events matching `filter`, and the total count of matches.
    pub async fn query_events(
        &self,
        filter: &EventFilter,
    ) -> Result<(Vec<AuditEvent<RawJson>>, u64), DbError> {
        dispatch!(self, s => s.query_events(filter).await)
    }

    /// Every row of one chain, for verification.
    pub async fn chain_rows(&self, correlation_id: &str) -> Result<ChainRows, DbError> {
        dispatch!(self, s => s.chain_rows(correlation_id).await)
    }

    /// Whether the database answers. A saturated pool counts as answering.
    pub async fn ping(&self) -> Result<(), DbError> {
        dispatch!(self, s => s.ping().await)
    }

    /// Pool counts of the moment.
    pub fn snapshot(&self) -> PoolSnapshot {
        dispatch!(self, s => s.pool.snapshot())
    }

    /// Closes the pool.
    pub async fn close(&self) {
        dispatch!(self, s => s.pool.close().await)
    }

    /// `postgres` or `sqlite`.
    pub fn driver_name(&self) -> &'static str {
        match self {
            Store::Postgres(_) => "postgres",
            Store::Sqlite(_) => "sqlite",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_are_classified() {
        assert!(matches!(classify_code("57014"), Class::Contention));
        assert!(matches!(classify_code("08006"), Class::Unavailable));
        assert!(matches!(classify_code("53300"), Class::Unavailable));
        assert!(matches!(classify_code("55P03"), Class::Contention));
        assert!(matches!(classify_code("22P02"), Class::Data));
        assert!(matches!(classify_code("23514"), Class::Data));
        assert!(matches!(classify_code("5"), Class::Contention));
        assert!(matches!(classify_code("517"), Class::Contention));
        assert!(matches!(classify_code("13"), Class::Unavailable));
        assert!(matches!(classify_code("275"), Class::Data));
        assert!(matches!(classify_code("42P01"), Class::Internal));
    }
}
