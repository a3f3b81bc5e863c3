//! Backend-independent hash-chain logic: linking new events to their chain heads, and
//! verifying a stored chain.

use std::collections::HashMap;

use chrono::Utc;
use datastorage_api::chain::{chain_hash, stored_content, ALGORITHM_SHA256};
use datastorage_api::{TamperedEvent, ValidatedEvent, VerifyChainResponse};

use super::ChainRows;

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
}

/// Assigns sequence numbers and hashes to `events` in order, starting from `heads`
/// (`correlation_id → (last_sequence, last_hash)`), and advances `heads`.
pub fn link<'a>(
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
            let hash = chain_hash(&previous_hash, event, sequence);
            *head = (sequence, hash.clone());
            Linked {
                event,
                sequence,
                previous_hash,
                hash,
                algorithm: ALGORITHM_SHA256,
            }
        })
        .collect()
}

/// Walks a chain in sequence order and reports every broken link: edited content, a broken
/// `previous_event_hash` link, a missing sequence number, or a head that does not match the
/// last row (truncation).
pub fn verify(correlation_id: &str, chain: ChainRows) -> VerifyChainResponse {
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
        let recomputed = chain_hash(
            &row.previous_event_hash,
            &stored_content(&row),
            row.chain_sequence,
        );
        if recomputed != row.event_hash {
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
