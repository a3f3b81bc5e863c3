//! Test helpers: a real DataStorage server on PostgreSQL, in process, on a loopback port.
//!
//! Copied in part from the server's `tests/common/mod.rs` (a crate's test helpers cannot be
//! shared). PostgreSQL comes from `DATASTORAGE_TEST_PG_URL`, else
//! `postgres://postgres@127.0.0.1:5432/postgres`; each test gets a fresh database.
#![allow(dead_code, missing_docs)]

use std::collections::HashMap;
use std::time::Duration;

use datastorage::config::{Driver, Secret, Settings, SslMode};
use datastorage_client::api::{AuditEventRequest, EventCategory, EventOutcome};
use sqlx::{Connection, PgConnection};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use uuid::Uuid;

pub fn pg_admin_url() -> String {
    std::env::var("DATASTORAGE_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A fresh, empty PostgreSQL database on the test server.
#[derive(Debug, Clone)]
pub struct PgDb {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Option<String>,
    pub name: String,
}

impl PgDb {
    pub async fn create() -> Self {
        let admin_url = pg_admin_url();
        let url = url::Url::parse(&admin_url).expect("DATASTORAGE_TEST_PG_URL is a URL");
        let name = format!("ds_client_test_{}", Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(&admin_url).await.unwrap_or_else(|e| {
            panic!("cannot reach the test PostgreSQL at {admin_url} ({e}); set DATASTORAGE_TEST_PG_URL")
        });
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .unwrap();
        admin.close().await.ok();
        Self {
            host: url.host_str().unwrap_or("127.0.0.1").to_owned(),
            port: url.port().unwrap_or(5432),
            user: if url.username().is_empty() {
                "postgres".to_owned()
            } else {
                url.username().to_owned()
            },
            password: url.password().map(str::to_owned),
            name,
        }
    }

    pub fn url(&self) -> String {
        let auth = match &self.password {
            Some(p) => format!("{}:{p}", self.user),
            None => self.user.clone(),
        };
        format!(
            "postgres://{auth}@{}:{}/{}",
            self.host, self.port, self.name
        )
    }

    pub fn apply(&self, s: &mut Settings) {
        s.database.driver = Some(Driver::Postgres);
        s.database.host = Some(self.host.clone());
        s.database.port = self.port;
        s.database.name = self.name.clone();
        s.database.user = self.user.clone();
        s.database.password = self.password.clone().map(Secret::new);
        s.database.ssl_mode = SslMode::Disable;
    }

    /// How many times each stored event id occurs, read from the table itself.
    pub async fn stored_ids(&self) -> HashMap<Uuid, i64> {
        let mut c = PgConnection::connect(&self.url()).await.unwrap();
        let rows: Vec<(Uuid, i64)> =
            sqlx::query_as("SELECT event_id, count(*) FROM audit_events GROUP BY event_id")
                .fetch_all(&mut c)
                .await
                .unwrap();
        c.close().await.ok();
        rows.into_iter().collect()
    }

    /// Runs statements on the test database, in order.
    pub async fn sql(&self, statements: &[&str]) {
        let mut c = PgConnection::connect(&self.url()).await.unwrap();
        for statement in statements {
            sqlx::query(statement).execute(&mut c).await.unwrap();
        }
        c.close().await.ok();
    }

    pub async fn count(&self) -> i64 {
        self.stored_ids().await.values().sum()
    }
}

/// An in-process server on PostgreSQL, started through `startup::run`.
pub struct TestApp {
    pub base: String,
    pub pg: PgDb,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    pub async fn spawn_with(tweak: impl FnOnce(&mut Settings)) -> Self {
        let api = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::spawn_on(api, PgDb::create().await, tweak).await
    }

    /// A server on this listener (so a test can pick the port before the server exists).
    pub async fn spawn_on(api: TcpListener, pg: PgDb, tweak: impl FnOnce(&mut Settings)) -> Self {
        let mut settings = Settings::default();
        settings.server.shutdown_delay = Duration::ZERO;
        settings.server.shutdown_timeout = Duration::from_secs(5);
        pg.apply(&mut settings);
        tweak(&mut settings);
        let metrics = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", api.local_addr().unwrap());
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(datastorage::startup::run(
            settings,
            api,
            metrics,
            async move {
                let _ = rx.await;
            },
        ));
        let app = Self {
            base,
            pg,
            shutdown: Some(tx),
            task: Some(task),
        };
        app.wait_ready().await;
        app
    }

    pub async fn wait_ready(&self) {
        let client = datastorage_client::Client::new(&self.base).unwrap();
        for _ in 0..200 {
            if client.readyz().await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("server at {} did not become ready", self.base);
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }
}

/// A valid event; `n` spreads events over 64 correlation ids (64 hash chains).
pub fn event(n: usize) -> AuditEventRequest {
    let mut e = AuditEventRequest::new(
        "gateway.signal.received",
        EventCategory::Gateway,
        "received",
        EventOutcome::Success,
        format!("corr-{}", n % 64),
    );
    e.actor_id = Some("gateway-service".to_owned());
    e.event_data
        .insert("n".to_owned(), serde_json::Value::from(n as u64));
    e
}

/// A loopback port nothing listens on (bound, then released).
pub fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
