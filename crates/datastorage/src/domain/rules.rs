//! [`EventRules`]: what an event must meet beyond the contract's own rules (`validation:`): a
//! bound on how far `event_timestamp` may lie in the future.

use chrono::{DateTime, Utc};
use datastorage_api::validate::{FieldErrors, ValidatedEvent};

use crate::config::ValidationSettings;

/// The rules in force, built once at start.
#[derive(Debug, Clone, Default)]
pub struct EventRules {
    /// `validation.maxFutureSkew`; `None`: no bound.
    max_future_skew: Option<chrono::Duration>,
}

impl EventRules {
    /// The rules of `settings`. Errors name the key.
    pub fn new(settings: &ValidationSettings) -> anyhow::Result<Self> {
        let max_future_skew = if settings.max_future_skew.is_zero() {
            None
        } else {
            Some(
                chrono::Duration::from_std(settings.max_future_skew)
                    .map_err(|_| anyhow::anyhow!("validation.maxFutureSkew is too large"))?,
            )
        };
        Ok(Self { max_future_skew })
    }

    /// Every rule `event` breaks, by field, at `now`.
    pub fn check(&self, event: &ValidatedEvent, now: DateTime<Utc>) -> Result<(), FieldErrors> {
        let mut errors = FieldErrors::default();
        if let Some(skew) = self.max_future_skew {
            if event.event_timestamp > now + skew {
                errors.add(
                    "event_timestamp",
                    format!(
                        "lies more than {} ahead of the server's clock ({}); send the time the event happened (validation.maxFutureSkew)",
                        crate::config::format_duration(skew.to_std().unwrap_or_default()),
                        now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                    ),
                );
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use datastorage_api::validate::validate_event;
    use serde_json::json;

    use super::*;

    fn event_at(timestamp: &str) -> ValidatedEvent {
        validate_event(&json!({
            "version": "1.0", "event_type": "t", "event_timestamp": timestamp,
            "event_category": "gateway", "event_action": "a", "event_outcome": "success",
            "correlation_id": "c", "event_data": {}
        }))
        .unwrap()
    }

    #[test]
    fn far_future_timestamps_are_refused_and_late_ones_kept() {
        let rules = EventRules::new(&ValidationSettings::default()).unwrap();
        let now: DateTime<Utc> = "2026-12-01T12:00:00Z".parse().unwrap();
        assert!(rules.check(&event_at("2026-12-01T12:59:00Z"), now).is_ok());
        assert!(rules.check(&event_at("2001-01-01T00:00:00Z"), now).is_ok());
        let far = rules
            .check(&event_at("2849-01-01T00:00:00Z"), now)
            .unwrap_err();
        assert!(far.0["event_timestamp"].contains("ahead"), "{far:?}");

        let unbounded = EventRules::new(&ValidationSettings {
            max_future_skew: Duration::ZERO,
            ..ValidationSettings::default()
        })
        .unwrap();
        assert!(unbounded
            .check(&event_at("2849-01-01T00:00:00Z"), now)
            .is_ok());
    }
}
