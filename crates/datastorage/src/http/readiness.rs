//! [`Readiness`]: whether the service accepts traffic, and the one owner of the
//! `datastorage_ready` gauge.

use std::sync::atomic::{AtomicBool, Ordering};

use prometheus_client::metrics::gauge::Gauge;

/// Whether the service accepts traffic: its listeners are open, shutdown has not begun, and the
/// last readiness probe reached the database. The `datastorage_ready` gauge follows it, and is
/// set nowhere else.
#[derive(Debug)]
pub struct Readiness {
    open: AtomicBool,
    stopping: AtomicBool,
    database_ok: AtomicBool,
    gauge: Gauge,
}

impl Readiness {
    /// Not ready yet: the listeners are not open.
    pub fn new(gauge: Gauge) -> Self {
        let r = Self {
            open: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            database_ok: AtomicBool::new(true),
            gauge,
        };
        r.publish();
        r
    }

    /// The listeners are open.
    pub fn opened(&self) {
        self.open.store(true, Ordering::Relaxed);
        self.publish();
    }

    /// Shutdown began: from now on readiness answers 503.
    pub fn stopping(&self) {
        self.stopping.store(true, Ordering::Relaxed);
        self.publish();
    }

    /// Whether shutdown has begun.
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }

    /// What the last probe found about the database.
    pub fn database(&self, ok: bool) {
        self.database_ok.store(ok, Ordering::Relaxed);
        self.publish();
    }

    fn publish(&self) {
        let ready = self.open.load(Ordering::Relaxed)
            && !self.stopping.load(Ordering::Relaxed)
            && self.database_ok.load(Ordering::Relaxed);
        self.gauge.set(i64::from(ready));
    }
}
