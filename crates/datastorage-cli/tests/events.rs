//! `datastorage events …` in process, against a real server on PostgreSQL: the commands'
//! output, exit codes and round trips.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use datastorage_api::AuditEvent;
use datastorage_cli::events::{run, EventsArgs, EXIT_NEGATIVE};
use datastorage_testkit::{Backend, TestApp};
use serde_json::Value;

#[derive(Parser)]
struct Cmd {
    #[command(flatten)]
    events: EventsArgs,
}

/// Runs `datastorage events ARGS` in process: exit code and standard output.
async fn events(base: &str, args: &[&str]) -> (u8, String) {
    let mut argv = vec!["events", "--url", base];
    argv.extend_from_slice(args);
    let cmd = Cmd::try_parse_from(argv).unwrap();
    let mut out = Vec::new();
    let code = match run(cmd.events, &mut out, std::future::pending()).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            2
        }
    };
    (code, String::from_utf8(out).unwrap())
}

fn post_args(correlation_id: &str, action: &str) -> Vec<String> {
    [
        "post",
        "--json",
        "--type",
        "cli.test",
        "--category",
        "gateway",
        "--action",
        action,
        "--outcome",
        "success",
        "--correlation-id",
        correlation_id,
        "--actor-id",
        "tester",
        "--data",
        r#"{"k":"v"}"#,
    ]
    .map(str::to_owned)
    .to_vec()
}

async fn post(base: &str, correlation_id: &str, action: &str) -> String {
    let args = post_args(correlation_id, action);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, out) = events(base, &args).await;
    assert_eq!(code, 0, "{out}");
    let v: Value = serde_json::from_str(&out).unwrap();
    v["event_id"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn post_then_get_and_query_round_trip_and_verify_exit_codes() {
    let app = TestApp::serve(Backend::Postgres).await;
    let id = post(app.base(), "cli-1", "first").await;

    let (code, out) = events(app.base(), &["get", &id, "--json"]).await;
    assert_eq!(code, 0);
    let got: AuditEvent = serde_json::from_str(&out).unwrap();
    assert_eq!(got.event_id.to_string(), id);
    assert_eq!(
        (
            got.event_type.as_str(),
            got.event_action.as_str(),
            got.actor_id.as_deref()
        ),
        ("cli.test", "first", Some("tester"))
    );
    assert_eq!(got.event_data["k"], "v");
    let (code, table) = events(app.base(), &["get", &id]).await;
    assert_eq!(code, 0);
    assert!(table.starts_with("FIELD") && table.contains(&id), "{table}");

    for n in 0..4 {
        post(app.base(), "cli-1", &format!("more-{n}")).await;
    }
    let (code, out) = events(
        app.base(),
        &["query", "--json", "--correlation-id", "cli-1"],
    )
    .await;
    assert_eq!(code, 0);
    let page: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(page["pagination"]["total"], 5);
    assert!(page["data"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["event_id"] == id.as_str()));
    // --all follows cursors across pages of two.
    let (code, out) = events(
        app.base(),
        &[
            "query",
            "--json",
            "--all",
            "--limit",
            "2",
            "--correlation-id",
            "cli-1",
        ],
    )
    .await;
    assert_eq!(code, 0);
    let all: Vec<AuditEvent> = serde_json::from_str(&out).unwrap();
    assert_eq!(all.len(), 5);
    // A filter the server refuses (400 with the field named) is an error.
    let (code, _) = events(app.base(), &["query", "--since", "tomorrow"]).await;
    assert_eq!(code, 2);
    let (code, table) = events(app.base(), &["query", "--correlation-id", "cli-1"]).await;
    assert_eq!(code, 0);
    assert!(
        table.starts_with("TIMESTAMP") && table.contains("5 of 5 events"),
        "{table}"
    );

    let (code, out) = events(app.base(), &["verify", "cli-1"]).await;
    assert_eq!(
        (code, out.trim()),
        (0, "cli-1: valid (5 of 5 events verified)")
    );
    app.pg()
        .sql(&[
            "ALTER TABLE audit_events DISABLE TRIGGER audit_events_append_only",
            "UPDATE audit_events SET event_action = 'forged' WHERE correlation_id = 'cli-1' AND chain_sequence = 2",
            "ALTER TABLE audit_events ENABLE TRIGGER audit_events_append_only",
        ])
        .await;
    let (code, out) = events(app.base(), &["verify", "cli-1"]).await;
    assert_eq!(code, EXIT_NEGATIVE, "{out}");
    assert!(out.contains("TAMPERED"), "{out}");
    let (code, out) = events(app.base(), &["verify", "--json", "cli-1"]).await;
    assert_eq!(code, EXIT_NEGATIVE);
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["is_valid"],
        false
    );

    let (code, _) = events(app.base(), &["get", &uuid::Uuid::now_v7().to_string()]).await;
    assert_eq!(code, 2, "not found is an error");
    app.stop().await;
}

/// A writer the test can read while `tail` writes to it.
#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Vec<u8>>>);

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Shared {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tail_prints_events_posted_after_it_started_once_and_stops_cleanly() {
    let app = TestApp::serve(Backend::Postgres).await;
    let before = post(app.base(), "tail-1", "before").await;
    let other = post(app.base(), "tail-other", "ignored").await;
    tokio::time::sleep(Duration::from_millis(50)).await;

    let cmd = Cmd::try_parse_from([
        "events",
        "--url",
        app.base(),
        "tail",
        "--json",
        "--interval",
        "100ms",
        "--correlation-id",
        "tail-1",
    ])
    .unwrap();
    let out = Shared::default();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let tail = {
        let mut out = out.clone();
        tokio::spawn(async move {
            run(cmd.events, &mut out, async {
                let _ = stop_rx.await;
            })
            .await
        })
    };
    // It follows the server's stream (one subscriber), not polls.
    let mut subscribed = false;
    for _ in 0..100 {
        if app
            .metrics()
            .await
            .lines()
            .any(|l| l == "datastorage_stream_subscribers 1")
        {
            subscribed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(subscribed, "tail did not subscribe to the stream");
    let mut posted = Vec::new();
    for n in 0..3 {
        posted.push(post(app.base(), "tail-1", &format!("after-{n}")).await);
        post(app.base(), "tail-other", "ignored").await;
    }
    let mut lines = Vec::new();
    for _ in 0..100 {
        lines = out.text().lines().map(str::to_owned).collect();
        if lines.len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A while longer: nothing may be printed twice.
    tokio::time::sleep(Duration::from_millis(400)).await;
    stop_tx.send(()).unwrap();
    let code = tail.await.unwrap().unwrap();
    assert_eq!(code, 0, "stopping (Ctrl-C) exits 0");
    let printed: Vec<String> = out
        .text()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["event_id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(
        printed, posted,
        "each new event once, in order; got {lines:?}"
    );
    assert!(!printed.contains(&before) && !printed.contains(&other));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn values_that_start_with_a_dash_are_values_not_flags() {
    let app = TestApp::serve(Backend::Postgres).await;
    let (code, out) = events(
        app.base(),
        &[
            "post",
            "--json",
            "--type",
            "cli.dash",
            "--category",
            "gateway",
            "--action",
            "-x",
            "--outcome",
            "success",
            "--correlation-id",
            "-dash",
            "--actor-id",
            "-svc",
            "--data",
            r#"{"n":"-5"}"#,
        ],
    )
    .await;
    assert_eq!(code, 0, "{out}");
    let (code, out) = events(
        app.base(),
        &[
            "query",
            "--json",
            "--since",
            "-1d",
            "--until",
            "-0s",
            "--actor-id",
            "-svc",
            "--detail-key",
            "n",
            "--detail-value",
            "-5",
        ],
    )
    .await;
    assert_eq!(code, 0, "{out}");
    let page: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(page["pagination"]["total"], 1, "{page}");
    assert_eq!(page["data"][0]["event_action"], "-x");
    let (code, out) = events(
        app.base(),
        &["tail", "--json", "--since", "-1h", "--count", "1"],
    )
    .await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(r#""correlation_id":"-dash""#), "{out}");
    let (code, out) = events(app.base(), &["verify", "-dash"]).await;
    assert_eq!(
        (code, out.trim()),
        (0, "-dash: valid (1 of 1 events verified)")
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn verify_exit_codes_tell_intact_tampered_unverifiable_and_empty_apart() {
    let keys = tempfile::tempdir().unwrap();
    let key_file = keys.path().join("chain.key");
    std::fs::write(&key_file, "k".repeat(40) + "\n").unwrap();
    let app = TestApp::serve_with(Backend::Postgres, |s| {
        s.hash_chain.key_file = Some(key_file);
        s.hash_chain.key_id = Some("2026-11".into());
    })
    .await;
    for n in 0..3 {
        post(app.base(), "keyed-1", &format!("a{n}")).await;
    }
    let (code, out) = events(app.base(), &["verify", "keyed-1"]).await;
    assert_eq!(
        (code, out.trim()),
        (0, "keyed-1: valid (3 of 3 events verified)")
    );

    // No events: not "valid (0 of 0)".
    let (code, out) = events(app.base(), &["verify", "nobody"]).await;
    assert_eq!(code, 4, "{out}");
    assert_eq!(out.trim(), "nobody: no events with this correlation id");
    let (code, out) = events(app.base(), &["verify", "--json", "nobody"]).await;
    assert_eq!(code, 4, "{out}");
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["verdict"],
        "empty"
    );

    // The same database, served without the key: the rows cannot be checked, which is not
    // tampering.
    let pg = app.pg().clone();
    app.stop().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app = datastorage_testkit::TestApp::serve_on_db(listener, pg, |_| {}).await;
    let (code, out) = events(app.base(), &["verify", "keyed-1"]).await;
    assert_eq!(code, 3, "{out}");
    let first = out.lines().next().unwrap();
    assert_eq!(
        first,
        "keyed-1: UNVERIFIABLE (0 of 3 events verified; 3 signed with keys that are not configured)"
    );
    assert!(!out.contains("TAMPERED"), "{out}");
    let (code, out) = events(app.base(), &["verify", "--json", "keyed-1"]).await;
    assert_eq!(code, 3, "{out}");
    let answer: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (&answer["verdict"], &answer["unverifiable_events"]),
        (&Value::from("unverifiable"), &Value::from(3))
    );

    // A broken link still says TAMPERED, exit 1 (unkeyed rows, which this server checks).
    for n in 0..2 {
        post(app.base(), "plain-1", &format!("b{n}")).await;
    }
    app.pg()
        .sql(&[
            "ALTER TABLE audit_events DISABLE TRIGGER audit_events_append_only",
            "UPDATE audit_events SET event_action = 'forged' WHERE correlation_id = 'plain-1' AND chain_sequence = 1",
            "ALTER TABLE audit_events ENABLE TRIGGER audit_events_append_only",
        ])
        .await;
    let (code, out) = events(app.base(), &["verify", "plain-1"]).await;
    assert_eq!(code, EXIT_NEGATIVE, "{out}");
    assert!(
        out.starts_with("plain-1: TAMPERED (1 of 2 events verified)"),
        "{out}"
    );
    app.stop().await;

    // `verify --help` documents them.
    let help = Cmd::try_parse_from(["events", "verify", "--help"])
        .err()
        .unwrap()
        .to_string();
    for code in [
        "0 intact",
        "1 tampered",
        "3 unverifiable",
        "4 no events",
        "2 an error",
    ] {
        assert!(help.contains(code), "{code}:\n{help}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn get_shows_every_field_with_empty_ones_as_dash_and_event_data_pretty() {
    let app = TestApp::serve(Backend::Postgres).await;
    let mut args = post_args("get-1", "shown");
    *args.last_mut().unwrap() = r#"{"k":"v","nested":{"deep":1}}"#.into();
    args.extend(["--severity".into(), "high".into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, out) = events(app.base(), &args).await;
    assert_eq!(code, 0, "{out}");
    let id = serde_json::from_str::<Value>(&out).unwrap()["event_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, json) = events(app.base(), &["get", "--json", &id]).await;
    let json: Value = serde_json::from_str(&json).unwrap();
    let (code, table) = events(app.base(), &["get", &id]).await;
    assert_eq!(code, 0);
    let rows: Vec<(&str, &str)> = table
        .lines()
        .skip(1)
        .filter(|l| !l.starts_with(' '))
        .map(|l| l.split_once(' ').map_or((l, ""), |(k, v)| (k, v.trim())))
        .collect();
    let value_of = |key: &str| rows.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);
    for (key, value) in json.as_object().unwrap() {
        let shown = value_of(key).unwrap_or_else(|| panic!("{key} is not shown:\n{table}"));
        match value {
            Value::Null => assert_eq!(shown, "-", "{key}"),
            Value::String(s) if s.is_empty() => assert_eq!(shown, "-", "{key}"),
            Value::String(s) if key.ends_with("timestamp") => {
                let t: chrono::DateTime<chrono::Utc> = s.parse().unwrap();
                assert_eq!(shown.parse::<chrono::DateTime<chrono::Utc>>().unwrap(), t);
            }
            Value::String(s) => assert_eq!(shown, s, "{key}"),
            Value::Object(_) => {}
            other => assert_eq!(shown, other.to_string(), "{key}"),
        }
    }
    assert_eq!(value_of("severity"), Some("high"));
    assert_eq!(value_of("actor_ip"), Some("-"));
    assert_eq!(value_of("previous_event_hash"), Some("-"));
    // event_data pretty-printed, its further lines under the value column.
    let lines: Vec<&str> = table.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.starts_with("event_data "))
        .unwrap();
    let column = lines[at].find('{').unwrap();
    let mut data = vec![&lines[at][column..]];
    data.extend(
        lines[at + 1..]
            .iter()
            .take_while(|l| l.starts_with(' '))
            .map(|l| &l[column..]),
    );
    assert_eq!(
        data.join("\n"),
        serde_json::to_string_pretty(&json["event_data"]).unwrap(),
        "{table}"
    );
    assert!(data.len() > 3, "{table}");
    app.stop().await;
}
