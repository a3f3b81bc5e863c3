//! `auth.mode: kubernetes` against a stand-in API server (`datastorage_testkit::kube::FakeKube`):
//! no real Kubernetes API server can run on the test machines, so the fake speaks its wire
//! format (TokenReview, SubjectAccessReview, `Status` errors) over HTTPS with its own CA, and
//! answers only the service's own token. The service reaches it through a real kubeconfig file.
//!
//! What is shown: ServiceAccounts get exactly the verbs RBAC grants them and their user name is
//! the principal stored with their events; answers are cached (one review per token and per
//! verb, concurrent misses share one call) and expire by kind, so a revoked grant stops working
//! within `allowedTtl`; an API server that fails, is slow or refuses the service's own
//! credential answers 503 with `Retry-After`, is never cached and never lets a request pass;
//! audiences are asked for and enforced; the review carries the group, resource, namespace,
//! verb and the caller's groups.

use std::time::{Duration, Instant};

use axum::http::Method;
use datastorage::config::{AuthMode, Settings};
use datastorage_testkit::app::Listener;
use datastorage_testkit::events::event;
use datastorage_testkit::kube::{FakeKube, GROUP, NAMESPACE, RESOURCE};
use datastorage_testkit::{metric_value, Backend, TestApp, TestResponse};
use serde_json::Value;

/// A server in kubernetes mode against `kube`, with `tweak` applied to its settings.
async fn app(
    kube: &FakeKube,
    dir: &tempfile::TempDir,
    service_token: Option<&str>,
    tweak: impl FnOnce(&mut Settings),
) -> TestApp {
    let kubeconfig = kube.kubeconfig(dir.path(), service_token);
    TestApp::spawn_with(Backend::Sqlite, |s| {
        s.auth.mode = Some(AuthMode::Kubernetes);
        s.auth.kubernetes.kubeconfig = Some(kubeconfig);
        s.auth.record_reads = false;
        tweak(s);
    })
    .await
}

/// `method path` with `Authorization: Bearer token` and an optional JSON body.
async fn call(
    app: &TestApp,
    token: &str,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> TestResponse {
    let mut headers = vec![("authorization", format!("Bearer {token}").into_bytes())];
    let body = match body {
        Some(body) => {
            headers.push(("content-type", b"application/json".to_vec()));
            serde_json::to_vec(body).unwrap()
        }
        None => Vec::new(),
    };
    app.send_raw(Listener::Api, method, path, &headers, body)
        .await
}

async fn write(app: &TestApp, token: &str, cid: &str) -> TestResponse {
    call(
        app,
        token,
        Method::POST,
        "/api/v1/audit/events",
        Some(&event(cid)),
    )
    .await
}

async fn query(app: &TestApp, token: &str, cid: &str) -> TestResponse {
    let path = format!("/api/v1/audit/events?correlation_id={cid}");
    call(app, token, Method::GET, &path, None).await
}

fn metric(text: &str, series: &str) -> f64 {
    metric_value(text, series).unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_accounts_get_exactly_the_verbs_rbac_grants_and_are_the_stored_principal() {
    let kube = FakeKube::start().await;
    let dir = tempfile::tempdir().unwrap();
    let gateway = kube.add_account("payments", "gateway", "gateway-token", &[]);
    let dashboard = kube.add_account("ops", "dashboard", "dashboard-token", &[]);
    kube.grant(&gateway, "create");
    kube.grant(&dashboard, "get");
    let app = app(&kube, &dir, None, |_| {}).await;

    let written = write(&app, "gateway-token", "k8s-1").await;
    assert_eq!(written.status(), 201, "{:?}", written.text().await);
    assert_eq!(query(&app, "gateway-token", "k8s-1").await.status(), 403);
    assert_eq!(write(&app, "dashboard-token", "k8s-1").await.status(), 403);
    let read = query(&app, "dashboard-token", "k8s-1").await;
    assert_eq!(read.status(), 200);
    let page: Value = read.json().await.unwrap();
    assert_eq!(page["data"][0]["ingested_by"], gateway.as_str(), "{page}");

    let unknown = write(&app, "not-a-token", "k8s-1").await;
    assert_eq!(unknown.status(), 401);
    assert!(unknown.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with("Bearer"));
    let no_token = app
        .send_raw(Listener::Api, Method::GET, "/api/v1/audit/events", &[], "")
        .await;
    assert_eq!(no_token.status(), 401);

    // The review asked about the virtual resource in the context's namespace, for the
    // caller's own user, uid and groups.
    let review = kube.last_access_review().expect("a SubjectAccessReview");
    let spec = &review["spec"];
    assert_eq!(spec["resourceAttributes"]["group"], GROUP);
    assert_eq!(spec["resourceAttributes"]["resource"], RESOURCE);
    assert_eq!(spec["resourceAttributes"]["namespace"], NAMESPACE);
    assert_eq!(spec["resourceAttributes"]["verb"], "get");
    assert_eq!(spec["user"], dashboard.as_str());
    assert!(
        spec["uid"].as_str().is_some_and(|u| !u.is_empty()),
        "{review}"
    );
    assert!(spec["groups"]
        .as_array()
        .unwrap()
        .iter()
        .any(|g| g == "system:serviceaccounts:ops"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_are_cached_by_kind_and_a_revoked_grant_stops_working_within_its_ttl() {
    let kube = FakeKube::start().await;
    let dir = tempfile::tempdir().unwrap();
    let gateway = kube.add_account("payments", "gateway", "gateway-token", &[]);
    kube.grant(&gateway, "create");
    let app = app(&kube, &dir, None, |s| {
        s.auth.kubernetes.cache.allowed_ttl = Duration::from_secs(1);
        s.auth.kubernetes.cache.denied_ttl = Duration::from_secs(1);
    })
    .await;

    for i in 0..10 {
        assert_eq!(
            write(&app, "gateway-token", &format!("cache-{i}"))
                .await
                .status(),
            201
        );
    }
    assert_eq!(kube.token_reviews(), 1, "one TokenReview for ten requests");
    assert_eq!(
        kube.access_reviews(),
        1,
        "one SubjectAccessReview for ten writes"
    );
    for _ in 0..3 {
        assert_eq!(query(&app, "gateway-token", "cache-0").await.status(), 403);
    }
    assert_eq!(kube.access_reviews(), 2, "a denial is cached too, per verb");
    for _ in 0..3 {
        assert_eq!(write(&app, "junk", "cache-x").await.status(), 401);
    }
    assert_eq!(
        kube.token_reviews(),
        2,
        "an invalid token is asked about once"
    );

    let metrics = app.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "datastorage_auth_cache_requests_total{api=\"tokenreview\",result=\"miss\"}"
        ),
        2.0
    );
    assert_eq!(
        metric(
            &metrics,
            "datastorage_auth_cache_requests_total{api=\"tokenreview\",result=\"hit\"}"
        ),
        14.0
    );
    assert_eq!(
        metric(
            &metrics,
            "datastorage_auth_cache_requests_total{api=\"subjectaccessreview\",result=\"miss\"}"
        ),
        2.0
    );
    assert!(metrics.contains(
        "datastorage_auth_kubernetes_request_duration_seconds_count{api=\"subjectaccessreview\"} 2"
    ));

    // Revoked: still allowed from the cache at first, refused once the answer expires.
    kube.revoke(&gateway, "create");
    let revoked = Instant::now();
    let mut refused_after = None;
    while revoked.elapsed() < Duration::from_secs(5) {
        if write(&app, "gateway-token", "cache-r").await.status() == 403 {
            refused_after = Some(revoked.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let refused_after = refused_after.expect("the revoked grant stopped working");
    assert!(
        refused_after <= Duration::from_millis(1500),
        "{refused_after:?}"
    );
    // Granted again: the denial expires after deniedTtl.
    kube.grant(&gateway, "create");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(write(&app, "gateway-token", "cache-g").await.status(), 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_with_a_new_token_share_one_review() {
    let kube = FakeKube::start().await;
    let dir = tempfile::tempdir().unwrap();
    let gateway = kube.add_account("payments", "gateway", "gateway-token", &[]);
    kube.grant(&gateway, "create");
    kube.slow(Duration::from_millis(300));
    let app = app(&kube, &dir, None, |_| {}).await;
    let writes = (0..20).map(|i| {
        let app = &app;
        async move {
            write(app, "gateway-token", &format!("herd-{i}"))
                .await
                .status()
        }
    });
    let statuses = futures::future::join_all(writes).await;
    assert!(statuses.iter().all(|s| *s == 201), "{statuses:?}");
    assert_eq!(kube.token_reviews(), 1);
    assert_eq!(kube.access_reviews(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_or_slow_api_server_answers_503_is_not_cached_and_never_lets_through() {
    let kube = FakeKube::start().await;
    let dir = tempfile::tempdir().unwrap();
    let gateway = kube.add_account("payments", "gateway", "gateway-token", &[]);
    kube.grant(&gateway, "create");
    let app = app(&kube, &dir, None, |s| {
        s.auth.kubernetes.timeout = Duration::from_millis(300);
    })
    .await;

    kube.fail(true);
    let down = write(&app, "gateway-token", "down-1").await;
    assert_eq!(down.status(), 503);
    assert!(down.headers().contains_key("retry-after"));
    let body = down.text().await.unwrap();
    assert!(
        !body.contains("gateway-token") && !body.contains("etcd"),
        "{body}"
    );

    kube.fail(false);
    kube.slow(Duration::from_secs(3));
    let started = Instant::now();
    assert_eq!(write(&app, "gateway-token", "down-2").await.status(), 503);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    // The failures were not cached: with the API server back, the same token works at once.
    kube.slow(Duration::ZERO);
    assert_eq!(write(&app, "gateway-token", "down-3").await.status(), 201);
    let metrics = app.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "datastorage_auth_kubernetes_errors_total{api=\"tokenreview\"}"
        ),
        2.0
    );
    assert_eq!(
        metric(
            &metrics,
            "datastorage_auth_requests_total{mode=\"kubernetes\",result=\"unavailable\"}"
        ),
        2.0
    );
    assert_eq!(
        metric(
            &metrics,
            "datastorage_auth_requests_total{mode=\"kubernetes\",result=\"allowed\"}"
        ),
        1.0
    );

    // A failure of the permission check is a 503 too, never a pass.
    kube.fail(true);
    let path = "/api/v1/audit/verify-chain";
    let verify = call(
        &app,
        "gateway-token",
        Method::POST,
        path,
        Some(&serde_json::json!({"correlation_id": "down-3"})),
    )
    .await;
    assert_eq!(verify.status(), 503);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_credential_the_api_server_refuses_answers_503() {
    let kube = FakeKube::start().await;
    let dir = tempfile::tempdir().unwrap();
    let gateway = kube.add_account("payments", "gateway", "gateway-token", &[]);
    kube.grant(&gateway, "create");
    let app = app(&kube, &dir, Some("wrong-service-token"), |_| {}).await;
    assert_eq!(write(&app, "gateway-token", "cred-1").await.status(), 503);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_must_be_issued_for_the_configured_audience() {
    let kube = FakeKube::start().await;
    let dir = tempfile::tempdir().unwrap();
    let ours = kube.add_account("payments", "gateway", "ours", &["datastorage"]);
    let theirs = kube.add_account("payments", "other", "theirs", &["vault"]);
    let plain = kube.add_account("payments", "plain", "plain", &[]);
    for user in [&ours, &theirs, &plain] {
        kube.grant(user, "create");
    }
    let app = app(&kube, &dir, None, |s| {
        s.auth.kubernetes.audiences = vec!["datastorage".to_owned()];
    })
    .await;
    assert_eq!(write(&app, "ours", "aud-1").await.status(), 201);
    let review = kube.last_token_review().expect("a TokenReview");
    assert_eq!(
        review,
        serde_json::json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                           "spec": {"token": "ours", "audiences": ["datastorage"]}})
    );
    assert_eq!(write(&app, "theirs", "aud-1").await.status(), 401);
    assert_eq!(write(&app, "plain", "aud-1").await.status(), 401);
}
