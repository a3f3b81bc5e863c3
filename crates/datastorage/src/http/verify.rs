//! `POST /api/v1/audit/verify-chain`.

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use datastorage_api::{FieldErrors, VerifyChainResponse};

use super::body::JsonBody;
use super::error::{ApiError, Result};
use super::state::AppState;

/// `POST /api/v1/audit/verify-chain`.
pub fn router() -> Router<AppState> {
    Router::new().route("/api/v1/audit/verify-chain", post(verify_chain))
}

/// Walks one chain and reports every broken link (200 either way; `is_valid` tells).
#[tracing::instrument(skip_all, fields(route = "/api/v1/audit/verify-chain", correlation_id))]
async fn verify_chain(
    State(state): State<AppState>,
    JsonBody(body, _budget): JsonBody,
) -> Result<Json<VerifyChainResponse>> {
    let correlation_id = match body.get("correlation_id") {
        Some(serde_json::Value::String(s)) if !s.is_empty() && s.chars().count() <= 255 => {
            s.clone()
        }
        other => {
            let mut errors = FieldErrors::default();
            let rule = match other {
                None | Some(serde_json::Value::Null) => "correlation_id is required",
                Some(serde_json::Value::String(s)) if s.is_empty() => {
                    "correlation_id must not be empty"
                }
                Some(serde_json::Value::String(_)) => {
                    "correlation_id must be at most 255 characters"
                }
                Some(_) => "correlation_id must be a string",
            };
            errors.add("correlation_id", rule);
            return Err(ApiError::Validation(errors));
        }
    };
    tracing::Span::current().record("correlation_id", correlation_id.as_str());
    Ok(Json(state.store.verify_chain(&correlation_id).await?))
}
