//! [`AuditStore`]: the buffered, never-blocking way a service writes its audit events.
//!
//! Rules this module keeps:
//! - `record` touches only an in-memory queue under a short lock; it never waits on the network.
//!   When the queue is full the [`OverflowPolicy`] decides, and every refused event is counted.
//! - Every accepted event has an id before it leaves `record` (the caller's, else a UUIDv7), so
//!   a retried batch is an idempotent replay on the server and can never duplicate an event.
//! - One dispatcher task cuts batches of at most the current batch limit and hands each to a
//!   delivery task; at most `in_flight` batches are on the wire at once.
//! - Accepted events get consecutive sequence numbers. `flush` and `close` wait until every event
//!   numbered below their starting point is settled (sent, failed or abandoned), so a concurrent
//!   `record` can neither slip past a `close` unnoticed nor make a `flush` wait forever.
//! - `close` flips `closed` under the same lock `record` takes: a `record` either happened before
//!   (and is drained) or gets [`RecordError::Closed`]. Nothing accepted is dropped silently.
//! - With a spool ([`StoreConfig::spool`]), a batch goes to disk when its retry deadline passes,
//!   when `close` reaches its deadline, when the server refuses the credentials (401/403), or
//!   when the queue is past the watermark while every delivery slot is busy; a background task
//!   replays the spool in order (see [`crate::spool`]).

use std::pin::pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use datastorage_api::AuditEventRequest;
use tokio::sync::{watch, Notify, Semaphore};
use tokio::time::Instant;
use uuid::Uuid;

use crate::client::Client;
use crate::config::{OverflowPolicy, StoreConfig, StoreError};
use crate::deliver::{self, Origin};
use crate::queue::{Metrics, PushError, Shared, State};
use crate::spool::Spool;

/// After `close` reaches its deadline with a spool, how long it waits for what is left to be
/// written to disk.
const SPOOL_GRACE: Duration = Duration::from_secs(10);

/// Why `record` did not accept an event. A refused event is not stored and not retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// The queue was full (after the policy's wait, if any); counted in `dropped`.
    #[error("audit queue is full; event dropped")]
    QueueFull,
    /// `close` has begun; counted in `refused`.
    #[error("audit store is closed")]
    Closed,
}

/// `close` reached its deadline before every accepted event was settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("close deadline reached with {remaining} accepted events not confirmed as written")]
pub struct CloseTimeout {
    /// Accepted events neither confirmed written nor rejected by the server when the deadline
    /// hit. They were abandoned (counted in `abandoned`); one that was on the wire at that
    /// moment may still have reached the server.
    pub remaining: u64,
}

/// A snapshot of the store's own counters. Totals only grow; gauges are current values.
///
/// Every accepted event ends in exactly one of `sent`, `failed`, `spooled` or `abandoned`; until
/// then it is pending (in the queue or in a batch on the wire). A spooled event is later counted
/// again in `replayed` once the server has it (or in `failed` if the server refuses it).
///
/// Serializes (serde) as a flat JSON object with these field names, for a service that shows
/// its counters on a status route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct StoreStats {
    /// Events accepted by `record` (total).
    pub queued: u64,
    /// Events the server confirmed as stored (total).
    pub sent: u64,
    /// Events re-sent after a retryable failure, once per retry (total).
    pub retried: u64,
    /// Events refused because the queue was full (total).
    pub dropped: u64,
    /// Events the server rejected, or whose retry deadline passed; each logged with its reason
    /// (total).
    pub failed: u64,
    /// Events left unsent when `close` hit its deadline (total).
    pub abandoned: u64,
    /// Events refused because the store was closed (total).
    pub refused: u64,
    /// Events waiting in the queue now (gauge).
    pub queue_depth: u64,
    /// Batches on the wire or waiting to retry now (gauge).
    pub in_flight_batches: u64,
    /// The batch limit in force now: `max_batch`, or lower once learned from the server (gauge).
    pub batch_limit: u64,
    /// Sum of batch request latencies, in microseconds (total).
    pub batch_latency_micros_sum: u64,
    /// Number of batch requests that got an answer (total).
    pub batch_latency_count: u64,
    /// Events written to the spool (total).
    pub spooled: u64,
    /// Events replayed from the spool and confirmed stored by the server (total).
    pub replayed: u64,
    /// Bytes of the spool's segment files now (gauge).
    pub spool_bytes: u64,
    /// Corrupt or torn spool records found and skipped during replay (total).
    pub spool_corrupt_records: u64,
    /// Batch requests the server refused with 401 or 403, live or replayed (total). Each
    /// refused batch's events are spooled (with a spool) or counted in `failed` (without).
    pub auth_failures: u64,
}

/// Runs for the store's life: cuts batches and starts a delivery task for each.
/// With a spool, batches go to disk instead when every slot is busy and the queue is past the
/// watermark.
async fn dispatch(shared: Arc<Shared>) {
    loop {
        let permit = tokio::select! {
            biased;
            permit = shared.slots.clone().acquire_owned() => match permit {
                Ok(permit) => Some(permit),
                Err(_) => break,
            },
            () = shared.aborted() => break,
            () = shared.over_watermark() => None,
        };
        let Some(permit) = permit else {
            if let Some((start, batch)) = shared.cut_now() {
                deliver::spool_batch(&shared, batch, "queue past the spool watermark").await;
                shared.batch_settled(start);
            }
            continue;
        };
        let Some((start, batch)) = shared.next_batch().await else {
            break;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            deliver::deliver(&shared, batch, Origin::Live).await;
            drop(permit);
            shared.batch_settled(start);
        });
    }
    if shared.is_aborted() {
        if shared.spool.is_some() {
            // What close gave up on goes to disk rather than being abandoned.
            while let Some((start, batch)) = shared.cut_now() {
                deliver::spool_batch(&shared, batch, "close deadline reached").await;
                shared.batch_settled(start);
            }
        } else {
            shared.abandon_queue();
        }
    }
}

/// The buffered audit store. Cheap to clone; clones share one queue. Dropping the last clone
/// without `close` still sends what is queued, in the background, as far as the runtime lives.
#[derive(Clone)]
pub struct AuditStore {
    handle: Arc<Handle>,
}

struct Handle {
    shared: Arc<Shared>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.close_now();
    }
}

impl std::fmt::Debug for AuditStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditStore")
            .field("server", &self.handle.shared.client.base_url())
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl AuditStore {
    /// A store sending through `client` with the defaults.
    ///
    /// Must be called inside a Tokio runtime: it starts the dispatcher task.
    pub fn new(client: Client) -> Self {
        Self::with_config(client, StoreConfig::default()).expect("the defaults are valid")
    }

    /// A store with these settings. Must be called inside a Tokio runtime.
    ///
    /// With a spool, opening it queues every segment an earlier run left for replay.
    pub fn with_config(client: Client, config: StoreConfig) -> Result<Self, StoreError> {
        config.validate()?;
        let spool = match &config.spool {
            None => None,
            Some(sc) => Some(Arc::new(Spool::open(sc.options()).map_err(|source| {
                StoreError::Spool {
                    dir: sc.dir.clone(),
                    source,
                }
            })?)),
        };
        let watermark = config
            .spool
            .as_ref()
            .map(|sc| sc.watermark.events(config.queue_capacity));
        let (abort, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            spool: spool.clone(),
            watermark,
            spill: Notify::new(),
            spool_wake: Notify::new(),
            spool_progress: Notify::new(),
            client,
            limit: AtomicUsize::new(config.max_batch),
            slots: Arc::new(Semaphore::new(config.in_flight)),
            config,
            metrics: Metrics::default(),
            state: Mutex::new(State::default()),
            wake: Notify::new(),
            space: Notify::new(),
            settled: Notify::new(),
            abort,
        });
        tokio::spawn(dispatch(shared.clone()));
        if let Some(spool) = spool {
            tokio::spawn(deliver::replay(shared.clone(), spool));
        }
        Ok(Self {
            handle: Arc::new(Handle { shared }),
        })
    }

    fn shared(&self) -> &Shared {
        &self.handle.shared
    }

    /// Accepts one event for sending and returns its id (the event's own, else a new UUIDv7).
    ///
    /// Never waits on the network. Under [`OverflowPolicy::DropNewest`] it never waits at all;
    /// under [`OverflowPolicy::Block`] it waits for queue room up to the policy's timeout.
    pub async fn record(&self, event: AuditEventRequest) -> Result<Uuid, RecordError> {
        match self.shared().config.overflow {
            OverflowPolicy::DropNewest => self.try_record(event),
            OverflowPolicy::Block { timeout } => self.record_blocking(event, timeout).await,
        }
    }

    /// Like [`record`](Self::record) but never waits, whatever the policy: a full queue refuses
    /// at once. For callers outside async code.
    pub fn try_record(&self, event: AuditEventRequest) -> Result<Uuid, RecordError> {
        let shared = self.shared();
        match shared.try_push(event) {
            Ok(id) => Ok(id),
            Err(PushError::Full(_)) => {
                shared.metrics.dropped.fetch_add(1, Ordering::Relaxed);
                Err(RecordError::QueueFull)
            }
            Err(PushError::Closed) => {
                shared.metrics.refused.fetch_add(1, Ordering::Relaxed);
                Err(RecordError::Closed)
            }
        }
    }

    async fn record_blocking(
        &self,
        mut event: AuditEventRequest,
        timeout: Duration,
    ) -> Result<Uuid, RecordError> {
        let shared = self.shared();
        let until = Instant::now() + timeout;
        loop {
            let mut room = pin!(shared.space.notified());
            room.as_mut().enable();
            match shared.try_push(event) {
                Ok(id) => return Ok(id),
                Err(PushError::Closed) => {
                    shared.metrics.refused.fetch_add(1, Ordering::Relaxed);
                    return Err(RecordError::Closed);
                }
                Err(PushError::Full(back)) => event = *back,
            }
            if tokio::time::timeout_at(until, room).await.is_err() {
                // One last try: room may have appeared just as the timer fired.
                return self.try_record(event);
            }
        }
    }

    /// Sends everything accepted before this call without waiting for the flush interval, and
    /// returns once each of those events is settled (sent, or failed and logged).
    ///
    /// Events recorded during the flush are not waited for. While the server is unreachable this
    /// waits up to the retry deadline; wrap it in a timeout if that is too long.
    pub async fn flush(&self) {
        let shared = self.shared();
        let target = {
            let mut st = shared.lock();
            st.flush_upto = st.next_seq;
            st.next_seq
        };
        shared.wake.notify_one();
        let _ = shared.wait_settled(target, None).await;
    }

    /// Stops accepting events, sends everything accepted, and returns once all of it is settled;
    /// or, at `deadline`, abandons what is left and says how many.
    ///
    /// Race-free against concurrent `record`: each event is either accepted before the close
    /// (and drained) or refused with [`RecordError::Closed`]. Calling it again is harmless.
    ///
    /// With a spool, "settled" includes "written to the spool": at the deadline what is left is
    /// spooled rather than abandoned (allowing a short grace for the disk), and before returning
    /// `close` keeps replaying the spool until it is empty or the deadline passes. Whatever is
    /// still spooled then is on disk and is replayed by the next store opened on the directory.
    pub async fn close(&self, deadline: Duration) -> Result<(), CloseTimeout> {
        let shared = self.shared();
        let until = Instant::now() + deadline;
        let target = shared.close_now();
        let result = match shared.wait_settled(target, Some(until)).await {
            Ok(()) => Ok(()),
            Err(remaining) if shared.spool.is_none() => {
                tracing::warn!(
                    remaining,
                    "audit store close deadline reached; abandoning unsent events"
                );
                shared.abort.send_replace(true);
                Err(CloseTimeout { remaining })
            }
            Err(remaining) => {
                tracing::warn!(
                    remaining,
                    "audit store close deadline reached; writing unsent events to the spool"
                );
                shared.abort.send_replace(true);
                let grace = Instant::now() + SPOOL_GRACE;
                shared
                    .wait_settled(target, Some(grace))
                    .await
                    .map_err(|remaining| CloseTimeout { remaining })
            }
        };
        if let Some(spool) = &shared.spool {
            while !shared.is_aborted() && !spool.is_empty() && Instant::now() < until {
                let progress = shared.spool_progress.notified();
                let _ = tokio::time::timeout(Duration::from_millis(100), progress).await;
            }
            shared.abort.send_replace(true);
            let spool = spool.clone();
            match tokio::task::spawn_blocking(move || spool.close()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!(error = %e, "cannot sync the audit spool at close"),
                Err(e) => tracing::error!(error = %e, "audit spool close task failed"),
            }
        }
        result
    }

    /// The store's counters now.
    pub fn stats(&self) -> StoreStats {
        let shared = self.shared();
        let m = &shared.metrics;
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StoreStats {
            queued: get(&m.queued),
            sent: get(&m.sent),
            retried: get(&m.retried),
            dropped: get(&m.dropped),
            failed: get(&m.failed),
            abandoned: get(&m.abandoned),
            refused: get(&m.refused),
            queue_depth: get(&m.queue_depth),
            in_flight_batches: get(&m.in_flight_batches),
            batch_limit: shared.limit.load(Ordering::Relaxed) as u64,
            batch_latency_micros_sum: get(&m.latency_micros_sum),
            batch_latency_count: get(&m.latency_count),
            spooled: get(&m.spooled),
            replayed: get(&m.replayed),
            spool_bytes: shared.spool.as_ref().map_or(0, |s| s.bytes()),
            spool_corrupt_records: get(&m.spool_corrupt),
            auth_failures: get(&m.auth_failures),
        }
    }
}
