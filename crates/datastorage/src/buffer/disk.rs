//! The `disk` backend: [`datastorage_spool`] segment files in `buffer.dir`, every record
//! fsynced before its `202`, quarantined records in `quarantine.ndjson` beside them.
//!
//! The replay reads one segment at a time into a cursor; a segment file is deleted once every
//! record in it is settled. A crash in between replays the settled records of that segment
//! again, which the database answers as idempotent replays (every id is carried).

use std::collections::VecDeque;
use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use datastorage_spool::{read_segment, Durability, Segment, Spool, SpoolError, SpoolOptions};
use serde::Deserialize;

use super::{blocking, quarantine_line, BufferError, BufferedWrite, Depth, Pending, Token};
use crate::config::BufferSettings;

/// File of quarantined records, one JSON object a line.
pub const QUARANTINE_FILE: &str = "quarantine.ndjson";

/// What opening reads of each record: the count and time, not the events.
#[derive(Deserialize)]
struct RecordHead {
    accepted_at: DateTime<Utc>,
    count: usize,
}

/// The segment being replayed and its unsettled records, oldest first.
#[derive(Default)]
struct Cursor {
    segment: Option<Segment>,
    corrupt: bool,
    records: VecDeque<BufferedWrite>,
}

pub(super) struct DiskBuffer {
    spool: Arc<Spool<BufferedWrite>>,
    cursor: tokio::sync::Mutex<Cursor>,
    oldest: Mutex<Option<DateTime<Utc>>>,
    quarantine: PathBuf,
}

fn failed(e: impl std::fmt::Display) -> BufferError {
    BufferError::Failed(e.to_string())
}

impl DiskBuffer {
    /// Opens (creating) `buffer.dir`; counts what an earlier run left.
    pub async fn open(settings: &BufferSettings) -> anyhow::Result<(Self, Depth)> {
        let options = SpoolOptions {
            dir: settings.dir.clone(),
            max_bytes: settings.max_bytes,
            segment_bytes: settings.segment_bytes,
            durability: Durability::EveryRecord,
        };
        let (spool, depth) = tokio::task::spawn_blocking(move || {
            let spool = Spool::<BufferedWrite>::open(options)?;
            let mut depth = Depth {
                bytes: spool.bytes(),
                ..Depth::default()
            };
            for path in spool.segment_paths() {
                let heads = read_segment::<RecordHead>(&path)?;
                for head in heads.records {
                    depth.events += head.count as u64;
                    depth.oldest.get_or_insert(head.accepted_at);
                }
            }
            std::io::Result::Ok((spool, depth))
        })
        .await?
        .map_err(|e| {
            anyhow::anyhow!(
                "buffer.dir: cannot open the outage buffer in {}: {e}",
                settings.dir.display()
            )
        })?;
        Ok((
            Self {
                spool: Arc::new(spool),
                cursor: tokio::sync::Mutex::new(Cursor::default()),
                oldest: Mutex::new(depth.oldest),
                quarantine: settings.dir.join(QUARANTINE_FILE),
            },
            depth,
        ))
    }

    pub fn capacity(&self) -> u64 {
        self.spool.options().max_bytes
    }

    pub fn used(&self) -> u64 {
        self.spool.bytes()
    }

    fn set_oldest(&self, t: Option<DateTime<Utc>>) {
        *self.oldest.lock().unwrap_or_else(|p| p.into_inner()) = t;
    }

    pub async fn append(&self, write: BufferedWrite) -> Result<(), BufferError> {
        let accepted_at = write.accepted_at;
        let spool = Arc::clone(&self.spool);
        blocking(move || {
            spool.append(&write).map_err(|e| match e {
                SpoolError::Full { used, max } => {
                    BufferError::Full(format!("{used} of {max} bytes of buffer.maxBytes used"))
                }
                other => failed(format!(
                    "{other}: {}",
                    std::error::Error::source(&other)
                        .map(ToString::to_string)
                        .unwrap_or_default()
                )),
            })
        })
        .await?;
        self.oldest
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert(accepted_at);
        Ok(())
    }

    pub async fn take(&self, max_events: usize) -> Result<Vec<Pending>, BufferError> {
        let mut cursor = self.cursor.lock().await;
        while cursor.records.is_empty() {
            self.finish(&mut cursor).await?;
            let spool = Arc::clone(&self.spool);
            let Some(segment) = blocking(move || spool.next_segment().map_err(failed)).await?
            else {
                return Ok(Vec::new());
            };
            let path = segment.path.clone();
            let contents =
                blocking(move || read_segment::<BufferedWrite>(&path).map_err(failed)).await?;
            if contents.corrupt > 0 {
                tracing::error!(segment = %segment.path.display(), corrupt = contents.corrupt, "outage buffer segment holds corrupt records; the intact ones are replayed, the file is kept as *.corrupt");
            }
            cursor.corrupt = contents.corrupt > 0;
            cursor.records = contents.records.into();
            cursor.segment = Some(segment);
            self.set_oldest(cursor.records.front().map(|r| r.accepted_at));
        }
        let mut taken = Vec::new();
        let mut events = 0;
        for record in &cursor.records {
            if !taken.is_empty() && events + record.count > max_events {
                break;
            }
            events += record.count;
            taken.push(Pending {
                write: record.clone(),
                token: Token::Disk,
            });
        }
        Ok(taken)
    }

    /// Deletes the cursor's segment once all its records are settled.
    async fn finish(&self, cursor: &mut Cursor) -> Result<(), BufferError> {
        if !cursor.records.is_empty() {
            return Ok(());
        }
        if let Some(segment) = cursor.segment.take() {
            let (spool, corrupt) = (Arc::clone(&self.spool), cursor.corrupt);
            blocking(move || spool.finish(&segment, corrupt).map_err(failed)).await?;
        }
        Ok(())
    }

    pub async fn settle(&self, done: &[Pending]) -> Result<(), BufferError> {
        let mut cursor = self.cursor.lock().await;
        for pending in done {
            debug_assert!(matches!(pending.token, Token::Disk));
            let front = cursor.records.pop_front();
            debug_assert_eq!(
                front.as_ref().map(|f| f.accepted_at),
                Some(pending.write.accepted_at)
            );
        }
        self.finish(&mut cursor).await?;
        let next = cursor.records.front().map(|r| r.accepted_at);
        if next.is_some() || self.spool.is_empty() {
            self.set_oldest(next);
        }
        Ok(())
    }

    pub async fn quarantine(&self, write: &BufferedWrite, error: &str) -> Result<(), BufferError> {
        let line = quarantine_line(write, error)?;
        let path = self.quarantine.clone();
        blocking(move || {
            let mut file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(failed)?;
            file.write_all(format!("{line}\n").as_bytes())
                .and_then(|()| file.sync_data())
                .map_err(failed)
        })
        .await
    }

    pub fn depth(&self) -> Depth {
        Depth {
            events: 0, // counted by `OutageBuffer` itself
            bytes: self.spool.bytes(),
            oldest: *self.oldest.lock().unwrap_or_else(|p| p.into_inner()),
        }
    }

    pub async fn close(&self) {
        let spool = Arc::clone(&self.spool);
        if let Err(e) = blocking(move || spool.close().map_err(failed)).await {
            tracing::error!(error = %e, "cannot seal the outage buffer's segment");
        }
    }
}

#[cfg(test)]
mod tests {
    use datastorage_api::validate_event;
    use serde_json::json;

    use super::*;

    fn write(n: usize) -> BufferedWrite {
        let events = (0..n)
            .map(|i| {
                validate_event(&json!({
                    "version": "1.0", "event_type": "t.x", "event_category": "gateway",
                    "event_action": "a", "event_outcome": "success", "correlation_id": format!("c{i}"),
                    "event_timestamp": "2026-12-01T00:00:00Z", "event_data": {"i": i},
                }))
                .unwrap()
            })
            .collect();
        BufferedWrite::new(events, true)
    }

    fn settings(dir: &std::path::Path) -> BufferSettings {
        BufferSettings {
            dir: dir.to_path_buf(),
            segment_bytes: 4096,
            ..BufferSettings::default()
        }
    }

    #[tokio::test]
    async fn taken_records_stay_until_settled_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (buffer, depth) = DiskBuffer::open(&settings(dir.path())).await.unwrap();
        assert_eq!(depth.events, 0);
        let (a, b, c) = (write(3), write(2), write(1));
        for w in [&a, &b, &c] {
            buffer.append(w.clone()).await.unwrap();
        }
        // Taking twice without settling hands out the same records; at least one record even
        // when it alone passes max_events.
        let first = buffer.take(1).await.unwrap();
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].write, a);
        assert_eq!(buffer.take(5).await.unwrap().len(), 2, "a and b: 5 events");
        buffer.settle(&first).await.unwrap();
        drop(buffer);

        // A new process finds b and c (a segment is deleted only once all of it is settled,
        // so a is replayed again too: an idempotent no-op in the database).
        let (buffer, depth) = DiskBuffer::open(&settings(dir.path())).await.unwrap();
        assert_eq!(depth.events, 6, "the unsettled segment is counted whole");
        assert!(depth.oldest.is_some());
        let all = buffer.take(100).await.unwrap();
        let ids: Vec<_> = all.iter().map(|p| p.write.events[0].event_id).collect();
        assert_eq!(
            ids,
            [&a, &b, &c].map(|w| w.events[0].event_id).to_vec(),
            "in order, nothing lost"
        );
        assert!(all
            .iter()
            .all(|p| p.write.events.iter().all(|e| e.id_supplied)));
        buffer.settle(&all).await.unwrap();
        assert!(buffer.take(100).await.unwrap().is_empty());
        assert_eq!(buffer.used(), 0, "settled segments are deleted");
    }

    #[tokio::test]
    async fn past_max_bytes_the_buffer_refuses_as_full() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = settings(dir.path());
        s.max_bytes = 8192;
        let (buffer, _) = DiskBuffer::open(&s).await.unwrap();
        let refused = loop {
            if let Err(e) = buffer.append(write(2)).await {
                break e;
            }
        };
        assert!(
            matches!(&refused, BufferError::Full(m) if m.contains("buffer.maxBytes")),
            "{refused}"
        );
        assert!(buffer.used() <= 8192);
    }
}
