//! [`EventRules`]: what an event must meet beyond the contract's own rules (`validation:`): a
//! bound on how far `event_timestamp` may lie in the future, and the payload schema of its
//! `event_data` ([`EventDataSchemas`]) when one is configured.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use datastorage_api::validate::{FieldErrors, ValidatedEvent};
use serde_json::Value;

use super::event_data_schema::EventDataSchemas;
use crate::config::ValidationSettings;

/// The rules in force, built once at start.
#[derive(Debug, Clone, Default)]
pub struct EventRules {
    /// `validation.maxFutureSkew`; `None`: no bound.
    max_future_skew: Option<chrono::Duration>,
    /// `validation.eventDataSchema`, compiled; `None`: any JSON object.
    event_data: Option<Arc<EventDataSchemas>>,
}

impl EventRules {
    /// The rules of `settings`, with the `validation.eventDataSchema` file read and compiled.
    /// Errors name the key.
    pub fn new(settings: &ValidationSettings) -> anyhow::Result<Self> {
        let max_future_skew = if settings.max_future_skew.is_zero() {
            None
        } else {
            Some(
                chrono::Duration::from_std(settings.max_future_skew)
                    .map_err(|_| anyhow::anyhow!("validation.maxFutureSkew is too large"))?,
            )
        };
        let event_data = match &settings.event_data_schema {
            Some(path) => {
                let schemas = EventDataSchemas::load(path)?;
                tracing::info!(
                    file = %path.display(),
                    schemas = ?schemas,
                    "validation.eventDataSchema loaded"
                );
                Some(Arc::new(schemas))
            }
            None => None,
        };
        Ok(Self {
            max_future_skew,
            event_data,
        })
    }

    /// Every rule `event` breaks, by field, at `now`. `event` is borrowed mutably only to lend
    /// its `event_data` to the schema validator without copying it; it is left as it was.
    pub fn check(&self, event: &mut ValidatedEvent, now: DateTime<Utc>) -> Result<(), FieldErrors> {
        let mut errors = FieldErrors::default();
        if let Some(schemas) = &self.event_data {
            let data = Value::Object(std::mem::take(&mut event.event_data));
            schemas.check(&event.event_type, &data, &mut errors);
            if let Value::Object(map) = data {
                event.event_data = map;
            }
        }
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
        assert!(rules
            .check(&mut event_at("2026-12-01T12:59:00Z"), now)
            .is_ok());
        assert!(rules
            .check(&mut event_at("2001-01-01T00:00:00Z"), now)
            .is_ok());
        let far = rules
            .check(&mut event_at("2849-01-01T00:00:00Z"), now)
            .unwrap_err();
        assert!(far.0["event_timestamp"].contains("ahead"), "{far:?}");

        let unbounded = EventRules::new(&ValidationSettings {
            max_future_skew: Duration::ZERO,
            ..ValidationSettings::default()
        })
        .unwrap();
        assert!(unbounded
            .check(&mut event_at("2849-01-01T00:00:00Z"), now)
            .is_ok());
    }
}
