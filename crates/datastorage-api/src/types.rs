//! JSON shapes of the audit API, named as in the upstream contract.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Value stored for `retention_days` when a client omits it (seven years, as upstream).
pub const DEFAULT_RETENTION_DAYS: i32 = 2555;

/// Default page size of `GET /api/v1/audit/events`.
pub const DEFAULT_PAGE_LIMIT: u32 = 50;

/// Largest page size of `GET /api/v1/audit/events`.
pub const MAX_PAGE_LIMIT: u32 = 1000;

/// Default of `server.maxBatchSize`: the most events one batch request may carry.
pub const DEFAULT_MAX_BATCH_SIZE: usize = 1000;

macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $text)] $variant),+
        }

        impl $name {
            /// Every value, in contract order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The wire form of this value.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = String;

            /// Parses the wire form, ignoring ASCII case (filters are case-insensitive).
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $(if s.eq_ignore_ascii_case($text) { return Ok($name::$variant); })+
                Err(format!(
                    "must be one of: {}",
                    [$($text),+].join(", ")
                ))
            }
        }
    };
}

string_enum! {
    /// Domain of an event (`event_category`), the contract's closed set. Metrics label events
    /// by it, so the label set stays bounded.
    EventCategory {
        /// Gateway signal and CRD lifecycle events.
        Gateway => "gateway",
        /// Notification delivery and escalation events.
        Notification => "notification",
        /// AI analysis, agent calls and rego evaluation events.
        Analysis => "analysis",
        /// AI agent provider events.
        AiAgent => "aiagent",
        /// Signal processing service events.
        SignalProcessing => "signalprocessing",
        /// Workflow catalog and discovery events.
        Workflow => "workflow",
        /// Workflow execution lifecycle events.
        WorkflowExecution => "workflowexecution",
        /// Remediation orchestration lifecycle events.
        Orchestration => "orchestration",
        /// Remediation approval decisions.
        Approval => "approval",
        /// Effectiveness assessment events.
        Effectiveness => "effectiveness",
        /// ActionType taxonomy lifecycle events.
        ActionType => "actiontype",
        /// API frontend events.
        ApiFrontend => "apifrontend",
        /// Cross-cutting security control events.
        Security => "security",
        /// AgentSession admission events.
        AgentSession => "agentsession",
    }
}

string_enum! {
    /// Result of the audited action (`event_outcome`).
    EventOutcome {
        /// The action succeeded.
        Success => "success",
        /// The action failed.
        Failure => "failure",
        /// The action has not finished.
        Pending => "pending",
    }
}

/// One audit event as a client sends it (`AuditEventRequest` in the contract).
///
/// `event_id` is an extension: a client that supplies it makes the write idempotent. The server
/// validates the JSON it receives field by field (see [`crate::validate_event`]), so this typed
/// form is for clients that build events; it serializes to exactly the contract's shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditEventRequest {
    /// Client-chosen id (UUID, ideally v7). Absent: the server assigns a UUIDv7.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<Uuid>,
    /// Schema version, e.g. `"1.0"`.
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 1, max_length = 20, pattern = "^[^\\u0000]*$")
    )]
    pub version: String,
    /// Event type, e.g. `gateway.signal.received`.
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 1, max_length = 100, pattern = "^[^\\u0000]*$")
    )]
    pub event_type: String,
    /// When the event happened.
    pub event_timestamp: DateTime<Utc>,
    /// Business domain of the event.
    pub event_category: EventCategory,
    /// Action performed.
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 1, max_length = 50, pattern = "^[^\\u0000]*$")
    )]
    pub event_action: String,
    /// Outcome of the action.
    pub event_outcome: EventOutcome,
    /// Kind of actor (`service`, `user`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(max_length = 64, pattern = "^[^\\u0000]*$")
    )]
    pub actor_type: Option<String>,
    /// Who acted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(max_length = 255, pattern = "^[^\\u0000]*$")
    )]
    pub actor_id: Option<String>,
    /// Client source IP address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(max_length = 45, pattern = "^[^\\u0000]*$")
    )]
    pub actor_ip: Option<String>,
    /// Kind of the resource acted upon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(max_length = 100, pattern = "^[^\\u0000]*$")
    )]
    pub resource_type: Option<String>,
    /// Id of the resource acted upon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(max_length = 255, pattern = "^[^\\u0000]*$")
    )]
    pub resource_id: Option<String>,
    /// Correlation id; one hash chain per value.
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 1, max_length = 255, pattern = "^[^\\u0000]*$")
    )]
    pub correlation_id: String,
    /// Parent event, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_event_id: Option<Uuid>,
    /// The parent event's timestamp, as upstream clients send it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_event_date: Option<DateTime<Utc>>,
    /// Kubernetes namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(max_length = 253, pattern = "^[^\\u0000]*$")
    )]
    pub namespace: Option<String>,
    /// Cluster identifier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(max_length = 255, pattern = "^[^\\u0000]*$")
    )]
    pub cluster_id: Option<String>,
    /// Severity, free text such as `critical`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(max_length = 20, pattern = "^[^\\u0000]*$")
    )]
    pub severity: Option<String>,
    /// Duration of the action in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 0))]
    pub duration_ms: Option<i64>,
    /// Error code, for failures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(max_length = 100, pattern = "^[^\\u0000]*$")
    )]
    pub error_code: Option<String>,
    /// Error message, for failures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(max_length = 4096, pattern = "^[^\\u0000]*$")
    )]
    pub error_message: Option<String>,
    /// Retention override in days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 36500))]
    pub retention_days: Option<i32>,
    /// Whether the event holds sensitive data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_sensitive: Option<bool>,
    /// Service-specific payload: a JSON object.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub event_data: serde_json::Map<String, serde_json::Value>,
}

impl AuditEventRequest {
    /// A minimal event with the required fields; set the optional ones on the result.
    pub fn new(
        event_type: impl Into<String>,
        category: EventCategory,
        action: impl Into<String>,
        outcome: EventOutcome,
        correlation_id: impl Into<String>,
    ) -> Self {
        Self {
            event_id: None,
            version: "1.0".to_owned(),
            event_type: event_type.into(),
            event_timestamp: Utc::now(),
            event_category: category,
            event_action: action.into(),
            event_outcome: outcome,
            actor_type: None,
            actor_id: None,
            actor_ip: None,
            resource_type: None,
            resource_id: None,
            correlation_id: correlation_id.into(),
            parent_event_id: None,
            parent_event_date: None,
            namespace: None,
            cluster_id: None,
            severity: None,
            duration_ms: None,
            error_code: None,
            error_message: None,
            retention_days: None,
            is_sensitive: None,
            event_data: serde_json::Map::new(),
        }
    }
}

/// A JSON object, the type of `event_data`.
pub type JsonObject = serde_json::Map<String, serde_json::Value>;

/// One stored audit event (`AuditEvent` in the contract): the request's fields with the values
/// actually stored, plus the id, the date and the hash-chain fields.
///
/// `D` is how `event_data` is held: a [`JsonObject`] by default; the server answers queries
/// with `Box<serde_json::value::RawValue>`, the stored JSON text passed through unparsed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(bound = ""))]
pub struct AuditEvent<D = JsonObject> {
    /// The event's id.
    pub event_id: Uuid,
    /// Schema version.
    pub version: String,
    /// Event type.
    pub event_type: String,
    /// When the event happened (microsecond precision, UTC).
    pub event_timestamp: DateTime<Utc>,
    /// UTC date of `event_timestamp`, `YYYY-MM-DD`.
    pub event_date: String,
    /// Business domain.
    pub event_category: EventCategory,
    /// Action performed.
    pub event_action: String,
    /// Outcome.
    pub event_outcome: EventOutcome,
    /// Kind of actor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor_type: Option<String>,
    /// Who acted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor_id: Option<String>,
    /// Client source IP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor_ip: Option<String>,
    /// Kind of resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_type: Option<String>,
    /// Resource id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_id: Option<String>,
    /// Correlation id.
    pub correlation_id: String,
    /// Parent event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_event_id: Option<Uuid>,
    /// Parent event timestamp.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_event_date: Option<DateTime<Utc>>,
    /// Kubernetes namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Cluster identifier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_id: Option<String>,
    /// Severity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<String>,
    /// Duration in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<i64>,
    /// Error code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    /// Error message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    /// Retention in days (the default when the client sent none).
    pub retention_days: i32,
    /// Whether the event holds sensitive data.
    pub is_sensitive: bool,
    /// The payload.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub event_data: D,
    /// Position in the correlation id's hash chain, from 1 (extension).
    pub chain_sequence: i64,
    /// This event's chain hash (hex).
    pub event_hash: String,
    /// The previous event's chain hash (hex), empty for the first event of a chain.
    pub previous_event_hash: String,
    /// Hash algorithm of this row (extension): `sha256-v2` or `hmac-sha256-v2` (the hash covers
    /// `ingested_by`), or, for rows written before principals existed, `sha256` or
    /// `hmac-sha256`.
    pub hash_algorithm: String,
    /// Id of the key of a keyed (`hmac-…`) row (extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_key_id: Option<String>,
    /// The authenticated principal that wrote the event (extension): a token's name, a
    /// Kubernetes user, a certificate identity, or `anonymous` when the server authenticates
    /// nobody. Absent on rows written before principals existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingested_by: Option<String>,
    /// Whether an active legal hold covers the event's correlation id, computed from the holds
    /// when the event is read (a hold covers events written after it too).
    pub legal_hold: bool,
}

/// Answer to `POST /api/v1/audit/events`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditEventResponse {
    /// The event's id (the client's, on a replay).
    pub event_id: Uuid,
    /// The stored timestamp.
    pub event_timestamp: DateTime<Utc>,
    /// Human-readable result.
    pub message: String,
}

/// Answer to `POST /api/v1/audit/events/batch`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BatchAuditEventResponse {
    /// Ids in request order.
    pub event_ids: Vec<Uuid>,
    /// Human-readable result.
    pub message: String,
}

/// The `202` of a write the server accepted while its database was unreachable: kept in its
/// outage buffer and stored when the database is back (upstream's `AsyncAcceptanceResponse`,
/// plus the ids).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AsyncAcceptanceResponse {
    /// Always `accepted`.
    pub status: String,
    /// Human-readable result.
    pub message: String,
    /// Events accepted (batches only, as upstream).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<usize>,
    /// The id of the event (single writes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<Uuid>,
    /// Its timestamp, as it will be stored (single writes), so the answer reads as an
    /// `AuditEventResponse` too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_timestamp: Option<DateTime<Utc>>,
    /// Ids in request order (batches).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_ids: Option<Vec<Uuid>>,
}

/// Pagination block of a query answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Pagination {
    /// Page size used.
    pub limit: u32,
    /// Offset used (0 when a cursor was given).
    pub offset: u64,
    /// Number of events matching the filters, all pages together.
    pub total: u64,
    /// Whether more events follow this page.
    pub has_more: bool,
    /// Opaque cursor for the next page (extension); absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// Answer to `GET /api/v1/audit/events` (`D` as in [`AuditEvent`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(bound = ""))]
pub struct AuditEventsQueryResponse<D = JsonObject> {
    /// The page, newest first.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<AuditEvent>))]
    pub data: Vec<AuditEvent<D>>,
    /// Where the page sits.
    pub pagination: Pagination,
}

/// Body of `POST /api/v1/audit/legal-hold`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PlaceLegalHoldRequest {
    /// The correlation id to hold: its events, present and future, are kept past their
    /// retention until the hold is released. It need not have events yet.
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 255))]
    pub correlation_id: String,
    /// Why (a case number, "litigation").
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 1000))]
    pub reason: String,
}

/// Body of `DELETE /api/v1/audit/legal-hold/{correlation_id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReleaseLegalHoldRequest {
    /// Why the hold ends.
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 1000))]
    pub release_reason: String,
}

/// One legal hold: upstream's fields, plus its id and, once released, who released it, when
/// and why (extensions).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LegalHold {
    /// The held correlation id.
    pub correlation_id: String,
    /// Events of the correlation id stored now (the hold also covers later ones).
    pub events_affected: u64,
    /// The principal that placed the hold.
    pub placed_by: String,
    /// When.
    pub placed_at: DateTime<Utc>,
    /// Why.
    pub reason: String,
    /// The hold's id (extension).
    pub hold_id: Uuid,
    /// The principal that released it (extension; absent while active).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub released_by: Option<String>,
    /// When it was released (extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub released_at: Option<DateTime<Utc>>,
    /// Why it was released (extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release_reason: Option<String>,
}

/// Answer to `GET /api/v1/audit/legal-hold`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LegalHoldList {
    /// The holds: active ones, or with `include_released=true` every hold ever placed, newest
    /// first.
    pub holds: Vec<LegalHold>,
    /// How many.
    pub total: u64,
}

/// Answer to `DELETE /api/v1/audit/legal-hold/{correlation_id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LegalHoldReleased {
    /// The correlation id no longer held.
    pub correlation_id: String,
    /// Events of the correlation id stored now.
    pub events_released: u64,
    /// The principal that released the hold.
    pub released_by: String,
    /// When.
    pub released_at: DateTime<Utc>,
    /// Why (extension).
    pub release_reason: String,
    /// The hold's id (extension).
    pub hold_id: Uuid,
}

/// Body of `POST /api/v1/audit/verify-chain`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VerifyChainRequest {
    /// The chain to verify.
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 1, max_length = 255, pattern = "^[^\\u0000]*$")
    )]
    pub correlation_id: String,
}

/// One broken link found by verification.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TamperedEvent {
    /// The event whose link is broken (empty when a whole row is missing).
    pub event_id: String,
    /// Its timestamp, when the row exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_timestamp: Option<DateTime<Utc>>,
    /// The hash recomputed from the row's content.
    pub expected_hash: String,
    /// The hash stored in the row.
    pub actual_hash: String,
    /// The previous hash the row links to.
    pub previous_hash: String,
    /// What is wrong.
    pub message: String,
}

/// Answer to `POST /api/v1/audit/verify-chain`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VerifyChainResponse {
    /// The chain verified.
    pub correlation_id: String,
    /// True when every link holds.
    pub is_valid: bool,
    /// Rows in the chain.
    pub total_events: u64,
    /// Rows whose link holds.
    pub verified_events: u64,
    /// Broken links.
    #[serde(default)]
    pub tampered_events: Vec<TamperedEvent>,
    /// When the verification ran.
    pub verification_time: DateTime<Utc>,
    /// Human-readable result.
    pub message: String,
    /// The verdict in one word (extension): `intact`, `tampered`, `unverifiable` (some rows are
    /// signed with keys that are not configured, and nothing else is wrong) or `empty` (no
    /// events). Older servers do not send it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<ChainVerdict>,
    /// Rows whose hash could not be checked because their key is not configured (extension).
    #[serde(default)]
    pub unverifiable_events: u64,
    /// Events retention removed from the chain, as recorded when they were purged (extension):
    /// the chain verifies from the recorded hash of the last one.
    #[serde(default)]
    pub purged_events: u64,
    /// The chain checked against the latest signed checkpoint that covers it (extension;
    /// absent when no checkpoint covers the chain).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<CheckpointCheck>,
}

/// A chain checked against a signed checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CheckpointCheck {
    /// The checkpoint's id.
    pub checkpoint_id: i64,
    /// When it was written.
    pub created_at: DateTime<Utc>,
    /// The chain's head it records: sequence.
    pub sequence: i64,
    /// And hash.
    pub hash: String,
    /// Whether the chain still holds that event with that hash, and the checkpoint's signature
    /// and links verify.
    pub consistent: bool,
    /// What was found.
    pub message: String,
}

/// The verdict of a chain verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ChainVerdict {
    /// Every link holds.
    Intact,
    /// At least one link is broken, or rows are missing.
    Tampered,
    /// Nothing is broken, but some rows are signed with keys that are not configured.
    Unverifiable,
    /// No events with this correlation id.
    Empty,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories_parse_case_insensitively_and_reject_unknown_values() {
        assert_eq!(
            "GateWay".parse::<EventCategory>(),
            Ok(EventCategory::Gateway)
        );
        let err = "nope".parse::<EventCategory>().unwrap_err();
        assert!(err.contains("gateway"), "{err}");
        assert_eq!(EventCategory::ALL.len(), 14);
    }

    #[test]
    fn request_serializes_without_absent_optional_fields() {
        let e = AuditEventRequest::new(
            "a.b",
            EventCategory::Workflow,
            "run",
            EventOutcome::Success,
            "c",
        );
        let v = serde_json::to_value(&e).unwrap();
        assert!(v.get("actor_id").is_none());
        assert_eq!(v["event_category"], "workflow");
    }
}
