//! `GET /api/v1/audit/events/stream`: committed events as server-sent events, as they are
//! committed, filtered as the query filters (see [`crate::workers::live`]).
//!
//! The stream opens with a `: subscribed` comment (the subscription is in place: every event
//! committed from then on that meets the filters follows), then sends `audit_event` messages
//! (`id` is the event id, `data` its JSON), a `lagged` message (`{"missed": N}`) when the
//! subscriber fell more than `explorer.streamBufferEvents` behind, and a keep-alive comment
//! every `explorer.streamKeepAlive` with nothing else sent. It ends at shutdown. Events go out
//! at most [`LINGER`](crate::workers::live::LINGER) after their commit, those committed meanwhile together in one write.

use std::convert::Infallible;

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, Query, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use datastorage_api::{EventQueryParams, FieldErrors, Problem};
use futures::stream;
use serde_json::{json, Map};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, Result};
use super::state::AppState;
use crate::auth::access::{Action, Caller, ACCESS_CHAIN};
use crate::db::RETRY_AFTER_BUSY;
use crate::workers::live::{Next, Subscription};

/// One subscriber's side of the stream: what it waits for and what it has sent.
struct Feed {
    subscription: Subscription,
    keep_alive: Duration,
    opened: bool,
}

impl Feed {
    /// The next bytes to send: the opening comment, a keep-alive after `keep_alive` with
    /// nothing sent, or the frames of the next batch of the feed that holds events this
    /// subscriber takes (one write per batch, the feed's own buffer when it takes every
    /// event), after a `lagged` message when it missed some; `None` once the feed closed.
    async fn next_chunk(&mut self) -> Option<Bytes> {
        if !self.opened {
            self.opened = true;
            return Some(Bytes::from_static(b": subscribed\n\n"));
        }
        let next = tokio::time::timeout(self.keep_alive, self.subscription.next()).await;
        let Ok(Next::Frames { frames, missed }) = next else {
            return next
                .is_err()
                .then_some(Bytes::from_static(b": keepalive\n\n"));
        };
        if missed == 0 {
            return frames;
        }
        let mut chunk =
            format!("event: lagged\ndata: {}\n\n", json!({ "missed": missed })).into_bytes();
        chunk.extend_from_slice(frames.as_deref().unwrap_or_default());
        Some(Bytes::from(chunk))
    }
}

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
    let subscription = state
        .live
        .subscribe(filter)
        .map_err(|e| ApiError::Unavailable {
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
    let opened = Feed {
        subscription,
        keep_alive: state.settings.explorer.stream_keep_alive,
        opened: false,
    };
    let body = stream::unfold(opened, |mut feed| async move {
        let chunk = feed.next_chunk().await?;
        Some((Ok::<_, Infallible>(chunk), feed))
    });
    let mut response = Body::from_stream(body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Proxies that buffer responses (nginx) would hold the events back.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}
