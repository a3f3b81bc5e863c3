//! A throwaway certificate authority for TLS tests: a CA, server certificates for loopback
//! names, and client certificates, written as PEM files into a temporary folder.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

/// A CA that signs certificates for a test; its files live as long as it does.
pub struct TestCa {
    dir: tempfile::TempDir,
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate (PEM).
    pub ca_cert: PathBuf,
}

/// A certificate and its key, as PEM files.
#[derive(Debug, Clone)]
pub struct CertFiles {
    /// The certificate (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM, PKCS#8).
    pub key: PathBuf,
}

impl TestCa {
    /// A new CA named `name`.
    pub fn new(name: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("ds-tls-")
            .tempdir()
            .expect("a temporary folder");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("a CA key");
        let cert = params.self_signed(&key).expect("a CA certificate");
        let ca_cert = dir.path().join("ca.crt");
        std::fs::write(&ca_cert, cert.pem()).expect("write ca.crt");
        Self {
            issuer: Issuer::new(params, key),
            dir,
            ca_cert,
        }
    }

    /// The folder the files are written to.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A server certificate for `localhost`, `127.0.0.1` and `::1`, written as `<name>.crt` and
    /// `<name>.key`.
    pub fn server(&self, name: &str) -> CertFiles {
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .expect("server params");
        params
            .subject_alt_names
            .push(SanType::IpAddress(std::net::Ipv6Addr::LOCALHOST.into()));
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(name, params)
    }

    /// A client certificate whose subject alternative names are `sans` (DNS names, or
    /// `spiffe://…` URIs, or `email:…` addresses), written as `<name>.crt` and `<name>.key`.
    pub fn client(&self, name: &str, sans: &[&str]) -> CertFiles {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("client params");
        for san in sans {
            let san = if let Some(email) = san.strip_prefix("email:") {
                SanType::Rfc822Name(email.to_owned().try_into().expect("an email"))
            } else if san.contains("://") {
                SanType::URI((*san).to_owned().try_into().expect("a URI"))
            } else {
                SanType::DnsName((*san).to_owned().try_into().expect("a DNS name"))
            };
            params.subject_alt_names.push(san);
        }
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(name, params)
    }

    fn issue(&self, name: &str, params: CertificateParams) -> CertFiles {
        let key = KeyPair::generate().expect("a key");
        let cert = params.signed_by(&key, &self.issuer).expect("a certificate");
        let files = CertFiles {
            cert: self.dir.path().join(format!("{name}.crt")),
            key: self.dir.path().join(format!("{name}.key")),
        };
        std::fs::write(&files.cert, cert.pem()).expect("write the certificate");
        std::fs::write(&files.key, key.serialize_pem()).expect("write the key");
        files
    }
}
