//! Every metric the service exports, declared and documented in one place.
//!
//! Label values come only from bounded sets: route templates (never raw paths), HTTP methods
//! the router knows, status codes the service emits, the contract's 14 event categories, the
//! write kinds `single`/`batch`, the pool names `primary`/`replica`, the replica's fallback
//! reasons, and the outage buffer's refusal reasons `full`/`failed`. Nothing from a request body or query string
//! becomes a label value (an upstream defect).
//!
//! Pool gauges are read from the pool when `/metrics` is scraped; pool counters
//! ([`PoolCounters`]) are declared by the pool, registered here and incremented by the pool
//! itself (see [`crate::db::pool`]).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

use crate::db::capacity::Capacity;
use crate::db::pool::{PoolCounters, PoolSnapshot};
use crate::db::replica::ReplicaMetrics;

/// The primary's pool, a `pool` label value.
pub const POOL_NAME: &str = "primary";
/// The read replica's pool (`database.readReplica`), the other `pool` label value.
pub const REPLICA_POOL_NAME: &str = "replica";

/// Labels of pool metrics.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabels {
    /// Pool name.
    pub pool: &'static str,
}

/// Labels of HTTP metrics.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// Request method.
    pub method: String,
    /// Matched route template, or `unmatched`.
    pub route: String,
    /// Status code.
    pub status: u16,
}

/// Labels of events-written counters.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CategoryLabels {
    /// Contract category.
    pub category: &'static str,
}

/// Labels of write latency.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabels {
    /// `single` or `batch`.
    pub kind: &'static str,
}

/// Labels of the build info gauge.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    /// Crate version.
    pub version: &'static str,
}

/// Labels of authentication outcomes.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AuthLabels {
    /// `auth.mode`: `tokens`, `kubernetes`, `mtls`, `none`.
    pub mode: &'static str,
    /// `allowed`, `unauthenticated`, `forbidden`, `rate_limited`, `unavailable`.
    pub result: &'static str,
}

/// Labels of the Kubernetes answer cache.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabels {
    /// `tokenreview` or `subjectaccessreview`.
    pub api: &'static str,
    /// `hit` or `miss`.
    pub result: &'static str,
}

/// Labels of calls to the Kubernetes API server.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KubernetesApiLabels {
    /// `tokenreview` or `subjectaccessreview`.
    pub api: &'static str,
}

/// Labels of file reloads.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    /// `tokens` (the tokens file) or `tls` (the API listener's certificate, key and client CA).
    pub file: &'static str,
    /// `ok`, or `error` (the old contents stay in force).
    pub result: &'static str,
}

/// Labels of access records.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AccessLabels {
    /// `query`, `read`, `verify` or `denied`.
    pub action: &'static str,
    /// `recorded`, `suppressed` (denials beyond `auth.denialsPerSecond`) or `failed`.
    pub result: &'static str,
}

/// Counters of access control, shared with `auth` (declared here, incremented there).
#[derive(Debug, Clone)]
pub struct AuthCounters {
    /// Authentication and authorization outcomes.
    pub requests: Family<AuthLabels, Counter>,
    /// Kubernetes answers served from the cache, or not.
    pub cache: Family<CacheLabels, Counter>,
    /// Latency of TokenReview and SubjectAccessReview calls.
    pub kubernetes_duration: Family<KubernetesApiLabels, Histogram>,
    /// Failed TokenReview and SubjectAccessReview calls (answered 503).
    pub kubernetes_errors: Family<KubernetesApiLabels, Counter>,
    /// Reloads of the tokens file and of the TLS files.
    pub reloads: Family<ReloadLabels, Counter>,
    /// Access records written, suppressed or failed.
    pub access: Family<AccessLabels, Counter>,
}

impl Default for AuthCounters {
    fn default() -> Self {
        Self {
            requests: Family::default(),
            cache: Family::default(),
            kubernetes_duration: Family::new_with_constructor(
                seconds_histogram as fn() -> Histogram,
            ),
            kubernetes_errors: Family::default(),
            reloads: Family::default(),
            access: Family::default(),
        }
    }
}

/// Labels of retention runs.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RunLabels {
    /// `ok`, `failed`, or `skipped` (another replica holds the lease).
    pub result: &'static str,
}

/// Labels of exports.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ExportLabels {
    /// `json`, `ndjson` or `csv`.
    pub format: &'static str,
}

/// Metrics of what happens after a write: holds, retention, partitions, exports, checkpoints.
#[derive(Debug, Clone, Default)]
pub struct LifecycleMetrics {
    /// Legal holds placed.
    pub holds_placed: Counter,
    /// Legal holds released.
    pub holds_released: Counter,
    /// Purge runs by result.
    pub purge_runs: Family<RunLabels, Counter>,
    /// Events deleted by retention (batched deletes and dropped partitions).
    pub rows_purged: Counter,
    /// Partitions dropped whole by retention.
    pub partitions_dropped: Counter,
    /// Partitions created ahead (or on demand for old events).
    pub partitions_created: Counter,
    /// Unix time of the last successful purge run.
    pub purge_last_success: Gauge,
    /// Exports shipped, by format.
    pub exports: Family<ExportLabels, Counter>,
    /// Events shipped in exports.
    pub exported_events: Counter,
    /// Signed checkpoints written.
    pub checkpoints: Counter,
    /// Unix time of the last checkpoint written.
    pub checkpoint_last_success: Gauge,
    /// Checkpoints that could not be published off-host (file or URL).
    pub checkpoint_publish_failures: Counter,
}

/// Labels of writes the outage buffer refused.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusedLabels {
    /// `full` (past `buffer.maxBytes` or `redis.dlqMaxLen`) or `failed` (its storage failed).
    pub reason: &'static str,
}

/// Metrics of the outage buffer (see [`crate::buffer`]).
#[derive(Debug, Clone, Default)]
pub struct BufferMetrics {
    /// 1 while the database is known to be down or buffered events wait for replay.
    pub buffering: Gauge,
    /// Events in the buffer, not yet committed.
    pub events: Gauge,
    /// Bytes the buffer takes (segment files, or the Redis stream's memory).
    pub bytes: Gauge,
    /// Share of the buffer's bound in use, 0..1 (bytes of `buffer.maxBytes`, or entries of
    /// `redis.dlqMaxLen`).
    pub fill_ratio: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// Age of the oldest buffered event.
    pub oldest_age_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// Events accepted into the buffer (answered 202).
    pub accepted: Counter,
    /// Events replayed from the buffer and committed.
    pub replayed: Counter,
    /// Events the database refused as data on replay, kept in the quarantine.
    pub quarantined: Counter,
    /// Events the buffer refused (answered 503), by reason.
    refused: Family<RefusedLabels, Counter>,
}

impl BufferMetrics {
    /// The refusal counter of `reason` (`full` or `failed`).
    pub fn refused(&self, reason: &'static str) -> Counter {
        self.refused
            .get_or_create(&RefusedLabels { reason })
            .clone()
    }
}

/// The registry and handles to every metric.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// The primary pool's counters, shared with the pool.
    pub pool: PoolCounters,
    pools: PoolFamilies,
    /// The read replica's lag and fallbacks, with `database.readReplica`.
    pub replica: Option<ReplicaMetrics>,
    http_requests: Family<HttpLabels, Counter>,
    http_duration: Family<HttpLabels, Histogram>,
    events_written: Family<CategoryLabels, Counter>,
    write_duration: Family<WriteLabels, Histogram>,
    /// 1 while the service accepts traffic.
    pub ready: Gauge,
    /// Capacity figures (PostgreSQL only), see [`crate::db::capacity`].
    pub capacity: CapacityGauges,
    /// Access control.
    pub auth: AuthCounters,
    /// Holds, retention, partitions, exports, checkpoints.
    pub lifecycle: LifecycleMetrics,
    /// The outage buffer.
    pub buffer: BufferMetrics,
    /// The live stream of committed events.
    pub live: crate::workers::live::LiveMetrics,
}

/// Gauges of the connection budget check.
#[derive(Debug, Clone, Default)]
pub struct CapacityGauges {
    /// Server `max_connections`.
    pub max_connections: Gauge,
    /// Slots reserved for superusers and `pg_use_reserved_connections`.
    pub reserved_connections: Gauge,
    /// Connections held by other clients when checked.
    pub other_connections: Gauge,
    /// Connections this service may use: the tightest limit minus reserved and others.
    pub available_connections: Gauge,
    /// What the service needs from PostgreSQL (see [`Capacity::budget`]).
    pub budget_connections: Gauge,
    /// Peak replicas the budget counts.
    pub replicas: Gauge,
    /// 1 when the budget does not fit.
    pub violated: Gauge,
}

impl CapacityGauges {
    /// Sets every gauge from a finished check.
    pub fn set(&self, cap: &Capacity) {
        self.max_connections.set(cap.max_connections);
        self.reserved_connections
            .set(cap.superuser_reserved + cap.reserved);
        self.other_connections.set(cap.others);
        self.available_connections.set(cap.available());
        self.budget_connections.set(cap.budget());
        self.replicas.set(i64::from(cap.replicas));
        self.violated.set(i64::from(cap.violated()));
    }
}

fn seconds_histogram() -> Histogram {
    // 0.5 ms .. ~16 s
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

impl Metrics {
    /// Declares every metric. `capacity` says whether the capacity gauges apply (PostgreSQL),
    /// `replica` whether a read replica is configured.
    pub fn new(capacity: bool, replica: bool) -> Self {
        let mut registry = Registry::default();
        let pools = PoolFamilies::new();
        pools.register(&mut registry);
        let pool = pools.counters(POOL_NAME);
        let replica = replica.then(|| {
            let m = ReplicaMetrics::default();
            registry.register(
                "datastorage_db_replica_lag_seconds",
                "Replay lag of the read replica at its last sample: 0 while it has replayed all it received, else the age of its last replayed transaction",
                m.lag_seconds.clone(),
            );
            registry.register(
                "datastorage_db_replica_usable",
                "1 while reads go to the read replica (reachable, in recovery, lag within maxReplicaLag)",
                m.usable.clone(),
            );
            registry.register(
                "datastorage_db_replica_fallback_reads",
                "Reads sent to the primary instead of the replica, by reason: lag, down, busy, unchecked",
                m.fallbacks.clone(),
            );
            m
        });

        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "datastorage_http_requests",
            "HTTP requests by method, matched route and status",
            http_requests.clone(),
        );
        let http_duration = Family::<HttpLabels, Histogram>::new_with_constructor(
            seconds_histogram as fn() -> Histogram,
        );
        registry.register(
            "datastorage_http_request_duration_seconds",
            "HTTP request latency by method, matched route and status",
            http_duration.clone(),
        );
        let events_written = Family::<CategoryLabels, Counter>::default();
        registry.register(
            "datastorage_audit_events_written",
            "Audit events committed, by contract category (replays not counted)",
            events_written.clone(),
        );
        let write_duration = Family::<WriteLabels, Histogram>::new_with_constructor(
            seconds_histogram as fn() -> Histogram,
        );
        registry.register(
            "datastorage_audit_write_duration_seconds",
            "Time to commit a write, pool acquisition included, by kind (single or batch)",
            write_duration.clone(),
        );

        let build = Family::<BuildLabels, Gauge>::default();
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        registry.register(
            "datastorage_build_info",
            "Build information; always 1",
            build,
        );
        let ready = Gauge::default();
        registry.register("datastorage_ready", "1 while the service accepts traffic (migrations applied, not shutting down, the database reachable or the outage buffer taking writes)", ready.clone());

        let cap = CapacityGauges::default();
        if capacity {
            let sub = &mut registry;
            sub.register(
                "datastorage_db_capacity_max_connections",
                "PostgreSQL max_connections",
                cap.max_connections.clone(),
            );
            sub.register(
                "datastorage_db_capacity_reserved_connections",
                "Connection slots reserved for superusers and pg_use_reserved_connections",
                cap.reserved_connections.clone(),
            );
            sub.register(
                "datastorage_db_capacity_other_connections",
                "Connections held by other clients when the budget was checked",
                cap.other_connections.clone(),
            );
            sub.register("datastorage_db_capacity_available_connections", "Connections this service may use: the tightest limit minus reserved slots and other clients", cap.available_connections.clone());
            sub.register(
                "datastorage_db_capacity_budget_connections",
                "Connections this service needs from PostgreSQL: replicas x maxOpenConns + headroom, or behind a pooler its pool_size + reserve_pool + headroom",
                cap.budget_connections.clone(),
            );
            sub.register(
                "datastorage_db_capacity_replicas",
                "Peak replicas counted by the budget",
                cap.replicas.clone(),
            );
            sub.register(
                "datastorage_db_capacity_violated",
                "1 when the connection budget does not fit the server",
                cap.violated.clone(),
            );
        }

        let auth = AuthCounters::default();
        registry.register(
            "datastorage_auth_requests",
            "Requests checked by access control, by auth.mode and result (allowed, unauthenticated, forbidden, rate_limited, unavailable)",
            auth.requests.clone(),
        );
        registry.register(
            "datastorage_auth_cache_requests",
            "Kubernetes answers looked up in the cache, by API (tokenreview, subjectaccessreview) and result (hit, miss)",
            auth.cache.clone(),
        );
        registry.register(
            "datastorage_auth_kubernetes_request_duration_seconds",
            "Latency of TokenReview and SubjectAccessReview calls to the API server",
            auth.kubernetes_duration.clone(),
        );
        registry.register(
            "datastorage_auth_kubernetes_errors",
            "TokenReview and SubjectAccessReview calls that failed or timed out (the request answered 503)",
            auth.kubernetes_errors.clone(),
        );
        registry.register(
            "datastorage_auth_reloads",
            "Reloads of the tokens file and the API listener's TLS files, by result (ok, error: the old contents stay)",
            auth.reloads.clone(),
        );
        registry.register(
            "datastorage_access_records",
            "Access records (the service's own audit events of reads and denials), by action and result (recorded, suppressed, failed)",
            auth.access.clone(),
        );

        let lifecycle = LifecycleMetrics::default();
        let l = &lifecycle;
        registry.register(
            "datastorage_legal_holds_placed",
            "Legal holds placed",
            l.holds_placed.clone(),
        );
        registry.register(
            "datastorage_legal_holds_released",
            "Legal holds released",
            l.holds_released.clone(),
        );
        registry.register("datastorage_retention_runs", "Retention purge runs, by result (ok, failed, skipped: another replica holds the lease)", l.purge_runs.clone());
        registry.register(
            "datastorage_retention_rows_purged",
            "Events deleted by retention, in batches or with their partition",
            l.rows_purged.clone(),
        );
        registry.register(
            "datastorage_retention_partitions_dropped",
            "Partitions of audit_events dropped whole by retention (PostgreSQL)",
            l.partitions_dropped.clone(),
        );
        registry.register(
            "datastorage_partitions_created",
            "Partitions of audit_events created, ahead of time or for an old event (PostgreSQL)",
            l.partitions_created.clone(),
        );
        registry.register(
            "datastorage_retention_last_success_timestamp_seconds",
            "Unix time of the last successful retention run by this replica (0: none yet)",
            l.purge_last_success.clone(),
        );
        registry.register(
            "datastorage_exports",
            "Signed exports shipped, by format",
            l.exports.clone(),
        );
        registry.register(
            "datastorage_exported_events",
            "Events shipped in signed exports",
            l.exported_events.clone(),
        );
        registry.register(
            "datastorage_checkpoints",
            "Signed checkpoints written by this replica",
            l.checkpoints.clone(),
        );
        registry.register(
            "datastorage_checkpoint_last_success_timestamp_seconds",
            "Unix time of the last signed checkpoint written by this replica (0: none yet)",
            l.checkpoint_last_success.clone(),
        );
        registry.register(
            "datastorage_checkpoint_publish_failures",
            "Checkpoints that could not be published to checkpoints.publishFile or publishUrl",
            l.checkpoint_publish_failures.clone(),
        );
        for result in ["ok", "failed", "skipped"] {
            let _ = l.purge_runs.get_or_create(&RunLabels { result });
        }

        let buffer = BufferMetrics::default();
        let b = &buffer;
        registry.register(
            "datastorage_buffering",
            "1 while the database is unreachable or buffered writes wait for replay, else 0",
            b.buffering.clone(),
        );
        registry.register(
            "datastorage_buffer_events",
            "Events in the outage buffer, accepted (202) and not yet committed",
            b.events.clone(),
        );
        registry.register(
            "datastorage_buffer_bytes",
            "Bytes the outage buffer takes: its segment files (disk) or its stream's memory (redis)",
            b.bytes.clone(),
        );
        registry.register(
            "datastorage_buffer_fill_ratio",
            "Share of the outage buffer's bound in use, 0 to 1: bytes of buffer.maxBytes (disk) or entries of redis.dlqMaxLen (redis)",
            b.fill_ratio.clone(),
        );
        registry.register(
            "datastorage_buffer_oldest_age_seconds",
            "Age of the oldest event in the outage buffer (0 when empty)",
            b.oldest_age_seconds.clone(),
        );
        registry.register(
            "datastorage_buffer_accepted_events",
            "Events accepted into the outage buffer while the database was unreachable (answered 202)",
            b.accepted.clone(),
        );
        registry.register(
            "datastorage_buffer_replayed_events",
            "Events replayed from the outage buffer and committed",
            b.replayed.clone(),
        );
        registry.register(
            "datastorage_buffer_quarantined_events",
            "Buffered events the database refused as data on replay, kept in the quarantine",
            b.quarantined.clone(),
        );
        registry.register(
            "datastorage_buffer_refused_events",
            "Events the outage buffer refused (answered 503), by reason: full or failed",
            b.refused.clone(),
        );
        for reason in ["full", "failed"] {
            let _ = b.refused(reason);
        }

        let live = crate::workers::live::LiveMetrics::default();
        registry.register(
            "datastorage_stream_subscribers",
            "Subscribers of the live event stream (GET /api/v1/audit/events/stream) now",
            live.subscribers.clone(),
        );
        registry.register(
            "datastorage_stream_refused_subscriptions",
            "Stream subscriptions refused at explorer.streamMaxSubscribers (answered 503)",
            live.refused.clone(),
        );
        registry.register(
            "datastorage_stream_lagged_events",
            "Events stream subscribers missed because they fell behind by more than explorer.streamBufferEvents",
            live.lagged.clone(),
        );
        registry.register(
            "datastorage_stream_dropped_events",
            "Committed events the live stream dropped because its encoder was behind (writes never wait for it)",
            live.dropped.clone(),
        );

        // Pre-create the per-category series so a dashboard shows zeros instead of gaps.
        for c in datastorage_api::EventCategory::ALL {
            let _ = events_written.get_or_create(&CategoryLabels {
                category: c.as_str(),
            });
        }
        Self {
            registry,
            pool,
            pools,
            replica,
            http_requests,
            http_duration,
            events_written,
            write_duration,
            ready,
            capacity: cap,
            auth,
            lifecycle,
            buffer,
            live,
        }
    }

    /// Records one finished HTTP request.
    pub fn observe_request(&self, method: &str, route: &str, status: u16, seconds: f64) {
        let labels = HttpLabels {
            method: method.to_owned(),
            route: route.to_owned(),
            status,
        };
        self.http_requests.get_or_create(&labels).inc();
        self.http_duration.get_or_create(&labels).observe(seconds);
    }

    /// Records committed events and the write's latency.
    pub fn observe_write(
        &self,
        kind: &'static str,
        categories: impl IntoIterator<Item = &'static str>,
        seconds: f64,
    ) {
        for category in categories {
            self.events_written
                .get_or_create(&CategoryLabels { category })
                .inc();
        }
        self.write_duration
            .get_or_create(&WriteLabels { kind })
            .observe(seconds);
    }

    /// The read replica pool's counters (`pool="replica"`).
    pub fn replica_pool(&self) -> PoolCounters {
        self.pools.counters(REPLICA_POOL_NAME)
    }

    /// Encodes everything in the Prometheus/OpenMetrics text format, reading the pools' gauges
    /// first.
    pub fn encode(&self, pools: &[(&'static str, PoolSnapshot)]) -> String {
        for (name, snapshot) in pools {
            self.pools.set(name, snapshot);
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// The pool metrics, one series per pool (`pool` label).
#[derive(Debug)]
struct PoolFamilies {
    wait_count: Family<PoolLabels, Counter>,
    wait_duration_seconds: Family<PoolLabels, Counter<f64, AtomicU64>>,
    max_idle_closed: Family<PoolLabels, Counter>,
    max_idle_time_closed: Family<PoolLabels, Counter>,
    max_lifetime_closed: Family<PoolLabels, Counter>,
    acquire_timeouts: Family<PoolLabels, Counter>,
    acquire_duration: Family<PoolLabels, Histogram, fn() -> Histogram>,
    max_open: Family<PoolLabels, Gauge>,
    max_idle: Family<PoolLabels, Gauge>,
    open: Family<PoolLabels, Gauge>,
    in_use: Family<PoolLabels, Gauge>,
    idle: Family<PoolLabels, Gauge>,
    waiting: Family<PoolLabels, Gauge>,
}

impl PoolFamilies {
    fn new() -> Self {
        Self {
            wait_count: Family::default(),
            wait_duration_seconds: Family::default(),
            max_idle_closed: Family::default(),
            max_idle_time_closed: Family::default(),
            max_lifetime_closed: Family::default(),
            acquire_timeouts: Family::default(),
            acquire_duration: Family::new_with_constructor(seconds_histogram),
            max_open: Family::default(),
            max_idle: Family::default(),
            open: Family::default(),
            in_use: Family::default(),
            idle: Family::default(),
            waiting: Family::default(),
        }
    }

    fn register(&self, registry: &mut Registry) {
        registry.register(
            "datastorage_db_pool_wait_count",
            "Acquisitions that waited because every connection was in use (Go DBStats.WaitCount)",
            self.wait_count.clone(),
        );
        registry.register(
            "datastorage_db_pool_wait_duration_seconds",
            "Total seconds spent waiting for a connection (Go DBStats.WaitDuration)",
            self.wait_duration_seconds.clone(),
        );
        registry.register("datastorage_db_pool_max_idle_closed", "Connections closed because idle connections exceeded maxIdleConns (Go DBStats.MaxIdleClosed)", self.max_idle_closed.clone());
        registry.register(
            "datastorage_db_pool_max_idle_time_closed",
            "Connections closed for exceeding connMaxIdleTime (Go DBStats.MaxIdleTimeClosed)",
            self.max_idle_time_closed.clone(),
        );
        registry.register(
            "datastorage_db_pool_max_lifetime_closed",
            "Connections closed for exceeding connMaxLifetime (Go DBStats.MaxLifetimeClosed)",
            self.max_lifetime_closed.clone(),
        );
        registry.register(
            "datastorage_db_pool_acquire_timeouts",
            "Acquisitions that gave up after acquireTimeout and answered 503",
            self.acquire_timeouts.clone(),
        );
        registry.register(
            "datastorage_db_pool_acquire_duration_seconds",
            "Time to get a connection from the pool, waiting and connecting included",
            self.acquire_duration.clone(),
        );
        registry.register(
            "datastorage_db_pool_max_open_connections",
            "Configured maxOpenConns (Go DBStats.MaxOpenConnections)",
            self.max_open.clone(),
        );
        registry.register(
            "datastorage_db_pool_max_idle_connections",
            "Configured maxIdleConns",
            self.max_idle.clone(),
        );
        registry.register(
            "datastorage_db_pool_open_connections",
            "Connections open now, in use + idle (Go DBStats.OpenConnections)",
            self.open.clone(),
        );
        registry.register(
            "datastorage_db_pool_in_use_connections",
            "Connections in use now (Go DBStats.InUse)",
            self.in_use.clone(),
        );
        registry.register(
            "datastorage_db_pool_idle_connections",
            "Idle connections now (Go DBStats.Idle)",
            self.idle.clone(),
        );
        registry.register(
            "datastorage_db_pool_waiting",
            "Acquirers waiting for a connection now",
            self.waiting.clone(),
        );
    }

    /// The counters of pool `pool`, which its series then show.
    fn counters(&self, pool: &'static str) -> PoolCounters {
        let l = PoolLabels { pool };
        PoolCounters {
            wait_count: self.wait_count.get_or_create(&l).clone(),
            wait_duration_seconds: self.wait_duration_seconds.get_or_create(&l).clone(),
            max_idle_closed: self.max_idle_closed.get_or_create(&l).clone(),
            max_idle_time_closed: self.max_idle_time_closed.get_or_create(&l).clone(),
            max_lifetime_closed: self.max_lifetime_closed.get_or_create(&l).clone(),
            acquire_timeouts: self.acquire_timeouts.get_or_create(&l).clone(),
            acquire_duration: self.acquire_duration.get_or_create(&l).clone(),
            waiting: Default::default(),
        }
    }

    /// The gauges of pool `pool` from a snapshot.
    fn set(&self, pool: &'static str, p: &PoolSnapshot) {
        let l = PoolLabels { pool };
        self.max_open.get_or_create(&l).set(i64::from(p.max_open));
        self.max_idle.get_or_create(&l).set(i64::from(p.max_idle));
        self.open.get_or_create(&l).set(p.open as i64);
        self.in_use.get_or_create(&l).set(p.in_use as i64);
        self.idle.get_or_create(&l).set(p.idle as i64);
        self.waiting.get_or_create(&l).set(p.waiting as i64);
    }
}
