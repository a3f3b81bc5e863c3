//! `GET /api/v1/audit/stats`: events per category and outcome over time (the explorer's
//! overview), one aggregate query per request (see [`datastorage_api::stats`]).

use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, Query, State};
use axum::Json;
use chrono::{Duration, Utc};
use datastorage_api::stats::{validate_stats, AuditStatsResponse, StatsBucket};
use datastorage_api::{EventQueryParams, Problem};
use serde_json::{json, Map, Value};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, Result};
use super::state::AppState;
use crate::auth::access::{Action, Caller, ACCESS_CHAIN};

/// The route.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(stats))
}

/// Splits the query into `bucket` and the events query's parameters, naming an unknown one.
fn parse(pairs: Vec<(String, String)>) -> Result<(EventQueryParams, Option<String>)> {
    let mut bucket = None;
    let mut rest = Map::new();
    for (k, v) in pairs {
        if k == "bucket" {
            bucket = Some(v);
        } else {
            rest.insert(k, Value::String(v));
        }
    }
    let params = serde_json::from_value(Value::Object(rest))
        .map_err(|e| ApiError::bad_query(&e.to_string()))?;
    Ok((params, bucket))
}

/// `GET /api/v1/audit/stats`.
#[utoipa::path(
    get,
    path = "/api/v1/audit/stats",
    tag = "audit",
    summary = "Count events per category and outcome over time",
    description = "One aggregate over the events matching every filter of GET /api/v1/audit/events (paging aside), from since (default: until minus 24h) to until (default: now), in buckets of 1m, 5m, 15m, 1h, 6h or 1d aligned to the Unix epoch; without bucket the smallest giving at most 120 buckets. At most 1000 buckets. Only non-empty buckets are listed.",
    params(
        EventQueryParams,
        ("bucket" = Option<String>, Query, description = "Bucket length: 1m, 5m, 15m, 1h, 6h or 1d"),
    ),
    responses(
        (status = 200, description = "The counts", body = AuditStatsResponse),
        (status = 400, description = "A parameter breaks a rule; `field_errors` names it", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The database cannot serve now; retry after Retry-After", body = Problem, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(skip_all, fields(route = "/api/v1/audit/stats"))]
async fn stats(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    query: std::result::Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<AuditStatsResponse>> {
    let Query(pairs) = query?;
    let (params, bucket) = parse(pairs)?;
    let mut request =
        validate_stats(&params, bucket.as_deref(), Utc::now()).map_err(ApiError::Validation)?;
    if request.filter.correlation_id.is_none() {
        // As the query: the service's own access records only when their chain is asked for.
        request.filter.hidden_chain = Some(ACCESS_CHAIN.to_owned());
    }
    let rows = state.store.stats(&request).await?;
    let mut total = 0;
    let mut buckets = Vec::with_capacity(rows.len());
    for (index, category, outcome, count) in rows {
        let (Ok(event_category), Ok(event_outcome)) = (category.parse(), outcome.parse()) else {
            // A row edited by hand outside the enumerations: counted in no bucket.
            continue;
        };
        let count = count.max(0) as u64;
        total += count;
        buckets.push(StatsBucket {
            start: request.origin + Duration::seconds(index * request.bucket_seconds),
            event_category,
            event_outcome,
            count,
        });
    }
    let filter = &request.filter;
    let details = Map::from_iter([
        ("bucket".to_owned(), json!(request.bucket)),
        ("since".to_owned(), json!(filter.since)),
        ("until".to_owned(), json!(filter.until)),
        ("rows".to_owned(), json!(buckets.len())),
    ]);
    state
        .access
        .read(&caller, Action::Stats, "/api/v1/audit/stats", None, details)
        .await?;
    Ok(Json(AuditStatsResponse {
        since: filter.since.unwrap_or(request.origin),
        until: filter.until.unwrap_or(request.origin),
        bucket: request.bucket.to_owned(),
        bucket_seconds: request.bucket_seconds,
        total,
        buckets,
    }))
}
