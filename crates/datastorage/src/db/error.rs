//! [`DbError`]: every database failure, classified once.
//!
//! Lost connections, timeouts and resource limits are [`DbError::Unavailable`] (503 with a long
//! `Retry-After`), lock and statement timeouts and serialization failures [`DbError::Contention`]
//! (503, short wait), data and constraint errors [`DbError::Data`] (400), the rest
//! [`DbError::Internal`] (500).
//!
//! **Outage or saturation.** An `Unavailable` error is an *outage* ([`DbError::is_outage`]) when
//! the database cannot be reached at all: a connection cannot be opened (refused, reset, TLS
//! failure, `database.connectTimeout` passed), one was lost mid-request (I/O error, protocol
//! error), or the server says it is shutting down, restarting or in recovery (SQLSTATE class
//! `08`, `57P01`, `57P02`, `57P03`). Only an outage sends a write to the outage buffer. A
//! database that answers but is *saturated* is not an outage: no pool connection freed up within
//! `database.acquireTimeout`, too many connections or out of memory or disk (class `53`), lock
//! and statement timeouts, serialization failures: those stay `503` with `Retry-After`, because
//! buffering them would hide overload and grow the backlog it causes.

use std::time::Duration;

use uuid::Uuid;

/// How long to ask clients to wait after a 503 caused by a saturated pool.
pub const RETRY_AFTER_BUSY: Duration = Duration::from_secs(1);
/// How long to ask clients to wait after a 503 caused by an unreachable database.
pub const RETRY_AFTER_DOWN: Duration = Duration::from_secs(5);

/// A failure to connect, described for people: where, why, and, when the server asked for a
/// password and none is set, that none of its three sources is.
pub fn connect_failure(target: &str, has_password: bool, e: &sqlx::Error) -> String {
    let mut message = format!("cannot connect to {target}: {e}");
    if !has_password && e.to_string().contains("password") {
        message.push_str(
            " (no password is set: none of DATASTORAGE_DATABASE__PASSWORD, database.secretsFile and database.password is)",
        );
    }
    message
}

/// Whether a failure to connect may pass by itself (the server is starting, restarting or
/// full), as opposed to a setting that is wrong (authentication, an unknown database).
pub fn is_transient_connect_error(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::Tls(_) => true,
        sqlx::Error::Database(db) => matches!(
            db.code().as_deref(),
            // cannot_connect_now (starting up, shutting down, in recovery), too many
            // connections, admin shutdown, crash shutdown, connection exceptions.
            Some("57P03" | "53300" | "57P01" | "57P02" | "08000" | "08001" | "08006")
        ),
        _ => false,
    }
}

/// A database failure, classified.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The database cannot serve now (pool exhausted, connection lost, timeout, lock wait);
    /// the client should retry after the given time.
    #[error("{message}")]
    Unavailable {
        /// What happened, in words safe to show a client (no driver text).
        message: String,
        /// The cause, with the driver's own words, for the log.
        cause: String,
        /// Suggested wait.
        retry_after: Duration,
        /// Whether the database is unreachable (an outage), not merely busy; see the module's
        /// rule.
        outage: bool,
    },
    /// Too much contention to finish now (lock or statement timeout, deadlock or serialization
    /// failure after retries, SQLite busy); the client should retry. Unlike
    /// [`DbError::Unavailable`], it may concern only some of the events of a shared write.
    #[error("{message}")]
    Contention {
        /// What happened, in words safe to show a client.
        message: String,
        /// The cause, for the log.
        cause: String,
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
    /// The principal may not write this (another principal started the chain, and
    /// `auth.chainAppend` is `starter`).
    #[error("{0}")]
    Forbidden(String),
    /// A bug or an unexpected state.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl DbError {
    /// The database answers but cannot serve now (saturation): `message` for the client,
    /// `cause` for the log.
    pub fn unavailable(
        message: impl Into<String>,
        cause: impl Into<String>,
        retry_after: Duration,
    ) -> Self {
        DbError::Unavailable {
            message: message.into(),
            cause: cause.into(),
            retry_after,
            outage: false,
        }
    }

    /// The database cannot be reached (an outage): `message` for the client, `cause` for the
    /// log.
    pub fn down(message: impl Into<String>, cause: impl Into<String>) -> Self {
        DbError::Unavailable {
            message: message.into(),
            cause: cause.into(),
            retry_after: RETRY_AFTER_DOWN,
            outage: true,
        }
    }

    /// The cause for the log (the driver's words), where the error has one.
    pub fn cause(&self) -> &str {
        match self {
            DbError::Unavailable { cause, .. } | DbError::Contention { cause, .. } => cause,
            _ => "",
        }
    }

    /// Whether the database is unreachable, as opposed to busy; see the module's rule.
    pub fn is_outage(&self) -> bool {
        matches!(self, DbError::Unavailable { outage: true, .. })
    }

    /// A copy of this error for each of several requests that share one failure.
    pub fn duplicate(&self) -> Self {
        match self {
            DbError::Unavailable {
                message,
                cause,
                retry_after,
                outage,
            } => DbError::Unavailable {
                message: message.clone(),
                cause: cause.clone(),
                retry_after: *retry_after,
                outage: *outage,
            },
            DbError::Contention {
                message,
                cause,
                retry_after,
            } => DbError::Contention {
                message: message.clone(),
                cause: cause.clone(),
                retry_after: *retry_after,
            },
            DbError::Cancelled => DbError::Cancelled,
            DbError::Conflict(id) => DbError::Conflict(*id),
            DbError::Data(m) => DbError::Data(m.clone()),
            DbError::Forbidden(m) => DbError::Forbidden(m.clone()),
            DbError::Internal(e) => DbError::Internal(anyhow::anyhow!("{e:#}")),
        }
    }

    /// Classifies a sqlx error: lost connections, timeouts and resource limits are
    /// `Unavailable` or `Contention`, data exceptions and constraint violations are `Data`,
    /// the rest `Internal`. The client-facing message names the class and the setting
    /// involved; the driver's text goes only to the cause.
    pub fn from_sqlx(e: sqlx::Error) -> Self {
        use sqlx::Error as E;
        let cause = e.to_string();
        match &e {
            E::Io(_)
            | E::Tls(_)
            | E::PoolTimedOut
            | E::PoolClosed
            | E::WorkerCrashed
            | E::Protocol(_) => DbError::down("lost the connection to the database", cause),
            E::Database(db) if is_pooler_saturation(db.as_ref()) => DbError::unavailable(
                "the connection pooler has no free server connection (its query_wait_timeout passed) or no room for another client",
                cause,
                RETRY_AFTER_BUSY,
            ),
            E::Database(db) => {
                let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
                let message = public_message(&code);
                match classify_code(&code) {
                    Class::Contention => DbError::Contention {
                        message: message.to_owned(),
                        cause,
                        retry_after: RETRY_AFTER_BUSY,
                    },
                    Class::Unavailable if is_outage_code(&code) => DbError::down(message, cause),
                    Class::Unavailable => DbError::unavailable(message, cause, RETRY_AFTER_BUSY),
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

/// What a client is told for a database error code: the class, and the setting involved.
fn public_message(code: &str) -> &'static str {
    match code {
        "57014" => "statement timeout: the database cancelled the request after database.statementTimeout",
        "55P03" => "lock timeout: a lock was not granted within database.lockTimeout",
        "40001" | "40P01" => "the database could not order this write against concurrent ones (serialization failure or deadlock)",
        c if c.starts_with("53") => "the database is out of resources (connections, memory or disk)",
        c if c.starts_with("57") => "the database is shutting down, restarting or not accepting requests",
        c if c.starts_with("08") => "lost the connection to the database",
        c if c.parse::<u32>().is_ok_and(|n| matches!(n & 0xff, 5 | 6)) => {
            "the database is busy: another writer held it beyond database.lockTimeout"
        }
        c if c.parse::<u32>().is_ok_and(|n| matches!(n & 0xff, 10 | 13)) => {
            "the database cannot write now (disk full or I/O error)"
        }
        _ => "the database could not finish the request",
    }
}

/// Whether PgBouncer refused for lack of room: no server connection freed up within its
/// `query_wait_timeout`, or `max_client_conn` reached. It sends these as SQLSTATE `08P01`,
/// which would otherwise read as a lost connection (an outage); they are saturation.
pub fn is_pooler_saturation(db: &dyn sqlx::error::DatabaseError) -> bool {
    db.code().as_deref() == Some("08P01")
        && (db.message().starts_with("query_wait_timeout")
            || db.message().starts_with("no more connections allowed"))
}

/// Whether an `Unavailable` SQLSTATE says the database cannot be reached, as opposed to busy:
/// connection exceptions, and administrator, crash and start-up shutdowns.
fn is_outage_code(code: &str) -> bool {
    code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03")
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

    #[test]
    fn an_unreachable_database_is_an_outage_and_a_busy_one_is_not() {
        for code in ["08006", "08001", "57P01", "57P02", "57P03"] {
            assert!(is_outage_code(code), "{code}");
        }
        // Too many connections, out of memory or disk, query cancelled: saturation.
        for code in [
            "53300", "53200", "53100", "57014", "55P03", "40001", "5", "13",
        ] {
            assert!(!is_outage_code(code), "{code}");
        }
        assert!(DbError::down("x", "y").is_outage());
        assert!(!DbError::unavailable("x", "y", RETRY_AFTER_BUSY).is_outage());
        assert!(DbError::from_sqlx(sqlx::Error::Io(std::io::Error::other("reset"))).is_outage());
    }
}
