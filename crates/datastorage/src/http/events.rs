//! The audit-event routes: write one, write a batch, query, read one.

use std::collections::HashMap;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use datastorage_api::{
    validate_event, AsyncAcceptanceResponse, AuditEvent, AuditEventRequest, AuditEventResponse,
    AuditEventsQueryResponse, BatchAuditEventResponse, EventQueryParams, FieldErrors, Problem,
    ValidatedEvent,
};
use serde_json::{json, Map, Value};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::body::JsonBody;
use super::error::{ApiError, Result};
use super::state::AppState;
use crate::auth::access::{Action, Caller, ACCESS_CHAIN};
use crate::config::AuthMode;
use crate::db::RawJson;
use crate::domain::fingerprint;
use crate::writer::Written;

/// The `202` of a write kept in the outage buffer; `timestamp` is the single event's.
fn accepted(
    message: String,
    count: Option<usize>,
    ids: Vec<Uuid>,
    timestamp: Option<chrono::DateTime<Utc>>,
) -> Response {
    let (event_id, event_ids) = match count {
        None => (ids.first().copied(), None),
        Some(_) => (None, Some(ids)),
    };
    (
        StatusCode::ACCEPTED,
        Json(AsyncAcceptanceResponse {
            status: "accepted".to_owned(),
            message,
            count,
            event_id,
            event_timestamp: timestamp,
            event_ids,
        }),
    )
        .into_response()
}

/// Stamps a validated event with the principal writing it (`ingested_by`), and, when the
/// server authenticates callers and the event names no actor, makes the principal its actor
/// (as upstream does).
///
/// An event sent without `retention_days` (`raw` is the event as sent) gets
/// `retention.defaultDays`. With `validation.fingerprintReplays`, an event sent without an id
/// then gets the id of its content ([`fingerprint::identify`]).
fn stamp(event: &mut ValidatedEvent, raw: &Value, caller: &Caller, state: &AppState) {
    if raw.get("retention_days").is_none_or(Value::is_null) {
        event.retention_days = state.settings.retention.default_days as i32;
    }
    event.ingested_by = Some(caller.principal.name.clone());
    if event.actor_id.is_none() && state.auth.mode != AuthMode::None {
        event.actor_id = Some(caller.principal.name.clone());
    }
    if state.settings.validation.fingerprint_replays && !event.id_supplied {
        fingerprint::identify(event);
    }
}

/// The routes of `/api/v1/audit/events`, with their OpenAPI operations.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_event, list_events))
        .routes(routes!(create_events_batch))
        .routes(routes!(get_event))
}

/// `POST /api/v1/audit/events`: one event → 201. A replay of a stored client id answers 201
/// with the same id and writes nothing.
#[utoipa::path(
    post,
    path = "/api/v1/audit/events",
    tag = "audit",
    summary = "Write one audit event",
    description = "Stores one event, chained to the events of its correlation_id, and answers once it is committed. With a client-supplied event_id, a second write of the same event is an idempotent replay (201, nothing written); the same id with other content is 409.",
    request_body(content = AuditEventRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "Stored (or an idempotent replay)", body = AuditEventResponse),
        (status = 202, description = "The database is unreachable: the event is kept in the outage buffer, durably, and stored when the database is back, under the event_id given here", body = AsyncAcceptanceResponse),
        (status = 400, description = "A field breaks a rule; `field_errors` names it", body = Problem, content_type = "application/problem+json"),
                (status = 409, description = "The event_id is stored with other content", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "The body is larger than server.maxBodySize", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "The Content-Type is not application/json", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The database is saturated (or unreachable with the outage buffer full, failing or off), or the body did not arrive within server.readTimeout; retry after Retry-After", body = Problem, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(skip_all, fields(route = "/api/v1/audit/events", events = 1))]
async fn create_event(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    JsonBody(body, _budget): JsonBody,
) -> Result<Response> {
    let mut event = validate_event(&body).map_err(ApiError::Validation)?;
    state
        .rules
        .check(&mut event, Utc::now())
        .map_err(ApiError::Validation)?;
    stamp(&mut event, &body, &caller, &state);
    drop(body);
    let (id, timestamp) = (event.event_id, event.event_timestamp);
    let outcome = match state.writer.write_one(event).await? {
        Written::Stored(outcome) => outcome,
        Written::Buffered => {
            let message = "audit event queued for async processing: the database is unreachable, the event is kept in the outage buffer and stored when it is back".to_owned();
            return Ok(accepted(message, None, vec![id], Some(timestamp)));
        }
    };
    let message = if outcome.replayed {
        "audit event already stored (idempotent replay); nothing written"
    } else {
        "audit event created"
    };
    Ok((
        StatusCode::CREATED,
        Json(AuditEventResponse {
            event_id: outcome.event_id,
            event_timestamp: outcome.event_timestamp,
            message: message.to_owned(),
        }),
    )
        .into_response())
}

/// `POST /api/v1/audit/events/batch`: 1..=`maxBatchSize` events, all or nothing → 201.
///
/// Duplicate ids inside one batch are refused (400, naming each later position): the batch is
/// one atomic write, and one id cannot stand for two events.
#[utoipa::path(
    post,
    path = "/api/v1/audit/events/batch",
    tag = "audit",
    summary = "Write a batch of audit events, all or nothing",
    description = "Stores 1 to server.maxBatchSize events in one transaction; the answer lists their ids in request order. Field errors are named [i].field.",
    request_body(content = Vec<AuditEventRequest>, content_type = "application/json"),
    responses(
        (status = 201, description = "Every event stored (or replayed)", body = BatchAuditEventResponse),
        (status = 202, description = "The database is unreachable: the whole batch is kept in the outage buffer, durably, and stored when the database is back, under the event_ids given here", body = AsyncAcceptanceResponse),
        (status = 400, description = "A field breaks a rule, the batch is empty or larger than server.maxBatchSize", body = Problem, content_type = "application/problem+json"),
                (status = 409, description = "An event_id is stored with other content", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "The body is larger than server.maxBodySize", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "The Content-Type is not application/json", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The database is saturated (or unreachable with the outage buffer full, failing or off), or the body did not arrive within server.readTimeout; retry after Retry-After", body = Problem, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(skip_all, fields(route = "/api/v1/audit/events/batch", events))]
async fn create_events_batch(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    JsonBody(body, _budget): JsonBody,
) -> Result<Response> {
    let Value::Array(items) = body else {
        let mut errors = FieldErrors::default();
        errors.add("(body)", "a batch must be a JSON array of events");
        return Err(ApiError::Validation(errors));
    };
    tracing::Span::current().record("events", items.len());
    let max = state.settings.server.max_batch_size;
    if items.len() > max {
        return Err(ApiError::BatchTooLarge {
            max,
            got: items.len(),
        });
    }
    if items.is_empty() {
        let mut errors = FieldErrors::default();
        errors.add("(body)", "a batch must hold at least one event");
        return Err(ApiError::Validation(errors));
    }
    let mut errors = FieldErrors::default();
    let mut events = Vec::with_capacity(items.len());
    let mut first_position: HashMap<Uuid, usize> = HashMap::new();
    // For each item, the index of its event in `events` (equal content shares one).
    let mut positions: Vec<usize> = Vec::with_capacity(items.len());
    let now = Utc::now();
    for (i, item) in items.iter().enumerate() {
        match validate_event(item) {
            Ok(mut e) => {
                if let Err(broken) = state.rules.check(&mut e, now) {
                    errors.merge_prefixed(&format!("[{i}]."), broken);
                }
                let fingerprinted = !e.id_supplied;
                stamp(&mut e, item, &caller, &state);
                let fingerprinted = fingerprinted && e.id_supplied;
                if e.id_supplied {
                    if let Some(&first) = first_position.get(&e.event_id).filter(|_| fingerprinted)
                    {
                        // The same content twice in one batch is one event.
                        positions.push(positions[first]);
                        continue;
                    }
                    if let Some(first) = first_position.insert(e.event_id, i) {
                        errors.add(
                            format!("[{i}].event_id"),
                            format!("event_id {} repeats [{first}].event_id; a batch must not repeat an id", e.event_id),
                        );
                        first_position.insert(e.event_id, first);
                    }
                }
                positions.push(events.len());
                events.push(e);
            }
            Err(e) => {
                positions.push(usize::MAX);
                errors.merge_prefixed(&format!("[{i}]."), e);
            }
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    // The parsed tree is several times the size of the events it validated into: free it
    // before waiting for the database, which bounds memory under concurrent large batches.
    drop(items);
    let ids: Vec<Uuid> = positions.iter().map(|&p| events[p].event_id).collect();
    let outcomes = match state.writer.write_batch(events).await? {
        Written::Stored(outcomes) => outcomes,
        Written::Buffered => {
            let message = format!("{} audit events queued for async processing: the database is unreachable, the batch is kept whole in the outage buffer and stored when it is back", ids.len());
            return Ok(accepted(message, Some(ids.len()), ids, None));
        }
    };
    let written = outcomes.iter().filter(|o| !o.replayed).count();
    Ok((
        StatusCode::CREATED,
        Json(BatchAuditEventResponse {
            event_ids: positions.iter().map(|&p| outcomes[p].event_id).collect(),
            message: format!(
                "{} audit events stored ({written} written, {} replays)",
                positions.len(),
                positions.len() - written
            ),
        }),
    )
        .into_response())
}

/// `GET /api/v1/audit/events`: filters, newest first, `limit`/`offset` or `cursor`.
#[utoipa::path(
    get,
    path = "/api/v1/audit/events",
    tag = "audit",
    summary = "Query audit events",
    description = "Events matching every given filter, newest first (event_timestamp, then event_id, descending). Page with limit and offset, or with cursor (the next_cursor of the previous page), not both. since must be earlier than until; detail_key and detail_value go together.",
    params(EventQueryParams),
    responses(
        (status = 200, description = "One page of events", body = AuditEventsQueryResponse),
        (status = 400, description = "A parameter breaks a rule; `field_errors` names it", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The database cannot serve now; retry after Retry-After", body = Problem, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(skip_all, fields(route = "/api/v1/audit/events", correlation_id))]
async fn list_events(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    params: std::result::Result<Query<EventQueryParams>, QueryRejection>,
) -> Result<Json<AuditEventsQueryResponse<RawJson>>> {
    let Query(params) = params?;
    let mut filter = params.validate(Utc::now()).map_err(ApiError::Validation)?;
    match &filter.correlation_id {
        Some(cid) => {
            tracing::Span::current().record("correlation_id", cid.as_str());
        }
        // The service's own access records answer only a query for their chain: their
        // event_data has no upstream payload schema, so upstream's client could not decode a
        // page holding one.
        None => filter.hidden_chain = Some(ACCESS_CHAIN.to_owned()),
    }
    let page = state.store.query_events(&filter).await?;
    let pagination = page.pagination(&filter);
    let filters = serde_json::to_value(&params)
        .ok()
        .and_then(|v| match v {
            Value::Object(map) => Some(map.into_iter().filter(|(_, v)| !v.is_null()).collect()),
            _ => None,
        })
        .unwrap_or_else(Map::new);
    let details = Map::from_iter([
        ("filters".to_owned(), Value::Object(filters)),
        ("rows".to_owned(), json!(page.events.len())),
        ("total".to_owned(), json!(pagination.total)),
    ]);
    state
        .access
        .read(
            &caller,
            Action::Query,
            "/api/v1/audit/events",
            None,
            details,
        )
        .await?;
    Ok(Json(AuditEventsQueryResponse {
        data: page.events,
        pagination,
    }))
}

/// `GET /api/v1/audit/events/{event_id}`.
#[utoipa::path(
    get,
    path = "/api/v1/audit/events/{event_id}",
    tag = "audit",
    summary = "Read one audit event",
    params(("event_id" = Uuid, Path, description = "The event's id")),
    responses(
        (status = 200, description = "The event", body = AuditEvent),
        (status = 400, description = "event_id is not a UUID", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No event with this id", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The database cannot serve now; retry after Retry-After", body = Problem, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(skip_all, fields(route = "/api/v1/audit/events/{event_id}"))]
async fn get_event(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(event_id): Path<String>,
) -> Result<Json<AuditEvent<RawJson>>> {
    let id = Uuid::parse_str(&event_id).map_err(|_| {
        let mut errors = FieldErrors::default();
        errors.add("event_id", "event_id must be a UUID");
        ApiError::Validation(errors)
    })?;
    let event = state.store.get_event(id).await?;
    let details = Map::from_iter([("rows".to_owned(), json!(usize::from(event.is_some())))]);
    state
        .access
        .read(
            &caller,
            Action::Read,
            "/api/v1/audit/events/{event_id}",
            Some(&id.to_string()),
            details,
        )
        .await?;
    event
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no audit event with event_id {id}")))
}
