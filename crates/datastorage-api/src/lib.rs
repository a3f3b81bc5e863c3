//! Wire types and validation of the DataStorage audit API.
//!
//! This crate is shared by the server, the client and the CLI. It does no I/O: it holds the JSON
//! shapes of the upstream contract (`shared/contract/upstream-audit-api.yaml`), the rules every
//! field must follow ([`validate`]), the query parameters of `GET /api/v1/audit/events`
//! ([`query`]), and the hash-chain canonical form ([`chain`]).
//!
//! Field names are the contract's `snake_case` names; additions (client-supplied `event_id`,
//! cursor pagination, extra filters) are additive and never change an existing field.

pub mod chain;
pub mod checkpoint;
pub mod export;
pub mod json;
pub mod problem;
pub mod query;
pub mod signing;
pub mod stats;
pub mod stream;
pub mod types;
pub mod validate;

pub use problem::{Problem, ProblemType};
pub use query::{EventFilter, EventQueryParams};
pub use types::*;
pub use validate::{validate_event, FieldErrors, ValidatedEvent};
