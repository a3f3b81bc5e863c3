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
/// database answers. A saturated pool still counts as answering, so load never takes the
/// service out of rotation.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "health",
    summary = "Readiness",
    responses(
        (status = 200, description = "Ready to accept writes", content_type = "application/json"),
        (status = 503, description = "Starting, shutting down, or the database is unavailable; has Retry-After", content_type = "application/json"),
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
    state.readiness.database(matches!(probe, Ok(Ok(()))));
    match probe {
        Ok(Ok(())) => Json(json!({ "status": "ready" })).into_response(),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness: database unavailable");
            not_ready("database unavailable")
        }
        Err(_) => not_ready("database did not answer in time"),
    }
}
