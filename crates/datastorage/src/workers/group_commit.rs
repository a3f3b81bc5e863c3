//! Group commit for single-event writes.
//!
//! Concurrent `POST /api/v1/audit/events` requests are coalesced into one transaction and one
//! multi-row statement. A request is answered only after the transaction holding its event has
//! committed, so durability is the same as writing alone.
//!
//! The batching window adapts to load without a timer: a committer takes the first waiting
//! event, then whatever else is already queued (up to the group limit), and commits. At low
//! concurrency the queue holds one event, which is committed at once (no added latency); under
//! load, events pile up while the previous commit runs and the next group is larger. A few
//! committers (half the pool, at most [`MAX_COMMITTERS`]) run at once: enough to overlap
//! commits, few enough that groups grow large under load (the cost per event of a large group
//! is a fraction of a small one's), and the rest of the pool stays free for batches and reads.
//!
//! The queue is part of waiting for a connection, and obeys the same rules as the pool:
//! - An event queued while every committer is busy counts one pool wait
//!   (`datastorage_db_pool_wait_count_total`), and its time in the queue counts as wait
//!   duration.
//! - An event not picked up within `database.acquireTimeout` is abandoned: it is never written,
//!   the request answers 503 with `Retry-After`, and `datastorage_db_pool_acquire_timeouts_total`
//!   counts it.
//! - A request that goes away (its `server.writeTimeout` passed, or the client hung up) before
//!   its group commits is dropped from the group, which is rolled back and retried without it,
//!   so no event answered 503 is committed afterwards.
//!
//! Failure isolation:
//! - A group never waits for a chain head another transaction holds (`SKIP LOCKED`): it commits
//!   the events of the other chains. A skipped event first joins the committer's next groups
//!   (up to [`MAX_SKIPS`] times): the head was most likely held for an instant by another
//!   committer, whose commit takes milliseconds. An event skipped that often is written on its
//!   own, on a task and connection of its own that waits for the head up to `lockTimeout`. At
//!   most a quarter of the pool waits that way at once; an event that finds no place among them
//!   within `acquireTimeout` answers 503 with `Retry-After`. So one stuck chain does not stall
//!   the writers of other chains, nor take the places their briefly skipped events need.
//! - When a group fails for a reason that may concern only some of its events (a conflicting
//!   replay, bad data, a statement timeout), each event is retried alone, so one event never
//!   fails its neighbours. When the database is unavailable, every event of the group gets the
//!   same 503.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use datastorage_api::ValidatedEvent;
use tokio::sync::{mpsc, oneshot, Mutex, Semaphore};

use crate::config::format_duration;
use crate::db::pool::{PoolCounters, Wait};
use crate::db::{DbError, Store, WriteOutcome, RETRY_AFTER_BUSY};

/// Events queued ahead of the committers before writers wait to enqueue (back-pressure; the
/// wait counts against `acquireTimeout` too).
pub const QUEUE_CAPACITY: usize = 10_000;
/// Most committers running at once.
pub const MAX_COMMITTERS: u32 = 4;
/// Groups an event whose chain head was held may join again before it is written on its own.
pub const MAX_SKIPS: u8 = 4;
/// Pause before the next group when a whole group was skipped (its heads held by another
/// committer), so a committer does not spin while the other commits.
const SKIPPED_PAUSE: Duration = Duration::from_millis(1);

const QUEUED: u8 = 0;
const CLAIMED: u8 = 1;
const ABANDONED: u8 = 2;

struct Job {
    event: ValidatedEvent,
    reply: oneshot::Sender<Result<WriteOutcome, DbError>>,
    ticket: Arc<Ticket>,
    /// Groups that skipped it because its chain head was held.
    skips: u8,
}

impl Job {
    /// A job taken back from a group that skipped it: already claimed, its wait already over.
    fn skipped(event: ValidatedEvent, reply: Reply, skips: u8) -> Self {
        Self {
            event,
            reply,
            ticket: Arc::new(Ticket {
                state: AtomicU8::new(CLAIMED),
                wait: std::sync::Mutex::new(None),
            }),
            skips: skips + 1,
        }
    }
}

/// Who owns a queued job: the committer that claims it or the requester that gives up on it,
/// whichever moves `state` away from `QUEUED` first; the winner also ends its wait.
struct Ticket {
    state: AtomicU8,
    /// The pool wait the job counts as, when every committer was busy as it was queued.
    wait: std::sync::Mutex<Option<Wait>>,
}

impl Ticket {
    /// Moves the job from `QUEUED` to `to`; true for the one caller that did.
    fn take(&self, to: u8) -> bool {
        self.state
            .compare_exchange(QUEUED, to, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    fn wait(&self) -> Option<Wait> {
        self.wait.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

struct Shared {
    store: Store,
    counters: PoolCounters,
    idle_committers: AtomicUsize,
    max_group: usize,
    /// Writers of events whose chain head was held by another transaction, each waiting for
    /// it on its own connection (up to `lockTimeout`), outside the committers.
    lone_writers: Arc<Semaphore>,
}

/// Handle to the committers; cheap to clone. The committers stop when every handle is dropped.
#[derive(Clone)]
pub struct GroupCommit {
    queue: mpsc::Sender<Job>,
    shared: Arc<Shared>,
    acquire_timeout: Duration,
}

impl std::fmt::Debug for GroupCommit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit")
            .field("queued", &(QUEUE_CAPACITY - self.queue.capacity()))
            .finish()
    }
}

impl GroupCommit {
    /// Starts the committers for `store`, as many as its pool allows (half of `maxOpenConns`,
    /// at most [`MAX_COMMITTERS`]); a group holds at most `max_group` events, and an event waits
    /// for a committer at most the pool's `acquireTimeout`.
    pub fn start(store: Store, max_group: usize) -> Self {
        let committers = (store.pool_limits().max_open / 2).clamp(1, MAX_COMMITTERS);
        Self::with_committers(store, max_group, committers)
    }

    /// Like [`GroupCommit::start`], with `committers` committers (at least one). One committer
    /// suits a queue whose events all go to one chain: two would only contend for its head.
    pub fn with_committers(store: Store, max_group: usize, committers: u32) -> Self {
        let limits = store.pool_limits();
        let (queue, rx) = mpsc::channel(QUEUE_CAPACITY);
        let rx = Arc::new(Mutex::new(rx));
        let shared = Arc::new(Shared {
            counters: store.pool_counters(),
            store,
            idle_committers: AtomicUsize::new(0),
            max_group: max_group.max(1),
            lone_writers: Arc::new(Semaphore::new(lone_writers(limits.max_open))),
        });
        for _ in 0..committers.max(1) {
            tokio::spawn(committer(Arc::clone(&shared), Arc::clone(&rx)));
        }
        Self {
            queue,
            shared,
            acquire_timeout: limits.acquire_timeout,
        }
    }

    /// Writes one event; returns once its group has committed, or 503 when no committer picked
    /// it up within `acquireTimeout`.
    pub async fn write(&self, event: ValidatedEvent) -> Result<WriteOutcome, DbError> {
        let (reply, mut answer) = oneshot::channel();
        let busy = self.shared.idle_committers.load(Ordering::Relaxed) == 0;
        let ticket = Arc::new(Ticket {
            state: AtomicU8::new(QUEUED),
            wait: std::sync::Mutex::new(busy.then(|| self.shared.counters.begin_wait())),
        });
        let job = Job {
            event,
            reply,
            ticket: Arc::clone(&ticket),
            skips: 0,
        };
        let deadline = tokio::time::Instant::now() + self.acquire_timeout;
        match tokio::time::timeout_at(deadline, self.queue.send(job)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(shutting_down()),
            Err(_) => return Err(self.timed_out(ticket.wait())),
        }
        match tokio::time::timeout_at(deadline, &mut answer).await {
            Ok(result) => result.map_err(|_| shutting_down())?,
            Err(_) => {
                if ticket.take(ABANDONED) {
                    return Err(self.timed_out(ticket.wait()));
                }
                // A committer has it: its commit is bounded by the pool and statement timeouts.
                answer.await.map_err(|_| shutting_down())?
            }
        }
    }

    /// The 503 of an event no committer picked up within `acquireTimeout`, counted as an
    /// acquire timeout (`wait`, when the wait is still held here, ends with it).
    fn timed_out(&self, wait: Option<Wait>) -> DbError {
        match wait {
            Some(wait) => wait.timed_out(),
            None => {
                self.shared.counters.acquire_timeouts.inc();
            }
        }
        let message = format!(
            "no database connection became free within {} (database.acquireTimeout)",
            format_duration(self.acquire_timeout)
        );
        DbError::unavailable(message.clone(), message, RETRY_AFTER_BUSY)
    }
}

fn shutting_down() -> DbError {
    let message = "the service is shutting down";
    DbError::unavailable(message, message, RETRY_AFTER_BUSY)
}

/// Takes a queued job for a group, unless its requester gave up; its wait ends here.
fn claim(job: Job) -> Option<Job> {
    if !job.ticket.take(CLAIMED) {
        return None;
    }
    if let Some(wait) = job.ticket.wait() {
        wait.end();
    }
    Some(job)
}

async fn committer(shared: Arc<Shared>, rx: Arc<Mutex<mpsc::Receiver<Job>>>) {
    let mut carry: Vec<Job> = Vec::new();
    loop {
        let mut group = std::mem::take(&mut carry);
        // With events carried over, never wait for the queue: another committer may be parked
        // on it with nothing coming.
        let rx_guard = if group.is_empty() {
            Some(rx.lock().await)
        } else {
            rx.try_lock().ok()
        };
        if let Some(mut rx) = rx_guard {
            while group.is_empty() {
                shared.idle_committers.fetch_add(1, Ordering::Relaxed);
                let job = rx.recv().await;
                shared.idle_committers.fetch_sub(1, Ordering::Relaxed);
                match job {
                    Some(job) => group.extend(claim(job)),
                    None => return,
                }
            }
            while group.len() < shared.max_group {
                match rx.try_recv() {
                    Ok(job) => group.extend(claim(job)),
                    Err(_) => break,
                }
            }
        }
        // One id twice in a group would be two inserts of one key: defer the repeat to the next
        // group, where it is answered as a replay (or a conflict) of the first.
        let mut ids = HashSet::with_capacity(group.len());
        let (unique, repeats): (Vec<Job>, Vec<Job>) = group
            .into_iter()
            .partition(|j| ids.insert(j.event.event_id));
        carry = repeats;
        let committed = unique.len();
        let skipped = commit(&shared, unique).await;
        if !skipped.is_empty() && skipped.len() == committed {
            tokio::time::sleep(SKIPPED_PAUSE).await;
        }
        carry.extend(skipped);
    }
}

/// Events of held chains that may wait for their chain at once, each on a connection: a
/// quarter of the pool (at least one), so a stuck chain cannot take the pool from the others.
fn lone_writers(max_open: u32) -> usize {
    (max_open as usize / 4).max(1)
}

type Reply = oneshot::Sender<Result<WriteOutcome, DbError>>;

/// Writes an event whose chain head another transaction held, on its own: it waits for the
/// head like a batch would (up to `lockTimeout`), on a task of its own so the committers go
/// on. At most [`lone_writers`] wait on heads at once; an event that finds no free place within
/// `acquireTimeout` answers 503 with `Retry-After`.
fn write_alone(shared: &Shared, event: ValidatedEvent, reply: Reply) {
    let slots = Arc::clone(&shared.lone_writers);
    let store = shared.store.clone();
    let patience = store.pool_limits().acquire_timeout;
    tokio::spawn(async move {
        let Ok(Ok(slot)) = tokio::time::timeout(patience, slots.acquire_owned()).await else {
            let message = format!(
                "the chain of correlation_id {:?} is held by another writer; retry shortly",
                event.correlation_id
            );
            let _ = reply.send(Err(DbError::Contention {
                cause: message.clone(),
                message,
                retry_after: RETRY_AFTER_BUSY,
            }));
            return;
        };
        let result = store
            .insert_events(std::slice::from_ref(&event), &|| reply.is_closed())
            .await
            .map(|mut o| o.remove(0));
        drop(slot);
        if !matches!(result, Err(DbError::Cancelled)) {
            let _ = reply.send(result);
        }
    });
}

/// Commits a group; returns the events skipped because another transaction held their chain
/// head, for the next group (those skipped [`MAX_SKIPS`] times are written alone instead).
async fn commit(shared: &Shared, group: Vec<Job>) -> Vec<Job> {
    let store = &shared.store;
    let mut events = Vec::with_capacity(group.len());
    let mut replies = Vec::with_capacity(group.len());
    let mut skips = Vec::with_capacity(group.len());
    for j in group {
        events.push(j.event);
        replies.push(j.reply);
        skips.push(j.skips);
    }
    loop {
        let open: Vec<bool> = replies.iter().map(|r| !r.is_closed()).collect();
        if open.contains(&false) {
            let mut keep = open.iter().copied();
            events.retain(|_| keep.next().unwrap_or(false));
            let mut keep = open.iter().copied();
            replies.retain(|_| keep.next().unwrap_or(false));
            let mut keep = open.iter().copied();
            skips.retain(|_| keep.next().unwrap_or(false));
        }
        if events.is_empty() {
            return Vec::new();
        }
        let result = {
            let replies = &replies;
            let gone = move || replies.iter().any(|r| r.is_closed());
            store.insert_group(&events, &gone).await
        };
        match result {
            Ok(outcomes) => {
                let mut again = Vec::new();
                for (((event, reply), skipped), outcome) in
                    events.into_iter().zip(replies).zip(skips).zip(outcomes)
                {
                    match outcome {
                        Some(outcome) => {
                            let _ = reply.send(Ok(outcome));
                        }
                        None if skipped < MAX_SKIPS => {
                            again.push(Job::skipped(event, reply, skipped))
                        }
                        None => write_alone(shared, event, reply),
                    }
                }
                return again;
            }
            // A requester left just before commit: roll back, go again without it.
            Err(DbError::Cancelled) => continue,
            Err(e @ DbError::Unavailable { .. }) => {
                for reply in replies {
                    let _ = reply.send(Err(e.duplicate()));
                }
                return Vec::new();
            }
            Err(e) if events.len() == 1 => {
                if let Some(reply) = replies.pop() {
                    let _ = reply.send(Err(e));
                }
                return Vec::new();
            }
            Err(_) => {
                for (event, reply) in events.iter().zip(replies) {
                    let result = store
                        .insert_events(std::slice::from_ref(event), &|| reply.is_closed())
                        .await
                        .map(|mut o| o.remove(0));
                    if !matches!(result, Err(DbError::Cancelled)) {
                        let _ = reply.send(result);
                    }
                }
                return Vec::new();
            }
        }
    }
}
