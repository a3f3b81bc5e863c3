//! `explorer:`: the auditor's web explorer under `/ui/`, and the live stream of committed
//! events (`GET /api/v1/audit/events/stream`) that it and `events tail` read.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::values::duration;

/// Default most stream subscribers at once.
pub const DEFAULT_STREAM_MAX_SUBSCRIBERS: usize = 256;
/// Largest accepted `explorer.streamMaxSubscribers`.
pub const MAX_STREAM_MAX_SUBSCRIBERS: usize = 10_000;
/// Default events a subscriber may fall behind by before it loses the oldest.
pub const DEFAULT_STREAM_BUFFER_EVENTS: usize = 1024;
/// Largest accepted `explorer.streamBufferEvents`.
pub const MAX_STREAM_BUFFER_EVENTS: usize = 65_536;
/// Default time between keep-alive comments on an idle stream.
pub const DEFAULT_STREAM_KEEP_ALIVE: Duration = Duration::from_secs(15);

/// `explorer:`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct ExplorerSettings {
    /// Whether `/ui/` serves the explorer (its data comes from the API, under the API's access
    /// rules, either way).
    pub enabled: bool,
    /// Most subscribers of the live stream at once; one more is answered 503.
    pub stream_max_subscribers: usize,
    /// Events one subscriber may fall behind by; past it the oldest are skipped and the
    /// subscriber is told how many (`lagged`). Writes never wait for a subscriber.
    pub stream_buffer_events: usize,
    /// Time between keep-alive comments on an idle stream (proxies close silent connections).
    #[serde(with = "duration")]
    pub stream_keep_alive: Duration,
}

impl Default for ExplorerSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            stream_max_subscribers: DEFAULT_STREAM_MAX_SUBSCRIBERS,
            stream_buffer_events: DEFAULT_STREAM_BUFFER_EVENTS,
            stream_keep_alive: DEFAULT_STREAM_KEEP_ALIVE,
        }
    }
}

impl ExplorerSettings {
    /// The rules of this section, as messages naming the key.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !(1..=MAX_STREAM_MAX_SUBSCRIBERS).contains(&self.stream_max_subscribers) {
            problems.push(format!(
                "explorer.streamMaxSubscribers must be between 1 and {MAX_STREAM_MAX_SUBSCRIBERS} (got {})",
                self.stream_max_subscribers
            ));
        }
        if !(16..=MAX_STREAM_BUFFER_EVENTS).contains(&self.stream_buffer_events) {
            problems.push(format!(
                "explorer.streamBufferEvents must be between 16 and {MAX_STREAM_BUFFER_EVENTS} (got {})",
                self.stream_buffer_events
            ));
        }
        if !(Duration::from_secs(1)..=Duration::from_secs(300)).contains(&self.stream_keep_alive) {
            problems.push("explorer.streamKeepAlive must be between 1s and 5m".to_owned());
        }
        problems
    }
}
