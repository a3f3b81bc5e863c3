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
}

#[test]
fn check_on_postgres_prints_pool_settings_and_the_budget() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(PgDb::create());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.yaml");
    std::fs::write(
        &file,
        format!("{}  maxOpenConns: 7\n  maxIdleConns: 3\n", db.yaml()),
    )
    .unwrap();
    let migrate = Command::new(binary())
        .arg("--config")
        .arg(&file)
        .arg("migrate")
        .output()
        .unwrap();
    assert!(
        migrate.status.success(),
        "{}",
        String::from_utf8_lossy(&migrate.stderr)
    );
    let out = Command::new(binary())
        .arg("--config")
        .arg(&file)
        .args(["check", "--replicas", "2"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("maxOpenConns              7"), "{stdout}");
    assert!(
        stdout.contains("2 replicas x maxOpenConns 7 + headroom 5 = 19"),
        "{stdout}"
    );
    assert!(stdout.contains("migrations applied"), "{stdout}");
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
