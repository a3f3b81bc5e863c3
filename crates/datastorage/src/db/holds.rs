//! Legal holds: placing, releasing and listing them (`audit_legal_holds`). A hold is keyed by
//! correlation id and covers its events whatever their age, those written after it included:
//! reads compute `legal_hold` from this table ([`HELD`]), and the purge leaves held chains
//! alone (a trigger refuses to delete a held row, as a second line of defence).

use chrono::{DateTime, Utc};
use datastorage_api::{LegalHold, LegalHoldReleased};
use sqlx::Row as _;
use uuid::Uuid;

use super::error::DbError;
use super::shared::fail;
use super::store::Store;

/// The `legal_hold` column of a read: whether an active hold covers the row's correlation id.
pub const HELD: &str = "EXISTS (SELECT 1 FROM audit_legal_holds h \
    WHERE h.correlation_id = audit_events.correlation_id AND h.released_at IS NULL) AS legal_hold";

/// A hold to place.
#[derive(Debug, Clone)]
pub struct NewHold<'a> {
    /// The correlation id.
    pub correlation_id: &'a str,
    /// Why.
    pub reason: &'a str,
    /// The principal placing it.
    pub placed_by: &'a str,
    /// When.
    pub placed_at: DateTime<Utc>,
}

/// A release to record.
#[derive(Debug, Clone)]
pub struct Release<'a> {
    /// The held correlation id.
    pub correlation_id: &'a str,
    /// Why.
    pub reason: &'a str,
    /// The principal releasing it.
    pub released_by: &'a str,
    /// When.
    pub released_at: DateTime<Utc>,
}

/// What placing a hold did.
#[derive(Debug)]
pub enum Placed {
    /// The hold is placed.
    New(LegalHold),
    /// An active hold already covers the correlation id: nothing changed.
    Exists(LegalHold),
}

const HOLD_COLUMNS: &str = "hold_id, correlation_id, reason, placed_by, placed_at, released_by, \
    released_at, release_reason, \
    (SELECT count(*) FROM audit_events e WHERE e.correlation_id = audit_legal_holds.correlation_id) \
    AS events";

fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn from_micros(m: i64) -> Result<DateTime<Utc>, sqlx::Error> {
    DateTime::from_timestamp_micros(m).ok_or_else(|| sqlx::Error::ColumnDecode {
        index: "placed_at".into(),
        source: "timestamp out of range".into(),
    })
}

fn pg_hold(r: &sqlx::postgres::PgRow) -> Result<LegalHold, sqlx::Error> {
    Ok(LegalHold {
        hold_id: r.try_get("hold_id")?,
        correlation_id: r.try_get("correlation_id")?,
        reason: r.try_get("reason")?,
        placed_by: r.try_get("placed_by")?,
        placed_at: r.try_get("placed_at")?,
        released_by: r.try_get("released_by")?,
        released_at: r.try_get("released_at")?,
        release_reason: r.try_get("release_reason")?,
        events_affected: r.try_get::<i64, _>("events")? as u64,
    })
}

fn sqlite_hold(r: &sqlx::sqlite::SqliteRow) -> Result<LegalHold, sqlx::Error> {
    let id: String = r.try_get("hold_id")?;
    Ok(LegalHold {
        hold_id: Uuid::parse_str(&id).map_err(|e| sqlx::Error::ColumnDecode {
            index: "hold_id".into(),
            source: e.into(),
        })?,
        correlation_id: r.try_get("correlation_id")?,
        reason: r.try_get("reason")?,
        placed_by: r.try_get("placed_by")?,
        placed_at: from_micros(r.try_get("placed_at")?)?,
        released_by: r.try_get("released_by")?,
        released_at: r
            .try_get::<Option<i64>, _>("released_at")?
            .map(from_micros)
            .transpose()?,
        release_reason: r.try_get("release_reason")?,
        events_affected: r.try_get::<i64, _>("events")? as u64,
    })
}

impl Store {
    /// Places a hold on `hold.correlation_id`, unless an active one covers it already.
    pub async fn place_hold(&self, hold: &NewHold<'_>) -> Result<Placed, DbError> {
        let id = Uuid::now_v7();
        match self {
            Store::Postgres(s) => {
                let mut conn = s.pool.acquire().await?;
                let placed = crate::db::pool::in_session!(conn, |c| {
                    let inserted = sqlx::query(
                            "INSERT INTO audit_legal_holds (hold_id, correlation_id, reason, placed_by, placed_at) \
                             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (correlation_id) WHERE released_at IS NULL DO NOTHING",
                        )
                        .bind(id)
                        .bind(hold.correlation_id)
                        .bind(hold.reason)
                        .bind(hold.placed_by)
                        .bind(hold.placed_at)
                        .execute(&mut *c)
                        .await?
                        .rows_affected()
                            == 1;
                    let row = sqlx::query(&format!(
                        "SELECT {HOLD_COLUMNS} FROM audit_legal_holds \
                             WHERE correlation_id = $1 AND released_at IS NULL"
                    ))
                    .bind(hold.correlation_id)
                    .fetch_one(&mut *c)
                    .await?;
                    Ok::<_, sqlx::Error>((inserted, pg_hold(&row)?))
                });
                let (inserted, hold) = placed.map_err(|e| fail(conn, e))?;
                Ok(if inserted {
                    Placed::New(hold)
                } else {
                    Placed::Exists(hold)
                })
            }
            Store::Sqlite(s) => {
                let _writer = s.write_lock().await;
                let mut conn = s.pool.acquire().await?;
                let inserted = sqlx::query(
                    "INSERT INTO audit_legal_holds (hold_id, correlation_id, reason, placed_by, placed_at) \
                     VALUES (?, ?, ?, ?, ?) ON CONFLICT (correlation_id) WHERE released_at IS NULL DO NOTHING",
                )
                .bind(id.to_string())
                .bind(hold.correlation_id)
                .bind(hold.reason)
                .bind(hold.placed_by)
                .bind(micros(hold.placed_at))
                .execute(&mut *conn)
                .await;
                let inserted = match inserted {
                    Ok(done) => done.rows_affected() == 1,
                    Err(e) => return Err(fail(conn, e)),
                };
                let row = sqlx::query(&format!(
                    "SELECT {HOLD_COLUMNS} FROM audit_legal_holds \
                     WHERE correlation_id = ? AND released_at IS NULL"
                ))
                .bind(hold.correlation_id)
                .fetch_one(&mut *conn)
                .await
                .and_then(|r| sqlite_hold(&r));
                let hold = row.map_err(|e| fail(conn, e))?;
                Ok(if inserted {
                    Placed::New(hold)
                } else {
                    Placed::Exists(hold)
                })
            }
        }
    }

    /// Releases the active hold on `release.correlation_id`; `None` when there is none.
    pub async fn release_hold(
        &self,
        release: &Release<'_>,
    ) -> Result<Option<LegalHoldReleased>, DbError> {
        let row = match self {
            Store::Postgres(s) => {
                let mut conn = s.pool.acquire().await?;
                let row = crate::db::pool::in_session!(conn, |c| {
                        sqlx::query(
                            "UPDATE audit_legal_holds SET released_by = $2, released_at = $3, release_reason = $4 \
                             WHERE correlation_id = $1 AND released_at IS NULL \
                             RETURNING hold_id, (SELECT count(*) FROM audit_events e WHERE e.correlation_id = $1) AS events",
                        )
                        .bind(release.correlation_id)
                        .bind(release.released_by)
                        .bind(release.released_at)
                        .bind(release.reason)
                        .fetch_optional(&mut *c)
                        .await
                    })
                    .and_then(|r| {
                    r.map(|r| Ok::<_, sqlx::Error>((r.try_get("hold_id")?, r.try_get("events")?)))
                        .transpose()
                });
                row.map_err(|e| fail(conn, e))?
            }
            Store::Sqlite(s) => {
                let _writer = s.write_lock().await;
                let mut conn = s.pool.acquire().await?;
                let row = sqlx::query(
                    "UPDATE audit_legal_holds SET released_by = ?2, released_at = ?3, release_reason = ?4 \
                     WHERE correlation_id = ?1 AND released_at IS NULL \
                     RETURNING hold_id, (SELECT count(*) FROM audit_events e WHERE e.correlation_id = ?1) AS events",
                )
                .bind(release.correlation_id)
                .bind(release.released_by)
                .bind(micros(release.released_at))
                .bind(release.reason)
                .fetch_optional(&mut *conn)
                .await
                .and_then(|r| {
                    r.map(|r| {
                        let id: String = r.try_get("hold_id")?;
                        let id = Uuid::parse_str(&id).map_err(|e| sqlx::Error::ColumnDecode {
                            index: "hold_id".into(),
                            source: e.into(),
                        })?;
                        Ok::<_, sqlx::Error>((id, r.try_get("events")?))
                    })
                    .transpose()
                });
                row.map_err(|e| fail(conn, e))?
            }
        };
        Ok(row.map(|(hold_id, events): (Uuid, i64)| LegalHoldReleased {
            correlation_id: release.correlation_id.to_owned(),
            events_released: events as u64,
            released_by: release.released_by.to_owned(),
            released_at: release.released_at,
            release_reason: release.reason.to_owned(),
            hold_id,
        }))
    }

    /// The active holds, or every hold ever placed with `include_released`, newest first, at
    /// most `limit`.
    pub async fn list_holds(
        &self,
        include_released: bool,
        limit: i64,
    ) -> Result<Vec<LegalHold>, DbError> {
        let filter = if include_released {
            ""
        } else {
            "WHERE released_at IS NULL"
        };
        let sql = format!(
            "SELECT {HOLD_COLUMNS} FROM audit_legal_holds {filter} \
             ORDER BY placed_at DESC, hold_id DESC LIMIT {limit}"
        );
        match self {
            Store::Postgres(s) => {
                let mut conn = s.pool.acquire().await?;
                let rows = crate::db::pool::in_session!(conn, |c| sqlx::query(&sql)
                    .fetch_all(&mut *c)
                    .await)
                .and_then(|rows| rows.iter().map(pg_hold).collect());
                rows.map_err(|e| fail(conn, e))
            }
            Store::Sqlite(s) => {
                let mut conn = s.pool.acquire().await?;
                let rows = sqlx::query(&sql)
                    .fetch_all(&mut *conn)
                    .await
                    .and_then(|rows| rows.iter().map(sqlite_hold).collect());
                rows.map_err(|e| fail(conn, e))
            }
        }
    }
}
