//! The `pooltriage` command: parses arguments, runs [`pooltriage::triage`], writes the report
//! and exits 0 (clean), 1 (violations) or 2 (usage or configuration error).

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use pooltriage::{Format, Options, EXIT_ERROR};

/// Finds database connections and hard-coded connection-pool settings, per service.
///
/// Exit codes: 0 = no violations, 1 = violations, 2 = usage or configuration error.
#[derive(Debug, Parser)]
#[command(name = "pooltriage", version, about, long_about)]
struct Cli {
    /// Repository root to scan.
    #[arg(default_value = ".")]
    path: PathBuf,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t = Format::Markdown)]
    format: Format,
    /// Write the report to this file instead of stdout.
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// Configuration file (default: <PATH>/.pooltriage.yaml if present).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// A service allowed to open database connections; repeatable; replaces `owners` from the
    /// configuration file.
    #[arg(long = "owner", value_name = "SERVICE")]
    owners: Vec<String>,
    /// Worker threads (0 = one per CPU).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Never show the progress spinner (it only appears when stderr is a terminal anyway).
    #[arg(long)]
    no_progress: bool,
    /// Print a commented example .pooltriage.yaml and exit.
    #[arg(long)]
    print_example_config: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("pooltriage: error: {e:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<u8> {
    if cli.print_example_config {
        print!("{}", pooltriage::config::EXAMPLE_CONFIG);
        return Ok(pooltriage::EXIT_CLEAN);
    }
    let opts = Options {
        root: cli.path,
        config: cli.config,
        owners: cli.owners,
        threads: cli.threads,
        progress: !cli.no_progress && std::io::stderr().is_terminal(),
    };
    let report = pooltriage::triage(&opts)?;
    let rendered = pooltriage::render(&report, cli.format);
    match &cli.output {
        Some(path) => {
            std::fs::write(path, &rendered)
                .with_context(|| format!("writing {}", path.display()))?;
            let active = report.active_violations().count();
            eprintln!(
                "pooltriage: {} ({} violation{}); report written to {}",
                if report.passed { "PASS" } else { "FAIL" },
                active,
                if active == 1 { "" } else { "s" },
                path.display()
            );
        }
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(rendered.as_bytes())
                .context("writing the report to stdout")?;
            out.flush().context("writing the report to stdout")?;
        }
    }
    Ok(report.exit_code())
}
