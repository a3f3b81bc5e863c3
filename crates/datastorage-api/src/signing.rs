//! Keys and signatures of signed exports and checkpoints: Ed25519 by default, RSA
//! (PKCS #1 v1.5 with SHA-256, upstream's `SHA256withRSA`) when a deployment needs upstream's
//! algorithm.
//!
//! Keys travel as PEM: a private key as PKCS#8 (`-----BEGIN PRIVATE KEY-----`, the form
//! `openssl genpkey -algorithm ed25519` or `-algorithm RSA` writes), a public key as SPKI
//! (`-----BEGIN PUBLIC KEY-----`). Signatures are base64 (standard alphabet).
//!
//! A key is named by a key id, by default its algorithm (`ed25519:` or `rsa:`) and the first 16
//! hex digits of the SHA-256 of its public key (Ed25519: the raw 32 bytes; RSA: the SPKI DER);
//! its fingerprint is the whole digest, `sha256:<hex>`. A [`Keyring`] holds several public keys
//! by id, so what a retired key signed still verifies. `Debug` of a key prints its id and
//! fingerprint, never key material. RSA operations are ring's (constant-time); ring cannot make
//! RSA keys, so they come from `openssl genpkey`.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::spki::der::{Decode as _, Document, SecretDocument};
use ed25519_dalek::pkcs8::spki::{DecodePublicKey, EncodePublicKey, SubjectPublicKeyInfoRef};
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey, KeypairBytes};
use ed25519_dalek::{Signature, Signer as _};
use ring::signature::{KeyPair as _, RsaKeyPair};
use sha2::{Digest, Sha256};

/// Name of the Ed25519 algorithm, as written in an export trailer's or checkpoint's `algorithm`.
pub const ALGORITHM_ED25519: &str = "ed25519";
/// Name of RSA PKCS #1 v1.5 with SHA-256 (upstream's `SHA256withRSA`).
pub const ALGORITHM_RSA: &str = "rsa-pkcs1-sha256";

/// PEM label of an unencrypted PKCS#8 private key.
const PRIVATE_KEY_LABEL: &str = "-----BEGIN PRIVATE KEY-----";
/// PEM label of an encrypted PKCS#8 private key, which this module does not read.
const ENCRYPTED_KEY_LABEL: &str = "-----BEGIN ENCRYPTED PRIVATE KEY-----";
/// DER of the rsaEncryption algorithm identifier (OID 1.2.840.113549.1.1.1, NULL parameters).
const RSA_ALGORITHM_ID: [u8; 15] = [
    0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
];
/// The rsaEncryption OID, dotted.
const RSA_OID: &str = "1.2.840.113549.1.1.1";

/// A DER length.
fn der_len(n: usize, out: &mut Vec<u8>) {
    if n < 0x80 {
        out.push(n as u8);
    } else {
        let bytes: Vec<u8> = n
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
}

/// The SPKI DER of an RSA public key given as PKCS #1 `RSAPublicKey` DER.
fn rsa_spki(pkcs1: &[u8]) -> Vec<u8> {
    let mut bits = vec![0x03];
    der_len(pkcs1.len() + 1, &mut bits);
    bits.push(0);
    bits.extend_from_slice(pkcs1);
    let mut out = vec![0x30];
    der_len(RSA_ALGORITHM_ID.len() + bits.len(), &mut out);
    out.extend_from_slice(&RSA_ALGORITHM_ID);
    out.extend(bits);
    out
}

/// PEM armour of DER bytes.
fn pem(label: &str, der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// A public key of either algorithm.
#[derive(Clone, PartialEq, Eq)]
enum Public {
    Ed25519(ed25519_dalek::VerifyingKey),
    /// PKCS #1 `RSAPublicKey` DER and its SPKI DER.
    Rsa {
        pkcs1: Vec<u8>,
        spki: Vec<u8>,
    },
}

impl Public {
    fn algorithm(&self) -> &'static str {
        match self {
            Public::Ed25519(_) => ALGORITHM_ED25519,
            Public::Rsa { .. } => ALGORITHM_RSA,
        }
    }

    /// SHA-256 (hex) of the public key, the source of both its id and its fingerprint.
    fn digest(&self) -> String {
        match self {
            Public::Ed25519(k) => hex::encode(Sha256::digest(k.as_bytes())),
            Public::Rsa { spki, .. } => hex::encode(Sha256::digest(spki)),
        }
    }

    fn default_key_id(&self) -> String {
        let prefix = match self {
            Public::Ed25519(_) => "ed25519",
            Public::Rsa { .. } => "rsa",
        };
        format!("{prefix}:{}", &self.digest()[..16])
    }

    fn fingerprint(&self) -> String {
        format!("sha256:{}", self.digest())
    }
}

/// A private key of either algorithm.
#[derive(Clone)]
#[allow(clippy::large_enum_variant)] // one per process; boxing would buy nothing
enum Private {
    Ed25519(ed25519_dalek::SigningKey),
    /// The key pair and its PKCS#8 DER (to write it back).
    Rsa(Arc<RsaKeyPair>, Arc<SecretDocument>),
}

/// A private key with its key id.
#[derive(Clone)]
pub struct SigningKey {
    inner: Private,
    public: Public,
    key_id: String,
}

impl SigningKey {
    /// Reads a PKCS#8 private-key PEM (`-----BEGIN PRIVATE KEY-----`) of an Ed25519 or an RSA
    /// key (at least 2048 bits). The error never quotes the input.
    pub fn from_pem(pem: &str) -> Result<Self, String> {
        let pem = pem.trim();
        if pem.starts_with(ENCRYPTED_KEY_LABEL) {
            return Err("the private key is encrypted; give an unencrypted PKCS#8 key".to_owned());
        }
        if !pem.starts_with(PRIVATE_KEY_LABEL) {
            return Err(format!(
                "not a PKCS#8 private key: the PEM must start with {PRIVATE_KEY_LABEL}"
            ));
        }
        if let Ok(inner) = ed25519_dalek::SigningKey::from_pkcs8_pem(pem) {
            return Ok(Self::from_dalek(inner));
        }
        let (_, doc) =
            SecretDocument::from_pem(pem).map_err(|e| format!("not a PKCS#8 private key: {e}"))?;
        let pair = RsaKeyPair::from_pkcs8(doc.as_bytes()).map_err(|e| {
            format!("neither an Ed25519 nor an RSA (2048 to 8192 bits) PKCS#8 private key: {e}")
        })?;
        let pkcs1 = pair.public_key().as_ref().to_vec();
        let public = Public::Rsa {
            spki: rsa_spki(&pkcs1),
            pkcs1,
        };
        Ok(Self {
            key_id: public.default_key_id(),
            inner: Private::Rsa(Arc::new(pair), Arc::new(doc)),
            public,
        })
    }

    /// A new random Ed25519 key from the operating system's random source.
    pub fn generate() -> Self {
        Self::from_dalek(ed25519_dalek::SigningKey::generate(&mut rand_core::OsRng))
    }

    fn from_dalek(inner: ed25519_dalek::SigningKey) -> Self {
        let public = Public::Ed25519(inner.verifying_key());
        Self {
            key_id: public.default_key_id(),
            inner: Private::Ed25519(inner),
            public,
        }
    }

    /// The same key under another key id (for a configured name instead of the default).
    pub fn with_key_id(mut self, key_id: impl Into<String>) -> Self {
        self.key_id = key_id.into();
        self
    }

    /// `ed25519` or `rsa-pkcs1-sha256`.
    pub fn algorithm(&self) -> &'static str {
        self.public.algorithm()
    }

    /// The private key as PKCS#8 PEM, without the optional public key (the form OpenSSL
    /// writes and reads). Handle the result as a secret.
    pub fn to_pem(&self) -> Result<String, String> {
        match &self.inner {
            Private::Ed25519(k) => KeypairBytes {
                secret_key: k.to_bytes(),
                public_key: None,
            }
            .to_pkcs8_pem(LineEnding::LF)
            .map(|pem| pem.as_str().to_owned())
            .map_err(|e| format!("cannot encode the private key: {e}")),
            Private::Rsa(_, doc) => Ok(pem("PRIVATE KEY", doc.as_bytes())),
        }
    }

    /// The public key as SPKI PEM (`-----BEGIN PUBLIC KEY-----`).
    pub fn public_pem(&self) -> Result<String, String> {
        self.verifying_key().to_pem()
    }

    /// The public half, under the same key id.
    pub fn verifying_key(&self) -> VerifyingKey {
        VerifyingKey {
            inner: self.public.clone(),
            key_id: self.key_id.clone(),
        }
    }

    /// The key id written into what this key signs.
    pub fn key_id(&self) -> String {
        self.key_id.clone()
    }

    /// `sha256:<hex>` of the public key.
    pub fn fingerprint(&self) -> String {
        self.public.fingerprint()
    }

    /// Signs `message`: the signature bytes in standard base64.
    pub fn sign(&self, message: &[u8]) -> String {
        match &self.inner {
            Private::Ed25519(k) => STANDARD.encode(k.sign(message).to_bytes()),
            Private::Rsa(pair, _) => {
                let mut signature = vec![0; pair.public().modulus_len()];
                // PKCS #1 v1.5 padding is deterministic; the generator is not drawn from. Signing
                // fails only for a buffer of the wrong size, which this one is not; an empty
                // signature would fail verification rather than vouch for anything.
                match pair.sign(
                    &ring::signature::RSA_PKCS1_SHA256,
                    &ring::rand::SystemRandom::new(),
                    message,
                    &mut signature,
                ) {
                    Ok(()) => STANDARD.encode(signature),
                    Err(_) => String::new(),
                }
            }
        }
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("key_id", &self.key_id)
            .field("algorithm", &self.algorithm())
            .field("fingerprint", &self.fingerprint())
            .finish_non_exhaustive()
    }
}

/// A public key with its key id.
#[derive(Clone, PartialEq, Eq)]
pub struct VerifyingKey {
    inner: Public,
    key_id: String,
}

impl VerifyingKey {
    /// Reads an SPKI public-key PEM (Ed25519 or RSA), or a PKCS#8 private-key PEM whose public
    /// half it keeps (so the key file a server signs with also serves to verify).
    pub fn from_pem(pem: &str) -> Result<Self, String> {
        let pem = pem.trim();
        if pem.starts_with(PRIVATE_KEY_LABEL) || pem.starts_with(ENCRYPTED_KEY_LABEL) {
            return SigningKey::from_pem(pem).map(|key| key.verifying_key());
        }
        let inner = match ed25519_dalek::VerifyingKey::from_public_key_pem(pem) {
            Ok(k) => Public::Ed25519(k),
            Err(_) => {
                let (_, doc) = Document::from_pem(pem)
                    .map_err(|e| format!("not a public key (SPKI PEM) or private key: {e}"))?;
                let spki = SubjectPublicKeyInfoRef::from_der(doc.as_bytes())
                    .map_err(|e| format!("not a public key (SPKI): {e}"))?;
                if spki.algorithm.oid.to_string() != RSA_OID {
                    return Err(format!(
                        "a public key of algorithm {}: only Ed25519 and RSA keys verify",
                        spki.algorithm.oid
                    ));
                }
                let pkcs1 = spki.subject_public_key.raw_bytes().to_vec();
                Public::Rsa {
                    spki: doc.as_bytes().to_vec(),
                    pkcs1,
                }
            }
        };
        Ok(Self {
            key_id: inner.default_key_id(),
            inner,
        })
    }

    /// The same key under another key id.
    pub fn with_key_id(mut self, key_id: impl Into<String>) -> Self {
        self.key_id = key_id.into();
        self
    }

    /// `ed25519` or `rsa-pkcs1-sha256`.
    pub fn algorithm(&self) -> &'static str {
        self.inner.algorithm()
    }

    /// The public key as SPKI PEM.
    pub fn to_pem(&self) -> Result<String, String> {
        match &self.inner {
            Public::Ed25519(k) => k
                .to_public_key_pem(LineEnding::LF)
                .map_err(|e| format!("cannot encode the public key: {e}")),
            Public::Rsa { spki, .. } => Ok(pem("PUBLIC KEY", spki)),
        }
    }

    /// The key id this key verifies under.
    pub fn key_id(&self) -> String {
        self.key_id.clone()
    }

    /// `sha256:<hex>` of the public key.
    pub fn fingerprint(&self) -> String {
        self.inner.fingerprint()
    }

    /// Checks a base64 signature over `message` (Ed25519 strictly: no malleable signatures, no
    /// weak keys; RSA: PKCS #1 v1.5 with SHA-256, 2048 to 8192 bits).
    pub fn verify(&self, message: &[u8], signature_b64: &str) -> Result<(), String> {
        let bytes = STANDARD
            .decode(signature_b64.trim())
            .map_err(|e| format!("the signature is not base64: {e}"))?;
        let refused = || format!("the signature does not verify with key {}", self.key_id);
        match &self.inner {
            Public::Ed25519(k) => {
                let signature = Signature::from_slice(&bytes).map_err(|_| {
                    format!(
                        "the signature is {} bytes, an Ed25519 signature is 64",
                        bytes.len()
                    )
                })?;
                k.verify_strict(message, &signature).map_err(|_| refused())
            }
            Public::Rsa { pkcs1, .. } => ring::signature::UnparsedPublicKey::new(
                &ring::signature::RSA_PKCS1_2048_8192_SHA256,
                pkcs1,
            )
            .verify(message, &bytes)
            .map_err(|_| refused()),
        }
    }
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("key_id", &self.key_id)
            .field("algorithm", &self.algorithm())
            .field("fingerprint", &self.fingerprint())
            .finish()
    }
}

/// Public keys by key id: the current key and the retired ones whose exports must still verify.
#[derive(Debug, Clone, Default)]
pub struct Keyring {
    keys: BTreeMap<String, VerifyingKey>,
}

impl Keyring {
    /// An empty keyring.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `key` under its key id; returns the key it replaces, if one had that id.
    pub fn insert(&mut self, key: VerifyingKey) -> Option<VerifyingKey> {
        self.keys.insert(key.key_id(), key)
    }

    /// The key with this id.
    pub fn get(&self, key_id: &str) -> Option<&VerifyingKey> {
        self.keys.get(key_id)
    }

    /// The ids held, sorted.
    pub fn key_ids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    /// How many keys are held.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

impl FromIterator<VerifyingKey> for Keyring {
    fn from_iter<I: IntoIterator<Item = VerifyingKey>>(iter: I) -> Self {
        let mut ring = Keyring::new();
        for key in iter {
            ring.insert(key);
        }
        ring
    }
}

#[cfg(test)]
mod tests {

    /// A 2048-bit RSA key made with `openssl genpkey -algorithm RSA`, and its public key as
    /// `openssl pkey -pubout` wrote it (test fixtures; they sign nothing real).
    const RSA_KEY: &str = include_str!("../tests/data/rsa-2048.key");
    const RSA_PUB: &str = include_str!("../tests/data/rsa-2048.pub");

    #[test]
    fn an_openssl_rsa_key_signs_sha256_with_rsa_and_its_public_key_verifies() {
        let key = SigningKey::from_pem(RSA_KEY).unwrap();
        assert_eq!(key.algorithm(), ALGORITHM_RSA);
        assert!(key.key_id().starts_with("rsa:"), "{key:?}");
        let public = VerifyingKey::from_pem(RSA_PUB).unwrap();
        assert_eq!(
            public.fingerprint(),
            key.fingerprint(),
            "same SPKI as OpenSSL's"
        );
        assert_eq!(
            key.public_pem().unwrap().trim(),
            RSA_PUB.trim(),
            "the SPKI PEM OpenSSL writes"
        );
        let signature = key.sign(b"export bytes");
        assert_eq!(STANDARD.decode(&signature).unwrap().len(), 256);
        assert_eq!(public.verify(b"export bytes", &signature), Ok(()));
        assert!(public.verify(b"other bytes", &signature).is_err());
        let again = SigningKey::from_pem(&key.to_pem().unwrap()).unwrap();
        assert_eq!(again.fingerprint(), key.fingerprint());
        // An Ed25519 key does not verify an RSA signature, nor the reverse.
        let ed = SigningKey::generate();
        assert!(ed
            .verifying_key()
            .verify(b"export bytes", &signature)
            .is_err());
        assert!(public.verify(b"m", &ed.sign(b"m")).is_err());
    }

    use super::*;

    #[test]
    fn a_generated_key_signs_and_its_public_pem_verifies() {
        let key = SigningKey::generate();
        let signature = key.sign(b"message");
        let public = VerifyingKey::from_pem(&key.public_pem().unwrap()).unwrap();
        assert_eq!(public.key_id(), key.key_id());
        assert_eq!(public.fingerprint(), key.fingerprint());
        public.verify(b"message", &signature).unwrap();
        let err = public.verify(b"other", &signature).unwrap_err();
        assert!(err.contains(&key.key_id()), "{err}");
        assert!(public.verify(b"message", "not base64!").is_err());
        assert!(public
            .verify(b"message", "AAAA")
            .unwrap_err()
            .contains("64"));
    }

    #[test]
    fn private_pem_round_trips_and_also_serves_as_a_public_key() {
        let key = SigningKey::generate();
        let pem = key.to_pem().unwrap();
        assert!(pem.starts_with(PRIVATE_KEY_LABEL), "{pem}");
        let again = SigningKey::from_pem(&pem).unwrap();
        assert_eq!(again.key_id(), key.key_id());
        assert_eq!(again.sign(b"x"), key.sign(b"x"), "Ed25519 is deterministic");
        let public = VerifyingKey::from_pem(&pem).unwrap();
        public.verify(b"x", &key.sign(b"x")).unwrap();
    }

    #[test]
    fn key_id_and_fingerprint_follow_the_public_key_digest() {
        let key = SigningKey::generate();
        let Public::Ed25519(public) = key.verifying_key().inner else {
            unreachable!("generate makes Ed25519 keys")
        };
        let raw = public.to_bytes();
        let digest = hex::encode(Sha256::digest(raw));
        assert_eq!(key.fingerprint(), format!("sha256:{digest}"));
        assert_eq!(key.key_id(), format!("ed25519:{}", &digest[..16]));
        assert_eq!(key.clone().with_key_id("k1").key_id(), "k1");
    }

    #[test]
    fn an_openssl_style_pkcs8_key_is_read() {
        // RFC 8410 §10.3's example private key.
        let pem = "-----BEGIN PRIVATE KEY-----\n\
                   MC4CAQAwBQYDK2VwBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhC\n\
                   -----END PRIVATE KEY-----\n";
        let key = SigningKey::from_pem(pem).unwrap();
        assert_eq!(
            SigningKey::from_pem(&key.to_pem().unwrap())
                .unwrap()
                .key_id(),
            key.key_id()
        );
    }

    #[test]
    fn debug_never_prints_key_material() {
        let key = SigningKey::generate();
        let pem = key.to_pem().unwrap();
        let secret_b64 = pem.lines().nth(1).unwrap().to_owned();
        let shown = format!("{key:?} {:?}", key.verifying_key());
        assert!(shown.contains(&key.key_id()), "{shown}");
        assert!(!shown.contains(&secret_b64), "{shown}");
        let Private::Ed25519(secret) = &key.inner else {
            unreachable!("generate makes Ed25519 keys")
        };
        assert!(!shown.contains(&hex::encode(secret.to_bytes())), "{shown}");
    }

    #[test]
    fn bad_pem_is_refused_without_echoing_it() {
        let err = SigningKey::from_pem(
            "-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n-----END PRIVATE KEY-----",
        )
        .unwrap_err();
        assert!(!err.contains("c2VjcmV0"), "{err}");
        assert!(SigningKey::from_pem("hello")
            .unwrap_err()
            .contains("PKCS#8"));
        assert!(VerifyingKey::from_pem("hello").is_err());
        let encrypted =
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAA==\n-----END ENCRYPTED PRIVATE KEY-----";
        assert!(SigningKey::from_pem(encrypted)
            .unwrap_err()
            .contains("encrypted"));
    }

    #[test]
    fn a_keyring_finds_keys_by_id() {
        let current = SigningKey::generate();
        let retired = SigningKey::generate();
        let ring: Keyring = [current.verifying_key(), retired.verifying_key()]
            .into_iter()
            .collect();
        assert_eq!(ring.len(), 2);
        let found = ring.get(&retired.key_id()).unwrap();
        found.verify(b"m", &retired.sign(b"m")).unwrap();
        assert!(ring.get("ed25519:0000000000000000").is_none());
    }
}
