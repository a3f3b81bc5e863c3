//! The detector table: which text, in which language, is a database connection, a driver import
//! or a pool setting.
//!
//! Rules: every detector has a stable `id` (`<lang>/<what>`) that reports and allowlists refer
//! to. A pool-setting pattern ends exactly where the value expression starts, so
//! [`crate::value::extract`] can take the value from there. A `guard` is a second pattern that
//! must occur somewhere in the file before the detector applies; it keeps generic names such as
//! `new Pool(` or `max:` from matching files that never import a database library.

use std::sync::LazyLock;

use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::lang::Language;

/// What a finding is evidence of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FindingKind {
    /// Code that opens a database connection or builds a pool.
    Connection,
    /// An import of (or a manifest dependency on) a database driver or pool library.
    DriverImport,
    /// A connection-pool setting with a value.
    PoolSetting,
    /// A reference to the database owner's client (how a service reaches the owner).
    OwnerClient,
}

/// One detector: a pattern for a language, and what a match means.
#[derive(Debug)]
pub struct Detector {
    /// Stable identifier used in reports and allowlists, e.g. `go/set-max-open-conns`.
    pub id: &'static str,
    /// Languages whose files the detector runs on (prose runs every source detector).
    pub languages: &'static [Language],
    /// What a match is evidence of.
    pub kind: FindingKind,
    /// Library or API the detector recognises, for humans.
    pub technology: &'static str,
    /// For pool settings, the setting's name as reported.
    pub setting: Option<&'static str>,
    /// The pattern; for pool settings it ends where the value starts.
    pub pattern: Regex,
    /// A pattern that must occur in the same file for the detector to apply.
    pub guard: Option<Regex>,
}

use FindingKind::{Connection as C, DriverImport as I, PoolSetting as S};
use Language::*;

const GO: &[Language] = &[Go];
const RS: &[Language] = &[Rust];
const PY: &[Language] = &[Python];
const JAVA: &[Language] = &[Java];
const JS: &[Language] = &[JavaScript];
const SOURCE: &[Language] = &[Go, Rust, Python, Java, JavaScript];

type Row = (
    &'static str,
    &'static [Language],
    FindingKind,
    &'static str,
    Option<&'static str>,
    &'static str,
    Option<&'static str>,
);

const SQLX_GUARD: &str = r"sqlx|PoolOptions";
const RUST_POOL_GUARD: &str = r"\b(?:bb8|r2d2|deadpool)";
const PY_POOL_GUARD: &str = r"\b(?:asyncpg|psycopg_pool|psycopg)\b";
const SQLALCHEMY_GUARD: &str = r"\b(?:sqlalchemy|sqlmodel)\b";
const HIKARI_GUARD: &str = r"\bHikari|com\.zaxxer\.hikari";
const PG_GUARD: &str = r#"require\(\s*['"]pg['"]\s*\)|from\s+['"]pg['"]"#;
const NODE_POOL_GUARD: &str =
    r#"require\(\s*['"](?:pg|knex|sequelize)['"]\s*\)|from\s+['"](?:pg|knex|sequelize)['"]"#;

#[rustfmt::skip]
const ROWS: &[Row] = &[
    // ---- Go ----------------------------------------------------------------------------------
    ("go/sql-open", GO, C, "database/sql", None, r"\bsql\.Open(?:DB)?\s*\(", None),
    ("go/sqlx-open", GO, C, "sqlx", None, r"\bsqlx\.(?:Open|Connect|MustOpen|MustConnect|ConnectContext|NewDb)\s*\(", None),
    ("go/pgx-connect", GO, C, "pgx", None, r"\bpgx\.Connect(?:Config)?\s*\(", None),
    ("go/pgxpool-new", GO, C, "pgxpool", None, r"\bpgxpool\.(?:New|NewWithConfig|Connect|ConnectConfig)\s*\(", None),
    ("go/pgx-stdlib-open", GO, C, "pgx stdlib", None, r"\bstdlib\.OpenDB(?:FromPool)?\s*\(", None),
    ("go/gorm-open", GO, C, "gorm", None, r"\bgorm\.Open\s*\(", None),
    ("go/driver-import", GO, I, "Go database driver", None, r#""(?:database/sql|github\.com/lib/pq|github\.com/jackc/pgx(?:/v\d+)?|github\.com/jmoiron/sqlx|gorm\.io/gorm|gorm\.io/driver/[\w-]+|github\.com/go-sql-driver/mysql|github\.com/mattn/go-sqlite3|modernc\.org/sqlite|github\.com/uptrace/bun)(?:/[\w./-]*)?""#, None),
    ("go/set-max-open-conns", GO, S, "database/sql", Some("SetMaxOpenConns"), r"\.SetMaxOpenConns\s*\(", None),
    ("go/set-max-idle-conns", GO, S, "database/sql", Some("SetMaxIdleConns"), r"\.SetMaxIdleConns\s*\(", None),
    ("go/set-conn-max-lifetime", GO, S, "database/sql", Some("SetConnMaxLifetime"), r"\.SetConnMaxLifetime\s*\(", None),
    ("go/set-conn-max-idle-time", GO, S, "database/sql", Some("SetConnMaxIdleTime"), r"\.SetConnMaxIdleTime\s*\(", None),
    ("go/pgxpool-max-conns", GO, S, "pgxpool", Some("MaxConns"), r"\.MaxConns\s*=", None),
    ("go/pgxpool-min-conns", GO, S, "pgxpool", Some("MinConns"), r"\.MinConns\s*=", None),
    ("go/pgxpool-max-conn-lifetime", GO, S, "pgxpool", Some("MaxConnLifetime"), r"\.MaxConnLifetime\s*=", None),
    ("go/pgxpool-max-conn-idle-time", GO, S, "pgxpool", Some("MaxConnIdleTime"), r"\.MaxConnIdleTime\s*=", None),
    ("go.mod/driver-require", &[GoMod], I, "Go database driver", None, r"(?m)^\s*(?:require\s+)?(?:github\.com/lib/pq|github\.com/jackc/pgx(?:/v\d+)?|github\.com/jmoiron/sqlx|gorm\.io/driver/[\w-]+|github\.com/go-sql-driver/mysql|github\.com/mattn/go-sqlite3)\s+v", None),
    // ---- any source: DSN parameters -------------------------------------------------------
    ("dsn/pool-max-conns", SOURCE, S, "pgx DSN", Some("pool_max_conns"), r"\bpool_max_conns=", None),
    // ---- Rust --------------------------------------------------------------------------------
    ("rust/sqlx-pool-connect", RS, C, "sqlx", None, r"\b(?:PgPool|SqlitePool|MySqlPool|AnyPool|Pool::<\w+>)::connect(?:_lazy)?(?:_with)?\s*\(", None),
    ("rust/sqlx-pool-options", RS, C, "sqlx", None, r"\b(?:Pg|Sqlite|MySql|Any)PoolOptions::new\s*\(|\bPoolOptions::<\w+>::new\s*\(", None),
    ("rust/sqlx-connection-connect", RS, C, "sqlx", None, r"\b(?:PgConnection|SqliteConnection|MySqlConnection|AnyConnection)::connect(?:_with)?\s*\(", None),
    ("rust/diesel-establish", RS, C, "diesel", None, r"\b\w*Connection::establish\s*\(", None),
    ("rust/tokio-postgres-connect", RS, C, "tokio-postgres", None, r"\btokio_postgres::connect\s*\(|\bpostgres::Client::connect\s*\(", None),
    ("rust/deadpool-postgres", RS, C, "deadpool-postgres", None, r"\bdeadpool_postgres::(?:Config\b|Manager::(?:new|from_config)\s*\()|\.create_pool\s*\(", Some(r"deadpool")),
    ("rust/pool-builder", RS, C, "bb8/r2d2/deadpool", None, r"\b(?:bb8::|r2d2::)?Pool::builder\s*\(|\br2d2::Pool::new\s*\(", Some(r"\b(?:bb8|r2d2|deadpool)\b")),
    ("rust/driver-use", RS, I, "Rust database crate", None, r"(?m)^\s*(?:pub(?:\([^)]*\))?\s+)?(?:use|extern\s+crate)\s+(?:::)?(?:sqlx|tokio_postgres|postgres|diesel|deadpool_postgres|bb8_postgres|r2d2_postgres|sea_orm|rusqlite|mysql_async)\b", None),
    ("cargo/driver-dependency", &[Toml], I, "Rust database crate", None, r#"(?m)^\s*(?:sqlx|tokio-postgres|postgres|diesel|deadpool-postgres|bb8-postgres|r2d2_postgres|sea-orm|rusqlite|mysql_async)\s*=|^\s*\[(?:\w+-)?dependencies\.(?:sqlx|tokio-postgres|postgres|diesel|deadpool-postgres|bb8-postgres|r2d2_postgres|sea-orm|rusqlite)\]"#, None),
    ("rust/sqlx-max-connections", RS, S, "sqlx", Some("max_connections"), r"\.max_connections\s*\(", Some(SQLX_GUARD)),
    ("rust/sqlx-min-connections", RS, S, "sqlx", Some("min_connections"), r"\.min_connections\s*\(", Some(SQLX_GUARD)),
    ("rust/sqlx-acquire-timeout", RS, S, "sqlx", Some("acquire_timeout"), r"\.acquire_timeout\s*\(", Some(SQLX_GUARD)),
    ("rust/pool-idle-timeout", RS, S, "sqlx/bb8/r2d2", Some("idle_timeout"), r"\.idle_timeout\s*\(", Some(r"sqlx|PoolOptions|\bbb8\b|\br2d2\b")),
    ("rust/pool-max-lifetime", RS, S, "sqlx/bb8/r2d2", Some("max_lifetime"), r"\.max_lifetime\s*\(", Some(r"sqlx|PoolOptions|\bbb8\b|\br2d2\b")),
    ("rust/pool-max-size", RS, S, "bb8/r2d2/deadpool", Some("max_size"), r"\.max_size\s*\(|\bmax_size\s*:|\bPoolConfig::new\s*\(", Some(RUST_POOL_GUARD)),
    ("rust/pool-min-idle", RS, S, "bb8/r2d2", Some("min_idle"), r"\.min_idle\s*\(", Some(RUST_POOL_GUARD)),
    // ---- Python ------------------------------------------------------------------------------
    ("python/psycopg-connect", PY, C, "psycopg", None, r"\bpsycopg2?\.(?:connect|AsyncConnection\.connect|Connection\.connect)\s*\(", None),
    ("python/psycopg-pool", PY, C, "psycopg pool", None, r"\b(?:Async)?ConnectionPool\s*\(|\b(?:SimpleConnectionPool|ThreadedConnectionPool)\s*\(", Some(r"\bpsycopg")),
    ("python/asyncpg-connect", PY, C, "asyncpg", None, r"\basyncpg\.(?:connect|create_pool)\s*\(", None),
    ("python/sqlalchemy-engine", PY, C, "SQLAlchemy", None, r"\bcreate_(?:async_)?engine\s*\(", Some(SQLALCHEMY_GUARD)),
    ("python/driver-import", PY, I, "Python database library", None, r"(?m)^\s*(?:import|from)\s+(?:psycopg2|psycopg_pool|psycopg|asyncpg|sqlalchemy|sqlmodel|pymysql|aiopg)\b", None),
    ("python/requirement", &[Requirements, Toml], I, "Python database library", None, r#"(?mi)^\s*"?(?:psycopg2(?:-binary)?|psycopg(?:\[[^\]]*\])?|psycopg-pool|asyncpg|sqlalchemy|sqlmodel|aiopg)\s*(?:[<>=~!;\[",]|$)"#, None),
    ("python/sqlalchemy-pool-size", PY, S, "SQLAlchemy", Some("pool_size"), r"\bpool_size\s*=", Some(SQLALCHEMY_GUARD)),
    ("python/sqlalchemy-max-overflow", PY, S, "SQLAlchemy", Some("max_overflow"), r"\bmax_overflow\s*=", Some(SQLALCHEMY_GUARD)),
    ("python/sqlalchemy-pool-recycle", PY, S, "SQLAlchemy", Some("pool_recycle"), r"\bpool_recycle\s*=", Some(SQLALCHEMY_GUARD)),
    ("python/sqlalchemy-pool-timeout", PY, S, "SQLAlchemy", Some("pool_timeout"), r"\bpool_timeout\s*=", Some(SQLALCHEMY_GUARD)),
    ("python/pool-min-size", PY, S, "asyncpg/psycopg_pool", Some("min_size"), r"\bmin_size\s*=", Some(PY_POOL_GUARD)),
    ("python/pool-max-size", PY, S, "asyncpg/psycopg_pool", Some("max_size"), r"\bmax_size\s*=", Some(PY_POOL_GUARD)),
    // ---- Java --------------------------------------------------------------------------------
    ("java/jdbc-get-connection", JAVA, C, "JDBC", None, r"\bDriverManager\.getConnection\s*\(", None),
    ("java/hikari-datasource", JAVA, C, "HikariCP", None, r"\bnew\s+Hikari(?:DataSource|Config)\s*\(", None),
    ("java/driver-import", JAVA, I, "Java database library", None, r"(?m)^\s*import\s+(?:static\s+)?(?:java\.sql|javax\.sql|com\.zaxxer\.hikari|org\.postgresql)\b", None),
    ("maven/driver-dependency", &[Xml, Gradle], I, "Java database library", None, r"<artifactId>\s*(?:postgresql|HikariCP|mysql-connector-j(?:ava)?)\s*</artifactId>|['\x22](?:org\.postgresql:postgresql|com\.zaxxer:HikariCP)", None),
    ("java/hikari-maximum-pool-size", JAVA, S, "HikariCP", Some("maximumPoolSize"), r"\.setMaximumPoolSize\s*\(", Some(HIKARI_GUARD)),
    ("java/hikari-minimum-idle", JAVA, S, "HikariCP", Some("minimumIdle"), r"\.setMinimumIdle\s*\(", Some(HIKARI_GUARD)),
    ("java/hikari-max-lifetime", JAVA, S, "HikariCP", Some("maxLifetime"), r"\.setMaxLifetime\s*\(", Some(HIKARI_GUARD)),
    ("java/hikari-connection-timeout", JAVA, S, "HikariCP", Some("connectionTimeout"), r"\.setConnectionTimeout\s*\(", Some(HIKARI_GUARD)),
    ("java/hikari-idle-timeout", JAVA, S, "HikariCP", Some("idleTimeout"), r"\.setIdleTimeout\s*\(", Some(HIKARI_GUARD)),
    // ---- Node --------------------------------------------------------------------------------
    ("node/pg-pool", JS, C, "node-postgres", None, r"\bnew\s+(?:pg\.)?(?:Pool|Client)\s*\(", Some(PG_GUARD)),
    ("node/knex", JS, C, "knex", None, r"\b[kK]nex\s*\(\s*\{", Some(r#"['"]knex['"]"#)),
    ("node/sequelize", JS, C, "Sequelize", None, r"\bnew\s+Sequelize\s*\(", None),
    ("node/driver-import", JS, I, "Node database library", None, r#"require\(\s*['"](?:pg|pg-pool|knex|sequelize|postgres|mysql2)['"]\s*\)|\bfrom\s+['"](?:pg|pg-pool|knex|sequelize|postgres|mysql2)['"]"#, None),
    ("npm/driver-dependency", &[Json], I, "Node database library", None, r#""(?:pg|pg-pool|knex|sequelize|postgres|mysql2)"\s*:"#, None),
    ("node/pool-max", JS, S, "node-postgres/knex/Sequelize", Some("max"), r"\bmax\s*:", Some(NODE_POOL_GUARD)),
    ("node/pool-min", JS, S, "node-postgres/knex/Sequelize", Some("min"), r"\bmin\s*:", Some(NODE_POOL_GUARD)),
    ("node/pool-idle-timeout", JS, S, "node-postgres", Some("idleTimeoutMillis"), r"\bidleTimeoutMillis\s*:", Some(NODE_POOL_GUARD)),
    ("node/pool-connection-timeout", JS, S, "node-postgres", Some("connectionTimeoutMillis"), r"\bconnectionTimeoutMillis\s*:", Some(NODE_POOL_GUARD)),
];

/// Every detector, compiled once.
pub static DETECTORS: LazyLock<Vec<Detector>> = LazyLock::new(|| {
    ROWS.iter()
        .map(
            |&(id, languages, kind, technology, setting, pattern, guard)| Detector {
                id,
                languages,
                kind,
                technology,
                setting,
                pattern: Regex::new(pattern).unwrap_or_else(|e| panic!("detector {id}: {e}")),
                guard: guard
                    .map(|g| Regex::new(g).unwrap_or_else(|e| panic!("guard of {id}: {e}"))),
            },
        )
        .collect()
});

impl Detector {
    /// True for detectors that match a parameter inside a connection string (`dsn/...`): their
    /// value ends at the next `&`, quote, space or bracket rather than at the end of an
    /// expression.
    pub fn matches_dsn_parameter(&self) -> bool {
        self.id.starts_with("dsn/")
    }
}

/// The detectors that run on files of `lang`. Prose runs every source-code detector, because
/// documentation quotes code from every language.
pub fn for_language(lang: Language) -> impl Iterator<Item = &'static Detector> {
    DETECTORS.iter().filter(move |d| {
        if lang == Language::Docs {
            d.languages.iter().any(|l| l.is_source())
        } else {
            d.languages.contains(&lang)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(lang: Language, text: &str) -> Vec<&'static str> {
        let mut out: Vec<_> = for_language(lang)
            .filter(|d| d.guard.as_ref().is_none_or(|g| g.is_match(text)))
            .filter(|d| d.pattern.is_match(text))
            .map(|d| d.id)
            .collect();
        out.sort_unstable();
        out
    }

    #[test]
    fn every_detector_compiles_and_ids_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for d in DETECTORS.iter() {
            assert!(seen.insert(d.id), "duplicate id {}", d.id);
            assert_eq!(
                d.setting.is_some(),
                d.kind == FindingKind::PoolSetting,
                "{}",
                d.id
            );
        }
    }

    #[test]
    fn go_connections_imports_and_settings_are_recognised() {
        let text = "import (\n\t\"database/sql\"\n\t_ \"github.com/jackc/pgx/v5/stdlib\"\n)\ndb, _ := sql.Open(\"pgx\", dsn)\npool, _ := pgxpool.NewWithConfig(ctx, c)\nc.MaxConns = 10\ndb.SetMaxOpenConns(25)\n";
        assert_eq!(
            ids(Language::Go, text),
            [
                "go/driver-import",
                "go/pgxpool-max-conns",
                "go/pgxpool-new",
                "go/set-max-open-conns",
                "go/sql-open"
            ]
        );
    }

    #[test]
    fn rust_sqlx_pool_and_settings_are_recognised() {
        let text = "use sqlx::postgres::PgPoolOptions;\nlet p = PgPoolOptions::new().max_connections(5).connect(&url).await?;\n";
        assert_eq!(
            ids(Language::Rust, text),
            [
                "rust/driver-use",
                "rust/sqlx-max-connections",
                "rust/sqlx-pool-options"
            ]
        );
    }

    #[test]
    fn node_pool_needs_the_pg_import() {
        assert!(ids(Language::JavaScript, "const p = new Pool({ max: 10 })").is_empty());
        assert_eq!(
            ids(
                Language::JavaScript,
                "const { Pool } = require('pg')\nconst p = new Pool({ max: 10 })"
            ),
            ["node/driver-import", "node/pg-pool", "node/pool-max"]
        );
    }

    #[test]
    fn python_and_java_pools_are_recognised() {
        assert_eq!(
            ids(
                Language::Python,
                "import asyncpg\npool = await asyncpg.create_pool(dsn, max_size=10)\n"
            ),
            [
                "python/asyncpg-connect",
                "python/driver-import",
                "python/pool-max-size"
            ]
        );
        assert_eq!(
            ids(Language::Java, "import com.zaxxer.hikari.HikariConfig;\nHikariConfig c = new HikariConfig();\nc.setMaximumPoolSize(10);\n"),
            ["java/driver-import", "java/hikari-datasource", "java/hikari-maximum-pool-size"]
        );
    }

    #[test]
    fn the_remaining_libraries_are_recognised() {
        let cases: [(Language, &str, &[&str]); 7] = [
            (Language::Go, "db, err := gorm.Open(postgres.Open(dsn), &gorm.Config{})", &["go/gorm-open"]),
            (Language::Go, "db := sqlx.MustConnect(\"postgres\", dsn)", &["go/sqlx-open"]),
            (Language::Rust, "let (c, conn) = tokio_postgres::connect(&url, NoTls).await?;", &["rust/tokio-postgres-connect"]),
            (Language::Rust, "let c = PgConnection::establish(&url)?;", &["rust/diesel-establish"]),
            (Language::Python, "from sqlalchemy import create_engine\ne = create_engine(url, pool_size=5, max_overflow=10)", &["python/driver-import", "python/sqlalchemy-engine", "python/sqlalchemy-max-overflow", "python/sqlalchemy-pool-size"]),
            (Language::JavaScript, "const knex = require('knex')\nconst db = knex({ client: 'pg', pool: { min: 2, max: 10 } })", &["node/driver-import", "node/knex", "node/pool-max", "node/pool-min"]),
            (Language::JavaScript, "import { Sequelize } from 'sequelize'\nconst s = new Sequelize(url)", &["node/driver-import", "node/sequelize"]),
        ];
        for (lang, text, want) in cases {
            assert_eq!(ids(lang, text), want, "{text}");
        }
    }

    #[test]
    fn manifests_name_driver_dependencies() {
        assert_eq!(
            ids(
                Language::Toml,
                "[dependencies]\nsqlx = { version = \"0.8\" }\n"
            ),
            ["cargo/driver-dependency"]
        );
        assert_eq!(
            ids(Language::Requirements, "psycopg2-binary==2.9\n"),
            ["python/requirement"]
        );
        assert_eq!(
            ids(
                Language::GoMod,
                "require (\n\tgithub.com/lib/pq v1.10.9\n)\n"
            ),
            ["go.mod/driver-require"]
        );
        assert_eq!(
            ids(Language::Json, "{\"dependencies\": {\"pg\": \"^8\"}}"),
            ["npm/driver-dependency"]
        );
    }
}
