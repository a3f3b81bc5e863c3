//! `buffer:`: the outage buffer, where writes go while the database cannot be reached (see
//! [`crate::buffer`]).

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::values::duration;

/// Default `buffer.dir`, relative to the working directory.
pub const DEFAULT_BUFFER_DIR: &str = "./data/buffer";
/// Default `buffer.maxBytes`: 1 GiB.
pub const DEFAULT_BUFFER_MAX_BYTES: u64 = 1 << 30;
/// Default `buffer.segmentBytes`: 8 MiB.
pub const DEFAULT_BUFFER_SEGMENT_BYTES: u64 = 8 << 20;
/// Default `buffer.replayBatchSize`: events per replayed transaction.
pub const DEFAULT_REPLAY_BATCH_SIZE: usize = 500;
/// Default `buffer.replayRate`: events per second the replay writes at most.
pub const DEFAULT_REPLAY_RATE: u32 = 5_000;
/// Default `buffer.probeInterval`: how often the database is probed while it is down.
pub const DEFAULT_PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// Default `buffer.redisStream`.
pub const DEFAULT_REDIS_STREAM: &str = "datastorage:buffer";
/// Default `buffer.redisGroup`.
pub const DEFAULT_REDIS_GROUP: &str = "datastorage";
/// Default `buffer.claimIdle`: pending entries of a consumer idle this long are claimed.
pub const DEFAULT_CLAIM_IDLE: Duration = Duration::from_secs(60);
/// Default entries of the Redis stream when `redis.dlqMaxLen` is not set.
pub const DEFAULT_REDIS_MAX_ENTRIES: u64 = 100_000;

/// Where buffered writes are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BufferBackend {
    /// Append-only segment files in `buffer.dir`, fsynced before the `202`.
    Disk,
    /// A Redis stream with a consumer group, on the server of the `redis:` section.
    Redis,
}

/// `buffer:`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct BufferSettings {
    /// Whether writes are buffered (answered `202`) while the database cannot be reached.
    /// When false they are refused with `503`, as when the buffer is full.
    pub enabled: bool,
    /// `disk` or `redis`.
    pub backend: BufferBackend,
    /// Directory of the segment files (`disk`), and of `quarantine.ndjson`. One replica per
    /// directory.
    pub dir: PathBuf,
    /// Largest size of the segment files (`disk`); a write that would pass it is refused
    /// with `503`.
    pub max_bytes: u64,
    /// Size at which a segment file is sealed (`disk`).
    pub segment_bytes: u64,
    /// Events per replayed transaction.
    pub replay_batch_size: usize,
    /// Events per second the replay writes at most, so live traffic keeps its room.
    pub replay_rate: u32,
    /// How often the database is probed while it is down.
    #[serde(with = "duration")]
    pub probe_interval: Duration,
    /// The stream's key (`redis`); quarantined entries go to `<redisStream>:quarantine`.
    pub redis_stream: String,
    /// The consumer group (`redis`), shared by every replica.
    pub redis_group: String,
    /// Pending entries of a consumer idle this long are claimed by another (`redis`).
    #[serde(with = "duration")]
    pub claim_idle: Duration,
}

impl Default for BufferSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            backend: BufferBackend::Disk,
            dir: PathBuf::from(DEFAULT_BUFFER_DIR),
            max_bytes: DEFAULT_BUFFER_MAX_BYTES,
            segment_bytes: DEFAULT_BUFFER_SEGMENT_BYTES,
            replay_batch_size: DEFAULT_REPLAY_BATCH_SIZE,
            replay_rate: DEFAULT_REPLAY_RATE,
            probe_interval: DEFAULT_PROBE_INTERVAL,
            redis_stream: DEFAULT_REDIS_STREAM.to_owned(),
            redis_group: DEFAULT_REDIS_GROUP.to_owned(),
            claim_idle: DEFAULT_CLAIM_IDLE,
        }
    }
}

impl BufferSettings {
    /// The rules of this section, as messages naming the key. `redis_addr` is `redis.addr`.
    pub fn problems(&self, redis_addr: Option<&str>, max_batch: usize) -> Vec<String> {
        let mut problems = Vec::new();
        if !self.enabled {
            return problems;
        }
        if self.dir.as_os_str().is_empty() {
            problems.push("buffer.dir must not be empty".to_owned());
        }
        if self.segment_bytes < 4096 || self.segment_bytes > self.max_bytes {
            problems.push(format!(
                "buffer.segmentBytes must be at least 4096 and at most buffer.maxBytes ({}) (got {})",
                self.max_bytes, self.segment_bytes
            ));
        }
        if !(1..=max_batch).contains(&self.replay_batch_size) {
            problems.push(format!(
                "buffer.replayBatchSize must be between 1 and server.maxBatchSize ({max_batch}) (got {})",
                self.replay_batch_size
            ));
        }
        if self.replay_rate == 0 {
            problems.push("buffer.replayRate must be at least 1 event per second".to_owned());
        }
        if self.probe_interval < Duration::from_millis(100) {
            problems.push("buffer.probeInterval must be at least 100ms".to_owned());
        }
        if self.backend == BufferBackend::Redis {
            if redis_addr.is_none_or(|a| a.trim().is_empty()) {
                problems.push("buffer.backend is redis, so redis.addr must be set".to_owned());
            }
            for (key, value) in [
                ("buffer.redisStream", &self.redis_stream),
                ("buffer.redisGroup", &self.redis_group),
            ] {
                if value.trim().is_empty() {
                    problems.push(format!("{key} must not be empty"));
                }
            }
            if self.claim_idle < Duration::from_secs(1) {
                problems.push("buffer.claimIdle must be at least 1s".to_owned());
            }
        }
        problems
    }
}
