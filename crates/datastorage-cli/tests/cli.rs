//! The binary as a user runs it: no config (SQLite default), `check`, `config` commands.

use std::process::{Command, Stdio};
use std::time::Duration;

use datastorage_testkit::process::{binary, sigterm, ChildGuard};
use datastorage_testkit::*;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_with_no_config_stores_into_sqlite_under_data() {
    let dir = tempfile::tempdir().unwrap();
    let (port, metrics_port) = (free_port(), free_port());
    let child = Command::new(binary())
        .arg("serve")
        .current_dir(dir.path())
        .env("DATASTORAGE_SERVER__HOST", "127.0.0.1")
        .env("DATASTORAGE_SERVER__PORT", port.to_string())
        .env("DATASTORAGE_SERVER__METRICS_PORT", metrics_port.to_string())
        .env("DATASTORAGE_SERVER__SHUTDOWN_DELAY", "0s")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut child = ChildGuard::new(child);
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let mut ready = false;
    for _ in 0..200 {
        if http
            .get(format!("{base}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ready, "server did not become ready");
    let created: Value = http
        .post(format!("{base}/api/v1/audit/events"))
        .json(&event("cli-1"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["event_id"].as_str().unwrap();
    let got: Value = http
        .get(format!("{base}/api/v1/audit/events/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got["correlation_id"], "cli-1");
    assert!(dir.path().join("data/datastorage.db").exists());

    sigterm(child.id());
    let status = child.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(status.expect("exits after SIGTERM").code(), Some(0));
}

#[test]
fn printed_default_config_is_accepted_by_check() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(binary())
        .args(["config", "print-default"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let file = dir.path().join("config.yaml");
    std::fs::write(&file, &out.stdout).unwrap();
    let out = Command::new(binary())
        .current_dir(dir.path())
        .arg("--config")
        .arg(&file)
        .arg("check")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("maxOpenConns              25"), "{stdout}");
    assert!(stdout.contains("does not apply to SQLite"), "{stdout}");
    assert!(
        stdout.contains("outage buffer: disk in ./data/buffer, at most 1073741824 bytes (buffer.maxBytes); not created yet"),
        "{stdout}"
    );
    assert!(
        !dir.path().join("data/buffer").exists(),
        "check creates nothing"
    );
}

#[test]
fn check_on_postgres_prints_pool_settings_and_the_budget() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(PgDb::create());
    let stdout = check_with(
        &db,
        &format!("{}  maxOpenConns: 7\n  maxIdleConns: 3\n", db.yaml()),
    );
    assert!(stdout.contains("maxOpenConns              7"), "{stdout}");
    assert!(
        stdout.contains("2 replicas x maxOpenConns 7 + headroom 5 = 19"),
        "{stdout}"
    );
    assert!(stdout.contains("migrations applied"), "{stdout}");
}

/// `datastorage --config FILE check --replicas 2` with `database` as written, after `migrate`
/// (direct to `db`); its standard output.
fn check_with(db: &PgDb, database: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.yaml");
    std::fs::write(&file, database).unwrap();
    let migrate = Command::new(binary())
        .arg("--config")
        .arg(&file)
        .arg("migrate")
        .output()
        .unwrap();
    assert!(
        migrate.status.success(),
        "{} ({})",
        String::from_utf8_lossy(&migrate.stderr),
        db.name
    );
    let out = Command::new(binary())
        .arg("--config")
        .arg(&file)
        .args(["check", "--replicas", "2"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn check_prints_the_read_replicas_pool_and_its_budget() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(PgDb::create());
    // Any server takes the replica's place for `check`, which reads settings, not replay.
    let stdout = check_with(
        &db,
        &format!(
            "{}  readReplica:\n    host: \"{}\"\n    port: {}\n    maxOpenConns: 4\n    maxIdleConns: 2\n    maxReplicaLag: 3s\n",
            db.yaml(),
            db.host,
            db.port
        ),
    );
    assert!(
        stdout.contains("reads go to the primary while it is more than 3s behind"),
        "{stdout}"
    );
    assert!(
        stdout.contains("effective replica pool settings"),
        "{stdout}"
    );
    assert!(
        stdout.contains("read replica connection budget"),
        "{stdout}"
    );
    assert!(
        stdout.contains("2 replicas x maxOpenConns 4 + headroom 5 = 13"),
        "{stdout}"
    );
}

#[test]
fn check_through_pgbouncer_runs_a_pooled_transaction_and_judges_both_sides() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(PgDb::create());
    let bouncer = PgBouncer::start(
        &db,
        &BouncerSettings {
            pool_size: 4,
            max_client_conn: 60,
            ..BouncerSettings::default()
        },
    );
    let database = format!(
        "database:\n  driver: postgres\n  host: 127.0.0.1\n  port: {}\n  name: {}\n  user: {}\n  sslMode: disable\n  pooler: pgbouncer\n  migrationHost: \"{}\"\n  migrationPort: {}\n  maxOpenConns: 25\n",
        bouncer.port, db.name, db.user, db.host, db.port
    );
    let stdout = check_with(&db, &database);
    assert!(
        stdout.contains("database: postgres through pgbouncer"),
        "{stdout}"
    );
    assert!(stdout.contains("pooler connection: ok"), "{stdout}");
    assert!(
        stdout.contains("pooler pool_size 4 + reserve_pool 0 + headroom 5 = 9"),
        "{stdout}"
    );
    assert!(
        stdout.contains("2 replicas x maxOpenConns 25 = 50 <= max_client_conn 60"),
        "{stdout}"
    );
}

#[test]
fn unknown_env_override_fails_start_naming_the_variable() {
    let out = Command::new(binary())
        .arg("check")
        .env("DATASTORAGE_DATABASE__MAX_OPEN_CONN", "3")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("DATASTORAGE_DATABASE__MAX_OPEN_CONN"));
}

// ---------------------------------------------------------------------------------------------
// The command line itself: usage errors, help, closed output, completions, progress, errors.
// ---------------------------------------------------------------------------------------------

/// `datastorage ARGS` in `dir`, with no inherited `DATASTORAGE_*` variables.
fn ds<S: AsRef<std::ffi::OsStr>>(dir: &std::path::Path, args: &[S]) -> Command {
    let mut cmd = Command::new(binary());
    cmd.args(args).current_dir(dir).stdin(Stdio::null());
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("DATASTORAGE_") {
            cmd.env_remove(name);
        }
    }
    cmd
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn replicas_out_of_range_is_a_usage_error_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    for bad in ["0", "-1", "many"] {
        let out = ds(dir.path(), &["check", "--replicas", bad])
            .output()
            .unwrap();
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "--replicas {bad}: {stderr}");
        assert!(stderr.starts_with("error: "), "clap-style: {stderr}");
        assert!(stderr.contains("--replicas"), "{stderr}");
        assert!(!stderr.contains('{'), "no log line: {stderr}");
        assert!(
            out.stdout.is_empty(),
            "nothing checked: {}",
            text(&out.stdout)
        );
    }
}

#[test]
fn only_commands_that_read_the_config_offer_config() {
    let dir = tempfile::tempdir().unwrap();
    let reads: &[&[&str]] = &[&["serve"], &["migrate"], &["check"], &["config", "print"]];
    let reads_none: &[&[&str]] = &[
        &[],
        &["config"],
        &["config", "print-default"],
        &["events"],
        &["events", "post"],
        &["events", "query"],
        &["events", "get"],
        &["events", "tail"],
        &["events", "verify"],
        &["completions"],
    ];
    for (args, offered) in reads
        .iter()
        .map(|a| (a, true))
        .chain(reads_none.iter().map(|a| (a, false)))
    {
        let mut argv = args.to_vec();
        argv.push("--help");
        let out = ds(dir.path(), &argv).output().unwrap();
        let help = text(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{argv:?}: {}",
            text(&out.stderr)
        );
        assert_eq!(help.contains("--config"), offered, "{argv:?}:\n{help}");
    }
    // Before or after the command, for a command that reads it.
    let file = dir.path().join("c.yaml");
    std::fs::write(&file, "logging:\n  level: debug\n").unwrap();
    let file = file.to_str().unwrap();
    for argv in [
        ["--config", file, "config", "print"],
        ["config", "print", "--config", file],
    ] {
        let out = ds(dir.path(), &argv).output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{argv:?}: {}",
            text(&out.stderr)
        );
        assert!(text(&out.stdout).contains("level: debug"), "{argv:?}");
    }
    let out = ds(dir.path(), &["config", "print"])
        .env("DATASTORAGE_CONFIG", file)
        .output()
        .unwrap();
    assert!(
        text(&out.stdout).contains("level: debug"),
        "DATASTORAGE_CONFIG"
    );
    // Given to a command that reads none, it is a usage error rather than silently ignored.
    for argv in [
        &["--config", file, "config", "print-default"][..],
        &[
            "--config",
            file,
            "events",
            "get",
            "0193a5d2-7c4e-7b1a-9f00-000000000001",
        ],
    ] {
        let out = ds(dir.path(), argv).output().unwrap();
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{argv:?}: {stderr}");
        assert!(
            stderr.starts_with("error: ") && stderr.contains("--config"),
            "{stderr}"
        );
    }
    let out = ds(dir.path(), &["--config", file, "check", "--config", file])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "given twice");
    // DATASTORAGE_CONFIG in the environment does not disturb them.
    let out = ds(dir.path(), &["config", "print-default"])
        .env("DATASTORAGE_CONFIG", "/nonexistent.yaml")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

/// Runs `datastorage ARGS` with standard output on a pipe whose reader is already closed.
fn with_closed_stdout<S: AsRef<std::ffi::OsStr>>(
    dir: &std::path::Path,
    args: &[S],
) -> std::process::Output {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let mut cmd = ds(dir, args);
    cmd.stdout(writer).stderr(Stdio::piped());
    let child = cmd.spawn().unwrap();
    drop(cmd);
    child.wait_with_output().unwrap()
}

fn assert_quiet_end<S: std::fmt::Debug>(args: &[S], out: &std::process::Output) {
    let stderr = text(&out.stderr);
    assert!(!stderr.contains("panicked"), "{args:?} panicked: {stderr}");
    assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
    assert!(!stderr.contains("error"), "{args:?} is quiet: {stderr}");
}

#[test]
fn a_closed_stdout_ends_local_commands_quietly_with_exit_0() {
    let dir = tempfile::tempdir().unwrap();
    let commands: &[&[&str]] = &[
        &["config", "print-default"],
        &["config", "print"],
        &["check"],
        &["migrate"],
        // Again, now that `migrate` created the SQLite file: it connects.
        &["check"],
        &["completions", "bash"],
        &["--help"],
        &["events", "query", "--help"],
    ];
    for args in commands {
        let out = with_closed_stdout(dir.path(), args);
        assert_quiet_end(args, &out);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_stdout_ends_events_commands_quietly_with_exit_0() {
    let app = TestApp::serve(Backend::Postgres).await;
    let created: Value = app.post_event(&event("pipe-1")).await.json().await.unwrap();
    let id = created["event_id"].as_str().unwrap().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let base = app.base();
    let commands: Vec<Vec<String>> = [
        vec!["query"],
        vec!["query", "--all", "--json"],
        vec!["get", &id],
        vec!["verify", "pipe-1"],
        // `tail` would run until Ctrl-C; a closed stdout ends it at its first event.
        vec!["tail", "--since", "1h", "--interval", "50ms"],
    ]
    .into_iter()
    .map(|tail| {
        let head = ["events", "--url", base];
        head.iter().chain(&tail).map(|s| s.to_string()).collect()
    })
    .collect();
    for args in commands {
        let dir = dir.path().to_owned();
        let run = tokio::task::spawn_blocking(move || {
            let out = with_closed_stdout(&dir, &args);
            (args, out)
        });
        let (args, out) = tokio::time::timeout(Duration::from_secs(30), run)
            .await
            .expect("ends within 30 s")
            .unwrap();
        assert_quiet_end(&args, &out);
    }
    // An answer already decided keeps its exit code: a tampered chain is still exit 1.
    app.pg()
        .sql(&[
            "ALTER TABLE audit_events DISABLE TRIGGER audit_events_append_only",
            "UPDATE audit_events SET event_action = 'forged' WHERE correlation_id = 'pipe-1'",
            "ALTER TABLE audit_events ENABLE TRIGGER audit_events_append_only",
        ])
        .await;
    let args = ["events", "--url", base, "verify", "pipe-1"].map(str::to_owned);
    let out = with_closed_stdout(dir.path(), &args);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.is_empty(), "{stderr}");
    app.stop().await;
}

#[test]
fn completions_are_generated_for_every_shell() {
    let dir = tempfile::tempdir().unwrap();
    for (shell, marker) in [
        ("bash", "_datastorage()"),
        ("zsh", "#compdef datastorage"),
        ("fish", "complete -c datastorage"),
        ("elvish", "datastorage"),
        ("powershell", "datastorage"),
    ] {
        let out = ds(dir.path(), &["completions", shell]).output().unwrap();
        let script = text(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{shell}: {}", text(&out.stderr));
        assert!(script.contains(marker), "{shell}:\n{script}");
        assert!(
            script.contains("correlation-id") && script.contains("print-default"),
            "{shell} completes subcommands and their flags"
        );
    }
    let out = ds(dir.path(), &["completions", "tcsh"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// What a run on a pseudo-terminal showed: exit code, the terminal's bytes, piped stdout.
struct TerminalRun {
    code: Option<i32>,
    terminal: String,
    piped: String,
}

/// Runs `datastorage ARGS` with stderr on a pseudo-terminal and stdout on it too
/// (`stdout_on_terminal`) or on a pipe; `stdin` is written to standard input.
fn on_terminal<S: AsRef<std::ffi::OsStr>>(
    args: &[S],
    stdin: &[u8],
    stdout_on_terminal: bool,
) -> TerminalRun {
    use std::io::{Read, Write};
    let size = nix::pty::Winsize {
        ws_row: 40,
        ws_col: 160,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = nix::pty::openpty(&size, None).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = ds(dir.path(), args);
    cmd.env("TERM", "xterm-256color")
        .stdin(Stdio::piped())
        .stderr(Stdio::from(pty.slave.try_clone().unwrap()));
    if stdout_on_terminal {
        cmd.stdout(Stdio::from(pty.slave));
    } else {
        drop(pty.slave);
        cmd.stdout(Stdio::piped());
    }
    let mut child = cmd.spawn().unwrap();
    drop(cmd); // the parent's copies of the terminal's slave side
    let mut master = std::fs::File::from(pty.master);
    let reader = std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        // Linux answers EIO once every slave descriptor is closed.
        while let Ok(n @ 1..) = master.read(&mut buf) {
            seen.extend_from_slice(&buf[..n]);
        }
        seen
    });
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin).unwrap();
    drop(input);
    let mut piped = String::new();
    if let Some(mut out) = child.stdout.take() {
        out.read_to_string(&mut piped).unwrap();
    }
    let code = child.wait().unwrap().code();
    TerminalRun {
        code,
        terminal: text(&reader.join().unwrap()),
        piped,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_is_shown_only_when_stdout_is_a_terminal() {
    let app = TestApp::serve(Backend::Postgres).await;
    let base = app.base().to_owned();
    let lines: String = (0..5)
        .map(|n| {
            let mut e = event("progress-1");
            e["event_action"] = format!("a{n}").into();
            format!("{e}\n")
        })
        .collect();
    let post = ["events", "--url", &base, "post", "--stdin"].map(str::to_owned);
    let query = [
        "events",
        "--url",
        &base,
        "query",
        "--correlation-id",
        "progress-1",
        "--all",
        "--limit",
        "2",
    ]
    .map(str::to_owned);
    let (post_tty, post_piped, query_tty, query_piped) = tokio::task::spawn_blocking(move || {
        (
            on_terminal(&post, lines.as_bytes(), true),
            on_terminal(&post, lines.as_bytes(), false),
            on_terminal(&query, b"", true),
            on_terminal(&query, b"", false),
        )
    })
    .await
    .unwrap();
    for run in [&post_tty, &post_piped, &query_tty, &query_piped] {
        assert_eq!(run.code, Some(0), "{}{}", run.terminal, run.piped);
    }
    assert!(
        post_tty.terminal.contains("lines read"),
        "{:?}",
        post_tty.terminal
    );
    assert!(
        query_tty.terminal.contains("fetching events"),
        "{:?}",
        query_tty.terminal
    );
    // Stdout piped: no bar, on the terminal (stderr) nor in the output.
    for run in [&post_piped, &query_piped] {
        assert!(
            !run.terminal.contains("lines read") && !run.terminal.contains("fetching events"),
            "{:?}",
            run.terminal
        );
        assert!(!run.piped.contains('\u{1b}'), "{:?}", run.piped);
    }
    assert!(
        post_piped.piped.starts_with("LINES"),
        "{}",
        post_piped.piped
    );
    assert!(
        query_piped.piped.starts_with("TIMESTAMP"),
        "{}",
        query_piped.piped
    );
    assert!(
        query_piped.piped.contains("10 events"),
        "{}",
        query_piped.piped
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fatal_error_is_printed_once_in_the_log_format_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    for (format, level) in [("json", "info"), ("text", "info"), ("json", "off")] {
        let file = dir.path().join(format!("{format}-{level}.yaml"));
        // Nothing listens on this port.
        std::fs::write(
            &file,
            format!(
                "database:\n  host: 127.0.0.1\n  port: {}\n  name: nowhere\n  user: nobody\n  \
                 connectTimeout: 1s\n  acquireTimeout: 1s\nlogging:\n  format: {format}\n  \
                 level: {level}\n",
                free_port()
            ),
        )
        .unwrap();
        for command in ["migrate", "check"] {
            let out = datastorage_testkit::process::run_to_exit(
                &file,
                &[command],
                Duration::from_secs(30),
            )
            .await;
            assert_eq!(out.status.code(), Some(1), "{command}: {}", out.stderr);
            let errors: Vec<&str> = out
                .stderr
                .lines()
                .filter(|l| l.contains("datastorage failed") || l.starts_with("error"))
                .collect();
            assert_eq!(
                errors.len(),
                1,
                "{command} ({format}) once:\n{}",
                out.stderr
            );
            if level == "off" {
                // A logger that shows no errors does not swallow the fatal one.
                assert!(errors[0].starts_with("error: "), "{}", errors[0]);
            } else if format == "json" {
                let line: Value = serde_json::from_str(errors[0]).expect("a JSON log line");
                assert_eq!(line["level"], "ERROR", "{line}");
            } else {
                assert!(errors[0].contains("ERROR"), "{}", errors[0]);
            }
        }
    }
}

#[test]
fn a_config_error_is_one_plain_line_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    for command in ["serve", "migrate", "check", "config"] {
        let mut argv = vec![command];
        if command == "config" {
            argv.push("print");
        }
        let out = ds(dir.path(), &argv)
            .env("DATASTORAGE_DATABASE__MAX_OPEN_CONN", "3")
            .output()
            .unwrap();
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{command}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{command}: {stderr}");
        assert!(stderr.starts_with("error: "), "{command}: {stderr}");
    }
}
