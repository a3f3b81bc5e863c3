//! [`Client`]: one typed async call per DataStorage route, over the shared wire types.
//!
//! The client does not retry: a call is one HTTP request, and its [`Error`] says whether a retry
//! may help ([`Error::is_retryable`]) and how long to wait ([`Error::retry_after`]). Retrying is
//! the buffered [`AuditStore`](crate::AuditStore)'s job, so there is exactly one retry layer.

use std::time::Duration;

use datastorage_api::problem::PROBLEM_CONTENT_TYPE;
use datastorage_api::{
    AuditEvent, AuditEventRequest, AuditEventResponse, AuditEventsQueryResponse,
    BatchAuditEventResponse, EventQueryParams, Problem, VerifyChainRequest, VerifyChainResponse,
};
use reqwest::header::{HeaderMap, CONTENT_TYPE, RETRY_AFTER};
use reqwest::Response;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{parse_retry_after, Error};

/// Longest one request may take, connection included. A batch of 500 events is well under a
/// megabyte; a server that needs longer than this is better retried than waited on.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Longest a TCP/TLS connection may take to open. Short, so that an unreachable server is
/// noticed (and retried with backoff) quickly.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How much of a non-problem error body is kept for the log.
const ERROR_BODY_LIMIT: usize = 512;

/// Answer of `/healthz` and `/readyz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthStatus {
    /// `ok`, `ready`, or why the server is not ready.
    pub status: String,
}

/// A typed client of one DataStorage server. Cheap to clone; clones share connections.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
}

/// Builds a [`Client`] with non-default timeouts or a caller-made `reqwest::Client`.
#[derive(Debug)]
pub struct ClientBuilder {
    base: String,
    request_timeout: Duration,
    connect_timeout: Duration,
    http: Option<reqwest::Client>,
}

impl ClientBuilder {
    /// Longest one request may take (default [`DEFAULT_REQUEST_TIMEOUT`]).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Longest a connection may take to open (default [`DEFAULT_CONNECT_TIMEOUT`]).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Uses this `reqwest::Client` as is (its own timeouts apply; the builder's are ignored).
    pub fn http_client(mut self, http: reqwest::Client) -> Self {
        self.http = Some(http);
        self
    }

    /// The client.
    pub fn build(self) -> Result<Client, Error> {
        let base = self.base.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(Error::InvalidBaseUrl(self.base));
        }
        let http = match self.http {
            Some(http) => http,
            None => reqwest::Client::builder()
                .timeout(self.request_timeout)
                .connect_timeout(self.connect_timeout)
                .user_agent(concat!("datastorage-client/", env!("CARGO_PKG_VERSION")))
                .build()
                .map_err(Error::Transport)?,
        };
        Ok(Client { http, base })
    }
}

impl Client {
    /// A client of the server at `base_url` (for example `http://datastorage:8080`) with the
    /// default timeouts.
    pub fn new(base_url: impl Into<String>) -> Result<Self, Error> {
        Self::builder(base_url).build()
    }

    /// A builder for a client of the server at `base_url`.
    pub fn builder(base_url: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            base: base_url.into(),
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            http: None,
        }
    }

    /// The server's base URL, without a trailing slash.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// `POST /api/v1/audit/events`: writes one event (201). Sending an `event_id` makes the
    /// write idempotent: a replay answers 201 with the same id and writes nothing.
    pub async fn create_event(
        &self,
        event: &AuditEventRequest,
    ) -> Result<AuditEventResponse, Error> {
        let request = self.http.post(self.url("/api/v1/audit/events")).json(event);
        decode(request.send().await).await
    }

    /// `POST /api/v1/audit/events/batch`: writes 1..=`server.maxBatchSize` events, all or
    /// nothing (201). Ids come back in request order.
    pub async fn create_events_batch(
        &self,
        events: &[AuditEventRequest],
    ) -> Result<BatchAuditEventResponse, Error> {
        let request = self
            .http
            .post(self.url("/api/v1/audit/events/batch"))
            .json(events);
        decode(request.send().await).await
    }

    /// `GET /api/v1/audit/events`: one page of events matching the filters, newest first.
    pub async fn query_events(
        &self,
        params: &EventQueryParams,
    ) -> Result<AuditEventsQueryResponse, Error> {
        let request = self
            .http
            .get(self.url("/api/v1/audit/events"))
            .query(params);
        decode(request.send().await).await
    }

    /// `GET /api/v1/audit/events/{event_id}`: one stored event (404 problem when absent).
    pub async fn get_event(&self, event_id: Uuid) -> Result<AuditEvent, Error> {
        let request = self
            .http
            .get(self.url(&format!("/api/v1/audit/events/{event_id}")));
        decode(request.send().await).await
    }

    /// `POST /api/v1/audit/verify-chain`: checks every link of one correlation id's chain.
    pub async fn verify_chain(
        &self,
        request: &VerifyChainRequest,
    ) -> Result<VerifyChainResponse, Error> {
        let request = self
            .http
            .post(self.url("/api/v1/audit/verify-chain"))
            .json(request);
        decode(request.send().await).await
    }

    /// `GET /healthz`: the process is alive (no database access).
    pub async fn healthz(&self) -> Result<HealthStatus, Error> {
        decode(self.http.get(self.url("/healthz")).send().await).await
    }

    /// `GET /readyz`: the server can accept writes now. Not ready is an [`Error::Status`] 503
    /// with the reason in its body and a `Retry-After`.
    pub async fn readyz(&self) -> Result<HealthStatus, Error> {
        decode(self.http.get(self.url("/readyz")).send().await).await
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

/// Turns a response into the expected JSON or the matching [`Error`].
async fn decode<T: DeserializeOwned>(sent: Result<Response, reqwest::Error>) -> Result<T, Error> {
    let response = sent.map_err(Error::from_reqwest)?;
    let status = response.status();
    if status.is_success() {
        return response.json::<T>().await.map_err(Error::from_reqwest);
    }
    let retry_after = retry_after(response.headers());
    let is_problem = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with(PROBLEM_CONTENT_TYPE) || ct.contains("json"));
    let body = response.bytes().await.map_err(Error::from_reqwest)?;
    if is_problem {
        if let Ok(problem) = serde_json::from_slice::<Problem>(&body) {
            return Err(Error::Problem {
                status: status.as_u16(),
                problem: Box::new(problem),
                retry_after,
            });
        }
    }
    let mut text = String::from_utf8_lossy(&body).into_owned();
    if text.len() > ERROR_BODY_LIMIT {
        let mut end = ERROR_BODY_LIMIT;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    Err(Error::Status {
        status: status.as_u16(),
        body: text,
        retry_after,
    })
}

fn retry_after(headers: &HeaderMap) -> Option<std::time::Duration> {
    headers
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, chrono::Utc::now()))
}
