//! The live feed: committed events fanned out to the subscribers of
//! `GET /api/v1/audit/events/stream` (the explorer's live tail and `events tail`).
//!
//! The write path hands committed events to [`LiveFeed::publish`]. While nobody subscribes
//! that costs one atomic load; otherwise it costs a clone of the events and a `try_send` into
//! a bounded queue, and a full queue drops them for the feed (counted), so writes never wait
//! for the feed. One task encodes each event once, as the whole server-sent-events frame, and
//! broadcasts it; subscribers share that frame (a reference count, no copy). Each subscriber
//! reads from a ring of `explorer.streamBufferEvents`: one that falls behind further loses the
//! oldest and is told how many ([`Received::Lagged`]). At most
//! `explorer.streamMaxSubscribers` subscribe at once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::body::Bytes;
use datastorage_api::query::EventFilter;
use datastorage_api::stream::StreamedEvent;
use datastorage_api::ValidatedEvent;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use serde_json::Value;
use tokio::sync::{broadcast, mpsc};

/// Committed-event messages the encoder may have queued before the feed drops new ones.
const QUEUE: usize = 1024;

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
    /// API's field names) lines and the blank line that ends it.
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

/// What a subscriber receives next.
#[derive(Debug)]
pub enum Received {
    /// An event.
    Event(Arc<LiveEvent>),
    /// The subscriber fell behind and missed this many events.
    Lagged(u64),
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
    /// The one sender; `None` once closed, which ends every subscription.
    out: Arc<Outlet>,
    subscribers: AtomicUsize,
    max_subscribers: usize,
    metrics: LiveMetrics,
}

type Outlet = std::sync::RwLock<Option<broadcast::Sender<Arc<LiveEvent>>>>;

/// A subscription; dropping it unsubscribes.
#[derive(Debug)]
pub struct Subscription {
    rx: broadcast::Receiver<Arc<LiveEvent>>,
    inner: Arc<Inner>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.inner.subscribers.fetch_sub(1, Ordering::Relaxed);
        self.inner.metrics.subscribers.dec();
    }
}

impl Subscription {
    /// The next event, a lag notice, or the end.
    pub async fn recv(&mut self) -> Received {
        let next = self.rx.recv().await;
        self.received(next)
    }

    /// What is there already, without waiting: `None` when nothing is.
    pub fn try_recv(&mut self) -> Option<Received> {
        match self.rx.try_recv() {
            Ok(event) => Some(Received::Event(event)),
            Err(broadcast::error::TryRecvError::Lagged(n)) => {
                self.inner.metrics.lagged.inc_by(n);
                Some(Received::Lagged(n))
            }
            Err(broadcast::error::TryRecvError::Closed) => Some(Received::Closed),
            Err(broadcast::error::TryRecvError::Empty) => None,
        }
    }

    fn received(&self, next: Result<Arc<LiveEvent>, broadcast::error::RecvError>) -> Received {
        match next {
            Ok(event) => Received::Event(event),
            Err(broadcast::error::RecvError::Lagged(n)) => {
                self.inner.metrics.lagged.inc_by(n);
                Received::Lagged(n)
            }
            Err(broadcast::error::RecvError::Closed) => Received::Closed,
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

impl LiveFeed {
    /// Starts the encoder task: subscribers lag past `buffer` events, at most
    /// `max_subscribers` at once.
    pub fn start(buffer: usize, max_subscribers: usize, metrics: LiveMetrics) -> Self {
        let (queue, mut rx) = mpsc::channel::<Vec<ValidatedEvent>>(QUEUE);
        let out: Arc<Outlet> = Arc::new(std::sync::RwLock::new(Some(broadcast::channel(buffer).0)));
        let inner = Arc::new(Inner {
            queue,
            out: Arc::clone(&out),
            subscribers: AtomicUsize::new(0),
            max_subscribers,
            metrics,
        });
        tokio::spawn(async move {
            while let Some(events) = rx.recv().await {
                let encoded: Vec<_> = events
                    .into_iter()
                    .map(|event| {
                        Arc::new(LiveEvent {
                            frame: frame(&event),
                            event,
                        })
                    })
                    .collect();
                let out = out.read().unwrap_or_else(|e| e.into_inner());
                let Some(out) = out.as_ref() else { continue };
                for event in encoded {
                    // No receiver is not an error: the last subscriber just left.
                    let _ = out.send(event);
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

    /// Subscribes, or refuses at the limit or after [`LiveFeed::close`].
    pub fn subscribe(&self) -> Result<Subscription, SubscribeError> {
        let out = self.inner.out.read().unwrap_or_else(|e| e.into_inner());
        let Some(out) = out.as_ref() else {
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
            rx: out.subscribe(),
            inner: Arc::clone(&self.inner),
        })
    }

    /// Ends every subscription (at shutdown, so open streams do not hold the drain).
    pub fn close(&self) {
        self.inner
            .out
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .take();
    }
}

/// The `audit_event` frame of `e`. JSON text holds no line break, so one `data` line carries it.
fn frame(e: &ValidatedEvent) -> Bytes {
    let json = serde_json::to_string(&StreamedEvent::from(e)).unwrap_or_else(|_| "{}".to_owned());
    let mut out = Vec::with_capacity(json.len() + 80);
    out.extend_from_slice(b"event: audit_event\nid: ");
    out.extend_from_slice(e.event_id.to_string().as_bytes());
    out.extend_from_slice(b"\ndata: ");
    out.extend_from_slice(json.as_bytes());
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
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

    #[test]
    fn a_live_event_meets_the_filters_as_the_query_compares_them() {
        let e = event("gateway", "c-1", json!({"n": 5, "s": "x", "b": true}));
        let live = LiveEvent {
            frame: frame(&e),
            event: e,
        };
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

    #[tokio::test]
    async fn a_slow_subscriber_lags_without_holding_the_publisher_and_the_limit_holds() {
        let feed = LiveFeed::start(16, 2, LiveMetrics::default());
        assert!(!feed.wanted());
        feed.publish(vec![event("gateway", "c", json!({}))]);
        let mut a = feed.subscribe().unwrap();
        let _b = feed.subscribe().unwrap();
        assert!(matches!(feed.subscribe(), Err(SubscribeError::Full(2))));
        // 100 events published while `a` reads none: the publisher never waits.
        for i in 0..100 {
            feed.publish(vec![event("gateway", &format!("c{i}"), json!({}))]);
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        match a.recv().await {
            Received::Lagged(n) => assert_eq!(n, 84),
            other => panic!("expected a lag notice, got {other:?}"),
        }
        match a.recv().await {
            Received::Event(e) => assert_eq!(e.event.correlation_id, "c84"),
            other => panic!("expected an event, got {other:?}"),
        }
        drop(a);
        let _c = feed.subscribe().unwrap();
        feed.close();
        assert!(matches!(feed.subscribe(), Err(SubscribeError::Closed)));
    }
}
