//! `pooltriage` finds which services of a repository open database connections and which
//! connection-pool values are hard-coded, and enforces a policy on both for CI.
//!
//! The pipeline is: load `.pooltriage.yaml` ([`config`]) → walk and scan the tree in parallel
//! ([`scan`], using [`rules`], [`lang`], [`value`], [`deploy`], [`k8s`] and [`category`]) →
//! detect services and their file sets ([`services`]) → attribute Kubernetes workloads to them
//! ([`workloads`]) → apply the policy ([`policy`], [`capacity`]; results are [`violation`]s) →
//! build a [`report::Report`] → render it ([`output`]). Names are compared by [`names`].
//! [`triage`] runs the whole pipeline; the binary only parses arguments, writes the rendered
//! report and maps the result to an exit code.

pub mod capacity;
pub mod category;
pub mod config;
pub mod deploy;
pub mod finding;
pub mod k8s;
pub mod lang;
pub mod names;
pub mod output;
pub mod policy;
pub mod report;
pub mod rules;
pub mod scan;
pub mod services;
pub mod value;
pub mod violation;
pub mod workloads;

use std::path::{Path, PathBuf};

pub use config::{Config, ConfigError};
pub use output::{render, Format};
pub use report::{Report, EXIT_CLEAN, EXIT_ERROR, EXIT_VIOLATIONS};

/// What to scan and how.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The repository root.
    pub root: PathBuf,
    /// Configuration file; defaults to `<root>/.pooltriage.yaml` when that exists.
    pub config: Option<PathBuf>,
    /// Owners given on the command line; they replace the configured owners.
    pub owners: Vec<String>,
    /// Worker threads (0 = number of CPUs).
    pub threads: usize,
    /// Show a progress spinner on stderr.
    pub progress: bool,
}

/// Errors that stop a run before a report exists (exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum TriageError {
    /// The root does not exist or is not a directory.
    #[error("{0} is not a directory")]
    RootNotFound(PathBuf),
    /// The configuration file is unreadable or invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The walk could not be set up (e.g. an invalid exclusion pattern).
    #[error("cannot walk {root}: {message}")]
    Walk {
        /// The root.
        root: PathBuf,
        /// What went wrong.
        message: String,
    },
}

/// Runs the whole triage and returns the report.
pub fn triage(opts: &Options) -> Result<Report, TriageError> {
    let root = opts.root.as_path();
    if !root.is_dir() {
        return Err(TriageError::RootNotFound(root.to_path_buf()));
    }
    let cfg = load_config(root, opts)?;
    let walk = scan::WalkOptions {
        threads: opts.threads,
        exclude: cfg.exclude.clone(),
        progress: opts.progress,
    };
    let (mut files, warnings) =
        scan::scan_tree(root, &walk, &cfg.client_patterns).map_err(|message| {
            TriageError::Walk {
                root: root.to_path_buf(),
                message,
            }
        })?;
    let root_name = root_name(root);
    let services = services::detect(&files, &cfg, &root_name);
    workloads::attribute_findings(&mut files, &services, &cfg.owners);
    Ok(report::build(
        &root.display().to_string(),
        &files,
        &services,
        &cfg,
        warnings,
    ))
}

fn load_config(root: &Path, opts: &Options) -> Result<config::Resolved, TriageError> {
    let path = opts.config.clone().or_else(|| {
        let p = root.join(config::CONFIG_FILE_NAME);
        p.is_file().then_some(p)
    });
    let mut cfg = match &path {
        Some(p) => Config::read(p)?,
        None => Config::default(),
    };
    if !opts.owners.is_empty() {
        cfg.owners = opts.owners.clone();
    }
    let shown = path.unwrap_or_else(|| PathBuf::from(config::CONFIG_FILE_NAME));
    Ok(cfg.resolve().map_err(|message| ConfigError::Invalid {
        path: shown,
        message,
    })?)
}

fn root_name(root: &Path) -> String {
    std::fs::canonicalize(root)
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "root".to_string())
}
