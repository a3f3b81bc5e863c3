//! `datastorage check`: validate the config, connect, say whether the migrations are applied,
//! print the outage buffer, the effective pool settings and (PostgreSQL) the connection budget.

use std::io::Write;
use std::process::ExitCode;

use datastorage::config::{self, BufferBackend, Driver, Pooler, Settings};
use datastorage::db::{capacity, postgres, Store};

/// Runs the check, printing to `out`; exits 1 when the budget does not fit.
pub async fn check<W: Write>(settings: &Settings, out: &mut W) -> anyhow::Result<ExitCode> {
    let db = &settings.database;
    // The files `serve` reads at start and could refuse: the event_data schemas.
    datastorage::domain::rules::EventRules::new(&settings.validation)?;
    writeln!(out, "config: valid")?;
    if let Some(path) = &settings.validation.event_data_schema {
        writeln!(
            out,
            "validation.eventDataSchema: {} compiles",
            path.display()
        )?;
    }
    let driver = db.effective_driver();
    match driver {
        Driver::Postgres if db.pooler != Pooler::None => {
            let (host, port) = db.direct_host_port();
            writeln!(
                out,
                "database: postgres through {} at {}:{}/{} as {}; migrations and checks direct at {host}:{port} (database.migrationHost)",
                db.pooler.as_str(),
                db.host.as_deref().unwrap_or_default(),
                db.port,
                db.name,
                db.user
            )?;
        }
        Driver::Postgres => writeln!(
            out,
            "database: postgres {}:{}/{} as {}",
            db.host.as_deref().unwrap_or_default(),
            db.port,
            db.name,
            db.user
        )?,
        Driver::Sqlite => writeln!(out, "database: sqlite {}", db.sqlite_path.display())?,
    }
    if driver == Driver::Sqlite && !db.sqlite_path.exists() {
        writeln!(
            out,
            "connection: the SQLite file does not exist yet; `serve` or `migrate` creates it"
        )?;
    } else {
        report_migrations(db, out).await?;
    }
    if driver == Driver::Postgres && db.pooler != Pooler::None {
        postgres::probe_pooled(db).await?;
        writeln!(
            out,
            "pooler connection: ok (a transaction with the session settings as SET LOCAL)"
        )?;
    }
    report_buffer(settings, out)?;
    writeln!(out, "effective pool settings")?;
    let rows = [
        ("maxOpenConns", db.max_open_conns.to_string()),
        ("maxIdleConns", db.max_idle_conns.to_string()),
        ("minIdleConns", db.min_idle_conns.to_string()),
        (
            "connMaxLifetime",
            humantime::format_duration(db.conn_max_lifetime).to_string(),
        ),
        (
            "connMaxIdleTime",
            humantime::format_duration(db.conn_max_idle_time).to_string(),
        ),
        (
            "acquireTimeout",
            humantime::format_duration(db.acquire_timeout).to_string(),
        ),
        (
            "connectTimeout",
            humantime::format_duration(db.connect_timeout).to_string(),
        ),
        ("statementTimeout", pg_only(driver, db.statement_timeout)),
        (
            "lockTimeout",
            humantime::format_duration(db.lock_timeout).to_string(),
        ),
        (
            "idleInTransactionTimeout",
            pg_only(driver, db.idle_in_transaction_timeout),
        ),
    ];
    for (key, value) in rows {
        writeln!(out, "  {key:<26}{value}")?;
    }
    if driver == Driver::Sqlite {
        writeln!(out, "connection budget: does not apply to SQLite")?;
        return Ok(ExitCode::SUCCESS);
    }
    let cap = capacity::check(db).await?;
    writeln!(out, "{}", cap.table())?;
    let mut fits = !cap.violated();
    if !fits {
        writeln!(out, "{cap}")?;
    }
    if let (Some(rdb), Some(r)) = (db.replica(), &db.read_replica) {
        writeln!(
            out,
            "read replica: postgres {}:{}/{} as {}; reads go to the primary while it is more than {} behind (sampled every {})",
            rdb.host.as_deref().unwrap_or_default(),
            rdb.port,
            rdb.name,
            rdb.user,
            humantime::format_duration(r.max_replica_lag),
            humantime::format_duration(r.lag_check_interval)
        )?;
        writeln!(out, "effective replica pool settings")?;
        for (key, value) in [
            ("maxOpenConns", rdb.max_open_conns.to_string()),
            ("maxIdleConns", rdb.max_idle_conns.to_string()),
            ("minIdleConns", rdb.min_idle_conns.to_string()),
            (
                "connMaxLifetime",
                humantime::format_duration(rdb.conn_max_lifetime).to_string(),
            ),
            (
                "connMaxIdleTime",
                humantime::format_duration(rdb.conn_max_idle_time).to_string(),
            ),
            (
                "acquireTimeout",
                humantime::format_duration(rdb.acquire_timeout).to_string(),
            ),
            (
                "connectTimeout",
                humantime::format_duration(rdb.connect_timeout).to_string(),
            ),
        ] {
            writeln!(out, "  {key:<26}{value}")?;
        }
        match capacity::check(&rdb).await {
            Ok(rcap) => {
                writeln!(out, "read replica {}", rcap.table())?;
                if rcap.violated() {
                    writeln!(out, "read replica {rcap}")?;
                    fits = false;
                }
            }
            Err(e) => writeln!(
                out,
                "read replica: cannot be checked ({e:#}); reads would go to the primary"
            )?,
        }
    }
    Ok(if fits {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Connects and says whether every migration is applied; only a failure to connect is an error.
async fn report_migrations<W: Write>(
    db: &config::DatabaseSettings,
    out: &mut W,
) -> anyhow::Result<()> {
    match Store::check_migrations(db).await {
        Ok(()) => writeln!(out, "connection: ok, migrations applied")?,
        Err(e) if format!("{e:#}").contains("not applied") => {
            writeln!(out, "connection: ok, {e:#}")?
        }
        Err(e) => return Err(e),
    }
    Ok(())
}

/// Where writes go while the database is unreachable, and (disk) what waits there now. Reads
/// only: the directory is not created, Redis is not contacted.
fn report_buffer<W: Write>(settings: &Settings, out: &mut W) -> anyhow::Result<()> {
    let b = &settings.buffer;
    if !b.enabled {
        writeln!(out, "outage buffer: off (buffer.enabled: false): writes are refused with 503 while the database is unreachable")?;
        return Ok(());
    }
    match b.backend {
        BufferBackend::Disk => {
            let waiting = std::fs::read_dir(&b.dir).map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .filter(|e| e.path().extension().is_some_and(|x| x == "seg"))
                    .filter_map(|e| e.metadata().ok().map(|m| m.len()))
                    .fold((0, 0), |(n, bytes), len| (n + 1, bytes + len))
            });
            let state = match waiting {
                Ok((0, _)) => "empty".to_owned(),
                Ok((files, bytes)) => {
                    format!("{files} segment files ({bytes} bytes) wait for replay")
                }
                Err(_) => "not created yet (serve creates it)".to_owned(),
            };
            writeln!(
                out,
                "outage buffer: disk in {}, at most {} bytes (buffer.maxBytes); {state}",
                b.dir.display(),
                b.max_bytes
            )?;
        }
        BufferBackend::Redis => {
            let redis = settings.redis.clone().unwrap_or_default();
            writeln!(
                out,
                "outage buffer: redis stream {} on {}, at most {} entries (redis.dlqMaxLen); not contacted by check",
                b.redis_stream,
                redis.addr.as_deref().unwrap_or_default(),
                redis.dlq_max_len.unwrap_or(config::DEFAULT_REDIS_MAX_ENTRIES)
            )?;
        }
    }
    Ok(())
}

fn pg_only(driver: Driver, d: std::time::Duration) -> String {
    match driver {
        Driver::Postgres => humantime::format_duration(d).to_string(),
        Driver::Sqlite => format!(
            "{} (PostgreSQL only; not applied)",
            humantime::format_duration(d)
        ),
    }
}
