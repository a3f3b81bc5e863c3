//! audited-service: a small stateless HTTP service that writes one audit event per request
//! through the buffered `AuditStore` of `datastorage-client`.
//!
//! The pattern it shows:
//! - one `AuditStore` per process, built at start and shared by every handler (it is a cheap
//!   clone over one queue);
//! - handlers call `record`, which never waits on the network: the request is answered at once,
//!   the event goes out in a batch a moment later;
//! - the correlation id comes from the caller's `x-correlation-id` header, else a new UUIDv7,
//!   and is echoed back so the caller can follow its chain (`datastorage events verify ID`);
//! - at SIGTERM/SIGINT the HTTP server stops taking requests first, then `close` drains the
//!   store within a deadline, so every event accepted before shutdown is written (or, with a
//!   spool directory, kept on disk for the next start).
//!
//! Settings come from the environment: `LISTEN` (default `127.0.0.1:3000`), `DATASTORAGE_URL`
//! (default `http://127.0.0.1:8080`), `AUDIT_SPOOL_DIR` (off by default), `AUDIT_CLOSE_TIMEOUT`
//! in seconds (default 10), and the credentials: `DATASTORAGE_TOKEN` or
//! `DATASTORAGE_TOKEN_FILE`, `DATASTORAGE_CA_FILE`, `DATASTORAGE_CLIENT_CERT` with
//! `DATASTORAGE_CLIENT_KEY`. See examples/README.md.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use datastorage_client::api::{AuditEventRequest, EventCategory, EventOutcome};
use datastorage_client::{AuditStore, BearerToken, Client, SpoolConfig, StoreConfig, StoreStats};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

const CORRELATION_HEADER: &str = "x-correlation-id";

#[derive(Clone)]
struct AppState {
    audit: AuditStore,
}

#[derive(Debug, Deserialize)]
struct NewOrder {
    item: String,
    quantity: u32,
}

#[derive(Debug, Serialize)]
struct OrderCreated {
    order_id: Uuid,
    correlation_id: String,
    /// The audit event's id; absent when the audit queue refused the event (counted in stats).
    audit_event_id: Option<Uuid>,
}

/// `POST /orders`: "creates" an order (nothing is stored: the service is stateless) and records
/// what happened, success or refusal, as one audit event.
async fn create_order(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(order): Json<NewOrder>,
) -> Response {
    let correlation_id = headers
        .get(CORRELATION_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 255)
        .map_or_else(|| Uuid::now_v7().to_string(), str::to_owned);
    let order_id = Uuid::now_v7();
    let valid = order.quantity > 0 && !order.item.trim().is_empty();

    let mut event = AuditEventRequest::new(
        "orders.order.created",
        EventCategory::ApiFrontend,
        "create",
        if valid {
            EventOutcome::Success
        } else {
            EventOutcome::Failure
        },
        correlation_id.clone(),
    );
    event.actor_type = Some("service".into());
    event.actor_id = Some("audited-service".into());
    event.resource_type = Some("order".into());
    event.resource_id = Some(order_id.to_string());
    event
        .event_data
        .insert("item".into(), serde_json::Value::from(order.item.clone()));
    event
        .event_data
        .insert("quantity".into(), serde_json::Value::from(order.quantity));
    if !valid {
        event.error_code = Some("invalid-order".into());
    }
    // Never waits on the network. A refusal (queue full, or shutting down) is counted in the
    // store's stats; this service chooses to serve the request anyway.
    let audit_event_id = match state.audit.record(event).await {
        Ok(id) => Some(id),
        Err(e) => {
            tracing::warn!(error = %e, "audit event not accepted");
            None
        }
    };

    let status = if valid {
        StatusCode::CREATED
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    let mut response = (
        status,
        Json(OrderCreated {
            order_id,
            correlation_id: correlation_id.clone(),
            audit_event_id,
        }),
    )
        .into_response();
    if let Ok(value) = HeaderValue::from_str(&correlation_id) {
        response.headers_mut().insert(CORRELATION_HEADER, value);
    }
    response
}

/// `GET /audit-stats`: the store's own counters as a JSON object, for a quick look (a real
/// service would export them as metrics).
async fn audit_stats(State(state): State<AppState>) -> Json<StoreStats> {
    Json(state.audit.stats())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("shutdown signal received; no new requests");
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

/// The DataStorage client with the credentials the environment names: a bearer token from
/// `DATASTORAGE_TOKEN_FILE` (re-read when it rotates) or `DATASTORAGE_TOKEN`, a CA bundle from
/// `DATASTORAGE_CA_FILE`, a client certificate from `DATASTORAGE_CLIENT_CERT` and
/// `DATASTORAGE_CLIENT_KEY`.
fn client_from_env(server: &str) -> anyhow::Result<Client> {
    let mut builder = Client::builder(server);
    let token = match std::env::var_os("DATASTORAGE_TOKEN_FILE") {
        Some(_) if std::env::var_os(datastorage_client::TOKEN_ENV).is_some() => {
            anyhow::bail!("set DATASTORAGE_TOKEN_FILE or DATASTORAGE_TOKEN, not both")
        }
        Some(path) => Some(BearerToken::from_file(path)?),
        None => BearerToken::from_env()?,
    };
    if let Some(token) = token {
        builder = builder.bearer_token(token);
    }
    if let Some(ca) = std::env::var_os("DATASTORAGE_CA_FILE") {
        builder = builder.ca_bundle_file(ca);
    }
    match (
        std::env::var_os("DATASTORAGE_CLIENT_CERT"),
        std::env::var_os("DATASTORAGE_CLIENT_KEY"),
    ) {
        (Some(cert), Some(key)) => builder = builder.client_cert_files(cert, key),
        (None, None) => {}
        _ => {
            anyhow::bail!("set both DATASTORAGE_CLIENT_CERT and DATASTORAGE_CLIENT_KEY, or neither")
        }
    }
    Ok(builder.build()?)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let listen: SocketAddr = env_or("LISTEN", "127.0.0.1:3000").parse()?;
    let server = env_or("DATASTORAGE_URL", "http://127.0.0.1:8080");
    let close_timeout = Duration::from_secs(env_or("AUDIT_CLOSE_TIMEOUT", "10").parse()?);
    let config = StoreConfig {
        spool: std::env::var_os("AUDIT_SPOOL_DIR").map(SpoolConfig::new),
        ..StoreConfig::default()
    };
    let audit = AuditStore::with_config(client_from_env(&server)?, config)?;

    let app = Router::new()
        .route("/orders", post(create_order))
        .route("/audit-stats", get(audit_stats))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(AppState {
            audit: audit.clone(),
        });
    let listener = tokio::net::TcpListener::bind(listen).await?;
    tracing::info!(%listen, datastorage = %server, "audited-service listening");
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await?;

    // Requests are finished: nothing records any more. Drain what was accepted.
    match audit.close(close_timeout).await {
        Ok(()) => tracing::info!(stats = ?audit.stats(), "audit events flushed"),
        Err(left) => tracing::error!(
            remaining = left.remaining,
            stats = ?audit.stats(),
            "audit events not confirmed at shutdown"
        ),
    }
    Ok(())
}
