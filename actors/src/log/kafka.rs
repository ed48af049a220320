//! The Kafka adapter of the event-log port, on rdkafka (librdkafka built from source).
//!
//! - One idempotent producer, tuned for throughput (linger, batch size, compression
//!   from config). Records are placed with the engine's partitioner, so a record lands
//!   in the same partition whichever adapter wrote it.
//! - Reads go through one consumer per topic with manual assignment: each partition
//!   read gets its own queue (split from the consumer) and is positioned at exactly the
//!   offset the caller asks for, which is the offset stored with the aggregates, not
//!   the broker's group offset.
//! - `commit` writes offsets under a consumer group (`<group_prefix><group>`) so the
//!   usual lag tools show how far each stage is behind.

use async_trait::async_trait;
use maily_engine::Timestamp;
use maily_engine::partition::partition_for;
use maily_engine::ports::{EventLog, KeyedPayload, LogError, Record};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::stream_consumer::StreamPartitionQueue;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, DefaultConsumerContext, StreamConsumer,
};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;
use tokio::sync::Mutex;
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

type Queue = StreamPartitionQueue<DefaultConsumerContext>;

/// One partition being read: its queue and the offset it will deliver next.
struct PartitionReader {
    queue: Queue,
    next: u64,
    /// Positioned (assigned or sought) and nothing received since.
    fresh: bool,
    /// How far before `next` the last probe repositioned the fetch.
    rewind: u64,
    last_probe: Option<tokio::time::Instant>,
}

/// After the first record of a fetch, how long to wait for more before returning.
const FETCH_LINGER: Duration = Duration::from_millis(5);
/// Least time between two watermark probes of a stalled partition.
const PROBE_EVERY: Duration = Duration::from_millis(500);

/// The reading side of one topic.
struct TopicReader {
    consumer: Arc<StreamConsumer>,
    partitions: HashMap<u32, Arc<Mutex<PartitionReader>>>,
}

/// The Kafka event log.
pub struct KafkaLog {
    params: KafkaParams,
    producer: FutureProducer,
    admin: AdminClient<DefaultClientContext>,
    partition_counts: StdMutex<HashMap<String, u32>>,
    readers: Mutex<HashMap<String, TopicReader>>,
    committers: StdMutex<HashMap<String, Arc<BaseConsumer>>>,
}

fn backend(what: &str, e: KafkaError) -> LogError {
    LogError::Backend(format!("{what}: {e}"))
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
            readers: Mutex::new(HashMap::new()),
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

    /// The reader of one partition, assigned at `offset` when first used.
    async fn reader(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
    ) -> Result<Arc<Mutex<PartitionReader>>, LogError> {
        let n = self.partition_count(topic).await?;
        if partition >= n {
            return Err(LogError::NoSuchPartition {
                topic: topic.to_string(),
                partition,
            });
        }
        let mut readers = self.readers.lock().await;
        if !readers.contains_key(topic) {
            let consumer: StreamConsumer = self
                .params
                .base()
                .set("group.id", format!("{}reader", self.params.group_prefix))
                .set("enable.auto.commit", "false")
                .set("enable.auto.offset.store", "false")
                .set("enable.partition.eof", "false")
                .set("fetch.wait.max.ms", "50")
                .create()
                .map_err(|e| backend("creating consumer", e))?;
            let consumer = Arc::new(consumer);
            // The main queue must be served for events even though every partition
            // is read from its own queue.
            let main = consumer.clone();
            let name = topic.to_string();
            tokio::spawn(async move {
                loop {
                    match main.recv().await {
                        Ok(m) => {
                            warn!(topic = %name, partition = m.partition(), "message on the main queue ignored")
                        }
                        Err(e) => warn!(topic = %name, error = %e, "kafka consumer error"),
                    }
                }
            });
            readers.insert(
                topic.to_string(),
                TopicReader {
                    consumer,
                    partitions: HashMap::new(),
                },
            );
        }
        let reader = readers.get_mut(topic).expect("inserted above");
        if let Some(p) = reader.partitions.get(&partition) {
            return Ok(p.clone());
        }
        let full = self.full(topic);
        let queue = reader
            .consumer
            .split_partition_queue(&full, partition as i32)
            .ok_or_else(|| {
                LogError::Backend(format!("cannot split queue of {full}/{partition}"))
            })?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&full, partition as i32, Offset::Offset(offset as i64))
            .map_err(|e| backend("building assignment", e))?;
        reader
            .consumer
            .incremental_assign(&tpl)
            .map_err(|e| backend("assigning partition", e))?;
        let p = Arc::new(Mutex::new(PartitionReader {
            queue,
            next: offset,
            fresh: true,
            rewind: 0,
            last_probe: None,
        }));
        reader.partitions.insert(partition, p.clone());
        Ok(p)
    }

    /// Drops the reader of one partition and its assignment; the next
    /// [`KafkaLog::reader`] assigns it again.
    async fn unassign(&self, topic: &str, partition: u32) -> Result<(), LogError> {
        let mut readers = self.readers.lock().await;
        let Some(reader) = readers.get_mut(topic) else {
            return Ok(());
        };
        if reader.partitions.remove(&partition).is_none() {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&self.full(topic), partition as i32);
        reader
            .consumer
            .incremental_unassign(&tpl)
            .map_err(|e| backend("unassigning partition", e))
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
}

impl KafkaLog {
    /// A freshly positioned partition delivers nothing although the broker holds
    /// records at or after the position. Some brokers (tansu 0.6 on its object-store
    /// engine) only serve batches that *start* at or after the requested offset, so a
    /// position inside a batch never receives that batch. Reposition a little earlier,
    /// doubling the distance each time; records before the position are skipped.
    async fn probe(
        &self,
        topic: &str,
        partition: u32,
        r: &mut PartitionReader,
    ) -> Result<Option<u64>, LogError> {
        let now = tokio::time::Instant::now();
        if r.last_probe
            .is_some_and(|t| now.duration_since(t) < PROBE_EVERY)
        {
            return Ok(None);
        }
        r.last_probe = Some(now);
        let high = self.end_offset(topic, partition).await?;
        if high <= r.next {
            return Ok(None);
        }
        r.rewind = (r.rewind * 2).clamp(1, r.next);
        let from = r.next - r.rewind;
        debug!(
            topic,
            partition,
            position = r.next,
            from,
            "repositioning a stalled partition"
        );
        Ok(Some(from))
    }

    /// Assigns a partition afresh at `from` (a seek does not always restart a paused
    /// fetch). The caller must hold no handle of the old reader: dropping its queue
    /// disables the wake-up of the new one, which shares the partition's queue.
    async fn reassign(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
    ) -> Result<Arc<Mutex<PartitionReader>>, LogError> {
        self.unassign(topic, partition).await?;
        self.reader(topic, partition, from).await
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
        let reader = self.reader(topic, partition, offset).await?;
        let moved = reader.lock().await.next != offset;
        let reader = if moved {
            // A new position (a partition taken over, a cursor reloaded): assign the
            // partition afresh at it. A reader kept from an earlier ownership may hold
            // a paused fetch that a seek does not restart.
            drop(reader);
            self.reassign(topic, partition, offset).await?
        } else {
            reader
        };
        let mut r = reader.lock().await;
        let deadline = tokio::time::Instant::now() + wait;
        let mut out = Vec::new();
        while out.len() < max {
            let received = if out.is_empty() {
                tokio::time::timeout_at(deadline, r.queue.recv()).await
            } else {
                // Take what arrives right behind the first record, briefly.
                tokio::time::timeout(FETCH_LINGER, r.queue.recv()).await
            };
            let Ok(msg) = received else { break };
            let msg = msg.map_err(|e| backend("consuming", e))?;
            let o = msg.offset() as u64;
            if o < r.next {
                // Fetched before a reassignment, or skipped on the way to the position after a
                // rewind: records are arriving, so the partition is not stalled. Hold
                // the next probe back; probing again now would rewind further and, on
                // a slow machine, never let the skipping reach the position.
                r.last_probe = Some(tokio::time::Instant::now());
                continue;
            }
            out.push(Record {
                partition,
                offset: o,
                key: msg.key().map(<[u8]>::to_vec).unwrap_or_default(),
                payload: msg.payload().map(<[u8]>::to_vec).unwrap_or_default(),
                timestamp: Timestamp(msg.timestamp().to_millis().unwrap_or(0)),
            });
            r.next = o + 1;
            r.fresh = false;
            r.rewind = 0;
        }
        if out.is_empty()
            && r.fresh
            && r.next > 0
            && let Some(from) = self.probe(topic, partition, &mut r).await?
        {
            // Read again from `from`; the position stays, so records before it are
            // skipped.
            let (next, rewind, last_probe) = (r.next, r.rewind, r.last_probe);
            drop(r);
            drop(reader);
            let fresh = self.reassign(topic, partition, from).await?;
            let mut f = fresh.lock().await;
            f.next = next;
            f.rewind = rewind;
            f.last_probe = last_probe;
        }
        Ok(out)
    }

    async fn end_offset(&self, topic: &str, partition: u32) -> Result<u64, LogError> {
        let full = self.full(topic);
        let client = self.committer("offsets")?;
        let timeout = self.params.request_timeout;
        tokio::task::spawn_blocking(move || {
            client
                .fetch_watermarks(&full, partition as i32, timeout)
                .map(|(_, high)| high as u64)
                .map_err(|e| backend("fetching watermarks", e))
        })
        .await
        .map_err(|e| LogError::Backend(format!("watermark task: {e}")))?
    }

    async fn commit(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
        offset: u64,
    ) -> Result<(), LogError> {
        let c = self.committer(group)?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(
            &self.full(topic),
            partition as i32,
            Offset::Offset(offset as i64),
        )
        .map_err(|e| backend("building commit", e))?;
        tokio::task::spawn_blocking(move || c.commit(&tpl, CommitMode::Sync))
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
            let got = c
                .committed_offsets(tpl, timeout)
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
