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

use crate::category::Category;
use crate::config::{AllowEntry, PathPattern};
use crate::finding::Finding;
use crate::rules::FindingKind;
use crate::violation::{Violation, ViolationRule};

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
    use crate::violation::Severity;

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
