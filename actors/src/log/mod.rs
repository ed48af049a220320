//! Adapters of the event-log port. The Kafka adapter joins the in-process one here.

pub mod memory;

pub use memory::MemoryLog;
