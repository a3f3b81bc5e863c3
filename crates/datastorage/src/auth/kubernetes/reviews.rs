//! The wire forms of TokenReview (`authentication.k8s.io/v1`) and SubjectAccessReview
//! (`authorization.k8s.io/v1`): what is sent, and the parts of the answer that are read.

use serde::{Deserialize, Serialize};

/// Where TokenReviews are created.
pub const TOKEN_REVIEW_PATH: &str = "/apis/authentication.k8s.io/v1/tokenreviews";
/// Where SubjectAccessReviews are created.
pub const ACCESS_REVIEW_PATH: &str = "/apis/authorization.k8s.io/v1/subjectaccessreviews";

/// A TokenReview to create.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenReview<'a> {
    api_version: &'static str,
    kind: &'static str,
    spec: TokenReviewSpec<'a>,
}

#[derive(Debug, Serialize)]
struct TokenReviewSpec<'a> {
    token: &'a str,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    audiences: &'a [String],
}

impl<'a> TokenReview<'a> {
    /// Asks whether `token` is valid for one of `audiences` (empty: the API server's own).
    pub fn new(token: &'a str, audiences: &'a [String]) -> Self {
        Self {
            api_version: "authentication.k8s.io/v1",
            kind: "TokenReview",
            spec: TokenReviewSpec { token, audiences },
        }
    }
}

/// A created TokenReview.
#[derive(Debug, Default, Deserialize)]
pub struct TokenReviewed {
    /// The verdict.
    #[serde(default)]
    pub status: TokenReviewStatus,
}

/// A TokenReview's verdict.
#[derive(Debug, Default, Deserialize)]
pub struct TokenReviewStatus {
    /// Whether the token is valid.
    #[serde(default)]
    pub authenticated: bool,
    /// Who it belongs to.
    #[serde(default)]
    pub user: UserInfo,
    /// The audiences of the request the token is valid for.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Why not, when not (for the log).
    #[serde(default)]
    pub error: String,
}

/// The user a token belongs to.
#[derive(Debug, Default, Deserialize)]
pub struct UserInfo {
    /// `system:serviceaccount:<namespace>:<name>` for a ServiceAccount.
    #[serde(default)]
    pub username: String,
    /// The user's UID.
    #[serde(default)]
    pub uid: String,
    /// The user's groups.
    #[serde(default)]
    pub groups: Vec<String>,
}

/// A SubjectAccessReview to create: may `user` (with `groups`) do `verb` on the resource?
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AccessReview<'a> {
    api_version: &'static str,
    kind: &'static str,
    spec: AccessReviewSpec<'a>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct AccessReviewSpec<'a> {
    resource_attributes: ResourceAttributes<'a>,
    user: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    uid: Option<&'a str>,
    groups: &'a [String],
}

#[derive(Debug, Serialize)]
struct ResourceAttributes<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    namespace: Option<&'a str>,
    verb: &'a str,
    group: &'a str,
    resource: &'a str,
}

/// What a SubjectAccessReview asks about.
#[derive(Debug, Clone, Copy)]
pub struct Resource<'a> {
    /// API group of the virtual resource.
    pub group: &'a str,
    /// The virtual resource.
    pub resource: &'a str,
    /// The namespace asked in; `None`: cluster-wide.
    pub namespace: Option<&'a str>,
}

impl<'a> AccessReview<'a> {
    /// Asks whether `user` may do `verb` on `resource`.
    pub fn new(
        resource: Resource<'a>,
        verb: &'a str,
        user: &'a str,
        uid: Option<&'a str>,
        groups: &'a [String],
    ) -> Self {
        Self {
            api_version: "authorization.k8s.io/v1",
            kind: "SubjectAccessReview",
            spec: AccessReviewSpec {
                resource_attributes: ResourceAttributes {
                    namespace: resource.namespace,
                    verb,
                    group: resource.group,
                    resource: resource.resource,
                },
                user,
                uid,
                groups,
            },
        }
    }
}

/// A created SubjectAccessReview.
#[derive(Debug, Default, Deserialize)]
pub struct AccessReviewed {
    /// The verdict.
    #[serde(default)]
    pub status: AccessReviewStatus,
}

/// A SubjectAccessReview's verdict.
#[derive(Debug, Default, Deserialize)]
pub struct AccessReviewStatus {
    /// Whether the action is allowed.
    #[serde(default)]
    pub allowed: bool,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn reviews_have_the_kubernetes_wire_form() {
        let audiences = vec!["datastorage".to_owned()];
        assert_eq!(
            serde_json::to_value(TokenReview::new("t", &audiences)).unwrap(),
            json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                   "spec": {"token": "t", "audiences": ["datastorage"]}})
        );
        assert_eq!(
            serde_json::to_value(TokenReview::new("t", &[])).unwrap()["spec"],
            json!({"token": "t"})
        );
        let groups = vec!["system:serviceaccounts".to_owned()];
        let resource = Resource {
            group: "datastorage.kubernaut.ai",
            resource: "auditevents",
            namespace: Some("audit"),
        };
        assert_eq!(
            serde_json::to_value(AccessReview::new(
                resource,
                "create",
                "u",
                Some("1"),
                &groups
            ))
            .unwrap(),
            json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
                   "spec": {"resourceAttributes": {"namespace": "audit", "verb": "create",
                            "group": "datastorage.kubernaut.ai", "resource": "auditevents"},
                            "user": "u", "uid": "1", "groups": ["system:serviceaccounts"]}})
        );
        let answer: TokenReviewed = serde_json::from_value(json!({
            "kind": "TokenReview", "status": {"authenticated": true,
            "user": {"username": "system:serviceaccount:a:b", "uid": "9", "groups": ["g"],
                     "extra": {"x": ["y"]}}, "audiences": ["datastorage"]}}))
        .unwrap();
        assert!(answer.status.authenticated);
        assert_eq!(answer.status.user.username, "system:serviceaccount:a:b");
        let denied: AccessReviewed =
            serde_json::from_value(json!({"status": {"allowed": false, "denied": true}})).unwrap();
        assert!(!denied.status.allowed);
    }
}
