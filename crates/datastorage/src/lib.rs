//! DataStorage: the one service of a platform that holds database connections.
//!
//! Stateless services send their audit events here over HTTP; this crate stores them in
//! PostgreSQL (or embedded SQLite), chains them per correlation id for tamper evidence, and runs
//! the one connection pool of the platform, bounded and observed.
//!
//! The seam for `main` and the tests is [`startup::run`].

pub mod config;
pub mod db;
pub mod http;
pub mod metrics;
pub mod startup;
pub mod telemetry;
