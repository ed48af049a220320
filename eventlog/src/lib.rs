//! Adapters of the engine's event-log port ([`EventLog`](maily_engine::ports::EventLog)):
//! the in-process one, the durable file one and Kafka. Each passes the port's
//! contract suite (`maily_engine::event_log_contract!`). Kafka is the `kafka` feature
//! (on by default).

pub mod file;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod memory;

pub use file::{FileLog, FileLogError, FileParams, Fsync};
#[cfg(feature = "kafka")]
pub use kafka::{KafkaLog, KafkaParams};
pub use memory::MemoryLog;
