//! Storage: PostgreSQL and SQLite behind one interface, [`Store`]; SQL and the pool, nothing
//! else.
//!
//! SQL lives here, in small functions per backend (`postgres`, `sqlite`) and, where the two
//! agree, once (`shared`); handlers never see SQL. Both backends:
//! - apply their embedded migrations (`migrations/postgres`, `migrations/sqlite`) on one dedicated
//!   connection before the pool exists, so pooled connections never hold statements prepared
//!   against an older schema;
//! - write a whole batch in one transaction: lock the chain heads of its correlation ids, drop
//!   replays of client-supplied ids (an id already stored with different content is a conflict),
//!   assign sequence numbers and hashes ([`crate::domain::chain::link`]), insert, advance the
//!   heads;
//! - read with explicit column lists (never `SELECT *`) and order newest first with an
//!   `event_id` tiebreak;
//! - classify every database error once, in [`DbError::from_sqlx`].

pub mod capacity;
pub mod error;
pub mod holds;
pub mod partitions;
pub mod pool;
pub mod postgres;
pub mod replica;
pub mod retention;
pub mod shared;
pub mod sqlite;
pub mod store;

pub use error::{DbError, RETRY_AFTER_BUSY, RETRY_AFTER_DOWN};
pub use shared::{EventData, Page, RawJson, WriteOutcome};
pub use store::{ReadStore, Store};
