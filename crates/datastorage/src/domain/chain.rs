//! The hash chain, apart from any storage: linking new events to their chain heads, telling an
//! idempotent replay from a conflict, and verifying a stored chain.
//!
//! Pure logic: no SQL, no HTTP. The backends call [`link`] and [`Hasher::is_replay`] inside their
//! write transactions, and feed the rows of a chain, page by page, to a [`ChainVerifier`].

use std::collections::HashMap;
use std::fmt;

use anyhow::{ensure, Context as _};
use chrono::DateTime;
use chrono::Utc;
use datastorage_api::chain::{chain_hash, chain_hmac, Form};
use datastorage_api::{
    AuditEvent, ChainVerdict, TamperedEvent, ValidatedEvent, VerifyChainResponse,
};
use uuid::Uuid;

use crate::config::{ChainAppend, Settings, AUDIT_KEY_ID};

/// Shortest accepted HMAC key.
pub const MIN_KEY_BYTES: usize = 32;

/// Computes and checks chain hashes: plain SHA-256, or HMAC-SHA-256 with the active key; holds
/// retired keys for verification, and the rule of who may append to a chain
/// (`auth.chainAppend`). Keys never print.
#[derive(Clone)]
pub struct Hasher {
    active: Option<String>,
    keys: HashMap<String, Vec<u8>>,
    accept_unkeyed: bool,
    append: ChainAppend,
}

impl Default for Hasher {
    fn default() -> Self {
        Self {
            active: None,
            keys: HashMap::new(),
            accept_unkeyed: false,
            append: ChainAppend::Any,
        }
    }
}

impl fmt::Debug for Hasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hasher")
            .field("active", &self.active)
            .field("key_ids", &self.key_ids())
            .finish()
    }
}

impl Hasher {
    /// Reads the key files named by `hashChain`, or upstream's `audit` key when
    /// `hashChain.keyFile` is not set (its id is [`AUDIT_KEY_ID`]).
    pub fn from_settings(settings: &Settings) -> anyhow::Result<Self> {
        let s = &settings.hash_chain;
        let long_enough = |key: &str, path: &std::path::Path, bytes: Vec<u8>| {
            ensure!(
                bytes.len() >= MIN_KEY_BYTES,
                "{key}: the key in {} must be at least {MIN_KEY_BYTES} bytes (got {})",
                path.display(),
                bytes.len()
            );
            Ok(bytes)
        };
        let read = |key: &str, path: &std::path::Path| -> anyhow::Result<Vec<u8>> {
            let mut bytes = std::fs::read(path)
                .with_context(|| format!("{key}: cannot read {}", path.display()))?;
            while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                bytes.pop();
            }
            long_enough(key, path, bytes)
        };
        let mut hasher = Hasher {
            accept_unkeyed: s.accept_unkeyed,
            append: settings.auth.chain_append,
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
        } else if let Some((path, name)) = settings.audit.as_ref().and_then(|a| {
            Some((
                a.hash_key_secrets_file.as_ref()?,
                a.hash_key_key.as_deref()?,
            ))
        }) {
            // Upstream's form: a YAML mapping whose value under `hashKeyKey` is the key text.
            let text = std::fs::read_to_string(path).with_context(|| {
                format!("audit.hashKeySecretsFile: cannot read {}", path.display())
            })?;
            let map: std::collections::BTreeMap<String, String> = serde_norway::from_str(&text)
                .with_context(|| {
                    format!(
                        "audit.hashKeySecretsFile {} must be a YAML mapping of keys to strings",
                        path.display()
                    )
                })?;
            let key = map.get(name).with_context(|| {
                format!(
                    "audit.hashKeySecretsFile {} has no key {name:?} (audit.hashKeyKey)",
                    path.display()
                )
            })?;
            let key = long_enough("audit.hashKeySecretsFile", path, key.as_bytes().to_vec())?;
            hasher.keys.insert(AUDIT_KEY_ID.to_owned(), key);
            hasher.active = Some(AUDIT_KEY_ID.to_owned());
        }
        Ok(hasher)
    }

    /// The id of the key that signs new rows, if any.
    pub fn active_key_id(&self) -> Option<&str> {
        self.active.as_deref()
    }

    /// Every configured key id, sorted (never the keys).
    pub fn key_ids(&self) -> Vec<&str> {
        let mut ids: Vec<&str> = self.keys.keys().map(String::as_str).collect();
        ids.sort_unstable();
        ids
    }

    /// `(hash, algorithm, key id)` of a new event: always the current form, which covers
    /// `ingested_by`.
    fn sign(
        &self,
        previous_hash: &str,
        event: &ValidatedEvent,
        sequence: i64,
    ) -> (String, &'static str, Option<String>) {
        match &self.active {
            Some(id) => (
                chain_hmac(&self.keys[id], previous_hash, event, sequence, Form::V2),
                Form::V2.algorithm(true),
                Some(id.clone()),
            ),
            None => (
                chain_hash(previous_hash, event, sequence, Form::V2),
                Form::V2.algorithm(false),
                None,
            ),
        }
    }

    /// The hash a stored row should carry, or why it cannot be checked.
    /// Whether a stored row's content still gives its stored hash: `Some(true)` or
    /// `Some(false)`, `None` when it cannot be told (its key is not configured).
    pub fn content_matches(&self, row: &AuditEvent) -> Option<bool> {
        match self.recompute(row) {
            Ok(hash) => Some(hash == row.event_hash),
            Err(Uncheckable::MissingKey(_)) => None,
            Err(Uncheckable::Suspect(_)) => Some(false),
        }
    }

    fn recompute(&self, row: &AuditEvent) -> Result<String, Uncheckable> {
        if row.ingested_by.is_some()
            && Form::of(&row.hash_algorithm).is_some_and(|(f, _)| f == Form::V1)
        {
            return Err(Uncheckable::Suspect(format!(
                "ingested_by is set on a {} row, whose hash does not cover it: it was added after the write",
                row.hash_algorithm
            )));
        }
        self.hash_as_stored(
            &row.hash_algorithm,
            row.hash_key_id.as_deref(),
            &row.previous_event_hash,
            row,
            row.chain_sequence,
        )
    }

    /// Whether `event` may be appended to a chain that `started_by` started: always under
    /// `auth.chainAppend: any`, and for chains from before principals existed (`None`);
    /// otherwise only by the same principal.
    pub fn may_append(&self, event: &ValidatedEvent, started_by: Option<&str>) -> bool {
        match (self.append, started_by) {
            (ChainAppend::Any, _) | (_, None) => true,
            (ChainAppend::Starter, Some(starter)) => event.ingested_by.as_deref() == Some(starter),
        }
    }

    /// Whether `event` is an idempotent replay of the stored event `stored` (same id): its
    /// content, put at the stored position and hashed the way the stored row was, gives the
    /// stored hash. Nothing of the stored row but its chain fields is read, so a replay check
    /// never decodes `event_data`. An event whose row was signed with a key that is no longer
    /// configured cannot be checked and counts as a conflict.
    pub fn is_replay(&self, stored: &StoredLink, event: &ValidatedEvent) -> bool {
        self.hash_as_stored(
            &stored.algorithm,
            stored.key_id.as_deref(),
            &stored.previous_hash,
            event,
            stored.sequence,
        )
        .is_ok_and(|hash| hash == stored.hash)
    }

    /// The hash of `content` at `sequence` after `previous_hash`, with the algorithm and key a
    /// stored row names, or why it cannot be computed.
    fn hash_as_stored(
        &self,
        algorithm: &str,
        key_id: Option<&str>,
        previous_hash: &str,
        content: &impl datastorage_api::chain::Canonical,
        sequence: i64,
    ) -> Result<String, Uncheckable> {
        match Form::of(algorithm) {
            Some((_, false)) if !self.keys.is_empty() && !self.accept_unkeyed => Err(Uncheckable::Suspect(format!(
                "unkeyed {algorithm} row while chain keys are configured: anyone with write access to the \
                 database could have recomputed it (set hashChain.acceptUnkeyed for rows written \
                 before the key)"
            ))),
            Some((form, false)) => Ok(chain_hash(previous_hash, content, sequence, form)),
            Some((form, true)) => {
                let id = key_id.unwrap_or_default();
                let key = self.keys.get(id).ok_or_else(|| Uncheckable::MissingKey(format!("signed with key {id:?}, which is not configured (hashChain.keyFile / verifyKeyFiles): cannot verify")))?;
                Ok(chain_hmac(key, previous_hash, content, sequence, form))
            }
            None => Err(Uncheckable::Suspect(format!("unknown hash_algorithm {algorithm:?}"))),
        }
    }
}

/// The chain position of a stored event, as a replay check needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredLink {
    /// The event's id.
    pub event_id: Uuid,
    /// Its stored timestamp (a replay answers with it).
    pub event_timestamp: DateTime<chrono::Utc>,
    /// Its sequence number in its chain.
    pub sequence: i64,
    /// Hash of the event before it.
    pub previous_hash: String,
    /// Its own hash.
    pub hash: String,
    /// `hash_algorithm` of the row.
    pub algorithm: String,
    /// `hash_key_id` of the row.
    pub key_id: Option<String>,
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

/// Most broken links listed in one answer; the count and the message cover the rest. A chain
/// rewritten end to end would otherwise make the answer as large as the chain.
pub const MAX_LISTED_PROBLEMS: usize = 1000;

/// Why a stored row's hash could not be recomputed.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Uncheckable {
    /// The row is signed with a key that is not configured: nothing says it was changed.
    MissingKey(String),
    /// The row itself is suspect (an unkeyed row among keyed ones, an unknown algorithm).
    Suspect(String),
}

/// Verifies one chain row by row, in sequence order, holding only the previous row's hash:
/// memory stays flat whatever the chain's length. Reports an edited row (its recomputed hash
/// differs), a broken `previous_event_hash` link, a missing sequence number (deleted rows), a
/// row that cannot be read back, and a head that does not match the last row (truncation).
#[derive(Debug)]
pub struct ChainVerifier<'a> {
    hasher: &'a Hasher,
    correlation_id: String,
    previous: String,
    expected_sequence: i64,
    total: u64,
    bad_rows: u64,
    unverifiable: u64,
    problems: u64,
    listed: Vec<TamperedEvent>,
    /// Runs retention removed: first and last sequence, hash of the last, by first sequence.
    purges: Vec<(i64, i64, String)>,
    purged: u64,
}

impl<'a> ChainVerifier<'a> {
    /// A verifier for the chain of `correlation_id`.
    pub fn new(hasher: &'a Hasher, correlation_id: &str) -> Self {
        Self {
            hasher,
            correlation_id: correlation_id.to_owned(),
            previous: String::new(),
            expected_sequence: 1,
            total: 0,
            bad_rows: 0,
            unverifiable: 0,
            problems: 0,
            listed: Vec::new(),
            purges: Vec::new(),
            purged: 0,
        }
    }

    /// The runs of sequences retention removed from this chain (`audit_chain_purges`): first,
    /// last, and the hash of the last. A gap they cover exactly, whose next row links to the
    /// recorded hash, is not a break.
    pub fn set_purges(&mut self, mut purges: Vec<(i64, i64, String)>) {
        purges.sort_by_key(|p| p.0);
        self.purges = purges;
    }

    /// If retention removed exactly the sequences `from..=to`, the hash of event `to`.
    fn purged_through(&self, from: i64, to: i64) -> Option<String> {
        let mut next = from;
        for (first, last, h) in &self.purges {
            if *last < next {
                continue;
            }
            if *first > next {
                return None;
            }
            next = last + 1;
            if *last >= to {
                return (*last == to).then(|| h.clone());
            }
        }
        None
    }

    /// The sequence number after the last row seen (where the next page starts).
    pub fn next_sequence(&self) -> i64 {
        self.expected_sequence
    }

    fn report(&mut self, problem: TamperedEvent) {
        self.problems += 1;
        if self.listed.len() < MAX_LISTED_PROBLEMS {
            self.listed.push(problem);
        }
    }

    /// Checks the next row of the chain (a row that cannot be decoded is its error message).
    pub fn push(&mut self, row: Result<AuditEvent, String>) {
        self.total += 1;
        let row = match row {
            Ok(row) => row,
            Err(message) => {
                self.bad_rows += 1;
                let previous_hash = self.previous.clone();
                self.report(TamperedEvent {
                    event_id: String::new(),
                    event_timestamp: None,
                    expected_hash: String::new(),
                    actual_hash: String::new(),
                    previous_hash,
                    message: format!("stored row cannot be read back: {message}"),
                });
                self.expected_sequence += 1;
                return;
            }
        };
        let mut problems = Vec::new();
        if row.chain_sequence > self.expected_sequence {
            if let Some(hash) = self.purged_through(self.expected_sequence, row.chain_sequence - 1)
            {
                // Removed by retention: the chain goes on from the recorded hash.
                self.purged += (row.chain_sequence - self.expected_sequence) as u64;
                self.previous = hash;
                self.expected_sequence = row.chain_sequence;
            }
        }
        if row.chain_sequence != self.expected_sequence {
            problems.push(format!(
                "sequence {} follows {}: events {}..{} are missing",
                row.chain_sequence,
                self.expected_sequence - 1,
                self.expected_sequence,
                row.chain_sequence - 1
            ));
        }
        if row.previous_event_hash != self.previous {
            problems.push(
                "previous_event_hash does not match the hash of the event before it".to_owned(),
            );
        }
        let mut unverifiable = false;
        let recomputed = match self.hasher.recompute(&row) {
            Ok(h) => h,
            Err(Uncheckable::MissingKey(why)) => {
                unverifiable = true;
                problems.push(why);
                String::new()
            }
            Err(Uncheckable::Suspect(why)) => {
                problems.push(why);
                String::new()
            }
        };
        if !recomputed.is_empty() && recomputed != row.event_hash {
            problems.push(
                "content changed: the recomputed hash differs from the stored one".to_owned(),
            );
        }
        if unverifiable && problems.len() == 1 {
            // Nothing but the missing key: the row is not verified, and not shown as changed.
            self.unverifiable += 1;
        }
        if !problems.is_empty() {
            self.bad_rows += 1;
            self.report(TamperedEvent {
                event_id: row.event_id.to_string(),
                event_timestamp: Some(row.event_timestamp),
                expected_hash: recomputed,
                actual_hash: row.event_hash.clone(),
                previous_hash: row.previous_event_hash.clone(),
                message: problems.join("; "),
            });
        }
        self.previous = row.event_hash;
        self.expected_sequence = row.chain_sequence + 1;
    }

    /// The answer, once every row is pushed; `head` is `(last_sequence, last_hash)` of the chain
    /// head, read in the same snapshot as the rows.
    pub fn finish(mut self, head: Option<(i64, String)>) -> VerifyChainResponse {
        if let Some((last_sequence, _)) = &head {
            if *last_sequence >= self.expected_sequence {
                if let Some(hash) = self.purged_through(self.expected_sequence, *last_sequence) {
                    // The newest events expired too: the head's hash is the last one removed.
                    self.purged += (*last_sequence + 1 - self.expected_sequence) as u64;
                    self.previous = hash;
                    self.expected_sequence = *last_sequence + 1;
                }
            }
        }
        if let Some((last_sequence, last_hash)) = head {
            if last_sequence != self.expected_sequence - 1 || last_hash != self.previous {
                let actual_hash = self.previous.clone();
                self.report(TamperedEvent {
                    event_id: String::new(),
                    event_timestamp: None,
                    expected_hash: last_hash,
                    actual_hash,
                    previous_hash: String::new(),
                    message: format!(
                        "the chain head records {last_sequence} events but the rows end at {}: events were removed from the end",
                        self.expected_sequence - 1
                    ),
                });
            }
        }
        let (total, cid) = (self.total, &self.correlation_id);
        let verdict = if total == 0 && self.problems == 0 && self.purged == 0 {
            ChainVerdict::Empty
        } else if self.problems == 0 {
            ChainVerdict::Intact
        } else if self.problems == self.unverifiable {
            ChainVerdict::Unverifiable
        } else {
            ChainVerdict::Tampered
        };
        let more = match self.problems.saturating_sub(self.listed.len() as u64) {
            0 => String::new(),
            n => format!(" ({n} more not listed)"),
        };
        let message = match verdict {
            ChainVerdict::Empty => format!("no events with correlation_id {cid:?}"),
            ChainVerdict::Intact if self.purged > 0 => format!(
                "hash chain intact: {total} events verified; {} older events were removed by retention, as recorded",
                self.purged
            ),
            ChainVerdict::Intact => format!("hash chain intact: {total} events verified"),
            ChainVerdict::Unverifiable => format!(
                "hash chain cannot be verified: {} of {total} events are signed with keys that are not configured (hashChain.keyFile / verifyKeyFiles); nothing else was found{more}",
                self.unverifiable
            ),
            ChainVerdict::Tampered => format!(
                "hash chain broken: {} problem(s) found in {total} events{more}",
                self.problems
            ),
        };
        VerifyChainResponse {
            correlation_id: self.correlation_id,
            is_valid: verdict == ChainVerdict::Intact || verdict == ChainVerdict::Empty,
            total_events: total,
            verified_events: total - self.bad_rows,
            tampered_events: self.listed,
            verification_time: Utc::now(),
            message,
            verdict: Some(verdict),
            unverifiable_events: self.unverifiable,
            purged_events: self.purged,
            checkpoint: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use datastorage_api::{validate_event, AuditEventRequest, EventCategory, EventOutcome};

    use super::*;

    fn event(action: &str) -> ValidatedEvent {
        let mut e = AuditEventRequest::new(
            "t",
            EventCategory::Gateway,
            action,
            EventOutcome::Success,
            "c",
        );
        e.event_id = Some(Uuid::from_u128(1));
        e.event_timestamp = "2025-01-01T00:00:00Z".parse().unwrap();
        validate_event(&serde_json::to_value(e).unwrap()).unwrap()
    }

    /// Links `e` as the second event of a chain and describes the stored row.
    fn stored(hasher: &Hasher, e: &ValidatedEvent) -> StoredLink {
        let mut heads = HashMap::from([("c".to_owned(), (1, "ab".repeat(32)))]);
        let linked = link(hasher, &[e], &mut heads).remove(0);
        StoredLink {
            event_id: e.event_id,
            event_timestamp: e.event_timestamp,
            sequence: linked.sequence,
            previous_hash: linked.previous_hash,
            hash: linked.hash,
            algorithm: linked.algorithm.to_owned(),
            key_id: linked.key_id,
        }
    }

    fn keyed(ids: &[&str], active: Option<&str>) -> Hasher {
        Hasher {
            active: active.map(str::to_owned),
            keys: ids
                .iter()
                .map(|id| ((*id).to_owned(), id.repeat(40).into_bytes()))
                .collect(),
            ..Hasher::default()
        }
    }

    #[test]
    fn the_same_content_at_the_stored_position_is_a_replay_and_other_content_is_not() {
        for hasher in [Hasher::default(), keyed(&["k1"], Some("k1"))] {
            let row = stored(&hasher, &event("created"));
            assert!(hasher.is_replay(&row, &event("created")), "{hasher:?}");
            assert!(!hasher.is_replay(&row, &event("deleted")), "{hasher:?}");
        }
    }

    #[test]
    fn a_row_signed_with_a_key_no_longer_configured_is_not_a_replay() {
        let row = stored(&keyed(&["old"], Some("old")), &event("created"));
        assert!(keyed(&["old", "new"], Some("new")).is_replay(&row, &event("created")));
        assert!(!keyed(&["new"], Some("new")).is_replay(&row, &event("created")));
    }
}
