//! Field-by-field validation of incoming events.
//!
//! The server parses a body into a `serde_json::Value` and hands each event to
//! [`validate_event`], which checks every field against the contract's limits and the storage
//! schema's, and reports *all* broken rules at once as `field → message`. Nothing that passes here
//! can be refused by the database for its shape, so database errors never stand in for
//! validation (an upstream defect).
//!
//! Limits (characters, not bytes, as PostgreSQL counts them):
//!
//! | field | rule |
//! |---|---|
//! | `version` | required, 1–20 |
//! | `event_type` | required, 1–100 |
//! | `event_timestamp` | required, RFC 3339 date-time; stored at microsecond precision |
//! | `event_category` | required, one of the 14 contract categories |
//! | `event_action` | required, 1–50 |
//! | `event_outcome` | required, `success`, `failure` or `pending` |
//! | `correlation_id` | required, 1–255 |
//! | `actor_type` | ≤ 64 |
//! | `actor_id`, `resource_id`, `cluster_id` | ≤ 255 |
//! | `actor_ip` | ≤ 45 |
//! | `resource_type`, `error_code` | ≤ 100 |
//! | `namespace` | ≤ 253 |
//! | `severity` | ≤ 20 |
//! | `error_message` | ≤ 4096 |
//! | `duration_ms` | integer ≥ 0 |
//! | `retention_days` | integer 1–36500 |
//! | `event_id`, `parent_event_id` | UUID |
//! | `event_data` | required JSON object, ≤ 256 KiB serialized, nesting depth ≤ 10 |
//!
//! No string anywhere (event_data included) may contain a NUL character: PostgreSQL cannot store
//! one. Unknown top-level fields are ignored, as upstream does, so newer clients keep working.

use std::collections::BTreeMap;

use chrono::{DateTime, SubsecRound, Utc};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::types::{EventCategory, EventOutcome, DEFAULT_RETENTION_DAYS};

/// Largest serialized `event_data`, in bytes.
pub const MAX_EVENT_DATA_BYTES: usize = 256 * 1024;
/// Deepest nesting of `event_data` (the object itself is depth 1).
pub const MAX_EVENT_DATA_DEPTH: usize = 10;
/// Largest `retention_days`.
pub const MAX_RETENTION_DAYS: i64 = 36_500;

/// Broken rules, field name → message. Field names of batch items are prefixed `[i].`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldErrors(pub BTreeMap<String, String>);

impl FieldErrors {
    /// Records that `field` broke a rule.
    pub fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.entry(field.into()).or_insert_with(|| message.into());
    }

    /// True when no rule was broken.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Moves every error of `other` in, with `prefix` before each field name.
    pub fn merge_prefixed(&mut self, prefix: &str, other: FieldErrors) {
        for (field, message) in other.0 {
            self.0.insert(format!("{prefix}{field}"), message);
        }
    }

    /// One line naming every field and rule, for `detail`.
    pub fn summary(&self) -> String {
        let mut parts: Vec<String> = self.0.values().take(5).cloned().collect();
        if self.0.len() > 5 {
            parts.push(format!("and {} more", self.0.len() - 5));
        }
        parts.join("; ")
    }
}

/// An event that passed validation, with the values that will be stored. Serializable, so a
/// server can keep it (its outage buffer) and store it later exactly as validated.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ValidatedEvent {
    /// The id: the client's, or a fresh UUIDv7.
    pub event_id: Uuid,
    /// Whether the client chose the id (only then is a replay possible).
    pub id_supplied: bool,
    /// Schema version.
    pub version: String,
    /// Event type.
    pub event_type: String,
    /// Timestamp, truncated to microseconds.
    pub event_timestamp: DateTime<Utc>,
    /// Category.
    pub event_category: EventCategory,
    /// Action.
    pub event_action: String,
    /// Outcome.
    pub event_outcome: EventOutcome,
    /// Actor kind.
    pub actor_type: Option<String>,
    /// Actor id.
    pub actor_id: Option<String>,
    /// Actor IP.
    pub actor_ip: Option<String>,
    /// Resource kind.
    pub resource_type: Option<String>,
    /// Resource id.
    pub resource_id: Option<String>,
    /// Correlation id.
    pub correlation_id: String,
    /// Parent event.
    pub parent_event_id: Option<Uuid>,
    /// Parent timestamp, truncated to microseconds.
    pub parent_event_date: Option<DateTime<Utc>>,
    /// Namespace.
    pub namespace: Option<String>,
    /// Cluster id.
    pub cluster_id: Option<String>,
    /// Severity.
    pub severity: Option<String>,
    /// Duration in ms.
    pub duration_ms: Option<i64>,
    /// Error code.
    pub error_code: Option<String>,
    /// Error message.
    pub error_message: Option<String>,
    /// Retention days, defaulted.
    pub retention_days: i32,
    /// Sensitive flag, defaulted to false.
    pub is_sensitive: bool,
    /// Payload.
    pub event_data: Map<String, Value>,
    /// The principal that writes it; set by the server after validation, never from the body.
    pub ingested_by: Option<String>,
}

/// Checks one event and returns what will be stored, or every broken rule.
pub fn validate_event(value: &Value) -> Result<ValidatedEvent, FieldErrors> {
    let mut errors = FieldErrors::default();
    let Some(obj) = value.as_object() else {
        errors.add("(body)", "an event must be a JSON object");
        return Err(errors);
    };
    let mut v = Fields {
        obj,
        errors: &mut errors,
    };

    let event_id = v.uuid("event_id");
    let version = v.required_string("version", 20);
    let event_type = v.required_string("event_type", 100);
    let event_timestamp = v.timestamp("event_timestamp", true);
    let event_category = v.enumerated::<EventCategory>("event_category");
    let event_action = v.required_string("event_action", 50);
    let event_outcome = v.enumerated::<EventOutcome>("event_outcome");
    let actor_type = v.optional_string("actor_type", 64);
    let actor_id = v.optional_string("actor_id", 255);
    let actor_ip = v.optional_string("actor_ip", 45);
    let resource_type = v.optional_string("resource_type", 100);
    let resource_id = v.optional_string("resource_id", 255);
    let correlation_id = v.required_string("correlation_id", 255);
    let parent_event_id = v.uuid("parent_event_id");
    let parent_event_date = v.timestamp("parent_event_date", false);
    let namespace = v.optional_string("namespace", 253);
    let cluster_id = v.optional_string("cluster_id", 255);
    let severity = v.optional_string("severity", 20);
    let duration_ms = v.integer("duration_ms", 0, i64::MAX);
    let error_code = v.optional_string("error_code", 100);
    let error_message = v.optional_string("error_message", 4096);
    let retention_days = v.integer("retention_days", 1, MAX_RETENTION_DAYS);
    let is_sensitive = v.boolean("is_sensitive");
    let event_data = v.event_data();

    match (
        version,
        event_type,
        event_timestamp,
        event_category,
        event_action,
        event_outcome,
        correlation_id,
        event_data,
    ) {
        (
            Some(version),
            Some(event_type),
            Some(event_timestamp),
            Some(event_category),
            Some(event_action),
            Some(event_outcome),
            Some(correlation_id),
            Some(event_data),
        ) if errors.is_empty() => Ok(ValidatedEvent {
            id_supplied: event_id.is_some(),
            event_id: event_id.unwrap_or_else(Uuid::now_v7),
            version,
            event_type,
            event_timestamp,
            event_category,
            event_action,
            event_outcome,
            actor_type,
            actor_id,
            actor_ip,
            resource_type,
            resource_id,
            correlation_id,
            parent_event_id,
            parent_event_date,
            namespace,
            cluster_id,
            severity,
            duration_ms,
            error_code,
            error_message,
            // In range by the check above.
            retention_days: retention_days.map_or(DEFAULT_RETENTION_DAYS, |d| d as i32),
            is_sensitive: is_sensitive.unwrap_or(false),
            event_data,
            ingested_by: None,
        }),
        _ => Err(errors),
    }
}

/// Reads typed fields out of one JSON object, recording every broken rule.
struct Fields<'a> {
    obj: &'a Map<String, Value>,
    errors: &'a mut FieldErrors,
}

impl Fields<'_> {
    /// The field's value, with JSON `null` treated as absent.
    fn get(&self, field: &str) -> Option<&Value> {
        self.obj.get(field).filter(|v| !v.is_null())
    }

    fn string(&mut self, field: &str, min: usize, max: usize) -> Option<String> {
        let value = self.get(field)?;
        let Some(s) = value.as_str() else {
            self.errors.add(
                field,
                format!("{field} must be a string (got {})", kind(value)),
            );
            return None;
        };
        let len = s.chars().count();
        if len < min {
            self.errors
                .add(field, format!("{field} is required and must not be empty"));
            None
        } else if len > max {
            self.errors.add(
                field,
                format!("{field} must be at most {max} characters (got {len})"),
            );
            None
        } else if s.contains('\0') {
            self.errors
                .add(field, format!("{field} must not contain NUL characters"));
            None
        } else {
            Some(s.to_owned())
        }
    }

    fn required_string(&mut self, field: &str, max: usize) -> Option<String> {
        if self.get(field).is_none() {
            self.errors.add(field, format!("{field} is required"));
            return None;
        }
        self.string(field, 1, max)
    }

    fn optional_string(&mut self, field: &str, max: usize) -> Option<String> {
        self.string(field, 0, max)
    }

    fn uuid(&mut self, field: &str) -> Option<Uuid> {
        let s = self.string(field, 0, 64)?;
        match Uuid::parse_str(&s) {
            Ok(id) => Some(id),
            Err(_) => {
                self.errors.add(field, format!("{field} must be a UUID"));
                None
            }
        }
    }

    fn timestamp(&mut self, field: &str, required: bool) -> Option<DateTime<Utc>> {
        if required && self.get(field).is_none() {
            self.errors.add(field, format!("{field} is required"));
            return None;
        }
        let s = self.string(field, 1, 64)?;
        match DateTime::parse_from_rfc3339(&s) {
            Ok(t) => match check_time(&t.with_timezone(&Utc)) {
                Ok(t) => Some(t),
                Err(rule) => {
                    self.errors
                        .add(field, format!("{field} {rule} (got {s:?})"));
                    None
                }
            },
            Err(e) => {
                self.errors.add(
                    field,
                    format!(
                        "{field} must be an RFC 3339 date-time such as 2025-12-13T02:00:00Z ({e})"
                    ),
                );
                None
            }
        }
    }

    fn enumerated<T: std::str::FromStr<Err = String>>(&mut self, field: &str) -> Option<T> {
        if self.get(field).is_none() {
            self.errors.add(field, format!("{field} is required"));
            return None;
        }
        let s = self.string(field, 1, 50)?;
        // Stored values are the canonical lower-case form; only exact wire values are accepted
        // on write so that what is hashed is what was sent.
        match s.parse::<T>() {
            Ok(v) if s.chars().all(|c| !c.is_ascii_uppercase()) => Some(v),
            Ok(_) | Err(_) => {
                let rule = s
                    .parse::<T>()
                    .err()
                    .unwrap_or_else(|| "must be lower case".into());
                self.errors
                    .add(field, format!("{field} {rule} (got {s:?})"));
                None
            }
        }
    }

    fn integer(&mut self, field: &str, min: i64, max: i64) -> Option<i64> {
        let value = self.get(field)?;
        match value.as_i64() {
            Some(n) if (min..=max).contains(&n) => Some(n),
            Some(n) => {
                let rule = if max == i64::MAX {
                    format!("{field} must be at least {min} (got {n})")
                } else {
                    format!("{field} must be between {min} and {max} (got {n})")
                };
                self.errors.add(field, rule);
                None
            }
            None => {
                self.errors.add(
                    field,
                    format!("{field} must be an integer (got {})", kind(value)),
                );
                None
            }
        }
    }

    fn boolean(&mut self, field: &str) -> Option<bool> {
        let value = self.get(field)?;
        let b = value.as_bool();
        if b.is_none() {
            self.errors.add(
                field,
                format!("{field} must be a boolean (got {})", kind(value)),
            );
        }
        b
    }

    fn event_data(&mut self) -> Option<Map<String, Value>> {
        const FIELD: &str = "event_data";
        let Some(value) = self.get(FIELD) else {
            self.errors
                .add(FIELD, "event_data is required (a JSON object)");
            return None;
        };
        let Some(map) = value.as_object() else {
            self.errors.add(
                FIELD,
                format!("event_data must be a JSON object (got {})", kind(value)),
            );
            return None;
        };
        let depth = depth(value);
        if depth > MAX_EVENT_DATA_DEPTH {
            self.errors.add(
                FIELD,
                format!("event_data must be nested at most {MAX_EVENT_DATA_DEPTH} levels deep (got {depth})"),
            );
            return None;
        }
        if has_nul(value) {
            self.errors.add(
                FIELD,
                "event_data must not contain NUL characters in keys or strings",
            );
            return None;
        }
        let size = serde_json::to_vec(value).map_or(usize::MAX, |b| b.len());
        if size > MAX_EVENT_DATA_BYTES {
            self.errors.add(
                FIELD,
                format!("event_data must be at most {MAX_EVENT_DATA_BYTES} bytes serialized (got {size})"),
            );
            return None;
        }
        Some(map.clone())
    }
}

/// Earliest timestamp accepted anywhere (events and query bounds): both backends store it, and
/// so does every client language's date type.
pub const MIN_TIMESTAMP: &str = "0001-01-01T00:00:00Z";
/// Latest timestamp accepted anywhere.
pub const MAX_TIMESTAMP: &str = "9999-12-31T23:59:59.999999Z";

/// A timestamp as stored (microseconds), or the rule it breaks: a leap second (`…:60`) is
/// refused, since PostgreSQL would store it as the next second and the chain hash, computed
/// from what was sent, would no longer match what is read back; years outside 1–9999 are
/// refused, since not every backend and client stores them.
pub fn check_time(t: &DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    use chrono::Timelike as _;
    if t.nanosecond() >= 1_000_000_000 {
        return Err("is a leap second (:60), which cannot be stored faithfully; use :59.999999 or the next second".to_owned());
    }
    let (min, max) = (time_bound(MIN_TIMESTAMP), time_bound(MAX_TIMESTAMP));
    if *t < min || *t > max {
        return Err(format!(
            "must be between {MIN_TIMESTAMP} and {MAX_TIMESTAMP}"
        ));
    }
    Ok(t.trunc_subsecs(6))
}

fn time_bound(text: &str) -> DateTime<Utc> {
    text.parse().expect("the bounds are valid RFC 3339")
}

/// JSON type name for messages.
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Nesting depth: scalars 0, an object or array 1 + its deepest child.
fn depth(value: &Value) -> usize {
    match value {
        Value::Object(m) => 1 + m.values().map(depth).max().unwrap_or(0),
        Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

fn has_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Object(m) => m.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        Value::Array(a) => a.iter().any(has_nul),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn valid() -> Value {
        json!({
            "version": "1.0",
            "event_type": "gateway.signal.received",
            "event_timestamp": "2025-12-13T02:00:00.123456789Z",
            "event_category": "gateway",
            "event_action": "received",
            "event_outcome": "success",
            "correlation_id": "rr-1",
            "event_data": {"k": 1}
        })
    }

    fn errors_for(patch: Value) -> BTreeMap<String, String> {
        let mut v = valid();
        for (k, val) in patch.as_object().unwrap() {
            v[k] = val.clone();
        }
        validate_event(&v).expect_err("must be rejected").0
    }

    #[test]
    fn a_valid_event_gets_defaults_and_microsecond_timestamp() {
        let e = validate_event(&valid()).unwrap();
        assert!(!e.id_supplied);
        assert_eq!(e.event_id.get_version_num(), 7);
        assert_eq!(e.retention_days, DEFAULT_RETENTION_DAYS);
        assert_eq!(e.event_timestamp.timestamp_subsec_nanos(), 123_456_000);
    }

    #[test]
    fn each_bad_field_is_named_with_its_rule() {
        let long = |n: usize| Value::String("x".repeat(n));
        let deep = (0..11).fold(json!(1), |acc, _| json!({ "a": acc }));
        let cases: Vec<(Value, &str, &str)> = vec![
            (
                json!({"correlation_id": long(300)}),
                "correlation_id",
                "at most 255",
            ),
            (
                json!({"correlation_id": ""}),
                "correlation_id",
                "must not be empty",
            ),
            (json!({"version": long(21)}), "version", "at most 20"),
            (
                json!({"event_type": long(101)}),
                "event_type",
                "at most 100",
            ),
            (
                json!({"event_action": long(51)}),
                "event_action",
                "at most 50",
            ),
            (json!({"actor_ip": long(46)}), "actor_ip", "at most 45"),
            (
                json!({"event_category": "nope"}),
                "event_category",
                "must be one of",
            ),
            (
                json!({"event_outcome": "ok"}),
                "event_outcome",
                "must be one of",
            ),
            (
                json!({"event_timestamp": "yesterday"}),
                "event_timestamp",
                "RFC 3339",
            ),
            (json!({"event_id": "not-a-uuid"}), "event_id", "UUID"),
            (json!({"duration_ms": -1}), "duration_ms", "at least 0"),
            (json!({"duration_ms": 1.5}), "duration_ms", "integer"),
            (
                json!({"retention_days": 0}),
                "retention_days",
                "between 1 and 36500",
            ),
            (json!({"is_sensitive": "yes"}), "is_sensitive", "boolean"),
            (json!({"event_data": [1]}), "event_data", "JSON object"),
            (
                json!({"event_data": deep}),
                "event_data",
                "nested at most 10",
            ),
            (json!({"event_data": {"a": "x\u{0}y"}}), "event_data", "NUL"),
            (json!({"actor_id": "a\u{0}"}), "actor_id", "NUL"),
            (
                json!({"event_data": {"a": long(MAX_EVENT_DATA_BYTES)}}),
                "event_data",
                "bytes",
            ),
        ];
        for (patch, field, rule) in cases {
            let errors = errors_for(patch.clone());
            let msg = errors
                .get(field)
                .unwrap_or_else(|| panic!("{patch}: {errors:?}"));
            assert!(msg.contains(rule), "{patch}: {msg}");
        }
    }

    #[test]
    fn missing_required_fields_are_all_reported_at_once() {
        let errors = validate_event(&json!({})).unwrap_err().0;
        for f in [
            "version",
            "event_type",
            "event_timestamp",
            "event_category",
            "event_action",
            "event_outcome",
            "correlation_id",
            "event_data",
        ] {
            assert!(errors.contains_key(f), "{f} missing from {errors:?}");
        }
    }

    #[test]
    fn null_optional_fields_count_as_absent() {
        let mut v = valid();
        v["namespace"] = Value::Null;
        v["event_id"] = Value::Null;
        assert!(validate_event(&v).unwrap().namespace.is_none());
    }
}
