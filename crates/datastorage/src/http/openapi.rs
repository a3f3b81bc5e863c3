//! `GET /openapi.json`: the service's own OpenAPI document, embedded at build time.

use std::sync::LazyLock;

use axum::routing::get;
use axum::{Json, Router};

use super::state::AppState;

static SPEC: LazyLock<serde_json::Value> = LazyLock::new(|| {
    serde_norway::from_str(include_str!("../../openapi.yaml"))
        .expect("openapi.yaml is valid YAML (tested)")
});

/// `GET /openapi.json`.
pub fn router() -> Router<AppState> {
    Router::new().route("/openapi.json", get(get_openapi))
}

async fn get_openapi() -> Json<serde_json::Value> {
    Json(SPEC.clone())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_embedded_spec_parses_and_names_every_route() {
        let spec = &*super::SPEC;
        for path in [
            "/api/v1/audit/events",
            "/api/v1/audit/events/batch",
            "/api/v1/audit/events/{event_id}",
            "/api/v1/audit/verify-chain",
        ] {
            assert!(spec["paths"].get(path).is_some(), "{path} missing");
        }
    }
}
