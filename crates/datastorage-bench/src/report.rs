//! The report: goals with PASS/SHORT, every scenario, the ceiling, SQLite beside PostgreSQL,
//! the pool-exhaustion run, chain verification, the held chain, concurrent large bodies, the
//! cost of access control, and the CPU split that shows where time goes.

use std::fmt::Write as _;

use std::collections::BTreeMap;

use crate::auth::AuthRun;
use crate::bodies::BodiesRound;
use crate::held::HeldRun;
use crate::load::{Outcome, Work};
use crate::pg::Ceiling;
use crate::server::PoolStats;
use crate::sys::{CpuUse, MachineInfo};
use crate::verify::{VerifyRun, SERVER_LIMIT};

/// One server scenario.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// What each request did.
    pub work: Work,
    /// Concurrent clients.
    pub clients: usize,
    /// What was measured.
    pub outcome: Outcome,
    /// Server metrics over the scenario (warm-up included).
    pub pool: PoolStats,
    /// Rows in `audit_events` when it started (PostgreSQL).
    pub table_rows: Option<i64>,
}

impl Scenario {
    /// Short name, e.g. `batch 500`.
    pub fn label(&self) -> String {
        match self.work {
            Work::Single => "single POST".to_owned(),
            Work::Batch(n) => format!("batch POST ×{n}"),
            Work::Query(_) => "query by correlation_id".to_owned(),
        }
    }
}

/// The pool-exhaustion run.
#[derive(Debug, Clone)]
pub struct PoolRun {
    /// `database.maxOpenConns`.
    pub max_open_conns: u32,
    /// Concurrent writers.
    pub writers: usize,
    /// What was measured.
    pub outcome: Outcome,
    /// Metrics over the run.
    pub pool: PoolStats,
    /// Server VmHWM at the end, KiB.
    pub hwm_kib: Option<u64>,
    /// Warnings and errors the server logged (first few).
    pub log_problems: Vec<String>,
}

/// The pool-exhaustion run through PgBouncer.
#[derive(Debug, Clone)]
pub struct PgBouncerRun {
    /// PgBouncer's `default_pool_size`.
    pub pool_size: u32,
    /// PostgreSQL backends of the service (`application_name` `datastorage`) right after the
    /// run: the pooler's server connections.
    pub server_backends: Option<i64>,
    /// The run: `max_open_conns` is the service's client connections to the pooler.
    pub run: PoolRun,
}

/// Everything one run measured.
#[derive(Debug, Clone, Default)]
pub struct Run {
    /// The machine.
    pub machine: MachineInfo,
    /// `quick` or `full`.
    pub mode: String,
    /// Settings and facts worth printing, as (name, value).
    pub facts: Vec<(String, String)>,
    /// Server scenarios on PostgreSQL.
    pub pg: Vec<Scenario>,
    /// Server scenarios on SQLite.
    pub sqlite: Vec<Scenario>,
    /// PostgreSQL ceiling workloads.
    pub ceilings: Vec<Ceiling>,
    /// Peak RSS of the PostgreSQL-backed server over all its scenarios, KiB.
    pub pg_hwm_kib: Option<u64>,
    /// Peak RSS of the SQLite-backed server, KiB.
    pub sqlite_hwm_kib: Option<u64>,
    /// The pool-exhaustion run.
    pub pool: Option<PoolRun>,
    /// The pool-exhaustion run through PgBouncer.
    pub pgbouncer: Option<PgBouncerRun>,
    /// Chain verification, by backend.
    pub verify: Vec<VerifyRun>,
    /// The held-chain scenario.
    pub held: Option<HeldRun>,
    /// The large-body rounds.
    pub bodies: Vec<BodiesRound>,
    /// The access-control part.
    pub auth: Option<AuthRun>,
    /// The lifecycle part's section (issue 15), Markdown from its `## ` heading on.
    pub lifecycle: Option<String>,
    /// The outage-buffer part's section (issue 16), Markdown from its `## ` heading on.
    pub buffer: Option<String>,
    /// The explorer part's section (issue 19), Markdown from its `## ` heading on.
    pub explorer: Option<String>,
    /// Free-form notes (seeding, chain verification, skipped parts).
    pub notes: Vec<String>,
    /// Wall time of the whole run, seconds.
    pub elapsed: f64,
}

fn find(v: &[Scenario], work: fn(Work) -> bool, clients: usize) -> Option<&Scenario> {
    v.iter().find(|s| work(s.work) && s.clients == clients)
}

fn best(v: &[Scenario], work: fn(Work) -> bool) -> Option<&Scenario> {
    v.iter()
        .filter(|s| work(s.work))
        .max_by(|a, b| a.outcome.rate().total_cmp(&b.outcome.rate()))
}

fn is_single(w: Work) -> bool {
    matches!(w, Work::Single)
}
fn is_batch(w: Work) -> bool {
    matches!(w, Work::Batch(_))
}
fn is_query(w: Work) -> bool {
    matches!(w, Work::Query(_))
}

fn ceiling<'a>(run: &'a Run, prefix: &str, clients: usize) -> Option<&'a Ceiling> {
    run.ceilings
        .iter()
        .find(|c| c.name.starts_with(prefix) && c.clients == clients)
}

fn best_ceiling<'a>(run: &'a Run, prefix: &str) -> Option<&'a Ceiling> {
    run.ceilings
        .iter()
        .filter(|c| c.name.starts_with(prefix))
        .max_by(|a, b| a.rate.total_cmp(&b.rate))
}

fn us_per(cpu: Option<f64>, units: f64) -> String {
    match cpu {
        Some(c) if units > 0.0 => format!("{:.0}", c / units * 1e6),
        _ => "–".to_owned(),
    }
}

/// The table of a pool-exhaustion run.
fn pool_table(out: &mut String, p: &PoolRun) {
    let o = &p.outcome;
    let _ = writeln!(out, "| | |\n|---|---|");
    let _ = writeln!(out, "| successful requests | {} |", o.requests);
    let _ = writeln!(out, "| errors | {} |", errors(o));
    let _ = writeln!(out, "| throughput | {:.0} events/s |", o.rate());
    let _ = writeln!(
        out,
        "| latency p50 / p95 / p99 / max | {:.1} / {:.1} / {:.1} / {:.1} ms |",
        o.ms(0.5),
        o.ms(0.95),
        o.ms(0.99),
        o.ms(1.0)
    );
    let _ = writeln!(
        out,
        "| datastorage_db_pool_wait_count_total (Δ) | {:.0} |",
        p.pool.waits
    );
    let _ = writeln!(
        out,
        "| datastorage_db_pool_wait_duration_seconds_total (Δ) | {:.3} s |",
        p.pool.wait_seconds
    );
    let _ = writeln!(
        out,
        "| datastorage_db_pool_acquire_timeouts_total (Δ) | {:.0} |",
        p.pool.timeouts
    );
    let _ = writeln!(
        out,
        "| mean wait (duration ÷ count) | {:.2} ms |",
        p.pool.mean_wait_ms()
    );
    let _ = writeln!(
        out,
        "| pool acquisitions (one per group commit or request) | {:.0} |",
        p.pool.acquires
    );
    let _ = writeln!(
        out,
        "| connections closed for exceeding maxIdleConns (Δ) | {:.0} |",
        p.pool.idle_closed
    );
    let _ = writeln!(out, "| server peak RSS (VmHWM) | {} MiB |", mib(p.hwm_kib));
    if !p.log_problems.is_empty() {
        let _ = writeln!(
            out,
            "\nServer warnings/errors logged (first {}):\n\n```",
            p.log_problems.len()
        );
        for l in &p.log_problems {
            let _ = writeln!(out, "{l}");
        }
        let _ = writeln!(out, "```");
    }
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or("–".to_owned(), |k| format!("{:.1}", k as f64 / 1024.0))
}

fn errors(o: &Outcome) -> String {
    if o.errors.is_empty() {
        "0".to_owned()
    } else {
        o.errors
            .iter()
            .map(|(k, v)| format!("{v} × {k}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// One goal line.
#[derive(Debug, Clone)]
pub struct Goal {
    /// What is compared.
    pub name: String,
    /// Ours, formatted.
    pub ours: String,
    /// The reference, formatted.
    pub reference: String,
    /// The measured figure (ratio or MiB), formatted.
    pub measured: String,
    /// The target, formatted.
    pub target: String,
    /// PASS, SHORT, or n/a.
    pub verdict: &'static str,
}

fn verdict(ok: Option<bool>) -> &'static str {
    match ok {
        Some(true) => "PASS",
        Some(false) => "SHORT",
        None => "n/a",
    }
}

/// The issue's goals, from the measurements.
pub fn goals(run: &Run) -> Vec<Goal> {
    let mut g = Vec::new();
    let batch = best(&run.pg, is_batch);
    let multi = best_ceiling(run, "multi-row");
    let r = batch.zip(multi).map(|(b, m)| b.outcome.rate() / m.rate);
    g.push(Goal {
        name: "batch endpoint ÷ multi-row INSERT (best of each)".to_owned(),
        ours: batch.map_or("–".into(), |b| {
            format!(
                "{:.0} ev/s ({}, {} clients)",
                b.outcome.rate(),
                b.label(),
                b.clients
            )
        }),
        reference: multi.map_or("–".into(), |m| {
            format!("{:.0} rows/s ({}, {} streams)", m.rate, m.name, m.clients)
        }),
        measured: r.map_or("–".into(), |r| format!("{r:.2}")),
        target: "≥ 0.60".to_owned(),
        verdict: verdict(r.map(|r| r >= 0.6)),
    });
    let single = find(&run.pg, is_single, 64);
    let pgb = ceiling(run, "pgbench prepared INSERT", 64);
    let r = single.zip(pgb).map(|(s, p)| s.outcome.rate() / p.rate);
    g.push(Goal {
        name: "single POST @64 ÷ pgbench prepared single-row INSERT @64".to_owned(),
        ours: single.map_or("–".into(), |s| format!("{:.0} ev/s", s.outcome.rate())),
        reference: pgb.map_or("–".into(), |p| format!("{:.0} tps", p.rate)),
        measured: r.map_or("–".into(), |r| format!("{r:.2}")),
        target: "≥ 1.50".to_owned(),
        verdict: verdict(r.map(|r| r >= 1.5)),
    });
    let query = best(&run.pg, is_query);
    let pgq = best_ceiling(run, "pgbench prepared SELECT");
    let r = query.zip(pgq).map(|(q, p)| q.outcome.rate() / p.rate);
    g.push(Goal {
        name: "query by correlation_id ÷ pgbench prepared SELECT".to_owned(),
        ours: query.map_or("–".into(), |q| {
            format!("{:.0} q/s ({} clients)", q.outcome.rate(), q.clients)
        }),
        reference: pgq.map_or("–".into(), |p| {
            format!("{:.0} tps ({} clients)", p.rate, p.clients)
        }),
        measured: r.map_or("–".into(), |r| format!("{r:.2}")),
        target: "≥ 0.60".to_owned(),
        verdict: verdict(r.map(|r| r >= 0.6)),
    });
    let tail = single.map(|s| (s.outcome.ms(0.99), s.outcome.ms(0.5)));
    let r = tail
        .filter(|(_, p50)| *p50 > 0.0)
        .map(|(p99, p50)| p99 / p50);
    g.push(Goal {
        name: "single POST @64: p99 ÷ p50".to_owned(),
        ours: tail.map_or("–".into(), |(p99, _)| format!("p99 {p99:.1} ms")),
        reference: tail.map_or("–".into(), |(_, p50)| format!("p50 {p50:.1} ms")),
        measured: r.map_or("–".into(), |r| format!("{r:.2}")),
        target: "≤ 5.00".to_owned(),
        verdict: verdict(r.map(|r| r <= 5.0)),
    });
    let rss = run.pg_hwm_kib.map(|k| k as f64 / 1024.0);
    g.push(Goal {
        name: "server peak RSS (VmHWM) under load, PostgreSQL".to_owned(),
        ours: rss.map_or("–".into(), |m| format!("{m:.1} MiB")),
        reference: "–".to_owned(),
        measured: rss.map_or("–".into(), |m| format!("{m:.1} MiB")),
        target: "< 150 MiB".to_owned(),
        verdict: verdict(rss.map(|m| m < 150.0)),
    });
    g
}

/// Replies by kind, e.g. `12 × 201, 20 × 503 (in-flight body budget)`.
pub fn replies(by: &BTreeMap<String, usize>) -> String {
    if by.is_empty() {
        return "none".to_owned();
    }
    by.iter()
        .map(|(k, n)| format!("{n} × {k}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What the writes to the held chain got, e.g. `6 × 201, 2 × 503 (…)`.
pub fn held_replies(h: &HeldRun) -> String {
    let mut by = BTreeMap::new();
    for w in &h.writes {
        *by.entry(w.reply.clone()).or_default() += 1;
    }
    replies(&by)
}

/// The goal of issue 12 for chain verification: a chain of this many events.
pub const VERIFY_GOAL_LEN: u64 = 100_000;
/// ... verified with at most this much peak RSS above idle, MiB.
pub const VERIFY_GOAL_MIB: f64 = 64.0;
/// The goal for a held chain: the other writers' p99 within this factor.
pub const HELD_GOAL_RATIO: f64 = 2.0;

/// The goals of issue 12, from the measurements.
pub fn goals_12(run: &Run) -> Vec<Goal> {
    let mut g = Vec::new();
    for v in &run.verify {
        let Some(len) = v.longest() else { continue };
        for concurrent in [1, SERVER_LIMIT] {
            let Some(s) = v.step(len, concurrent) else {
                continue;
            };
            let above = v.above_idle_mib(s);
            let short = len < VERIFY_GOAL_LEN;
            g.push(Goal {
                name: format!(
                    "verify-chain, {len}-event chain, {}, {}: peak RSS above idle{}",
                    v.backend,
                    if concurrent == 1 {
                        "one call".to_owned()
                    } else {
                        format!("{concurrent} at once")
                    },
                    if short {
                        format!(" (shorter than the goal's {VERIFY_GOAL_LEN})")
                    } else {
                        String::new()
                    }
                ),
                ours: format!(
                    "peak {:.1} MiB in {:.2} s, {}",
                    s.mem.peak_kib as f64 / 1024.0,
                    s.wall,
                    s.replies()
                ),
                reference: format!("idle {:.1} MiB", v.idle_kib as f64 / 1024.0),
                measured: format!("{above:+.1} MiB"),
                target: format!("< {VERIFY_GOAL_MIB:.0} MiB"),
                verdict: if short {
                    "n/a"
                } else {
                    verdict(Some(above < VERIFY_GOAL_MIB && s.all_valid()))
                },
            });
        }
    }
    if let Some(h) = &run.held {
        let r = h.p99_ratio();
        g.push(Goal {
            name: format!(
                "single POST @{} on other chains while one chain head is held {:.0} s: p99 ÷ p99 with nothing held",
                h.held.clients, h.hold
            ),
            ours: format!("p99 {:.1} ms", h.held.outcome.ms(0.99)),
            reference: format!("p99 {:.1} ms", h.baseline.outcome.ms(0.99)),
            measured: r.map_or("–".into(), |r| format!("{r:.2}")),
            target: format!("≤ {HELD_GOAL_RATIO:.2}"),
            verdict: verdict(r.map(|r| r <= HELD_GOAL_RATIO)),
        });
        let failed = |o: &Outcome| o.error_count() + o.late.errors.values().sum::<u64>();
        let (fh, fb) = (failed(&h.held.outcome), failed(&h.baseline.outcome));
        g.push(Goal {
            name:
                "writes to other chains that failed while the head was held (window and stragglers)"
                    .to_owned(),
            ours: if fh == 0 {
                "none".to_owned()
            } else {
                let mut all = h.held.outcome.errors.clone();
                for (k, v) in &h.held.outcome.late.errors {
                    *all.entry(k.clone()).or_default() += v;
                }
                all.iter()
                    .map(|(k, v)| format!("{v} × {k}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            },
            reference: format!("{fb} with nothing held"),
            measured: fh.to_string(),
            target: "0".to_owned(),
            verdict: verdict(Some(fh == 0)),
        });
    }
    if let (Some(d), Some(l)) = (
        run.bodies
            .iter()
            .find(|b| b.budget == crate::bodies::DEFAULT_BUDGET),
        run.bodies
            .iter()
            .find(|b| b.budget != crate::bodies::DEFAULT_BUDGET),
    ) {
        g.push(Goal {
            name: format!(
                "{} concurrent ~{:.1} MiB batches: peak RSS above idle, default body budget vs {} MiB",
                d.clients,
                d.body_bytes as f64 / 1048576.0,
                l.budget >> 20
            ),
            ours: format!(
                "{:+.1} MiB ({} × 201)",
                d.above_idle_mib(),
                d.count("201")
            ),
            reference: format!(
                "{:+.1} MiB ({} × 201)",
                l.above_idle_mib(),
                l.count("201")
            ),
            measured: format!("{:.0} MiB saved", l.above_idle_mib() - d.above_idle_mib()),
            target: "– (issue: peak RSS 206 → 388 MB before the budget)".to_owned(),
            verdict: "n/a",
        });
    }
    g
}

fn scenario_table(out: &mut String, v: &[Scenario], pg: bool) {
    let _ = writeln!(
        out,
        "| scenario | clients | events/s | req/s | p50 ms | p95 ms | p99 ms | max ms | errors | server CPU µs/ev | PG CPU µs/ev | client CPU µs/ev | other load (cores) | server-side mean ms (store write) | pool: waits / mean wait ms / idle-closed | peak VmRSS MiB |{}",
        if pg { " rows before |" } else { "" }
    );
    let _ = writeln!(
        out,
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|{}",
        if pg { "---:|" } else { "" }
    );
    for s in v {
        let o = &s.outcome;
        let units = o.units as f64;
        let cpu: &CpuUse = &o.cpu;
        let mut server_ms = if s.pool.http_count > 0.0 {
            format!("{:.2}", s.pool.http_seconds / s.pool.http_count * 1000.0)
        } else {
            "–".to_owned()
        };
        if s.pool.write_count > 0.0 {
            server_ms.push_str(&format!(
                " ({:.2})",
                s.pool.write_seconds / s.pool.write_count * 1000.0
            ));
        }
        let waited = if s.pool.acquires > 0.0 {
            format!(
                "{:.0} / {:.2} / {:.0}",
                s.pool.waits,
                s.pool.mean_wait_ms(),
                s.pool.idle_closed
            )
        } else {
            "–".to_owned()
        };
        let _ = writeln!(
            out,
            "| {} | {} | {:.0} | {:.0} | {:.2} | {:.2} | {:.2} | {:.1} | {} | {} | {} | {} | {:.2} | {} | {} | {} |{}",
            s.label(),
            s.clients,
            o.rate(),
            o.requests as f64 / o.window.max(1e-9),
            o.ms(0.5),
            o.ms(0.95),
            o.ms(0.99),
            o.ms(1.0),
            errors(o),
            us_per(cpu.server, units),
            us_per(cpu.pg, units),
            us_per(Some(cpu.harness), units),
            cpu.others_cores(),
            server_ms,
            waited,
            mib(o.rss_peak_kib),
            if pg {
                format!(" {} |", s.table_rows.map_or("–".into(), |r| r.to_string()))
            } else {
                String::new()
            }
        );
    }
}

/// The Markdown report.
pub fn markdown(run: &Run) -> String {
    let mut out = String::new();
    let m = &run.machine;
    let _ = writeln!(out, "# DataStorage benchmarks\n");
    let _ = writeln!(
        out,
        "Written by `scripts/bench` (`datastorage-bench`, mode **{}**, {:.0} s). Every ratio below compares numbers measured in this one run on this machine; absolute numbers move from run to run on shared machines, ratios much less. Regenerate with `scripts/bench` (full) or `scripts/bench --quick` (smoke run).\n",
        run.mode, run.elapsed
    );
    let _ = writeln!(out, "## Machine\n");
    let _ = writeln!(out, "| | |\n|---|---|");
    let _ = writeln!(out, "| CPUs (nproc) | {} |", m.nproc);
    let _ = writeln!(out, "| CPU model | {} |", m.cpu_model);
    let _ = writeln!(out, "| memory | {} MiB |", m.mem_mib);
    let _ = writeln!(out, "| kernel | {} |", m.kernel);
    let _ = writeln!(out, "| PostgreSQL | {} |", m.pg_version);
    let _ = writeln!(out, "| git commit | {} |", m.git);
    let _ = writeln!(out, "| load average at start | {} |", m.loadavg);
    for (k, v) in &run.facts {
        let _ = writeln!(out, "| {k} | {v} |");
    }
    let _ = writeln!(out, "\n## Goals (issue 6)\n");
    let _ = writeln!(
        out,
        "| goal | ours | reference | measured | target | verdict |\n|---|---|---|---:|---|---|"
    );
    for g in goals(run) {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | **{}** |",
            g.name, g.ours, g.reference, g.measured, g.target, g.verdict
        );
    }
    let g12 = goals_12(run);
    if !g12.is_empty() {
        let _ = writeln!(out, "\n## Goals (issue 12)\n");
        let _ = writeln!(
            out,
            "| goal | ours | reference | measured | target | verdict |\n|---|---|---|---:|---|---|"
        );
        for g in g12 {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | **{}** |",
                g.name, g.ours, g.reference, g.measured, g.target, g.verdict
            );
        }
    }
    let _ = writeln!(out, "\n## Server on PostgreSQL\n");
    let _ = writeln!(
        out,
        "Closed-loop clients, one keep-alive connection each; latency is request sent → whole answer read. \"server-side mean\" is the server's own `datastorage_http_request_duration_seconds` mean, in brackets the mean of `datastorage_audit_write_duration_seconds` (the store call alone); \"pool\" is the number of waits for a connection (`datastorage_db_pool_wait_count_total`: acquisitions that waited, plus single events queued for group commit while every committer was busy, each of which counts as one wait), their mean wait, and connections closed for exceeding maxIdleConns (all from `/metrics`, warm-up included). CPU columns are core-µs per event (or query) over the measured window: the server process, every PostgreSQL process (backends, and also background work such as autovacuum, checkpointer and WAL writer, and the start-up of new connections), this load generator; \"other load\" is CPU used by anything else on the machine (other builds), in cores.\n"
    );
    scenario_table(&mut out, &run.pg, true);
    let _ = writeln!(
        out,
        "\n## PostgreSQL ceiling (same cluster, same schema, same run)\n"
    );
    let _ = writeln!(
        out,
        "Multi-row INSERT and COPY write the same generated rows into `{}` (`CREATE TABLE … (LIKE audit_events INCLUDING ALL)`: same columns, constraints and indexes, no trigger). pgbench runs `-M prepared -j 2` with a custom script; its INSERT parses a fresh ~500 B JSON per row, its SELECT is the server's page query.\n",
        crate::pg::CEILING_TABLE
    );
    let _ = writeln!(
        out,
        "| workload | sessions | rows or tx /s | mean latency ms | PG CPU µs/row | other load (cores) | failures |\n|---|---:|---:|---:|---:|---:|---:|"
    );
    for c in &run.ceilings {
        let units = c.rate * c.cpu.wall;
        let _ = writeln!(
            out,
            "| {} | {} | {:.0} | {:.2} | {} | {:.2} | {} |",
            c.name,
            c.clients,
            c.rate,
            c.latency_ms,
            us_per(c.cpu.pg, units),
            c.cpu.others_cores(),
            c.failures
        );
    }
    let _ = writeln!(out, "\n### Ratios at each concurrency\n");
    let _ = writeln!(
        out,
        "| ours | reference | ours/s | reference/s | ratio |\n|---|---|---:|---:|---:|"
    );
    for s in &run.pg {
        let (reference, label) = match s.work {
            Work::Single => (
                ceiling(run, "pgbench prepared INSERT", s.clients),
                "pgbench prepared INSERT",
            ),
            Work::Batch(_) => (best_ceiling(run, "multi-row"), "best multi-row INSERT"),
            Work::Query(_) => (
                best_ceiling(run, "pgbench prepared SELECT"),
                "pgbench SELECT",
            ),
        };
        if let Some(c) = reference {
            let _ = writeln!(
                out,
                "| {} @{} | {label} @{} | {:.0} | {:.0} | {:.2} |",
                s.label(),
                s.clients,
                c.clients,
                s.outcome.rate(),
                c.rate,
                s.outcome.rate() / c.rate
            );
        }
    }
    if !run.sqlite.is_empty() {
        let _ = writeln!(out, "\n## SQLite beside PostgreSQL\n");
        let _ = writeln!(
            out,
            "The same single and batch scenarios against a server with `driver: sqlite` (a file in a temporary folder), peak RSS {} MiB.\n",
            mib(run.sqlite_hwm_kib)
        );
        let _ = writeln!(
            out,
            "| scenario | clients | PostgreSQL ev/s | SQLite ev/s | SQLite p50 ms | SQLite p99 ms | SQLite errors | SQLite server CPU µs/ev |\n|---|---:|---:|---:|---:|---:|---|---:|"
        );
        for s in &run.sqlite {
            let pg = run
                .pg
                .iter()
                .find(|p| p.label() == s.label() && p.clients == s.clients);
            let _ = writeln!(
                out,
                "| {} | {} | {} | {:.0} | {:.2} | {:.2} | {} | {} |",
                s.label(),
                s.clients,
                pg.map_or("–".into(), |p| format!("{:.0}", p.outcome.rate())),
                s.outcome.rate(),
                s.outcome.ms(0.5),
                s.outcome.ms(0.99),
                errors(&s.outcome),
                us_per(s.outcome.cpu.server, s.outcome.units as f64)
            );
        }
    }
    if let Some(p) = &run.pool {
        let _ = writeln!(out, "\n## Pool exhaustion\n");
        let _ = writeln!(
            out,
            "`maxOpenConns: {}`, {} concurrent single-event writers, {:.0} s, no warm-up. Expected: zero errors, waits visible in the pool metrics.\n",
            p.max_open_conns, p.writers, p.outcome.window
        );
        pool_table(&mut out, p);
    }
    if let Some(b) = &run.pgbouncer {
        let p = &b.run;
        let _ = writeln!(out, "\n## Pool exhaustion through PgBouncer\n");
        let _ = writeln!(
            out,
            "The same writers through Debian's PgBouncer in transaction pooling mode (`default_pool_size {}`, `reserve_pool_size 0`) on loopback, in front of the same PostgreSQL; the server with `database.pooler: pgbouncer` and `maxOpenConns: {}`, so up to {} client connections to the pooler share its {} server connections. {} concurrent single-event writers, {:.0} s, no warm-up. Expected: zero errors. PostgreSQL backends of the service right after the run: {}.\n",
            b.pool_size,
            p.max_open_conns,
            p.max_open_conns,
            b.pool_size,
            p.writers,
            p.outcome.window,
            b.server_backends.map_or_else(|| "unknown".to_owned(), |n| n.to_string())
        );
        pool_table(&mut out, p);
    }
    verify_section(&mut out, run);
    held_section(&mut out, run);
    bodies_section(&mut out, run);
    auth_section(&mut out, run);
    if let Some(section) = &run.lifecycle {
        out.push_str(section);
    }
    if let Some(section) = &run.buffer {
        out.push_str(section);
    }
    if let Some(section) = &run.explorer {
        out.push_str(section);
    }
    let _ = writeln!(out, "\n## Where the time goes\n");
    for line in cpu_notes(run) {
        let _ = writeln!(out, "- {line}");
    }
    if !run.notes.is_empty() {
        let _ = writeln!(out, "\n## Notes\n");
        for n in &run.notes {
            let _ = writeln!(out, "- {n}");
        }
    }
    out
}

/// Plain-language CPU split per scenario, from the measured counters.
pub fn cpu_notes(run: &Run) -> Vec<String> {
    let mut v = Vec::new();
    for s in &run.pg {
        let c = &s.outcome.cpu;
        let units = s.outcome.units as f64;
        if units == 0.0 {
            continue;
        }
        let (srv, pg) = (c.server.unwrap_or(0.0), c.pg.unwrap_or(0.0));
        let used = (srv + pg + c.harness) / c.wall.max(1e-9);
        v.push(format!(
            "{} @{}: server {} µs + PostgreSQL {} µs + load generator {} µs of CPU per {}; these three kept {:.2} of {} cores busy, other processes {:.2}.",
            s.label(),
            s.clients,
            us_per(c.server, units),
            us_per(c.pg, units),
            us_per(Some(c.harness), units),
            if matches!(s.work, Work::Query(_)) { "query" } else { "event" },
            used,
            run.machine.nproc,
            c.others_cores()
        ));
    }
    for c in &run.ceilings {
        let units = c.rate * c.cpu.wall;
        if units > 0.0 {
            v.push(format!(
                "ceiling {} ×{}: PostgreSQL {} µs of CPU per row/tx (pgbench itself counts as \"other\").",
                c.name,
                c.clients,
                us_per(c.cpu.pg, units)
            ));
        }
    }
    v
}

fn problems(out: &mut String, who: &str, lines: &[String]) {
    if lines.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "\n{who} logged {} warning/error lines{}; first: `{}`",
        lines.len(),
        if lines.len() >= 20 { " or more" } else { "" },
        lines[0].replace('`', "'")
    );
}

fn chain_names(v: &VerifyRun) -> String {
    let mut names: Vec<String> = v.steps.iter().map(|s| format!("`{}`", s.cid)).collect();
    names.dedup();
    names.join(", ")
}

fn verify_section(out: &mut String, run: &Run) {
    if run.verify.is_empty() {
        return;
    }
    let _ = writeln!(out, "\n## Chain verification (verify-chain)\n");
    let _ = writeln!(
        out,
        "`POST /api/v1/audit/verify-chain` on one chain at a time, on a server started for this part alone (generated config as above, every other key default; `server.writeTimeout` 30 s bounds a call). \
         The server streams a chain in keyset pages of 1000 rows and runs at most {SERVER_LIMIT} verifications at once. \
         For each chain, shortest first: one call, then {SERVER_LIMIT} at once (sent together, each on its own connection). \
         *idle* is the server's VmRSS right before the first verification, at least 1 s after start, when it had served nothing but `/readyz`. \
         Before each step the harness resets the server's VmHWM (`echo 5 > /proc/<pid>/clear_refs`), and reads it after the last answer: *peak* is that high-water mark (never below VmRSS sampled every 10 ms meanwhile), so it is the step's own peak; *RSS before* shows what earlier steps left resident. \
         *time* is from sending the first call to reading the last answer; a call is *valid* when it answers 200 with `is_valid` true and every event verified.\n"
    );
    for v in &run.verify {
        let _ = writeln!(
            out,
            "**{}**: chains ({}) {}. Idle VmRSS {:.1} MiB (VmHWM since start {:.1} MiB).\n",
            v.backend,
            chain_names(v),
            v.seeding,
            v.idle_kib as f64 / 1024.0,
            v.start_hwm_kib as f64 / 1024.0
        );
        let _ = writeln!(
            out,
            "| chain events | calls at once | time s | mean s per call | events verified /s | replies | valid | RSS before MiB | peak MiB | peak − idle MiB | RSS after MiB |\n|---:|---:|---:|---:|---:|---|---|---:|---:|---:|---:|"
        );
        for s in &v.steps {
            let _ = writeln!(
                out,
                "| {} | {} | {:.2} | {:.2} | {:.0} | {} | {} | {:.1} | {:.1} | {:+.1} | {:.1} |",
                s.chain_len,
                s.concurrent,
                s.wall,
                s.mean_secs(),
                (s.chain_len * s.concurrent as u64) as f64 / s.wall.max(1e-9),
                s.replies(),
                if s.all_valid() { "yes" } else { "**no**" },
                s.mem.before_kib as f64 / 1024.0,
                s.mem.peak_kib as f64 / 1024.0,
                v.above_idle_mib(s),
                s.mem.after_kib as f64 / 1024.0
            );
        }
        if v.steps.iter().any(|s| !s.mem.exact) {
            let _ = writeln!(
                out,
                "\nVmHWM could not be reset here, so *peak* is the highest VmRSS sampled every 10 ms (a short spike between samples is missed)."
            );
        }
        problems(out, &format!("The {} server", v.backend), &v.log_problems);
        let _ = writeln!(out);
    }
}

fn held_section(out: &mut String, run: &Run) {
    let Some(h) = &run.held else { return };
    let _ = writeln!(out, "\n## A held chain\n");
    let _ = writeln!(
        out,
        "A separate PostgreSQL session runs `BEGIN; SELECT … FROM audit_chain_heads WHERE correlation_id = '{}' FOR UPDATE` and holds that head for {:.0} s, then commits. \
         Meanwhile {} closed-loop clients run the single-event load on other chains (`cid-<n>`, as in the scenarios above; {:.0} s warm-up, then {:.0} s measured, ending before the release), and {} writes to the held chain are sent at once when the measured window opens, each on its own connection. \
         The comparison is the same load on the same server just before, with nothing held. \
         The server runs with `database.lockTimeout`, `database.statementTimeout` and `server.writeTimeout` at {:.0} s (above the hold: a write waiting for the head is bounded by all three) and `maxOpenConns` {}; the group commit skips a head another transaction holds (`SKIP LOCKED`) and writes that chain's events alone, at most a quarter of the pool ({}) waiting for heads at once, others answering 503 after `acquireTimeout` (5 s).\n",
        crate::held::HELD_CID,
        h.hold,
        h.held.clients,
        h.warmup,
        h.held.outcome.window,
        h.writes.len(),
        h.wait_limit,
        h.max_open_conns,
        (h.max_open_conns / 4).max(1)
    );
    let _ = writeln!(
        out,
        "| single POST @{} on other chains | nothing held | head held | held ÷ nothing held |\n|---|---:|---:|---:|",
        h.held.clients
    );
    let (b, x) = (&h.baseline.outcome, &h.held.outcome);
    let ratio = |a: f64, b: f64| {
        if b > 0.0 {
            format!("{:.2}", a / b)
        } else {
            "–".to_owned()
        }
    };
    let _ = writeln!(
        out,
        "| throughput, events/s | {:.0} | {:.0} | {} |",
        b.rate(),
        x.rate(),
        ratio(x.rate(), b.rate())
    );
    for (name, q) in [("p50", 0.5), ("p95", 0.95), ("p99", 0.99), ("max", 1.0)] {
        let _ = writeln!(
            out,
            "| latency {name}, ms | {:.2} | {:.2} | {} |",
            b.ms(q),
            x.ms(q),
            if name == "p99" {
                format!("**{}**", ratio(x.ms(q), b.ms(q)))
            } else {
                ratio(x.ms(q), b.ms(q))
            }
        );
    }
    let _ = writeln!(out, "| errors | {} | {} | |", errors(b), errors(x));
    let late = |o: &Outcome| {
        if o.late.requests == 0 {
            "0".to_owned()
        } else {
            format!(
                "{} (slowest {:.0} ms{})",
                o.late.requests,
                o.late.max_us as f64 / 1000.0,
                if o.late.errors.is_empty() {
                    String::new()
                } else {
                    format!(
                        "; failed: {}",
                        o.late
                            .errors
                            .iter()
                            .map(|(k, v)| format!("{v} × {k}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                }
            )
        }
    };
    let _ = writeln!(
        out,
        "| sent in the window, answered after it (in neither row above) | {} | {} | |",
        late(b),
        late(x)
    );
    let _ = writeln!(
        out,
        "| server peak VmRSS sampled, MiB | {} | {} | |",
        mib(b.rss_peak_kib),
        mib(x.rss_peak_kib)
    );
    let other_held = x
        .errors
        .keys()
        .chain(x.late.errors.keys())
        .any(|k| k.contains("is held by another writer"));
    if other_held {
        let _ = writeln!(
            out,
            "\nThe load never writes to `{}`: its 503s saying a chain \"is held by another writer\" are events of ordinary chains. The server answers that only when an event skipped by a group commit found no free place among the lone writers within `acquireTimeout`; a group also skips a head that another committer holds for an instant, and the held chain's waiting writes had taken every place.",
            crate::held::HELD_CID
        );
    }
    let _ = writeln!(
        out,
        "\nWrites to the held chain ({} sent {:.1} s after the hold began; released at {:.1} s){}:\n",
        h.writes.len(),
        h.writes.first().map_or(0.0, |w| w.sent_at),
        h.released_at,
        h.lock_waiters.map_or(String::new(), |n| format!(
            "; {n} PostgreSQL backends were waiting for a lock in the middle of the window"
        ))
    );
    let _ = writeln!(
        out,
        "| reply | answered at s | waited s | relative to the release |\n|---|---:|---:|---|"
    );
    let mut writes = h.writes.clone();
    writes.sort_by(|a, b| a.answered_at.total_cmp(&b.answered_at));
    for w in &writes {
        let rel = w.answered_at - h.released_at;
        let _ = writeln!(
            out,
            "| {} | {:.2} | {:.2} | {} |",
            w.reply,
            w.answered_at,
            w.answered_at - w.sent_at,
            if rel >= 0.0 {
                format!("{:.0} ms after", rel * 1000.0)
            } else {
                format!("{:.2} s before", -rel)
            }
        );
    }
    let _ = writeln!(
        out,
        "\nThe held chain verified afterwards: {}. Server peak RSS (VmHWM) over this part: {} MiB.",
        h.chain_check,
        mib(h.hwm_kib)
    );
    problems(out, "The server", &h.log_problems);
}

fn bodies_section(out: &mut String, run: &Run) {
    if run.bodies.is_empty() {
        return;
    }
    let _ = writeln!(out, "\n## Concurrent large bodies\n");
    let b0 = &run.bodies[0];
    let _ = writeln!(
        out,
        "{} `POST /api/v1/audit/events/batch` requests of {} events and {} bytes each ({:.2} MiB, under the default `server.maxBodySize` of 5 MiB; each event's `event_data` carries a ~{:.0} KB prose `blob`), sent at once, each on its own connection, to a server started for the round (PostgreSQL, generated config as above). \
         *idle* is VmRSS 1 s after start; *peak* is VmHWM after a reset right before sending (`/proc/<pid>/clear_refs`), never below VmRSS sampled every 10 ms; *time* is from sending to the last answer. \
         A 503 is classified by its problem detail: *budget* is `server.maxInFlightBodyBytes`. The issue's measurement before the budget: 32 concurrent 5 MB batches raised peak RSS from 206 to 388 MB.\n",
        b0.clients,
        b0.events,
        b0.body_bytes,
        b0.body_bytes as f64 / 1048576.0,
        b0.blob_bytes as f64 / 1000.0
    );
    let _ = writeln!(
        out,
        "| maxInFlightBodyBytes | bodies at once | replies | 201 | 503 (budget) | other | 503s with Retry-After | time s | p50 / max s per request | idle MiB | peak MiB | peak − idle MiB | RSS 2 s later MiB | rows written |\n|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for r in &run.bodies {
        let ok = r.count("201");
        let budget = r.count("503 (in-flight body budget)");
        let _ = writeln!(
            out,
            "| {} MiB{} | {} | {} | {} | {} | {} | {} | {:.2} | {:.2} / {:.2} | {:.1} | {:.1} | {:+.1} | {:.1} | {} |",
            r.budget >> 20,
            if r.budget == crate::bodies::DEFAULT_BUDGET {
                " (default)"
            } else {
                ""
            },
            r.clients,
            replies(&r.replies),
            ok,
            budget,
            r.clients.saturating_sub(ok + budget),
            r.retry_after,
            r.wall,
            r.quantile(0.5),
            r.quantile(1.0),
            r.idle_kib as f64 / 1024.0,
            r.mem.peak_kib as f64 / 1024.0,
            r.above_idle_mib(),
            r.settled_kib as f64 / 1024.0,
            r.rows
        );
    }
    for r in &run.bodies {
        problems(
            out,
            &format!("The server at {} MiB", r.budget >> 20),
            &r.log_problems,
        );
    }
}

/// CPU of one process group per unit, µs.
fn per_unit(cpu: Option<f64>, units: f64) -> Option<f64> {
    cpu.filter(|_| units > 0.0).map(|c| c / units * 1e6)
}

/// `a ÷ b` to two places, `–` when either is missing or `b` is zero.
fn ratio_of(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
        _ => "–".to_owned(),
    }
}

/// Rows comparing two runs of one workload, `base` first: `units` names the throughput row,
/// `unit` the CPU rows; the ratio column is `x ÷ base`, bold for throughput and p99.
fn comparison_rows(out: &mut String, base: &Scenario, x: &Scenario, (units, unit): (&str, &str)) {
    let (b, o) = (&base.outcome, &x.outcome);
    let _ = writeln!(
        out,
        "| throughput, {units}/s | {:.0} | {:.0} | **{}** |",
        b.rate(),
        o.rate(),
        ratio_of(Some(o.rate()), Some(b.rate()))
    );
    for (name, q) in [("p50", 0.5), ("p95", 0.95), ("p99", 0.99), ("max", 1.0)] {
        let r = ratio_of(Some(o.ms(q)), Some(b.ms(q)));
        let _ = writeln!(
            out,
            "| latency {name}, ms | {:.2} | {:.2} | {} |",
            b.ms(q),
            o.ms(q),
            if name == "p99" { format!("**{r}**") } else { r }
        );
    }
    for (name, f) in [
        (
            "server CPU",
            (|c: &CpuUse| c.server) as fn(&CpuUse) -> Option<f64>,
        ),
        ("PostgreSQL CPU", |c: &CpuUse| c.pg),
        ("load generator CPU", |c: &CpuUse| Some(c.harness)),
    ] {
        let (pb, po) = (
            per_unit(f(&b.cpu), b.units as f64),
            per_unit(f(&o.cpu), o.units as f64),
        );
        let _ = writeln!(
            out,
            "| {name}, µs per {unit} | {} | {} | {} |",
            us_per(f(&b.cpu), b.units as f64),
            us_per(f(&o.cpu), o.units as f64),
            ratio_of(po, pb)
        );
    }
    let server_ms = |s: &Scenario| {
        (s.pool.http_count > 0.0).then(|| s.pool.http_seconds / s.pool.http_count * 1000.0)
    };
    let (mb, mo) = (server_ms(base), server_ms(x));
    let _ = writeln!(
        out,
        "| server-side mean (`datastorage_http_request_duration_seconds`), ms | {} | {} | {} |",
        mb.map_or("–".to_owned(), |m| format!("{m:.2}")),
        mo.map_or("–".to_owned(), |m| format!("{m:.2}")),
        ratio_of(mo, mb)
    );
    let _ = writeln!(
        out,
        "| other load (cores) | {:.2} | {:.2} | |",
        b.cpu.others_cores(),
        o.cpu.others_cores()
    );
    let _ = writeln!(out, "| errors | {} | {} | |", errors(b), errors(o));
    let _ = writeln!(
        out,
        "| requests checked by access control / access records written (Δ of `datastorage_auth_requests_total` / `datastorage_access_records_total`, warm-up included) | {:.0} / {:.0} | {:.0} / {:.0} | |",
        base.pool.auth_checks, base.pool.access_records, x.pool.auth_checks, x.pool.access_records
    );
    let _ = writeln!(
        out,
        "| rows in audit_events before | {} | {} | |",
        base.table_rows.map_or("–".into(), |r| r.to_string()),
        x.table_rows.map_or("–".into(), |r| r.to_string())
    );
}

fn auth_section(out: &mut String, run: &Run) {
    let Some(a) = &run.auth else { return };
    let _ = writeln!(out, "\n## Access control (issue 13)\n");
    let _ = writeln!(
        out,
        "Each configuration on its own freshly started server (PostgreSQL, generated config as above, API on 127.0.0.1), one after another in the order of the columns, {:.0} s warm-up, then {:.0} s measured, the same closed-loop load generator as the scenarios above. \
         `auth.mode: tokens` reads a tokens file listing one token by its hex SHA-256 (name `{}`, scopes `{}`), and every request sends `Authorization: Bearer <token>`; \
         `auth.mode: none` is said explicitly and no header is sent. A write without the token to the tokens server, after its measured run, answered **{}**. \
         CPU is core-µs per request over the measured window, as in the tables above.\n",
        a.warmup,
        a.write_none.outcome.window,
        crate::auth::TOKEN_NAME,
        crate::auth::SCOPES.join(", "),
        a.without_token
    );
    let _ = writeln!(
        out,
        "| single POST @{} | `auth.mode: none` | `auth.mode: tokens` | tokens ÷ none |\n|---|---:|---:|---:|",
        a.write_none.clients
    );
    comparison_rows(out, &a.write_none, &a.write_tokens, ("events", "event"));
    let _ = writeln!(
        out,
        "\nQueries (`GET /api/v1/audit/events?correlation_id=cid-<n>&limit=50`, `n` below {}) with `auth.mode: tokens`. With `auth.recordReads: true` (the default) each query commits an access record (an audit event in the chain `datastorage-access`, written by the service's single access-record committer, which groups concurrent records) before it answers; with `false` it records nothing. Query table: {}; `VACUUM (ANALYZE)` before each run.\n",
        a.query_cids, a.table
    );
    let _ = writeln!(
        out,
        "| query by correlation_id @{}, `auth.mode: tokens` | `recordReads: false` | `recordReads: true` | true ÷ false |\n|---|---:|---:|---:|",
        a.query_recorded.clients
    );
    comparison_rows(
        out,
        &a.query_unrecorded,
        &a.query_recorded,
        ("queries", "query"),
    );
    for (who, lines) in &a.log_problems {
        problems(out, &format!("The server with {who}"), lines);
    }
}
