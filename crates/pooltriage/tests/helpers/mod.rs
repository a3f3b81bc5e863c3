//! Helpers for the end-to-end tests: run the real `pooltriage` binary on fixtures (or on copies
//! of them in temporary directories) and read its output back as typed values.

// Shared by several test crates; each uses a subset.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use pooltriage::Report;

/// The output of one run of the binary.
pub struct Run {
    /// The process exit code.
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Run {
    /// Parses stdout as a JSON report.
    pub fn report(&self) -> Report {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is a JSON report ({e}); stderr: {}", self.stderr))
    }
}

/// Path of a fixture repository.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Runs the binary with `args` (progress is never shown: stderr is a pipe).
pub fn pooltriage<I, S>(args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let out = Command::new(env!("CARGO_BIN_EXE_pooltriage"))
        .args(args)
        .output()
        .expect("the pooltriage binary runs");
    Run {
        code: out.status.code().expect("exited normally"),
        stdout: String::from_utf8(out.stdout).expect("stdout is UTF-8"),
        stderr: String::from_utf8(out.stderr).expect("stderr is UTF-8"),
    }
}

/// Runs the binary on `root` with `--format json` and returns the run and its report.
pub fn json_report(root: &Path, extra: &[&str]) -> (Run, Report) {
    let mut args: Vec<std::ffi::OsString> = vec![root.into(), "--format".into(), "json".into()];
    args.extend(extra.iter().map(Into::into));
    let run = pooltriage(args);
    let report = run.report();
    (run, report)
}

/// A copy of a fixture in a fresh temporary directory, with optional overlay fixtures applied
/// on top (files of the overlay replace files of the same path).
pub fn copy_of(name: &str, overlays: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    copy_dir(&fixture(name), dir.path());
    for o in overlays {
        copy_dir(&fixture(o), dir.path());
    }
    dir
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create dir");
    for entry in std::fs::read_dir(from).expect("read fixture dir") {
        let entry = entry.expect("dir entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy file");
        }
    }
}

/// The 1-based line of `file` (relative to `root`) that contains `needle`; panics unless exactly
/// one line does, so tests cannot drift silently when fixtures change.
pub fn line_of(root: &Path, file: &str, needle: &str) -> usize {
    let text = std::fs::read_to_string(root.join(file)).expect("fixture file");
    let lines: Vec<usize> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| l.contains(needle))
        .map(|(i, _)| i + 1)
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "{needle:?} occurs once in {file}: {lines:?}"
    );
    lines[0]
}

/// A violation as (rule id, file, line, services).
pub type Row = (String, String, usize, Vec<String>);

/// Expected violations, written as `(rule, file, line, services)` tuples.
pub fn rows(items: &[(&str, &str, usize, &[&str])]) -> BTreeSet<Row> {
    items
        .iter()
        .map(|(rule, file, line, svcs)| {
            (
                rule.to_string(),
                file.to_string(),
                *line,
                svcs.iter().map(|s| s.to_string()).collect(),
            )
        })
        .collect()
}

/// Active (not allowlisted) violations as (rule, file, line, services).
pub fn active_violations(report: &Report) -> BTreeSet<Row> {
    report
        .active_violations()
        .map(|v| {
            (
                v.rule.id().to_string(),
                v.finding.file.clone(),
                v.finding.line,
                v.services.clone(),
            )
        })
        .collect()
}
