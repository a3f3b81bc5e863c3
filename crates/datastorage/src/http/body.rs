//! The JSON body extractor: content type, the in-flight byte budget, size limit, read timeout
//! and strict parsing, each answered with its own problem type.
//!
//! Every write must say `Content-Type: application/json` (or a `+json` type): a browser can
//! send an untyped body across origins without a CORS preflight, a JSON one it cannot.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRequest, Request};
use axum::http::header;
use datastorage_api::json::parse_strict;
use serde_json::Value;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::error::ApiError;
use super::state::AppState;

/// How long a client is asked to wait when the in-flight byte budget is spent.
const RETRY_WHEN_BUDGET_SPENT: Duration = Duration::from_secs(1);

/// A request body parsed as JSON, and its share of the in-flight byte budget, held for as
/// long as the extractor's result lives (bind it, e.g. `JsonBody(body, _budget)`, so it lives
/// until the handler returns).
#[derive(Debug)]
pub struct JsonBody(pub Value, pub BodyBudget);

/// A share of `server.maxInFlightBodyBytes`, given back on drop (none for an empty body).
#[derive(Debug)]
pub struct BodyBudget(#[allow(dead_code)] Option<OwnedSemaphorePermit>);

/// The budget of body bytes being read or parsed at once, all requests together.
pub fn body_budget(bytes: u64) -> Arc<Semaphore> {
    let permits = usize::try_from(bytes)
        .unwrap_or(usize::MAX)
        .min(Semaphore::MAX_PERMITS);
    Arc::new(Semaphore::new(permits))
}

impl FromRequest<AppState> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let is_json = req.headers().get(header::CONTENT_TYPE).is_some_and(|ct| {
            let ct = ct.to_str().unwrap_or_default().to_ascii_lowercase();
            let essence = ct.split(';').next().unwrap_or_default().trim();
            essence == "application/json" || essence.ends_with("+json")
        });
        if !is_json {
            return Err(ApiError::UnsupportedMediaType);
        }
        let server = &state.settings.server;
        let max = usize::try_from(server.max_body_size).unwrap_or(usize::MAX);
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|n| n > server.max_body_size) {
            return Err(ApiError::PayloadTooLarge(server.max_body_size));
        }
        let read = read_within_budget(req.into_body(), max, &state.body_budget);
        let (bytes, permit) = match tokio::time::timeout(server.read_timeout, read).await {
            Err(_) => return Err(ApiError::BodyTimeout(server.read_timeout)),
            Ok(result) => result?,
        };
        let value = parse_strict(&bytes).map_err(|e| ApiError::MalformedJson {
            path: e.path,
            rule: e.rule,
        })?;
        Ok(JsonBody(value, BodyBudget(permit)))
    }
}

/// Reads a body of at most `max` bytes, taking its share of `budget` chunk by chunk as it
/// arrives (a body of unknown length reserves only what it has sent).
async fn read_within_budget(
    body: axum::body::Body,
    max: usize,
    budget: &Arc<Semaphore>,
) -> Result<(Vec<u8>, Option<OwnedSemaphorePermit>), ApiError> {
    use http_body_util::BodyExt as _;
    let mut body = body;
    let mut bytes = Vec::new();
    let mut held: Option<OwnedSemaphorePermit> = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ApiError::MalformedJson {
            path: "(body)".to_owned(),
            rule: format!("the body could not be read: {e}"),
        })?;
        let Ok(chunk) = frame.into_data() else {
            continue;
        };
        if bytes.len() + chunk.len() > max {
            return Err(ApiError::PayloadTooLarge(max as u64));
        }
        if !chunk.is_empty() {
            let n = u32::try_from(chunk.len()).unwrap_or(u32::MAX);
            let Ok(more) = Arc::clone(budget).try_acquire_many_owned(n) else {
                return Err(ApiError::Unavailable {
                    message: "too many large request bodies are being processed now (server.maxInFlightBodyBytes)".to_owned(),
                    cause: "the in-flight body budget is spent".to_owned(),
                    retry_after: RETRY_WHEN_BUDGET_SPENT,
                });
            };
            match &mut held {
                Some(permit) => permit.merge(more),
                None => held = Some(more),
            }
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok((bytes, held))
}
