//! `GET /api/v1/audit/events/stream`: [`StreamedEvent`], the JSON of one event as the stream
//! sends it (the `data` of an `audit_event` message).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::types::{EventCategory, EventOutcome, JsonObject};
use crate::validate::ValidatedEvent;

/// One committed event as streamed: the fields of [`crate::AuditEvent`] the write knows, in the
/// same form, less those only the database gives (`chain_sequence`, `event_hash`,
/// `previous_event_hash`, `hash_algorithm`, `hash_key_id`, `legal_hold`): read the event by id
/// for them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StreamedEvent {
    /// The event's id.
    pub event_id: Uuid,
    /// Schema version.
    pub version: String,
    /// Event type.
    pub event_type: String,
    /// When the event happened.
    pub event_timestamp: DateTime<Utc>,
    /// UTC date of `event_timestamp`, `YYYY-MM-DD`.
    pub event_date: String,
    /// Category.
    pub event_category: EventCategory,
    /// Action.
    pub event_action: String,
    /// Outcome.
    pub event_outcome: EventOutcome,
    /// Kind of actor.
    pub actor_type: Option<String>,
    /// Who acted.
    pub actor_id: Option<String>,
    /// Client source IP.
    pub actor_ip: Option<String>,
    /// Kind of resource.
    pub resource_type: Option<String>,
    /// Resource id.
    pub resource_id: Option<String>,
    /// Correlation id.
    pub correlation_id: String,
    /// Parent event.
    pub parent_event_id: Option<Uuid>,
    /// Kubernetes namespace.
    pub namespace: Option<String>,
    /// Cluster identifier.
    pub cluster_id: Option<String>,
    /// Severity.
    pub severity: Option<String>,
    /// Duration in milliseconds.
    pub duration_ms: Option<i64>,
    /// Error code.
    pub error_code: Option<String>,
    /// Error message.
    pub error_message: Option<String>,
    /// Retention in days.
    pub retention_days: i32,
    /// Whether the event holds sensitive data.
    pub is_sensitive: bool,
    /// The payload.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub event_data: JsonObject,
    /// The principal that wrote the event.
    pub ingested_by: Option<String>,
}

impl From<&ValidatedEvent> for StreamedEvent {
    fn from(e: &ValidatedEvent) -> Self {
        Self {
            event_id: e.event_id,
            version: e.version.clone(),
            event_type: e.event_type.clone(),
            event_timestamp: e.event_timestamp,
            event_date: e.event_timestamp.format("%Y-%m-%d").to_string(),
            event_category: e.event_category,
            event_action: e.event_action.clone(),
            event_outcome: e.event_outcome,
            actor_type: e.actor_type.clone(),
            actor_id: e.actor_id.clone(),
            actor_ip: e.actor_ip.clone(),
            resource_type: e.resource_type.clone(),
            resource_id: e.resource_id.clone(),
            correlation_id: e.correlation_id.clone(),
            parent_event_id: e.parent_event_id,
            namespace: e.namespace.clone(),
            cluster_id: e.cluster_id.clone(),
            severity: e.severity.clone(),
            duration_ms: e.duration_ms,
            error_code: e.error_code.clone(),
            error_message: e.error_message.clone(),
            retention_days: e.retention_days,
            is_sensitive: e.is_sensitive,
            event_data: e.event_data.clone(),
            ingested_by: e.ingested_by.clone(),
        }
    }
}
