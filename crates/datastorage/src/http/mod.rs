//! The HTTP surface: state, routers, and the middleware every request passes through.
//!
//! Two listeners: the API (audit routes, `/openapi.json`, `/healthz`, `/readyz`) and metrics
//! (`/metrics`, `/healthz`, `/readyz`). Each request gets a span with its method, matched route
//! and request id (never the raw URI, never the body), is bounded by `server.writeTimeout`, and
//! is counted by matched route and status.

mod body;
pub mod error;
mod events;
mod health;
mod openapi;
mod verify;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tracing::Instrument as _;

use crate::config::Settings;
use crate::db::group_commit::GroupCommit;
use crate::db::Store;
use crate::metrics::Metrics;
use error::ApiError;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// What handlers share.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The database.
    pub store: Store,
    /// Group commit for single-event writes.
    pub writer: GroupCommit,
    /// The metrics.
    pub metrics: Arc<Metrics>,
    /// Settings in force.
    pub settings: Arc<Settings>,
    /// False once shutdown began.
    pub accepting: Arc<AtomicBool>,
}

impl AppState {
    /// Whether shutdown has begun.
    pub fn shutting_down(&self) -> bool {
        !self.accepting.load(Ordering::Relaxed)
    }
}

/// The API router.
pub fn api_router(state: AppState) -> Router {
    let server = &state.settings.server;
    let max_body = usize::try_from(server.max_body_size).unwrap_or(usize::MAX);
    let mut router = Router::new()
        .route(
            "/api/v1/audit/events",
            post(events::create_event).get(events::list_events),
        )
        .route(
            "/api/v1/audit/events/batch",
            post(events::create_events_batch),
        )
        .route("/api/v1/audit/events/{event_id}", get(events::get_event))
        .route("/api/v1/audit/verify-chain", post(verify::verify_chain))
        .route("/openapi.json", get(openapi::get_openapi))
        .merge(health::router())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body));
    if !server.cors_allowed_origins.is_empty() {
        let origins: Vec<HeaderValue> = server
            .cors_allowed_origins
            .iter()
            .filter_map(|o| HeaderValue::from_str(o).ok())
            .collect();
        router = router.layer(
            CorsLayer::new()
                .allow_origin(AllowOrigin::list(origins))
                .allow_methods([axum::http::Method::GET, axum::http::Method::POST])
                .allow_headers([axum::http::header::CONTENT_TYPE]),
        );
    }
    with_common_layers(router, state)
}

/// The metrics router.
pub fn metrics_router(state: AppState) -> Router {
    let router = Router::new()
        .route("/metrics", get(get_metrics))
        .merge(health::router())
        .fallback(not_found);
    with_common_layers(router, state)
}

fn with_common_layers(router: Router<AppState>, state: AppState) -> Router {
    router
        .layer(middleware::from_fn_with_state(state.clone(), track_request))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .with_state(state)
}

/// Span, deadline and metrics for one request.
async fn track_request(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let request_id = req
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let span = tracing::info_span!("request", %method, %route, %request_id);
    let deadline = state.settings.server.write_timeout;
    let response =
        match tokio::time::timeout(deadline, next.run(req).instrument(span.clone())).await {
            Ok(response) => response,
            Err(_) => span.in_scope(|| ApiError::Timeout(deadline).into_response()),
        };
    let status = response.status().as_u16();
    let elapsed = start.elapsed().as_secs_f64();
    state
        .metrics
        .observe_request(method.as_str(), &route, status, elapsed);
    span.in_scope(|| tracing::debug!(status, elapsed_ms = elapsed * 1000.0, "request finished"));
    response
}

async fn get_metrics(State(state): State<AppState>) -> impl IntoResponse {
    let body = state.metrics.encode(Some(state.store.snapshot()));
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such route".to_owned())
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}
