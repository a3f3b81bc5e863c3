//! What a violation is: the rules a finding can break, their severity, and a broken rule with
//! its evidence. Deciding which findings break which rule is [`crate::policy`]'s job (and
//! [`crate::capacity`]'s for the cross-file rule); this module only names the results, so the
//! configuration can validate rule ids and the outputs can render them without depending on
//! the policy.

use serde::{Deserialize, Serialize};

use crate::finding::Finding;

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
