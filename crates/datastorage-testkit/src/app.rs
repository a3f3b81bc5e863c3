//! [`TestApp`]: a DataStorage server for a test, on a fresh database, with typed calls.
//!
//! Two ways to run it:
//! - in process ([`TestApp::spawn`]): requests go straight into the router with
//!   `Router::oneshot`, no listener, no port;
//! - on loopback ports ([`TestApp::serve`]), through `startup::run`, for tests that need a real
//!   listener (clients, shutdown, connection behaviour).
//!
//! Either way every call answers a [`TestResponse`], so a test body does not depend on the way.

use std::path::PathBuf;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, Request, StatusCode};
use axum::Router;
use datastorage::config::{Driver, Settings};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use sqlx::Connection as _;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tower::ServiceExt as _;

use crate::pg::PgDb;
use crate::pgbouncer::{BouncerSettings, PgBouncer};

/// Which backend a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A fresh database on the test PostgreSQL.
    Postgres,
    /// A fresh SQLite file in a temporary folder.
    Sqlite,
    /// A fresh database on the test PostgreSQL, reached through a PgBouncer of its own in
    /// transaction pooling mode (`database.pooler: pgbouncer`; migrations direct). Direct SQL
    /// ([`TestApp::sql`]) still goes to PostgreSQL itself.
    PgBouncer,
}

/// An answer, read whole; of an event stream (`text/event-stream`, which does not end), the
/// status and headers only.
#[derive(Debug)]
pub struct TestResponse {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl TestResponse {
    /// The status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The headers.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The body as JSON.
    pub async fn json<T: DeserializeOwned>(self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.body)
    }

    /// The body as text.
    pub async fn text(self) -> Result<String, std::string::FromUtf8Error> {
        String::from_utf8(self.body.to_vec())
    }
}

/// Whether an answer is an event stream, whose body does not end.
fn is_stream(headers: &HeaderMap) -> bool {
    headers
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|ct| ct.as_bytes().starts_with(b"text/event-stream"))
}

enum Transport {
    InProcess {
        api: Router,
        metrics: Router,
    },
    Listener {
        base: String,
        metrics_base: String,
        http: reqwest::Client,
        shutdown: Option<oneshot::Sender<()>>,
        task: Option<JoinHandle<anyhow::Result<()>>>,
    },
}

/// Which listener a call goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// The API port.
    Api,
    /// The metrics port.
    Metrics,
}

/// A server on a fresh database (see the module docs).
pub struct TestApp {
    /// The PostgreSQL database, on [`Backend::Postgres`].
    pub pg: Option<PgDb>,
    /// The SQLite file, on [`Backend::Sqlite`].
    pub sqlite_path: Option<PathBuf>,
    transport: Transport,
    /// `Authorization` of the helpers' requests ([`TestApp::authorize_as`]).
    authorization: Option<String>,
    _dir: tempfile::TempDir,
    /// The pooler, on [`Backend::PgBouncer`].
    _bouncer: Option<PgBouncer>,
}

/// Settings for a test server on `backend`: no shutdown delay, a short shutdown timeout, a fresh
/// database.
async fn test_settings(
    backend: Backend,
    dir: &tempfile::TempDir,
) -> (Settings, Option<PgDb>, Option<PgBouncer>) {
    let mut settings = Settings::default();
    settings.server.shutdown_delay = Duration::ZERO;
    settings.server.shutdown_timeout = Duration::from_secs(5);
    settings.buffer.dir = dir.path().join("buffer");
    match backend {
        Backend::Postgres => {
            let db = PgDb::create().await;
            db.apply(&mut settings);
            (settings, Some(db), None)
        }
        Backend::PgBouncer => {
            let db = PgDb::create().await;
            let bouncer = PgBouncer::start(&db, &BouncerSettings::default());
            bouncer.apply(&db, &mut settings);
            (settings, Some(db), Some(bouncer))
        }
        Backend::Sqlite => {
            settings.database.driver = Some(Driver::Sqlite);
            settings.database.sqlite_path = dir.path().join("data").join("test.db");
            (settings, None, None)
        }
    }
}

impl TestApp {
    /// A server in process on `backend`, with the test defaults.
    pub async fn spawn(backend: Backend) -> Self {
        Self::spawn_with(backend, |_| {}).await
    }

    /// A server in process on `backend`, with settings changed by `tweak`.
    pub async fn spawn_with(backend: Backend, tweak: impl FnOnce(&mut Settings)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (mut settings, pg, bouncer) = test_settings(backend, &dir).await;
        tweak(&mut settings);
        let sqlite_path = pg.is_none().then(|| settings.database.sqlite_path.clone());
        let service = datastorage::startup::prepare(settings)
            .await
            .unwrap_or_else(|e| panic!("the test service did not start: {e:#}"));
        let (api, metrics) = service.into_routers();
        Self {
            pg,
            sqlite_path,
            transport: Transport::InProcess { api, metrics },
            authorization: None,
            _dir: dir,
            _bouncer: bouncer,
        }
    }

    /// A server on loopback ports on `backend`, with the test defaults.
    pub async fn serve(backend: Backend) -> Self {
        Self::serve_with(backend, |_| {}).await
    }

    /// A server on loopback ports on `backend`, with settings changed by `tweak`.
    pub async fn serve_with(backend: Backend, tweak: impl FnOnce(&mut Settings)) -> Self {
        let api = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (settings, pg, bouncer) = test_settings(backend, &dir).await;
        Self::serve_settings(api, settings, pg, bouncer, dir, tweak).await
    }

    /// A server on this API listener (so a test can pick the port before the server exists),
    /// on an existing PostgreSQL database.
    pub async fn serve_on_db(
        api: TcpListener,
        pg: PgDb,
        tweak: impl FnOnce(&mut Settings),
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (mut settings, _, _) = test_settings(Backend::Sqlite, &dir).await;
        pg.apply(&mut settings);
        Self::serve_settings(api, settings, Some(pg), None, dir, tweak).await
    }

    async fn serve_settings(
        api: TcpListener,
        mut settings: Settings,
        pg: Option<PgDb>,
        bouncer: Option<PgBouncer>,
        dir: tempfile::TempDir,
        tweak: impl FnOnce(&mut Settings),
    ) -> Self {
        tweak(&mut settings);
        let sqlite_path = pg.is_none().then(|| settings.database.sqlite_path.clone());
        let metrics = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", api.local_addr().unwrap());
        let metrics_base = format!("http://{}", metrics.local_addr().unwrap());
        let (tx, rx) = oneshot::channel::<()>();
        let listeners = datastorage::startup::Listeners {
            api,
            metrics,
            health: None,
        };
        let task = tokio::spawn(datastorage::startup::run(settings, listeners, async move {
            let _ = rx.await;
        }));
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let app = Self {
            pg,
            sqlite_path,
            transport: Transport::Listener {
                base,
                metrics_base,
                http,
                shutdown: Some(tx),
                task: Some(task),
            },
            authorization: None,
            _dir: dir,
            _bouncer: bouncer,
        };
        app.wait_ready().await;
        app
    }

    /// The base URL of the API listener; panics for a server in process.
    pub fn base(&self) -> &str {
        match &self.transport {
            Transport::Listener { base, .. } => base,
            Transport::InProcess { .. } => panic!("a server in process has no URL; use serve()"),
        }
    }

    /// The PostgreSQL database; panics on SQLite.
    pub fn pg(&self) -> &PgDb {
        self.pg.as_ref().expect("the test runs on PostgreSQL")
    }

    /// Waits until `/readyz` answers 200 (10 s at most).
    pub async fn wait_ready(&self) {
        for _ in 0..200 {
            if self.get("/readyz").await.status() == 200 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the test server did not become ready");
    }

    /// From now on the helpers (`post_event`, `query`, `verify`, `metrics`, `send`, …) send
    /// this `Authorization` header, e.g. `Bearer <token>` of an admin.
    pub fn authorize_as(&mut self, authorization: impl Into<String>) {
        self.authorization = Some(authorization.into());
    }

    /// Sends `method path` with an optional content type and body to `listener` (with the
    /// header of [`TestApp::authorize_as`], if set).
    pub async fn send(
        &self,
        listener: Listener,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: impl Into<Bytes>,
    ) -> TestResponse {
        let mut headers = Vec::new();
        if let Some(ct) = content_type {
            headers.push(("content-type", ct.as_bytes().to_vec()));
        }
        if let Some(a) = &self.authorization {
            headers.push(("authorization", a.as_bytes().to_vec()));
        }
        self.send_raw(listener, method, path, &headers, body).await
    }

    /// Sends `method path` with exactly these headers (values as raw bytes, which need not be
    /// text) and body to `listener`.
    pub async fn send_raw(
        &self,
        listener: Listener,
        method: Method,
        path: &str,
        headers: &[(&str, Vec<u8>)],
        body: impl Into<Bytes>,
    ) -> TestResponse {
        let body = body.into();
        let value = |v: &[u8]| {
            axum::http::HeaderValue::from_bytes(v).expect("a header value without line breaks")
        };
        match &self.transport {
            Transport::InProcess { api, metrics } => {
                let router = match listener {
                    Listener::Api => api.clone(),
                    Listener::Metrics => metrics.clone(),
                };
                let mut req = Request::builder().method(method).uri(path);
                for (name, v) in headers {
                    req = req.header(*name, value(v));
                }
                let resp = router
                    .oneshot(req.body(Body::from(body)).unwrap())
                    .await
                    .expect("the router is infallible");
                let (parts, body) = resp.into_parts();
                let body = if is_stream(&parts.headers) {
                    Bytes::new()
                } else {
                    axum::body::to_bytes(body, usize::MAX)
                        .await
                        .expect("the whole answer")
                };
                TestResponse {
                    status: parts.status,
                    headers: parts.headers,
                    body,
                }
            }
            Transport::Listener {
                base,
                metrics_base,
                http,
                ..
            } => {
                let base = match listener {
                    Listener::Api => base,
                    Listener::Metrics => metrics_base,
                };
                let mut req = http.request(method, format!("{base}{path}")).body(body);
                for (name, v) in headers {
                    req = req.header(*name, value(v));
                }
                match req.send().await {
                    Ok(resp) => TestResponse {
                        status: resp.status(),
                        headers: resp.headers().clone(),
                        body: if is_stream(resp.headers()) {
                            Bytes::new()
                        } else {
                            resp.bytes().await.unwrap_or_default()
                        },
                    },
                    Err(e) => TestResponse {
                        status: StatusCode::BAD_GATEWAY,
                        headers: HeaderMap::new(),
                        body: Bytes::from(format!("request failed: {e}")),
                    },
                }
            }
        }
    }

    /// `GET path` on the API listener.
    pub async fn get(&self, path: &str) -> TestResponse {
        self.send(Listener::Api, Method::GET, path, None, Bytes::new())
            .await
    }

    /// `GET path` on the metrics listener.
    pub async fn get_metrics_port(&self, path: &str) -> TestResponse {
        self.send(Listener::Metrics, Method::GET, path, None, Bytes::new())
            .await
    }

    /// `method path` with a JSON body on the API listener.
    pub async fn json(&self, method: Method, path: &str, body: &Value) -> TestResponse {
        self.send(
            Listener::Api,
            method,
            path,
            Some("application/json"),
            serde_json::to_vec(body).unwrap(),
        )
        .await
    }

    /// `POST /api/v1/audit/events`.
    pub async fn post_event(&self, event: &Value) -> TestResponse {
        self.json(Method::POST, "/api/v1/audit/events", event).await
    }

    /// `POST /api/v1/audit/events/batch`.
    pub async fn post_batch(&self, events: &Value) -> TestResponse {
        self.json(Method::POST, "/api/v1/audit/events/batch", events)
            .await
    }

    /// `GET /api/v1/audit/events?query`.
    pub async fn query(&self, query: &str) -> TestResponse {
        self.get(&format!("/api/v1/audit/events?{query}")).await
    }

    /// `GET /api/v1/audit/events/{id}`.
    pub async fn get_event(&self, id: &str) -> TestResponse {
        self.get(&format!("/api/v1/audit/events/{id}")).await
    }

    /// `POST /api/v1/audit/verify-chain`, which must answer 200.
    pub async fn verify(&self, correlation_id: &str) -> Value {
        let r = self
            .json(
                Method::POST,
                "/api/v1/audit/verify-chain",
                &json!({ "correlation_id": correlation_id }),
            )
            .await;
        assert_eq!(r.status(), 200);
        r.json().await.unwrap()
    }

    /// The metrics text.
    pub async fn metrics(&self) -> String {
        self.get_metrics_port("/metrics")
            .await
            .text()
            .await
            .unwrap()
    }

    /// Runs SQL against the backing database directly (for tampering).
    pub async fn sql(&self, statements: &[&str]) {
        if let Some(pg) = &self.pg {
            pg.sql(statements).await;
        } else {
            let path = self.sqlite_path.as_ref().expect("SQLite has a file");
            let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
                .await
                .unwrap();
            for s in statements {
                sqlx::raw_sql(s).execute(&mut c).await.unwrap();
            }
        }
    }

    /// Shuts the server down in order (on loopback) and waits for it.
    pub async fn stop(mut self) {
        if let Transport::Listener { shutdown, task, .. } = &mut self.transport {
            if let Some(tx) = shutdown.take() {
                let _ = tx.send(());
            }
            if let Some(task) = task.take() {
                task.await.unwrap().unwrap();
            }
        }
    }
}

/// Reads one sample of a metric from exposition text: the first line starting with `prefix`.
pub fn metric_value(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}
