//! Start-up and shutdown: [`prepare`] builds the service, [`Service::serve`] runs it; [`run`]
//! does both, and is the seam `main` and the listener tests call. In-process tests use
//! [`Service::into_routers`] without a listener.
//!
//! Order at start: migrations (or a check that they are applied), the capacity check
//! (PostgreSQL), the pool, the workers, the listeners; readiness turns on last. Order at
//! shutdown: readiness turns 503, `shutdownDelay` passes (load balancers stop routing here), the
//! listeners stop accepting, in-flight requests finish within `shutdownTimeout`, the pool
//! closes.

use std::future::Future;
use std::sync::Arc;

use anyhow::{bail, Context as _};
use axum::Router;
use tokio::net::TcpListener;

use crate::config::{CapacityPolicy, Driver, Settings};
use crate::db::{capacity, Store};
use crate::domain::chain::Hasher;
use crate::http::readiness::Readiness;
use crate::http::{api_router, metrics_router, AppState};
use crate::metrics::Metrics;
use crate::writer::AuditWriter;

/// The service, built and connected, not yet listening.
#[derive(Debug)]
pub struct Service {
    state: AppState,
    store: Store,
}

/// Migrates (or checks the migrations), checks the connection budget, builds the pool, the
/// workers and the handlers' state.
pub async fn prepare(settings: Settings) -> anyhow::Result<Service> {
    let db = &settings.database;
    let driver = db.effective_driver();
    for section in settings.inactive_sections() {
        tracing::info!(
            section,
            "config section accepted but inactive: not built yet"
        );
    }
    if db.password.is_some()
        && db.secrets_file.is_none()
        && std::env::var_os("DATASTORAGE_DATABASE__PASSWORD").is_none()
    {
        tracing::warn!("database.password is written in the config file; prefer database.secretsFile or DATASTORAGE_DATABASE__PASSWORD");
    }

    if db.migrate_on_start {
        let applied = Store::migrate(db).await?;
        tracing::info!(applied, driver = ?driver, "migrations up to date");
    } else {
        Store::check_migrations(db).await?;
    }

    let metrics = Arc::new(Metrics::new(driver == Driver::Postgres));
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

    let hasher = Hasher::from_settings(&settings.hash_chain)?;
    tracing::info!(hasher = ?hasher, "hash chain keys loaded");
    let store = Store::open(db, metrics.pool.clone(), hasher)
        .context("cannot build the connection pool")?;
    tracing::info!(
        driver = store.driver_name(),
        max_open_conns = db.max_open_conns,
        max_idle_conns = db.max_idle_conns,
        min_idle_conns = db.min_idle_conns,
        conn_max_lifetime = ?db.conn_max_lifetime,
        conn_max_idle_time = ?db.conn_max_idle_time,
        acquire_timeout = ?db.acquire_timeout,
        connect_timeout = ?db.connect_timeout,
        statement_timeout = ?db.statement_timeout,
        lock_timeout = ?db.lock_timeout,
        idle_in_transaction_timeout = ?db.idle_in_transaction_timeout,
        "connection pool settings in effect"
    );

    let writer = AuditWriter::start(
        store.clone(),
        settings.server.max_batch_size,
        Arc::clone(&metrics),
    );
    let readiness = Arc::new(Readiness::new(metrics.ready.clone()));
    let state = AppState {
        writer,
        store: store.reader(),
        metrics,
        settings: Arc::new(settings),
        readiness,
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

    /// Serves both listeners until `shutdown` resolves, then shuts down in order. Returns once
    /// the pool is closed.
    pub async fn serve(
        self,
        api: TcpListener,
        metrics_listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Service { state, store } = self;
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|stop| *stop).await;
        };
        tracing::info!(api = %api.local_addr()?, metrics = %metrics_listener.local_addr()?, "listening");
        let api_server = tokio::spawn(std::future::IntoFuture::into_future(
            axum::serve(api, api_router(state.clone()))
                .with_graceful_shutdown(stopped(stop_rx.clone())),
        ));
        let metrics_server = tokio::spawn(std::future::IntoFuture::into_future(
            axum::serve(metrics_listener, metrics_router(state.clone()))
                .with_graceful_shutdown(stopped(stop_rx)),
        ));
        state.readiness.opened();

        shutdown.await;
        let server = &state.settings.server;
        tracing::info!(delay = ?server.shutdown_delay, "shutdown: readiness now 503");
        state.readiness.stopping();
        tokio::time::sleep(server.shutdown_delay).await;
        tracing::info!(timeout = ?server.shutdown_timeout, "shutdown: listeners closed, draining requests");
        let _ = stop_tx.send(true);
        let drained = tokio::time::timeout(server.shutdown_timeout, async {
            let _ = api_server.await;
            let _ = metrics_server.await;
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                "shutdown: requests still running after server.shutdownTimeout; closing anyway"
            );
        }
        store.close().await;
        tracing::info!("shutdown complete");
        Ok(())
    }
}

/// Runs the service until `shutdown` resolves, then shuts down in order. Returns once the pool
/// is closed.
pub async fn run(
    settings: Settings,
    api: TcpListener,
    metrics_listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    prepare(settings)
        .await?
        .serve(api, metrics_listener, shutdown)
        .await
}

/// Binds both listeners from the settings.
pub async fn bind(settings: &Settings) -> anyhow::Result<(TcpListener, TcpListener)> {
    let s = &settings.server;
    let api = TcpListener::bind((s.host, s.port)).await.with_context(|| {
        format!(
            "cannot listen on {}:{} (server.host, server.port)",
            s.host, s.port
        )
    })?;
    let metrics = TcpListener::bind((s.metrics_host, s.metrics_port))
        .await
        .with_context(|| {
            format!(
                "cannot listen on {}:{} (server.metricsHost, server.metricsPort)",
                s.metrics_host, s.metrics_port
            )
        })?;
    Ok((api, metrics))
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
