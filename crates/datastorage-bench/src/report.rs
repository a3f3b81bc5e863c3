//! The report: goals with PASS/SHORT, every scenario, the ceiling, SQLite beside PostgreSQL,
//! the pool-exhaustion run, and the CPU split that shows where time goes.

use std::fmt::Write as _;

use crate::load::{Outcome, Work};
use crate::pg::Ceiling;
use crate::server::PoolStats;
use crate::sys::{CpuUse, MachineInfo};

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
        let o = &p.outcome;
        let _ = writeln!(out, "\n## Pool exhaustion\n");
        let _ = writeln!(
            out,
            "`maxOpenConns: {}`, {} concurrent single-event writers, {:.0} s, no warm-up. Expected: zero errors, waits visible in the pool metrics.\n",
            p.max_open_conns, p.writers, o.window
        );
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
