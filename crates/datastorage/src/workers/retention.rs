//! The retention worker: purges expired events, one replica at a time.
//!
//! A run first takes the `retention` lease (a row of `datastorage_leases`, taken by an UPDATE
//! when expired, never a session lock, so it works through a transaction pooler); a replica
//! that finds it held skips the run. Under the lease it writes the category floors, drops whole
//! partitions whose events have all expired and none is held (PostgreSQL, with
//! `retention.partitionDropEnabled`), then deletes the remaining expired events in batches by
//! primary key, renewing the lease between batches and stopping if it is lost. Each run is
//! recorded in `audit_purge_runs`; its caller records it as an audit event of the service
//! (`AccessLog::purged`), since access records sit above the workers.
//!
//! The first run comes `retention.startDelay` after start, then every `retention.interval`
//! (the loop is `startup`'s).

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use serde::Serialize;
use uuid::Uuid;

use crate::config::RetentionSettings;
use crate::db::retention::PurgeRunRecord;
use crate::db::{DbError, Store};
use crate::metrics::{LifecycleMetrics, RunLabels};

/// Name of the purge's lease.
pub const LEASE: &str = "retention";
/// How long a lease lasts unless renewed; a replica that dies mid-run blocks others this long.
pub const LEASE_TTL: Duration = Duration::from_secs(60);

/// What one run did.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct PurgeReport {
    /// `ok`, or `skipped` when another replica holds the lease.
    pub result: &'static str,
    /// Events deleted, in batches and with dropped partitions.
    pub rows_purged: u64,
    /// Partitions dropped whole.
    pub partitions_dropped: u32,
    /// The run's id (absent when skipped).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_id: Option<Uuid>,
    /// The replica that ran it.
    pub holder: String,
    /// How long it took, in seconds.
    pub seconds: f64,
}

/// Runs purges. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Purger {
    store: Store,
    settings: RetentionSettings,
    metrics: LifecycleMetrics,
    holder: Arc<str>,
    /// One run at a time in this process.
    running: Arc<tokio::sync::Mutex<()>>,
}

/// The name this replica takes leases under: its host name (a pod's name) and a random part,
/// so two processes on one host never share one.
pub fn holder_name() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "datastorage".to_owned());
    format!("{host}/{}", &Uuid::new_v4().simple().to_string()[..8])
}

impl Purger {
    /// A purger of `store` under `settings`.
    pub fn new(
        store: Store,
        settings: RetentionSettings,
        metrics: LifecycleMetrics,
        holder: Arc<str>,
    ) -> Self {
        Self {
            store,
            settings,
            metrics,
            holder,
            running: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    /// The settings it runs with.
    pub fn settings(&self) -> &RetentionSettings {
        &self.settings
    }

    /// One purge run now (see the module docs).
    pub async fn run_once(&self) -> Result<PurgeReport, DbError> {
        let _running = self.running.lock().await;
        let start = Instant::now();
        let result = self.run_under_lease(start).await;
        let label = match &result {
            Ok(r) => r.result,
            Err(_) => "failed",
        };
        self.metrics
            .purge_runs
            .get_or_create(&RunLabels { result: label })
            .inc();
        result
    }

    async fn run_under_lease(&self, start: Instant) -> Result<PurgeReport, DbError> {
        if !self
            .store
            .take_lease(LEASE, &self.holder, LEASE_TTL)
            .await?
        {
            return Ok(PurgeReport {
                result: "skipped",
                seconds: start.elapsed().as_secs_f64(),
                ..PurgeReport::default()
            });
        }
        let outcome = self.purge(start).await;
        if let Err(e) = self.store.release_lease(LEASE, &self.holder).await {
            tracing::warn!(error = %e, "cannot release the retention lease; it expires by itself");
        }
        outcome
    }

    async fn purge(&self, start: Instant) -> Result<PurgeReport, DbError> {
        let run_id = Uuid::now_v7();
        let mut record = PurgeRunRecord {
            run_id,
            holder: &self.holder,
            started_at: Utc::now(),
            finished_at: None,
            rows_purged: 0,
            partitions_dropped: 0,
        };
        self.store.record_purge_run(&record).await?;
        self.store
            .set_retention_floors(&self.settings.category_minimum_days)
            .await?;
        let today = Utc::now().date_naive();
        if self.settings.partition_drop_enabled {
            let dropped = self.store.drop_expired_partitions(today).await?;
            record.partitions_dropped = dropped.partitions;
            record.rows_purged += dropped.rows;
            self.metrics
                .partitions_dropped
                .inc_by(u64::from(dropped.partitions));
            self.metrics.rows_purged.inc_by(dropped.rows);
        }
        loop {
            let batch = self
                .store
                .purge_batch(today, self.settings.batch_size)
                .await?;
            record.rows_purged += batch.deleted;
            self.metrics.rows_purged.inc_by(batch.deleted);
            if !batch.more || batch.deleted == 0 {
                break;
            }
            if !self
                .store
                .take_lease(LEASE, &self.holder, LEASE_TTL)
                .await?
            {
                tracing::warn!("the retention lease was lost mid-run; stopping");
                break;
            }
        }
        record.finished_at = Some(Utc::now());
        self.store.record_purge_run(&record).await?;
        self.metrics.purge_last_success.set(Utc::now().timestamp());
        let report = PurgeReport {
            result: "ok",
            rows_purged: record.rows_purged,
            partitions_dropped: record.partitions_dropped,
            run_id: Some(run_id),
            holder: self.holder.to_string(),
            seconds: start.elapsed().as_secs_f64(),
        };
        Ok(report)
    }
}
