//! `mtls` mode: the caller is the client certificate the API listener verified against
//! `server.tls.clientCaFile`, identified by one of its subject alternative names (DNS name,
//! URI such as a SPIFFE id, or email address) listed in `auth.mtls.principals`.

use std::collections::HashMap;

use anyhow::bail;

use super::error::AuthError;
use super::principal::Principal;
use super::scope::Scopes;
use crate::config::MtlsPrincipal;

/// The subject alternative names of a verified client certificate, put into the request's
/// extensions by the TLS listener.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerCertificate {
    /// DNS names, URIs and email addresses, as written in the certificate.
    pub sans: Vec<String>,
}

/// Certificate identities and their principals.
#[derive(Debug, Clone, Default)]
pub struct CertificateMap(HashMap<String, Principal>);

impl CertificateMap {
    /// Builds the map from `auth.mtls.principals`; errors name the entry.
    pub fn new(entries: &[MtlsPrincipal]) -> anyhow::Result<Self> {
        let mut map = HashMap::new();
        for (i, e) in entries.iter().enumerate() {
            let at = format!("auth.mtls.principals[{i}]");
            if e.san.trim().is_empty() {
                bail!("{at}.san must not be empty");
            }
            let scopes =
                Scopes::parse(&e.scopes).map_err(|why| anyhow::anyhow!("{at}.scopes: {why}"))?;
            if scopes.is_empty() {
                bail!("{at}.scopes must name at least one scope");
            }
            let name = e.name.clone().unwrap_or_else(|| e.san.clone());
            if map
                .insert(e.san.clone(), Principal::with_scopes(name, scopes))
                .is_some()
            {
                bail!("{at}.san {:?} is listed twice", e.san);
            }
        }
        if map.is_empty() {
            bail!("auth.mode is mtls but auth.mtls.principals lists no certificate identity");
        }
        Ok(Self(map))
    }

    /// The principal of a verified certificate: its first listed SAN.
    pub fn authenticate(&self, cert: Option<&PeerCertificate>) -> Result<Principal, AuthError> {
        let Some(cert) = cert else {
            return Err(AuthError::unauthenticated(
                "no-certificate",
                "this server authenticates clients by TLS certificate; none was presented",
            ));
        };
        cert.sans
            .iter()
            .find_map(|san| self.0.get(san))
            .cloned()
            .ok_or_else(|| {
                AuthError::unauthenticated(
                    "unknown-certificate",
                    "the client certificate names no identity listed in auth.mtls.principals",
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_listed_san_names_the_principal() {
        let map = CertificateMap::new(&[MtlsPrincipal {
            san: "spiffe://cluster.local/ns/a/sa/gateway".into(),
            name: Some("gateway".into()),
            scopes: vec!["audit:write".into()],
        }])
        .unwrap();
        let cert = PeerCertificate {
            sans: vec![
                "gw.example".into(),
                "spiffe://cluster.local/ns/a/sa/gateway".into(),
            ],
        };
        assert_eq!(map.authenticate(Some(&cert)).unwrap().name, "gateway");
        let stranger = PeerCertificate {
            sans: vec!["x.example".into()],
        };
        assert!(map.authenticate(Some(&stranger)).is_err());
        assert!(map.authenticate(None).is_err());
    }
}
