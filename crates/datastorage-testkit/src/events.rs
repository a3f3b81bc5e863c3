//! Event builders: a valid event as JSON (for the HTTP tests) or as a typed request (for the
//! client tests).

use datastorage_api::{AuditEventRequest, EventCategory, EventOutcome};
use serde_json::{json, Value};

/// A valid event for correlation id `cid`, as the JSON a client sends.
pub fn event(cid: &str) -> Value {
    json!({
        "version": "1.0",
        "event_type": "gateway.signal.received",
        "event_timestamp": chrono::Utc::now().to_rfc3339(),
        "event_category": "gateway",
        "event_action": "received",
        "event_outcome": "success",
        "actor_type": "service",
        "actor_id": "gateway-service",
        "resource_type": "Signal",
        "resource_id": "fp-abc123",
        "correlation_id": cid,
        "severity": "critical",
        "event_data": { "task_id": "task-1", "n": 1 }
    })
}

/// A valid typed event; `n` spreads events over 64 correlation ids (64 hash chains).
pub fn request(n: usize) -> AuditEventRequest {
    let mut e = AuditEventRequest::new(
        "gateway.signal.received",
        EventCategory::Gateway,
        "received",
        EventOutcome::Success,
        format!("corr-{}", n % 64),
    );
    e.actor_id = Some("gateway-service".to_owned());
    e.event_data
        .insert("n".to_owned(), serde_json::Value::from(n as u64));
    e
}
