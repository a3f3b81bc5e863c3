//! The read replica (`database.readReplica`): a second pool, on a streaming replica, that
//! serves queries, stats, exports and chain verification while it is close enough behind.
//!
//! Its lag is sampled every `lagCheckInterval` (never per request): `0` while it has replayed
//! all the WAL it received, else the age of the last transaction it replayed
//! (`pg_last_xact_replay_timestamp()`). While the lag is at most `maxReplicaLag` a read takes a
//! replica connection; above it, while the replica cannot be reached or is no longer in
//! recovery, or when no replica connection can be had, the read goes to the primary and
//! `datastorage_db_replica_fallback_reads_total` says why. Writes, idempotency checks and the
//! reads inside a write never come here.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use sqlx::PgConnection;

use super::pool::{AcquireError, Pool, PooledConn};

/// Why a read went to the primary.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FallbackLabels {
    /// `lag` (behind by more than `maxReplicaLag`), `down` (unreachable, or not a replica),
    /// `busy` (no replica connection within `acquireTimeout`) or `unchecked` (no lag sample
    /// yet).
    pub reason: &'static str,
}

/// Metrics of the replica.
#[derive(Debug, Clone, Default)]
pub struct ReplicaMetrics {
    /// The last sampled lag, seconds.
    pub lag_seconds: Gauge<f64, AtomicU64>,
    /// 1 while reads go to the replica.
    pub usable: Gauge,
    /// Reads sent to the primary instead, by reason.
    pub fallbacks: Family<FallbackLabels, Counter>,
}

const UNCHECKED: u8 = 0;
const READY: u8 = 1;
const LAGGING: u8 = 2;
const DOWN: u8 = 3;

/// Replay lag in seconds: 0 while everything received is replayed, else the age of the last
/// replayed transaction; NULL when the server is not in recovery (not a replica).
const LAG_SQL: &str = "SELECT CASE WHEN NOT pg_is_in_recovery() THEN NULL \
    WHEN pg_last_wal_receive_lsn() IS NOT DISTINCT FROM pg_last_wal_replay_lsn() THEN 0::float8 \
    ELSE COALESCE(EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp())::float8, 0) END";

/// The replica's pool and what its last lag sample said.
#[derive(Debug)]
pub struct Replica {
    /// Its pool (`pool="replica"` in the pool metrics).
    pub pool: Pool<PgConnection>,
    max_lag: Duration,
    state: AtomicU8,
    metrics: ReplicaMetrics,
}

impl Replica {
    /// The replica, sampled every `every` by a task that ends when the replica is dropped.
    pub fn start(
        pool: Pool<PgConnection>,
        max_lag: Duration,
        every: Duration,
        metrics: ReplicaMetrics,
    ) -> Arc<Self> {
        let replica = Arc::new(Self {
            pool,
            max_lag,
            state: AtomicU8::new(UNCHECKED),
            metrics,
        });
        tokio::spawn(sampler(Arc::downgrade(&replica), every));
        replica
    }

    /// A connection for a read while the replica is usable; otherwise `None`, with the reason
    /// counted.
    pub async fn acquire(&self) -> Option<PooledConn<PgConnection>> {
        let reason = match self.state.load(Ordering::Relaxed) {
            READY => match self.pool.acquire().await {
                Ok(conn) => return Some(conn),
                Err(AcquireError::Timeout(_)) => "busy",
                Err(_) => {
                    self.set(DOWN);
                    "down"
                }
            },
            LAGGING => "lag",
            DOWN => "down",
            _ => "unchecked",
        };
        self.metrics
            .fallbacks
            .get_or_create(&FallbackLabels { reason })
            .inc();
        None
    }

    fn set(&self, state: u8) {
        self.state.store(state, Ordering::Relaxed);
        self.metrics.usable.set(i64::from(state == READY));
    }

    /// One lag sample.
    async fn sample(&self) {
        let lag = async {
            let mut conn = self.pool.acquire().await.ok()?;
            let lag: Option<f64> = sqlx::query_scalar(LAG_SQL)
                .fetch_one(&mut *conn)
                .await
                .ok()?;
            lag
        };
        match tokio::time::timeout(self.pool.limits().acquire_timeout, lag).await {
            Ok(Some(lag)) => {
                self.metrics.lag_seconds.set(lag);
                let behind = lag > self.max_lag.as_secs_f64();
                self.set(if behind { LAGGING } else { READY });
            }
            _ => self.set(DOWN),
        }
    }
}

async fn sampler(replica: Weak<Replica>, every: Duration) {
    loop {
        let Some(r) = replica.upgrade() else { return };
        r.sample().await;
        drop(r);
        tokio::time::sleep(every).await;
    }
}
