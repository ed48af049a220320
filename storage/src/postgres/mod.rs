//! The Postgres store: the engine's durable record in a Postgres schema, for
//! deployments with more than one engine process.
//!
//! Every connection of the pool is set up with the store's `search_path` (when a
//! schema is configured) and `statement_timeout`, so the same database can hold many
//! independent stores, one per schema; that is how each test gets fresh state.
//!
//! Writes that touch more than one row run in one transaction at READ COMMITTED.
//! Where a write depends on what it read, the read takes a lock that holds to the
//! commit: fenced writes share-lock their lease row (see `leases.rs`), lease changes
//! lock it for update, and ledger appends lock the ledger table against other
//! appenders. Analytics flushes write their rows with multi-row upserts and isolate
//! rows Postgres rejects instead of failing the flush (see `flush.rs`, and
//! [`PostgresStore`]'s `commit_aggregates` for what is committed then).

mod analytics;
mod api_keys;
mod catalog;
mod contacts;
mod deferred;
mod domains;
mod flush;
mod leases;
mod ledger;
mod lifecycle;
mod messages;
pub(crate) mod migrate;
mod rows;
mod schema;
mod settlement;

#[doc(hidden)]
pub use flush::FlushMethod;

use maily_engine::ports::{AggregateBatch, StoreError};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Executor, PgPool};
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tracing::info;

/// How to connect a Postgres store.
#[derive(Clone, PartialEq, Eq)]
pub struct PostgresParams {
    /// A `postgres://user:password@host:port/database` URL.
    pub url: String,
    /// The schema holding the store's tables, created if missing; `None` uses the
    /// server's default `search_path` (normally `public`).
    pub schema: Option<String>,
    /// Connections in the pool.
    pub max_connections: u32,
    /// How long one statement may run before Postgres cancels it; zero disables the
    /// limit.
    pub statement_timeout: Duration,
    /// How long a caller waits for a free connection before failing as unavailable.
    pub acquire_timeout: Duration,
    /// Rows per multi-row statement when flushing analytics, staging recipients or
    /// upserting contacts.
    pub batch_rows: usize,
}

impl PostgresParams {
    /// Parameters for `url` with the default schema, pool size, timeouts and batch.
    pub fn new(url: impl Into<String>) -> Self {
        PostgresParams {
            url: url.into(),
            schema: None,
            max_connections: 10,
            statement_timeout: Duration::from_secs(30),
            acquire_timeout: Duration::from_secs(5),
            batch_rows: 5_000,
        }
    }

    /// Parameters for a fresh throwaway schema named
    /// `maily_tmp_<unix seconds>_<random>`, with a small pool; for tests and demos.
    ///
    /// The schema is not dropped when the store goes away (there is no async drop).
    /// Instead the first [`PostgresStore::connect`] to a throwaway schema in each
    /// process drops the throwaway schemas more than an hour old.
    pub fn temp(url: impl Into<String>) -> Self {
        PostgresParams {
            schema: Some(schema::temp_name()),
            max_connections: 4,
            ..PostgresParams::new(url)
        }
    }
}

/// Hides the password, so parameters can be logged.
impl fmt::Debug for PostgresParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresParams")
            .field("url", &redact(&self.url))
            .field("schema", &self.schema)
            .field("max_connections", &self.max_connections)
            .field("statement_timeout", &self.statement_timeout)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("batch_rows", &self.batch_rows)
            .finish()
    }
}

/// `url` with the password of its user-info part replaced, and any query string
/// dropped (it may carry `password=`).
fn redact(url: &str) -> String {
    let url = url.split_once('?').map_or(url, |(base, _)| base);
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    match rest.rsplit_once('@') {
        Some((user_info, host)) => {
            let user = user_info.split_once(':').map_or(user_info, |(u, _)| u);
            let hidden = if user_info.contains(':') { ":***" } else { "" };
            format!("{scheme}://{user}{hidden}@{host}")
        }
        None => url.to_string(),
    }
}

/// A [`Store`] backed by a Postgres schema.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
    schema: Option<String>,
    batch_rows: usize,
}

impl PostgresStore {
    /// Connects, creates the schema if it is missing, and brings the schema's tables up
    /// to date (see [`PostgresStore::migrate`]).
    pub async fn connect(params: PostgresParams) -> Result<Self, StoreError> {
        let mut options = PgConnectOptions::from_str(&params.url).map_err(|e| {
            StoreError::Unavailable(format!("postgres url {}: {e}", redact(&params.url)))
        })?;
        if options.get_application_name().is_none() {
            // Names the engine's sessions in pg_stat_activity and the server log.
            options = options.application_name("maily");
        }
        if let Some(name) = &params.schema {
            schema::validate(name)?;
        }
        let target = format!(
            "{}:{}/{}",
            options.get_host(),
            options.get_port(),
            options.get_database().unwrap_or("")
        );
        // A client that stops in the middle of a transaction (a paused process) must
        // not hold its row locks, and so other processes' lease takeovers, forever:
        // the server ends such a session after the statement timeout.
        let mut setup = format!(
            "SET statement_timeout = {ms}; SET idle_in_transaction_session_timeout = {ms}",
            ms = params.statement_timeout.as_millis()
        );
        if let Some(name) = &params.schema {
            // The schema need not exist yet: search_path accepts missing schemas, and
            // it is created right below, before any table is touched.
            setup.push_str(&format!("; SET search_path TO {}", schema::quote(name)));
        }
        let setup: Arc<str> = setup.into();
        let pool = PgPoolOptions::new()
            .max_connections(params.max_connections.max(1))
            .acquire_timeout(params.acquire_timeout)
            .after_connect(move |conn, _meta| {
                let setup = Arc::clone(&setup);
                Box::pin(async move {
                    conn.execute(&*setup).await?;
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .map_err(|e| {
                StoreError::Unavailable(format!("connecting to postgres {target}: {e}"))
            })?;
        if let Some(name) = &params.schema {
            schema::create(&pool, name).await?;
        }
        let store = PostgresStore {
            pool,
            schema: params.schema.clone(),
            batch_rows: params.batch_rows.max(1),
        };
        store.migrate().await?;
        if params.schema.as_deref().is_some_and(schema::is_temp) {
            schema::sweep_stale_temps(&store.pool).await;
        }
        info!(database = %target, schema = params.schema.as_deref().unwrap_or("(default)"), "postgres store connected");
        Ok(store)
    }

    /// Connects to a fresh throwaway schema with default parameters; for tests and
    /// demos. See [`PostgresParams::temp`].
    pub async fn connect_temp(url: &str) -> Result<Self, StoreError> {
        Self::connect(PostgresParams::temp(url)).await
    }

    /// Applies the embedded migrations the schema lacks; [`PostgresStore::connect`]
    /// runs it. Safe to run from several processes at once: they take turns on an
    /// advisory lock keyed on the schema.
    ///
    /// Fails with [`StoreError::Corrupt`] naming the file if an applied migration was
    /// changed since, or if the schema was migrated by a newer build.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        migrate::run(&self.pool, migrate::MIGRATIONS)
            .await
            .map_err(StoreError::from)
    }

    /// The schema holding the store's tables, if one was configured.
    pub fn schema(&self) -> Option<&str> {
        self.schema.as_deref()
    }

    /// Closes every connection, waiting for running statements to finish.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Rows one multi-row statement carries (analytics flushes, staged recipients,
    /// contacts): [`PostgresParams::batch_rows`].
    fn batch_rows(&self) -> usize {
        self.batch_rows
    }

    /// Commits one analytics flush in a single transaction, writing stats and
    /// message states with one multi-row upsert per `batch_rows` rows.
    ///
    /// Outcomes:
    /// - `Ok(())`: everything committed.
    /// - [`StoreError::Fenced`]: nothing committed.
    /// - [`StoreError::InvalidRow`] naming an offset or a `campaign_stats` row whose
    ///   values cannot be represented (a u64 above `i64::MAX`): nothing committed;
    ///   this is checked before anything is sent.
    /// - [`StoreError::RowsRejected`] naming a `message <id>` or `campaign_stats <id>`
    ///   row that Postgres rejected (a data exception or constraint violation, e.g.
    ///   a NUL byte in `status` or `detail`): **the flush was committed without the
    ///   rejected rows**. Every other stats and message row and every offset of the
    ///   batch is stored; each rejected row keeps whatever was stored for it before
    ///   (nothing, for a new message). The error names the first rejected row in
    ///   batch order and counts the others; all of them are logged. Retrying the same
    ///   batch is harmless (the upserts are idempotent) but fails the same way.
    /// - [`StoreError::Unavailable`]: nothing committed; retry later.
    ///
    /// A message given twice in one batch is stored as if the two states had been
    /// written one after the other.
    async fn flush_aggregates(&self, batch: &AggregateBatch) -> Result<(), StoreError> {
        self.commit_aggregates_with(batch, FlushMethod::PRODUCTION)
            .await
    }

    /// `commit_aggregates` with an explicit write method, for the benchmark.
    #[doc(hidden)]
    pub async fn commit_aggregates_with(
        &self,
        batch: &AggregateBatch,
        method: FlushMethod,
    ) -> Result<(), StoreError> {
        analytics::commit_aggregates(&self.pool, batch, method, self.batch_rows).await
    }
}

crate::sql::ports::ports!(PostgresStore);

/// Helpers for unit tests that need a live Postgres (`MAILY_TEST_POSTGRES`).
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// The test server, as the integration tests find it.
    pub(crate) fn url() -> String {
        std::env::var("MAILY_TEST_POSTGRES")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
    }

    /// A pool on a fresh, empty throwaway schema: nothing migrated.
    pub(crate) async fn empty_schema_pool() -> PgPool {
        let name = schema::temp_name();
        let setup = format!("SET search_path TO {}", schema::quote(&name));
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .after_connect(move |conn, _meta| {
                let setup = setup.clone();
                Box::pin(async move {
                    conn.execute(&*setup).await?;
                    Ok(())
                })
            })
            .connect(&url())
            .await
            .expect("MAILY_TEST_POSTGRES reachable");
        schema::create(&pool, &name).await.unwrap();
        pool
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_connection_gets_the_schema_and_statement_timeout() {
        let store = PostgresStore::connect(PostgresParams {
            statement_timeout: Duration::from_millis(1234),
            ..PostgresParams::temp(testing::url())
        })
        .await
        .unwrap();
        // Two connections held at once are two different sessions.
        let mut conns = vec![
            store.pool.acquire().await.unwrap(),
            store.pool.acquire().await.unwrap(),
        ];
        for conn in &mut conns {
            let (timeout, schema, app): (String, String, String) = sqlx::query_as(
                "SELECT current_setting('statement_timeout'), current_schema(),
                        current_setting('application_name')",
            )
            .fetch_one(&mut **conn)
            .await
            .unwrap();
            assert_eq!(timeout, "1234ms");
            assert_eq!(Some(schema.as_str()), store.schema());
            assert_eq!(app, "maily");
        }
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("postgres://maily:s3cret@db:5432/maily?sslmode=require&password=x"),
            "postgres://maily:***@db:5432/maily"
        );
        assert_eq!(
            redact("postgres://postgres@127.0.0.1/test"),
            "postgres://postgres@127.0.0.1/test"
        );
        let params = PostgresParams::new("postgres://u:pw@h/d");
        assert!(!format!("{params:?}").contains("pw"));
    }
}
