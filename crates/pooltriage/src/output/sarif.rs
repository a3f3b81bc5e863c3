//! SARIF 2.1.0: one rule per [`ViolationRule`], one result per violation (level `error`) and per
//! warning (level `warning`), with related locations for multi-file evidence. Allowlisted
//! violations are kept as results with an external suppression carrying the reason, so
//! code-scanning UIs show them as dismissed rather than losing them.

use serde_json::{json, Value};

use crate::report::Report;
use crate::violation::ViolationRule;

/// The SARIF schema URI written into every log.
pub const SARIF_SCHEMA: &str = "https://json.schemastore.org/sarif-2.1.0.json";

pub(super) fn render(report: &Report) -> Value {
    let rules: Vec<Value> = ViolationRule::ALL
        .iter()
        .map(|r| {
            json!({
                "id": r.id(),
                "name": r.id(),
                "shortDescription": { "text": r.title() },
                "fullDescription": { "text": r.title() },
                "help": { "text": r.help() },
                "defaultConfiguration": { "level": r.severity().sarif_level() },
            })
        })
        .collect();
    let results: Vec<Value> = report
        .violations
        .iter()
        .chain(&report.advisories)
        .map(|v| {
            let rule_index = ViolationRule::ALL.iter().position(|r| *r == v.rule).unwrap_or(0);
            let f = &v.finding;
            let mut result = json!({
                "ruleId": v.rule.id(),
                "ruleIndex": rule_index,
                "level": v.rule.severity().sarif_level(),
                "message": { "text": v.message },
                "locations": [{
                    "physicalLocation": {
                        "artifactLocation": { "uri": f.file, "uriBaseId": "%SRCROOT%" },
                        "region": {
                            "startLine": f.line,
                            "startColumn": f.column,
                            "snippet": { "text": f.snippet },
                        },
                    },
                }],
                "partialFingerprints": {
                    "pooltriage/v1": format!("{}:{}:{}:{}", v.rule.id(), f.file, f.detector, f.snippet),
                },
                "properties": {
                    "services": v.services,
                    "detector": f.detector,
                    "category": f.category.as_str(),
                },
            });
            if !v.related.is_empty() {
                result["relatedLocations"] = v
                    .related
                    .iter()
                    .enumerate()
                    .map(|(i, x)| {
                        json!({
                            "id": i,
                            "message": { "text": x.what },
                            "physicalLocation": {
                                "artifactLocation": { "uri": x.file, "uriBaseId": "%SRCROOT%" },
                                "region": { "startLine": x.line, "snippet": { "text": x.snippet } },
                            },
                        })
                    })
                    .collect();
            }
            if let Some(reason) = &v.allowed_reason {
                result["suppressions"] = json!([{ "kind": "external", "justification": reason }]);
            }
            result
        })
        .collect();
    json!({
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [{
            "tool": {
                "driver": {
                    "name": report.tool,
                    "version": report.version,
                    "rules": rules,
                },
            },
            "results": results,
        }],
    })
}
