//! The access-control middleware of every matched route (see [`crate::auth`]): looks the route
//! up in the route table, lets open routes through, and otherwise authenticates, rate-limits
//! and authorizes the caller, hands the handler a [`Caller`], and answers 401 (with
//! `WWW-Authenticate`), 403, 429 (with `Retry-After`) or 503 as RFC 7807 problems. Denials are
//! recorded.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::connect_info::ConnectInfo;
use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::state::AppState;
use crate::auth::access::{Caller, Denial};
use crate::auth::mtls::PeerCertificate;
use crate::auth::routes::Access;
use crate::auth::{AuthError, Credentials};

/// Which listener a guard protects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// The API: every route by the route table.
    Api,
    /// The metrics listener: `/metrics` by `auth.metricsRequireAuth`, probes open.
    Metrics,
}

/// How long a client is asked to wait when the authority could not be asked.
const RETRY_WHEN_AUTHORITY_DOWN: Duration = Duration::from_secs(1);

/// The middleware; `listener` picks the table.
pub async fn guard(
    State((state, listener)): State<(AppState, Listener)>,
    mut req: Request,
    next: Next,
) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let auth = &state.auth;
    let access = match listener {
        Listener::Api => auth.access(req.method(), &route),
        Listener::Metrics if route == "/metrics" => auth.metrics_access(),
        Listener::Metrics => Access::Open,
    };
    if access == Access::Open {
        return next.run(req).await;
    }
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let client = auth.proxies.client(peer, req.headers());
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let credentials = Credentials {
        authorization: req
            .headers()
            .get(header::AUTHORIZATION)
            .map(|v| v.as_bytes()),
        certificate: req.extensions().get::<PeerCertificate>(),
    };
    match auth.admit(access, credentials).await {
        Ok(principal) => {
            if let Some(principal) = principal {
                req.extensions_mut().insert(Caller {
                    principal,
                    client,
                    request_id,
                });
            }
            next.run(req).await
        }
        Err(e) => {
            let error = answer(&e, auth.challenge());
            let response = error.into_response();
            if !matches!(e, AuthError::Unavailable { .. }) {
                state.access.denied(Denial {
                    principal: match &e {
                        AuthError::Forbidden { principal, .. }
                        | AuthError::RateLimited { principal, .. } => Some(principal.clone()),
                        _ => None,
                    },
                    client,
                    request_id,
                    method: req.method().as_str().to_owned(),
                    route,
                    status: response.status().as_u16(),
                    reason: match &e {
                        AuthError::Unauthenticated { reason, .. } => reason,
                        other => other.result_label(),
                    },
                });
            }
            response
        }
    }
}

/// The problem a refusal answers with.
fn answer(e: &AuthError, challenge: &'static str) -> ApiError {
    match e {
        AuthError::Unauthenticated { detail, .. } => ApiError::Unauthenticated {
            detail: detail.clone(),
            challenge,
        },
        AuthError::Forbidden { principal, scope } => ApiError::Forbidden(format!(
            "{principal} lacks the scope {scope} this route needs"
        )),
        AuthError::RateLimited { retry_after, .. } => ApiError::RateLimited(*retry_after),
        AuthError::Unavailable { message, cause } => ApiError::Unavailable {
            message: message.clone(),
            cause: cause.clone(),
            retry_after: RETRY_WHEN_AUTHORITY_DOWN,
        },
    }
}
