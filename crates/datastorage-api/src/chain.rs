//! The hash chain: one per `correlation_id`, ordered by an explicit sequence number.
//!
//! `event_hash = hex(SHA-256(previous_hash || canonical_json(event)))`, where `previous_hash` is
//! the hex hash of the event before it in the same chain (empty for the first) and the canonical
//! JSON follows RFC 8785 (JCS). The canonical object holds every stored field of the event plus
//! its `chain_sequence`, so an edit to any column, a reordering, or a deleted row breaks a link.
//! Order is the sequence assigned at insert, never the timestamp: late or replayed events do not
//! look tampered.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::types::AuditEvent;
use crate::validate::ValidatedEvent;

/// Name stored in `hash_algorithm` for plain SHA-256 chains.
pub const ALGORITHM_SHA256: &str = "sha256";
/// Name stored in `hash_algorithm` for keyed chains: HMAC-SHA-256 with a configured key.
pub const ALGORITHM_HMAC_SHA256: &str = "hmac-sha256";

/// The timestamp form used inside the canonical JSON: UTC, microseconds, `Z`.
pub fn canonical_timestamp(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// RFC 8785 canonical JSON of an event at a chain position.
pub fn canonical_json(event: &ValidatedEvent, chain_sequence: i64) -> String {
    let value = json!({
        "event_id": event.event_id.to_string(),
        "version": event.version,
        "event_type": event.event_type,
        "event_timestamp": canonical_timestamp(&event.event_timestamp),
        "event_category": event.event_category.as_str(),
        "event_action": event.event_action,
        "event_outcome": event.event_outcome.as_str(),
        "actor_type": event.actor_type,
        "actor_id": event.actor_id,
        "actor_ip": event.actor_ip,
        "resource_type": event.resource_type,
        "resource_id": event.resource_id,
        "correlation_id": event.correlation_id,
        "parent_event_id": event.parent_event_id.map(|id| id.to_string()),
        "parent_event_date": event.parent_event_date.as_ref().map(canonical_timestamp),
        "namespace": event.namespace,
        "cluster_id": event.cluster_id,
        "severity": event.severity,
        "duration_ms": event.duration_ms,
        "error_code": event.error_code,
        "error_message": event.error_message,
        "retention_days": event.retention_days,
        "is_sensitive": event.is_sensitive,
        "event_data": Value::Object(event.event_data.clone()),
        "chain_sequence": chain_sequence,
    });
    // JCS cannot fail on a Value built from valid JSON: numbers are finite by construction.
    serde_jcs::to_string(&value).expect("a serde_json::Value always canonicalizes")
}

/// The chain hash of an event whose predecessor's hash is `previous_hash`.
pub fn chain_hash(previous_hash: &str, event: &ValidatedEvent, chain_sequence: i64) -> String {
    let mut hasher = Sha256::new();
    hasher.update(previous_hash.as_bytes());
    hasher.update(canonical_json(event, chain_sequence).as_bytes());
    hex::encode(hasher.finalize())
}

/// The keyed chain hash: `hex(HMAC-SHA-256(key, previous_hash || canonical_json(event)))`.
/// Unlike the plain hash, someone who can edit the database but does not hold the key cannot
/// recompute a valid chain after an edit.
pub fn chain_hmac(
    key: &[u8],
    previous_hash: &str,
    event: &ValidatedEvent,
    chain_sequence: i64,
) -> String {
    use hmac::{Mac, SimpleHmac};
    let mut mac = SimpleHmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(previous_hash.as_bytes());
    mac.update(canonical_json(event, chain_sequence).as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Whether two events have the same stored content (used to tell a replay from a conflict).
pub fn same_content(a: &ValidatedEvent, b: &ValidatedEvent) -> bool {
    canonical_json(a, 0) == canonical_json(b, 0)
}

/// The content of a stored event, as it was validated, for recomputing its hash.
pub fn stored_content(e: &AuditEvent) -> ValidatedEvent {
    ValidatedEvent {
        event_id: e.event_id,
        id_supplied: true,
        version: e.version.clone(),
        event_type: e.event_type.clone(),
        event_timestamp: e.event_timestamp,
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
        parent_event_date: e.parent_event_date,
        namespace: e.namespace.clone(),
        cluster_id: e.cluster_id.clone(),
        severity: e.severity.clone(),
        duration_ms: e.duration_ms,
        error_code: e.error_code.clone(),
        error_message: e.error_message.clone(),
        retention_days: e.retention_days,
        is_sensitive: e.is_sensitive,
        event_data: e.event_data.clone(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::validate::validate_event;

    fn event(data: Value) -> ValidatedEvent {
        validate_event(&json!({
            "event_id": "0190a0f0-0000-7000-8000-000000000001",
            "version": "1.0",
            "event_type": "t",
            "event_timestamp": "2025-01-01T00:00:00Z",
            "event_category": "gateway",
            "event_action": "a",
            "event_outcome": "success",
            "correlation_id": "c",
            "event_data": data
        }))
        .unwrap()
    }

    #[test]
    fn canonical_json_sorts_keys_and_normalises_numbers() {
        let a = event(json!({"b": 1.0, "a": [true, null]}));
        let c = canonical_json(&a, 1);
        assert!(c.contains(r#""event_data":{"a":[true,null],"b":1}"#), "{c}");
        assert!(c.starts_with(r#"{"actor_id":null"#), "{c}");
    }

    #[test]
    fn hash_depends_on_previous_hash_sequence_and_content() {
        let e = event(json!({"x": 1}));
        let h = chain_hash("", &e, 1);
        assert_eq!(h.len(), 64);
        assert_ne!(h, chain_hash("00", &e, 1));
        assert_ne!(h, chain_hash("", &e, 2));
        assert_ne!(h, chain_hash("", &event(json!({"x": 2})), 1));
        assert_eq!(h, chain_hash("", &event(json!({"x": 1})), 1));
    }

    #[test]
    fn keyed_hash_depends_on_the_key() {
        let e = event(json!({"x": 1}));
        let a = chain_hmac(b"key-one", "", &e, 1);
        assert_eq!(a.len(), 64);
        assert_ne!(a, chain_hmac(b"key-two", "", &e, 1));
        assert_ne!(a, chain_hash("", &e, 1));
    }
}
