//! The SQLite store: the engine's durable record in one file, for single-node
//! deployments and tests.
//!
//! The database runs in WAL mode with `synchronous=NORMAL` (a crash can lose the last
//! commits but never corrupts the file) and foreign keys on. Every write that touches
//! more than one row runs in one `BEGIN IMMEDIATE` transaction: taking the write lock
//! up front means a transaction that read first can never fail to upgrade its lock
//! halfway through, and concurrent writers queue on the busy timeout instead. Fenced
//! writes check their lease inside that same transaction, so a takeover cannot slip in
//! between the check and the commit.

mod analytics;
mod api_keys;
mod catalog;
mod contacts;
mod deferred;
mod domains;
mod leases;
mod ledger;
mod lifecycle;
mod messages;
pub(crate) mod migrate;
mod rows;
mod settlement;

use maily_engine::ports::{AggregateBatch, StoreError};
use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;
use tracing::info;

/// How to open a SQLite store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqliteParams {
    /// A file path, or a `sqlite:` URL (`sqlite://data/maily.db`, `sqlite::memory:`).
    pub url_or_path: String,
    /// Connections in the pool; SQLite runs one writer at a time, the rest read.
    pub max_connections: u32,
    /// How long a statement waits for another connection's lock before failing.
    pub busy_timeout: Duration,
}

impl SqliteParams {
    /// Parameters for a database file with the default pool size and busy timeout.
    pub fn new(url_or_path: impl Into<String>) -> Self {
        SqliteParams {
            url_or_path: url_or_path.into(),
            max_connections: 4,
            busy_timeout: Duration::from_secs(5),
        }
    }
}

/// A [`Store`] backed by a SQLite database.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// The directory of a throwaway database; declared after `pool` so the pool is
    /// dropped before the directory is removed.
    _temp: Option<std::sync::Arc<tempfile::TempDir>>,
}

impl SqliteStore {
    /// Opens (creating if missing) the database and brings its schema up to date.
    pub async fn open(params: SqliteParams) -> Result<Self, StoreError> {
        let target = params.url_or_path.as_str();
        let memory = target.contains(":memory:") || target.contains("mode=memory");
        let options = if target.starts_with("sqlite:") {
            SqliteConnectOptions::from_str(target)
                .map_err(|e| StoreError::Unavailable(format!("sqlite url {target:?}: {e}")))?
        } else {
            create_parent_dir(Path::new(target))?;
            SqliteConnectOptions::new().filename(target)
        };
        let options = options
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(params.busy_timeout);
        let mut pool = SqlitePoolOptions::new().max_connections(params.max_connections.max(1));
        if memory {
            // An in-memory database lives only as long as a connection to it and shared
            // cache mode ignores the busy timeout, so keep exactly one, forever.
            pool = pool
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None);
        }
        let pool = pool
            .connect_with(options)
            .await
            .map_err(|e| StoreError::Unavailable(format!("opening sqlite {target:?}: {e}")))?;
        let store = SqliteStore { pool, _temp: None };
        store.migrate().await?;
        info!(database = %target, "sqlite store opened");
        Ok(store)
    }

    /// Opens a fresh database in a temporary directory that is removed when the last
    /// clone of the store is dropped; for tests and demos.
    pub async fn open_temp() -> Result<Self, StoreError> {
        let dir = tempfile::TempDir::new()
            .map_err(|e| StoreError::Unavailable(format!("creating a temporary directory: {e}")))?;
        let path = dir.path().join("maily.db");
        let mut store = Self::open(SqliteParams::new(path.to_string_lossy())).await?;
        store._temp = Some(std::sync::Arc::new(dir));
        Ok(store)
    }

    /// Applies the embedded migrations the database lacks; [`SqliteStore::open`] runs it.
    ///
    /// Fails with [`StoreError::Corrupt`] naming the file if an applied migration was
    /// changed since, or if the database was migrated by a newer build.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        migrate::run(&self.pool, migrate::MIGRATIONS)
            .await
            .map_err(StoreError::from)
    }

    /// Closes every connection, waiting for running statements to finish.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

fn create_parent_dir(path: &Path) -> Result<(), StoreError> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => std::fs::create_dir_all(dir).map_err(|e| {
            StoreError::Unavailable(format!("creating directory {}: {e}", dir.display()))
        }),
        _ => Ok(()),
    }
}

impl SqliteStore {
    /// Rows one multi-row statement carries (contacts, staged recipients): a few
    /// parameters each, far below SQLite's limit of 32,766 per statement, and enough
    /// that a 10,000-row upload takes ten statements.
    fn batch_rows(&self) -> usize {
        ROWS_PER_STATEMENT
    }

    /// The analytics flush: one transaction, a statement per stats row and message
    /// states many rows to a statement.
    async fn flush_aggregates(&self, batch: &AggregateBatch) -> Result<(), StoreError> {
        analytics::commit_aggregates(&self.pool, batch).await
    }
}

/// See [`SqliteStore::batch_rows`].
const ROWS_PER_STATEMENT: usize = 1_000;

crate::sql::ports::ports!(SqliteStore);
