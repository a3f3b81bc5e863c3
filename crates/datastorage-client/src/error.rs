//! The one error type of every [`Client`](crate::Client) call, and how to read `Retry-After`.
//!
//! Rules: a non-2xx answer carrying an RFC 7807 body becomes [`Error::Problem`]; any other
//! non-2xx answer (a proxy's 502 page, `/readyz`'s 503) becomes [`Error::Status`]; both keep the
//! `Retry-After` the peer sent. [`Error::is_retryable`] is the single place that decides what a
//! caller (and the buffered store) may retry: 429, 502, 503, 504, connection failures and
//! timeouts. Writes are safe to retry because the store gives every event its own id. 401 and
//! 403 ([`Error::is_auth_failure`]) are not retryable: the same credentials get the same answer.
//! No error message carries a credential: file errors name the path, never the content.

use std::time::Duration;

use chrono::{DateTime, Utc};
use datastorage_api::{Problem, ProblemType};

/// Statuses that mean "try again later": rate limited, bad gateway, unavailable, gateway timeout.
pub const RETRYABLE_STATUSES: [u16; 4] = [429, 502, 503, 504];

/// Everything a client call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server answered with a problem document.
    #[error("server answered {status}: {}", problem.detail.as_deref().unwrap_or(&problem.title))]
    Problem {
        /// HTTP status of the answer.
        status: u16,
        /// The problem document.
        problem: Box<Problem>,
        /// The `Retry-After` the server asked for, if any.
        retry_after: Option<Duration>,
    },
    /// A non-2xx answer without a problem document (typically from a proxy or a probe).
    #[error("server answered {status}: {body}")]
    Status {
        /// HTTP status of the answer.
        status: u16,
        /// The start of the body, for the log.
        body: String,
        /// The `Retry-After` the peer asked for, if any.
        retry_after: Option<Duration>,
    },
    /// The request did not complete within the client's timeout.
    #[error("request timed out")]
    Timeout(#[source] reqwest::Error),
    /// Connection refused or reset, DNS failure, TLS failure, body cut short.
    #[error("transport error")]
    Transport(#[source] reqwest::Error),
    /// A 2xx answer whose body is not the expected JSON.
    #[error("unexpected response body")]
    Decode(#[source] reqwest::Error),
    /// An event stream sent a message that is not what the route sends.
    #[error("unexpected stream message: {0}")]
    Stream(String),
    /// The base URL given to the client cannot be used.
    #[error("invalid base URL {0:?}: it must start with http:// or https://")]
    InvalidBaseUrl(String),
    /// A file the client was given (bearer token, CA bundle, client certificate or key) cannot
    /// be read.
    #[error("cannot read the {what} file {}", path.display())]
    ReadFile {
        /// What the file holds.
        what: &'static str,
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A credential or TLS setting cannot be used: an empty token, a CA bundle without a
    /// certificate, a malformed certificate or key, TLS settings with a caller-made client.
    #[error("invalid {what}: {reason}")]
    InvalidSetting {
        /// Which setting.
        what: &'static str,
        /// Why (never the secret itself).
        reason: String,
    },
}

impl Error {
    /// The HTTP status, when the server answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Problem { status, .. } | Error::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The wait the server asked for with `Retry-After`.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Problem { retry_after, .. } | Error::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Whether the same request may succeed later: 429, 502, 503, 504, timeouts and transport
    /// failures. Everything else (400, 404, 409, 413, 415, 500) is the request's fault or a bug
    /// and will fail again as sent.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Problem { status, .. } | Error::Status { status, .. } => {
                RETRYABLE_STATUSES.contains(status)
            }
            Error::Timeout(_) | Error::Transport(_) => true,
            Error::Decode(_)
            | Error::Stream(_)
            | Error::InvalidBaseUrl(_)
            | Error::ReadFile { .. }
            | Error::InvalidSetting { .. } => false,
        }
    }

    /// Whether the server refused the request's credentials: 401 (missing, invalid or expired
    /// token) or 403 (not allowed). Not retryable as sent; see the store's rule in the README.
    pub fn is_auth_failure(&self) -> bool {
        matches!(self.status(), Some(401 | 403))
    }

    /// The problem document, when the server sent one.
    pub fn problem(&self) -> Option<&Problem> {
        match self {
            Error::Problem { problem, .. } => Some(problem),
            _ => None,
        }
    }

    /// Whether the server answered with a problem of this kind.
    pub fn is_problem(&self, kind: ProblemType) -> bool {
        self.problem().and_then(Problem::slug) == Some(kind.slug())
    }

    pub(crate) fn from_reqwest(e: reqwest::Error) -> Self {
        if e.is_timeout() {
            Error::Timeout(e)
        } else if e.is_decode() {
            Error::Decode(e)
        } else {
            Error::Transport(e)
        }
    }
}

/// Parses a `Retry-After` value: delay seconds, or an HTTP date (RFC 7231 IMF-fixdate, which
/// RFC 2822 parsing accepts). A date in the past means "now".
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = DateTime::parse_from_rfc2822(value).ok()?;
    Some(
        (at.with_timezone(&Utc) - now)
            .to_std()
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_accepts_seconds_and_http_dates() {
        let now = DateTime::parse_from_rfc3339("2015-10-21T07:28:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(parse_retry_after("2", now), Some(Duration::from_secs(2)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn only_transient_statuses_are_retryable() {
        let status = |s: u16| Error::Status {
            status: s,
            body: String::new(),
            retry_after: None,
        };
        for s in [429, 502, 503, 504] {
            assert!(status(s).is_retryable(), "{s} must be retryable");
        }
        for s in [400, 401, 403, 404, 409, 413, 415, 500] {
            assert!(!status(s).is_retryable(), "{s} must not be retryable");
        }
        for s in [401, 403] {
            assert!(status(s).is_auth_failure(), "{s} is an auth failure");
        }
        for s in [400, 404, 429, 503] {
            assert!(!status(s).is_auth_failure(), "{s} is not an auth failure");
        }
    }
}
