//! The triage report: every finding, every service with the evidence behind its verdict, and
//! the violations. One structure feeds all output formats and round-trips through JSON.
//!
//! Rules: a service's verdict is always backed by evidence, either its connections and pool
//! settings or the proof that it has none (files scanned, no driver imports, no connection
//! calls). Nothing is "assumed": a service with zero scanned files says so.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::category::Category;
use crate::config::Resolved;
use crate::finding::Finding;
use crate::names::normalize_name;
use crate::policy;
use crate::rules::FindingKind;
use crate::scan::{FileStatus, ScannedFile};
use crate::services::{DetectedBy, Service};
use crate::violation::{Severity, Violation, ViolationRule};

/// Exit code when no active violation was found.
pub const EXIT_CLEAN: u8 = 0;
/// Exit code when at least one violation is not allowlisted.
pub const EXIT_VIOLATIONS: u8 = 1;
/// Exit code for usage and configuration errors.
pub const EXIT_ERROR: u8 = 2;

/// The whole result of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// `pooltriage`.
    pub tool: String,
    /// The tool's version.
    pub version: String,
    /// The scanned root as given on the command line.
    pub root: String,
    /// Pass when no violation is active.
    pub passed: bool,
    /// Owner names in effect.
    pub owners: Vec<String>,
    /// File counts.
    pub files: FileCounts,
    /// Every service with its evidence.
    pub services: Vec<ServiceReport>,
    /// Violations, including allowlisted ones (which carry their reason).
    pub violations: Vec<Violation>,
    /// Warning-level findings of the policy (literal fallbacks of configured pool values): shown,
    /// never failing the run.
    #[serde(default)]
    pub advisories: Vec<Violation>,
    /// Every finding (all categories, including owner-client references).
    pub findings: Vec<Finding>,
    /// Production connections in files that belong to no service.
    pub unattributed_connections: Vec<Finding>,
    /// Things worth a look that do not fail the run (unused allowlist entries, unknown owners,
    /// unreadable files).
    pub warnings: Vec<String>,
}

/// How many files were seen and what happened to them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileCounts {
    /// Every file the walk visited (after .gitignore and exclusions).
    pub seen: usize,
    /// Files read and scanned.
    pub scanned: usize,
    /// Files of a type no detector applies to.
    pub unsupported: usize,
    /// Binary files skipped.
    pub binary: usize,
    /// Files over the size limit skipped.
    pub too_large: usize,
    /// Scanned files per category.
    pub scanned_by_category: BTreeMap<Category, usize>,
}

/// The verdict for one service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// An owner that opens connections in production code (allowed).
    OwnerConnects,
    /// An owner with no connection found in production code.
    OwnerWithoutConnection,
    /// Not an owner, opens connections: a violation.
    NonOwnerConnects,
    /// Not an owner, opens connections, but every one is allowlisted.
    NonOwnerConnectsAllowed,
    /// Imports a database driver in production code but opens no connection.
    DriverImportOnly,
    /// No driver imports and no connection calls in production code.
    NoDatabaseAccess,
}

impl Verdict {
    /// True for verdicts of services that open connections.
    pub fn connects(self) -> bool {
        matches!(
            self,
            Verdict::OwnerConnects | Verdict::NonOwnerConnects | Verdict::NonOwnerConnectsAllowed
        )
    }
}

/// One service and the evidence behind its verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceReport {
    /// The service's name.
    pub name: String,
    /// How it was found.
    pub detected_by: DetectedBy,
    /// Its own directories or configured patterns.
    pub roots: Vec<String>,
    /// Go packages of this repository it imports (transitively).
    pub go_packages: Vec<String>,
    /// Rust path dependencies it builds with.
    pub crate_dependencies: Vec<String>,
    /// True when it is a database owner.
    pub owner: bool,
    /// The verdict.
    pub verdict: Verdict,
    /// Files of the service that were scanned.
    pub files_scanned: usize,
    /// Of which production files.
    pub production_files_scanned: usize,
    /// Connections in production code.
    pub connections: Vec<Finding>,
    /// Driver imports in production code.
    pub driver_imports: Vec<Finding>,
    /// Pool settings in production code (and deploy YAML inside the service).
    pub pool_settings: Vec<Finding>,
    /// References to an owner's client in production code: how it reaches the owner.
    pub owner_clients: Vec<Finding>,
    /// Findings of the service outside production code (test, docs, ...), by category.
    pub other_findings: BTreeMap<Category, usize>,
}

impl Report {
    /// The process exit code for this report.
    pub fn exit_code(&self) -> u8 {
        if self.passed {
            EXIT_CLEAN
        } else {
            EXIT_VIOLATIONS
        }
    }

    /// Violations that are not allowlisted.
    pub fn active_violations(&self) -> impl Iterator<Item = &Violation> {
        self.violations.iter().filter(|v| v.is_active())
    }
}

/// Builds the report from the scanned files, the services and the configuration.
pub fn build(
    root: &str,
    files: &[ScannedFile],
    services: &[Service],
    cfg: &Resolved,
    mut warnings: Vec<String>,
) -> Report {
    let owner_keys: Vec<String> = cfg.owners.iter().map(|o| normalize_name(o)).collect();
    let is_owner = |name: &str| owner_keys.contains(&normalize_name(name));
    for o in &cfg.owners {
        if !services
            .iter()
            .any(|s| normalize_name(&s.name) == normalize_name(o))
        {
            warnings.push(format!(
                "owner `{o}` matches no service; check `owners` in .pooltriage.yaml"
            ));
        }
    }

    // file -> services containing it
    let mut file_services: HashMap<&str, Vec<usize>> = HashMap::new();
    let mut service_reports: Vec<ServiceReport> = Vec::new();
    for (si, svc) in services.iter().enumerate() {
        let mut sr = ServiceReport {
            name: svc.name.clone(),
            detected_by: svc.detected_by,
            roots: svc.roots.clone(),
            go_packages: svc.go_packages.clone(),
            crate_dependencies: svc.crate_dependencies.clone(),
            owner: is_owner(&svc.name),
            verdict: Verdict::NoDatabaseAccess,
            files_scanned: 0,
            production_files_scanned: 0,
            connections: Vec::new(),
            driver_imports: Vec::new(),
            pool_settings: Vec::new(),
            owner_clients: Vec::new(),
            other_findings: BTreeMap::new(),
        };
        for f in files.iter().filter(|f| svc.contains(f)) {
            file_services.entry(f.path.as_str()).or_default().push(si);
            if f.status != FileStatus::Scanned {
                continue;
            }
            sr.files_scanned += 1;
            if f.category == Category::Production {
                sr.production_files_scanned += 1;
            }
            for finding in f.findings.iter().filter(|x| x.workload.is_none()) {
                if finding.category != Category::Production {
                    if finding.kind != FindingKind::OwnerClient {
                        *sr.other_findings.entry(finding.category).or_default() += 1;
                    }
                    continue;
                }
                let bucket = match finding.kind {
                    FindingKind::Connection => &mut sr.connections,
                    FindingKind::DriverImport => &mut sr.driver_imports,
                    FindingKind::PoolSetting => &mut sr.pool_settings,
                    FindingKind::OwnerClient => &mut sr.owner_clients,
                };
                bucket.push(finding.clone());
            }
        }
        service_reports.push(sr);
    }

    let findings: Vec<Finding> = files
        .iter()
        .flat_map(|f| f.findings.iter().cloned())
        .collect();
    // Workload findings belong to the service they are attributed to, wherever the manifest is.
    for f in findings.iter().filter(|f| f.workload.is_some()) {
        let Some(sr) = f
            .service
            .as_ref()
            .and_then(|s| service_reports.iter_mut().find(|r| &r.name == s))
        else {
            continue;
        };
        if f.category == Category::Production {
            sr.connections.push(f.clone());
        } else {
            *sr.other_findings.entry(f.category).or_default() += 1;
        }
    }
    let mut used = vec![false; cfg.allowlist.len()];
    let mut all = policy::evaluate(
        &findings,
        |f| {
            if f.workload.is_some() {
                return f.service.iter().map(|s| (s.clone(), is_owner(s))).collect();
            }
            file_services
                .get(f.file.as_str())
                .map(|v| {
                    v.iter()
                        .map(|&i| (services[i].name.clone(), service_reports[i].owner))
                        .collect()
                })
                .unwrap_or_default()
        },
        &cfg.allowlist,
        &mut used,
    );
    all.extend(crate::capacity::check(
        files,
        services,
        &cfg.owners,
        &cfg.allowlist,
        &mut used,
    ));
    let (violations, advisories): (Vec<Violation>, Vec<Violation>) = all
        .into_iter()
        .partition(|v| v.rule.severity() == Severity::Error);
    for ((entry, _), used) in cfg.allowlist.iter().zip(&used) {
        if !used {
            warnings.push(format!(
                "allowlist entry for `{}` matched no violation; remove it?",
                entry.path
            ));
        }
    }

    for sr in &mut service_reports {
        let mine = |v: &&Violation| {
            v.rule == ViolationRule::NonOwnerConnection && v.services.contains(&sr.name)
        };
        let active = violations.iter().filter(mine).any(|v| v.is_active());
        let allowed = violations.iter().filter(mine).any(|v| !v.is_active());
        sr.verdict = match (sr.owner, sr.connections.is_empty()) {
            (true, false) => Verdict::OwnerConnects,
            (true, true) => Verdict::OwnerWithoutConnection,
            (false, false) if active => Verdict::NonOwnerConnects,
            (false, false) if allowed => Verdict::NonOwnerConnectsAllowed,
            (false, _) if !sr.driver_imports.is_empty() => Verdict::DriverImportOnly,
            (false, _) => Verdict::NoDatabaseAccess,
        };
    }

    let unattributed_connections = findings
        .iter()
        .filter(|f| {
            f.kind == FindingKind::Connection
                && f.category == Category::Production
                && if f.workload.is_some() {
                    f.service.is_none()
                } else {
                    !file_services.contains_key(f.file.as_str())
                }
        })
        .cloned()
        .collect();

    let mut counts = FileCounts {
        seen: files.len(),
        ..FileCounts::default()
    };
    for f in files {
        match f.status {
            FileStatus::Scanned => {
                counts.scanned += 1;
                *counts.scanned_by_category.entry(f.category).or_default() += 1;
            }
            FileStatus::Unsupported => counts.unsupported += 1,
            FileStatus::Binary => counts.binary += 1,
            FileStatus::TooLarge => counts.too_large += 1,
        }
    }

    Report {
        tool: env!("CARGO_PKG_NAME").to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        root: root.to_string(),
        passed: violations.iter().all(|v| !v.is_active()),
        owners: cfg.owners.clone(),
        files: counts,
        services: service_reports,
        violations,
        advisories,
        findings,
        unattributed_connections,
        warnings,
    }
}
