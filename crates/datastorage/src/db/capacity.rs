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
//! Behind PgBouncer (`database.pooler`), the service's connections end at the pooler, so the
//! budget has two sides, both checked: replicas × `maxOpenConns` must fit the pooler's
//! `max_client_conn`, and the pooler's server pool for this database and user (`pool_size` +
//! `reserve_pool`) + headroom must fit PostgreSQL (read over `database.migrationHost`). The
//! pooler's figures come from its admin console (`SHOW CONFIG`, `SHOW DATABASES` on the
//! `pgbouncer` database), which answers roles listed in its `stats_users` or `admin_users`;
//! when it does not, the check says why and judges PostgreSQL's side as if there were no pooler.
//!
//! A role without `pg_read_all_stats` (or superuser) cannot see the `backend_type` of other
//! roles' sessions. Then a session counts as a client when it has a role and a database, which
//! can only overcount (a parallel or logical-replication worker also has both), and the check
//! says that its count is an estimate.

use std::fmt;

use anyhow::Context as _;
use sqlx::{ConnectOptions as _, Connection, Row as _};

use crate::config::{DatabaseSettings, Pooler};

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
    /// The pooler's figures, behind one that could be read.
    pub pooler: Option<PoolerFigures>,
    /// Why the pooler's figures could not be read, behind one that could not.
    pub pooler_unread: Option<String>,
}

/// What PgBouncer's admin console says about the pool this service uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolerFigures {
    /// `max_client_conn`.
    pub max_client_conn: i64,
    /// The server pool of this database and user: its `pool_size`.
    pub pool_size: i64,
    /// And its `reserve_pool`.
    pub reserve_pool: i64,
    /// Its `pool_mode`.
    pub pool_mode: String,
}

impl PoolerFigures {
    /// Server connections the pooler may open for this service.
    pub fn server_connections(&self) -> i64 {
        self.pool_size + self.reserve_pool
    }
}

impl Capacity {
    /// Connections every replica together opens: replicas × maxOpenConns.
    pub fn clients(&self) -> i64 {
        i64::from(self.replicas) * i64::from(self.max_open_conns)
    }

    /// What this service needs from PostgreSQL: replicas × maxOpenConns + headroom, or behind
    /// a pooler its server pool + headroom.
    pub fn budget(&self) -> i64 {
        self.pooler
            .as_ref()
            .map_or(self.clients(), PoolerFigures::server_connections)
            + i64::from(self.headroom)
    }

    /// True when replicas × maxOpenConns exceed the pooler's `max_client_conn`.
    pub fn pooler_violated(&self) -> bool {
        self.pooler
            .as_ref()
            .is_some_and(|p| self.clients() > p.max_client_conn)
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

    /// True when the budget does not fit (PostgreSQL, or the pooler).
    pub fn violated(&self) -> bool {
        self.budget() > self.available() || self.pooler_violated()
    }

    /// How the need is made up, for the table and the log line.
    fn need(&self) -> String {
        match &self.pooler {
            Some(p) => format!(
                "pooler pool_size {} + reserve_pool {} + headroom {} = {}",
                p.pool_size,
                p.reserve_pool,
                self.headroom,
                self.budget()
            ),
            None => format!(
                "{} replicas x maxOpenConns {} + headroom {} = {}",
                self.replicas,
                self.max_open_conns,
                self.headroom,
                self.budget()
            ),
        }
    }

    /// The pooler's side, for the table and the log line; `None` without a pooler.
    fn pooler_side(&self) -> Option<String> {
        match (&self.pooler, &self.pooler_unread) {
            (Some(p), _) => Some(format!(
                "pooler (PgBouncer, pool_mode {}): {} replicas x maxOpenConns {} = {} {} max_client_conn {}",
                p.pool_mode,
                self.replicas,
                self.max_open_conns,
                self.clients(),
                if self.pooler_violated() { ">" } else { "<=" },
                p.max_client_conn
            )),
            (None, Some(why)) => Some(format!(
                "pooler (PgBouncer): its figures could not be read ({why}); PostgreSQL's side is judged as without a pooler"
            )),
            (None, None) => None,
        }
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
             \x20 needed from PostgreSQL: {}\n\
             {}\
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
            self.need(),
            self.pooler_side()
                .map(|side| format!("  {side}\n"))
                .unwrap_or_default(),
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
            "connection budget {}: {} {} available {} \
             (max_connections {} - superuser_reserved {} - reserved {} - other clients {}",
            if self.violated() { "exceeded" } else { "ok" },
            self.need(),
            if self.budget() > self.available() {
                ">"
            } else {
                "<="
            },
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
        if let Some(side) = self.pooler_side() {
            write!(f, "; {side}")?;
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
    let (pooler, pooler_unread) = match db.pooler {
        Pooler::None => (None, None),
        Pooler::Pgbouncer => match read_pooler(db).await {
            Ok(figures) => (Some(figures), None),
            Err(why) => (None, Some(why)),
        },
    };
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
        pooler,
        pooler_unread,
    })
}

/// PgBouncer's figures from its admin console, or why they could not be read.
async fn read_pooler(db: &DatabaseSettings) -> Result<PoolerFigures, String> {
    let opts = crate::db::postgres::console_options(db);
    let (host, port) = (db.host.as_deref().unwrap_or("localhost"), db.port);
    let mut conn = match tokio::time::timeout(db.connect_timeout, opts.connect()).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            return Err(format!(
                "cannot open the admin console (database pgbouncer at {host}:{port} as {}; list the role in PgBouncer's stats_users): {e}",
                db.user
            ))
        }
        Err(_) => {
            return Err(format!(
                "the admin console at {host}:{port} did not answer within {} (database.connectTimeout)",
                crate::config::format_duration(db.connect_timeout)
            ))
        }
    };
    let read = async {
        // The console speaks only the simple query protocol; every value comes as text.
        // (A plain `&str` runs as a simple query.)
        let config = sqlx::Executor::fetch_all(&mut conn, "SHOW CONFIG").await?;
        let databases = sqlx::Executor::fetch_all(&mut conn, "SHOW DATABASES").await?;
        Ok::<_, sqlx::Error>((config, databases))
    }
    .await;
    conn.close().await.ok();
    let (config, databases) = read.map_err(|e| format!("the admin console refused SHOW: {e}"))?;
    let text = |row: &sqlx::postgres::PgRow, column: &str| -> Option<String> {
        row.try_get_unchecked::<Option<String>, _>(column)
            .ok()
            .flatten()
    };
    let setting = |key: &str| {
        config
            .iter()
            .find(|r| text(r, "key").as_deref() == Some(key))
            .and_then(|r| text(r, "value"))
    };
    let number = |value: Option<String>, what: &str| {
        value
            .and_then(|v| v.trim().parse::<i64>().ok())
            .ok_or_else(|| format!("the admin console gave no {what}"))
    };
    // A database not listed yet (made from the `*` entry when a client first asks for it) or
    // without a size of its own uses the defaults.
    let ours = databases
        .iter()
        .find(|r| text(r, "name").as_deref() == Some(db.name.as_str()));
    let own = |column: &str, default: &str| match ours
        .and_then(|r| text(r, column)?.trim().parse::<i64>().ok())
    {
        Some(n) if n >= 0 => Ok(n),
        _ => number(setting(default), default),
    };
    Ok(PoolerFigures {
        max_client_conn: number(setting("max_client_conn"), "max_client_conn")?,
        pool_size: own("pool_size", "default_pool_size")?,
        reserve_pool: own("reserve_pool", "reserve_pool_size")?,
        pool_mode: ours
            .and_then(|r| text(r, "pool_mode"))
            .filter(|m| !m.is_empty())
            .or_else(|| setting("pool_mode"))
            .unwrap_or_else(|| "unknown".to_owned()),
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
            pooler: None,
            pooler_unread: None,
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
    fn behind_a_pooler_postgresql_sees_its_server_pool_and_the_pooler_sees_the_replicas() {
        let mut c = cap(50);
        c.pooler = Some(PoolerFigures {
            max_client_conn: 1000,
            pool_size: 5,
            reserve_pool: 2,
            pool_mode: "transaction".to_owned(),
        });
        // 50 replicas x 5 = 250 clients of the pooler; PostgreSQL sees 5 + 2 + headroom 5.
        assert_eq!((c.clients(), c.budget(), c.available()), (250, 12, 15));
        assert!(!c.violated(), "{c}");
        let line = c.to_string();
        assert!(
            line.contains("pooler pool_size 5 + reserve_pool 2 + headroom 5 = 12 <= available 15"),
            "{line}"
        );
        assert!(
            line.contains("50 replicas x maxOpenConns 5 = 250 <= max_client_conn 1000"),
            "{line}"
        );
        c.replicas = 201;
        assert!(c.pooler_violated() && c.violated());
        assert!(
            c.table().contains("1005 > max_client_conn 1000"),
            "{}",
            c.table()
        );

        let mut unread = cap(5);
        unread.pooler_unread = Some("cannot open the admin console".to_owned());
        assert_eq!(unread.budget(), 30, "judged as without a pooler");
        assert!(unread
            .table()
            .contains("could not be read (cannot open the admin console)"));
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
