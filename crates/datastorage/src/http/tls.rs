//! TLS of the API listener (rustls): the certificate, key and optional client CA of
//! `server.tls`, loaded at start (a missing or invalid file refuses the start: there is never
//! a fallback to plain HTTP) and re-read when they change ([`crate::reload`]). A reload
//! applies to new connections; open ones keep theirs, so nothing is dropped.
//!
//! With a client CA, a client may present a certificate; one that does not chain to the CA is
//! refused in the handshake, and a verified one's subject alternative names reach the request
//! as a [`PeerCertificate`] (the identity of `auth.mode: mtls`). Clients without a certificate
//! still connect, so the probes work; the route table decides what they may call.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use anyhow::{anyhow, bail, Context as _};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio_rustls::TlsAcceptor;
use x509_parser::extensions::GeneralName;

use crate::auth::mtls::PeerCertificate;
use crate::config::ServerTls;
use crate::metrics::AuthCounters;
use crate::reload::{watch, Watch};

/// The files in force and who watches them.
struct Files {
    cert: PathBuf,
    key: PathBuf,
    client_ca: Option<PathBuf>,
}

impl Files {
    fn paths(&self) -> Vec<PathBuf> {
        let mut v = vec![self.cert.clone(), self.key.clone()];
        v.extend(self.client_ca.clone());
        v
    }
}

/// The API listener's TLS, swapped whole when its files change. Cheap to clone.
#[derive(Clone)]
pub struct Tls {
    current: Arc<RwLock<TlsAcceptor>>,
    _watch: Arc<Watch>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").finish_non_exhaustive()
    }
}

impl Tls {
    /// Loads `server.tls` and starts watching its files. Errors name the key and the file.
    pub fn load(settings: &ServerTls, counters: AuthCounters) -> anyhow::Result<Self> {
        let (cert, key) = settings
            .cert_and_key()
            .context("server.tls needs certFile and keyFile (or certDir)")?;
        let files = Files {
            cert,
            key,
            client_ca: settings.client_ca_file.clone(),
        };
        let contents = files
            .paths()
            .iter()
            .map(|p| {
                std::fs::read(p).with_context(|| {
                    format!("server.tls: cannot read {}; refusing to start rather than serve plain HTTP", p.display())
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let config = server_config(&files, &contents)?;
        let current = Arc::new(RwLock::new(TlsAcceptor::from(Arc::new(config))));
        let swap = Arc::clone(&current);
        let paths = files.paths();
        let watcher = watch("tls", paths, contents, counters, move |contents| {
            let config = server_config(&files, contents)?;
            *swap.write().unwrap_or_else(|p| p.into_inner()) = TlsAcceptor::from(Arc::new(config));
            Ok(())
        });
        Ok(Self {
            current,
            _watch: Arc::new(watcher),
        })
    }

    /// The acceptor for a new connection.
    pub fn acceptor(&self) -> TlsAcceptor {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// A rustls server config from the files' contents (certificate, key, client CA).
fn server_config(files: &Files, contents: &[Vec<u8>]) -> anyhow::Result<ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&contents[0])
        .collect::<Result<_, _>>()
        .map_err(|e| {
            anyhow!(
                "server.tls: {} is not a PEM certificate chain: {e}",
                files.cert.display()
            )
        })?;
    if certs.is_empty() {
        bail!("server.tls: {} holds no certificate", files.cert.display());
    }
    let key = PrivateKeyDer::from_pem_slice(&contents[1]).map_err(|e| {
        anyhow!(
            "server.tls: {} is not a PEM private key: {e}",
            files.key.display()
        )
    })?;
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .context("server.tls: no TLS version available")?;
    let builder = match (&files.client_ca, contents.get(2)) {
        (Some(path), Some(pem)) => {
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| {
                    anyhow!(
                        "server.tls.clientCaFile: {} is not PEM: {e}",
                        path.display()
                    )
                })?;
                roots.add(cert).with_context(|| {
                    format!(
                        "server.tls.clientCaFile: {} holds an unusable CA",
                        path.display()
                    )
                })?;
            }
            if roots.is_empty() {
                bail!(
                    "server.tls.clientCaFile: {} holds no certificate",
                    path.display()
                );
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .context("server.tls.clientCaFile")?;
            builder.with_client_cert_verifier(verifier)
        }
        _ => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(certs, key).with_context(|| {
        format!(
            "server.tls: the key {} does not fit the certificate {}",
            files.key.display(),
            files.cert.display()
        )
    })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// The subject alternative names of the client's (verified) certificate, if it sent one.
pub fn peer_certificate(conn: &rustls::ServerConnection) -> Option<PeerCertificate> {
    let leaf = conn.peer_certificates()?.first()?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
    let sans = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|ext| {
            ext.value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    GeneralName::DNSName(s) | GeneralName::URI(s) | GeneralName::RFC822Name(s) => {
                        Some((*s).to_owned())
                    }
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    Some(PeerCertificate { sans })
}
