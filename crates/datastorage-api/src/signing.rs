//! Ed25519 keys and signatures of signed exports.
//!
//! Keys travel as PEM: a private key as PKCS#8 (`-----BEGIN PRIVATE KEY-----`, the form
//! `openssl genpkey -algorithm ed25519` writes), a public key as SPKI
//! (`-----BEGIN PUBLIC KEY-----`). Signatures are the 64 signature bytes in standard base64.
//!
//! A key is named by a key id, by default `ed25519:` and the first 16 hex digits of the SHA-256
//! of its raw 32-byte public key; its fingerprint is the whole digest, `sha256:<hex>`. A
//! [`Keyring`] holds several public keys by id, so exports signed with a retired key still
//! verify. `Debug` of a key prints its id and fingerprint, never key material.

use std::collections::BTreeMap;
use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::spki::{DecodePublicKey, EncodePublicKey};
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey, KeypairBytes};
use ed25519_dalek::{Signature, Signer as _};
use sha2::{Digest, Sha256};

/// Name of the signature algorithm, as written in an export trailer's `algorithm`.
pub const ALGORITHM_ED25519: &str = "ed25519";

/// PEM label of an unencrypted PKCS#8 private key.
const PRIVATE_KEY_LABEL: &str = "-----BEGIN PRIVATE KEY-----";
/// PEM label of an encrypted PKCS#8 private key, which this module does not read.
const ENCRYPTED_KEY_LABEL: &str = "-----BEGIN ENCRYPTED PRIVATE KEY-----";

/// SHA-256 of a raw public key, the source of both its id and its fingerprint.
fn public_key_digest(public: &ed25519_dalek::VerifyingKey) -> String {
    hex::encode(Sha256::digest(public.as_bytes()))
}

/// The default key id of a public key: `ed25519:` and 16 hex digits of its SHA-256.
fn default_key_id(public: &ed25519_dalek::VerifyingKey) -> String {
    let digest = public_key_digest(public);
    format!("{ALGORITHM_ED25519}:{}", &digest[..16])
}

/// The fingerprint of a public key: `sha256:` and the hex SHA-256 of its 32 raw bytes.
fn fingerprint_of(public: &ed25519_dalek::VerifyingKey) -> String {
    format!("sha256:{}", public_key_digest(public))
}

/// An Ed25519 private key with its key id.
#[derive(Clone)]
pub struct SigningKey {
    inner: ed25519_dalek::SigningKey,
    key_id: String,
}

impl SigningKey {
    /// Reads a PKCS#8 private-key PEM (`-----BEGIN PRIVATE KEY-----`). The error never quotes
    /// the input.
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
        let inner = ed25519_dalek::SigningKey::from_pkcs8_pem(pem)
            .map_err(|e| format!("not an Ed25519 PKCS#8 private key: {e}"))?;
        Ok(Self::from_dalek(inner))
    }

    /// A new random key from the operating system's random source.
    pub fn generate() -> Self {
        Self::from_dalek(ed25519_dalek::SigningKey::generate(&mut rand_core::OsRng))
    }

    fn from_dalek(inner: ed25519_dalek::SigningKey) -> Self {
        let key_id = default_key_id(&inner.verifying_key());
        Self { inner, key_id }
    }

    /// The same key under another key id (for a configured name instead of the default).
    pub fn with_key_id(mut self, key_id: impl Into<String>) -> Self {
        self.key_id = key_id.into();
        self
    }

    /// The private key as PKCS#8 PEM, without the optional public key (the form OpenSSL
    /// writes and reads). Handle the result as a secret.
    pub fn to_pem(&self) -> Result<String, String> {
        let bytes = KeypairBytes {
            secret_key: self.inner.to_bytes(),
            public_key: None,
        };
        bytes
            .to_pkcs8_pem(LineEnding::LF)
            .map(|pem| pem.as_str().to_owned())
            .map_err(|e| format!("cannot encode the private key: {e}"))
    }

    /// The public key as SPKI PEM (`-----BEGIN PUBLIC KEY-----`).
    pub fn public_pem(&self) -> Result<String, String> {
        self.verifying_key().to_pem()
    }

    /// The public half, under the same key id.
    pub fn verifying_key(&self) -> VerifyingKey {
        VerifyingKey {
            inner: self.inner.verifying_key(),
            key_id: self.key_id.clone(),
        }
    }

    /// The key id written into what this key signs.
    pub fn key_id(&self) -> String {
        self.key_id.clone()
    }

    /// `sha256:<hex>` of the raw public key.
    pub fn fingerprint(&self) -> String {
        fingerprint_of(&self.inner.verifying_key())
    }

    /// Signs `message`: the 64 signature bytes in standard base64.
    pub fn sign(&self, message: &[u8]) -> String {
        STANDARD.encode(self.inner.sign(message).to_bytes())
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("key_id", &self.key_id)
            .field("fingerprint", &self.fingerprint())
            .finish_non_exhaustive()
    }
}

/// An Ed25519 public key with its key id.
#[derive(Clone, PartialEq, Eq)]
pub struct VerifyingKey {
    inner: ed25519_dalek::VerifyingKey,
    key_id: String,
}

impl VerifyingKey {
    /// Reads an SPKI public-key PEM, or a PKCS#8 private-key PEM whose public half it keeps
    /// (so the key file a server signs with also serves to verify).
    pub fn from_pem(pem: &str) -> Result<Self, String> {
        let pem = pem.trim();
        if pem.starts_with(PRIVATE_KEY_LABEL) || pem.starts_with(ENCRYPTED_KEY_LABEL) {
            return SigningKey::from_pem(pem).map(|key| key.verifying_key());
        }
        let inner = ed25519_dalek::VerifyingKey::from_public_key_pem(pem)
            .map_err(|e| format!("not an Ed25519 public key (SPKI PEM) or private key: {e}"))?;
        Ok(Self {
            key_id: default_key_id(&inner),
            inner,
        })
    }

    /// The same key under another key id.
    pub fn with_key_id(mut self, key_id: impl Into<String>) -> Self {
        self.key_id = key_id.into();
        self
    }

    /// The public key as SPKI PEM.
    pub fn to_pem(&self) -> Result<String, String> {
        self.inner
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| format!("cannot encode the public key: {e}"))
    }

    /// The key id this key verifies under.
    pub fn key_id(&self) -> String {
        self.key_id.clone()
    }

    /// `sha256:<hex>` of the raw public key.
    pub fn fingerprint(&self) -> String {
        fingerprint_of(&self.inner)
    }

    /// Checks a base64 signature over `message` (strict Ed25519: no malleable signatures, no
    /// weak keys).
    pub fn verify(&self, message: &[u8], signature_b64: &str) -> Result<(), String> {
        let bytes = STANDARD
            .decode(signature_b64.trim())
            .map_err(|e| format!("the signature is not base64: {e}"))?;
        let signature = Signature::from_slice(&bytes).map_err(|_| {
            format!(
                "the signature is {} bytes, an Ed25519 signature is 64",
                bytes.len()
            )
        })?;
        self.inner
            .verify_strict(message, &signature)
            .map_err(|_| format!("the signature does not verify with key {}", self.key_id))
    }
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("key_id", &self.key_id)
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
        let raw = key.verifying_key().inner.to_bytes();
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
        assert!(
            !shown.contains(&hex::encode(key.inner.to_bytes())),
            "{shown}"
        );
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
