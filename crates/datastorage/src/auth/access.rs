//! Access records: queries, single reads, chain verifications and denied requests, stored as
//! audit events of the service itself, in their own chain ([`ACCESS_CHAIN`]), through the same
//! write path as every event ([`AuditWriter::write_access`]). Who, what route, which filters,
//! how many rows, the outcome.
//!
//! - A read is answered only once its record is committed: a read that cannot be recorded
//!   answers 503, so nothing is read unrecorded. `auth.recordReads: false` turns read records
//!   off.
//! - A denial (401, 403, 429) is recorded without delaying its answer, and at most
//!   `auth.denialsPerSecond` per second, so a flood of bad tokens cannot flood the database;
//!   the rest are counted (`datastorage_access_records_total{result="suppressed"}`).
//! - Records never recurse: they are written directly, not through a route, so recording one
//!   records nothing. Reading the access chain is recorded like any read.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use datastorage_api::{EventCategory, EventOutcome, ValidatedEvent, DEFAULT_RETENTION_DAYS};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde_json::{json, Map, Value};
use uuid::Uuid;

use super::principal::{Principal, SERVICE_PRINCIPAL};
use crate::db::DbError;
use crate::metrics::{AccessLabels, AuthCounters};
use crate::workers::retention::PurgeReport;
use crate::writer::AuditWriter;

/// The `correlation_id` of every access record: one chain, verifiable like any other.
pub const ACCESS_CHAIN: &str = "datastorage-access";

/// An authenticated request, as the guard hands it to the handler.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Who.
    pub principal: Principal,
    /// From where (behind trusted proxies, the forwarded client).
    pub client: Option<IpAddr>,
    /// The request id (`x-request-id`).
    pub request_id: String,
}

/// What was accessed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// `GET /api/v1/audit/events`.
    Query,
    /// `GET /api/v1/audit/events/{event_id}`.
    Read,
    /// `POST /api/v1/audit/verify-chain`.
    Verify,
    /// A request refused with 401, 403 or 429.
    Denied,
    /// `POST /api/v1/audit/legal-hold`.
    HoldPlaced,
    /// `DELETE /api/v1/audit/legal-hold/{correlation_id}`.
    HoldReleased,
    /// `GET /api/v1/audit/export`.
    Export,
    /// A retention purge run (by the service itself).
    Purge,
    /// `GET /api/v1/audit/stats`.
    Stats,
    /// `GET /api/v1/audit/events/stream` (recorded when the subscription opens).
    Stream,
}

impl Action {
    fn as_str(self) -> &'static str {
        match self {
            Action::Query => "query",
            Action::Read => "read",
            Action::Verify => "verify",
            Action::Denied => "denied",
            Action::HoldPlaced => "legal_hold_placed",
            Action::HoldReleased => "legal_hold_released",
            Action::Export => "export",
            Action::Purge => "purge",
            Action::Stats => "stats",
            Action::Stream => "stream",
        }
    }

    fn resource_type(self) -> &'static str {
        match self {
            Action::Query | Action::Read | Action::Stats | Action::Stream => "audit_event",
            Action::Verify => "audit_chain",
            Action::Denied => "route",
            Action::HoldPlaced | Action::HoldReleased => "legal_hold",
            Action::Export => "audit_export",
            Action::Purge => "retention",
        }
    }
}

/// A denied request, for its record.
#[derive(Debug, Clone)]
pub struct Denial {
    /// The principal, when it was authenticated (403, 429).
    pub principal: Option<String>,
    /// The client's address.
    pub client: Option<IpAddr>,
    /// The request id.
    pub request_id: String,
    /// Method and matched route template.
    pub method: String,
    /// The route template.
    pub route: String,
    /// The answer's status.
    pub status: u16,
    /// The bounded reason (`missing`, `invalid`, `forbidden`, `rate_limited`, …).
    pub reason: &'static str,
}

/// Writes access records. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AccessLog {
    writer: AuditWriter,
    record_reads: bool,
    denials: Option<Arc<DefaultDirectRateLimiter>>,
    counters: AuthCounters,
}

impl AccessLog {
    /// Records through `writer`; reads only when `record_reads`, denials at most
    /// `denials_per_second` per second (`0`: none).
    pub fn new(
        writer: AuditWriter,
        record_reads: bool,
        denials_per_second: u32,
        counters: AuthCounters,
    ) -> Self {
        let denials = NonZeroU32::new(denials_per_second)
            .map(|n| Arc::new(RateLimiter::direct(Quota::per_second(n))));
        Self {
            writer,
            record_reads,
            denials,
            counters,
        }
    }

    fn count(&self, action: Action, result: &'static str) {
        self.counters
            .access
            .get_or_create(&AccessLabels {
                action: action.as_str(),
                result,
            })
            .inc();
    }

    /// Records a successful read by `caller` and returns once it is committed. `details` are
    /// the read's own facts (filters, rows); `resource_id` the event or chain read, if one.
    pub async fn read(
        &self,
        caller: &Caller,
        action: Action,
        route: &str,
        resource_id: Option<&str>,
        mut details: Map<String, Value>,
    ) -> Result<(), DbError> {
        if !self.record_reads {
            return Ok(());
        }
        details.insert("route".into(), json!(route));
        details.insert("request_id".into(), json!(caller.request_id));
        let event = record(
            action,
            EventOutcome::Success,
            Some(&caller.principal.name),
            caller.client,
            resource_id,
            details,
        );
        self.commit(action, event).await
    }

    /// Records a change to what is kept (a hold placed or released, an export shipped) by
    /// `caller`, and returns once it is committed. Unlike reads, these are always recorded:
    /// `auth.recordReads` does not turn them off.
    pub async fn change(
        &self,
        caller: &Caller,
        action: Action,
        route: &str,
        resource_id: Option<&str>,
        mut details: Map<String, Value>,
    ) -> Result<(), DbError> {
        details.insert("route".into(), json!(route));
        details.insert("request_id".into(), json!(caller.request_id));
        let event = record(
            action,
            EventOutcome::Success,
            Some(&caller.principal.name),
            caller.client,
            resource_id,
            details,
        );
        self.commit(action, event).await
    }

    /// Records a purge run that deleted something (the service's own action).
    pub async fn purged(&self, report: &PurgeReport) -> Result<(), DbError> {
        let details = Map::from_iter([
            ("run_id".to_owned(), json!(report.run_id)),
            ("rows_purged".to_owned(), json!(report.rows_purged)),
            (
                "partitions_dropped".to_owned(),
                json!(report.partitions_dropped),
            ),
            ("holder".to_owned(), json!(report.holder)),
        ]);
        let event = record(
            Action::Purge,
            EventOutcome::Success,
            Some(SERVICE_PRINCIPAL),
            None,
            None,
            details,
        );
        self.commit(Action::Purge, event).await
    }

    async fn commit(&self, action: Action, event: ValidatedEvent) -> Result<(), DbError> {
        match self.writer.write_access(event).await {
            Ok(_) => {
                self.count(action, "recorded");
                Ok(())
            }
            Err(e) => {
                self.count(action, "failed");
                Err(e)
            }
        }
    }

    /// Records a denied request in the background (its answer does not wait), unless more
    /// than `auth.denialsPerSecond` came this second.
    pub fn denied(&self, denial: Denial) {
        let allowed = self.denials.as_ref().is_some_and(|l| l.check().is_ok());
        if !allowed {
            self.count(Action::Denied, "suppressed");
            return;
        }
        let details = Map::from_iter([
            ("method".to_owned(), json!(denial.method)),
            ("route".to_owned(), json!(denial.route)),
            ("status".to_owned(), json!(denial.status)),
            ("reason".to_owned(), json!(denial.reason)),
            ("request_id".to_owned(), json!(denial.request_id)),
        ]);
        let event = record(
            Action::Denied,
            EventOutcome::Failure,
            denial.principal.as_deref(),
            denial.client,
            Some(&denial.route),
            details,
        );
        let log = self.clone();
        tokio::spawn(async move {
            match log.writer.write_access(event).await {
                Ok(_) => log.count(Action::Denied, "recorded"),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot record a denied request");
                    log.count(Action::Denied, "failed");
                }
            }
        });
    }
}

/// The current time at the microsecond precision events are stored with.
fn now() -> DateTime<Utc> {
    let now = Utc::now();
    DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now)
}

/// Bounds a text field to `max` characters (principal names and routes already are).
fn bounded(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}

/// The access record of `action` by `principal` (none: unauthenticated).
fn record(
    action: Action,
    outcome: EventOutcome,
    principal: Option<&str>,
    client: Option<IpAddr>,
    resource_id: Option<&str>,
    details: Map<String, Value>,
) -> ValidatedEvent {
    ValidatedEvent {
        event_id: Uuid::now_v7(),
        id_supplied: false,
        version: "1.0".to_owned(),
        event_type: format!("datastorage.access.{}", action.as_str()),
        event_timestamp: now(),
        event_category: EventCategory::Security,
        event_action: action.as_str().to_owned(),
        event_outcome: outcome,
        actor_type: Some(
            if principal.is_some() {
                "principal"
            } else {
                "unauthenticated"
            }
            .to_owned(),
        ),
        actor_id: principal.map(|p| bounded(p, 255)),
        actor_ip: client.map(|ip| ip.to_string()),
        resource_type: Some(action.resource_type().to_owned()),
        resource_id: resource_id.map(|r| bounded(r, 255)),
        correlation_id: ACCESS_CHAIN.to_owned(),
        parent_event_id: None,
        parent_event_date: None,
        namespace: None,
        cluster_id: None,
        severity: Some(
            if outcome == EventOutcome::Failure {
                "warning"
            } else {
                "info"
            }
            .to_owned(),
        ),
        duration_ms: None,
        error_code: None,
        error_message: None,
        retention_days: DEFAULT_RETENTION_DAYS,
        is_sensitive: false,
        event_data: details,
        ingested_by: Some(SERVICE_PRINCIPAL.to_owned()),
    }
}
