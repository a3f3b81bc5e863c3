//! The partition worker (PostgreSQL): keeps the partition of now and the next
//! `retention.partitionsAhead` ones created, checking every hour, so writes never wait for DDL.
//! (An event older than every partition gets its own on demand, in the write path.) Creating a
//! partition twice is harmless: concurrent replicas take turns inside `audit_ensure_partition`.

use std::time::Duration;

use crate::config::RetentionSettings;
use crate::db::Store;
use crate::metrics::LifecycleMetrics;

/// Time between checks.
pub const CHECK_EVERY: Duration = Duration::from_secs(3600);

/// Runs until the task is aborted; the first check is at once.
pub async fn run_forever(store: Store, settings: RetentionSettings, metrics: LifecycleMetrics) {
    loop {
        match store
            .create_partitions_ahead(settings.partition_interval, settings.partitions_ahead)
            .await
        {
            Ok(0) => {}
            Ok(created) => {
                metrics.partitions_created.inc_by(u64::from(created));
                tracing::info!(created, "partitions created ahead");
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot create partitions ahead; retrying in a minute")
            }
        }
        tokio::time::sleep(CHECK_EVERY).await;
    }
}
