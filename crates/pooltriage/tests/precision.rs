//! End-to-end regression tests for the precision problems found by running pooltriage on public
//! repositories nobody here wrote. Each fixture under `tests/fixtures/precision/` is a small
//! repository written for the case (no upstream code); each test failed before its fix.

mod helpers;

use std::collections::BTreeSet;

use helpers::{active_violations, fixture, json_report, line_of, pooltriage, rows};
use pooltriage::category::Category;
use pooltriage::report::Verdict;
use pooltriage::services::DetectedBy;
use pooltriage::violation::ViolationRule;

fn case(name: &str) -> std::path::PathBuf {
    fixture(&format!("precision/{name}"))
}

/// Issue item 1: a file counted as a manifest when any document had apiVersion/kind, so the
/// plain application config in its first document was flagged.
#[test]
fn only_the_kubernetes_documents_of_a_multi_document_yaml_file_are_deploy_yaml() {
    let root = case("multidoc");
    let file = "config/app-config.yaml";
    let (run, report) = json_report(&root, &[]);
    assert_eq!(run.code, 1, "stderr: {}", run.stderr);
    assert_eq!(
        active_violations(&report),
        rows(&[(
            "hardcoded-deploy-pool-value",
            file,
            line_of(&root, file, "DB_MAX_IDLE_CONNS: \"4\""),
            &[]
        )]),
        "the app config in document 1 (max_open_conns: 10) is configuration, not a manifest"
    );
    assert!(report
        .findings
        .iter()
        .all(|f| f.line != line_of(&root, file, "max_open_conns: 10")));
}

/// Issue item 2: `*example*` / `*sample*` file names are examples, never violations.
#[test]
fn example_and_sample_file_names_are_examples_not_production() {
    let root = case("example-names");
    let (run, report) = json_report(&root, &[]);
    let sampler = "pkg/tracing/sampler.go";
    assert_eq!(
        active_violations(&report),
        rows(&[(
            "hardcoded-pool-setting",
            sampler,
            line_of(&root, sampler, "db.SetMaxOpenConns(3)"),
            &[]
        )]),
        "only the sampler (a word that merely contains `sample`) is production; stderr: {}",
        run.stderr
    );
    for file in [
        "config/monitoring-example.yaml",
        "deploy/pool.sample.yaml",
        "pkg/db/SamplePool.go",
    ] {
        let cats: BTreeSet<Category> = report
            .findings
            .iter()
            .filter(|f| f.file == file)
            .map(|f| f.category)
            .collect();
        assert_eq!(cats, BTreeSet::from([Category::Example]), "{file}");
    }
}

/// Issue item 3: a template whose header says it is generated is generated, not production.
#[test]
fn templates_whose_header_says_generated_are_generated() {
    let root = case("generated");
    let (_, report) = json_report(&root, &[]);
    let handwritten = "deploy/handwritten.yaml";
    assert_eq!(
        active_violations(&report),
        rows(&[(
            "hardcoded-deploy-pool-value",
            handwritten,
            line_of(&root, handwritten, "POOL_SIZE: \"7\""),
            &[]
        )])
    );
    for file in [
        "deploy/secrets.yaml",
        "deploy/rendered.yaml",
        "charts/app/templates/configmap.yaml",
    ] {
        let f = report
            .findings
            .iter()
            .find(|f| f.file == file)
            .unwrap_or_else(|| panic!("{file} is still reported as evidence"));
        assert_eq!(f.category, Category::Generated, "{file}");
    }
}

/// Issue item 4: pool keys with a unit suffix (`conn_max_lifetime_minutes`) were missed.
#[test]
fn pool_keys_with_unit_suffixes_are_found() {
    let root = case("unit-suffix");
    let file = "deploy/datastorage-config.yaml";
    let (_, report) = json_report(&root, &[]);
    let at = |needle: &str| line_of(&root, file, needle);
    let rule = "hardcoded-deploy-pool-value";
    assert_eq!(
        active_violations(&report),
        rows(&[
            (rule, file, at("max_open_conns: 10"), &[]),
            (rule, file, at("conn_max_lifetime_minutes: 5"), &[]),
            (rule, file, at("conn_max_idle_time_seconds: 30"), &[]),
            (rule, file, at("DB_CONN_MAX_LIFETIME_MS"), &[]),
        ]),
        "DB_TIMEOUT_SECONDS is not a pool key"
    );
}

/// Issue item 5: non-owner workloads given database credentials, and migration Jobs that
/// connect directly, were not reported.
#[test]
fn workloads_and_jobs_given_database_credentials_are_attributed_and_judged() {
    let root = case("credentials");
    let (run, report) = json_report(&root, &[]);
    assert_eq!(run.code, 1, "stderr: {}", run.stderr);
    let webhook = "deploy/microservices/webhook-service-deployment.yaml";
    let job = "deploy/jobs/webhooks-migrate-job.yaml";
    let reporting = "deploy/reporting/deployment.yaml";
    let rule = "non-owner-connection";
    assert_eq!(
        active_violations(&report),
        rows(&[
            (
                rule,
                webhook,
                line_of(&root, webhook, "- name: DB_PASSWORD"),
                &["webhooks"]
            ),
            (
                rule,
                job,
                line_of(&root, job, "- name: PGPASSWORD"),
                &["webhooks"]
            ),
            (
                rule,
                reporting,
                line_of(&root, reporting, "- name: POSTGRES_PASSWORD"),
                &["reporting"]
            ),
        ])
    );
    let owner_job = "deploy/datastorage/migrate-job.yaml";
    let f = report
        .findings
        .iter()
        .find(|f| f.file == owner_job)
        .expect("the owner's migration Job is a finding");
    assert_eq!(f.detector, "k8s/job-db-credentials");
    assert_eq!(f.service.as_deref(), Some("datastorage"));
    assert!(f.technology.contains("migration Job"), "{}", f.technology);
    assert!(report
        .findings
        .iter()
        .any(|f| f.file == "deploy/datastorage/deployment.yaml"
            && f.service.as_deref() == Some("datastorage")));
    assert!(
        report
            .findings
            .iter()
            .all(|f| f.file != "deploy/postgres/statefulset.yaml"),
        "the database server itself is not a client"
    );
    let unattributed: Vec<&str> = report
        .unattributed_connections
        .iter()
        .map(|f| f.file.as_str())
        .collect();
    assert_eq!(unattributed, ["deploy/jobs/backup-cronjob.yaml"]);
    let webhooks = report
        .services
        .iter()
        .find(|s| s.name == "webhooks")
        .unwrap();
    assert_eq!(webhooks.verdict, Verdict::NonOwnerConnects);
    let v = report
        .violations
        .iter()
        .find(|v| v.finding.file == webhook)
        .unwrap();
    assert!(
        v.message.contains("Deployment/webhook-service") && v.message.contains("DB_PASSWORD"),
        "{}",
        v.message
    );
}

/// Issue item 6: no service was detected without a root Dockerfile (only
/// `deploy/Dockerfile-slim`), so the owner rule never applied.
#[test]
fn dockerfile_variants_and_root_manifests_define_services() {
    let root = case("dockerfile-slim");
    let (run, report) = json_report(&root, &[]);
    assert_eq!(run.code, 1, "stderr: {}", run.stderr);
    let svcs: Vec<(&str, DetectedBy)> = report
        .services
        .iter()
        .map(|s| (s.name.as_str(), s.detected_by))
        .collect();
    assert_eq!(svcs, [("auditlog", DetectedBy::Dockerfile)]);
    let pg = "src/persistence/pg.ts";
    assert_eq!(
        active_violations(&report),
        rows(&[(
            "non-owner-connection",
            pg,
            line_of(&root, pg, "new pg.Pool("),
            &["auditlog"]
        )])
    );
    assert!(report.unattributed_connections.is_empty());

    let root = case("dockerfile-variants");
    let (_, report) = json_report(&root, &[]);
    let names: Vec<&str> = report.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        ["api", "worker"],
        "test-runner.Dockerfile is a test image"
    );
    assert_eq!(
        active_violations(&report),
        rows(&[
            (
                "non-owner-connection",
                "api/db.py",
                line_of(&root, "api/db.py", "asyncpg.create_pool("),
                &["api"]
            ),
            (
                "non-owner-connection",
                "worker/jobs.py",
                line_of(&root, "worker/jobs.py", "psycopg2.connect("),
                &["worker"]
            ),
        ])
    );
}

/// Issue item 7: a literal fallback (`Number(config.X) || 20`) was reported as plain "from
/// config".
#[test]
fn literal_fallbacks_are_shown_and_reported_as_warnings_not_violations() {
    let root = case("fallback");
    let (run, report) = json_report(&root, &[]);
    assert_eq!(run.code, 0, "warnings never fail the run: {}", run.stderr);
    assert!(report.violations.is_empty(), "{:?}", report.violations);
    let ts = "services/api/src/db.ts";
    let py = "services/reports/app/db.py";
    let got: BTreeSet<(String, usize, String)> = report
        .advisories
        .iter()
        .map(|v| {
            assert_eq!(v.rule, ViolationRule::LiteralPoolFallback);
            (
                v.finding.file.clone(),
                v.finding.line,
                v.finding.fallback.clone().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        BTreeSet::from([
            (
                ts.to_string(),
                line_of(&root, ts, "|| 20"),
                "20".to_string()
            ),
            (
                ts.to_string(),
                line_of(&root, ts, "?? 10000"),
                "10000".to_string()
            ),
            (
                py.to_string(),
                line_of(&root, py, "pool_size="),
                "\"5\"".to_string()
            ),
        ])
    );
    let json = pooltriage([root.as_os_str(), "--format".as_ref(), "json".as_ref()]).stdout;
    assert!(json.contains("\"fallback\": \"20\""), "{json}");
    let md = pooltriage([&root]).stdout;
    assert!(md.contains("**Result: ✅ PASS**"), "{md}");
    assert!(md.contains("from config (fallback 20)"), "{md}");
    assert!(
        md.contains("## Warnings: literal fallbacks (not violations)"),
        "{md}"
    );
    let sarif: serde_json::Value = serde_json::from_str(
        &pooltriage([root.as_os_str(), "--format".as_ref(), "sarif".as_ref()]).stdout,
    )
    .unwrap();
    let levels: BTreeSet<&str> = sarif["runs"][0]["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["level"].as_str().unwrap())
        .collect();
    assert_eq!(levels, BTreeSet::from(["warning"]));
}

/// Issue item 8: the deployment rule (replicas × maxOpenConns ≤ max_connections − reserved) as a
/// static check.
#[test]
fn owner_replicas_times_pool_size_above_max_connections_is_a_violation() {
    let root = case("capacity");
    let (run, report) = json_report(&root, &[]);
    assert_eq!(run.code, 1, "stderr: {}", run.stderr);
    let cm = "deploy/datastorage/configmap.yaml";
    let dep = "deploy/datastorage/deployment.yaml";
    let conf = "deploy/postgres/postgresql.conf";
    let v = report
        .violations
        .iter()
        .find(|v| v.rule == ViolationRule::PoolExceedsMaxConnections)
        .expect("capacity violation");
    assert_eq!(v.services, ["datastorage"]);
    assert_eq!(
        v.finding.location(),
        format!("{cm}:{}", line_of(&root, cm, "DB_MAX_OPEN_CONNS")),
        "reported at the pool size"
    );
    let related: Vec<String> = v.related.iter().map(|r| r.location()).collect();
    assert_eq!(
        related,
        [
            format!("{dep}:{}", line_of(&root, dep, "maxReplicas: 6")),
            format!("{conf}:{}", line_of(&root, conf, "max_connections = 100")),
            format!(
                "{conf}:{}",
                line_of(&root, conf, "superuser_reserved_connections = 5")
            ),
        ]
    );
    assert!(
        v.message.contains("= 150 connections") && v.message.contains("= 95"),
        "6 × 25 > 100 − 5: {}",
        v.message
    );

    let root = case("capacity-helm");
    let (run, report) = json_report(&root, &[]);
    assert_eq!(run.code, 1, "stderr: {}", run.stderr);
    let tpl = "charts/datastorage/templates/deployment.yaml";
    assert_eq!(
        active_violations(&report),
        rows(&[(
            "pool-exceeds-max-connections",
            tpl,
            line_of(&root, tpl, ".Values.database.maxOpenConns"),
            &["datastorage"]
        )]),
        "Helm values resolved: 4 replicas × 30 > 100 − 3"
    );
    let v = &report.violations[0];
    assert!(v.message.contains("= 120 connections"), "{}", v.message);
    assert_eq!(
        v.related[1].location(),
        format!(
            "charts/postgresql/values.yaml:{}",
            line_of(
                &root,
                "charts/postgresql/values.yaml",
                "max_connections=100"
            )
        )
    );
    let md = pooltriage([&root]).stdout;
    assert!(md.contains("`pool-exceeds-max-connections`"), "{md}");
}

/// Review of the capacity check: the `helm create` HPA behind `autoscaling.enabled: false` is
/// not rendered, so its `maxReplicas: 100` must not count; and a chart whose path merely contains
/// `templates` (`deploy/helm-templates/<chart>/templates/`) still finds its own `values.yaml`.
#[test]
fn disabled_helm_hpas_do_not_count_and_charts_are_found_by_their_templates_directory() {
    let root = case("capacity-hpa-disabled");
    let (run, report) = json_report(&root, &[]);
    assert_eq!(run.code, 1, "stderr: {}", run.stderr);
    let ha = "deploy/helm-templates/datastorage-ha/templates/deployment.yaml";
    assert_eq!(
        active_violations(&report),
        rows(&[(
            "pool-exceeds-max-connections",
            ha,
            line_of(&root, ha, ".Values.database.maxOpenConns"),
            &["datastorage"]
        )]),
        "charts/datastorage: 2 replicas × 30 fits in 100 − 3 (its HPA is disabled); \
         datastorage-ha: 4 × 30 does not"
    );
    let v = &report.violations[0];
    assert!(v.message.contains("= 120 connections"), "{}", v.message);
    assert_eq!(
        v.related[0].location(),
        format!("{ha}:{}", line_of(&root, ha, "replicas:"))
    );
}
