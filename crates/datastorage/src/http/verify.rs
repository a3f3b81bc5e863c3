//! `POST /api/v1/audit/verify-chain`.

use axum::extract::{Extension, State};
use axum::Json;
use datastorage_api::{
    ChainVerdict, Problem, TamperedEvent, VerifyChainRequest, VerifyChainResponse,
};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::body::JsonBody;
use super::error::{ApiError, Result};
use super::state::AppState;
use crate::auth::access::{Action, Caller};
use crate::domain::checkpoint;

/// `POST /api/v1/audit/verify-chain`.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(verify_chain))
}

/// Walks one chain and reports every broken link (200 either way; `is_valid` tells).
#[utoipa::path(
    post,
    path = "/api/v1/audit/verify-chain",
    tag = "audit",
    summary = "Verify the hash chain of a correlation id",
    description = "Walks the chain in sequence order and reports every broken link: edited content, a broken previous_event_hash link, deleted rows, rows removed from the end; events retention removed, as recorded, are not breaks (purged_events). Then checks the chain against the newest signed checkpoint that holds it (checkpoint): a deletion of its newest events, the chain deleted with its head, or the chain rewritten with recomputed hashes is tampering too. 200 either way; is_valid and verdict tell.",
    request_body(content = VerifyChainRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The verification", body = VerifyChainResponse),
        (status = 400, description = "correlation_id is missing (missing-correlation-id) or breaks a rule (invalid-correlation-id)", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "The Content-Type is not application/json", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The database cannot serve now, or too many verifications run; retry after Retry-After", body = Problem, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(skip_all, fields(route = "/api/v1/audit/verify-chain", correlation_id))]
async fn verify_chain(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    JsonBody(body, _budget): JsonBody,
) -> Result<Json<VerifyChainResponse>> {
    let correlation_id = match body.get("correlation_id") {
        Some(serde_json::Value::String(s)) if !s.is_empty() && s.chars().count() <= 255 => {
            s.clone()
        }
        other => {
            let (missing, rule) = match other {
                None | Some(serde_json::Value::Null) => (true, "correlation_id is required"),
                Some(serde_json::Value::String(s)) if s.is_empty() => {
                    (false, "correlation_id must not be empty")
                }
                Some(serde_json::Value::String(_)) => {
                    (false, "correlation_id must be at most 255 characters")
                }
                Some(_) => (false, "correlation_id must be a string"),
            };
            return Err(ApiError::CorrelationId { missing, rule });
        }
    };
    tracing::Span::current().record("correlation_id", correlation_id.as_str());
    let mut answer = state.store.verify_chain(&correlation_id).await?;
    let checked = &state.checked_checkpoints;
    let anchor = state
        .store
        .chain_checkpoint(&correlation_id, |id| checked.contains_key(&id))
        .await?;
    if let Some(anchor) = anchor {
        let id = anchor.checkpoint.checkpoint_id;
        let check = checkpoint::judge(anchor, state.signer.keyring());
        if check.consistent {
            // Its heads' digest held: the next verification of any of its chains skips reading
            // them (a checkpoint can hold every chain).
            checked.insert(id, ());
        }
        if !check.consistent {
            answer.is_valid = false;
            answer.verdict = Some(ChainVerdict::Tampered);
            answer.message = format!("hash chain broken: {}", check.message);
            answer.tampered_events.push(TamperedEvent {
                event_id: String::new(),
                event_timestamp: None,
                expected_hash: check.hash.clone(),
                actual_hash: String::new(),
                previous_hash: String::new(),
                message: check.message.clone(),
            });
        }
        answer.checkpoint = Some(check);
    }
    let details = serde_json::Map::from_iter([
        ("rows".to_owned(), serde_json::json!(answer.total_events)),
        ("is_valid".to_owned(), serde_json::json!(answer.is_valid)),
    ]);
    state
        .access
        .read(
            &caller,
            Action::Verify,
            "/api/v1/audit/verify-chain",
            Some(&correlation_id),
            details,
        )
        .await?;
    Ok(Json(answer))
}
