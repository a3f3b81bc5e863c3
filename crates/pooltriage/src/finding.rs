//! The unit of evidence: one match of one detector at one `file:line`.

use serde::{Deserialize, Serialize};

use crate::category::Category;
use crate::rules::FindingKind;
use crate::value::ValueSource;

/// One piece of evidence, located precisely enough to click on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// The detector that matched (see [`crate::rules`]); `yaml/pool-value` for deploy YAML and
    /// `owner-client` for references to the owner's client.
    pub detector: String,
    /// What the match is evidence of.
    pub kind: FindingKind,
    /// The library or API recognised.
    pub technology: String,
    /// Path relative to the scanned root, with forward slashes.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column (in bytes).
    pub column: usize,
    /// Production, test, docs, example, generated or vendored.
    pub category: Category,
    /// True when the match is inside a comment (which makes it a docs finding).
    pub in_comment: bool,
    /// True for values found in Kubernetes manifests and Helm templates.
    pub deploy: bool,
    /// The matched line, trimmed and shortened.
    pub snippet: String,
    /// For pool settings: the setting's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub setting: Option<String>,
    /// For pool settings: the value expression as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// For pool settings: hard-coded or from configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_source: Option<ValueSource>,
    /// For pool settings from configuration: the literal used when the configuration is unset
    /// (`Number(config.X) || 20` → `20`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<String>,
    /// For Kubernetes workloads given database credentials: `Kind/name` of the object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<String>,
    /// For Kubernetes workloads: the service the object was attributed to (a detected service,
    /// or the workload's own name), when it could be attributed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
}

impl Finding {
    /// `file:line`, the form every report uses.
    pub fn location(&self) -> String {
        format!("{}:{}", self.file, self.line)
    }

    /// True for a pool setting whose value is hard-coded.
    pub fn is_literal_setting(&self) -> bool {
        self.kind == FindingKind::PoolSetting && self.value_source == Some(ValueSource::Literal)
    }

    /// True for a pool setting that comes from configuration but falls back to a literal.
    pub fn has_literal_fallback(&self) -> bool {
        self.kind == FindingKind::PoolSetting
            && self.value_source == Some(ValueSource::Config)
            && self.fallback.is_some()
    }
}
