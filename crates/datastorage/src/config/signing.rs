//! `signing:`: the key that signs exports and checkpoints (Ed25519, or RSA for upstream's
//! `SHA256withRSA`), and retired keys that still verify older checkpoints.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// `signing:`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct SigningSettings {
    /// PKCS#8 PEM file of the active private key, Ed25519 (`datastorage keys generate` writes
    /// one) or RSA. Unset: an Ed25519 key is generated at start, kept in memory only, and a
    /// warning says so.
    pub key_file: Option<PathBuf>,
    /// Id stored with every signature; unset: `ed25519:` (or `rsa:`) and 16 hex digits of the
    /// public key's SHA-256.
    pub key_id: Option<String>,
    /// Public (or private) key PEM files of retired keys, which still verify what they signed.
    pub verify_key_files: Vec<PathBuf>,
}
