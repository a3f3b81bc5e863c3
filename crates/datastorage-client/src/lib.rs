//! The client of the DataStorage audit service.
//!
//! Two layers:
//! - [`Client`]: one typed async call per route, over the shared wire types of
//!   `datastorage-api`, with one error type ([`Error`]) that says whether a retry may help.
//! - [`AuditStore`]: what a service embeds to write its audit events. `record` never waits on the
//!   network; background tasks batch, send several batches at once, retry with backoff that
//!   honours `Retry-After`, and count everything ([`StoreStats`]).
//!
//! Credentials: a [`BearerToken`] (a string, `DATASTORAGE_TOKEN`, or a file re-read when it
//! rotates) and TLS settings (a CA bundle, a client certificate for mutual TLS) on
//! [`ClientBuilder`]. A 401 or 403 is never retried as sent; the store spools or fails the
//! batch and counts it in [`StoreStats::auth_failures`].
//!
//! ```no_run
//! use std::time::Duration;
//! use datastorage_client::{AuditStore, Client};
//! use datastorage_client::api::{AuditEventRequest, EventCategory, EventOutcome};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let store = AuditStore::new(Client::new("http://datastorage:8080")?);
//! let event = AuditEventRequest::new(
//!     "gateway.signal.received", EventCategory::Gateway, "received",
//!     EventOutcome::Success, "rr-2025-001",
//! );
//! let id = store.record(event).await?; // queued, not sent yet
//! store.close(Duration::from_secs(10)).await?; // drains before shutdown
//! # let _ = id; Ok(()) }
//! ```

pub mod auth;
pub mod backoff;
pub mod client;
pub mod config;
mod deliver;
pub mod error;
mod queue;
pub mod spool;
pub mod store;
pub mod stream;

/// The wire types, re-exported so users need one dependency.
pub use datastorage_api as api;

pub use auth::{BearerToken, DEFAULT_TOKEN_RECHECK, TOKEN_ENV};
pub use backoff::RetryPolicy;
pub use client::{Client, ClientBuilder, HealthStatus};
pub use config::{
    OverflowPolicy, StoreConfig, StoreError, DEFAULT_FLUSH_INTERVAL, DEFAULT_IN_FLIGHT,
    DEFAULT_MAX_BATCH, DEFAULT_QUEUE_CAPACITY,
};
pub use error::Error;
pub use spool::{
    SpoolConfig, Watermark, DEFAULT_SEGMENT_BYTES, DEFAULT_SPOOL_MAX_BYTES, DEFAULT_WATERMARK,
};
pub use store::{AuditStore, CloseTimeout, RecordError, StoreStats};
pub use stream::{EventStream, Streamed};
