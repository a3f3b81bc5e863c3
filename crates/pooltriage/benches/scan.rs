//! Scan-speed benchmark: generates a synthetic 10,000-file polyglot repository in a temporary
//! directory and times the whole triage (walk, scan, services, policy, report) over it.
//!
//! Run with `cargo bench -p pooltriage --bench scan`. Optional arguments: number of files
//! (default 10000) and number of timed runs (default 3), e.g.
//! `cargo bench -p pooltriage --bench scan -- 20000 5`. Prints files/s and wall time; it
//! asserts nothing, because timing goals belong in benchmarks, not tests.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

const SERVICES: usize = 25;

fn main() -> std::io::Result<()> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let files = args.first().copied().unwrap_or(10_000);
    let runs = args.get(1).copied().unwrap_or(3);

    let dir = tempfile::tempdir()?;
    let started = Instant::now();
    let (written, bytes) = generate(dir.path(), files)?;
    println!(
        "generated {written} files ({:.1} MiB) in {:.2?} under {}",
        bytes as f64 / (1024.0 * 1024.0),
        started.elapsed(),
        dir.path().display()
    );

    let opts = pooltriage::Options {
        root: dir.path().to_path_buf(),
        ..pooltriage::Options::default()
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("threads: {threads} (available parallelism)");
    for run in 1..=runs {
        let t = Instant::now();
        let report = pooltriage::triage(&opts).expect("triage runs");
        let wall = t.elapsed();
        let md = pooltriage::render(&report, pooltriage::Format::Markdown);
        println!(
            "run {run}: {} files seen, {} scanned, {} services, {} findings, {} violations; wall {:.3} s, {:.0} files/s, {:.1} MiB/s (report {} KiB)",
            report.files.seen,
            report.files.scanned,
            report.services.len(),
            report.findings.len(),
            report.active_violations().count(),
            wall.as_secs_f64(),
            report.files.seen as f64 / wall.as_secs_f64(),
            bytes as f64 / (1024.0 * 1024.0) / wall.as_secs_f64(),
            md.len() / 1024
        );
    }
    Ok(())
}

/// Writes `n` files spread over Go services, shared packages, Rust, Python, TypeScript, YAML,
/// docs, tests, vendored code and binaries; returns (files, bytes).
fn generate(root: &Path, n: usize) -> std::io::Result<(usize, u64)> {
    let mut out = Writer {
        root,
        count: 0,
        bytes: 0,
    };
    let mut write = |rel: &str, content: &[u8]| out.write(rel, content);
    write(
        "go.mod",
        b"module example.com/bench\n\ngo 1.22\n\nrequire github.com/lib/pq v1.10.9\n",
    )?;
    write(".gitignore", b"build/\n")?;
    write("build/ignored.go", b"package build\n")?;
    for s in 0..SERVICES {
        write(
            &format!("cmd/svc{s:02}/main.go"),
            format!(
                "package main\n\nimport (\n\t\"fmt\"\n\t\"example.com/bench/pkg/svc{s:02}/p0\"\n)\n\nfunc main() {{ fmt.Println(p0.Run()) }}\n"
            )
            .as_bytes(),
        )?;
    }
    let mut i = 0usize;
    let mut written = SERVICES + 3;
    while written < n {
        let s = i % SERVICES;
        let p = (i / SERVICES) % 40;
        let body = filler(i);
        let (rel, content): (String, String) = match i % 20 {
            0..=7 => {
                let next = if p < 39 {
                    format!("import \"example.com/bench/pkg/svc{s:02}/p{}\"\n", p + 1)
                } else {
                    String::new()
                };
                let db = if i.is_multiple_of(97) {
                    "\nfunc open(dsn string) { db, _ := sql.Open(\"postgres\", dsn); db.SetMaxOpenConns(cfg.Max) }\n"
                } else {
                    ""
                };
                (format!("pkg/svc{s:02}/p{p}/f{i}.go"), format!("package p{p}\n\n{next}{db}\n{body}"))
            }
            8..=9 => (format!("pkg/svc{s:02}/p{p}/f{i}_test.go"), format!("package p{p}\n\n// db.SetMaxOpenConns(50)\n{body}")),
            10..=11 => (format!("crates/c{s}/src/m{i}.rs"), format!("use std::fmt;\n\n/// Docs.\npub fn f{i}() -> usize {{ {i} }}\n{body}")),
            12..=13 => (format!("services/py{s}/app/m{i}.py"), format!("import os\n\n\ndef f{i}():\n    \"\"\"Docstring.\"\"\"\n    return {i}\n{body}")),
            14 => (format!("web/src/m{i}.ts"), format!("export const f{i} = () => {i};\n{body}")),
            15 => (format!("deploy/m{i}.yaml"), format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: m{i}\ndata:\n  LOG_LEVEL: info\n  DB_MAX_OPEN_CONNS: \"{{{{ .Values.db.max }}}}\"\n")),
            16 => (format!("docs/d{i}.md"), format!("# Doc {i}\n\n```go\ndb.SetMaxOpenConns(25)\n```\n{body}")),
            17 => (format!("vendor/github.com/x/y{i}/z.go"), format!("package y\n\nfunc f() {{ sql.Open(\"x\", \"y\") }}\n{body}")),
            18 => (format!("assets/i{i}.png"), String::from_utf8_lossy(&[0x89, b'P', b'N', b'G', 0, 0, 0, 13]).into_owned()),
            _ => (format!("misc/n{i}.txt"), body),
        };
        write(&rel, content.as_bytes())?;
        written += 1;
        i += 1;
    }
    Ok((out.count, out.bytes))
}

/// About 3 KiB of plausible code-like text.
fn filler(seed: usize) -> String {
    let mut s = String::with_capacity(3200);
    for k in 0..60 {
        let _ = writeln!(
            s,
            "// line {k} of {seed}: ordinary logic, value = {} + {k}",
            seed * 31
        );
    }
    s
}

/// Writes files under a root and counts them.
struct Writer<'a> {
    root: &'a Path,
    count: usize,
    bytes: u64,
}

impl Writer<'_> {
    fn write(&mut self, rel: &str, content: &[u8]) -> std::io::Result<()> {
        let p = self.root.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(p, content)?;
        self.count += 1;
        self.bytes += content.len() as u64;
        Ok(())
    }
}
