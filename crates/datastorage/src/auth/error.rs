//! [`AuthError`]: why a request is not let through.

use std::time::Duration;

use super::scope::Scope;

/// Why a request was refused before its handler ran.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No credentials, or credentials that prove nothing (401). The reason is a fixed text
    /// that names no secret; `reason` is also the metric and log label.
    #[error("{detail}")]
    Unauthenticated {
        /// A bounded label: `missing`, `malformed`, `invalid`, `expired`, `audience`,
        /// `no-certificate`, `unknown-certificate`.
        reason: &'static str,
        /// What the client is told.
        detail: String,
    },
    /// Authenticated, but the scope is not granted (403).
    #[error("{principal} lacks the scope {scope}")]
    Forbidden {
        /// Who asked.
        principal: String,
        /// What the route needs.
        scope: Scope,
    },
    /// Too many requests from this principal (429).
    #[error("rate limit of {principal} exceeded")]
    RateLimited {
        /// Who asked.
        principal: String,
        /// When a request would pass again.
        retry_after: Duration,
    },
    /// The authority could not be asked (the Kubernetes API server is down or slow): 503,
    /// never a pass.
    #[error("{message}")]
    Unavailable {
        /// Safe text for the client.
        message: String,
        /// The cause, for the log only.
        cause: String,
    },
}

impl AuthError {
    /// A 401 with a bounded `reason` and the client's text.
    pub fn unauthenticated(reason: &'static str, detail: impl Into<String>) -> Self {
        AuthError::Unauthenticated {
            reason,
            detail: detail.into(),
        }
    }

    /// The metric label of the outcome.
    pub fn result_label(&self) -> &'static str {
        match self {
            AuthError::Unauthenticated { .. } => "unauthenticated",
            AuthError::Forbidden { .. } => "forbidden",
            AuthError::RateLimited { .. } => "rate_limited",
            AuthError::Unavailable { .. } => "unavailable",
        }
    }
}
