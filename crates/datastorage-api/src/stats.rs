//! `GET /api/v1/audit/stats`: events per category and outcome over time, one aggregate query.
//!
//! The range is `since` (default `until` minus 24 hours) to `until` (default now), cut into
//! buckets of `bucket` (one of [`BUCKETS`]; by default the smallest giving at most
//! [`AUTO_BUCKETS`] buckets), aligned to multiples of the bucket since the Unix epoch. At most
//! [`MAX_BUCKETS`] buckets per answer. Every filter of `GET /api/v1/audit/events` applies;
//! paging does not.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::query::EventFilter;
use crate::types::{EventCategory, EventOutcome};
use crate::validate::FieldErrors;
use crate::EventQueryParams;

/// The buckets a request may name, with their length in seconds.
pub const BUCKETS: [(&str, i64); 6] = [
    ("1m", 60),
    ("5m", 300),
    ("15m", 900),
    ("1h", 3600),
    ("6h", 21_600),
    ("1d", 86_400),
];

/// Most buckets one answer may span.
pub const MAX_BUCKETS: i64 = 1000;

/// Most buckets the automatic choice aims for.
pub const AUTO_BUCKETS: i64 = 120;

/// One non-empty bucket of one category and outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StatsBucket {
    /// Start of the bucket (inclusive).
    pub start: DateTime<Utc>,
    /// Category.
    pub event_category: EventCategory,
    /// Outcome.
    pub event_outcome: EventOutcome,
    /// Events in the bucket.
    pub count: u64,
}

/// Answer of `GET /api/v1/audit/stats`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditStatsResponse {
    /// Start of the range (inclusive).
    pub since: DateTime<Utc>,
    /// End of the range (exclusive).
    pub until: DateTime<Utc>,
    /// The bucket's name (`1m` … `1d`).
    pub bucket: String,
    /// The bucket's length in seconds.
    pub bucket_seconds: i64,
    /// Events in the range.
    pub total: u64,
    /// The non-empty buckets, by start, then category and outcome.
    pub buckets: Vec<StatsBucket>,
}

/// A validated stats request.
#[derive(Debug, Clone, PartialEq)]
pub struct StatsRequest {
    /// The filters, `since` and `until` always set.
    pub filter: EventFilter,
    /// The bucket's name.
    pub bucket: &'static str,
    /// The bucket's length in seconds.
    pub bucket_seconds: i64,
    /// Start of the first bucket: `since` rounded down to a multiple of the bucket.
    pub origin: DateTime<Utc>,
}

/// `a / b` rounded up, for `a >= 0`, `b > 0` (`i64::div_ceil` is unstable).
fn ceil_div(a: i64, b: i64) -> i64 {
    (a + b - 1) / b
}

/// Validates the query of a stats request (`bucket` apart, the events query's parameters).
pub fn validate_stats(
    params: &EventQueryParams,
    bucket: Option<&str>,
    now: DateTime<Utc>,
) -> Result<StatsRequest, FieldErrors> {
    let mut errors = FieldErrors::default();
    for (name, value) in [
        ("limit", &params.limit),
        ("offset", &params.offset),
        ("cursor", &params.cursor),
    ] {
        if value.is_some() {
            errors.add(
                name,
                format!("{name} does not apply to stats, which answer one aggregate"),
            );
        }
    }
    let mut filter = match params.validate(now) {
        Ok(filter) => filter,
        Err(e) => {
            errors.merge_prefixed("", e);
            return Err(errors);
        }
    };
    let until = filter.until.unwrap_or(now);
    let since = filter.since.unwrap_or(until - Duration::hours(24));
    if since >= until {
        errors.add("since", "since must be earlier than until (or than now)");
        return Err(errors);
    }
    let span = (until - since).num_seconds().max(1);
    let chosen = match bucket {
        Some(name) => match BUCKETS.iter().find(|(n, _)| *n == name) {
            Some(&b) => Some(b),
            None => {
                let names = BUCKETS.map(|(n, _)| n).join(", ");
                errors.add(
                    "bucket",
                    format!("bucket must be one of {names} (got {name:?})"),
                );
                None
            }
        },
        None => Some(
            BUCKETS
                .iter()
                .copied()
                .find(|(_, s)| ceil_div(span, *s) <= AUTO_BUCKETS)
                .unwrap_or(BUCKETS[BUCKETS.len() - 1]),
        ),
    };
    let Some((name, seconds)) = chosen else {
        return Err(errors);
    };
    let origin_secs = since.timestamp().div_euclid(seconds) * seconds;
    let buckets = ceil_div(until.timestamp() - origin_secs, seconds);
    if buckets > MAX_BUCKETS {
        errors.add(
            if bucket.is_some() { "bucket" } else { "since" },
            format!("bucket {name} over this range gives {buckets} buckets; at most {MAX_BUCKETS}: choose a larger bucket or a shorter range"),
        );
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    filter.since = Some(since);
    filter.until = Some(until);
    Ok(StatsRequest {
        filter,
        bucket: name,
        bucket_seconds: seconds,
        origin: DateTime::from_timestamp(origin_secs, 0).unwrap_or(since),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(since: &str, until: &str) -> EventQueryParams {
        EventQueryParams {
            since: Some(since.to_owned()),
            until: Some(until.to_owned()),
            ..Default::default()
        }
    }

    #[test]
    fn buckets_are_chosen_aligned_and_bounded() {
        let now = Utc::now();
        let day = params("2026-12-01T00:30:00Z", "2026-12-02T00:00:00Z");
        let r = validate_stats(&day, None, now).unwrap();
        // 23.5 hours: 15 m gives 94 buckets, the smallest at most 120.
        assert_eq!((r.bucket, r.bucket_seconds), ("15m", 900));
        assert_eq!(r.origin.to_rfc3339(), "2026-12-01T00:30:00+00:00");
        let r = validate_stats(&day, Some("1h"), now).unwrap();
        assert_eq!(r.origin.to_rfc3339(), "2026-12-01T00:00:00+00:00");
        let month = params("2026-11-01", "2026-12-01");
        let e = validate_stats(&month, Some("1m"), now).unwrap_err();
        assert!(e.0.contains_key("bucket"), "{e:?}");
        let e = validate_stats(&month, Some("2m"), now).unwrap_err();
        assert!(e.summary().contains("one of 1m, 5m"), "{e:?}");
        let backwards = params("2026-12-02", "2026-12-01");
        assert!(validate_stats(&backwards, None, now).is_err());
        let paged = EventQueryParams {
            limit: Some("5".to_owned()),
            ..Default::default()
        };
        let e = validate_stats(&paged, None, now).unwrap_err();
        assert!(e.0.contains_key("limit"), "{e:?}");
        // Defaults: the last 24 hours.
        let r = validate_stats(&EventQueryParams::default(), None, now).unwrap();
        assert_eq!(r.filter.until, Some(now));
        assert_eq!(r.filter.since, Some(now - Duration::hours(24)));
    }
}
