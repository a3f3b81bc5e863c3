//! `datastorage events …`: the command-line client of a DataStorage server, over
//! `datastorage-client`. `main` only parses [`EventsArgs`] and calls [`main`]; the server's
//! settings are never loaded for these commands.
//!
//! Output is an aligned table by default and JSON with `--json`. Exit codes: 0 success; 1 the
//! answer is a negative one (`verify` found tampering, `post --stdin` could not deliver every
//! event); 2 an error (bad arguments the server refused, server unreachable, not found); 3
//! `verify` could not check some rows (signed with keys the server does not have); 4 `verify`
//! found no events with that correlation id.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::io::{BufRead as _, IsTerminal as _, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context as _};
use chrono::{DateTime, SecondsFormat, Utc};
use clap::{Args, Subcommand};
use datastorage_api::{
    AuditEvent, AuditEventRequest, ChainVerdict, EventCategory, EventOutcome, EventQueryParams,
    VerifyChainRequest, VerifyChainResponse, MAX_PAGE_LIMIT,
};
use uuid::Uuid;

use datastorage_api::stream::StreamedEvent;
use datastorage_client::{
    AuditStore, BearerToken, Client, OverflowPolicy, SpoolConfig, StoreConfig, Streamed, TOKEN_ENV,
};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::output::{keep_code, warn, Stdout};

/// Environment variable of the server URL (`--url`).
pub const ENV_URL: &str = "DATASTORAGE_URL";

/// Server URL when neither `--url` nor `DATASTORAGE_URL` is given.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8080";

/// Exit code of a negative answer (tampered chain, undelivered events).
pub const EXIT_NEGATIVE: u8 = 1;

/// Exit code of an error.
pub const EXIT_ERROR: u8 = 2;

/// Exit code of `verify` when nothing is broken but some rows cannot be checked: they are signed
/// with keys the server does not have.
pub const EXIT_UNVERIFIABLE: u8 = 3;

/// Exit code of `verify` for a correlation id without events.
pub const EXIT_EMPTY: u8 = 4;

/// Most pages `query --all` follows (at the largest page size, 100 million events).
const MAX_PAGES: usize = 100_000;

/// Most pages one `tail` catch-up follows.
const MAX_TAIL_PAGES: usize = 100;

/// Write, query, follow and verify audit events on a DataStorage server.
///
/// Values of text options may start with `-` (`--since -1d`, `--actor-id -svc`): the word after
/// such an option is always its value.
#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Base URL of the DataStorage server.
    #[arg(long, global = true, env = ENV_URL, default_value = DEFAULT_URL)]
    pub url: String,

    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,

    /// Bearer token sent with every request (servers in tokens or kubernetes mode). Prefer
    /// --token-file or DATASTORAGE_TOKEN: a token on the command line shows in `ps`.
    #[arg(
        long,
        global = true,
        value_name = "TOKEN",
        conflicts_with = "token_file"
    )]
    pub token: Option<String>,

    /// File holding the bearer token, re-read when it changes (a projected ServiceAccount
    /// token rotates). Without --token and --token-file, DATASTORAGE_TOKEN is used when set.
    #[arg(long, global = true, value_name = "FILE")]
    pub token_file: Option<PathBuf>,

    /// CA certificates (PEM) that sign the server's certificate, for an https:// --url served
    /// with a private CA.
    #[arg(long, global = true, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,

    /// Client certificate (PEM), for servers in mtls mode; with --client-key.
    #[arg(long, global = true, value_name = "FILE", requires = "client_key")]
    pub client_cert: Option<PathBuf>,

    /// Key of --client-cert (PEM).
    #[arg(long, global = true, value_name = "FILE", requires = "client_cert")]
    pub client_key: Option<PathBuf>,

    /// What to do.
    #[command(subcommand)]
    pub command: EventsCommand,
}

/// The `events` subcommands.
#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// Write one event from flags, or NDJSON events from standard input through the buffered
    /// store (`--stdin`).
    Post(PostArgs),
    /// List events matching filters, newest first.
    Query(QueryArgs),
    /// Show one event.
    Get {
        /// The event id.
        id: Uuid,
    },
    /// Follow new events matching filters until Ctrl-C (the server's event stream).
    Tail(TailArgs),
    /// Verify the hash chain of a correlation id; the exit code tells the verdict.
    ///
    /// Exit codes: 0 intact; 1 tampered (a link is broken, content changed or rows are missing);
    /// 3 unverifiable (nothing is broken, but some rows are signed with keys the server does not
    /// have: hashChain.keyFile / verifyKeyFiles); 4 no events with this correlation id; 2 an
    /// error (server unreachable, request refused).
    Verify {
        /// The correlation id whose chain to verify.
        #[arg(allow_hyphen_values = true)]
        correlation_id: String,
    },
}

/// `events post`.
#[derive(Debug, Args)]
pub struct PostArgs {
    /// Read one JSON event per line from standard input and send them in batches. Missing
    /// `version` and `event_timestamp` are filled in (`1.0`, now).
    #[arg(long, conflicts_with_all = ["event_type", "category", "action", "outcome", "correlation_id"])]
    pub stdin: bool,
    /// Event type, e.g. `gateway.signal.received`.
    #[arg(
        long = "type",
        required_unless_present = "stdin",
        allow_hyphen_values = true
    )]
    pub event_type: Option<String>,
    /// Event category (gateway, notification, analysis, …).
    #[arg(long, required_unless_present = "stdin")]
    pub category: Option<EventCategory>,
    /// Action performed.
    #[arg(long, required_unless_present = "stdin", allow_hyphen_values = true)]
    pub action: Option<String>,
    /// Outcome: success, failure or pending.
    #[arg(long, required_unless_present = "stdin")]
    pub outcome: Option<EventOutcome>,
    /// Correlation id (one hash chain per value).
    #[arg(long, required_unless_present = "stdin", allow_hyphen_values = true)]
    pub correlation_id: Option<String>,
    /// Event id (default: a new UUIDv7, so a re-run with the same id is a no-op).
    #[arg(long)]
    pub id: Option<Uuid>,
    /// Kind of actor (`service`, `user`, …).
    #[arg(long, allow_hyphen_values = true)]
    pub actor_type: Option<String>,
    /// Who acted.
    #[arg(long, allow_hyphen_values = true)]
    pub actor_id: Option<String>,
    /// Kind of the resource acted upon.
    #[arg(long, allow_hyphen_values = true)]
    pub resource_type: Option<String>,
    /// Id of the resource acted upon.
    #[arg(long, allow_hyphen_values = true)]
    pub resource_id: Option<String>,
    /// Kubernetes namespace.
    #[arg(long, allow_hyphen_values = true)]
    pub namespace: Option<String>,
    /// Cluster id.
    #[arg(long, allow_hyphen_values = true)]
    pub cluster_id: Option<String>,
    /// Severity.
    #[arg(long, allow_hyphen_values = true)]
    pub severity: Option<String>,
    /// Payload: a JSON object.
    #[arg(long, value_name = "JSON")]
    pub data: Option<String>,
    /// With --stdin: longest to wait at the end for every event to be written.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub close_timeout: Duration,
    /// With --stdin: spool directory for events the server cannot take now (replayed by the
    /// next run with the same directory).
    #[arg(long, value_name = "DIR")]
    pub spool_dir: Option<PathBuf>,
}

/// Filters shared by `query` and `tail`.
#[derive(Debug, Args, Clone, Default)]
pub struct Filters {
    /// Exact event type.
    #[arg(long = "type", allow_hyphen_values = true)]
    pub event_type: Option<String>,
    /// Category, any case.
    #[arg(long, allow_hyphen_values = true)]
    pub category: Option<String>,
    /// Outcome, any case.
    #[arg(long, allow_hyphen_values = true)]
    pub outcome: Option<String>,
    /// Severity, any case.
    #[arg(long, allow_hyphen_values = true)]
    pub severity: Option<String>,
    /// Exact correlation id.
    #[arg(long, allow_hyphen_values = true)]
    pub correlation_id: Option<String>,
    /// `event_data` key to match (with --detail-value).
    #[arg(long, requires = "detail_value", allow_hyphen_values = true)]
    pub detail_key: Option<String>,
    /// `event_data` value to match, as text (with --detail-key).
    #[arg(long, requires = "detail_key", allow_hyphen_values = true)]
    pub detail_value: Option<String>,
    /// Exact actor id.
    #[arg(long, allow_hyphen_values = true)]
    pub actor_id: Option<String>,
    /// Exact resource type.
    #[arg(long, allow_hyphen_values = true)]
    pub resource_type: Option<String>,
    /// Exact resource id.
    #[arg(long, allow_hyphen_values = true)]
    pub resource_id: Option<String>,
    /// Exact namespace.
    #[arg(long, allow_hyphen_values = true)]
    pub namespace: Option<String>,
    /// Exact cluster id.
    #[arg(long, allow_hyphen_values = true)]
    pub cluster_id: Option<String>,
}

impl Filters {
    fn params(&self) -> EventQueryParams {
        EventQueryParams {
            event_type: self.event_type.clone(),
            event_category: self.category.clone(),
            event_outcome: self.outcome.clone(),
            severity: self.severity.clone(),
            correlation_id: self.correlation_id.clone(),
            detail_key: self.detail_key.clone(),
            detail_value: self.detail_value.clone(),
            actor_id: self.actor_id.clone(),
            resource_type: self.resource_type.clone(),
            resource_id: self.resource_id.clone(),
            namespace: self.namespace.clone(),
            cluster_id: self.cluster_id.clone(),
            ..EventQueryParams::default()
        }
    }
}

/// `events query`.
#[derive(Debug, Args)]
pub struct QueryArgs {
    /// Filters.
    #[command(flatten)]
    pub filters: Filters,
    /// Lower time bound, inclusive: an age (`24h`, `7d`, `1h30m`, also written `-24h`), an
    /// RFC 3339 date-time or a date.
    #[arg(long, allow_hyphen_values = true)]
    pub since: Option<String>,
    /// Upper time bound, exclusive (same forms as --since).
    #[arg(long, allow_hyphen_values = true)]
    pub until: Option<String>,
    /// Page size, 1–1000 (server default 50).
    #[arg(long)]
    pub limit: Option<u32>,
    /// Page offset.
    #[arg(long, conflicts_with = "cursor")]
    pub offset: Option<u64>,
    /// Start after this `next_cursor` of a previous page.
    #[arg(long, allow_hyphen_values = true)]
    pub cursor: Option<String>,
    /// Follow cursors to the last page and print every matching event.
    #[arg(long, conflicts_with = "offset")]
    pub all: bool,
}

/// `events tail`.
#[derive(Debug, Args)]
pub struct TailArgs {
    /// Filters.
    #[command(flatten)]
    pub filters: Filters,
    /// Also print events from this point on (same forms as `query --since`; default: only
    /// events from now on).
    #[arg(long, allow_hyphen_values = true)]
    pub since: Option<String>,
    /// Time before reconnecting when the server's stream ends or fails.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub interval: Duration,
    /// After a reconnect, how far behind the newest event printed the catch-up query starts
    /// (timestamps are the writers'). An event older than this, committed while disconnected,
    /// is missed.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub lookback: Duration,
    /// Exit after printing this many events.
    #[arg(long)]
    pub count: Option<u64>,
}

/// Runs one `events` command and exits: builds a runtime, prints to standard output, stops
/// `tail` on Ctrl-C (exit 0). For the `datastorage` binary.
pub fn main(args: EventsArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            warn(format_args!("error: cannot start the async runtime: {e}"));
            return ExitCode::from(EXIT_ERROR);
        }
    };
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    // Progress on stderr only for a person at a terminal; piped output stays clean.
    let progress = std::io::stdout().is_terminal();
    let mut stdout = Stdout::new();
    let result = runtime
        .block_on(run_with(args, &mut stdout, ctrl_c, progress))
        .and_then(|code| keep_code(stdout.flush().map_err(Into::into), code));
    match result {
        Ok(code) => ExitCode::from(code),
        // The reader went away (`| head`): a quiet, successful end. Only a write to stdout sets
        // this, never a broken pipe on the connection to the server.
        Err(_) if stdout.closed() => ExitCode::SUCCESS,
        Err(e) => {
            warn(format_args!("error: {e:#}"));
            ExitCode::from(EXIT_ERROR)
        }
    }
}

/// Runs one `events` command, printing to `out`; `stop` ends `tail` (exit 0). Returns the exit
/// code; an `Err` means exit code [`EXIT_ERROR`]. Shows no progress bar.
pub async fn run<W: Write + Send>(
    args: EventsArgs,
    out: &mut W,
    stop: impl Future<Output = ()> + Send,
) -> anyhow::Result<u8> {
    run_with(args, out, stop, false).await
}

/// The client the flags describe: URL, bearer token (flag, file, or DATASTORAGE_TOKEN), CA and
/// client certificate.
fn client(args: &EventsArgs) -> anyhow::Result<Client> {
    let mut builder = Client::builder(&args.url);
    let token = match (&args.token, &args.token_file) {
        (Some(token), _) => Some(BearerToken::new(token).context("--token")?),
        (None, Some(path)) => Some(BearerToken::from_file(path).context("--token-file")?),
        (None, None) => BearerToken::from_env().context(TOKEN_ENV)?,
    };
    if let Some(token) = token {
        builder = builder.bearer_token(token);
    }
    if let Some(ca) = &args.ca_file {
        builder = builder.ca_bundle_file(ca);
    }
    if let (Some(cert), Some(key)) = (&args.client_cert, &args.client_key) {
        builder = builder.client_cert_files(cert, key);
    }
    builder.build().context("--url")
}

/// [`run`], with a progress bar on standard error for `post --stdin` and `query --all` when
/// `progress` is set (the binary sets it when stdout is a terminal) and stderr is a terminal
/// too. The bar is cleared before the output is written.
pub async fn run_with<W: Write + Send>(
    args: EventsArgs,
    out: &mut W,
    stop: impl Future<Output = ()> + Send,
    progress: bool,
) -> anyhow::Result<u8> {
    let client = client(&args)?;
    let json = args.json;
    match args.command {
        EventsCommand::Post(post) if post.stdin => {
            post_stdin(&client, post, json, out, progress).await
        }
        EventsCommand::Post(post) => post_one(&client, post, json, out).await,
        EventsCommand::Query(query) => run_query(&client, query, json, out, progress).await,
        EventsCommand::Get { id } => {
            let event = client
                .get_event(id)
                .await
                .with_context(|| format!("cannot get event {id}"))?;
            if json {
                print_json(out, &event)?;
            } else {
                print_event_detail(out, &event)?;
            }
            Ok(0)
        }
        EventsCommand::Tail(tail) => run_tail(&client, tail, json, out, stop).await,
        EventsCommand::Verify { correlation_id } => {
            run_verify(&client, correlation_id, json, out).await
        }
    }
}

async fn run_verify<W: Write>(
    client: &Client,
    correlation_id: String,
    json: bool,
    out: &mut W,
) -> anyhow::Result<u8> {
    let answer = client
        .verify_chain(&VerifyChainRequest {
            correlation_id: correlation_id.clone(),
        })
        .await
        .with_context(|| format!("cannot verify the chain of {correlation_id:?}"))?;
    let verdict = verdict(&answer);
    let code = match verdict {
        ChainVerdict::Intact => 0,
        ChainVerdict::Tampered => EXIT_NEGATIVE,
        ChainVerdict::Unverifiable => EXIT_UNVERIFIABLE,
        ChainVerdict::Empty => EXIT_EMPTY,
    };
    keep_code(print_verify(out, &answer, verdict, json), code)
}

/// The answer's verdict; from `is_valid` and the counts when the server is older than the
/// `verdict` field.
fn verdict(answer: &VerifyChainResponse) -> ChainVerdict {
    answer.verdict.unwrap_or(match answer.is_valid {
        true if answer.total_events == 0 => ChainVerdict::Empty,
        true => ChainVerdict::Intact,
        false => ChainVerdict::Tampered,
    })
}

fn print_verify<W: Write>(
    out: &mut W,
    answer: &VerifyChainResponse,
    verdict: ChainVerdict,
    json: bool,
) -> anyhow::Result<()> {
    if json {
        return print_json(out, answer);
    }
    let cid = &answer.correlation_id;
    let counts = format!(
        "{} of {} events verified",
        answer.verified_events, answer.total_events
    );
    let unverifiable = match answer.unverifiable_events {
        0 => String::new(),
        n => format!("; {n} signed with keys that are not configured"),
    };
    match verdict {
        ChainVerdict::Empty => writeln!(out, "{cid}: no events with this correlation id")?,
        ChainVerdict::Intact => writeln!(out, "{cid}: valid ({counts})")?,
        ChainVerdict::Unverifiable => {
            writeln!(out, "{cid}: UNVERIFIABLE ({counts}{unverifiable})")?
        }
        ChainVerdict::Tampered => writeln!(out, "{cid}: TAMPERED ({counts}{unverifiable})")?,
    }
    if !answer.tampered_events.is_empty() {
        let rows = answer
            .tampered_events
            .iter()
            .map(|t| vec![t.event_id.clone(), t.message.clone()])
            .collect();
        write!(out, "{}", table(&["EVENT_ID", "PROBLEM"], rows))?;
    }
    Ok(())
}

fn print_json<W: Write, T: serde::Serialize>(out: &mut W, value: &T) -> anyhow::Result<()> {
    serde_json::to_writer_pretty(&mut *out, value)?;
    writeln!(out)?;
    Ok(())
}

fn build_event(post: PostArgs) -> anyhow::Result<AuditEventRequest> {
    let (Some(t), Some(c), Some(a), Some(o), Some(corr)) = (
        post.event_type,
        post.category,
        post.action,
        post.outcome,
        post.correlation_id,
    ) else {
        bail!("--type, --category, --action, --outcome and --correlation-id are required");
    };
    let mut event = AuditEventRequest::new(t, c, a, o, corr);
    event.event_id = Some(post.id.unwrap_or_else(Uuid::now_v7));
    event.actor_type = post.actor_type;
    event.actor_id = post.actor_id;
    event.resource_type = post.resource_type;
    event.resource_id = post.resource_id;
    event.namespace = post.namespace;
    event.cluster_id = post.cluster_id;
    event.severity = post.severity;
    if let Some(data) = post.data {
        event.event_data = serde_json::from_str(&data).context("--data must be a JSON object")?;
    }
    Ok(event)
}

async fn post_one<W: Write>(
    client: &Client,
    post: PostArgs,
    json: bool,
    out: &mut W,
) -> anyhow::Result<u8> {
    let event = build_event(post)?;
    let answer = client
        .create_event(&event)
        .await
        .context("the event was not stored")?;
    if json {
        print_json(out, &answer)?;
    } else {
        let rows = vec![vec![
            answer.event_id.to_string(),
            format_ts(answer.event_timestamp),
            answer.message,
        ]];
        write!(
            out,
            "{}",
            table(&["EVENT_ID", "TIMESTAMP", "MESSAGE"], rows)
        )?;
    }
    Ok(0)
}

/// One NDJSON line as an event: `version` and `event_timestamp` default to `1.0` and now.
pub fn parse_ndjson_event(line: &str) -> Result<AuditEventRequest, String> {
    let mut value: serde_json::Value = serde_json::from_str(line).map_err(|e| e.to_string())?;
    let object = value
        .as_object_mut()
        .ok_or_else(|| "not a JSON object".to_owned())?;
    object
        .entry("version")
        .or_insert_with(|| serde_json::Value::from("1.0"));
    object.entry("event_timestamp").or_insert_with(|| {
        serde_json::Value::from(Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true))
    });
    object
        .entry("event_data")
        .or_insert_with(|| serde_json::Value::Object(serde_json::Map::new()));
    serde_json::from_value(value).map_err(|e| e.to_string())
}

/// What `post --stdin` did.
#[derive(Debug, Default, serde::Serialize)]
struct PostSummary {
    lines: u64,
    invalid: u64,
    accepted: u64,
    sent: u64,
    failed: u64,
    dropped: u64,
    spooled: u64,
    replayed: u64,
    not_confirmed: u64,
}

/// A progress bar on standard error with `template`, or a hidden one without `progress`.
/// indicatif hides it too when stderr is not a terminal or `TERM` is `dumb`; dropped, it clears
/// itself.
fn progress_bar(progress: bool, len: Option<u64>, template: &str) -> ProgressBar {
    if !progress {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(len, ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    bar
}

async fn post_stdin<W: Write>(
    client: &Client,
    post: PostArgs,
    json: bool,
    out: &mut W,
    progress: bool,
) -> anyhow::Result<u8> {
    let config = StoreConfig {
        // A command-line batch prefers completeness to speed: wait for room.
        overflow: OverflowPolicy::Block {
            timeout: post.close_timeout,
        },
        spool: post.spool_dir.map(SpoolConfig::new),
        ..StoreConfig::default()
    };
    let store = AuditStore::with_config(client.clone(), config)?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(u64, std::io::Result<String>)>(1024);
    let reader = tokio::task::spawn_blocking(move || {
        let stdin = std::io::stdin();
        for (n, line) in stdin.lock().lines().enumerate() {
            let stop = line.is_err();
            if tx.blocking_send((n as u64 + 1, line)).is_err() || stop {
                break;
            }
        }
    });
    let bar = progress_bar(
        progress,
        None,
        "{spinner} {pos} lines read, {msg} [{elapsed}]",
    );
    if progress {
        bar.enable_steady_tick(Duration::from_millis(100));
    }
    let mut summary = PostSummary::default();
    while let Some((n, line)) = rx.recv().await {
        let line = line.with_context(|| format!("cannot read standard input at line {n}"))?;
        if line.trim().is_empty() {
            continue;
        }
        summary.lines += 1;
        match parse_ndjson_event(&line) {
            Ok(event) => {
                if store.record(event).await.is_ok() {
                    summary.accepted += 1;
                }
            }
            Err(e) => {
                summary.invalid += 1;
                bar.suspend(|| warn(format_args!("line {n}: not an event: {e}")));
            }
        }
        bar.inc(1);
        if !bar.is_hidden() {
            bar.set_message(format!("{} sent", store.stats().sent));
        }
    }
    reader.await.context("stdin reader failed")?;
    let closed = {
        let close = store.close(post.close_timeout);
        let mut close = std::pin::pin!(close);
        loop {
            bar.set_message(format!(
                "{} of {} sent, waiting for the server to confirm the rest",
                store.stats().sent,
                summary.accepted
            ));
            tokio::select! {
                closed = &mut close => break closed,
                () = tokio::time::sleep(Duration::from_millis(200)), if progress => {}
            }
        }
    };
    bar.finish_and_clear();
    let stats = store.stats();
    summary.sent = stats.sent;
    summary.failed = stats.failed;
    summary.dropped = stats.dropped;
    summary.spooled = stats.spooled;
    summary.replayed = stats.replayed;
    summary.not_confirmed = closed.err().map_or(0, |t| t.remaining);
    let complete = summary.invalid == 0
        && summary.failed == 0
        && summary.dropped == 0
        && summary.not_confirmed == 0
        && summary.sent + summary.spooled == summary.accepted;
    let code = if complete { 0 } else { EXIT_NEGATIVE };
    keep_code(print_summary(out, &summary, json), code)
}

fn print_summary<W: Write>(out: &mut W, summary: &PostSummary, json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(out, summary);
    }
    let rows = vec![vec![
        summary.lines.to_string(),
        summary.invalid.to_string(),
        summary.sent.to_string(),
        summary.failed.to_string(),
        summary.dropped.to_string(),
        summary.spooled.to_string(),
        summary.replayed.to_string(),
        summary.not_confirmed.to_string(),
    ]];
    let head = [
        "LINES",
        "INVALID",
        "SENT",
        "FAILED",
        "DROPPED",
        "SPOOLED",
        "REPLAYED",
        "NOT_CONFIRMED",
    ];
    write!(out, "{}", table(&head, rows))?;
    Ok(())
}

async fn run_query<W: Write>(
    client: &Client,
    query: QueryArgs,
    json: bool,
    out: &mut W,
    progress: bool,
) -> anyhow::Result<u8> {
    let mut params = query.filters.params();
    params.since = query.since;
    params.until = query.until;
    params.limit = query
        .limit
        .or(query.all.then_some(MAX_PAGE_LIMIT))
        .map(|l| l.to_string());
    params.offset = query.offset.map(|o| o.to_string());
    params.cursor = query.cursor;
    if !query.all {
        let page = client.query_events(&params).await.context("query failed")?;
        if json {
            print_json(out, &page)?;
        } else {
            write!(out, "{}", events_table(&page.data))?;
            let p = &page.pagination;
            write!(
                out,
                "{} of {} events (offset {})",
                page.data.len(),
                p.total,
                p.offset
            )?;
            match &p.next_cursor {
                Some(c) if p.has_more => writeln!(out, "; next page: --cursor {c}")?,
                _ => writeln!(out)?,
            }
        }
        return Ok(0);
    }
    let bar = progress_bar(
        progress,
        None,
        "fetching events {pos}/{len} [{bar:40}] [{elapsed}, eta {eta}]",
    );
    let mut all = Vec::new();
    for _ in 0..MAX_PAGES {
        let page = client.query_events(&params).await.context("query failed")?;
        // The total of matching events, from the first page on.
        bar.set_length(page.pagination.total.max(bar.position()));
        bar.inc(page.data.len() as u64);
        all.extend(page.data);
        match page.pagination.next_cursor {
            Some(next) if page.pagination.has_more && params.cursor.as_ref() != Some(&next) => {
                params.cursor = Some(next);
                params.offset = None;
            }
            _ => break,
        }
    }
    bar.finish_and_clear();
    if json {
        print_json(out, &all)?;
    } else {
        write!(out, "{}", events_table(&all))?;
        writeln!(out, "{} events", all.len())?;
    }
    Ok(0)
}

/// What `tail` has printed: ids per timestamp, kept for the look-back window only.
#[derive(Debug, Default)]
struct Seen {
    ids: HashSet<Uuid>,
    by_time: HashMap<Uuid, DateTime<Utc>>,
    newest: Option<DateTime<Utc>>,
}

impl Seen {
    /// Keeps the events of `page` not printed yet, oldest first, and remembers them.
    fn fresh(&mut self, mut events: Vec<AuditEvent>) -> Vec<AuditEvent> {
        events.retain(|e| !self.ids.contains(&e.event_id));
        events.sort_by_key(|e| (e.event_timestamp, e.event_id));
        events.dedup_by_key(|e| e.event_id);
        for e in &events {
            self.ids.insert(e.event_id);
            self.by_time.insert(e.event_id, e.event_timestamp);
            self.newest = self.newest.max(Some(e.event_timestamp));
        }
        events
    }

    /// Remembers one streamed event; false when it was printed already.
    fn first_time(&mut self, id: Uuid, at: DateTime<Utc>) -> bool {
        if !self.ids.insert(id) {
            return false;
        }
        self.by_time.insert(id, at);
        self.newest = self.newest.max(Some(at));
        true
    }

    /// Forgets events older than `horizon`: catching up no longer returns them.
    fn prune(&mut self, horizon: DateTime<Utc>) {
        self.by_time.retain(|_, at| *at >= horizon);
        let by_time = &self.by_time;
        self.ids.retain(|id| by_time.contains_key(id));
    }
}

/// Prints what `tail` found: a header once (table), then one line per event.
struct TailPrinter {
    json: bool,
    header: bool,
    printed: u64,
    count: Option<u64>,
}

impl TailPrinter {
    /// Prints one event (`value` its JSON, `row` its table row); true once `--count` is met.
    fn print<W: Write>(
        &mut self,
        out: &mut W,
        value: &impl serde::Serialize,
        row: Vec<String>,
    ) -> anyhow::Result<bool> {
        if self.json {
            serde_json::to_writer(&mut *out, value)?;
            writeln!(out)?;
        } else {
            let text = table(&EVENT_COLUMNS, vec![row]);
            let mut lines = text.lines();
            let head = lines.next().unwrap_or_default();
            if std::mem::take(&mut self.header) {
                writeln!(out, "{head}")?;
            }
            for line in lines {
                writeln!(out, "{line}")?;
            }
        }
        out.flush()?;
        self.printed += 1;
        Ok(self.count.is_some_and(|c| self.printed >= c))
    }
}

/// The stored events matching `filters` from `from` on, page by page (at most
/// [`MAX_TAIL_PAGES`]); a retryable failure ends the catch-up early with a warning.
async fn catch_up(
    client: &Client,
    filters: &Filters,
    from: DateTime<Utc>,
) -> anyhow::Result<Vec<AuditEvent>> {
    let mut params = filters.params();
    params.since = Some(from.to_rfc3339_opts(SecondsFormat::Micros, true));
    params.limit = Some(MAX_PAGE_LIMIT.to_string());
    let mut found = Vec::new();
    for _ in 0..MAX_TAIL_PAGES {
        match client.query_events(&params).await {
            Ok(page) => {
                found.extend(page.data);
                match page.pagination.next_cursor {
                    Some(c) if page.pagination.has_more => params.cursor = Some(c),
                    _ => break,
                }
            }
            Err(e) if e.is_retryable() => {
                warn(format_args!(
                    "warning: catching up failed, going on with the stream: {e}"
                ));
                break;
            }
            Err(e) => return Err(anyhow::Error::new(e).context("tail query failed")),
        }
    }
    Ok(found)
}

/// `tail`: subscribes to the server's stream, then prints the stored events since the start
/// (or, after a reconnect, since the newest printed minus the look-back), then each streamed
/// event as it is committed. Ids already printed are skipped. When the stream ends, fails, or
/// says this subscriber lagged, it reconnects after `--interval` and catches up again.
async fn run_tail<W: Write>(
    client: &Client,
    tail: TailArgs,
    json: bool,
    out: &mut W,
    stop: impl Future<Output = ()>,
) -> anyhow::Result<u8> {
    let lookback = chrono::Duration::from_std(tail.lookback).context("--lookback")?;
    let start = match &tail.since {
        Some(raw) => datastorage_api::query::parse_time(raw, Utc::now())
            .map_err(|rule| anyhow::anyhow!("--since {rule}"))?,
        None => Utc::now(),
    };
    let mut seen = Seen::default();
    let mut printer = TailPrinter {
        json,
        header: !json,
        printed: 0,
        count: tail.count,
    };
    let mut stop = std::pin::pin!(stop);
    let params = tail.filters.params();
    loop {
        let subscribed = tokio::select! {
            () = &mut stop => return Ok(0),
            s = client.stream_events(&params) => s,
        };
        match subscribed {
            Ok(mut stream) => {
                let from = seen.newest.map_or(start, |n| (n - lookback).max(start));
                for event in seen.fresh(catch_up(client, &tail.filters, from).await?) {
                    if printer.print(out, &event, event_row(&event))? {
                        return Ok(0);
                    }
                }
                loop {
                    let next = tokio::select! {
                        () = &mut stop => return Ok(0),
                        next = stream.next() => next,
                    };
                    match next {
                        Ok(Some(Streamed::Event(e))) => {
                            if seen.first_time(e.event_id, e.event_timestamp)
                                && printer.print(out, &e, streamed_row(&e))?
                            {
                                return Ok(0);
                            }
                        }
                        Ok(Some(Streamed::Lagged(n))) => {
                            warn(format_args!("warning: the stream skipped {n} events this client was too slow for; catching up"));
                            break;
                        }
                        Ok(None) => {
                            warn(format_args!(
                                "warning: the server ended the stream; reconnecting"
                            ));
                            break;
                        }
                        Err(e) => {
                            warn(format_args!(
                                "warning: the stream failed, reconnecting: {e}"
                            ));
                            break;
                        }
                    }
                    if let Some(newest) = seen.newest {
                        seen.prune((newest - lookback).max(start));
                    }
                }
            }
            Err(e) if e.is_retryable() => {
                warn(format_args!("warning: cannot subscribe, retrying: {e}"));
            }
            Err(e) => {
                return Err(anyhow::Error::new(e).context("tail: the server refused the stream"))
            }
        }
        tokio::select! {
            () = &mut stop => return Ok(0),
            () = tokio::time::sleep(tail.interval) => {}
        }
    }
}

const EVENT_COLUMNS: [&str; 8] = [
    "TIMESTAMP",
    "EVENT_ID",
    "TYPE",
    "CATEGORY",
    "ACTION",
    "OUTCOME",
    "CORRELATION_ID",
    "ACTOR",
];

fn format_ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The row of [`EVENT_COLUMNS`] for anything with the event's fields: a stored [`AuditEvent`],
/// or a [`StreamedEvent`] of `tail`.
macro_rules! listing_row {
    ($e:expr) => {{
        let e = $e;
        vec![
            format_ts(e.event_timestamp),
            e.event_id.to_string(),
            e.event_type.clone(),
            e.event_category.to_string(),
            e.event_action.clone(),
            e.event_outcome.to_string(),
            e.correlation_id.clone(),
            e.actor_id.clone().unwrap_or_default(),
        ]
    }};
}

fn streamed_row(e: &StreamedEvent) -> Vec<String> {
    listing_row!(e)
}

fn event_row(e: &AuditEvent) -> Vec<String> {
    listing_row!(e)
}

fn events_table(events: &[AuditEvent]) -> String {
    table(&EVENT_COLUMNS, events.iter().map(event_row).collect())
}

/// The fields of [`AuditEvent`] in the order `get` shows them; a field missing here (added to
/// the type later) is still shown, after these.
const EVENT_FIELDS: &[&str] = &[
    "event_id",
    "version",
    "event_type",
    "event_timestamp",
    "event_date",
    "event_category",
    "event_action",
    "event_outcome",
    "actor_type",
    "actor_id",
    "actor_ip",
    "resource_type",
    "resource_id",
    "correlation_id",
    "parent_event_id",
    "parent_event_date",
    "namespace",
    "cluster_id",
    "severity",
    "duration_ms",
    "error_code",
    "error_message",
    "retention_days",
    "is_sensitive",
    "event_data",
    "chain_sequence",
    "event_hash",
    "previous_event_hash",
    "hash_algorithm",
    "hash_key_id",
    "legal_hold",
];

/// One field's value as `get` shows it: `-` when empty, JSON objects pretty-printed.
fn detail_value(value: &serde_json::Value) -> String {
    use serde_json::Value;
    match value {
        Value::Null => "-".to_owned(),
        Value::String(s) if s.trim().is_empty() => "-".to_owned(),
        Value::String(s) => s.clone(),
        Value::Object(_) | Value::Array(_) => {
            serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
        }
        other => other.to_string(),
    }
}

/// `get`: every field of the event, one per line (a multi-line value continues under the value
/// column).
fn print_event_detail<W: Write>(out: &mut W, e: &AuditEvent) -> anyhow::Result<()> {
    let serde_json::Value::Object(mut fields) = serde_json::to_value(e)? else {
        bail!("an event serializes to a JSON object");
    };
    let mut rows: Vec<(String, String)> = EVENT_FIELDS
        .iter()
        .map(|&k| {
            // Absent optional fields are left out of the answer; show them as empty.
            let value = fields
                .remove(k)
                .map_or_else(|| "-".to_owned(), |v| detail_value(&v));
            (k.to_owned(), value)
        })
        .collect();
    rows.extend(fields.iter().map(|(k, v)| (k.clone(), detail_value(v))));
    let width = rows
        .iter()
        .map(|(k, _)| k.chars().count())
        .chain(["FIELD".len()])
        .max()
        .unwrap_or_default();
    writeln!(out, "{:<width$}  VALUE", "FIELD")?;
    for (key, value) in rows {
        let mut lines = value.lines();
        let first = lines.next().unwrap_or_default();
        writeln!(out, "{}", format!("{key:<width$}  {first}").trim_end())?;
        for line in lines {
            writeln!(out, "{:width$}  {}", "", line.trim_end())?;
        }
    }
    Ok(())
}

/// Aligned columns: a header line, then one line per row; cells never wrap.
pub fn table(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut l = String::new();
        for (i, (cell, w)) in cells.zip(&widths).enumerate() {
            if i > 0 {
                l.push_str("  ");
            }
            l.push_str(cell);
            let pad = w - cell.chars().count();
            l.extend(std::iter::repeat_n(' ', pad));
        }
        text.push_str(l.trim_end());
        text.push('\n');
    };
    line(&mut headers.iter().copied());
    for row in &rows {
        line(&mut row.iter().map(String::as_str));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns_and_trim_line_ends() {
        let t = table(
            &["A", "LONGER"],
            vec![
                vec!["xyz".into(), "1".into()],
                vec!["é".into(), String::new()],
            ],
        );
        assert_eq!(t, "A    LONGER\nxyz  1\né\n");
    }

    #[test]
    fn ndjson_lines_get_defaults_and_bad_ones_are_explained() {
        let e = parse_ndjson_event(
            r#"{"event_type":"a.b","event_category":"gateway","event_action":"x","event_outcome":"success","correlation_id":"c"}"#,
        )
        .unwrap();
        assert_eq!(e.version, "1.0");
        assert!(e.event_data.is_empty());
        assert!(parse_ndjson_event("[1]").unwrap_err().contains("object"));
        assert!(parse_ndjson_event(r#"{"event_type":"a"}"#).is_err());
    }

    fn ev(ts: i64, id: u128) -> AuditEvent {
        serde_json::from_value(serde_json::json!({
            "event_id": Uuid::from_u128(id), "version": "1.0", "event_type": "t",
            "event_timestamp": DateTime::from_timestamp(ts, 0).unwrap(), "event_date": "2026-01-01",
            "event_category": "gateway", "event_action": "a", "event_outcome": "success",
            "actor_type": null, "actor_id": null, "actor_ip": null, "resource_type": null,
            "resource_id": null, "correlation_id": "c", "parent_event_id": null,
            "parent_event_date": null, "namespace": null, "cluster_id": null, "severity": null,
            "duration_ms": null, "error_code": null, "error_message": null, "retention_days": 1,
            "is_sensitive": false, "event_data": {}, "chain_sequence": 1, "event_hash": "",
            "previous_event_hash": "", "hash_algorithm": "sha256", "legal_hold": false
        }))
        .unwrap()
    }

    #[test]
    fn get_lists_every_field_of_the_event_type_in_order() {
        let serde_json::Value::Object(fields) = serde_json::to_value(ev(1, 1)).unwrap() else {
            unreachable!()
        };
        let missing: Vec<_> = fields
            .keys()
            .filter(|k| !EVENT_FIELDS.contains(&k.as_str()))
            .collect();
        assert!(missing.is_empty(), "add to EVENT_FIELDS: {missing:?}");
        let mut out = Vec::new();
        print_event_detail(&mut out, &ev(1, 1)).unwrap();
        let out = String::from_utf8(out).unwrap();
        let keys: Vec<&str> = out.lines().filter_map(|l| l.split(' ').next()).collect();
        assert_eq!(keys[0], "FIELD");
        assert_eq!(keys[1..], EVENT_FIELDS[..]);
        assert!(out.contains("\nevent_data           {}\n"), "{out}");
        assert!(out.contains("\nactor_id             -\n"), "{out}");
    }

    #[test]
    fn tail_prints_each_event_once_oldest_first_even_when_it_arrives_late() {
        let mut seen = Seen::default();
        let first = seen.fresh(vec![ev(20, 2), ev(10, 1)]);
        assert_eq!(
            first.iter().map(|e| e.event_id).collect::<Vec<_>>(),
            vec![Uuid::from_u128(1), Uuid::from_u128(2)]
        );
        // The next poll returns the same events again plus one at the same second and one
        // that arrived late with an older timestamp.
        let second = seen.fresh(vec![ev(20, 3), ev(20, 2), ev(15, 4), ev(10, 1)]);
        assert_eq!(
            second.iter().map(|e| e.event_id).collect::<Vec<_>>(),
            vec![Uuid::from_u128(4), Uuid::from_u128(3)]
        );
        seen.prune(DateTime::from_timestamp(15, 0).unwrap());
        assert_eq!(seen.ids.len(), 3, "event 1 is behind the window");
        assert!(seen.fresh(vec![ev(20, 3)]).is_empty());
    }
}
