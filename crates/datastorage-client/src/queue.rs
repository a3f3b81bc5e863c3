//! What the store's handle and its background tasks share: the in-memory queue and its
//! sequence numbers, the counters, and the signals between them.
//!
//! Every update of the queue is a single push or drain under one short lock, so a panic while
//! holding it leaves the queue consistent.

use std::collections::{BTreeSet, VecDeque};
use std::pin::pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use datastorage_api::AuditEventRequest;
use tokio::sync::{watch, Notify, Semaphore};
use tokio::time::Instant;
use uuid::Uuid;

use crate::client::Client;
use crate::config::StoreConfig;
use crate::spool::Spool;

/// The counters behind [`StoreStats`].
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    pub queued: AtomicU64,
    pub sent: AtomicU64,
    pub retried: AtomicU64,
    pub dropped: AtomicU64,
    pub failed: AtomicU64,
    pub abandoned: AtomicU64,
    pub refused: AtomicU64,
    pub queue_depth: AtomicU64,
    pub in_flight_batches: AtomicU64,
    pub latency_micros_sum: AtomicU64,
    pub latency_count: AtomicU64,
    pub spooled: AtomicU64,
    pub replayed: AtomicU64,
    pub spool_corrupt: AtomicU64,
    pub auth_failures: AtomicU64,
}

impl Metrics {
    pub(crate) fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }
}

pub(crate) struct Queued {
    pub(crate) event: AuditEventRequest,
    pub(crate) at: Instant,
}

/// What the lock protects.
#[derive(Default)]
pub(crate) struct State {
    pub(crate) queue: VecDeque<Queued>,
    pub(crate) closed: bool,
    /// Sequence number the next accepted event gets.
    pub(crate) next_seq: u64,
    /// Events numbered below this are to be sent without waiting for the flush interval.
    pub(crate) flush_upto: u64,
    /// First sequence number of every batch being delivered.
    pub(crate) outstanding: BTreeSet<u64>,
}

impl State {
    pub(crate) fn head_seq(&self) -> u64 {
        self.next_seq - self.queue.len() as u64
    }

    /// Every event numbered below this is settled.
    pub(crate) fn settled_below(&self) -> u64 {
        self.outstanding
            .first()
            .copied()
            .unwrap_or_else(|| self.head_seq())
    }
}

/// What the store's handle and its background tasks share.
pub(crate) struct Shared {
    pub client: Client,
    pub config: StoreConfig,
    pub metrics: Metrics,
    /// The batch limit in force (only ever lowered).
    pub limit: AtomicUsize,
    pub(crate) state: Mutex<State>,
    /// Wakes the dispatcher: the queue stopped being empty, a batch filled, a flush or close
    /// began.
    pub(crate) wake: Notify,
    /// Wakes `record` calls blocked on a full queue.
    pub(crate) space: Notify,
    /// Wakes `flush`/`close` when a batch settled.
    pub(crate) settled: Notify,
    pub(crate) slots: Arc<Semaphore>,
    pub(crate) abort: watch::Sender<bool>,
    /// The durable spool, when configured.
    pub spool: Option<Arc<Spool>>,
    /// Queue depth past which the dispatcher spools (with a spool only).
    pub(crate) watermark: Option<usize>,
    /// Wakes the dispatcher when the queue passes the watermark.
    pub(crate) spill: Notify,
    /// Wakes the replay task: something was spooled.
    pub spool_wake: Notify,
    /// Wakes `close` when the replay task removed a segment.
    pub spool_progress: Notify,
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock leaves the queue consistent (every update is a single
        // push/drain), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Resolves when `close` gave up and asked every task to stop.
    pub(crate) async fn aborted(&self) {
        let mut rx = self.abort.subscribe();
        // The sender lives as long as `self`, so this only returns on abort.
        let _ = rx.wait_for(|aborted| *aborted).await;
    }

    /// `close` gave up and asked every task to stop.
    pub(crate) fn is_aborted(&self) -> bool {
        *self.abort.borrow()
    }

    /// `close` has begun (or the last handle was dropped) and every accepted event is settled,
    /// so nothing more can reach the spool.
    pub(crate) fn is_drained(&self) -> bool {
        let st = self.lock();
        st.closed && st.settled_below() >= st.next_seq
    }

    /// Resolves when the queue is at or past the watermark; never without a spool.
    pub(crate) async fn over_watermark(&self) {
        let Some(mark) = self.watermark else {
            return std::future::pending().await;
        };
        loop {
            let mut notified = pin!(self.spill.notified());
            notified.as_mut().enable();
            if self.lock().queue.len() >= mark {
                return;
            }
            notified.await;
        }
    }

    pub(crate) fn close_now(&self) -> u64 {
        let mut st = self.lock();
        st.closed = true;
        let target = st.next_seq;
        drop(st);
        self.wake.notify_one();
        self.space.notify_waiters();
        target
    }

    /// Tries to enqueue; the event comes back when the queue is full.
    pub(crate) fn try_push(&self, mut event: AuditEventRequest) -> Result<Uuid, PushError> {
        let mut st = self.lock();
        if st.closed {
            return Err(PushError::Closed);
        }
        if st.queue.len() >= self.config.queue_capacity {
            return Err(PushError::Full(Box::new(event)));
        }
        let id = *event.event_id.get_or_insert_with(Uuid::now_v7);
        st.queue.push_back(Queued {
            event,
            at: Instant::now(),
        });
        st.next_seq += 1;
        let depth = st.queue.len();
        drop(st);
        self.metrics.queued.fetch_add(1, Ordering::Relaxed);
        self.metrics
            .queue_depth
            .store(depth as u64, Ordering::Relaxed);
        // While the queue is empty the dispatcher waits with no deadline (there is no event to
        // time), so the first event must wake it to start that event's flush interval; after
        // that only a full batch makes it act sooner than the deadline it already sleeps to.
        if depth == 1 || depth >= self.limit.load(Ordering::Relaxed) {
            self.wake.notify_one();
        }
        if self.watermark.is_some_and(|mark| depth >= mark) {
            self.spill.notify_one();
        }
        Ok(id)
    }

    /// Waits until every event numbered below `target` is settled, or `until` passes.
    pub(crate) async fn wait_settled(
        &self,
        target: u64,
        until: Option<Instant>,
    ) -> Result<(), u64> {
        loop {
            let mut notified = pin!(self.settled.notified());
            notified.as_mut().enable();
            if self.lock().settled_below() >= target {
                return Ok(());
            }
            match until {
                None => notified.await,
                Some(until) => {
                    if tokio::time::timeout_at(until, notified).await.is_err() {
                        let st = self.lock();
                        if st.settled_below() >= target {
                            return Ok(());
                        }
                        return Err(self.pending(&st));
                    }
                }
            }
        }
    }

    /// Accepted events not yet settled.
    pub(crate) fn pending(&self, st: &State) -> u64 {
        let m = &self.metrics;
        let settled = m.sent.load(Ordering::Relaxed)
            + m.failed.load(Ordering::Relaxed)
            + m.spooled.load(Ordering::Relaxed)
            + m.abandoned.load(Ordering::Relaxed);
        st.next_seq.saturating_sub(settled)
    }

    /// The next batch to send, waiting for one to be due; `None` when closed and drained, or
    /// aborted.
    pub(crate) async fn next_batch(&self) -> Option<(u64, Vec<AuditEventRequest>)> {
        loop {
            let mut notified = pin!(self.wake.notified());
            notified.as_mut().enable();
            let due_at = {
                let st = self.lock();
                let limit = self.limit.load(Ordering::Relaxed);
                let oldest = st.queue.front().map(|q| q.at);
                let due = match oldest {
                    None => false,
                    Some(at) => {
                        st.queue.len() >= limit
                            || st.closed
                            || st.head_seq() < st.flush_upto
                            || at.elapsed() >= self.config.flush_interval
                    }
                };
                if due {
                    return Some(self.cut(st, limit));
                }
                if st.closed && st.queue.is_empty() {
                    return None;
                }
                oldest.map(|at| at + self.config.flush_interval)
            };
            let sleep = async {
                match due_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = notified => {}
                () = sleep => {}
                () = self.aborted() => return None,
            }
        }
    }

    /// Takes the next batch of at most `limit` events off a non-empty queue.
    pub(crate) fn cut(
        &self,
        mut st: MutexGuard<'_, State>,
        limit: usize,
    ) -> (u64, Vec<AuditEventRequest>) {
        let start = st.head_seq();
        let n = st.queue.len().min(limit);
        let batch: Vec<_> = st.queue.drain(..n).map(|q| q.event).collect();
        st.outstanding.insert(start);
        self.metrics
            .queue_depth
            .store(st.queue.len() as u64, Ordering::Relaxed);
        drop(st);
        self.metrics
            .in_flight_batches
            .fetch_add(1, Ordering::Relaxed);
        self.space.notify_waiters();
        (start, batch)
    }

    /// The next batch at once, due or not; `None` when the queue is empty.
    pub(crate) fn cut_now(&self) -> Option<(u64, Vec<AuditEventRequest>)> {
        let st = self.lock();
        if st.queue.is_empty() {
            return None;
        }
        let limit = self.limit.load(Ordering::Relaxed);
        Some(self.cut(st, limit))
    }

    pub(crate) fn batch_settled(&self, start: u64) {
        self.lock().outstanding.remove(&start);
        self.metrics
            .in_flight_batches
            .fetch_sub(1, Ordering::Relaxed);
        self.settled.notify_waiters();
    }

    /// After an abort: whatever is still queued will never be sent.
    pub(crate) fn abandon_queue(&self) {
        let mut st = self.lock();
        let n = st.queue.len();
        st.queue.clear();
        self.metrics.queue_depth.store(0, Ordering::Relaxed);
        drop(st);
        Metrics::add(&self.metrics.abandoned, n);
        self.settled.notify_waiters();
    }
}

pub(crate) enum PushError {
    /// The event comes back to the caller (boxed: the refusal path is the rare one).
    Full(Box<AuditEventRequest>),
    Closed,
}
