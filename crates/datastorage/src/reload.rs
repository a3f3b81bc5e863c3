//! Files re-read when they change: the tokens file, and the API listener's certificate, key and
//! client CA.
//!
//! The files are polled, not watched with inotify: Kubernetes updates a mounted Secret or
//! ConfigMap by swapping a symlink to a new folder, which an inotify watch on the file itself
//! misses, and a poll of a few small files every [`POLL_INTERVAL`] costs nothing. A change is
//! a change of content, so touching a file does not reload it.

use std::path::PathBuf;
use std::time::Duration;

use crate::metrics::{AuthCounters, ReloadLabels};

/// How often watched files are read.
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// A running watch; it stops when dropped.
#[derive(Debug)]
pub struct Watch(tokio::task::JoinHandle<()>);

impl Drop for Watch {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Reads `paths` every [`POLL_INTERVAL`] and, when the content of any of them differs from the
/// last read, calls `apply` with the contents of all. A failed read or a failed `apply` keeps
/// what is in force; both are logged and counted under `datastorage_auth_reloads_total{file =
/// name}`. `initial` is the content already applied at start.
pub fn watch(
    name: &'static str,
    paths: Vec<PathBuf>,
    initial: Vec<Vec<u8>>,
    counters: AuthCounters,
    apply: impl Fn(&[Vec<u8>]) -> anyhow::Result<()> + Send + 'static,
) -> Watch {
    Watch(tokio::spawn(async move {
        let mut last = initial;
        let mut ticks = tokio::time::interval(POLL_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let count = |result| {
            counters
                .reloads
                .get_or_create(&ReloadLabels { file: name, result })
                .inc();
        };
        let mut failing = false;
        loop {
            ticks.tick().await;
            let read: std::io::Result<Vec<Vec<u8>>> = paths.iter().map(std::fs::read).collect();
            let contents = match read {
                Ok(contents) => contents,
                Err(e) => {
                    // Reported once per failure spell, not every poll.
                    if !failing {
                        tracing::error!(file = name, error = %e, "cannot re-read a watched file; what was loaded stays in force");
                        count("error");
                        failing = true;
                    }
                    continue;
                }
            };
            if contents == last {
                continue;
            }
            match apply(&contents) {
                Ok(()) => {
                    tracing::info!(file = name, "reloaded");
                    count("ok");
                    failing = false;
                }
                Err(e) => {
                    tracing::error!(
                        file = name,
                        error = format!("{e:#}"),
                        "a changed file is invalid; what was loaded stays in force"
                    );
                    count("error");
                    failing = true;
                }
            }
            last = contents;
        }
    }))
}
