//! [`AppState`]: what every handler shares.

use std::sync::Arc;

use tokio::sync::Semaphore;

use super::readiness::Readiness;
use crate::auth::access::AccessLog;
use crate::auth::Auth;
use crate::buffer::SharedBuffer;
use crate::config::Settings;
use crate::db::ReadStore;
use crate::domain::keys::Signer;
use crate::domain::rules::EventRules;
use crate::metrics::Metrics;
use crate::workers::checkpoints::Checkpointer;
use crate::workers::live::LiveFeed;
use crate::workers::retention::Purger;
use crate::writer::AuditWriter;

/// How long a checkpoint's heads, once their digest held, are not read again.
pub const CHECKED_CHECKPOINTS_TTL: std::time::Duration = std::time::Duration::from_secs(600);

/// What handlers share. Cheap to clone.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The one write door.
    pub writer: AuditWriter,
    /// Queries, verification and the pool's health.
    pub store: ReadStore,
    /// The metrics.
    pub metrics: Arc<Metrics>,
    /// Settings in force.
    pub settings: Arc<Settings>,
    /// Whether the service accepts traffic.
    pub readiness: Arc<Readiness>,
    /// `server.maxInFlightBodyBytes`, shared by every request with a body.
    pub body_budget: Arc<Semaphore>,
    /// Access control.
    pub auth: Arc<Auth>,
    /// Access records.
    pub access: AccessLog,
    /// Rules beyond the contract's (`validation:`).
    pub rules: Arc<EventRules>,
    /// The key that signs exports and checkpoints.
    pub signer: Arc<Signer>,
    /// Signed checkpoints (the worker's, and those asked for by an administrator).
    pub checkpointer: Checkpointer,
    /// Checkpoints whose heads' digest a verification checked, for
    /// [`CHECKED_CHECKPOINTS_TTL`]: their heads are not read again meanwhile.
    pub checked_checkpoints: moka::sync::Cache<i64, ()>,
    /// Retention runs (the worker's, and those asked for by an administrator).
    pub purger: Purger,
    /// The outage buffer, when `buffer.enabled`.
    pub buffer: Option<SharedBuffer>,
    /// The live feed of committed events (`GET /api/v1/audit/events/stream`).
    pub live: LiveFeed,
}
