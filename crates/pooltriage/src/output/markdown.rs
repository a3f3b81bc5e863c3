//! The Markdown report. It mirrors the hand-written triage it replaces (services with
//! connections, services without, pool configuration status, matches per category), but every
//! claim carries its evidence as `file:line`, and every service shows how many files were
//! actually scanned, so nothing reads as verified when it was assumed.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::category::Category;
use crate::finding::Finding;
use crate::report::{Report, ServiceReport, Verdict};
use crate::rules::FindingKind;
use crate::value::ValueSource;
use crate::violation::{Violation, ViolationRule};

/// How many evidence lines a single cell or list shows before summarising the rest.
const MAX_INLINE: usize = 5;

pub(super) fn render(r: &Report) -> String {
    let mut out = String::new();
    let active: Vec<_> = r.active_violations().collect();
    let _ = writeln!(out, "# Connection pool triage: `{}`\n", r.root);
    if r.passed {
        let _ = writeln!(out, "**Result: ✅ PASS** (no violations, exit code 0)\n");
    } else {
        let _ = writeln!(
            out,
            "**Result: ❌ FAIL** ({} violation{}, exit code 1)\n",
            active.len(),
            plural(active.len())
        );
    }
    let connecting = r.services.iter().filter(|s| s.verdict.connects()).count();
    let services = if r.services.is_empty() {
        "0 (none detected; name them under `services:` in .pooltriage.yaml)".to_string()
    } else {
        format!(
            "{} (each one scanned, none assumed); with database connections: {connecting}",
            r.services.len()
        )
    };
    let _ = writeln!(
        out,
        "- Database owners: {}\n- Services checked: {services}\n- Files: {} scanned, {} not a scanned type, {} binary, {} too large\n",
        list_code(&r.owners),
        r.files.scanned,
        r.files.unsupported,
        r.files.binary,
        r.files.too_large
    );

    violations_section(&mut out, r);
    advisories_section(&mut out, r);
    services_with_connections(&mut out, r);
    services_without_connections(&mut out, r);
    pool_status(&mut out, r);
    category_counts(&mut out, r);
    service_evidence(&mut out, r);
    if !r.unattributed_connections.is_empty() {
        let _ = writeln!(out, "## Production connections outside any service\n");
        let _ = writeln!(
            out,
            "These files open connections but belong to no detected service, so no owner rule applies. Name the service in `.pooltriage.yaml` if one ships this code.\n"
        );
        for f in &r.unattributed_connections {
            let _ = writeln!(out, "- {}", evidence(f));
        }
        out.push('\n');
    }
    if !r.warnings.is_empty() {
        let _ = writeln!(out, "## Warnings\n");
        for w in &r.warnings {
            let _ = writeln!(out, "- {}", escape(w));
        }
        out.push('\n');
    }
    out
}

fn violations_section(out: &mut String, r: &Report) {
    let _ = writeln!(out, "## Violations\n");
    if r.violations.is_empty() {
        let _ = writeln!(out, "None.\n");
        return;
    }
    violation_table(out, &r.violations, "❌ violation");
}

fn advisories_section(out: &mut String, r: &Report) {
    if r.advisories.is_empty() {
        return;
    }
    let _ = writeln!(out, "## Warnings: literal fallbacks (not violations)\n");
    let _ = writeln!(
        out,
        "These pool settings come from configuration, but fall back to a hard-coded literal when the configuration is unset. They never fail the run.\n"
    );
    violation_table(out, &r.advisories, "⚠️ warning");
}

fn violation_table(out: &mut String, vs: &[Violation], active_status: &str) {
    let _ = writeln!(out, "| # | Rule | Service | Location | Evidence | Status |");
    let _ = writeln!(out, "|---|------|---------|----------|----------|--------|");
    for (i, v) in vs.iter().enumerate() {
        let status = match &v.allowed_reason {
            None => active_status.to_string(),
            Some(reason) => format!("allowed: {}", escape(reason)),
        };
        let mut evidence = code(&v.finding.snippet);
        if v.finding.workload.is_some()
            || !v.related.is_empty()
            || v.rule == ViolationRule::LiteralPoolFallback
        {
            let _ = write!(evidence, " {}", escape(&v.message));
        }
        if !v.related.is_empty() {
            let also: Vec<String> = v
                .related
                .iter()
                .map(|x| format!("`{}` ({})", x.location(), escape(&x.what)))
                .collect();
            let _ = write!(evidence, "; see {}", also.join(", "));
        }
        let _ = writeln!(
            out,
            "| {} | `{}` | {} | `{}` | {} | {} |",
            i + 1,
            v.rule.id(),
            if v.services.is_empty() {
                "-".to_string()
            } else {
                escape(&v.services.join(", "))
            },
            v.finding.location(),
            evidence,
            status
        );
    }
    out.push('\n');
}

fn services_with_connections(out: &mut String, r: &Report) {
    let _ = writeln!(out, "## Services with database connections\n");
    let svcs: Vec<&ServiceReport> = r.services.iter().filter(|s| s.verdict.connects()).collect();
    if svcs.is_empty() {
        let _ = writeln!(out, "None.\n");
        return;
    }
    let _ = writeln!(
        out,
        "| Service | Owner | Direct DB connection | Connection pool configuration | Status |"
    );
    let _ = writeln!(
        out,
        "|---------|-------|----------------------|-------------------------------|--------|"
    );
    for s in svcs {
        let literal = s
            .pool_settings
            .iter()
            .filter(|f| f.is_literal_setting())
            .count();
        let pool = if s.pool_settings.is_empty() {
            "no pool settings found (library defaults)".to_string()
        } else if literal == 0 {
            let fallbacks = s
                .pool_settings
                .iter()
                .filter(|f| f.has_literal_fallback())
                .count();
            if fallbacks == 0 {
                format!(
                    "✅ from config ({} setting{})",
                    s.pool_settings.len(),
                    plural(s.pool_settings.len())
                )
            } else {
                format!(
                    "⚠️ from config ({} setting{}, {fallbacks} with a literal fallback)",
                    s.pool_settings.len(),
                    plural(s.pool_settings.len())
                )
            }
        } else {
            format!("❌ {literal} of {} hard-coded", s.pool_settings.len())
        };
        let over_capacity = r.active_violations().any(|v| {
            v.rule == ViolationRule::PoolExceedsMaxConnections && v.services.contains(&s.name)
        });
        let status = match s.verdict {
            Verdict::NonOwnerConnects => "❌ VIOLATION (not an owner)",
            Verdict::NonOwnerConnectsAllowed => "⚠️ allowed by allowlist",
            _ if literal > 0 => "❌ VIOLATION (hard-coded pool)",
            _ if over_capacity => "❌ VIOLATION (replicas × pool > max_connections)",
            _ => "✅ COMPLIANT",
        };
        let _ = writeln!(
            out,
            "| **{}** | {} | ✅ YES: {} | {} | {} |",
            escape(&s.name),
            if s.owner { "yes" } else { "no" },
            locations(&s.connections),
            pool,
            status
        );
    }
    out.push('\n');
}

fn services_without_connections(out: &mut String, r: &Report) {
    let _ = writeln!(out, "## Services without database connections\n");
    let svcs: Vec<&ServiceReport> = r
        .services
        .iter()
        .filter(|s| !s.verdict.connects())
        .collect();
    if svcs.is_empty() {
        let _ = writeln!(out, "None.\n");
        return;
    }
    let _ = writeln!(out, "| Service | Detected from | Files scanned | Driver imports | Connection calls | Reaches owner via | Status |");
    let _ = writeln!(out, "|---------|---------------|---------------|----------------|------------------|-------------------|--------|");
    for s in svcs {
        let imports = if s.driver_imports.is_empty() {
            "none".to_string()
        } else {
            locations(&s.driver_imports)
        };
        let via = if s.owner_clients.is_empty() {
            "no owner client found".to_string()
        } else {
            let first = &s.owner_clients[0];
            let more = s.owner_clients.len() - 1;
            format!(
                "`{}` at `{}`{}",
                escape(&first.technology),
                first.location(),
                if more > 0 {
                    format!(" (+{more})")
                } else {
                    String::new()
                }
            )
        };
        let status = match (s.verdict, s.files_scanned) {
            (_, 0) => "⚠️ NOT VERIFIED (no files scanned)",
            (Verdict::OwnerWithoutConnection, _) => "⚠️ owner, no connection found",
            (Verdict::DriverImportOnly, _) => "✅ N/A (driver imported, no connection)",
            _ => "✅ N/A",
        };
        let _ = writeln!(
            out,
            "| **{}** | {} `{}` | {} ({} production) | {} | none | {} | {} |",
            escape(&s.name),
            s.detected_by.describe(),
            escape(&s.roots.join(", ")),
            s.files_scanned,
            s.production_files_scanned,
            imports,
            via,
            status
        );
    }
    out.push('\n');
}

fn pool_status(out: &mut String, r: &Report) {
    let _ = writeln!(out, "## Pool configuration status\n");
    let prod: Vec<&Finding> = r
        .findings
        .iter()
        .filter(|f| f.kind == FindingKind::PoolSetting && f.category == Category::Production)
        .collect();
    if prod.is_empty() {
        let _ = writeln!(out, "No pool settings in production code or deploy YAML.\n");
    } else {
        let _ = writeln!(
            out,
            "| Location | Setting | Value | Source | Where | Status |"
        );
        let _ = writeln!(
            out,
            "|----------|---------|-------|--------|-------|--------|"
        );
        for f in prod {
            let allowed = r
                .violations
                .iter()
                .find(|v| v.finding == *f)
                .and_then(|v| v.allowed_reason.clone());
            let status = match (f.value_source, allowed) {
                (Some(ValueSource::Literal), Some(reason)) => {
                    format!("allowed: {}", escape(&reason))
                }
                (Some(ValueSource::Literal), None) => "❌ hard-coded".to_string(),
                _ => match &f.fallback {
                    Some(fb) => format!("⚠️ from config (fallback {})", escape(fb)),
                    None => "✅ from config".to_string(),
                },
            };
            let _ = writeln!(
                out,
                "| `{}` | `{}` | {} | {} | {} | {} |",
                f.location(),
                escape(f.setting.as_deref().unwrap_or("?")),
                code(f.value.as_deref().unwrap_or("")),
                match (f.value_source, &f.fallback) {
                    (Some(ValueSource::Literal), _) => "literal".to_string(),
                    (_, Some(fb)) => format!("config (fallback {})", code(fb)),
                    _ => "config".to_string(),
                },
                if f.deploy { "deploy YAML" } else { "code" },
                status
            );
        }
        out.push('\n');
    }
    let other: usize = r
        .findings
        .iter()
        .filter(|f| f.kind == FindingKind::PoolSetting && f.category != Category::Production)
        .count();
    let _ = writeln!(
        out,
        "Pool settings outside production code (test, docs, examples, generated, vendored): {other}; reported below, never violations.\n"
    );
}

fn category_counts(out: &mut String, r: &Report) {
    let _ = writeln!(out, "## Matches by category\n");
    let mut rows: BTreeMap<(FindingKind, &str), BTreeMap<Category, usize>> = BTreeMap::new();
    for f in r
        .findings
        .iter()
        .filter(|f| f.kind != FindingKind::OwnerClient)
    {
        *rows
            .entry((f.kind, row_label(f)))
            .or_default()
            .entry(f.category)
            .or_default() += 1;
    }
    if rows.is_empty() {
        let _ = writeln!(out, "No database-related matches at all.\n");
        return;
    }
    let header: Vec<&str> = Category::ALL.iter().map(|c| c.as_str()).collect();
    let _ = writeln!(out, "| Match | Kind | {} | total |", header.join(" | "));
    let _ = writeln!(out, "|---|---|{}---|", "---|".repeat(header.len()));
    for ((kind, label), counts) in &rows {
        let cells: Vec<String> = Category::ALL
            .iter()
            .map(|c| counts.get(c).copied().unwrap_or(0).to_string())
            .collect();
        let _ = writeln!(
            out,
            "| `{}` | {} | {} | {} |",
            escape(label),
            kind_label(*kind),
            cells.join(" | "),
            counts.values().sum::<usize>()
        );
    }
    out.push('\n');
    let _ = writeln!(out, "### Evidence by category\n");
    for cat in Category::ALL {
        let items: Vec<&Finding> = r
            .findings
            .iter()
            .filter(|f| f.category == cat && f.kind != FindingKind::OwnerClient)
            .collect();
        if items.is_empty() {
            continue;
        }
        let _ = writeln!(
            out,
            "<details><summary>{} ({})</summary>\n",
            cat.as_str(),
            items.len()
        );
        for f in items {
            let _ = writeln!(out, "- {}", evidence(f));
        }
        let _ = writeln!(out, "\n</details>\n");
    }
}

fn service_evidence(out: &mut String, r: &Report) {
    let _ = writeln!(out, "## Evidence per service\n");
    if r.services.is_empty() {
        let _ = writeln!(
            out,
            "No services detected. Name them under `services:` in `.pooltriage.yaml` so the owner rule can apply.\n"
        );
        return;
    }
    for s in &r.services {
        let _ = writeln!(
            out,
            "### {}{}\n",
            escape(&s.name),
            if s.owner { " (owner)" } else { "" }
        );
        let _ = writeln!(
            out,
            "- Detected from: {} `{}`",
            s.detected_by.describe(),
            escape(&s.roots.join("`, `"))
        );
        if !s.go_packages.is_empty() {
            let _ = writeln!(
                out,
                "- Go packages pulled in by imports: {}",
                list_code(&s.go_packages)
            );
        }
        if !s.crate_dependencies.is_empty() {
            let _ = writeln!(
                out,
                "- Rust path dependencies: {}",
                list_code(&s.crate_dependencies)
            );
        }
        let _ = writeln!(
            out,
            "- Files scanned: {} ({} production)",
            s.files_scanned, s.production_files_scanned
        );
        if s.connections.is_empty() {
            let _ = writeln!(
                out,
                "- Proof of no connection: {}, no connection calls found, {} file{} scanned",
                if s.driver_imports.is_empty() {
                    "no driver imports found".to_string()
                } else {
                    format!("driver imported at {}", locations(&s.driver_imports))
                },
                s.files_scanned,
                plural(s.files_scanned)
            );
        } else {
            let _ = writeln!(out, "- Connections:");
            for f in &s.connections {
                let _ = writeln!(out, "  - {}", evidence(f));
            }
            if !s.driver_imports.is_empty() {
                let _ = writeln!(out, "- Driver imports: {}", locations(&s.driver_imports));
            }
        }
        if !s.pool_settings.is_empty() {
            let _ = writeln!(out, "- Pool settings:");
            for f in &s.pool_settings {
                let _ = writeln!(out, "  - {}", evidence(f));
            }
        }
        if !s.owner && !s.owner_clients.is_empty() {
            let _ = writeln!(out, "- Reaches the owner via:");
            for f in s.owner_clients.iter().take(MAX_INLINE) {
                let _ = writeln!(out, "  - `{}` at `{}`", escape(&f.technology), f.location());
            }
            if s.owner_clients.len() > MAX_INLINE {
                let _ = writeln!(
                    out,
                    "  - ... and {} more",
                    s.owner_clients.len() - MAX_INLINE
                );
            }
        }
        if !s.other_findings.is_empty() {
            let parts: Vec<String> = s
                .other_findings
                .iter()
                .map(|(c, n)| format!("{} {n}", c.as_str()))
                .collect();
            let _ = writeln!(
                out,
                "- Outside production code (not violations): {}",
                parts.join(", ")
            );
        }
        out.push('\n');
    }
}

fn row_label(f: &Finding) -> &str {
    match f.kind {
        FindingKind::PoolSetting => f.setting.as_deref().unwrap_or(&f.detector),
        _ => &f.detector,
    }
}

fn kind_label(k: FindingKind) -> &'static str {
    match k {
        FindingKind::Connection => "connection",
        FindingKind::DriverImport => "driver import",
        FindingKind::PoolSetting => "pool setting",
        FindingKind::OwnerClient => "owner client",
    }
}

fn evidence(f: &Finding) -> String {
    let mut s = format!("`{}` {} {}", f.location(), f.detector, code(&f.snippet));
    if let (Some(v), Some(src)) = (&f.value, f.value_source) {
        let source = match (src, &f.fallback) {
            (ValueSource::Literal, _) => "literal".to_string(),
            (_, Some(fb)) => format!("from config (fallback {fb})"),
            _ => "from config".to_string(),
        };
        let _ = write!(s, " (value {}, {source})", code(v));
    }
    if let Some(w) = &f.workload {
        let _ = write!(
            s,
            " ({w}{}: {})",
            f.service
                .as_ref()
                .map_or(String::new(), |svc| format!(", service {svc}")),
            f.setting.as_deref().unwrap_or("")
        );
    }
    if f.in_comment {
        s.push_str(" (in a comment)");
    }
    s
}

fn locations(fs: &[Finding]) -> String {
    let mut parts: Vec<String> = fs
        .iter()
        .take(MAX_INLINE)
        .map(|f| format!("`{}`", f.location()))
        .collect();
    if fs.len() > MAX_INLINE {
        parts.push(format!("+{} more", fs.len() - MAX_INLINE));
    }
    parts.join(", ")
}

fn list_code(items: &[String]) -> String {
    if items.is_empty() {
        return "none".to_string();
    }
    items
        .iter()
        .map(|i| format!("`{}`", escape(i)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Inline code that survives tables: backticks become quotes, pipes are escaped.
fn code(s: &str) -> String {
    if s.is_empty() {
        return String::new();
    }
    format!("`{}`", s.replace('`', "'").replace('|', "\\|"))
}

fn escape(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}
