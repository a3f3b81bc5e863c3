//! Realistic audit events, as HTTP bodies and as database rows.
//!
//! Events come from [`TEMPLATES`] templates spread over every category: 19–24 fields, an
//! `event_data` object of about 500 bytes, a `trace_id` unique per event inside `event_data`
//! (so indexes see fresh values), correlation ids `cid-<n>` drawn from a pool (so chains grow),
//! and a client-supplied UUIDv7 `event_id` in half of them.
//!
//! Bodies are assembled from pre-serialized pieces, so the load generator spends well under a
//! microsecond per event and leaves the CPU to the server and PostgreSQL.

use std::fmt::Write as _;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, SubsecRound, Utc};
use datastorage_api::chain::{chain_hash, Form, ALGORITHM_SHA256};
use datastorage_api::{validate_event, EventCategory, ValidatedEvent};
use serde_json::{json, Map, Value};
use uuid::Uuid;

/// Number of distinct event templates.
pub const TEMPLATES: usize = 256;

/// Target size of `event_data`, serialized, `trace_id` included.
pub const EVENT_DATA_BYTES: usize = 500;

/// Columns written by COPY and multi-row INSERT, in the order [`Gen::copy_row`] writes them.
pub const ROW_COLUMNS: &[&str] = &[
    "event_id",
    "event_timestamp",
    "event_date",
    "correlation_id",
    "chain_sequence",
    "event_data",
    "version",
    "event_type",
    "event_category",
    "event_action",
    "event_outcome",
    "actor_type",
    "actor_id",
    "actor_ip",
    "resource_type",
    "resource_id",
    "parent_event_id",
    "parent_event_date",
    "namespace",
    "cluster_id",
    "severity",
    "duration_ms",
    "error_code",
    "error_message",
    "retention_days",
    "is_sensitive",
    "previous_event_hash",
    "event_hash",
    "hash_algorithm",
];

/// The correlation id of pool member `n`.
pub fn cid(n: u64) -> String {
    format!("cid-{n}")
}

/// One template, pre-serialized for HTTP bodies and COPY rows.
#[derive(Debug, Clone)]
pub struct Template {
    /// `event_data` members after `trace_id`, JSON, without braces.
    data_rest: String,
    /// Every other constant top-level member, JSON, without braces.
    static_rest: String,
    /// `data_rest` escaped for COPY text format.
    copy_data_rest: String,
    /// The constant columns from `version` on, COPY text format, tab-separated.
    copy_static: String,
    /// The template as the server would validate it (id, timestamp and correlation id are
    /// placeholders), for rows written straight to the database.
    pub validated: ValidatedEvent,
    /// A 64-hex stand-in hash for ceiling rows (they are not chained).
    pub fake_hash: String,
}

/// Every template; share it with [`Arc`].
#[derive(Debug, Clone)]
pub struct Templates(pub Vec<Template>);

const NOUNS: &[&str] = &[
    "signal",
    "request",
    "execution",
    "analysis",
    "decision",
    "notification",
];
const ACTIONS: &[&str] = &[
    "received",
    "created",
    "updated",
    "completed",
    "evaluated",
    "escalated",
    "approved",
    "retried",
];
const NAMESPACES: &[&str] = &[
    "prod-payments",
    "prod-checkout",
    "prod-search",
    "staging-orders",
    "monitoring",
];
const CLUSTERS: &[&str] = &["eu-west-1-prod", "us-east-2-prod", "ap-south-1-staging"];
const RESOURCES: &[&str] = &[
    "Signal",
    "RemediationRequest",
    "WorkflowExecution",
    "AIAnalysis",
    "NotificationRequest",
];
const PHASES: &[&str] = &["Pending", "Analyzing", "Executing", "Completed"];
const ACTOR_TYPES: &[&str] = &["service", "controller", "user"];
const ALERTS: &[&str] = &[
    "KubePodCrashLooping",
    "KubeDeploymentReplicasMismatch",
    "NodeMemoryPressure",
    "HighErrorRate",
    "CertificateExpiringSoon",
];

fn hex(rng: &mut fastrand::Rng, n: usize) -> String {
    (0..n)
        .map(|_| char::from_digit(rng.u32(0..16), 16).unwrap_or('0'))
        .collect()
}

/// The full JSON of template `i` (deterministic), with placeholder id, timestamp and cid.
pub fn template_json(i: usize) -> Value {
    let mut rng = fastrand::Rng::with_seed(0x5eed_0000 + i as u64);
    let cat = EventCategory::ALL[i % EventCategory::ALL.len()];
    let noun = NOUNS[i % NOUNS.len()];
    let action = ACTIONS[(i / 3) % ACTIONS.len()];
    let ns = NAMESPACES[i % NAMESPACES.len()];
    let severity = ["critical", "warning", "info"][i % 3];
    let outcome = match i % 20 {
        0 => "failure",
        1 => "pending",
        _ => "success",
    };
    let mut data = json!({
        "signal": {
            "fingerprint": hex(&mut rng, 16),
            "alertname": ALERTS[i % ALERTS.len()],
            "source": "prometheus",
            "labels": {
                "namespace": ns,
                "pod": format!("{noun}-api-{}-{}", hex(&mut rng, 9), hex(&mut rng, 5)),
                "container": "api",
                "severity": severity
            }
        },
        "remediation": {
            "request": format!("rr-{}", hex(&mut rng, 10)),
            "phase": PHASES[i % PHASES.len()],
            "attempt": 1 + i % 3,
            "workflow": format!("restart-deployment-v{}", 1 + i % 4),
            "approved_by": "policy/auto"
        },
        "metrics": {
            "restarts": rng.u32(0..20),
            "cpu_millicores": rng.u32(50..2000),
            "memory_mib": f64::from(rng.u32(64..4096)) + 0.5
        },
        "tags": [format!("tier-{}", 1 + i % 3), cat.as_str()],
        "summary": ""
    });
    // Pad `summary` so the serialized object with its trace id is EVENT_DATA_BYTES long.
    let trace_len = r#""trace_id":"00000000000000000000000000000000","#.len();
    let len = serde_json::to_string(&data).map(|s| s.len()).unwrap_or(0) + trace_len;
    let words = "the pod restarted repeatedly after an out of memory kill and was rescheduled ";
    let pad: String = words
        .chars()
        .cycle()
        .take(EVENT_DATA_BYTES.saturating_sub(len))
        .collect();
    data["summary"] = Value::String(pad);
    let mut ev = json!({
        "version": "1.0",
        "event_type": format!("{}.{noun}.{action}", cat.as_str()),
        "event_timestamp": "2026-01-01T00:00:00Z",
        "event_category": cat.as_str(),
        "event_action": action,
        "event_outcome": outcome,
        "actor_type": ACTOR_TYPES[i % ACTOR_TYPES.len()],
        "actor_id": format!("{}-controller", cat.as_str()),
        "actor_ip": format!("10.{}.{}.{}", rng.u8(0..255), rng.u8(0..255), rng.u8(1..255)),
        "resource_type": RESOURCES[i % RESOURCES.len()],
        "resource_id": format!("{}-{}", noun, hex(&mut rng, 12)),
        "correlation_id": "cid-0",
        "namespace": ns,
        "cluster_id": CLUSTERS[i % CLUSTERS.len()],
        "severity": severity,
        "duration_ms": rng.i64(1..5000),
        "retention_days": 2555,
        "is_sensitive": i.is_multiple_of(10),
        "event_data": data
    });
    if i.is_multiple_of(3) {
        ev["parent_event_id"] = json!(Uuid::from_u128(rng.u128(..)).to_string());
        ev["parent_event_date"] = json!("2025-12-31T23:59:58.123456Z");
    }
    if outcome == "failure" {
        ev["error_code"] = json!("ERR_WORKFLOW_TIMEOUT");
        ev["error_message"] = json!("workflow step restart-pod did not finish within 300s");
    }
    ev
}

/// Members of a JSON object, serialized, without the braces.
fn members(map: &Map<String, Value>) -> String {
    let s = serde_json::to_string(map).unwrap_or_default();
    s[1..s.len() - 1].to_owned()
}

/// Appends `s` escaped for PostgreSQL's COPY text format.
pub fn copy_escape(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
}

fn copy_opt(v: Option<&str>, out: &mut String) {
    match v {
        Some(s) => copy_escape(s, out),
        None => out.push_str("\\N"),
    }
}

fn ts_text(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// The constant columns of a row from `version` on, COPY text, each preceded by a tab.
fn copy_static_columns(e: &ValidatedEvent, prev: &str, hash: &str, out: &mut String) {
    let cols: [Option<String>; 23] = [
        Some(e.version.clone()),
        Some(e.event_type.clone()),
        Some(e.event_category.as_str().to_owned()),
        Some(e.event_action.clone()),
        Some(e.event_outcome.as_str().to_owned()),
        e.actor_type.clone(),
        e.actor_id.clone(),
        e.actor_ip.clone(),
        e.resource_type.clone(),
        e.resource_id.clone(),
        e.parent_event_id.map(|u| u.to_string()),
        e.parent_event_date.as_ref().map(ts_text),
        e.namespace.clone(),
        e.cluster_id.clone(),
        e.severity.clone(),
        e.duration_ms.map(|d| d.to_string()),
        e.error_code.clone(),
        e.error_message.clone(),
        Some(e.retention_days.to_string()),
        Some(if e.is_sensitive { "t" } else { "f" }.to_owned()),
        Some(prev.to_owned()),
        Some(hash.to_owned()),
        Some(ALGORITHM_SHA256.to_owned()),
    ];
    for c in &cols {
        out.push('\t');
        copy_opt(c.as_deref(), out);
    }
}

impl Templates {
    /// Builds every template; fails if one does not pass the API's validation.
    pub fn build() -> anyhow::Result<Self> {
        let mut v = Vec::with_capacity(TEMPLATES);
        for i in 0..TEMPLATES {
            let full = template_json(i);
            let validated = validate_event(&full)
                .map_err(|e| anyhow::anyhow!("template {i} is invalid: {}", e.summary()))?;
            let mut obj = full.as_object().cloned().unwrap_or_default();
            let data = obj
                .remove("event_data")
                .and_then(|d| d.as_object().cloned())
                .unwrap_or_default();
            for k in ["event_id", "event_timestamp", "correlation_id"] {
                obj.remove(k);
            }
            let data_rest = members(&data);
            let mut copy_data_rest = String::new();
            copy_escape(&data_rest, &mut copy_data_rest);
            let mut rng = fastrand::Rng::with_seed(i as u64);
            let fake_hash = hex(&mut rng, 64);
            let mut copy_static = String::new();
            copy_static_columns(&validated, &hex(&mut rng, 64), &fake_hash, &mut copy_static);
            v.push(Template {
                data_rest,
                static_rest: members(&obj),
                copy_data_rest,
                copy_static,
                validated,
                fake_hash,
            });
        }
        Ok(Self(v))
    }
}

/// A per-worker event source.
#[derive(Debug, Clone)]
pub struct Gen {
    templates: Arc<Templates>,
    /// Correlation ids are `cid-0 .. cid-(cids-1)`.
    cids: u64,
    rng: fastrand::Rng,
}

impl Gen {
    /// A source drawing correlation ids from `0..cids`, seeded with `seed`.
    pub fn new(templates: Arc<Templates>, cids: u64, seed: u64) -> Self {
        Self {
            templates,
            cids: cids.max(1),
            rng: fastrand::Rng::with_seed(seed),
        }
    }

    /// Appends one event's JSON to `out`.
    pub fn write_event(&mut self, out: &mut Vec<u8>) {
        self.write_event_on(None, out);
    }

    /// Appends one event's JSON to `out`, on chain `cid_text` (or one drawn from the pool).
    fn write_event_on(&mut self, cid_text: Option<&str>, out: &mut Vec<u8>) {
        let t = &self.templates.0[self.rng.usize(..self.templates.0.len())];
        let mut s = String::with_capacity(1200);
        s.push('{');
        if self.rng.bool() {
            let _ = write!(s, r#""event_id":"{}","#, Uuid::now_v7());
        }
        let drawn;
        let cid_text = match cid_text {
            Some(c) => c,
            None => {
                drawn = cid(self.rng.u64(..self.cids));
                &drawn
            }
        };
        let _ = write!(
            s,
            r#""event_timestamp":"{}","correlation_id":{},"event_data":{{"trace_id":"{:032x}",{}}},{}}}"#,
            ts_text(&Utc::now()),
            Value::String(cid_text.to_owned()),
            self.rng.u128(..),
            t.data_rest,
            t.static_rest
        );
        out.extend_from_slice(s.as_bytes());
    }

    /// Body of `POST /api/v1/audit/events` for chain `cid_text`.
    pub fn single_on(&mut self, cid_text: &str) -> Bytes {
        let mut out = Vec::with_capacity(1200);
        self.write_event_on(Some(cid_text), &mut out);
        Bytes::from(out)
    }

    /// Body of `POST /api/v1/audit/events/batch` with `n` events, all on chain `cid_text`.
    pub fn batch_on(&mut self, cid_text: &str, n: usize) -> Bytes {
        let mut out = Vec::with_capacity(n * 1200 + 2);
        out.push(b'[');
        for i in 0..n {
            if i > 0 {
                out.push(b',');
            }
            self.write_event_on(Some(cid_text), &mut out);
        }
        out.push(b']');
        Bytes::from(out)
    }

    /// Body of `POST /api/v1/audit/events/batch` with `n` events (correlation ids from the
    /// pool), exactly `target` bytes long: each event's `event_data` gets a `blob` string
    /// member (prose, as a large log excerpt or manifest would be) sized so the body reaches
    /// `target`. Shorter than `target` only if the events alone are longer.
    pub fn padded_batch(&mut self, n: usize, target: usize) -> Bytes {
        const KEY: &[u8] = b"\"event_data\":{";
        const FIELD: usize = r#""blob":"","#.len();
        let n = n.max(1);
        let events: Vec<Vec<u8>> = (0..n)
            .map(|_| {
                let mut v = Vec::with_capacity(1200);
                self.write_event(&mut v);
                v
            })
            .collect();
        let base = events.iter().map(Vec::len).sum::<usize>() + (n - 1) + 2 + n * FIELD;
        let pad = target.saturating_sub(base);
        let (each, extra) = (pad / n, pad % n);
        let words = PAD_WORDS.as_bytes();
        let mut out = Vec::with_capacity(target.max(base));
        out.push(b'[');
        for (i, ev) in events.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            let at = ev
                .windows(KEY.len())
                .position(|w| w == KEY)
                .map_or(ev.len(), |p| p + KEY.len());
            out.extend_from_slice(&ev[..at]);
            out.extend_from_slice(b"\"blob\":\"");
            let len = each + usize::from(i < extra);
            let skip = self.rng.usize(..words.len());
            out.extend(words.iter().cycle().skip(skip).take(len));
            out.extend_from_slice(b"\",");
            out.extend_from_slice(&ev[at..]);
        }
        out.push(b']');
        Bytes::from(out)
    }

    /// Body of `POST /api/v1/audit/events`.
    pub fn single(&mut self) -> Bytes {
        let mut out = Vec::with_capacity(1200);
        self.write_event(&mut out);
        Bytes::from(out)
    }

    /// Body of `POST /api/v1/audit/events/batch` with `n` events.
    pub fn batch(&mut self, n: usize) -> Bytes {
        let mut out = Vec::with_capacity(n * 1200 + 2);
        out.push(b'[');
        for i in 0..n {
            if i > 0 {
                out.push(b',');
            }
            self.write_event(&mut out);
        }
        out.push(b']');
        Bytes::from(out)
    }

    /// A random pool member below `n`.
    pub fn pick(&mut self, n: u64) -> u64 {
        self.rng.u64(..n.max(1))
    }

    /// Appends one unchained ceiling row (COPY text, [`ROW_COLUMNS`] order) with a fresh id and
    /// a globally unique `chain_sequence`.
    pub fn copy_row(&mut self, seq: i64, ts: &str, date: &str, out: &mut String) {
        let t = &self.templates.0[self.rng.usize(..self.templates.0.len())];
        let _ = writeln!(
            out,
            "{}\t{ts}\t{date}\tcid-{}\t{seq}\t{{\"trace_id\":\"{:032x}\",{}}}{}",
            Uuid::now_v7(),
            self.rng.u64(..self.cids),
            self.rng.u128(..),
            t.copy_data_rest,
            t.copy_static
        );
    }

    /// One unchained ceiling row as typed values, for a multi-row INSERT.
    pub fn row(&mut self, seq: i64) -> Row {
        let t = &self.templates.0[self.rng.usize(..self.templates.0.len())];
        let now = Utc::now().trunc_subsecs(6);
        let mut e = t.validated.clone();
        e.event_id = Uuid::now_v7();
        e.event_timestamp = now;
        e.correlation_id = cid(self.rng.u64(..self.cids));
        Row {
            data: format!(
                "{{\"trace_id\":\"{:032x}\",{}}}",
                self.rng.u128(..),
                t.data_rest
            ),
            event: e,
            seq,
            previous_hash: t.fake_hash.clone(),
            hash: t.fake_hash.clone(),
        }
    }

    /// Appends events `seqs` of a valid chain for `cid` as COPY rows, hashes computed with the
    /// API's chain rules; `prev` is the hash of the event before the first (empty before event
    /// 1) and is left holding the last one's, so a long chain can be written in pieces.
    pub fn chain_rows(
        &mut self,
        cid_text: &str,
        seqs: std::ops::RangeInclusive<i64>,
        prev: &mut String,
        start: DateTime<Utc>,
        out: &mut String,
    ) {
        for seq in seqs {
            let t = &self.templates.0[self.rng.usize(..self.templates.0.len())];
            let mut e = t.validated.clone();
            e.event_id = Uuid::now_v7();
            e.id_supplied = true;
            e.event_timestamp = (start
                + chrono::Duration::milliseconds(seq * 1500 + self.rng.i64(0..1000)))
            .trunc_subsecs(6);
            e.correlation_id = cid_text.to_owned();
            e.event_data.insert(
                "trace_id".to_owned(),
                Value::String(format!("{:032x}", self.rng.u128(..))),
            );
            let hash = chain_hash(prev, &e, seq, Form::V1);
            let data = serde_json::to_string(&e.event_data).unwrap_or_default();
            let _ = write!(
                out,
                "{}\t{}\t{}\t",
                e.event_id,
                ts_text(&e.event_timestamp),
                e.event_timestamp.date_naive()
            );
            copy_escape(cid_text, out);
            let _ = write!(out, "\t{seq}\t");
            copy_escape(&data, out);
            copy_static_columns(&e, prev, &hash, out);
            out.push('\n');
            *prev = hash;
        }
    }
}

/// A ceiling row as typed values.
#[derive(Debug, Clone)]
pub struct Row {
    /// The event's columns.
    pub event: ValidatedEvent,
    /// `event_data` as JSON text.
    pub data: String,
    /// `chain_sequence`.
    pub seq: i64,
    /// `previous_event_hash`.
    pub previous_hash: String,
    /// `event_hash`.
    pub hash: String,
}

/// Prose the padding of [`Gen::padded_batch`] cycles through.
const PAD_WORDS: &str = "container api in pod payments-api restarted after an out of memory kill; the node reported memory pressure and the scheduler moved the workload to another node while the remediation workflow waited for the rollout to settle. ";

/// Timestamp and date text of now, for COPY rows.
pub fn now_texts() -> (String, String) {
    let now = Utc::now();
    (ts_text(&now), now.date_naive().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gen() -> Gen {
        Gen::new(Arc::new(Templates::build().unwrap()), 1000, 7)
    }

    #[test]
    fn every_body_is_a_valid_event_with_at_least_16_fields_and_about_500_bytes_of_data() {
        let mut g = gen();
        let mut supplied = 0;
        for _ in 0..400 {
            let body: Value = serde_json::from_slice(&g.single()).unwrap();
            let fields = body.as_object().unwrap().len();
            assert!(fields >= 16, "{fields} fields: {body}");
            let data = serde_json::to_string(&body["event_data"]).unwrap();
            assert!((450..=560).contains(&data.len()), "{} bytes", data.len());
            let v = validate_event(&body).unwrap();
            assert!(v.correlation_id.starts_with("cid-"));
            if v.id_supplied {
                assert_eq!(v.event_id.get_version_num(), 7);
                supplied += 1;
            }
        }
        assert!(
            (100..=300).contains(&supplied),
            "{supplied} of 400 carried an id"
        );
    }

    #[test]
    fn a_batch_is_an_array_of_valid_events() {
        let body: Value = serde_json::from_slice(&gen().batch(25)).unwrap();
        let items = body.as_array().unwrap();
        assert_eq!(items.len(), 25);
        for item in items {
            validate_event(item).unwrap();
        }
    }

    #[test]
    fn copy_rows_have_one_field_per_column() {
        let mut g = gen();
        let (ts, date) = now_texts();
        let mut out = String::new();
        g.copy_row(1, &ts, &date, &mut out);
        g.chain_rows("cid-5", 1..=3, &mut String::new(), Utc::now(), &mut out);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 4);
        for l in lines {
            assert_eq!(l.split('\t').count(), ROW_COLUMNS.len(), "{l}");
        }
    }

    #[test]
    fn chain_rows_link_their_hashes() {
        let mut g = gen();
        let mut out = String::new();
        let mut hash = String::new();
        // In two pieces, as the seeder writes long chains.
        g.chain_rows("cid-9", 1..=2, &mut hash, Utc::now(), &mut out);
        g.chain_rows("cid-9", 3..=4, &mut hash, Utc::now(), &mut out);
        let rows: Vec<Vec<&str>> = out.lines().map(|l| l.split('\t').collect()).collect();
        assert_eq!(rows.len(), 4);
        assert_eq!(rows[0][26], "");
        for w in rows.windows(2) {
            assert_eq!(w[1][26], w[0][27]);
        }
        assert_eq!(rows[3][4], "4");
        assert_eq!(rows[3][27], hash);
    }

    #[test]
    fn a_padded_batch_has_the_target_size_and_valid_events() {
        let target = 5 * 1024 * 1024 - 32 * 1024;
        let body = gen().padded_batch(500, target);
        assert_eq!(body.len(), target);
        let items: Vec<Value> = serde_json::from_slice(&body).unwrap();
        assert_eq!(items.len(), 500);
        for item in &items {
            let v = validate_event(item).unwrap();
            assert!(v.event_data["blob"].as_str().unwrap().len() > 9000);
        }
    }

    #[test]
    fn events_on_one_chain_carry_its_id() {
        let mut g = gen();
        let single: Value = serde_json::from_slice(&g.single_on("held \"x\"")).unwrap();
        assert_eq!(single["correlation_id"], "held \"x\"");
        let batch: Vec<Value> = serde_json::from_slice(&g.batch_on("c-1", 3)).unwrap();
        assert!(batch.iter().all(|e| e["correlation_id"] == "c-1"));
    }

    #[test]
    fn copy_escape_escapes_the_four_specials() {
        let mut out = String::new();
        copy_escape("a\\b\tc\nd\re", &mut out);
        assert_eq!(out, "a\\\\b\\tc\\nd\\re");
    }
}
