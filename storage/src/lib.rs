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
//!
//! Each backend is a cargo feature, all on by default: `sqlite`, `postgres` (they
//! share the SQL of `sql/`) and `redis`. The memory hot state is always there.

pub mod memory_hot;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod migration;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "redis")]
pub mod redis_hot;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod row_reader;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod sql;
#[cfg(feature = "sqlite")]
pub mod sqlite;

pub use memory_hot::MemoryHotState;
#[cfg(feature = "postgres")]
pub use postgres::{PostgresParams, PostgresStore};
#[cfg(feature = "redis")]
pub use redis_hot::{RedisHotState, RedisParams};
#[cfg(feature = "sqlite")]
pub use sqlite::{SqliteParams, SqliteStore};
