//! The one error type of the HTTP layer and its mapping to RFC 7807 problem documents.
//!
//! Every handler returns [`ApiError`]; [`IntoResponse`] is the single place that picks the
//! status, the problem `type` and the `Retry-After` header. Internals never leak into bodies:
//! a 5xx body says what class of trouble happened, and the cause chain goes to the log, once,
//! inside the request span.

use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use datastorage_api::problem::PROBLEM_CONTENT_TYPE;
use datastorage_api::{FieldErrors, Problem, ProblemType};
use uuid::Uuid;

use crate::db::{DbError, RETRY_AFTER_BUSY};

/// The result of a handler.
pub type Result<T, E = ApiError> = std::result::Result<T, E>;

/// Everything a request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Fields broke rules.
    #[error("validation failed: {}", .0.summary())]
    Validation(FieldErrors),
    /// The `correlation_id` of a verification is missing (`missing`) or breaks a rule.
    #[error("{rule}")]
    CorrelationId {
        /// Absent or null, rather than invalid.
        missing: bool,
        /// What is wrong.
        rule: &'static str,
    },
    /// A batch larger than `server.maxBatchSize`.
    #[error("batch of {got} events exceeds server.maxBatchSize ({max})")]
    BatchTooLarge {
        /// The limit.
        max: usize,
        /// Events sent.
        got: usize,
    },
    /// The body is not acceptable JSON: where and why.
    #[error("request body is not valid JSON: {path}: {rule}")]
    MalformedJson {
        /// The offending value's path, or `(body)`.
        path: String,
        /// What is wrong.
        rule: String,
    },
    /// The body is larger than `server.maxBodySize`.
    #[error("request body exceeds server.maxBodySize ({0} bytes)")]
    PayloadTooLarge(u64),
    /// The body's content type is missing or not JSON.
    #[error("Content-Type must be application/json")]
    UnsupportedMediaType,
    /// The body did not arrive in time.
    #[error("request body did not arrive within server.readTimeout ({0:?})")]
    BodyTimeout(Duration),
    /// Nothing here.
    #[error("{0}")]
    NotFound(String),
    /// The method is not allowed on this route.
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    /// A client-supplied id is stored with other content.
    #[error(
        "event_id {0} is already stored with different content; a replay must carry the same event"
    )]
    Conflict(Uuid),
    /// An active legal hold covers the correlation id already.
    #[error("{0}")]
    HoldExists(String),
    /// The database (or a bounded resource) cannot serve now.
    #[error("{message}")]
    Unavailable {
        /// Safe description, for the body.
        message: String,
        /// The cause, for the log only.
        cause: String,
        /// Suggested wait.
        retry_after: Duration,
    },
    /// The request took longer than `server.writeTimeout`.
    #[error("request did not finish within server.writeTimeout ({0:?})")]
    Timeout(Duration),
    /// No credentials, or credentials that prove nothing.
    #[error("{detail}")]
    Unauthenticated {
        /// What the client is told (names no secret).
        detail: String,
        /// The `WWW-Authenticate` challenge.
        challenge: &'static str,
    },
    /// The principal may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// The principal's rate limit is spent.
    #[error("rate limit exceeded; retry after the Retry-After header's seconds")]
    RateLimited(Duration),
    /// A bug.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::Unavailable {
                message,
                cause,
                retry_after,
                ..
            }
            | DbError::Contention {
                message,
                cause,
                retry_after,
            } => ApiError::Unavailable {
                message,
                cause,
                retry_after,
            },
            DbError::Cancelled => ApiError::Internal(anyhow::anyhow!(
                "a write was cancelled while its request was still waiting"
            )),
            DbError::Conflict(id) => ApiError::Conflict(id),
            DbError::Data(message) => {
                let mut errors = FieldErrors::default();
                errors.add("(body)", message);
                ApiError::Validation(errors)
            }
            DbError::Forbidden(message) => ApiError::Forbidden(message),
            DbError::Internal(e) => ApiError::Internal(e),
        }
    }
}

impl From<QueryRejection> for ApiError {
    /// A query string that does not parse: a `400` naming the unknown parameter when that is
    /// what is wrong, else `(query)`.
    fn from(rejection: QueryRejection) -> Self {
        ApiError::bad_query(&rejection.body_text())
    }
}

impl ApiError {
    /// A `400` for a query string that did not deserialize (`text`, serde's message): naming
    /// the unknown parameter when that is what is wrong, else `(query)`.
    pub fn bad_query(text: &str) -> Self {
        let mut errors = FieldErrors::default();
        let field = text
            .split('`')
            .nth(1)
            .filter(|_| text.contains("unknown field"))
            .unwrap_or("(query)")
            .to_owned();
        errors.add(field, format!("invalid query string: {text}"));
        ApiError::Validation(errors)
    }
}

impl ApiError {
    fn kind(&self) -> ProblemType {
        match self {
            ApiError::Validation(_) => ProblemType::Validation,
            ApiError::CorrelationId { missing: true, .. } => ProblemType::MissingCorrelationId,
            ApiError::CorrelationId { missing: false, .. } => ProblemType::InvalidCorrelationId,
            ApiError::BatchTooLarge { .. } => ProblemType::BatchSizeExceeded,
            ApiError::MalformedJson { .. } => ProblemType::MalformedJson,
            ApiError::PayloadTooLarge(_) => ProblemType::PayloadTooLarge,
            ApiError::UnsupportedMediaType => ProblemType::UnsupportedMediaType,
            ApiError::BodyTimeout(_) => ProblemType::BodyTimeout,
            ApiError::NotFound(_) => ProblemType::NotFound,
            ApiError::MethodNotAllowed => ProblemType::MethodNotAllowed,
            ApiError::Conflict(_) => ProblemType::EventIdConflict,
            ApiError::HoldExists(_) => ProblemType::LegalHoldExists,
            ApiError::Unavailable { .. } => ProblemType::ServiceUnavailable,
            ApiError::Timeout(_) => ProblemType::Timeout,
            ApiError::Unauthenticated { .. } => ProblemType::Unauthorized,
            ApiError::Forbidden(_) => ProblemType::Forbidden,
            ApiError::RateLimited(_) => ProblemType::RateLimitExceeded,
            ApiError::Internal(_) => ProblemType::Internal,
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            ApiError::Unavailable { retry_after, .. } => Some(*retry_after),
            ApiError::Timeout(_) | ApiError::BodyTimeout(_) => Some(RETRY_AFTER_BUSY),
            ApiError::RateLimited(wait) => Some(*wait),
            _ => None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let kind = self.kind();
        let mut problem = Problem::new(kind, self.to_string());
        match &self {
            ApiError::Validation(errors) => problem.field_errors = errors.0.clone(),
            ApiError::CorrelationId { rule, .. } => {
                problem
                    .field_errors
                    .insert("correlation_id".into(), (*rule).to_owned());
            }
            ApiError::MalformedJson { path, rule } => {
                problem.field_errors.insert(path.clone(), rule.clone());
            }
            ApiError::BatchTooLarge { max, got } => {
                problem.field_errors.insert(
                    "(body)".into(),
                    format!("a batch must hold at most {max} events (got {got})"),
                );
            }
            ApiError::PayloadTooLarge(_) | ApiError::BodyTimeout(_) => {
                problem
                    .field_errors
                    .insert("(body)".into(), self.to_string());
            }
            ApiError::UnsupportedMediaType => {
                problem
                    .field_errors
                    .insert("Content-Type".into(), self.to_string());
            }
            ApiError::Internal(e) => {
                tracing::error!(
                    error = format!("{e:#}"),
                    "request failed with an internal error"
                )
            }
            ApiError::Unavailable { cause, .. } => {
                tracing::warn!(cause = %cause, "request answered 503")
            }
            _ => {}
        }
        let status =
            StatusCode::from_u16(kind.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&problem).expect("a problem serializes");
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(PROBLEM_CONTENT_TYPE),
        );
        if let Some(wait) = self.retry_after() {
            // Whole seconds, rounded up: a client that waits that long is let through.
            let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
        }
        if let ApiError::Unauthenticated { challenge, .. } = &self {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        response
    }
}
