//! The checkpoint worker: every `checkpoints.interval`, one replica (the `checkpoints` lease)
//! writes a signed checkpoint of the heads changed since the previous one, then publishes it
//! off-host, appended to `checkpoints.publishFile` as one JSON line and POSTed to
//! `checkpoints.publishUrl`. A failed publication is logged and counted; the checkpoint stays in
//! the database, and the next one links to it.

use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use datastorage_api::checkpoint::Checkpoint;

use crate::config::CheckpointSettings;
use crate::db::{DbError, Store};
use crate::domain::keys::Signer;
use crate::metrics::LifecycleMetrics;

/// Name of the checkpoints' lease.
pub const LEASE: &str = "checkpoints";
/// How far before the previous checkpoint a new one looks for changed heads: a write that was
/// committing when the previous checkpoint was taken is in the next one.
pub const MARGIN: Duration = Duration::from_secs(600);
/// Longest wait for the publication URL.
pub const PUBLISH_TIMEOUT: Duration = Duration::from_secs(10);

/// Writes checkpoints. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Checkpointer {
    store: Store,
    settings: CheckpointSettings,
    signer: Arc<Signer>,
    metrics: LifecycleMetrics,
    holder: Arc<str>,
    http: reqwest::Client,
}

impl Checkpointer {
    /// A checkpointer of `store`.
    pub fn new(
        store: Store,
        settings: CheckpointSettings,
        signer: Arc<Signer>,
        metrics: LifecycleMetrics,
        holder: Arc<str>,
    ) -> Self {
        Self {
            store,
            settings,
            signer,
            metrics,
            holder,
            http: reqwest::Client::builder()
                .timeout(PUBLISH_TIMEOUT)
                .build()
                .unwrap_or_default(),
        }
    }

    /// Runs until the task is aborted: a checkpoint at once, then every interval.
    pub async fn run_forever(self) {
        loop {
            if let Err(e) = self.run_once().await {
                tracing::warn!(error = %e, "cannot write a checkpoint");
            }
            tokio::time::sleep(self.settings.interval).await;
        }
    }

    /// Whether checkpoints can be written: only with a key from `signing.keyFile`, since one
    /// made at start could not verify them after a restart (nor on another replica).
    pub fn can_sign(&self) -> bool {
        !self.signer.is_ephemeral()
    }

    /// One checkpoint now, unless another replica holds the lease, no head changed, or there is
    /// no signing key ([`Checkpointer::can_sign`]).
    pub async fn run_once(&self) -> Result<Option<Checkpoint>, DbError> {
        if !self.can_sign() {
            return Ok(None);
        }
        let ttl = self.settings.interval.max(Duration::from_secs(60));
        if !self.store.take_lease(LEASE, &self.holder, ttl).await? {
            return Ok(None);
        }
        let written = self.store.write_checkpoint(self.signer.key(), MARGIN).await;
        if let Err(e) = self.store.release_lease(LEASE, &self.holder).await {
            tracing::warn!(error = %e, "cannot release the checkpoints lease; it expires by itself");
        }
        let Some(c) = written? else {
            return Ok(None);
        };
        self.metrics.checkpoints.inc();
        self.metrics
            .checkpoint_last_success
            .set(Utc::now().timestamp());
        tracing::info!(
            checkpoint = c.checkpoint_id,
            chains = c.chains,
            "signed checkpoint written"
        );
        self.publish(&c).await;
        Ok(Some(c))
    }

    async fn publish(&self, c: &Checkpoint) {
        let line = serde_json::to_vec(c).unwrap_or_default();
        if let Some(path) = &self.settings.publish_file {
            let written = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .and_then(|mut f| {
                    f.write_all(&line)?;
                    f.write_all(b"\n")?;
                    f.sync_data()
                });
            if let Err(e) = written {
                self.metrics.checkpoint_publish_failures.inc();
                tracing::warn!(error = %e, file = %path.display(), "cannot publish a checkpoint (checkpoints.publishFile)");
            }
        }
        if let Some(url) = &self.settings.publish_url {
            let sent = self
                .http
                .post(url)
                .header("content-type", "application/json")
                .body(line)
                .send()
                .await
                .and_then(reqwest::Response::error_for_status);
            if let Err(e) = sent {
                self.metrics.checkpoint_publish_failures.inc();
                tracing::warn!(error = %e.without_url(), "cannot publish a checkpoint (checkpoints.publishUrl)");
            }
        }
    }
}
