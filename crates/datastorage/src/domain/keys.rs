//! [`Signer`]: the service's Ed25519 key for exports and checkpoints, and the keyring that
//! verifies what it, and retired keys, signed. Keys come from files (`signing:`); each signature
//! names its key id, so a retired key listed in `signing.verifyKeyFiles` still verifies.

use anyhow::Context as _;
use datastorage_api::signing::{Keyring, SigningKey, VerifyingKey};

use crate::config::SigningSettings;

/// The active key and every key that verifies.
#[derive(Debug)]
pub struct Signer {
    key: SigningKey,
    keyring: Keyring,
    ephemeral: bool,
}

impl Signer {
    /// Reads `signing.keyFile` and `signing.verifyKeyFiles`; without a key file, generates a
    /// key kept in memory only (what it signs cannot be verified after a restart).
    pub fn from_settings(s: &SigningSettings) -> anyhow::Result<Self> {
        let (mut key, ephemeral) = match &s.key_file {
            Some(path) => {
                let pem = std::fs::read_to_string(path)
                    .with_context(|| format!("signing.keyFile: cannot read {}", path.display()))?;
                let key = SigningKey::from_pem(&pem).map_err(|e| {
                    anyhow::anyhow!(
                        "signing.keyFile: {} is not an Ed25519 PKCS#8 PEM key: {e}",
                        path.display()
                    )
                })?;
                (key, false)
            }
            None => (SigningKey::generate(), true),
        };
        if let Some(id) = &s.key_id {
            anyhow::ensure!(
                !id.trim().is_empty() && id.len() <= 100,
                "signing.keyId must be 1 to 100 characters"
            );
            key = key.with_key_id(id.clone());
        }
        let mut keyring = Keyring::new();
        keyring.insert(key.verifying_key());
        for path in &s.verify_key_files {
            let pem = std::fs::read_to_string(path).with_context(|| {
                format!("signing.verifyKeyFiles: cannot read {}", path.display())
            })?;
            let k = VerifyingKey::from_pem(&pem)
                .map_err(|e| anyhow::anyhow!("signing.verifyKeyFiles: {}: {e}", path.display()))?;
            keyring.insert(k);
        }
        Ok(Self {
            key,
            keyring,
            ephemeral,
        })
    }

    /// The active key.
    pub fn key(&self) -> &SigningKey {
        &self.key
    }

    /// Every key that verifies: the active one and the retired ones.
    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    /// Whether the active key was generated at start (no `signing.keyFile`).
    pub fn is_ephemeral(&self) -> bool {
        self.ephemeral
    }
}
