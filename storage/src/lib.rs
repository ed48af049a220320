//! Maily's store and hot-state adapters.
//!
//! This crate is the only one that knows sqlx and fred: it implements the engine's
//! [`Store`](maily_engine::ports::Store) and
//! [`HotState`](maily_engine::ports::HotState) ports.
//!
//! - [`SqliteStore`]: the embedded durable record in one SQLite file, with an
//!   embedded schema migrated on open.
//! - [`PostgresStore`]: the production durable record; batched writes with multi-row
//!   UNNEST upserts, bad rows isolated with savepoints.
//! - [`MemoryHotState`]: idempotency keys, suppression sets, live counters and token
//!   buckets in this process's memory.
//! - [`RedisHotState`]: the same, shared by every engine process, through fred.
//!
//! Every adapter passes the engine's contract suites (`maily_engine::store_contract!`,
//! `maily_engine::hot_state_contract!`).

pub mod memory_hot;
mod migration;
pub mod postgres;
pub mod redis_hot;
mod row_reader;
mod sql;
pub mod sqlite;

pub use memory_hot::MemoryHotState;
pub use postgres::{PostgresParams, PostgresStore};
pub use redis_hot::{RedisHotState, RedisParams};
pub use sqlite::{SqliteParams, SqliteStore};
