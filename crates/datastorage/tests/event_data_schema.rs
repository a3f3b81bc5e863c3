//! `validation.eventDataSchema` end to end, on SQLite (the check runs before storage, so one
//! backend shows it): upstream's own spec accepts every payload of upstream's event-type
//! catalogue e2e test and refuses a broken one naming the path; a bad file stops the start;
//! without the key any object is accepted.
//!
//! `tests/fixtures/upstream-event-type-catalogue.json` holds the 36 cases of `eventTypeCatalog`
//! in upstream's `test/e2e/datastorage/09_event_type_jsonb_comprehensive_test.go`
//! (github.com/jordigilh/kubernaut, Apache-2.0) as upstream's ogen client puts them on the wire.
//! `tests/fixtures/extract_upstream_catalogue.py` wrote it from that test and the client's
//! generated `oas_schemas_gen.go` and `oas_json_gen.go`; its docstring says how.

use std::path::PathBuf;

use datastorage::config::{Driver, Settings};
use datastorage_testkit::*;
use serde_json::{json, Value};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn upstream_spec() -> PathBuf {
    fixture("upstream-data-storage-v1.yaml")
}

/// Upstream's catalogue cases: outer event_type, category, action, outcome and event_data.
fn catalogue() -> Vec<Value> {
    let text = std::fs::read_to_string(fixture("upstream-event-type-catalogue.json")).unwrap();
    let doc: Value = serde_json::from_str(&text).unwrap();
    doc["cases"].as_array().unwrap().clone()
}

/// A full event around one catalogue case, as upstream's test builds it.
fn event_of(case: &Value, cid: &str) -> Value {
    let mut e = event(cid);
    for key in [
        "event_type",
        "event_category",
        "event_action",
        "event_outcome",
        "event_data",
    ] {
        e[key] = case[key].clone();
    }
    e
}

#[tokio::test]
async fn upstream_spec_accepts_every_payload_of_upstreams_catalogue() {
    let app = TestApp::spawn_with(Backend::Sqlite, |s| {
        s.validation.event_data_schema = Some(upstream_spec())
    })
    .await;
    let cases = catalogue();
    assert_eq!(cases.len(), 36, "upstream's catalogue has 36 event types");
    for (i, case) in cases.iter().enumerate() {
        let r = app.post_event(&event_of(case, &format!("cat-{i}"))).await;
        let status = r.status();
        let body: Value = r.json().await.unwrap();
        assert_eq!(status, 201, "{}: {body}", case["event_type"]);
    }
    // And as one batch.
    let batch: Vec<Value> = cases.iter().map(|c| event_of(c, "cat-batch")).collect();
    let r = app.post_batch(&Value::Array(batch)).await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    app.stop().await;
}

#[tokio::test]
async fn payload_that_breaks_its_schema_is_a_400_naming_the_path() {
    let app = TestApp::spawn_with(Backend::Sqlite, |s| {
        s.validation.event_data_schema = Some(upstream_spec())
    })
    .await;
    let cases = catalogue();
    let gateway = &cases[0];
    assert_eq!(gateway["event_type"], "gateway.signal.received");

    let mut e = event_of(gateway, "bad-1");
    let data = e["event_data"].as_object_mut().unwrap();
    data.remove("signal_name");
    data.insert("occurrence_count".into(), json!("x".repeat(5_000)));
    let r = app.post_event(&e).await;
    assert_eq!(r.status(), 400);
    let problem: Value = r.json().await.unwrap();
    let fields = &problem["field_errors"];
    assert_eq!(
        fields["event_data.signal_name"], "event_data.signal_name is required",
        "{problem}"
    );
    assert_eq!(
        fields["event_data.occurrence_count"],
        "event_data.occurrence_count must be integer (got string)"
    );
    assert!(
        problem.to_string().len() < 2_000,
        "the sent value is not echoed: {problem}"
    );

    // Nested: an array item inside a workflow discovery payload.
    let listed = cases
        .iter()
        .find(|c| c["event_type"] == "workflow.catalog.actions_listed")
        .unwrap();
    let mut e = event_of(listed, "bad-2");
    e["event_data"]["results"]["workflows"] = json!([{"workflow_id": "not-a-uuid"}]);
    let problem: Value = app.post_event(&e).await.json().await.unwrap();
    assert_eq!(
        problem["field_errors"]["event_data.results.workflows[0].workflow_id"],
        "event_data.results.workflows[0].workflow_id must be a valid uuid",
        "{problem}"
    );
    assert_eq!(
        problem["field_errors"]["event_data.results.workflows[0].title"],
        "event_data.results.workflows[0].title is required"
    );

    // Upstream chooses the schema by event_data.event_type and refuses one it does not know.
    let mut e = event_of(gateway, "bad-3");
    e["event_data"]["event_type"] = json!("gateway.signal.unheard_of");
    let problem: Value = app.post_event(&e).await.json().await.unwrap();
    assert!(
        problem["field_errors"]["event_data.event_type"]
            .as_str()
            .unwrap()
            .contains("names no payload schema"),
        "{problem}"
    );

    // In a batch, the item is named, and nothing is written.
    let mut bad = event_of(gateway, "bad-batch");
    bad["event_data"]["fingerprint"] = json!(42);
    let r = app
        .post_batch(&json!([event_of(gateway, "bad-batch"), bad]))
        .await;
    assert_eq!(r.status(), 400);
    let problem: Value = r.json().await.unwrap();
    assert_eq!(
        problem["field_errors"]["[1].event_data.fingerprint"],
        "event_data.fingerprint must be string (got integer)",
        "{problem}"
    );
    let stored: Value = app
        .query("correlation_id=bad-batch")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(stored["pagination"]["total"], 0, "{stored}");
    app.stop().await;
}

#[tokio::test]
async fn bad_schema_file_fails_the_start_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("payloads.yaml");
    std::fs::write(
        &bad,
        "openapi: 3.0.3\ncomponents:\n  schemas:\n    AuditEventRequest:\n      properties:\n        event_data: {$ref: '#/components/schemas/Missing'}\n",
    )
    .unwrap();
    for (path, fault) in [
        (bad.clone(), "names no schema"),
        (dir.path().join("absent.yaml"), "cannot read"),
    ] {
        let mut settings = Settings::default();
        settings.database.driver = Some(Driver::Sqlite);
        settings.database.sqlite_path = dir.path().join("test.db");
        settings.validation.event_data_schema = Some(path.clone());
        let Err(e) = datastorage::startup::prepare(settings).await else {
            panic!("{} should not start", path.display());
        };
        let e = format!("{e:#}");
        assert!(e.contains("validation.eventDataSchema"), "{e}");
        assert!(e.contains(&path.display().to_string()), "{e}");
        assert!(e.contains(fault), "{e}");
    }
    assert!(
        !dir.path().join("test.db").exists(),
        "the file is checked before the database is touched"
    );
}

#[tokio::test]
async fn without_the_key_any_object_is_accepted() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let mut e = event_of(&catalogue()[0], "free-1");
    e["event_data"] = json!({"signal_name": 7, "whatever": [1, {"x": null}]});
    assert_eq!(app.post_event(&e).await.status(), 201);
    app.stop().await;
}
