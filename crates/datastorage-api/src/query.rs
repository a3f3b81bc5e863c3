//! Query parameters of `GET /api/v1/audit/events` and their validated form.
//!
//! Time bounds accept a relative age (`30m`, `24h`, `7d`, `2w`, `1h30m`; a leading `-` means the
//! same, never the future), an RFC 3339 date-time, or a date (`2025-12-18`, midnight UTC).
//! `since` is inclusive and `until` exclusive. Enumerated filters (`event_category`,
//! `event_outcome`) and `severity` ignore case; ids and types match exactly.
//!
//! Pagination is by `limit`/`offset` (contract) or by `cursor` (extension): the opaque
//! `next_cursor` of the previous page, which stays correct while new events arrive.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::types::{EventCategory, EventOutcome, DEFAULT_PAGE_LIMIT, MAX_PAGE_LIMIT};
use crate::validate::{check_time, FieldErrors};

/// The query string as received; every value a string so that a bad one is reported by name.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams), into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct EventQueryParams {
    /// Exact event type.
    #[cfg_attr(
        feature = "openapi",
        param(max_length = 100, pattern = "^[^\\u0000]*$")
    )]
    pub event_type: Option<String>,
    /// Category, any case.
    #[cfg_attr(feature = "openapi", param(value_type = Option<crate::EventCategory>))]
    pub event_category: Option<String>,
    /// Outcome, any case.
    #[cfg_attr(feature = "openapi", param(value_type = Option<crate::EventOutcome>))]
    pub event_outcome: Option<String>,
    /// Severity, any case.
    #[cfg_attr(feature = "openapi", param(max_length = 20, pattern = "^[^\\u0000]*$"))]
    pub severity: Option<String>,
    /// Exact correlation id.
    #[cfg_attr(
        feature = "openapi",
        param(max_length = 255, pattern = "^[^\\u0000]*$")
    )]
    pub correlation_id: Option<String>,
    /// Lower time bound (inclusive).
    #[cfg_attr(
        feature = "openapi",
        param(
            pattern = "^(-?([0-9]+(ms|s|m|h|d|w))+|[0-9]{4}-[0-9]{2}-[0-9]{2}([Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2}))?)$"
        )
    )]
    pub since: Option<String>,
    /// Upper time bound (exclusive).
    #[cfg_attr(
        feature = "openapi",
        param(
            pattern = "^(-?([0-9]+(ms|s|m|h|d|w))+|[0-9]{4}-[0-9]{2}-[0-9]{2}([Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2}))?)$"
        )
    )]
    pub until: Option<String>,
    /// Page size, 1–1000 (default 50).
    #[cfg_attr(feature = "openapi", param(value_type = Option<u32>, minimum = 1, maximum = 1000))]
    pub limit: Option<String>,
    /// Page offset (default 0).
    #[cfg_attr(feature = "openapi", param(value_type = Option<u32>, minimum = 0))]
    pub offset: Option<String>,
    /// `event_data` key, `[A-Za-z0-9_]+`; needs `detail_value`.
    #[cfg_attr(
        feature = "openapi",
        param(min_length = 1, max_length = 100, pattern = "^[A-Za-z0-9_]+$")
    )]
    pub detail_key: Option<String>,
    /// `event_data` value (compared as text); needs `detail_key`.
    #[cfg_attr(
        feature = "openapi",
        param(max_length = 4096, pattern = "^[^\\u0000]*$")
    )]
    pub detail_value: Option<String>,
    /// Exact actor id (extension).
    #[cfg_attr(
        feature = "openapi",
        param(max_length = 255, pattern = "^[^\\u0000]*$")
    )]
    pub actor_id: Option<String>,
    /// Exact resource type (extension).
    #[cfg_attr(
        feature = "openapi",
        param(max_length = 100, pattern = "^[^\\u0000]*$")
    )]
    pub resource_type: Option<String>,
    /// Exact resource id (extension).
    #[cfg_attr(
        feature = "openapi",
        param(max_length = 255, pattern = "^[^\\u0000]*$")
    )]
    pub resource_id: Option<String>,
    /// Exact namespace (extension).
    #[cfg_attr(
        feature = "openapi",
        param(max_length = 253, pattern = "^[^\\u0000]*$")
    )]
    pub namespace: Option<String>,
    /// Exact cluster id (extension).
    #[cfg_attr(
        feature = "openapi",
        param(max_length = 255, pattern = "^[^\\u0000]*$")
    )]
    pub cluster_id: Option<String>,
    /// Cursor from a previous page's `next_cursor` (extension); excludes `offset`.
    pub cursor: Option<String>,
}

/// Position after which the next page starts: the last row's timestamp and id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// Timestamp of the last row returned.
    pub event_timestamp: DateTime<Utc>,
    /// Id of the last row returned.
    pub event_id: Uuid,
}

impl Cursor {
    /// Opaque text form.
    pub fn encode(&self) -> String {
        let raw = format!(
            "{}|{}",
            self.event_timestamp.timestamp_micros(),
            self.event_id
        );
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// Parses [`Cursor::encode`]'s output.
    pub fn decode(text: &str) -> Option<Self> {
        let raw = String::from_utf8(URL_SAFE_NO_PAD.decode(text).ok()?).ok()?;
        let (micros, id) = raw.split_once('|')?;
        Some(Self {
            event_timestamp: DateTime::from_timestamp_micros(micros.parse().ok()?)?,
            event_id: id.parse().ok()?,
        })
    }
}

/// A validated query.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EventFilter {
    /// Exact event type.
    pub event_type: Option<String>,
    /// Category.
    pub event_category: Option<EventCategory>,
    /// Outcome.
    pub event_outcome: Option<EventOutcome>,
    /// Severity, lower-cased.
    pub severity: Option<String>,
    /// Correlation id.
    pub correlation_id: Option<String>,
    /// Inclusive lower bound.
    pub since: Option<DateTime<Utc>>,
    /// Exclusive upper bound.
    pub until: Option<DateTime<Utc>>,
    /// `(key, value)` match in `event_data`.
    pub detail: Option<(String, String)>,
    /// Actor id.
    pub actor_id: Option<String>,
    /// Resource type.
    pub resource_type: Option<String>,
    /// Resource id.
    pub resource_id: Option<String>,
    /// Namespace.
    pub namespace: Option<String>,
    /// Cluster id.
    pub cluster_id: Option<String>,
    /// Page size.
    pub limit: u32,
    /// Offset.
    pub offset: u64,
    /// Keyset position.
    pub cursor: Option<Cursor>,
    /// A chain left out of the results (the server's own access records, unless the query
    /// names that chain by `correlation_id`).
    pub hidden_chain: Option<String>,
}

impl EventQueryParams {
    /// Validates every parameter against `now` (for relative times), naming each bad one.
    pub fn validate(&self, now: DateTime<Utc>) -> Result<EventFilter, FieldErrors> {
        let mut errors = FieldErrors::default();
        // Text filters: the write limits of their fields, and no NUL (PostgreSQL cannot hold
        // one), so no filter can reach the database as something it refuses.
        let texts: [(&str, &Option<String>, usize); 11] = [
            ("event_type", &self.event_type, 100),
            ("correlation_id", &self.correlation_id, 255),
            ("severity", &self.severity, 20),
            ("actor_id", &self.actor_id, 255),
            ("resource_type", &self.resource_type, 100),
            ("resource_id", &self.resource_id, 255),
            ("namespace", &self.namespace, 253),
            ("cluster_id", &self.cluster_id, 255),
            ("detail_value", &self.detail_value, 4096),
            ("event_category", &self.event_category, 50),
            ("event_outcome", &self.event_outcome, 50),
        ];
        for (field, value, max) in texts {
            if let Some(v) = value {
                if v.contains('\0') {
                    errors.add(field, format!("{field} must not contain NUL characters"));
                } else if v.chars().count() > max {
                    errors.add(
                        field,
                        format!(
                            "{field} must be at most {max} characters (got {})",
                            v.chars().count()
                        ),
                    );
                }
            }
        }
        let mut f = EventFilter {
            event_type: self.event_type.clone(),
            severity: self.severity.as_ref().map(|s| s.to_lowercase()),
            correlation_id: self.correlation_id.clone(),
            actor_id: self.actor_id.clone(),
            resource_type: self.resource_type.clone(),
            resource_id: self.resource_id.clone(),
            namespace: self.namespace.clone(),
            cluster_id: self.cluster_id.clone(),
            limit: DEFAULT_PAGE_LIMIT,
            ..EventFilter::default()
        };
        if let Some(c) = &self.event_category {
            match c.parse() {
                Ok(c) => f.event_category = Some(c),
                Err(rule) => errors.add("event_category", format!("event_category {rule}")),
            }
        }
        if let Some(o) = &self.event_outcome {
            match o.parse() {
                Ok(o) => f.event_outcome = Some(o),
                Err(rule) => errors.add("event_outcome", format!("event_outcome {rule}")),
            }
        }
        for (field, raw, slot) in [
            ("since", &self.since, &mut f.since),
            ("until", &self.until, &mut f.until),
        ] {
            if let Some(raw) = raw {
                match parse_time(raw, now).and_then(|t| check_time(&t)) {
                    Ok(t) => *slot = Some(t),
                    Err(rule) => errors.add(field, format!("{field} {rule} (got {raw:?})")),
                }
            }
        }
        if let (Some(s), Some(u)) = (f.since, f.until) {
            if s >= u {
                errors.add("since", "since must be earlier than until");
            }
        }
        if let Some(raw) = &self.limit {
            match raw.parse::<u32>() {
                Ok(n) if (1..=MAX_PAGE_LIMIT).contains(&n) => f.limit = n,
                _ => errors.add(
                    "limit",
                    format!(
                        "limit must be an integer between 1 and {MAX_PAGE_LIMIT} (got {raw:?})"
                    ),
                ),
            }
        }
        if let Some(raw) = &self.offset {
            match raw.parse::<u64>() {
                Ok(n) if n <= i64::MAX as u64 => f.offset = n,
                _ => errors.add(
                    "offset",
                    format!("offset must be an integer of at least 0 (got {raw:?})"),
                ),
            }
        }
        if let Some(raw) = &self.cursor {
            match Cursor::decode(raw).filter(|c| check_time(&c.event_timestamp).is_ok()) {
                Some(c) => f.cursor = Some(c),
                None => errors.add(
                    "cursor",
                    "cursor must be a next_cursor value from a previous page",
                ),
            }
            if f.offset > 0 {
                errors.add("offset", "offset cannot be combined with cursor");
            }
        }
        match (&self.detail_key, &self.detail_value) {
            (Some(k), Some(v)) => {
                let key_ok = !k.is_empty()
                    && k.len() <= 100
                    && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
                if key_ok {
                    f.detail = Some((k.clone(), v.clone()));
                } else {
                    errors.add(
                        "detail_key",
                        "detail_key must match ^[a-zA-Z0-9_]+$ (at most 100 characters)",
                    );
                }
            }
            (Some(_), None) => {
                errors.add("detail_value", "detail_value is required with detail_key")
            }
            (None, Some(_)) => errors.add("detail_key", "detail_key is required with detail_value"),
            (None, None) => {}
        }
        if errors.is_empty() {
            Ok(f)
        } else {
            Err(errors)
        }
    }
}

/// Parses a relative age, an RFC 3339 date-time or a date; returns the rule broken otherwise.
pub fn parse_time(raw: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    const RULE: &str =
        "must be a relative age like 24h or 7d, an RFC 3339 date-time, or a date YYYY-MM-DD";
    let raw = raw.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(raw) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(d) = NaiveDate::parse_from_str(raw, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc());
    }
    let age = parse_age(raw.strip_prefix('-').unwrap_or(raw)).ok_or(RULE)?;
    now.checked_sub_signed(age).ok_or_else(|| RULE.to_owned())
}

/// `1h30m`, `7d`, `2w`, `90s`, `500ms`: a sum of number+unit parts.
fn parse_age(s: &str) -> Option<Duration> {
    if s.is_empty() {
        return None;
    }
    let mut total = Duration::zero();
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let n: i64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let part = match &rest[..unit_len] {
            "ms" => Duration::try_milliseconds(n)?,
            "s" => Duration::try_seconds(n)?,
            "m" => Duration::try_minutes(n)?,
            "h" => Duration::try_hours(n)?,
            "d" => Duration::try_days(n)?,
            "w" => Duration::try_weeks(n)?,
            _ => return None,
        };
        total = total.checked_add(&part)?;
        rest = &rest[unit_len..];
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        "2026-01-10T12:00:00Z".parse().unwrap()
    }

    #[test]
    fn relative_times_are_in_the_past_with_or_without_minus() {
        assert_eq!(
            parse_time("24h", now()).unwrap(),
            "2026-01-09T12:00:00Z".parse::<DateTime<Utc>>().unwrap()
        );
        assert_eq!(
            parse_time("-1d", now()).unwrap(),
            parse_time("1d", now()).unwrap()
        );
        assert_eq!(
            parse_time("1h30m", now()).unwrap(),
            "2026-01-10T10:30:00Z".parse::<DateTime<Utc>>().unwrap()
        );
        assert_eq!(
            parse_time("2025-12-18", now()).unwrap(),
            "2025-12-18T00:00:00Z".parse::<DateTime<Utc>>().unwrap()
        );
        assert!(parse_time("soon", now()).is_err());
        assert!(parse_time("5y", now()).is_err());
    }

    #[test]
    fn bad_parameters_are_named() {
        let p = EventQueryParams {
            limit: Some("0".into()),
            offset: Some("-1".into()),
            event_outcome: Some("maybe".into()),
            detail_key: Some("a-b".into()),
            detail_value: Some("x".into()),
            since: Some("tomorrow".into()),
            ..Default::default()
        };
        let e = p.validate(now()).unwrap_err().0;
        for k in ["limit", "offset", "event_outcome", "detail_key", "since"] {
            assert!(e.contains_key(k), "{k}: {e:?}");
        }
    }

    #[test]
    fn enumerated_filters_ignore_case() {
        let p = EventQueryParams {
            event_category: Some("GATEWAY".into()),
            severity: Some("Critical".into()),
            ..Default::default()
        };
        let f = p.validate(now()).unwrap();
        assert_eq!(f.event_category, Some(EventCategory::Gateway));
        assert_eq!(f.severity.as_deref(), Some("critical"));
    }

    #[test]
    fn cursor_round_trips() {
        let c = Cursor {
            event_timestamp: now(),
            event_id: Uuid::now_v7(),
        };
        assert_eq!(Cursor::decode(&c.encode()), Some(c));
        assert_eq!(Cursor::decode("garbage"), None);
    }
}
