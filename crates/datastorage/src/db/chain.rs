//! Backend-independent hash-chain logic: linking new events to their chain heads, and
//! verifying a stored chain.

use std::collections::HashMap;
use std::fmt;

use anyhow::{ensure, Context as _};
use chrono::Utc;
use datastorage_api::chain::{
    chain_hash, chain_hmac, stored_content, ALGORITHM_HMAC_SHA256, ALGORITHM_SHA256,
};
use datastorage_api::{AuditEvent, TamperedEvent, ValidatedEvent, VerifyChainResponse};

use super::ChainRows;
use crate::config::HashChainSettings;

/// Shortest accepted HMAC key.
pub const MIN_KEY_BYTES: usize = 32;

/// Computes and checks chain hashes: plain SHA-256, or HMAC-SHA-256 with the active key; holds
/// retired keys for verification. Keys never print.
#[derive(Clone, Default)]
pub struct Hasher {
    active: Option<String>,
    keys: HashMap<String, Vec<u8>>,
    accept_unkeyed: bool,
}

impl fmt::Debug for Hasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ids: Vec<&String> = self.keys.keys().collect();
        ids.sort();
        f.debug_struct("Hasher")
            .field("active", &self.active)
            .field("key_ids", &ids)
            .finish()
    }
}

impl Hasher {
    /// Reads the key files named by `hashChain`.
    pub fn from_settings(s: &HashChainSettings) -> anyhow::Result<Self> {
        let read = |key: &str, path: &std::path::Path| -> anyhow::Result<Vec<u8>> {
            let mut bytes = std::fs::read(path)
                .with_context(|| format!("{key}: cannot read {}", path.display()))?;
            while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                bytes.pop();
            }
            ensure!(
                bytes.len() >= MIN_KEY_BYTES,
                "{key}: the key in {} must be at least {MIN_KEY_BYTES} bytes (got {})",
                path.display(),
                bytes.len()
            );
            Ok(bytes)
        };
        let mut hasher = Hasher {
            accept_unkeyed: s.accept_unkeyed,
            ..Hasher::default()
        };
        for (id, path) in &s.verify_key_files {
            hasher.keys.insert(
                id.clone(),
                read(&format!("hashChain.verifyKeyFiles.{id}"), path)?,
            );
        }
        if let (Some(path), Some(id)) = (&s.key_file, &s.key_id) {
            hasher
                .keys
                .insert(id.clone(), read("hashChain.keyFile", path)?);
            hasher.active = Some(id.clone());
        }
        Ok(hasher)
    }

    /// `(hash, algorithm, key id)` of a new event.
    fn sign(
        &self,
        previous_hash: &str,
        event: &ValidatedEvent,
        sequence: i64,
    ) -> (String, &'static str, Option<String>) {
        match &self.active {
            Some(id) => (
                chain_hmac(&self.keys[id], previous_hash, event, sequence),
                ALGORITHM_HMAC_SHA256,
                Some(id.clone()),
            ),
            None => (
                chain_hash(previous_hash, event, sequence),
                ALGORITHM_SHA256,
                None,
            ),
        }
    }

    /// The hash a stored row should carry, or why it cannot be checked.
    fn recompute(&self, row: &AuditEvent) -> Result<String, String> {
        let content = stored_content(row);
        match row.hash_algorithm.as_str() {
            ALGORITHM_SHA256 if !self.keys.is_empty() && !self.accept_unkeyed => Err(
                "unkeyed sha256 row while chain keys are configured: anyone with write access to the \
                 database could have recomputed it (set hashChain.acceptUnkeyed for rows written \
                 before the key)"
                    .to_owned(),
            ),
            ALGORITHM_SHA256 => Ok(chain_hash(
                &row.previous_event_hash,
                &content,
                row.chain_sequence,
            )),
            ALGORITHM_HMAC_SHA256 => {
                let id = row.hash_key_id.as_deref().unwrap_or_default();
                let key = self.keys.get(id).ok_or_else(|| format!("signed with key {id:?}, which is not configured (hashChain.keyFile / verifyKeyFiles): cannot verify"))?;
                Ok(chain_hmac(
                    key,
                    &row.previous_event_hash,
                    &content,
                    row.chain_sequence,
                ))
            }
            other => Err(format!("unknown hash_algorithm {other:?}")),
        }
    }
}

/// A new event with its chain position.
#[derive(Debug, Clone)]
pub struct Linked<'a> {
    /// The event.
    pub event: &'a ValidatedEvent,
    /// Its sequence number in its chain.
    pub sequence: i64,
    /// Hash of the event before it (empty for the first).
    pub previous_hash: String,
    /// Its own hash.
    pub hash: String,
    /// Algorithm name stored with the row.
    pub algorithm: &'static str,
    /// Key id stored with the row (keyed chains).
    pub key_id: Option<String>,
}

/// Assigns sequence numbers and hashes to `events` in order, starting from `heads`
/// (`correlation_id → (last_sequence, last_hash)`), and advances `heads`.
pub fn link<'a>(
    hasher: &Hasher,
    events: &[&'a ValidatedEvent],
    heads: &mut HashMap<String, (i64, String)>,
) -> Vec<Linked<'a>> {
    events
        .iter()
        .map(|event| {
            let head = heads
                .entry(event.correlation_id.clone())
                .or_insert((0, String::new()));
            let sequence = head.0 + 1;
            let previous_hash = std::mem::take(&mut head.1);
            let (hash, algorithm, key_id) = hasher.sign(&previous_hash, event, sequence);
            *head = (sequence, hash.clone());
            Linked {
                event,
                sequence,
                previous_hash,
                hash,
                algorithm,
                key_id,
            }
        })
        .collect()
}

/// Walks a chain in sequence order and reports every broken link: edited content, a broken
/// `previous_event_hash` link, a missing sequence number, or a head that does not match the
/// last row (truncation).
pub fn verify(hasher: &Hasher, correlation_id: &str, chain: ChainRows) -> VerifyChainResponse {
    let mut tampered = Vec::new();
    let mut bad_rows = 0u64;
    let mut previous = String::new();
    let mut expected_sequence = 1i64;
    let total = chain.rows.len() as u64;
    for row in chain.rows {
        let row = match row {
            Ok(row) => row,
            Err(message) => {
                bad_rows += 1;
                tampered.push(TamperedEvent {
                    event_id: String::new(),
                    event_timestamp: None,
                    expected_hash: String::new(),
                    actual_hash: String::new(),
                    previous_hash: previous.clone(),
                    message: format!("stored row cannot be read back: {message}"),
                });
                expected_sequence += 1;
                continue;
            }
        };
        let mut problems = Vec::new();
        if row.chain_sequence != expected_sequence {
            problems.push(format!(
                "sequence {} follows {}: events {}..{} are missing",
                row.chain_sequence,
                expected_sequence - 1,
                expected_sequence,
                row.chain_sequence - 1
            ));
        }
        if row.previous_event_hash != previous {
            problems.push(
                "previous_event_hash does not match the hash of the event before it".to_owned(),
            );
        }
        let recomputed = match hasher.recompute(&row) {
            Ok(h) => h,
            Err(why) => {
                problems.push(why);
                String::new()
            }
        };
        if !recomputed.is_empty() && recomputed != row.event_hash {
            problems.push(
                "content changed: the recomputed hash differs from the stored one".to_owned(),
            );
        }
        if !problems.is_empty() {
            bad_rows += 1;
            tampered.push(TamperedEvent {
                event_id: row.event_id.to_string(),
                event_timestamp: Some(row.event_timestamp),
                expected_hash: recomputed,
                actual_hash: row.event_hash.clone(),
                previous_hash: row.previous_event_hash.clone(),
                message: problems.join("; "),
            });
        }
        previous = row.event_hash;
        expected_sequence = row.chain_sequence + 1;
    }
    if let Some((last_sequence, last_hash)) = &chain.head {
        if *last_sequence != expected_sequence - 1 || *last_hash != previous {
            tampered.push(TamperedEvent {
                event_id: String::new(),
                event_timestamp: None,
                expected_hash: last_hash.clone(),
                actual_hash: previous.clone(),
                previous_hash: String::new(),
                message: format!(
                    "the chain head records {last_sequence} events but the rows end at {}: events were removed from the end",
                    expected_sequence - 1
                ),
            });
        }
    }
    let is_valid = tampered.is_empty();
    let message = if total == 0 {
        format!("no events with correlation_id {correlation_id:?}")
    } else if is_valid {
        format!("hash chain intact: {total} events verified")
    } else {
        format!(
            "hash chain broken: {} problem(s) found in {total} events",
            tampered.len()
        )
    };
    VerifyChainResponse {
        correlation_id: correlation_id.to_owned(),
        is_valid,
        total_events: total,
        verified_events: total - bad_rows,
        tampered_events: tampered,
        verification_time: Utc::now(),
        message,
    }
}
