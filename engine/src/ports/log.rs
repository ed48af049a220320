//! The event-log port: partitioned, offset-addressed topics (Kafka's model).

use crate::time::Timestamp;
use async_trait::async_trait;
use std::time::Duration;

/// A record to produce: its key (which picks the partition) and its payload.
pub type KeyedPayload = (Vec<u8>, Vec<u8>);

/// One record read from a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub partition: u32,
    pub offset: u64,
    pub key: Vec<u8>,
    pub payload: Vec<u8>,
    pub timestamp: Timestamp,
}

/// What an event-log operation can fail with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogError {
    #[error("topic {0:?} does not exist")]
    UnknownTopic(String),
    #[error("topic {topic:?} has no partition {partition}")]
    NoSuchPartition { topic: String, partition: u32 },
    #[error(
        "offset {offset} of {topic}/{partition} is no longer retained (earliest is {earliest})"
    )]
    OffsetOutOfRange {
        topic: String,
        partition: u32,
        offset: u64,
        earliest: u64,
    },
    /// A position past the partition's end: the log was recreated or cut back under
    /// a consumer's stored offset. Reading on would skip every record produced below
    /// that offset, so it is an error, never a wait.
    #[error(
        "offset {offset} of {topic}/{partition} is past the log's end ({end}): the log was recreated or truncated under its consumers"
    )]
    BeyondEnd {
        topic: String,
        partition: u32,
        offset: u64,
        end: u64,
    },
    #[error("the event log is shut down")]
    Closed,
    #[error("event log backend: {0}")]
    Backend(String),
}

/// A partitioned log. Records are placed by key with [`crate::partition::partition_for`].
#[async_trait]
pub trait EventLog: Send + Sync + 'static {
    /// Creates `topic` with `partitions` partitions unless it exists.
    async fn ensure_topic(&self, topic: &str, partitions: u32) -> Result<(), LogError>;

    /// The partition count of `topic`.
    async fn partitions(&self, topic: &str) -> Result<u32, LogError>;

    /// Appends `(key, payload)` records and returns each one's `(partition, offset)` once
    /// the log has durably accepted them. Waits while the log is full (back-pressure).
    async fn produce(
        &self,
        topic: &str,
        records: Vec<KeyedPayload>,
    ) -> Result<Vec<(u32, u64)>, LogError>;

    /// Up to `max` records of one partition from `offset` on, waiting at most `wait`
    /// for the first one; an empty result means nothing arrived in time. An offset
    /// below the earliest retained record is [`LogError::OffsetOutOfRange`], one past
    /// the end [`LogError::BeyondEnd`].
    async fn fetch(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Record>, LogError>;

    /// The offset the next record produced to the partition will get.
    async fn end_offset(&self, topic: &str, partition: u32) -> Result<u64, LogError>;

    /// Records that `group` has processed the partition up to (not including) `offset`,
    /// for lag reporting and retention. Consumers resume from their own stored offsets.
    async fn commit(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
        offset: u64,
    ) -> Result<(), LogError>;

    /// The offset last committed by `group`, if any.
    async fn committed(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
    ) -> Result<Option<u64>, LogError>;
}
