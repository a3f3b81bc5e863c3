//! `kubernetes` mode: ServiceAccount bearer tokens checked with TokenReview, permissions with
//! SubjectAccessReview on a virtual resource of this service's own.

use super::error::AuthError;
use super::principal::Principal;
use super::scope::Scope;
use crate::config::KubernetesAuthSettings;
use crate::metrics::AuthCounters;

/// The Kubernetes authenticator.
#[derive(Debug)]
pub struct KubernetesAuth {
    _settings: KubernetesAuthSettings,
}

impl KubernetesAuth {
    /// Connects to the API server named by the settings.
    pub fn new(settings: &KubernetesAuthSettings, _counters: AuthCounters) -> anyhow::Result<Self> {
        anyhow::bail!(
            "auth.mode kubernetes is not available in this build (settings: {:?})",
            settings.group
        )
    }

    /// The principal of a ServiceAccount token.
    pub async fn authenticate(&self, _token: &str) -> Result<Principal, AuthError> {
        Err(AuthError::Unavailable {
            message: "kubernetes authentication is not available".to_owned(),
            cause: "not built".to_owned(),
        })
    }

    /// Whether the principal holds `scope`.
    pub async fn authorize(&self, _principal: &Principal, _scope: Scope) -> Result<(), AuthError> {
        Err(AuthError::Unavailable {
            message: "kubernetes authorization is not available".to_owned(),
            cause: "not built".to_owned(),
        })
    }
}
