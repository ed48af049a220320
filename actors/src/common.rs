//! What every worker shares: the ports, consumer cursors and dead-lettering.

use anyhow::Context as _;
use maily_engine::ports::{
    Chain, EventLog, Fence, HotState, KeyedPayload, OutcomeStore, Record, Store, StoredOffset,
    Transport,
};
use maily_engine::records::{self, DecodeError, topics};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tracing::warn;

/// The adapters an engine runs on: the whole set the process wires. The supervisor
/// hands each worker only the ports of its role (`SenderPorts`, `BouncePorts`, ...),
/// each made `From<&Ports>`.
#[derive(Clone)]
pub struct Ports {
    pub log: Arc<dyn EventLog>,
    pub store: Arc<dyn Store>,
    pub hot: Arc<dyn HotState>,
    pub transport: Arc<dyn Transport>,
    pub chains: Vec<Arc<dyn Chain>>,
}

/// What a consuming worker reads and where it keeps its place: the event log, and
/// the store of what the stages recorded, consumer positions included.
#[derive(Clone)]
pub struct Feed {
    pub log: Arc<dyn EventLog>,
    pub outcomes: Arc<dyn OutcomeStore>,
}

impl From<&Ports> for Feed {
    fn from(ports: &Ports) -> Self {
        Feed {
            log: ports.log.clone(),
            outcomes: ports.store.clone(),
        }
    }
}

/// A consumer position in one partition of one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub topic: String,
    pub partition: u32,
    /// The next offset to read.
    pub next: u64,
}

impl Cursor {
    /// Cursors of `group` for `partitions` of `topic`, from the offsets in the store.
    pub async fn load(
        feed: &Feed,
        group: &str,
        topic: &str,
        partitions: impl IntoIterator<Item = u32>,
    ) -> anyhow::Result<Vec<Cursor>> {
        let stored = feed
            .outcomes
            .load_offsets(group, topic)
            .await
            .with_context(|| format!("loading {group} offsets of {topic}"))?;
        let mut out = Vec::new();
        for partition in partitions {
            let next = stored.get(&partition).copied().unwrap_or(0);
            // A stored position past the log's end means the log was recreated or cut
            // back under this stage (an in-memory log after a restart, a topic
            // deleted on the broker): reading on would skip every new record below it.
            let end = feed
                .log
                .end_offset(topic, partition)
                .await
                .with_context(|| format!("reading the end of {topic}/{partition}"))?;
            if next > end {
                anyhow::bail!(
                    "{group}: the stored position {next} in {topic}/{partition} is past the log's end \
                     ({end}); the log was recreated or truncated under the stored offsets. \
                     Restore the log, or reset {group}'s offsets for {topic} in the store"
                );
            }
            // Registers the group with the log (retention, lag tools) at its position.
            feed.log
                .commit(group, topic, partition, next)
                .await
                .with_context(|| format!("committing {group} position in {topic}/{partition}"))?;
            out.push(Cursor {
                topic: topic.to_string(),
                partition,
                next,
            });
        }
        Ok(out)
    }

    /// Reads the next records without moving the cursor.
    pub async fn fetch(
        &self,
        log: &dyn EventLog,
        max: usize,
        wait: Duration,
    ) -> anyhow::Result<Vec<Record>> {
        log.fetch(&self.topic, self.partition, self.next, max, wait)
            .await
            .with_context(|| {
                format!(
                    "fetching {}/{} at {}",
                    self.topic, self.partition, self.next
                )
            })
    }

    /// The position to store.
    pub fn offset(&self) -> StoredOffset {
        StoredOffset {
            topic: self.topic.clone(),
            partition: self.partition,
            next: self.next,
        }
    }
}

/// Stores cursor positions for `group` and commits them to the log.
pub async fn save_positions(
    feed: &Feed,
    group: &str,
    cursors: &[&Cursor],
    fence: Option<&Fence>,
) -> anyhow::Result<()> {
    let offsets: Vec<StoredOffset> = cursors.iter().map(|c| c.offset()).collect();
    feed.outcomes
        .save_offsets(group, &offsets, fence)
        .await
        .with_context(|| format!("storing {group} offsets"))?;
    commit_positions(feed.log.as_ref(), group, cursors).await
}

/// Commits cursor positions to the log (for lag reporting and retention).
pub async fn commit_positions(
    log: &dyn EventLog,
    group: &str,
    cursors: &[&Cursor],
) -> anyhow::Result<()> {
    for c in cursors {
        log.commit(group, &c.topic, c.partition, c.next)
            .await
            .with_context(|| format!("committing {group} offset of {}/{}", c.topic, c.partition))?;
    }
    Ok(())
}

#[derive(Serialize)]
struct DeadLetter<'a> {
    topic: &'a str,
    partition: u32,
    offset: u64,
    reason: String,
    payload: String,
}

/// The items of a record (one payload, or an array of them: see
/// [`records::decode_many`]); each item that does not decode goes to the dead-letter
/// topic with the reason, and the rest are returned.
pub async fn decode_items_or_dead_letter<T: DeserializeOwned>(
    log: &dyn EventLog,
    topic: &str,
    what: &'static str,
    record: &Record,
) -> anyhow::Result<Vec<T>> {
    let mut out = Vec::new();
    for item in records::decode_many::<T>(what, &record.payload) {
        match item {
            Ok(v) => out.push(v),
            Err(bad) => dead_letter_item(log, topic, record, &bad).await?,
        }
    }
    Ok(out)
}

/// Sends one undecodable item of `record` to the dead-letter topic.
pub async fn dead_letter_item(
    log: &dyn EventLog,
    topic: &str,
    record: &Record,
    bad: &records::ItemError,
) -> anyhow::Result<()> {
    dead_letter_payload(log, topic, record, &bad.error, &bad.item).await
}

/// Sends an undecodable record to the dead-letter topic.
pub async fn dead_letter(
    log: &dyn EventLog,
    topic: &str,
    record: &Record,
    err: &DecodeError,
) -> anyhow::Result<()> {
    dead_letter_payload(log, topic, record, err, &record.payload).await
}

/// Sends `payload`, the undecodable part of `record`, to the dead-letter topic.
async fn dead_letter_payload(
    log: &dyn EventLog,
    topic: &str,
    record: &Record,
    err: &DecodeError,
    payload: &[u8],
) -> anyhow::Result<()> {
    warn!(topic, partition = record.partition, offset = record.offset, error = %err, "dead-lettering record");
    metrics::counter!("maily_dead_letters_total", "topic" => topic.to_string()).increment(1);
    let letter = DeadLetter {
        topic,
        partition: record.partition,
        offset: record.offset,
        reason: err.to_string(),
        payload: String::from_utf8_lossy(payload)
            .chars()
            .take(64 * 1024)
            .collect(),
    };
    log.produce(
        topics::DEAD_LETTER,
        vec![(record.key.clone(), records::encode(&letter))],
    )
    .await
    .context("writing to the dead-letter topic")?;
    Ok(())
}

/// Produces records grouped by topic and key: the payloads queued under one key of
/// one topic go out packed into as few log records as [`records::pack`] allows, in the
/// order they were queued.
#[derive(Default)]
pub struct Outbox {
    by_topic: BTreeMap<String, BTreeMap<Vec<u8>, Vec<Vec<u8>>>>,
}

impl Outbox {
    /// Queues a payload under `key` (a campaign's partition key).
    pub fn push<T: Serialize>(&mut self, topic: &str, key: &impl std::fmt::Display, record: &T) {
        self.push_keyed(topic, key.to_string().as_bytes(), record);
    }

    /// Queues a payload under the partition key `key` as it is (the key of the
    /// record it answers, so it lands on the same shard of its campaign).
    pub fn push_keyed<T: Serialize>(&mut self, topic: &str, key: &[u8], record: &T) {
        self.by_topic
            .entry(topic.to_string())
            .or_default()
            .entry(key.to_vec())
            .or_default()
            .push(records::encode(record));
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.by_topic.values().all(BTreeMap::is_empty)
    }

    /// Produces everything queued, topics in the order given first.
    pub async fn send(&mut self, log: &dyn EventLog, order: &[&str]) -> anyhow::Result<()> {
        let mut topics_in_order: Vec<String> = order
            .iter()
            .map(|t| t.to_string())
            .filter(|t| self.by_topic.contains_key(t))
            .collect();
        for t in self.by_topic.keys() {
            if !topics_in_order.contains(t) {
                topics_in_order.push(t.clone());
            }
        }
        for topic in topics_in_order {
            let keys = self.by_topic.remove(&topic).unwrap_or_default();
            let records: Vec<KeyedPayload> = keys
                .into_iter()
                .flat_map(|(key, payloads)| {
                    records::pack_keyed(&key, payloads, records::items_per_record(&topic))
                })
                .collect();
            if records.is_empty() {
                continue;
            }
            log.produce(&topic, records)
                .await
                .with_context(|| format!("producing to {topic}"))?;
        }
        Ok(())
    }
}

/// Whether hot state answered the last call, process-wide: an outage is logged once
/// when it starts and once when it ends, and shows in `maily_hot_state_up`.
static HOT_UP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Records a successful hot-state call.
pub fn hot_ok() {
    if !HOT_UP.swap(true, std::sync::atomic::Ordering::Relaxed) {
        tracing::info!("hot state is back");
        metrics::gauge!("maily_hot_state_up").set(1.0);
    }
}

/// Records a failed hot-state call; `fallback` says what the caller does instead.
pub fn hot_down(err: &maily_engine::ports::HotError, fallback: &'static str) {
    metrics::counter!("maily_hot_state_errors_total").increment(1);
    if HOT_UP.swap(false, std::sync::atomic::Ordering::Relaxed) {
        warn!(error = %err, fallback, "hot state unavailable");
        metrics::gauge!("maily_hot_state_up").set(0.0);
    }
}
