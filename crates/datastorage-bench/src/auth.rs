//! What access control costs (issue 13), on PostgreSQL, each configuration on its own freshly
//! started server:
//! - single-event writes at one concurrency with `auth.mode: none` and with `auth.mode: tokens`
//!   (every request sends `Authorization: Bearer <token>`, the tokens file lists its SHA-256);
//! - queries by correlation id with `auth.mode: tokens` and `auth.recordReads` true (the
//!   default: every query commits an access record through the service's single access-record
//!   committer before it answers) and false.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};

use crate::events::{self, Gen};
use crate::load::{self, Work};
use crate::pg::{self, Db, DbExt as _};
use crate::report::Scenario;
use crate::server::{AuthMode, Server, ServerConfig, Tokens};
use crate::sys::Probe;
use crate::Ctx;

/// The token's name in the tokens file (stored as `ingested_by` on the events it writes).
pub const TOKEN_NAME: &str = "bench";
/// The token's scopes: what the two workloads need, nothing more.
pub const SCOPES: &[&str] = &["audit:write", "audit:read"];

/// Sizes of the part.
#[derive(Debug, Clone, Copy)]
pub struct Opts {
    /// Warm-up before each measured window.
    pub warmup: Duration,
    /// Each measured window.
    pub duration: Duration,
    /// Rows `audit_events` is topped up to before the queries.
    pub rows: u64,
    /// Writers.
    pub clients: usize,
    /// Query clients.
    pub query_clients: usize,
    /// Length of each seeded chain.
    pub chain_len: i64,
    /// Chains `cid-0..n` the query scenario already used (it ran), so seeding goes on after them.
    pub query_cids: Option<u64>,
}

/// The access-control part.
#[derive(Debug, Clone)]
pub struct AuthRun {
    /// Warm-up seconds before each measured window.
    pub warmup: f64,
    /// Single POST, `auth.mode: none`.
    pub write_none: Scenario,
    /// Single POST, `auth.mode: tokens`.
    pub write_tokens: Scenario,
    /// Query, tokens, `auth.recordReads: true`.
    pub query_recorded: Scenario,
    /// Query, tokens, `auth.recordReads: false`.
    pub query_unrecorded: Scenario,
    /// What a write without the token got from the tokens server (expected: 401).
    pub without_token: String,
    /// How the query table came to be.
    pub table: String,
    /// Correlation ids the queries draw from (`cid-0..n`).
    pub query_cids: u64,
    /// Warnings and errors each server logged (first few), by configuration.
    pub log_problems: Vec<(String, Vec<String>)>,
}

/// Runs the part on `db`, each configuration on a fresh server started from `base`.
pub async fn run(
    ctx: &Ctx,
    server_bin: &Path,
    base: &ServerConfig,
    db: &Db,
    postmaster: Option<u32>,
    o: Opts,
) -> Result<AuthRun> {
    let dir = tempfile::Builder::new()
        .prefix("ds-bench-auth-")
        .tempdir()?;
    let tokens = Tokens::create(dir.path(), TOKEN_NAME, SCOPES)?;
    let none_cfg = ServerConfig {
        auth: AuthMode::None,
        ..base.clone()
    };
    let tokens_cfg = ServerConfig {
        auth: AuthMode::Tokens(tokens),
        ..base.clone()
    };
    let unrecorded_cfg = ServerConfig {
        record_reads: Some(false),
        ..tokens_cfg.clone()
    };
    let recorded_cfg = ServerConfig {
        record_reads: Some(true),
        ..tokens_cfg.clone()
    };
    let rows = || async { db.scalar("SELECT count(*) FROM audit_events").await.ok() };
    let probe = |srv: &Server| Probe {
        server: Some(srv.pid),
        postmaster,
    };
    let mut log_problems = Vec::new();

    // Writes, without and with a token; the same run on a fresh server for each.
    let mut writes = Vec::with_capacity(2);
    let mut without_token = String::new();
    for (mode, cfg) in [("none", &none_cfg), ("tokens", &tokens_cfg)] {
        ctx.log.say(format!(
            "access control: single POST @{}, auth.mode {mode}",
            o.clients
        ));
        let srv = Server::start(server_bin, cfg).await?;
        db.try_sql(&["CHECKPOINT"]).await?;
        writes.push(
            ctx.scenario(
                &srv,
                probe(&srv),
                Work::Single,
                o.clients,
                o.warmup,
                o.duration,
                rows().await,
            )
            .await,
        );
        if mode == "tokens" {
            // Checked after the measured run, so its denial record falls in no window.
            let mut gen = Gen::new(ctx.templates.clone(), ctx.cids, 0xa07);
            without_token = match load::post(srv.api, "/api/v1/audit/events", gen.single()).await {
                Ok((status, _)) => status.as_u16().to_string(),
                Err(e) => format!("{e:#}"),
            };
        }
        log_problems.push((format!("auth.mode {mode}"), srv.log_problems()));
        srv.stop().await?;
    }
    let write_tokens = writes.pop().expect("two write runs");
    let write_none = writes.pop().expect("two write runs");

    // The query table: topped up with seeded chains after any the query scenario used.
    let existing = db.scalar("SELECT count(*) FROM audit_events").await?;
    let need = o.rows.saturating_sub(existing.max(0) as u64);
    let first = o.query_cids.unwrap_or(ctx.cids);
    let mut seeded = 0;
    let table = if need > 0 {
        ctx.log.say(format!(
            "access control: seeding {need} rows as chains of {}",
            o.chain_len
        ));
        let t = Instant::now();
        seeded = pg::seed(db, &ctx.templates, first, need, o.chain_len).await?;
        format!(
            "{existing} rows written before, plus {} seeded by COPY in {:.1} s as {seeded} chains of {} ({}..{})",
            seeded * o.chain_len as u64,
            t.elapsed().as_secs_f64(),
            o.chain_len,
            events::cid(first),
            events::cid(first + seeded - 1)
        )
    } else {
        format!("{existing} rows written or seeded by the parts before; nothing seeded")
    };
    let query_cids = first + seeded;

    // Queries without read records, then with them (last, so that no other run follows the
    // access records they write).
    let mut queries = Vec::with_capacity(2);
    for (cfg, recorded) in [(&unrecorded_cfg, false), (&recorded_cfg, true)] {
        let what = format!("auth.mode tokens, recordReads {recorded}");
        ctx.log.say(format!(
            "access control: query by correlation_id @{}, {what}",
            o.query_clients
        ));
        let srv = Server::start(server_bin, cfg).await?;
        // Vacuumed first, so that no run pays for an autovacuum the rows written before it
        // would set off.
        db.try_sql(&["VACUUM (ANALYZE) audit_events", "CHECKPOINT"])
            .await?;
        let s = ctx
            .scenario(
                &srv,
                probe(&srv),
                Work::Query(query_cids),
                o.query_clients,
                o.warmup,
                o.duration,
                rows().await,
            )
            .await;
        log_problems.push((what, srv.log_problems()));
        srv.stop().await?;
        queries.push(s);
    }
    let query_recorded = queries.pop().context("two query runs")?;
    let query_unrecorded = queries.pop().context("two query runs")?;

    Ok(AuthRun {
        warmup: o.warmup.as_secs_f64(),
        write_none,
        write_tokens,
        query_recorded,
        query_unrecorded,
        without_token,
        table,
        query_cids,
        log_problems,
    })
}
