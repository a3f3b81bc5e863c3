//! `hashChain:`: keys of keyed hash chains.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// `hashChain:` — keyed hash chains.
///
/// Without a key, chains use plain SHA-256: any edit is visible, but someone who can write to the
/// database could recompute every later hash. With a key, new rows are chained with
/// HMAC-SHA-256 and the key's id is stored per row; verification needs the key, which never
/// enters the database.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct HashChainSettings {
    /// File holding the active key (at least 32 bytes; a trailing newline is ignored).
    pub key_file: Option<PathBuf>,
    /// Id stored with every row the active key signs.
    pub key_id: Option<String>,
    /// Retired keys still needed to verify older rows: key id → key file.
    pub verify_key_files: BTreeMap<String, PathBuf>,
    /// With a key configured, still accept unkeyed (`sha256`) rows as valid: for rows written
    /// before the key was introduced. Off, such rows are reported, since anyone with write
    /// access to the database could have recomputed them.
    pub accept_unkeyed: bool,
}
