//! Background workers: the group commit, partitions created ahead, retention, signed
//! checkpoints, outage replay, and the live feed of committed events.
//!
//! A worker runs on its own tasks, started by `startup`, and stops when its handles are
//! dropped or the service shuts down.

pub mod checkpoints;
pub mod group_commit;
pub mod live;
pub mod partitions;
pub mod replay;
pub mod retention;
