//! [`AuditWriter`]: the one door every write goes through.
//!
//! It takes one event or a batch and decides how to commit it: a single event joins the group
//! commit ([`crate::workers::group_commit`]), which coalesces concurrent single writes into one
//! transaction; a batch is already a group and is written in its own transaction. Either way the
//! answer comes only after the commit, and the write is counted in the metrics here, once.
//! Request handlers hold an `AuditWriter` and a [`crate::db::ReadStore`], never the store's
//! write methods.

use std::sync::Arc;
use std::time::Instant;

use datastorage_api::ValidatedEvent;

use datastorage_api::LegalHoldReleased;

use crate::db::holds::{NewHold, Placed, Release};
use crate::db::{DbError, Store, WriteOutcome};
use crate::metrics::Metrics;
use crate::workers::group_commit::GroupCommit;

/// The write door. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AuditWriter {
    store: Store,
    group: GroupCommit,
    /// The service's own access records: one chain, so one committer of their own, apart
    /// from the clients' writes.
    access: GroupCommit,
    metrics: Arc<Metrics>,
}

impl AuditWriter {
    /// Starts the group commit on `store`; groups and batches hold at most `max_group` events.
    pub fn start(store: Store, max_group: usize, metrics: Arc<Metrics>) -> Self {
        Self {
            group: GroupCommit::start(store.clone(), max_group),
            access: GroupCommit::with_committers(store.clone(), max_group, 1),
            store,
            metrics,
        }
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

    /// Writes one event; returns once the group holding it has committed.
    #[tracing::instrument(skip_all, fields(correlation_id = %event.correlation_id))]
    pub async fn write_one(&self, event: ValidatedEvent) -> Result<WriteOutcome, DbError> {
        let start = Instant::now();
        let category = event.event_category.as_str();
        let outcome = self.group.write(event).await?;
        let written = (!outcome.replayed).then_some(category);
        self.metrics
            .observe_write("single", written, start.elapsed().as_secs_f64());
        Ok(outcome)
    }

    /// Writes a batch atomically, in order; every event gets an outcome in input order.
    #[tracing::instrument(skip_all, fields(events = events.len()))]
    pub async fn write_batch(
        &self,
        events: &[ValidatedEvent],
    ) -> Result<Vec<WriteOutcome>, DbError> {
        let start = Instant::now();
        let outcomes = self.store.insert_events(events, &|| false).await?;
        let categories = events
            .iter()
            .zip(&outcomes)
            .filter(|(_, o)| !o.replayed)
            .map(|(e, _)| e.event_category.as_str());
        self.metrics
            .observe_write("batch", categories, start.elapsed().as_secs_f64());
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
