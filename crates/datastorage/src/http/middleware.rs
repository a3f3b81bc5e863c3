//! What every request passes through, on both listeners: a request id (the client's, or a new
//! UUID), a span with the method, matched route and request id (never the raw URI, never the
//! body), the `server.writeTimeout` deadline, and the request metrics by matched route and
//! status. Unknown routes and methods answer with problem documents.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, Method};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tracing::Instrument as _;

use super::error::ApiError;
use super::state::AppState;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest request id taken from a client; a longer one is replaced.
const MAX_REQUEST_ID_LEN: usize = 128;

/// Adds the layers every request passes through, and the state.
pub fn with_common_layers(router: Router<AppState>, state: AppState) -> Router {
    router
        .layer(middleware::from_fn_with_state(state.clone(), track_request))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .layer(middleware::from_fn(bound_request_id))
        .with_state(state)
}

/// A client's `X-Request-ID` is echoed and logged only when it is short (at most
/// [`MAX_REQUEST_ID_LEN`]) and made of `[A-Za-z0-9._:-]`; otherwise it is dropped, so a fresh
/// UUID takes its place.
async fn bound_request_id(mut req: Request, next: Next) -> Response {
    let acceptable = |v: &axum::http::HeaderValue| {
        let b = v.as_bytes();
        !b.is_empty()
            && b.len() <= MAX_REQUEST_ID_LEN
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b':' | b'-'))
    };
    let ids = req.headers().get_all(&REQUEST_ID);
    if ids.iter().count() > 1 || ids.iter().any(|v| !acceptable(v)) {
        req.headers_mut().remove(&REQUEST_ID);
    }
    next.run(req).await
}

/// The method as a metric label: the standard ones, else `other` (a client can send any
/// token as a method, and each would be a new series).
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

/// Span, deadline, metrics and the access log line of one request.
async fn track_request(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = method_label(req.method());
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
    let span = tracing::info_span!("request", method, %route, %request_id);
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
        .observe_request(method, &route, status, elapsed);
    if state.settings.logging.access_log {
        span.in_scope(|| {
            tracing::info!(
                status,
                duration_ms = (elapsed * 1e6).round() / 1e3,
                "request"
            )
        });
    }
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
