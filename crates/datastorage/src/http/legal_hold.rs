//! Legal holds: `POST /api/v1/audit/legal-hold`, `GET /api/v1/audit/legal-hold`,
//! `DELETE /api/v1/audit/legal-hold/{correlation_id}`, wire-compatible with upstream.
//!
//! Differences from upstream, on purpose: a hold may name a correlation id that has no events
//! yet (a case may start before its events arrive); it covers the events written after it; who
//! released it, when and why are stored and listed (`include_released=true`); placing or
//! releasing a hold is itself an audit event, in the service's access chain.

use axum::extract::{Extension, Path, Query, State};
use axum::Json;
use chrono::{DateTime, Utc};
use datastorage_api::{
    FieldErrors, LegalHold, LegalHoldList, LegalHoldReleased, PlaceLegalHoldRequest, Problem,
    ReleaseLegalHoldRequest,
};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::body::JsonBody;
use super::error::{ApiError, Result};
use super::state::AppState;
use crate::auth::access::{Action, Caller};
use crate::db::holds::{NewHold, Placed, Release};

/// Most holds one list answers.
pub const MAX_LISTED_HOLDS: i64 = 10_000;

/// The legal-hold routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(place_hold, list_holds))
        .routes(routes!(release_hold))
}

/// A required text field of a JSON body: present, a string, 1 to `max` characters, no NUL.
fn text_field(body: &Value, field: &str, max: usize) -> Result<String> {
    let rule = match body.get(field) {
        Some(Value::String(s)) if !s.trim().is_empty() && s.chars().count() <= max => {
            if s.contains('\0') {
                format!("{field} must not contain NUL characters")
            } else {
                return Ok(s.clone());
            }
        }
        None | Some(Value::Null) => format!("{field} is required"),
        Some(Value::String(s)) if s.trim().is_empty() => format!("{field} must not be empty"),
        Some(Value::String(_)) => format!("{field} must be at most {max} characters"),
        Some(_) => format!("{field} must be a string"),
    };
    let mut errors = FieldErrors::default();
    errors.add(field, rule);
    Err(ApiError::Validation(errors))
}

/// The current time at the microsecond precision the database stores.
fn now() -> DateTime<Utc> {
    let now = Utc::now();
    DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now)
}

/// Places a hold on a correlation id.
#[utoipa::path(
    post,
    path = "/api/v1/audit/legal-hold",
    tag = "legal-hold",
    summary = "Place a legal hold on a correlation id",
    description = "Its events, those stored now and those written later, are kept past their retention until the hold is released. The correlation id need not have events yet (upstream answers 404 then). The placement is recorded as an audit event.",
    request_body(content = PlaceLegalHoldRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The hold is placed", body = LegalHold),
        (status = 400, description = "A field is missing or breaks a rule", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "An active hold covers the correlation id already (legal-hold-exists)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The database cannot serve now; retry after Retry-After", body = Problem, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(skip_all, fields(route = "/api/v1/audit/legal-hold"))]
async fn place_hold(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    JsonBody(body, _budget): JsonBody,
) -> Result<Json<LegalHold>> {
    let correlation_id = text_field(&body, "correlation_id", 255)?;
    let reason = text_field(&body, "reason", 1000)?;
    let hold = NewHold {
        correlation_id: &correlation_id,
        reason: &reason,
        placed_by: &caller.principal.name,
        placed_at: now(),
    };
    let hold = match state.writer.place_hold(&hold).await? {
        Placed::New(hold) => hold,
        Placed::Exists(hold) => {
            return Err(ApiError::HoldExists(format!(
                "correlation_id {correlation_id:?} is under legal hold already, placed by {} at {}; release it first to change the reason",
                hold.placed_by, hold.placed_at
            )))
        }
    };
    state.metrics.lifecycle.holds_placed.inc();
    let details = Map::from_iter([
        ("hold_id".to_owned(), json!(hold.hold_id)),
        ("reason".to_owned(), json!(hold.reason)),
        ("events_affected".to_owned(), json!(hold.events_affected)),
    ]);
    state
        .access
        .change(
            &caller,
            Action::HoldPlaced,
            "/api/v1/audit/legal-hold",
            Some(&correlation_id),
            details,
        )
        .await?;
    Ok(Json(hold))
}

/// Query of `GET /api/v1/audit/legal-hold`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListParams {
    /// Also list released holds, with who released them, when and why (extension).
    #[serde(default)]
    include_released: Option<bool>,
}

/// Lists legal holds.
#[utoipa::path(
    get,
    path = "/api/v1/audit/legal-hold",
    tag = "legal-hold",
    summary = "List legal holds",
    description = "The active holds, newest first; with include_released=true every hold ever placed, released ones with who released them, when and why.",
    params(ListParams),
    responses(
        (status = 200, description = "The holds", body = LegalHoldList),
        (status = 400, description = "A query parameter is unknown or invalid", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The database cannot serve now; retry after Retry-After", body = Problem, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(skip_all, fields(route = "/api/v1/audit/legal-hold"))]
async fn list_holds(
    State(state): State<AppState>,
    query: std::result::Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<LegalHoldList>> {
    let Query(params) = query?;
    let holds = state
        .store
        .list_holds(params.include_released.unwrap_or(false), MAX_LISTED_HOLDS)
        .await?;
    Ok(Json(LegalHoldList {
        total: holds.len() as u64,
        holds,
    }))
}

/// Releases the active hold of a correlation id.
#[utoipa::path(
    delete,
    path = "/api/v1/audit/legal-hold/{correlation_id}",
    tag = "legal-hold",
    summary = "Release a legal hold",
    description = "Ends the active hold of the correlation id; its events expire again by their retention. Who released it, when and why are kept with the hold, and the release is recorded as an audit event.",
    params(("correlation_id" = String, Path, description = "The held correlation id")),
    request_body(content = ReleaseLegalHoldRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The hold is released", body = LegalHoldReleased),
        (status = 400, description = "release_reason is missing or breaks a rule", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No active hold on this correlation id", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The database cannot serve now; retry after Retry-After", body = Problem, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(skip_all, fields(route = "/api/v1/audit/legal-hold/{correlation_id}"))]
async fn release_hold(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(correlation_id): Path<String>,
    JsonBody(body, _budget): JsonBody,
) -> Result<Json<LegalHoldReleased>> {
    let reason = text_field(&body, "release_reason", 1000)?;
    let release = Release {
        correlation_id: &correlation_id,
        reason: &reason,
        released_by: &caller.principal.name,
        released_at: now(),
    };
    let Some(released) = state.writer.release_hold(&release).await? else {
        return Err(ApiError::NotFound(format!(
            "no active legal hold on correlation_id {correlation_id:?}"
        )));
    };
    state.metrics.lifecycle.holds_released.inc();
    let details = Map::from_iter([
        ("hold_id".to_owned(), json!(released.hold_id)),
        ("release_reason".to_owned(), json!(released.release_reason)),
        (
            "events_released".to_owned(),
            json!(released.events_released),
        ),
    ]);
    state
        .access
        .change(
            &caller,
            Action::HoldReleased,
            "/api/v1/audit/legal-hold/{correlation_id}",
            Some(&correlation_id),
            details,
        )
        .await?;
    Ok(Json(released))
}
