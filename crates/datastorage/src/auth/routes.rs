//! The one table of what every route needs. The guard looks each request up here by its
//! matched route template and method; a route missing from the table needs `admin`, so no
//! route is open by accident. A test walks every route of the real routers against it.

use axum::http::Method;

use super::scope::Scope;

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Nothing: probes and the API description.
    Open,
    /// An authenticated principal, any scope (`/metrics` with `auth.metricsRequireAuth`).
    Authenticated,
    /// An authenticated principal granted this scope.
    Scope(Scope),
}

/// Every route of the API listener: method, route template, access.
pub const API_ROUTES: &[(&str, &str, Access)] = &[
    ("POST", "/api/v1/audit/events", Access::Scope(Scope::Write)),
    (
        "POST",
        "/api/v1/audit/events/batch",
        Access::Scope(Scope::Write),
    ),
    ("GET", "/api/v1/audit/events", Access::Scope(Scope::Read)),
    (
        "GET",
        "/api/v1/audit/events/{event_id}",
        Access::Scope(Scope::Read),
    ),
    (
        "GET",
        "/api/v1/audit/events/stream",
        Access::Scope(Scope::Read),
    ),
    ("GET", "/api/v1/audit/stats", Access::Scope(Scope::Read)),
    (
        "POST",
        "/api/v1/audit/verify-chain",
        Access::Scope(Scope::Verify),
    ),
    (
        "POST",
        "/api/v1/audit/legal-hold",
        Access::Scope(Scope::Hold),
    ),
    (
        "GET",
        "/api/v1/audit/legal-hold",
        Access::Scope(Scope::Read),
    ),
    (
        "DELETE",
        "/api/v1/audit/legal-hold/{correlation_id}",
        Access::Scope(Scope::Hold),
    ),
    ("GET", "/api/v1/audit/export", Access::Scope(Scope::Export)),
    (
        "GET",
        "/api/v1/audit/checkpoints/latest",
        Access::Scope(Scope::Verify),
    ),
    (
        "POST",
        "/api/v1/admin/checkpoints/run",
        Access::Scope(Scope::Admin),
    ),
    (
        "POST",
        "/api/v1/admin/retention/run",
        Access::Scope(Scope::Admin),
    ),
    // Kubernetes probes the API port too (as upstream's deployment does).
    ("GET", "/healthz", Access::Open),
    ("GET", "/readyz", Access::Open),
    // The API's description is public (it is this repository's); it holds no data.
    ("GET", "/openapi.json", Access::Open),
    ("GET", "/docs", Access::Open),
    ("GET", "/docs/", Access::Open),
    ("GET", "/docs/{*rest}", Access::Open),
    // The explorer's files hold no data (every datum comes from the routes above, under
    // their scopes); the page must load to show its login.
    ("GET", "/ui", Access::Open),
    ("GET", "/ui/", Access::Open),
    ("GET", "/ui/{*path}", Access::Open),
];

/// What a request to `route` (a matched template) with `method` needs. `HEAD` is `GET`'s.
/// Anything not listed needs `admin`.
pub fn access(method: &Method, route: &str) -> Access {
    let method = if method == Method::HEAD {
        "GET"
    } else {
        method.as_str()
    };
    API_ROUTES
        .iter()
        .find(|(m, r, _)| *m == method && *r == route)
        .map_or(Access::Scope(Scope::Admin), |(_, _, a)| *a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unlisted_routes_and_methods_need_admin() {
        assert_eq!(
            access(&Method::DELETE, "/api/v1/audit/events"),
            Access::Scope(Scope::Admin)
        );
        assert_eq!(
            access(&Method::PUT, "/api/v1/audit/legal-hold"),
            Access::Scope(Scope::Admin)
        );
        assert_eq!(access(&Method::HEAD, "/healthz"), Access::Open);
        assert_eq!(
            access(&Method::GET, "/api/v1/audit/events"),
            Access::Scope(Scope::Read)
        );
    }
}
