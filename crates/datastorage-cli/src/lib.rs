//! The commands of the `datastorage` binary that are more than a call into a library: the
//! `check` report, the `events` client commands, `token create`, and the standard output they
//! all write to.
//! `main.rs` parses the command line and dispatches; the integration tests call these modules in
//! process.

pub mod check;
pub mod events;
pub mod export;
pub mod keys;
pub mod output;
pub mod token;
