//! The durable embedded event log: each partition an append-only series of segment
//! files on local disk, Kafka's layout on one machine.
//!
//! `maily serve` without a broker needs a log that keeps accepted mail across a crash
//! or a restart: intake acknowledges a message once the log has it, and the memory log
//! loses everything with the process. This adapter keeps the memory log's semantics
//! (offsets, commits, retention once every committing group has passed, a partition
//! no group commits on keeping its newest records) but producers never wait for
//! consumers: the disk holds the backlog.
//!
//! Layout under the configured folder:
//!
//! ```text
//! LOCK                              locked while a process has the log open
//! <topic>/partitions                the partition count, written once
//! <topic>/<p>/<base:020>.log        segments, named by their first offset
//! <topic>/<p>/commits               groups' committed offsets, appended
//! ```
//!
//! Records are framed with their length and a CRC (see `segment`); a segment is rolled
//! once the next record would take it past `segment_bytes`.
//!
//! - **Durability.** `produce` returns once the records are written to the operating
//!   system, which a process crash does not lose. Power loss is what [`Fsync`] is
//!   for: `Always` syncs every partition a produce call wrote before it returns, one
//!   fsync serving all producers that wrote before it started (group commit).
//! - **Recovery.** Opening scans each partition's last segment and cuts a torn or
//!   corrupt tail (short frame, bad CRC, offset out of sequence) back to the last good
//!   record, with a warning naming the file and how many bytes went. Commits are
//!   advisory (consumers resume from offsets stored with their aggregates), so they
//!   are written but synced only before retention deletes what they release.
//! - **Memory.** Per partition, the newest `cache_records` records (within
//!   `cache_bytes`) and a sparse index
//!   (one entry per 64 KiB of segment); older records are read from the files on a
//!   blocking thread, as is every write, sync and deletion.

mod partition;
mod segment;
#[cfg(test)]
mod tests;

use async_trait::async_trait;
use maily_engine::Timestamp;
use maily_engine::partition::partition_for;
use maily_engine::ports::{EventLog, KeyedPayload, LogError, Record};
use partition::{Located, Partition};
use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;
use tracing::{info, warn};

/// When written records are forced to stable storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fsync {
    /// Before `produce` returns: an acknowledged record survives power loss.
    Always,
    /// From a background thread at this period: power loss can take the records
    /// acknowledged in the last period.
    Interval(Duration),
    /// When the operating system writes back: only a process crash is survived.
    Never,
}

/// Where and how the file log keeps its records.
#[derive(Debug, Clone)]
pub struct FileParams {
    /// The folder holding the topics; created if missing.
    pub dir: PathBuf,
    pub fsync: Fsync,
    /// A segment is rolled once the next record would take it past this size.
    pub segment_bytes: u64,
    /// Newest records kept in memory per partition, to answer consumers near the end
    /// without reading the files: at most this many...
    pub cache_records: usize,
    /// ...and at most this many bytes of them (one record at least), since a record
    /// may carry hundreds of messages.
    pub cache_bytes: u64,
    /// What a partition no group has committed on keeps (at least, in whole segments).
    pub retain_bytes_uncommitted: u64,
}

/// Why the log could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum FileLogError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{0} is in use by another process (or another log in this one)")]
    Locked(PathBuf),
    #[error("{path}: not a partition count: {text:?}")]
    BadTopic { path: PathBuf, text: String },
}

/// The durable event log in a local folder.
pub struct FileLog {
    inner: Arc<Inner>,
}

struct Inner {
    params: FileParams,
    closed: AtomicBool,
    topics: Mutex<HashMap<String, Arc<Topic>>>,
    /// Serialises topic creation, which runs on blocking threads.
    creating: Mutex<()>,
    /// Holds the folder's lock until the log is dropped.
    _lock: File,
}

struct Topic {
    partitions: Vec<Arc<Partition>>,
}

const LOCK: &str = "LOCK";
const PARTITIONS: &str = "partitions";

impl FileLog {
    /// Opens (or creates) the log in `params.dir`, recovering every partition.
    pub async fn open(params: FileParams) -> Result<Self, FileLogError> {
        let inner = tokio::task::spawn_blocking(move || Inner::open(params))
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))?;
        let inner = Arc::new(inner);
        if let Fsync::Interval(every) = inner.params.fsync {
            spawn_syncer(Arc::downgrade(&inner), every);
        }
        Ok(FileLog { inner })
    }

    /// Closes the log: every call, waiting ones included, fails with
    /// [`LogError::Closed`] from now on, and actors stop instead of restarting. Unless
    /// fsync is off, blocks while it syncs what was written.
    pub fn close(&self) {
        self.inner.closed.store(true, Ordering::SeqCst);
        for p in self.inner.all_partitions() {
            p.data.notify_waiters();
        }
        if self.inner.params.fsync != Fsync::Never {
            self.inner.sync_all();
        }
    }

    fn topic(&self, name: &str) -> Result<Arc<Topic>, LogError> {
        self.inner.check_open()?;
        lock(&self.inner.topics)
            .get(name)
            .cloned()
            .ok_or_else(|| LogError::UnknownTopic(name.to_string()))
    }

    fn partition(&self, topic: &str, partition: u32) -> Result<Arc<Partition>, LogError> {
        self.topic(topic)?
            .partitions
            .get(partition as usize)
            .cloned()
            .ok_or_else(|| LogError::NoSuchPartition {
                topic: topic.to_string(),
                partition,
            })
    }

    /// Runs a partition's file I/O on a blocking thread.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner) -> Result<T, LogError> + Send + 'static,
    ) -> Result<T, LogError> {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
    }
}

impl Inner {
    fn open(params: FileParams) -> Result<Inner, FileLogError> {
        let dir = &params.dir;
        let at = |path: &Path| {
            let path = path.to_path_buf();
            move |source| FileLogError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(at(dir))?;
        let lock_path = dir.join(LOCK);
        let lock_file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(at(&lock_path))?;
        match lock_file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(FileLogError::Locked(dir.clone()));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(at(&lock_path)(e)),
        }
        let mut topics = HashMap::new();
        for entry in std::fs::read_dir(dir).map_err(at(dir))? {
            let entry = entry.map_err(at(dir))?;
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            let meta = entry.path().join(PARTITIONS);
            // A folder without its partition count is a topic whose creation was cut
            // short; ensure_topic finishes it.
            if !valid_topic(&name) || !meta.is_file() {
                continue;
            }
            let text = std::fs::read_to_string(&meta).map_err(at(&meta))?;
            let count: u32 = text.trim().parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                FileLogError::BadTopic {
                    path: meta.clone(),
                    text: text.clone(),
                }
            })?;
            let topic =
                open_topic(&entry.path(), &name, count, &params).map_err(at(&entry.path()))?;
            topics.insert(name, Arc::new(topic));
        }
        info!(dir = %dir.display(), topics = topics.len(), fsync = ?params.fsync, "event log opened");
        Ok(Inner {
            params,
            closed: AtomicBool::new(false),
            topics: Mutex::new(topics),
            creating: Mutex::new(()),
            _lock: lock_file,
        })
    }

    fn check_open(&self) -> Result<(), LogError> {
        if self.closed.load(Ordering::SeqCst) {
            Err(LogError::Closed)
        } else {
            Ok(())
        }
    }

    fn all_partitions(&self) -> Vec<Arc<Partition>> {
        lock(&self.topics)
            .values()
            .flat_map(|t| t.partitions.iter().cloned())
            .collect()
    }

    /// Syncs every partition; failures are logged by the partition. Blocking.
    fn sync_all(&self) {
        for p in self.all_partitions() {
            let _ = p.sync_written();
        }
    }

    /// Creates a topic's folders, then records its partition count, last, so a
    /// creation cut short is finished by the next call. Blocking.
    fn create_topic(&self, name: &str, partitions: u32) -> Result<(), LogError> {
        let _creating = lock(&self.creating);
        if lock(&self.topics).contains_key(name) {
            return Ok(());
        }
        let dir = self.params.dir.join(name);
        let fail = |e: io::Error| LogError::Backend(format!("creating topic {name}: {e}"));
        let topic = open_topic(&dir, name, partitions, &self.params).map_err(fail)?;
        let sync = self.params.fsync != Fsync::Never;
        write_atomically(
            &dir.join(PARTITIONS),
            format!("{partitions}\n").as_bytes(),
            sync,
        )
        .and_then(|()| {
            if sync {
                sync_dir(&self.params.dir)
            } else {
                Ok(())
            }
        })
        .map_err(fail)?;
        lock(&self.topics).insert(name.to_string(), Arc::new(topic));
        Ok(())
    }
}

fn open_topic(dir: &Path, name: &str, partitions: u32, params: &FileParams) -> io::Result<Topic> {
    let partitions = (0..partitions)
        .map(|p| Partition::open(name, p, dir.join(p.to_string()), params).map(Arc::new))
        .collect::<io::Result<_>>()?;
    Ok(Topic { partitions })
}

/// Kafka's rule for topic names, which also keeps them safe as folder names.
fn valid_topic(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// Syncs the log every `every` until it is dropped or closed; a dedicated thread, so a
/// slow disk never holds up the async runtime.
fn spawn_syncer(inner: Weak<Inner>, every: Duration) {
    let spawned = std::thread::Builder::new()
        .name("maily-log-fsync".into())
        .spawn(move || {
            loop {
                std::thread::sleep(every);
                let Some(inner) = inner.upgrade() else { return };
                if inner.closed.load(Ordering::SeqCst) {
                    return;
                }
                inner.sync_all();
            }
        });
    if let Err(e) = spawned {
        // Records still reach the operating system; only power loss could take more.
        warn!(error = %e, "starting the event log's fsync thread failed; writes are not synced");
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain data behind; keep serving it.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Syncs a folder, so files created or renamed in it survive power loss.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Replaces `path` with `bytes` through a temporary file and a rename, so a crash
/// leaves the old content or the new, never a mix.
fn write_atomically(path: &Path, bytes: &[u8], sync: bool) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = File::create(&tmp)?;
    file.write_all(bytes)?;
    if sync {
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    match path.parent() {
        Some(dir) if sync => sync_dir(dir),
        _ => Ok(()),
    }
}

#[async_trait]
impl EventLog for FileLog {
    async fn ensure_topic(&self, topic: &str, partitions: u32) -> Result<(), LogError> {
        self.inner.check_open()?;
        if let Some(t) = lock(&self.inner.topics).get(topic) {
            if t.partitions.len() != partitions.max(1) as usize {
                warn!(
                    topic,
                    kept = t.partitions.len(),
                    asked = partitions,
                    "topic exists with another partition count; keeping it"
                );
            }
            return Ok(());
        }
        if !valid_topic(topic) {
            return Err(LogError::Backend(format!(
                "{topic:?} is not a valid topic name (letters, digits, '.', '_', '-')"
            )));
        }
        let name = topic.to_string();
        self.blocking(move |inner| inner.create_topic(&name, partitions.max(1)))
            .await
    }

    async fn partitions(&self, topic: &str) -> Result<u32, LogError> {
        Ok(self.topic(topic)?.partitions.len() as u32)
    }

    async fn produce(
        &self,
        topic: &str,
        records: Vec<KeyedPayload>,
    ) -> Result<Vec<(u32, u64)>, LogError> {
        let t = self.topic(topic)?;
        metrics::counter!("maily_log_records_total", "topic" => topic.to_string())
            .increment(records.len() as u64);
        let n = t.partitions.len() as u32;
        let now = Timestamp::now();
        let count = records.len();
        // Each partition's records in order, with their places in the answer.
        let mut groups: BTreeMap<u32, (Vec<usize>, Vec<KeyedPayload>)> = BTreeMap::new();
        for (i, (key, payload)) in records.into_iter().enumerate() {
            let group = groups.entry(partition_for(&key, n)).or_default();
            group.0.push(i);
            group.1.push((key, payload));
        }
        // The partitions are written (and synced) side by side.
        let writes = groups.into_iter().map(|(p, (places, records))| {
            let partition = Arc::clone(&t.partitions[p as usize]);
            async move {
                let first = self
                    .blocking(move |inner| partition.append(&inner.params, records, now))
                    .await?;
                Ok::<_, LogError>((p, places, first))
            }
        });
        let mut out = vec![(0, 0); count];
        for written in futures::future::join_all(writes).await {
            let (p, places, first) = written?;
            for (k, i) in places.into_iter().enumerate() {
                out[i] = (p, first + k as u64);
            }
        }
        Ok(out)
    }

    async fn fetch(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Record>, LogError> {
        let p = self.partition(topic, partition)?;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let data = p.data.notified();
            self.inner.check_open()?;
            match p.locate(offset, max)? {
                Located::Cached(records) => return Ok(records),
                Located::Disk(read) => {
                    let p = Arc::clone(&p);
                    return self.blocking(move |_| p.read(read)).await;
                }
                Located::AtEnd => {}
            }
            if tokio::time::timeout_at(deadline, data).await.is_err() {
                return Ok(Vec::new());
            }
        }
    }

    async fn end_offset(&self, topic: &str, partition: u32) -> Result<u64, LogError> {
        Ok(self.partition(topic, partition)?.end())
    }

    async fn commit(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
        offset: u64,
    ) -> Result<(), LogError> {
        let p = self.partition(topic, partition)?;
        let group = group.to_string();
        self.blocking(move |inner| p.commit(&inner.params, &group, offset))
            .await
    }

    async fn committed(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
    ) -> Result<Option<u64>, LogError> {
        Ok(self.partition(topic, partition)?.committed(group))
    }
}
