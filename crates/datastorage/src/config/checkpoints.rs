//! `checkpoints:`: the signed checkpoint log of chain heads.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::values::duration;

/// Default time between checkpoints.
pub const DEFAULT_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(300);

/// `checkpoints:`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct CheckpointSettings {
    /// Whether the checkpoint worker runs.
    pub enabled: bool,
    /// Time between checkpoints (one replica writes each, through a lease).
    #[serde(with = "duration")]
    pub interval: Duration,
    /// A file every checkpoint is appended to, one JSON line each (off-host: a mounted volume
    /// another system ships away).
    pub publish_file: Option<PathBuf>,
    /// A URL every checkpoint is POSTed to as JSON (a transparency log, a SIEM).
    pub publish_url: Option<String>,
}

impl Default for CheckpointSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            interval: DEFAULT_CHECKPOINT_INTERVAL,
            publish_file: None,
            publish_url: None,
        }
    }
}

impl CheckpointSettings {
    /// The rules of this section, as messages naming the key.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.interval < Duration::from_secs(1) {
            problems.push("checkpoints.interval must be at least 1s".to_owned());
        }
        if let Some(url) = &self.publish_url {
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                problems.push(format!(
                    "checkpoints.publishUrl must be an http:// or https:// URL (got {url:?})"
                ));
            }
        }
        problems
    }
}
