//! The Kafka adapter of the event-log port, on rdkafka (librdkafka built from source).
//!
//! - One idempotent producer, tuned for throughput (linger, batch size, compression
//!   from config). Records are placed with the engine's partitioner, so a record lands
//!   in the same partition whichever adapter wrote it.
//! - Reads go through one consumer per topic with manual assignment, polled by a
//!   thread of its own that fills a bounded buffer per partition (fetching of a full
//!   one is paused). A partition is positioned at exactly the offset the caller asks
//!   for, which is the offset stored with the aggregates, not the broker's group
//!   offset; a position outside the log is an error naming topic and partition.
//! - `commit` writes offsets under a consumer group (`<group_prefix><group>`) so the
//!   usual lag tools show how far each stage is behind.

use async_trait::async_trait;
use maily_engine::Timestamp;
use maily_engine::partition::partition_for;
use maily_engine::ports::{EventLog, KeyedPayload, LogError, Record};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::mpsc::TryRecvError;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, Notify};
use tracing::{debug, warn};

/// How to reach and use the broker.
#[derive(Debug, Clone)]
pub struct KafkaParams {
    /// `host:port[,host:port...]`
    pub brokers: String,
    /// Prepended to every topic name, so several engines (or tests) share a broker.
    pub topic_prefix: String,
    /// Prepended to every consumer group name.
    pub group_prefix: String,
    pub replication_factor: i32,
    /// How long the producer waits to fill a batch.
    pub linger: Duration,
    /// Largest producer batch in bytes.
    pub batch_bytes: usize,
    /// `none`, `gzip`, `snappy`, `lz4` or `zstd`.
    pub compression: String,
    /// A produce not acknowledged within this time fails.
    pub message_timeout: Duration,
    /// Timeout of metadata and admin requests.
    pub request_timeout: Duration,
    /// How long the broker may hold a fetch that finds nothing new
    /// (`fetch.wait.max.ms`). Kafka answers a held fetch as soon as a record arrives,
    /// so this bounds only what an idle engine asks of the broker: one fetch for all
    /// of its partitions per `fetch_wait`.
    pub fetch_wait: Duration,
    /// Extra librdkafka properties, applied to every client.
    pub extra: BTreeMap<String, String>,
}

impl KafkaParams {
    /// Parameters with throughput-minded defaults for `brokers`.
    pub fn new(brokers: impl Into<String>) -> Self {
        KafkaParams {
            brokers: brokers.into(),
            topic_prefix: "maily.".into(),
            group_prefix: "maily.".into(),
            replication_factor: 1,
            linger: Duration::from_millis(5),
            batch_bytes: 1024 * 1024,
            compression: "lz4".into(),
            message_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(10),
            fetch_wait: Duration::from_millis(500),
            extra: BTreeMap::new(),
        }
    }

    fn base(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers);
        for (k, v) in &self.extra {
            c.set(k, v);
        }
        c
    }
}

/// Records a partition's buffer holds before its fetching is paused.
const BUFFER_HIGH: usize = 4096;
/// Fetching of a paused partition resumes once its buffer is down to this.
const BUFFER_LOW: usize = BUFFER_HIGH / 2;
/// After the first record of a fetch, how long to wait for more before returning.
const FETCH_LINGER: Duration = Duration::from_millis(5);
/// How long the poll thread blocks in one poll: the longest a repositioning waits
/// before the thread applies it.
const POLL_EVERY: Duration = Duration::from_millis(10);
/// A partition nobody has fetched from for this long is unassigned (its actor moved to
/// another process or stopped), so the broker stops sending it.
const IDLE_RELEASE: Duration = Duration::from_secs(30);

/// A partition being read: the full topic name and the partition.
type Key = (String, u32);

/// The reading side of the log: one consumer for every topic, polled by a thread of
/// its own that hands each record to its partition's buffer. Assignments change only
/// on that thread, between polls, so a record polled after a repositioning belongs to
/// it (librdkafka drops records fetched for an earlier position of the partition).
struct Reader {
    shared: Arc<Shared>,
    commands: std::sync::mpsc::Sender<Command>,
}

struct Shared {
    partitions: StdMutex<HashMap<Key, Arc<PartitionSlot>>>,
}

/// One partition being read.
struct PartitionSlot {
    state: StdMutex<SlotState>,
    /// Woken when records arrive or the slot is released.
    data: Notify,
}

/// The records of one partition in `[start, received)`, as the broker delivered them.
struct SlotState {
    /// The lowest offset the buffer answers for; a fetch below it repositions.
    start: u64,
    /// The offset after the last record received: a fetch above it repositions.
    received: u64,
    buffer: VecDeque<Record>,
    /// Bumped by every repositioning; `applied` catches up when the poll thread has
    /// assigned the partition at the new position. Records polled in between belong
    /// to the old position and are dropped.
    generation: u64,
    applied: u64,
    paused: bool,
    last_fetch: Instant,
    /// Dropped by the poll thread (idle, or its assignment failed): the next fetch
    /// takes a new slot.
    released: bool,
    /// Why the poll thread could not assign the partition, for the next fetch.
    failed: Option<String>,
}

enum Command {
    Assign {
        key: Key,
        offset: u64,
        generation: u64,
    },
    Resume {
        key: Key,
        generation: u64,
    },
}

/// The Kafka event log.
pub struct KafkaLog {
    params: KafkaParams,
    producer: FutureProducer,
    admin: AdminClient<DefaultClientContext>,
    partition_counts: StdMutex<HashMap<String, u32>>,
    reader: Mutex<Option<Reader>>,
    committers: StdMutex<HashMap<String, Arc<BaseConsumer>>>,
}

fn backend(what: &str, e: KafkaError) -> LogError {
    LogError::Backend(format!("{what}: {e}"))
}

/// Runs `op` with `client`; if the client does not know `topic` or one of its
/// partitions, asks the broker for the topic's metadata and runs `op` once more.
///
/// A client that looked a topic up while it was being created (the lag probe, another
/// process creating the topics) may remember it as missing, or as fewer partitions,
/// until its periodic metadata refresh (`topic.metadata.refresh.interval.ms`, five
/// minutes by default), and fail every call on it until then.
fn with_fresh_metadata<T>(
    client: &BaseConsumer,
    topic: &str,
    timeout: Duration,
    op: impl Fn(&BaseConsumer) -> Result<T, KafkaError>,
) -> Result<T, KafkaError> {
    match op(client) {
        Err(e)
            if matches!(
                e.rdkafka_error_code(),
                Some(
                    RDKafkaErrorCode::UnknownPartition
                        | RDKafkaErrorCode::UnknownTopic
                        | RDKafkaErrorCode::UnknownTopicOrPartition
                )
            ) =>
        {
            debug!(topic, error = %e, "refreshing the metadata of an unknown topic");
            client.fetch_metadata(Some(topic), timeout)?;
            op(client)
        }
        other => other,
    }
}

impl KafkaLog {
    /// Connects the producer and admin clients (lazily: no broker round trip yet).
    pub fn connect(params: KafkaParams) -> Result<Self, LogError> {
        let producer: FutureProducer = params
            .base()
            .set("enable.idempotence", "true")
            // Topics are created explicitly with their partition counts, never by a
            // metadata request for a misspelt name.
            .set("allow.auto.create.topics", "false")
            .set("acks", "all")
            .set("linger.ms", params.linger.as_millis().to_string())
            .set("batch.size", params.batch_bytes.to_string())
            .set("compression.type", &params.compression)
            .set(
                "message.timeout.ms",
                params.message_timeout.as_millis().to_string(),
            )
            .create()
            .map_err(|e| backend("creating producer", e))?;
        let admin: AdminClient<DefaultClientContext> = params
            .base()
            .create()
            .map_err(|e| backend("creating admin client", e))?;
        Ok(KafkaLog {
            params,
            producer,
            admin,
            partition_counts: StdMutex::new(HashMap::new()),
            reader: Mutex::new(None),
            committers: StdMutex::new(HashMap::new()),
        })
    }

    fn full(&self, topic: &str) -> String {
        format!("{}{}", self.params.topic_prefix, topic)
    }

    async fn partition_count(&self, topic: &str) -> Result<u32, LogError> {
        if let Some(n) = lock(&self.partition_counts).get(topic) {
            return Ok(*n);
        }
        let full = self.full(topic);
        let producer = self.producer.clone();
        let timeout = self.params.request_timeout;
        let n = tokio::task::spawn_blocking(move || -> Result<u32, LogError> {
            let md = producer
                .client()
                .fetch_metadata(Some(&full), timeout)
                .map_err(|e| backend("fetching metadata", e))?;
            let t = md
                .topics()
                .iter()
                .find(|t| t.name() == full)
                .ok_or_else(|| LogError::UnknownTopic(full.clone()))?;
            if t.error().is_some() || t.partitions().is_empty() {
                return Err(LogError::UnknownTopic(full));
            }
            Ok(t.partitions().len() as u32)
        })
        .await
        .map_err(|e| LogError::Backend(format!("metadata task: {e}")))??;
        lock(&self.partition_counts).insert(topic.to_string(), n);
        Ok(n)
    }

    /// The reader's shared state and command channel; its consumer and poll thread
    /// start on first use.
    async fn reader(&self) -> Result<(Arc<Shared>, std::sync::mpsc::Sender<Command>), LogError> {
        let mut reader = self.reader.lock().await;
        if let Some(r) = reader.as_ref() {
            return Ok((r.shared.clone(), r.commands.clone()));
        }
        let consumer: BaseConsumer = self
            .params
            .base()
            .set("group.id", format!("{}reader", self.params.group_prefix))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false")
            // A position outside the log is an error, never a silent jump to one end.
            .set("auto.offset.reset", "error")
            .set(
                "fetch.wait.max.ms",
                self.params
                    .fetch_wait
                    .as_millis()
                    .clamp(1, 300_000)
                    .to_string(),
            )
            // Prefetch is bounded for the consumer as a whole; each partition's buffer
            // pauses its fetching at `BUFFER_HIGH` records on top of that.
            .set("queued.max.messages.kbytes", "16384")
            .create()
            .map_err(|e| backend("creating consumer", e))?;
        let shared = Arc::new(Shared {
            partitions: StdMutex::new(HashMap::new()),
        });
        let (tx, rx) = std::sync::mpsc::channel();
        let poller = Poller {
            consumer,
            shared: shared.clone(),
            commands: rx,
            assigned: HashSet::new(),
            paused: HashSet::new(),
        };
        std::thread::Builder::new()
            .name("kafka-reader".into())
            .spawn(move || poller.run())
            .map_err(|e| LogError::Backend(format!("starting the kafka poll thread: {e}")))?;
        *reader = Some(Reader {
            shared: shared.clone(),
            commands: tx.clone(),
        });
        Ok((shared, tx))
    }

    /// The slot of one partition, positioned so that it answers for `offset`: a new
    /// slot or one whose records do not cover `offset` is (re)assigned there.
    async fn slot(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
    ) -> Result<Arc<PartitionSlot>, LogError> {
        let n = self.partition_count(topic).await?;
        if partition >= n {
            return Err(LogError::NoSuchPartition {
                topic: topic.to_string(),
                partition,
            });
        }
        let (shared, commands) = self.reader().await?;
        let key: Key = (self.full(topic), partition);
        let existing = lock(&shared.partitions).get(&key).cloned();
        if let Some(slot) = &existing {
            let mut st = lock(&slot.state);
            if !st.released && st.start <= offset && offset <= st.received {
                st.last_fetch = Instant::now();
                return Ok(slot.clone());
            }
        }
        // A new position: check it against the log first, so a stored offset past the
        // end (a topic recreated under its consumers) is an error, not a silent wait.
        let (low, high) = self.watermarks(topic, partition).await?;
        if offset > high {
            return Err(LogError::BeyondEnd {
                topic: topic.to_string(),
                partition,
                offset,
                end: high,
            });
        }
        if offset < low {
            return Err(LogError::OffsetOutOfRange {
                topic: topic.to_string(),
                partition,
                offset,
                earliest: low,
            });
        }
        let slot = match existing {
            Some(slot) if !lock(&slot.state).released => slot,
            _ => {
                let slot = Arc::new(PartitionSlot {
                    state: StdMutex::new(SlotState {
                        start: offset,
                        received: offset,
                        buffer: VecDeque::new(),
                        generation: 0,
                        applied: 0,
                        paused: false,
                        last_fetch: Instant::now(),
                        released: false,
                        failed: None,
                    }),
                    data: Notify::new(),
                });
                lock(&shared.partitions).insert(key.clone(), slot.clone());
                slot
            }
        };
        let generation = {
            let mut st = lock(&slot.state);
            st.start = offset;
            st.received = offset;
            st.buffer.clear();
            st.paused = false;
            st.generation += 1;
            st.last_fetch = Instant::now();
            st.generation
        };
        debug!(topic, partition, offset, "assigning partition");
        commands
            .send(Command::Assign {
                key,
                offset,
                generation,
            })
            .map_err(|_| LogError::Backend("the kafka poll thread stopped".into()))?;
        Ok(slot)
    }

    async fn watermarks(&self, topic: &str, partition: u32) -> Result<(u64, u64), LogError> {
        let full = self.full(topic);
        let client = self.committer("offsets")?;
        let timeout = self.params.request_timeout;
        tokio::task::spawn_blocking(move || {
            with_fresh_metadata(&client, &full, timeout, |c| {
                c.fetch_watermarks(&full, partition as i32, timeout)
            })
            .map(|(low, high)| (low.max(0) as u64, high.max(0) as u64))
            .map_err(|e| backend("fetching watermarks", e))
        })
        .await
        .map_err(|e| LogError::Backend(format!("watermark task: {e}")))?
    }

    fn committer(&self, group: &str) -> Result<Arc<BaseConsumer>, LogError> {
        let mut committers = lock(&self.committers);
        if let Some(c) = committers.get(group) {
            return Ok(c.clone());
        }
        let c: BaseConsumer = self
            .params
            .base()
            .set("group.id", format!("{}{}", self.params.group_prefix, group))
            .set("enable.auto.commit", "false")
            .create()
            .map_err(|e| backend("creating committer", e))?;
        let c = Arc::new(c);
        committers.insert(group.to_string(), c.clone());
        Ok(c)
    }

    /// Asks the poll thread to resume a partition paused at `BUFFER_HIGH`.
    async fn resume(&self, topic: &str, partition: u32, generation: u64) {
        if let Some(r) = self.reader.lock().await.as_ref() {
            let _ = r.commands.send(Command::Resume {
                key: (self.full(topic), partition),
                generation,
            });
        }
    }
}

/// The thread that polls the consumer: it applies (re)assignments between polls,
/// appends each record to its partition's buffer, pauses a partition whose buffer is
/// full and unassigns partitions nobody reads any more.
struct Poller {
    consumer: BaseConsumer,
    shared: Arc<Shared>,
    commands: std::sync::mpsc::Receiver<Command>,
    assigned: HashSet<Key>,
    paused: HashSet<Key>,
}

impl Poller {
    fn run(mut self) {
        let mut last_sweep = Instant::now();
        let mut errors = RateLimited::default();
        loop {
            loop {
                match self.commands.try_recv() {
                    Ok(c) => self.apply(c),
                    Err(TryRecvError::Empty) => break,
                    // The log was dropped.
                    Err(TryRecvError::Disconnected) => return,
                }
            }
            match self.consumer.poll(POLL_EVERY) {
                None => {}
                Some(Ok(m)) => deliver(&self.shared, &self.consumer, &mut self.paused, &m),
                Some(Err(e)) => {
                    if let Some(n) = errors.tick() {
                        warn!(error = %e, repeated = n, "kafka consumer error");
                    }
                }
            }
            if last_sweep.elapsed() >= IDLE_RELEASE / 4 {
                last_sweep = Instant::now();
                self.release_idle();
            }
        }
    }

    fn slot(&self, key: &Key) -> Option<Arc<PartitionSlot>> {
        lock(&self.shared.partitions).get(key).cloned()
    }

    fn one(key: &Key, offset: Option<u64>) -> TopicPartitionList {
        let mut tpl = TopicPartitionList::new();
        let (topic, partition) = (key.0.as_str(), key.1 as i32);
        match offset {
            Some(o) => {
                // Only fails for a negative partition, which a u32 never gives.
                let _ = tpl.add_partition_offset(topic, partition, Offset::Offset(o as i64));
            }
            None => {
                tpl.add_partition(topic, partition);
            }
        }
        tpl
    }

    fn unassign(&mut self, key: &Key) {
        // librdkafka keeps a partition's pause across unassign and assign: resume it
        // first, or the next assignment of the partition would never fetch.
        if self.paused.remove(key)
            && let Err(e) = self.consumer.resume(&Self::one(key, None))
        {
            warn!(topic = %key.0, partition = key.1, error = %e, "resuming a partition");
        }
        if self.assigned.remove(key)
            && let Err(e) = self.consumer.incremental_unassign(&Self::one(key, None))
        {
            warn!(topic = %key.0, partition = key.1, error = %e, "unassigning a partition");
        }
    }

    fn apply(&mut self, command: Command) {
        match command {
            Command::Assign {
                key,
                offset,
                generation,
            } => {
                let Some(slot) = self.slot(&key) else { return };
                if lock(&slot.state).generation != generation {
                    // A newer position follows.
                    return;
                }
                self.unassign(&key);
                let assigned = self
                    .consumer
                    .incremental_assign(&Self::one(&key, Some(offset)));
                let mut st = lock(&slot.state);
                match assigned {
                    Ok(()) => {
                        self.assigned.insert(key);
                        if st.generation == generation {
                            st.applied = generation;
                        }
                    }
                    Err(e) => {
                        st.failed = Some(format!("assigning {}/{} at {offset}: {e}", key.0, key.1));
                        st.released = true;
                        drop(st);
                        lock(&self.shared.partitions).remove(&key);
                        slot.data.notify_waiters();
                    }
                }
            }
            Command::Resume { key, generation } => {
                let current = self
                    .slot(&key)
                    .is_some_and(|s| lock(&s.state).applied == generation);
                if current
                    && self.paused.remove(&key)
                    && let Err(e) = self.consumer.resume(&Self::one(&key, None))
                {
                    warn!(topic = %key.0, partition = key.1, error = %e, "resuming a partition");
                }
            }
        }
    }
}

/// Appends a polled record to its partition's buffer and pauses the partition's
/// fetching once the buffer is full.
fn deliver(
    shared: &Shared,
    consumer: &BaseConsumer,
    paused: &mut HashSet<Key>,
    m: &BorrowedMessage<'_>,
) {
    {
        let key: Key = (m.topic().to_string(), m.partition() as u32);
        let Some(slot) = lock(&shared.partitions).get(&key).cloned() else {
            return;
        };
        let mut st = lock(&slot.state);
        let offset = m.offset() as u64;
        if st.released || st.applied != st.generation || offset < st.received {
            // For an earlier position, or already received.
            return;
        }
        st.buffer.push_back(Record {
            partition: key.1,
            offset,
            key: m.key().map(<[u8]>::to_vec).unwrap_or_default(),
            payload: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
            timestamp: Timestamp(m.timestamp().to_millis().unwrap_or(0)),
        });
        st.received = offset + 1;
        let full = st.buffer.len() >= BUFFER_HIGH && !st.paused;
        if full {
            st.paused = true;
        }
        drop(st);
        slot.data.notify_waiters();
        if full
            && paused.insert(key.clone())
            && let Err(e) = consumer.pause(&Poller::one(&key, None))
        {
            warn!(topic = %key.0, partition = key.1, error = %e, "pausing a partition");
        }
    }
}

impl Poller {
    fn release_idle(&mut self) {
        let idle: Vec<(Key, Arc<PartitionSlot>)> = lock(&self.shared.partitions)
            .iter()
            .filter(|(_, s)| lock(&s.state).last_fetch.elapsed() >= IDLE_RELEASE)
            .map(|(k, s)| (k.clone(), s.clone()))
            .collect();
        for (key, slot) in idle {
            lock(&self.shared.partitions).remove(&key);
            lock(&slot.state).released = true;
            slot.data.notify_waiters();
            debug!(topic = %key.0, partition = key.1, "unassigning an idle partition");
            self.unassign(&key);
        }
    }
}

/// What a fetch found in its partition's buffer.
enum Taken {
    /// The poll thread could not assign the partition.
    Failed(String),
    /// Released or repositioned meanwhile: take the slot afresh.
    Moved,
    /// Records to return, and the generation to resume if the buffer drained.
    Records(Vec<Record>, Option<u64>),
    /// Fewer records than asked for: wait briefly for more.
    Partial(Option<u64>),
    Nothing(Option<u64>),
}

/// Takes up to `max` records from `offset` on out of a slot's buffer (cloned: a fetch
/// does not consume); records before `offset` are dropped, the caller has passed them.
fn take(slot: &PartitionSlot, offset: u64, max: usize, eager: bool) -> Taken {
    let mut st = lock(&slot.state);
    if let Some(why) = st.failed.take() {
        return Taken::Failed(why);
    }
    if st.released || offset < st.start || offset > st.received {
        return Taken::Moved;
    }
    while st.buffer.front().is_some_and(|r| r.offset < offset) {
        st.buffer.pop_front();
    }
    st.start = offset;
    st.last_fetch = Instant::now();
    // The caller has passed what was dropped: a paused partition whose buffer drained
    // resumes now, whatever this fetch finds (an empty buffer never refills paused).
    let resume = (st.paused && st.buffer.len() <= BUFFER_LOW).then_some(st.generation);
    if resume.is_some() {
        st.paused = false;
    }
    let ready = st.buffer.len();
    if ready == 0 {
        return Taken::Nothing(resume);
    }
    if ready < max && !eager {
        return Taken::Partial(resume);
    }
    let out: Vec<Record> = st.buffer.iter().take(max).cloned().collect();
    Taken::Records(out, resume)
}

/// Counts repeats of a warning and lets one through every ten seconds.
#[derive(Default)]
struct RateLimited {
    last: Option<Instant>,
    count: u64,
}

impl RateLimited {
    fn tick(&mut self) -> Option<u64> {
        self.count += 1;
        if self
            .last
            .is_some_and(|t| t.elapsed() < Duration::from_secs(10))
        {
            return None;
        }
        self.last = Some(Instant::now());
        Some(std::mem::take(&mut self.count))
    }
}

fn lock<T>(m: &StdMutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[async_trait]
impl EventLog for KafkaLog {
    async fn ensure_topic(&self, topic: &str, partitions: u32) -> Result<(), LogError> {
        let full = self.full(topic);
        let new = NewTopic::new(
            &full,
            partitions as i32,
            TopicReplication::Fixed(self.params.replication_factor),
        );
        let opts = AdminOptions::new().request_timeout(Some(self.params.request_timeout));
        let results = self
            .admin
            .create_topics([&new], &opts)
            .await
            .map_err(|e| backend("creating topic", e))?;
        for r in results {
            match r {
                Ok(_) => debug!(topic = %full, partitions, "topic created"),
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => {
                    return Err(LogError::Backend(format!("creating topic {name}: {code}")));
                }
            }
        }
        // The broker may take a moment before metadata lists the new topic.
        for _ in 0..100 {
            match self.partition_count(topic).await {
                Ok(_) => return Ok(()),
                Err(LogError::UnknownTopic(_)) => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                Err(e) => return Err(e),
            }
        }
        Err(LogError::Backend(format!(
            "topic {full} did not appear in metadata"
        )))
    }

    async fn partitions(&self, topic: &str) -> Result<u32, LogError> {
        self.partition_count(topic).await
    }

    async fn produce(
        &self,
        topic: &str,
        records: Vec<KeyedPayload>,
    ) -> Result<Vec<(u32, u64)>, LogError> {
        let n = self.partition_count(topic).await?;
        metrics::counter!("maily_log_records_total", "topic" => topic.to_string())
            .increment(records.len() as u64);
        let full = self.full(topic);
        let mut pending = Vec::with_capacity(records.len());
        for (key, payload) in &records {
            let partition = partition_for(key, n) as i32;
            let mut record = FutureRecord::to(&full)
                .partition(partition)
                .key(key)
                .payload(payload);
            loop {
                match self.producer.send_result(record) {
                    Ok(delivery) => {
                        pending.push(delivery);
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                        // The local queue is full: let deliveries drain, then retry.
                        record = r;
                        metrics::counter!("maily_log_producer_waits_total", "topic" => topic.to_string()).increment(1);
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    Err((e, _)) => return Err(backend("producing", e)),
                }
            }
        }
        let mut out = Vec::with_capacity(pending.len());
        for d in pending {
            let delivery = d
                .await
                .map_err(|_| LogError::Backend("producer dropped a delivery".into()))?
                .map_err(|(e, _)| backend("delivery", e))?;
            out.push((delivery.partition as u32, delivery.offset as u64));
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
        let deadline = tokio::time::Instant::now() + wait;
        let mut lingered = false;
        loop {
            let slot = self.slot(topic, partition, offset).await?;
            let arrived = slot.data.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            let taken = take(&slot, offset, max, lingered || wait.is_zero());
            let partial = match taken {
                Taken::Failed(why) => return Err(LogError::Backend(why)),
                Taken::Moved => continue,
                Taken::Records(out, resume) => {
                    if let Some(generation) = resume {
                        self.resume(topic, partition, generation).await;
                    }
                    return Ok(out);
                }
                Taken::Partial(resume) | Taken::Nothing(resume) => {
                    if let Some(generation) = resume {
                        self.resume(topic, partition, generation).await;
                    }
                    matches!(taken, Taken::Partial(_))
                }
            };
            if partial {
                // Take what arrives right behind the first records, briefly.
                lingered = true;
                let _ = tokio::time::timeout(FETCH_LINGER, arrived).await;
                continue;
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                return Ok(Vec::new());
            }
        }
    }

    async fn end_offset(&self, topic: &str, partition: u32) -> Result<u64, LogError> {
        Ok(self.watermarks(topic, partition).await?.1)
    }

    async fn commit(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
        offset: u64,
    ) -> Result<(), LogError> {
        let c = self.committer(group)?;
        let full = self.full(topic);
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&full, partition as i32, Offset::Offset(offset as i64))
            .map_err(|e| backend("building commit", e))?;
        let timeout = self.params.request_timeout;
        tokio::task::spawn_blocking(move || {
            with_fresh_metadata(&c, &full, timeout, |c| c.commit(&tpl, CommitMode::Sync))
        })
        .await
        .map_err(|e| LogError::Backend(format!("commit task: {e}")))?
        .map_err(|e| backend("committing", e))
    }

    async fn committed(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
    ) -> Result<Option<u64>, LogError> {
        let c = self.committer(group)?;
        let full = self.full(topic);
        let timeout = self.params.request_timeout;
        tokio::task::spawn_blocking(move || {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition(&full, partition as i32);
            let got = with_fresh_metadata(&c, &full, timeout, |c| {
                c.committed_offsets(tpl.clone(), timeout)
            })
            .map_err(|e| backend("reading committed offsets", e))?;
            Ok(got
                .find_partition(&full, partition as i32)
                .and_then(|e| match e.offset() {
                    Offset::Offset(o) if o >= 0 => Some(o as u64),
                    _ => None,
                }))
        })
        .await
        .map_err(|e| LogError::Backend(format!("committed task: {e}")))?
    }
}
