//! Content fingerprints (`validation.fingerprintReplays`): an event sent without `event_id` gets
//! an id derived from its content, so a client that retries after a timeout without ever
//! sending ids (upstream's client) replays instead of storing the event twice.
//!
//! The id is a UUIDv7 whose 48-bit time is the event's own `event_timestamp` (milliseconds),
//! and whose other 74 bits come from SHA-256 of the event's canonical JSON (the chain hash's
//! RFC 8785 form, with the nil id and position 0). It covers every stored field, including
//! `event_timestamp` to the microsecond, `correlation_id` (the chain) and `ingested_by` (the
//! principal), so two events merge exactly when they are equal in every one of those fields.
//! There is no time window: a retry is recognised however late it comes (an outage replay
//! hours later too), and recognising it costs nothing beyond the id lookup every client-supplied
//! id already has.

use datastorage_api::chain::{Canonical as _, Form};
use datastorage_api::ValidatedEvent;
use sha2::{Digest as _, Sha256};
use uuid::Uuid;

/// Gives `event` (sent without an id) the id of its content, and marks it as client-chosen so
/// that a second write of the same content is an idempotent replay.
pub fn identify(event: &mut ValidatedEvent) {
    event.event_id = Uuid::nil();
    let digest = Sha256::digest(event.canonical_bytes(0, Form::V2));
    let millis = u64::try_from(event.event_timestamp.timestamp_millis()).unwrap_or(0);
    let mut bytes = [0u8; 16];
    bytes[..6].copy_from_slice(&millis.to_be_bytes()[2..]);
    bytes[6..].copy_from_slice(&digest[..10]);
    bytes[6] = 0x70 | (bytes[6] & 0x0f);
    bytes[8] = 0x80 | (bytes[8] & 0x3f);
    event.event_id = Uuid::from_bytes(bytes);
    event.id_supplied = true;
}

#[cfg(test)]
mod tests {
    use datastorage_api::validate_event;
    use serde_json::json;

    use super::*;

    fn event(timestamp: &str, cid: &str) -> ValidatedEvent {
        let mut e = validate_event(&json!({
            "version": "1.0", "event_type": "t", "event_timestamp": timestamp,
            "event_category": "gateway", "event_action": "a", "event_outcome": "success",
            "correlation_id": cid, "event_data": {"k": [1, 2]}
        }))
        .unwrap();
        e.ingested_by = Some("gateway".to_owned());
        e
    }

    #[test]
    fn equal_content_gets_one_time_ordered_id_and_any_difference_another() {
        let (mut a, mut b) = (
            event("2026-12-01T12:00:00.000001Z", "c"),
            event("2026-12-01T12:00:00.000001Z", "c"),
        );
        identify(&mut a);
        identify(&mut b);
        assert_eq!(a.event_id, b.event_id);
        assert!(a.id_supplied);
        assert_eq!(a.event_id.get_version_num(), 7);
        let ts = a.event_id.get_timestamp().unwrap().to_unix();
        assert_eq!(ts.0, 1_796_126_400, "the UUIDv7 time is the event's own");

        let mut later = event("2026-12-01T12:00:00.000002Z", "c");
        let mut other_chain = event("2026-12-01T12:00:00.000001Z", "d");
        let mut other_principal = event("2026-12-01T12:00:00.000001Z", "c");
        other_principal.ingested_by = Some("someone-else".to_owned());
        for e in [&mut later, &mut other_chain, &mut other_principal] {
            identify(e);
            assert_ne!(e.event_id, a.event_id);
        }
    }
}
