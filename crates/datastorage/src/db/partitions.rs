//! Time partitions of `audit_events` (PostgreSQL): creating them ahead, creating the one an old
//! event needs, and dropping whole partitions that retention allows to drop.
//!
//! `audit_partitions` lists the partitions and their bounds; `audit_ensure_partition(t, step)`
//! (migration `20261202000002`) creates the one holding `t`. SQLite has no partitions: its
//! retention deletes in batches only.
//!
//! A partition is dropped when every event in it has expired and none is held, decided without
//! reading its rows: its newest possible `event_date` (the day before its upper bound) plus the
//! longest retention in it (`max(retention_days)` through an index, raised by the floor of any
//! category present, found through the category index) is before today, and no active hold names
//! a correlation id found in it (an index probe per hold). What each chain loses is recorded in
//! `audit_chain_purges` from the first and last sequence of each chain in the partition (a skip
//! scan of its chain index: the cost grows with the chains in it, not its rows); a chain whose
//! events in the partition interleave with events elsewhere (late events) has its runs read row
//! by row.

use chrono::{DateTime, Duration as Days, NaiveDate, Utc};
use sqlx::{Connection as _, PgConnection, Row as _};

use super::error::DbError;
use super::retention::{runs, PurgedRun};
use super::shared::fail;
use super::store::Store;
use crate::config::PartitionInterval;

/// What dropping partitions did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Dropped {
    /// Partitions dropped.
    pub partitions: u32,
    /// Events they held.
    pub rows: u64,
}

/// One partition and its bounds.
#[derive(Debug, Clone)]
struct Partition {
    name: String,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
}

/// Whether `e` is PostgreSQL's refusal to insert a row no partition holds.
pub fn is_missing_partition(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db)
        if db.code().as_deref() == Some("23514") && db.message().starts_with("no partition of relation"))
}

/// Creates the partitions holding each of `times` (one call per distinct UTC day).
pub async fn ensure_for(
    conn: &mut PgConnection,
    times: impl IntoIterator<Item = DateTime<Utc>>,
    step: PartitionInterval,
) -> Result<u32, sqlx::Error> {
    let mut days: Vec<NaiveDate> = times.into_iter().map(|t| t.date_naive()).collect();
    days.sort_unstable();
    days.dedup();
    let mut created = 0;
    for day in days {
        let t = day.and_hms_opt(12, 0, 0).map(|d| d.and_utc());
        let existed: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM audit_partitions WHERE range_start <= $1 AND $1 < range_end)",
        )
        .bind(t)
        .fetch_one(&mut *conn)
        .await?;
        if !existed {
            sqlx::query("SELECT audit_ensure_partition($1, $2)")
                .bind(t)
                .bind(step.as_str())
                .execute(&mut *conn)
                .await?;
            created += 1;
        }
    }
    Ok(created)
}

/// The runs of chain positions a partition holds (see the module docs).
async fn partition_runs(
    tx: &mut PgConnection,
    p: &Partition,
) -> Result<Vec<PurgedRun>, sqlx::Error> {
    let part = p.name.as_str();
    let ends = sqlx::query(&format!(
        "WITH RECURSIVE c AS ( \
            (SELECT correlation_id FROM \"{part}\" ORDER BY correlation_id LIMIT 1) \
            UNION ALL \
            SELECT (SELECT x.correlation_id FROM \"{part}\" x WHERE x.correlation_id > c.correlation_id \
                    ORDER BY x.correlation_id LIMIT 1) FROM c WHERE c.correlation_id IS NOT NULL) \
         SELECT c.correlation_id, lo.chain_sequence AS lo, hi.chain_sequence AS hi, hi.event_hash \
         FROM c \
         CROSS JOIN LATERAL (SELECT chain_sequence FROM \"{part}\" x WHERE x.correlation_id = c.correlation_id \
                             ORDER BY chain_sequence LIMIT 1) lo \
         CROSS JOIN LATERAL (SELECT chain_sequence, event_hash FROM \"{part}\" x WHERE x.correlation_id = c.correlation_id \
                             ORDER BY chain_sequence DESC LIMIT 1) hi \
         WHERE c.correlation_id IS NOT NULL"
    ))
    .fetch_all(&mut *tx)
    .await?;
    let mut chains = Vec::with_capacity(ends.len());
    for r in &ends {
        chains.push((
            r.try_get::<String, _>("correlation_id")?,
            r.try_get::<i64, _>("lo")?,
            r.try_get::<i64, _>("hi")?,
            r.try_get::<String, _>("event_hash")?,
        ));
    }
    // Chains with events of the same span elsewhere: their runs in this partition are read
    // row by row. The time condition keeps the partition itself out of the probe (partition
    // pruning), so the probe does not read the partition's own rows.
    let split: Vec<String> = sqlx::query_scalar(
        "SELECT u.cid FROM unnest($1::text[], $2::bigint[], $3::bigint[]) AS u(cid, lo, hi) \
         WHERE EXISTS (SELECT 1 FROM audit_events e WHERE e.correlation_id = u.cid \
                       AND e.chain_sequence BETWEEN u.lo AND u.hi \
                       AND (e.event_timestamp < $4 OR e.event_timestamp >= $5))",
    )
    .bind(chains.iter().map(|c| c.0.as_str()).collect::<Vec<_>>())
    .bind(chains.iter().map(|c| c.1).collect::<Vec<_>>())
    .bind(chains.iter().map(|c| c.2).collect::<Vec<_>>())
    .bind(p.start)
    .bind(p.end)
    .fetch_all(&mut *tx)
    .await?;
    let mut out = Vec::with_capacity(chains.len());
    for (cid, lo, hi, hash) in chains {
        if split.contains(&cid) {
            let rows: Vec<(String, i64, String)> = sqlx::query_as(&format!(
                "SELECT correlation_id, chain_sequence, event_hash FROM \"{part}\" \
                 WHERE correlation_id = $1 ORDER BY chain_sequence"
            ))
            .bind(&cid)
            .fetch_all(&mut *tx)
            .await?;
            out.extend(runs(rows));
        } else {
            out.push(PurgedRun {
                correlation_id: cid,
                first: lo,
                last: hi,
                last_hash: hash,
            });
        }
    }
    Ok(out)
}

/// The longest retention of the events of a partition, category floors included.
async fn longest_retention(tx: &mut PgConnection, part: &str) -> Result<Option<i64>, sqlx::Error> {
    let row = sqlx::query(&format!(
        "SELECT (SELECT max(retention_days) FROM \"{part}\") AS own, \
                (SELECT max(p.min_retention_days) FROM audit_retention_policies p \
                 WHERE EXISTS (SELECT 1 FROM \"{part}\" e WHERE e.event_category = p.event_category)) AS floor"
    ))
    .fetch_one(&mut *tx)
    .await?;
    let own: Option<i32> = row.try_get("own")?;
    let floor: Option<i32> = row.try_get("floor")?;
    Ok(own.map(|d| i64::from(d.max(floor.unwrap_or(0)))))
}

/// Tries to drop one partition in its own transaction; `None` when it must stay (not every
/// event expired, or one is held), else the events it held.
async fn drop_one(
    conn: &mut PgConnection,
    p: &Partition,
    today: NaiveDate,
) -> Result<Option<u64>, sqlx::Error> {
    let last_day = (p.end - chrono::Duration::microseconds(1)).date_naive();
    let expired = |longest: Option<i64>| match longest {
        None => true, // empty
        Some(days) => last_day + Days::days(days) < today,
    };
    // A first look without locks, so a partition that must stay costs nothing more.
    if !expired(longest_retention(conn, &p.name).await?) {
        return Ok(None);
    }
    let mut tx = conn.begin().await?;
    // Holds wait for this transaction; writers to the partition too (it is old: rarely any).
    sqlx::query("LOCK TABLE audit_legal_holds IN SHARE MODE")
        .execute(&mut *tx)
        .await?;
    sqlx::query(&format!(
        "LOCK TABLE \"{}\" IN ACCESS EXCLUSIVE MODE",
        p.name
    ))
    .execute(&mut *tx)
    .await?;
    let held: bool = sqlx::query_scalar(&format!(
        "SELECT EXISTS (SELECT 1 FROM audit_legal_holds h WHERE h.released_at IS NULL \
         AND EXISTS (SELECT 1 FROM \"{}\" e WHERE e.correlation_id = h.correlation_id))",
        p.name
    ))
    .fetch_one(&mut *tx)
    .await?;
    if held || !expired(longest_retention(&mut tx, &p.name).await?) {
        tx.rollback().await?;
        return Ok(None);
    }
    let runs = partition_runs(&mut tx, p).await?;
    let rows: u64 = runs.iter().map(|r| (r.last - r.first + 1) as u64).sum();
    if !runs.is_empty() {
        sqlx::query(super::retention::PG_MERGE_RUNS)
            .bind(
                runs.iter()
                    .map(|r| r.correlation_id.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(runs.iter().map(|r| r.first).collect::<Vec<_>>())
            .bind(runs.iter().map(|r| r.last).collect::<Vec<_>>())
            .bind(
                runs.iter()
                    .map(|r| r.last_hash.as_str())
                    .collect::<Vec<_>>(),
            )
            .execute(&mut *tx)
            .await?;
    }
    sqlx::query(&format!("DROP TABLE \"{}\"", p.name))
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM audit_partitions WHERE partition_name = $1")
        .bind(&p.name)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Some(rows))
}

impl Store {
    /// Creates the partition of now and the `ahead` next ones (PostgreSQL; nothing on SQLite);
    /// returns how many were created.
    pub async fn create_partitions_ahead(
        &self,
        step: PartitionInterval,
        ahead: u32,
    ) -> Result<u32, DbError> {
        let Store::Postgres(s) = self else {
            return Ok(0);
        };
        let now = Utc::now();
        let times = (0..=ahead).map(|i| match step {
            PartitionInterval::Daily => now + Days::days(i64::from(i)),
            PartitionInterval::Monthly => now
                .checked_add_months(chrono::Months::new(i))
                .unwrap_or(now),
        });
        let mut conn = s.pool.acquire().await?;
        let created = crate::db::pool::in_session!(conn, |c| ensure_for(c, times, step).await);
        created.map_err(|e| fail(conn, e))
    }

    /// Drops every partition whose events have all expired and none is held (see the module
    /// docs); nothing on SQLite.
    pub async fn drop_expired_partitions(&self, today: NaiveDate) -> Result<Dropped, DbError> {
        let Store::Postgres(s) = self else {
            return Ok(Dropped::default());
        };
        let mut conn = s.pool.acquire().await?;
        // Behind a transaction-mode pooler the whole pass is one transaction, each partition's
        // own a savepoint in it.
        let result = crate::db::pool::in_session!(conn, |conn| {
            // Only partitions that end before yesterday can hold nothing but expired events.
            let cutoff = (today - Days::days(1))
                .and_hms_opt(0, 0, 0)
                .map(|t| t.and_utc());
            let parts = sqlx::query(
                "SELECT partition_name, range_start, range_end FROM audit_partitions \
                 WHERE range_end <= $1 ORDER BY range_start",
            )
            .bind(cutoff)
            .fetch_all(&mut *conn)
            .await?
            .iter()
            .map(|r| {
                Ok(Partition {
                    name: r.try_get("partition_name")?,
                    start: r.try_get("range_start")?,
                    end: r.try_get("range_end")?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
            let mut dropped = Dropped::default();
            for p in &parts {
                if let Some(rows) = drop_one(conn, p, today).await? {
                    tracing::info!(partition = %p.name, rows, "retention dropped a partition");
                    dropped.partitions += 1;
                    dropped.rows += rows;
                }
            }
            Ok::<_, sqlx::Error>(dropped)
        });
        result.map_err(|e| fail(conn, e))
    }
}
