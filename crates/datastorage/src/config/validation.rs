//! `validation:`: rules an event must meet beyond the contract's own.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::values::duration;

/// Default longest an `event_timestamp` may lie ahead of the server's clock (upstream's 60
/// minutes).
pub const DEFAULT_MAX_FUTURE_SKEW: Duration = Duration::from_secs(60 * 60);

/// `validation:`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct ValidationSettings {
    /// Longest an `event_timestamp` may lie ahead of the server's clock; later ones are a 400.
    /// Late events are always accepted (buffered clients and outage replays deliver them).
    /// `0s`: no bound.
    #[serde(with = "duration")]
    pub max_future_skew: Duration,
    /// An OpenAPI (3.x) or JSON Schema file whose schemas `event_data` must match, chosen by
    /// `event_type`; unset: any JSON object.
    pub event_data_schema: Option<PathBuf>,
    /// An event sent without `event_id` gets an id derived from its whole content (including
    /// `event_timestamp`, `correlation_id` and the principal), so a retried write without ids
    /// is an idempotent replay instead of a second row.
    pub fingerprint_replays: bool,
}

impl Default for ValidationSettings {
    fn default() -> Self {
        Self {
            max_future_skew: DEFAULT_MAX_FUTURE_SKEW,
            event_data_schema: None,
            fingerprint_replays: false,
        }
    }
}
