//! Domain logic with no I/O: the hash chain (linking, replay comparison, verification), the
//! rules an event must meet beyond the contract's (`rules`), the payload schemas `event_data`
//! must match (`event_data_schema`, whose file is read once at start) and content fingerprints
//! (`fingerprint`), the signing keys of exports and checkpoints (`keys`, read once at start),
//! PII redaction of exports (`redact`) and the checkpoint record (`checkpoint`).
//!
//! Nothing here runs SQL or speaks HTTP; it imports only the wire types and the config. The
//! storage backends call it inside their transactions, and the read side hands it the rows of a
//! chain to verify.

pub mod chain;
pub mod checkpoint;
pub mod event_data_schema;
pub mod fingerprint;
pub mod keys;
pub mod redact;
pub mod rules;
