//! [`DbError`]: every database failure, classified once.
//!
//! Lost connections, timeouts and resource limits are [`DbError::Unavailable`] (503 with a long
//! `Retry-After`), lock and statement timeouts and serialization failures [`DbError::Contention`]
//! (503, short wait), data and constraint errors [`DbError::Data`] (400), the rest
//! [`DbError::Internal`] (500).

use std::time::Duration;

use uuid::Uuid;

use super::pool::AcquireError;

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
