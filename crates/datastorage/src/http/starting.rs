//! What the listeners answer while the service starts (waiting for the database, migrating):
//! `/healthz` 200 (the process is alive, so a liveness probe does not restart it), `/readyz`
//! 503 `starting`, `/metrics` (the `datastorage_ready` gauge is 0), and 503 with `Retry-After`
//! for everything else.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use super::error::ApiError;
use super::readiness::Readiness;
use crate::metrics::Metrics;

/// How long clients are asked to wait while the service starts.
const RETRY_WHILE_STARTING: Duration = Duration::from_secs(5);

#[derive(Clone)]
struct Starting {
    readiness: Arc<Readiness>,
    metrics: Arc<Metrics>,
}

/// The router of every listener until the service is ready.
pub fn starting_router(readiness: Arc<Readiness>, metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { super::health::alive() }))
        .route("/readyz", get(get_readyz))
        .route("/metrics", get(get_metrics))
        .fallback(|| async {
            ApiError::Unavailable {
                message: "the service is starting: waiting for the database".to_owned(),
                cause: "starting".to_owned(),
                retry_after: RETRY_WHILE_STARTING,
            }
        })
        .with_state(Starting { readiness, metrics })
}

async fn get_readyz(State(s): State<Starting>) -> Response {
    let status = if s.readiness.is_stopping() {
        "shutting down"
    } else {
        "starting"
    };
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::RETRY_AFTER, "5")],
        Json(json!({ "status": status })),
    )
        .into_response()
}

async fn get_metrics(State(s): State<Starting>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(&[]),
    )
}
