//! Adapters of the event-log port: the in-process one, the durable file one and Kafka.

pub mod file;
pub mod kafka;
pub mod memory;

pub use file::{FileLog, FileLogError, FileParams, Fsync};
pub use kafka::{KafkaLog, KafkaParams};
pub use memory::MemoryLog;
