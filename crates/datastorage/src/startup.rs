//! Start-up and shutdown: [`run`] is the seam `main` and the listener tests call;
//! [`prepare`] builds the service without listeners, for in-process tests.
//!
//! Order at start: the listeners open first and answer the probes (`/healthz` 200, `/readyz`
//! 503 "starting") while the service waits for the database, retrying with backoff for
//! `database.waitOnStart`; then the capacity check (PostgreSQL; a `fail` policy refuses before
//! anything is migrated), the migrations (or a check that they are applied), the pool, the
//! workers; readiness turns on last. Order at shutdown: readiness turns 503, `shutdownDelay`
//! passes (load balancers stop routing here), the listeners stop accepting, in-flight requests
//! finish within `shutdownTimeout`, the pool closes.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{bail, Context as _};
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::auth::access::AccessLog;
use crate::auth::Auth;
use crate::buffer::OutageBuffer;
use crate::config::{format_duration, CapacityPolicy, Driver, Settings};
use crate::db::{capacity, Store};
use crate::domain::chain::Hasher;
use crate::domain::keys::Signer;
use crate::domain::rules::EventRules;
use crate::http::body::body_budget;
use crate::http::readiness::Readiness;
use crate::http::serve::{serve, ConnLimits, Gate};
use crate::http::tls::Tls;
use crate::http::{api_router, health_router, metrics_router, starting_router, AppState};
use crate::metrics::Metrics;
use crate::workers::checkpoints::Checkpointer;
use crate::workers::live::LiveFeed;
use crate::workers::partitions;
use crate::workers::replay::{Mode, Replay};
use crate::workers::retention::{holder_name, Purger};
use crate::writer::AuditWriter;

/// The service, built and connected, not yet listening.
#[derive(Debug)]
pub struct Service {
    state: AppState,
    store: Store,
}

/// The listeners `serve` opens: the API, the metrics, and upstream's optional health port.
#[derive(Debug)]
pub struct Listeners {
    /// `server.host:server.port`.
    pub api: TcpListener,
    /// `server.metricsHost:server.metricsPort`.
    pub metrics: TcpListener,
    /// `server.metricsHost:server.healthPort`, when set.
    pub health: Option<TcpListener>,
}

/// Logs what loading the settings noted, and the upstream keys accepted but inactive.
fn log_settings(settings: &Settings) {
    for note in &settings.notes {
        tracing::info!(note = %note, "config");
    }
    for key in settings.inactive_keys() {
        tracing::info!(
            key,
            "config key accepted but inactive: this service does not act on it yet"
        );
    }
    let db = &settings.database;
    if db.password.is_some()
        && db.secrets_file.is_none()
        && std::env::var_os("DATASTORAGE_DATABASE__PASSWORD").is_none()
    {
        tracing::warn!("database.password is written in the config file; prefer database.secretsFile or DATASTORAGE_DATABASE__PASSWORD");
    }
}

/// Migrates (or checks the migrations), checks the connection budget, builds the pool, the
/// workers and the handlers' state. The database must be reachable.
pub async fn prepare(settings: Settings) -> anyhow::Result<Service> {
    let metrics = Arc::new(Metrics::new(
        settings.database.effective_driver() == Driver::Postgres,
        settings.database.read_replica.is_some(),
    ));
    let readiness = Arc::new(Readiness::new(metrics.ready.clone()));
    log_settings(&settings);
    build(settings, metrics, readiness).await
}

async fn build(
    settings: Settings,
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
) -> anyhow::Result<Service> {
    // Before any database work: a bad validation.eventDataSchema file fails fast.
    let rules = Arc::new(EventRules::new(&settings.validation)?);
    let db = &settings.database;
    let driver = db.effective_driver();
    if driver == Driver::Postgres {
        let cap = capacity::check(db).await?;
        metrics.capacity.set(&cap);
        if cap.violated() {
            if db.capacity.policy == CapacityPolicy::Fail {
                bail!("refusing to start (database.capacity.policy is fail): {cap}");
            }
            tracing::warn!(capacity = %cap, "connection budget does not fit the server");
        } else {
            tracing::info!(capacity = %cap, "connection budget checked");
        }
    } else {
        tracing::info!("capacity check does not apply to SQLite");
    }
    if let Some(rdb) = db.replica() {
        // The replica's budget is logged, never a reason not to start: reads fall back to the
        // primary while it cannot serve.
        match capacity::check(&rdb).await {
            Ok(cap) if cap.violated() => {
                tracing::warn!(capacity = %cap, "the read replica's connection budget does not fit it")
            }
            Ok(cap) => tracing::info!(capacity = %cap, "read replica connection budget checked"),
            Err(e) => tracing::warn!(
                error = %format!("{e:#}"),
                "the read replica could not be checked; reads go to the primary until it answers"
            ),
        }
    }
    if db.migrate_on_start {
        let applied = Store::migrate(db).await?;
        tracing::info!(
            applied,
            driver = db.effective_driver().as_str(),
            "migrations up to date"
        );
    } else {
        Store::check_migrations(db).await?;
    }

    let hasher = Hasher::from_settings(&settings)?;
    tracing::info!(
        active_key = hasher.active_key_id().unwrap_or("none (plain sha256)"),
        key_ids = ?hasher.key_ids(),
        "hash chain keys loaded"
    );
    let store = Store::open(
        db,
        metrics.pool.clone(),
        metrics.replica.clone().map(|m| (metrics.replica_pool(), m)),
        hasher,
        settings.retention.partition_interval,
    )
    .context("cannot build the connection pool")?;
    tracing::info!(
        driver = store.driver_name(),
        max_open_conns = db.max_open_conns,
        max_idle_conns = db.max_idle_conns,
        min_idle_conns = db.min_idle_conns,
        conn_max_lifetime = %format_duration(db.conn_max_lifetime),
        conn_max_idle_time = %format_duration(db.conn_max_idle_time),
        acquire_timeout = %format_duration(db.acquire_timeout),
        connect_timeout = %format_duration(db.connect_timeout),
        statement_timeout = %format_duration(db.statement_timeout),
        lock_timeout = %format_duration(db.lock_timeout),
        idle_in_transaction_timeout = %format_duration(db.idle_in_transaction_timeout),
        "connection pool settings in effect"
    );

    let auth = Arc::new(Auth::new(&settings, metrics.auth.clone())?);
    let holder: Arc<str> = holder_name().into();
    let mut writer = AuditWriter::start(
        store.clone(),
        settings.server.max_batch_size,
        Arc::clone(&metrics),
    );
    let live = LiveFeed::start(
        settings.explorer.stream_buffer_events,
        settings.explorer.stream_max_subscribers,
        metrics.live.clone(),
    );
    writer = writer.with_live(live.clone());
    let buffer = if settings.buffer.enabled {
        let buffer = OutageBuffer::open(
            &settings.buffer,
            settings.redis.as_ref(),
            &holder,
            metrics.buffer.clone(),
        )
        .await?;
        writer = writer.with_buffer(Arc::clone(&buffer));
        Some(buffer)
    } else {
        tracing::warn!("buffer.enabled is false: writes are refused with 503 while the database is unreachable");
        None
    };
    let access = AccessLog::new(
        writer.clone(),
        settings.auth.record_reads,
        settings.auth.denials_per_second,
        metrics.auth.clone(),
    );
    let purger = Purger::new(
        store.clone(),
        settings.retention.clone(),
        metrics.lifecycle.clone(),
        Arc::clone(&holder),
    );
    let signer = Signer::from_settings(&settings.signing)?;
    if signer.is_ephemeral() {
        tracing::warn!(key_id = %signer.key().key_id(), "signing.keyFile is not set: exports and checkpoints are signed with a key generated at start, lost at restart (datastorage keys generate writes one)");
    } else {
        tracing::info!(key_id = %signer.key().key_id(), fingerprint = %signer.key().fingerprint(), "signing key loaded");
    }
    let signer = Arc::new(signer);
    let checkpointer = Checkpointer::new(
        store.clone(),
        settings.checkpoints.clone(),
        Arc::clone(&signer),
        metrics.lifecycle.clone(),
        holder,
    );
    let state = AppState {
        checked_checkpoints: moka::sync::Cache::builder()
            .max_capacity(10_000)
            .time_to_live(crate::http::state::CHECKED_CHECKPOINTS_TTL)
            .build(),
        checkpointer,
        signer,
        purger,
        auth,
        access,
        rules,
        writer,
        store: store.reader(),
        metrics,
        body_budget: body_budget(settings.server.max_in_flight_body_bytes),
        settings: Arc::new(settings),
        readiness,
        buffer,
        live,
    };
    Ok(Service { state, store })
}

impl Service {
    /// The API and metrics routers, for a caller that serves them itself (in-process tests with
    /// `Router::oneshot`): readiness turns on as if the listeners had opened.
    pub fn into_routers(self) -> (Router, Router) {
        self.state.readiness.opened();
        (api_router(self.state.clone()), metrics_router(self.state))
    }
}

/// Runs the service on `listeners` until `shutdown` resolves, then shuts down in order. Returns
/// once the pool is closed; a shutdown while waiting for the database returns at once.
pub async fn run(
    settings: Settings,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    log_settings(&settings);
    let metrics = Arc::new(Metrics::new(
        settings.database.effective_driver() == Driver::Postgres,
        settings.database.read_replica.is_some(),
    ));
    let readiness = Arc::new(Readiness::new(metrics.ready.clone()));
    let starting = starting_router(Arc::clone(&readiness), Arc::clone(&metrics));
    let gates = [
        Gate::new(starting.clone()),
        Gate::new(starting.clone()),
        Gate::new(starting),
    ];
    let limits = ConnLimits {
        header_read_timeout: settings.server.header_read_timeout,
        max_connections: settings.server.max_connections,
    };
    // TLS first: a missing or invalid file refuses the start before anything listens.
    let tls = settings
        .server
        .tls
        .as_ref()
        .filter(|t| t.cert_and_key().is_some())
        .map(|t| Tls::load(t, metrics.auth.clone()))
        .transpose()?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut servers = Vec::new();
    let mut addresses = Vec::new();
    let named = [
        ("api", Some(listeners.api)),
        ("metrics", Some(listeners.metrics)),
        ("health", listeners.health),
    ];
    for ((name, listener), gate) in named.into_iter().zip(&gates) {
        if let Some(listener) = listener {
            addresses.push(format!("{name} {}", listener.local_addr()?));
            servers.push(tokio::spawn(serve(
                name,
                listener,
                gate.clone(),
                limits,
                if name == "api" { tls.clone() } else { None },
                stop_rx.clone(),
            )));
        }
    }
    tracing::info!(listeners = %addresses.join(", "), "listening; readiness stays 503 until the database is ready");

    let mut shutdown = std::pin::pin!(shutdown);
    let patience = settings.database.wait_on_start;
    let target = settings.database.clone();
    let service = tokio::select! {
        ready = async {
            Store::wait_for_database(&target, patience).await?;
            build(settings, Arc::clone(&metrics), Arc::clone(&readiness)).await
        } => ready,
        () = &mut shutdown => {
            tracing::info!("shutdown before the service was ready");
            let _ = stop_tx.send(true);
            return Ok(());
        }
    };
    let service = match service {
        Ok(service) => service,
        Err(e) => {
            let _ = stop_tx.send(true);
            return Err(e);
        }
    };
    let Service { state, store } = service;
    gates[0].open(api_router(state.clone()));
    gates[1].open(metrics_router(state.clone()));
    gates[2].open(health_router(state.clone()));
    readiness.opened();
    tracing::info!("ready");
    let workers = start_workers(&state, &store);
    let (replay_mode, replay_rx) = watch::channel(Mode::Run);
    let replay = state.buffer.as_ref().map(|buffer| {
        let replay = Replay::new(
            Arc::clone(buffer),
            state.writer.clone(),
            state.store.clone(),
        );
        tokio::spawn(replay.run(replay_rx))
    });

    shutdown.await;
    for w in &workers {
        w.abort();
    }
    let server = &state.settings.server;
    tracing::info!(delay = %format_duration(server.shutdown_delay), "shutdown: readiness now 503");
    readiness.stopping();
    tokio::time::sleep(server.shutdown_delay).await;
    tracing::info!(timeout = %format_duration(server.shutdown_timeout), "shutdown: listeners closed, draining requests");
    let _ = stop_tx.send(true);
    // Open streams end now; they would otherwise hold the drain until its timeout.
    state.live.close();
    let grace_ends = tokio::time::Instant::now() + server.shutdown_timeout;
    let drained = tokio::time::timeout(server.shutdown_timeout, async {
        for s in servers {
            let _ = s.await;
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            "shutdown: requests still running after server.shutdownTimeout; closing anyway"
        );
    }
    if let (Some(replay), Some(buffer)) = (replay, &state.buffer) {
        // What can be replayed within the grace period is; the rest stays for the next start.
        let _ = replay_mode.send(Mode::DrainUntil(grace_ends));
        let _ = replay.await;
        buffer.close().await;
        if !buffer.is_empty() {
            tracing::warn!("shutdown: the outage buffer still holds writes; they are replayed at the next start");
        }
    }
    store.close().await;
    tracing::info!("shutdown complete");
    Ok(())
}

/// Starts the background workers: partitions ahead (PostgreSQL), the purge unless
/// `retention.enabled` is false, checkpoints unless `checkpoints.enabled` is false. They stop when their handles are aborted.
fn start_workers(state: &AppState, store: &Store) -> Vec<tokio::task::JoinHandle<()>> {
    let retention = &state.settings.retention;
    let mut workers = Vec::new();
    if store.driver_name() == "postgres" {
        workers.push(tokio::spawn(partitions::run_forever(
            store.clone(),
            retention.clone(),
            state.metrics.lifecycle.clone(),
        )));
    }
    if retention.enabled {
        let (purger, access) = (state.purger.clone(), state.access.clone());
        workers.push(tokio::spawn(async move {
            tokio::time::sleep(purger.settings().start_delay).await;
            loop {
                match purger.run_once().await {
                    Ok(r) => {
                        tracing::info!(
                            result = r.result,
                            rows = r.rows_purged,
                            partitions = r.partitions_dropped,
                            seconds = r.seconds,
                            "retention run"
                        );
                        if r.rows_purged > 0 {
                            if let Err(e) = access.purged(&r).await {
                                tracing::warn!(error = %e, "cannot record a retention run");
                            }
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "retention run failed"),
                }
                tokio::time::sleep(purger.settings().interval).await;
            }
        }));
    } else {
        tracing::warn!("retention.enabled is false: expired events are kept");
    }
    if state.settings.checkpoints.enabled && !state.checkpointer.can_sign() {
        tracing::warn!("checkpoints.enabled, but signing.keyFile is not set: no checkpoints are written (a key made at start could not verify them after a restart), so a deletion of a chain's newest events cannot be detected");
    } else if state.settings.checkpoints.enabled {
        workers.push(tokio::spawn(state.checkpointer.clone().run_forever()));
    } else {
        tracing::warn!("checkpoints.enabled is false: a deletion of a chain's newest events cannot be detected");
    }
    workers
}

/// Binds every listener of the settings. Host names resolve here; an address that cannot be
/// bound names its keys.
pub async fn bind(settings: &Settings) -> anyhow::Result<Listeners> {
    // Refuse before anything listens: an API that would be open to the network without
    // authentication never binds.
    crate::auth::resolve_mode(settings, crate::auth::in_pod())?;
    let s = &settings.server;
    let api = bind_one(&s.host, s.port, "server.host, server.port").await?;
    let metrics = bind_one(
        &s.metrics_host,
        s.metrics_port,
        "server.metricsHost, server.metricsPort",
    )
    .await?;
    let health = match s.health_port {
        Some(port) => Some(
            bind_one(
                &s.metrics_host,
                port,
                "server.metricsHost, server.healthPort",
            )
            .await?,
        ),
        None => None,
    };
    Ok(Listeners {
        api,
        metrics,
        health,
    })
}

async fn bind_one(host: &str, port: u16, keys: &str) -> anyhow::Result<TcpListener> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .with_context(|| format!("cannot resolve {host:?} ({keys})"))?
        .collect();
    let mut last = None;
    for addr in &addrs {
        match TcpListener::bind(addr).await {
            Ok(l) => return Ok(l),
            Err(e) => last = Some(e),
        }
    }
    match last {
        Some(e) => Err(e).with_context(|| format!("cannot listen on {host}:{port} ({keys})")),
        None => bail!("{host:?} resolves to no address ({keys})"),
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT received"),
        () = term => tracing::info!("SIGTERM received"),
    }
}
