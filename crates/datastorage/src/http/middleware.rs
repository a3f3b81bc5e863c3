//! What every request passes through, on both listeners: a request id (the client's, or a new
//! UUID), a span with the method, matched route and request id (never the raw URI, never the
//! body), the `server.writeTimeout` deadline, and the request metrics by matched route and
//! status. Unknown routes and methods answer with problem documents.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::HeaderName;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tracing::Instrument as _;

use super::error::ApiError;
use super::state::AppState;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Adds the layers every request passes through, and the state.
pub fn with_common_layers(router: Router<AppState>, state: AppState) -> Router {
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

/// The answer for a path no route matches.
pub async fn not_found() -> ApiError {
    ApiError::NotFound("no such route".to_owned())
}

/// The answer for a method the matched route does not take.
pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}
