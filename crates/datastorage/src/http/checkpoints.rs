//! `GET /api/v1/audit/checkpoints/latest`, and `POST /api/v1/admin/checkpoints/run` (a
//! checkpoint now, for an administrator).

use axum::extract::State;
use axum::Json;
use datastorage_api::checkpoint::Checkpoint;
use datastorage_api::Problem;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, Result};
use super::state::AppState;

/// The routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(latest))
        .routes(routes!(run))
}

/// The newest signed checkpoint.
#[utoipa::path(
    get,
    path = "/api/v1/audit/checkpoints/latest",
    tag = "checkpoints",
    summary = "The newest signed checkpoint",
    description = "The head of every chain changed since the previous checkpoint is committed to by heads_sha256; the record links to the previous one (previous_hash) and is signed with the service's Ed25519 key (key_id). Keep a copy off-host: verify-chain checks each chain against the newest checkpoint that holds it.",
    responses(
        (status = 200, description = "The checkpoint", body = Checkpoint),
        (status = 404, description = "No checkpoint written yet", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The database cannot serve now; retry after Retry-After", body = Problem, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(skip_all, fields(route = "/api/v1/audit/checkpoints/latest"))]
async fn latest(State(state): State<AppState>) -> Result<Json<Checkpoint>> {
    state
        .store
        .latest_checkpoint()
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound("no checkpoint written yet".to_owned()))
}

/// Writes a checkpoint now.
#[utoipa::path(
    post,
    path = "/api/v1/admin/checkpoints/run",
    tag = "admin",
    summary = "Write a signed checkpoint now",
    description = "As the checkpoint worker does, under the same lease. Answers the checkpoint written, or 404 when none was (no head changed, another replica holds the lease, or signing.keyFile is not set). Needs the admin scope.",
    responses(
        (status = 200, description = "The checkpoint written", body = Checkpoint),
        (status = 404, description = "Nothing to write, or another replica is writing", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The database cannot serve now; retry after Retry-After", body = Problem, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(skip_all, fields(route = "/api/v1/admin/checkpoints/run"))]
async fn run(State(state): State<AppState>) -> Result<Json<Checkpoint>> {
    if !state.checkpointer.can_sign() {
        return Err(ApiError::NotFound(
            "no checkpoint written: signing.keyFile is not set, and a key made at start could not verify checkpoints after a restart".to_owned(),
        ));
    }
    state.checkpointer.run_once().await?.map(Json).ok_or_else(|| {
        ApiError::NotFound(
            "no checkpoint written: no chain changed since the last one, or another replica holds the checkpoints lease".to_owned(),
        )
    })
}
