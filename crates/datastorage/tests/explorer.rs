//! The explorer in a real browser: Debian's Chromium, driven over WebDriver by chromedriver
//! (both installed by `scripts/test`), against the server on loopback and a real PostgreSQL.
//!
//! Each test seeds events through the API, drives the page as an auditor would, and checks what
//! it shows against the API and the database: search with filters, a timeline's order and its
//! verify badge (red after a row is tampered with SQL), a legal hold placed from the page, a
//! live-tail event within 2 s, and the page refused without a token when auth is on.
//!
//! With `DATASTORAGE_SCREENSHOTS=DIR` the tests save a screenshot of each main view there
//! (`docs/` holds the ones the README shows).

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use datastorage::auth::tokens;
use datastorage::config::AuthMode;
use datastorage_testkit::{free_port, Backend, TestApp};
use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

/// Longest wait for anything the page should show.
const PATIENCE: Duration = Duration::from_secs(15);

/// chromedriver on a free loopback port, in a process group of its own; on drop the whole
/// group is killed, so a test that fails before closing its session leaves no browser behind.
struct Driver {
    child: Child,
    port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn chromium() -> PathBuf {
    std::env::var_os("DATASTORAGE_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

/// Starts chromedriver and a headless Chromium session.
async fn browser() -> (Driver, Client) {
    let driver_bin = std::env::var("DATASTORAGE_CHROMEDRIVER")
        .unwrap_or_else(|_| "/usr/bin/chromedriver".to_owned());
    assert!(
        Path::new(&driver_bin).exists() && chromium().exists(),
        "the browser tests need Debian's chromium and chromium-driver ({driver_bin}, {}); scripts/test installs them",
        chromium().display()
    );
    let port = free_port();
    let child = Command::new(&driver_bin)
        .process_group(0)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let driver = Driver { child, port };
    let caps = json!({
        "goog:chromeOptions": {
            "binary": chromium(),
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1400,900", "--lang=en-US"],
        }
    });
    let Value::Object(caps) = caps else {
        unreachable!()
    };
    let deadline = Instant::now() + PATIENCE;
    loop {
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        match ClientBuilder::new(connector)
            .capabilities(caps.clone())
            .connect(&format!("http://127.0.0.1:{}", driver.port))
            .await
        {
            Ok(client) => return (driver, client),
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("no WebDriver session: {e}"),
        }
    }
}

/// Waits until `css` matches an element for which `ok` holds; returns it.
async fn wait_for<F, Fut>(c: &Client, css: &str, ok: F) -> Element
where
    F: Fn(Element) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Ok(found) = c.find_all(Locator::Css(css)).await {
            for e in found {
                if ok(e.clone()).await {
                    return e;
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "nothing matched {css} in time; status: {:?}",
            text_of(c, "#status").await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn text_of(c: &Client, css: &str) -> Option<String> {
    c.find(Locator::Css(css)).await.ok()?.text().await.ok()
}

async fn attr(e: &Element, name: &str) -> Option<String> {
    e.attr(name).await.ok().flatten()
}

/// Saves a screenshot as `name` when `DATASTORAGE_SCREENSHOTS` names a folder.
async fn screenshot(c: &Client, name: &str) {
    if let Some(dir) = std::env::var_os("DATASTORAGE_SCREENSHOTS") {
        let png = c.screenshot().await.expect("a screenshot");
        std::fs::write(Path::new(&dir).join(name), png).unwrap();
    }
}

fn event(cid: &str, i: usize, category: &str, outcome: &str, parent: Option<&str>) -> Value {
    const STEPS: [&str; 4] = ["started", "checked", "approved", "applied"];
    const ACTIONS: [&str; 4] = ["start", "check", "approve", "apply"];
    let at = chrono::Utc::now() - chrono::Duration::minutes(60 - i as i64 * 3);
    let mut e = json!({
        "version": "1.0",
        "event_type": format!("{category}.step.{}", STEPS[i % 4]),
        "event_timestamp": at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "event_category": category,
        "event_action": ACTIONS[i % 4],
        "event_outcome": outcome,
        "correlation_id": cid,
        "actor_type": "service",
        "actor_id": format!("svc-{}", i % 3),
        "resource_type": "Deployment",
        "resource_id": format!("web-{i}"),
        "namespace": "prod",
        "duration_ms": 150 * (i as i64 + 1),
        "event_data": {"step": i, "detail": {"replicas": i, "note": "<b>not markup</b>"}},
    });
    if let Some(p) = parent {
        e["parent_event_id"] = json!(p);
    }
    e
}

/// Writes one event and returns its id.
async fn write(app: &TestApp, e: &Value) -> String {
    let r = app.post_event(e).await;
    assert_eq!(r.status(), 201);
    r.json::<Value>().await.unwrap()["event_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// A chain of six (each the parent of the next but one, outcomes mixed) and 14 others.
async fn seed(app: &TestApp) -> Vec<String> {
    let mut chain: Vec<String> = Vec::new();
    for i in 0..6 {
        let parent = (i >= 2).then(|| chain[i - 2].clone());
        let outcome = if i == 4 { "failure" } else { "success" };
        let e = event("rr-explorer", i, "workflow", outcome, parent.as_deref());
        chain.push(write(app, &e).await);
    }
    for i in 0..14 {
        let category = if i % 2 == 0 { "gateway" } else { "approval" };
        let outcome = if i % 5 == 0 { "failure" } else { "success" };
        write(
            app,
            &event(&format!("other-{i}"), i, category, outcome, None),
        )
        .await;
    }
    chain
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_timeline_and_a_tampered_row_turn_the_badge_red() {
    let app = TestApp::serve(Backend::Postgres).await;
    let chain = seed(&app).await;
    let (_driver, c) = browser().await;
    let base = app.base();

    // Search with a filter from the URL: the rows are the API's.
    c.goto(&format!(
        "{base}/ui/?view=search&event_category=gateway&since=24h"
    ))
    .await
    .unwrap();
    wait_for(&c, "#result-count", |e| async move {
        e.text().await.is_ok_and(|t| t.starts_with("7 of 7"))
    })
    .await;
    let rows = c
        .find_all(Locator::Css("#results tbody tr[data-event-id]"))
        .await
        .unwrap();
    assert_eq!(rows.len(), 7);
    for row in &rows {
        let cell = row
            .find(Locator::Css("td[data-col=event_category]"))
            .await
            .unwrap();
        assert_eq!(cell.text().await.unwrap(), "gateway");
    }
    screenshot(&c, "explorer-search.png").await;

    // The form: outcome failure as well; the URL then holds the whole query.
    let outcome = c
        .find(Locator::Css("#search-form [name=event_outcome]"))
        .await
        .unwrap();
    outcome.select_by_value("failure").await.unwrap();
    c.find(Locator::Css("#search-submit"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let api: Value = app
        .query("event_category=gateway&event_outcome=failure&since=24h")
        .await
        .json()
        .await
        .unwrap();
    let want = api["pagination"]["total"].as_u64().unwrap();
    assert_eq!(want, 2, "others 0 and 10");
    wait_for(&c, "#result-count", |e| async move {
        e.text().await.is_ok_and(|t| t.starts_with("2 of 2"))
    })
    .await;
    let url = c.current_url().await.unwrap();
    let query = url.query().unwrap_or_default();
    assert!(
        query.contains("event_category=gateway") && query.contains("event_outcome=failure"),
        "{url}"
    );
    // A shared link opens the same search.
    c.goto(url.as_str()).await.unwrap();
    wait_for(&c, "#result-count", |e| async move {
        e.text().await.is_ok_and(|t| t.starts_with("2 of 2"))
    })
    .await;

    // The timeline: chain order, parent links drawn, the chain intact.
    c.goto(&format!(
        "{base}/ui/?view=timeline&correlation_id=rr-explorer"
    ))
    .await
    .unwrap();
    let badge = wait_for(&c, "#verify-badge", |e| async move {
        attr(&e, "data-state").await.as_deref() == Some("intact")
    })
    .await;
    assert!(badge.text().await.unwrap().contains("intact"));
    let items = c
        .find_all(Locator::Css("#timeline-list [data-seq]"))
        .await
        .unwrap();
    let mut seqs = Vec::new();
    for item in &items {
        seqs.push(attr(item, "data-seq").await.unwrap());
    }
    assert_eq!(seqs, ["1", "2", "3", "4", "5", "6"]);
    let nodes = c
        .find_all(Locator::Css("#timeline-svg g.tl-event"))
        .await
        .unwrap();
    assert_eq!(nodes.len(), 6);
    let links = c
        .find_all(Locator::Css("#timeline-svg path.tl-link"))
        .await
        .unwrap();
    assert_eq!(
        links.len(),
        4,
        "events 3 to 6 each have a parent in the chain"
    );
    let first = &links[0];
    assert_eq!(attr(first, "data-from").await.as_deref(), Some(&*chain[0]));
    assert_eq!(attr(first, "data-to").await.as_deref(), Some(&*chain[2]));
    screenshot(&c, "explorer-timeline.png").await;

    // The detail of one event: every field, its hash, its principal.
    c.goto(&format!("{base}/ui/?view=event&event_id={}", chain[2]))
        .await
        .unwrap();
    let stored: Value = app.get_event(&chain[2]).await.json().await.unwrap();
    let hash = wait_for(
        &c,
        "#event-fields dd[data-field=event_hash]",
        |e| async move { e.text().await.is_ok_and(|t| !t.is_empty()) },
    )
    .await;
    assert_eq!(hash.text().await.unwrap(), stored["event_hash"]);
    assert_eq!(
        text_of(&c, "#event-fields dd[data-field=ingested_by]").await,
        stored["ingested_by"].as_str().map(str::to_owned)
    );
    let data = text_of(&c, "#event-data").await.unwrap();
    assert!(data.contains("<b>not markup</b>"), "shown as text: {data}");
    screenshot(&c, "explorer-event.png").await;

    // Tamper with the third row in the database: the badge turns red at sequence 3.
    app.sql(&[
        "ALTER TABLE audit_events DISABLE TRIGGER audit_events_append_only",
        "UPDATE audit_events SET event_action = 'forged' WHERE correlation_id = 'rr-explorer' AND chain_sequence = 3",
        "ALTER TABLE audit_events ENABLE TRIGGER audit_events_append_only",
    ])
    .await;
    c.goto(&format!(
        "{base}/ui/?view=timeline&correlation_id=rr-explorer"
    ))
    .await
    .unwrap();
    let badge = wait_for(&c, "#verify-badge", |e| async move {
        attr(&e, "data-state").await.as_deref() == Some("tampered")
    })
    .await;
    let text = badge.text().await.unwrap();
    assert!(text.contains("tampered at sequence 3"), "{text}");
    screenshot(&c, "explorer-tampered.png").await;

    // The overview: one aggregate from the server, drawn.
    c.goto(&format!("{base}/ui/?view=overview&since=24h"))
        .await
        .unwrap();
    wait_for(&c, "#stats-chart rect", |_| async { true }).await;
    screenshot(&c, "explorer-overview.png").await;

    // A long chain: the list shows its first 250 rows and more on demand, the chart a density
    // strip instead of 1200 glyphs.
    let start = chrono::Utc::now() - chrono::Duration::minutes(30);
    for part in 0..2 {
        let batch: Vec<Value> = (0..600)
            .map(|k| {
                let i = part * 600 + k;
                let outcome = if i % 97 == 0 { "failure" } else { "success" };
                let mut e = event("rr-long", i % 4, "workflow", outcome, None);
                let at = start + chrono::Duration::seconds(i as i64);
                e["event_timestamp"] =
                    json!(at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
                e
            })
            .collect();
        assert_eq!(app.post_batch(&json!(batch)).await.status(), 201);
    }
    c.goto(&format!("{base}/ui/?view=timeline&correlation_id=rr-long"))
        .await
        .unwrap();
    wait_for(&c, "#verify-badge", |e| async move {
        attr(&e, "data-state").await.as_deref() == Some("intact")
    })
    .await;
    wait_for(&c, "#timeline-note", |e| async move {
        e.text().await.is_ok_and(|t| t == "1200 events")
    })
    .await;
    let rows = c
        .find_all(Locator::Css("#timeline-list [data-seq]"))
        .await
        .unwrap();
    assert_eq!(rows.len(), 250, "the first rows only");
    assert_eq!(attr(&rows[0], "data-seq").await.as_deref(), Some("1"));
    let bars = c
        .find_all(Locator::Css("#timeline-svg rect.tl-density"))
        .await
        .unwrap();
    assert!(!bars.is_empty());
    let glyphs = c
        .find_all(Locator::Css("#timeline-svg g.tl-event"))
        .await
        .unwrap();
    assert!(glyphs.is_empty(), "no glyph per event in a dense chart");
    // Scrolling the list to its end adds the next rows.
    c.execute(
        "document.querySelector('#timeline-more').scrollIntoView()",
        vec![],
    )
    .await
    .unwrap();
    wait_for(&c, "#timeline-list tbody", |e| async move {
        e.find_all(Locator::Css("[data-seq]"))
            .await
            .is_ok_and(|rows| rows.len() >= 500)
    })
    .await;
    c.close().await.unwrap();
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_placed_from_the_page_is_in_the_api_and_a_live_event_shows_within_two_seconds() {
    let app = TestApp::serve(Backend::Postgres).await;
    seed(&app).await;
    let (_driver, c) = browser().await;
    let base = app.base();

    c.goto(&format!(
        "{base}/ui/?view=timeline&correlation_id=rr-explorer"
    ))
    .await
    .unwrap();
    wait_for(&c, "#verify-badge", |e| async move {
        attr(&e, "data-state").await.as_deref() == Some("intact")
    })
    .await;
    c.find(Locator::Css("#hold-reason"))
        .await
        .unwrap()
        .send_keys("case 2026-114: litigation")
        .await
        .unwrap();
    c.find(Locator::Css("#hold-place"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for(&c, "#timeline-hold", |e| async move {
        e.text().await.is_ok_and(|t| t.contains("on legal hold"))
    })
    .await;
    let holds: Value = app
        .get("/api/v1/audit/legal-hold")
        .await
        .json()
        .await
        .unwrap();
    let hold = holds["holds"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["correlation_id"] == "rr-explorer")
        .unwrap_or_else(|| panic!("no hold in {holds}"));
    assert_eq!(hold["reason"], "case 2026-114: litigation");
    assert_eq!(hold["events_affected"], 6);

    // Live tail: an event written after the page subscribed shows within 2 s.
    c.goto(&format!("{base}/ui/?view=search&since=24h"))
        .await
        .unwrap();
    wait_for(&c, "#result-count", |e| async move {
        e.text().await.is_ok_and(|t| t.starts_with("20 of 20"))
    })
    .await;
    c.find(Locator::Css("#live-toggle"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let deadline = Instant::now() + PATIENCE;
    while app
        .metrics()
        .await
        .lines()
        .all(|l| l != "datastorage_stream_subscribers 1")
    {
        assert!(Instant::now() < deadline, "the page did not subscribe");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut e = event("rr-live", 1, "gateway", "success", None);
    e["event_timestamp"] = json!(chrono::Utc::now().to_rfc3339());
    let written = Instant::now();
    let id = write(&app, &e).await;
    let css = format!("#results tbody tr.live[data-event-id='{id}']");
    wait_for(&c, &css, |_| async { true }).await;
    let shown = written.elapsed();
    assert!(
        shown < Duration::from_secs(2),
        "live event shown after {shown:?}"
    );
    wait_for(&c, "#result-count", |e| async move {
        e.text().await.is_ok_and(|t| t.starts_with("21 of 21"))
    })
    .await;
    screenshot(&c, "explorer-live.png").await;
    c.close().await.unwrap();
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_auth_on_the_page_is_refused_without_a_token_and_a_token_gets_its_scopes_only() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens.yaml");
    let (reader, writer) = (tokens::generate().unwrap(), tokens::generate().unwrap());
    std::fs::write(
        &file,
        format!(
            "tokens:\n  - name: auditor\n    sha256: {}\n    scopes: [audit:read, audit:verify]\n  - name: writer\n    sha256: {}\n    scopes: [audit:write]\n",
            tokens::hash(&reader),
            tokens::hash(&writer)
        ),
    )
    .unwrap();
    let mut app = TestApp::serve_with(Backend::Postgres, |s| {
        s.auth.mode = Some(AuthMode::Tokens);
        s.auth.tokens_file = Some(file.clone());
    })
    .await;
    app.authorize_as(format!("Bearer {writer}"));
    seed(&app).await;
    let (_driver, c) = browser().await;
    let base = app.base();

    // No token: the login panel, no rows, and the API itself answers 401.
    c.goto(&format!("{base}/ui/?view=search&since=24h"))
        .await
        .unwrap();
    let error = wait_for(&c, "#auth-error", |e| async move {
        e.text().await.is_ok_and(|t| !t.is_empty())
    })
    .await;
    assert!(
        error.text().await.unwrap().contains("token"),
        "{:?}",
        error.text().await
    );
    assert!(c
        .find(Locator::Css("#login"))
        .await
        .unwrap()
        .is_displayed()
        .await
        .unwrap());
    let rows = c
        .find_all(Locator::Css("#results tbody tr[data-event-id]"))
        .await
        .unwrap();
    assert!(rows.is_empty());
    let status = reqwest::get(format!("{base}/api/v1/audit/events"))
        .await
        .unwrap()
        .status();
    assert_eq!(status, 401);
    screenshot(&c, "explorer-login.png").await;

    // A wrong token is refused too.
    let token = c.find(Locator::Css("#token")).await.unwrap();
    token.send_keys("dst_not-a-real-token").await.unwrap();
    c.find(Locator::Css("#login-submit"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for(&c, "#auth-error", |e| async move {
        e.text().await.is_ok_and(|t| !t.is_empty())
    })
    .await;
    assert!(c
        .find_all(Locator::Css("#results tbody tr[data-event-id]"))
        .await
        .unwrap()
        .is_empty());

    // The auditor's token: the rows; a hold needs a scope it lacks, and the page says so.
    let token = c.find(Locator::Css("#token")).await.unwrap();
    token.clear().await.unwrap();
    token.send_keys(&reader).await.unwrap();
    c.find(Locator::Css("#login-submit"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for(&c, "#result-count", |e| async move {
        e.text().await.is_ok_and(|t| t.starts_with("20 of 20"))
    })
    .await;
    c.goto(&format!(
        "{base}/ui/?view=timeline&correlation_id=rr-explorer"
    ))
    .await
    .unwrap();
    wait_for(&c, "#verify-badge", |e| async move {
        attr(&e, "data-state").await.as_deref() == Some("intact")
    })
    .await;
    c.find(Locator::Css("#hold-reason"))
        .await
        .unwrap()
        .send_keys("no scope for this")
        .await
        .unwrap();
    c.find(Locator::Css("#hold-place"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for(&c, "#status.error", |e| async move {
        e.text().await.is_ok_and(|t| t.contains("audit:hold"))
    })
    .await;
    app.authorize_as(format!("Bearer {reader}"));
    let holds: Value = app
        .get("/api/v1/audit/legal-hold")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(holds["total"], 0, "{holds}");
    c.close().await.unwrap();
    app.stop().await;
}
