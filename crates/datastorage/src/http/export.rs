//! `GET /api/v1/audit/export`: a signed export, with upstream's parameters.
//!
//! Events are shipped in chain order (`correlation_id`, then `chain_sequence`), read page by
//! page from one snapshot and streamed, so memory stays flat however many there are. Every
//! event is shipped as one compact JSON object (an NDJSON line, an element of the JSON
//! answer's `events`, or, for CSV, a row) with `hash_chain_valid` as checked while it streams:
//! its content gives its hash, and it links to the event before it (for a chain's first
//! exported event, to its stored predecessor, or the recorded hash of what retention removed).
//! The signature (Ed25519, `signing:`) covers the SHA-256 of those exact bytes, in a trailer
//! (see `datastorage_api::export`); PII redaction, when asked for, happens before, so what is
//! shipped is what is signed.
//!
//! Formats: `json` (upstream's shape; at most 10,000 events, `offset`/`limit` as upstream),
//! `ndjson` and `csv` (streamed, no limit unless given).

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, Query, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use datastorage_api::export::{trailer_line, ExportMeta, ExportWriter, Trailer};
use datastorage_api::query::{parse_time, EventFilter};
use datastorage_api::signing::ALGORITHM_RSA;
use datastorage_api::{AuditEvent, EventCategory, EventQueryParams, FieldErrors, Problem};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, Result};
use super::state::AppState;
use crate::auth::access::{Action, Caller, ACCESS_CHAIN};
use crate::db::shared::ExportRow;
use crate::domain::chain::Hasher;
use crate::domain::keys::Signer;
use crate::domain::redact;
use crate::metrics::ExportLabels;

/// Most events of a `json` export (upstream's limit).
pub const MAX_JSON_EVENTS: u32 = 10_000;
/// Default events of a `json` export (upstream's).
pub const DEFAULT_JSON_EVENTS: u32 = 1000;

/// The route.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(export))
}

/// Query of `GET /api/v1/audit/export`.
#[derive(Debug, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ExportParams {
    /// Start of the time range (inclusive; RFC 3339, or relative such as `24h`).
    start_time: Option<String>,
    /// End of the time range (exclusive).
    end_time: Option<String>,
    /// One correlation id.
    correlation_id: Option<String>,
    /// One event category.
    event_category: Option<String>,
    /// `json` (default, upstream's shape), `ndjson` or `csv` (streamed).
    format: Option<String>,
    /// Add a PEM-armoured detached signature to a `json` export.
    include_detached_signature: Option<bool>,
    /// Events skipped first (`json` only, as upstream).
    offset: Option<u64>,
    /// Most events: 1 to 10000 for `json` (default 1000); unlimited by default for the streamed
    /// formats.
    limit: Option<u32>,
    /// Redact PII (`event_data.user_email`, `source_ip`, `phone_number`) before signing.
    redact_pii: Option<bool>,
    /// Exact event type (extension, as the query's).
    event_type: Option<String>,
    /// Outcome, any case (extension).
    event_outcome: Option<String>,
    /// Severity, any case (extension).
    severity: Option<String>,
    /// Exact actor id (extension).
    actor_id: Option<String>,
    /// Exact resource type (extension).
    resource_type: Option<String>,
    /// Exact resource id (extension).
    resource_id: Option<String>,
    /// Exact namespace (extension).
    namespace: Option<String>,
    /// Exact cluster id (extension).
    cluster_id: Option<String>,
    /// `event_data` key, `[A-Za-z0-9_]+`, with `detail_value` (extension).
    detail_key: Option<String>,
    /// `event_data` value compared as text, with `detail_key` (extension).
    detail_value: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Ndjson,
    Csv,
}

impl Format {
    fn as_str(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Ndjson => "ndjson",
            Format::Csv => "csv",
        }
    }
}

/// A validated export request.
struct Request {
    filter: EventFilter,
    format: Format,
    detached: bool,
    offset: u64,
    limit: Option<u64>,
    redact: bool,
    filters: Map<String, Value>,
}

fn validate(
    params: &ExportParams,
    now: DateTime<Utc>,
) -> std::result::Result<Request, FieldErrors> {
    let mut errors = FieldErrors::default();
    let mut filter = EventFilter::default();
    let mut time = |field: &str, raw: &Option<String>| {
        raw.as_deref().and_then(|r| match parse_time(r, now) {
            Ok(t) => Some(t),
            Err(e) => {
                errors.add(field, e);
                None
            }
        })
    };
    filter.since = time("start_time", &params.start_time);
    filter.until = time("end_time", &params.end_time);
    if let (Some(s), Some(u)) = (filter.since, filter.until) {
        if s >= u {
            errors.add("end_time", "end_time must be after start_time");
        }
    }
    match &params.correlation_id {
        Some(c) if c.is_empty() || c.chars().count() > 255 => errors.add(
            "correlation_id",
            "correlation_id must be 1 to 255 characters",
        ),
        Some(c) => filter.correlation_id = Some(c.clone()),
        None => filter.hidden_chain = Some(ACCESS_CHAIN.to_owned()),
    }
    if let Some(c) = &params.event_category {
        match c.parse::<EventCategory>() {
            Ok(c) => filter.event_category = Some(c),
            Err(e) => errors.add("event_category", e),
        }
    }
    // The query's other filters, checked by the query's rules, so an export covers exactly
    // what the same search shows.
    let query = EventQueryParams {
        event_type: params.event_type.clone(),
        event_outcome: params.event_outcome.clone(),
        severity: params.severity.clone(),
        actor_id: params.actor_id.clone(),
        resource_type: params.resource_type.clone(),
        resource_id: params.resource_id.clone(),
        namespace: params.namespace.clone(),
        cluster_id: params.cluster_id.clone(),
        detail_key: params.detail_key.clone(),
        detail_value: params.detail_value.clone(),
        ..EventQueryParams::default()
    };
    match query.validate(now) {
        Ok(q) => {
            filter.event_type = q.event_type;
            filter.event_outcome = q.event_outcome;
            filter.severity = q.severity;
            filter.actor_id = q.actor_id;
            filter.resource_type = q.resource_type;
            filter.resource_id = q.resource_id;
            filter.namespace = q.namespace;
            filter.cluster_id = q.cluster_id;
            filter.detail = q.detail;
        }
        Err(e) => errors.merge_prefixed("", e),
    }
    let format = match params.format.as_deref() {
        None | Some("json") => Format::Json,
        Some("ndjson") => Format::Ndjson,
        Some("csv") => Format::Csv,
        Some(other) => {
            errors.add(
                "format",
                format!("format must be json, ndjson or csv (got {other:?})"),
            );
            Format::Json
        }
    };
    let limit = match (format, params.limit) {
        (_, Some(0)) => {
            errors.add("limit", "limit must be at least 1");
            None
        }
        (Format::Json, Some(n)) if n > MAX_JSON_EVENTS => {
            errors.add(
                "limit",
                format!("a json export holds at most {MAX_JSON_EVENTS} events: use offset, or format=ndjson to stream them all"),
            );
            None
        }
        (Format::Json, n) => Some(u64::from(n.unwrap_or(DEFAULT_JSON_EVENTS))),
        (_, n) => n.map(u64::from),
    };
    let offset = params.offset.unwrap_or(0);
    if offset > 0 && format != Format::Json {
        errors.add(
            "offset",
            "offset applies to format=json only; a streamed export is whole",
        );
    }
    if !errors.0.is_empty() {
        return Err(errors);
    }
    let filters = serde_json::to_value(params)
        .ok()
        .and_then(|v| match v {
            Value::Object(map) => Some(map.into_iter().filter(|(_, v)| !v.is_null()).collect()),
            _ => None,
        })
        .unwrap_or_default();
    Ok(Request {
        filter,
        format,
        detached: params.include_detached_signature.unwrap_or(false),
        offset,
        limit,
        redact: params.redact_pii.unwrap_or(false),
        filters,
    })
}

/// Exports events, signed.
#[utoipa::path(
    get,
    path = "/api/v1/audit/export",
    tag = "export",
    summary = "Export audit events, signed",
    description = "Events matching the filters, in chain order (correlation_id, then chain_sequence), each with hash_chain_valid; the signature (Ed25519) covers the SHA-256 of the exact bytes of every event shipped (see docs/lifecycle.md). json: upstream's shape, at most 10000 events. ndjson, csv: streamed, memory flat, the signature in a final trailer line. Verify offline with `datastorage export verify FILE --public-key KEY`.",
    params(ExportParams),
    responses(
        (status = 200, description = "The export (application/json, application/x-ndjson or text/csv)"),
        (status = 400, description = "A parameter is unknown or breaks a rule (named)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The database cannot serve now, or too many exports run; retry after Retry-After", body = Problem, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(skip_all, fields(route = "/api/v1/audit/export"))]
async fn export(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    query: std::result::Result<Query<ExportParams>, QueryRejection>,
) -> Result<Response> {
    let Query(params) = query?;
    let request = validate(&params, Utc::now()).map_err(ApiError::Validation)?;
    let slot = state.store.export_slot()?;
    // The export is recorded before its first byte leaves: an export that cannot be recorded
    // is not shipped.
    let details = Map::from_iter([
        ("filters".to_owned(), Value::Object(request.filters.clone())),
        ("format".to_owned(), json!(request.format.as_str())),
        ("redacted".to_owned(), json!(request.redact)),
    ]);
    state
        .access
        .change(
            &caller,
            Action::Export,
            "/api/v1/audit/export",
            None,
            details,
        )
        .await?;
    let meta = ExportMeta {
        exported_at: Utc::now(),
        exported_by: if request.redact && caller.principal.name.contains('@') {
            redact::email(&caller.principal.name)
        } else {
            caller.principal.name.clone()
        },
        filters: request.filters.clone(),
        format: request.format.as_str().to_owned(),
        redacted: request.redact,
    };
    let content_type = match request.format {
        Format::Json => "application/json",
        Format::Ndjson => "application/x-ndjson",
        Format::Csv => "text/csv; charset=utf-8",
    };
    let (body_tx, body_rx) = mpsc::channel::<std::result::Result<Bytes, std::io::Error>>(8);
    let (rows_tx, rows_rx) = mpsc::channel(2);
    let store = state.store.clone();
    let filter = request.filter.clone();
    let reader = tokio::spawn(async move {
        if let Err(e) = store.export_events(&filter, rows_tx.clone()).await {
            let _ = rows_tx.send(Err(e)).await;
        }
    });
    let stream = Streamer {
        request,
        hasher: state.store.hasher(),
        signer: Arc::clone(&state.signer),
        metrics: state.metrics.lifecycle.clone(),
        out: body_tx,
        writer: ExportWriter::new(meta),
        chain: None,
        valid: 0,
        broken: Vec::new(),
        broken_total: 0,
        seen: 0,
        has_more: false,
    };
    tokio::spawn(async move {
        let _slot = slot;
        stream.run(rows_rx, reader).await;
    });
    let chunks = futures::stream::unfold(body_rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    });
    let body = Body::from_stream(chunks);
    let mut response = body.into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    Ok(response)
}

/// The CSV columns, in order; `event_data` is its JSON text.
pub const CSV_COLUMNS: [&str; 32] = [
    "event_id",
    "event_timestamp",
    "event_date",
    "correlation_id",
    "chain_sequence",
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
    "event_hash",
    "previous_event_hash",
    "hash_algorithm",
    "hash_key_id",
    "ingested_by",
    "legal_hold",
    "event_data",
];

/// Most broken events listed by id in a `json` export's `hash_chain_verification`.
const MAX_LISTED_BROKEN: usize = 1000;

/// Turns pages of rows into the bytes of the export, checking and hashing as it goes.
struct Streamer {
    request: Request,
    hasher: Arc<Hasher>,
    signer: Arc<Signer>,
    metrics: crate::metrics::LifecycleMetrics,
    out: mpsc::Sender<std::result::Result<Bytes, std::io::Error>>,
    writer: ExportWriter,
    /// The last shipped event's chain, sequence and hash.
    chain: Option<(String, i64, String)>,
    valid: u64,
    broken: Vec<String>,
    broken_total: u64,
    /// Rows read (offset included).
    seen: u64,
    has_more: bool,
}

impl Streamer {
    async fn send(&self, bytes: Vec<u8>) -> bool {
        self.out.send(Ok(Bytes::from(bytes))).await.is_ok()
    }

    async fn fail(&self, message: String) {
        tracing::warn!(error = %message, "export stopped");
        let _ = self.out.send(Err(std::io::Error::other(message))).await;
    }

    async fn run(
        mut self,
        mut rows: mpsc::Receiver<std::result::Result<Vec<ExportRow>, crate::db::DbError>>,
        reader: tokio::task::JoinHandle<()>,
    ) {
        let format = self.request.format;
        let head: &[u8] = match format {
            Format::Json => b"{\"events\":[",
            Format::Ndjson => b"",
            Format::Csv => b"",
        };
        let mut chunk = head.to_vec();
        if format == Format::Csv {
            chunk.extend_from_slice(CSV_COLUMNS.join(",").as_bytes());
            chunk.push(b'\n');
        }
        let end = self.request.limit.map(|l| self.request.offset + l);
        'pages: while let Some(page) = rows.recv().await {
            let page = match page {
                Ok(page) => page,
                Err(e) => {
                    // Headers are gone: the body ends in an error, and no trailer is written, so
                    // the export cannot verify.
                    self.fail(format!("the export could not be read to its end: {e}"))
                        .await;
                    return;
                }
            };
            for row in page {
                self.seen += 1;
                if self.seen <= self.request.offset {
                    continue;
                }
                if end.is_some_and(|end| self.seen > end) {
                    self.has_more = true;
                    break 'pages;
                }
                let line = self.line(row);
                if format == Format::Json && self.writer.total_events() > 0 {
                    chunk.push(b',');
                }
                chunk.extend_from_slice(&line);
                if format != Format::Json {
                    chunk.push(b'\n');
                }
                self.writer.push_line(&line);
            }
            if chunk.len() >= 64 * 1024 && !self.send(std::mem::take(&mut chunk)).await {
                return; // the client went away
            }
        }
        drop(rows);
        // The reader ended: fully (its last page was short), or stopped because this side
        // stopped reading. A reader that died instead must not leave a signed, short export.
        if !self.has_more && reader.await.is_err() {
            self.fail("the export's reader failed before its end".to_owned())
                .await;
            return;
        }
        let total = self.writer.total_events();
        let trailer = std::mem::replace(
            &mut self.writer,
            ExportWriter::new(ExportMeta {
                exported_at: Utc::now(),
                exported_by: String::new(),
                filters: Map::new(),
                format: String::new(),
                redacted: false,
            }),
        )
        .finish(self.signer.key());
        match format {
            Format::Json => chunk.extend_from_slice(&self.json_tail(&trailer)),
            Format::Ndjson => chunk.extend_from_slice(&trailer_line(&trailer)),
            Format::Csv => {
                chunk.extend_from_slice(b"#");
                chunk.extend_from_slice(&trailer_line(&trailer));
            }
        }
        if self.send(chunk).await {
            self.metrics
                .exports
                .get_or_create(&ExportLabels {
                    format: format.as_str(),
                })
                .inc();
            self.metrics.exported_events.inc_by(total);
        }
    }

    /// The bytes of one event as shipped, its checks done.
    fn line(&mut self, row: ExportRow) -> Vec<u8> {
        let ExportRow {
            mut event,
            predecessor,
        } = row;
        let content = self.hasher.content_matches(&event).unwrap_or(true);
        let linked = match &self.chain {
            Some((cid, seq, hash)) if *cid == event.correlation_id => {
                event.chain_sequence == seq + 1 && event.previous_event_hash == *hash
            }
            _ if event.chain_sequence == 1 => event.previous_event_hash.is_empty(),
            _ => predecessor.as_deref() == Some(event.previous_event_hash.as_str()),
        };
        let valid = content && linked;
        if valid {
            self.valid += 1;
        } else {
            self.broken_total += 1;
            if self.broken.len() < MAX_LISTED_BROKEN {
                self.broken.push(event.event_id.to_string());
            }
        }
        self.chain = Some((
            event.correlation_id.clone(),
            event.chain_sequence,
            event.event_hash.clone(),
        ));
        if self.request.redact {
            redact::event_data(&mut event.event_data);
        }
        match self.request.format {
            Format::Csv => csv_row(&event),
            _ => json_line(&event, valid),
        }
    }

    /// The end of a `json` export: verification, upstream's metadata, the trailer.
    fn json_tail(&self, trailer: &Trailer) -> Vec<u8> {
        let total = trailer.total_events;
        let percentage = if total == 0 {
            100.0
        } else {
            self.valid as f64 * 100.0 / total as f64
        };
        let mut tail = json!({
            "hash_chain_verification": {
                "total_events_verified": total,
                "valid_chain_events": self.valid,
                "broken_chain_events": self.broken_total,
                "chain_integrity_percentage": percentage,
                "verification_timestamp": Utc::now(),
                "tampered_event_ids": self.broken,
            },
            "export_metadata": {
                "export_timestamp": trailer.meta.exported_at,
                "export_format": "json",
                "query_filters": trailer.meta.filters,
                "total_events": total,
                "signature": trailer.signature,
                "signature_algorithm": if trailer.algorithm == ALGORITHM_RSA { "SHA256withRSA" } else { "Ed25519" },
                "certificate_fingerprint": trailer.public_key_fingerprint,
                "key_id": trailer.key_id,
                "exported_by": trailer.meta.exported_by,
                "has_more": self.has_more,
            },
            "export_signature": trailer,
        });
        if self.request.detached {
            tail["detached_signature"] = json!(format!(
                "-----BEGIN SIGNATURE-----\n{}\n-----END SIGNATURE-----\n",
                trailer.signature
            ));
        }
        let mut out = b"],".to_vec();
        let text = serde_json::to_vec(&tail).expect("a JSON value serializes");
        // `tail` is an object: ship its members after the events array.
        out.extend_from_slice(&text[1..]);
        out
    }
}

/// One event as compact JSON, with `hash_chain_valid` (upstream's field) last.
fn json_line(event: &AuditEvent, valid: bool) -> Vec<u8> {
    let mut line = serde_json::to_vec(event).expect("an event serializes");
    line.pop(); // the closing brace
    line.extend_from_slice(if valid {
        b",\"hash_chain_valid\":true}"
    } else {
        b",\"hash_chain_valid\":false}"
    });
    line
}

/// One event as a CSV row of [`CSV_COLUMNS`] (RFC 4180 quoting; rows end in `\n`).
fn csv_row(e: &AuditEvent) -> Vec<u8> {
    let value = serde_json::to_value(e).expect("an event serializes");
    let cells: Vec<String> = CSV_COLUMNS
        .iter()
        .map(|c| match value.get(*c) {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
        })
        .collect();
    let mut row = Vec::new();
    for (i, cell) in cells.iter().enumerate() {
        if i > 0 {
            row.push(b',');
        }
        if cell.contains([',', '"', '\n', '\r']) || cell.starts_with('#') {
            row.push(b'"');
            row.extend_from_slice(cell.replace('"', "\"\"").as_bytes());
            row.push(b'"');
        } else {
            row.extend_from_slice(cell.as_bytes());
        }
    }
    row
}
