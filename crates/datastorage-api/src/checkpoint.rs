//! Signed checkpoints of chain heads: the record, its canonical bytes and its signature.
//!
//! A checkpoint commits to the head (last sequence and hash) of every chain changed since the
//! previous checkpoint: `heads_sha256` is the SHA-256 of the lines `correlation_id \t sequence
//! \t hash \n`, sorted by correlation id byte by byte. It links to the previous checkpoint by
//! that one's `checkpoint_hash`, the SHA-256 of its signed bytes; the signed bytes are the RFC
//! 8785 JSON of the record without `checkpoint_hash` and `signature`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::chain::canonical_timestamp;
use crate::signing::{Keyring, SigningKey};

/// One signed checkpoint (`GET /api/v1/audit/checkpoints/latest`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Checkpoint {
    /// 1, 2, 3, … with no gap.
    pub checkpoint_id: i64,
    /// When it was written.
    pub created_at: DateTime<Utc>,
    /// Heads changed since this time are in it (a margin before the previous checkpoint, for
    /// writes that were committing then); absent for the first, which holds every head.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub covers_from: Option<DateTime<Utc>>,
    /// `checkpoint_hash` of the previous checkpoint; empty for the first.
    pub previous_hash: String,
    /// Heads it holds.
    pub chains: u64,
    /// SHA-256 (hex) of its heads, as the module docs say.
    pub heads_sha256: String,
    /// SHA-256 (hex) of its signed bytes.
    pub checkpoint_hash: String,
    /// `ed25519`, or `rsa-pkcs1-sha256`.
    pub algorithm: String,
    /// The signing key's id.
    pub key_id: String,
    /// Base64 Ed25519 signature of its signed bytes.
    pub signature: String,
}

/// The SHA-256 (hex) of heads `(correlation_id, sequence, hash)`, sorted here.
pub fn heads_sha256(heads: &mut [(String, i64, String)]) -> String {
    heads.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let mut digest = Sha256::new();
    for (cid, seq, hash) in heads.iter() {
        digest.update(cid.as_bytes());
        digest.update(b"\t");
        digest.update(seq.to_string().as_bytes());
        digest.update(b"\t");
        digest.update(hash.as_bytes());
        digest.update(b"\n");
    }
    hex::encode(digest.finalize())
}

impl Checkpoint {
    /// The bytes the signature covers.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let value = serde_json::json!({
            "checkpoint_id": self.checkpoint_id,
            "created_at": canonical_timestamp(&self.created_at),
            "covers_from": self.covers_from.as_ref().map(canonical_timestamp),
            "previous_hash": self.previous_hash,
            "chains": self.chains,
            "heads_sha256": self.heads_sha256,
            "algorithm": self.algorithm,
            "key_id": self.key_id,
        });
        // A `Value` of strings and integers always canonicalizes.
        serde_jcs::to_vec(&value).unwrap_or_default()
    }

    /// A new checkpoint over `heads`, signed with `key`.
    pub fn seal(
        checkpoint_id: i64,
        created_at: DateTime<Utc>,
        covers_from: Option<DateTime<Utc>>,
        previous_hash: String,
        heads: &mut [(String, i64, String)],
        key: &SigningKey,
    ) -> Self {
        let mut c = Checkpoint {
            checkpoint_id,
            created_at,
            covers_from,
            previous_hash,
            chains: heads.len() as u64,
            heads_sha256: heads_sha256(heads),
            checkpoint_hash: String::new(),
            algorithm: key.algorithm().to_owned(),
            key_id: key.key_id(),
            signature: String::new(),
        };
        let bytes = c.signed_bytes();
        c.checkpoint_hash = hex::encode(Sha256::digest(&bytes));
        c.signature = key.sign(&bytes);
        c
    }

    /// Checks its hash and signature (with the key it names, from `keys`), and, given its
    /// heads, their digest and count.
    pub fn verify(
        &self,
        keys: &Keyring,
        heads: Option<&mut [(String, i64, String)]>,
    ) -> Result<(), String> {
        let bytes = self.signed_bytes();
        if hex::encode(Sha256::digest(&bytes)) != self.checkpoint_hash {
            return Err(format!(
                "checkpoint {}: its hash does not match its content (edited)",
                self.checkpoint_id
            ));
        }
        let key = keys.get(&self.key_id).ok_or_else(|| {
            format!(
                "checkpoint {} is signed with key {:?}, which is not configured (signing.keyFile / verifyKeyFiles)",
                self.checkpoint_id, self.key_id
            )
        })?;
        key.verify(&bytes, &self.signature)
            .map_err(|e| format!("checkpoint {}: signature invalid: {e}", self.checkpoint_id))?;
        if let Some(heads) = heads {
            if heads.len() as u64 != self.chains || heads_sha256(heads) != self.heads_sha256 {
                return Err(format!(
                    "checkpoint {}: its stored heads differ from the heads it signed (edited)",
                    self.checkpoint_id
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_checkpoint_verifies_and_an_edit_does_not() {
        let key = SigningKey::generate();
        let keys: Keyring = [key.verifying_key()].into_iter().collect();
        let mut heads = vec![
            ("b".to_owned(), 3, "h3".to_owned()),
            ("a".to_owned(), 9, "h9".to_owned()),
        ];
        let c = Checkpoint::seal(1, Utc::now(), None, String::new(), &mut heads, &key);
        assert_eq!(c.verify(&keys, Some(&mut heads)), Ok(()));
        let mut forged = c.clone();
        forged.chains = 1;
        assert!(forged.verify(&keys, None).is_err());
        heads[0].1 = 8;
        assert!(c
            .verify(&keys, Some(&mut heads))
            .unwrap_err()
            .contains("heads"));
        let other: Keyring = [SigningKey::generate().verifying_key()]
            .into_iter()
            .collect();
        assert!(c.verify(&other, None).is_err());
    }
}
