//! The connection pool: built once, every knob from [`DatabaseSettings`], every event counted.
//!
//! It is a [`deadpool`] pool of plain sqlx connections, with the parts Go's `database/sql` has and
//! sqlx's own pool lacks: a cap on idle connections (`maxIdleConns`), and real measurements of
//! waiting (Go `DBStats` parity). The rules:
//!
//! - At most `maxOpenConns` connections exist, in use or idle.
//! - Acquiring first tries without waiting. Only if every connection is in use does it count one
//!   wait and time it until a connection frees up, so `wait_count`/`wait_duration` measure real
//!   waiting, as Go defines them. Waiting ends at `acquireTimeout` with [`AcquireError::Timeout`]
//!   (the API answers 503 with `Retry-After`).
//! - A connection handed back while `maxIdleConns` are already idle is closed.
//! - A reaper (at least every second) closes idle connections past `connMaxIdleTime` or
//!   `connMaxLifetime` and those beyond `maxIdleConns` (left when one came back while a caller
//!   waited) once nobody waits, and opens
//!   connections up to `minIdleConns`; a connection past its lifetime is also refused when it is
//!   next taken out.
//! - Per-session settings (PostgreSQL timeouts) are part of each backend's connect options, sent
//!   when the connection starts, never concatenated into a DSN.

use std::borrow::Cow;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool::managed::{
    self, Metrics as ObjectMetrics, PoolError, RecycleError, RecycleResult, TimeoutType, Timeouts,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use sqlx::{ConnectOptions, Connection};

use super::error::{
    connect_failure, is_pooler_saturation, DbError, RETRY_AFTER_BUSY, RETRY_AFTER_DOWN,
};
use crate::config::{format_duration, DatabaseSettings};

/// Why no connection could be had.
#[derive(Debug, thiserror::Error)]
pub enum AcquireError {
    /// Every connection stayed in use for `acquireTimeout`.
    #[error("no database connection became free within {} (database.acquireTimeout)", format_duration(*.0))]
    Timeout(Duration),
    /// Opening a new connection failed; the message names where and why (its text holds the
    /// driver's cause, so it has no separate source, which would print it twice).
    #[error("{0}")]
    Connect(String),
    /// The database refused a new connection for lack of resources (too many connections,
    /// SQLSTATE class `53`): it answers, it is full. Saturation, not an outage.
    #[error("{0}")]
    Full(String),
    /// Opening a new connection took longer than `connectTimeout`.
    #[error("connecting to the database took longer than {} (database.connectTimeout)", format_duration(*.0))]
    ConnectTimeout(Duration),
    /// The pool is shut down.
    #[error("the connection pool is closed")]
    Closed,
}

impl From<AcquireError> for DbError {
    /// Every connection busy, or a database with no room for another, is saturation; a
    /// connection that cannot be opened otherwise is an outage (see [`DbError::is_outage`]).
    fn from(e: AcquireError) -> Self {
        match &e {
            AcquireError::Timeout(_) => {
                DbError::unavailable(e.to_string(), e.to_string(), RETRY_AFTER_BUSY)
            }
            AcquireError::Closed => {
                DbError::unavailable(e.to_string(), e.to_string(), RETRY_AFTER_DOWN)
            }
            AcquireError::Full(_) => DbError::unavailable(
                "the database has no room for another connection",
                e.to_string(),
                RETRY_AFTER_DOWN,
            ),
            AcquireError::ConnectTimeout(_) => DbError::down(e.to_string(), e.to_string()),
            // The driver's words (and the host) stay in the log.
            AcquireError::Connect(_) => {
                DbError::down("cannot connect to the database", e.to_string())
            }
        }
    }
}

/// Counters the pool increments (Go `DBStats` parity); `crate::metrics` registers them.
#[derive(Debug, Clone)]
pub struct PoolCounters {
    /// Acquisitions that had to wait because every connection was in use.
    pub wait_count: Counter,
    /// Total seconds spent waiting.
    pub wait_duration_seconds: Counter<f64, AtomicU64>,
    /// Connections closed because idle connections exceeded `maxIdleConns`.
    pub max_idle_closed: Counter,
    /// Connections closed for exceeding `connMaxIdleTime`.
    pub max_idle_time_closed: Counter,
    /// Connections closed for exceeding `connMaxLifetime`.
    pub max_lifetime_closed: Counter,
    /// Acquisitions that gave up after `acquireTimeout`.
    pub acquire_timeouts: Counter,
    /// Time to get a connection, waiting and connecting included.
    pub acquire_duration: Histogram,
    /// Acquirers waiting now.
    pub waiting: Arc<AtomicUsize>,
}

impl PoolCounters {
    /// Starts counting one wait for a connection: it shows in `waiting` and `wait_count` now,
    /// and in `wait_duration` when it ends. Waiting in the group-commit queue counts the same
    /// way, since it stands in for waiting on the pool.
    pub fn begin_wait(&self) -> Wait {
        self.wait_count.inc();
        self.waiting.fetch_add(1, Ordering::Relaxed);
        Wait {
            counters: self.clone(),
            started: Instant::now(),
            ended: false,
        }
    }
}

/// One wait for a connection in progress; see [`PoolCounters::begin_wait`].
#[derive(Debug)]
pub struct Wait {
    counters: PoolCounters,
    started: Instant,
    ended: bool,
}

impl Wait {
    /// The wait ended with a connection (or its request went away).
    pub fn end(mut self) {
        self.finish();
    }

    /// The wait gave up after `acquireTimeout`: counted in `acquire_timeouts`.
    pub fn timed_out(mut self) {
        self.counters.acquire_timeouts.inc();
        self.finish();
    }

    fn finish(&mut self) {
        if !self.ended {
            self.ended = true;
            self.counters.waiting.fetch_sub(1, Ordering::Relaxed);
            self.counters
                .wait_duration_seconds
                .inc_by(self.started.elapsed().as_secs_f64());
        }
    }
}

impl Drop for Wait {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Pool limits, taken from [`DatabaseSettings`].
#[derive(Debug, Clone, Copy)]
pub struct PoolLimits {
    /// `maxOpenConns`.
    pub max_open: u32,
    /// `maxIdleConns`.
    pub max_idle: u32,
    /// `minIdleConns`.
    pub min_idle: u32,
    /// `connMaxLifetime`, `None` for unlimited.
    pub max_lifetime: Option<Duration>,
    /// `connMaxIdleTime`, `None` for unlimited.
    pub max_idle_time: Option<Duration>,
    /// `acquireTimeout`.
    pub acquire_timeout: Duration,
    /// `connectTimeout`.
    pub connect_timeout: Duration,
}

impl PoolLimits {
    /// Reads the limits from the settings; `0s` durations mean unlimited.
    pub fn from_settings(db: &DatabaseSettings) -> Self {
        let nonzero = |d: Duration| (!d.is_zero()).then_some(d);
        Self {
            max_open: db.max_open_conns,
            max_idle: db.max_idle_conns,
            min_idle: db.min_idle_conns,
            max_lifetime: nonzero(db.conn_max_lifetime),
            max_idle_time: nonzero(db.conn_max_idle_time),
            acquire_timeout: db.acquire_timeout,
            connect_timeout: db.connect_timeout,
        }
    }
}

/// A point-in-time view of the pool, for `/metrics` and `check`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolSnapshot {
    /// `maxOpenConns`.
    pub max_open: u32,
    /// `maxIdleConns`.
    pub max_idle: u32,
    /// Open connections.
    pub open: usize,
    /// Connections in use.
    pub in_use: usize,
    /// Idle connections.
    pub idle: usize,
    /// Acquirers waiting now.
    pub waiting: usize,
}

/// Where a pool connects, for its error messages.
#[derive(Debug, Clone)]
pub struct Target {
    /// `host:port/name as user`, never the password.
    pub description: String,
    /// Whether a password is set (a refused login without one says so).
    pub has_password: bool,
    /// Statements every transaction runs right after `BEGIN` when the connection keeps no
    /// session state (behind a transaction-mode pooler: the session settings as `SET LOCAL`);
    /// then every statement also runs inside a transaction (see [`PooledConn::session`]).
    pub per_transaction: Option<String>,
}

/// First wait after a failed connection attempt; it doubles per failure.
const FIRST_CONNECT_BACKOFF: Duration = Duration::from_millis(100);
/// Longest wait between connection attempts.
const MAX_CONNECT_BACKOFF: Duration = Duration::from_secs(5);

/// Failed connection attempts in a row, shared by every acquirer of the pool: while the last
/// attempt failed recently, a new one is not made (the acquirer gets the last failure at once),
/// so a database that refuses connections (down, or full of other clients) is not hammered.
#[derive(Debug, Default)]
struct Backoff {
    failures: u32,
    retry_at: Option<Instant>,
    last_error: String,
    /// The last attempt was refused for lack of room (SQLSTATE class `53`).
    last_full: bool,
}

/// Whether a failed connection attempt (or the backoff's stand-in for one) says the database
/// is full rather than unreachable.
fn refused_as_full(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => {
            db.code().is_some_and(|c| c.starts_with("53")) || is_pooler_saturation(db.as_ref())
        }
        sqlx::Error::Io(io) => io.kind() == std::io::ErrorKind::ResourceBusy,
        _ => false,
    }
}

impl Backoff {
    fn wait(&self) -> Duration {
        let doublings = self.failures.saturating_sub(1).min(16);
        (FIRST_CONNECT_BACKOFF * 2u32.pow(doublings)).min(MAX_CONNECT_BACKOFF)
    }
}

/// Opens connections and decides whether an idle one may be reused.
pub struct ConnManager<C: Connection + 'static> {
    options: <C as Connection>::Options,
    limits: PoolLimits,
    counters: PoolCounters,
    backoff: std::sync::Mutex<Backoff>,
}

impl<C: Connection + 'static> managed::Manager for ConnManager<C> {
    type Type = C;
    type Error = sqlx::Error;

    async fn create(&self) -> Result<C, sqlx::Error> {
        let lock = || self.backoff.lock().unwrap_or_else(|p| p.into_inner());
        {
            let backoff = lock();
            if let Some(at) = backoff.retry_at.filter(|at| Instant::now() < *at) {
                // The stand-in keeps the kind of the last failure: full, or unreachable.
                let kind = if backoff.last_full {
                    std::io::ErrorKind::ResourceBusy
                } else {
                    std::io::ErrorKind::Other
                };
                return Err(sqlx::Error::Io(std::io::Error::new(
                    kind,
                    format!(
                    "not connecting again for {:?} after {} failed attempts in a row; the last: {}",
                    at.saturating_duration_since(Instant::now()),
                    backoff.failures,
                    backoff.last_error
                ),
                )));
            }
        }
        match self.options.connect().await {
            Ok(conn) => {
                *lock() = Backoff::default();
                Ok(conn)
            }
            Err(e) => {
                let mut backoff = lock();
                backoff.failures += 1;
                backoff.retry_at = Some(Instant::now() + backoff.wait());
                backoff.last_error = e.to_string();
                backoff.last_full = refused_as_full(&e);
                Err(e)
            }
        }
    }

    async fn recycle(&self, conn: &mut C, m: &ObjectMetrics) -> RecycleResult<sqlx::Error> {
        // The reaper closes expired idle connections in the background; this catches the ones
        // that expired since its last pass, before they are handed out.
        match expiry(&self.limits, m) {
            Some(Expiry::Lifetime) => {
                self.counters.max_lifetime_closed.inc();
                Err(RecycleError::message("connMaxLifetime reached"))
            }
            Some(Expiry::IdleTime) => {
                self.counters.max_idle_time_closed.inc();
                Err(RecycleError::message("connMaxIdleTime reached"))
            }
            // A connection idle for a while may have been cut (database restart, firewall idle
            // timeout): check it before handing it out, so the request gets a live one instead
            // of a 503. Recently used connections skip the round trip.
            None if m.last_used() >= PING_IDLE_AFTER => {
                conn.ping().await.map_err(RecycleError::Backend)
            }
            None => Ok(()),
        }
    }
}

/// Idle time after which a connection is pinged before reuse.
pub const PING_IDLE_AFTER: Duration = Duration::from_secs(5);

enum Expiry {
    Lifetime,
    IdleTime,
}

fn expiry(limits: &PoolLimits, m: &ObjectMetrics) -> Option<Expiry> {
    if limits.max_lifetime.is_some_and(|max| m.age() >= max) {
        Some(Expiry::Lifetime)
    } else if limits.max_idle_time.is_some_and(|max| m.last_used() >= max) {
        Some(Expiry::IdleTime)
    } else {
        None
    }
}

struct Shared<C: Connection + 'static> {
    inner: managed::Pool<ConnManager<C>>,
    limits: PoolLimits,
    counters: PoolCounters,
    in_use: AtomicUsize,
    /// Where it connects, for messages (never the password).
    target: String,
    has_password: bool,
    per_transaction: Option<String>,
}

/// A pool of `C` connections. Cheap to clone.
pub struct Pool<C: Connection + 'static> {
    shared: Arc<Shared<C>>,
}

impl<C: Connection + 'static> Clone for Pool<C> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<C: Connection + 'static> std::fmt::Debug for Pool<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("snapshot", &self.snapshot())
            .finish()
    }
}

impl<C: Connection + 'static> Pool<C> {
    /// Builds the pool. No connection is opened until one is needed (or the reaper tops up
    /// `minIdleConns`); the reaper task runs until the pool is closed.
    pub fn new(
        options: <C as Connection>::Options,
        limits: PoolLimits,
        counters: PoolCounters,
        target: Target,
    ) -> Self {
        let manager = ConnManager {
            options,
            limits,
            counters: counters.clone(),
            backoff: std::sync::Mutex::new(Backoff::default()),
        };
        let inner = managed::Pool::builder(manager)
            .max_size(limits.max_open as usize)
            .runtime(deadpool::Runtime::Tokio1)
            // Waiting is bounded per call (see `acquire`); creating is bounded here.
            .create_timeout(Some(limits.connect_timeout))
            .recycle_timeout(Some(limits.connect_timeout))
            .build()
            .expect("a runtime is configured, so building cannot fail");
        let pool = Self {
            shared: Arc::new(Shared {
                inner,
                limits,
                counters,
                in_use: AtomicUsize::new(0),
                target: target.description,
                has_password: target.has_password,
                per_transaction: target.per_transaction,
            }),
        };
        tokio::spawn(reaper(Arc::downgrade(&pool.shared)));
        pool
    }

    /// Takes a connection, waiting at most `acquireTimeout` for one to free up.
    pub async fn acquire(&self) -> Result<PooledConn<C>, AcquireError> {
        let start = Instant::now();
        let object = match self.get_now().await? {
            Some(object) => object,
            None => self.wait_for_connection().await?,
        };
        Ok(self.hand_out(object, start))
    }

    /// Takes a connection if one is free or can be opened now; `None` when all are in use.
    pub async fn try_acquire(&self) -> Result<Option<PooledConn<C>>, AcquireError> {
        let start = Instant::now();
        Ok(self
            .get_now()
            .await?
            .map(|object| self.hand_out(object, start)))
    }

    async fn get_now(&self) -> Result<Option<managed::Object<ConnManager<C>>>, AcquireError> {
        let s = &*self.shared;
        let no_wait = Timeouts {
            wait: Some(Duration::ZERO),
            ..s.inner.timeouts()
        };
        match s.inner.timeout_get(&no_wait).await {
            Ok(object) => Ok(Some(object)),
            Err(PoolError::Timeout(TimeoutType::Wait)) => Ok(None),
            Err(e) => Err(self.map_error(e)),
        }
    }

    fn hand_out(&self, object: managed::Object<ConnManager<C>>, start: Instant) -> PooledConn<C> {
        let s = &*self.shared;
        s.counters
            .acquire_duration
            .observe(start.elapsed().as_secs_f64());
        s.in_use.fetch_add(1, Ordering::Relaxed);
        PooledConn {
            object: Some(object),
            pool: self.clone(),
        }
    }

    async fn wait_for_connection(&self) -> Result<managed::Object<ConnManager<C>>, AcquireError> {
        let s = &*self.shared;
        let wait = s.counters.begin_wait();
        let timeouts = Timeouts {
            wait: Some(s.limits.acquire_timeout),
            ..s.inner.timeouts()
        };
        match s.inner.timeout_get(&timeouts).await {
            Ok(object) => {
                wait.end();
                Ok(object)
            }
            Err(PoolError::Timeout(TimeoutType::Wait)) => {
                wait.timed_out();
                Err(AcquireError::Timeout(s.limits.acquire_timeout))
            }
            Err(e) => {
                wait.end();
                Err(self.map_error(e))
            }
        }
    }

    fn map_error(&self, e: PoolError<sqlx::Error>) -> AcquireError {
        let limits = &self.shared.limits;
        match e {
            PoolError::Timeout(TimeoutType::Wait) => AcquireError::Timeout(limits.acquire_timeout),
            PoolError::Timeout(_) => AcquireError::ConnectTimeout(limits.connect_timeout),
            PoolError::Backend(e) => {
                let message = connect_failure(&self.shared.target, self.shared.has_password, &e);
                if refused_as_full(&e) {
                    AcquireError::Full(message)
                } else {
                    AcquireError::Connect(message)
                }
            }
            PoolError::Closed | PoolError::NoRuntimeSpecified | PoolError::PostCreateHook(_) => {
                AcquireError::Closed
            }
        }
    }

    /// Counts of the moment.
    pub fn snapshot(&self) -> PoolSnapshot {
        let s = &*self.shared;
        let status = s.inner.status();
        let in_use = s.in_use.load(Ordering::Relaxed).min(status.size);
        PoolSnapshot {
            max_open: s.limits.max_open,
            max_idle: s.limits.max_idle,
            open: status.size,
            in_use,
            idle: status.size - in_use,
            waiting: s.counters.waiting.load(Ordering::Relaxed),
        }
    }

    /// Closes idle connections and refuses new acquisitions; connections in use close when
    /// handed back.
    pub async fn close(&self) {
        self.shared.inner.close();
        let removed = self.shared.inner.retain(|_, _| false).removed;
        for conn in removed {
            let _ = conn.close().await;
        }
    }

    /// Limits in force.
    pub fn limits(&self) -> PoolLimits {
        self.shared.limits
    }

    /// The counters this pool increments.
    pub fn counters(&self) -> &PoolCounters {
        &self.shared.counters
    }

    fn release(&self, object: managed::Object<ConnManager<C>>) {
        let s = &*self.shared;
        s.in_use.fetch_sub(1, Ordering::Relaxed);
        let status = s.inner.status();
        let idle_now = status
            .size
            .saturating_sub(s.in_use.load(Ordering::Relaxed) + 1);
        // Hand the connection straight back when someone waits for it; otherwise keep at most
        // maxIdleConns idle, as Go's database/sql does.
        if s.counters.waiting.load(Ordering::Relaxed) == 0 && idle_now >= s.limits.max_idle as usize
        {
            s.counters.max_idle_closed.inc();
            let conn = managed::Object::take(object);
            // Close politely when a runtime is at hand (not while it shuts down); dropping the
            // connection closes its socket either way.
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    let _ = conn.close().await;
                });
            }
        }
    }
}

/// A connection taken from the pool; handed back on drop.
pub struct PooledConn<C: Connection + 'static> {
    object: Option<managed::Object<ConnManager<C>>>,
    pool: Pool<C>,
}

impl<C: Connection + 'static> PooledConn<C> {
    /// Closes this connection instead of handing it back (after an error left it unusable).
    pub fn discard(mut self) {
        if let Some(object) = self.object.take() {
            self.pool.shared.in_use.fetch_sub(1, Ordering::Relaxed);
            drop(managed::Object::take(object));
        }
    }
}

impl<C, DB> PooledConn<C>
where
    C: Connection<Database = DB> + 'static,
    DB: sqlx::Database<Connection = C>,
{
    /// Begins a transaction with `begin` (a `BEGIN` statement of the backend), followed, on a
    /// connection that keeps no session state, by the session settings.
    pub async fn begin(
        &mut self,
        begin: &'static str,
    ) -> Result<sqlx::Transaction<'_, DB>, sqlx::Error> {
        let statement = begin_statement(begin, self.pool.shared.per_transaction.as_deref());
        let conn: &mut C = self;
        conn.begin_with(statement).await
    }

    /// Where statements that need no transaction of their own run: the connection itself, or,
    /// behind a transaction-mode pooler, a transaction (a statement outside one could reach
    /// another server connection between its prepare and its execution). End it with
    /// [`Session::end`]; the crate's `in_session!` does both.
    pub async fn session(&mut self) -> Result<Session<'_, C>, sqlx::Error> {
        if self.pool.shared.per_transaction.is_some() {
            Ok(Session::Transaction(self.begin("BEGIN").await?))
        } else {
            Ok(Session::Direct(self))
        }
    }
}

/// Evaluates `$body`, a `Result<_, sqlx::Error>`, with `$c` bound to the connection of a
/// [`PooledConn::session`] of `$conn`, then ends the session; evaluates to the body's result
/// (an error, or `?` in `$body`, ends it early, and a transaction not ended rolls back).
macro_rules! in_session {
    ($conn:expr, |$c:ident| $body:expr) => {
        async {
            let mut session = $conn.session().await?;
            let $c = &mut *session;
            let out = $body?;
            session.end().await?;
            Ok::<_, ::sqlx::Error>(out)
        }
        .await
    };
}
pub(crate) use in_session;

/// Statements that need no transaction of their own (see [`PooledConn::session`]).
pub enum Session<'c, C: Connection + 'static> {
    /// On the connection.
    Direct(&'c mut C),
    /// In a transaction, behind a pooler.
    Transaction(sqlx::Transaction<'c, C::Database>),
}

impl<C, DB> Session<'_, C>
where
    C: Connection<Database = DB> + 'static,
    DB: sqlx::Database<Connection = C>,
{
    /// Commits the transaction, if there is one.
    pub async fn end(self) -> Result<(), sqlx::Error> {
        match self {
            Session::Direct(_) => Ok(()),
            Session::Transaction(tx) => tx.commit().await,
        }
    }
}

impl<C, DB> Deref for Session<'_, C>
where
    C: Connection<Database = DB> + 'static,
    DB: sqlx::Database<Connection = C>,
{
    type Target = C;

    fn deref(&self) -> &C {
        match self {
            Session::Direct(c) => c,
            Session::Transaction(tx) => tx,
        }
    }
}

impl<C, DB> DerefMut for Session<'_, C>
where
    C: Connection<Database = DB> + 'static,
    DB: sqlx::Database<Connection = C>,
{
    fn deref_mut(&mut self) -> &mut C {
        match self {
            Session::Direct(c) => c,
            Session::Transaction(tx) => tx,
        }
    }
}

/// `begin` followed by `settings`, the statements of [`Target::per_transaction`].
pub fn begin_statement(begin: &'static str, settings: Option<&str>) -> Cow<'static, str> {
    match settings {
        Some(settings) => Cow::Owned(format!("{begin}; {settings}")),
        None => Cow::Borrowed(begin),
    }
}

impl<C: Connection + 'static> Deref for PooledConn<C> {
    type Target = C;

    fn deref(&self) -> &C {
        self.object.as_ref().expect("present until drop")
    }
}

impl<C: Connection + 'static> DerefMut for PooledConn<C> {
    fn deref_mut(&mut self) -> &mut C {
        self.object.as_mut().expect("present until drop")
    }
}

impl<C: Connection + 'static> Drop for PooledConn<C> {
    fn drop(&mut self) {
        if let Some(object) = self.object.take() {
            self.pool.release(object);
        }
    }
}

/// Closes idle connections past their idle time or lifetime and opens up to `minIdleConns`.
async fn reaper<C: Connection + 'static>(shared: std::sync::Weak<Shared<C>>) {
    let period = {
        let Some(s) = shared.upgrade() else { return };
        let shortest = [s.limits.max_idle_time, s.limits.max_lifetime]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(Duration::from_secs(60));
        // At least every second, so connections left idle beyond maxIdleConns go soon.
        (shortest / 4).clamp(Duration::from_millis(100), Duration::from_secs(1))
    };
    loop {
        tokio::time::sleep(period).await;
        let Some(s) = shared.upgrade() else { return };
        if s.inner.is_closed() {
            return;
        }
        let mut expired = Vec::new();
        let removed = s
            .inner
            .retain(|_, m| {
                let e = expiry(&s.limits, &m);
                let keep = e.is_none();
                if let Some(e) = e {
                    expired.push(e);
                }
                keep
            })
            .removed;
        for e in expired {
            match e {
                Expiry::Lifetime => s.counters.max_lifetime_closed.inc(),
                Expiry::IdleTime => s.counters.max_idle_time_closed.inc(),
            };
        }
        for conn in removed.into_iter().chain(trim_excess_idle(&s)) {
            let _ = conn.close().await;
        }
        top_up_min_idle(&s).await;
    }
}

/// Takes out the idle connections beyond `maxIdleConns` while nobody waits. `release` closes
/// most of them as they come back, but one handed back while a caller waited stays idle, and the
/// waiter may then have taken another: without this, it would stay open for good.
fn trim_excess_idle<C: Connection + 'static>(s: &Shared<C>) -> Vec<C> {
    if s.counters.waiting.load(Ordering::Relaxed) != 0 {
        return Vec::new();
    }
    let idle = s
        .inner
        .status()
        .size
        .saturating_sub(s.in_use.load(Ordering::Relaxed));
    let mut excess = idle.saturating_sub(s.limits.max_idle as usize);
    if excess == 0 {
        return Vec::new();
    }
    let removed = s
        .inner
        .retain(|_, _| {
            let keep = excess == 0;
            excess = excess.saturating_sub(1);
            keep
        })
        .removed;
    s.counters.max_idle_closed.inc_by(removed.len() as u64);
    removed
}

async fn top_up_min_idle<C: Connection + 'static>(s: &Shared<C>) {
    let status = s.inner.status();
    let idle = status.size.saturating_sub(s.in_use.load(Ordering::Relaxed));
    let missing = (s.limits.min_idle as usize).saturating_sub(idle);
    let room = (s.limits.max_open as usize).saturating_sub(status.size);
    let mut opened = Vec::new();
    for _ in 0..missing.min(room) {
        let no_wait = Timeouts {
            wait: Some(Duration::ZERO),
            ..s.inner.timeouts()
        };
        match s.inner.timeout_get(&no_wait).await {
            Ok(obj) => opened.push(obj),
            Err(e) => {
                tracing::debug!(error = ?e, "could not open a connection for minIdleConns");
                break;
            }
        }
    }
    // Dropping hands them back to the idle queue.
    drop(opened);
}
