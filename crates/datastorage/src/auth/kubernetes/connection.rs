//! [`ApiServer`]: where the Kubernetes API server is and how this service proves who it is to
//! it: the pod's ServiceAccount (in-cluster) or a kubeconfig file.
//!
//! Of kubeconfig, the parts a service needs are read: the current context, its cluster's
//! `server` and certificate authority, and its user's `token`, `tokenFile` or client
//! certificate. Plugins (`exec`, `auth-provider`), passwords and `insecure-skip-tls-verify` are
//! refused at start, naming the key: an authority whose answers decide who may write audit
//! events is never trusted unverified.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context as _};
use base64::Engine as _;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Where a pod's ServiceAccount credentials are mounted.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// The longest part of an error answer kept for the log.
const MAX_ERROR_TEXT: usize = 300;

/// The Kubernetes API server, with a connection pool and this service's own credential.
pub struct ApiServer {
    /// `https://host:port`, without a trailing slash.
    base: String,
    http: reqwest::Client,
    credential: Credential,
    /// The namespace of the pod (in-cluster) or of the kubeconfig context, if any.
    pub namespace: Option<String>,
}

impl fmt::Debug for ApiServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiServer")
            .field("base", &self.base)
            .field("credential", &self.credential)
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

/// How this service authenticates to the API server.
enum Credential {
    /// A client certificate only (it is part of the HTTP client).
    None,
    /// A fixed bearer token from the kubeconfig.
    Token(String),
    /// A bearer token file, re-read on every call: projected ServiceAccount tokens rotate.
    TokenFile(PathBuf),
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::None => f.write_str("client certificate"),
            Credential::Token(_) => f.write_str("token (hidden)"),
            Credential::TokenFile(path) => write!(f, "token file {}", path.display()),
        }
    }
}

impl Credential {
    fn bearer(&self) -> Result<Option<String>, String> {
        match self {
            Credential::None => Ok(None),
            Credential::Token(token) => Ok(Some(token.clone())),
            Credential::TokenFile(path) => std::fs::read_to_string(path)
                .map(|text| Some(text.trim().to_owned()))
                .map_err(|e| format!("cannot read this service's token {}: {e}", path.display())),
        }
    }
}

impl ApiServer {
    /// The API server named by `kubeconfig`, or, without one, the pod's own (in-cluster).
    /// Reads and checks every file now, so a mistake stops the start, naming the key.
    pub fn connect(kubeconfig: Option<&Path>, timeout: Duration) -> anyhow::Result<Self> {
        let endpoint = match kubeconfig {
            Some(path) => Endpoint::from_kubeconfig(path)?,
            None => Endpoint::in_cluster()?,
        };
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .timeout(timeout)
            .connect_timeout(timeout);
        if let Some(pem) = &endpoint.ca_pem {
            let certificates = reqwest::Certificate::from_pem_bundle(pem)
                .context("auth.kubernetes: the API server's certificate authority is not PEM")?;
            if certificates.is_empty() {
                bail!(
                    "auth.kubernetes: the API server's certificate authority holds no certificate"
                );
            }
            builder = builder.tls_built_in_root_certs(false);
            for certificate in certificates {
                builder = builder.add_root_certificate(certificate);
            }
        }
        if let Some(pem) = &endpoint.identity_pem {
            builder =
                builder.identity(reqwest::Identity::from_pem(pem).context(
                    "auth.kubernetes.kubeconfig: the client certificate or key is not PEM",
                )?);
        }
        Ok(Self {
            base: endpoint.server.trim_end_matches('/').to_owned(),
            http: builder
                .build()
                .context("auth.kubernetes: cannot build the API server's HTTP client")?,
            credential: endpoint.credential,
            namespace: endpoint.namespace,
        })
    }

    /// The API server's address, for the log.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// POSTs `body` to `path` and reads the answer. The error is the cause, for the log only
    /// (it names no secret).
    pub async fn post<B: Serialize, R: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<R, String> {
        let mut request = self.http.post(format!("{}{path}", self.base)).json(body);
        if let Some(token) = self.credential.bearer()? {
            request = request.bearer_auth(token);
        }
        let response = request
            .send()
            .await
            .map_err(|e| format!("POST {path}: {e}"))?;
        let status = response.status();
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            let text: String = text.chars().take(MAX_ERROR_TEXT).collect();
            return Err(format!(
                "POST {path}: the API server answered {status}: {text}"
            ));
        }
        response
            .json()
            .await
            .map_err(|e| format!("POST {path}: unreadable answer: {e}"))
    }
}

/// What [`ApiServer::connect`] needs, read from files.
struct Endpoint {
    server: String,
    ca_pem: Option<Vec<u8>>,
    identity_pem: Option<Vec<u8>>,
    credential: Credential,
    namespace: Option<String>,
}

impl Endpoint {
    fn in_cluster() -> anyhow::Result<Self> {
        let host = std::env::var("KUBERNETES_SERVICE_HOST").map_err(|_| {
            anyhow::anyhow!("auth.mode is kubernetes, auth.kubernetes.kubeconfig is not set and KUBERNETES_SERVICE_HOST is not set: outside a pod, name a kubeconfig file in auth.kubernetes.kubeconfig")
        })?;
        let port = std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_else(|_| "443".to_owned());
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host
        };
        let dir = Path::new(SERVICE_ACCOUNT_DIR);
        let ca = dir.join("ca.crt");
        let ca_pem = std::fs::read(&ca).with_context(|| {
            format!(
                "auth.kubernetes (in-cluster): cannot read the API server's CA {}",
                ca.display()
            )
        })?;
        let token = dir.join("token");
        Credential::TokenFile(token.clone())
            .bearer()
            .map_err(|e| anyhow::anyhow!("auth.kubernetes (in-cluster): {e}"))?;
        let namespace = std::fs::read_to_string(dir.join("namespace"))
            .ok()
            .map(|text| text.trim().to_owned())
            .filter(|ns| !ns.is_empty());
        Ok(Self {
            server: format!("https://{host}:{port}"),
            ca_pem: Some(ca_pem),
            identity_pem: None,
            credential: Credential::TokenFile(token),
            namespace,
        })
    }

    fn from_kubeconfig(path: &Path) -> anyhow::Result<Self> {
        let key = "auth.kubernetes.kubeconfig";
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("{key}: cannot read {}", path.display()))?;
        let config: Kubeconfig = serde_norway::from_str(&text)
            .with_context(|| format!("{key}: {} is not a kubeconfig file", path.display()))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let Some(current) = config.current_context.as_deref().filter(|c| !c.is_empty()) else {
            bail!("{key}: {} sets no current-context", path.display());
        };
        let context = &config
            .contexts
            .iter()
            .find(|c| c.name == current)
            .with_context(|| format!("{key}: current-context {current:?} is not in contexts"))?
            .context;
        let cluster = &config
            .clusters
            .iter()
            .find(|c| c.name == context.cluster)
            .with_context(|| format!("{key}: cluster {:?} is not in clusters", context.cluster))?
            .cluster;
        let user = &config
            .users
            .iter()
            .find(|u| u.name == context.user)
            .with_context(|| format!("{key}: user {:?} is not in users", context.user))?
            .user;
        if cluster.insecure_skip_tls_verify {
            bail!("{key}: cluster {:?} sets insecure-skip-tls-verify; DataStorage does not trust an unverified API server with who may write and read audit events. Give it certificate-authority or certificate-authority-data", context.cluster);
        }
        if !cluster.server.starts_with("https://") && !cluster.server.starts_with("http://") {
            bail!(
                "{key}: cluster {:?} has server {:?}, which is not an http(s) URL",
                context.cluster,
                cluster.server
            );
        }
        for (set, name) in [
            (user.exec.is_some(), "exec"),
            (user.auth_provider.is_some(), "auth-provider"),
            (user.password.is_some(), "password"),
        ] {
            if set {
                bail!("{key}: user {:?} uses {name}, which DataStorage does not support: give the service a token, tokenFile or client certificate", context.user);
            }
        }
        let ca_pem = read_pair(
            dir,
            cluster.certificate_authority.as_deref(),
            cluster.certificate_authority_data.as_deref(),
            &format!(
                "{key}: certificate-authority of cluster {:?}",
                context.cluster
            ),
        )?;
        let what = |part: &str| format!("{key}: {part} of user {:?}", context.user);
        let cert = read_pair(
            dir,
            user.client_certificate.as_deref(),
            user.client_certificate_data.as_deref(),
            &what("client-certificate"),
        )?;
        let client_key = read_pair(
            dir,
            user.client_key.as_deref(),
            user.client_key_data.as_deref(),
            &what("client-key"),
        )?;
        let identity_pem = match (cert, client_key) {
            (Some(mut cert), Some(client_key)) => {
                cert.push(b'\n');
                cert.extend_from_slice(&client_key);
                Some(cert)
            }
            (None, None) => None,
            _ => bail!(
                "{}",
                what("client-certificate and client-key must be given together")
            ),
        };
        let credential = match (&user.token, &user.token_file) {
            (Some(token), _) => Credential::Token(token.clone()),
            (None, Some(file)) => {
                let credential = Credential::TokenFile(dir.join(file));
                credential
                    .bearer()
                    .map_err(|e| anyhow::anyhow!("{}: {e}", what("tokenFile")))?;
                credential
            }
            (None, None) if identity_pem.is_some() => Credential::None,
            (None, None) => bail!(
                "{}",
                what("no token, tokenFile or client certificate is set")
            ),
        };
        Ok(Self {
            server: cluster.server.clone(),
            ca_pem,
            identity_pem,
            credential,
            namespace: context.namespace.clone().filter(|ns| !ns.is_empty()),
        })
    }
}

/// The contents of a kubeconfig `x` (a file, relative to the kubeconfig) or `x-data` (base64).
fn read_pair(
    dir: &Path,
    file: Option<&Path>,
    data: Option<&str>,
    what: &str,
) -> anyhow::Result<Option<Vec<u8>>> {
    match (file, data) {
        (_, Some(data)) => base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .map(Some)
            .with_context(|| format!("{what}: the -data value is not base64")),
        (Some(file), None) => {
            let path = dir.join(file);
            std::fs::read(&path)
                .map(Some)
                .with_context(|| format!("{what}: cannot read {}", path.display()))
        }
        (None, None) => Ok(None),
    }
}

/// The parts of a kubeconfig file that are read (unknown keys are ignored, as by kubectl).
#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct Kubeconfig {
    current_context: Option<String>,
    #[serde(default)]
    clusters: Vec<NamedCluster>,
    #[serde(default)]
    contexts: Vec<NamedContext>,
    #[serde(default)]
    users: Vec<NamedUser>,
}

#[derive(Deserialize)]
struct NamedCluster {
    name: String,
    cluster: Cluster,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct Cluster {
    server: String,
    certificate_authority: Option<PathBuf>,
    certificate_authority_data: Option<String>,
    #[serde(default)]
    insecure_skip_tls_verify: bool,
}

#[derive(Deserialize)]
struct NamedContext {
    name: String,
    context: Context,
}

#[derive(Deserialize)]
struct Context {
    cluster: String,
    user: String,
    namespace: Option<String>,
}

#[derive(Deserialize)]
struct NamedUser {
    name: String,
    #[serde(default)]
    user: User,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct User {
    token: Option<String>,
    #[serde(rename = "tokenFile")]
    token_file: Option<PathBuf>,
    client_certificate: Option<PathBuf>,
    client_certificate_data: Option<String>,
    client_key: Option<PathBuf>,
    client_key_data: Option<String>,
    password: Option<String>,
    exec: Option<serde_norway::Value>,
    auth_provider: Option<serde_norway::Value>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kubeconfig(dir: &Path, user: &str, cluster_extra: &str) -> PathBuf {
        let path = dir.join("config");
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\ncurrent-context: ctx\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:6443\n{cluster_extra}contexts:\n- name: ctx\n  context: {{cluster: c, user: u, namespace: audit}}\nusers:\n- name: u\n  user:\n{user}preferences: {{}}\n"
            ),
        )
        .unwrap();
        path
    }

    fn error(path: &Path) -> String {
        format!(
            "{:#}",
            Endpoint::from_kubeconfig(path).err().expect("refused")
        )
    }

    #[test]
    fn a_token_kubeconfig_gives_the_server_the_namespace_and_the_token() {
        let dir = tempfile::tempdir().unwrap();
        let path = kubeconfig(dir.path(), "    token: abc\n", "");
        let endpoint = Endpoint::from_kubeconfig(&path).unwrap();
        assert_eq!(endpoint.server, "https://127.0.0.1:6443");
        assert_eq!(endpoint.namespace.as_deref(), Some("audit"));
        assert_eq!(
            endpoint.credential.bearer().unwrap().as_deref(),
            Some("abc")
        );
        assert!(endpoint.ca_pem.is_none());
    }

    #[test]
    fn a_token_file_is_relative_to_the_kubeconfig_and_re_read() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("tok"), "first\n").unwrap();
        let path = kubeconfig(dir.path(), "    tokenFile: tok\n", "");
        let endpoint = Endpoint::from_kubeconfig(&path).unwrap();
        assert_eq!(
            endpoint.credential.bearer().unwrap().as_deref(),
            Some("first")
        );
        std::fs::write(dir.path().join("tok"), "second").unwrap();
        assert_eq!(
            endpoint.credential.bearer().unwrap().as_deref(),
            Some("second")
        );
    }

    #[test]
    fn unsafe_or_unsupported_kubeconfigs_are_refused_naming_the_part() {
        let dir = tempfile::tempdir().unwrap();
        let skip = kubeconfig(
            dir.path(),
            "    token: abc\n",
            "    insecure-skip-tls-verify: true\n",
        );
        assert!(
            error(&skip).contains("insecure-skip-tls-verify"),
            "{}",
            error(&skip)
        );
        let exec = kubeconfig(dir.path(), "    exec: {command: aws}\n", "");
        assert!(error(&exec).contains("uses exec"), "{}", error(&exec));
        let nothing = kubeconfig(dir.path(), "    {}\n", "");
        assert!(error(&nothing).contains("no token"), "{}", error(&nothing));
        let half = kubeconfig(dir.path(), "    client-certificate-data: QUJD\n", "");
        assert!(error(&half).contains("together"), "{}", error(&half));
        let bad_ca = kubeconfig(
            dir.path(),
            "    token: abc\n",
            "    certificate-authority: missing.crt\n",
        );
        assert!(
            error(&bad_ca).contains("certificate-authority of cluster \"c\": cannot read"),
            "{}",
            error(&bad_ca)
        );
        let missing = dir.path().join("absent");
        assert!(error(&missing).contains("auth.kubernetes.kubeconfig: cannot read"));
    }
}
