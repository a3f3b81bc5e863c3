//! [`Principal`]: who a request comes from, once authenticated.

use super::scope::Scopes;

/// Name of the principal of every request when `auth.mode` is `none`.
pub const ANONYMOUS: &str = "anonymous";

/// Name under which the service records its own events (access records).
pub const SERVICE_PRINCIPAL: &str = "datastorage";

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The name stored with every event it writes (`ingested_by`) and in access records: a
    /// token's name, a Kubernetes user name (`system:serviceaccount:<ns>:<name>`), a certificate
    /// identity, or [`ANONYMOUS`].
    pub name: String,
    /// Kubernetes groups, forwarded to permission checks (empty in other modes).
    pub groups: Vec<String>,
    /// Kubernetes user UID, forwarded to permission checks (unset in other modes).
    pub uid: Option<String>,
    /// What it may do.
    pub grants: Grants,
}

/// Where a principal's permissions come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grants {
    /// A fixed set, known at authentication (tokens, certificates, `none`).
    Scopes(Scopes),
    /// Asked of the Kubernetes API server per scope (SubjectAccessReview).
    Kubernetes,
}

impl Principal {
    /// A principal with a fixed set of scopes.
    pub fn with_scopes(name: impl Into<String>, scopes: Scopes) -> Self {
        Self {
            name: name.into(),
            groups: Vec::new(),
            uid: None,
            grants: Grants::Scopes(scopes),
        }
    }

    /// The caller of every request when nobody is authenticated.
    pub fn anonymous() -> Self {
        Self::with_scopes(ANONYMOUS, Scopes::ALL)
    }
}
