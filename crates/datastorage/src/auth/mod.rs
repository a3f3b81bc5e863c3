//! Access control: who a request comes from, whether it may do what its route needs, how fast,
//! and the record of it.
//!
//! - [`Scope`]: the six scopes; [`routes`]: the one table of what each route needs.
//! - One authentication mode per server (`auth.mode`): [`tokens`] (hashed bearer tokens from a
//!   file, reloaded on change), [`kubernetes`] (TokenReview and SubjectAccessReview, cached),
//!   [`mtls`] (the client certificate's SAN), or `none` (loopback or an explicit opt-in only).
//! - [`limit`]: per-principal rate limits; [`proxy`]: the client address behind trusted proxies.
//! - [`Auth::admit`] applies all of it to one request, in that order: route table,
//!   authentication, rate limit, authorization (the HTTP middleware is `http::guard`).
//! - [`access`]: reads and denials recorded as the service's own audit events.

pub mod access;
mod error;
pub mod kubernetes;
pub mod limit;
pub mod mtls;
mod principal;
pub mod proxy;
pub mod routes;
mod scope;
pub mod tokens;

use std::net::IpAddr;
use std::sync::Arc;

use anyhow::{bail, Context as _};
use axum::http::Method;
use chrono::Utc;

pub use error::AuthError;
pub use principal::{Grants, Principal, ANONYMOUS, SERVICE_PRINCIPAL};
pub use scope::{Scope, Scopes};

use self::routes::Access;
use crate::config::{AuthMode, Settings};
use crate::metrics::{AuthCounters, AuthLabels};
use crate::reload::Watch;

/// The file a pod's ServiceAccount token is mounted at; with `KUBERNETES_SERVICE_HOST` set, it
/// says the service runs inside a pod.
pub const IN_CLUSTER_TOKEN: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";

/// Whether the service runs inside a Kubernetes pod.
pub fn in_pod() -> bool {
    std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()
        && std::path::Path::new(IN_CLUSTER_TOKEN).exists()
}

/// Whether `host` (a `server.host`) is a loopback address or `localhost`.
pub fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The mode in force: `auth.mode`, or, when unset, `kubernetes` inside a pod and `none` on a
/// loopback listener. `none` off loopback needs `auth.allowUnauthenticated`; otherwise the
/// error says why and how to fix it.
pub fn resolve_mode(settings: &Settings, in_pod: bool) -> anyhow::Result<AuthMode> {
    let auth = &settings.auth;
    let host = &settings.server.host;
    let mode = match auth.mode {
        Some(mode) => mode,
        None if in_pod => AuthMode::Kubernetes,
        None if is_loopback(host) => AuthMode::None,
        None if auth.allow_unauthenticated => AuthMode::None,
        None => bail!(
            "auth.mode is not set and server.host ({host}) is not loopback: refusing to serve the audit API to the network without authentication. Set auth.mode (tokens, kubernetes or mtls), or server.host: 127.0.0.1, or (only behind something that authenticates) auth.allowUnauthenticated: true"
        ),
    };
    if mode == AuthMode::None && !is_loopback(host) && !auth.allow_unauthenticated {
        bail!(
            "auth.mode is none and server.host ({host}) is not loopback: anyone who can reach the port could write and read every event. Use auth.mode tokens, kubernetes or mtls, or server.host: 127.0.0.1, or set auth.allowUnauthenticated: true to accept it"
        );
    }
    Ok(mode)
}

/// How callers are authenticated.
#[derive(Debug, Clone)]
pub enum Authenticator {
    /// Everyone is [`Principal::anonymous`].
    None,
    /// Hashed bearer tokens.
    Tokens(tokens::TokenStore),
    /// Kubernetes TokenReview and SubjectAccessReview.
    Kubernetes(Arc<kubernetes::KubernetesAuth>),
    /// Client certificates.
    Mtls(Arc<mtls::CertificateMap>),
}

/// What a request presents.
#[derive(Debug, Clone, Copy, Default)]
pub struct Credentials<'a> {
    /// The `Authorization` header, if any (raw bytes: it may not be UTF-8).
    pub authorization: Option<&'a [u8]>,
    /// The verified client certificate, if the connection presented one.
    pub certificate: Option<&'a mtls::PeerCertificate>,
}

/// The longest `Authorization` header looked at; a longer one is refused unread.
const MAX_AUTHORIZATION_BYTES: usize = 8 * 1024;

impl Credentials<'_> {
    /// The bearer token, or why there is none.
    pub fn bearer(&self) -> Result<&str, AuthError> {
        let Some(raw) = self.authorization else {
            return Err(AuthError::unauthenticated(
                "missing",
                "this route needs a bearer token: send Authorization: Bearer <token>",
            ));
        };
        let malformed = |detail: &str| AuthError::unauthenticated("malformed", detail.to_owned());
        if raw.len() > MAX_AUTHORIZATION_BYTES {
            return Err(malformed("the Authorization header is too long"));
        }
        let text = std::str::from_utf8(raw)
            .map_err(|_| malformed("the Authorization header is not text"))?;
        let (scheme, token) = text.split_once(' ').unwrap_or((text, ""));
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(malformed(
                "the Authorization header must use the Bearer scheme",
            ));
        }
        let token = token.trim();
        if token.is_empty() {
            return Err(malformed("the bearer token is empty"));
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(malformed("the bearer token holds characters no token has"));
        }
        Ok(token)
    }
}

impl Authenticator {
    /// The principal presenting `credentials`.
    pub async fn authenticate(&self, credentials: Credentials<'_>) -> Result<Principal, AuthError> {
        match self {
            Authenticator::None => Ok(Principal::anonymous()),
            Authenticator::Tokens(store) => store.authenticate(credentials.bearer()?, Utc::now()),
            Authenticator::Kubernetes(k) => k.authenticate(credentials.bearer()?).await,
            Authenticator::Mtls(map) => map.authenticate(credentials.certificate),
        }
    }

    /// Whether `principal` holds `scope`.
    pub async fn authorize(&self, principal: &Principal, scope: Scope) -> Result<(), AuthError> {
        let allowed = match (&principal.grants, self) {
            (Grants::Scopes(scopes), _) => scopes.allows(scope),
            (Grants::Kubernetes, Authenticator::Kubernetes(k)) => {
                return k.authorize(principal, scope).await
            }
            (Grants::Kubernetes, _) => false,
        };
        if allowed {
            Ok(())
        } else {
            Err(AuthError::Forbidden {
                principal: principal.name.clone(),
                scope,
            })
        }
    }
}

/// Access control, built once at start from `auth` and shared by the guard. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Auth {
    /// The mode in force.
    pub mode: AuthMode,
    /// Who callers are.
    pub authenticator: Authenticator,
    /// Per-principal rate limits.
    pub limits: limit::RateLimits,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub proxies: proxy::TrustedProxies,
    /// Whether `/metrics` needs an authenticated principal.
    pub metrics_require_auth: bool,
    counters: AuthCounters,
    /// Keeps the tokens file watched while the service runs.
    _watch: Option<Arc<Watch>>,
}

impl Auth {
    /// Builds access control from the settings: resolves the mode, reads the tokens file (and
    /// starts watching it), connects the Kubernetes client, parses the certificate map, limits
    /// and proxies. Errors name the key.
    pub fn new(settings: &Settings, counters: AuthCounters) -> anyhow::Result<Self> {
        let mode = resolve_mode(settings, in_pod())?;
        let auth = &settings.auth;
        let mut watch = None;
        let authenticator = match mode {
            AuthMode::None => Authenticator::None,
            AuthMode::Tokens => {
                let Some(path) = auth.tokens_file.clone() else {
                    bail!("auth.mode is tokens but auth.tokensFile is not set");
                };
                let text = std::fs::read(&path)
                    .with_context(|| format!("auth.tokensFile: cannot read {}", path.display()))?;
                let list = tokens::TokenList::parse(&String::from_utf8_lossy(&text), &path)?;
                if list.is_empty() {
                    tracing::warn!(file = %path.display(), "auth.tokensFile lists no token: every request will be refused");
                }
                let store = tokens::TokenStore::new(list);
                let reloaded = store.clone();
                let origin = path.clone();
                watch = Some(Arc::new(crate::reload::watch(
                    "tokens",
                    vec![path],
                    vec![text],
                    counters.clone(),
                    move |contents| {
                        let list = tokens::TokenList::parse(
                            &String::from_utf8_lossy(&contents[0]),
                            &origin,
                        )?;
                        tracing::info!(tokens = list.len(), "auth.tokensFile reloaded");
                        reloaded.replace(list);
                        Ok(())
                    },
                )));
                Authenticator::Tokens(store)
            }
            AuthMode::Kubernetes => Authenticator::Kubernetes(Arc::new(
                kubernetes::KubernetesAuth::new(&auth.kubernetes, counters.clone())?,
            )),
            AuthMode::Mtls => {
                if settings
                    .server
                    .tls
                    .as_ref()
                    .is_none_or(|t| t.client_ca_file.is_none())
                {
                    bail!("auth.mode is mtls but server.tls.clientCaFile is not set: the listener must verify client certificates");
                }
                Authenticator::Mtls(Arc::new(mtls::CertificateMap::new(&auth.mtls.principals)?))
            }
        };
        tracing::info!(mode = mode.as_str(), "access control");
        precreate(&counters, mode);
        Ok(Self {
            mode,
            authenticator,
            limits: limit::RateLimits::new(&auth.rate_limit)?,
            proxies: proxy::TrustedProxies::parse(&auth.trusted_proxies)?,
            metrics_require_auth: auth.metrics_require_auth,
            counters,
            _watch: watch,
        })
    }

    /// What a request to `route` with `method` on the API listener needs.
    pub fn access(&self, method: &Method, route: &str) -> Access {
        routes::access(method, route)
    }

    /// What `/metrics` needs.
    pub fn metrics_access(&self) -> Access {
        if self.metrics_require_auth {
            Access::Authenticated
        } else {
            Access::Open
        }
    }

    /// Lets a request needing `access` through, or says why not: authenticates the caller,
    /// takes one request from its rate limit, and checks the scope. `None` for an open route.
    /// Every outcome is counted.
    pub async fn admit(
        &self,
        access: Access,
        credentials: Credentials<'_>,
    ) -> Result<Option<Principal>, AuthError> {
        if access == Access::Open {
            return Ok(None);
        }
        let result = async {
            let principal = self.authenticator.authenticate(credentials).await?;
            self.limits.check(&principal.name)?;
            if let Access::Scope(scope) = access {
                self.authenticator.authorize(&principal, scope).await?;
            }
            Ok(principal)
        }
        .await;
        self.count(
            result
                .as_ref()
                .map_or_else(AuthError::result_label, |_| "allowed"),
        );
        result.map(Some)
    }

    /// Counts one checked request by its result.
    pub fn count(&self, result: &'static str) {
        self.counters
            .requests
            .get_or_create(&AuthLabels {
                mode: self.mode.as_str(),
                result,
            })
            .inc();
    }

    /// The `WWW-Authenticate` challenge of this mode's 401s.
    pub fn challenge(&self) -> &'static str {
        match self.mode {
            AuthMode::Mtls => "ClientCertificate realm=\"datastorage\"",
            _ => "Bearer realm=\"datastorage\"",
        }
    }
}

/// Creates every series of the mode's outcomes and of the Kubernetes calls at zero, so
/// dashboards and alerts see them before the first request (the Kubernetes series stay zero in
/// other modes).
fn precreate(counters: &AuthCounters, mode: AuthMode) {
    for result in [
        "allowed",
        "unauthenticated",
        "forbidden",
        "rate_limited",
        "unavailable",
    ] {
        let _ = counters.requests.get_or_create(&AuthLabels {
            mode: mode.as_str(),
            result,
        });
    }
    for api in [kubernetes::TOKEN_REVIEW, kubernetes::ACCESS_REVIEW] {
        let labels = crate::metrics::KubernetesApiLabels { api };
        let _ = counters.kubernetes_duration.get_or_create(&labels);
        let _ = counters.kubernetes_errors.get_or_create(&labels);
        for result in ["hit", "miss"] {
            let _ = counters
                .cache
                .get_or_create(&crate::metrics::CacheLabels { api, result });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(yaml: &str) -> Settings {
        serde_norway::from_str(yaml).unwrap()
    }

    #[test]
    fn unauthenticated_serving_needs_loopback_or_an_explicit_opt_in() {
        let open = settings("server: {host: 0.0.0.0}\nauth: {mode: none}\n");
        let e = resolve_mode(&open, false).unwrap_err().to_string();
        assert!(
            e.contains("auth.allowUnauthenticated") && e.contains("0.0.0.0"),
            "{e}"
        );
        let unset = settings("server: {host: 0.0.0.0}\n");
        assert!(resolve_mode(&unset, false)
            .unwrap_err()
            .to_string()
            .contains("auth.mode is not set"));
        let opted =
            settings("server: {host: 0.0.0.0}\nauth: {mode: none, allowUnauthenticated: true}\n");
        assert_eq!(resolve_mode(&opted, false).unwrap(), AuthMode::None);
        for host in ["127.0.0.1", "::1", "[::1]", "localhost", "127.0.0.2"] {
            let local = settings(&format!("server: {{host: \"{host}\"}}\n"));
            assert_eq!(
                resolve_mode(&local, false).unwrap(),
                AuthMode::None,
                "{host}"
            );
        }
    }

    #[test]
    fn inside_a_pod_the_default_is_kubernetes_as_upstream() {
        let upstream = settings("server: {host: 0.0.0.0}\n");
        assert_eq!(resolve_mode(&upstream, true).unwrap(), AuthMode::Kubernetes);
        let chosen = settings("server: {host: 0.0.0.0}\nauth: {mode: tokens}\n");
        assert_eq!(resolve_mode(&chosen, true).unwrap(), AuthMode::Tokens);
    }

    #[test]
    fn bad_authorization_headers_are_401s_with_reasons() {
        let reason = |raw: &[u8]| match (Credentials {
            authorization: Some(raw),
            certificate: None,
        })
        .bearer()
        {
            Ok(t) => t.to_owned(),
            Err(AuthError::Unauthenticated { reason, .. }) => reason.to_owned(),
            Err(e) => panic!("{e:?}"),
        };
        assert_eq!(reason(b"Bearer abc"), "abc");
        assert_eq!(reason(b"bearer  abc "), "abc");
        assert_eq!(reason(b"Basic dXNlcjpwYXNz"), "malformed");
        assert_eq!(reason(b"Bearer "), "malformed");
        assert_eq!(reason(b"Bearer"), "malformed");
        assert_eq!(reason(b"Bearer \xff\xfe"), "malformed");
        assert_eq!(reason(&[b'a'; 10 * 1024]), "malformed");
        assert!(matches!(
            Credentials::default().bearer(),
            Err(AuthError::Unauthenticated {
                reason: "missing",
                ..
            })
        ));
    }
}
