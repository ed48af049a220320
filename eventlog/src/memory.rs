//! The in-process partitioned event log: the embedded default of the event-log port.
//!
//! Each partition is a bounded queue of records addressed by offset. Records are kept
//! until every consumer group that has committed on the topic has moved past them; a
//! producer waits while a partition holds `capacity` unconsumed records, so a slow
//! consumer slows intake instead of growing memory. A topic no group has committed on
//! yet keeps its newest `capacity` records (Kafka's size-based retention), so a
//! dead-letter topic nobody reads cannot stall the actors that write to it.

use async_trait::async_trait;
use maily_engine::Timestamp;
use maily_engine::partition::partition_for;
use maily_engine::ports::{EventLog, KeyedPayload, LogError, Record};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::Notify;

/// The in-process event log.
pub struct MemoryLog {
    capacity: usize,
    closed: std::sync::atomic::AtomicBool,
    topics: Mutex<HashMap<String, Arc<Topic>>>,
}

struct Topic {
    partitions: Vec<Partition>,
}

struct Partition {
    state: Mutex<PartitionState>,
    /// Woken when records are appended.
    data: Notify,
    /// Woken when records are released by commits.
    space: Notify,
}

#[derive(Default)]
struct PartitionState {
    /// Offset of `records[0]`.
    base: u64,
    records: VecDeque<Record>,
    commits: BTreeMap<String, u64>,
}

impl PartitionState {
    fn end(&self) -> u64 {
        self.base + self.records.len() as u64
    }

    /// Drops records every committed group has consumed.
    fn trim(&mut self) {
        if let Some(min) = self.commits.values().min().copied() {
            while self.base < min && !self.records.is_empty() {
                self.records.pop_front();
                self.base += 1;
            }
        }
    }
}

impl MemoryLog {
    /// A log whose partitions each hold at most `capacity` unconsumed records.
    pub fn new(capacity: usize) -> Self {
        MemoryLog {
            capacity: capacity.max(1),
            closed: std::sync::atomic::AtomicBool::new(false),
            topics: Mutex::new(HashMap::new()),
        }
    }

    /// Closes the log: every call, waiting ones included, fails with
    /// [`LogError::Closed`] from now on, and actors stop instead of restarting.
    pub fn close(&self) {
        self.closed.store(true, std::sync::atomic::Ordering::SeqCst);
        for topic in lock(&self.topics).values() {
            for p in &topic.partitions {
                p.data.notify_waiters();
                p.space.notify_waiters();
            }
        }
    }

    fn check_open(&self) -> Result<(), LogError> {
        if self.closed.load(std::sync::atomic::Ordering::SeqCst) {
            Err(LogError::Closed)
        } else {
            Ok(())
        }
    }

    fn topic(&self, name: &str) -> Result<Arc<Topic>, LogError> {
        self.check_open()?;
        lock(&self.topics)
            .get(name)
            .cloned()
            .ok_or_else(|| LogError::UnknownTopic(name.to_string()))
    }

    fn partition<'a>(
        topic: &'a Topic,
        name: &str,
        partition: u32,
    ) -> Result<&'a Partition, LogError> {
        topic
            .partitions
            .get(partition as usize)
            .ok_or_else(|| LogError::NoSuchPartition {
                topic: name.to_string(),
                partition,
            })
    }

    /// Appends one record, waiting for space when consumers lag.
    async fn append(&self, topic: &str, p: &Partition, record: Record) -> Result<u64, LogError> {
        loop {
            let space = p.space.notified();
            self.check_open()?;
            {
                let mut st = lock(&p.state);
                let full = st.records.len() >= self.capacity;
                if full && st.commits.is_empty() {
                    // No consumer yet: retention, not back-pressure.
                    st.records.pop_front();
                    st.base += 1;
                }
                if !full || st.commits.is_empty() {
                    let offset = st.end();
                    st.records.push_back(Record { offset, ..record });
                    metrics::gauge!("maily_log_partition_depth", "topic" => topic.to_string())
                        .set(st.records.len() as f64);
                    drop(st);
                    p.data.notify_waiters();
                    return Ok(offset);
                }
            }
            metrics::counter!("maily_log_producer_waits_total", "topic" => topic.to_string())
                .increment(1);
            space.await;
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain data behind; keep serving it.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[async_trait]
impl EventLog for MemoryLog {
    async fn ensure_topic(&self, topic: &str, partitions: u32) -> Result<(), LogError> {
        let mut topics = lock(&self.topics);
        topics.entry(topic.to_string()).or_insert_with(|| {
            Arc::new(Topic {
                partitions: (0..partitions.max(1))
                    .map(|_| Partition {
                        state: Mutex::new(PartitionState::default()),
                        data: Notify::new(),
                        space: Notify::new(),
                    })
                    .collect(),
            })
        });
        Ok(())
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
        let mut out = Vec::with_capacity(records.len());
        for (key, payload) in records {
            let partition = partition_for(&key, n);
            let p = Self::partition(&t, topic, partition)?;
            let record = Record {
                partition,
                offset: 0,
                key,
                payload,
                timestamp: now,
            };
            let offset = self.append(topic, p, record).await?;
            out.push((partition, offset));
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
        let t = self.topic(topic)?;
        let p = Self::partition(&t, topic, partition)?;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let data = p.data.notified();
            self.check_open()?;
            {
                let st = lock(&p.state);
                if offset < st.base {
                    return Err(LogError::OffsetOutOfRange {
                        topic: topic.to_string(),
                        partition,
                        offset,
                        earliest: st.base,
                    });
                }
                if offset < st.end() {
                    let start = (offset - st.base) as usize;
                    return Ok(st.records.range(start..).take(max).cloned().collect());
                }
                if offset > st.end() {
                    return Err(LogError::BeyondEnd {
                        topic: topic.to_string(),
                        partition,
                        offset,
                        end: st.end(),
                    });
                }
            }
            if tokio::time::timeout_at(deadline, data).await.is_err() {
                return Ok(Vec::new());
            }
        }
    }

    async fn end_offset(&self, topic: &str, partition: u32) -> Result<u64, LogError> {
        let t = self.topic(topic)?;
        let p = Self::partition(&t, topic, partition)?;
        Ok(lock(&p.state).end())
    }

    async fn commit(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
        offset: u64,
    ) -> Result<(), LogError> {
        let t = self.topic(topic)?;
        let p = Self::partition(&t, topic, partition)?;
        {
            let mut st = lock(&p.state);
            st.commits.insert(group.to_string(), offset);
            st.trim();
        }
        p.space.notify_waiters();
        Ok(())
    }

    async fn committed(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
    ) -> Result<Option<u64>, LogError> {
        let t = self.topic(topic)?;
        let p = Self::partition(&t, topic, partition)?;
        Ok(lock(&p.state).commits.get(group).copied())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn new_log() -> MemoryLog {
        MemoryLog::new(10_000)
    }

    maily_engine::event_log_contract!(new_log);

    #[tokio::test]
    async fn a_full_partition_holds_producers_until_consumers_commit() {
        let log = Arc::new(MemoryLog::new(3));
        log.ensure_topic("t", 1).await.unwrap();
        log.commit("g", "t", 0, 0).await.unwrap();
        let records = (0..5u8).map(|i| (b"k".to_vec(), vec![i])).collect();
        let producer = {
            let log = log.clone();
            tokio::spawn(async move { log.produce("t", records).await })
        };
        // The producer stops at capacity...
        while log.end_offset("t", 0).await.unwrap() < 3 {
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(log.end_offset("t", 0).await.unwrap(), 3);
        assert!(!producer.is_finished());
        // ...and goes on once the consumer commits.
        log.commit("g", "t", 0, 2).await.unwrap();
        let positions = producer.await.unwrap().unwrap();
        assert_eq!(positions.last(), Some(&(0, 4)));
        let err = log.fetch("t", 0, 0, 10, Duration::ZERO).await.unwrap_err();
        assert!(matches!(
            err,
            LogError::OffsetOutOfRange { earliest: 2, .. }
        ));
    }

    #[tokio::test]
    async fn closing_wakes_waiters_with_an_error() {
        let log = Arc::new(MemoryLog::new(10));
        log.ensure_topic("t", 1).await.unwrap();
        let reader = {
            let log = log.clone();
            tokio::spawn(async move { log.fetch("t", 0, 0, 1, Duration::from_secs(60)).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        log.close();
        assert_eq!(reader.await.unwrap(), Err(LogError::Closed));
        assert_eq!(log.end_offset("t", 0).await, Err(LogError::Closed));
    }

    #[tokio::test]
    async fn a_topic_without_consumers_keeps_its_newest_records() {
        let log = MemoryLog::new(2);
        log.ensure_topic("dlq", 1).await.unwrap();
        let records = (0..5u8).map(|i| (b"k".to_vec(), vec![i])).collect();
        log.produce("dlq", records).await.unwrap();
        let got = log.fetch("dlq", 0, 3, 10, Duration::ZERO).await.unwrap();
        assert_eq!(
            got.iter().map(|r| r.payload[0]).collect::<Vec<_>>(),
            vec![3, 4]
        );
    }
}
