//! The client's durable spool: batches the server could not take, on disk, so that they survive
//! a server outage and a restart of the host process. The segment files and their rules are
//! [`datastorage_spool`]'s, shared with the server's outage buffer; this module holds what only
//! the client has (the watermark) and the record type: one JSON array of events, every one with
//! its client-generated `event_id`, so a replay of a batch the server already stored is an
//! idempotent no-op there.

use std::path::PathBuf;

use datastorage_api::AuditEventRequest;
use datastorage_spool::{Durability, SpoolOptions};
pub use datastorage_spool::{DEFAULT_SEGMENT_BYTES, DEFAULT_SPOOL_MAX_BYTES};

/// The spool of event batches.
pub(crate) type Spool = datastorage_spool::Spool<Vec<AuditEventRequest>>;

/// Default queue fill at which batches go to the spool instead of waiting in memory: 80 %.
pub const DEFAULT_WATERMARK: Watermark = Watermark::Percent(80);

/// Queue fill at which the store writes batches to the spool rather than keep them in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Watermark {
    /// A share of `queue_capacity`, 1..=100 percent.
    Percent(u8),
    /// An absolute number of queued events.
    Events(usize),
}

impl Watermark {
    /// The watermark as a number of queued events, at least 1.
    pub fn events(self, queue_capacity: usize) -> usize {
        match self {
            Watermark::Percent(p) => (queue_capacity * usize::from(p.min(100)) / 100).max(1),
            Watermark::Events(n) => n.max(1),
        }
    }
}

/// Settings of the durable spool (`StoreConfig::spool`; off when `None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolConfig {
    /// Directory of the segment files; created when missing. One store per directory.
    pub dir: PathBuf,
    /// Queue fill past which batches go to the spool when every delivery slot is busy, default
    /// [`DEFAULT_WATERMARK`].
    pub watermark: Watermark,
    /// Largest total size of the segments, default [`DEFAULT_SPOOL_MAX_BYTES`]. A batch that would
    /// pass it is not spooled; its events count as `failed`.
    pub max_bytes: u64,
    /// Size at which a segment is sealed, default [`DEFAULT_SEGMENT_BYTES`].
    pub segment_bytes: u64,
}

impl SpoolConfig {
    /// A spool in `dir` with the default watermark and sizes.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            watermark: DEFAULT_WATERMARK,
            max_bytes: DEFAULT_SPOOL_MAX_BYTES,
            segment_bytes: DEFAULT_SEGMENT_BYTES,
        }
    }

    pub(crate) fn problems(&self, out: &mut Vec<&'static str>) {
        if self.dir.as_os_str().is_empty() {
            out.push("spool.dir must not be empty");
        }
        if matches!(self.watermark, Watermark::Percent(p) if p == 0 || p > 100) {
            out.push("spool.watermark percent must be 1..=100");
        }
        if self.segment_bytes == 0 || self.max_bytes < self.segment_bytes {
            out.push("spool.segment_bytes must be at least 1 and at most spool.max_bytes");
        }
    }

    /// The segment files' settings: sealed segments are fsynced; a crash of the process loses
    /// nothing, since the events are still the caller's until they are spooled.
    pub(crate) fn options(&self) -> SpoolOptions {
        SpoolOptions {
            dir: self.dir.clone(),
            max_bytes: self.max_bytes,
            segment_bytes: self.segment_bytes,
            durability: Durability::OnSeal,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watermark_is_a_share_or_a_count() {
        assert_eq!(Watermark::Percent(80).events(10_000), 8_000);
        assert_eq!(Watermark::Percent(1).events(10), 1);
        assert_eq!(Watermark::Events(0).events(10), 1);
        assert_eq!(Watermark::Events(300).events(10), 300);
    }
}
