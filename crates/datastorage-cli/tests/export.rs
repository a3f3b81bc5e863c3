//! Signed exports end to end: `datastorage keys generate` makes the key, a real server on
//! PostgreSQL signs exports with it, and `datastorage export verify` (the binary, no server)
//! checks them: untouched exports verify; an edited character, a deleted line and two swapped
//! lines fail, naming the event.

use std::path::Path;
use std::process::Command;

use datastorage_testkit::{event, Backend, TestApp};
use serde_json::{json, Value};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_datastorage"))
}

/// Runs `datastorage export verify FILE --public-key PUB`: exit code and output.
fn verify(file: &Path, public: &Path) -> (i32, String) {
    let out = bin()
        .args(["export", "verify"])
        .arg(file)
        .arg("--public-key")
        .arg(public)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

async fn export(app: &TestApp, query: &str) -> Vec<u8> {
    let r = app.get(&format!("/api/v1/audit/export?{query}")).await;
    assert_eq!(r.status(), 200, "{query}");
    r.text().await.unwrap().into_bytes()
}

#[tokio::test]
async fn signed_exports_verify_offline_and_tampering_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    let out = bin()
        .args(["keys", "generate", "--out"])
        .arg(&keys)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(stdout.contains("key id:      ed25519:"), "{stdout}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(keys.join("signing.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o077,
            0,
            "the private key is readable by its owner only"
        );
    }
    let again = bin()
        .args(["keys", "generate", "--out"])
        .arg(&keys)
        .output()
        .unwrap();
    assert_eq!(
        again.status.code(),
        Some(2),
        "an existing key is not replaced silently"
    );
    let public = keys.join("signing.pub");
    let private = keys.join("signing.key");

    let app = TestApp::serve_with(Backend::Postgres, |s| {
        s.signing.key_file = Some(private.clone());
    })
    .await;
    for chain in ["exp-a", "exp-b", "exp-c"] {
        let batch: Vec<Value> = (0..20)
            .map(|i| {
                let mut e = event(chain);
                e["event_data"] = json!({"i": i, "user_email": "alice@example.com"});
                e
            })
            .collect();
        assert_eq!(app.post_batch(&json!(batch)).await.status(), 201);
    }

    // NDJSON, streamed: verifies untouched.
    let ndjson = export(&app, "format=ndjson").await;
    let file = dir.path().join("export.ndjson");
    std::fs::write(&file, &ndjson).unwrap();
    let (code, text) = verify(&file, &public);
    assert_eq!(code, 0, "{text}");
    let lines: Vec<&[u8]> = ndjson.split_inclusive(|b| *b == b'\n').collect();
    assert_eq!(lines.len(), 61, "60 events and the trailer");
    let first: Value = serde_json::from_slice(lines[0]).unwrap();
    assert_eq!(first["correlation_id"], "exp-a", "chain order");
    assert_eq!(first["hash_chain_valid"], true);
    let id_of = |i: usize| -> String {
        let v: Value = serde_json::from_slice(lines[i]).unwrap();
        v["event_id"].as_str().unwrap().to_owned()
    };

    // One character of one event changed.
    let mut edited: Vec<Vec<u8>> = lines.iter().map(|l| l.to_vec()).collect();
    let text_of = String::from_utf8(edited[25].clone()).unwrap();
    edited[25] = text_of.replacen("\"i\":5", "\"i\":6", 1).into_bytes();
    assert_ne!(edited[25], lines[25], "the edit applies");
    std::fs::write(&file, edited.concat()).unwrap();
    let (code, text) = verify(&file, &public);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains(&id_of(25)),
        "the edited event is named: {text}"
    );

    // A line deleted.
    let mut cut: Vec<&[u8]> = lines.clone();
    cut.remove(30);
    std::fs::write(&file, cut.concat()).unwrap();
    let (code, text) = verify(&file, &public);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("missing"), "{text}");

    // Two lines swapped.
    let mut swapped: Vec<&[u8]> = lines.clone();
    swapped.swap(10, 11);
    std::fs::write(&file, swapped.concat()).unwrap();
    let (code, text) = verify(&file, &public);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains(&id_of(10)) && text.contains(&id_of(11)),
        "{text}"
    );

    // Another key does not verify it.
    let other = dir.path().join("other");
    assert!(bin()
        .args(["keys", "generate", "--out"])
        .arg(&other)
        .status()
        .unwrap()
        .success());
    std::fs::write(&file, &ndjson).unwrap();
    let (code, text) = verify(&file, &other.join("signing.pub"));
    assert_eq!(code, 1, "{text}");

    // Upstream's JSON shape, one chain, with a detached signature.
    let body = export(&app, "correlation_id=exp-b&include_detached_signature=true").await;
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["events"].as_array().unwrap().len(), 20);
    assert_eq!(v["export_metadata"]["total_events"], 20);
    assert_eq!(v["hash_chain_verification"]["broken_chain_events"], 0);
    assert!(v["detached_signature"]
        .as_str()
        .unwrap()
        .contains("BEGIN SIGNATURE"));
    let file = dir.path().join("export.json");
    std::fs::write(&file, &body).unwrap();
    let (code, text) = verify(&file, &public);
    assert_eq!(code, 0, "{text}");

    // Redacted before signing: what is shipped is what is signed.
    let redacted = export(&app, "format=ndjson&redact_pii=true").await;
    assert!(!String::from_utf8_lossy(&redacted).contains("alice@example.com"));
    assert!(String::from_utf8_lossy(&redacted).contains("a***@e***.com"));
    let file = dir.path().join("redacted.ndjson");
    std::fs::write(&file, &redacted).unwrap();
    let (code, text) = verify(&file, &public);
    assert_eq!(code, 0, "{text}");

    // CSV: signature and digest.
    let csv = export(&app, "format=csv&event_category=gateway").await;
    let file = dir.path().join("export.csv");
    std::fs::write(&file, &csv).unwrap();
    let (code, text) = verify(&file, &public);
    assert_eq!(code, 0, "{text}");
    let tampered = String::from_utf8(csv)
        .unwrap()
        .replacen("exp-c", "exp-x", 1);
    std::fs::write(&file, tampered).unwrap();
    let (code, text) = verify(&file, &public);
    assert_eq!(code, 1, "{text}");

    // Bad parameters are named.
    for (query, field) in [
        ("format=xml", "format"),
        ("limit=10001", "limit"),
        ("start_time=yesterday", "start_time"),
        ("event_category=nope", "event_category"),
        ("offset=5&format=ndjson", "offset"),
    ] {
        let r = app.get(&format!("/api/v1/audit/export?{query}")).await;
        assert_eq!(r.status(), 400, "{query}");
        let p: Value = r.json().await.unwrap();
        assert!(p["field_errors"].get(field).is_some(), "{query}: {p}");
    }
    // Every export is an audit event.
    let r = app
        .query("correlation_id=datastorage-access&event_type=datastorage.access.export")
        .await;
    let page: Value = r.json().await.unwrap();
    assert_eq!(
        page["pagination"]["total"], 4,
        "one per export shipped: {page}"
    );
    app.stop().await;
}

#[tokio::test]
async fn an_rsa_key_signs_exports_as_upstream_does_and_they_verify_offline() {
    // A 2048-bit key made with `openssl genpkey -algorithm RSA` (a test fixture).
    let data = concat!(env!("CARGO_MANIFEST_DIR"), "/../datastorage-api/tests/data");
    let private = Path::new(data).join("rsa-2048.key");
    let public = Path::new(data).join("rsa-2048.pub");
    let app = TestApp::serve_with(Backend::Sqlite, |s| {
        s.signing.key_file = Some(private.clone());
    })
    .await;
    let batch: Vec<Value> = (0..5).map(|_| event("rsa-1")).collect();
    assert_eq!(app.post_batch(&json!(batch)).await.status(), 201);
    let body = export(&app, "correlation_id=rsa-1").await;
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["export_metadata"]["signature_algorithm"], "SHA256withRSA");
    assert_eq!(v["export_signature"]["algorithm"], "rsa-pkcs1-sha256");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rsa.json");
    std::fs::write(&file, &body).unwrap();
    let (code, text) = verify(&file, &public);
    assert_eq!(code, 0, "{text}");
    let ndjson = export(&app, "format=ndjson").await;
    let edited = String::from_utf8(ndjson)
        .unwrap()
        .replacen("rsa-1", "rsa-2", 1);
    std::fs::write(&file, edited).unwrap();
    let (code, text) = verify(&file, &public);
    assert_eq!(code, 1, "{text}");
    app.stop().await;
}
