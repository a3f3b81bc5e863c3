//! `kubernetes` mode: ServiceAccount bearer tokens checked with TokenReview, each scope with a
//! SubjectAccessReview on a virtual resource of this service's own (`auditevents` in group
//! `datastorage.kubernaut.ai` by default; one verb per scope, [`Scope::verb`]).
//!
//! Answers are cached ([`moka`]): a valid token and a granted verb for `allowedTtl`, a denied
//! verb for `deniedTtl`, an invalid token for `invalidTtl`. A token's cache key is its SHA-256,
//! never the token. Concurrent misses on one key make one call. A call that fails or outlasts
//! `timeout` answers 503 and is not cached: the API server being down is never a pass.
//!
//! - [`connection`]: the API server and this service's own credential (in-cluster or kubeconfig).
//! - [`reviews`]: the two review objects on the wire.

pub mod connection;
pub mod reviews;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::future::Cache;
use serde::de::DeserializeOwned;
use serde::Serialize;
use sha2::{Digest as _, Sha256};

use self::connection::ApiServer;
use self::reviews::{AccessReview, AccessReviewed, Resource, TokenReview, TokenReviewed};
use super::error::AuthError;
use super::principal::{Grants, Principal};
use super::scope::Scope;
use crate::config::{AuthCacheSettings, KubernetesAuthSettings};
use crate::metrics::{AuthCounters, CacheLabels, KubernetesApiLabels};

/// The `api` label of TokenReview calls and cache lookups.
pub const TOKEN_REVIEW: &str = "tokenreview";
/// The `api` label of SubjectAccessReview calls and cache lookups.
pub const ACCESS_REVIEW: &str = "subjectaccessreview";

/// What the client is told when the API server cannot be asked.
const UNAVAILABLE: &str =
    "the Kubernetes API server could not be asked about this request's credentials; try again";

/// The Kubernetes authenticator and authorizer.
#[derive(Debug)]
pub struct KubernetesAuth {
    server: ApiServer,
    group: String,
    resource: String,
    namespace: Option<String>,
    audiences: Vec<String>,
    tokens: Cache<[u8; 32], TokenAnswer>,
    grants: Cache<GrantKey, Verdict>,
    counters: AuthCounters,
}

/// A TokenReview's outcome, as cached.
#[derive(Debug, Clone)]
enum TokenAnswer {
    Valid(Arc<Principal>),
    Invalid {
        reason: &'static str,
        detail: &'static str,
    },
}

/// A SubjectAccessReview's outcome, as cached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Allowed,
    Denied,
}

/// Who asks for which verb: the cache key of a SubjectAccessReview.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
struct GrantKey {
    user: String,
    uid: Option<String>,
    groups: Vec<String>,
    verb: &'static str,
}

/// How long each kind of answer is kept.
struct Ttl(AuthCacheSettings);

impl moka::Expiry<[u8; 32], TokenAnswer> for Ttl {
    fn expire_after_create(
        &self,
        _key: &[u8; 32],
        answer: &TokenAnswer,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(match answer {
            TokenAnswer::Valid(_) => self.0.allowed_ttl,
            TokenAnswer::Invalid { .. } => self.0.invalid_ttl,
        })
    }
}

impl moka::Expiry<GrantKey, Verdict> for Ttl {
    fn expire_after_create(
        &self,
        _key: &GrantKey,
        verdict: &Verdict,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(match verdict {
            Verdict::Allowed => self.0.allowed_ttl,
            Verdict::Denied => self.0.denied_ttl,
        })
    }
}

impl KubernetesAuth {
    /// Reads how to reach the API server (kubeconfig or in-cluster) and checks the settings.
    /// Nothing is asked of the API server yet, so a start does not wait on it.
    pub fn new(settings: &KubernetesAuthSettings, counters: AuthCounters) -> anyhow::Result<Self> {
        for (value, key) in [
            (&settings.group, "auth.kubernetes.group"),
            (&settings.resource, "auth.kubernetes.resource"),
        ] {
            if value.trim().is_empty() {
                anyhow::bail!("{key} must not be empty");
            }
        }
        if settings.timeout.is_zero() {
            anyhow::bail!("auth.kubernetes.timeout must be above zero");
        }
        let server = ApiServer::connect(settings.kubeconfig.as_deref(), settings.timeout)?;
        let namespace = settings
            .namespace
            .clone()
            .or_else(|| server.namespace.clone());
        tracing::info!(
            api_server = server.base(),
            namespace = namespace.as_deref().unwrap_or("(cluster-wide)"),
            group = %settings.group,
            resource = %settings.resource,
            "kubernetes authentication"
        );
        let cache = &settings.cache;
        Ok(Self {
            server,
            group: settings.group.clone(),
            resource: settings.resource.clone(),
            namespace,
            audiences: settings.audiences.clone(),
            tokens: Cache::builder()
                .max_capacity(cache.max_entries)
                .expire_after(Ttl(cache.clone()))
                .build(),
            grants: Cache::builder()
                .max_capacity(cache.max_entries)
                .expire_after(Ttl(cache.clone()))
                .build(),
            counters,
        })
    }

    /// The principal of a ServiceAccount (or any Kubernetes) token.
    pub async fn authenticate(&self, token: &str) -> Result<Principal, AuthError> {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        match cached(
            &self.tokens,
            key,
            self.lookup(TOKEN_REVIEW),
            self.review_token(token),
        )
        .await?
        {
            TokenAnswer::Valid(principal) => Ok((*principal).clone()),
            TokenAnswer::Invalid { reason, detail } => {
                Err(AuthError::unauthenticated(reason, detail))
            }
        }
    }

    /// Whether `principal` may do `scope`'s verb on the virtual resource.
    pub async fn authorize(&self, principal: &Principal, scope: Scope) -> Result<(), AuthError> {
        let key = GrantKey {
            user: principal.name.clone(),
            uid: principal.uid.clone(),
            groups: principal.groups.clone(),
            verb: scope.verb(),
        };
        let review = self.review_access(key.clone());
        match cached(&self.grants, key, self.lookup(ACCESS_REVIEW), review).await? {
            Verdict::Allowed => Ok(()),
            Verdict::Denied => Err(AuthError::Forbidden {
                principal: principal.name.clone(),
                scope,
            }),
        }
    }

    async fn review_token(&self, token: &str) -> Result<TokenAnswer, AuthError> {
        let reviewed: TokenReviewed = self
            .call(
                TOKEN_REVIEW,
                reviews::TOKEN_REVIEW_PATH,
                &TokenReview::new(token, &self.audiences),
            )
            .await?;
        let status = reviewed.status;
        if !status.authenticated || status.user.username.is_empty() {
            tracing::debug!(error = %status.error, "TokenReview did not authenticate the token");
            return Ok(TokenAnswer::Invalid {
                reason: "invalid",
                detail: "the bearer token was not accepted by the Kubernetes API server",
            });
        }
        if !self.audiences.is_empty()
            && !status.audiences.iter().any(|a| self.audiences.contains(a))
        {
            return Ok(TokenAnswer::Invalid {
                reason: "audience",
                detail: "the bearer token is not issued for this service's audience",
            });
        }
        let user = status.user;
        Ok(TokenAnswer::Valid(Arc::new(Principal {
            name: user.username,
            groups: user.groups,
            uid: Some(user.uid).filter(|uid| !uid.is_empty()),
            grants: Grants::Kubernetes,
        })))
    }

    async fn review_access(&self, key: GrantKey) -> Result<Verdict, AuthError> {
        let resource = Resource {
            group: &self.group,
            resource: &self.resource,
            namespace: self.namespace.as_deref(),
        };
        let review = AccessReview::new(
            resource,
            key.verb,
            &key.user,
            key.uid.as_deref(),
            &key.groups,
        );
        let reviewed: AccessReviewed = self
            .call(ACCESS_REVIEW, reviews::ACCESS_REVIEW_PATH, &review)
            .await?;
        Ok(if reviewed.status.allowed {
            Verdict::Allowed
        } else {
            Verdict::Denied
        })
    }

    /// One call to the API server, timed and, when it fails, counted.
    async fn call<B: Serialize, R: DeserializeOwned>(
        &self,
        api: &'static str,
        path: &str,
        body: &B,
    ) -> Result<R, AuthError> {
        let started = Instant::now();
        let result = self.server.post(path, body).await;
        let labels = KubernetesApiLabels { api };
        self.counters
            .kubernetes_duration
            .get_or_create(&labels)
            .observe(started.elapsed().as_secs_f64());
        result.map_err(|cause| {
            self.counters.kubernetes_errors.get_or_create(&labels).inc();
            AuthError::Unavailable {
                message: UNAVAILABLE.to_owned(),
                cause,
            }
        })
    }

    /// Counts one cache lookup of `api` as a hit or a miss.
    fn lookup(&self, api: &'static str) -> impl Fn(bool) + '_ {
        move |miss| {
            self.counters
                .cache
                .get_or_create(&CacheLabels {
                    api,
                    result: if miss { "miss" } else { "hit" },
                })
                .inc();
        }
    }
}

/// The cached answer for `key`, or `call`'s (cached when it is an answer, not when it is an
/// error). Concurrent lookups of one missing key share one call; `count` learns whether this
/// lookup made it.
async fn cached<K, V>(
    cache: &Cache<K, V>,
    key: K,
    count: impl Fn(bool),
    call: impl Future<Output = Result<V, AuthError>>,
) -> Result<V, AuthError>
where
    K: std::hash::Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    let called = AtomicBool::new(false);
    let result = cache
        .try_get_with(key, async {
            called.store(true, Ordering::Relaxed);
            call.await
        })
        .await;
    count(called.load(Ordering::Relaxed));
    result.map_err(|e| (*e).clone())
}
