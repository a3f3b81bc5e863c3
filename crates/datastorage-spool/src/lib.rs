//! The durable spool: an append-only directory of segment files that holds records until their
//! reader has settled them, so that they survive an outage and a restart of the process. The
//! DataStorage client spools the batches the server could not take; the server buffers the
//! writes it accepted while its database was down.
//!
//! Format (one segment file, `NNNNNNNNNNNNNNNNNNNN.seg`, numbered in write order):
//!
//! ```text
//! "DSSPOOL1"                          8-byte magic
//! record*                             each: len u32 LE | crc32(payload) u32 LE | payload
//! ```
//!
//! A payload is the JSON of one record (a `T` of [`Spool<T>`]).
//!
//! Rules this crate keeps:
//! - Writes only ever append to the newest (active) segment; a segment is sealed (fsynced and
//!   never written again) when it passes the segment size, when replay needs it, and on close.
//!   With [`Durability::EveryRecord`] each record is also fsynced before `append` returns.
//!   A process that opens a spool never appends to a segment an earlier process left: it starts
//!   a new one, so a torn tail left by a crash stays at the end of a sealed segment.
//! - Reading a segment stops at the first record whose header or payload is cut short, whose
//!   length is implausible, or whose CRC does not match: the records before it are kept, it and
//!   what follows in that segment are skipped and counted (one per corruption found). A record
//!   whose CRC holds but whose JSON does not parse is skipped alone and counted.
//! - A segment is deleted only once its reader says every record in it is settled; one with
//!   corruption is renamed `*.corrupt` instead, for inspection, and no longer counted in the
//!   spool's size.
//! - One process per directory: the spool takes no lock file, so two processes sharing a
//!   directory would replay each other's segments.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Largest size the spool directory may grow to before further records are refused: 1 GiB.
pub const DEFAULT_SPOOL_MAX_BYTES: u64 = 1 << 30;

/// Size after which the active segment is sealed and a new one started: 8 MiB. Smaller segments
/// free disk sooner during replay; larger ones mean fewer files and fsyncs.
pub const DEFAULT_SEGMENT_BYTES: u64 = 8 << 20;

/// Magic bytes at the start of every segment.
const MAGIC: &[u8; 8] = b"DSSPOOL1";

/// Bytes of a record header: length and CRC32.
const RECORD_HEADER: usize = 8;

/// A record longer than this is taken for a corrupt length: 500 events of the server's largest
/// payload (256 KiB) fit well under it.
const MAX_RECORD_BYTES: usize = 512 << 20;

/// File name suffix of a segment.
const SEGMENT_SUFFIX: &str = ".seg";

/// When appended records reach the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Each record is fsynced before `append` returns: what was appended survives a crash of
    /// the machine. The server's outage buffer, which answers 202 only after this.
    EveryRecord,
    /// Segments are fsynced when sealed: a crash of the machine may lose the records of the
    /// active segment, a crash of the process loses nothing. The client's spool.
    OnSeal,
}

/// Settings of one spool directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolOptions {
    /// Directory of the segment files; created when missing. One process per directory.
    pub dir: PathBuf,
    /// Largest total size of the segments, default [`DEFAULT_SPOOL_MAX_BYTES`]. A record that
    /// would pass it is refused ([`SpoolError::Full`]).
    pub max_bytes: u64,
    /// Size at which a segment is sealed, default [`DEFAULT_SEGMENT_BYTES`].
    pub segment_bytes: u64,
    /// When records reach the disk.
    pub durability: Durability,
}

impl SpoolOptions {
    /// A spool in `dir` with the default sizes, fsynced on seal.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            max_bytes: DEFAULT_SPOOL_MAX_BYTES,
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            durability: Durability::OnSeal,
        }
    }
}

/// Why a record could not be written to the spool.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// Writing would pass `max_bytes`.
    #[error("spool is full ({used} of {max} bytes used)")]
    Full {
        /// Bytes in the spool now.
        used: u64,
        /// The limit.
        max: u64,
    },
    /// The file system refused.
    #[error("spool write failed")]
    Io(#[from] io::Error),
    /// The record could not be serialized.
    #[error("spool record could not be encoded")]
    Encode(#[from] serde_json::Error),
}

/// One sealed segment waiting for replay.
#[derive(Debug, Clone)]
pub struct Segment {
    /// Its file.
    pub path: PathBuf,
    bytes: u64,
}

impl Segment {
    /// Bytes of its file.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

struct Active {
    path: PathBuf,
    /// Shared with appenders that fsync it after letting go of the lock.
    file: Arc<File>,
    bytes: u64,
    records: u64,
}

struct Inner {
    sealed: VecDeque<Segment>,
    active: Option<Active>,
    next_seq: u64,
    total_bytes: u64,
    /// Records appended by this process, in order (the number of the last one).
    written: u64,
    /// Every record up to this number is in a sealed, fsynced segment.
    sealed_through: u64,
}

/// One spool directory of records `T`, shared by its writers and its one reader.
pub struct Spool<T> {
    config: SpoolOptions,
    inner: Mutex<Inner>,
    /// Every record up to this number is on disk ([`Durability::EveryRecord`]). Held across the
    /// fsync, so appenders that wrote meanwhile wait for it and share the next one (group
    /// fsync) instead of each syncing alone.
    synced: Mutex<u64>,
    records: PhantomData<fn(&T)>,
}

impl<T> std::fmt::Debug for Spool<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool")
            .field("config", &self.config)
            .finish()
    }
}

/// What reading one segment found.
#[derive(Debug)]
pub struct SegmentContents<T> {
    /// The intact records, in write order.
    pub records: Vec<T>,
    /// Corrupt records found (a torn or bad record ends the segment and counts once).
    pub corrupt: u64,
}

/// The bytes of one record holding `payload`.
pub fn encode_record(payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).expect("a record is under 4 GiB");
    let mut out = Vec::with_capacity(RECORD_HEADER + payload.len());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// Splits a segment's bytes into record payloads. Stops at the first torn or corrupt record and
/// says why; the payloads before it are returned.
pub fn decode_records(bytes: &[u8]) -> (Vec<&[u8]>, Option<String>) {
    let Some(mut rest) = bytes.strip_prefix(MAGIC.as_slice()) else {
        return (
            Vec::new(),
            Some("segment does not start with the spool magic".into()),
        );
    };
    let mut payloads = Vec::new();
    let mut offset = MAGIC.len();
    while !rest.is_empty() {
        if rest.len() < RECORD_HEADER {
            return (
                payloads,
                Some(format!("torn record header at byte {offset}")),
            );
        }
        let len = u32::from_le_bytes(rest[0..4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(rest[4..8].try_into().expect("4 bytes"));
        if len == 0 || len > MAX_RECORD_BYTES {
            return (
                payloads,
                Some(format!("implausible record length {len} at byte {offset}")),
            );
        }
        let Some(payload) = rest.get(RECORD_HEADER..RECORD_HEADER + len) else {
            return (payloads, Some(format!("torn record at byte {offset}")));
        };
        if crc32fast::hash(payload) != crc {
            return (payloads, Some(format!("CRC mismatch at byte {offset}")));
        }
        payloads.push(payload);
        rest = &rest[RECORD_HEADER + len..];
        offset += RECORD_HEADER + len;
    }
    (payloads, None)
}

/// Reads one segment file: its intact records and how many corrupt ones it holds.
pub fn read_segment<T: DeserializeOwned>(path: &Path) -> io::Result<SegmentContents<T>> {
    let bytes = fs::read(path)?;
    let (payloads, problem) = decode_records(&bytes);
    let mut contents = SegmentContents {
        records: Vec::with_capacity(payloads.len()),
        corrupt: 0,
    };
    for payload in payloads {
        match serde_json::from_slice::<T>(payload) {
            Ok(record) => contents.records.push(record),
            Err(e) => {
                tracing::warn!(segment = %path.display(), error = %e, "spool record with a valid CRC does not parse; skipped");
                contents.corrupt += 1;
            }
        }
    }
    if let Some(problem) = problem {
        tracing::warn!(segment = %path.display(), problem, "corrupt spool record; skipping the rest of the segment");
        contents.corrupt += 1;
    }
    Ok(contents)
}

fn segment_name(seq: u64) -> String {
    format!("{seq:020}{SEGMENT_SUFFIX}")
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl<T: Serialize> Spool<T> {
    /// Opens (creating) the directory; every segment already there is queued for replay.
    pub fn open(config: SpoolOptions) -> io::Result<Self> {
        fs::create_dir_all(&config.dir)?;
        let mut found = Vec::new();
        for entry in fs::read_dir(&config.dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(seq) = name
                .to_str()
                .and_then(|n| n.strip_suffix(SEGMENT_SUFFIX))
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            found.push((seq, entry.path(), entry.metadata()?.len()));
        }
        found.sort_by_key(|(seq, _, _)| *seq);
        let next_seq = found.last().map_or(1, |(seq, _, _)| seq + 1);
        let total_bytes = found.iter().map(|(_, _, b)| b).sum();
        if !found.is_empty() {
            tracing::info!(
                segments = found.len(),
                bytes = total_bytes,
                dir = %config.dir.display(),
                "spool holds segments from an earlier run; queued for replay"
            );
        }
        Ok(Self {
            inner: Mutex::new(Inner {
                sealed: found
                    .into_iter()
                    .map(|(_, path, bytes)| Segment { path, bytes })
                    .collect(),
                active: None,
                next_seq,
                total_bytes,
                written: 0,
                sealed_through: 0,
            }),
            synced: Mutex::new(0),
            config,
            records: PhantomData,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every update leaves the state consistent before anything can panic.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The settings it was opened with.
    pub fn options(&self) -> &SpoolOptions {
        &self.config
    }

    /// Appends one record; returns the bytes written. With [`Durability::EveryRecord`] the
    /// record is on disk when this returns.
    pub fn append(&self, record: &T) -> Result<u64, SpoolError> {
        let record = encode_record(&serde_json::to_vec(record)?);
        let mut inner = self.lock();
        let needed = record.len() as u64
            + if inner.active.is_none() {
                MAGIC.len() as u64
            } else {
                0
            };
        if inner.total_bytes + needed > self.config.max_bytes {
            return Err(SpoolError::Full {
                used: inner.total_bytes,
                max: self.config.max_bytes,
            });
        }
        if inner.active.is_none() {
            let seq = inner.next_seq;
            let path = self.config.dir.join(segment_name(seq));
            let mut file = OpenOptions::new()
                .create_new(true)
                .append(true)
                .open(&path)?;
            file.write_all(MAGIC)?;
            sync_dir(&self.config.dir)?;
            inner.next_seq += 1;
            inner.total_bytes += MAGIC.len() as u64;
            inner.active = Some(Active {
                path,
                file: Arc::new(file),
                bytes: MAGIC.len() as u64,
                records: 0,
            });
        }
        let active = inner.active.as_mut().expect("just opened");
        // One write per record: a crash leaves at most this record torn, at the segment's tail.
        (&*active.file).write_all(&record)?;
        active.bytes += record.len() as u64;
        active.records += 1;
        let full = active.bytes >= self.config.segment_bytes;
        inner.total_bytes += record.len() as u64;
        inner.written += 1;
        let number = inner.written;
        if full {
            Self::seal(&mut inner)?;
        }
        drop(inner);
        if self.config.durability == Durability::EveryRecord {
            self.sync_through(number)?;
        }
        Ok(record.len() as u64)
    }

    /// Returns once record `number` is on disk: at once when an fsync since it was written
    /// already covered it, else after one fsync of the active segment that covers every record
    /// written so far (lock order: `synced`, then `inner`).
    fn sync_through(&self, number: u64) -> io::Result<()> {
        let mut synced = self.synced.lock().unwrap_or_else(|p| p.into_inner());
        if *synced >= number {
            return Ok(());
        }
        let (file, last) = {
            let inner = self.lock();
            if inner.sealed_through >= number {
                *synced = (*synced).max(inner.sealed_through);
                return Ok(());
            }
            let active = inner
                .active
                .as_ref()
                .expect("a record not yet sealed is in the active segment");
            (Arc::clone(&active.file), inner.written)
        };
        file.sync_data()?;
        *synced = last;
        Ok(())
    }

    /// Seals the active segment: fsync, and queue it for replay.
    fn seal(inner: &mut Inner) -> io::Result<()> {
        if let Some(active) = inner.active.take() {
            active.file.sync_all()?;
            inner.sealed_through = inner.written;
            inner.sealed.push_back(Segment {
                path: active.path,
                bytes: active.bytes,
            });
        }
        Ok(())
    }

    /// The oldest segment to replay; seals the active one when nothing else is waiting and it
    /// holds records. `None` when the spool is empty.
    pub fn next_segment(&self) -> io::Result<Option<Segment>> {
        let mut inner = self.lock();
        if inner.sealed.is_empty() && inner.active.as_ref().is_some_and(|a| a.records > 0) {
            Self::seal(&mut inner)?;
        }
        Ok(inner.sealed.front().cloned())
    }

    /// The replay of `segment` (the oldest) is done: delete it, or set it aside when it held
    /// corrupt records.
    pub fn finish(&self, segment: &Segment, corrupt: bool) -> io::Result<()> {
        let mut inner = self.lock();
        if inner.sealed.front().map(|s| &s.path) != Some(&segment.path) {
            return Ok(());
        }
        if corrupt {
            let mut aside = segment.path.clone().into_os_string();
            aside.push(".corrupt");
            fs::rename(&segment.path, aside)?;
        } else {
            fs::remove_file(&segment.path)?;
        }
        inner.sealed.pop_front();
        inner.total_bytes = inner.total_bytes.saturating_sub(segment.bytes);
        Ok(())
    }

    /// The files of the segments waiting for replay, oldest first (the active one last).
    pub fn segment_paths(&self) -> Vec<PathBuf> {
        let inner = self.lock();
        inner
            .sealed
            .iter()
            .map(|s| s.path.clone())
            .chain(inner.active.as_ref().map(|a| a.path.clone()))
            .collect()
    }

    /// Bytes of the segments now.
    pub fn bytes(&self) -> u64 {
        self.lock().total_bytes
    }

    /// No segment holds a record.
    pub fn is_empty(&self) -> bool {
        let inner = self.lock();
        inner.sealed.is_empty() && inner.active.as_ref().is_none_or(|a| a.records == 0)
    }

    /// Removes an active segment that holds no record (at close, so no empty file is left).
    pub fn close(&self) -> io::Result<()> {
        let mut inner = self.lock();
        if inner.active.as_ref().is_some_and(|a| a.records == 0) {
            let active = inner.active.take().expect("checked");
            inner.total_bytes = inner.total_bytes.saturating_sub(active.bytes);
            drop(active.file);
            fs::remove_file(&active.path)?;
            return Ok(());
        }
        Self::seal(&mut inner)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;

    type Batch = Vec<String>;

    /// A record of `n` distinct strings, like a batch of events.
    fn batch(n: usize) -> Batch {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        (0..n)
            .map(|_| format!("event-{:08}", NEXT.fetch_add(1, Ordering::Relaxed)))
            .collect()
    }

    fn config(dir: &Path) -> SpoolOptions {
        SpoolOptions::new(dir)
    }

    fn only_segment(dir: &Path) -> PathBuf {
        let mut segs: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "seg"))
            .collect();
        assert_eq!(segs.len(), 1, "{segs:?}");
        segs.pop().unwrap()
    }

    #[test]
    fn records_round_trip_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::<Batch>::open(config(dir.path())).unwrap();
        let (a, b) = (batch(3), batch(2));
        spool.append(&a).unwrap();
        spool.append(&b).unwrap();
        spool.close().unwrap();
        drop(spool);

        let spool = Spool::<Batch>::open(config(dir.path())).unwrap();
        assert!(!spool.is_empty());
        let seg = spool.next_segment().unwrap().unwrap();
        let contents = read_segment::<Batch>(&seg.path).unwrap();
        assert_eq!(contents.records, vec![a, b]);
        assert_eq!(contents.corrupt, 0);
        // New writes go to a new segment, after the old one.
        spool.append(&batch(1)).unwrap();
        spool.finish(&seg, false).unwrap();
        assert!(!seg.path.exists());
        let next = spool.next_segment().unwrap().unwrap();
        assert!(next.path > seg.path, "{:?} after {:?}", next.path, seg.path);
        spool.finish(&next, false).unwrap();
        assert!(spool.is_empty());
        assert_eq!(spool.bytes(), 0);
    }

    #[test]
    fn concurrent_appenders_sharing_fsyncs_lose_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(dir.path());
        cfg.durability = Durability::EveryRecord;
        cfg.segment_bytes = 4096; // rotations while others wait for an fsync
        let spool = std::sync::Arc::new(Spool::<Batch>::open(cfg.clone()).unwrap());
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let spool = std::sync::Arc::clone(&spool);
                std::thread::spawn(move || {
                    (0..50)
                        .map(|_| {
                            let b = batch(1);
                            spool.append(&b).unwrap();
                            b
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut appended: Vec<Batch> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        spool.close().unwrap();
        let mut read = Vec::new();
        while let Some(seg) = spool.next_segment().unwrap() {
            let contents = read_segment::<Batch>(&seg.path).unwrap();
            assert_eq!(contents.corrupt, 0);
            read.extend(contents.records);
            spool.finish(&seg, false).unwrap();
        }
        assert_eq!(read.len(), 400);
        appended.sort();
        read.sort();
        assert_eq!(read, appended);
    }

    #[test]
    fn a_torn_tail_keeps_every_record_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::<Batch>::open(config(dir.path())).unwrap();
        let (a, b) = (batch(2), batch(2));
        spool.append(&a).unwrap();
        spool.append(&b).unwrap();
        spool.close().unwrap();
        let path = only_segment(dir.path());
        let full = fs::read(&path).unwrap();
        // Cut inside the last record's payload, then inside its header.
        for cut in [
            full.len() - 5,
            full.len() - (full.len() - MAGIC.len()) / 2 + 3,
        ] {
            fs::write(&path, &full[..cut]).unwrap();
            let contents = read_segment::<Batch>(&path).unwrap();
            assert_eq!(contents.records.len(), 1, "cut at {cut}");
            assert_eq!(contents.records[0], a);
            assert_eq!(contents.corrupt, 1);
        }
        let (_, problem) = decode_records(&full[..MAGIC.len() + 3]);
        assert!(problem.unwrap().contains("torn record header"));
    }

    #[test]
    fn a_bad_crc_in_the_middle_stops_that_segment_but_keeps_earlier_records() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::<Batch>::open(config(dir.path())).unwrap();
        let batches = [batch(1), batch(1), batch(1)];
        for b in &batches {
            spool.append(b).unwrap();
        }
        spool.close().unwrap();
        let path = only_segment(dir.path());
        let mut bytes = fs::read(&path).unwrap();
        let first_len = u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize;
        // Flip a payload byte of the second record.
        let second_payload = MAGIC.len() + RECORD_HEADER + first_len + RECORD_HEADER;
        bytes[second_payload + 4] ^= 0x55;
        fs::write(&path, &bytes).unwrap();
        let contents = read_segment::<Batch>(&path).unwrap();
        assert_eq!(contents.records, vec![batches[0].clone()]);
        assert_eq!(contents.corrupt, 1);
        let (_, problem) = decode_records(&bytes);
        assert!(problem.unwrap().contains("CRC mismatch"));
    }

    #[test]
    fn corruption_in_one_segment_leaves_later_segments_whole() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(dir.path());
        cfg.segment_bytes = 1; // every record seals its segment
        let spool = Spool::<Batch>::open(cfg.clone()).unwrap();
        let batches = [batch(2), batch(2), batch(2)];
        for b in &batches {
            spool.append(b).unwrap();
        }
        let mut segs: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        segs.sort();
        assert_eq!(segs.len(), 3);
        // Garbage length in the first segment's only record.
        let mut bytes = fs::read(&segs[0]).unwrap();
        bytes[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        fs::write(&segs[0], &bytes).unwrap();

        let spool = Spool::<Batch>::open(cfg).unwrap();
        let mut corrupt = 0;
        let mut kept = Vec::new();
        for _ in 0..10 {
            let Some(seg) = spool.next_segment().unwrap() else {
                break;
            };
            let contents = read_segment::<Batch>(&seg.path).unwrap();
            corrupt += contents.corrupt;
            kept.extend(contents.records);
            spool.finish(&seg, contents.corrupt > 0).unwrap();
        }
        assert_eq!(corrupt, 1);
        assert_eq!(kept, batches[1..].to_vec());
        assert!(spool.is_empty());
        let corrupt_file = PathBuf::from(format!("{}.corrupt", segs[0].display()));
        assert!(corrupt_file.exists(), "set aside for inspection");
    }

    #[test]
    fn a_valid_record_that_is_not_a_batch_is_skipped_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(segment_name(1));
        let mut bytes = MAGIC.to_vec();
        let good = batch(1);
        bytes.extend(encode_record(b"{\"not\":\"a batch\"}"));
        bytes.extend(encode_record(&serde_json::to_vec(&good).unwrap()));
        fs::write(&path, &bytes).unwrap();
        let contents = read_segment::<Batch>(&path).unwrap();
        assert_eq!(contents.records, vec![good]);
        assert_eq!(contents.corrupt, 1);
    }

    #[test]
    fn a_foreign_file_is_all_corrupt_and_the_spool_refuses_past_max_bytes() {
        let (payloads, problem) = decode_records(b"hello world");
        assert!(payloads.is_empty() && problem.unwrap().contains("magic"));

        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(dir.path());
        cfg.max_bytes = 600;
        cfg.segment_bytes = 600;
        let spool = Spool::<Batch>::open(cfg).unwrap();
        let mut written = 0;
        let refused = loop {
            match spool.append(&batch(1)) {
                Ok(n) => written += n,
                Err(e) => break e,
            }
            assert!(written < 600);
        };
        assert!(
            matches!(refused, SpoolError::Full { max: 600, .. }),
            "{refused}"
        );
        assert!(spool.bytes() <= 600);
    }
}
