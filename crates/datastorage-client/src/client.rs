//! [`Client`]: one typed async call per DataStorage route, over the shared wire types.
//!
//! The client does not retry: a call is one HTTP request, and its [`Error`] says whether a retry
//! may help ([`Error::is_retryable`]) and how long to wait ([`Error::retry_after`]). Retrying is
//! the buffered [`AuditStore`](crate::AuditStore)'s job, so there is exactly one retry layer.
//!
//! Credentials: a [`BearerToken`] goes on every request as `Authorization: Bearer …` (a sensitive
//! header); a 401 or 403 answer makes a token file be looked at again on the next request. TLS:
//! a CA bundle replaces the built-in web roots for the server's certificate, and a client
//! certificate with its key is presented for mutual TLS. The files are read once, by
//! [`ClientBuilder::build`].

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use datastorage_api::problem::PROBLEM_CONTENT_TYPE;
use datastorage_api::{
    AuditEvent, AuditEventRequest, AuditEventResponse, AuditEventsQueryResponse,
    BatchAuditEventResponse, EventQueryParams, Problem, VerifyChainRequest, VerifyChainResponse,
};
use reqwest::header::{HeaderMap, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use reqwest::{RequestBuilder, Response};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::auth::BearerToken;
use crate::error::{parse_retry_after, Error};
use crate::stream::EventStream;

/// Longest one request may take, connection included. A batch of 500 events is well under a
/// megabyte; a server that needs longer than this is better retried than waited on.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Longest a TCP/TLS connection may take to open. Short, so that an unreachable server is
/// noticed (and retried with backoff) quickly.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How much of a non-problem error body is kept for the log.
const ERROR_BODY_LIMIT: usize = 512;

/// The request timeout of a stream, which has no end of its own: a year.
const STREAM_TIMEOUT: Duration = Duration::from_secs(365 * 24 * 3600);

/// Answer of `/healthz` and `/readyz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthStatus {
    /// `healthy` (`/healthz`), `ready`, or why the server is not ready.
    pub status: String,
}

/// A typed client of one DataStorage server. Cheap to clone; clones share connections and the
/// bearer token.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<BearerToken>,
}

/// PEM text given inline or as a file to read at `build`.
#[derive(Clone)]
enum Pem {
    Inline(Vec<u8>),
    File(PathBuf),
}

impl Pem {
    fn load(&self, what: &'static str) -> Result<Vec<u8>, Error> {
        match self {
            Pem::Inline(bytes) => Ok(bytes.clone()),
            Pem::File(path) => std::fs::read(path).map_err(|source| Error::ReadFile {
                what,
                path: path.clone(),
                source,
            }),
        }
    }
}

/// Prints a file's path, or only the size of inline PEM text (a private key's bytes never).
impl fmt::Debug for Pem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pem::Inline(bytes) => write!(f, "<{} bytes of PEM>", bytes.len()),
            Pem::File(path) => write!(f, "{}", path.display()),
        }
    }
}

/// Builds a [`Client`] with credentials, TLS settings, non-default timeouts, or a caller-made
/// `reqwest::Client`.
#[derive(Debug)]
pub struct ClientBuilder {
    base: String,
    request_timeout: Duration,
    connect_timeout: Duration,
    http: Option<reqwest::Client>,
    token: Option<BearerToken>,
    ca_bundle: Option<Pem>,
    client_cert: Option<(Pem, Pem)>,
}

impl ClientBuilder {
    /// Sends this token as `Authorization: Bearer …` on every request (see [`BearerToken`] for
    /// a fixed string, `DATASTORAGE_TOKEN`, or a file re-read when it changes).
    pub fn bearer_token(mut self, token: BearerToken) -> Self {
        self.token = Some(token);
        self
    }

    /// Trusts only the CA certificates of this PEM bundle (one or more certificates) for the
    /// server's certificate, instead of the built-in web roots.
    pub fn ca_bundle_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca_bundle = Some(Pem::Inline(pem.into()));
        self
    }

    /// Like [`ca_bundle_pem`](Self::ca_bundle_pem), read from this file by `build`.
    pub fn ca_bundle_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_bundle = Some(Pem::File(path.into()));
        self
    }

    /// Presents this client certificate for mutual TLS: `cert` is the PEM chain (leaf first),
    /// `key` its private key in PEM (PKCS#8, PKCS#1 or SEC1).
    pub fn client_cert_pem(mut self, cert: impl Into<Vec<u8>>, key: impl Into<Vec<u8>>) -> Self {
        self.client_cert = Some((Pem::Inline(cert.into()), Pem::Inline(key.into())));
        self
    }

    /// Like [`client_cert_pem`](Self::client_cert_pem), read from these files by `build`.
    pub fn client_cert_files(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.client_cert = Some((Pem::File(cert.into()), Pem::File(key.into())));
        self
    }

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

    /// Uses this `reqwest::Client` as is (its own timeouts and TLS settings apply; the builder's
    /// timeouts are ignored, and its CA bundle or client certificate is an error at `build`).
    /// The bearer token is still sent.
    pub fn http_client(mut self, http: reqwest::Client) -> Self {
        self.http = Some(http);
        self
    }

    /// The client. Reads the CA bundle and client certificate files now.
    pub fn build(self) -> Result<Client, Error> {
        let base = self.base.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(Error::InvalidBaseUrl(self.base));
        }
        if self.token.is_some() && base.starts_with("http://") && !is_loopback(&base) {
            tracing::warn!(server = %base, "a bearer token is sent over plain http to a host that is not loopback; use https");
        }
        let http = match self.http {
            Some(http) => {
                if self.ca_bundle.is_some() || self.client_cert.is_some() {
                    return Err(Error::InvalidSetting {
                        what: "TLS settings",
                        reason: "a CA bundle or client certificate cannot be applied to a caller-made reqwest::Client; configure it there".into(),
                    });
                }
                http
            }
            None => {
                let mut builder = reqwest::Client::builder()
                    .timeout(self.request_timeout)
                    .connect_timeout(self.connect_timeout)
                    .user_agent(concat!("datastorage-client/", env!("CARGO_PKG_VERSION")));
                if let Some(ca) = &self.ca_bundle {
                    builder = builder.tls_built_in_root_certs(false);
                    for cert in ca_certificates(&ca.load("CA bundle")?)? {
                        builder = builder.add_root_certificate(cert);
                    }
                }
                if let Some((cert, key)) = &self.client_cert {
                    builder = builder.identity(identity(
                        &cert.load("client certificate")?,
                        &key.load("client key")?,
                    )?);
                }
                builder.build().map_err(|e| Error::InvalidSetting {
                    what: "HTTP client",
                    reason: crate::deliver::chain_of(&e),
                })?
            }
        };
        Ok(Client {
            http,
            base,
            token: self.token,
        })
    }
}

/// The certificates of a PEM bundle; none is an error.
fn ca_certificates(pem: &[u8]) -> Result<Vec<reqwest::Certificate>, Error> {
    let invalid = |reason: String| Error::InvalidSetting {
        what: "CA bundle",
        reason,
    };
    let certs = reqwest::Certificate::from_pem_bundle(pem)
        .map_err(|e| invalid(crate::deliver::chain_of(&e)))?;
    if certs.is_empty() {
        return Err(invalid("it holds no PEM certificate".into()));
    }
    Ok(certs)
}

/// The client identity of a PEM certificate chain and its key. The error never quotes the key.
fn identity(cert: &[u8], key: &[u8]) -> Result<reqwest::Identity, Error> {
    let mut pem = Vec::with_capacity(cert.len() + key.len() + 1);
    pem.extend_from_slice(key);
    pem.push(b'\n');
    pem.extend_from_slice(cert);
    reqwest::Identity::from_pem(&pem).map_err(|e| Error::InvalidSetting {
        what: "client certificate",
        reason: format!(
            "{} (expected a PEM certificate and a PEM PKCS#8, PKCS#1 or SEC1 key)",
            crate::deliver::chain_of(&e)
        ),
    })
}

/// Whether the URL's host is a loopback name or address (where plain http exposes nothing).
fn is_loopback(base: &str) -> bool {
    let rest = base.split_once("://").map_or(base, |(_, rest)| rest);
    let authority = rest.split('/').next().unwrap_or_default();
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
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
            token: None,
            ca_bundle: None,
            client_cert: None,
        }
    }

    /// The server's base URL, without a trailing slash.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// `POST /api/v1/audit/events`: writes one event (201; 202 when the server's database is
    /// unreachable and its outage buffer kept the event, stored later under the id answered).
    /// Sending an `event_id` makes the write idempotent: a replay answers 201 with the same id
    /// and writes nothing.
    pub async fn create_event(
        &self,
        event: &AuditEventRequest,
    ) -> Result<AuditEventResponse, Error> {
        let request = self.http.post(self.url("/api/v1/audit/events")).json(event);
        self.call(request).await
    }

    /// `POST /api/v1/audit/events/batch`: writes 1..=`server.maxBatchSize` events, all or
    /// nothing (201; 202 when the server's outage buffer kept the batch whole). Ids come back
    /// in request order.
    pub async fn create_events_batch(
        &self,
        events: &[AuditEventRequest],
    ) -> Result<BatchAuditEventResponse, Error> {
        let request = self
            .http
            .post(self.url("/api/v1/audit/events/batch"))
            .json(events);
        self.call(request).await
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
        self.call(request).await
    }

    /// `GET /api/v1/audit/events/{event_id}`: one stored event (404 problem when absent).
    pub async fn get_event(&self, event_id: Uuid) -> Result<AuditEvent, Error> {
        let request = self
            .http
            .get(self.url(&format!("/api/v1/audit/events/{event_id}")));
        self.call(request).await
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
        self.call(request).await
    }

    /// `GET /api/v1/audit/events/stream`: the events committed from now on that meet the
    /// filters (`since`, `until` and paging do not apply), as they are committed. The
    /// subscription is in place when this returns; the stream has no request timeout and ends
    /// when the server shuts down.
    pub async fn stream_events(&self, params: &EventQueryParams) -> Result<EventStream, Error> {
        let request = self
            .http
            .get(self.url("/api/v1/audit/events/stream"))
            .query(params)
            .timeout(STREAM_TIMEOUT);
        let request = match &self.token {
            Some(token) => request.header(AUTHORIZATION, token.header().await),
            None => request,
        };
        let answer = successful(request.send().await).await;
        if let (Some(token), Err(e)) = (&self.token, &answer) {
            if e.is_auth_failure() {
                token.expire();
            }
        }
        answer.map(EventStream::new)
    }

    /// `GET /healthz`: the process is alive (no database access).
    pub async fn healthz(&self) -> Result<HealthStatus, Error> {
        self.call(self.http.get(self.url("/healthz"))).await
    }

    /// `GET /readyz`: the server can accept writes now. Not ready is an [`Error::Status`] 503
    /// with the reason in its body and a `Retry-After`.
    pub async fn readyz(&self) -> Result<HealthStatus, Error> {
        self.call(self.http.get(self.url("/readyz"))).await
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends one request with the credentials and decodes the answer. A refused token makes a
    /// token file be looked at again on the next request.
    async fn call<T: DeserializeOwned>(&self, request: RequestBuilder) -> Result<T, Error> {
        let request = match &self.token {
            Some(token) => request.header(AUTHORIZATION, token.header().await),
            None => request,
        };
        let answer = decode(request.send().await).await;
        if let (Some(token), Err(e)) = (&self.token, &answer) {
            if e.is_auth_failure() {
                token.expire();
            }
        }
        answer
    }

    /// Counts the bearer token's changes (0 without a token file).
    pub(crate) fn token_generation(&self) -> u64 {
        self.token.as_ref().map_or(0, BearerToken::generation)
    }

    /// Looks at the token file now, whatever its recheck interval (nothing without one).
    pub(crate) async fn reload_token(&self) {
        if let Some(token) = &self.token {
            token.reload().await;
        }
    }
}

/// Turns a response into the expected JSON or the matching [`Error`].
async fn decode<T: DeserializeOwned>(sent: Result<Response, reqwest::Error>) -> Result<T, Error> {
    let response = successful(sent).await?;
    response.json::<T>().await.map_err(Error::from_reqwest)
}

/// A 2xx response as it is, or the matching [`Error`].
async fn successful(sent: Result<Response, reqwest::Error>) -> Result<Response, Error> {
    let response = sent.map_err(Error::from_reqwest)?;
    let status = response.status();
    if status.is_success() {
        return Ok(response);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_are_told_from_remote_ones() {
        for base in [
            "http://127.0.0.1:8080",
            "http://localhost",
            "http://LOCALHOST:1/x",
            "http://[::1]:9",
            "http://127.5.0.1",
        ] {
            assert!(is_loopback(base), "{base}");
        }
        for base in [
            "http://datastorage:8080",
            "http://10.0.0.1",
            "http://[2001:db8::1]:80",
            "http://localhost.example.com",
        ] {
            assert!(!is_loopback(base), "{base}");
        }
    }

    #[test]
    fn unusable_tls_settings_fail_at_build_without_quoting_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("ca.pem");
        let e = Client::builder("https://ds:8443")
            .ca_bundle_file(&missing)
            .build()
            .unwrap_err();
        assert!(
            matches!(
                e,
                Error::ReadFile {
                    what: "CA bundle",
                    ..
                }
            ),
            "{e}"
        );
        assert!(
            e.to_string().contains(&missing.display().to_string()),
            "{e}"
        );

        let e = Client::builder("https://ds:8443")
            .ca_bundle_pem("not a certificate")
            .build()
            .unwrap_err();
        assert!(
            matches!(
                e,
                Error::InvalidSetting {
                    what: "CA bundle",
                    ..
                }
            ),
            "{e}"
        );

        let key =
            "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1ieXRlcw==\n-----END PRIVATE KEY-----\n";
        let builder = Client::builder("https://ds:8443").client_cert_pem("", key);
        let debug = format!("{builder:?}");
        assert!(!debug.contains("c2VjcmV0"), "{debug}");
        let e = builder.build().unwrap_err();
        assert!(
            matches!(
                e,
                Error::InvalidSetting {
                    what: "client certificate",
                    ..
                }
            ),
            "{e}"
        );
        assert!(!e.to_string().contains("c2VjcmV0"), "{e}");

        let e = Client::builder("https://ds:8443")
            .http_client(reqwest::Client::new())
            .ca_bundle_pem("x")
            .build()
            .unwrap_err();
        assert!(
            matches!(
                e,
                Error::InvalidSetting {
                    what: "TLS settings",
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn the_client_debug_output_never_shows_the_token() {
        let client = Client::builder("http://127.0.0.1:1")
            .bearer_token(BearerToken::new("tok-very-secret").unwrap())
            .build()
            .unwrap();
        let debug = format!("{client:?}");
        assert!(
            !debug.contains("tok-very-secret") && debug.contains("<redacted>"),
            "{debug}"
        );
    }
}
