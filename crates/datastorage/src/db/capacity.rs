//! The connection budget check (PostgreSQL): does peak replicas × `maxOpenConns` + headroom fit
//! what the server can give this service?
//!
//! The seed's deployment rule, enforced by the service itself. Figures read from the server:
//! `max_connections`, `superuser_reserved_connections`, `reserved_connections` (PostgreSQL 16+),
//! the role's and the database's connection limits, and the connections other clients hold now
//! (every client backend except this service's own: `application_name` `datastorage` with this
//! role on this database; other replicas of this service are part of the budget, not of
//! "others").
//!
//! A role without `pg_read_all_stats` (or superuser) cannot see the `backend_type` of other
//! roles' sessions. Then a session counts as a client when it has a role and a database, which
//! can only overcount (a parallel or logical-replication worker also has both), and the check
//! says that its count is an estimate.

use std::fmt;

use anyhow::Context as _;
use sqlx::Connection;

use crate::config::DatabaseSettings;

/// The figures and the verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capacity {
    /// `max_connections`.
    pub max_connections: i64,
    /// `superuser_reserved_connections`.
    pub superuser_reserved: i64,
    /// `reserved_connections` (0 before PostgreSQL 16).
    pub reserved: i64,
    /// The role's `rolconnlimit`, if limited.
    pub role_limit: Option<i64>,
    /// The database's `datconnlimit`, if limited.
    pub database_limit: Option<i64>,
    /// Client connections held by others, server-wide.
    pub others: i64,
    /// Of those, held by this role.
    pub others_same_role: i64,
    /// Of those, on this database.
    pub others_same_database: i64,
    /// Whether the session types of other roles' sessions were hidden, so `others` is an
    /// estimate (see the module docs).
    pub estimated: bool,
    /// Peak replicas counted.
    pub replicas: u32,
    /// `maxOpenConns`.
    pub max_open_conns: u32,
    /// Headroom for migrations and admin.
    pub headroom: u32,
}

impl Capacity {
    /// What this service needs: replicas × maxOpenConns + headroom.
    pub fn budget(&self) -> i64 {
        i64::from(self.replicas) * i64::from(self.max_open_conns) + i64::from(self.headroom)
    }

    /// What the server can give: the tightest of the server, role and database limits.
    pub fn available(&self) -> i64 {
        let server = self.max_connections - self.superuser_reserved - self.reserved - self.others;
        let role = self.role_limit.map(|l| l - self.others_same_role);
        let database = self.database_limit.map(|l| l - self.others_same_database);
        [Some(server), role, database]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(server)
            .max(0)
    }

    /// True when the budget does not fit.
    pub fn violated(&self) -> bool {
        self.budget() > self.available()
    }

    /// A table for `datastorage check`.
    pub fn table(&self) -> String {
        let limit = |l: Option<i64>| l.map_or_else(|| "unlimited".to_owned(), |l| l.to_string());
        format!(
            "connection budget (PostgreSQL)\n\
             \x20 max_connections                  {:>8}\n\
             \x20 superuser_reserved_connections   {:>8}\n\
             \x20 reserved_connections             {:>8}\n\
             \x20 other clients' connections       {:>8}{}\n\
             \x20 role connection limit            {:>8}  (others with this role: {})\n\
             \x20 database connection limit        {:>8}  (others on this database: {})\n\
             \x20 available to this service        {:>8}\n\
             \x20 needed: {} replicas x maxOpenConns {} + headroom {} = {}\n\
             \x20 verdict: {}",
            self.max_connections,
            self.superuser_reserved,
            self.reserved,
            self.others,
            if self.estimated {
                "  (estimated: this role cannot see other roles' session types; GRANT pg_read_all_stats TO this role for an exact count)"
            } else {
                ""
            },
            limit(self.role_limit),
            self.others_same_role,
            limit(self.database_limit),
            self.others_same_database,
            self.available(),
            self.replicas,
            self.max_open_conns,
            self.headroom,
            self.budget(),
            if self.violated() {
                "DOES NOT FIT"
            } else {
                "fits"
            },
        )
    }
}

impl fmt::Display for Capacity {
    /// The arithmetic in one line, for logs and start-up refusals.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "connection budget {}: {} replicas x maxOpenConns {} + headroom {} = {} {} available {} \
             (max_connections {} - superuser_reserved {} - reserved {} - other clients {}",
            if self.violated() { "exceeded" } else { "ok" },
            self.replicas,
            self.max_open_conns,
            self.headroom,
            self.budget(),
            if self.violated() { ">" } else { "<=" },
            self.available(),
            self.max_connections,
            self.superuser_reserved,
            self.reserved,
            self.others,
        )?;
        if let Some(l) = self.role_limit {
            write!(f, "; role limit {l} - others {}", self.others_same_role)?;
        }
        if let Some(l) = self.database_limit {
            write!(
                f,
                "; database limit {l} - others {}",
                self.others_same_database
            )?;
        }
        f.write_str(")")?;
        if self.estimated {
            f.write_str("; other clients estimated: grant pg_read_all_stats for an exact count")?;
        }
        Ok(())
    }
}

/// Reads the figures over one short-lived connection.
pub async fn check(db: &DatabaseSettings) -> anyhow::Result<Capacity> {
    let mut conn = crate::db::postgres::admin_connect(db)
        .await
        .context("capacity check")?;
    let row: (i64, i64, i64, i64, i64, i64, i64, i64, bool) = sqlx::query_as(
        "WITH s AS ( \
             SELECT usename, datname, backend_type, \
                    application_name = 'datastorage' AND usename = current_user \
                        AND datname = current_database() AS ours \
             FROM pg_stat_activity), \
         others AS ( \
             SELECT * FROM s WHERE ours IS NOT TRUE AND ( \
                 backend_type = 'client backend' \
                 OR (backend_type IS NULL AND usename IS NOT NULL AND datname IS NOT NULL))) \
         SELECT current_setting('max_connections')::bigint, \
                current_setting('superuser_reserved_connections')::bigint, \
                COALESCE(current_setting('reserved_connections', true)::bigint, 0), \
                (SELECT rolconnlimit FROM pg_roles WHERE rolname = current_user)::bigint, \
                (SELECT datconnlimit FROM pg_database WHERE datname = current_database())::bigint, \
                (SELECT count(*) FROM others), \
                (SELECT count(*) FROM others WHERE usename = current_user), \
                (SELECT count(*) FROM others WHERE datname = current_database()), \
                EXISTS (SELECT 1 FROM s WHERE backend_type IS NULL)",
    )
    .fetch_one(&mut conn)
    .await
    .context("capacity check: cannot read connection settings")?;
    conn.close().await.ok();
    let limited = |l: i64| (l >= 0).then_some(l);
    Ok(Capacity {
        max_connections: row.0,
        superuser_reserved: row.1,
        reserved: row.2,
        role_limit: limited(row.3),
        database_limit: limited(row.4),
        others: row.5,
        others_same_role: row.6,
        others_same_database: row.7,
        estimated: row.8,
        replicas: db.capacity.replicas,
        max_open_conns: db.max_open_conns,
        headroom: db.capacity.headroom,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cap(replicas: u32) -> Capacity {
        Capacity {
            max_connections: 20,
            superuser_reserved: 3,
            reserved: 0,
            role_limit: None,
            database_limit: None,
            others: 2,
            others_same_role: 0,
            others_same_database: 0,
            estimated: false,
            replicas,
            max_open_conns: 5,
            headroom: 5,
        }
    }

    #[test]
    fn the_budget_arithmetic_is_shown_and_judged() {
        let c = cap(5);
        assert_eq!((c.budget(), c.available()), (30, 15));
        assert!(c.violated());
        let line = c.to_string();
        assert!(
            line.contains("5 replicas x maxOpenConns 5 + headroom 5 = 30 > available 15"),
            "{line}"
        );
        assert!(!cap(2).violated());
    }

    #[test]
    fn the_tightest_limit_wins() {
        let mut c = cap(1);
        c.role_limit = Some(8);
        c.others_same_role = 1;
        assert_eq!(c.available(), 7);
        c.database_limit = Some(4);
        assert_eq!(c.available(), 4);
        assert!(c.violated());
    }
}
