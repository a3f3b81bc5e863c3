//! DataStorage: the one service of a platform that holds database connections.
//!
//! Stateless services send their audit events here over HTTP; this crate stores them in
//! PostgreSQL (or embedded SQLite), chains them per correlation id for tamper evidence, and runs
//! the one connection pool of the platform, bounded and observed.
//!
//! Where each concern lives (see `ARCHITECTURE.md` at the repository root):
//! - [`config`]: typed settings, one file per section;
//! - [`http`]: routers, middleware, one file per resource;
//! - [`auth`]: access control: authentication modes, scopes, the route table, rate limits,
//!   access records; [`reload`]: files re-read when they change;
//! - [`domain`]: the hash chain, pure logic;
//! - [`writer`]: the one door every write goes through;
//! - [`workers`]: background work (the group commit);
//! - [`db`]: SQL per backend, the pool, the helpers both backends share;
//! - [`metrics`]: every metric, declared once; [`telemetry`]: logging;
//! - [`startup`]: the seam for the binary and the tests, [`startup::run`].

pub mod auth;
pub mod buffer;
pub mod config;
pub mod db;
pub mod domain;
pub mod http;
pub mod metrics;
pub mod reload;
pub mod startup;
pub mod telemetry;
pub mod workers;
pub mod writer;
