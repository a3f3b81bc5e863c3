//! The HTTP surface: one file per resource, each with its own `router()`, merged here.
//!
//! Two listeners: the API (audit routes, `/openapi.json`, `/docs/`, `/healthz`, `/readyz`) and
//! metrics (`/metrics`, `/healthz`, `/readyz`); upstream's health port adds a third with the
//! probes. The API's OpenAPI document is generated from its routers (`openapi`). What every request passes through is in `middleware`;
//! handlers share [`AppState`] and return [`error::Result`], whose error maps to an RFC 7807
//! problem in one place.

pub mod body;
mod checkpoints;
pub mod error;
mod events;
mod export;
mod guard;
mod health;
mod legal_hold;
mod metrics;
mod middleware;
mod openapi;
pub mod readiness;
mod retention;
pub mod serve;
mod starting;
pub mod state;
mod stats;
mod stream;
pub mod tls;
mod ui;
mod verify;

use axum::http::HeaderValue;
use axum::Router;
use tower_http::cors::{AllowOrigin, CorsLayer};
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;

pub use state::AppState;

/// Every documented route of the API listener, with its OpenAPI operation.
fn api_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(events::router())
        .merge(stream::router())
        .merge(stats::router())
        .merge(verify::router())
        .merge(legal_hold::router())
        .merge(export::router())
        .merge(checkpoints::router())
        .merge(retention::router())
        .merge(health::router())
}

/// The API router.
pub fn api_router(state: AppState) -> Router {
    let server = &state.settings.server;
    let (routes, spec) = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .merge(api_routes())
        .split_for_parts();
    // Body size, read timeout and the in-flight byte budget are the JSON extractor's (`body`).
    let mut routes = routes.merge(openapi::router(spec));
    if state.settings.explorer.enabled {
        routes = routes.merge(ui::router());
    }
    let mut router = routes
        .route_layer(axum::middleware::from_fn_with_state(
            (state.clone(), guard::Listener::Api),
            guard::guard,
        ))
        .fallback(middleware::not_found)
        .method_not_allowed_fallback(middleware::method_not_allowed);
    if !server.cors_allowed_origins.is_empty() {
        // Checked at load: either `*` alone, or origins that are valid header values.
        let allow = if server.cors_allowed_origins == ["*"] {
            AllowOrigin::any()
        } else {
            AllowOrigin::list(
                server
                    .cors_allowed_origins
                    .iter()
                    .filter_map(|o| HeaderValue::from_str(o).ok()),
            )
        };
        router = router.layer(
            CorsLayer::new()
                .allow_origin(allow)
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
        .merge(Router::from(health::router()))
        .route_layer(axum::middleware::from_fn_with_state(
            (state.clone(), guard::Listener::Metrics),
            guard::guard,
        ))
        .fallback(middleware::not_found);
    middleware::with_common_layers(router, state)
}

/// The router of upstream's health port: the probes only.
pub fn health_router(state: AppState) -> Router {
    let router = Router::from(health::router()).fallback(middleware::not_found);
    middleware::with_common_layers(router, state)
}

pub use starting::starting_router;
