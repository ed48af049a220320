//! One partition of the file log: its segment files, its commits file and what is kept
//! of them in memory.
//!
//! Three locks, each for one kind of caller, so a reader on the async runtime never
//! waits behind a disk write or an fsync:
//! - `writer` (blocking threads only): the active segment's file handle and position.
//!   Producers hold it while they write, never while they sync.
//! - `view` (anyone, briefly): what fetches need to find a record: segment sizes and
//!   indexes, the end offset, the cache of newest records, the committed offsets.
//! - `commits` (blocking threads only): the commits file; retention runs under it so
//!   two passes never delete the same segments.
//!
//! Lock order: `synced` before `writer`, `writer` or `commits` before `view`.

use super::segment::{self, ReadError};
use super::{FileParams, Fsync, lock, sync_dir, write_atomically};
use maily_engine::Timestamp;
use maily_engine::ports::{KeyedPayload, LogError, Record};
use std::collections::{BTreeMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;
use tracing::warn;

/// Bytes between two entries of a segment's sparse index: a read from disk scans at
/// most this much before its first record, and the index costs 16 bytes per 64 KiB
/// retained.
pub const INDEX_INTERVAL: u64 = 64 << 10;
/// About the most record bytes one fetch reads from disk (at least one record), so a
/// fetch of many large records far behind the end does not load them all at once.
const FETCH_MAX_BYTES: usize = 4 << 20;
/// The commits file is rewritten with only the latest offset of each group once its
/// appended history grows past this.
const COMMITS_COMPACT_BYTES: u64 = 64 << 10;
const COMMITS: &str = "commits";

/// One partition, shared by the async front and the blocking threads doing its I/O.
pub struct Partition {
    pub topic: String,
    pub id: u32,
    dir: PathBuf,
    writer: Mutex<Writer>,
    view: Mutex<View>,
    commits: Mutex<Commits>,
    /// How many of `Writer::written` bytes a sync has covered.
    synced: Mutex<u64>,
    /// Woken when records are appended, and when the log closes.
    pub data: Notify,
}

struct Writer {
    /// The active segment, opened for appending.
    file: Arc<File>,
    base: u64,
    size: u64,
    next: u64,
    /// Position of the active segment's newest index entry.
    indexed: u64,
    /// Bytes appended since the log was opened, over all segments: a producer's write
    /// is durable once a sync has covered the count its write brought this to, so one
    /// fsync serves every producer that wrote before it started (group commit).
    written: u64,
    /// Rolled-away segments the next sync must cover before the active one.
    unsynced: Vec<Arc<File>>,
    /// Whether a segment file was created since the last sync (its directory entry
    /// needs syncing too).
    dir_changed: bool,
    /// Why the partition refuses records: a write that could not be undone or a failed
    /// fsync (after which the kernel may have dropped the unwritten pages, so
    /// retrying could report success for lost data). Reopening the log recovers.
    broken: Option<String>,
}

/// Where the writer stood before a write, to undo a write that failed half-way.
struct Undo {
    file: Arc<File>,
    base: u64,
    size: u64,
    next: u64,
    indexed: u64,
    unsynced: usize,
}

struct View {
    end: u64,
    segments: BTreeMap<u64, Segment>,
    cache: VecDeque<Record>,
    /// Bytes the cached records hold (payloads and keys).
    cached_bytes: u64,
    commits: BTreeMap<String, u64>,
}

/// What a cached record costs in memory, roughly.
fn cost(r: &Record) -> u64 {
    (r.payload.len() + r.key.len() + std::mem::size_of::<Record>()) as u64
}

impl View {
    /// Drops the oldest cached records beyond the cache's bounds.
    fn trim_cache(&mut self, records: usize, bytes: u64) {
        while self.cache.len() > records || (self.cached_bytes > bytes && self.cache.len() > 1) {
            match self.cache.pop_front() {
                Some(r) => self.cached_bytes -= cost(&r),
                None => break,
            }
        }
    }
}

struct Segment {
    size: u64,
    /// Sparse `(offset, position)` pairs, first frame first; `None` for a segment
    /// written before the log was opened until a read needs it.
    index: Option<Vec<(u64, u64)>>,
}

struct Commits {
    file: File,
    size: u64,
}

/// A read the cache cannot answer: a byte range of one segment.
pub struct DiskRead {
    path: PathBuf,
    base: u64,
    size: u64,
    /// Where to start scanning, when the segment's index is known.
    from: Option<u64>,
    offset: u64,
    max: usize,
}

/// Where a fetch finds its records.
pub enum Located {
    Cached(Vec<Record>),
    Disk(DiskRead),
    /// Nothing at or after the offset yet.
    AtEnd,
}

impl View {
    fn start(&self) -> u64 {
        *self
            .segments
            .keys()
            .next()
            .expect("a partition always has its active segment")
    }
}

impl Partition {
    /// Opens the partition in `dir`, creating it if needed, and recovers its last
    /// segment; logs what a torn tail cost.
    pub fn open(topic: &str, id: u32, dir: PathBuf, params: &FileParams) -> io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        let mut bases = Vec::new();
        for entry in std::fs::read_dir(&dir)? {
            let name = entry?.file_name();
            if let Some(base) = name.to_str().and_then(segment::parse_segment_name) {
                bases.push(base);
            }
        }
        bases.sort_unstable();
        if bases.is_empty() {
            File::create(dir.join(segment::segment_name(0)))?;
            sync_dir(&dir)?;
            bases.push(0);
        }
        let (last, last_path, recovered) = loop {
            let last = *bases.last().expect("at least one segment");
            let path = dir.join(segment::segment_name(last));
            let recovered =
                segment::recover(&path, last, id, params.cache_records, INDEX_INTERVAL)?;
            if let Some((bytes, why)) = &recovered.cut {
                warn!(
                    topic,
                    partition = id,
                    file = %path.display(),
                    cut_bytes = bytes,
                    reason = %why,
                    "cut a torn or corrupt tail off the event log"
                );
            }
            // A crash just after a roll leaves an empty newest segment, and the tail
            // of the one before may be what never reached the disk: drop the empty
            // one and check that.
            if recovered.size > 0 || bases.len() == 1 {
                break (last, path, recovered);
            }
            std::fs::remove_file(&path)?;
            bases.pop();
        };
        let mut segments = BTreeMap::new();
        for &base in &bases[..bases.len() - 1] {
            let size = std::fs::metadata(dir.join(segment::segment_name(base)))?.len();
            segments.insert(base, Segment { size, index: None });
        }
        let indexed = recovered.index.last().map_or(0, |(_, pos)| *pos);
        segments.insert(
            last,
            Segment {
                size: recovered.size,
                index: Some(recovered.index),
            },
        );
        let (commits, commits_size) = load_commits(topic, id, &dir)?;
        let file = OpenOptions::new().append(true).open(&last_path)?;
        Ok(Partition {
            topic: topic.to_string(),
            id,
            writer: Mutex::new(Writer {
                file: Arc::new(file),
                base: last,
                size: recovered.size,
                next: recovered.end,
                indexed,
                written: 0,
                unsynced: Vec::new(),
                dir_changed: false,
                broken: None,
            }),
            view: Mutex::new({
                let mut view = View {
                    end: recovered.end,
                    segments,
                    cached_bytes: recovered.tail.iter().map(cost).sum(),
                    cache: recovered.tail,
                    commits,
                };
                view.trim_cache(params.cache_records, params.cache_bytes);
                view
            }),
            commits: Mutex::new(Commits {
                file: OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(dir.join(COMMITS))?,
                size: commits_size,
            }),
            synced: Mutex::new(0),
            data: Notify::new(),
            dir,
        })
    }

    fn error(&self, what: &str, e: impl std::fmt::Display) -> LogError {
        LogError::Backend(format!("{}/{}: {what}: {e}", self.topic, self.id))
    }

    /// Appends records with consecutive offsets and returns the first one's; with
    /// [`Fsync::Always`] only once they are on stable storage. Blocking.
    pub fn append(
        &self,
        params: &FileParams,
        records: Vec<KeyedPayload>,
        now: Timestamp,
    ) -> Result<u64, LogError> {
        if let Some((key, payload)) = records.iter().find(|(k, p)| !segment::record_fits(k, p)) {
            return Err(self.error(
                "record refused",
                format!(
                    "{} bytes is over the limit of {}",
                    key.len() + payload.len(),
                    segment::MAX_BODY
                ),
            ));
        }
        let (first, ticket, rolled) = {
            let mut w = lock(&self.writer);
            if let Some(why) = &w.broken {
                return Err(self.error("partition refuses records until reopened", why));
            }
            let undo = Undo {
                file: Arc::clone(&w.file),
                base: w.base,
                size: w.size,
                next: w.next,
                indexed: w.indexed,
                unsynced: w.unsynced.len(),
            };
            let mut created = Vec::new();
            match self.write(params, &mut w, records, now, &mut created) {
                Ok(done) => done,
                Err(e) => {
                    self.undo(&mut w, undo, created, &e);
                    return Err(self.error("writing records", e));
                }
            }
        };
        self.data.notify_waiters();
        if params.fsync == Fsync::Always {
            self.sync(ticket)?;
        }
        if rolled {
            self.retain(params, &mut lock(&self.commits))?;
        }
        Ok(first)
    }

    /// Writes the records' frames, rolling to a new segment when the active one is
    /// full, then shows them to readers. Returns the first offset, the sync ticket and
    /// whether a segment was rolled.
    fn write(
        &self,
        params: &FileParams,
        w: &mut Writer,
        records: Vec<KeyedPayload>,
        now: Timestamp,
        created: &mut Vec<PathBuf>,
    ) -> io::Result<(u64, u64, bool)> {
        let first = w.next;
        let mut buf = Vec::new();
        let mut fresh = Vec::with_capacity(records.len());
        // (segment base, offset, position) of new index entries; (base, size) of
        // segments rolled away.
        let mut index = Vec::new();
        let mut full = Vec::new();
        let mut bytes = 0;
        for (key, payload) in records {
            let len = segment::record_frame_len(&key, &payload);
            let pos = w.size + buf.len() as u64;
            if pos > 0 && pos + len > params.segment_bytes {
                (&*w.file).write_all(&buf)?;
                bytes += buf.len() as u64;
                buf.clear();
                w.size = pos;
                full.push((w.base, w.size));
                self.roll(params, w, created)?;
            }
            let pos = w.size + buf.len() as u64;
            if pos == 0 || pos - w.indexed >= INDEX_INTERVAL {
                index.push((w.base, w.next, pos));
                w.indexed = pos;
            }
            segment::encode_record(&mut buf, w.next, now, &key, &payload);
            fresh.push(Record {
                partition: self.id,
                offset: w.next,
                key,
                payload,
                timestamp: now,
            });
            w.next += 1;
        }
        (&*w.file).write_all(&buf)?;
        bytes += buf.len() as u64;
        w.size += buf.len() as u64;
        w.written += bytes;
        let mut v = lock(&self.view);
        for (base, size) in full {
            v.segments.entry(base).or_insert_with(new_segment).size = size;
        }
        v.segments.entry(w.base).or_insert_with(new_segment).size = w.size;
        for (base, offset, pos) in index {
            if let Some(ix) = v.segments.get_mut(&base).and_then(|s| s.index.as_mut()) {
                ix.push((offset, pos));
            }
        }
        v.end = w.next;
        v.cached_bytes += fresh.iter().map(cost).sum::<u64>();
        v.cache.extend(fresh);
        v.trim_cache(params.cache_records, params.cache_bytes);
        self.gauge(&v);
        Ok((first, w.written, !created.is_empty()))
    }

    /// Starts a new segment at the next offset.
    fn roll(
        &self,
        params: &FileParams,
        w: &mut Writer,
        created: &mut Vec<PathBuf>,
    ) -> io::Result<()> {
        let path = self.dir.join(segment::segment_name(w.next));
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)?;
        created.push(path);
        let old = std::mem::replace(&mut w.file, Arc::new(file));
        if params.fsync != Fsync::Never {
            w.unsynced.push(old);
            w.dir_changed = true;
        }
        w.base = w.next;
        w.size = 0;
        w.indexed = 0;
        Ok(())
    }

    /// Puts the writer back where it stood before a failed write (nothing was shown to
    /// readers yet); if the files cannot be put back, the partition refuses records.
    fn undo(&self, w: &mut Writer, undo: Undo, created: Vec<PathBuf>, cause: &io::Error) {
        let restored = created
            .iter()
            .try_for_each(std::fs::remove_file)
            .and_then(|()| undo.file.set_len(undo.size));
        w.file = undo.file;
        w.base = undo.base;
        w.size = undo.size;
        w.next = undo.next;
        w.indexed = undo.indexed;
        w.unsynced.truncate(undo.unsynced);
        if let Err(e) = restored {
            tracing::error!(
                topic = %self.topic,
                partition = self.id,
                error = %e,
                cause = %cause,
                "a failed write to the event log could not be undone; the partition refuses records until the log is reopened"
            );
            w.broken = Some(format!("undoing a failed write ({cause}): {e}"));
        }
    }

    /// Makes every byte written so far durable. Blocking.
    pub fn sync_written(&self) -> Result<(), LogError> {
        let ticket = lock(&self.writer).written;
        self.sync(ticket)
    }

    /// Returns once a sync has covered `ticket` written bytes: by this call's fsync,
    /// or by one another producer started after `ticket` was written.
    fn sync(&self, ticket: u64) -> Result<(), LogError> {
        let mut synced = lock(&self.synced);
        if *synced >= ticket {
            return Ok(());
        }
        let (file, written, older, dir_changed) = {
            let mut w = lock(&self.writer);
            if let Some(why) = &w.broken {
                return Err(self.error("partition refuses records until reopened", why));
            }
            (
                Arc::clone(&w.file),
                w.written,
                std::mem::take(&mut w.unsynced),
                std::mem::take(&mut w.dir_changed),
            )
        };
        let result = older
            .iter()
            .chain([&file])
            .try_for_each(|f| f.sync_data())
            .and_then(|()| {
                if dir_changed {
                    sync_dir(&self.dir)
                } else {
                    Ok(())
                }
            });
        if let Err(e) = result {
            tracing::error!(
                topic = %self.topic,
                partition = self.id,
                error = %e,
                "event log fsync failed; the partition refuses records until the log is reopened"
            );
            lock(&self.writer).broken = Some(format!("fsync failed: {e}"));
            return Err(self.error("fsync", e));
        }
        *synced = written;
        Ok(())
    }

    /// Records a group's offset and applies retention. Blocking.
    pub fn commit(&self, params: &FileParams, group: &str, offset: u64) -> Result<(), LogError> {
        let mut c = lock(&self.commits);
        let mut buf = Vec::new();
        segment::encode_commit(&mut buf, group, offset);
        if let Err(e) = (&c.file).write_all(&buf) {
            // A torn commit frame would be cut at the next open anyway; cut it now so
            // the next commit is not appended behind it.
            let _ = c.file.set_len(c.size);
            return Err(self.error("writing a commit", e));
        }
        c.size += buf.len() as u64;
        lock(&self.view).commits.insert(group.to_string(), offset);
        if c.size > COMMITS_COMPACT_BYTES
            && let Err(e) = self.compact_commits(params, &mut c)
        {
            // The appended history is still whole; compaction is tried again next time.
            warn!(topic = %self.topic, partition = self.id, error = %e, "compacting the commits file failed");
        }
        self.retain(params, &mut c)
    }

    /// Rewrites the commits file with each group's latest offset only.
    fn compact_commits(&self, params: &FileParams, c: &mut Commits) -> io::Result<()> {
        let mut buf = Vec::new();
        for (group, offset) in &lock(&self.view).commits {
            segment::encode_commit(&mut buf, group, *offset);
        }
        let path = self.dir.join(COMMITS);
        write_atomically(&path, &buf, params.fsync != Fsync::Never)?;
        c.file = OpenOptions::new().append(true).open(&path)?;
        c.size = buf.len() as u64;
        Ok(())
    }

    /// The offset `group` last committed.
    pub fn committed(&self, group: &str) -> Option<u64> {
        lock(&self.view).commits.get(group).copied()
    }

    /// The offset the next record gets.
    pub fn end(&self) -> u64 {
        lock(&self.view).end
    }

    /// Deletes whole segments no one needs: those wholly below the lowest offset the
    /// groups that committed on this partition have reached or, if none has, the
    /// oldest ones beyond the newest `retain_bytes_uncommitted`. The active segment
    /// always stays. Blocking; runs under the commits lock.
    fn retain(&self, params: &FileParams, c: &mut Commits) -> Result<(), LogError> {
        let (doomed, by_commits) = {
            let v = lock(&self.view);
            let sizes: Vec<(u64, u64)> = v.segments.iter().map(|(b, s)| (*b, s.size)).collect();
            match v.commits.values().min() {
                Some(&min) => {
                    let below = sizes.windows(2).take_while(|w| w[1].0 <= min);
                    (below.map(|w| w[0].0).collect::<Vec<_>>(), true)
                }
                None => {
                    let mut total: u64 = sizes.iter().map(|(_, size)| size).sum();
                    let mut doomed = Vec::new();
                    for (base, size) in &sizes[..sizes.len() - 1] {
                        if total - size < params.retain_bytes_uncommitted {
                            break;
                        }
                        total -= size;
                        doomed.push(*base);
                    }
                    (doomed, false)
                }
            }
        };
        if doomed.is_empty() {
            return Ok(());
        }
        // The commits that allow the deletion reach the disk first, so after a power
        // loss no group's committed offset points below the earliest retained one.
        if by_commits && params.fsync != Fsync::Never {
            c.file
                .sync_data()
                .map_err(|e| self.error("syncing commits", e))?;
        }
        {
            let mut v = lock(&self.view);
            for base in &doomed {
                v.segments.remove(base);
            }
            let start = v.start();
            while v.cache.front().is_some_and(|r| r.offset < start) {
                if let Some(r) = v.cache.pop_front() {
                    v.cached_bytes -= cost(&r);
                }
            }
            self.gauge(&v);
        }
        for base in doomed {
            let path = self.dir.join(segment::segment_name(base));
            // A segment left behind is only disk space: the next open finds it again
            // as the earliest retained one.
            if let Err(e) = std::fs::remove_file(&path)
                && e.kind() != io::ErrorKind::NotFound
            {
                warn!(file = %path.display(), error = %e, "deleting an event log segment failed");
            }
        }
        Ok(())
    }

    /// Finds records from `offset` on: in the cache, on disk, or not yet written.
    pub fn locate(&self, offset: u64, max: usize) -> Result<Located, LogError> {
        let v = lock(&self.view);
        let start = v.start();
        if offset < start {
            return Err(LogError::OffsetOutOfRange {
                topic: self.topic.clone(),
                partition: self.id,
                offset,
                earliest: start,
            });
        }
        if offset > v.end {
            return Err(LogError::BeyondEnd {
                topic: self.topic.clone(),
                partition: self.id,
                offset,
                end: v.end,
            });
        }
        if offset == v.end {
            return Ok(Located::AtEnd);
        }
        let cached = v.cache.front().map_or(v.end, |r| r.offset);
        if offset >= cached {
            let skip = (offset - cached) as usize;
            return Ok(Located::Cached(
                v.cache.range(skip..).take(max).cloned().collect(),
            ));
        }
        let (&base, seg) = v
            .segments
            .range(..=offset)
            .next_back()
            .expect("offset is at or after the first segment");
        let from = seg.index.as_ref().map(|ix| {
            let i = ix.partition_point(|(o, _)| *o <= offset);
            ix[..i].last().map_or(0, |(_, pos)| *pos)
        });
        Ok(Located::Disk(DiskRead {
            path: self.dir.join(segment::segment_name(base)),
            base,
            size: seg.size,
            from,
            offset,
            max,
        }))
    }

    /// Reads what [`Partition::locate`] found on disk. Blocking.
    pub fn read(&self, read: DiskRead) -> Result<Vec<Record>, LogError> {
        let result = (|| {
            let from = match read.from {
                Some(from) => from,
                None => {
                    let ix = segment::build_index(&read.path, read.size, INDEX_INTERVAL)?;
                    let i = ix.partition_point(|(o, _)| *o <= read.offset);
                    let from = ix[..i].last().map_or(0, |(_, pos)| *pos);
                    if let Some(seg) = lock(&self.view).segments.get_mut(&read.base) {
                        seg.index.get_or_insert(ix);
                    }
                    from
                }
            };
            segment::read_records(
                &read.path,
                self.id,
                (from, read.size),
                read.offset,
                read.max,
                FETCH_MAX_BYTES,
            )
        })();
        match result {
            Ok(records) if records.is_empty() && read.max > 0 => Err(self.error(
                "reading records",
                format!(
                    "offset {} is missing from {}",
                    read.offset,
                    read.path.display()
                ),
            )),
            Ok(records) => Ok(records),
            // Retention deleted the segment since it was located.
            Err(ReadError::Io(e)) if e.kind() == io::ErrorKind::NotFound => {
                let start = lock(&self.view).start();
                if read.offset < start {
                    Err(LogError::OffsetOutOfRange {
                        topic: self.topic.clone(),
                        partition: self.id,
                        offset: read.offset,
                        earliest: start,
                    })
                } else {
                    Err(self.error(&format!("reading {}", read.path.display()), e))
                }
            }
            Err(e) => Err(self.error(&format!("reading {}", read.path.display()), e)),
        }
    }

    fn gauge(&self, v: &View) {
        metrics::gauge!("maily_log_partition_depth", "topic" => self.topic.clone())
            .set((v.end - v.start()) as f64);
    }
}

fn new_segment() -> Segment {
    Segment {
        size: 0,
        index: Some(Vec::new()),
    }
}

/// Reads the partition's commits file (the last offset of each group wins), cutting a
/// torn tail; returns the offsets and the file's good length.
fn load_commits(topic: &str, id: u32, dir: &Path) -> io::Result<(BTreeMap<String, u64>, u64)> {
    let path = dir.join(COMMITS);
    let file = match OpenOptions::new().read(true).write(true).open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((BTreeMap::new(), 0)),
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    let mut commits = BTreeMap::new();
    let scanned = segment::scan(&file, 0, len, |_, body| {
        let (group, offset) = segment::decode_commit(body)?;
        commits.insert(group, offset);
        Ok(ControlFlow::Continue(()))
    })?;
    if let Some(why) = scanned.bad {
        warn!(
            topic,
            partition = id,
            file = %path.display(),
            cut_bytes = len - scanned.pos,
            reason = %why,
            "cut a torn or corrupt tail off the event log's commits"
        );
        file.set_len(scanned.pos)?;
        file.sync_all()?;
    }
    Ok((commits, scanned.pos))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(offset: u64, size: usize) -> Record {
        Record {
            partition: 0,
            offset,
            key: Vec::new(),
            payload: vec![0; size],
            timestamp: maily_engine::Timestamp(0),
        }
    }

    #[test]
    fn the_cache_keeps_the_newest_records_within_both_bounds() {
        let mut v = View {
            end: 10,
            segments: BTreeMap::new(),
            cache: VecDeque::new(),
            cached_bytes: 0,
            commits: BTreeMap::new(),
        };
        let add = |v: &mut View, r: Record| {
            v.cached_bytes += cost(&r);
            v.cache.push_back(r);
        };
        for i in 0..10 {
            add(&mut v, record(i, 1000));
        }
        v.trim_cache(8, u64::MAX);
        assert_eq!(v.cache.front().map(|r| r.offset), Some(2));
        let one = cost(&record(0, 1000));
        v.trim_cache(8, 3 * one);
        assert_eq!(v.cache.len(), 3);
        assert_eq!(v.cache.front().map(|r| r.offset), Some(7));
        assert_eq!(v.cached_bytes, 3 * one);
        // One record bigger than the whole budget stays: the newest is always kept.
        add(&mut v, record(10, 100_000));
        v.trim_cache(8, 3 * one);
        assert_eq!(v.cache.len(), 1);
        assert_eq!(v.cached_bytes, cost(&record(10, 100_000)));
    }
}
