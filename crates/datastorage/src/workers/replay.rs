//! The replay of the outage buffer: once the database answers again, the buffered writes are
//! committed oldest first, in transactions of up to `buffer.replayBatchSize` events, at most
//! `buffer.replayRate` events a second, through the batch write path (chains, idempotency).
//!
//! Rules:
//! - A record leaves the buffer only after the transaction holding it committed.
//! - Several records share a transaction, but a record is never split (a batch stays atomic)
//!   and one transaction never holds the same id twice.
//! - The database refusing a transaction as data (a 4xx class: a rule, a conflicting id, a
//!   forbidden chain) replays its records one by one; the one refused alone goes to the
//!   quarantine with the reason, and the rest go on.
//! - An outage stops the replay until a probe reaches the database; saturation, contention and
//!   unexpected errors wait and retry the same records, never dropping them.
//! - At shutdown the replay runs without its rate limit until the deadline, then stops; what is
//!   left stays for the next start.

use std::collections::HashSet;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::buffer::{Pending, SharedBuffer};
use crate::db::{DbError, ReadStore};
use crate::writer::AuditWriter;

/// How long to wait after an error that is not the database's.
const RETRY_WAIT: Duration = Duration::from_secs(1);
/// How long to wait after an unexpected database error before the same records are retried.
const INTERNAL_WAIT: Duration = Duration::from_secs(5);
/// How often the gauges are refreshed while idle.
const IDLE_POLL: Duration = Duration::from_secs(1);

/// What the caller asks of the replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Replay at `buffer.replayRate`.
    Run,
    /// Shutdown: replay as fast as possible until this instant, then return.
    DrainUntil(Instant),
}

/// The replay worker.
#[derive(Debug, Clone)]
pub struct Replay {
    buffer: SharedBuffer,
    writer: AuditWriter,
    store: ReadStore,
}

/// What replaying some records came to.
enum Step {
    /// Committed or quarantined; go on.
    Done,
    /// Wait this long, then take the same records again.
    Wait(Duration),
}

impl Replay {
    /// A replay of `buffer` through `writer`'s commit (never buffered), probing with `store`.
    pub fn new(buffer: SharedBuffer, writer: AuditWriter, store: ReadStore) -> Self {
        Self {
            buffer,
            writer,
            store,
        }
    }

    /// Runs until `mode` says to stop (a drain deadline passed, or the buffer is empty while
    /// draining).
    pub async fn run(self, mut mode: watch::Receiver<Mode>) {
        let settings = self.buffer.settings().clone();
        let mut last_refresh = Instant::now() - IDLE_POLL;
        loop {
            let now = Instant::now();
            if now.duration_since(last_refresh) >= IDLE_POLL {
                self.buffer.refresh().await;
                last_refresh = now;
            }
            let current = *mode.borrow();
            if let Mode::DrainUntil(deadline) = current {
                if self.buffer.is_empty() || now >= deadline {
                    self.buffer.refresh().await;
                    return;
                }
            }
            let idle = if self.buffer.database_down() {
                !self.probe().await
            } else {
                self.buffer.is_empty()
            };
            if idle {
                let wait = if self.buffer.database_down() {
                    settings.probe_interval
                } else {
                    IDLE_POLL
                };
                tokio::select! {
                    () = self.buffer.woken() => {}
                    () = tokio::time::sleep(wait) => {}
                    _ = mode.changed() => {}
                }
                continue;
            }
            let started = Instant::now();
            let pending = match self.buffer.take(settings.replay_batch_size).await {
                Ok(p) if p.is_empty() => {
                    tokio::time::sleep(IDLE_POLL).await;
                    continue;
                }
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the outage buffer; retrying");
                    tokio::time::sleep(RETRY_WAIT).await;
                    continue;
                }
            };
            let events: usize = pending.iter().map(|p| p.write.count).sum();
            match self.replay(&pending).await {
                Step::Done => {
                    if current == Mode::Run {
                        // Rate: events / replayRate seconds per transaction, at the least.
                        let due = Duration::from_secs_f64(
                            events as f64 / f64::from(settings.replay_rate.max(1)),
                        );
                        tokio::time::sleep(due.saturating_sub(started.elapsed())).await;
                    }
                }
                Step::Wait(wait) => {
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        _ = mode.changed() => {}
                    }
                }
            }
        }
    }

    /// Probes the database; marks the buffer up when it answers.
    async fn probe(&self) -> bool {
        let ok = tokio::time::timeout(Duration::from_secs(5), self.store.ping())
            .await
            .is_ok_and(|r| r.is_ok());
        if ok {
            self.buffer.mark_up();
        }
        ok
    }

    /// Replays `pending` (oldest first) in transactions; returns at the first that must wait.
    async fn replay(&self, pending: &[Pending]) -> Step {
        let mut rest = pending;
        while !rest.is_empty() {
            let n = distinct_prefix(rest);
            match self.commit(&rest[..n]).await {
                Ok(()) => {}
                Err(DbError::Data(_) | DbError::Conflict(_) | DbError::Forbidden(_)) if n > 1 => {
                    // One of them is refused: find it by replaying them alone.
                    for one in &rest[..n] {
                        if let Step::Wait(w) = self.replay_alone(one).await {
                            return Step::Wait(w);
                        }
                    }
                }
                Err(e @ (DbError::Data(_) | DbError::Conflict(_) | DbError::Forbidden(_))) => {
                    if let Step::Wait(w) = self.quarantine(&rest[0], &e).await {
                        return Step::Wait(w);
                    }
                }
                Err(e) => return self.wait_for(&e),
            }
            rest = &rest[n..];
        }
        Step::Done
    }

    async fn replay_alone(&self, one: &Pending) -> Step {
        match self.commit(std::slice::from_ref(one)).await {
            Ok(()) => Step::Done,
            Err(e @ (DbError::Data(_) | DbError::Conflict(_) | DbError::Forbidden(_))) => {
                self.quarantine(one, &e).await
            }
            Err(e) => self.wait_for(&e),
        }
    }

    /// Commits the events of `records` in one transaction, then settles them.
    async fn commit(&self, records: &[Pending]) -> Result<(), DbError> {
        let events: Vec<_> = records
            .iter()
            .flat_map(|p| p.write.events.iter().cloned())
            .collect();
        self.writer.commit_batch(&events).await?;
        if let Err(e) = self.buffer.settle(records, true).await {
            // Committed but still buffered: the next replay of these is an idempotent no-op.
            tracing::warn!(error = %e, "replayed writes committed but not yet removed from the outage buffer");
        }
        Ok(())
    }

    async fn quarantine(&self, poison: &Pending, error: &DbError) -> Step {
        match self.buffer.quarantine(poison, &error.to_string()).await {
            Ok(()) => Step::Done,
            Err(e) => {
                tracing::error!(error = %e, "cannot write to the quarantine; the write stays buffered");
                Step::Wait(RETRY_WAIT)
            }
        }
    }

    fn wait_for(&self, e: &DbError) -> Step {
        match e {
            DbError::Unavailable { retry_after, .. } | DbError::Contention { retry_after, .. } => {
                if e.is_outage() {
                    self.buffer.mark_down();
                }
                tracing::info!(error = %e, "replay paused: the database cannot take it now");
                Step::Wait(*retry_after)
            }
            _ => {
                tracing::error!(error = %e, "replay failed unexpectedly; retrying the same writes");
                Step::Wait(INTERNAL_WAIT)
            }
        }
    }
}

/// How many of the first records can share one transaction: none split, no id twice.
fn distinct_prefix(records: &[Pending]) -> usize {
    let mut seen = HashSet::new();
    for (i, record) in records.iter().enumerate() {
        if !record.write.events.iter().all(|e| seen.insert(e.event_id)) && i > 0 {
            return i;
        }
    }
    records.len()
}
