//! The outage buffer: writes accepted while the database cannot be reached, kept durably until
//! the replay worker ([`crate::workers::replay`]) has committed them.
//!
//! Rules:
//! - Only an outage ([`crate::db::DbError::is_outage`]) sends a write here; a saturated database
//!   still answers `503` with `Retry-After`. While the database is known to be down (a write
//!   met an outage, or a readiness probe failed), writes come here without trying it; the
//!   replay worker probes it every `buffer.probeInterval` and clears that state.
//! - A write is validated and stamped first (ids, `ingested_by`, defaults), then kept whole:
//!   one record per request, a batch all or nothing. Every event is marked as carrying its id
//!   (`id_supplied`), so a replay of a write the database did commit is an idempotent no-op.
//! - The `202` is sent only once the record is durable: fsynced (`disk`), or acknowledged by
//!   Redis (`redis`). A buffer that is full or fails refuses with `503`: nothing is accepted
//!   that cannot be kept.
//! - A record leaves the buffer only after its events are committed, or after it is written to
//!   the quarantine with the database's reason.

mod disk;
mod redis;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use datastorage_api::ValidatedEvent;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::config::{BufferBackend, BufferSettings, RedisSettings};
use crate::metrics::BufferMetrics;

/// One accepted write: the events of one request, as validated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BufferedWrite {
    /// When the buffer accepted it.
    pub accepted_at: DateTime<Utc>,
    /// Whether it came as a batch (replayed atomically) or a single event.
    pub batch: bool,
    /// Events in it (read at start without parsing the events themselves).
    pub count: usize,
    /// The events, ids assigned.
    pub events: Vec<ValidatedEvent>,
}

impl BufferedWrite {
    fn new(mut events: Vec<ValidatedEvent>, batch: bool) -> Self {
        for e in &mut events {
            e.id_supplied = true;
        }
        Self {
            accepted_at: Utc::now(),
            batch,
            count: events.len(),
            events,
        }
    }
}

/// A record handed to the replay, not yet settled.
#[derive(Debug, Clone)]
pub struct Pending {
    /// The write.
    pub write: BufferedWrite,
    token: Token,
}

#[derive(Debug, Clone)]
enum Token {
    /// Position in the disk cursor; the segment is finished with its last record.
    Disk,
    /// A Redis stream entry id.
    Redis(String),
}

/// Why the buffer did not take a write.
#[derive(Debug, thiserror::Error)]
pub enum BufferError {
    /// Taking it would pass the buffer's bound.
    #[error("the outage buffer is full ({0})")]
    Full(String),
    /// The buffer's storage failed.
    #[error("the outage buffer cannot store now: {0}")]
    Failed(String),
}

impl BufferError {
    /// The `reason` label of the refusal counter.
    pub fn reason(&self) -> &'static str {
        match self {
            BufferError::Full(_) => "full",
            BufferError::Failed(_) => "failed",
        }
    }
}

enum Backend {
    Disk(disk::DiskBuffer),
    Redis(redis::RedisBuffer),
}

/// The buffer, shared by the write door and the replay worker.
pub struct OutageBuffer {
    backend: Backend,
    metrics: BufferMetrics,
    /// The database is known to be unreachable: writes come here without trying it.
    down: AtomicBool,
    /// The last append (or probe of the backend) succeeded.
    healthy: AtomicBool,
    /// The last append was refused as full, and nothing was settled since.
    full: AtomicBool,
    /// Accepted events not yet settled, for `is_empty` without a round trip.
    depth: AtomicU64,
    wake: Notify,
    settings: BufferSettings,
}

impl std::fmt::Debug for OutageBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutageBuffer")
            .field("backend", &self.settings.backend)
            .field("down", &self.down)
            .field("depth", &self.depth)
            .finish_non_exhaustive()
    }
}

impl OutageBuffer {
    /// Opens the configured backend; what an earlier run left is queued for replay.
    /// `consumer` names this replica in the Redis consumer group (unique per process).
    pub async fn open(
        settings: &BufferSettings,
        redis: Option<&RedisSettings>,
        consumer: &str,
        metrics: BufferMetrics,
    ) -> anyhow::Result<Arc<Self>> {
        let (backend, depth) = match settings.backend {
            BufferBackend::Disk => {
                let (disk, depth) = disk::DiskBuffer::open(settings).await?;
                (Backend::Disk(disk), depth)
            }
            BufferBackend::Redis => {
                let redis = redis.cloned().unwrap_or_default();
                let (r, depth) = redis::RedisBuffer::open(settings, &redis, consumer).await?;
                (Backend::Redis(r), depth)
            }
        };
        if depth.events > 0 {
            tracing::info!(
                events = depth.events,
                backend = ?settings.backend,
                "outage buffer holds writes from an earlier run; queued for replay"
            );
        }
        let buffer = Arc::new(Self {
            backend,
            metrics,
            down: AtomicBool::new(false),
            healthy: AtomicBool::new(true),
            full: AtomicBool::new(false),
            depth: AtomicU64::new(depth.events),
            wake: Notify::new(),
            settings: settings.clone(),
        });
        buffer.publish(&depth);
        Ok(buffer)
    }

    /// The settings it was opened with.
    pub fn settings(&self) -> &BufferSettings {
        &self.settings
    }

    /// Keeps one write durably; returns once it is durable. Counts it as accepted, or the
    /// refusal by reason.
    pub async fn accept(
        &self,
        events: Vec<ValidatedEvent>,
        batch: bool,
    ) -> Result<(), BufferError> {
        let write = BufferedWrite::new(events, batch);
        let count = write.count;
        let result = match &self.backend {
            Backend::Disk(d) => d.append(write).await,
            Backend::Redis(r) => r.append(&write).await,
        };
        match &result {
            Ok(()) => {
                self.healthy.store(true, Ordering::Relaxed);
                self.depth.fetch_add(count as u64, Ordering::Relaxed);
                self.metrics.accepted.inc_by(count as u64);
                self.metrics.buffering.set(1);
                self.metrics
                    .events
                    .set(self.depth.load(Ordering::Relaxed) as i64);
                self.wake.notify_one();
            }
            Err(e) => {
                match e {
                    BufferError::Failed(_) => self.healthy.store(false, Ordering::Relaxed),
                    BufferError::Full(_) => self.full.store(true, Ordering::Relaxed),
                }
                self.metrics.refused(e.reason()).inc_by(count as u64);
                tracing::warn!(error = %e, events = count, "outage buffer refused a write; answered 503");
            }
        }
        result
    }

    /// Whether the database is known to be unreachable.
    pub fn database_down(&self) -> bool {
        self.down.load(Ordering::Relaxed)
    }

    /// A write or a probe met an outage: writes come here until a probe reaches the database.
    pub fn mark_down(&self) {
        if !self.down.swap(true, Ordering::Relaxed) {
            tracing::warn!("database unreachable: writes go to the outage buffer");
            self.wake.notify_one();
        }
    }

    /// A probe reached the database.
    pub fn mark_up(&self) {
        if self.down.swap(false, Ordering::Relaxed) {
            tracing::info!(
                buffered = self.depth.load(Ordering::Relaxed),
                "database reachable again: writes go to it, the buffer replays"
            );
        }
    }

    /// Whether a write now would likely be kept: the backend's last operation succeeded and it
    /// refused none as full since it last freed room. `/readyz` stays ready while this holds, even with the database down.
    pub fn accepting(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
            && !self.full.load(Ordering::Relaxed)
            && self.fill_ratio() < 1.0
    }

    /// Whether no accepted event waits for replay.
    pub fn is_empty(&self) -> bool {
        self.depth.load(Ordering::Relaxed) == 0
    }

    /// Resolves when a write is accepted or the database is marked down.
    pub async fn woken(&self) {
        self.wake.notified().await;
    }

    fn fill_ratio(&self) -> f64 {
        let (used, capacity) = match &self.backend {
            Backend::Disk(d) => (d.used(), d.capacity()),
            Backend::Redis(r) => (r.used(), r.capacity()),
        };
        used as f64 / capacity.max(1) as f64
    }

    /// The oldest unsettled records, up to `max_events` events (at least one record), without
    /// removing them: taking again before [`settle`](Self::settle) returns them again.
    pub(crate) async fn take(&self, max_events: usize) -> Result<Vec<Pending>, BufferError> {
        match &self.backend {
            Backend::Disk(d) => d.take(max_events).await,
            Backend::Redis(r) => r.take(max_events).await,
        }
    }

    /// `done` (the first records [`take`](Self::take) returned, in order) are committed:
    /// remove them.
    pub(crate) async fn settle(&self, done: &[Pending], replayed: bool) -> Result<(), BufferError> {
        if done.is_empty() {
            return Ok(());
        }
        match &self.backend {
            Backend::Disk(d) => d.settle(done).await?,
            Backend::Redis(r) => r.settle(done).await?,
        }
        let events: u64 = done.iter().map(|p| p.write.count as u64).sum();
        let before = self
            .depth
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |d| {
                Some(d.saturating_sub(events))
            })
            .unwrap_or_default();
        let left = before.saturating_sub(events);
        self.full.store(false, Ordering::Relaxed);
        if replayed {
            self.metrics.replayed.inc_by(events);
        }
        self.metrics.events.set(left as i64);
        Ok(())
    }

    /// The database refused `poison` as data: keep it with `error` in the quarantine, count
    /// it, and remove it from the buffer.
    pub(crate) async fn quarantine(
        &self,
        poison: &Pending,
        error: &str,
    ) -> Result<(), BufferError> {
        match &self.backend {
            Backend::Disk(d) => d.quarantine(&poison.write, error).await?,
            Backend::Redis(r) => r.quarantine(&poison.write, error).await?,
        }
        self.metrics.quarantined.inc_by(poison.write.count as u64);
        tracing::error!(
            events = poison.write.count,
            error,
            first_event_id = %poison.write.events.first().map(|e| e.event_id.to_string()).unwrap_or_default(),
            "buffered write refused by the database; quarantined"
        );
        self.settle(std::slice::from_ref(poison), false).await
    }

    /// Reads the backend's depth and publishes the gauges (the replay worker, about once a
    /// second).
    pub(crate) async fn refresh(&self) {
        let depth = match &self.backend {
            Backend::Disk(d) => Ok(Depth {
                events: self.depth.load(Ordering::Relaxed),
                ..d.depth()
            }),
            Backend::Redis(r) => r.depth().await,
        };
        match depth {
            Ok(depth) => {
                if matches!(self.backend, Backend::Redis(_)) {
                    if !self.healthy.swap(true, Ordering::Relaxed) {
                        tracing::info!("the outage buffer's Redis answers again");
                    }
                    self.depth.store(depth.events, Ordering::Relaxed);
                }
                self.publish(&depth);
            }
            Err(e) => {
                // Once per loss, not once a second while Redis stays away.
                if self.healthy.swap(false, Ordering::Relaxed) {
                    tracing::warn!(error = %e, "cannot read the outage buffer's depth; writes are unaffected while the database is up");
                }
            }
        }
    }

    fn publish(&self, depth: &Depth) {
        let m = &self.metrics;
        m.events.set(depth.events as i64);
        m.bytes.set(depth.bytes as i64);
        m.fill_ratio.set(self.fill_ratio());
        let age = depth.oldest.map_or(0.0, |t| {
            (Utc::now() - t).num_milliseconds().max(0) as f64 / 1000.0
        });
        m.oldest_age_seconds.set(age);
        m.buffering
            .set(i64::from(depth.events > 0 || self.database_down()));
    }

    /// Makes what is buffered safe to leave for the next start (seals the active segment).
    pub async fn close(&self) {
        if let Backend::Disk(d) = &self.backend {
            d.close().await;
        }
    }
}

/// What the buffer holds now.
#[derive(Debug, Clone, Default)]
pub(crate) struct Depth {
    /// Events not yet settled.
    pub events: u64,
    /// Bytes of storage they take.
    pub bytes: u64,
    /// When the oldest of them was accepted.
    pub oldest: Option<DateTime<Utc>>,
}

/// Runs blocking file work off the async threads; a panicked task is a failure.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, BufferError> + Send + 'static,
) -> Result<T, BufferError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| BufferError::Failed(format!("buffer task failed: {e}")))?
}

/// The quarantine's line for one record.
fn quarantine_line(write: &BufferedWrite, error: &str) -> Result<String, BufferError> {
    serde_json::to_string(&serde_json::json!({
        "quarantined_at": Utc::now(),
        "error": error,
        "write": write,
    }))
    .map_err(|e| BufferError::Failed(e.to_string()))
}

/// The `Arc`-shared form handlers and workers hold.
pub type SharedBuffer = Arc<OutageBuffer>;
