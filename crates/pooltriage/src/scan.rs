//! Walking the tree and scanning each file for findings and for the facts service detection
//! needs (Go imports, `go.mod` module paths, Cargo manifests, Rust test modules).
//!
//! Rules: `.gitignore`, `.ignore` and the configured exclusions are honoured (even outside a git
//! checkout); hidden directories are skipped; files of unknown type are listed but not read;
//! binary files (a NUL byte in the first 8 KiB) and files over [`MAX_FILE_BYTES`] are skipped.
//! Files are scanned in parallel and the result is sorted by path, so output is deterministic.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{mpsc, LazyLock};
use std::time::Duration;

use ignore::overrides::OverrideBuilder;
use ignore::{WalkBuilder, WalkState};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use regex::Regex;
use serde::Deserialize;

use crate::category::{classify_file, Category};
use crate::deploy;
use crate::finding::Finding;
use crate::k8s::{self, K8sObject, PgSetting};
use crate::lang::{split, Language};
use crate::rules::{self, FindingKind};
use crate::value;

/// Files larger than this are skipped: pool settings do not live in multi-megabyte files.
pub const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// Why a file was (not) read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FileStatus {
    /// Read and scanned.
    Scanned,
    /// Not a type any detector applies to (listed for service detection, e.g. `Dockerfile`).
    #[default]
    Unsupported,
    /// Contains NUL bytes.
    Binary,
    /// Larger than [`MAX_FILE_BYTES`].
    TooLarge,
}

/// What a `Cargo.toml` says that matters for service detection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CargoManifest {
    /// `[package] name`, when the manifest is a package.
    pub package: Option<String>,
    /// True when the manifest declares `[[bin]]` targets.
    pub has_bin_section: bool,
    /// `path` of normal and build dependencies, as written.
    pub path_dependencies: Vec<String>,
    /// Names of dependencies inherited with `workspace = true`.
    pub workspace_dependencies: Vec<String>,
    /// `[workspace.dependencies]` entries that have a `path`: name and path as written.
    pub workspace_path_dependencies: Vec<(String, String)>,
}

/// One file of the tree, with everything learnt from it.
#[derive(Debug, Clone, Default)]
pub struct ScannedFile {
    /// Path relative to the root, with forward slashes.
    pub path: String,
    /// The language it was read as, if any.
    pub language: Option<Language>,
    /// The file's category (findings may refine theirs, e.g. comments and Rust test modules).
    pub category: Category,
    /// Whether it was read.
    pub status: FileStatus,
    /// Findings, in file order.
    pub findings: Vec<Finding>,
    /// Go import paths.
    pub go_imports: Vec<String>,
    /// For `go.mod`: the module path.
    pub go_module: Option<String>,
    /// For `Cargo.toml`: the manifest facts.
    pub cargo: Option<CargoManifest>,
    /// Files this Rust file declares as `#[cfg(test)] mod x;` (candidate paths).
    pub rust_test_module_files: Vec<String>,
    /// For YAML: the Kubernetes objects of its deploy documents.
    pub k8s: Vec<K8sObject>,
    /// For YAML and `postgresql.conf`: PostgreSQL server settings declared there.
    pub pg_settings: Vec<PgSetting>,
    /// For a Helm chart's `values.yaml`: the parsed values.
    pub helm_values: Option<serde_norway::Value>,
    /// For `package.json`: the package name.
    pub package_name: Option<String>,
}

impl ScannedFile {
    /// The directory part of the path (`""` at the root).
    pub fn dir(&self) -> &str {
        self.path.rsplit_once('/').map_or("", |(d, _)| d)
    }

    /// The file name.
    pub fn name(&self) -> &str {
        self.path
            .rsplit_once('/')
            .map_or(self.path.as_str(), |(_, n)| n)
    }
}

/// How to walk the tree.
#[derive(Debug, Clone, Default)]
pub struct WalkOptions {
    /// Worker threads; 0 picks the number of CPUs.
    pub threads: usize,
    /// Extra gitignore-style exclusions.
    pub exclude: Vec<String>,
    /// Show a progress spinner on stderr.
    pub progress: bool,
}

/// Walks `root` and scans every file. Errors of individual entries (permissions, broken
/// links) are returned as warnings rather than failing the run.
pub fn scan_tree(
    root: &Path,
    opts: &WalkOptions,
    clients: &[Regex],
) -> Result<(Vec<ScannedFile>, Vec<String>), String> {
    let mut overrides = OverrideBuilder::new(root);
    for pattern in &opts.exclude {
        let negated = format!("!{}", pattern.trim_start_matches('!'));
        overrides
            .add(&negated)
            .map_err(|e| format!("exclude `{pattern}`: {e}"))?;
    }
    let overrides = overrides
        .build()
        .map_err(|e| format!("exclude patterns: {e}"))?;
    let walker = WalkBuilder::new(root)
        .require_git(false)
        .overrides(overrides)
        .threads(opts.threads)
        .build_parallel();

    let progress = if opts.progress {
        let pb = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        pb.set_style(
            ProgressStyle::with_template("{spinner} pooltriage: scanned {pos} files in {elapsed}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        pb.enable_steady_tick(Duration::from_millis(120));
        Some(pb)
    } else {
        None
    };

    let (tx, rx) = mpsc::channel::<Result<ScannedFile, String>>();
    walker.run(|| {
        let tx = tx.clone();
        let progress = progress.clone();
        Box::new(move |entry| {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    let _ = tx.send(Err(e.to_string()));
                    return WalkState::Continue;
                }
            };
            if !entry.file_type().is_some_and(|t| t.is_file()) {
                return WalkState::Continue;
            }
            let Ok(rel) = entry.path().strip_prefix(root) else {
                return WalkState::Continue;
            };
            let rel = rel_string(rel);
            let _ = tx.send(read_and_scan(entry.path(), rel, clients).map_err(|e| e.to_string()));
            if let Some(pb) = &progress {
                pb.inc(1);
            }
            WalkState::Continue
        })
    });
    drop(tx);
    let mut files = Vec::new();
    let mut warnings = Vec::new();
    for item in rx {
        match item {
            Ok(f) => files.push(f),
            Err(w) => warnings.push(w),
        }
    }
    if let Some(pb) = progress {
        pb.finish_and_clear();
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    warnings.sort();
    reclassify_rust_test_modules(&mut files);
    Ok((files, warnings))
}

fn rel_string(rel: &Path) -> String {
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

fn read_and_scan(path: &Path, rel: String, clients: &[Regex]) -> std::io::Result<ScannedFile> {
    let language = Language::detect(Path::new(&rel));
    let mut file = ScannedFile {
        category: classify_file(&rel, None),
        path: rel,
        language,
        ..ScannedFile::default()
    };
    let Some(lang) = language else {
        return Ok(file);
    };
    if std::fs::metadata(path)?.len() > MAX_FILE_BYTES {
        file.status = FileStatus::TooLarge;
        return Ok(file);
    }
    let bytes = std::fs::read(path)?;
    if bytes[..bytes.len().min(8192)].contains(&0) {
        file.status = FileStatus::Binary;
        return Ok(file);
    }
    let text = match String::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    };
    scan_text(&mut file, lang, &text, clients);
    Ok(file)
}

/// Scans the text of one file; fills in status, category, findings and facts.
pub fn scan_text(file: &mut ScannedFile, lang: Language, text: &str, clients: &[Regex]) {
    file.status = FileStatus::Scanned;
    file.category = classify_file(&file.path, Some(text));
    let views = split(lang, text);
    let lines = LineIndex::new(text);
    let test_ranges = if lang == Language::Rust {
        let (ranges, mods) = rust_test_items(&views.code);
        file.rust_test_module_files = test_module_paths(&file.path, &mods);
        ranges
            .into_iter()
            .map(|(a, b)| (lines.line_of(a), lines.line_of(b)))
            .collect()
    } else {
        Vec::new()
    };
    let category_at = |line: usize, in_comment: bool| -> Category {
        let mut cat = file.category;
        if cat == Category::Production && test_ranges.iter().any(|&(a, b)| line >= a && line <= b) {
            cat = Category::Test;
        }
        if in_comment
            && matches!(
                cat,
                Category::Production | Category::Test | Category::Example
            )
        {
            cat = Category::Docs;
        }
        cat
    };
    let mut findings = Vec::new();
    for det in rules::for_language(lang) {
        if det.guard.as_ref().is_some_and(|g| !g.is_match(text)) {
            continue;
        }
        for (view, in_view_comments) in [(&views.code, false), (&views.comments, true)] {
            // Prose is all "comment" to the splitter, but a line of a README is not a comment.
            let in_comment = in_view_comments && lang != Language::Docs;
            for m in det.pattern.find_iter(view) {
                let (mut setting, mut val, mut source, mut fallback) = (None, None, None, None);
                if det.kind == FindingKind::PoolSetting {
                    let extracted = if det.matches_dsn_parameter() {
                        dsn_parameter(view, m.end())
                    } else {
                        value::extract(view, m.end())
                    };
                    let Some((a, b)) = extracted else { continue };
                    let expr = &view[a..b];
                    setting = det.setting.map(str::to_string);
                    let (src, fb) = if det.matches_dsn_parameter() {
                        (value::classify_expr(expr), None)
                    } else {
                        value::classify_expr_with_fallback(expr)
                    };
                    source = Some(src);
                    fallback = fb;
                    val = Some(shorten(expr, 80));
                }
                let start = m.start() + leading_ws(m.as_str());
                let line = lines.line_of(start);
                let mut category = category_at(line, in_view_comments);
                if det.kind == FindingKind::DriverImport
                    && !in_comment
                    && is_dev_dependency(lang, view, start)
                {
                    category = category_if_not_prod(category);
                }
                findings.push(Finding {
                    detector: det.id.to_string(),
                    kind: det.kind,
                    technology: det.technology.to_string(),
                    file: file.path.clone(),
                    line,
                    column: start - lines.start_of(line) + 1,
                    category,
                    in_comment,
                    deploy: false,
                    snippet: lines.snippet(text, line),
                    setting,
                    value: val,
                    value_source: source,
                    fallback,
                    workload: None,
                    service: None,
                });
            }
        }
    }
    if lang == Language::Yaml {
        let docs = if deploy::is_values_file(&file.path) {
            Vec::new()
        } else {
            k8s::documents(&views.code)
        };
        let ranges = deploy::ranges(&file.path, &views.code, &docs);
        for hit in deploy::scan(&views.code, &ranges) {
            findings.push(Finding {
                detector: "yaml/pool-value".to_string(),
                kind: FindingKind::PoolSetting,
                technology: "Kubernetes/Helm".to_string(),
                file: file.path.clone(),
                line: hit.line,
                column: hit.column,
                category: file.category,
                in_comment: false,
                deploy: true,
                snippet: lines.snippet(text, hit.line),
                setting: Some(hit.setting),
                value: Some(hit.value),
                value_source: Some(hit.source),
                fallback: hit.fallback,
                workload: None,
                service: None,
            });
        }
        file.k8s = k8s::objects(&docs, &views.code);
        for obj in &file.k8s {
            if let Some(f) = credential_finding(&file.path, file.category, obj, text, &lines) {
                findings.push(f);
            }
        }
        if matches!(file.name(), "values.yaml" | "values.yml") {
            file.helm_values = k8s::parse_values(&views.code);
        }
    }
    if matches!(lang, Language::Yaml | Language::PostgresConf)
        && [
            "max_connections",
            "MAX_CONNECTIONS",
            "maxConnections",
            "superuser_reserved",
        ]
        .iter()
        .any(|n| text.contains(n))
    {
        file.pg_settings = k8s::postgres_settings(&file.path, &views.code);
    }
    if lang == Language::Json && file.name() == "package.json" {
        file.package_name = serde_json::from_str::<serde_json::Value>(text)
            .ok()
            .and_then(|v| v.get("name").and_then(|n| n.as_str()).map(str::to_string));
    }
    if lang.is_source() || lang == Language::Yaml {
        for re in clients {
            for m in re.find_iter(&views.code).take(20) {
                let line = lines.line_of(m.start());
                findings.push(Finding {
                    detector: "owner-client".to_string(),
                    kind: FindingKind::OwnerClient,
                    technology: m.as_str().to_string(),
                    file: file.path.clone(),
                    line,
                    column: m.start() - lines.start_of(line) + 1,
                    category: category_at(line, false),
                    in_comment: false,
                    deploy: false,
                    snippet: lines.snippet(text, line),
                    setting: None,
                    value: None,
                    value_source: None,
                    fallback: None,
                    workload: None,
                    service: None,
                });
            }
        }
    }
    findings.sort_by(|a, b| (a.line, a.column, &a.detector).cmp(&(b.line, b.column, &b.detector)));
    findings.dedup_by(|a, b| a.line == b.line && a.detector == b.detector && a.column == b.column);
    file.findings = findings;
    match lang {
        Language::Go => file.go_imports = go_imports(&views.code),
        Language::GoMod => file.go_module = go_module(&views.code),
        Language::Toml if file.name() == "Cargo.toml" => file.cargo = Some(cargo_manifest(text)),
        _ => {}
    }
}

/// The finding for a workload given database credentials: long-running workloads that are not
/// a database server themselves, and every Job/CronJob (a migration Job runs a client even when
/// its image is PostgreSQL's).
fn credential_finding(
    path: &str,
    category: Category,
    obj: &K8sObject,
    text: &str,
    lines: &LineIndex,
) -> Option<Finding> {
    let first = obj.credentials.first()?;
    let (detector, technology) = if obj.is_job() {
        let what = if obj.migration { "migration " } else { "" };
        (
            "k8s/job-db-credentials",
            format!("Kubernetes {what}{} with database credentials", obj.kind),
        )
    } else if obj.is_long_running() && !obj.db_server {
        (
            "k8s/workload-db-credentials",
            format!("Kubernetes {} with database credentials", obj.kind),
        )
    } else {
        return None;
    };
    let names: Vec<String> = obj
        .credentials
        .iter()
        .map(|c| format!("{} ({})", c.name, c.from))
        .collect();
    Some(Finding {
        detector: detector.to_string(),
        kind: FindingKind::Connection,
        technology,
        file: path.to_string(),
        line: first.line,
        column: first.column,
        category,
        in_comment: false,
        deploy: true,
        snippet: lines.snippet(text, first.line),
        setting: Some(names.join(", ")),
        value: None,
        value_source: None,
        fallback: None,
        workload: Some(obj.label()),
        service: None,
    })
}

/// Dev-dependencies are test tooling: production becomes test, other categories stay.
fn category_if_not_prod(c: Category) -> Category {
    if c == Category::Production {
        Category::Test
    } else {
        c
    }
}

/// The value of a connection-string parameter starting at `start`: up to the next `&`, quote,
/// whitespace or bracket.
fn dsn_parameter(text: &str, start: usize) -> Option<(usize, usize)> {
    let len = text[start..]
        .find(|c: char| {
            c == '&'
                || c == '"'
                || c == '\''
                || c == '`'
                || c.is_whitespace()
                || "()[]{},;".contains(c)
        })
        .unwrap_or(text.len() - start);
    (len > 0).then_some((start, start + len))
}

fn leading_ws(s: &str) -> usize {
    s.len() - s.trim_start().len()
}

/// True when the match at `offset` sits in a dev-dependency section of a manifest.
fn is_dev_dependency(lang: Language, view: &str, offset: usize) -> bool {
    static TOML_SECTION: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"(?m)^\s*\[([^\]]+)\]").expect("pattern compiles"));
    static JSON_SECTION: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r#""(\w*[dD]ependencies)"\s*:"#).expect("pattern compiles"));
    let section = match lang {
        Language::Toml => TOML_SECTION.captures_iter(&view[..offset]).last(),
        Language::Json => JSON_SECTION.captures_iter(&view[..offset]).last(),
        _ => None,
    };
    let in_section = section.is_some_and(|c| c[1].to_ascii_lowercase().contains("dev"));
    // Inline form: `[dev-dependencies.sqlx]` is its own section header.
    let line_start = view[..offset].rfind('\n').map_or(0, |p| p + 1);
    in_section || view[line_start..].starts_with("[dev-dependencies")
}

/// Byte offset → line mapping.
struct LineIndex {
    starts: Vec<usize>,
}

impl LineIndex {
    fn new(text: &str) -> LineIndex {
        let mut starts = vec![0];
        starts.extend(
            text.bytes()
                .enumerate()
                .filter(|(_, b)| *b == b'\n')
                .map(|(i, _)| i + 1),
        );
        LineIndex { starts }
    }

    /// 1-based line containing byte `offset`.
    fn line_of(&self, offset: usize) -> usize {
        self.starts.partition_point(|&s| s <= offset)
    }

    fn start_of(&self, line: usize) -> usize {
        self.starts[line - 1]
    }

    fn snippet(&self, text: &str, line: usize) -> String {
        let start = self.starts[line - 1];
        let end = self.starts.get(line).map_or(text.len(), |&e| e);
        shorten(text[start..end].trim(), 160)
    }
}

/// `s`, cut to at most `max` characters (ending in `...` when cut).
fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() > max {
        let cut: String = s.chars().take(max - 3).collect();
        format!("{cut}...")
    } else {
        s.to_string()
    }
}

fn go_imports(code: &str) -> Vec<String> {
    static BLOCK: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"\bimport\s*\(([^)]*)\)").expect("pattern compiles"));
    static SINGLE: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r#"(?m)^\s*import\s+(?:[\w.]+\s+)?"([^"]+)""#).expect("pattern compiles")
    });
    static QUOTED: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r#""([^"]+)""#).expect("pattern compiles"));
    let mut out: Vec<String> = BLOCK
        .captures_iter(code)
        .flat_map(|c| {
            QUOTED
                .captures_iter(c.get(1).map_or("", |m| m.as_str()))
                .map(|q| q[1].to_string())
                .collect::<Vec<_>>()
        })
        .chain(SINGLE.captures_iter(code).map(|c| c[1].to_string()))
        .collect();
    out.sort();
    out.dedup();
    out
}

fn go_module(code: &str) -> Option<String> {
    static MODULE: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r#"(?m)^\s*module\s+"?([^\s"]+)"?"#).expect("pattern compiles")
    });
    MODULE.captures(code).map(|c| c[1].to_string())
}

/// Reads the parts of a Cargo manifest service detection needs; a manifest that does not parse
/// yields an empty description (the crate then simply is not detected as a service).
pub fn cargo_manifest(text: &str) -> CargoManifest {
    #[derive(Deserialize, Default)]
    #[serde(rename_all = "kebab-case")]
    struct Manifest {
        package: Option<Package>,
        #[serde(default)]
        bin: Vec<toml::Value>,
        #[serde(default)]
        dependencies: BTreeMap<String, toml::Value>,
        #[serde(default)]
        build_dependencies: BTreeMap<String, toml::Value>,
        workspace: Option<Workspace>,
    }
    #[derive(Deserialize)]
    struct Package {
        name: Option<String>,
    }
    #[derive(Deserialize)]
    struct Workspace {
        #[serde(default)]
        dependencies: BTreeMap<String, toml::Value>,
    }
    let m: Manifest = toml::from_str(text).unwrap_or_default();
    let mut out = CargoManifest {
        package: m.package.and_then(|p| p.name),
        has_bin_section: !m.bin.is_empty(),
        ..CargoManifest::default()
    };
    for (name, dep) in m.dependencies.iter().chain(m.build_dependencies.iter()) {
        if let Some(p) = dep.get("path").and_then(toml::Value::as_str) {
            out.path_dependencies.push(p.to_string());
        } else if dep.get("workspace").and_then(toml::Value::as_bool) == Some(true) {
            out.workspace_dependencies.push(name.clone());
        }
    }
    if let Some(ws) = m.workspace {
        for (name, dep) in ws.dependencies {
            if let Some(p) = dep.get("path").and_then(toml::Value::as_str) {
                out.workspace_path_dependencies.push((name, p.to_string()));
            }
        }
    }
    out
}

/// Finds Rust test items in the code view: byte ranges of `#[cfg(test)]`/`#[test]` item bodies,
/// and names of `#[cfg(test)] mod name;` file modules.
fn rust_test_items(code: &str) -> (Vec<(usize, usize)>, Vec<String>) {
    static ATTR: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"#\[\s*(?:cfg\s*\(\s*test\s*\)|(?:[\w]+::)?test\b[^\]]*)\]")
            .expect("pattern compiles")
    });
    static FILE_MOD: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"^\s*(?:#\[[^\]]*\]\s*)*(?:pub(?:\([^)]*\))?\s+)?mod\s+(\w+)\s*;")
            .expect("pattern compiles")
    });
    let b = code.as_bytes();
    let mut ranges = Vec::new();
    let mut mods = Vec::new();
    for m in ATTR.find_iter(code) {
        if ranges.iter().any(|&(a, e)| m.start() > a && m.start() < e) {
            continue; // nested inside an item already counted
        }
        let rest = &code[m.end()..];
        if let Some(c) = FILE_MOD.captures(rest) {
            mods.push(c[1].to_string());
            continue;
        }
        let Some(open) = rest.find(['{', ';']).map(|p| m.end() + p) else {
            continue;
        };
        if b[open] == b';' {
            continue;
        }
        ranges.push((m.start(), matching_brace(b, open)));
    }
    (ranges, mods)
}

/// Index of the `}` matching the `{` at `open` (or the end of text), skipping string and char
/// literals.
fn matching_brace(b: &[u8], open: usize) -> usize {
    let mut depth = 0usize;
    let mut i = open;
    while i < b.len() {
        match b[i] {
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'\'' if i + 2 < b.len() && b[i + 2] == b'\'' => i += 2,
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    return i;
                }
            }
            _ => {}
        }
        i += 1;
    }
    b.len().saturating_sub(1)
}

/// Where the files of `mod name;` declared in `path` live (both layouts).
fn test_module_paths(path: &str, mods: &[String]) -> Vec<String> {
    let (dir, name) = path.rsplit_once('/').map_or(("", path), |(d, n)| (d, n));
    let stem = name.trim_end_matches(".rs");
    let base = if matches!(stem, "lib" | "main" | "mod") {
        dir.to_string()
    } else if dir.is_empty() {
        stem.to_string()
    } else {
        format!("{dir}/{stem}")
    };
    let join = |p: String| {
        if base.is_empty() {
            p
        } else {
            format!("{base}/{p}")
        }
    };
    mods.iter()
        .flat_map(|m| [join(format!("{m}.rs")), join(format!("{m}/mod.rs"))])
        .collect()
}

/// Files declared as `#[cfg(test)] mod x;` elsewhere are test code, whatever their path says.
fn reclassify_rust_test_modules(files: &mut [ScannedFile]) {
    let tests: std::collections::HashSet<String> = files
        .iter()
        .flat_map(|f| f.rust_test_module_files.iter().cloned())
        .collect();
    for f in files.iter_mut().filter(|f| tests.contains(&f.path)) {
        if f.category == Category::Production {
            f.category = Category::Test;
            for finding in &mut f.findings {
                if finding.category == Category::Production {
                    finding.category = Category::Test;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::ValueSource;

    fn scan(path: &str, text: &str) -> ScannedFile {
        let lang = Language::detect(Path::new(path)).expect("scanned type");
        let mut f = ScannedFile {
            path: path.to_string(),
            language: Some(lang),
            ..ScannedFile::default()
        };
        scan_text(&mut f, lang, text, &[]);
        f
    }

    fn summary(f: &ScannedFile) -> Vec<(usize, &str, Category, Option<&str>)> {
        f.findings
            .iter()
            .map(|x| (x.line, x.detector.as_str(), x.category, x.value.as_deref()))
            .collect()
    }

    #[test]
    fn findings_carry_line_category_and_value() {
        let f = scan(
            "pkg/ds/server.go",
            "package ds\n\nfunc open() {\n\tdb, _ := sql.Open(\"pgx\", dsn)\n\tdb.SetMaxOpenConns(25) // was 10\n\t// db.SetMaxIdleConns(5)\n}\n",
        );
        assert_eq!(
            summary(&f),
            [
                (4, "go/sql-open", Category::Production, None),
                (5, "go/set-max-open-conns", Category::Production, Some("25")),
                (6, "go/set-max-idle-conns", Category::Docs, Some("5")),
            ]
        );
        assert_eq!(
            f.findings[1].column, 4,
            "columns point at the matched call (its dot)"
        );
        assert!(f.findings[2].in_comment);
    }

    #[test]
    fn pool_parameters_in_connection_strings_are_classified_by_their_own_value() {
        let f = scan(
            "app/db.go",
            "package app\nconst a = \"postgres://h/db?pool_max_conns=10&sslmode=disable\"\nvar b = fmt.Sprintf(\"postgres://h/db?pool_max_conns=%d\", n)\n",
        );
        let got: Vec<_> = f
            .findings
            .iter()
            .map(|x| (x.line, x.value.as_deref(), x.value_source))
            .collect();
        assert_eq!(
            got,
            [
                (2, Some("10"), Some(ValueSource::Literal)),
                (3, Some("%d"), Some(ValueSource::Config))
            ]
        );
    }

    #[test]
    fn rust_cfg_test_modules_are_test_code() {
        let f = scan(
            "src/db.rs",
            "use sqlx::PgPool;\npub async fn pool(u: &str) { PgPool::connect(u).await; }\n#[cfg(test)]\nmod tests {\n    fn s() -> &'static str { \"}\" }\n    async fn t() { PgPool::connect(\"x\").await; }\n}\nfn after() { PgPool::connect(\"y\"); }\n#[cfg(test)]\nmod more;\n",
        );
        let cats: Vec<_> = f
            .findings
            .iter()
            .filter(|x| x.kind == FindingKind::Connection)
            .map(|x| (x.line, x.category))
            .collect();
        assert_eq!(
            cats,
            [
                (2, Category::Production),
                (6, Category::Test),
                (8, Category::Production)
            ]
        );
        assert_eq!(
            f.rust_test_module_files,
            ["src/db/more.rs", "src/db/more/mod.rs"]
        );
    }

    #[test]
    fn cargo_dev_dependencies_are_test_findings() {
        let f = scan(
            "crates/x/Cargo.toml",
            "[package]\nname = \"x\"\n[dependencies]\nsqlx = \"0.8\"\n[dev-dependencies]\ntokio-postgres = \"0.7\"\n",
        );
        assert_eq!(
            summary(&f),
            [
                (4, "cargo/driver-dependency", Category::Production, None),
                (6, "cargo/driver-dependency", Category::Test, None),
            ]
        );
        assert_eq!(
            f.cargo.as_ref().and_then(|c| c.package.as_deref()),
            Some("x")
        );
    }

    #[test]
    fn go_imports_and_module_paths_are_read() {
        let f = scan(
            "cmd/gw/main.go",
            "package main\nimport (\n\t\"fmt\"\n\tds \"example.com/k/pkg/datastorage/client\"\n)\nimport \"os\"\n",
        );
        assert_eq!(
            f.go_imports,
            ["example.com/k/pkg/datastorage/client", "fmt", "os"]
        );
        let m = scan("go.mod", "module example.com/k\n\ngo 1.22\n");
        assert_eq!(m.go_module.as_deref(), Some("example.com/k"));
    }

    #[test]
    fn deploy_yaml_values_are_findings_but_values_files_are_not() {
        let manifest = "apiVersion: v1\nkind: ConfigMap\ndata:\n  DB_MAX_OPEN_CONNS: \"100\"\n";
        let f = scan("deploy/cm.yaml", manifest);
        assert_eq!(
            summary(&f),
            [(4, "yaml/pool-value", Category::Production, Some("\"100\""))]
        );
        assert!(f.findings[0].deploy);
        assert!(scan("charts/x/values.yaml", "maxOpenConns: 100\n")
            .findings
            .is_empty());
    }
}
