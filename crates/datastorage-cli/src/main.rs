//! The `datastorage` binary: parses the command line, sets up logging, loads the settings and
//! calls into the server library (`serve`, `migrate`, `check`, `config`), or into the client
//! library (`events`), whose commands never load the server's settings; `completions` prints a
//! shell completion script generated from this command line.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::error::ErrorKind;
use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory as _, FromArgMatches as _, Parser, Subcommand};
use datastorage::config::{self, Settings};
use datastorage::db::Store;
use datastorage::{startup, telemetry};
use datastorage_cli::output::Stdout;
use datastorage_cli::{check, events, export, keys, token};

/// mimalloc instead of the system allocator: the request path allocates many small, short-lived
/// values (JSON trees, strings), and glibc malloc/free took about a quarter of the server's CPU
/// in profiles under the benchmark harness.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// DataStorage: the audit-event store that is the only holder of database connections.
///
/// With no config file and no DATASTORAGE_* variables, it stores into SQLite at
/// ./data/datastorage.db and listens on 127.0.0.1:8080 (API, unauthenticated because it is
/// loopback) and 0.0.0.0:9090 (metrics). To serve the network, set server.host and auth.mode.
#[derive(Debug, Parser)]
#[command(name = "datastorage", version, about, long_about)]
struct Cli {
    /// `--config FILE` written before the command (`datastorage --config FILE serve`): accepted
    /// for the commands that read the config, and shown only in their help.
    #[arg(short, long, value_name = "FILE", hide = true)]
    config: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

/// `--config` of the commands that read the server's config.
#[derive(Debug, Args)]
struct ConfigFile {
    /// YAML config file (see `datastorage config print-default`). Every key can be overridden
    /// by DATASTORAGE_<SECTION>__<KEY> environment variables.
    #[arg(short, long, env = config::ENV_CONFIG_FILE, value_name = "FILE")]
    config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the HTTP service until SIGTERM or SIGINT.
    Serve(ConfigFile),
    /// Apply pending database migrations, then exit.
    Migrate(ConfigFile),
    /// Validate the config, connect, and print the effective pool settings and (PostgreSQL)
    /// the connection budget. Exits 1 when the budget does not fit.
    Check(CheckArgs),
    /// Config helpers.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Client commands against a running server (--url or DATASTORAGE_URL): post, query, get,
    /// tail and verify audit events. They never read the server's config.
    Events(Box<events::EventsArgs>),
    /// Bearer tokens for `auth.mode: tokens`. Reads no config.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Ed25519 keys that sign exports and checkpoints (`signing.keyFile`). Reads no config.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Signed exports: verify one offline, with no server. Reads no config.
    #[command(subcommand)]
    Export(ExportCommand),
    /// Print a shell completion script for this binary. Reads no config.
    ///
    /// Install it where your shell looks, e.g. bash:
    /// `datastorage completions bash > ~/.local/share/bash-completion/completions/datastorage`;
    /// zsh: `datastorage completions zsh > ~/.zfunc/_datastorage` (with ~/.zfunc in $fpath);
    /// fish: `datastorage completions fish > ~/.config/fish/completions/datastorage.fish`.
    Completions {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// `check`.
#[derive(Debug, Args)]
struct CheckArgs {
    #[command(flatten)]
    config: ConfigFile,
    /// Peak replicas to check the budget for, at least 1 (overrides
    /// database.capacity.replicas).
    #[arg(
        long,
        value_name = "N",
        value_parser = clap::value_parser!(u32).range(1..),
        allow_negative_numbers = true
    )]
    replicas: Option<u32>,
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Make a new random token: prints the token once, and the entry (its SHA-256, name and
    /// scopes) to add to the tokens file.
    Create(token::CreateArgs),
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Write a new key pair: signing.key (private, for signing.keyFile) and signing.pub (for
    /// verifiers).
    Generate(keys::GenerateArgs),
}

#[derive(Debug, Subcommand)]
enum ExportCommand {
    /// Verify a signed export (NDJSON, JSON or CSV) against the signer's public key: exits 0
    /// when intact, 1 when anything was edited, removed, added or reordered (each named), 2 on
    /// a usage or read error.
    Verify(export::VerifyArgs),
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Print a commented config file with every key at its default. Reads no file and no
    /// environment.
    PrintDefault,
    /// Print the effective config (file + environment), secrets redacted.
    Print(ConfigFile),
}

impl Command {
    /// The `--config` of a command that reads the server's config; `None` for one that reads
    /// none.
    fn config_file(&self) -> Option<&ConfigFile> {
        match self {
            Command::Serve(c) | Command::Migrate(c) | Command::Config(ConfigCommand::Print(c)) => {
                Some(c)
            }
            Command::Check(check) => Some(&check.config),
            Command::Config(ConfigCommand::PrintDefault)
            | Command::Events(_)
            | Command::Token(_)
            | Command::Keys(_)
            | Command::Export(_)
            | Command::Completions { .. } => None,
        }
    }
}

/// The config file to load: `--config` before the command, else after it, else
/// DATASTORAGE_CONFIG. `--config` before a command that reads no config is a usage error rather
/// than silently ignored, and so is `--config` on both sides.
fn config_file(cli: &Cli, matches: &ArgMatches) -> Result<Option<PathBuf>, clap::Error> {
    let usage = |message: &str| Cli::command().error(ErrorKind::ArgumentConflict, message);
    let Some(after) = cli.command.config_file() else {
        return match cli.config {
            Some(_) => Err(usage(
                "--config applies only to serve, migrate, check and config print; this command \
                 reads no config",
            )),
            None => Ok(None),
        };
    };
    let Some(before) = &cli.config else {
        return Ok(after.config.clone());
    };
    let mut leaf = matches;
    while let Some((_, sub)) = leaf.subcommand() {
        leaf = sub;
    }
    if leaf.value_source("config") == Some(ValueSource::CommandLine) {
        return Err(usage("--config is given both before and after the command"));
    }
    // Before the command, on the command line, it outranks DATASTORAGE_CONFIG.
    Ok(Some(before.clone()))
}

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let file = config_file(&cli, &matches).unwrap_or_else(|e| e.exit());
    // A client of a server, not the server: dispatched before any server setting is loaded.
    if let Command::Events(args) = cli.command {
        return events::main(*args);
    }
    let mut out = Stdout::new();
    if let Command::Token(TokenCommand::Create(args)) = &cli.command {
        return match token::create(args, &mut out).and_then(|()| Ok(out.flush()?)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(_) if out.closed() => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(2)
            }
        };
    }
    if let Command::Keys(KeysCommand::Generate(args)) = &cli.command {
        return match keys::generate(args, &mut out).and_then(|()| Ok(out.flush()?)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(_) if out.closed() => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(2)
            }
        };
    }
    if let Command::Export(ExportCommand::Verify(args)) = &cli.command {
        return match export::verify(args, &mut out).and_then(|ok| Ok((ok, out.flush()?))) {
            Ok((true, ())) => ExitCode::SUCCESS,
            Ok((false, ())) => ExitCode::FAILURE,
            Err(_) if out.closed() => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(2)
            }
        };
    }
    // Commands that read no config. A closed stdout (`| head`) is a quiet end; nothing else
    // can fail here.
    let local = match cli.command {
        Command::Config(ConfigCommand::PrintDefault) => {
            Some(config::default_config_yaml().as_bytes().to_vec())
        }
        Command::Completions { shell } => {
            // Into a buffer: clap_complete panics when its writer fails.
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "datastorage", &mut script);
            Some(script)
        }
        _ => None,
    };
    if let Some(text) = local {
        let _ = out.write_all(&text).and_then(|()| out.flush());
        return ExitCode::SUCCESS;
    }
    // Before logging is set up (its format is part of the config): one plain line, exit 2.
    let loaded = match Settings::load(file.as_deref(), std::env::vars()) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    // From here on, errors go through the logger, in its configured format.
    telemetry::init(&loaded.settings.logging);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return fatal(&anyhow::Error::new(e).context("cannot start the async runtime")),
    };
    match runtime.block_on(execute(cli.command, loaded.settings, &mut out)) {
        Ok(code) => code,
        // The reader of stdout went away (`| head`): a quiet, successful end.
        Err(_) if out.closed() => ExitCode::SUCCESS,
        Err(e) => fatal(&e),
    }
}

/// Reports a fatal error once, through the logger (JSON or text, as configured), and exits 1.
/// Only when the configured level hides errors (`logging.level: off`) is it a plain line, so it
/// is never lost.
fn fatal(e: &anyhow::Error) -> ExitCode {
    if tracing::event_enabled!(tracing::Level::ERROR) {
        tracing::error!(error = format!("{e:#}"), "datastorage failed");
    } else {
        eprintln!("error: {e:#}");
    }
    ExitCode::FAILURE
}

async fn execute(
    command: Command,
    mut settings: Settings,
    out: &mut Stdout,
) -> anyhow::Result<ExitCode> {
    let code = match command {
        Command::Serve(_) => {
            let listeners = startup::bind(&settings).await?;
            startup::run(settings, listeners, startup::shutdown_signal()).await?;
            ExitCode::SUCCESS
        }
        Command::Migrate(_) => {
            let applied = Store::migrate(&settings.database).await?;
            writeln!(out, "migrations up to date ({applied} applied now)")?;
            ExitCode::SUCCESS
        }
        Command::Check(CheckArgs { replicas, .. }) => {
            if let Some(n) = replicas {
                settings.database.capacity.replicas = n;
            }
            check::check(&settings, out).await?
        }
        Command::Config(ConfigCommand::Print(_)) => {
            let yaml = serde_norway::to_string(&settings).context("cannot print the config")?;
            out.write_all(yaml.as_bytes())?;
            ExitCode::SUCCESS
        }
        Command::Config(ConfigCommand::PrintDefault)
        | Command::Events(_)
        | Command::Token(_)
        | Command::Keys(_)
        | Command::Export(_)
        | Command::Completions { .. } => unreachable!("handled before loading"),
    };
    out.flush()?;
    Ok(code)
}
