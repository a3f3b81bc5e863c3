//! `GET /api/v1/audit/events/stream`: committed events as server-sent events, as they are
//! committed, filtered as the query filters (see [`crate::workers::live`]).
//!
//! The stream opens with a `: subscribed` comment (the subscription is in place: every event
//! committed from then on that meets the filters follows), then sends `audit_event` messages
//! (`id` is the event id, `data` its JSON), a `lagged` message (`{"missed": N}`) when the
//! subscriber fell more than `explorer.streamBufferEvents` behind, and a keep-alive comment
//! every `explorer.streamKeepAlive`. It ends at shutdown.

use std::convert::Infallible;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, Query, State};
use axum::http::{header, HeaderValue};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use datastorage_api::{EventQueryParams, FieldErrors, Problem};
use futures::stream::{self, StreamExt as _};
use serde_json::{json, Map};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, Result};
use super::state::AppState;
use crate::auth::access::{Action, Caller, ACCESS_CHAIN};
use crate::db::RETRY_AFTER_BUSY;
use crate::workers::live::Received;

/// The route.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(stream_events))
}

/// `GET /api/v1/audit/events/stream`.
#[utoipa::path(
    get,
    path = "/api/v1/audit/events/stream",
    tag = "audit",
    summary = "Stream events as they are committed (server-sent events)",
    description = "text/event-stream of the events committed from now on that meet every given filter (those of GET /api/v1/audit/events, without since, until, limit, offset and cursor). Opens with the comment `: subscribed`; then `event: audit_event` messages (`id`: the event id; `data`: the event's JSON, less chain_sequence, the hashes and legal_hold, which a read by id gives); `event: lagged` with data {\"missed\": N} when this subscriber fell more than explorer.streamBufferEvents behind (writes never wait for a subscriber); a keep-alive comment every explorer.streamKeepAlive. At most explorer.streamMaxSubscribers at once.",
    params(EventQueryParams),
    responses(
        (status = 200, description = "The stream", content_type = "text/event-stream", body = String),
        (status = 400, description = "A parameter breaks a rule or does not apply to a stream; `field_errors` names it", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "explorer.streamMaxSubscribers subscribers are streaming, or the service is shutting down; retry after Retry-After", body = Problem, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(skip_all, fields(route = "/api/v1/audit/events/stream"))]
async fn stream_events(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    params: std::result::Result<Query<EventQueryParams>, QueryRejection>,
) -> Result<Response> {
    let Query(params) = params?;
    let mut errors = FieldErrors::default();
    for (name, value) in [
        ("since", &params.since),
        ("until", &params.until),
        ("limit", &params.limit),
        ("offset", &params.offset),
        ("cursor", &params.cursor),
    ] {
        if value.is_some() {
            errors.add(
                name,
                format!("{name} does not apply to the stream, which sends events as they are committed; query GET /api/v1/audit/events for earlier ones"),
            );
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let mut filter = params.validate(Utc::now()).map_err(ApiError::Validation)?;
    if filter.correlation_id.is_none() {
        filter.hidden_chain = Some(ACCESS_CHAIN.to_owned());
    }
    let subscription = state.live.subscribe().map_err(|e| ApiError::Unavailable {
        message: e.to_string(),
        cause: e.to_string(),
        retry_after: RETRY_AFTER_BUSY,
    })?;
    let filters = serde_json::to_value(&params).unwrap_or_default();
    let details = Map::from_iter([("filters".to_owned(), filters)]);
    state
        .access
        .read(
            &caller,
            Action::Stream,
            "/api/v1/audit/events/stream",
            None,
            details,
        )
        .await?;
    let events = stream::unfold((subscription, filter), |(mut sub, filter)| async move {
        loop {
            let event = match sub.recv().await {
                Received::Event(e) if e.matches(&filter) => Event::default()
                    .event("audit_event")
                    .id(e.event.event_id.to_string())
                    .data(&e.json),
                Received::Event(_) => continue,
                Received::Lagged(n) => Event::default()
                    .event("lagged")
                    .data(json!({ "missed": n }).to_string()),
                Received::Closed => return None,
            };
            return Some((Ok::<_, Infallible>(event), (sub, filter)));
        }
    });
    let opened = stream::once(async { Ok(Event::default().comment("subscribed")) });
    let keep_alive = KeepAlive::new()
        .interval(state.settings.explorer.stream_keep_alive)
        .text("keepalive");
    let mut response = Sse::new(opened.chain(events))
        .keep_alive(keep_alive)
        .into_response();
    // Proxies that buffer responses (nginx) would hold the events back.
    response
        .headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(response)
}
