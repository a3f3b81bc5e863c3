//! [`StoreConfig`]: the settings of an [`crate::AuditStore`], with their documented defaults,
//! and the rules they must follow.

use std::time::Duration;

use crate::backoff::RetryPolicy;
use crate::spool::SpoolConfig;

/// Events the queue holds before the overflow policy applies.
pub const DEFAULT_QUEUE_CAPACITY: usize = 10_000;

/// Most events per batch request: the server's default `server.maxBatchSize`. A server with a
/// lower limit answers `batch-size-exceeded` and the store learns it.
pub const DEFAULT_MAX_BATCH: usize = datastorage_api::DEFAULT_MAX_BATCH_SIZE;

/// Batch requests on the wire at once.
pub const DEFAULT_IN_FLIGHT: usize = 4;

/// Longest an event waits in the queue for a batch to fill before it is sent anyway.
pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// What `record` does when the queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OverflowPolicy {
    /// Refuse the new event at once with [`RecordError::QueueFull`](crate::RecordError::QueueFull) and count it in `dropped`.
    /// The host service never slows down. The default.
    #[default]
    DropNewest,
    /// Wait up to `timeout` for room; then refuse with [`RecordError::QueueFull`](crate::RecordError::QueueFull) and count the
    /// event in `dropped`. Trades host latency for completeness.
    Block {
        /// Longest `record` waits for room.
        timeout: Duration,
    },
}

/// Settings of an [`AuditStore`](crate::AuditStore); `Default` gives the documented defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    /// Events held in memory, default [`DEFAULT_QUEUE_CAPACITY`].
    pub queue_capacity: usize,
    /// Most events per batch, default [`DEFAULT_MAX_BATCH`]; lowered at run time when the server
    /// says its limit is lower, never raised.
    pub max_batch: usize,
    /// Batches on the wire at once, default [`DEFAULT_IN_FLIGHT`].
    pub in_flight: usize,
    /// Longest an event waits for its batch to fill, default [`DEFAULT_FLUSH_INTERVAL`].
    pub flush_interval: Duration,
    /// What `record` does when the queue is full, default [`OverflowPolicy::DropNewest`].
    pub overflow: OverflowPolicy,
    /// Backoff and deadline of retries.
    pub retry: RetryPolicy,
    /// The durable spool directory; `None` (the default) keeps everything in memory.
    pub spool: Option<SpoolConfig>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            max_batch: DEFAULT_MAX_BATCH,
            in_flight: DEFAULT_IN_FLIGHT,
            flush_interval: DEFAULT_FLUSH_INTERVAL,
            overflow: OverflowPolicy::default(),
            retry: RetryPolicy::default(),
            spool: None,
        }
    }
}

impl StoreConfig {
    /// Every rule the settings must follow, all problems at once.
    pub fn validate(&self) -> Result<(), StoreError> {
        let mut problems = Vec::new();
        if self.queue_capacity == 0 {
            problems.push("queue_capacity must be at least 1");
        }
        if self.max_batch == 0 {
            problems.push("max_batch must be at least 1");
        }
        if self.in_flight == 0 {
            problems.push("in_flight must be at least 1");
        }
        if self.flush_interval.is_zero() {
            problems.push("flush_interval must be longer than zero");
        }
        if self.retry.initial_backoff.is_zero() {
            problems.push("retry.initial_backoff must be longer than zero");
        }
        if let Some(spool) = &self.spool {
            spool.problems(&mut problems);
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(StoreError::InvalidConfig(problems.join("; ")))
        }
    }
}

/// Why an [`AuditStore`](crate::AuditStore) could not be built.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A setting broke a rule.
    #[error("invalid audit store settings: {0}")]
    InvalidConfig(String),
    /// The spool directory could not be opened.
    #[error("cannot open the audit spool directory {dir}")]
    Spool {
        /// The directory.
        dir: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}
