//! The `datastorage` binary: parses the command line, sets up logging, loads the settings and
//! calls into the library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use datastorage::config::{self, Driver, Settings};
use datastorage::db::{capacity, Store};
use datastorage::{startup, telemetry};

/// mimalloc instead of the system allocator: the request path allocates many small, short-lived
/// values (JSON trees, strings), and glibc malloc/free took about a quarter of the server's CPU
/// in profiles under the benchmark harness.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// DataStorage: the audit-event store that is the only holder of database connections.
///
/// With no config file and no DATASTORAGE_* variables, it stores into SQLite at
/// ./data/datastorage.db and listens on 0.0.0.0:8080 (API) and 0.0.0.0:9090 (metrics).
#[derive(Debug, Parser)]
#[command(name = "datastorage", version, about, long_about)]
struct Cli {
    /// YAML config file (see `datastorage config print-default`). Every key can be overridden
    /// by DATASTORAGE_<SECTION>__<KEY> environment variables.
    #[arg(short, long, global = true, env = config::ENV_CONFIG_FILE, value_name = "FILE")]
    config: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the HTTP service until SIGTERM or SIGINT.
    Serve,
    /// Apply pending database migrations, then exit.
    Migrate,
    /// Validate the config, connect, and print the effective pool settings and (PostgreSQL)
    /// the connection budget. Exits 1 when the budget does not fit.
    Check {
        /// Peak replicas to check the budget for (overrides database.capacity.replicas).
        #[arg(long, value_name = "N")]
        replicas: Option<u32>,
    },
    /// Config helpers.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Client commands against a running server (--url or DATASTORAGE_URL): post, query, get,
    /// tail and verify audit events. They never read the server's config.
    Events(Box<datastorage_client::cli::EventsArgs>),
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Print a commented config file with every key at its default.
    PrintDefault,
    /// Print the effective config (file + environment), secrets redacted.
    Print,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A client of a server, not the server: dispatched before any server setting is loaded.
    if let Command::Events(args) = cli.command {
        return datastorage_client::cli::main(*args);
    }
    if let Command::Config(ConfigCommand::PrintDefault) = cli.command {
        print!("{}", config::default_config_yaml());
        return ExitCode::SUCCESS;
    }
    let loaded = match Settings::load(cli.config.as_deref(), std::env::vars()) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    telemetry::init(&loaded.settings.logging);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("the tokio runtime starts");
    match runtime.block_on(execute(cli.command, loaded.settings)) {
        Ok(code) => code,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "datastorage failed");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn execute(command: Command, mut settings: Settings) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve => {
            let (api, metrics) = startup::bind(&settings).await?;
            startup::run(settings, api, metrics, startup::shutdown_signal()).await?;
        }
        Command::Migrate => {
            let applied = Store::migrate(&settings.database).await?;
            println!("migrations up to date ({applied} applied now)");
        }
        Command::Check { replicas } => {
            if let Some(n) = replicas {
                anyhow::ensure!(n > 0, "--replicas must be at least 1");
                settings.database.capacity.replicas = n;
            }
            return check(&settings).await;
        }
        Command::Config(ConfigCommand::Print) => {
            print!(
                "{}",
                serde_norway::to_string(&settings).context("cannot print the config")?
            );
        }
        Command::Config(ConfigCommand::PrintDefault) | Command::Events(_) => {
            unreachable!("handled before loading")
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn check(settings: &Settings) -> anyhow::Result<ExitCode> {
    let db = &settings.database;
    println!("config: valid");
    let driver = db.effective_driver();
    match driver {
        Driver::Postgres => println!(
            "database: postgres {}:{}/{} as {}",
            db.host.as_deref().unwrap_or_default(),
            db.port,
            db.name,
            db.user
        ),
        Driver::Sqlite => println!("database: sqlite {}", db.sqlite_path.display()),
    }
    if driver == Driver::Sqlite && !db.sqlite_path.exists() {
        println!("connection: the SQLite file does not exist yet; `serve` or `migrate` creates it");
    } else {
        report_migrations(db).await?;
    }
    println!("effective pool settings");
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
        println!("  {key:<26}{value}");
    }
    if driver == Driver::Sqlite {
        println!("connection budget: does not apply to SQLite");
        return Ok(ExitCode::SUCCESS);
    }
    let cap = capacity::check(db).await?;
    println!("{}", cap.table());
    Ok(if cap.violated() {
        println!("{cap}");
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Connects and says whether every migration is applied; only a failure to connect is an error.
async fn report_migrations(db: &config::DatabaseSettings) -> anyhow::Result<()> {
    match Store::check_migrations(db).await {
        Ok(()) => println!("connection: ok, migrations applied"),
        Err(e) if format!("{e:#}").contains("not applied") => println!("connection: ok, {e:#}"),
        Err(e) => return Err(e),
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
