//! Background workers: the group commit today; partition maintenance, retention, checkpoints
//! and outage replay join it.
//!
//! A worker runs on its own tasks, started by `startup`, and stops when its handles are
//! dropped or the service shuts down.

pub mod group_commit;
