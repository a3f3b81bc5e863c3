//! Access control in process, on both backends: the route table walked over every route of the
//! real router, hostile `Authorization` headers, principals on events (ingested_by, actor,
//! replays across principals, the chain append rule) and access records.
//!
//! The real binary, TLS, mTLS, reloads and rate limits are tested end to end in
//! `crates/datastorage-cli/tests/auth.rs`.

use std::collections::HashMap;
use std::path::PathBuf;

use axum::http::Method;
use datastorage::auth::routes::{Access, API_ROUTES};
use datastorage::auth::{tokens, Scope};
use datastorage::config::{AuthMode, ChainAppend, Settings};
use datastorage_testkit::app::Listener;
use datastorage_testkit::events::event;
use datastorage_testkit::{both, Backend, TestApp};
use serde_json::{json, Value};

both!(
    every_route_answers_401_without_credentials_and_403_without_its_scope,
    hostile_authorization_headers_get_401_never_500,
    events_carry_their_principal_and_replays_count_only_for_it,
    the_starter_rule_keeps_a_chain_to_the_principal_that_started_it,
    reads_and_denials_are_recorded_in_the_access_chain,
);

/// Tokens of one scope each, plus an admin; the file lives as long as the returned folder.
struct Tokens {
    _dir: tempfile::TempDir,
    path: PathBuf,
    by_name: HashMap<&'static str, String>,
}

impl Tokens {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut yaml = String::from("tokens:\n");
        let mut by_name = HashMap::new();
        for (name, scope) in [
            ("writer", "audit:write"),
            ("reader", "audit:read"),
            ("verifier", "audit:verify"),
            ("holder", "audit:hold"),
            ("admin", "admin"),
        ] {
            let token = tokens::generate().unwrap();
            yaml.push_str(&format!(
                "  - name: {name}\n    sha256: {}\n    scopes: [{scope}]\n",
                tokens::hash(&token)
            ));
            by_name.insert(name, token);
        }
        let path = dir.path().join("tokens.yaml");
        std::fs::write(&path, yaml).unwrap();
        Self {
            _dir: dir,
            path,
            by_name,
        }
    }

    fn header(&self, name: &str) -> String {
        format!("Bearer {}", self.by_name[name])
    }

    fn apply(&self, s: &mut Settings) {
        s.auth.mode = Some(AuthMode::Tokens);
        s.auth.tokens_file = Some(self.path.clone());
    }
}

/// A server in tokens mode whose helpers (`verify`, `metrics`, …) act as the admin.
async fn app(backend: Backend, tokens: &Tokens, tweak: impl FnOnce(&mut Settings)) -> TestApp {
    let mut app = TestApp::spawn_with(backend, |s| {
        tokens.apply(s);
        tweak(s);
    })
    .await;
    app.authorize_as(tokens.header("admin"));
    app
}

/// A request with an `Authorization` header (raw bytes), and the answer's status, headers and
/// body.
async fn call(
    app: &TestApp,
    method: Method,
    path: &str,
    authorization: Option<&[u8]>,
    body: Option<&Value>,
) -> (u16, axum::http::HeaderMap, Value) {
    let mut headers = Vec::new();
    if let Some(a) = authorization {
        headers.push(("authorization", a.to_vec()));
    }
    if body.is_some() {
        headers.push(("content-type", b"application/json".to_vec()));
    }
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let r = app
        .send_raw(Listener::Api, method, path, &headers, body)
        .await;
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().await.unwrap();
    (
        status,
        headers,
        serde_json::from_str(&text).unwrap_or(Value::Null),
    )
}

/// A concrete path for a route template.
fn concrete(template: &str) -> String {
    template
        .replace("{event_id}", "01900000-0000-7000-8000-000000000000")
        .replace("{*rest}", "index.html")
        .replace("{*path}", "js/main.js")
        .replace("{correlation_id}", "walk")
}

/// A body the route accepts, so a scope check cannot be confused with a validation error.
fn body_for(method: &str, route: &str) -> Option<Value> {
    match (method, route) {
        ("POST", "/api/v1/audit/events") => Some(event("walk")),
        ("POST", "/api/v1/audit/events/batch") => Some(json!([event("walk")])),
        ("POST", "/api/v1/audit/verify-chain") => Some(json!({"correlation_id": "walk"})),
        ("POST", "/api/v1/audit/legal-hold") => {
            Some(json!({"correlation_id": "walk", "reason": "walk"}))
        }
        ("DELETE", "/api/v1/audit/legal-hold/{correlation_id}") => {
            Some(json!({"release_reason": "walk"}))
        }
        _ => None,
    }
}

async fn every_route_answers_401_without_credentials_and_403_without_its_scope(backend: Backend) {
    let tokens = Tokens::new();
    let app = app(backend, &tokens, |_| {}).await;
    // The table covers every operation of the generated spec, so no route of the router is
    // missing from it (a missing one would need admin, and this walk would show it).
    let spec: Value = {
        let (status, _, spec) = call(&app, Method::GET, "/openapi.json", None, None).await;
        assert_eq!(status, 200, "the API description is open");
        spec
    };
    for (path, ops) in spec["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys() {
            let method = method.to_uppercase();
            assert!(
                API_ROUTES.iter().any(|(m, r, _)| *m == method && r == path),
                "{method} {path} is served but not in the route table"
            );
        }
    }
    for (method, route, access) in API_ROUTES {
        let m: Method = method.parse().unwrap();
        let path = concrete(route);
        let body = body_for(method, route);
        let (status, headers, problem) = call(&app, m.clone(), &path, None, body.as_ref()).await;
        match access {
            Access::Open => {
                assert!(
                    status < 400 || status == 404,
                    "{method} {route} is open: {status}"
                );
                continue;
            }
            Access::Authenticated | Access::Scope(_) => {
                assert_eq!(
                    status, 401,
                    "{method} {route} without credentials: {problem}"
                );
                assert!(
                    headers["www-authenticate"]
                        .to_str()
                        .unwrap()
                        .starts_with("Bearer"),
                    "{method} {route}"
                );
                assert!(
                    problem["type"].as_str().unwrap().ends_with("/unauthorized"),
                    "{problem}"
                );
            }
        }
        let Access::Scope(scope) = access else {
            continue;
        };
        let lacking = match scope {
            Scope::Write => "reader",
            _ => "writer",
        };
        let auth = tokens.header(lacking);
        let (status, _, problem) =
            call(&app, m.clone(), &path, Some(auth.as_bytes()), body.as_ref()).await;
        assert_eq!(status, 403, "{method} {route} as {lacking}: {problem}");
        assert!(
            problem["type"].as_str().unwrap().ends_with("/forbidden"),
            "{problem}"
        );
        assert!(
            problem["detail"].as_str().unwrap().contains(scope.as_str()),
            "{problem}"
        );
        let admin = tokens.header("admin");
        let (status, _, problem) =
            call(&app, m, &path, Some(admin.as_bytes()), body.as_ref()).await;
        assert!(
            status < 400 || status == 404,
            "{method} {route} as admin: {status} {problem}"
        );
    }
    // A path no route matches, or a method no route takes, reaches no handler: 404 and 405
    // reveal nothing and need nothing.
    let (status, _, _) = call(&app, Method::GET, "/api/v1/audit/nothing", None, None).await;
    assert_eq!(status, 404);
    let (status, _, _) = call(&app, Method::DELETE, "/api/v1/audit/events", None, None).await;
    assert_eq!(status, 405);
    app.stop().await;
}

async fn hostile_authorization_headers_get_401_never_500(backend: Backend) {
    let tokens = Tokens::new();
    let app = app(backend, &tokens, |_| {}).await;
    let long = format!("Bearer {}", "a".repeat(10 * 1024));
    let cases: [&[u8]; 8] = [
        long.as_bytes(),
        b"Bearer ",
        b"Bearer",
        b"Basic d3JpdGVyOnNlY3JldA==",
        b"Bearer \xff\xfe\xfd",
        b"Bearer dst_not-a-real-token",
        b"bearer\tdst_x",
        b"Token abc",
    ];
    for auth in cases {
        let (status, headers, problem) =
            call(&app, Method::GET, "/api/v1/audit/events", Some(auth), None).await;
        assert_eq!(
            status,
            401,
            "{:?}: {problem}",
            String::from_utf8_lossy(auth)
        );
        assert!(headers.contains_key("www-authenticate"));
        let detail = problem["detail"].as_str().unwrap();
        assert!(
            !detail.contains("dst_"),
            "the answer never echoes a token: {detail}"
        );
    }
    // Two Authorization headers: the first is used, the request is still answered.
    let r = app
        .send_raw(
            Listener::Api,
            Method::GET,
            "/api/v1/audit/events",
            &[
                ("authorization", tokens.header("reader").into_bytes()),
                ("authorization", b"Bearer junk".to_vec()),
            ],
            String::new(),
        )
        .await;
    assert!(r.status().as_u16() < 500, "{}", r.status());
    app.stop().await;
}

async fn events_carry_their_principal_and_replays_count_only_for_it(backend: Backend) {
    let tokens = Tokens::new();
    let app = app(backend, &tokens, |s| s.auth.record_reads = false).await;
    let writer = tokens.header("writer");
    let admin = tokens.header("admin");
    let mut e = event("principals");
    e["event_id"] = json!("01900000-0000-7000-8000-0000000000aa");
    e.as_object_mut().unwrap().remove("actor_id");
    let (status, _, answer) = call(
        &app,
        Method::POST,
        "/api/v1/audit/events",
        Some(writer.as_bytes()),
        Some(&e),
    )
    .await;
    assert_eq!(status, 201, "{answer}");
    let id = answer["event_id"].as_str().unwrap().to_owned();
    let (_, _, stored) = call(
        &app,
        Method::GET,
        &format!("/api/v1/audit/events/{id}"),
        Some(admin.as_bytes()),
        None,
    )
    .await;
    assert_eq!(stored["ingested_by"], "writer", "{stored}");
    assert_eq!(stored["hash_algorithm"], "sha256-v2", "{stored}");
    // The event named no actor: the principal is the actor, as upstream does.
    assert_eq!(stored["actor_id"], "writer", "{stored}");

    // The same event from the same principal is a replay; from another, a conflict that
    // says nothing about what is stored.
    let (status, _, _) = call(
        &app,
        Method::POST,
        "/api/v1/audit/events",
        Some(writer.as_bytes()),
        Some(&e),
    )
    .await;
    assert_eq!(status, 201);
    let (status, _, problem) = call(
        &app,
        Method::POST,
        "/api/v1/audit/events",
        Some(admin.as_bytes()),
        Some(&e),
    )
    .await;
    assert_eq!(status, 409, "{problem}");
    let text = problem.to_string();
    let stored_ts = stored["event_timestamp"].as_str().unwrap();
    assert!(
        !text.contains(stored_ts) && !text.contains("writer"),
        "{text}"
    );

    // An event that names its actor keeps it; ingested_by still says who wrote it.
    let mut named = event("principals");
    named["actor_id"] = json!("someone-else");
    let (status, _, answer) = call(
        &app,
        Method::POST,
        "/api/v1/audit/events/batch",
        Some(writer.as_bytes()),
        Some(&json!([named])),
    )
    .await;
    assert_eq!(status, 201, "{answer}");
    let id = answer["event_ids"][0].as_str().unwrap();
    let (_, _, stored) = call(
        &app,
        Method::GET,
        &format!("/api/v1/audit/events/{id}"),
        Some(admin.as_bytes()),
        None,
    )
    .await;
    assert_eq!(
        (&stored["actor_id"], &stored["ingested_by"]),
        (&json!("someone-else"), &json!("writer"))
    );

    // Changing who wrote a row breaks its link.
    let v = app.verify("principals").await;
    assert_eq!(v["is_valid"], true, "{v}");
    app.sql(&[&format!(
        "{}; UPDATE audit_events SET ingested_by = 'admin' WHERE event_id = '{id}'",
        match backend {
            Backend::Postgres | Backend::PgBouncer =>
                "ALTER TABLE audit_events DISABLE TRIGGER audit_events_append_only",
            Backend::Sqlite => "DROP TRIGGER audit_events_append_only",
        }
    )])
    .await;
    let v = app.verify("principals").await;
    assert_eq!(v["is_valid"], false, "{v}");
    app.stop().await;
}

async fn the_starter_rule_keeps_a_chain_to_the_principal_that_started_it(backend: Backend) {
    let tokens = Tokens::new();
    let app = app(backend, &tokens, |s| {
        s.auth.chain_append = ChainAppend::Starter
    })
    .await;
    let (writer, admin) = (tokens.header("writer"), tokens.header("admin"));
    let post = |auth: String, body: Value, path: &'static str| {
        let app = &app;
        async move {
            call(app, Method::POST, path, Some(auth.as_bytes()), Some(&body))
                .await
                .0
        }
    };
    assert_eq!(
        post(writer.clone(), event("owned"), "/api/v1/audit/events").await,
        201
    );
    assert_eq!(
        post(writer.clone(), event("owned"), "/api/v1/audit/events").await,
        201
    );
    assert_eq!(
        post(admin.clone(), event("owned"), "/api/v1/audit/events").await,
        403
    );
    assert_eq!(
        post(
            admin.clone(),
            json!([event("theirs"), event("owned")]),
            "/api/v1/audit/events/batch"
        )
        .await,
        403,
        "a batch touching someone else's chain fails whole"
    );
    assert_eq!(
        post(admin.clone(), event("theirs"), "/api/v1/audit/events").await,
        201
    );
    let v = app.verify("owned").await;
    assert_eq!(
        (v["total_events"].as_u64(), v["is_valid"].as_bool()),
        (Some(2), Some(true))
    );
    app.stop().await;
}

async fn reads_and_denials_are_recorded_in_the_access_chain(backend: Backend) {
    let tokens = Tokens::new();
    let app = app(backend, &tokens, |_| {}).await;
    let (reader, admin) = (tokens.header("reader"), tokens.header("admin"));
    let (status, _, _) = call(
        &app,
        Method::GET,
        "/api/v1/audit/events?correlation_id=somewhere&limit=5",
        Some(reader.as_bytes()),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (status, _, _) = call(
        &app,
        Method::POST,
        "/api/v1/audit/events",
        None,
        Some(&event("x")),
    )
    .await;
    assert_eq!(status, 401);
    // Denials are recorded in the background: wait for the record.
    let mut records = Value::Null;
    for _ in 0..100 {
        let (_, _, page) = call(
            &app,
            Method::GET,
            "/api/v1/audit/events?correlation_id=datastorage-access&limit=100",
            Some(admin.as_bytes()),
            None,
        )
        .await;
        records = page;
        let denied = records["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["event_type"] == "datastorage.access.denied");
        if denied {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let data = records["data"].as_array().unwrap();
    let query = data
        .iter()
        .find(|e| e["event_type"] == "datastorage.access.query" && e["actor_id"] == "reader")
        .unwrap_or_else(|| panic!("the reader's query is recorded: {records}"));
    assert_eq!(query["ingested_by"], "datastorage");
    assert_eq!(query["event_category"], "security");
    assert_eq!(
        query["event_data"]["filters"]["correlation_id"], "somewhere",
        "{query}"
    );
    assert_eq!(query["event_data"]["rows"], 0, "{query}");
    let denied = data
        .iter()
        .find(|e| e["event_type"] == "datastorage.access.denied")
        .unwrap();
    assert_eq!(denied["event_outcome"], "failure");
    assert_eq!(denied["event_data"]["status"], 401, "{denied}");
    assert_eq!(denied["event_data"]["reason"], "missing", "{denied}");
    assert_eq!(denied["resource_id"], "/api/v1/audit/events", "{denied}");
    assert!(
        denied.get("actor_id").is_none_or(Value::is_null),
        "{denied}"
    );
    // The admin's own reads of the access chain are recorded too, and the chain verifies.
    let v = app.verify("datastorage-access").await;
    assert_eq!(v["is_valid"], true, "{v}");
    let text = app.metrics().await;
    assert!(
        text.contains("datastorage_access_records_total{action=\"query\",result=\"recorded\"}"),
        "{text}"
    );
    let unauthenticated = datastorage_testkit::metric_value(
        &text,
        "datastorage_auth_requests_total{mode=\"tokens\",result=\"unauthenticated\"}",
    );
    assert!(unauthenticated.is_some_and(|n| n >= 1.0), "{text}");
    app.stop().await;
}
