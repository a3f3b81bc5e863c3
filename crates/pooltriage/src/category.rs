//! Sorting files (and lines within them) into production, test, docs, example, generated and
//! vendored code, by ecosystem conventions.
//!
//! Rules, in order of precedence: vendored directories win over everything (a vendored test is
//! still someone else's code); then generated-file headers; then prose extensions; then the first
//! conventional directory on the path from the scan root (`test/examples/x.go` is a test,
//! `examples/test/x.go` an example); then test file-name conventions. Anything else is
//! production. Paths are always relative to the scan root, so a repository checked out under a
//! directory called `test` is still classified correctly.

use std::sync::LazyLock;

use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::names::words;

/// Where a finding lives, which decides whether it can be a violation.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "kebab-case")]
pub enum Category {
    /// Code that ships: the only category policy applies to.
    #[default]
    Production,
    /// Test code, fixtures and test data.
    Test,
    /// Documentation, and any mention inside a code comment.
    Docs,
    /// Example programs.
    Example,
    /// Files carrying a generated-code header.
    Generated,
    /// Third-party code copied into the repository.
    Vendored,
}

impl Category {
    /// Every category, in report order.
    pub const ALL: [Category; 6] = [
        Category::Production,
        Category::Test,
        Category::Docs,
        Category::Example,
        Category::Generated,
        Category::Vendored,
    ];

    /// The lower-case name used in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Production => "production",
            Category::Test => "test",
            Category::Docs => "docs",
            Category::Example => "example",
            Category::Generated => "generated",
            Category::Vendored => "vendored",
        }
    }
}

const VENDORED_DIRS: &[&str] = &["vendor", "third_party", "third-party", "node_modules"];
const DOC_EXTENSIONS: &[&str] = &["md", "markdown", "rst", "adoc", "txt"];

fn dir_category(component: &str) -> Option<Category> {
    match component {
        "test" | "tests" | "testdata" | "__tests__" | "__mocks__" | "e2e" | "testing" => {
            Some(Category::Test)
        }
        "docs" | "doc" | "documentation" => Some(Category::Docs),
        "examples" | "example" | "_examples" | "samples" | "sample" => Some(Category::Example),
        _ => None,
    }
}

fn is_test_file_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower.ends_with("_test.go")
        || (lower.starts_with("test_") && lower.ends_with(".py"))
        || lower.ends_with("_test.py")
        || lower == "conftest.py"
        || lower.ends_with("_test.rs")
        || name.ends_with("Test.java")
        || name.ends_with("Tests.java")
        || name.ends_with("IT.java")
        || name.ends_with("Test.kt")
        || [".test.", ".spec."].iter().any(|m| {
            lower.contains(m)
                && ["js", "mjs", "cjs", "jsx", "ts", "mts", "cts", "tsx"]
                    .iter()
                    .any(|e| lower.ends_with(&format!(".{e}")))
        })
}

/// True for file names that say they are an example or a sample: a word `example(s)` or
/// `sample(s)` in the name, split at separators and camelCase (`monitoring-example.yaml`,
/// `config.sample.yaml`, `SampleConfig.java`), but not `sampler.go` or `counterexample.go`.
fn is_example_file_name(name: &str) -> bool {
    words(name)
        .iter()
        .any(|w| matches!(w.as_str(), "example" | "examples" | "sample" | "samples"))
}

/// Classifies a file from its path relative to the scan root (forward slashes) and, when it was
/// read, its text (for generated-file headers).
pub fn classify_file(rel_path: &str, text: Option<&str>) -> Category {
    let parts: Vec<&str> = rel_path.split('/').collect();
    let (name, dirs) = parts.split_last().map_or(("", &[][..]), |(n, d)| (*n, d));
    if dirs.iter().any(|d| VENDORED_DIRS.contains(d)) {
        return Category::Vendored;
    }
    if text.is_some_and(is_generated) {
        return Category::Generated;
    }
    let ext = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
    if ext.as_deref().is_some_and(|e| DOC_EXTENSIONS.contains(&e))
        && !name.to_ascii_lowercase().starts_with("requirements")
    {
        return Category::Docs;
    }
    if let Some(cat) = convention_dirs(dirs).iter().find_map(|d| dir_category(d)) {
        return cat;
    }
    if is_test_file_name(name) {
        return Category::Test;
    }
    if is_example_file_name(name) {
        return Category::Example;
    }
    Category::Production
}

/// The directories whose names carry meaning. Below a Maven/Gradle source root
/// (`src/main/...`, `src/test/...`) the rest is a package path (`com/example/...`), so only the
/// components up to `main`/`test` count; `src/test` itself still says "test".
fn convention_dirs<'a, 'b>(dirs: &'b [&'a str]) -> &'b [&'a str] {
    let cut = dirs
        .windows(2)
        .position(|w| w[0] == "src" && matches!(w[1], "main" | "test" | "it" | "integrationTest"));
    match cut {
        Some(i) => &dirs[..i + 2],
        None => dirs,
    }
}

/// Classifies a directory (relative to the scan root) by the same directory conventions; used to
/// keep example and test directories from being detected as services.
pub fn classify_dir(rel_dir: &str) -> Category {
    let parts: Vec<&str> = rel_dir.split('/').filter(|p| !p.is_empty()).collect();
    if parts.iter().any(|d| VENDORED_DIRS.contains(d)) {
        return Category::Vendored;
    }
    convention_dirs(&parts)
        .iter()
        .find_map(|d| dir_category(d))
        .unwrap_or(Category::Production)
}

/// True when the file's first lines carry a generated-code marker (Go's
/// `// Code generated ... DO NOT EDIT.`, `@generated`, `<auto-generated`), or when its header
/// comment (the comment lines before the first line of content) says so in words: "do not
/// edit", "generated by/from/with", "auto-generated", "this file is generated", ...
/// (case-insensitive). Only the header counts, so a description that mentions a generator further
/// down (a CRD field "Generated by the controller") does not make a file generated.
pub fn is_generated(text: &str) -> bool {
    static HEADER_PHRASE: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(
            r"(?i)\bdo not edit\b|\bgenerated (?:by|from|with|using)\b|\bauto[- ]?generated\b|\bautomatically generated\b|\b(?:this|the) (?:file|template|manifest) (?:is|was|has been) (?:auto(?:matically)?[- ]?)?generated\b|\bcode generated\b",
        )
        .expect("pattern compiles")
    });
    let lines: Vec<&str> = text.lines().take(40).collect();
    if lines.iter().any(|line| {
        (line.contains("Code generated") && line.contains("DO NOT EDIT"))
            || line.contains("@generated")
            || line.contains("<auto-generated")
    }) {
        return true;
    }
    // Bound first: a tail-expression iterator borrowing `lines` would outlive it (edition 2021).
    let says_generated = header_comment(&lines).any(|c| HEADER_PHRASE.is_match(c));
    says_generated
}

/// The leading comment lines of a file (blank lines, a shebang and YAML `---` markers are
/// skipped), up to the first line of content.
fn header_comment<'a>(lines: &'a [&str]) -> impl Iterator<Item = &'a str> + 'a {
    const LINE_MARKERS: &[&str] = &["#", "//", "--", ";", "<!--", "\"\"\"", "'''"];
    const BLOCK_OPEN: &[&str] = &["/*", "{{/*", "{{- /*"];
    let mut in_block = false;
    lines.iter().map(|l| l.trim()).take_while(move |l| {
        if l.is_empty() || *l == "---" || l.starts_with("#!") {
            return true;
        }
        if in_block {
            in_block = !l.contains("*/");
            return true;
        }
        if BLOCK_OPEN.iter().any(|m| l.starts_with(m)) {
            in_block = !l.contains("*/");
            return true;
        }
        LINE_MARKERS.iter().any(|m| l.starts_with(m))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ecosystem_conventions_classify_paths() {
        let cases = [
            (
                "pkg/datastorage/server/server.go",
                Category::Production,
                "plain package",
            ),
            (
                "pkg/datastorage/server/server_test.go",
                Category::Test,
                "Go _test.go",
            ),
            (
                "test/integration/datastorage/suite_test.go",
                Category::Test,
                "test/ dir",
            ),
            ("crates/x/tests/api.rs", Category::Test, "Rust tests/ dir"),
            ("pkg/x/testdata/db.go", Category::Test, "Go testdata"),
            ("web/src/__tests__/db.ts", Category::Test, "Jest __tests__"),
            ("web/src/db.spec.ts", Category::Test, "spec.ts"),
            ("app/test_db.py", Category::Test, "pytest test_*.py"),
            ("app/db_test.py", Category::Test, "pytest *_test.py"),
            (
                "svc/src/test/java/DbIT.java",
                Category::Test,
                "Maven src/test",
            ),
            ("docs/pool.go", Category::Docs, "docs/ dir"),
            ("README.md", Category::Docs, "Markdown"),
            ("pkg/x/notes.rst", Category::Docs, "reStructuredText"),
            ("examples/pool/main.go", Category::Example, "examples/"),
            (
                "vendor/github.com/lib/pq/conn.go",
                Category::Vendored,
                "Go vendor",
            ),
            (
                "web/node_modules/pg/lib/client.js",
                Category::Vendored,
                "node_modules",
            ),
            (
                "third_party/x/tests/y.go",
                Category::Vendored,
                "vendored beats test",
            ),
            ("test/examples/x.go", Category::Test, "first directory wins"),
            (
                "examples/test/x.go",
                Category::Example,
                "first directory wins",
            ),
            (
                "services/api/requirements.txt",
                Category::Production,
                "requirements are manifests",
            ),
        ];
        for (path, want, why) in cases {
            assert_eq!(classify_file(path, None), want, "{path}: {why}");
        }
    }

    #[test]
    fn generated_headers_mark_files_generated() {
        let go = "// Code generated by sqlc. DO NOT EDIT.\npackage db\n";
        assert_eq!(classify_file("pkg/db/q.go", Some(go)), Category::Generated);
        assert_eq!(
            classify_file("a.rs", Some("// @generated by build.rs\n")),
            Category::Generated
        );
        assert_eq!(
            classify_file("a.go", Some("package a\n")),
            Category::Production
        );
    }

    #[test]
    fn example_and_sample_file_names_are_examples() {
        for path in [
            "config/monitoring-example.yaml",
            "deploy/config.sample.yaml",
            "src/main/java/com/acme/SampleConfig.java",
            "pkg/db/example_pool.go",
            "config/samples/cr.yaml",
        ] {
            assert_eq!(classify_file(path, None), Category::Example, "{path}");
        }
        for path in ["pkg/tracing/sampler.go", "pkg/x/counterexample.go"] {
            assert_eq!(classify_file(path, None), Category::Production, "{path}");
        }
        assert_eq!(
            classify_file("test/sample_db.go", None),
            Category::Test,
            "a directory convention still wins"
        );
    }

    #[test]
    fn generated_headers_in_words_mark_templates_generated() {
        let cases = [
            "# Do not edit by hand: rendered by make manifests.\napiVersion: v1\n",
            "{{/*\n  Generated by chartgen from deploy/base. \n*/}}\napiVersion: v1\n",
            "---\n# This file is generated as a template to aid in deploying secrets.\n---\napiVersion: v1\n",
            "// Code generated by mockgen; DO NOT EDIT.\npackage x\n",
            "#!/bin/sh\n# NOTE: This file is auto generated by OpenAPI Generator.\n",
        ];
        for text in cases {
            assert_eq!(
                classify_file("deploy/secrets.yaml", Some(text)),
                Category::Generated,
                "{text:?}"
            );
        }
        let not_header = "apiVersion: v1\nkind: ConfigMap\n# the id is generated by the database\n";
        assert_eq!(
            classify_file("deploy/cm.yaml", Some(not_header)),
            Category::Production,
            "only the header counts"
        );
        assert_eq!(
            classify_file(
                "deploy/cm.yaml",
                Some("# Secrets for the API.\napiVersion: v1\n")
            ),
            Category::Production
        );
    }

    #[test]
    fn directories_are_classified_like_files() {
        assert_eq!(classify_dir("examples/svc"), Category::Example);
        assert_eq!(classify_dir("cmd/gateway"), Category::Production);
        assert_eq!(classify_dir(""), Category::Production);
    }
}
