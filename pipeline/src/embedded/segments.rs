//! One topic partition's records as append-only segment files: the embedded topics' record
//! storage (Fluvio's own storage model, in-process).
//!
//! A partition is a directory of segment files named by their first offset
//! (`00000000000000001234.log`). Records are appended to the last (active) segment as frames:
//!
//! ```text
//! len: u32 LE | check: u32 LE | offset: u64 LE | key: u64 LE | headers_len: u32 LE | headers | value
//! ```
//!
//! where `len` counts the bytes after the 8-byte `len|check` head and `check` is the low half
//! of the xxh3 hash of those bytes. A produce is one `write` per partition, so once it returns
//! the records survive a process kill (the OS holds them); with `sync` each write is followed by
//! `fdatasync` (power loss). A kill in the middle of a write leaves a torn frame at the end of the
//! active segment only; opening cuts the log at the first frame that does not check out there,
//! and refuses (a fatal error) a bad frame anywhere else, which only corruption can cause.
//!
//! Retention drops whole segments once every consumer group has passed them; an active segment
//! that is fully consumed and large is rolled so it can go too. Nothing is ever rewritten in
//! place, so a record costs one sequential write and no compaction.
//!
//! Memory: one `u32` position per stored record (records still unconsumed, plus the consumed
//! part of segments not yet dropped), never the records themselves; reads go through the OS
//! page cache.
//!
//! It is not: the consumer offsets or the held records (those are small, keyed rows in fjall,
//! see the parent module).

use crate::topic::Offset;
use crate::{Error, Result};
use schemas::codec;
use schemas::envelope::Headers;
use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Bytes of a frame's `len|check` head.
const HEAD: usize = 8;
/// Bytes of the fixed part of a frame's body (offset, key, headers length).
const FIXED: usize = 20;
/// A fully consumed active segment larger than this is rolled so retention can drop it.
const ROLL_WHEN_CONSUMED: u64 = 1 << 20;

/// A record as stored.
pub(super) struct Stored {
    pub offset: Offset,
    pub key: u64,
    pub headers: Headers,
    pub value: Vec<u8>,
}

struct Segment {
    base: Offset,
    path: PathBuf,
    file: Arc<File>,
    /// Where each record's frame starts; `positions.len()` records are stored.
    positions: Vec<u32>,
    /// Bytes written.
    len: u64,
}

impl Segment {
    fn end(&self) -> Offset {
        self.base + self.positions.len() as u64
    }
}

/// What a read needs once the partition's lock is released.
pub(super) struct ReadPlan {
    file: Arc<File>,
    first: Offset,
    count: usize,
    start: u64,
    end: u64,
}

/// One partition's segments (see the module docs).
pub(super) struct PartitionLog {
    dir: PathBuf,
    segments: VecDeque<Segment>,
    segment_bytes: u64,
    sync: bool,
}

fn segment_path(dir: &Path, base: Offset) -> PathBuf {
    dir.join(format!("{base:020}.log"))
}

fn corrupt(path: &Path, what: impl std::fmt::Display) -> Error {
    Error::Fatal(format!("segment {}: {what}", path.display()))
}

fn check(body: &[u8]) -> u32 {
    xxhash_rust::xxh3::xxh3_64(body) as u32
}

/// Appends one record's frame to `buf`.
pub(super) fn encode_frame(buf: &mut Vec<u8>, offset: Offset, key: u64, headers: &Headers, value: &[u8]) -> Result<()> {
    let headers = codec::encode(headers)?;
    let body_len = FIXED + headers.len() + value.len();
    let len = u32::try_from(body_len).map_err(|_| Error::Fatal(format!("record of {body_len} bytes is too large")))?;
    let head = buf.len();
    buf.extend_from_slice(&[0; HEAD]);
    buf.extend_from_slice(&offset.to_le_bytes());
    buf.extend_from_slice(&key.to_le_bytes());
    buf.extend_from_slice(&(headers.len() as u32).to_le_bytes());
    buf.extend_from_slice(&headers);
    buf.extend_from_slice(value);
    let sum = check(&buf[head + HEAD..]);
    buf[head..head + 4].copy_from_slice(&len.to_le_bytes());
    buf[head + 4..head + HEAD].copy_from_slice(&sum.to_le_bytes());
    Ok(())
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(b)
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(b)
}

/// The frame at the start of `bytes`: its body and total length, or `None` when it is torn or
/// does not check out.
fn frame(bytes: &[u8]) -> Option<(&[u8], usize)> {
    if bytes.len() < HEAD {
        return None;
    }
    let len = u32_at(bytes, 0) as usize;
    let body = bytes.get(HEAD..HEAD + len)?;
    (len >= FIXED && check(body) == u32_at(bytes, 4)).then_some((body, HEAD + len))
}

fn decode_body(body: &[u8]) -> Result<Stored> {
    let headers_len = u32_at(body, 16) as usize;
    let headers = body.get(FIXED..FIXED + headers_len).ok_or_else(|| Error::Fatal("headers past the frame".into()))?;
    Ok(Stored {
        offset: u64_at(body, 0),
        key: u64_at(body, 8),
        headers: codec::decode(headers)?,
        value: body[FIXED + headers_len..].to_vec(),
    })
}

impl ReadPlan {
    /// Reads and decodes the planned records (outside the partition's lock).
    pub fn read(self) -> Result<Vec<Stored>> {
        let mut bytes = vec![0u8; (self.end - self.start) as usize];
        self.file.read_exact_at(&mut bytes, self.start)?;
        let mut out = Vec::with_capacity(self.count);
        let mut at = 0;
        while out.len() < self.count {
            let (body, size) =
                frame(&bytes[at..]).ok_or_else(|| Error::Fatal("a stored frame does not check".into()))?;
            let record = decode_body(body)?;
            let expected = self.first + out.len() as u64;
            if record.offset != expected {
                return Err(Error::Fatal(format!("offset {} stored where {expected} belongs", record.offset)));
            }
            out.push(record);
            at += size;
        }
        Ok(out)
    }
}

impl PartitionLog {
    /// Opens (creating) the partition in `dir`. A partition without segments starts at `empty_end`.
    pub fn open(dir: PathBuf, empty_end: Offset, segment_bytes: u64, sync: bool) -> Result<Self> {
        std::fs::create_dir_all(&dir)?;
        let mut bases = Vec::new();
        for entry in std::fs::read_dir(&dir)? {
            let name = entry?.file_name();
            let name = name.to_string_lossy();
            if let Some(base) = name.strip_suffix(".log").and_then(|b| b.parse::<Offset>().ok()) {
                bases.push(base);
            }
        }
        bases.sort_unstable();
        let mut log = Self { dir, segments: VecDeque::new(), segment_bytes: segment_bytes.max(1), sync };
        let count = bases.len();
        for (i, base) in bases.into_iter().enumerate() {
            let segment = log.recover(base, i + 1 == count)?;
            if let Some(prev) = log.segments.back() {
                if prev.end() != base {
                    return Err(corrupt(
                        &segment.path,
                        format_args!("starts at {base}, the one before ends at {}", prev.end()),
                    ));
                }
            }
            log.segments.push_back(segment);
        }
        if log.segments.is_empty() {
            log.create(empty_end)?;
        }
        Ok(log)
    }

    /// Scans a segment, building its positions; a torn or bad tail is cut when it is the last.
    fn recover(&self, base: Offset, last: bool) -> Result<Segment> {
        let path = segment_path(&self.dir, base);
        let file = OpenOptions::new().read(true).write(true).open(&path)?;
        let bytes = std::fs::read(&path)?;
        let mut positions = Vec::new();
        let mut at = 0usize;
        while at < bytes.len() {
            let offset = base + positions.len() as u64;
            match frame(&bytes[at..]) {
                Some((body, size)) if u64_at(body, 0) == offset => {
                    positions.push(at as u32);
                    at += size;
                }
                _ if last => {
                    tracing::warn!(segment = %path.display(), cut = bytes.len() - at, "cutting a torn tail");
                    file.set_len(at as u64)?;
                    file.sync_data()?;
                    break;
                }
                _ => return Err(corrupt(&path, format_args!("bad frame at byte {at}"))),
            }
        }
        Ok(Segment { base, path, file: Arc::new(file), positions, len: at as u64 })
    }

    fn create(&mut self, base: Offset) -> Result<()> {
        let path = segment_path(&self.dir, base);
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&path)?;
        if self.sync {
            File::open(&self.dir)?.sync_all()?;
        }
        self.segments.push_back(Segment { base, path, file: Arc::new(file), positions: Vec::new(), len: 0 });
        Ok(())
    }

    fn active(&mut self) -> &mut Segment {
        self.segments.back_mut().expect("a partition log always has an active segment")
    }

    /// The offset the next record gets.
    pub fn end(&self) -> Offset {
        self.segments.back().map_or(0, Segment::end)
    }

    /// The oldest offset stored.
    pub fn first(&self) -> Offset {
        self.segments.front().map_or(0, |s| s.base)
    }

    /// Appends frames (from [`encode_frame`], offsets from [`PartitionLog::end`] on) holding
    /// `count` records, whose starts within `frames` are `starts`. On a failed write the
    /// segment is cut back, so the log never holds a torn frame it has not been told about.
    pub fn append(&mut self, frames: &[u8], starts: &[u32]) -> Result<()> {
        let full = {
            let active = self.active();
            !active.positions.is_empty() && active.len + frames.len() as u64 > u64::from(u32::MAX)
                || active.len >= self.segment_bytes
        };
        if full {
            let end = self.end();
            self.create(end)?;
        }
        let sync = self.sync;
        let active = self.active();
        let at = active.len;
        if at + frames.len() as u64 > u64::from(u32::MAX) {
            return Err(Error::Fatal(format!("a batch of {} bytes does not fit a segment", frames.len())));
        }
        let written =
            active.file.write_all_at(frames, at).and_then(|()| if sync { active.file.sync_data() } else { Ok(()) });
        if let Err(e) = written {
            // Cut what part of the write landed; if even that fails the next append overwrites it.
            let _ = active.file.set_len(at);
            return Err(e.into());
        }
        active.positions.extend(starts.iter().map(|s| at as u32 + s));
        active.len += frames.len() as u64;
        super::writes::add(starts.len() as u64, frames.len() as u64);
        Ok(())
    }

    /// Where up to `max` records from `from` on are (within one segment), if any are stored.
    pub fn plan(&self, from: Offset, max: usize) -> Option<ReadPlan> {
        let i = self.segments.partition_point(|s| s.base <= from).checked_sub(1)?;
        let segment = &self.segments[i];
        let index = (from - segment.base) as usize;
        let count = segment.positions.len().checked_sub(index)?.min(max);
        if count == 0 {
            return None;
        }
        let end = segment.positions.get(index + count).map_or(segment.len, |&p| u64::from(p));
        Some(ReadPlan {
            file: segment.file.clone(),
            first: from,
            count,
            start: u64::from(segment.positions[index]),
            end,
        })
    }

    /// Syncs the active segment to disk (the others were synced when they were closed, or are
    /// on their way with the OS).
    pub fn sync(&self) -> Result<()> {
        if let Some(active) = self.segments.back() {
            active.file.sync_data()?;
        }
        Ok(())
    }

    /// Drops the segments every record of which is below `start`; rolls a large, fully consumed
    /// active segment first so it can go too.
    pub fn retain_from(&mut self, start: Offset) -> Result<()> {
        let end = self.end();
        if start >= end && self.active().len >= ROLL_WHEN_CONSUMED {
            self.create(end)?;
        }
        while self.segments.len() > 1 && self.segments[1].base <= start {
            if let Some(gone) = self.segments.pop_front() {
                std::fs::remove_file(&gone.path)?;
            }
        }
        Ok(())
    }

    /// Writes records migrated from an older store as this (empty) partition's first segment.
    pub fn import(&mut self, first: Offset, records: &[(u64, Headers, Vec<u8>)]) -> Result<()> {
        let mut frames = Vec::new();
        let mut starts = Vec::with_capacity(records.len());
        for (i, (key, headers, value)) in records.iter().enumerate() {
            starts.push(frames.len() as u32);
            encode_frame(&mut frames, first + i as u64, *key, headers, value)?;
        }
        let tmp = self.dir.join("import.tmp");
        std::fs::write(&tmp, &frames)?;
        File::open(&tmp)?.sync_all()?;
        // The empty segment goes first: a crash in between leaves no segment (the rows are
        // still there and are moved again), never two that do not join up.
        if let Some(empty) = self.segments.pop_back() {
            std::fs::remove_file(&empty.path)?;
        }
        std::fs::rename(&tmp, segment_path(&self.dir, first))?;
        File::open(&self.dir)?.sync_all()?;
        let segment = self.recover(first, true)?;
        self.segments.push_back(segment);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn append(log: &mut PartitionLog, values: &[u8]) {
        let mut frames = Vec::new();
        let mut starts = Vec::new();
        for (i, v) in values.iter().enumerate() {
            starts.push(frames.len() as u32);
            encode_frame(&mut frames, log.end() + i as u64, u64::from(*v), &Headers::default(), &[*v; 3]).unwrap();
        }
        log.append(&frames, &starts).unwrap();
    }

    fn values(log: &PartitionLog, from: Offset) -> Vec<(Offset, u8)> {
        let Some(plan) = log.plan(from, 100) else { return Vec::new() };
        plan.read().unwrap().into_iter().map(|r| (r.offset, r.value[0])).collect()
    }

    #[test]
    fn a_torn_tail_is_cut_and_the_log_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p");
        {
            let mut log = PartitionLog::open(path.clone(), 0, 1 << 20, false).unwrap();
            append(&mut log, &[1, 2, 3]);
        }
        let file = segment_path(&path, 0);
        let len = std::fs::metadata(&file).unwrap().len();
        // A kill in the middle of the third frame's write.
        OpenOptions::new().write(true).open(&file).unwrap().set_len(len - 4).unwrap();
        let mut log = PartitionLog::open(path, 0, 1 << 20, false).unwrap();
        assert_eq!(log.end(), 2);
        append(&mut log, &[9]);
        assert_eq!(values(&log, 0), vec![(0, 1), (1, 2), (2, 9)]);
    }

    #[test]
    fn corruption_before_the_tail_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p");
        {
            let mut log = PartitionLog::open(path.clone(), 0, 1, false).unwrap();
            append(&mut log, &[1, 2]);
            append(&mut log, &[3]);
        }
        let first = segment_path(&path, 0);
        let mut bytes = std::fs::read(&first).unwrap();
        bytes[HEAD + FIXED] ^= 0xff;
        std::fs::write(&first, bytes).unwrap();
        let e = PartitionLog::open(path, 0, 1, false).err().expect("corruption accepted");
        assert!(!e.is_transient(), "{e}");
    }

    #[test]
    fn segments_roll_and_consumed_ones_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p");
        let mut log = PartitionLog::open(path.clone(), 5, 1, false).unwrap();
        append(&mut log, &[1, 2]);
        append(&mut log, &[3]);
        append(&mut log, &[4]);
        assert_eq!((log.first(), log.end(), log.segments.len()), (5, 9, 3));
        // A read stops at a segment's end.
        assert_eq!(values(&log, 5), vec![(5, 1), (6, 2)]);
        assert_eq!(values(&log, 7), vec![(7, 3)]);
        assert!(values(&log, 9).is_empty());
        log.retain_from(8).unwrap();
        assert_eq!((log.first(), log.segments.len()), (8, 1));
        let reopened = PartitionLog::open(path, 0, 1, false).unwrap();
        assert_eq!((reopened.first(), reopened.end()), (8, 9));
        assert_eq!(values(&reopened, 8), vec![(8, 4)]);
    }

    #[test]
    fn an_empty_partition_starts_where_it_is_told() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = PartitionLog::open(dir.path().join("p"), 42, 1 << 20, false).unwrap();
        assert_eq!((log.first(), log.end()), (42, 42));
        append(&mut log, &[7]);
        assert_eq!(values(&log, 42), vec![(42, 7)]);
    }
}
