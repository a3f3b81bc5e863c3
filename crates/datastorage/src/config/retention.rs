//! `retention:`: upstream's purge worker, active, plus the time partitions it drops.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::values::duration;

/// Default time between purge runs (upstream's).
pub const DEFAULT_RETENTION_INTERVAL: Duration = Duration::from_secs(24 * 3600);
/// Default rows deleted per batch (upstream's).
pub const DEFAULT_RETENTION_BATCH_SIZE: u32 = 1000;
/// Most rows one delete batch may take.
pub const MAX_RETENTION_BATCH_SIZE: u32 = 100_000;
/// Default wait after start before the first purge run.
pub const DEFAULT_RETENTION_START_DELAY: Duration = Duration::from_secs(10);
/// Default number of partitions kept ready ahead of the current one.
pub const DEFAULT_PARTITIONS_AHEAD: u32 = 3;

/// The span of one partition of `audit_events` (PostgreSQL).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PartitionInterval {
    /// One partition per UTC day.
    Daily,
    /// One partition per UTC month.
    #[default]
    Monthly,
}

impl PartitionInterval {
    /// The name the partition function takes.
    pub fn as_str(self) -> &'static str {
        match self {
            PartitionInterval::Daily => "daily",
            PartitionInterval::Monthly => "monthly",
        }
    }
}

/// `retention:`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct RetentionSettings {
    /// Whether the purge runs (upstream's default: on). Expired events are kept while off.
    pub enabled: bool,
    /// Time between purge runs.
    #[serde(with = "duration")]
    pub interval: Duration,
    /// Wait after start before the first run (a short one: a restarted replica does not wait a
    /// whole interval).
    #[serde(with = "duration")]
    pub start_delay: Duration,
    /// Rows deleted per batch (each batch is its own short transaction).
    pub batch_size: u32,
    /// Retention of events sent without `retention_days`, in days.
    pub default_days: u32,
    /// Whether a partition whose every event has expired and none is held is dropped whole
    /// (PostgreSQL), instead of deleted row by row. Upstream declares this key and never reads
    /// it; here it is on by default.
    pub partition_drop_enabled: bool,
    /// Span of a partition of `audit_events`: `daily` or `monthly` (PostgreSQL).
    pub partition_interval: PartitionInterval,
    /// Partitions created ahead of the current one, by the partition worker (PostgreSQL).
    pub partitions_ahead: u32,
    /// Floors by event category, in days: an event of the category is kept at least this long,
    /// whatever its own `retention_days` says.
    pub category_minimum_days: BTreeMap<String, u32>,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            interval: DEFAULT_RETENTION_INTERVAL,
            start_delay: DEFAULT_RETENTION_START_DELAY,
            batch_size: DEFAULT_RETENTION_BATCH_SIZE,
            default_days: datastorage_api::DEFAULT_RETENTION_DAYS as u32,
            partition_drop_enabled: true,
            partition_interval: PartitionInterval::Monthly,
            partitions_ahead: DEFAULT_PARTITIONS_AHEAD,
            category_minimum_days: BTreeMap::new(),
        }
    }
}

impl RetentionSettings {
    /// The rules of this section, as messages naming the key.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.interval < Duration::from_secs(1) {
            problems.push("retention.interval must be at least 1s".to_owned());
        }
        if !(1..=MAX_RETENTION_BATCH_SIZE).contains(&self.batch_size) {
            problems.push(format!(
                "retention.batchSize must be between 1 and {MAX_RETENTION_BATCH_SIZE} (got {})",
                self.batch_size
            ));
        }
        let max_days = datastorage_api::validate::MAX_RETENTION_DAYS as u32;
        if !(1..=max_days).contains(&self.default_days) {
            problems.push(format!(
                "retention.defaultDays must be between 1 and {max_days} (got {})",
                self.default_days
            ));
        }
        if !(1..=36).contains(&self.partitions_ahead) {
            problems.push(format!(
                "retention.partitionsAhead must be between 1 and 36 (got {})",
                self.partitions_ahead
            ));
        }
        for (category, days) in &self.category_minimum_days {
            if category.parse::<datastorage_api::EventCategory>().is_err() {
                problems.push(format!(
                    "retention.categoryMinimumDays.{category}: not an event category (one of {})",
                    datastorage_api::EventCategory::ALL
                        .iter()
                        .map(|c| c.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            if !(1..=max_days).contains(days) {
                problems.push(format!(
                    "retention.categoryMinimumDays.{category} must be between 1 and {max_days} days (got {days})"
                ));
            }
        }
        problems
    }
}
