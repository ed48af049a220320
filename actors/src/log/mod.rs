//! Adapters of the event-log port. The Kafka adapter joins the in-process one here.

pub mod kafka;
pub mod memory;

pub use kafka::{KafkaLog, KafkaParams};
pub use memory::MemoryLog;
