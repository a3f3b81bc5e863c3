//! The `redis` backend: one Redis stream (`buffer.redisStream`) read through one consumer
//! group (`buffer.redisGroup`) by every replica, each under a consumer name of its own.
//!
//! Where upstream lost events, this keeps them:
//! - An entry is acknowledged (`XACK`) and deleted only after its events are committed, or
//!   after it is copied to the quarantine stream. A failed database write leaves it pending.
//! - The stream is never trimmed (`MAXLEN`): its bound, `redis.dlqMaxLen`, is checked before
//!   each append, atomically with it (one Lua script), and a full stream refuses with `503`.
//! - A replica that dies leaves its pending entries behind; another claims those idle for
//!   `buffer.claimIdle` (`XAUTOCLAIM`) and replays them.
//! - Redis being down matters only while the database is down too: writes are buffered only
//!   on an outage, and readiness does not ask Redis.
//!
//! Durability is Redis's: run it with `appendonly yes` and `appendfsync always` for the same
//! promise as the `disk` backend.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, TimeZone as _, Utc};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::streams::{StreamAutoClaimReply, StreamId, StreamRangeReply, StreamReadReply};
use redis::{AsyncCommands as _, IntoConnectionInfo as _, Script};

use super::{quarantine_line, BufferError, BufferedWrite, Depth, Pending, Token};
use crate::config::{BufferSettings, RedisSettings, DEFAULT_REDIS_MAX_ENTRIES};

/// How long one Redis command may take before the write is refused with 503.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Entries read per round trip of the replay.
const READ_COUNT: usize = 100;

/// Appends unless the stream is full; counts the events. Returns the entry id, or nil when
/// full. KEYS: stream, event counter. ARGV: max entries, events, record.
const APPEND: &str = r"
if redis.call('XLEN', KEYS[1]) >= tonumber(ARGV[1]) then return false end
local id = redis.call('XADD', KEYS[1], '*', 'n', ARGV[2], 'w', ARGV[3])
redis.call('INCRBY', KEYS[2], ARGV[2])
return id
";

/// Acknowledges and deletes entries, uncounting the events of those this consumer group still
/// had pending (an entry acknowledged twice is uncounted once). KEYS: stream, event counter.
/// ARGV: group, ids...
const SETTLE: &str = r"
local settled = 0
for i = 2, #ARGV do
  local entry = redis.call('XRANGE', KEYS[1], ARGV[i], ARGV[i])
  if redis.call('XACK', KEYS[1], ARGV[1], ARGV[i]) == 1 and entry[1] then
    redis.call('DECRBY', KEYS[2], entry[1][2][2])
  end
  settled = settled + redis.call('XDEL', KEYS[1], ARGV[i])
end
return settled
";

pub(super) struct RedisBuffer {
    conn: ConnectionManager,
    stream: String,
    counter: String,
    quarantine: String,
    group: String,
    consumer: String,
    claim_idle: Duration,
    max_entries: u64,
    append: Script,
    settle: Script,
    /// Entries in the stream at the last look.
    entries: AtomicU64,
}

fn failed(e: impl std::fmt::Display) -> BufferError {
    BufferError::Failed(format!("redis: {e}"))
}

/// The time an entry id (`<ms>-<seq>`) was added.
fn id_time(id: &str) -> Option<DateTime<Utc>> {
    let ms = id.split('-').next()?.parse::<i64>().ok()?;
    Utc.timestamp_millis_opt(ms).single()
}

impl RedisBuffer {
    /// Connects (lazily), and creates the group (from the stream's start) when missing; a Redis
    /// that does not answer is logged, not fatal.
    pub async fn open(
        settings: &BufferSettings,
        redis: &RedisSettings,
        consumer: &str,
    ) -> anyhow::Result<(Self, Depth)> {
        let addr = redis.addr.as_deref().unwrap_or_default();
        let mut info = format!("redis://{addr}/")
            .into_connection_info()
            .map_err(|e| anyhow::anyhow!("redis.addr {addr:?} is not host:port: {e}"))?;
        if let Some(password) = &redis.password {
            let settings = info
                .redis_settings()
                .clone()
                .set_password(password.expose());
            info = info.set_redis_settings(settings);
        }
        let client =
            redis::Client::open(info).map_err(|e| anyhow::anyhow!("redis.addr {addr:?}: {e}"))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(1);
        // Lazy: a Redis that is down at start only matters once the database is down too.
        let conn = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| anyhow::anyhow!("redis.addr {addr}: {e}"))?;
        let buffer = Self {
            conn,
            counter: format!("{}:events", settings.redis_stream),
            quarantine: format!("{}:quarantine", settings.redis_stream),
            stream: settings.redis_stream.clone(),
            group: settings.redis_group.clone(),
            consumer: consumer.to_owned(),
            claim_idle: settings.claim_idle,
            max_entries: redis.dlq_max_len.unwrap_or(DEFAULT_REDIS_MAX_ENTRIES),
            append: Script::new(APPEND),
            settle: Script::new(SETTLE),
            entries: Default::default(),
        };
        let depth = match buffer.create_group().await {
            Ok(()) => buffer.depth().await,
            Err(e) => Err(e),
        };
        let depth = depth.unwrap_or_else(|e| {
            tracing::warn!(error = %e, addr, "Redis of the outage buffer does not answer; writes are unaffected while the database is up");
            Depth::default()
        });
        tracing::info!(stream = %buffer.stream, group = %buffer.group, consumer = %buffer.consumer, "outage buffer on Redis");
        Ok((buffer, depth))
    }

    async fn create_group(&self) -> Result<(), BufferError> {
        let mut conn = self.conn.clone();
        let created: redis::RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&self.stream)
            .arg(&self.group)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut conn)
            .await;
        match created {
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
            other => other.map_err(failed),
        }
    }

    pub fn capacity(&self) -> u64 {
        self.max_entries
    }

    pub fn used(&self) -> u64 {
        self.entries.load(Ordering::Relaxed)
    }

    pub async fn append(&self, write: &BufferedWrite) -> Result<(), BufferError> {
        let record = serde_json::to_string(write).map_err(failed)?;
        let mut conn = self.conn.clone();
        let id: Option<String> = self
            .append
            .key(&self.stream)
            .key(&self.counter)
            .arg(self.max_entries)
            .arg(write.count)
            .arg(record)
            .invoke_async(&mut conn)
            .await
            .map_err(failed)?;
        match id {
            Some(_) => {
                self.entries.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            None => {
                self.entries.store(self.max_entries, Ordering::Relaxed);
                Err(BufferError::Full(format!(
                    "{} entries of redis.dlqMaxLen in {}",
                    self.max_entries, self.stream
                )))
            }
        }
    }

    fn pending(entry: &StreamId) -> Result<Pending, String> {
        let text: String = entry.get("w").ok_or("no field w")?;
        let write: BufferedWrite = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        Ok(Pending {
            write,
            token: Token::Redis(entry.id.clone()),
        })
    }

    pub async fn take(&self, max_events: usize) -> Result<Vec<Pending>, BufferError> {
        match self.read(max_events).await {
            Err(BufferError::Failed(e)) if e.contains("NOGROUP") => {
                // Redis lost the group (a restart without persistence): make it again.
                self.create_group().await?;
                self.read(max_events).await
            }
            other => other,
        }
    }

    async fn read(&self, max_events: usize) -> Result<Vec<Pending>, BufferError> {
        let mut conn = self.conn.clone();
        // Entries a dead consumer left pending become ours.
        let _: StreamAutoClaimReply = redis::cmd("XAUTOCLAIM")
            .arg(&self.stream)
            .arg(&self.group)
            .arg(&self.consumer)
            .arg(self.claim_idle.as_millis() as u64)
            .arg("0-0")
            .arg("COUNT")
            .arg(READ_COUNT)
            .query_async(&mut conn)
            .await
            .map_err(failed)?;
        let mut entries = Vec::new();
        // Ours not yet settled first (oldest), then new ones.
        for from in ["0", ">"] {
            let reply: Option<StreamReadReply> = redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg(&self.group)
                .arg(&self.consumer)
                .arg("COUNT")
                .arg(READ_COUNT)
                .arg("STREAMS")
                .arg(&self.stream)
                .arg(from)
                .query_async(&mut conn)
                .await
                .map_err(failed)?;
            entries = reply
                .map(|r| r.keys.into_iter().flat_map(|k| k.ids).collect())
                .unwrap_or_default();
            if !entries.is_empty() {
                break;
            }
        }
        let mut taken = Vec::new();
        let mut events = 0;
        let mut unreadable = Vec::new();
        for entry in &entries {
            match Self::pending(entry) {
                Ok(p) => {
                    if !taken.is_empty() && events + p.write.count > max_events {
                        break;
                    }
                    events += p.write.count;
                    taken.push(p);
                }
                Err(why) if entry.map.is_empty() => {
                    // Deleted after it was delivered (settled by a consumer that claimed it).
                    tracing::debug!(id = %entry.id, why, "pending entry already deleted");
                    unreadable.push(entry.id.clone());
                }
                Err(why) => {
                    tracing::error!(id = %entry.id, why, "outage buffer entry does not parse; moved to the quarantine stream");
                    let _: String = conn
                        .xadd(
                            &self.quarantine,
                            "*",
                            &[("error", why.as_str()), ("id", entry.id.as_str())],
                        )
                        .await
                        .map_err(failed)?;
                    unreadable.push(entry.id.clone());
                }
            }
        }
        if !unreadable.is_empty() {
            self.settle_ids(&unreadable).await?;
        }
        Ok(taken)
    }

    async fn settle_ids(&self, ids: &[String]) -> Result<(), BufferError> {
        let mut conn = self.conn.clone();
        let mut call = self.settle.key(&self.stream);
        call.key(&self.counter).arg(&self.group);
        for id in ids {
            call.arg(id);
        }
        let _: i64 = call.invoke_async(&mut conn).await.map_err(failed)?;
        Ok(())
    }

    pub async fn settle(&self, done: &[Pending]) -> Result<(), BufferError> {
        let ids: Vec<String> = done
            .iter()
            .filter_map(|p| match &p.token {
                Token::Redis(id) => Some(id.clone()),
                Token::Disk => None,
            })
            .collect();
        self.settle_ids(&ids).await
    }

    pub async fn quarantine(&self, write: &BufferedWrite, error: &str) -> Result<(), BufferError> {
        let line = quarantine_line(write, error)?;
        let mut conn = self.conn.clone();
        let _: String = conn
            .xadd(
                &self.quarantine,
                "*",
                &[("error", error), ("entry", line.as_str())],
            )
            .await
            .map_err(failed)?;
        Ok(())
    }

    pub async fn depth(&self) -> Result<Depth, BufferError> {
        let mut conn = self.conn.clone();
        let (events, entries, bytes, first): (Option<i64>, u64, Option<u64>, StreamRangeReply) =
            redis::pipe()
                .get(&self.counter)
                .xlen(&self.stream)
                .cmd("MEMORY")
                .arg("USAGE")
                .arg(&self.stream)
                .cmd("XRANGE")
                .arg(&self.stream)
                .arg("-")
                .arg("+")
                .arg("COUNT")
                .arg(1)
                .query_async(&mut conn)
                .await
                .map_err(failed)?;
        self.entries.store(entries, Ordering::Relaxed);
        Ok(Depth {
            events: events.unwrap_or(0).max(0) as u64,
            bytes: bytes.unwrap_or(0),
            oldest: first.ids.first().and_then(|e| id_time(&e.id)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_id_carries_its_time() {
        let t = id_time("1767225600000-3").unwrap();
        assert_eq!(t.timestamp_millis(), 1_767_225_600_000);
        assert!(id_time("x").is_none());
    }
}
