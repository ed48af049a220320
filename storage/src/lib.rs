//! Maily's store and hot-state adapters.
//!
//! This crate is the only one that knows sqlx (and later the Redis client): it
//! implements the engine's [`Store`](maily_engine::ports::Store) and
//! [`HotState`](maily_engine::ports::HotState) ports.
//!
//! - [`SqliteStore`]: the durable record in one SQLite file, with an embedded schema
//!   migrated on open.
//! - [`MemoryHotState`]: idempotency keys, suppression sets and live counters in this
//!   process's memory.
//!
//! Both pass the engine's contract suites (`maily_engine::store_contract!`,
//! `maily_engine::hot_state_contract!`), which is what lets a Postgres or Redis
//! adapter replace them without the engine noticing.

pub mod memory_hot;
pub mod sqlite;

pub use memory_hot::MemoryHotState;
pub use sqlite::{SqliteParams, SqliteStore};
