//! The HTTP surface: one file per resource, each with its own `router()`, merged here.
//!
//! Two listeners: the API (audit routes, `/openapi.json`, `/healthz`, `/readyz`) and metrics
//! (`/metrics`, `/healthz`, `/readyz`). What every request passes through is in `middleware`;
//! handlers share [`AppState`] and return [`error::Result`], whose error maps to an RFC 7807
//! problem in one place.

mod body;
pub mod error;
mod events;
mod health;
mod metrics;
mod middleware;
mod openapi;
pub mod readiness;
pub mod state;
mod verify;

use axum::extract::DefaultBodyLimit;
use axum::http::HeaderValue;
use axum::Router;
use tower_http::cors::{AllowOrigin, CorsLayer};

pub use state::AppState;

/// The API router.
pub fn api_router(state: AppState) -> Router {
    let server = &state.settings.server;
    let max_body = usize::try_from(server.max_body_size).unwrap_or(usize::MAX);
    let mut router = Router::new()
        .merge(events::router())
        .merge(verify::router())
        .merge(openapi::router())
        .merge(health::router())
        .fallback(middleware::not_found)
        .method_not_allowed_fallback(middleware::method_not_allowed)
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
    middleware::with_common_layers(router, state)
}

/// The metrics router.
pub fn metrics_router(state: AppState) -> Router {
    let router = Router::new()
        .merge(metrics::router())
        .merge(health::router())
        .fallback(middleware::not_found);
    middleware::with_common_layers(router, state)
}
