//! Delivery of one batch: retries, learning the server's batch limit, and isolating bad events.
//!
//! Rules: a retryable failure (429, 502, 503, 504, network, timeout) is retried with the store's
//! [`RetryPolicy`](crate::RetryPolicy) until the batch's deadline; never sooner than
//! `Retry-After`. A batch the server refuses as a whole is never dropped as a whole:
//! - `batch-size-exceeded`: the limit in its answer (else half the batch) becomes the store's
//!   limit for every later batch, and this one is re-cut to it;
//! - 413: the batch is halved until it fits; one event too large on its own fails;
//! - `validation-error` or `event-id-conflict`: the events the answer names fail (logged with
//!   their id and reason) and the rest is re-sent; when the answer names none, the batch is
//!   halved until the bad events stand alone.
//!
//! 401 and 403 (the credentials are refused) are never retried as sent: each refusal counts in
//! `auth_failures`, the token file (if any) is looked at at once, and only a token that changed
//! since the refused attempt is tried at once. Otherwise a live batch goes to the spool (with
//! one) or fails, logged; a replayed batch stays on disk and is tried again after the retry
//! backoff (at most `retry.max_backoff`), so replay resumes by itself once the credentials work.
//!
//! With a spool, a live batch whose retry deadline passes, or that `close` gives up on, goes to
//! the spool instead of `failed`/`abandoned`. Replayed batches (from the spool) are retried
//! without a deadline: they are already durable, so there is no reason to give up on them.
//!
//! Every event of a live batch ends counted exactly once in `sent`, `failed`, `spooled` or
//! `abandoned`; every event of a replayed batch in `replayed` or `failed`, unless the replay is
//! interrupted (then its segment stays on disk and is replayed again).

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use datastorage_api::{AuditEventRequest, Problem, ProblemType};
use datastorage_spool::read_segment;
use tokio::time::Instant;

use crate::error::Error;
use crate::queue::{Metrics, Shared};
use crate::spool::Spool;

/// Where a batch comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// From the in-memory queue: retried until the retry deadline.
    Live,
    /// From the spool: retried until the server takes it or the store stops.
    Replay,
}

/// How long the replay task waits for new spool data before looking again.
const REPLAY_IDLE_POLL: Duration = Duration::from_secs(1);

/// What one chunk's delivery came to.
enum Verdict {
    Sent,
    /// `close` gave up on it.
    Abandoned,
    /// The retry deadline passed while the server stayed unreachable or busy.
    Expired(String),
    /// The server refused the credentials (401/403) of a live batch.
    Unauthorized(String),
    /// Every event of the chunk fails with this reason.
    Fail(String),
    /// The chunk must be halved; the reason applies when it is a single event.
    Halve(String),
    /// The server's batch limit is this.
    Shrink(usize),
    /// These positions are bad, with their reasons; the rest may be re-sent.
    Reject(BTreeMap<usize, String>),
}

/// Delivers one batch, counting each event (see the module rules). Returns false only when a
/// replay was interrupted by `close`, so its segment must stay on disk.
pub(crate) async fn deliver(
    shared: &Shared,
    batch: Vec<AuditEventRequest>,
    origin: Origin,
) -> bool {
    let deadline = match origin {
        Origin::Live => Some(Instant::now() + shared.config.retry.deadline),
        Origin::Replay => None,
    };
    let mut work = VecDeque::from([batch]);
    while let Some(mut chunk) = work.pop_front() {
        let limit = shared.limit.load(Ordering::Relaxed).max(1);
        if chunk.len() > limit {
            work.push_front(chunk.split_off(limit));
        }
        match send(shared, &chunk, origin, deadline).await {
            Verdict::Sent => match origin {
                Origin::Live => Metrics::add(&shared.metrics.sent, chunk.len()),
                Origin::Replay => Metrics::add(&shared.metrics.replayed, chunk.len()),
            },
            Verdict::Abandoned if origin == Origin::Replay => return false,
            Verdict::Abandoned => {
                work.push_front(chunk);
                if shared.spool.is_some() {
                    for chunk in work {
                        spool_batch(shared, chunk, "close deadline reached").await;
                    }
                } else {
                    let left = work.iter().map(Vec::len).sum::<usize>();
                    Metrics::add(&shared.metrics.abandoned, left);
                }
                return true;
            }
            Verdict::Expired(reason) => {
                if shared.spool.is_some() {
                    work.push_front(chunk);
                    for chunk in work {
                        spool_batch(shared, chunk, &reason).await;
                    }
                    return true;
                }
                fail(shared, &chunk, &reason);
            }
            Verdict::Unauthorized(reason) => {
                let spooled = shared.spool.is_some();
                // With a spool the rest of the batch goes with it; without, it is tried alone.
                let events = if spooled {
                    chunk.len() + work.iter().map(Vec::len).sum::<usize>()
                } else {
                    chunk.len()
                };
                tracing::error!(
                    events,
                    spooled,
                    reason,
                    "DataStorage refused this client's credentials; check its bearer token or client certificate"
                );
                if spooled {
                    work.push_front(chunk);
                    for chunk in work {
                        spool_batch(shared, chunk, &reason).await;
                    }
                    return true;
                }
                fail(shared, &chunk, &reason);
            }
            Verdict::Fail(reason) => fail(shared, &chunk, &reason),
            Verdict::Halve(reason) if chunk.len() == 1 => fail(shared, &chunk, &reason),
            Verdict::Halve(_) => {
                let back = chunk.split_off(chunk.len() / 2);
                work.push_front(back);
                work.push_front(chunk);
            }
            Verdict::Shrink(server_limit) => {
                // A limit not below what was just refused would loop; halve instead.
                let new = if server_limit < chunk.len() {
                    server_limit
                } else {
                    chunk.len() / 2
                }
                .max(1);
                let old = shared.limit.fetch_min(new, Ordering::Relaxed);
                if new < old {
                    tracing::warn!(
                        old,
                        new,
                        "server refused the batch size; lowering the batch limit"
                    );
                }
                if chunk.len() == 1 {
                    fail(shared, &chunk, "server refuses even a batch of one event");
                } else {
                    work.push_front(chunk);
                }
            }
            Verdict::Reject(bad) => {
                let mut rest = Vec::with_capacity(chunk.len());
                for (i, event) in chunk.into_iter().enumerate() {
                    match bad.get(&i) {
                        Some(reason) => fail(shared, std::slice::from_ref(&event), reason),
                        None => rest.push(event),
                    }
                }
                if !rest.is_empty() {
                    work.push_front(rest);
                }
            }
        }
    }
    true
}

/// Writes a batch to the spool (counted in `spooled`), or fails it (counted in `failed`) when
/// the spool refuses. Only called when the store has a spool.
pub(crate) async fn spool_batch(shared: &Shared, events: Vec<AuditEventRequest>, why: &str) {
    let Some(spool) = shared.spool.clone() else {
        fail(shared, &events, why);
        return;
    };
    let written = tokio::task::spawn_blocking(move || {
        let written = spool.append(&events);
        (events, written)
    })
    .await;
    match written {
        Ok((events, Ok(_))) => {
            tracing::debug!(
                events = events.len(),
                why,
                "audit batch written to the spool"
            );
            Metrics::add(&shared.metrics.spooled, events.len());
            shared.spool_wake.notify_one();
        }
        Ok((events, Err(e))) => {
            let reason = format!("{why}; and the spool refused it: {}", chain_of(&e));
            fail(shared, &events, &reason);
        }
        Err(join) => tracing::error!(error = %join, "spool writer task failed"),
    }
}

/// Runs for the store's life when it has a spool: replays segments oldest first, deletes each
/// once every batch in it is settled, and stops on abort, or once the store is closed, every
/// accepted event settled and the spool empty.
pub(crate) async fn replay(shared: Arc<Shared>, spool: Arc<Spool>) {
    loop {
        if shared.is_aborted() {
            return;
        }
        let next = {
            let spool = spool.clone();
            tokio::task::spawn_blocking(move || spool.next_segment()).await
        };
        let segment = match next {
            Ok(Ok(Some(segment))) => segment,
            Ok(Ok(None)) => {
                if shared.is_drained() {
                    return;
                }
                tokio::select! {
                    () = shared.spool_wake.notified() => {}
                    () = tokio::time::sleep(REPLAY_IDLE_POLL) => {}
                    () = shared.aborted() => return,
                }
                continue;
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "cannot read the spool directory; retrying");
                tokio::select! {
                    () = tokio::time::sleep(REPLAY_IDLE_POLL) => {}
                    () = shared.aborted() => return,
                }
                continue;
            }
            Err(join) => {
                tracing::error!(error = %join, "spool reader task failed");
                return;
            }
        };
        let path = segment.path.clone();
        let contents = match tokio::task::spawn_blocking(move || read_segment(&path)).await {
            Ok(Ok(contents)) => contents,
            Ok(Err(e)) => {
                tracing::error!(segment = %segment.path.display(), error = %e, "cannot read a spool segment; retrying");
                tokio::select! {
                    () = tokio::time::sleep(REPLAY_IDLE_POLL) => {}
                    () = shared.aborted() => return,
                }
                continue;
            }
            Err(join) => {
                tracing::error!(error = %join, "spool reader task failed");
                return;
            }
        };
        shared
            .metrics
            .spool_corrupt
            .fetch_add(contents.corrupt, Ordering::Relaxed);
        let corrupt = contents.corrupt > 0;
        for batch in contents.records {
            if !deliver(&shared, batch, Origin::Replay).await {
                return;
            }
        }
        let finished = {
            let spool = spool.clone();
            tokio::task::spawn_blocking(move || spool.finish(&segment, corrupt)).await
        };
        match finished {
            Ok(Ok(())) => shared.spool_progress.notify_waiters(),
            Ok(Err(e)) => {
                tracing::error!(error = %e, "cannot remove a replayed spool segment");
                tokio::select! {
                    () = tokio::time::sleep(REPLAY_IDLE_POLL) => {}
                    () = shared.aborted() => return,
                }
            }
            Err(join) => {
                tracing::error!(error = %join, "spool task failed");
                return;
            }
        }
    }
}

/// An error and its causes on one line, for the log.
pub(crate) fn chain_of(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Counts events as failed and logs each with its id and reason (never the payload).
fn fail(shared: &Shared, events: &[AuditEventRequest], reason: &str) {
    Metrics::add(&shared.metrics.failed, events.len());
    for event in events {
        tracing::warn!(
            event_id = ?event.event_id,
            event_type = %event.event_type,
            reason,
            "audit event not stored; counted as failed"
        );
    }
}

/// Sends one chunk, retrying what may succeed later, until the deadline (none: until abort).
async fn send(
    shared: &Shared,
    chunk: &[AuditEventRequest],
    origin: Origin,
    deadline: Option<Instant>,
) -> Verdict {
    let mut attempt = 0u32;
    loop {
        let started = Instant::now();
        let answer = tokio::select! {
            answer = shared.client.create_events_batch(chunk) => answer,
            () = shared.aborted() => return Verdict::Abandoned,
        };
        if answer.is_ok() || matches!(answer, Err(Error::Problem { .. } | Error::Status { .. })) {
            let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
            let m = &shared.metrics;
            m.latency_micros_sum.fetch_add(micros, Ordering::Relaxed);
            m.latency_count.fetch_add(1, Ordering::Relaxed);
        }
        let error = match answer {
            Ok(_) => return Verdict::Sent,
            Err(e) => e,
        };
        if error.is_auth_failure() {
            Metrics::add(&shared.metrics.auth_failures, 1);
            // The token that was just refused; a rotated file may already hold a better one.
            let refused = shared.client.token_generation();
            shared.client.reload_token().await;
            if shared.client.token_generation() != refused {
                Metrics::add(&shared.metrics.retried, chunk.len());
                continue;
            }
            let reason = format!("server refused the credentials: {}", error_chain(&error));
            if origin == Origin::Live {
                return Verdict::Unauthorized(reason);
            }
            // A spooled batch is durable: keep it and look again later.
            let wait = shared.config.retry.delay(attempt, error.retry_after());
            if attempt == 0 {
                tracing::warn!(
                    events = chunk.len(),
                    reason,
                    "spooled audit batch refused for its credentials; it stays spooled and is tried again"
                );
            } else {
                tracing::debug!(
                    events = chunk.len(),
                    attempt,
                    wait_ms = wait.as_millis() as u64,
                    "spooled audit batch still refused for its credentials"
                );
            }
            attempt += 1;
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = shared.aborted() => return Verdict::Abandoned,
            }
            continue;
        }
        if !error.is_retryable() {
            return classify(&error, chunk);
        }
        let wait = shared.config.retry.delay(attempt, error.retry_after());
        if deadline.is_some_and(|deadline| Instant::now() + wait > deadline) {
            return Verdict::Expired(format!(
                "retry deadline reached after {} attempts; last error: {}",
                attempt + 1,
                error_chain(&error)
            ));
        }
        attempt += 1;
        Metrics::add(&shared.metrics.retried, chunk.len());
        tracing::debug!(
            events = chunk.len(),
            attempt,
            wait_ms = wait.as_millis() as u64,
            error = %error_chain(&error),
            "audit batch will be retried"
        );
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = shared.aborted() => return Verdict::Abandoned,
        }
    }
}

/// What to do about an answer that retrying will not change.
fn classify(error: &Error, chunk: &[AuditEventRequest]) -> Verdict {
    let reason = error_chain(error);
    if error.status() == Some(413) {
        return Verdict::Halve(reason);
    }
    let Some(problem) = error.problem() else {
        return Verdict::Fail(reason);
    };
    if error.is_problem(ProblemType::BatchSizeExceeded) {
        return Verdict::Shrink(batch_limit_of(problem).unwrap_or(chunk.len() / 2));
    }
    if error.is_problem(ProblemType::Validation) {
        let bad = bad_positions(problem);
        if !bad.is_empty() && bad.keys().all(|&i| i < chunk.len()) {
            return Verdict::Reject(bad);
        }
        return Verdict::Halve(reason);
    }
    if error.is_problem(ProblemType::EventIdConflict) {
        let detail = problem.detail.as_deref().unwrap_or_default();
        let position = chunk.iter().position(|e| {
            e.event_id
                .is_some_and(|id| detail.contains(&id.to_string()))
        });
        return match position {
            Some(i) => Verdict::Reject(BTreeMap::from([(i, reason)])),
            None => Verdict::Halve(reason),
        };
    }
    Verdict::Fail(reason)
}

/// The limit a `batch-size-exceeded` answer states: "at most N events" in its field errors, or
/// "maxBatchSize (N)" in its detail.
pub(crate) fn batch_limit_of(problem: &Problem) -> Option<usize> {
    let after = |text: &str, marker: &str| -> Option<usize> {
        let rest = &text[text.find(marker)? + marker.len()..];
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok().filter(|&n| n > 0)
    };
    problem
        .field_errors
        .values()
        .find_map(|m| after(m, "at most "))
        .or_else(|| after(problem.detail.as_deref()?, "maxBatchSize ("))
}

/// Positions named by field-error keys such as `[3].event_type`, each with its messages.
pub(crate) fn bad_positions(problem: &Problem) -> BTreeMap<usize, String> {
    let mut bad: BTreeMap<usize, String> = BTreeMap::new();
    for (key, message) in &problem.field_errors {
        let Some(index) = key
            .strip_prefix('[')
            .and_then(|k| k.split_once(']'))
            .and_then(|(i, _)| i.parse::<usize>().ok())
        else {
            continue;
        };
        let entry = bad.entry(index).or_default();
        if !entry.is_empty() {
            entry.push_str("; ");
        }
        entry.push_str(key);
        entry.push_str(": ");
        entry.push_str(message);
    }
    bad
}

/// The error and its causes on one line, for the log.
fn error_chain(error: &Error) -> String {
    chain_of(error)
}

#[cfg(test)]
mod tests {
    use datastorage_api::ProblemType;

    use super::*;

    #[test]
    fn batch_limit_is_read_from_field_errors_or_detail() {
        let mut p = Problem::new(
            ProblemType::BatchSizeExceeded,
            "batch of 500 events exceeds server.maxBatchSize (50)",
        );
        assert_eq!(batch_limit_of(&p), Some(50));
        p.field_errors.insert(
            "(body)".into(),
            "a batch must hold at most 40 events (got 500)".into(),
        );
        assert_eq!(batch_limit_of(&p), Some(40));
        let p = Problem::new(ProblemType::BatchSizeExceeded, "too big");
        assert_eq!(batch_limit_of(&p), None);
    }

    #[test]
    fn bad_positions_group_field_errors_by_index() {
        let mut p = Problem::new(ProblemType::Validation, "validation failed");
        p.field_errors
            .insert("[3].event_type".into(), "too long".into());
        p.field_errors
            .insert("[3].version".into(), "required".into());
        p.field_errors
            .insert("[10].event_id".into(), "repeats".into());
        p.field_errors.insert("(body)".into(), "ignored".into());
        let bad = bad_positions(&p);
        assert_eq!(bad.keys().copied().collect::<Vec<_>>(), vec![3, 10]);
        assert!(bad[&3].contains("event_type: too long") && bad[&3].contains("version"));
    }
}
