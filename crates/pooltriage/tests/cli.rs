//! End-to-end tests of the `pooltriage` binary on fixture repositories.

mod helpers;

use std::collections::BTreeSet;

use helpers::{active_violations, copy_of, fixture, json_report, line_of, pooltriage, rows};
use pooltriage::category::Category;
use pooltriage::report::Verdict;
use pooltriage::rules::FindingKind;

const SERVER_GO: &str = "pkg/datastorage/server/server.go";

#[test]
fn seed_repository_is_flagged_with_exactly_the_two_hardcoded_production_pool_settings() {
    let root = fixture("kubernaut");
    let (run, report) = json_report(&root, &[]);
    assert_eq!(run.code, 1, "violations exit 1; stderr: {}", run.stderr);
    assert!(!report.passed);
    assert_eq!(
        active_violations(&report),
        rows(&[
            (
                "hardcoded-pool-setting",
                SERVER_GO,
                line_of(&root, SERVER_GO, "db.SetMaxOpenConns(25)"),
                &["datastorage"]
            ),
            (
                "hardcoded-pool-setting",
                SERVER_GO,
                line_of(&root, SERVER_GO, "db.SetMaxIdleConns(5)"),
                &["datastorage"]
            ),
        ])
    );
    assert!(
        report.violations.iter().all(|v| v.is_active()),
        "nothing is allowlisted here"
    );
}

#[test]
fn seed_repository_reports_test_and_docs_pool_settings_without_flagging_them() {
    let root = fixture("kubernaut");
    let (_, report) = json_report(&root, &[]);
    let suite = "test/integration/datastorage/suite_test.go";
    let literal_in = |cat: Category| {
        report
            .findings
            .iter()
            .filter(|f| f.category == cat && f.is_literal_setting())
            .map(|f| (f.file.as_str(), f.line))
            .collect::<BTreeSet<_>>()
    };
    let tests = literal_in(Category::Test);
    assert!(tests.contains(&(suite, line_of(&root, suite, "db.SetMaxOpenConns(50)"))));
    assert!(tests.contains(&(suite, line_of(&root, suite, "tempDB.SetMaxOpenConns(50)"))));
    let docs = literal_in(Category::Docs);
    let md = "docs/services/datastorage/connection-pool.md";
    assert!(docs.contains(&(md, line_of(&root, md, "db.SetMaxOpenConns(25)"))));
    assert!(
        docs.contains(&(
            SERVER_GO,
            line_of(&root, SERVER_GO, "db.SetMaxOpenConns(100)")
        )),
        "comment"
    );
    assert!(report
        .findings
        .iter()
        .any(|f| f.category == Category::Generated));
    assert!(report
        .findings
        .iter()
        .any(|f| f.category == Category::Vendored));
    assert!(report
        .violations
        .iter()
        .all(|v| v.finding.category == Category::Production));
}

#[test]
fn every_seed_service_is_verified_with_evidence_and_only_datastorage_connects() {
    let (_, report) = json_report(&fixture("kubernaut"), &[]);
    let names: Vec<&str> = report.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "aianalysis",
            "authwebhook",
            "datastorage",
            "gateway",
            "notification",
            "remediationorchestrator",
            "signalprocessing",
            "workflowexecution"
        ]
    );
    for s in &report.services {
        assert!(s.files_scanned > 0, "{} was scanned, not assumed", s.name);
        if s.name == "datastorage" {
            assert!(s.owner);
            assert_eq!(s.verdict, Verdict::OwnerConnects);
            assert_eq!(s.connections.len(), 1);
            assert_eq!(
                s.connections[0].file, SERVER_GO,
                "found through cmd/datastorage's imports"
            );
        } else {
            assert_eq!(s.verdict, Verdict::NoDatabaseAccess, "{}", s.name);
            assert!(
                s.connections.is_empty() && s.driver_imports.is_empty(),
                "{}",
                s.name
            );
            assert!(
                !s.owner_clients.is_empty(),
                "{} shows how it reaches DataStorage",
                s.name
            );
        }
    }
    let gateway = report
        .services
        .iter()
        .find(|s| s.name == "gateway")
        .unwrap();
    assert!(gateway
        .owner_clients
        .iter()
        .any(|f| f.technology == "DataStorageURL"));
    let sp = report
        .services
        .iter()
        .find(|s| s.name == "signalprocessing")
        .unwrap();
    assert!(
        sp.go_packages
            .contains(&"pkg/datastorage/client".to_string()),
        "transitive imports"
    );
}

#[test]
fn seed_repository_after_the_fix_passes_and_says_so() {
    let repo = copy_of("kubernaut", &["kubernaut-fix"]);
    let (run, report) = json_report(repo.path(), &[]);
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    assert!(report.passed);
    assert!(report.violations.is_empty());
    let ds = report
        .services
        .iter()
        .find(|s| s.name == "datastorage")
        .unwrap();
    assert!(ds.pool_settings.iter().all(|f| !f.is_literal_setting()));

    let md = pooltriage([repo.path()]);
    assert_eq!(md.code, 0);
    assert!(md.stdout.contains("**Result: ✅ PASS**"), "{}", md.stdout);
    assert!(
        md.stdout.contains("| **datastorage** | yes | ✅ YES"),
        "{}",
        md.stdout
    );
    assert!(
        md.stdout
            .contains("✅ from config (3 settings) | ✅ COMPLIANT"),
        "{}",
        md.stdout
    );
}

#[test]
fn python_and_rust_services_that_open_their_own_pool_are_flagged_as_non_owners() {
    let root = fixture("polyglot");
    let (run, report) = json_report(&root, &[]);
    assert_eq!(run.code, 1, "stderr: {}", run.stderr);
    let rust = "services/ledger/src/main.rs";
    let python = "services/reports/app/db.py";
    assert_eq!(
        active_violations(&report),
        rows(&[
            (
                "non-owner-connection",
                rust,
                line_of(&root, rust, "let pool = PgPoolOptions::new()"),
                &["ledger"]
            ),
            (
                "non-owner-connection",
                python,
                line_of(&root, python, "asyncpg.create_pool("),
                &["reports"]
            ),
        ])
    );
    let verdict = |name: &str| {
        report
            .services
            .iter()
            .find(|s| s.name == name)
            .unwrap()
            .verdict
    };
    assert_eq!(verdict("ledger"), Verdict::NonOwnerConnects);
    assert_eq!(verdict("reports"), Verdict::NonOwnerConnects);
    assert_eq!(verdict("datastorage"), Verdict::OwnerConnects);
    assert_eq!(
        verdict("web"),
        Verdict::NoDatabaseAccess,
        "its pg pool lives in __tests__"
    );
}

#[test]
fn allowlisted_violations_stay_in_the_report_with_their_reason() {
    let (_, report) = json_report(&fixture("polyglot"), &[]);
    let allowed: Vec<_> = report
        .violations
        .iter()
        .filter(|v| !v.is_active())
        .collect();
    assert_eq!(allowed.len(), 2, "HikariConfig and HikariDataSource");
    for v in allowed {
        assert_eq!(v.services, ["invoicing"]);
        assert!(v
            .allowed_reason
            .as_deref()
            .unwrap()
            .contains("MIGRATION-42"));
    }
    let invoicing = report
        .services
        .iter()
        .find(|s| s.name == "invoicing")
        .unwrap();
    assert_eq!(invoicing.verdict, Verdict::NonOwnerConnectsAllowed);
}

#[test]
fn rust_cfg_test_modules_and_python_test_files_are_not_production() {
    let root = fixture("polyglot");
    let (_, report) = json_report(&root, &[]);
    let at = |file: &str, needle: &str| {
        let line = line_of(&root, file, needle);
        report
            .findings
            .iter()
            .filter(|f| f.file == file && f.line == line && f.kind == FindingKind::Connection)
            .map(|f| f.category)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        at(
            "services/ledger/src/main.rs",
            "PgPool::connect(\"postgres://localhost/ledger_test\")"
        ),
        [Category::Test]
    );
    assert_eq!(
        at("services/reports/tests/test_db.py", "asyncpg.create_pool("),
        [Category::Test]
    );
    assert_eq!(
        at("services/web/src/__tests__/db.test.ts", "new Pool("),
        [Category::Test]
    );
}

#[test]
fn comments_and_docs_never_count_as_production_findings() {
    for name in ["kubernaut", "polyglot", "deploy"] {
        let (_, report) = json_report(&fixture(name), &[]);
        for f in &report.findings {
            if f.in_comment || f.file.ends_with(".md") || f.file.starts_with("docs/") {
                assert_eq!(f.category, Category::Docs, "{name}: {}", f.location());
            }
        }
        assert!(
            report.violations.iter().all(|v| !v.finding.in_comment),
            "{name}"
        );
    }
    let root = fixture("polyglot");
    let (_, report) = json_report(&root, &[]);
    let py = "services/reports/app/db.py";
    let docstring = line_of(
        &root,
        py,
        "Historically this module called psycopg2.connect(dsn)",
    );
    let comment = line_of(&root, py, "# conn = psycopg2.connect(settings.dsn)");
    let lines: BTreeSet<usize> = report
        .findings
        .iter()
        .filter(|f| f.file == py && f.in_comment)
        .map(|f| f.line)
        .collect();
    assert_eq!(lines, BTreeSet::from([docstring, comment]));
}

#[test]
fn hard_coded_values_in_manifests_and_helm_templates_are_flagged_but_values_files_are_not() {
    let root = fixture("deploy");
    let (run, report) = json_report(&root, &[]);
    assert_eq!(run.code, 1);
    let manifest = "deploy/manifests/datastorage.yaml";
    let template = "charts/datastorage/templates/configmap.yaml";
    assert_eq!(
        active_violations(&report),
        rows(&[
            (
                "hardcoded-deploy-pool-value",
                manifest,
                line_of(&root, manifest, "value: \"100\""),
                &[]
            ),
            (
                "hardcoded-deploy-pool-value",
                template,
                line_of(&root, template, "maxIdleConns: 10"),
                &[]
            ),
        ])
    );
    assert!(
        report.findings.iter().all(|f| !f.file.contains("values")),
        "values files hold values"
    );
    let templated = line_of(&root, template, "{{ .Values.database.maxOpenConns }}");
    assert!(report
        .findings
        .iter()
        .any(|f| f.file == template && f.line == templated && f.deploy && !f.is_literal_setting()));
}

#[test]
fn markdown_report_mirrors_the_seed_triage_tables() {
    let run = pooltriage([fixture("kubernaut")]);
    assert_eq!(run.code, 1);
    let md = &run.stdout;
    for heading in [
        "## Violations",
        "## Services with database connections",
        "## Services without database connections",
        "## Pool configuration status",
        "## Matches by category",
        "## Evidence per service",
    ] {
        assert!(md.contains(heading), "missing {heading}");
    }
    assert!(md.contains("**Result: ❌ FAIL** (2 violations, exit code 1)"));
    assert!(
        md.contains("| `SetMaxOpenConns` | pool setting | 1 | 4 | 4 | 0 | 0 | 0 | 9 |"),
        "{md}"
    );
    assert!(md.contains(
        "| **gateway** | Go cmd/ `cmd/gateway` | 2 (2 production) | none | none | `DataStorageURL`"
    ));
    assert!(md.contains("- Proof of no connection: no driver imports found, no connection calls found, 1 file scanned"));
    assert!(md.contains("`pkg/datastorage/server/server.go:28` | `SetMaxOpenConns` | `25` | literal | code | ❌ hard-coded"));
}

#[test]
fn sarif_output_is_sarif_2_1_0_with_rules_results_and_regions() {
    let run = pooltriage([
        fixture("polyglot").as_os_str(),
        "--format".as_ref(),
        "sarif".as_ref(),
    ]);
    assert_eq!(run.code, 1);
    let sarif: serde_json::Value = serde_json::from_str(&run.stdout).expect("SARIF is JSON");
    assert_eq!(sarif["version"], "2.1.0");
    assert!(sarif["$schema"].as_str().unwrap().contains("sarif-2.1.0"));
    let run0 = &sarif["runs"][0];
    assert_eq!(run0["tool"]["driver"]["name"], "pooltriage");
    let rule_ids: Vec<&str> = run0["tool"]["driver"]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        rule_ids,
        [
            "non-owner-connection",
            "hardcoded-pool-setting",
            "hardcoded-deploy-pool-value",
            "pool-exceeds-max-connections",
            "literal-pool-fallback"
        ]
    );
    let results = run0["results"].as_array().unwrap();
    assert_eq!(results.len(), 4, "two violations and two allowlisted ones");
    for r in results {
        let idx = r["ruleIndex"].as_u64().unwrap() as usize;
        assert_eq!(r["ruleId"], run0["tool"]["driver"]["rules"][idx]["id"]);
        assert!(r["message"]["text"]
            .as_str()
            .unwrap()
            .contains("not a database owner"));
        let loc = &r["locations"][0]["physicalLocation"];
        assert!(loc["artifactLocation"]["uri"]
            .as_str()
            .unwrap()
            .starts_with("services/"));
        assert!(loc["region"]["startLine"].as_u64().unwrap() >= 1);
    }
    let suppressed = results
        .iter()
        .filter(|r| r.get("suppressions").is_some())
        .count();
    assert_eq!(suppressed, 2);
}

#[test]
fn json_output_round_trips_through_the_report_type() {
    let run = pooltriage([
        fixture("kubernaut").as_os_str(),
        "--format".as_ref(),
        "json".as_ref(),
    ]);
    let report = run.report();
    let again = pooltriage::render(&report, pooltriage::Format::Json);
    assert_eq!(again, run.stdout);
}

#[test]
fn usage_errors_exit_2() {
    let cases: [&[&str]; 4] = [
        &["--no-such-flag"],
        &["--format", "xml", "."],
        &["/definitely/not/a/dir"],
        &[".", "--config", "/definitely/not/a/file.yaml"],
    ];
    for args in cases {
        let run = pooltriage(args);
        assert_eq!(run.code, 2, "{args:?}: {}", run.stderr);
        assert!(!run.stderr.is_empty(), "{args:?} explains itself");
    }
}

#[test]
fn allowlist_entry_without_a_reason_is_a_config_error() {
    let repo = copy_of("polyglot", &[]);
    std::fs::write(
        repo.path().join(".pooltriage.yaml"),
        "owners: [datastorage]\nallowlist:\n  - path: services/ledger/**\n",
    )
    .unwrap();
    let run = pooltriage([repo.path()]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("reason"), "{}", run.stderr);
    assert!(run.stdout.is_empty(), "no report on config errors");

    std::fs::write(
        repo.path().join(".pooltriage.yaml"),
        "owners: [datastorage]\nowner: [x]\n",
    )
    .unwrap();
    let run = pooltriage([repo.path()]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("unknown field `owner`"),
        "{}",
        run.stderr
    );
}

#[test]
fn owners_on_the_command_line_replace_the_configured_ones() {
    let (run, report) = json_report(
        &fixture("polyglot"),
        &[
            "--owner",
            "datastorage",
            "--owner",
            "ledger",
            "--owner",
            "reports",
        ],
    );
    assert_eq!(run.code, 0, "{:?}", active_violations(&report));
    assert_eq!(report.owners, ["datastorage", "ledger", "reports"]);
}

#[test]
fn gitignored_and_binary_files_are_not_scanned() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::create_dir_all(p.join("services/api/generated")).unwrap();
    std::fs::write(p.join(".gitignore"), "services/api/generated/\n").unwrap();
    std::fs::write(
        p.join("services/api/generated/db.go"),
        "package generated\nfunc f() { sql.Open(\"x\", \"y\") }\n",
    )
    .unwrap();
    std::fs::write(
        p.join("services/api/blob.go"),
        b"package api\x00sql.Open(\"x\", \"y\")",
    )
    .unwrap();
    std::fs::write(p.join("services/api/main.go"), "package main\n").unwrap();
    let (run, report) = json_report(p, &[]);
    assert_eq!(run.code, 0, "{:?}", report.violations);
    assert_eq!(report.files.binary, 1);
    assert!(report
        .findings
        .iter()
        .all(|f| !f.file.contains("generated")));
    assert_eq!(report.services.len(), 1);
}

#[test]
fn output_file_receives_the_report_and_stderr_a_summary() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("triage.sarif");
    let run = pooltriage([
        fixture("deploy").as_os_str(),
        "--format".as_ref(),
        "sarif".as_ref(),
        "--output".as_ref(),
        out.as_os_str(),
    ]);
    assert_eq!(run.code, 1);
    assert!(run.stdout.is_empty());
    assert!(run.stderr.contains("FAIL (2 violations)"), "{}", run.stderr);
    let sarif: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out).unwrap()).unwrap();
    assert_eq!(sarif["runs"][0]["results"].as_array().unwrap().len(), 2);
}

#[test]
fn the_example_config_printed_by_the_binary_is_accepted() {
    let run = pooltriage(["--print-example-config"]);
    assert_eq!(run.code, 0);
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("example.yaml");
    std::fs::write(&cfg, &run.stdout).unwrap();
    let run = pooltriage([
        fixture("polyglot").as_os_str(),
        "--config".as_ref(),
        cfg.as_os_str(),
    ]);
    assert_ne!(run.code, 2, "{}", run.stderr);
}
