//! The live feed: committed events fanned out to the subscribers of
//! `GET /api/v1/audit/events/stream` (the explorer's live tail and `events tail`).
//!
//! The write path hands committed events to [`LiveFeed::publish`]. While nobody subscribes
//! that costs one atomic load; otherwise it costs a clone of the events and a `try_send` into
//! a bounded queue, and a full queue drops them for the feed (counted), so writes never wait
//! for the feed. One task gathers what is committed for [`LINGER`] after the first event,
//! encodes each event once, as the whole server-sent-events frame, into one buffer for the
//! batch, and broadcasts the batch: a subscriber wakes once per batch, not once per event, and
//! one that takes every event sends the batch's buffer as it is (a reference count, no copy).
//! Each subscriber reads from a ring of about `explorer.streamBufferEvents` events (in
//! batches); one that falls behind further loses the oldest and is told how many
//! ([`Next::Frames::missed`]). At most `explorer.streamMaxSubscribers` subscribe at once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Bytes;
use datastorage_api::query::EventFilter;
use datastorage_api::stream::StreamedEvent;
use datastorage_api::ValidatedEvent;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use serde_json::Value;
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;

/// Committed-event messages the encoder may have queued before the feed drops new ones.
const QUEUE: usize = 1024;

/// How long the encoder gathers events after the first before it broadcasts them: under load,
/// one wake-up and one write per subscriber per linger instead of one per event per subscriber
/// (the cost that grows with subscribers × events). A person watching a live tail does not see
/// 50 ms.
pub const LINGER: Duration = Duration::from_millis(50);

/// Most events in one batch; fewer when the ring is small (see [`ring`]).
const BATCH_EVENTS: usize = 256;

/// Metrics of the feed.
#[derive(Debug, Clone, Default)]
pub struct LiveMetrics {
    /// Subscribers now.
    pub subscribers: Gauge,
    /// Subscriptions refused at `explorer.streamMaxSubscribers`.
    pub refused: Counter,
    /// Events a subscriber missed because it fell behind by more than its buffer.
    pub lagged: Counter,
    /// Events the feed dropped because its encoder was behind (no subscriber saw them).
    pub dropped: Counter,
}

/// One committed event as the stream sends it.
#[derive(Debug)]
pub struct LiveEvent {
    /// The event, for the subscribers' filters.
    pub event: ValidatedEvent,
    /// Its whole `audit_event` frame: `event`, `id` (the event id) and `data` (its JSON, the
    /// API's field names) lines and the blank line that ends it. A slice of its batch's buffer.
    pub frame: Bytes,
}

impl LiveEvent {
    /// Whether the event meets every filter of `f` a stream takes (paging and time bounds
    /// aside). Comparisons are those of the query: exact, severity without case, the
    /// `event_data` member as text.
    pub fn matches(&self, f: &EventFilter) -> bool {
        let e = &self.event;
        let exact = |want: &Option<String>, have: Option<&String>| {
            want.as_ref().is_none_or(|w| have == Some(w))
        };
        exact(&f.event_type, Some(&e.event_type))
            && exact(&f.correlation_id, Some(&e.correlation_id))
            && exact(&f.actor_id, e.actor_id.as_ref())
            && exact(&f.resource_type, e.resource_type.as_ref())
            && exact(&f.resource_id, e.resource_id.as_ref())
            && exact(&f.namespace, e.namespace.as_ref())
            && exact(&f.cluster_id, e.cluster_id.as_ref())
            && f.severity.as_ref().is_none_or(|s| {
                e.severity
                    .as_ref()
                    .is_some_and(|have| have.to_lowercase() == *s)
            })
            && f.event_category.is_none_or(|c| c == e.event_category)
            && f.event_outcome.is_none_or(|o| o == e.event_outcome)
            && f.hidden_chain.as_ref() != Some(&e.correlation_id)
            && f.detail.as_ref().is_none_or(|(k, v)| {
                e.event_data.get(k).is_some_and(|have| match have {
                    Value::String(s) => s == v,
                    Value::Null => false,
                    other => serde_json::to_string(other).is_ok_and(|text| text == *v),
                })
            })
    }
}

/// Events committed together within one [`LINGER`], as the feed broadcasts them.
#[derive(Debug)]
struct Batch {
    /// The feed's number of its first event (the feed numbers events from 0 as it sends them).
    first: u64,
    events: Vec<LiveEvent>,
    /// Every event's frame, in commit order, in one buffer.
    frames: Bytes,
}

impl Batch {
    /// Encodes `events` once, each frame a slice of one buffer.
    fn encode(events: Vec<ValidatedEvent>) -> Self {
        let mut buffer = Vec::with_capacity(events.len() * 1024);
        let ends: Vec<usize> = events
            .iter()
            .map(|e| {
                write_frame(&mut buffer, e);
                buffer.len()
            })
            .collect();
        let frames = Bytes::from(buffer);
        let mut start = 0;
        let events = events
            .into_iter()
            .zip(ends)
            .map(|(event, end)| {
                let frame = frames.slice(start..end);
                start = end;
                LiveEvent { event, frame }
            })
            .collect();
        Self {
            first: 0,
            events,
            frames,
        }
    }

    /// The feed's number of the event after its last.
    fn end(&self) -> u64 {
        self.first + self.events.len() as u64
    }
}

/// What a subscriber takes from the feed.
#[derive(Debug)]
enum Selection {
    /// Every event (its filter names none): the batch's buffer is sent as it is.
    Every,
    /// The events that meet the filter.
    Matching(Box<EventFilter>),
}

impl Selection {
    /// The selection of `f`. The feed never carries the service's own access records, so the
    /// chain a filter hides is not a filter here.
    fn of(f: EventFilter) -> Self {
        let EventFilter {
            event_type,
            event_category,
            event_outcome,
            severity,
            correlation_id,
            since: _,
            until: _,
            detail,
            actor_id,
            resource_type,
            resource_id,
            namespace,
            cluster_id,
            limit: _,
            offset: _,
            cursor: _,
            hidden_chain: _,
        } = &f;
        let none = [
            event_type,
            severity,
            correlation_id,
            actor_id,
            resource_type,
            resource_id,
            namespace,
            cluster_id,
        ]
        .iter()
        .all(|v| v.is_none());
        if none && event_category.is_none() && event_outcome.is_none() && detail.is_none() {
            Self::Every
        } else {
            Self::Matching(Box::new(f))
        }
    }

    /// The frames of `batch` this selection takes, in one buffer; `None` when it takes none.
    fn frames(&self, batch: &Batch) -> Option<Bytes> {
        let f = match self {
            Self::Every => return (!batch.frames.is_empty()).then(|| batch.frames.clone()),
            Self::Matching(f) => f,
        };
        let mut taken = batch.events.iter().filter(|e| e.matches(f));
        let first = taken.next()?;
        let Some(second) = taken.next() else {
            return Some(first.frame.clone());
        };
        let mut out = Vec::with_capacity(batch.frames.len());
        for e in [first, second].into_iter().chain(taken) {
            out.extend_from_slice(&e.frame);
        }
        Some(Bytes::from(out))
    }
}

/// What a subscriber receives next.
#[derive(Debug)]
pub enum Next {
    /// Frames of events it takes, and the events it missed before them.
    Frames {
        /// The `audit_event` frames, in commit order, in one buffer; `None` when the batch
        /// held none it takes but it missed some.
        frames: Option<Bytes>,
        /// Events it missed (it fell more than its buffer behind) before these.
        missed: u64,
    },
    /// The feed closed (shutdown).
    Closed,
}

/// The feed. Cheap to clone.
#[derive(Debug, Clone)]
pub struct LiveFeed {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    queue: mpsc::Sender<Vec<ValidatedEvent>>,
    out: Arc<Outlet>,
    subscribers: AtomicUsize,
    max_subscribers: usize,
    metrics: LiveMetrics,
}

/// The one sender and the number of the next event it sends; `None` once closed, which ends
/// every subscription. Sending and subscribing both hold it, so a subscriber knows exactly
/// which event comes first for it.
type Outlet = Mutex<Option<(broadcast::Sender<Arc<Batch>>, u64)>>;

fn lock(out: &Outlet) -> MutexGuard<'_, Option<(broadcast::Sender<Arc<Batch>>, u64)>> {
    out.lock().unwrap_or_else(|e| e.into_inner())
}

/// A subscription; dropping it unsubscribes.
#[derive(Debug)]
pub struct Subscription {
    rx: broadcast::Receiver<Arc<Batch>>,
    selection: Selection,
    /// The feed's number of the next event this subscriber should see.
    next: u64,
    inner: Arc<Inner>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.inner.subscribers.fetch_sub(1, Ordering::Relaxed);
        self.inner.metrics.subscribers.dec();
    }
}

impl Subscription {
    /// The frames of the next batch that holds events this subscriber takes (or tells of
    /// events it missed), or the end.
    pub async fn next(&mut self) -> Next {
        loop {
            let batch = match self.rx.recv().await {
                Ok(batch) => batch,
                // The next batch's number tells how many events were missed.
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return Next::Closed,
            };
            let missed = batch.first.saturating_sub(self.next);
            self.next = batch.end();
            if missed > 0 {
                self.inner.metrics.lagged.inc_by(missed);
            }
            let frames = self.selection.frames(&batch);
            if frames.is_some() || missed > 0 {
                return Next::Frames { frames, missed };
            }
        }
    }
}

/// Why a subscription was refused.
#[derive(Debug, thiserror::Error)]
pub enum SubscribeError {
    /// At `explorer.streamMaxSubscribers`.
    #[error("{0} subscribers are streaming (explorer.streamMaxSubscribers); try again later")]
    Full(usize),
    /// The service is shutting down.
    #[error("the service is shutting down")]
    Closed,
}

/// Events per batch and batches in the ring for a buffer of `buffer` events: batches of at
/// most [`BATCH_EVENTS`] and at least four in the ring, so a subscriber can fall about
/// `buffer` events behind.
fn ring(buffer: usize) -> (usize, usize) {
    let per_batch = BATCH_EVENTS.min((buffer / 4).max(1));
    (per_batch, buffer.div_ceil(per_batch).max(1))
}

impl LiveFeed {
    /// Starts the encoder task: subscribers lag past about `buffer` events, at most
    /// `max_subscribers` at once.
    pub fn start(buffer: usize, max_subscribers: usize, metrics: LiveMetrics) -> Self {
        let (per_batch, batches) = ring(buffer);
        let (queue, mut rx) = mpsc::channel::<Vec<ValidatedEvent>>(QUEUE);
        let out: Arc<Outlet> = Arc::new(Mutex::new(Some((broadcast::channel(batches).0, 0))));
        let inner = Arc::new(Inner {
            queue,
            out: Arc::clone(&out),
            subscribers: AtomicUsize::new(0),
            max_subscribers,
            metrics,
        });
        tokio::spawn(async move {
            while let Some(mut events) = rx.recv().await {
                let until = Instant::now() + LINGER;
                while events.len() < per_batch {
                    match tokio::time::timeout_at(until, rx.recv()).await {
                        Ok(Some(more)) => events.extend(more),
                        Ok(None) | Err(_) => break,
                    }
                }
                while !events.is_empty() {
                    let rest = events.split_off(events.len().min(per_batch));
                    let mut batch = Batch::encode(std::mem::replace(&mut events, rest));
                    let mut out = lock(&out);
                    let Some((tx, next)) = out.as_mut() else {
                        return;
                    };
                    batch.first = *next;
                    *next = batch.end();
                    // No receiver is not an error: the last subscriber just left.
                    let _ = tx.send(Arc::new(batch));
                }
            }
        });
        Self { inner }
    }

    /// Whether anyone subscribes (the write path clones events for the feed only then).
    pub fn wanted(&self) -> bool {
        self.inner.subscribers.load(Ordering::Relaxed) > 0
    }

    /// Hands committed events to the feed; never waits.
    pub fn publish(&self, events: Vec<ValidatedEvent>) {
        if events.is_empty() || !self.wanted() {
            return;
        }
        let n = events.len() as u64;
        if self.inner.queue.try_send(events).is_err() {
            self.inner.metrics.dropped.inc_by(n);
        }
    }

    /// Subscribes to the events that meet `filter` (as [`LiveEvent::matches`] compares), or
    /// refuses at the limit or after [`LiveFeed::close`].
    pub fn subscribe(&self, filter: EventFilter) -> Result<Subscription, SubscribeError> {
        let out = lock(&self.inner.out);
        let Some((tx, next)) = out.as_ref() else {
            return Err(SubscribeError::Closed);
        };
        let max = self.inner.max_subscribers;
        let taken =
            self.inner
                .subscribers
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                    (n < max).then_some(n + 1)
                });
        if taken.is_err() {
            self.inner.metrics.refused.inc();
            return Err(SubscribeError::Full(max));
        }
        self.inner.metrics.subscribers.inc();
        Ok(Subscription {
            rx: tx.subscribe(),
            selection: Selection::of(filter),
            next: *next,
            inner: Arc::clone(&self.inner),
        })
    }

    /// Ends every subscription (at shutdown, so open streams do not hold the drain).
    pub fn close(&self) {
        lock(&self.inner.out).take();
    }
}

/// Appends the `audit_event` frame of `e` to `out`. JSON text holds no line break, so one
/// `data` line carries it.
fn write_frame(out: &mut Vec<u8>, e: &ValidatedEvent) {
    out.extend_from_slice(b"event: audit_event\nid: ");
    out.extend_from_slice(e.event_id.to_string().as_bytes());
    out.extend_from_slice(b"\ndata: ");
    let data = out.len();
    if serde_json::to_writer(&mut *out, &StreamedEvent::from(e)).is_err() {
        out.truncate(data);
        out.extend_from_slice(b"{}");
    }
    out.extend_from_slice(b"\n\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use datastorage_api::{validate_event, EventQueryParams};
    use serde_json::json;

    fn event(category: &str, cid: &str, data: Value) -> ValidatedEvent {
        validate_event(&json!({
            "version": "1.0", "event_type": "t.x", "event_timestamp": "2026-12-01T10:00:00Z",
            "event_category": category, "event_action": "a", "event_outcome": "success",
            "correlation_id": cid, "event_data": data, "severity": "Info"
        }))
        .unwrap()
    }

    fn filter(params: Value) -> EventFilter {
        serde_json::from_value::<EventQueryParams>(params)
            .unwrap()
            .validate(chrono::Utc::now())
            .unwrap()
    }

    fn ids(frames: &Bytes) -> Vec<String> {
        std::str::from_utf8(frames)
            .unwrap()
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .map(|d| serde_json::from_str::<Value>(d).unwrap()["correlation_id"].to_string())
            .map(|c| c.trim_matches('"').to_owned())
            .collect()
    }

    #[test]
    fn a_live_event_meets_the_filters_as_the_query_compares_them() {
        let e = event("gateway", "c-1", json!({"n": 5, "s": "x", "b": true}));
        let mut batch = Batch::encode(vec![e]);
        let live = batch.events.pop().unwrap();
        assert_eq!(live.frame, batch.frames);
        assert!(live.matches(&filter(json!({}))));
        assert!(live.matches(&filter(json!({"event_category": "GATEWAY"}))));
        assert!(!live.matches(&filter(json!({"event_category": "workflow"}))));
        assert!(live.matches(&filter(json!({"severity": "INFO"}))));
        assert!(live.matches(&filter(json!({"correlation_id": "c-1"}))));
        assert!(!live.matches(&filter(json!({"correlation_id": "c-2"}))));
        assert!(live.matches(&filter(json!({"detail_key": "n", "detail_value": "5"}))));
        assert!(live.matches(&filter(json!({"detail_key": "b", "detail_value": "true"}))));
        assert!(live.matches(&filter(json!({"detail_key": "s", "detail_value": "x"}))));
        assert!(!live.matches(&filter(json!({"detail_key": "s", "detail_value": "y"}))));
        assert!(!live.matches(&filter(json!({"actor_id": "someone"}))));
        let text = std::str::from_utf8(&live.frame).unwrap();
        let (head, data) = text.split_once("\ndata: ").unwrap();
        assert_eq!(
            head,
            format!("event: audit_event\nid: {}", live.event.event_id)
        );
        assert!(data.ends_with("\n\n") && !data.trim_end().contains('\n'));
        let v: Value = serde_json::from_str(data.trim_end()).unwrap();
        assert_eq!(v["event_category"], "gateway");
        assert_eq!(v["event_timestamp"], "2026-12-01T10:00:00Z");
        assert!(v.get("event_hash").is_none());
    }

    #[test]
    fn a_subscriber_of_every_event_shares_the_batch_buffer_and_a_filtered_one_takes_its_own() {
        let batch = Batch::encode(vec![
            event("gateway", "a", json!({})),
            event("workflow", "b", json!({})),
            event("gateway", "c", json!({})),
        ]);
        let every = Selection::of(filter(json!({})));
        let shared = every.frames(&batch).unwrap();
        assert_eq!(
            shared.as_ptr(),
            batch.frames.as_ptr(),
            "not the batch's own buffer"
        );
        assert_eq!(ids(&shared), ["a", "b", "c"]);
        let gateway = Selection::of(filter(json!({"event_category": "gateway"})));
        assert_eq!(ids(&gateway.frames(&batch).unwrap()), ["a", "c"]);
        let one = Selection::of(filter(json!({"correlation_id": "b"})));
        assert_eq!(ids(&one.frames(&batch).unwrap()), ["b"]);
        let none = Selection::of(filter(json!({"correlation_id": "z"})));
        assert!(none.frames(&batch).is_none());
    }

    #[test]
    fn the_ring_holds_about_the_buffer_in_batches() {
        assert_eq!(ring(1024), (256, 4));
        assert_eq!(ring(16), (4, 4));
        assert_eq!(ring(65536), (256, 256));
        assert_eq!(ring(1000), (250, 4));
    }

    #[tokio::test]
    async fn events_committed_within_a_linger_arrive_together() {
        let feed = LiveFeed::start(1024, 2, LiveMetrics::default());
        let mut sub = feed.subscribe(filter(json!({}))).unwrap();
        for cid in ["a", "b", "c"] {
            feed.publish(vec![event("gateway", cid, json!({}))]);
        }
        match sub.next().await {
            Next::Frames {
                frames: Some(frames),
                missed: 0,
            } => assert_eq!(ids(&frames), ["a", "b", "c"]),
            other => panic!("expected the three events, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_slow_subscriber_lags_without_holding_the_publisher_and_the_limit_holds() {
        let feed = LiveFeed::start(16, 2, LiveMetrics::default());
        assert!(!feed.wanted());
        feed.publish(vec![event("gateway", "c", json!({}))]);
        let mut a = feed.subscribe(filter(json!({}))).unwrap();
        let _b = feed.subscribe(filter(json!({}))).unwrap();
        assert!(matches!(
            feed.subscribe(filter(json!({}))),
            Err(SubscribeError::Full(2))
        ));
        // 100 events published while `a` reads none: the publisher never waits, and the ring
        // (16 events, in batches of 4) keeps the last 16.
        for i in 0..100 {
            feed.publish(vec![event("gateway", &format!("c{i}"), json!({}))]);
        }
        tokio::time::sleep(LINGER * 4).await;
        match a.next().await {
            Next::Frames {
                frames: Some(frames),
                missed,
            } => {
                assert_eq!(missed, 84);
                assert_eq!(ids(&frames), ["c84", "c85", "c86", "c87"]);
            }
            other => panic!("expected a lag notice with events, got {other:?}"),
        }
        drop(a);
        let _c = feed.subscribe(filter(json!({}))).unwrap();
        feed.close();
        assert!(matches!(
            feed.subscribe(filter(json!({}))),
            Err(SubscribeError::Closed)
        ));
    }
}
