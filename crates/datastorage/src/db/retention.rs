//! Retention SQL: leases, the category floors, batched deletes by primary key, and the record of
//! what each chain lost (`audit_chain_purges`), on both backends.
//!
//! An event expires when `event_date + max(retention_days, its category's floor)` is before
//! today (UTC). A batch deletes at most `batch` expired events of chains under no active hold,
//! found through `audit_events_retention_idx` (`retention_days`, `event_timestamp`) so that its
//! cost follows the expired rows rather than the table, by primary key, in one short transaction that first takes `audit_legal_holds` in SHARE mode, so a hold placed
//! meanwhile waits for the batch instead of racing it. (A row trigger refuses to delete a held
//! row in any case.) The runs of sequences each batch removed are merged into
//! `audit_chain_purges` in the same transaction, with the hash of each run's last event, so the
//! chain still verifies from there.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::Row as _;

use super::error::DbError;
use super::shared::fail;
use super::store::Store;

/// A run of consecutive sequence numbers of one chain removed by one batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurgedRun {
    /// The chain.
    pub correlation_id: String,
    /// First sequence removed.
    pub first: i64,
    /// Last sequence removed.
    pub last: i64,
    /// The hash of the last event removed.
    pub last_hash: String,
}

/// Groups deleted rows, sorted by chain and sequence, into runs of consecutive sequences.
pub fn runs(rows: Vec<(String, i64, String)>) -> Vec<PurgedRun> {
    let mut out: Vec<PurgedRun> = Vec::new();
    for (cid, seq, hash) in rows {
        match out.last_mut() {
            Some(r) if r.correlation_id == cid && r.last + 1 == seq => {
                r.last = seq;
                r.last_hash = hash;
            }
            _ => out.push(PurgedRun {
                correlation_id: cid,
                first: seq,
                last: seq,
                last_hash: hash,
            }),
        }
    }
    out
}

/// One batch's outcome.
#[derive(Debug)]
pub struct Batch {
    /// Rows deleted.
    pub deleted: u64,
    /// Whether the batch was full, so more may be left.
    pub more: bool,
}

/// A batch of expired, unheld events (PostgreSQL): for each distinct `retention_days` (a skip
/// scan of `audit_events_retention_idx`), the rows older than today minus that many days, read as
/// a range of the same index, so the cost follows the expired rows, not the table.
const PG_DOOMED: &str = "WITH RECURSIVE d AS ( \
        (SELECT retention_days FROM audit_events ORDER BY retention_days LIMIT 1) \
        UNION ALL \
        SELECT (SELECT e.retention_days FROM audit_events e WHERE e.retention_days > d.retention_days \
                ORDER BY e.retention_days LIMIT 1) FROM d WHERE d.retention_days IS NOT NULL) \
    SELECT x.correlation_id, x.chain_sequence, x.event_hash, x.event_id, x.event_timestamp \
    FROM d CROSS JOIN LATERAL ( \
        SELECT e.correlation_id, e.chain_sequence, e.event_hash, e.event_id, e.event_timestamp \
        FROM audit_events e LEFT JOIN audit_retention_policies p ON p.event_category = e.event_category \
        WHERE e.retention_days = d.retention_days \
          AND e.event_timestamp < (($1::date - d.retention_days)::timestamp AT TIME ZONE 'UTC') \
          AND e.event_date + GREATEST(e.retention_days, COALESCE(p.min_retention_days, 0)) < $1::date \
          AND NOT EXISTS (SELECT 1 FROM audit_legal_holds h \
                          WHERE h.correlation_id = e.correlation_id AND h.released_at IS NULL) \
        LIMIT $2) x \
    WHERE d.retention_days IS NOT NULL LIMIT $2";

/// [`PG_DOOMED`] for SQLite (timestamps in microseconds).
const SQLITE_DOOMED: &str = "WITH RECURSIVE d(r) AS ( \
        SELECT min(retention_days) FROM audit_events \
        UNION ALL \
        SELECT (SELECT min(retention_days) FROM audit_events WHERE retention_days > d.r) FROM d WHERE d.r IS NOT NULL) \
    SELECT e.correlation_id, e.chain_sequence, e.event_hash, e.event_id \
    FROM d JOIN audit_events e ON e.retention_days = d.r \
        AND e.event_timestamp < CAST(strftime('%s', date(?1, '-' || d.r || ' days')) AS INTEGER) * 1000000 \
    LEFT JOIN audit_retention_policies p ON p.event_category = e.event_category \
    WHERE d.r IS NOT NULL \
      AND date(e.event_date, '+' || MAX(e.retention_days, COALESCE(p.min_retention_days, 0)) || ' days') < ?1 \
      AND NOT EXISTS (SELECT 1 FROM audit_legal_holds h \
                      WHERE h.correlation_id = e.correlation_id AND h.released_at IS NULL) \
    LIMIT ?2";

/// Merges runs into `audit_chain_purges` (PostgreSQL): a run extends the stored run that ends
/// just before it, or starts a new one.
pub(super) const PG_MERGE_RUNS: &str = "WITH r AS (SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::text[]) \
        AS r(cid, f, l, h)), \
    ext AS (UPDATE audit_chain_purges p SET last_sequence = r.l, last_hash = r.h, purged_at = now() \
        FROM r WHERE p.correlation_id = r.cid AND p.last_sequence = r.f - 1 RETURNING r.cid, r.f) \
    INSERT INTO audit_chain_purges (correlation_id, first_sequence, last_sequence, last_hash, purged_at) \
    SELECT r.cid, r.f, r.l, r.h, now() FROM r \
    WHERE NOT EXISTS (SELECT 1 FROM ext WHERE ext.cid = r.cid AND ext.f = r.f)";

impl Store {
    /// Takes (or renews) the lease `name` for `holder` for `ttl`, unless another holder's lease
    /// is still running. True when `holder` holds it now.
    pub async fn take_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, DbError> {
        let ttl_micros = ttl.as_micros() as i64;
        match self {
            Store::Postgres(s) => {
                let mut conn = s.pool.acquire().await?;
                let row = crate::db::pool::in_session!(conn, |c| {
                    sqlx::query(
                            "INSERT INTO datastorage_leases (name, holder, expires_at) \
                             VALUES ($1, $2, clock_timestamp() + make_interval(secs => $3::float8 / 1e6)) \
                             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at \
                             WHERE datastorage_leases.expires_at < clock_timestamp() OR datastorage_leases.holder = excluded.holder \
                             RETURNING holder",
                        )
                        .bind(name)
                        .bind(holder)
                        .bind(ttl_micros)
                        .fetch_optional(&mut *c)
                        .await
                });
                row.map(|r| r.is_some()).map_err(|e| fail(conn, e))
            }
            Store::Sqlite(s) => {
                let _writer = s.write_lock().await;
                let mut conn = s.pool.acquire().await?;
                let now = Utc::now().timestamp_micros();
                let row = sqlx::query(
                    "INSERT INTO datastorage_leases (name, holder, expires_at) VALUES (?1, ?2, ?3 + ?4) \
                     ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at \
                     WHERE datastorage_leases.expires_at < ?3 OR datastorage_leases.holder = excluded.holder \
                     RETURNING holder",
                )
                .bind(name)
                .bind(holder)
                .bind(now)
                .bind(ttl_micros)
                .fetch_optional(&mut *conn)
                .await;
                row.map(|r| r.is_some()).map_err(|e| fail(conn, e))
            }
        }
    }

    /// Gives the lease `name` up, if `holder` holds it.
    pub async fn release_lease(&self, name: &str, holder: &str) -> Result<(), DbError> {
        match self {
            Store::Postgres(s) => {
                let mut conn = s.pool.acquire().await?;
                let done = crate::db::pool::in_session!(conn, |c| {
                    sqlx::query(
                            "UPDATE datastorage_leases SET expires_at = clock_timestamp() WHERE name = $1 AND holder = $2",
                        )
                        .bind(name)
                        .bind(holder)
                        .execute(&mut *c)
                        .await
                });
                done.map(drop).map_err(|e| fail(conn, e))
            }
            Store::Sqlite(s) => {
                let _writer = s.write_lock().await;
                let mut conn = s.pool.acquire().await?;
                let done = sqlx::query(
                    "UPDATE datastorage_leases SET expires_at = ?3 WHERE name = ?1 AND holder = ?2",
                )
                .bind(name)
                .bind(holder)
                .bind(Utc::now().timestamp_micros())
                .execute(&mut *conn)
                .await;
                done.map(drop).map_err(|e| fail(conn, e))
            }
        }
    }

    /// Makes `audit_retention_policies` hold exactly `floors` (category → days).
    pub async fn set_retention_floors(
        &self,
        floors: &BTreeMap<String, u32>,
    ) -> Result<(), DbError> {
        let categories: Vec<&str> = floors.keys().map(String::as_str).collect();
        let days: Vec<i32> = floors.values().map(|d| *d as i32).collect();
        match self {
            Store::Postgres(s) => {
                let mut conn = s.pool.acquire().await?;
                let done = async {
                    let mut tx = conn.begin("BEGIN").await?;
                    sqlx::query("DELETE FROM audit_retention_policies WHERE NOT (event_category = ANY($1))")
                        .bind(&categories)
                        .execute(&mut *tx)
                        .await?;
                    sqlx::query(
                        "INSERT INTO audit_retention_policies (event_category, min_retention_days) \
                         SELECT * FROM unnest($1::text[], $2::int[]) \
                         ON CONFLICT (event_category) DO UPDATE SET min_retention_days = excluded.min_retention_days, updated_at = now() \
                         WHERE audit_retention_policies.min_retention_days <> excluded.min_retention_days",
                    )
                    .bind(&categories)
                    .bind(&days)
                    .execute(&mut *tx)
                    .await?;
                    tx.commit().await
                }
                .await;
                done.map_err(|e| fail(conn, e))
            }
            Store::Sqlite(s) => {
                let _writer = s.write_lock().await;
                let mut conn = s.pool.acquire().await?;
                let now = Utc::now().timestamp_micros();
                let done = async {
                    let mut tx = conn.begin("BEGIN").await?;
                    sqlx::query("DELETE FROM audit_retention_policies")
                        .execute(&mut *tx)
                        .await?;
                    for (c, d) in categories.iter().zip(&days) {
                        sqlx::query(
                            "INSERT INTO audit_retention_policies (event_category, min_retention_days, updated_at) VALUES (?, ?, ?)",
                        )
                        .bind(c)
                        .bind(d)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                    }
                    tx.commit().await
                }
                .await;
                done.map_err(|e| fail(conn, e))
            }
        }
    }

    /// Deletes one batch of expired, unheld events, and records the runs of each
    /// chain it removed (see the module docs).
    pub async fn purge_batch(&self, today: NaiveDate, batch: u32) -> Result<Batch, DbError> {
        let limit = i64::from(batch);
        match self {
            Store::Postgres(s) => {
                let mut conn = s.pool.acquire().await?;
                let done = async {
                    let mut tx = conn.begin("BEGIN").await?;
                    sqlx::query("LOCK TABLE audit_legal_holds IN SHARE MODE")
                        .execute(&mut *tx)
                        .await?;
                    let rows = sqlx::query(PG_DOOMED)
                        .bind(today)
                        .bind(limit)
                        .fetch_all(&mut *tx)
                        .await?;
                    let mut ids = Vec::with_capacity(rows.len());
                    let mut times = Vec::with_capacity(rows.len());
                    let mut doomed = Vec::with_capacity(rows.len());
                    for r in &rows {
                        ids.push(r.try_get::<uuid::Uuid, _>("event_id")?);
                        times.push(r.try_get::<DateTime<Utc>, _>("event_timestamp")?);
                        doomed.push((
                            r.try_get::<String, _>("correlation_id")?,
                            r.try_get::<i64, _>("chain_sequence")?,
                            r.try_get::<String, _>("event_hash")?,
                        ));
                    }
                    doomed.sort_unstable_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
                    let deleted = sqlx::query(
                        "DELETE FROM audit_events e USING unnest($1::uuid[], $2::timestamptz[]) AS d(id, ts) \
                         WHERE e.event_id = d.id AND e.event_timestamp = d.ts",
                    )
                    .bind(&ids)
                    .bind(&times)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                    let runs = runs(doomed);
                    if !runs.is_empty() {
                        sqlx::query(PG_MERGE_RUNS)
                            .bind(runs.iter().map(|r| r.correlation_id.as_str()).collect::<Vec<_>>())
                            .bind(runs.iter().map(|r| r.first).collect::<Vec<_>>())
                            .bind(runs.iter().map(|r| r.last).collect::<Vec<_>>())
                            .bind(runs.iter().map(|r| r.last_hash.as_str()).collect::<Vec<_>>())
                            .execute(&mut *tx)
                            .await?;
                    }
                    tx.commit().await?;
                    Ok::<_, sqlx::Error>(Batch {
                        deleted,
                        more: rows.len() as i64 == limit,
                    })
                }
                .await;
                done.map_err(|e| fail(conn, e))
            }
            Store::Sqlite(s) => {
                let _writer = s.write_lock().await;
                let mut conn = s.pool.acquire().await?;
                let done = async {
                    let mut tx = conn.begin("BEGIN IMMEDIATE").await?;
                    let rows = sqlx::query(SQLITE_DOOMED)
                        .bind(today.to_string())
                        .bind(limit)
                        .fetch_all(&mut *tx)
                        .await?;
                    let mut deleted = 0;
                    let mut doomed = Vec::with_capacity(rows.len());
                    for r in &rows {
                        let id: String = r.try_get("event_id")?;
                        deleted += sqlx::query("DELETE FROM audit_events WHERE event_id = ?")
                            .bind(id)
                            .execute(&mut *tx)
                            .await?
                            .rows_affected();
                        doomed.push((
                            r.try_get::<String, _>("correlation_id")?,
                            r.try_get::<i64, _>("chain_sequence")?,
                            r.try_get::<String, _>("event_hash")?,
                        ));
                    }
                    doomed.sort_unstable_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
                    let now = Utc::now().timestamp_micros();
                    for run in runs(doomed) {
                        let extended = sqlx::query(
                            "UPDATE audit_chain_purges SET last_sequence = ?3, last_hash = ?4, purged_at = ?5 \
                             WHERE correlation_id = ?1 AND last_sequence = ?2 - 1",
                        )
                        .bind(&run.correlation_id)
                        .bind(run.first)
                        .bind(run.last)
                        .bind(&run.last_hash)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                        if extended == 0 {
                            sqlx::query(
                                "INSERT INTO audit_chain_purges (correlation_id, first_sequence, last_sequence, last_hash, purged_at) \
                                 VALUES (?, ?, ?, ?, ?)",
                            )
                            .bind(&run.correlation_id)
                            .bind(run.first)
                            .bind(run.last)
                            .bind(&run.last_hash)
                            .bind(now)
                            .execute(&mut *tx)
                            .await?;
                        }
                    }
                    tx.commit().await?;
                    Ok::<_, sqlx::Error>(Batch {
                        deleted,
                        more: rows.len() as i64 == limit,
                    })
                }
                .await;
                done.map_err(|e| fail(conn, e))
            }
        }
    }

    /// Records a purge run (started, or finished with its counts).
    pub async fn record_purge_run(&self, run: &PurgeRunRecord<'_>) -> Result<(), DbError> {
        match self {
            Store::Postgres(s) => {
                let mut conn = s.pool.acquire().await?;
                let done = crate::db::pool::in_session!(conn, |c| {
                    sqlx::query(
                            "INSERT INTO audit_purge_runs (run_id, holder, started_at, finished_at, rows_purged, partitions_dropped) \
                             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (run_id) DO UPDATE SET finished_at = excluded.finished_at, \
                             rows_purged = excluded.rows_purged, partitions_dropped = excluded.partitions_dropped",
                        )
                        .bind(run.run_id)
                        .bind(run.holder)
                        .bind(run.started_at)
                        .bind(run.finished_at)
                        .bind(run.rows_purged as i64)
                        .bind(run.partitions_dropped as i32)
                        .execute(&mut *c)
                        .await
                });
                done.map(drop).map_err(|e| fail(conn, e))
            }
            Store::Sqlite(s) => {
                let _writer = s.write_lock().await;
                let mut conn = s.pool.acquire().await?;
                let done = sqlx::query(
                    "INSERT INTO audit_purge_runs (run_id, holder, started_at, finished_at, rows_purged, partitions_dropped) \
                     VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (run_id) DO UPDATE SET finished_at = excluded.finished_at, \
                     rows_purged = excluded.rows_purged, partitions_dropped = excluded.partitions_dropped",
                )
                .bind(run.run_id.to_string())
                .bind(run.holder)
                .bind(run.started_at.timestamp_micros())
                .bind(run.finished_at.map(|t| t.timestamp_micros()))
                .bind(run.rows_purged as i64)
                .bind(run.partitions_dropped as i32)
                .execute(&mut *conn)
                .await;
                done.map(drop).map_err(|e| fail(conn, e))
            }
        }
    }
}

/// A row of `audit_purge_runs`.
#[derive(Debug, Clone)]
pub struct PurgeRunRecord<'a> {
    /// The run.
    pub run_id: uuid::Uuid,
    /// The replica that ran it.
    pub holder: &'a str,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// When it finished (`None` while running).
    pub finished_at: Option<DateTime<Utc>>,
    /// Events deleted.
    pub rows_purged: u64,
    /// Partitions dropped.
    pub partitions_dropped: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deleted_rows_group_into_runs_of_consecutive_sequences() {
        let row = |c: &str, s: i64| (c.to_owned(), s, format!("h{c}{s}"));
        let got = runs(vec![row("a", 1), row("a", 2), row("a", 4), row("b", 5)]);
        assert_eq!(got.len(), 3);
        assert_eq!(
            (got[0].first, got[0].last, got[0].last_hash.as_str()),
            (1, 2, "ha2")
        );
        assert_eq!((got[1].first, got[1].last), (4, 4));
        assert_eq!((got[2].correlation_id.as_str(), got[2].first), ("b", 5));
    }
}
