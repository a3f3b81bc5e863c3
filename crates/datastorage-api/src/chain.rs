//! The hash chain: one per `correlation_id`, ordered by an explicit sequence number.
//!
//! `event_hash = hex(SHA-256(previous_hash || canonical_json(event)))`, where `previous_hash` is
//! the hex hash of the event before it in the same chain (empty for the first) and the canonical
//! JSON follows RFC 8785 (JCS). The canonical object holds every stored field of the event plus
//! its `chain_sequence`, so an edit to any column, a reordering, or a deleted row breaks a link.
//! Order is the sequence assigned at insert, never the timestamp: late or replayed events do not
//! look tampered.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::types::AuditEvent;
use crate::validate::ValidatedEvent;

/// Name stored in `hash_algorithm` for plain SHA-256 chains of the first form (rows written
/// before principals existed: the canonical object has no `ingested_by`).
pub const ALGORITHM_SHA256: &str = "sha256";
/// Name stored in `hash_algorithm` for keyed chains of the first form: HMAC-SHA-256 with a
/// configured key.
pub const ALGORITHM_HMAC_SHA256: &str = "hmac-sha256";
/// Plain SHA-256, second form: the canonical object also covers `ingested_by`.
pub const ALGORITHM_SHA256_V2: &str = "sha256-v2";
/// HMAC-SHA-256, second form: the canonical object also covers `ingested_by`.
pub const ALGORITHM_HMAC_SHA256_V2: &str = "hmac-sha256-v2";

/// Which fields the canonical object holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// Every stored field of the event but `ingested_by` (rows of `sha256`, `hmac-sha256`).
    V1,
    /// Every stored field, `ingested_by` included (rows of `sha256-v2`, `hmac-sha256-v2`): the
    /// principal that wrote a row cannot be changed without breaking its link.
    V2,
}

impl Form {
    /// The form a stored `hash_algorithm` uses, and whether it is keyed; `None` for a name
    /// this version does not know.
    pub fn of(algorithm: &str) -> Option<(Form, bool)> {
        match algorithm {
            ALGORITHM_SHA256 => Some((Form::V1, false)),
            ALGORITHM_HMAC_SHA256 => Some((Form::V1, true)),
            ALGORITHM_SHA256_V2 => Some((Form::V2, false)),
            ALGORITHM_HMAC_SHA256_V2 => Some((Form::V2, true)),
            _ => None,
        }
    }

    /// The `hash_algorithm` name of this form, keyed or not.
    pub fn algorithm(self, keyed: bool) -> &'static str {
        match (self, keyed) {
            (Form::V1, false) => ALGORITHM_SHA256,
            (Form::V1, true) => ALGORITHM_HMAC_SHA256,
            (Form::V2, false) => ALGORITHM_SHA256_V2,
            (Form::V2, true) => ALGORITHM_HMAC_SHA256_V2,
        }
    }
}

/// The timestamp form used inside the canonical JSON: UTC, microseconds, `Z`.
pub fn canonical_timestamp(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// An event whose content the chain hash covers: a new event ([`ValidatedEvent`]) or a stored
/// one ([`AuditEvent`] with its `event_data` parsed). Both hash to the same bytes when their
/// stored fields are equal, so a stored row is checked without converting it back.
pub trait Canonical {
    /// RFC 8785 canonical JSON of the event at chain position `chain_sequence`, in `form`.
    fn canonical_bytes(&self, chain_sequence: i64, form: Form) -> Vec<u8>;
}

/// RFC 8785 canonical JSON of an event at a chain position, as text.
pub fn canonical_json(event: &impl Canonical, chain_sequence: i64, form: Form) -> String {
    let bytes = event.canonical_bytes(chain_sequence, form);
    // Every byte written is JSON text built from `str`s and ASCII.
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// One field of the canonical event object.
enum Field<'a> {
    Str(Option<&'a str>),
    Num(Option<f64>),
    Bool(bool),
    Object(&'a Map<String, Value>),
    /// Not part of this form: the key is left out.
    Absent,
}

/// The canonical JSON of an event, written directly: the event's keys are fixed and listed here
/// in RFC 8785 order (`canonical_json_matches_serde_jcs` compares the output with the
/// `serde_jcs` crate, which also catches a key out of order). This is the hot path of every
/// write: building a `Value` and canonicalizing it generically cost half of the server's CPU on
/// batch writes. A macro, because [`ValidatedEvent`] and [`AuditEvent`] carry the hashed fields
/// under the same names and types; one list serves both.
macro_rules! canonical_bytes {
    ($e:expr, $chain_sequence:expr, $form:expr) => {{
        let e = $e;
        let event_id = e.event_id.to_string();
        let timestamp = canonical_timestamp(&e.event_timestamp);
        let parent_id = e.parent_event_id.map(|id| id.to_string());
        let parent_date = e.parent_event_date.as_ref().map(canonical_timestamp);
        // RFC 8785 writes every number as an IEEE 754 double, integers included.
        let ingested_by = match $form {
            Form::V1 => Field::Absent,
            Form::V2 => Field::Str(e.ingested_by.as_deref()),
        };
        let fields: [(&str, Field<'_>); 26] = [
            ("actor_id", Field::Str(e.actor_id.as_deref())),
            ("actor_ip", Field::Str(e.actor_ip.as_deref())),
            ("actor_type", Field::Str(e.actor_type.as_deref())),
            ("chain_sequence", Field::Num(Some($chain_sequence as f64))),
            ("cluster_id", Field::Str(e.cluster_id.as_deref())),
            ("correlation_id", Field::Str(Some(&e.correlation_id))),
            ("duration_ms", Field::Num(e.duration_ms.map(|d| d as f64))),
            ("error_code", Field::Str(e.error_code.as_deref())),
            ("error_message", Field::Str(e.error_message.as_deref())),
            ("event_action", Field::Str(Some(&e.event_action))),
            (
                "event_category",
                Field::Str(Some(e.event_category.as_str())),
            ),
            ("event_data", Field::Object(&e.event_data)),
            ("event_id", Field::Str(Some(&event_id))),
            ("event_outcome", Field::Str(Some(e.event_outcome.as_str()))),
            ("event_timestamp", Field::Str(Some(&timestamp))),
            ("event_type", Field::Str(Some(&e.event_type))),
            ("ingested_by", ingested_by),
            ("is_sensitive", Field::Bool(e.is_sensitive)),
            ("namespace", Field::Str(e.namespace.as_deref())),
            ("parent_event_date", Field::Str(parent_date.as_deref())),
            ("parent_event_id", Field::Str(parent_id.as_deref())),
            ("resource_id", Field::Str(e.resource_id.as_deref())),
            ("resource_type", Field::Str(e.resource_type.as_deref())),
            (
                "retention_days",
                Field::Num(Some(f64::from(e.retention_days))),
            ),
            ("severity", Field::Str(e.severity.as_deref())),
            ("version", Field::Str(Some(&e.version))),
        ];
        write_fields(&fields)
    }};
}

impl Canonical for ValidatedEvent {
    fn canonical_bytes(&self, chain_sequence: i64, form: Form) -> Vec<u8> {
        canonical_bytes!(self, chain_sequence, form)
    }
}

impl Canonical for AuditEvent {
    fn canonical_bytes(&self, chain_sequence: i64, form: Form) -> Vec<u8> {
        canonical_bytes!(self, chain_sequence, form)
    }
}

fn write_fields(fields: &[(&str, Field<'_>)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1024);
    out.push(b'{');
    let present = fields.iter().filter(|(_, f)| !matches!(f, Field::Absent));
    for (i, (key, field)) in present.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_str(&mut out, key);
        out.push(b':');
        match field {
            Field::Str(Some(s)) => write_str(&mut out, s),
            Field::Num(Some(n)) => write_number(&mut out, *n),
            Field::Str(None) | Field::Num(None) => out.extend_from_slice(b"null"),
            Field::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
            Field::Object(map) => write_object(&mut out, map),
            Field::Absent => {}
        }
    }
    out.push(b'}');
    out
}

fn write_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Number(n) => match n.as_f64() {
            Some(f) => write_number(out, f),
            None => out.extend_from_slice(n.to_string().as_bytes()),
        },
        Value::String(s) => write_str(out, s),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(out, item);
            }
            out.push(b']');
        }
        Value::Object(map) => write_object(out, map),
    }
}

/// Members sorted by the UTF-16 code units of their keys (RFC 8785 §3.2.3). A map already
/// iterates in UTF-8 byte order, which differs only for keys mixing characters above U+FFFF
/// with U+E000..U+FFFF, so the sort is nearly always a pass over sorted data.
fn write_object(out: &mut Vec<u8>, map: &Map<String, Value>) {
    let mut members: Vec<(&String, &Value)> = map.iter().collect();
    members.sort_by(|a, b| a.0.encode_utf16().cmp(b.0.encode_utf16()));
    out.push(b'{');
    for (i, (key, value)) in members.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_str(out, key);
        out.push(b':');
        write_value(out, value);
    }
    out.push(b'}');
}

/// A JSON string: RFC 8785 escapes exactly what serde_json escapes (`"`, `\\`, and control
/// characters, as `\b \t \n \f \r` or lower-case `\u00xx`).
fn write_str(out: &mut Vec<u8>, s: &str) {
    // Writing a `str` into a `Vec` cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// A finite number in ECMAScript form (RFC 8785 §3.2.2.3); JSON numbers are always finite.
fn write_number(out: &mut Vec<u8>, n: f64) {
    if n.is_finite() {
        out.extend_from_slice(ryu_js::Buffer::new().format_finite(n).as_bytes());
    } else {
        out.extend_from_slice(b"null");
    }
}

/// The chain hash of an event whose predecessor's hash is `previous_hash`.
pub fn chain_hash(
    previous_hash: &str,
    event: &impl Canonical,
    chain_sequence: i64,
    form: Form,
) -> String {
    let mut hasher = Sha256::new();
    hasher.update(previous_hash.as_bytes());
    hasher.update(event.canonical_bytes(chain_sequence, form));
    hex::encode(hasher.finalize())
}

/// The keyed chain hash: `hex(HMAC-SHA-256(key, previous_hash || canonical_json(event)))`.
/// Unlike the plain hash, someone who can edit the database but does not hold the key cannot
/// recompute a valid chain after an edit.
pub fn chain_hmac(
    key: &[u8],
    previous_hash: &str,
    event: &impl Canonical,
    chain_sequence: i64,
    form: Form,
) -> String {
    use hmac::{Mac, SimpleHmac};
    let mut mac = SimpleHmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(previous_hash.as_bytes());
    mac.update(&event.canonical_bytes(chain_sequence, form));
    hex::encode(mac.finalize().into_bytes())
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
        let c = canonical_json(&a, 1, Form::V1);
        assert!(c.contains(r#""event_data":{"a":[true,null],"b":1}"#), "{c}");
        assert!(c.starts_with(r#"{"actor_id":null"#), "{c}");
        assert!(
            !c.contains("ingested_by"),
            "the first form leaves it out: {c}"
        );
    }

    /// The reference: build the object as a `Value` and canonicalize it with `serde_jcs`.
    fn reference(event: &ValidatedEvent, chain_sequence: i64, form: Form) -> String {
        let mut value = json!({
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
        if form == Form::V2 {
            value["ingested_by"] = json!(event.ingested_by);
        }
        serde_jcs::to_string(&value).unwrap()
    }

    #[test]
    fn canonical_json_matches_serde_jcs() {
        let full = validate_event(&json!({
            "event_id": "0190a0f0-0000-7000-8000-000000000002",
            "version": "1.0",
            "event_type": "gateway.request.completed",
            "event_timestamp": "2025-01-01T00:00:00.123456789+02:00",
            "event_category": "gateway",
            "event_action": "forward",
            "event_outcome": "failure",
            "actor_type": "service",
            "actor_id": "svc \"quoted\" \\ back",
            "actor_ip": "10.0.0.1",
            "resource_type": "Pod",
            "resource_id": "web-1",
            "correlation_id": "corr-\u{e9}\u{1F600}",
            "parent_event_id": "0190a0f0-0000-7000-8000-000000000001",
            "parent_event_date": "2024-12-31T23:59:59Z",
            "namespace": "prod",
            "cluster_id": "eu-1",
            "severity": "warning",
            "duration_ms": 9007199254740993_i64,
            "error_code": "E42",
            "error_message": "line\nbreak\ttab\u{1}\u{7f}</script>",
            "retention_days": 2555,
            "is_sensitive": true,
            "event_data": {
                "numbers": [0, -0.0, 1.5, 1e21, 1e-7, 123456789012345678_u64, -42, 0.1, 5e-324],
                "nested": {"b": {"y": null, "x": [true, false]}, "a": "\u{1f}"},
                "\u{10000}": "astral", "\u{FB33}": "bmp above surrogates", "é": 1, "Z": 2, "": 3
            }
        }))
        .unwrap();
        let signed = ValidatedEvent {
            ingested_by: Some("system:serviceaccount:kubernaut:gateway".to_owned()),
            ..full.clone()
        };
        let minimal = event(json!({}));
        for (e, seq) in [
            (&full, 1),
            (&full, 9_007_199_254_740_993),
            (&signed, 2),
            (&minimal, 0),
            (&minimal, -1),
        ] {
            for form in [Form::V1, Form::V2] {
                assert_eq!(canonical_json(e, seq, form), reference(e, seq, form));
            }
        }
    }

    #[test]
    fn a_stored_event_canonicalizes_like_the_event_it_was_written_from() {
        let e = event(json!({"b": [1, 2.5], "a": {"z": null}}));
        let stored = AuditEvent {
            event_id: e.event_id,
            version: e.version.clone(),
            event_type: e.event_type.clone(),
            event_timestamp: e.event_timestamp,
            event_date: e.event_timestamp.date_naive().to_string(),
            event_category: e.event_category,
            event_action: e.event_action.clone(),
            event_outcome: e.event_outcome,
            actor_type: None,
            actor_id: None,
            actor_ip: None,
            resource_type: None,
            resource_id: None,
            correlation_id: e.correlation_id.clone(),
            parent_event_id: None,
            parent_event_date: None,
            namespace: None,
            cluster_id: None,
            severity: None,
            duration_ms: None,
            error_code: None,
            error_message: None,
            retention_days: e.retention_days,
            is_sensitive: e.is_sensitive,
            event_data: e.event_data.clone(),
            chain_sequence: 7,
            event_hash: String::new(),
            previous_event_hash: String::new(),
            hash_algorithm: ALGORITHM_SHA256_V2.to_owned(),
            hash_key_id: None,
            ingested_by: None,
            legal_hold: false,
        };
        for form in [Form::V1, Form::V2] {
            assert_eq!(
                canonical_json(&stored, 7, form),
                canonical_json(&e, 7, form)
            );
            let mut edited = stored.clone();
            edited.event_action = "other".to_owned();
            assert_ne!(
                canonical_json(&edited, 7, form),
                canonical_json(&e, 7, form)
            );
        }
        // The principal is covered by the second form only.
        let mut claimed = stored.clone();
        claimed.ingested_by = Some("someone-else".to_owned());
        assert_eq!(
            canonical_json(&claimed, 7, Form::V1),
            canonical_json(&e, 7, Form::V1)
        );
        assert_ne!(
            canonical_json(&claimed, 7, Form::V2),
            canonical_json(&e, 7, Form::V2)
        );
    }

    #[test]
    fn hash_depends_on_previous_hash_sequence_and_content() {
        let e = event(json!({"x": 1}));
        let h = chain_hash("", &e, 1, Form::V2);
        assert_eq!(h.len(), 64);
        assert_ne!(h, chain_hash("00", &e, 1, Form::V2));
        assert_ne!(h, chain_hash("", &e, 2, Form::V2));
        assert_ne!(h, chain_hash("", &event(json!({"x": 2})), 1, Form::V2));
        assert_eq!(h, chain_hash("", &event(json!({"x": 1})), 1, Form::V2));
        assert_ne!(h, chain_hash("", &e, 1, Form::V1), "the forms differ");
    }

    #[test]
    fn keyed_hash_depends_on_the_key() {
        let e = event(json!({"x": 1}));
        let a = chain_hmac(b"key-one", "", &e, 1, Form::V2);
        assert_eq!(a.len(), 64);
        assert_ne!(a, chain_hmac(b"key-two", "", &e, 1, Form::V2));
        assert_ne!(a, chain_hash("", &e, 1, Form::V2));
    }
}
