//! The signed export format, written incrementally by the server and verified offline.
//!
//! An NDJSON export is one line per event, each line the compact JSON of an
//! [`AuditEvent`] exactly as the server serialized it, terminated by
//! `\n`, ordered by (`correlation_id`, `chain_sequence`); then one trailer line
//! `{"export_signature":{...}}\n` holding a [`Trailer`]. The trailer carries the SHA-256 of every
//! event line as shipped (newline included) and an Ed25519 signature over the RFC 8785 JSON of
//! the trailer without its `signature` key, so the signature covers the events themselves, not
//! only counts. The JSON export (upstream's shape) holds the same event bytes as the elements of
//! its `events` array and the same trailer under `export_signature`.
//!
//! [`ExportWriter`] hashes lines as they stream out (memory stays flat) and signs the trailer.
//! [`verify_ndjson`] and [`verify_json_export`] feed one checker that needs no server: the
//! digest, count and signature; every line parses; unkeyed content hashes recompute; lines are
//! in order; every chain links and has no holes. Its memory is the last event of each chain and a
//! bounded list of problems. A chain whose first exported event is not sequence 1 (retention
//! purged the start, or a time window cut it) is normal and listed, not a problem: its first
//! `previous_event_hash` comes from the export, which the signature covers.
//!
//! Two things it cannot tell: a filter other than `correlation_id` or a time window can leave
//! holes that look like deleted lines; and the newest events of a chain cut before export look
//! like an intact chain (the signed checkpoint log covers those).

use std::collections::HashMap;
use std::fmt;
use std::io::BufRead;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::chain::{chain_hash, Form};
use crate::signing::{Keyring, SigningKey, ALGORITHM_ED25519, ALGORITHM_RSA};
use crate::types::{AuditEvent, JsonObject};

/// What the digest and the signature cover, written into every trailer; a verifier refuses a
/// trailer that names another scheme.
pub const CANONICALIZATION: &str = "datastorage-export-v1: sha256 over each event line as \
    shipped, newline-terminated; signature over RFC 8785 JSON of this object without signature";

/// The key of the trailer line's one member.
pub const TRAILER_KEY: &str = "export_signature";

/// Most problems a [`VerifyReport`] lists; `problems_total` counts them all.
pub const MAX_LISTED_PROBLEMS: usize = 100;

/// Most chains starting mid-export a [`VerifyReport`] lists; a total counts them all.
pub const MAX_LISTED_CHAIN_STARTS: usize = 100;

/// What an export was asked for, as the server records it in the trailer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportMeta {
    /// When the export was generated.
    pub exported_at: DateTime<Utc>,
    /// The principal that asked for it.
    pub exported_by: String,
    /// The query filters, as given.
    pub filters: JsonObject,
    /// `ndjson`, `json` or `csv`.
    pub format: String,
    /// Whether sensitive content was redacted. Redacted events no longer match their content
    /// hash, so a verifier counts such mismatches as unverifiable rather than edited.
    pub redacted: bool,
}

/// The value of the trailer's `export_signature`: the request, the digest of the events and
/// the signature over all of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trailer {
    /// What was exported.
    #[serde(flatten)]
    pub meta: ExportMeta,
    /// Event lines in the export.
    pub total_events: u64,
    /// Hex SHA-256 over every event line as shipped, each with its `\n`.
    pub events_sha256: String,
    /// [`CANONICALIZATION`].
    pub canonicalization: String,
    /// [`ALGORITHM_ED25519`] or [`ALGORITHM_RSA`]: the signing key's.
    pub algorithm: String,
    /// Id of the signing key.
    pub key_id: String,
    /// `sha256:<hex>` of the signing key's raw public key.
    pub public_key_fingerprint: String,
    /// Base64 Ed25519 signature over the RFC 8785 JSON of this object without `signature`.
    pub signature: String,
}

/// The bytes a trailer's signature covers: RFC 8785 JSON of the trailer object as shipped,
/// without its `signature` member. Signer and verifier both go through a `Value`, so a field
/// this version does not know is covered too.
fn signed_message(trailer: &Value) -> Result<Vec<u8>, String> {
    let mut object = trailer
        .as_object()
        .cloned()
        .ok_or_else(|| format!("{TRAILER_KEY} is not a JSON object"))?;
    object.remove("signature");
    serde_jcs::to_vec(&Value::Object(object)).map_err(|e| format!("cannot canonicalize: {e}"))
}

/// Checks a trailer's signature with the key it names (for exports whose lines this module does
/// not parse, such as CSV).
pub fn verify_trailer(trailer: &Trailer, keys: &Keyring) -> Result<(), String> {
    let key = keys.get(&trailer.key_id).ok_or_else(|| {
        format!(
            "signed with key {:?}, which is not among the public keys given",
            trailer.key_id
        )
    })?;
    let value = serde_json::to_value(trailer).map_err(|e| e.to_string())?;
    key.verify(&signed_message(&value)?, &trailer.signature)
}

/// Builds an export's trailer while its lines stream out: a running SHA-256 and a count,
/// nothing buffered.
pub struct ExportWriter {
    meta: ExportMeta,
    digest: Sha256,
    total_events: u64,
}

impl ExportWriter {
    /// A writer for an export described by `meta`.
    pub fn new(meta: ExportMeta) -> Self {
        Self {
            meta,
            digest: Sha256::new(),
            total_events: 0,
        }
    }

    /// Records one event line: its JSON bytes, without the `\n` that the caller writes after
    /// it (and that the digest covers).
    pub fn push_line(&mut self, line: &[u8]) {
        debug_assert!(!line.contains(&b'\n'), "an event line holds no newline");
        self.digest.update(line);
        self.digest.update(b"\n");
        self.total_events += 1;
    }

    /// Event lines recorded so far.
    pub fn total_events(&self) -> u64 {
        self.total_events
    }

    /// The signed trailer; write it with [`trailer_line`].
    pub fn finish(self, key: &SigningKey) -> Trailer {
        let mut trailer = Trailer {
            meta: self.meta,
            total_events: self.total_events,
            events_sha256: hex::encode(self.digest.finalize()),
            canonicalization: CANONICALIZATION.to_owned(),
            algorithm: key.algorithm().to_owned(),
            key_id: key.key_id(),
            public_key_fingerprint: key.fingerprint(),
            signature: String::new(),
        };
        // Neither step can fail: a trailer serializes to an object of strings, numbers and
        // booleans, and a `Value` holds only finite numbers. Were one to fail, the empty
        // signature would fail verification rather than vouch for anything.
        if let Ok(message) = serde_json::to_value(&trailer)
            .map_err(|e| e.to_string())
            .and_then(|value| signed_message(&value))
        {
            trailer.signature = key.sign(&message);
        }
        trailer
    }
}

impl fmt::Debug for ExportWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExportWriter")
            .field("meta", &self.meta)
            .field("total_events", &self.total_events)
            .finish_non_exhaustive()
    }
}

/// The trailer line: `{"export_signature":{...}}\n`.
pub fn trailer_line(trailer: &Trailer) -> Vec<u8> {
    #[derive(Serialize)]
    struct Line<'a> {
        export_signature: &'a Trailer,
    }
    let mut out = Vec::with_capacity(1024);
    // Writing a trailer into a `Vec` cannot fail (see `ExportWriter::finish`).
    let _ = serde_json::to_writer(
        &mut out,
        &Line {
            export_signature: trailer,
        },
    );
    out.push(b'\n');
    out
}

/// One thing wrong with an export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExportProblem {
    /// Line of an NDJSON export (from 1), or position in a JSON export's `events` (from 1);
    /// 0 for the export as a whole.
    pub line: u64,
    /// The event concerned, when the line parsed.
    pub event_id: Option<String>,
    /// What is wrong, in words.
    pub message: String,
}

impl fmt::Display for ExportProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(f, "line {}: ", self.line)?;
        }
        f.write_str(&self.message)
    }
}

/// A chain whose first exported event is not its first event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainStart {
    /// The chain.
    pub correlation_id: String,
    /// Sequence of its first exported event.
    pub first_sequence: i64,
}

/// The outcome of verifying an export offline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VerifyReport {
    /// True when the signature and digest hold and no problem was found.
    pub ok: bool,
    /// Event lines read (the trailer not counted).
    pub total_events: u64,
    /// Distinct chains (correlation ids) seen.
    pub chains: u64,
    /// Chains whose first exported event is past sequence 1, at most
    /// [`MAX_LISTED_CHAIN_STARTS`]; not a problem.
    pub chains_starting_mid_export: Vec<ChainStart>,
    /// How many chains start mid-export, listed or not.
    pub chains_starting_mid_export_total: u64,
    /// Whether the trailer's signature verifies with the keyring's key of its key id.
    pub signature_valid: bool,
    /// Whether the events' SHA-256 matches the trailer's `events_sha256`.
    pub digest_valid: bool,
    /// The key id the trailer names.
    pub key_id: Option<String>,
    /// What the trailer says was exported (trust it only when `signature_valid`).
    pub meta: Option<ExportMeta>,
    /// Problems in line order, at most [`MAX_LISTED_PROBLEMS`] of them, then those about the
    /// export as a whole (trailer, digest, signature), always listed.
    pub problems: Vec<ExportProblem>,
    /// All problems found, listed or not.
    pub problems_total: u64,
    /// Events whose content hash cannot be recomputed offline: keyed (`hmac-…`) chains, and,
    /// in a redacted export, events whose redacted content no longer matches. Their links are
    /// still checked.
    pub unverifiable_content: u64,
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.ok { "OK" } else { "FAILED" };
        writeln!(
            f,
            "export {verdict}: {} events in {} chains",
            self.total_events, self.chains
        )?;
        let key = self.key_id.as_deref().unwrap_or("(none)");
        let valid = |b: bool| if b { "valid" } else { "INVALID" };
        writeln!(
            f,
            "signature {} (key {key}), events digest {}",
            valid(self.signature_valid),
            valid(self.digest_valid)
        )?;
        if let Some(meta) = &self.meta {
            writeln!(
                f,
                "exported at {} by {} as {}{}, filters {}",
                meta.exported_at.to_rfc3339(),
                meta.exported_by,
                meta.format,
                if meta.redacted { ", redacted" } else { "" },
                Value::Object(meta.filters.clone())
            )?;
        }
        if self.chains_starting_mid_export_total > 0 {
            let listed: Vec<String> = self
                .chains_starting_mid_export
                .iter()
                .map(|c| format!("{:?} at sequence {}", c.correlation_id, c.first_sequence))
                .collect();
            let more = self.chains_starting_mid_export_total - listed.len() as u64;
            write!(
                f,
                "chains starting mid-export (earlier events not exported, not a problem): {}",
                listed.join(", ")
            )?;
            if more > 0 {
                write!(f, " and {more} more")?;
            }
            writeln!(f)?;
        }
        if self.unverifiable_content > 0 {
            writeln!(
                f,
                "{} events' content cannot be recomputed offline (keyed chains or redacted \
                 content); their links were checked",
                self.unverifiable_content
            )?;
        }
        if self.problems_total > 0 {
            let plural = if self.problems_total == 1 { "" } else { "s" };
            writeln!(f, "{} problem{plural}:", self.problems_total)?;
            for problem in &self.problems {
                writeln!(f, "  {problem}")?;
            }
            let more = self.problems_total - self.problems.len() as u64;
            if more > 0 {
                writeln!(f, "  ... and {more} more")?;
            }
        }
        Ok(())
    }
}

/// Verifies an NDJSON export read line by line: memory is the last event of each chain and a
/// bounded list of problems, whatever the number of events.
pub fn verify_ndjson(mut input: impl BufRead, keys: &Keyring) -> VerifyReport {
    let mut checker = Checker::default();
    let mut digest = Sha256::new();
    // The last non-empty line is held back until the next one arrives: it may be the trailer,
    // which the digest does not cover. `before` is the digest as it was before that line.
    let mut held: Option<(u64, Vec<u8>, Sha256)> = None;
    let mut buf = Vec::new();
    let mut line_no = 0_u64;
    loop {
        buf.clear();
        match input.read_until(b'\n', &mut buf) {
            Ok(0) => break,
            Ok(_) => line_no += 1,
            Err(e) => {
                checker.export_problem(format!(
                    "reading the export failed after line {line_no}: {e}"
                ));
                break;
            }
        }
        if buf.iter().all(u8::is_ascii_whitespace) {
            digest.update(&buf);
            continue;
        }
        let before = digest.clone();
        digest.update(&buf);
        let line = std::mem::take(&mut buf);
        if let Some((number, bytes, _)) = held.replace((line_no, line, before)) {
            checker.event(number, &bytes);
            buf = bytes;
        }
    }
    let trailer = match held {
        None => None,
        Some((number, bytes, before)) => match trailer_of_line(&bytes) {
            Some(value) => {
                if let Some(extra) = value.1 {
                    checker.export_problem(extra);
                }
                digest = before;
                Some((number, value.0))
            }
            None => {
                checker.event(number, &bytes);
                None
            }
        },
    };
    checker.finish(trailer, hex::encode(digest.finalize()), keys)
}

/// The trailer value of a line `{"export_signature": {...}}`, with a problem when the line
/// holds other members (unsigned bytes added after signing); `None` when it is no trailer.
fn trailer_of_line(bytes: &[u8]) -> Option<(Value, Option<String>)> {
    let Ok(Value::Object(mut object)) = serde_json::from_slice::<Value>(bytes) else {
        return None;
    };
    let trailer = object.remove(TRAILER_KEY)?;
    let extra = (!object.is_empty()).then(|| {
        let keys: Vec<&str> = object.keys().map(String::as_str).collect();
        format!(
            "the trailer line holds members the signature does not cover: {}",
            keys.join(", ")
        )
    });
    Some((trailer, extra))
}

/// Verifies a JSON export (upstream's shape: `export_metadata`, `events`,
/// `hash_chain_verification`, plus `export_signature`). Each element of `events` is checked
/// as the bytes of an NDJSON line; the server's own `hash_chain_verification` and
/// `export_metadata` are not signed and not trusted.
pub fn verify_json_export(bytes: &[u8], keys: &Keyring) -> VerifyReport {
    #[derive(Deserialize)]
    struct JsonExport<'a> {
        #[serde(borrow)]
        events: Vec<&'a RawValue>,
        #[serde(default)]
        export_signature: Option<Value>,
    }
    let mut checker = Checker::default();
    let mut digest = Sha256::new();
    let trailer = match serde_json::from_slice::<JsonExport<'_>>(bytes) {
        Ok(export) => {
            for (i, event) in export.events.iter().enumerate() {
                let text = event.get().as_bytes();
                digest.update(text);
                digest.update(b"\n");
                checker.event(i as u64 + 1, text);
            }
            export.export_signature.map(|value| (0, value))
        }
        Err(e) => {
            checker.export_problem(format!("not a JSON export with an events array: {e}"));
            None
        }
    };
    checker.finish(trailer, hex::encode(digest.finalize()), keys)
}

/// A list of problems that keeps the first [`MAX_LISTED_PROBLEMS`] and counts the rest.
#[derive(Debug, Default)]
struct Problems {
    listed: Vec<ExportProblem>,
    total: u64,
}

impl Problems {
    fn push(&mut self, line: u64, event_id: Option<&str>, message: String) {
        self.total += 1;
        if self.listed.len() < MAX_LISTED_PROBLEMS {
            self.listed.push(ExportProblem {
                line,
                event_id: event_id.map(str::to_owned),
                message,
            });
        }
    }
}

/// The last event exported of one chain.
#[derive(Debug)]
struct ChainTip {
    sequence: i64,
    hash: String,
    event_id: String,
    line: u64,
}

/// The previous event line, for the order check.
#[derive(Debug)]
struct Previous {
    correlation_id: String,
    sequence: i64,
    event_id: String,
    line: u64,
}

/// A hole found at the previous event line, held for one line: if the next line is the missing
/// event, the two were swapped, not deleted.
#[derive(Debug)]
struct Hole {
    correlation_id: String,
    missing: (i64, i64),
    before_hash: String,
    before_id: String,
    after_line: u64,
    after_id: String,
    after_previous_hash: String,
}

impl Hole {
    fn message(&self) -> String {
        format!(
            "events {}..{} of chain {:?} are missing after event {}",
            self.missing.0, self.missing.1, self.correlation_id, self.before_id
        )
    }
}

/// The checks shared by both formats, fed one event at a time.
#[derive(Debug, Default)]
struct Checker {
    tips: HashMap<String, ChainTip>,
    previous: Option<Previous>,
    hole: Option<Hole>,
    total_events: u64,
    chain_starts: Vec<ChainStart>,
    chain_starts_total: u64,
    problems: Problems,
    /// Content hash mismatches, apart: in a redacted export they are expected.
    content: Problems,
    /// Problems of the export as a whole, always listed.
    export: Vec<ExportProblem>,
    unverifiable_content: u64,
}

impl Checker {
    fn export_problem(&mut self, message: String) {
        self.export.push(ExportProblem {
            line: 0,
            event_id: None,
            message,
        });
    }

    /// Checks one event line (its JSON, with or without the newline).
    fn event(&mut self, line: u64, bytes: &[u8]) {
        self.total_events += 1;
        let event: AuditEvent<JsonObject> = match serde_json::from_slice(bytes) {
            Ok(event) => event,
            Err(e) => {
                self.flush_hole();
                self.problems.push(
                    line,
                    None,
                    format!("line {line} is not an audit event: {e}"),
                );
                return;
            }
        };
        let id = event.event_id.to_string();
        self.check_content(line, &event, &id);
        self.check_place(line, &event, &id);
    }

    /// Recomputes an unkeyed content hash; keyed ones need the server's key.
    fn check_content(&mut self, line: u64, event: &AuditEvent<JsonObject>, id: &str) {
        match Form::of(&event.hash_algorithm) {
            None => self.problems.push(
                line,
                Some(id),
                format!(
                    "event {id} names hash algorithm {:?}, which this verifier does not know",
                    event.hash_algorithm
                ),
            ),
            Some((_, true)) => self.unverifiable_content += 1,
            Some((form, false)) => {
                let recomputed = chain_hash(
                    &event.previous_event_hash,
                    event,
                    event.chain_sequence,
                    form,
                );
                if recomputed != event.event_hash {
                    self.content.push(
                        line,
                        Some(id),
                        format!(
                            "event {id} does not match its event_hash: its content was changed \
                             after it was written (recomputed {recomputed}, stored {})",
                            event.event_hash
                        ),
                    );
                }
            }
        }
    }

    /// Order across the export, then the link and sequence within the event's chain.
    fn check_place(&mut self, line: u64, event: &AuditEvent<JsonObject>, id: &str) {
        let cid = event.correlation_id.as_str();
        let seq = event.chain_sequence;
        let hole = self.hole.take();
        let previous = self.previous.take();
        // Chains are compared for equality only: the database orders correlation ids by its
        // own collation, which a verifier cannot know. A chain that appears twice is reported
        // as split (below); within a chain, sequences must rise.
        let out_of_order = previous
            .as_ref()
            .filter(|p| p.correlation_id == cid && p.sequence >= seq);
        let reported = out_of_order.is_some();
        let rejoins = previous.as_ref().is_some_and(|p| p.correlation_id != cid);
        match (out_of_order, hole) {
            (Some(_), Some(hole))
                if hole.correlation_id == cid
                    && hole.missing == (seq, seq)
                    && event.previous_event_hash == hole.before_hash
                    && hole.after_previous_hash == event.event_hash =>
            {
                self.problems.push(
                    line,
                    Some(id),
                    format!(
                        "events {} (line {}) and {id} (line {line}) of chain {cid:?} are \
                         swapped: sequence {seq} must come before sequence {}",
                        hole.after_id,
                        hole.after_line,
                        seq + 1
                    ),
                );
            }
            (out_of_order, hole) => {
                if let Some(hole) = hole {
                    self.problems
                        .push(hole.after_line, Some(&hole.after_id), hole.message());
                }
                if let Some(p) = out_of_order {
                    self.problems.push(
                        line,
                        Some(id),
                        format!(
                            "event {id} (chain {cid:?}, sequence {seq}) is out of order: it \
                             follows event {} (chain {:?}, sequence {}) on line {}; the events \
                             of a chain must be in chain_sequence order",
                            p.event_id, p.correlation_id, p.sequence, p.line
                        ),
                    );
                }
            }
        }
        self.previous = Some(Previous {
            correlation_id: cid.to_owned(),
            sequence: seq,
            event_id: id.to_owned(),
            line,
        });
        self.check_link(line, event, id, reported || !rejoins);
    }

    /// The link onto the chain's last exported event. `placed` says an event behind the
    /// chain's tip needs no report: its order was reported, or it follows its own chain
    /// (whose first misplaced event was).
    fn check_link(&mut self, line: u64, event: &AuditEvent<JsonObject>, id: &str, placed: bool) {
        let cid = event.correlation_id.as_str();
        let seq = event.chain_sequence;
        let tip = ChainTip {
            sequence: seq,
            hash: event.event_hash.clone(),
            event_id: id.to_owned(),
            line,
        };
        let Some(last) = self.tips.get(cid) else {
            if seq == 1 && !event.previous_event_hash.is_empty() {
                self.problems.push(
                    line,
                    Some(id),
                    format!(
                        "event {id} is sequence 1 of chain {cid:?} but links to a previous \
                         hash"
                    ),
                );
            } else if seq < 1 {
                self.problems.push(
                    line,
                    Some(id),
                    format!("event {id} has chain_sequence {seq}; sequences start at 1"),
                );
            } else if seq > 1 {
                self.chain_starts_total += 1;
                if self.chain_starts.len() < MAX_LISTED_CHAIN_STARTS {
                    self.chain_starts.push(ChainStart {
                        correlation_id: cid.to_owned(),
                        first_sequence: seq,
                    });
                }
            }
            self.tips.insert(cid.to_owned(), tip);
            return;
        };
        if seq == last.sequence {
            let message = if last.event_id == id {
                format!("event {id} appears twice")
            } else {
                format!(
                    "event {id} repeats sequence {seq} of chain {cid:?}, held by event {}",
                    last.event_id
                )
            };
            self.problems.push(line, Some(id), message);
        } else if seq < last.sequence {
            if !placed {
                self.problems.push(
                    line,
                    Some(id),
                    format!(
                        "event {id} (sequence {seq} of chain {cid:?}) comes after sequence {} \
                         of the same chain (event {}, line {}): the chain's events are split \
                         or reordered",
                        last.sequence, last.event_id, last.line
                    ),
                );
            }
        } else if seq == last.sequence + 1 {
            if event.previous_event_hash != last.hash {
                self.problems.push(
                    line,
                    Some(id),
                    format!(
                        "event {id} (sequence {seq} of chain {cid:?}) links to previous hash \
                         {:?}, but the event before it, {}, has hash {}",
                        event.previous_event_hash, last.event_id, last.hash
                    ),
                );
            }
            self.tips.insert(cid.to_owned(), tip);
        } else {
            self.hole = Some(Hole {
                correlation_id: cid.to_owned(),
                missing: (last.sequence + 1, seq - 1),
                before_hash: last.hash.clone(),
                before_id: last.event_id.clone(),
                after_line: line,
                after_id: id.to_owned(),
                after_previous_hash: event.previous_event_hash.clone(),
            });
            self.tips.insert(cid.to_owned(), tip);
        }
    }

    fn flush_hole(&mut self) {
        if let Some(hole) = self.hole.take() {
            self.problems
                .push(hole.after_line, Some(&hole.after_id), hole.message());
        }
    }

    /// Checks the trailer against what was read and builds the report.
    fn finish(
        mut self,
        trailer: Option<(u64, Value)>,
        digest: String,
        keys: &Keyring,
    ) -> VerifyReport {
        self.flush_hole();
        let mut verdict = TrailerVerdict::default();
        match trailer {
            None => self.export_problem(format!(
                "no {TRAILER_KEY} trailer: the export is cut short or was never signed"
            )),
            Some((line, value)) => verdict = self.check_trailer(line, &value, &digest, keys),
        }
        let redacted = verdict.meta.as_ref().is_some_and(|m| m.redacted);
        let mut problems = self.problems;
        if redacted {
            self.unverifiable_content += self.content.total;
        } else {
            problems.total += self.content.total;
            problems.listed.extend(self.content.listed);
            problems.listed.sort_by_key(|p| p.line);
            problems.listed.truncate(MAX_LISTED_PROBLEMS);
        }
        problems.total += self.export.len() as u64;
        problems.listed.extend(self.export);
        VerifyReport {
            ok: problems.total == 0 && verdict.signature_valid && verdict.digest_valid,
            total_events: self.total_events,
            chains: self.tips.len() as u64,
            chains_starting_mid_export: self.chain_starts,
            chains_starting_mid_export_total: self.chain_starts_total,
            signature_valid: verdict.signature_valid,
            digest_valid: verdict.digest_valid,
            key_id: verdict.key_id,
            meta: verdict.meta,
            problems: problems.listed,
            problems_total: problems.total,
            unverifiable_content: self.unverifiable_content,
        }
    }

    fn check_trailer(
        &mut self,
        line: u64,
        value: &Value,
        digest: &str,
        keys: &Keyring,
    ) -> TrailerVerdict {
        let mut verdict = TrailerVerdict::default();
        let mut problem = |message: String| {
            self.export.push(ExportProblem {
                line,
                event_id: None,
                message,
            })
        };
        let trailer: Trailer = match serde_json::from_value(value.clone()) {
            Ok(trailer) => trailer,
            Err(e) => {
                problem(format!("the {TRAILER_KEY} trailer is malformed: {e}"));
                return verdict;
            }
        };
        verdict.key_id = Some(trailer.key_id.clone());
        verdict.meta = Some(trailer.meta.clone());
        verdict.digest_valid = trailer.events_sha256 == digest;
        if !verdict.digest_valid {
            problem(format!(
                "the events' SHA-256 is {digest} but the trailer signed {}: the export's bytes \
                 changed after it was signed",
                trailer.events_sha256
            ));
        }
        if trailer.total_events != self.total_events {
            problem(format!(
                "the trailer counts {} events but the export holds {}: lines were added or \
                 removed",
                trailer.total_events, self.total_events
            ));
        }
        if trailer.canonicalization != CANONICALIZATION {
            problem(format!(
                "the trailer uses canonicalization {:?}, which this verifier does not know",
                trailer.canonicalization
            ));
            return verdict;
        }
        if trailer.algorithm != ALGORITHM_ED25519 && trailer.algorithm != ALGORITHM_RSA {
            problem(format!(
                "the trailer is signed with {:?}; this verifier knows {ALGORITHM_ED25519} and {ALGORITHM_RSA}",
                trailer.algorithm
            ));
            return verdict;
        }
        let Some(key) = keys.get(&trailer.key_id) else {
            let known: Vec<&str> = keys.key_ids().collect();
            problem(format!(
                "the export is signed with key id {:?}, which the keyring does not hold \
                 (it holds: {})",
                trailer.key_id,
                if known.is_empty() {
                    "no keys".to_owned()
                } else {
                    known.join(", ")
                }
            ));
            return verdict;
        };
        let checked = signed_message(value).and_then(|m| key.verify(&m, &trailer.signature));
        match checked {
            Ok(()) => verdict.signature_valid = true,
            Err(e) => problem(format!(
                "the trailer's signature does not hold: the trailer changed after it was \
                 signed, or key id {:?} names another key ({e})",
                trailer.key_id
            )),
        }
        if key.fingerprint() != trailer.public_key_fingerprint {
            problem(format!(
                "the trailer names public key {} but the keyring's key {:?} is {}",
                trailer.public_key_fingerprint,
                trailer.key_id,
                key.fingerprint()
            ));
        }
        verdict
    }
}

/// What the trailer check established.
#[derive(Debug, Default)]
struct TrailerVerdict {
    signature_valid: bool,
    digest_valid: bool,
    key_id: Option<String>,
    meta: Option<ExportMeta>,
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use serde_json::json;
    use uuid::Uuid;

    use super::*;
    use crate::chain::{chain_hmac, ALGORITHM_HMAC_SHA256_V2, ALGORITHM_SHA256_V2};
    use crate::signing::VerifyingKey;
    use crate::types::{EventCategory, EventOutcome};

    /// Event `seq` of chain `cid`, hashed onto `previous_hash` as the server does.
    fn event(cid: &str, seq: i64, previous_hash: &str, keyed: bool) -> AuditEvent {
        let n = cid.len() as u128 * 1000 + seq as u128;
        let at = Utc
            .timestamp_opt(1_735_689_600 + seq * 60, 123_456_000)
            .single()
            .unwrap();
        let mut e = AuditEvent {
            event_id: Uuid::from_u128(0x0190_a0f0_0000_7000_8000_0000_0000_0000 + n),
            version: "1.0".to_owned(),
            event_type: "workflow.step.completed".to_owned(),
            event_timestamp: at,
            event_date: at.date_naive().to_string(),
            event_category: EventCategory::Workflow,
            event_action: "complete".to_owned(),
            event_outcome: EventOutcome::Success,
            actor_type: Some("service".to_owned()),
            actor_id: Some("runner".to_owned()),
            actor_ip: None,
            resource_type: None,
            resource_id: Some(format!("step-{seq}")),
            correlation_id: cid.to_owned(),
            parent_event_id: None,
            parent_event_date: None,
            namespace: Some("prod".to_owned()),
            cluster_id: None,
            severity: None,
            duration_ms: Some(seq * 7),
            error_code: None,
            error_message: None,
            retention_days: 2555,
            is_sensitive: false,
            event_data: json!({"note": format!("value-{seq}"), "n": seq, "ratio": 0.5})
                .as_object()
                .unwrap()
                .clone(),
            chain_sequence: seq,
            event_hash: String::new(),
            previous_event_hash: previous_hash.to_owned(),
            hash_algorithm: ALGORITHM_SHA256_V2.to_owned(),
            hash_key_id: None,
            ingested_by: Some("system:serviceaccount:kubernaut:runner".to_owned()),
            legal_hold: false,
        };
        e.event_hash = if keyed {
            e.hash_algorithm = ALGORITHM_HMAC_SHA256_V2.to_owned();
            e.hash_key_id = Some("k1".to_owned());
            chain_hmac(b"server key", previous_hash, &e, seq, Form::V2)
        } else {
            chain_hash(previous_hash, &e, seq, Form::V2)
        };
        e
    }

    /// Events `from..=to` of a chain, hashed from its first event.
    fn chain(cid: &str, from: i64, to: i64, keyed: bool) -> Vec<AuditEvent> {
        let mut previous = String::new();
        let mut out = Vec::new();
        for seq in 1..=to {
            let e = event(cid, seq, &previous, keyed);
            previous = e.event_hash.clone();
            if seq >= from {
                out.push(e);
            }
        }
        out
    }

    /// 50 events in three chains; `chain-c` starts at sequence 5.
    fn events() -> Vec<AuditEvent> {
        let mut all = chain("chain-a", 1, 20, false);
        all.extend(chain("chain-b", 1, 15, false));
        all.extend(chain("chain-c", 5, 19, false));
        assert_eq!(all.len(), 50);
        all
    }

    fn meta(redacted: bool) -> ExportMeta {
        ExportMeta {
            exported_at: Utc.with_ymd_and_hms(2025, 2, 1, 12, 0, 0).unwrap(),
            exported_by: "auditor".to_owned(),
            filters: json!({"start_time": "2025-01-01T00:00:00Z", "limit": 1000})
                .as_object()
                .unwrap()
                .clone(),
            format: "ndjson".to_owned(),
            redacted,
        }
    }

    fn lines(events: &[AuditEvent]) -> Vec<Vec<u8>> {
        events
            .iter()
            .map(|e| serde_json::to_vec(e).unwrap())
            .collect()
    }

    /// The signed NDJSON export of `lines`, as the server streams it.
    fn ndjson(lines: &[Vec<u8>], key: &SigningKey, redacted: bool) -> Vec<u8> {
        let mut writer = ExportWriter::new(meta(redacted));
        let mut out = Vec::new();
        for line in lines {
            writer.push_line(line);
            out.extend_from_slice(line);
            out.push(b'\n');
        }
        out.extend(trailer_line(&writer.finish(key)));
        out
    }

    fn ring(keys: &[&SigningKey]) -> Keyring {
        keys.iter().map(|k| k.verifying_key()).collect()
    }

    /// The export's lines, to edit, and joined back.
    fn split(export: &[u8]) -> Vec<Vec<u8>> {
        export
            .split_inclusive(|b| *b == b'\n')
            .map(<[u8]>::to_vec)
            .collect()
    }

    fn mentions(report: &VerifyReport, needle: &str) -> bool {
        report.problems.iter().any(|p| p.message.contains(needle))
    }

    #[test]
    fn an_untouched_export_verifies_and_lists_the_chain_starting_mid_export() {
        let key = SigningKey::generate();
        let export = ndjson(&lines(&events()), &key, false);
        let report = verify_ndjson(&export[..], &ring(&[&key]));
        assert!(report.ok, "{report}");
        assert_eq!(report.total_events, 50);
        assert_eq!(report.chains, 3);
        assert_eq!(
            report.chains_starting_mid_export,
            vec![ChainStart {
                correlation_id: "chain-c".to_owned(),
                first_sequence: 5
            }]
        );
        assert!(report.problems.is_empty(), "{report}");
        assert!(report.signature_valid && report.digest_valid);
        assert_eq!(report.key_id, Some(key.key_id()));
        assert_eq!(report.unverifiable_content, 0);
        let shown = report.to_string();
        assert!(
            shown.starts_with("export OK: 50 events in 3 chains"),
            "{shown}"
        );
        assert!(shown.contains("\"chain-c\" at sequence 5"), "{shown}");
    }

    #[test]
    fn the_trailer_line_is_signed_over_the_rfc_8785_form() {
        let key = SigningKey::generate();
        let export = ndjson(&lines(&events()[..3]), &key, false);
        let last = split(&export).pop().unwrap();
        assert!(last.starts_with(b"{\"export_signature\":{") && last.ends_with(b"}}\n"));
        let value: Value = serde_json::from_slice(&last).unwrap();
        let trailer = &value[TRAILER_KEY];
        assert_eq!(trailer["total_events"], 3);
        assert_eq!(trailer["canonicalization"], CANONICALIZATION);
        let mut unsigned = trailer.clone();
        unsigned.as_object_mut().unwrap().remove("signature");
        let message = serde_jcs::to_vec(&unsigned).unwrap();
        key.verifying_key()
            .verify(&message, trailer["signature"].as_str().unwrap())
            .unwrap();
    }

    #[test]
    fn one_changed_character_in_event_data_names_the_event() {
        let key = SigningKey::generate();
        let all = events();
        let mut edited = split(&ndjson(&lines(&all), &key, false));
        let target = &all[9];
        let text = String::from_utf8(edited[9].clone()).unwrap();
        assert!(text.contains("\"value-10\""));
        edited[9] = text.replace("\"value-10\"", "\"value-19\"").into_bytes();
        let report = verify_ndjson(&edited.concat()[..], &ring(&[&key]));
        assert!(!report.ok);
        assert!(report.signature_valid, "the trailer itself is intact");
        assert!(!report.digest_valid);
        let id = target.event_id.to_string();
        let problem = report
            .problems
            .iter()
            .find(|p| p.event_id.as_deref() == Some(id.as_str()))
            .unwrap_or_else(|| panic!("{report}"));
        assert_eq!(problem.line, 10);
        assert!(problem.message.contains("content was changed"), "{report}");
        assert_eq!(
            report.problems_total, 2,
            "the event and the digest: {report}"
        );
    }

    #[test]
    fn a_deleted_line_is_reported_as_missing_events() {
        let key = SigningKey::generate();
        let all = events();
        let mut edited = split(&ndjson(&lines(&all), &key, false));
        // chain-b, sequence 7 (lines 21..35 hold chain-b 1..15).
        assert_eq!(all[26].correlation_id, "chain-b");
        assert_eq!(all[26].chain_sequence, 7);
        edited.remove(26);
        let report = verify_ndjson(&edited.concat()[..], &ring(&[&key]));
        assert!(!report.ok);
        let expected = format!(
            "events 7..7 of chain \"chain-b\" are missing after event {}",
            all[25].event_id
        );
        assert!(mentions(&report, &expected), "{report}");
        assert!(mentions(
            &report,
            "the trailer counts 50 events but the export holds 49"
        ));
    }

    #[test]
    fn two_swapped_lines_are_reported_naming_both_events() {
        let key = SigningKey::generate();
        let all = events();
        let mut edited = split(&ndjson(&lines(&all), &key, false));
        edited.swap(2, 3);
        let report = verify_ndjson(&edited.concat()[..], &ring(&[&key]));
        assert!(!report.ok);
        let (a, b) = (all[2].event_id.to_string(), all[3].event_id.to_string());
        let swapped: Vec<_> = report
            .problems
            .iter()
            .filter(|p| p.message.contains(&a) && p.message.contains(&b))
            .collect();
        assert_eq!(swapped.len(), 1, "{report}");
        assert!(swapped[0].message.contains("swapped"), "{report}");
        assert!(
            !mentions(&report, "missing"),
            "a swap is not a deletion: {report}"
        );

        // Lines far apart, in different chains: each misplaced event is named with its
        // neighbour.
        let mut edited = split(&ndjson(&lines(&all), &key, false));
        edited.swap(14, 42);
        let report = verify_ndjson(&edited.concat()[..], &ring(&[&key]));
        assert!(!report.ok);
        for moved in [&all[14], &all[42]] {
            assert!(mentions(&report, &moved.event_id.to_string()), "{report}");
        }
        assert!(mentions(&report, "split or reordered"), "{report}");
    }

    #[test]
    fn an_added_line_is_reported_by_id() {
        let key = SigningKey::generate();
        let all = events();
        let mut edited = split(&ndjson(&lines(&all), &key, false));
        let copy = edited[4].clone();
        edited.insert(5, copy);
        let report = verify_ndjson(&edited.concat()[..], &ring(&[&key]));
        assert!(!report.ok);
        assert!(
            mentions(&report, &format!("event {} appears twice", all[4].event_id)),
            "{report}"
        );
        assert!(!report.digest_valid);
    }

    #[test]
    fn an_unknown_key_id_fails_naming_it() {
        let signer = SigningKey::generate().with_key_id("export-2024");
        let other = SigningKey::generate();
        let export = ndjson(&lines(&events()), &signer, false);
        let report = verify_ndjson(&export[..], &ring(&[&other]));
        assert!(!report.ok);
        assert!(!report.signature_valid);
        assert!(report.digest_valid);
        assert!(mentions(&report, "\"export-2024\""), "{report}");
        assert!(
            mentions(&report, &other.key_id()),
            "it lists the keys held: {report}"
        );

        // The right id on the wrong key.
        let impostor = VerifyingKey::from_pem(&other.public_pem().unwrap())
            .unwrap()
            .with_key_id("export-2024");
        let report = verify_ndjson(&export[..], &[impostor].into_iter().collect());
        assert!(!report.ok && !report.signature_valid, "{report}");
    }

    #[test]
    fn a_retired_key_in_the_keyring_still_verifies() {
        let retired = SigningKey::generate();
        let current = SigningKey::generate();
        let export = ndjson(&lines(&events()), &retired, false);
        let public = VerifyingKey::from_pem(&retired.public_pem().unwrap()).unwrap();
        let keys: Keyring = [current.verifying_key(), public].into_iter().collect();
        let report = verify_ndjson(&export[..], &keys);
        assert!(report.ok, "{report}");
        assert_eq!(report.key_id, Some(retired.key_id()));
    }

    #[test]
    fn bytes_changed_without_an_event_problem_still_fail() {
        let key = SigningKey::generate();
        let all = events();
        // The newest event of chain-a removed: every remaining link holds.
        let mut edited = split(&ndjson(&lines(&all), &key, false));
        edited.remove(19);
        let report = verify_ndjson(&edited.concat()[..], &ring(&[&key]));
        assert!(!report.ok && !report.digest_valid && report.signature_valid);
        assert!(
            mentions(&report, "bytes changed after it was signed"),
            "{report}"
        );
        assert!(
            report.problems.iter().all(|p| p.event_id.is_none()),
            "{report}"
        );

        // The trailer edited.
        let export = ndjson(&lines(&all), &key, false);
        let text = String::from_utf8(export).unwrap();
        let edited = text.replace("\"exported_by\":\"auditor\"", "\"exported_by\":\"nobody\"");
        let report = verify_ndjson(edited.as_bytes(), &ring(&[&key]));
        assert!(!report.ok && report.digest_valid && !report.signature_valid);
        assert!(
            mentions(&report, "trailer changed after it was signed"),
            "{report}"
        );

        // The trailer removed.
        let mut cut = split(text.as_bytes());
        cut.pop();
        let report = verify_ndjson(&cut.concat()[..], &ring(&[&key]));
        assert!(!report.ok);
        assert!(mentions(&report, "no export_signature trailer"), "{report}");
        assert_eq!(report.total_events, 50);
    }

    #[test]
    fn a_line_that_is_not_an_event_is_named_by_line_number() {
        let key = SigningKey::generate();
        let mut edited = split(&ndjson(&lines(&events()), &key, false));
        edited[6] = b"{\"event_id\": 12\n".to_vec();
        let report = verify_ndjson(&edited.concat()[..], &ring(&[&key]));
        assert!(!report.ok);
        assert!(
            mentions(&report, "line 7 is not an audit event"),
            "{report}"
        );
    }

    #[test]
    fn keyed_chains_are_unverifiable_offline_but_their_links_are_checked() {
        let key = SigningKey::generate();
        let keyed = chain("chain-k", 1, 10, true);
        let export = ndjson(&lines(&keyed), &key, false);
        let report = verify_ndjson(&export[..], &ring(&[&key]));
        assert!(report.ok, "{report}");
        assert_eq!(report.unverifiable_content, 10);

        let mut edited = split(&export);
        edited.remove(4);
        let report = verify_ndjson(&edited.concat()[..], &ring(&[&key]));
        assert!(
            mentions(&report, "events 5..5 of chain \"chain-k\""),
            "{report}"
        );
    }

    #[test]
    fn a_redacted_export_counts_content_mismatches_as_unverifiable() {
        let key = SigningKey::generate();
        let mut all = events();
        all[3]
            .event_data
            .insert("note".to_owned(), json!("[redacted]"));
        let report = verify_ndjson(&ndjson(&lines(&all), &key, true)[..], &ring(&[&key]));
        assert!(report.ok, "{report}");
        assert_eq!(report.unverifiable_content, 1);
        let report = verify_ndjson(&ndjson(&lines(&all), &key, false)[..], &ring(&[&key]));
        assert!(!report.ok, "not redacted, so edited: {report}");
    }

    #[test]
    fn problems_are_bounded_and_counted() {
        let key = SigningKey::generate();
        let garbage: Vec<Vec<u8>> = (0..250).map(|i| format!("[{i}]").into_bytes()).collect();
        let report = verify_ndjson(&ndjson(&garbage, &key, false)[..], &ring(&[&key]));
        assert!(!report.ok && report.signature_valid && report.digest_valid);
        assert_eq!(report.problems_total, 250);
        assert_eq!(report.problems.len(), MAX_LISTED_PROBLEMS);
        assert!(report.to_string().contains("... and 150 more"));
    }

    /// The upstream-shaped JSON export of `lines`, each element the NDJSON line's bytes.
    fn json_export(lines: &[Vec<u8>], key: &SigningKey) -> Vec<u8> {
        let mut writer = ExportWriter::new(meta(false));
        let mut events = Vec::new();
        for line in lines {
            writer.push_line(line);
            events.push(String::from_utf8(line.clone()).unwrap());
        }
        let trailer = writer.finish(key);
        format!(
            "{{\n  \"export_metadata\": {{\"export_format\": \"json\", \"total_events\": {}, \
             \"signature\": \"{}\"}},\n  \"events\": [\n    {}\n  ],\n  \
             \"hash_chain_verification\": {{\"broken_chain_events\": 0}},\n  \
             \"export_signature\": {}\n}}\n",
            lines.len(),
            trailer.signature,
            events.join(",\n    "),
            serde_json::to_string_pretty(&trailer).unwrap()
        )
        .into_bytes()
    }

    #[test]
    fn a_json_export_runs_the_same_checks() {
        let key = SigningKey::generate();
        let all = events();
        let export = json_export(&lines(&all), &key);
        let report = verify_json_export(&export, &ring(&[&key]));
        assert!(report.ok, "{report}");
        assert_eq!(report.total_events, 50);
        assert_eq!(report.chains_starting_mid_export_total, 1);

        let text = String::from_utf8(export).unwrap();
        let edited = text.replacen("\"value-10\"", "\"value-11\"", 1);
        let report = verify_json_export(edited.as_bytes(), &ring(&[&key]));
        assert!(!report.ok && !report.digest_valid);
        let id = all[9].event_id.to_string();
        assert!(
            report
                .problems
                .iter()
                .any(|p| p.line == 10 && p.event_id.as_deref() == Some(id.as_str())),
            "{report}"
        );

        let report = verify_json_export(b"{\"events\": 3}", &ring(&[&key]));
        assert!(
            !report.ok && mentions(&report, "not a JSON export"),
            "{report}"
        );
    }
}
