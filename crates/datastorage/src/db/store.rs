//! [`Store`]: the backend in use, behind one interface; [`ReadStore`], the part of it request
//! handlers may see.
//!
//! Writes go through [`crate::writer::AuditWriter`], the one write door; handlers hold a
//! [`ReadStore`], which has no write methods.

use std::sync::Arc;

use datastorage_api::query::EventFilter;
use datastorage_api::{AuditEvent, ValidatedEvent, VerifyChainResponse};
use uuid::Uuid;

use tokio::sync::Semaphore;

use super::error::{DbError, RETRY_AFTER_BUSY};
use super::pool::{Pool, PoolCounters, PoolLimits, PoolSnapshot, Target};
use super::postgres::{HeadLocks, PgStore};
use super::replica::{Replica, ReplicaMetrics};
use super::shared::{Cancelled, Page, RawJson, WriteOutcome};
use super::{postgres, sqlite};
use crate::config::{DatabaseSettings, Driver, PartitionInterval};
use crate::domain::chain::{ChainVerifier, Hasher};
use crate::metrics::{POOL_NAME, REPLICA_POOL_NAME};

/// The storage backend in use. Cheap to clone.
#[derive(Debug, Clone)]
pub enum Store {
    /// PostgreSQL.
    Postgres(postgres::PgStore),
    /// SQLite.
    Sqlite(sqlite::SqliteStore),
}

macro_rules! dispatch {
    ($self:expr, $s:ident => $e:expr) => {
        match $self {
            Store::Postgres($s) => $e,
            Store::Sqlite($s) => $e,
        }
    };
}

impl Store {
    /// Applies pending migrations on a dedicated connection.
    pub async fn migrate(db: &DatabaseSettings) -> anyhow::Result<usize> {
        match db.effective_driver() {
            Driver::Postgres => postgres::migrate(db).await,
            Driver::Sqlite => sqlite::migrate(db).await,
        }
    }

    /// Fails unless every embedded migration is applied (for `migrateOnStart: false`).
    pub async fn check_migrations(db: &DatabaseSettings) -> anyhow::Result<()> {
        match db.effective_driver() {
            Driver::Postgres => postgres::check_migrations(db).await,
            Driver::Sqlite => sqlite::check_migrations(db).await,
        }
    }

    /// Waits for the database to accept a connection, for at most `patience` (see
    /// [`postgres::wait_until_reachable`]); SQLite is always there.
    pub async fn wait_for_database(
        db: &DatabaseSettings,
        patience: std::time::Duration,
    ) -> anyhow::Result<()> {
        match db.effective_driver() {
            Driver::Postgres => postgres::wait_until_reachable(db, patience).await,
            Driver::Sqlite => Ok(()),
        }
    }

    /// Builds the pool. Connections open lazily.
    pub fn open(
        db: &DatabaseSettings,
        counters: PoolCounters,
        replica: Option<(PoolCounters, ReplicaMetrics)>,
        hasher: Hasher,
        partitions: PartitionInterval,
    ) -> anyhow::Result<Self> {
        let hasher = Arc::new(hasher);
        let limits = PoolLimits::from_settings(db);
        let target = |per_transaction| Target {
            description: db.target(),
            has_password: db.password.is_some(),
            per_transaction,
        };
        Ok(match db.effective_driver() {
            Driver::Postgres => Store::Postgres(postgres::PgStore {
                pool: Pool::new(
                    postgres::connect_options(db),
                    limits,
                    counters,
                    target(postgres::per_transaction(db)),
                ),
                replica: match (db.replica(), &db.read_replica, replica) {
                    (Some(rdb), Some(r), Some((counters, metrics))) => Some(Replica::start(
                        Pool::new(
                            postgres::connect_options(&rdb),
                            PoolLimits::from_settings(&rdb),
                            counters,
                            Target {
                                description: rdb.target(),
                                has_password: rdb.password.is_some(),
                                per_transaction: None,
                            },
                        ),
                        r.max_replica_lag,
                        r.lag_check_interval,
                        metrics,
                    )),
                    _ => None,
                },
                hasher,
                partitions,
            }),
            Driver::Sqlite => Store::Sqlite(sqlite::SqliteStore::new(
                db,
                Pool::new(sqlite::connect_options(db), limits, counters, target(None)),
                hasher,
            )?),
        })
    }

    /// Writes events atomically, in order; every event gets an outcome in input order. Rolls
    /// back with [`DbError::Cancelled`] when `cancelled` says so just before the commit.
    #[tracing::instrument(skip_all, fields(events = events.len()))]
    pub async fn insert_events(
        &self,
        events: &[ValidatedEvent],
        cancelled: &Cancelled<'_>,
    ) -> Result<Vec<WriteOutcome>, DbError> {
        let outcomes = match self {
            Store::Postgres(s) => s.insert_events(events, HeadLocks::Wait, cancelled).await?,
            Store::Sqlite(s) => return s.insert_events(events, cancelled).await,
        };
        outcomes
            .into_iter()
            .map(|o| {
                o.ok_or_else(|| {
                    DbError::Internal(anyhow::anyhow!("a waiting write skipped a chain"))
                })
            })
            .collect()
    }

    /// Writes a commit group of independent events in one transaction, without waiting for a
    /// chain head another transaction holds: the events of such chains are left out (`None`)
    /// for the caller to write on their own, so one stuck chain does not stall the group.
    #[tracing::instrument(skip_all, fields(events = events.len()))]
    pub async fn insert_group(
        &self,
        events: &[ValidatedEvent],
        cancelled: &Cancelled<'_>,
    ) -> Result<Vec<Option<WriteOutcome>>, DbError> {
        match self {
            Store::Postgres(s) => s.insert_events(events, HeadLocks::Skip, cancelled).await,
            // One writer at a time holds SQLite: there is no chain lock to skip.
            Store::Sqlite(s) => Ok(s
                .insert_events(events, cancelled)
                .await?
                .into_iter()
                .map(Some)
                .collect()),
        }
    }

    /// Writes the next signed checkpoint (see `write_checkpoint` of the backends).
    pub async fn write_checkpoint(
        &self,
        key: &datastorage_api::signing::SigningKey,
        margin: std::time::Duration,
    ) -> Result<Option<datastorage_api::checkpoint::Checkpoint>, DbError> {
        dispatch!(self, s => s.write_checkpoint(key, margin).await)
    }

    /// The read side of this store, for request handlers.
    pub fn reader(&self) -> ReadStore {
        ReadStore {
            store: self.clone(),
            verifications: Arc::new(Semaphore::new(MAX_CONCURRENT_VERIFICATIONS)),
            exports: Arc::new(Semaphore::new(MAX_CONCURRENT_EXPORTS)),
        }
    }

    /// Pool limits in force.
    pub fn pool_limits(&self) -> PoolLimits {
        dispatch!(self, s => s.pool.limits())
    }

    /// The counters the pool increments.
    pub fn pool_counters(&self) -> PoolCounters {
        dispatch!(self, s => s.pool.counters().clone())
    }

    /// Closes the pools.
    pub async fn close(&self) {
        if let Store::Postgres(PgStore {
            replica: Some(r), ..
        }) = self
        {
            r.pool.close().await;
        }
        dispatch!(self, s => s.pool.close().await)
    }

    /// `postgres` or `sqlite`.
    pub fn driver_name(&self) -> &'static str {
        match self {
            Store::Postgres(_) => "postgres",
            Store::Sqlite(_) => "sqlite",
        }
    }
}

/// Chain verifications that may run at once: each holds a connection and a read snapshot for
/// as long as its chain takes to read.
pub const MAX_CONCURRENT_VERIFICATIONS: usize = 4;

/// Exports that may stream at once: each holds a connection and a read snapshot for as long
/// as its client reads.
pub const MAX_CONCURRENT_EXPORTS: usize = 2;

/// The read side of a [`Store`]: queries, chain verification, and the pool's health. Cheap to
/// clone.
#[derive(Debug, Clone)]
pub struct ReadStore {
    store: Store,
    verifications: Arc<Semaphore>,
    exports: Arc<Semaphore>,
}

impl ReadStore {
    /// One event by id.
    #[tracing::instrument(skip_all, fields(%id))]
    pub async fn get_event(&self, id: Uuid) -> Result<Option<AuditEvent<RawJson>>, DbError> {
        dispatch!(&self.store, s => s.get_event(id).await)
    }

    /// One page of events matching `filter`, with the total count of matches.
    #[tracing::instrument(skip_all, fields(limit = filter.limit))]
    pub async fn query_events(&self, filter: &EventFilter) -> Result<Page, DbError> {
        dispatch!(&self.store, s => s.query_events(filter).await)
    }

    /// Events per bucket, category and outcome (see [`datastorage_api::stats`]).
    #[tracing::instrument(skip_all, fields(bucket = r.bucket))]
    pub async fn stats(
        &self,
        r: &datastorage_api::stats::StatsRequest,
    ) -> Result<Vec<(i64, String, String, i64)>, DbError> {
        dispatch!(&self.store, s => s.stats(r).await)
    }

    /// Walks one chain, page by page, and reports every broken link. At most
    /// [`MAX_CONCURRENT_VERIFICATIONS`] run at once; one more answers 503.
    #[tracing::instrument(skip_all, fields(%correlation_id))]
    pub async fn verify_chain(&self, correlation_id: &str) -> Result<VerifyChainResponse, DbError> {
        let Ok(_slot) = self.verifications.try_acquire() else {
            let message = format!(
                "{MAX_CONCURRENT_VERIFICATIONS} chain verifications are running; try again shortly"
            );
            return Err(DbError::unavailable(
                message.clone(),
                message,
                RETRY_AFTER_BUSY,
            ));
        };
        dispatch!(&self.store, s => {
            let mut verifier = ChainVerifier::new(&s.hasher, correlation_id);
            let head = s.verify_chain(correlation_id, &mut verifier).await?;
            Ok(verifier.finish(head))
        })
    }

    /// Whether the database answers. A saturated pool counts as answering.
    pub async fn ping(&self) -> Result<(), DbError> {
        dispatch!(&self.store, s => s.ping().await)
    }

    /// A place among the [`MAX_CONCURRENT_EXPORTS`] exports, held until the export ends; none
    /// free answers 503.
    pub fn export_slot(&self) -> Result<tokio::sync::OwnedSemaphorePermit, DbError> {
        Arc::clone(&self.exports).try_acquire_owned().map_err(|_| {
            let message =
                format!("{MAX_CONCURRENT_EXPORTS} exports are streaming; try again shortly");
            DbError::unavailable(message.clone(), message, RETRY_AFTER_BUSY)
        })
    }

    /// The hasher that links and checks chains.
    pub fn hasher(&self) -> Arc<Hasher> {
        dispatch!(&self.store, s => Arc::clone(&s.hasher))
    }

    /// Streams the events matching `filter` in chain order, page by page, to `out` (see
    /// `export_events` of the backends).
    pub async fn export_events(
        &self,
        filter: &EventFilter,
        out: tokio::sync::mpsc::Sender<Result<Vec<super::shared::ExportRow>, DbError>>,
    ) -> Result<(), DbError> {
        dispatch!(&self.store, s => s.export_events(filter, out).await)
    }

    /// The newest signed checkpoint.
    pub async fn latest_checkpoint(
        &self,
    ) -> Result<Option<datastorage_api::checkpoint::Checkpoint>, DbError> {
        dispatch!(&self.store, s => s.latest_checkpoint().await)
    }

    /// What the newest checkpoint holding `correlation_id` says of it.
    pub async fn chain_checkpoint(
        &self,
        correlation_id: &str,
        heads_known_good: impl Fn(i64) -> bool + Send,
    ) -> Result<Option<super::shared::ChainAnchor>, DbError> {
        dispatch!(&self.store, s => s.chain_checkpoint(correlation_id, heads_known_good).await)
    }

    /// Legal holds: the active ones, or all with `include_released`, newest first.
    pub async fn list_holds(
        &self,
        include_released: bool,
        limit: i64,
    ) -> Result<Vec<datastorage_api::LegalHold>, DbError> {
        self.store.list_holds(include_released, limit).await
    }

    /// Pool counts of the moment.
    pub fn snapshot(&self) -> PoolSnapshot {
        dispatch!(&self.store, s => s.pool.snapshot())
    }

    /// Every pool's counts of the moment, by `pool` label: the primary's, and the read
    /// replica's when there is one.
    pub fn snapshots(&self) -> Vec<(&'static str, PoolSnapshot)> {
        let mut pools = vec![(POOL_NAME, self.snapshot())];
        if let Store::Postgres(PgStore {
            replica: Some(r), ..
        }) = &self.store
        {
            pools.push((REPLICA_POOL_NAME, r.pool.snapshot()));
        }
        pools
    }
}
