//! Finding the services of a repository and which files belong to each.
//!
//! Rules: services come from Go `cmd/<name>` directories (at the root or at a Go module root),
//! Rust packages with a binary target, root-level `services/*` and `apps/*`, and directories
//! holding a Dockerfile (`Dockerfile`, `Dockerfile.prod`, `Dockerfile-slim`, `api.Dockerfile`,
//! and the same for `Containerfile`); configured services replace auto-detected ones of the same
//! name. A service owns its directory. A Go `cmd/<name>` service also owns the non-test Go files
//! of every package of a module in this repository that it imports, transitively; a Rust service
//! owns its path dependencies, transitively. Candidates in test, docs, example or vendored
//! directories are not services, and neither are test images (`Dockerfile.e2e`,
//! `test-runner.Dockerfile`). A Dockerfile in a packaging directory (`deploy/`, `docker/`,
//! `build/`, `ci/`, ...) builds the directory above it (above all of them when they nest), so
//! `deploy/Dockerfile-slim` and `build/package/Dockerfile` build the root.
//! When nothing else was found, a root-level Dockerfile or a `package.json`, `go.mod` or
//! `Cargo.toml` package at the root makes the whole repository one service, named after the
//! manifest's package (or the root directory).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};

use serde::{Deserialize, Serialize};

use crate::category::{classify_dir, Category};
use crate::config::{PathPattern, Resolved};
use crate::lang::Language;
use crate::names::{normalize_name, words};
use crate::scan::ScannedFile;

/// How a service was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DetectedBy {
    /// A Go `cmd/<name>` directory.
    GoCmd,
    /// A Rust package with `src/main.rs`, `src/bin/` or `[[bin]]`.
    CargoBin,
    /// A directory under the root's `services/`.
    ServicesDir,
    /// A directory under the root's `apps/`.
    AppsDir,
    /// A directory holding a Dockerfile (or a packaging directory's Dockerfile building it).
    Dockerfile,
    /// The repository root, from its `package.json`, `go.mod` or `Cargo.toml`, when nothing else
    /// marks a service.
    RootManifest,
    /// Named in `.pooltriage.yaml`.
    Config,
}

impl DetectedBy {
    /// Human-readable form for reports.
    pub fn describe(self) -> &'static str {
        match self {
            DetectedBy::GoCmd => "Go cmd/",
            DetectedBy::CargoBin => "Rust binary",
            DetectedBy::ServicesDir => "services/",
            DetectedBy::AppsDir => "apps/",
            DetectedBy::Dockerfile => "Dockerfile",
            DetectedBy::RootManifest => "root manifest",
            DetectedBy::Config => "config",
        }
    }
}

/// A service and the file set it owns.
#[derive(Debug, Clone)]
pub struct Service {
    /// The service's name.
    pub name: String,
    /// How it was found.
    pub detected_by: DetectedBy,
    /// Its own paths (directories, or config patterns as written).
    pub roots: Vec<String>,
    /// Go package directories pulled in through imports.
    pub go_packages: Vec<String>,
    /// Rust path-dependency directories.
    pub crate_dependencies: Vec<String>,
    patterns: Vec<PathPattern>,
    go_package_set: HashSet<String>,
}

impl Service {
    fn new(name: String, detected_by: DetectedBy, roots: Vec<String>) -> Service {
        let patterns = roots
            .iter()
            .map(|r| PathPattern::Prefix(r.clone()))
            .collect();
        Service {
            name,
            detected_by,
            roots,
            go_packages: Vec::new(),
            crate_dependencies: Vec::new(),
            patterns,
            go_package_set: HashSet::new(),
        }
    }

    /// True when `file` belongs to the service.
    pub fn contains(&self, file: &ScannedFile) -> bool {
        self.patterns.iter().any(|p| p.matches(&file.path))
            || (!self.go_package_set.is_empty()
                && file.language == Some(Language::Go)
                && !file.path.ends_with("_test.go")
                && self.go_package_set.contains(file.dir()))
    }
}

/// Detects services and computes their file sets.
pub fn detect(files: &[ScannedFile], cfg: &Resolved, root_name: &str) -> Vec<Service> {
    let mut found: Vec<Service> = Vec::new();
    if cfg.auto_detect_services {
        let go = GoIndex::new(files);
        add_go_cmds(files, &go, &mut found);
        add_cargo_bins(files, &mut found);
        add_conventional_dirs(files, &mut found);
        add_dockerfile_dirs(files, &mut found, root_name);
    }
    for (svc, pats) in &cfg.services {
        let key = normalize_name(&svc.name);
        found.retain(|s| normalize_name(&s.name) != key);
        let mut s = Service::new(svc.name.clone(), DetectedBy::Config, svc.paths.clone());
        s.patterns = pats.clone();
        found.push(s);
    }
    found.sort_by(|a, b| a.name.cmp(&b.name));
    found
}

/// Adds a service, merging with an existing one of the same name.
fn push(found: &mut Vec<Service>, svc: Service) {
    if let Some(existing) = found.iter_mut().find(|s| s.name == svc.name) {
        for r in svc.roots {
            if !existing.roots.contains(&r) {
                existing.roots.push(r);
            }
        }
        existing.patterns.extend(svc.patterns);
        existing.go_packages.extend(svc.go_packages);
        existing.go_package_set.extend(svc.go_package_set);
        existing.crate_dependencies.extend(svc.crate_dependencies);
    } else {
        found.push(svc);
    }
}

fn is_production_dir(dir: &str) -> bool {
    classify_dir(dir) == Category::Production
}

fn under(path: &str, dir: &str) -> bool {
    dir.is_empty()
        || path == dir
        || (path.starts_with(dir) && path.as_bytes().get(dir.len()) == Some(&b'/'))
}

/// Go modules and packages of the repository.
struct GoIndex<'a> {
    /// (module root dir, module path), longest module path first.
    modules: Vec<(String, String)>,
    /// package dir → non-test Go files.
    packages: HashMap<&'a str, Vec<&'a ScannedFile>>,
}

impl<'a> GoIndex<'a> {
    fn new(files: &'a [ScannedFile]) -> GoIndex<'a> {
        let mut modules: Vec<(String, String)> = files
            .iter()
            .filter_map(|f| {
                f.go_module
                    .as_ref()
                    .map(|m| (f.dir().to_string(), m.clone()))
            })
            .collect();
        modules.sort_by_key(|(_, m)| std::cmp::Reverse(m.len()));
        let mut packages: HashMap<&str, Vec<&ScannedFile>> = HashMap::new();
        for f in files {
            if f.language == Some(Language::Go) && !f.path.ends_with("_test.go") {
                packages.entry(f.dir()).or_default().push(f);
            }
        }
        GoIndex { modules, packages }
    }

    /// The repository directory of a Go import path, if it belongs to a module here.
    fn resolve(&self, import: &str) -> Option<String> {
        self.modules.iter().find_map(|(root, module)| {
            let rest = import.strip_prefix(module.as_str())?;
            if !rest.is_empty() && !rest.starts_with('/') {
                return None;
            }
            let rest = rest.trim_start_matches('/');
            Some(match (root.is_empty(), rest.is_empty()) {
                (true, _) => rest.to_string(),
                (false, true) => root.clone(),
                (false, false) => format!("{root}/{rest}"),
            })
        })
    }

    fn is_module_root(&self, dir: &str) -> bool {
        self.modules.iter().any(|(root, _)| root == dir)
    }
}

fn add_go_cmds(files: &[ScannedFile], go: &GoIndex<'_>, found: &mut Vec<Service>) {
    let mut cmds: BTreeMap<String, String> = BTreeMap::new(); // dir -> name
    for f in files.iter().filter(|f| f.language == Some(Language::Go)) {
        let parts: Vec<&str> = f.path.split('/').collect();
        for i in 0..parts.len().saturating_sub(2) {
            if parts[i] != "cmd" {
                continue;
            }
            let base = parts[..i].join("/");
            if !(base.is_empty() || go.is_module_root(&base)) {
                continue;
            }
            let dir = parts[..=i + 1].join("/");
            if is_production_dir(&dir) {
                cmds.insert(dir, parts[i + 1].to_string());
            }
            break;
        }
    }
    for (dir, name) in cmds {
        let mut svc = Service::new(name, DetectedBy::GoCmd, vec![dir.clone()]);
        let mut queue: VecDeque<&ScannedFile> = files
            .iter()
            .filter(|f| {
                f.language == Some(Language::Go)
                    && !f.path.ends_with("_test.go")
                    && under(&f.path, &dir)
            })
            .collect();
        let mut seen: BTreeSet<String> = BTreeSet::new();
        while let Some(f) = queue.pop_front() {
            for import in &f.go_imports {
                let Some(pkg) = go.resolve(import) else {
                    continue;
                };
                if under(&pkg, &dir) || !seen.insert(pkg.clone()) {
                    continue;
                }
                if let Some(pkg_files) = go.packages.get(pkg.as_str()) {
                    queue.extend(pkg_files.iter().copied());
                }
            }
        }
        svc.go_packages = seen
            .iter()
            .filter(|p| go.packages.contains_key(p.as_str()))
            .cloned()
            .collect();
        svc.go_package_set = svc.go_packages.iter().cloned().collect();
        push(found, svc);
    }
}

fn add_cargo_bins(files: &[ScannedFile], found: &mut Vec<Service>) {
    let paths: HashSet<&str> = files.iter().map(|f| f.path.as_str()).collect();
    let rust_dirs: HashSet<&str> = files
        .iter()
        .filter(|f| f.path.ends_with(".rs"))
        .map(ScannedFile::dir)
        .collect();
    let manifests: Vec<(&str, &crate::scan::CargoManifest)> = files
        .iter()
        .filter_map(|f| f.cargo.as_ref().map(|c| (f.dir(), c)))
        .collect();
    let by_dir: HashMap<&str, &crate::scan::CargoManifest> = manifests.iter().copied().collect();
    for &(dir, m) in &manifests {
        let Some(name) = &m.package else { continue };
        let src = if dir.is_empty() {
            "src".to_string()
        } else {
            format!("{dir}/src")
        };
        let has_bin = m.has_bin_section
            || paths.contains(format!("{src}/main.rs").as_str())
            || rust_dirs.contains(format!("{src}/bin").as_str());
        if !has_bin || !is_production_dir(dir) {
            continue;
        }
        let mut svc = Service::new(name.clone(), DetectedBy::CargoBin, vec![dir.to_string()]);
        let mut seen: BTreeSet<String> = BTreeSet::new();
        let mut queue = vec![dir.to_string()];
        while let Some(crate_dir) = queue.pop() {
            let Some(cm) = by_dir.get(crate_dir.as_str()) else {
                continue;
            };
            let mut deps: Vec<String> = cm
                .path_dependencies
                .iter()
                .map(|p| join_rel(&crate_dir, p))
                .collect();
            for name in &cm.workspace_dependencies {
                if let Some(p) = workspace_path(&manifests, &crate_dir, name) {
                    deps.push(p);
                }
            }
            for d in deps {
                if d != dir && seen.insert(d.clone()) {
                    queue.push(d);
                }
            }
        }
        svc.crate_dependencies = seen.into_iter().collect();
        svc.patterns.extend(
            svc.crate_dependencies
                .iter()
                .map(|d| PathPattern::Prefix(d.clone())),
        );
        push(found, svc);
    }
}

/// Resolves `name = { workspace = true }` through the nearest enclosing workspace manifest.
fn workspace_path(
    manifests: &[(&str, &crate::scan::CargoManifest)],
    crate_dir: &str,
    name: &str,
) -> Option<String> {
    manifests
        .iter()
        .filter(|(d, m)| under(crate_dir, d) && !m.workspace_path_dependencies.is_empty())
        .max_by_key(|(d, _)| d.len())
        .and_then(|(d, m)| {
            m.workspace_path_dependencies
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, p)| join_rel(d, p))
        })
}

/// Joins a relative path onto a directory, resolving `.` and `..`.
fn join_rel(dir: &str, rel: &str) -> String {
    let mut parts: Vec<&str> = dir.split('/').filter(|p| !p.is_empty()).collect();
    for p in rel.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    parts.join("/")
}

fn add_conventional_dirs(files: &[ScannedFile], found: &mut Vec<Service>) {
    let mut dirs: BTreeMap<String, DetectedBy> = BTreeMap::new();
    for f in files {
        let mut parts = f.path.splitn(3, '/');
        let (Some(top), Some(name), Some(_)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let by = match top {
            "services" => DetectedBy::ServicesDir,
            "apps" => DetectedBy::AppsDir,
            _ => continue,
        };
        dirs.insert(format!("{top}/{name}"), by);
    }
    for (dir, by) in dirs {
        let name = dir.rsplit('/').next().unwrap_or(&dir).to_string();
        if found
            .iter()
            .any(|s| s.roots.iter().any(|r| under(&dir, r) || under(r, &dir)))
        {
            // Already a service (e.g. a Rust binary crate in services/x): keep that one, it
            // knows more (path dependencies), but make sure the whole directory is covered.
            if let Some(s) = found
                .iter_mut()
                .find(|s| s.roots.iter().any(|r| under(r, &dir)))
            {
                if !s.roots.contains(&dir) {
                    s.patterns.push(PathPattern::Prefix(dir.clone()));
                    s.roots.push(dir);
                }
            }
            continue;
        }
        push(found, Service::new(name, by, vec![dir]));
    }
}

/// Directories that hold build files for their parent rather than a service of their own.
const PACKAGING_DIRS: &[&str] = &[
    "deploy",
    "deployment",
    "deployments",
    "docker",
    "dockerfiles",
    "build",
    "ci",
    "container",
    "containers",
    "images",
    "package",
    "packaging",
];

/// For a Dockerfile name (`Dockerfile`, `Dockerfile.prod`, `Dockerfile-slim`, `api.Dockerfile`,
/// `Containerfile`, ...), the variant words around it (`prod`, `slim`, `api`); `None` for other
/// files.
fn dockerfile_variant(name: &str) -> Option<Vec<String>> {
    let lower = name.to_ascii_lowercase();
    for base in ["dockerfile", "containerfile"] {
        if lower == base {
            return Some(Vec::new());
        }
        if let Some(rest) = lower.strip_prefix(base) {
            if rest.starts_with(['.', '-', '_']) {
                return Some(words(rest));
            }
        }
        if let Some(rest) = lower.strip_suffix(base) {
            if rest.ends_with(['.', '-', '_']) {
                return Some(words(rest));
            }
        }
    }
    None
}

/// True for images built only for tests (`Dockerfile.e2e`, `test-runner.Dockerfile`).
fn is_test_image(words: &[String]) -> bool {
    words.iter().any(|w| {
        matches!(
            w.as_str(),
            "test" | "tests" | "e2e" | "integration" | "mock" | "bench" | "fixture" | "fixtures"
        )
    })
}

fn add_dockerfile_dirs(files: &[ScannedFile], found: &mut Vec<Service>, root_name: &str) {
    let mut root_dockerfile = false;
    for f in files {
        let Some(variant) = dockerfile_variant(f.name()) else {
            continue;
        };
        if is_test_image(&variant) {
            continue;
        }
        // `build/package/Dockerfile` (the Go project layout) and `deploy/docker/Dockerfile`
        // build the root: every packaging directory at the end of the path is stripped.
        let mut dir = f.dir();
        while !dir.is_empty() && PACKAGING_DIRS.contains(&dir.rsplit('/').next().unwrap_or(dir)) {
            dir = dir.rsplit_once('/').map_or("", |(parent, _)| parent);
        }
        let dir = dir.to_string();
        if dir.is_empty() {
            root_dockerfile = true;
            continue;
        }
        if !is_production_dir(&dir)
            || found
                .iter()
                .any(|s| s.roots.iter().any(|r| under(&dir, r) || under(r, &dir)))
        {
            continue;
        }
        let name = dir.rsplit('/').next().unwrap_or(&dir).to_string();
        push(found, Service::new(name, DetectedBy::Dockerfile, vec![dir]));
    }
    if !found.is_empty() {
        return;
    }
    let manifest_name = root_manifest_name(files, root_name);
    let by = if root_dockerfile {
        DetectedBy::Dockerfile
    } else if manifest_name.is_some() {
        DetectedBy::RootManifest
    } else {
        return;
    };
    let name = manifest_name.unwrap_or_else(|| root_name.to_string());
    push(found, Service::new(name, by, vec![String::new()]));
}

/// When the root holds a `package.json`, a `Cargo.toml` with a `[package]` or a `go.mod`: the
/// first package name they give (`@scope/` and a Go `/vN` dropped), else `root_name`. `None`
/// without such a manifest.
fn root_manifest_name(files: &[ScannedFile], root_name: &str) -> Option<String> {
    let mut seen = false;
    let mut names: Vec<String> = Vec::new();
    for f in files.iter().filter(|f| f.dir().is_empty()) {
        match f.name() {
            "package.json" => {
                seen = true;
                if let Some(n) = &f.package_name {
                    names.push(n.rsplit('/').next().unwrap_or(n).to_string());
                }
            }
            "Cargo.toml" => {
                if let Some(n) = f.cargo.as_ref().and_then(|c| c.package.clone()) {
                    seen = true;
                    names.push(n);
                }
            }
            "go.mod" => {
                seen = true;
                if let Some(m) = &f.go_module {
                    let mut parts = m.rsplit('/');
                    let last = parts.next().unwrap_or(m);
                    let major_version = last.len() > 1
                        && last.starts_with('v')
                        && last[1..].chars().all(|c| c.is_ascii_digit());
                    let name = if major_version {
                        parts.next().unwrap_or(last)
                    } else {
                        last
                    };
                    names.push(name.to_string());
                }
            }
            _ => {}
        }
    }
    seen.then(|| {
        names
            .into_iter()
            .find(|n| !n.is_empty())
            .unwrap_or_else(|| root_name.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scan::scan_text;
    use std::path::Path;

    fn file(path: &str, text: &str) -> ScannedFile {
        let mut f = ScannedFile {
            path: path.to_string(),
            language: Language::detect(Path::new(path)),
            ..ScannedFile::default()
        };
        if let Some(lang) = f.language {
            scan_text(&mut f, lang, text, &[]);
        }
        f
    }

    #[test]
    fn go_cmd_services_follow_module_imports_transitively() {
        let files = vec![
            file("go.mod", "module example.com/k\n"),
            file(
                "cmd/ds/main.go",
                "package main\nimport \"example.com/k/pkg/ds/server\"\n",
            ),
            file(
                "cmd/gw/main.go",
                "package main\nimport \"example.com/k/pkg/gw\"\n",
            ),
            file(
                "pkg/ds/server/server.go",
                "package server\nimport \"example.com/k/pkg/ds/repo\"\n",
            ),
            file("pkg/ds/server/server_test.go", "package server\n"),
            file(
                "pkg/ds/repo/repo.go",
                "package repo\nimport \"database/sql\"\n",
            ),
            file("pkg/gw/gw.go", "package gw\n"),
        ];
        let svcs = detect(&files, &Resolved::default(), "repo");
        let names: Vec<_> = svcs.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["ds", "gw"]);
        assert_eq!(svcs[0].go_packages, ["pkg/ds/repo", "pkg/ds/server"]);
        let owned: Vec<_> = files
            .iter()
            .filter(|f| svcs[0].contains(f))
            .map(|f| f.path.as_str())
            .collect();
        assert_eq!(
            owned,
            [
                "cmd/ds/main.go",
                "pkg/ds/server/server.go",
                "pkg/ds/repo/repo.go"
            ]
        );
        assert!(!files
            .iter()
            .any(|f| f.path.starts_with("pkg/ds") && svcs[1].contains(f)));
    }

    #[test]
    fn rust_binaries_services_dirs_and_dockerfiles_are_services() {
        let files = vec![
            file("Cargo.toml", "[workspace]\nmembers=[\"crates/*\"]\n[workspace.dependencies]\ndb = { path = \"crates/db\" }\n"),
            file("crates/api/Cargo.toml", "[package]\nname = \"api\"\n[dependencies]\ndb = { workspace = true }\n"),
            file("crates/api/src/main.rs", "fn main() {}\n"),
            file("crates/db/Cargo.toml", "[package]\nname = \"db\"\n"),
            file("crates/db/src/lib.rs", "\n"),
            file("services/reports/app.py", "\n"),
            file("tools/migrator/Dockerfile", ""),
            file("examples/demo/Dockerfile", ""),
            file("Dockerfile", ""),
        ];
        let svcs = detect(&files, &Resolved::default(), "repo");
        let got: Vec<_> = svcs
            .iter()
            .map(|s| (s.name.as_str(), s.detected_by))
            .collect();
        assert_eq!(
            got,
            [
                ("api", DetectedBy::CargoBin),
                ("migrator", DetectedBy::Dockerfile),
                ("reports", DetectedBy::ServicesDir)
            ]
        );
        assert_eq!(svcs[0].crate_dependencies, ["crates/db"]);
        assert!(
            svcs[0].contains(&files[4]),
            "path dependency files belong to the binary"
        );
    }

    #[test]
    fn a_root_dockerfile_is_a_service_only_when_nothing_else_is() {
        let files = vec![file("Dockerfile", ""), file("app.py", "\n")];
        let svcs = detect(&files, &Resolved::default(), "myrepo");
        assert_eq!(svcs.len(), 1);
        assert_eq!(svcs[0].name, "myrepo");
        assert!(svcs[0].contains(&files[1]));
    }

    #[test]
    fn dockerfile_variants_are_services_and_packaging_dirs_build_their_parent() {
        let files = vec![
            file("go.mod", "module example.com/k\n"),
            file("cmd/gateway/main.go", "package main\n"),
            file("docker/gateway-ubi9.Dockerfile", ""),
            file("docker/test-runner.Dockerfile", ""),
            file("web/Dockerfile.prod", ""),
            file("worker/docker/Dockerfile-slim", ""),
            file("reports/reports.Dockerfile", ""),
            file("tools/e2e/Dockerfile.e2e", ""),
            file("cron/Containerfile", ""),
        ];
        let svcs = detect(&files, &Resolved::default(), "repo");
        let got: Vec<_> = svcs
            .iter()
            .map(|s| (s.name.as_str(), s.detected_by, s.roots.clone()))
            .collect();
        assert_eq!(
            got,
            [
                ("cron", DetectedBy::Dockerfile, vec!["cron".to_string()]),
                (
                    "gateway",
                    DetectedBy::GoCmd,
                    vec!["cmd/gateway".to_string()]
                ),
                (
                    "reports",
                    DetectedBy::Dockerfile,
                    vec!["reports".to_string()]
                ),
                ("web", DetectedBy::Dockerfile, vec!["web".to_string()]),
                ("worker", DetectedBy::Dockerfile, vec!["worker".to_string()]),
            ]
        );
    }

    #[test]
    fn nested_packaging_directories_build_the_root() {
        for dockerfile in ["build/package/Dockerfile", "deploy/docker/Dockerfile.prod"] {
            let files = vec![
                file(dockerfile, ""),
                file("package.json", "{\"name\": \"ledger\"}"),
                file("src/db.ts", "\n"),
            ];
            let svcs = detect(&files, &Resolved::default(), "checkout");
            let got: Vec<_> = svcs
                .iter()
                .map(|s| (s.name.as_str(), s.roots.clone()))
                .collect();
            assert_eq!(got, [("ledger", vec![String::new()])], "{dockerfile}");
        }
    }

    #[test]
    fn a_root_manifest_or_packaged_dockerfile_makes_the_repository_one_service() {
        let files = vec![
            file("deploy/Dockerfile-slim", ""),
            file("package.json", "{\"name\": \"@acme/auditlog\"}"),
            file("src/db.ts", "\n"),
        ];
        let svcs = detect(&files, &Resolved::default(), "checkout");
        assert_eq!(svcs.len(), 1);
        assert_eq!(svcs[0].name, "auditlog");
        assert_eq!(svcs[0].detected_by, DetectedBy::Dockerfile);
        assert!(files.iter().all(|f| svcs[0].contains(f)));

        let files = vec![
            file("go.mod", "module github.com/acme/ledger/v2\n"),
            file("main.go", "package main\n"),
        ];
        let svcs = detect(&files, &Resolved::default(), "checkout");
        assert_eq!(svcs.len(), 1);
        assert_eq!(
            (svcs[0].name.as_str(), svcs[0].detected_by),
            ("ledger", DetectedBy::RootManifest)
        );

        let files = vec![
            file("go.mod", "module x\n"),
            file("cmd/api/main.go", "package main\n"),
        ];
        let svcs = detect(&files, &Resolved::default(), "checkout");
        assert_eq!(svcs.len(), 1, "cmd/api is the boundary, not the root");
        assert_eq!(svcs[0].name, "api");
    }

    #[test]
    fn configured_services_replace_detected_ones() {
        let files = vec![file("services/a/x.py", "\n"), file("libs/a-db/y.py", "\n")];
        let cfg = crate::config::Config::parse(
            "services:\n  - name: a\n    paths: [services/a, 'libs/a-db/**']\n",
        )
        .unwrap()
        .resolve()
        .unwrap();
        let svcs = detect(&files, &cfg, "r");
        assert_eq!(svcs.len(), 1);
        assert_eq!(svcs[0].detected_by, DetectedBy::Config);
        assert!(files.iter().all(|f| svcs[0].contains(f)));
    }
}
