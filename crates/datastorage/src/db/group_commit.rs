//! Group commit for single-event writes.
//!
//! Concurrent `POST /api/v1/audit/events` requests are coalesced into one transaction and one
//! multi-row statement. A request is answered only after the transaction holding its event has
//! committed, so durability is the same as writing alone.
//!
//! The batching window adapts to load without a timer: a committer takes the first waiting
//! event, then whatever else is already queued (up to the group limit), and commits. At low
//! concurrency the queue holds one event, which is committed at once (no added latency); under
//! load, events pile up while the previous commit runs and the next group is larger. Several
//! committers run at once so commits overlap.
//!
//! Failure isolation: when a group fails for a reason tied to one event (a conflicting replay,
//! bad data), each event of the group is retried alone, so one bad event never fails its
//! neighbours. When the database is unavailable, every event of the group gets the same 503.

use std::collections::HashSet;
use std::sync::Arc;

use datastorage_api::ValidatedEvent;
use tokio::sync::{mpsc, oneshot, Mutex};

use super::{DbError, Store, WriteOutcome};

/// Events queued ahead of the committers before writers wait (back-pressure).
pub const QUEUE_CAPACITY: usize = 10_000;
/// Most committers running at once.
pub const MAX_COMMITTERS: u32 = 8;

struct Job {
    event: ValidatedEvent,
    reply: oneshot::Sender<Result<WriteOutcome, DbError>>,
}

/// Handle to the committers; cheap to clone. The committers stop when every handle is dropped.
#[derive(Debug, Clone)]
pub struct GroupCommit {
    queue: mpsc::Sender<Job>,
}

impl GroupCommit {
    /// Starts committers for `store`: half the pool (at least 1, at most [`MAX_COMMITTERS`]), so
    /// batch requests and reads keep connections too. A group holds at most `max_group` events.
    pub fn start(store: Store, max_open_conns: u32, max_group: usize) -> Self {
        let (queue, rx) = mpsc::channel(QUEUE_CAPACITY);
        let rx = Arc::new(Mutex::new(rx));
        let committers = (max_open_conns / 2).clamp(1, MAX_COMMITTERS);
        for _ in 0..committers {
            tokio::spawn(committer(store.clone(), Arc::clone(&rx), max_group.max(1)));
        }
        Self { queue }
    }

    /// Writes one event; returns once its group has committed.
    pub async fn write(&self, event: ValidatedEvent) -> Result<WriteOutcome, DbError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Job { event, reply })
            .await
            .map_err(|_| closed())?;
        answer.await.map_err(|_| closed())?
    }
}

fn closed() -> DbError {
    DbError::Unavailable {
        message: "the service is shutting down".to_owned(),
        retry_after: super::RETRY_AFTER_BUSY,
    }
}

async fn committer(store: Store, rx: Arc<Mutex<mpsc::Receiver<Job>>>, max_group: usize) {
    let mut carry: Vec<Job> = Vec::new();
    loop {
        let mut group = std::mem::take(&mut carry);
        {
            let mut rx = rx.lock().await;
            if group.is_empty() {
                match rx.recv().await {
                    Some(job) => group.push(job),
                    None => return,
                }
            }
            while group.len() < max_group {
                match rx.try_recv() {
                    Ok(job) => group.push(job),
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
        commit(&store, unique).await;
    }
}

async fn commit(store: &Store, group: Vec<Job>) {
    let events: Vec<ValidatedEvent> = group.iter().map(|j| j.event.clone()).collect();
    match store.insert_events(&events).await {
        Ok(outcomes) => {
            for (job, outcome) in group.into_iter().zip(outcomes) {
                let _ = job.reply.send(Ok(outcome));
            }
        }
        Err(e @ DbError::Unavailable { .. }) => {
            for job in group {
                let _ = job.reply.send(Err(e.duplicate()));
            }
        }
        Err(e) if group.len() == 1 => {
            let job = group.into_iter().next().expect("one job");
            let _ = job.reply.send(Err(e));
        }
        Err(_) => {
            for job in group {
                let result = store
                    .insert_events(std::slice::from_ref(&job.event))
                    .await
                    .map(|mut o| o.remove(0));
                let _ = job.reply.send(result);
            }
        }
    }
}
