//! Access control end to end: the real binary started from config files, on SQLite in its own
//! folder, over loopback. Tokens mode (the three principals), the refusals at start
//! (an open API on a non-loopback address, TLS files missing or invalid), TLS with mTLS
//! identities and a certificate renewed while connections stay open, the tokens file reloaded,
//! per-principal rate limits, and kubernetes mode against the testkit's stand-in API server
//! (no real one can run here; it speaks TokenReview and SubjectAccessReview over HTTPS).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use datastorage::auth::tokens;
use datastorage_testkit::events::event;
use datastorage_testkit::free_port;
use datastorage_testkit::process::*;
use datastorage_testkit::tls::TestCa;
use serde_json::Value;

/// The `database:` section of a test: SQLite in the server's own folder.
const SQLITE: &str = "database:\n  driver: sqlite\n";

/// A tokens file with one token per `(name, scopes)`; returns the tokens by name.
fn write_tokens(path: &Path, entries: &[(&str, &str)]) -> HashMap<String, String> {
    let mut yaml = String::from("tokens:\n");
    let mut out = HashMap::new();
    for (name, scopes) in entries {
        let token = tokens::generate().unwrap();
        yaml.push_str(&format!(
            "  - name: {name}\n    sha256: {}\n    scopes: [{scopes}]\n",
            tokens::hash(&token)
        ));
        out.insert((*name).to_owned(), token);
    }
    // Written beside and renamed, as a Secret update swaps the file whole.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, yaml).unwrap();
    std::fs::rename(&tmp, path).unwrap();
    out
}

fn tokens_section(path: &Path, extra: &str) -> String {
    format!(
        "{SQLITE}auth:\n  mode: tokens\n  tokensFile: {}\n{extra}",
        path.display()
    )
}

async fn send(
    server: &Server,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut req = server
        .http
        .request(method, format!("{}{path}", server.base));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(b);
    }
    let r = req.send().await.unwrap();
    let (status, headers) = (r.status().as_u16(), r.headers().clone());
    let text = r.text().await.unwrap();
    (
        status,
        headers,
        serde_json::from_str(&text).unwrap_or(Value::Null),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tokens_mode_gives_each_principal_exactly_its_scopes_and_records_reads() {
    within(TEST_TIMEOUT, async {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tokens.yaml");
        let t = write_tokens(
            &file,
            &[("writer", "audit:write"), ("reader", "audit:read"), ("admin", "admin")],
        );
        let server = Server::start(&tokens_section(&file, ""), "").await;
        let post = reqwest::Method::POST;
        let get = reqwest::Method::GET;
        let mut e = event("tokens-e2e");
        e.as_object_mut().unwrap().remove("actor_id");

        let (status, headers, problem) = send(&server, post.clone(), "/api/v1/audit/events", None, Some(&e)).await;
        assert_eq!(status, 401, "unauthenticated POST: {problem}");
        assert!(headers["www-authenticate"].to_str().unwrap().starts_with("Bearer"));
        assert!(problem["type"].as_str().unwrap().ends_with("/unauthorized"));

        let (status, _, problem) =
            send(&server, post.clone(), "/api/v1/audit/events", Some(&t["reader"]), Some(&e)).await;
        assert_eq!(status, 403, "read-only POST: {problem}");

        let (status, _, created) =
            send(&server, post.clone(), "/api/v1/audit/events", Some(&t["writer"]), Some(&e)).await;
        assert_eq!(status, 201, "write-only POST: {created}");
        let id = created["event_id"].as_str().unwrap();

        let (status, _, _) =
            send(&server, get.clone(), "/api/v1/audit/events?correlation_id=tokens-e2e", Some(&t["writer"]), None).await;
        assert_eq!(status, 403, "write-only GET");

        let (status, _, page) =
            send(&server, get.clone(), "/api/v1/audit/events?correlation_id=tokens-e2e", Some(&t["reader"]), None).await;
        assert_eq!(status, 200, "read-only GET: {page}");
        let stored = &page["data"][0];
        assert_eq!(stored["event_id"], id);
        assert_eq!(stored["ingested_by"], "writer", "the stored event shows the token's name: {stored}");

        // The read itself is a new audit event naming the read-only principal.
        let (_, _, records) = send(
            &server,
            get.clone(),
            "/api/v1/audit/events?correlation_id=datastorage-access&event_type=datastorage.access.query&actor_id=reader",
            Some(&t["admin"]),
            None,
        )
        .await;
        let record = &records["data"][0];
        assert_eq!(record["actor_id"], "reader", "{records}");
        assert_eq!(record["event_data"]["filters"]["correlation_id"], "tokens-e2e", "{record}");
        assert_eq!(record["event_data"]["rows"], 1, "{record}");

        let text = server.metrics().await;
        for result in ["allowed", "unauthenticated", "forbidden"] {
            let line = format!("datastorage_auth_requests_total{{mode=\"tokens\",result=\"{result}\"}}");
            let count = datastorage_testkit::metric_value(&text, &line).unwrap_or(0.0);
            assert!(count >= 1.0, "{line} is {count}\n{text}");
        }
        server.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_removed_from_the_file_stops_working_within_a_second() {
    within(TEST_TIMEOUT, async {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tokens.yaml");
        let first = write_tokens(&file, &[("old", "audit:read"), ("kept", "audit:read")]);
        let server = Server::start(&tokens_section(&file, ""), "").await;
        let path = "/api/v1/audit/events?limit=1";
        let get = reqwest::Method::GET;
        assert_eq!(
            send(&server, get.clone(), path, Some(&first["old"]), None)
                .await
                .0,
            200
        );

        // A broken file keeps the tokens in force.
        std::fs::write(&file, "tokens: [{name: x}]\n").unwrap();
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert_eq!(
            send(&server, get.clone(), path, Some(&first["old"]), None)
                .await
                .0,
            200
        );
        assert!(
            server.log_text().contains("stays in force"),
            "{}",
            server.log_tail()
        );

        // Rewritten without `old` (and with `kept` re-issued under a new token).
        let second = write_tokens(&file, &[("kept", "audit:read")]);
        let changed = Instant::now();
        loop {
            let status = send(&server, get.clone(), path, Some(&first["old"]), None)
                .await
                .0;
            if status == 401 {
                break;
            }
            assert!(
                changed.elapsed() < Duration::from_secs(1),
                "the removed token still works {:?} after the change",
                changed.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            send(&server, get.clone(), path, Some(&second["kept"]), None)
                .await
                .0,
            200
        );
        assert_eq!(
            send(&server, get, path, Some(&first["kept"]), None).await.0,
            401
        );
        let text = server.metrics().await;
        assert!(
            text.contains("datastorage_auth_reloads_total{file=\"tokens\",result=\"ok\"}"),
            "{text}"
        );
        assert!(
            text.contains("datastorage_auth_reloads_total{file=\"tokens\",result=\"error\"}"),
            "{text}"
        );
        server.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_principal_above_its_rate_limit_gets_429_while_another_is_unaffected() {
    within(TEST_TIMEOUT, async {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tokens.yaml");
        let t = write_tokens(&file, &[("busy", "audit:read"), ("calm", "audit:read")]);
        let limits = "  rateLimit:\n    requestsPerSecond: 20\n    burst: 20\n";
        let server = Server::start(&tokens_section(&file, limits), "").await;
        // For one second: `busy` sends 100 requests (10 every 100 ms), `calm` 10 (one every
        // 100 ms), at the same time.
        let start = Instant::now();
        let mut tasks = Vec::new();
        for round in 0..10u32 {
            let at = start + Duration::from_millis(100 * u64::from(round));
            for (who, n) in [("busy", 10), ("calm", 1)] {
                for _ in 0..n {
                    let http = server.http.clone();
                    let url = format!("{}/api/v1/audit/events?limit=1", server.base);
                    let token = t[who].clone();
                    tasks.push(tokio::spawn(async move {
                        tokio::time::sleep_until(at.into()).await;
                        let r = http.get(url).bearer_auth(token).send().await.unwrap();
                        let retry = r
                            .headers()
                            .get("retry-after")
                            .map(|v| v.to_str().unwrap().to_owned());
                        let status = r.status().as_u16();
                        let body = r.text().await.unwrap();
                        (who, status, retry, body)
                    }));
                }
            }
        }
        let mut statuses: HashMap<(&str, u16), usize> = HashMap::new();
        for task in tasks {
            let (who, status, retry, body) = task.await.unwrap();
            *statuses.entry((who, status)).or_default() += 1;
            if status == 429 {
                assert_eq!(retry.as_deref(), Some("1"), "429 carries Retry-After");
                assert!(body.contains("rate-limit-exceeded"), "{body}");
            }
        }
        let busy_limited = statuses.get(&("busy", 429)).copied().unwrap_or(0);
        // 20 at once, then 20 per second: about 40 of busy's 100 pass.
        assert!(
            busy_limited >= 40,
            "busy above its limit gets 429s: {statuses:?}"
        );
        assert_eq!(
            statuses.get(&("calm", 200)).copied(),
            Some(10),
            "calm, within its limit, is unaffected by busy: {statuses:?}"
        );
        let text = server.metrics().await;
        assert!(
            text.contains(
                "datastorage_auth_requests_total{mode=\"tokens\",result=\"rate_limited\"}"
            ),
            "{text}"
        );
        server.stop().await;
    })
    .await;
}

/// Writes a config and runs `serve` to its (expected) exit.
async fn refused(config_text: &str) -> Finished {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("datastorage.yaml");
    std::fs::write(&config, config_text).unwrap();
    let out = run_to_exit(&config, &["serve"], Duration::from_secs(60)).await;
    assert!(!out.status.success(), "serve started:\n{}", out.stderr);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_refuses_to_open_the_api_to_the_network_without_authentication() {
    within(TEST_TIMEOUT, async {
        let (port, metrics) = (free_port(), free_port());
        let network = format!(
            "server:\n  host: 0.0.0.0\n  port: {port}\n  metricsHost: 127.0.0.1\n  metricsPort: {metrics}\n{SQLITE}"
        );
        for auth in ["", "auth:\n  mode: none\n"] {
            let out = refused(&format!("{network}{auth}")).await;
            assert!(
                out.stderr.contains("auth.allowUnauthenticated") && out.stderr.contains("0.0.0.0"),
                "the refusal says why and how to fix it:\n{}",
                out.stderr
            );
            assert!(!out.stderr.contains("listening"), "it never listened:\n{}", out.stderr);
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_invalid_tls_files_refuse_the_start() {
    within(TEST_TIMEOUT, async {
        let ca = TestCa::new("tls refusals");
        let good = ca.server("server");
        let dir = tempfile::tempdir().unwrap();
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "not a certificate").unwrap();
        let cases = [
            (
                good.cert.clone(),
                dir.path().join("missing.key"),
                "server.tls.keyFile",
            ),
            (garbage.clone(), good.key.clone(), "garbage.pem"),
            (good.cert.clone(), garbage.clone(), "garbage.pem"),
        ];
        for (cert, key, needle) in cases {
            let out = refused(&format!(
                "{}{SQLITE}",
                server_yaml(
                    free_port(),
                    free_port(),
                    &format!(
                        "  tls:\n    certFile: {}\n    keyFile: {}\n",
                        cert.display(),
                        key.display()
                    )
                )
            ))
            .await;
            assert!(out.stderr.contains(needle), "{needle}:\n{}", out.stderr);
            assert!(
                !out.stderr.contains("listening"),
                "nothing listened:\n{}",
                out.stderr
            );
        }
    })
    .await;
}

/// A server with TLS on its API port (and the given `auth` section), ready when its plain
/// metrics port says so.
struct TlsServer {
    proc: ChildGuard,
    port: u16,
    metrics: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl TlsServer {
    async fn start(tls: &str, auth: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (port, metrics) = (free_port(), free_port());
        let config = dir.path().join("datastorage.yaml");
        std::fs::write(
            &config,
            format!("{}{SQLITE}{auth}", server_yaml(port, metrics, tls)),
        )
        .unwrap();
        let log = dir.path().join("server.log");
        let file = std::fs::File::create(&log).unwrap();
        let child = datastorage(&config, dir.path(), &["serve"])
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap();
        let server = Self {
            proc: ChildGuard::new(child),
            port,
            metrics,
            log,
            _dir: dir,
        };
        let probe = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = probe
                .get(format!("http://127.0.0.1:{}/readyz", server.metrics))
                .send()
                .await
            {
                if r.status() == 200 {
                    return server;
                }
            }
            assert!(
                Instant::now() < deadline,
                "not ready:\n{}",
                std::fs::read_to_string(&server.log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.port)
    }
}

/// A client trusting `ca`, presenting `identity` (a certificate and key) if given.
fn https(ca: &Path, identity: Option<&datastorage_testkit::tls::CertFiles>) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(ca).unwrap()).unwrap())
        .timeout(Duration::from_secs(10));
    if let Some(id) = identity {
        let mut pem = std::fs::read(&id.cert).unwrap();
        pem.extend(std::fs::read(&id.key).unwrap());
        b = b.identity(reqwest::Identity::from_pem(&pem).unwrap());
    }
    b.build().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mtls_identifies_callers_by_certificate_and_a_renewed_certificate_needs_no_restart() {
    within(TEST_TIMEOUT, async {
        let server_ca = TestCa::new("server CA");
        let client_ca = TestCa::new("client CA");
        let stranger_ca = TestCa::new("stranger CA");
        let cert = server_ca.server("server");
        let dir = tempfile::tempdir().unwrap();
        let (crt, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        std::fs::copy(&cert.cert, &crt).unwrap();
        std::fs::copy(&cert.key, &key).unwrap();
        let tls = format!(
            "  tls:\n    certDir: {}\n    clientCaFile: {}\n",
            dir.path().display(),
            client_ca.ca_cert.display()
        );
        let auth = "auth:\n  mode: mtls\n  mtls:\n    principals:\n      - san: spiffe://test/ns/a/sa/gateway\n        name: gateway\n        scopes: [audit:write]\n      - san: auditor@example.test\n        scopes: [audit:read]\n";
        let server = TlsServer::start(&tls, auth).await;

        let writer = client_ca.client("writer", &["spiffe://test/ns/a/sa/gateway"]);
        let reader = client_ca.client("reader", &["email:auditor@example.test"]);
        let unknown = client_ca.client("unknown", &["nobody.example.test"]);
        let stranger = stranger_ca.client("stranger", &["spiffe://test/ns/a/sa/gateway"]);

        let as_writer = https(&server_ca.ca_cert, Some(&writer));
        let r = as_writer.post(server.url("/api/v1/audit/events")).json(&event("mtls")).send().await.unwrap();
        assert_eq!(r.status(), 201);
        let as_reader = https(&server_ca.ca_cert, Some(&reader));
        let page: Value = as_reader
            .get(server.url("/api/v1/audit/events?correlation_id=mtls"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(page["data"][0]["ingested_by"], "gateway", "{page}");
        assert_eq!(page["data"][0]["actor_id"], "gateway-service", "the event's own actor stays");

        // No certificate: the probes answer, the audit routes need one.
        let anonymous = https(&server_ca.ca_cert, None);
        assert_eq!(anonymous.get(server.url("/readyz")).send().await.unwrap().status(), 200);
        let r = anonymous.get(server.url("/api/v1/audit/events")).send().await.unwrap();
        assert_eq!(r.status(), 401);
        assert!(r.headers()["www-authenticate"].to_str().unwrap().starts_with("ClientCertificate"));
        let r = https(&server_ca.ca_cert, Some(&unknown)).get(server.url("/api/v1/audit/events")).send().await.unwrap();
        assert_eq!(r.status(), 401, "a verified certificate nobody listed");
        // A certificate of another CA fails the handshake; plain HTTP gets no answer.
        assert!(https(&server_ca.ca_cert, Some(&stranger)).get(server.url("/readyz")).send().await.is_err());
        let plain = reqwest::get(format!("http://127.0.0.1:{}/readyz", server.port)).await;
        assert!(plain.is_err() || plain.unwrap().status() != 200, "no plain HTTP on the TLS port");

        // Renewal: a certificate of a new CA replaces the files. Open connections keep working,
        // new ones get the new certificate, without a restart.
        let new_ca = TestCa::new("renewed server CA");
        let renewed = new_ca.server("server");
        let as_new = https(&new_ca.ca_cert, Some(&writer));
        assert!(as_new.get(server.url("/readyz")).send().await.is_err(), "not yet renewed");
        std::fs::copy(&renewed.cert, dir.path().join("tls.crt.new")).unwrap();
        std::fs::copy(&renewed.key, dir.path().join("tls.key.new")).unwrap();
        std::fs::rename(dir.path().join("tls.key.new"), &key).unwrap();
        std::fs::rename(dir.path().join("tls.crt.new"), &crt).unwrap();
        let changed = Instant::now();
        loop {
            if as_new.get(server.url("/readyz")).send().await.is_ok() {
                break;
            }
            assert!(changed.elapsed() < Duration::from_secs(5), "the renewed certificate is not served");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The writer's pooled connection from before the renewal still works.
        let r = as_writer.post(server.url("/api/v1/audit/events")).json(&event("mtls")).send().await.unwrap();
        assert_eq!(r.status(), 201);
        let log = std::fs::read_to_string(&server.log).unwrap();
        assert!(log.contains("reloaded"), "{log}");
        drop(server.proc);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kubernetes_mode_checks_service_account_tokens_with_the_api_server() {
    within(TEST_TIMEOUT, async {
        let kube = datastorage_testkit::kube::FakeKube::start().await;
        let dir = tempfile::tempdir().unwrap();
        let writer = kube.add_account("payments", "gateway", "gateway-token", &[]);
        let reader = kube.add_account("ops", "dashboard", "dashboard-token", &[]);
        kube.grant(&writer, "create");
        kube.grant(&reader, "get");
        let kubeconfig = kube.kubeconfig(dir.path(), None);
        let config = format!(
            "{SQLITE}auth:\n  mode: kubernetes\n  kubernetes:\n    kubeconfig: {}\n",
            kubeconfig.display()
        );
        let server = Server::start(&config, "").await;
        let post = reqwest::Method::POST;
        let get = reqwest::Method::GET;
        let mut e = event("kube-e2e");
        e.as_object_mut().unwrap().remove("actor_id");

        let (status, _, _) = send(
            &server,
            post.clone(),
            "/api/v1/audit/events",
            None,
            Some(&e),
        )
        .await;
        assert_eq!(status, 401);
        let (status, _, _) = send(
            &server,
            post.clone(),
            "/api/v1/audit/events",
            Some("forged"),
            Some(&e),
        )
        .await;
        assert_eq!(status, 401);
        let (status, _, _) = send(
            &server,
            post.clone(),
            "/api/v1/audit/events",
            Some("dashboard-token"),
            Some(&e),
        )
        .await;
        assert_eq!(status, 403);
        let (status, _, created) = send(
            &server,
            post,
            "/api/v1/audit/events",
            Some("gateway-token"),
            Some(&e),
        )
        .await;
        assert_eq!(status, 201, "{created}");
        let id = created["event_id"].as_str().unwrap();
        let (status, _, stored) = send(
            &server,
            get,
            &format!("/api/v1/audit/events/{id}"),
            Some("dashboard-token"),
            None,
        )
        .await;
        assert_eq!(status, 200, "{stored}");
        assert_eq!(stored["ingested_by"], writer.as_str());
        assert_eq!(
            stored["actor_id"],
            writer.as_str(),
            "the principal fills a missing actor"
        );
        let reviews = (kube.token_reviews(), kube.access_reviews());
        // Cached: the same calls again ask the API server nothing.
        let (status, _, _) = send(
            &server,
            reqwest::Method::GET,
            &format!("/api/v1/audit/events/{id}"),
            Some("dashboard-token"),
            None,
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!((kube.token_reviews(), kube.access_reviews()), reviews);
        server.stop().await;
    })
    .await;
}
