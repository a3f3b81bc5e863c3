//! [`AuditWriter`]: the one door every write goes through.
//!
//! It takes one event or a batch and decides how to commit it: a single event joins the group
//! commit ([`crate::workers::group_commit`]), which coalesces concurrent single writes into one
//! transaction; a batch is already a group and is written in its own transaction. Either way the
//! answer comes only after the commit, and the write is counted in the metrics here, once.
//! Request handlers hold an `AuditWriter` and a [`crate::db::ReadStore`], never the store's
//! write methods.
//!
//! Committed events (not replays, not the service's own access records) go to the live feed
//! ([`crate::workers::live`]) when anyone subscribes.
//!
//! With the outage buffer ([`crate::buffer`]), a write that meets an outage (or arrives while
//! the database is known to be down) is kept there instead and answered as
//! [`Written::Buffered`]; a saturated database still fails the write.

use std::sync::Arc;
use std::time::Instant;

use datastorage_api::ValidatedEvent;

use datastorage_api::LegalHoldReleased;

use crate::buffer::SharedBuffer;
use crate::db::holds::{NewHold, Placed, Release};
use crate::db::{DbError, Store, WriteOutcome, RETRY_AFTER_DOWN};
use crate::metrics::Metrics;
use crate::workers::group_commit::GroupCommit;
use crate::workers::live::LiveFeed;

/// The write door. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AuditWriter {
    store: Store,
    group: GroupCommit,
    /// The service's own access records: one chain, so one committer of their own, apart
    /// from the clients' writes.
    access: GroupCommit,
    metrics: Arc<Metrics>,
    buffer: Option<SharedBuffer>,
    live: Option<LiveFeed>,
}

/// What became of a write.
#[derive(Debug)]
pub enum Written<T> {
    /// Committed (or an idempotent replay).
    Stored(T),
    /// The database was unreachable: kept in the outage buffer, durably, for replay. The
    /// events' ids are those assigned at validation.
    Buffered,
}

impl AuditWriter {
    /// Starts the group commit on `store`; groups and batches hold at most `max_group` events.
    pub fn start(store: Store, max_group: usize, metrics: Arc<Metrics>) -> Self {
        Self {
            group: GroupCommit::start(store.clone(), max_group),
            access: GroupCommit::with_committers(store.clone(), max_group, 1),
            store,
            metrics,
            buffer: None,
            live: None,
        }
    }

    /// This door, with committed events handed to `live`.
    pub fn with_live(mut self, live: LiveFeed) -> Self {
        self.live = Some(live);
        self
    }

    /// The live feed, for the wanted check before an event is moved into a write.
    fn live(&self) -> Option<&LiveFeed> {
        self.live.as_ref().filter(|l| l.wanted())
    }

    /// This door, with writes that meet an outage kept in `buffer`.
    pub fn with_buffer(mut self, buffer: SharedBuffer) -> Self {
        self.buffer = Some(buffer);
        self
    }

    /// Keeps `events` in the buffer; a buffer that refuses is a 503.
    async fn keep(
        buffer: &SharedBuffer,
        events: Vec<ValidatedEvent>,
        batch: bool,
    ) -> Result<(), DbError> {
        buffer.accept(events, batch).await.map_err(|e| {
            let message = format!(
                "the database cannot be reached and {e}; nothing was stored, retry after Retry-After"
            );
            DbError::unavailable(message, e.to_string(), RETRY_AFTER_DOWN)
        })
    }

    /// Writes one of the service's own access records (see [`crate::auth::access`]); returns
    /// once it is committed. Access records share one chain and are grouped apart from the
    /// clients' events, so reads never queue behind writes of other chains.
    #[tracing::instrument(skip_all)]
    pub async fn write_access(&self, event: ValidatedEvent) -> Result<WriteOutcome, DbError> {
        let start = Instant::now();
        let category = event.event_category.as_str();
        let outcome = self.access.write(event).await?;
        self.metrics
            .observe_write("single", Some(category), start.elapsed().as_secs_f64());
        Ok(outcome)
    }

    /// Writes one event; returns once the group holding it has committed, or once the outage
    /// buffer holds it.
    #[tracing::instrument(skip_all, fields(correlation_id = %event.correlation_id))]
    pub async fn write_one(&self, event: ValidatedEvent) -> Result<Written<WriteOutcome>, DbError> {
        let Some(buffer) = &self.buffer else {
            return self.commit_one(event).await.map(Written::Stored);
        };
        if buffer.database_down() {
            return Self::keep(buffer, vec![event], false)
                .await
                .map(|()| Written::Buffered);
        }
        let copy = event.clone();
        match self.commit_one(event).await {
            Err(e) if e.is_outage() => {
                tracing::warn!(error = %e, cause = e.cause(), "write met a database outage; buffering it");
                buffer.mark_down();
                Self::keep(buffer, vec![copy], false)
                    .await
                    .map(|()| Written::Buffered)
            }
            other => other.map(Written::Stored),
        }
    }

    async fn commit_one(&self, event: ValidatedEvent) -> Result<WriteOutcome, DbError> {
        let start = Instant::now();
        let category = event.event_category.as_str();
        let copy = self.live().map(|_| event.clone());
        let outcome = self.group.write(event).await?;
        let written = (!outcome.replayed).then_some(category);
        self.metrics
            .observe_write("single", written, start.elapsed().as_secs_f64());
        if let (Some(live), Some(copy), false) = (&self.live, copy, outcome.replayed) {
            live.publish(vec![copy]);
        }
        Ok(outcome)
    }

    /// Writes a batch atomically, in order; every event gets an outcome in input order. With
    /// the outage buffer, the batch is kept there whole on an outage.
    #[tracing::instrument(skip_all, fields(events = events.len()))]
    pub async fn write_batch(
        &self,
        events: Vec<ValidatedEvent>,
    ) -> Result<Written<Vec<WriteOutcome>>, DbError> {
        let Some(buffer) = &self.buffer else {
            return self.commit_batch(&events).await.map(Written::Stored);
        };
        if buffer.database_down() {
            return Self::keep(buffer, events, true)
                .await
                .map(|()| Written::Buffered);
        }
        match self.commit_batch(&events).await {
            Err(e) if e.is_outage() => {
                tracing::warn!(error = %e, cause = e.cause(), "batch met a database outage; buffering it");
                buffer.mark_down();
                Self::keep(buffer, events, true)
                    .await
                    .map(|()| Written::Buffered)
            }
            other => other.map(Written::Stored),
        }
    }

    /// Commits a batch atomically (never buffered).
    pub async fn commit_batch(
        &self,
        events: &[ValidatedEvent],
    ) -> Result<Vec<WriteOutcome>, DbError> {
        let start = Instant::now();
        let outcomes = self.store.insert_events(events, &|| false).await?;
        let written = || {
            events
                .iter()
                .zip(&outcomes)
                .filter(|(_, o)| !o.replayed)
                .map(|(e, _)| e)
        };
        self.metrics.observe_write(
            "batch",
            written().map(|e| e.event_category.as_str()),
            start.elapsed().as_secs_f64(),
        );
        if let Some(live) = self.live() {
            live.publish(written().cloned().collect());
        }
        Ok(outcomes)
    }

    /// Places a legal hold (see [`crate::db::holds`]).
    pub async fn place_hold(&self, hold: &NewHold<'_>) -> Result<Placed, DbError> {
        self.store.place_hold(hold).await
    }

    /// Releases the active legal hold of a correlation id; `None` when there is none.
    pub async fn release_hold(
        &self,
        release: &Release<'_>,
    ) -> Result<Option<LegalHoldReleased>, DbError> {
        self.store.release_hold(release).await
    }
}
