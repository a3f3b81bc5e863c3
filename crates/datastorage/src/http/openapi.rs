//! The service's own OpenAPI document, generated from the routes and the wire types (utoipa),
//! so it cannot drift from what the server does: `GET /openapi.json`, and a reference UI
//! (Swagger UI, its assets embedded in the binary, no CDN) at `/docs/`.

use axum::Router;
use utoipa::OpenApi;
use utoipa_swagger_ui::SwaggerUi;

use super::state::AppState;

/// The document's frame; the paths come from the routers' operations.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "DataStorage audit API",
        description = "The audit-event store: write events (one or a batch), query them, read one, and verify the hash chain of a correlation id. Wire-compatible with the upstream Kubernaut DataStorage audit API; extensions are marked in their descriptions. Every error is an RFC 7807 problem document (application/problem+json) whose field_errors names the field and the rule.",
        license(name = "Apache-2.0"),
    ),
    tags(
        (name = "audit", description = "Audit events and their hash chains"),
        (name = "health", description = "Liveness and readiness probes"),
    )
)]
pub struct ApiDoc;

/// `GET /openapi.json` with `spec`, and the reference UI at `/docs/`.
pub fn router(spec: utoipa::openapi::OpenApi) -> Router<AppState> {
    SwaggerUi::new("/docs").url("/openapi.json", spec).into()
}

#[cfg(test)]
mod tests {
    use utoipa_axum::router::OpenApiRouter;

    use super::*;

    fn spec() -> serde_json::Value {
        let (_, spec) = OpenApiRouter::<AppState>::with_openapi(ApiDoc::openapi())
            .merge(super::super::api_routes())
            .split_for_parts();
        serde_json::to_value(spec).unwrap()
    }

    #[test]
    fn the_generated_spec_names_every_route_with_its_answers() {
        let spec = spec();
        for (path, method) in [
            ("/api/v1/audit/events", "post"),
            ("/api/v1/audit/events", "get"),
            ("/api/v1/audit/events/batch", "post"),
            ("/api/v1/audit/events/{event_id}", "get"),
            ("/api/v1/audit/verify-chain", "post"),
            ("/healthz", "get"),
            ("/readyz", "get"),
        ] {
            let op = &spec["paths"][path][method];
            assert!(op.is_object(), "{method} {path} missing");
            assert!(
                op["responses"].as_object().is_some_and(|r| !r.is_empty()),
                "{method} {path}"
            );
        }
        let request = &spec["components"]["schemas"]["AuditEventRequest"];
        assert_eq!(
            request["properties"]["correlation_id"]["maxLength"], 255,
            "{request}"
        );
        assert!(request["required"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f == "event_data"));
    }

    #[test]
    fn the_generated_spec_is_a_valid_openapi_3_document() {
        let text = serde_json::to_string(&spec()).unwrap();
        let parsed = oas3::from_json(&text).unwrap_or_else(|e| panic!("not OpenAPI 3: {e}"));
        assert!(parsed.openapi.starts_with("3."), "{}", parsed.openapi);
        // Every reference resolves.
        for (name, _) in parsed.components.as_ref().unwrap().schemas.iter() {
            assert!(!name.is_empty());
        }
        let refs: Vec<&str> = text
            .match_indices("\"$ref\":\"#/components/schemas/")
            .map(|(i, m)| {
                let rest = &text[i + m.len()..];
                &rest[..rest.find('"').unwrap()]
            })
            .collect();
        let schemas = &spec()["components"]["schemas"];
        for r in refs {
            assert!(schemas.get(r).is_some(), "unresolved $ref {r}");
        }
    }
}
