//! What both backends share, written once: the column list, decoding a row, the paged query,
//! reading a chain, the replay split and outcomes of a write, the transaction wrapper, and
//! migrations.
//!
//! The SQL both backends run is built here over sqlx's generic [`Database`]; what differs
//! between them (how timestamps, ids and `event_data` members are stored and compared, how a
//! write transaction begins) is the [`Dialect`] of each backend, and how a row's columns of
//! those types decode is its [`RowCodec`].

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use datastorage_api::query::{Cursor, EventFilter};
use datastorage_api::{AuditEvent, JsonObject, Pagination, ValidatedEvent};
use serde_json::value::RawValue;
use sqlx::{
    Column as _, ColumnIndex, Connection, Database, Decode, Encode, Row, Transaction, Type,
};
use uuid::Uuid;

use super::error::DbError;
use super::pool::PooledConn;
use crate::domain::chain::{Hasher, StoredLink};

/// Columns of `audit_events` as [`decode_row`] reads them, and as inserts list them.
pub const COLUMNS: &str = "event_id, event_timestamp, event_date, version, event_type, \
    event_category, event_action, event_outcome, actor_type, actor_id, actor_ip, resource_type, \
    resource_id, correlation_id, parent_event_id, parent_event_date, namespace, cluster_id, \
    severity, duration_ms, error_code, error_message, retention_days, is_sensitive, event_data, \
    chain_sequence, previous_event_hash, event_hash, hash_algorithm, hash_key_id, ingested_by";

/// Rows of a chain read per round trip while verifying it.
pub const VERIFY_PAGE: i64 = 1000;

/// Columns of `audit_checkpoints`, as [`decode_checkpoint`] reads them.
pub const CHECKPOINT_COLUMNS: &str = "checkpoint_id, created_at, covers_from, previous_hash, \
    chains, heads_sha256, checkpoint_hash, algorithm, key_id, signature";

/// Reads one row of [`CHECKPOINT_COLUMNS`].
pub fn decode_checkpoint<R>(row: &R) -> Result<datastorage_api::checkpoint::Checkpoint, sqlx::Error>
where
    R: RowCodec,
    for<'c> &'c str: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
{
    Ok(datastorage_api::checkpoint::Checkpoint {
        checkpoint_id: row.try_get("checkpoint_id")?,
        created_at: row
            .time("created_at")?
            .ok_or_else(|| missing("created_at"))?,
        covers_from: row.time("covers_from")?,
        previous_hash: row.try_get("previous_hash")?,
        chains: row.try_get::<i64, _>("chains")? as u64,
        heads_sha256: row.try_get("heads_sha256")?,
        checkpoint_hash: row.try_get("checkpoint_hash")?,
        algorithm: row.try_get("algorithm")?,
        key_id: row.try_get("key_id")?,
        signature: row.try_get("signature")?,
    })
}

pub use crate::domain::checkpoint::ChainAnchor;

/// Rows of an export read per round trip.
pub const EXPORT_PAGE: i64 = 1000;

/// One event of an export, in chain order.
#[derive(Debug)]
pub struct ExportRow {
    /// The event, with `event_data` parsed (its hash is checked as it is shipped).
    pub event: AuditEvent<JsonObject>,
    /// For the first exported event of a chain that does not start at sequence 1: the stored
    /// hash of the event before it (or of the purged run before it), when there is one.
    pub predecessor: Option<String>,
}

/// Columns of a row's chain position, as [`decode_link`] reads them.
pub const LINK_COLUMNS: &str = "event_id, event_timestamp, chain_sequence, previous_event_hash, \
    event_hash, hash_algorithm, hash_key_id";

/// What one write did with one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteOutcome {
    /// The event's id.
    pub event_id: Uuid,
    /// Stored timestamp.
    pub event_timestamp: DateTime<Utc>,
    /// True when the id was already stored with the same content: nothing was written.
    pub replayed: bool,
}

/// Stored JSON text, valid JSON, passed through unparsed (every read endpoint answers with it, so
/// one event looks the same whichever endpoint returned it).
pub type RawJson = Box<RawValue>;

/// How a decoded row holds `event_data`: parsed into a [`JsonObject`] (to recompute hashes), or
/// as [`RawJson`], the stored text checked and passed through to answers (parsing and
/// re-encoding it was a fifth of the CPU of a query).
pub trait EventData: Sized {
    /// From the stored JSON text, which must be an object.
    fn from_raw(raw: Box<RawValue>) -> Result<Self, String>;
}

impl EventData for JsonObject {
    fn from_raw(raw: Box<RawValue>) -> Result<Self, String> {
        serde_json::from_str(raw.get()).map_err(|e| format!("event_data: not a JSON object: {e}"))
    }
}

impl EventData for RawJson {
    fn from_raw(raw: Box<RawValue>) -> Result<Self, String> {
        if raw.get().trim_start().starts_with('{') {
            Ok(raw)
        } else {
            Err("event_data: not a JSON object".to_owned())
        }
    }
}

/// One page of a query: the events (newest first, at most `limit`), the total number of
/// matches, and whether more follow.
#[derive(Debug)]
pub struct Page {
    /// The events of the page.
    pub events: Vec<AuditEvent<RawJson>>,
    /// Matches of the filter, all pages together.
    pub total: u64,
    /// Whether more matches follow this page.
    pub has_more: bool,
}

impl Page {
    /// A page from the rows fetched with `LIMIT limit + 1`: the extra row only says that more
    /// follow.
    pub fn new(mut events: Vec<AuditEvent<RawJson>>, filter: &EventFilter, total: u64) -> Self {
        let has_more = events.len() > filter.limit as usize;
        events.truncate(filter.limit as usize);
        Self {
            events,
            total,
            has_more,
        }
    }

    /// The pagination block of the answer, with the cursor of the next page when there is one.
    pub fn pagination(&self, filter: &EventFilter) -> Pagination {
        let next_cursor = self
            .has_more
            .then(|| self.events.last())
            .flatten()
            .map(|last| {
                Cursor {
                    event_timestamp: last.event_timestamp,
                    event_id: last.event_id,
                }
                .encode()
            });
        Pagination {
            limit: filter.limit,
            offset: if filter.cursor.is_some() {
                0
            } else {
                filter.offset
            },
            total: self.total,
            has_more: self.has_more,
            next_cursor,
        }
    }
}

/// The total number of matches, when a page fetched with `LIMIT limit + 1` already shows it: the
/// page reached the end of the matches (`fetched <= limit`) and its start is a known offset (no
/// cursor), so the total is `offset + fetched`. An empty page past the start proves nothing
/// (the offset may overshoot), and neither does a cursor page; then `None`, and the total must
/// be counted.
pub fn total_from_page(filter: &EventFilter, fetched: usize) -> Option<u64> {
    let fetched = fetched as u64;
    let at_end = fetched <= u64::from(filter.limit);
    let start_known = filter.cursor.is_none() && (fetched > 0 || filter.offset == 0);
    (at_end && start_known).then_some(filter.offset + fetched)
}

/// A statement and its bound arguments, built up piece by piece (like sqlx's `QueryBuilder`,
/// whose borrow of itself cannot be named in code generic over the backend).
pub struct Sql<'q, DB: Database> {
    text: String,
    args: DB::Arguments<'q>,
}

impl<'q, DB: Database> Sql<'q, DB> {
    /// A statement starting with `text`.
    pub fn new(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            args: Default::default(),
        }
    }

    /// Appends SQL text.
    pub fn push(&mut self, text: impl std::fmt::Display) -> &mut Self {
        use std::fmt::Write as _;
        let _ = write!(self.text, "{text}");
        self
    }

    /// Appends a placeholder bound to `value`.
    pub fn bind<T>(&mut self, value: T) -> &mut Self
    where
        T: 'q + Encode<'q, DB> + Type<DB> + Send,
    {
        use sqlx::Arguments as _;
        // Encoding owned values of the types used here does not fail.
        if let Err(e) = self.args.add(value) {
            tracing::error!(error = %e, "cannot bind a query argument");
        }
        let _ = self.args.format_placeholder(&mut self.text);
        self
    }

    /// The statement's text and arguments, for `sqlx::query_with`.
    pub fn into_parts(self) -> (String, DB::Arguments<'q>) {
        (self.text, self.args)
    }
}

/// Runs a [`Sql`] statement: `run!(sql, fetch_all, executor)`. A macro, not a method: the
/// arguments' lifetime must be the borrow of the statement's text, which only the caller's
/// scope can name.
macro_rules! run {
    ($sql:expr, $fetch:ident, $executor:expr) => {{
        let (text, args) = $sql.into_parts();
        ::sqlx::query_with(&text, args).$fetch($executor).await
    }};
}
pub(crate) use run;

/// What differs between the backends' SQL.
pub trait Dialect: Database {
    /// The statement that opens a write transaction.
    const BEGIN_WRITE: &'static str;
    /// The statement that opens a read of one consistent snapshot.
    const BEGIN_SNAPSHOT: &'static str;
    /// A query answering one boolean: whether the migrations table exists.
    const MIGRATIONS_TABLE_EXISTS: &'static str;
    /// Whether a connection that answered [`DbError::Unavailable`] is closed instead of reused.
    const DISCARD_WHEN_UNAVAILABLE: bool;

    /// Binds a timestamp in the form the backend stores it.
    fn push_time(qb: &mut Sql<'_, Self>, t: DateTime<Utc>);
    /// Binds an event id in the form the backend stores it.
    fn push_id(qb: &mut Sql<'_, Self>, id: Uuid);
    /// `AND <top-level event_data member key, as text> = value`.
    fn push_detail(qb: &mut Sql<'_, Self>, key: &str, value: &str);
    /// The index (a bigint from 0) of the `seconds`-long bucket from `origin` that holds
    /// `event_timestamp`; only rows at or after `origin` are asked.
    fn push_bucket(qb: &mut Sql<'_, Self>, origin: DateTime<Utc>, seconds: i64);
}

/// How a backend decodes the columns whose storage differs: timestamps, ids, dates and JSON.
pub trait RowCodec: Row {
    /// A timestamp column.
    fn time(&self, column: &str) -> Result<Option<DateTime<Utc>>, sqlx::Error>;
    /// A UUID column.
    fn id(&self, column: &str) -> Result<Option<Uuid>, sqlx::Error>;
    /// A date column, as `YYYY-MM-DD`.
    fn date(&self, column: &str) -> Result<String, sqlx::Error>;
    /// A JSON column, as its text.
    fn json(&self, column: &str) -> Result<Box<RawValue>, sqlx::Error>;
}

fn missing(column: &str) -> sqlx::Error {
    sqlx::Error::ColumnDecode {
        index: column.to_owned(),
        source: "unexpected NULL".into(),
    }
}

fn parsed<T: std::str::FromStr<Err = String>>(column: &str, s: String) -> Result<T, sqlx::Error> {
    T::from_str(&s).map_err(|e| sqlx::Error::ColumnDecode {
        index: column.to_owned(),
        source: format!("{column} {e}").into(),
    })
}

/// Reads one row of [`COLUMNS`]; an undecodable row (edited by hand) is an error message, not a
/// panic.
pub fn decode_row<R, D>(row: &R) -> Result<AuditEvent<D>, String>
where
    R: RowCodec,
    D: EventData,
    for<'c> &'c str: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i32: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> bool: Decode<'r, R::Database> + Type<R::Database>,
{
    let r = || -> Result<AuditEvent<D>, sqlx::Error> {
        let text = |c: &str| row.try_get::<String, _>(c);
        let opt = |c: &str| row.try_get::<Option<String>, _>(c);
        let time = |c: &str| row.time(c)?.ok_or_else(|| missing(c));
        let event_data =
            D::from_raw(row.json("event_data")?).map_err(|e| sqlx::Error::ColumnDecode {
                index: "event_data".into(),
                source: e.into(),
            })?;
        Ok(AuditEvent {
            event_id: row.id("event_id")?.ok_or_else(|| missing("event_id"))?,
            version: text("version")?,
            event_type: text("event_type")?,
            event_timestamp: time("event_timestamp")?,
            event_date: row.date("event_date")?,
            event_category: parsed("event_category", text("event_category")?)?,
            event_action: text("event_action")?,
            event_outcome: parsed("event_outcome", text("event_outcome")?)?,
            actor_type: opt("actor_type")?,
            actor_id: opt("actor_id")?,
            actor_ip: opt("actor_ip")?,
            resource_type: opt("resource_type")?,
            resource_id: opt("resource_id")?,
            correlation_id: text("correlation_id")?,
            parent_event_id: row.id("parent_event_id")?,
            parent_event_date: row.time("parent_event_date")?,
            namespace: opt("namespace")?,
            cluster_id: opt("cluster_id")?,
            severity: opt("severity")?,
            duration_ms: row.try_get("duration_ms")?,
            error_code: opt("error_code")?,
            error_message: opt("error_message")?,
            retention_days: row.try_get("retention_days")?,
            is_sensitive: row.try_get("is_sensitive")?,
            event_data,
            chain_sequence: row.try_get("chain_sequence")?,
            event_hash: text("event_hash")?,
            previous_event_hash: text("previous_event_hash")?,
            hash_algorithm: text("hash_algorithm")?,
            hash_key_id: opt("hash_key_id")?,
            ingested_by: opt("ingested_by")?,
            legal_hold: match row.columns().iter().any(|c| c.name() == "legal_hold") {
                true => row.try_get("legal_hold")?,
                false => false,
            },
        })
    };
    r().map_err(|e| e.to_string())
}

/// Reads one row of [`LINK_COLUMNS`].
pub fn decode_link<R>(row: &R) -> Result<StoredLink, sqlx::Error>
where
    R: RowCodec,
    for<'c> &'c str: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
{
    Ok(StoredLink {
        event_id: row.id("event_id")?.ok_or_else(|| missing("event_id"))?,
        event_timestamp: row
            .time("event_timestamp")?
            .ok_or_else(|| missing("event_timestamp"))?,
        sequence: row.try_get("chain_sequence")?,
        previous_hash: row.try_get("previous_event_hash")?,
        hash: row.try_get("event_hash")?,
        algorithm: row.try_get("hash_algorithm")?,
        key_id: row.try_get("hash_key_id")?,
    })
}

/// Appends the `AND …` conditions of `f` (and of its cursor, with `with_cursor`).
pub fn push_filters<DB>(qb: &mut Sql<'_, DB>, f: &EventFilter, with_cursor: bool)
where
    DB: Dialect,
    String: for<'q> Encode<'q, DB> + Type<DB>,
{
    let exact = [
        ("event_type", &f.event_type),
        ("correlation_id", &f.correlation_id),
        ("actor_id", &f.actor_id),
        ("resource_type", &f.resource_type),
        ("resource_id", &f.resource_id),
        ("namespace", &f.namespace),
        ("cluster_id", &f.cluster_id),
        ("lower(severity)", &f.severity),
    ];
    for (column, value) in exact {
        if let Some(v) = value {
            qb.push(format_args!(" AND {column} = ")).bind(v.clone());
        }
    }
    if let Some(chain) = &f.hidden_chain {
        qb.push(" AND correlation_id <> ").bind(chain.clone());
    }
    if let Some(c) = f.event_category {
        qb.push(" AND event_category = ")
            .bind(c.as_str().to_owned());
    }
    if let Some(o) = f.event_outcome {
        qb.push(" AND event_outcome = ").bind(o.as_str().to_owned());
    }
    if let Some(t) = f.since {
        qb.push(" AND event_timestamp >= ");
        DB::push_time(qb, t);
    }
    if let Some(t) = f.until {
        qb.push(" AND event_timestamp < ");
        DB::push_time(qb, t);
    }
    if let Some((k, v)) = &f.detail {
        DB::push_detail(qb, k, v);
    }
    if let (true, Some(c)) = (with_cursor, f.cursor) {
        qb.push(" AND (event_timestamp, event_id) < (");
        DB::push_time(qb, c.event_timestamp);
        qb.push(", ");
        DB::push_id(qb, c.event_id);
        qb.push(")");
    }
}

/// Classifies `e`, and closes the connection when the error may have left it unusable.
pub fn fail<C, DB>(conn: PooledConn<C>, e: sqlx::Error) -> DbError
where
    C: Connection<Database = DB>,
    DB: Dialect,
{
    let err = DbError::from_sqlx(e);
    let broken = match err {
        DbError::Internal(_) => true,
        DbError::Unavailable { .. } => DB::DISCARD_WHEN_UNAVAILABLE,
        _ => false,
    };
    if broken {
        conn.discard();
    }
    err
}

/// Why one attempt at a write failed.
pub enum Failed {
    /// A statement failed.
    Sql(sqlx::Error),
    /// The write cannot go on (conflict, cancellation, a bug).
    Db(DbError),
    /// The fast path met an id that is already stored (PostgreSQL).
    Replays,
    /// A concurrent write changed what this attempt read; a new attempt may succeed.
    Retry,
}

impl From<sqlx::Error> for Failed {
    fn from(e: sqlx::Error) -> Self {
        Failed::Sql(e)
    }
}

/// Says, just before a commit, whether the write's requesters went away (the commit is then
/// rolled back).
pub type Cancelled<'a> = dyn Fn() -> bool + Send + Sync + 'a;

/// Ends a write transaction: commits what `result` wrote unless `cancelled` says so just before
/// the commit; every failure rolls back explicitly before the connection goes back to the pool,
/// so no lock outlives the attempt.
pub async fn finish<DB: Database, T>(
    tx: Transaction<'_, DB>,
    result: Result<T, Failed>,
    cancelled: &Cancelled<'_>,
) -> Result<T, Failed> {
    match result {
        Ok(done) if !cancelled() => {
            tx.commit().await?;
            Ok(done)
        }
        Ok(_) => {
            tx.rollback().await?;
            Err(Failed::Db(DbError::Cancelled))
        }
        Err(e) => {
            let _ = tx.rollback().await;
            Err(e)
        }
    }
}

/// The events of a write that are new, in order. An event whose id is stored with the same
/// content is a replay and is left out; one stored with other content is a conflict.
pub fn fresh_events<'a>(
    hasher: &Hasher,
    events: &'a [ValidatedEvent],
    stored: &HashMap<Uuid, StoredLink>,
) -> Result<Vec<&'a ValidatedEvent>, DbError> {
    let mut fresh = Vec::with_capacity(events.len());
    for e in events {
        match stored.get(&e.event_id) {
            Some(link) if hasher.is_replay(link, e) => {}
            Some(_) => return Err(DbError::Conflict(e.event_id)),
            None => fresh.push(e),
        }
    }
    Ok(fresh)
}

/// Refuses the write when an event would append to a chain that `auth.chainAppend: starter`
/// keeps for another principal; `starters` maps each chain to who started it (`None` for chains
/// from before principals existed, which anyone may extend).
pub fn check_starters(
    hasher: &Hasher,
    events: &[&ValidatedEvent],
    starters: &HashMap<String, Option<String>>,
) -> Result<(), DbError> {
    for e in events {
        let started_by = starters.get(&e.correlation_id).and_then(Option::as_deref);
        if !hasher.may_append(e, started_by) {
            return Err(DbError::Forbidden(format!(
                "correlation_id {:?} is a chain another principal started; with auth.chainAppend: starter only it may append",
                e.correlation_id
            )));
        }
    }
    Ok(())
}

/// Who starts each chain of `events` that has no head yet: the first event's principal.
pub fn first_writers<'a>(events: &[&'a ValidatedEvent]) -> HashMap<&'a str, Option<&'a str>> {
    let mut first = HashMap::new();
    for e in events {
        first
            .entry(e.correlation_id.as_str())
            .or_insert(e.ingested_by.as_deref());
    }
    first
}

/// The correlation ids of `events`, each once.
pub fn chains_of<'a>(events: &[&'a ValidatedEvent]) -> HashSet<&'a str> {
    events.iter().map(|e| e.correlation_id.as_str()).collect()
}

/// The outcome of every event of a write, in input order: a replay answers with the stored
/// timestamp.
pub fn outcomes(
    events: &[ValidatedEvent],
    stored: &HashMap<Uuid, StoredLink>,
) -> Vec<WriteOutcome> {
    events
        .iter()
        .map(|e| match stored.get(&e.event_id) {
            Some(link) => WriteOutcome {
                event_id: e.event_id,
                event_timestamp: link.event_timestamp,
                replayed: true,
            },
            None => WriteOutcome {
                event_id: e.event_id,
                event_timestamp: e.event_timestamp,
                replayed: false,
            },
        })
        .collect()
}

/// The async SQL both backends run, written once and expanded in each backend's module for its
/// store type, database and connection: `shared_sql!(PgStore, Postgres, PgConnection)`. It
/// gives the store `get_event`, `query_events`, `verify_chain` and `ping`, and the module
/// `stored_links`, `migrate_on` and `check_migrations_on`. A macro, not generic functions:
/// sqlx's executor bounds, written generically, make futures the compiler cannot prove `Send`.
macro_rules! shared_sql {
    ($store:ty, $db:ty, $conn:ty) => {
        impl $store {
            /// One event by id. Missed on the read replica, it is read again on the primary,
            /// so a client reading its own write finds it.
            pub async fn get_event(
                &self,
                id: ::uuid::Uuid,
            ) -> Result<
                Option<::datastorage_api::AuditEvent<$crate::db::shared::RawJson>>,
                $crate::db::error::DbError,
            > {
                let (conn, replica) = self.read_conn().await?;
                let found = self.get_event_on(conn, id).await?;
                if found.is_none() && replica {
                    return self.get_event_on(self.pool.acquire().await?, id).await;
                }
                Ok(found)
            }

            async fn get_event_on(
                &self,
                mut conn: $crate::db::pool::PooledConn<$conn>,
                id: ::uuid::Uuid,
            ) -> Result<
                Option<::datastorage_api::AuditEvent<$crate::db::shared::RawJson>>,
                $crate::db::error::DbError,
            > {
                use $crate::db::holds::HELD;
                use $crate::db::shared::{decode_row, fail, run, Dialect as _, Sql, COLUMNS};
                let mut qb = Sql::<$db>::new(format!(
                    "SELECT {COLUMNS}, {HELD} FROM audit_events WHERE event_id = "
                ));
                <$db>::push_id(&mut qb, id);
                let row = match $crate::db::pool::in_session!(conn, |c| run!(qb, fetch_optional, &mut *c))
                {
                    Ok(row) => row,
                    Err(e) => return Err(fail(conn, e)),
                };
                row.map(|r| {
                    decode_row(&r)
                        .map_err(|e| $crate::db::error::DbError::Internal(anyhow::anyhow!(e)))
                })
                .transpose()
            }

            /// One page of events matching `f`, and the total count of matches: counted in a
            /// second round trip only when the page does not show it (most queries, one
            /// correlation id on one page, end within the page).
            pub async fn query_events(
                &self,
                f: &::datastorage_api::query::EventFilter,
            ) -> Result<$crate::db::shared::Page, $crate::db::error::DbError> {
                use ::sqlx::Row as _;
                use $crate::db::shared::{
                    decode_row, fail, push_filters, run, total_from_page, Page, Sql, COLUMNS,
                };
                use $crate::db::holds::HELD;
                let (mut conn, _) = self.read_conn().await?;
                let mut page = Sql::<$db>::new(format!(
                    "SELECT {COLUMNS}, {HELD} FROM audit_events WHERE 1 = 1"
                ));
                push_filters(&mut page, f, true);
                page.push(" ORDER BY event_timestamp DESC, event_id DESC LIMIT ")
                    .bind(i64::from(f.limit) + 1);
                if f.cursor.is_none() {
                    page.push(" OFFSET ").bind(f.offset as i64);
                }
                let result = $crate::db::pool::in_session!(conn, |c| {
                        let rows = run!(page, fetch_all, &mut *c)?;
                        let total = match total_from_page(f, rows.len()) {
                            Some(n) => n,
                            None => {
                                let mut count = Sql::<$db>::new(
                                    "SELECT count(*) FROM audit_events WHERE 1 = 1",
                                );
                                push_filters(&mut count, f, false);
                                run!(count, fetch_one, &mut *c)?.try_get::<i64, _>(0)? as u64
                            }
                        };
                        Ok::<_, ::sqlx::Error>((rows, total))
                    });
                let (rows, total) = match result {
                    Ok(found) => found,
                    Err(e) => return Err(fail(conn, e)),
                };
                let events = rows
                    .iter()
                    .map(decode_row)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| $crate::db::error::DbError::Internal(anyhow::anyhow!(e)))?;
                Ok(Page::new(events, f, total))
            }

            /// Events per bucket, category and outcome of `r` (one aggregate query): rows of
            /// (bucket index from `r.origin`, category, outcome, count), by bucket.
            pub async fn stats(
                &self,
                r: &::datastorage_api::stats::StatsRequest,
            ) -> Result<Vec<(i64, String, String, i64)>, $crate::db::error::DbError> {
                use ::sqlx::Row as _;
                use $crate::db::shared::{fail, push_filters, run, Dialect as _, Sql};
                let (mut conn, _) = self.read_conn().await?;
                let mut qb = Sql::<$db>::new("SELECT ");
                <$db>::push_bucket(&mut qb, r.origin, r.bucket_seconds);
                qb.push(" AS bucket, event_category, event_outcome, count(*) AS n FROM audit_events WHERE 1 = 1");
                push_filters(&mut qb, &r.filter, false);
                qb.push(" GROUP BY 1, 2, 3 ORDER BY 1, 2, 3");
                let rows = match $crate::db::pool::in_session!(conn, |c| run!(qb, fetch_all, &mut *c))
                {
                    Ok(rows) => rows,
                    Err(e) => return Err(fail(conn, e)),
                };
                rows.iter()
                    .map(|row| {
                        Ok((
                            row.try_get(0)?,
                            row.try_get(1)?,
                            row.try_get(2)?,
                            row.try_get(3)?,
                        ))
                    })
                    .collect::<Result<Vec<_>, ::sqlx::Error>>()
                    .map_err($crate::db::error::DbError::from_sqlx)
            }

            /// Feeds every row of one chain to `verifier`, in sequence order and in pages of
            /// [`VERIFY_PAGE`](crate::db::shared::VERIFY_PAGE) rows, so memory stays flat
            /// whatever the chain's length; returns the chain's head. Rows and head come from one
            /// snapshot, so a concurrent append cannot look like truncation.
            pub async fn verify_chain(
                &self,
                correlation_id: &str,
                verifier: &mut $crate::domain::chain::ChainVerifier<'_>,
            ) -> Result<Option<(i64, String)>, $crate::db::error::DbError> {
                use ::sqlx::Row as _;
                use $crate::db::shared::{
                    decode_row, fail, run, Dialect as _, Sql, COLUMNS, VERIFY_PAGE,
                };
                let (mut conn, _) = self.read_conn().await?;
                let result = async {
                    let mut tx = conn.begin(<$db>::BEGIN_SNAPSHOT).await?;
                    let mut head = Sql::<$db>::new(
                        "SELECT last_sequence, last_hash FROM audit_chain_heads WHERE correlation_id = ",
                    );
                    head.bind(correlation_id.to_owned());
                    let head = match run!(head, fetch_optional, &mut *tx)? {
                        Some(row) => Some((row.try_get("last_sequence")?, row.try_get("last_hash")?)),
                        None => None,
                    };
                    let mut purges = Sql::<$db>::new(
                        "SELECT first_sequence, last_sequence, last_hash FROM audit_chain_purges WHERE correlation_id = ",
                    );
                    purges.bind(correlation_id.to_owned()).push(" ORDER BY first_sequence");
                    let purges = run!(purges, fetch_all, &mut *tx)?
                        .iter()
                        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
                        .collect::<Result<Vec<(i64, i64, String)>, ::sqlx::Error>>()?;
                    verifier.set_purges(purges);
                    let mut after = i64::MIN;
                    loop {
                        let mut page = Sql::<$db>::new(format!(
                            "SELECT {COLUMNS} FROM audit_events WHERE correlation_id = "
                        ));
                        page.bind(correlation_id.to_owned())
                            .push(" AND chain_sequence > ")
                            .bind(after)
                            .push(" ORDER BY chain_sequence LIMIT ")
                            .bind(VERIFY_PAGE);
                        let rows = run!(page, fetch_all, &mut *tx)?;
                        for row in &rows {
                            after = row.try_get("chain_sequence")?;
                            verifier.push(decode_row(row));
                        }
                        if rows.len() < VERIFY_PAGE as usize {
                            break;
                        }
                    }
                    tx.commit().await?;
                    Ok::<_, ::sqlx::Error>(head)
                }
                .await;
                result.map_err(|e| fail(conn, e))
            }

            /// Reads every event matching `f` in chain order (`correlation_id`, then
            /// `chain_sequence`), in pages of [`EXPORT_PAGE`](crate::db::shared::EXPORT_PAGE)
            /// rows from one snapshot, and sends each page to `out` (memory stays flat: at most
            /// the channel's pages are held). The first exported event of a chain that does not
            /// start at sequence 1 carries its predecessor's stored hash (or the recorded hash
            /// of the purged run before it). Stops early, without error, when `out` is closed.
            pub async fn export_events(
                &self,
                f: &::datastorage_api::query::EventFilter,
                out: ::tokio::sync::mpsc::Sender<
                    Result<Vec<$crate::db::shared::ExportRow>, $crate::db::error::DbError>,
                >,
            ) -> Result<(), $crate::db::error::DbError> {
                use ::sqlx::Row as _;
                use $crate::db::holds::HELD;
                use $crate::db::shared::{
                    decode_row, fail, push_filters, run, Dialect as _, ExportRow, Sql, COLUMNS,
                    EXPORT_PAGE,
                };
                let (mut conn, _) = self.read_conn().await?;
                let result = async {
                    let mut tx = conn.begin(<$db>::BEGIN_SNAPSHOT).await?;
                    let mut after: Option<(String, i64)> = None;
                    loop {
                        let mut page = Sql::<$db>::new(format!(
                            "SELECT {COLUMNS}, {HELD} FROM audit_events WHERE 1 = 1"
                        ));
                        push_filters(&mut page, f, false);
                        if let Some((cid, seq)) = &after {
                            // A row comparison, which both engines turn into an index range;
                            // the OR form made PostgreSQL rescan each partition from its start.
                            page.push(" AND (correlation_id, chain_sequence) > (")
                                .bind(cid.clone())
                                .push(", ")
                                .bind(*seq)
                                .push(")");
                        }
                        page.push(" ORDER BY correlation_id, chain_sequence LIMIT ")
                            .bind(EXPORT_PAGE);
                        let rows = run!(page, fetch_all, &mut *tx)?;
                        let mut events = Vec::with_capacity(rows.len());
                        for row in &rows {
                            let event: ::datastorage_api::AuditEvent = decode_row(row)
                                .map_err(|e| ::sqlx::Error::Decode(e.into()))?;
                            let starts_chain = after
                                .as_ref()
                                .is_none_or(|(cid, _)| *cid != event.correlation_id);
                            let predecessor = if starts_chain && event.chain_sequence > 1 {
                                let mut q = Sql::<$db>::new(
                                    "SELECT event_hash FROM audit_events WHERE correlation_id = ",
                                );
                                q.bind(event.correlation_id.clone())
                                    .push(" AND chain_sequence = ")
                                    .bind(event.chain_sequence - 1)
                                    .push(" UNION ALL SELECT last_hash FROM audit_chain_purges WHERE correlation_id = ")
                                    .bind(event.correlation_id.clone())
                                    .push(" AND last_sequence = ")
                                    .bind(event.chain_sequence - 1);
                                run!(q, fetch_optional, &mut *tx)?
                                    .map(|r| r.try_get::<String, _>(0))
                                    .transpose()?
                            } else {
                                None
                            };
                            after = Some((event.correlation_id.clone(), event.chain_sequence));
                            events.push(ExportRow { event, predecessor });
                        }
                        let last_page = rows.len() < EXPORT_PAGE as usize;
                        if out.send(Ok(events)).await.is_err() || last_page {
                            break;
                        }
                    }
                    tx.commit().await?;
                    Ok::<_, ::sqlx::Error>(())
                }
                .await;
                result.map_err(|e| fail(conn, e))
            }

            /// The newest checkpoint.
            pub async fn latest_checkpoint(
                &self,
            ) -> Result<Option<::datastorage_api::checkpoint::Checkpoint>, $crate::db::error::DbError>
            {
                use $crate::db::shared::{decode_checkpoint, fail, run, Sql, CHECKPOINT_COLUMNS};
                let mut conn = self.pool.acquire().await?;
                let q = Sql::<$db>::new(format!(
                    "SELECT {CHECKPOINT_COLUMNS} FROM audit_checkpoints ORDER BY checkpoint_id DESC LIMIT 1"
                ));
                match $crate::db::pool::in_session!(conn, |c| run!(q, fetch_optional, &mut *c))
                {
                    Ok(row) => row
                        .map(|r| decode_checkpoint(&r))
                        .transpose()
                        .map_err(|e| fail(conn, e)),
                    Err(e) => Err(fail(conn, e)),
                }
            }

            /// Writes the next checkpoint, over the heads changed since `margin` before the
            /// previous one (every head for the first), signed with `key`, in one transaction.
            /// `None` when no head changed.
            pub async fn write_checkpoint(
                &self,
                key: &::datastorage_api::signing::SigningKey,
                margin: ::std::time::Duration,
            ) -> Result<Option<::datastorage_api::checkpoint::Checkpoint>, $crate::db::error::DbError>
            {
                use ::sqlx::Row as _;
                use $crate::db::shared::{
                    decode_checkpoint, fail, run, Dialect as _, Sql, CHECKPOINT_COLUMNS,
                };
                use ::datastorage_api::checkpoint::Checkpoint;
                let mut conn = self.pool.acquire().await?;
                let result = async {
                    let mut tx = conn.begin(<$db>::BEGIN_WRITE).await?;
                    let q = Sql::<$db>::new(format!(
                        "SELECT {CHECKPOINT_COLUMNS} FROM audit_checkpoints ORDER BY checkpoint_id DESC LIMIT 1"
                    ));
                    let previous = run!(q, fetch_optional, &mut *tx)?
                        .map(|r| decode_checkpoint(&r))
                        .transpose()?;
                    let now = ::chrono::Utc::now();
                    let now = ::chrono::DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now);
                    let covers_from = previous.as_ref().map(|p| {
                        p.created_at - ::chrono::Duration::from_std(margin).unwrap_or_default()
                    });
                    // Changed since (a margin before) the previous checkpoint, and not as the
                    // newest checkpoint holding the chain recorded it already.
                    let mut heads_q = Sql::<$db>::new(
                        "SELECT h.correlation_id, h.last_sequence, h.last_hash FROM audit_chain_heads h \
                         WHERE h.last_sequence > 0 AND NOT EXISTS (SELECT 1 FROM audit_checkpoint_heads ch \
                         WHERE ch.correlation_id = h.correlation_id AND ch.last_sequence = h.last_sequence \
                         AND ch.last_hash = h.last_hash AND ch.checkpoint_id = (SELECT max(x.checkpoint_id) \
                         FROM audit_checkpoint_heads x WHERE x.correlation_id = h.correlation_id))",
                    );
                    if let Some(from) = covers_from {
                        heads_q.push(" AND h.updated_at >= ");
                        <$db>::push_time(&mut heads_q, from);
                    }
                    let mut heads: Vec<(String, i64, String)> = run!(heads_q, fetch_all, &mut *tx)?
                        .iter()
                        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
                        .collect::<Result<_, ::sqlx::Error>>()?;
                    if heads.is_empty() {
                        tx.rollback().await?;
                        return Ok(None);
                    }
                    let c = Checkpoint::seal(
                        previous.as_ref().map_or(1, |p| p.checkpoint_id + 1),
                        now,
                        covers_from,
                        previous.map(|p| p.checkpoint_hash).unwrap_or_default(),
                        &mut heads,
                        key,
                    );
                    let mut ins = Sql::<$db>::new(
                        "INSERT INTO audit_checkpoints (checkpoint_id, created_at, covers_from, previous_hash, chains, heads_sha256, checkpoint_hash, algorithm, key_id, signature) VALUES (",
                    );
                    ins.bind(c.checkpoint_id).push(", ");
                    <$db>::push_time(&mut ins, c.created_at);
                    ins.push(", ");
                    match c.covers_from {
                        Some(t) => <$db>::push_time(&mut ins, t),
                        None => {
                            ins.push("NULL");
                        }
                    }
                    ins.push(", ").bind(c.previous_hash.clone())
                        .push(", ").bind(c.chains as i64)
                        .push(", ").bind(c.heads_sha256.clone())
                        .push(", ").bind(c.checkpoint_hash.clone())
                        .push(", ").bind(c.algorithm.clone())
                        .push(", ").bind(c.key_id.clone())
                        .push(", ").bind(c.signature.clone())
                        .push(")");
                    run!(ins, execute, &mut *tx)?;
                    for chunk in heads.chunks(500) {
                        let mut ins = Sql::<$db>::new(
                            "INSERT INTO audit_checkpoint_heads (checkpoint_id, correlation_id, last_sequence, last_hash) VALUES ",
                        );
                        for (i, (cid, seq, hash)) in chunk.iter().enumerate() {
                            if i > 0 {
                                ins.push(", ");
                            }
                            ins.push("(").bind(c.checkpoint_id)
                                .push(", ").bind(cid.clone())
                                .push(", ").bind(*seq)
                                .push(", ").bind(hash.clone())
                                .push(")");
                        }
                        run!(ins, execute, &mut *tx)?;
                    }
                    tx.commit().await?;
                    Ok::<_, ::sqlx::Error>(Some(c))
                }
                .await;
                result.map_err(|e| fail(conn, e))
            }

            /// What the newest checkpoint that holds `correlation_id` says of it, with that
            /// checkpoint's heads (to check their digest) unless `heads_known_good` says their
            /// digest was checked already, how many checkpoints follow it and the
            /// newest id, and what the chain holds now at the checkpoint's sequence (the stored
            /// hash, or the recorded hash of a purged run ending there, or whether a purged run
            /// covers it); all from one snapshot.
            pub async fn chain_checkpoint(
                &self,
                correlation_id: &str,
                heads_known_good: impl Fn(i64) -> bool + Send,
            ) -> Result<Option<$crate::db::shared::ChainAnchor>, $crate::db::error::DbError> {
                use ::sqlx::Row as _;
                use $crate::db::shared::{
                    decode_checkpoint, fail, run, ChainAnchor, Dialect as _, Sql, CHECKPOINT_COLUMNS,
                };
                let (mut conn, _) = self.read_conn().await?;
                let result = async {
                    let mut tx = conn.begin(<$db>::BEGIN_SNAPSHOT).await?;
                    let mut q = Sql::<$db>::new(
                        "SELECT checkpoint_id, last_sequence, last_hash FROM audit_checkpoint_heads WHERE correlation_id = ",
                    );
                    q.bind(correlation_id.to_owned()).push(" ORDER BY checkpoint_id DESC LIMIT 1");
                    let Some(row) = run!(q, fetch_optional, &mut *tx)? else {
                        tx.commit().await?;
                        return Ok(None);
                    };
                    let (id, sequence, hash): (i64, i64, String) =
                        (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
                    let mut q = Sql::<$db>::new(format!(
                        "SELECT {CHECKPOINT_COLUMNS} FROM audit_checkpoints WHERE checkpoint_id = "
                    ));
                    q.bind(id);
                    let checkpoint = run!(q, fetch_optional, &mut *tx)?
                        .map(|r| decode_checkpoint(&r))
                        .transpose()?;
                    let heads = if heads_known_good(id) {
                        None
                    } else {
                        let mut q = Sql::<$db>::new(
                            "SELECT correlation_id, last_sequence, last_hash FROM audit_checkpoint_heads WHERE checkpoint_id = ",
                        );
                        q.bind(id);
                        Some(run!(q, fetch_all, &mut *tx)?
                            .iter()
                            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
                            .collect::<Result<Vec<(String, i64, String)>, ::sqlx::Error>>()?)
                    };
                    let mut q = Sql::<$db>::new(
                        "SELECT count(*), COALESCE(max(checkpoint_id), 0) FROM audit_checkpoints WHERE checkpoint_id >= ",
                    );
                    q.bind(id);
                    let row = run!(q, fetch_one, &mut *tx)?;
                    let (from_here, newest): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
                    let mut q = Sql::<$db>::new(
                        "SELECT event_hash FROM audit_events WHERE correlation_id = ",
                    );
                    q.bind(correlation_id.to_owned())
                        .push(" AND chain_sequence = ")
                        .bind(sequence);
                    let stored = run!(q, fetch_optional, &mut *tx)?
                        .map(|r| r.try_get::<String, _>(0))
                        .transpose()?;
                    let mut q = Sql::<$db>::new(
                        "SELECT last_sequence, last_hash FROM audit_chain_purges WHERE correlation_id = ",
                    );
                    q.bind(correlation_id.to_owned())
                        .push(" AND first_sequence <= ")
                        .bind(sequence)
                        .push(" AND last_sequence >= ")
                        .bind(sequence);
                    let purged = run!(q, fetch_optional, &mut *tx)?
                        .map(|r| Ok::<_, ::sqlx::Error>((r.try_get::<i64, _>(0)?, r.try_get::<String, _>(1)?)))
                        .transpose()?;
                    tx.commit().await?;
                    Ok::<_, ::sqlx::Error>(checkpoint.map(|checkpoint| ChainAnchor {
                        checkpoint,
                        sequence,
                        hash,
                        heads,
                        following: (from_here - 1).max(0) as u64,
                        newest,
                        stored,
                        purged,
                    }))
                }
                .await;
                result.map_err(|e| fail(conn, e))
            }

            /// Whether the database answers. A saturated pool counts as answering.
            pub async fn ping(&self) -> Result<(), $crate::db::error::DbError> {
                let Some(mut conn) = self.pool.try_acquire().await? else {
                    return Ok(()); // every connection is busy serving: the database answers
                };
                // A simple query: one round trip, nothing prepared, no transaction needed.
                match ::sqlx::Executor::execute(&mut *conn, "SELECT 1").await {
                    Ok(_) => Ok(()),
                    Err(e) => Err($crate::db::shared::fail(conn, e)),
                }
            }
        }

        /// The chain positions of those `events` whose client-supplied ids are already stored.
        async fn stored_links(
            conn: &mut $conn,
            events: &[::datastorage_api::ValidatedEvent],
        ) -> Result<
            ::std::collections::HashMap<::uuid::Uuid, $crate::domain::chain::StoredLink>,
            ::sqlx::Error,
        > {
            use $crate::db::shared::{decode_link, run, Dialect as _, Sql, LINK_COLUMNS};
            let supplied: Vec<::uuid::Uuid> = events
                .iter()
                .filter(|e| e.id_supplied)
                .map(|e| e.event_id)
                .collect();
            if supplied.is_empty() {
                return Ok(Default::default());
            }
            let mut qb = Sql::<$db>::new(format!(
                "SELECT {LINK_COLUMNS} FROM audit_events WHERE event_id IN ("
            ));
            for (i, id) in supplied.into_iter().enumerate() {
                if i > 0 {
                    qb.push(", ");
                }
                <$db>::push_id(&mut qb, id);
            }
            qb.push(")");
            let rows = run!(qb, fetch_all, &mut *conn)?;
            rows.iter()
                .map(|row| decode_link(row).map(|link| (link.event_id, link)))
                .collect()
        }

        /// Applies pending migrations on one dedicated connection; returns how many were
        /// applied now.
        async fn migrate_on(
            mut conn: $conn,
            migrator: &::sqlx::migrate::Migrator,
        ) -> anyhow::Result<usize> {
            use anyhow::Context as _;
            use ::sqlx::Connection as _;
            let before = applied_versions(&mut conn).await?;
            migrator
                .run_direct(&mut conn)
                .await
                .context("migration failed")?;
            let after = applied_versions(&mut conn).await?;
            conn.close().await.ok();
            Ok(after.len().saturating_sub(before.len()))
        }

        /// Fails unless every migration of `migrator` is applied.
        async fn check_migrations_on(
            mut conn: $conn,
            migrator: &::sqlx::migrate::Migrator,
        ) -> anyhow::Result<()> {
            use ::sqlx::Connection as _;
            let applied = applied_versions(&mut conn).await?;
            conn.close().await.ok();
            let missing: Vec<i64> = migrator
                .iter()
                .map(|m| m.version)
                .filter(|v| !applied.contains(v))
                .collect();
            anyhow::ensure!(missing.is_empty(), "migrations {missing:?} are not applied; run `datastorage migrate`, or let `serve` apply them (database.migrateOnStart: true)");
            Ok(())
        }

        async fn applied_versions(
            conn: &mut $conn,
        ) -> anyhow::Result<::std::collections::HashSet<i64>> {
            use ::sqlx::Row as _;
            use $crate::db::shared::Dialect as _;
            let exists = ::sqlx::query(<$db>::MIGRATIONS_TABLE_EXISTS)
                .fetch_one(&mut *conn)
                .await?;
            if !exists.try_get::<bool, _>(0)? {
                return Ok(Default::default());
            }
            let rows = ::sqlx::query("SELECT version FROM _sqlx_migrations WHERE success")
                .fetch_all(&mut *conn)
                .await?;
            rows.iter()
                .map(|r| r.try_get::<i64, _>(0).map_err(Into::into))
                .collect()
        }
    };
}
pub(crate) use shared_sql;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn total_from_page_only_when_the_page_shows_it() {
        let f = |limit, offset, cursor: bool| EventFilter {
            limit,
            offset,
            cursor: cursor.then(|| Cursor {
                event_timestamp: Utc::now(),
                event_id: uuid::Uuid::nil(),
            }),
            ..EventFilter::default()
        };
        assert_eq!(total_from_page(&f(50, 0, false), 0), Some(0));
        assert_eq!(total_from_page(&f(50, 0, false), 50), Some(50));
        assert_eq!(
            total_from_page(&f(50, 0, false), 51),
            None,
            "more beyond the page"
        );
        assert_eq!(total_from_page(&f(50, 100, false), 7), Some(107));
        assert_eq!(
            total_from_page(&f(50, 100, false), 0),
            None,
            "offset may overshoot"
        );
        assert_eq!(
            total_from_page(&f(50, 0, true), 3),
            None,
            "rows before a cursor are unknown"
        );
    }
}
