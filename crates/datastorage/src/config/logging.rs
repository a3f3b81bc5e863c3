//! `logging:`: level and format of the log lines.

use serde::{Deserialize, Serialize};

/// `logging:`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct LoggingSettings {
    /// `error`, `warn`, `info`, `debug`, `trace` or `off` (any case), or a `tracing` filter
    /// directive.
    pub level: String,
    /// `json` (one object per line) or `text`.
    pub format: LogFormat,
    /// One line per request at `info`: method, route template, status, duration, request id.
    pub access_log: bool,
}

impl Default for LoggingSettings {
    fn default() -> Self {
        Self {
            level: "info".to_owned(),
            format: LogFormat::Json,
            access_log: true,
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable lines.
    Text,
}
