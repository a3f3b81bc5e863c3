//! The audit-event routes: write one, write a batch, query, read one.

use std::collections::HashMap;
use std::time::Instant;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::Utc;
use datastorage_api::query::Cursor;
use datastorage_api::{
    validate_event, AuditEvent, AuditEventResponse, AuditEventsQueryResponse,
    BatchAuditEventResponse, EventQueryParams, FieldErrors, Pagination,
};
use serde_json::Value;
use uuid::Uuid;

use super::body::JsonBody;
use super::error::ApiError;
use super::AppState;
use crate::db::RawJson;

/// `POST /api/v1/audit/events`: one event → 201. A replay of a stored client id answers 201
/// with the same id and writes nothing.
pub async fn create_event(
    State(state): State<AppState>,
    JsonBody(body): JsonBody,
) -> Result<(StatusCode, Json<AuditEventResponse>), ApiError> {
    let event = validate_event(&body).map_err(ApiError::Validation)?;
    drop(body);
    let start = Instant::now();
    let category = event.event_category.as_str();
    let outcome = state.writer.write(event).await?;
    let written = (!outcome.replayed).then_some(category);
    state
        .metrics
        .observe_write("single", written, start.elapsed().as_secs_f64());
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
    ))
}

/// `POST /api/v1/audit/events/batch`: 1..=`maxBatchSize` events, all or nothing → 201.
///
/// Duplicate ids inside one batch are refused (400, naming each later position): the batch is
/// one atomic write, and one id cannot stand for two events.
pub async fn create_events_batch(
    State(state): State<AppState>,
    JsonBody(body): JsonBody,
) -> Result<(StatusCode, Json<BatchAuditEventResponse>), ApiError> {
    let Value::Array(items) = body else {
        let mut errors = FieldErrors::default();
        errors.add("(body)", "a batch must be a JSON array of events");
        return Err(ApiError::Validation(errors));
    };
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
    for (i, item) in items.iter().enumerate() {
        match validate_event(item) {
            Ok(e) => {
                if e.id_supplied {
                    if let Some(first) = first_position.insert(e.event_id, i) {
                        errors.add(
                            format!("[{i}].event_id"),
                            format!("event_id {} repeats [{first}].event_id; a batch must not repeat an id", e.event_id),
                        );
                        first_position.insert(e.event_id, first);
                    }
                }
                events.push(e);
            }
            Err(e) => errors.merge_prefixed(&format!("[{i}]."), e),
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    // The parsed tree is several times the size of the events it validated into: free it
    // before waiting for the database, which bounds memory under concurrent large batches.
    drop(items);
    let start = Instant::now();
    let outcomes = state.store.insert_events(&events).await?;
    let categories = events
        .iter()
        .zip(&outcomes)
        .filter(|(_, o)| !o.replayed)
        .map(|(e, _)| e.event_category.as_str());
    state
        .metrics
        .observe_write("batch", categories, start.elapsed().as_secs_f64());
    let written = outcomes.iter().filter(|o| !o.replayed).count();
    Ok((
        StatusCode::CREATED,
        Json(BatchAuditEventResponse {
            event_ids: outcomes.iter().map(|o| o.event_id).collect(),
            message: format!(
                "{} audit events stored ({written} written, {} replays)",
                outcomes.len(),
                outcomes.len() - written
            ),
        }),
    ))
}

/// `GET /api/v1/audit/events`: filters, newest first, `limit`/`offset` or `cursor`.
pub async fn list_events(
    State(state): State<AppState>,
    params: Result<Query<EventQueryParams>, QueryRejection>,
) -> Result<Json<AuditEventsQueryResponse<RawJson>>, ApiError> {
    let Query(params) = params.map_err(|rejection| {
        let mut errors = FieldErrors::default();
        let text = rejection.body_text();
        let field = text
            .split('`')
            .nth(1)
            .filter(|_| text.contains("unknown field"))
            .unwrap_or("(query)")
            .to_owned();
        errors.add(field, format!("invalid query string: {text}"));
        ApiError::Validation(errors)
    })?;
    let filter = params.validate(Utc::now()).map_err(ApiError::Validation)?;
    let (mut data, total) = state.store.query_events(&filter).await?;
    let has_more = data.len() > filter.limit as usize;
    data.truncate(filter.limit as usize);
    let next_cursor = has_more.then(|| data.last()).flatten().map(|last| {
        Cursor {
            event_timestamp: last.event_timestamp,
            event_id: last.event_id,
        }
        .encode()
    });
    Ok(Json(AuditEventsQueryResponse {
        data,
        pagination: Pagination {
            limit: filter.limit,
            offset: if filter.cursor.is_some() {
                0
            } else {
                filter.offset
            },
            total,
            has_more,
            next_cursor,
        },
    }))
}

/// `GET /api/v1/audit/events/{event_id}`.
pub async fn get_event(
    State(state): State<AppState>,
    Path(event_id): Path<String>,
) -> Result<Json<AuditEvent<RawJson>>, ApiError> {
    let id = Uuid::parse_str(&event_id).map_err(|_| {
        let mut errors = FieldErrors::default();
        errors.add("event_id", "event_id must be a UUID");
        ApiError::Validation(errors)
    })?;
    state
        .store
        .get_event(id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no audit event with event_id {id}")))
}
