//! `POST /api/v1/admin/retention/run`: a retention run now, for an administrator (after a hold
//! is released, say), instead of waiting for the next interval. It takes the same lease as the
//! worker, so it never runs beside another replica's purge.

use axum::extract::State;
use axum::Json;
use datastorage_api::Problem;
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::Result;
use super::state::AppState;

/// The route.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(run_retention))
}

/// What a run did.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct RunReport {
    /// `ok`, or `skipped` when another replica holds the retention lease.
    result: &'static str,
    /// Events deleted.
    rows_purged: u64,
    /// Partitions dropped whole.
    partitions_dropped: u32,
    /// Seconds the run took.
    seconds: f64,
}

/// Runs retention now.
#[utoipa::path(
    post,
    path = "/api/v1/admin/retention/run",
    tag = "admin",
    summary = "Run retention now",
    description = "Purges expired events that no legal hold covers, as the retention worker does, under the same lease (one replica at a time). Needs the admin scope.",
    responses(
        (status = 200, description = "The run's outcome", body = RunReport),
        (status = 503, description = "The database cannot serve now; retry after Retry-After", body = Problem, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(skip_all, fields(route = "/api/v1/admin/retention/run"))]
async fn run_retention(State(state): State<AppState>) -> Result<Json<RunReport>> {
    let report = state.purger.run_once().await?;
    if report.rows_purged > 0 {
        state.access.purged(&report).await?;
    }
    Ok(Json(RunReport {
        result: report.result,
        rows_purged: report.rows_purged,
        partitions_dropped: report.partitions_dropped,
        seconds: report.seconds,
    }))
}
