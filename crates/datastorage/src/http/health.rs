//! `/healthz` (alive, no I/O) and `/readyz` (can accept writes now).

use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::state::AppState;

/// Longest a readiness probe waits on the database.
const READY_PING_TIMEOUT: Duration = Duration::from_secs(2);

/// Both probes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_healthz))
        .routes(routes!(get_readyz))
}

/// Alive: the process answers (no I/O).
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "health",
    summary = "Liveness",
    responses((status = 200, description = "The process is alive: `{\"status\":\"healthy\",\"timestamp\":\"<RFC 3339>\"}`, as upstream", content_type = "application/json"))
)]
async fn get_healthz() -> Json<serde_json::Value> {
    alive()
}

/// The liveness answer, upstream's shape: `{"status":"healthy","timestamp":"<RFC 3339>"}`.
pub(super) fn alive() -> Json<serde_json::Value> {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    Json(json!({ "status": "healthy", "timestamp": now }))
}

/// Ready: not shutting down, migrations applied (checked before the listener opened), and the
/// database answers, or the outage buffer takes writes while it does not. A saturated pool
/// still counts as answering, so load never takes the service out of rotation.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "health",
    summary = "Readiness",
    responses(
        (status = 200, description = "Ready to accept writes: `{\"status\":\"ready\"}`, or, while the database is unreachable and the outage buffer takes writes, `{\"status\":\"ready\",\"database\":\"unavailable\",\"buffering\":true}`", content_type = "application/json"),
        (status = 503, description = "Starting, shutting down, or the database is unavailable and no outage buffer takes writes; has Retry-After", content_type = "application/json"),
    )
)]
async fn get_readyz(State(state): State<AppState>) -> Response {
    let not_ready = |status: &str| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "5")],
            Json(json!({ "status": status })),
        )
            .into_response()
    };
    if state.readiness.is_stopping() {
        return not_ready("shutting down");
    }
    let probe = tokio::time::timeout(READY_PING_TIMEOUT, state.store.ping()).await;
    let database_ok = matches!(probe, Ok(Ok(())));
    // While the outage buffer takes writes, a database outage does not take the service out
    // of rotation: clients do not gate on a database blip. Only an outage counts: a probe
    // that timed out is a slow database unless writes already found it unreachable.
    let buffering = state.buffer.as_ref().is_some_and(|b| {
        let outage = match &probe {
            Ok(Err(e)) => e.is_outage(),
            Ok(Ok(())) => false,
            Err(_) => b.database_down(),
        };
        if outage && b.accepting() {
            b.mark_down();
            return true;
        }
        false
    });
    state.readiness.database(database_ok || buffering);
    match probe {
        Ok(Ok(())) => Json(json!({ "status": "ready" })).into_response(),
        _ if buffering => {
            Json(json!({ "status": "ready", "database": "unavailable", "buffering": true }))
                .into_response()
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness: database unavailable");
            not_ready("database unavailable")
        }
        Err(_) => not_ready("database did not answer in time"),
    }
}
