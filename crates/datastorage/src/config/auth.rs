//! `auth:`: who may call the API, with which scopes, how fast, and what is recorded about it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::values::duration;

/// Default `auth.kubernetes.group` of the virtual resource permissions are checked on.
pub const DEFAULT_KUBERNETES_GROUP: &str = "datastorage.kubernaut.ai";
/// Default `auth.kubernetes.resource`.
pub const DEFAULT_KUBERNETES_RESOURCE: &str = "auditevents";
/// Default longest wait for one TokenReview or SubjectAccessReview.
pub const DEFAULT_KUBERNETES_TIMEOUT: Duration = Duration::from_secs(5);
/// Default time an allowed answer (a valid token, a granted verb) is reused.
pub const DEFAULT_ALLOWED_TTL: Duration = Duration::from_secs(60);
/// Default time a denied verb is reused (short: a new RoleBinding should work soon).
pub const DEFAULT_DENIED_TTL: Duration = Duration::from_secs(10);
/// Default time an invalid token's answer is reused (it stays invalid, but keep it short so
/// the cache cannot be filled with junk for long).
pub const DEFAULT_INVALID_TTL: Duration = Duration::from_secs(10);
/// Default most answers each cache (tokens; permissions) holds.
pub const DEFAULT_CACHE_ENTRIES: u64 = 10_000;
/// Default most denied requests recorded per second; the rest are counted, not recorded, so
/// a flood of bad tokens cannot flood the database.
pub const DEFAULT_DENIALS_PER_SECOND: u32 = 50;

/// How callers are authenticated; one per server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Bearer tokens whose hashes are listed in `auth.tokensFile`.
    Tokens,
    /// Kubernetes ServiceAccount tokens (TokenReview) and RBAC (SubjectAccessReview).
    Kubernetes,
    /// The client certificate's subject alternative name (`auth.mtls.principals`).
    Mtls,
    /// Nobody is authenticated: every caller is `anonymous` with every scope. Only on
    /// loopback, or with `auth.allowUnauthenticated`.
    None,
}

impl AuthMode {
    /// The mode's name, as written in the config and in metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMode::Tokens => "tokens",
            AuthMode::Kubernetes => "kubernetes",
            AuthMode::Mtls => "mtls",
            AuthMode::None => "none",
        }
    }
}

/// Who may append to a chain (a `correlation_id`) that another principal started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChainAppend {
    /// Any principal with `audit:write` (services of one workflow share a correlation id).
    Any,
    /// Only the principal that wrote the chain's first event; others get 403.
    Starter,
}

/// `auth:`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct AuthSettings {
    /// The mode; unset: `kubernetes` inside a pod, `none` when the API listens on loopback,
    /// otherwise `serve` refuses to start.
    pub mode: Option<AuthMode>,
    /// Allows `mode: none` on a listener that is not loopback.
    pub allow_unauthenticated: bool,
    /// `tokens` mode: YAML file of token hashes with names and scopes; re-read when it changes.
    pub tokens_file: Option<PathBuf>,
    /// `kubernetes` mode.
    pub kubernetes: KubernetesAuthSettings,
    /// `mtls` mode.
    pub mtls: MtlsSettings,
    /// Who may append to a chain another principal started.
    pub chain_append: ChainAppend,
    /// Record queries, reads and verifications as audit events of the service itself.
    pub record_reads: bool,
    /// Most denied requests recorded per second (the rest are counted in a metric).
    pub denials_per_second: u32,
    /// `/metrics` requires an authenticated principal (any scope).
    pub metrics_require_auth: bool,
    /// Per-principal request rate limits.
    pub rate_limit: RateLimitSettings,
    /// Proxies (CIDRs) whose `X-Forwarded-For` is believed, to record the client's address.
    pub trusted_proxies: Vec<String>,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            mode: None,
            allow_unauthenticated: false,
            tokens_file: None,
            kubernetes: KubernetesAuthSettings::default(),
            mtls: MtlsSettings::default(),
            chain_append: ChainAppend::Any,
            record_reads: true,
            denials_per_second: DEFAULT_DENIALS_PER_SECOND,
            metrics_require_auth: false,
            rate_limit: RateLimitSettings::default(),
            trusted_proxies: Vec::new(),
        }
    }
}

/// `auth.kubernetes:`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct KubernetesAuthSettings {
    /// A kubeconfig file; unset: the pod's ServiceAccount (in-cluster).
    pub kubeconfig: Option<PathBuf>,
    /// API group of the virtual resource permissions are checked on.
    pub group: String,
    /// The virtual resource (RBAC rules name it; nothing of it exists in the cluster).
    pub resource: String,
    /// Namespace of the permission check; unset: the pod's namespace (in-cluster), else
    /// cluster-wide.
    pub namespace: Option<String>,
    /// Audiences a token must be issued for (TokenReview `spec.audiences`); empty: the API
    /// server's own.
    pub audiences: Vec<String>,
    /// Longest wait for one call to the API server; then the request answers 503.
    #[serde(with = "duration")]
    pub timeout: Duration,
    /// Cache of answers.
    pub cache: AuthCacheSettings,
}

impl Default for KubernetesAuthSettings {
    fn default() -> Self {
        Self {
            kubeconfig: None,
            group: DEFAULT_KUBERNETES_GROUP.to_owned(),
            resource: DEFAULT_KUBERNETES_RESOURCE.to_owned(),
            namespace: None,
            audiences: Vec::new(),
            timeout: DEFAULT_KUBERNETES_TIMEOUT,
            cache: AuthCacheSettings::default(),
        }
    }
}

/// `auth.kubernetes.cache:`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct AuthCacheSettings {
    /// How long a valid token or a granted verb is reused.
    #[serde(with = "duration")]
    pub allowed_ttl: Duration,
    /// How long a denied verb is reused.
    #[serde(with = "duration")]
    pub denied_ttl: Duration,
    /// How long an invalid token's answer is reused.
    #[serde(with = "duration")]
    pub invalid_ttl: Duration,
    /// Most answers each cache (tokens; permissions) holds; the least used go first.
    pub max_entries: u64,
}

impl Default for AuthCacheSettings {
    fn default() -> Self {
        Self {
            allowed_ttl: DEFAULT_ALLOWED_TTL,
            denied_ttl: DEFAULT_DENIED_TTL,
            invalid_ttl: DEFAULT_INVALID_TTL,
            max_entries: DEFAULT_CACHE_ENTRIES,
        }
    }
}

/// `auth.mtls:`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct MtlsSettings {
    /// Certificate identities and their scopes.
    pub principals: Vec<MtlsPrincipal>,
}

/// One certificate identity of `auth.mtls.principals`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MtlsPrincipal {
    /// A subject alternative name of the client certificate, exactly: a DNS name, a URI
    /// (e.g. a SPIFFE id) or an email address.
    pub san: String,
    /// The principal's name on events and in logs; unset: the SAN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Its scopes.
    pub scopes: Vec<String>,
}

/// `auth.rateLimit:`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct RateLimitSettings {
    /// Requests per second each principal may make; `0`: no limit.
    pub requests_per_second: f64,
    /// Requests a principal may make at once above the rate; `0`: the rate, rounded up.
    pub burst: u32,
    /// Limits for named principals, overriding the default.
    pub principals: BTreeMap<String, PrincipalLimit>,
}

/// One principal's limit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PrincipalLimit {
    /// Requests per second; `0`: no limit.
    pub requests_per_second: f64,
    /// Burst; `0`: the rate, rounded up.
    #[serde(default)]
    pub burst: u32,
}
