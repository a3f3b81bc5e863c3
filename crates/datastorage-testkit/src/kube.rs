//! [`FakeKube`]: a stand-in for the Kubernetes API server, for `auth.mode: kubernetes` tests.
//!
//! No real API server can run on the test machines, so this one speaks its wire format for the
//! two calls DataStorage makes: `POST /apis/authentication.k8s.io/v1/tokenreviews` and
//! `POST /apis/authorization.k8s.io/v1/subjectaccessreviews`, over HTTPS with a certificate of
//! its own CA, and only for a caller that presents the service's own bearer token (a wrong one
//! gets the API server's `401` Status). Its RBAC is a set of (user or group, verb) grants on
//! one virtual resource in one namespace. It can be made to fail (`500`) or to be slow, and it
//! counts and keeps the reviews it answered.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use datastorage::config::ServerTls;
use datastorage::http::serve::{serve, ConnLimits, Gate};
use datastorage::http::tls::Tls;
use datastorage::metrics::AuthCounters;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::tls::TestCa;

/// The virtual resource's group the fake grants on.
pub const GROUP: &str = "datastorage.kubernaut.ai";
/// The virtual resource the fake grants on.
pub const RESOURCE: &str = "auditevents";
/// The namespace the fake grants in (the kubeconfig context's namespace).
pub const NAMESPACE: &str = "audit";

/// A ServiceAccount known to the fake.
#[derive(Debug, Clone)]
struct Account {
    username: String,
    uid: String,
    groups: Vec<String>,
    /// Audiences its token is issued for; empty: the API server's own.
    audiences: Vec<String>,
}

#[derive(Default)]
struct Inner {
    service_token: String,
    accounts: Mutex<HashMap<String, Account>>,
    grants: Mutex<HashSet<(String, String)>>,
    failing: AtomicBool,
    delay: Mutex<Duration>,
    token_reviews: AtomicUsize,
    access_reviews: AtomicUsize,
    last_access_review: Mutex<Option<Value>>,
    last_token_review: Mutex<Option<Value>>,
}

/// The fake API server; stops when dropped.
pub struct FakeKube {
    inner: Arc<Inner>,
    /// `https://127.0.0.1:<port>`.
    pub url: String,
    ca: TestCa,
    stop: watch::Sender<bool>,
}

impl FakeKube {
    /// Starts the fake on a free loopback port.
    pub async fn start() -> Self {
        let ca = TestCa::new("fake-kube-ca");
        let cert = ca.server("apiserver");
        let tls = Tls::load(
            &ServerTls {
                cert_file: Some(cert.cert),
                key_file: Some(cert.key),
                cert_dir: None,
                client_ca_file: None,
                ca_file: None,
            },
            AuthCounters::default(),
        )
        .expect("the fake API server's TLS");
        let inner = Arc::new(Inner {
            service_token: format!("service-{}", uuid::Uuid::new_v4()),
            ..Inner::default()
        });
        let router = Router::new()
            .route(
                "/apis/authentication.k8s.io/v1/tokenreviews",
                post(token_review),
            )
            .route(
                "/apis/authorization.k8s.io/v1/subjectaccessreviews",
                post(access_review),
            )
            .with_state(Arc::clone(&inner));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("https://{}", listener.local_addr().unwrap());
        let (stop, stopped) = watch::channel(false);
        let limits = ConnLimits {
            header_read_timeout: Duration::from_secs(10),
            max_connections: 256,
        };
        tokio::spawn(serve(
            "fake-kube",
            listener,
            Gate::new(router),
            limits,
            Some(tls),
            stopped,
        ));
        Self {
            inner,
            url,
            ca,
            stop,
        }
    }

    /// Adds the ServiceAccount `namespace/name` with bearer `token` (valid for the API
    /// server's own audience, or for `audiences`); returns its user name.
    pub fn add_account(
        &self,
        namespace: &str,
        name: &str,
        token: &str,
        audiences: &[&str],
    ) -> String {
        let username = format!("system:serviceaccount:{namespace}:{name}");
        self.inner.accounts.lock().unwrap().insert(
            token.to_owned(),
            Account {
                username: username.clone(),
                uid: uuid::Uuid::new_v4().to_string(),
                groups: vec![
                    "system:serviceaccounts".to_owned(),
                    format!("system:serviceaccounts:{namespace}"),
                    "system:authenticated".to_owned(),
                ],
                audiences: audiences.iter().map(|a| (*a).to_owned()).collect(),
            },
        );
        username
    }

    /// Lets `subject` (a user or a group) do `verb` on the resource.
    pub fn grant(&self, subject: &str, verb: &str) {
        self.inner
            .grants
            .lock()
            .unwrap()
            .insert((subject.to_owned(), verb.to_owned()));
    }

    /// Takes a grant away.
    pub fn revoke(&self, subject: &str, verb: &str) {
        self.inner
            .grants
            .lock()
            .unwrap()
            .remove(&(subject.to_owned(), verb.to_owned()));
    }

    /// Makes every call answer `500` (true) or work again (false).
    pub fn fail(&self, failing: bool) {
        self.inner.failing.store(failing, Ordering::SeqCst);
    }

    /// Makes every call wait `delay` before answering.
    pub fn slow(&self, delay: Duration) {
        *self.inner.delay.lock().unwrap() = delay;
    }

    /// TokenReviews answered so far (failed ones included).
    pub fn token_reviews(&self) -> usize {
        self.inner.token_reviews.load(Ordering::SeqCst)
    }

    /// SubjectAccessReviews answered so far (failed ones included).
    pub fn access_reviews(&self) -> usize {
        self.inner.access_reviews.load(Ordering::SeqCst)
    }

    /// The body of the last TokenReview received.
    pub fn last_token_review(&self) -> Option<Value> {
        self.inner.last_token_review.lock().unwrap().clone()
    }

    /// The body of the last SubjectAccessReview received.
    pub fn last_access_review(&self) -> Option<Value> {
        self.inner.last_access_review.lock().unwrap().clone()
    }

    /// Writes a kubeconfig for the service into `dir`: this server, its CA, the service's own
    /// token (or `token` instead) and [`NAMESPACE`]. Returns its path.
    pub fn kubeconfig(&self, dir: &Path, token: Option<&str>) -> PathBuf {
        let path = dir.join("kubeconfig");
        let token = token.unwrap_or(&self.inner.service_token);
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\ncurrent-context: test\nclusters:\n- name: fake\n  cluster:\n    server: {}\n    certificate-authority: {}\ncontexts:\n- name: test\n  context: {{cluster: fake, user: datastorage, namespace: {NAMESPACE}}}\nusers:\n- name: datastorage\n  user:\n    token: {token}\n",
                self.url,
                self.ca.ca_cert.display()
            ),
        )
        .unwrap();
        path
    }
}

impl Drop for FakeKube {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// The API server's `Status` answer.
fn status(code: StatusCode, reason: &str, message: &str) -> (StatusCode, Json<Value>) {
    (
        code,
        Json(
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                    "message": message, "reason": reason, "code": code.as_u16()}),
        ),
    )
}

/// What every call goes through: the caller's own token, failure and delay.
async fn admit(inner: &Inner, headers: &HeaderMap) -> Result<(), (StatusCode, Json<Value>)> {
    let delay = *inner.delay.lock().unwrap();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if inner.failing.load(Ordering::SeqCst) {
        return Err(status(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            "etcdserver: request timed out",
        ));
    }
    let expected = format!("Bearer {}", inner.service_token);
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
        return Err(status(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "Unauthorized",
        ));
    }
    Ok(())
}

async fn token_review(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    Json(review): Json<Value>,
) -> Result<Json<Value>, (StatusCode, Json<Value>)> {
    inner.token_reviews.fetch_add(1, Ordering::SeqCst);
    admit(&inner, &headers).await?;
    if review["apiVersion"] != "authentication.k8s.io/v1" || review["kind"] != "TokenReview" {
        return Err(status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "not a TokenReview",
        ));
    }
    *inner.last_token_review.lock().unwrap() = Some(review.clone());
    let token = review["spec"]["token"].as_str().unwrap_or_default();
    let asked: Vec<String> = review["spec"]["audiences"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let account = inner.accounts.lock().unwrap().get(token).cloned();
    let answer = match account {
        None => json!({"authenticated": false, "error": "invalid bearer token"}),
        Some(account) => {
            // As the API server: with audiences asked, the token must be issued for one of
            // them and the answer lists those; without, for the API server's own.
            let matched: Vec<String> = if asked.is_empty() {
                if account.audiences.is_empty() {
                    vec!["https://kubernetes.default.svc".to_owned()]
                } else {
                    Vec::new()
                }
            } else {
                asked
                    .iter()
                    .filter(|a| account.audiences.contains(a))
                    .cloned()
                    .collect()
            };
            if matched.is_empty() {
                json!({"authenticated": false, "error": "token audiences is invalid for the target audiences"})
            } else {
                json!({"authenticated": true, "audiences": matched,
                       "user": {"username": account.username, "uid": account.uid,
                                "groups": account.groups}})
            }
        }
    };
    let mut review = review;
    review["status"] = answer;
    Ok(Json(review))
}

async fn access_review(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    Json(review): Json<Value>,
) -> Result<Json<Value>, (StatusCode, Json<Value>)> {
    inner.access_reviews.fetch_add(1, Ordering::SeqCst);
    admit(&inner, &headers).await?;
    if review["apiVersion"] != "authorization.k8s.io/v1" || review["kind"] != "SubjectAccessReview"
    {
        return Err(status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "not a SubjectAccessReview",
        ));
    }
    *inner.last_access_review.lock().unwrap() = Some(review.clone());
    let spec = &review["spec"];
    let attributes = &spec["resourceAttributes"];
    let verb = attributes["verb"].as_str().unwrap_or_default();
    let on_resource = attributes["group"] == GROUP
        && attributes["resource"] == RESOURCE
        && attributes["namespace"] == NAMESPACE;
    let mut subjects: Vec<&str> = vec![spec["user"].as_str().unwrap_or_default()];
    if let Some(groups) = spec["groups"].as_array() {
        subjects.extend(groups.iter().filter_map(Value::as_str));
    }
    let grants = inner.grants.lock().unwrap();
    let allowed = on_resource
        && subjects
            .iter()
            .any(|s| grants.contains(&((*s).to_owned(), verb.to_owned())));
    drop(grants);
    let mut review = review;
    review["status"] = if allowed {
        json!({"allowed": true, "reason": "RBAC: allowed by RoleBinding"})
    } else {
        json!({"allowed": false})
    };
    Ok(Json(review))
}
