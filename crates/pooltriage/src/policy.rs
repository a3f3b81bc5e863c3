//! The policy: what turns a finding into a violation, and how the allowlist suppresses one.
//!
//! Rules: only production findings can be violations. A connection in production code is a
//! violation for every non-owner service that contains it; a Kubernetes workload given database
//! credentials counts as a connection of the service it is attributed to (see
//! [`crate::workloads`]). A hard-coded pool value is a violation wherever it is in production
//! code or deploy YAML, owners included: the owner is allowed to connect, not to hard-code. A
//! value from configuration with a literal fallback (`config.X || 20`) is a warning, not a
//! violation. The capacity rule (`pool-exceeds-max-connections`) is checked across files by
//! [`crate::capacity`]. An allowlist entry suppresses a violation or warning (it stays in the
//! report, with its reason) when its path, and its `rule` and `line` if given, match.

use serde::{Deserialize, Serialize};

use crate::category::Category;
use crate::config::AllowEntry;
use crate::config::PathPattern;
use crate::finding::Finding;
use crate::rules::FindingKind;

/// The rules a finding can break.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ViolationRule {
    /// A service that is not a database owner opens a connection in production code.
    NonOwnerConnection,
    /// Production code hard-codes a connection-pool value.
    HardcodedPoolSetting,
    /// A Kubernetes manifest or Helm template hard-codes a pool value instead of using values.
    HardcodedDeployPoolValue,
    /// The owner's replicas × pool size exceeds PostgreSQL's usable `max_connections`.
    PoolExceedsMaxConnections,
    /// A pool setting comes from configuration but falls back to a literal (a warning).
    LiteralPoolFallback,
}

/// How serious a rule is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Severity {
    /// Fails the run.
    Error,
    /// Reported, never fails the run.
    Warning,
}

impl Severity {
    /// The SARIF level.
    pub fn sarif_level(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        }
    }
}

impl ViolationRule {
    /// Every rule, in report order.
    pub const ALL: [ViolationRule; 5] = [
        ViolationRule::NonOwnerConnection,
        ViolationRule::HardcodedPoolSetting,
        ViolationRule::HardcodedDeployPoolValue,
        ViolationRule::PoolExceedsMaxConnections,
        ViolationRule::LiteralPoolFallback,
    ];

    /// The stable identifier used in configs, JSON and SARIF.
    pub fn id(self) -> &'static str {
        match self {
            ViolationRule::NonOwnerConnection => "non-owner-connection",
            ViolationRule::HardcodedPoolSetting => "hardcoded-pool-setting",
            ViolationRule::HardcodedDeployPoolValue => "hardcoded-deploy-pool-value",
            ViolationRule::PoolExceedsMaxConnections => "pool-exceeds-max-connections",
            ViolationRule::LiteralPoolFallback => "literal-pool-fallback",
        }
    }

    /// Errors fail the run; warnings are reported only.
    pub fn severity(self) -> Severity {
        match self {
            ViolationRule::LiteralPoolFallback => Severity::Warning,
            _ => Severity::Error,
        }
    }

    /// Parses an identifier.
    pub fn from_id(id: &str) -> Option<ViolationRule> {
        ViolationRule::ALL.into_iter().find(|r| r.id() == id)
    }

    /// One-line description.
    pub fn title(self) -> &'static str {
        match self {
            ViolationRule::NonOwnerConnection => {
                "Service that is not a database owner opens a database connection"
            }
            ViolationRule::HardcodedPoolSetting => {
                "Connection-pool setting hard-coded in production code"
            }
            ViolationRule::HardcodedDeployPoolValue => {
                "Connection-pool value hard-coded in a manifest or Helm template"
            }
            ViolationRule::PoolExceedsMaxConnections => {
                "Owner replicas times pool size exceed PostgreSQL max_connections"
            }
            ViolationRule::LiteralPoolFallback => {
                "Connection-pool setting from configuration falls back to a hard-coded literal"
            }
        }
    }

    /// What to do about it.
    pub fn help(self) -> &'static str {
        match self {
            ViolationRule::NonOwnerConnection => {
                "Only the configured owner services may open database connections. Reach the data through the owner's API/client, or add the service to `owners` in .pooltriage.yaml, or allowlist the path with a reason."
            }
            ViolationRule::HardcodedPoolSetting => {
                "Read the value from configuration (e.g. `db.SetMaxOpenConns(cfg.Database.MaxOpenConns)`) so each deployment can size its pool against the database's max_connections."
            }
            ViolationRule::HardcodedDeployPoolValue => {
                "Reference a values file instead (e.g. `{{ .Values.database.maxOpenConns }}`); values*.yaml is where per-environment numbers belong."
            }
            ViolationRule::PoolExceedsMaxConnections => {
                "Every replica opens up to maxOpenConns connections: keep replicas (or the HPA's maxReplicas) × maxOpenConns at or below max_connections − superuser_reserved_connections, or put a pooler (PgBouncer) in front of PostgreSQL."
            }
            ViolationRule::LiteralPoolFallback => {
                "The value is configurable, but an unset configuration silently falls back to the literal. Make the setting required, or make sure every deployment sets it."
            }
        }
    }
}

/// A further piece of evidence of a violation (for the capacity rule: the replicas and the
/// PostgreSQL setting).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Related {
    /// Path relative to the scanned root.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// What the location shows (`replicas 3`, `max_connections 100`).
    pub what: String,
    /// The line, trimmed and shortened.
    pub snippet: String,
}

impl Related {
    /// `file:line`.
    pub fn location(&self) -> String {
        format!("{}:{}", self.file, self.line)
    }
}

/// A broken rule, with the evidence and (when suppressed) the allowlist's reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    /// The rule broken.
    pub rule: ViolationRule,
    /// The services concerned (for connections: the non-owner services containing the file).
    pub services: Vec<String>,
    /// The evidence.
    pub finding: Finding,
    /// A sentence for humans.
    pub message: String,
    /// Set when an allowlist entry suppresses the violation: that entry's reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_reason: Option<String>,
    /// Further evidence (other `file:line` locations the verdict rests on).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub related: Vec<Related>,
}

impl Violation {
    /// True when the violation counts (is not allowlisted).
    pub fn is_active(&self) -> bool {
        self.allowed_reason.is_none()
    }
}

/// Applies the policy to every finding. `services_of(finding)` returns, for a finding, the
/// names of the services whose files contain it (for a workload finding: the service it is
/// attributed to) and whether each is an owner. Returns violations and warnings together; see
/// [`ViolationRule::severity`].
pub fn evaluate<'a>(
    findings: impl IntoIterator<Item = &'a Finding>,
    services_of: impl Fn(&Finding) -> Vec<(String, bool)>,
    allowlist: &[(AllowEntry, PathPattern)],
    used_entries: &mut [bool],
) -> Vec<Violation> {
    let mut out = Vec::new();
    for f in findings {
        if f.category != Category::Production {
            continue;
        }
        let (rule, services, message) = match f.kind {
            FindingKind::Connection => {
                let non_owners: Vec<String> = services_of(f)
                    .into_iter()
                    .filter(|(_, owner)| !owner)
                    .map(|(n, _)| n)
                    .collect();
                if non_owners.is_empty() {
                    continue;
                }
                let msg = match &f.workload {
                    Some(w) => format!(
                        "{} ({w}) is given database credentials ({}) but is not a database owner",
                        non_owners.join(", "),
                        f.setting.as_deref().unwrap_or("?")
                    ),
                    None => format!(
                        "{} opens a database connection ({}) but is not a database owner",
                        non_owners.join(", "),
                        f.technology
                    ),
                };
                (ViolationRule::NonOwnerConnection, non_owners, msg)
            }
            FindingKind::PoolSetting if f.is_literal_setting() => {
                let services = services_of(f).into_iter().map(|(n, _)| n).collect();
                let setting = f.setting.as_deref().unwrap_or("pool setting");
                let value = f.value.as_deref().unwrap_or("?");
                if f.deploy {
                    let msg = format!("{setting} is hard-coded to {value} in deploy YAML instead of coming from a values file");
                    (ViolationRule::HardcodedDeployPoolValue, services, msg)
                } else {
                    let msg = format!(
                        "{setting} is hard-coded to {value} instead of coming from configuration"
                    );
                    (ViolationRule::HardcodedPoolSetting, services, msg)
                }
            }
            FindingKind::PoolSetting if f.has_literal_fallback() => {
                let services = services_of(f).into_iter().map(|(n, _)| n).collect();
                let msg = format!(
                    "{} comes from configuration ({}) but falls back to the literal {}",
                    f.setting.as_deref().unwrap_or("pool setting"),
                    f.value.as_deref().unwrap_or("?"),
                    f.fallback.as_deref().unwrap_or("?")
                );
                (ViolationRule::LiteralPoolFallback, services, msg)
            }
            _ => continue,
        };
        let allowed_reason = allowed(allowlist, used_entries, rule, &f.file, f.line);
        out.push(Violation {
            rule,
            services,
            finding: f.clone(),
            message,
            allowed_reason,
            related: Vec::new(),
        });
    }
    out
}

/// The reason of the first allowlist entry matching `rule` at `file:line` (marking it used).
pub fn allowed(
    allowlist: &[(AllowEntry, PathPattern)],
    used_entries: &mut [bool],
    rule: ViolationRule,
    file: &str,
    line: usize,
) -> Option<String> {
    allowlist.iter().enumerate().find_map(|(i, (entry, pat))| {
        let hit = pat.matches(file)
            && entry.rule.as_deref().is_none_or(|r| r == rule.id())
            && entry.line.is_none_or(|l| l == line);
        if hit {
            if let Some(u) = used_entries.get_mut(i) {
                *u = true;
            }
            Some(entry.reason.clone())
        } else {
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::ValueSource;

    fn finding(kind: FindingKind, category: Category, source: Option<ValueSource>) -> Finding {
        Finding {
            detector: "d".into(),
            kind,
            technology: "t".into(),
            file: "svc/a.go".into(),
            line: 3,
            column: 1,
            category,
            in_comment: false,
            deploy: false,
            snippet: String::new(),
            setting: source.map(|_| "SetMaxOpenConns".into()),
            value: source.map(|_| "25".into()),
            value_source: source,
            fallback: None,
            workload: None,
            service: None,
        }
    }

    #[test]
    fn only_production_connections_of_non_owners_and_literals_are_violations() {
        let fs = [
            finding(FindingKind::Connection, Category::Production, None),
            finding(FindingKind::Connection, Category::Test, None),
            finding(
                FindingKind::PoolSetting,
                Category::Production,
                Some(ValueSource::Literal),
            ),
            finding(
                FindingKind::PoolSetting,
                Category::Production,
                Some(ValueSource::Config),
            ),
            finding(
                FindingKind::PoolSetting,
                Category::Docs,
                Some(ValueSource::Literal),
            ),
            finding(FindingKind::DriverImport, Category::Production, None),
        ];
        let v = evaluate(
            &fs,
            |_| vec![("gw".into(), false), ("ds".into(), true)],
            &[],
            &mut [],
        );
        let got: Vec<_> = v.iter().map(|v| (v.rule, v.services.clone())).collect();
        assert_eq!(
            got,
            [
                (ViolationRule::NonOwnerConnection, vec!["gw".to_string()]),
                (
                    ViolationRule::HardcodedPoolSetting,
                    vec!["gw".to_string(), "ds".to_string()]
                ),
            ]
        );
    }

    #[test]
    fn a_literal_fallback_is_a_warning_not_a_violation() {
        let mut f = finding(
            FindingKind::PoolSetting,
            Category::Production,
            Some(ValueSource::Config),
        );
        f.fallback = Some("20".into());
        let v = evaluate([&f], |_| vec![("api".into(), false)], &[], &mut []);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].rule, ViolationRule::LiteralPoolFallback);
        assert_eq!(v[0].rule.severity(), Severity::Warning);
        assert!(v[0].message.contains("falls back to the literal 20"));
    }

    #[test]
    fn owners_may_connect() {
        let fs = [finding(FindingKind::Connection, Category::Production, None)];
        assert!(evaluate(&fs, |_| vec![("ds".into(), true)], &[], &mut []).is_empty());
    }

    #[test]
    fn allowlist_entries_suppress_matching_rules_and_lines_only() {
        let fs = [finding(
            FindingKind::PoolSetting,
            Category::Production,
            Some(ValueSource::Literal),
        )];
        let entry = |rule: Option<&str>, line: Option<usize>| {
            (
                AllowEntry {
                    path: "svc/**".into(),
                    rule: rule.map(Into::into),
                    line,
                    reason: "ok".into(),
                },
                PathPattern::parse("svc/**").unwrap(),
            )
        };
        let mut used = [false];
        let v = evaluate(
            &fs,
            |_| vec![],
            &[entry(Some("hardcoded-pool-setting"), Some(3))],
            &mut used,
        );
        assert_eq!(v[0].allowed_reason.as_deref(), Some("ok"));
        assert!(used[0]);
        let v = evaluate(
            &fs,
            |_| vec![],
            &[entry(Some("non-owner-connection"), None)],
            &mut [false],
        );
        assert!(v[0].is_active());
        let v = evaluate(&fs, |_| vec![], &[entry(None, Some(4))], &mut [false]);
        assert!(v[0].is_active());
    }
}
