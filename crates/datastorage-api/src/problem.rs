//! RFC 7807 problem documents: the one error shape of every route.
//!
//! Every problem `type` is one of [`ProblemType`], so a slug never differs between handlers.
//! The URI base is the upstream contract's, so clients written against upstream keep matching.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Base of every problem `type` URI (the upstream contract's pattern).
pub const PROBLEM_BASE: &str = "https://kubernaut.ai/problems/";

/// Media type of problem documents.
pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";

/// The closed set of problem kinds the service answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemType {
    /// A field broke a rule (400); `field_errors` says which and how.
    Validation,
    /// The body is not JSON (400).
    MalformedJson,
    /// A batch holds more events than `server.maxBatchSize` (400).
    BatchSizeExceeded,
    /// The body is larger than `server.maxBodySize` (413; upstream's `request-too-large`).
    PayloadTooLarge,
    /// `POST /api/v1/audit/verify-chain` without a `correlation_id` (400; upstream's slug).
    MissingCorrelationId,
    /// A `correlation_id` to verify that is empty, too long or not a string (400; upstream's slug).
    InvalidCorrelationId,
    /// The body is not `application/json` (415).
    UnsupportedMediaType,
    /// No such resource (404).
    NotFound,
    /// No such method on this route (405).
    MethodNotAllowed,
    /// A client-supplied `event_id` is already stored with different content (409).
    EventIdConflict,
    /// The correlation id is already under an active legal hold.
    LegalHoldExists,
    /// The database cannot serve now: pool exhausted, connection lost, timeout (503).
    ServiceUnavailable,
    /// The request took longer than `server.writeTimeout` (503).
    Timeout,
    /// The request body did not arrive within `server.readTimeout` (503 with `Retry-After`, not
    /// 408: a retry can fix it, and upstream's client drops every 4xx without retrying).
    BodyTimeout,
    /// No credentials, or credentials that prove nothing (401); `WWW-Authenticate` says how.
    Unauthorized,
    /// Authenticated, but not allowed to do this (403).
    Forbidden,
    /// Too many requests from this principal (429); `Retry-After` says when to try again.
    RateLimitExceeded,
    /// A bug (500).
    Internal,
}

impl ProblemType {
    /// The slug after [`PROBLEM_BASE`].
    pub fn slug(self) -> &'static str {
        match self {
            Self::Validation => "validation-error",
            Self::MalformedJson => "malformed-json",
            Self::BatchSizeExceeded => "batch-size-exceeded",
            Self::PayloadTooLarge => "request-too-large",
            Self::MissingCorrelationId => "missing-correlation-id",
            Self::InvalidCorrelationId => "invalid-correlation-id",
            Self::UnsupportedMediaType => "unsupported-media-type",
            Self::NotFound => "not-found",
            Self::MethodNotAllowed => "method-not-allowed",
            Self::EventIdConflict => "event-id-conflict",
            Self::LegalHoldExists => "legal-hold-exists",
            Self::ServiceUnavailable => "service-unavailable",
            Self::Timeout => "timeout",
            Self::BodyTimeout => "body-timeout",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::RateLimitExceeded => "rate-limit-exceeded",
            Self::Internal => "internal-error",
        }
    }

    /// The short title, the same for every occurrence.
    pub fn title(self) -> &'static str {
        match self {
            Self::Validation => "Validation Error",
            Self::MalformedJson => "Malformed JSON",
            Self::BatchSizeExceeded => "Batch Size Exceeded",
            Self::PayloadTooLarge => "Request Entity Too Large",
            Self::MissingCorrelationId => "Missing Required Field",
            Self::InvalidCorrelationId => "Invalid Correlation ID",
            Self::UnsupportedMediaType => "Unsupported Media Type",
            Self::NotFound => "Not Found",
            Self::MethodNotAllowed => "Method Not Allowed",
            Self::EventIdConflict => "Event ID Conflict",
            Self::LegalHoldExists => "Legal Hold Exists",
            Self::ServiceUnavailable => "Service Unavailable",
            Self::Timeout => "Request Timed Out",
            Self::BodyTimeout => "Request Body Timeout",
            Self::Unauthorized => "Unauthorized",
            Self::Forbidden => "Forbidden",
            Self::RateLimitExceeded => "Rate Limit Exceeded",
            Self::Internal => "Internal Server Error",
        }
    }

    /// The HTTP status.
    pub fn status(self) -> u16 {
        match self {
            Self::Validation
            | Self::MalformedJson
            | Self::BatchSizeExceeded
            | Self::MissingCorrelationId
            | Self::InvalidCorrelationId => 400,
            Self::NotFound => 404,
            Self::MethodNotAllowed => 405,
            Self::EventIdConflict | Self::LegalHoldExists => 409,
            Self::PayloadTooLarge => 413,
            Self::UnsupportedMediaType => 415,
            Self::Unauthorized => 401,
            Self::Forbidden => 403,
            Self::RateLimitExceeded => 429,
            Self::Internal => 500,
            Self::ServiceUnavailable | Self::Timeout | Self::BodyTimeout => 503,
        }
    }

    /// The full `type` URI.
    pub fn uri(self) -> String {
        format!("{PROBLEM_BASE}{}", self.slug())
    }
}

/// An RFC 7807 problem document (`RFC7807Problem` in the contract).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Problem {
    /// Problem type URI.
    #[serde(rename = "type")]
    pub type_uri: String,
    /// Short summary of the type.
    pub title: String,
    /// HTTP status.
    pub status: u16,
    /// What went wrong in this occurrence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The request path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// Field name → what rule it broke (validation problems only).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub field_errors: BTreeMap<String, String>,
}

impl Problem {
    /// A problem of `kind` with a detail message.
    pub fn new(kind: ProblemType, detail: impl Into<String>) -> Self {
        Self {
            type_uri: kind.uri(),
            title: kind.title().to_owned(),
            status: kind.status(),
            detail: Some(detail.into()),
            instance: None,
            field_errors: BTreeMap::new(),
        }
    }

    /// The slug of `type`, if it has the service's base.
    pub fn slug(&self) -> Option<&str> {
        self.type_uri.strip_prefix(PROBLEM_BASE)
    }
}
