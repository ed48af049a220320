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

use async_trait::async_trait;
use maily_engine::merkle::Hash32;
use maily_engine::ports::{
    AggregateBatch, ApiKeyRecord, ChainSubmission, Fence, IdempotentSend, Lease, LedgerEntry,
    MessageState, NewApiKey, Settlement, StoreError, StoredOffset, StoredProof, TenantRecord,
    Transition,
};
use maily_engine::ports::{
    AudienceStore, CampaignStore, LeaseStore, LedgerStore, OutcomeStore, SuppressionStore,
    TenantAccess,
};
use maily_engine::{
    Campaign, CampaignId, CampaignState, CampaignStats, CampaignStatus, Contact, ContactList,
    EmailAddress, ListId, MessageId, Segment, SegmentId, StagedRecipient, TenantId, Timestamp,
};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Executor, PgPool};
use std::collections::{BTreeMap, HashMap};
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

    /// [`Store::commit_aggregates`] with an explicit write method, for the benchmark.
    #[doc(hidden)]
    pub async fn commit_aggregates_with(
        &self,
        batch: &AggregateBatch,
        method: FlushMethod,
    ) -> Result<(), StoreError> {
        analytics::commit_aggregates(&self.pool, batch, method, self.batch_rows).await
    }
}

#[async_trait]
impl TenantAccess for PostgresStore {
    async fn upsert_tenant(&self, tenant: &TenantId, name: &str) -> Result<(), StoreError> {
        catalog::upsert_tenant(&self.pool, tenant, name).await
    }

    async fn tenants(&self) -> Result<Vec<TenantRecord>, StoreError> {
        catalog::tenants(&self.pool).await
    }

    async fn tenant(&self, id: &TenantId) -> Result<Option<TenantRecord>, StoreError> {
        catalog::tenant(&self.pool, id).await
    }

    async fn create_api_key(&self, key: &NewApiKey) -> Result<(), StoreError> {
        api_keys::create_api_key(&self.pool, key).await
    }

    async fn api_key(&self, id: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        api_keys::api_key(&self.pool, id).await
    }

    async fn api_keys(&self, tenant: &TenantId) -> Result<Vec<ApiKeyRecord>, StoreError> {
        api_keys::api_keys(&self.pool, tenant).await
    }

    async fn revoke_api_key(
        &self,
        tenant: &TenantId,
        id: &str,
        at: Timestamp,
    ) -> Result<bool, StoreError> {
        api_keys::revoke_api_key(&self.pool, tenant, id, at).await
    }

    async fn touch_api_key(&self, id: &str, at: Timestamp) -> Result<(), StoreError> {
        api_keys::touch_api_key(&self.pool, id, at).await
    }

    async fn add_domain(
        &self,
        domain: &maily_engine::ports::TenantDomain,
    ) -> Result<(), StoreError> {
        domains::add_domain(&self.pool, domain).await
    }

    async fn domain(
        &self,
        domain: &maily_engine::Domain,
    ) -> Result<Option<maily_engine::ports::TenantDomain>, StoreError> {
        domains::domain(&self.pool, domain).await
    }

    async fn domains(
        &self,
        tenant: &TenantId,
    ) -> Result<Vec<maily_engine::ports::TenantDomain>, StoreError> {
        domains::domains(&self.pool, tenant).await
    }

    async fn verify_domain(
        &self,
        domain: &maily_engine::Domain,
        at: Timestamp,
    ) -> Result<bool, StoreError> {
        domains::verify_domain(&self.pool, domain, at).await
    }

    async fn set_domain_hosts(
        &self,
        domain: &maily_engine::Domain,
        return_path: Option<&maily_engine::Domain>,
        tracking: Option<&maily_engine::Domain>,
    ) -> Result<bool, StoreError> {
        domains::set_domain_hosts(&self.pool, domain, return_path, tracking).await
    }

    async fn remove_domain(
        &self,
        tenant: &TenantId,
        domain: &maily_engine::Domain,
    ) -> Result<bool, StoreError> {
        domains::remove_domain(&self.pool, tenant, domain).await
    }
}

#[async_trait]
impl CampaignStore for PostgresStore {
    async fn insert_campaign(&self, campaign: &Campaign) -> Result<(), StoreError> {
        let state = CampaignState {
            status: CampaignStatus::Running,
            scheduled_at: None,
            updated_at: Timestamp::now(),
        };
        catalog::insert_campaign(&self.pool, campaign, &state).await
    }

    async fn campaign(&self, id: CampaignId) -> Result<Option<Campaign>, StoreError> {
        catalog::campaign(&self.pool, id).await
    }

    async fn create_campaign(
        &self,
        campaign: &Campaign,
        state: &CampaignState,
    ) -> Result<(), StoreError> {
        catalog::insert_campaign(&self.pool, campaign, state).await
    }

    async fn update_campaign(&self, campaign: &Campaign) -> Result<bool, StoreError> {
        lifecycle::update_campaign(&self.pool, campaign).await
    }

    async fn campaign_state(&self, id: CampaignId) -> Result<Option<CampaignState>, StoreError> {
        lifecycle::campaign_state(&self.pool, id).await
    }

    async fn campaigns(
        &self,
        tenant: &TenantId,
    ) -> Result<Vec<(Campaign, CampaignState)>, StoreError> {
        lifecycle::campaigns(&self.pool, tenant).await
    }

    async fn transition_campaign(
        &self,
        id: CampaignId,
        from: &[CampaignStatus],
        to: CampaignStatus,
        scheduled_at: Option<Timestamp>,
        now: Timestamp,
    ) -> Result<Transition, StoreError> {
        lifecycle::transition_campaign(&self.pool, id, from, to, scheduled_at, now).await
    }

    async fn due_campaigns(&self, now: Timestamp) -> Result<Vec<CampaignId>, StoreError> {
        lifecycle::due_campaigns(&self.pool, now).await
    }

    async fn stage_recipients(
        &self,
        campaign: CampaignId,
        recipients: &[StagedRecipient],
    ) -> Result<(), StoreError> {
        lifecycle::stage_recipients(&self.pool, campaign, recipients, self.batch_rows).await
    }

    async fn pending_recipients(
        &self,
        campaign: CampaignId,
        limit: usize,
    ) -> Result<Vec<StagedRecipient>, StoreError> {
        lifecycle::pending_recipients(&self.pool, campaign, limit).await
    }

    async fn mark_launched(
        &self,
        campaign: CampaignId,
        ids: &[MessageId],
    ) -> Result<(), StoreError> {
        lifecycle::mark_launched(&self.pool, campaign, ids).await
    }

    async fn launchable_campaigns(&self) -> Result<Vec<CampaignId>, StoreError> {
        lifecycle::launchable_campaigns(&self.pool).await
    }

    async fn staged_counts(&self, campaign: CampaignId) -> Result<(u64, u64), StoreError> {
        lifecycle::staged_counts(&self.pool, campaign).await
    }

    async fn reserve_sends(
        &self,
        sends: &[IdempotentSend],
    ) -> Result<Vec<IdempotentSend>, StoreError> {
        lifecycle::reserve_sends(&self.pool, sends).await
    }

    async fn mark_sends_enqueued(
        &self,
        tenant: &TenantId,
        keys: &[String],
    ) -> Result<(), StoreError> {
        lifecycle::mark_sends_enqueued(&self.pool, tenant, keys).await
    }
}

#[async_trait]
impl OutcomeStore for PostgresStore {
    async fn load_offsets(
        &self,
        group: &str,
        topic: &str,
    ) -> Result<BTreeMap<u32, u64>, StoreError> {
        analytics::load_offsets(&self.pool, group, topic).await
    }

    async fn save_offsets(
        &self,
        group: &str,
        offsets: &[StoredOffset],
        fence: Option<&Fence>,
    ) -> Result<(), StoreError> {
        analytics::save_offsets(&self.pool, group, offsets, fence).await
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
    async fn commit_aggregates(&self, batch: &AggregateBatch) -> Result<(), StoreError> {
        self.commit_aggregates_with(batch, FlushMethod::PRODUCTION)
            .await
    }

    async fn campaign_stats(&self, id: CampaignId) -> Result<Option<CampaignStats>, StoreError> {
        analytics::campaign_stats(&self.pool, id).await
    }

    async fn all_stats(&self) -> Result<Vec<(TenantId, CampaignId, CampaignStats)>, StoreError> {
        analytics::all_stats(&self.pool).await
    }

    async fn bounce_reasons(
        &self,
        campaign: CampaignId,
    ) -> Result<Vec<maily_engine::ReasonCount>, StoreError> {
        analytics::bounce_reasons(&self.pool, campaign).await
    }

    async fn message_masks(
        &self,
        ids: &[MessageId],
    ) -> Result<HashMap<MessageId, u32>, StoreError> {
        analytics::message_masks(&self.pool, ids).await
    }

    async fn message(&self, id: MessageId) -> Result<Option<MessageState>, StoreError> {
        messages::message(&self.pool, id).await
    }

    async fn messages_with_status(
        &self,
        campaign: CampaignId,
        status: &str,
    ) -> Result<Vec<MessageState>, StoreError> {
        messages::messages_with_status(&self.pool, campaign, status).await
    }
}

#[async_trait]
impl SuppressionStore for PostgresStore {
    async fn suppress(
        &self,
        tenant: &TenantId,
        email: &EmailAddress,
        reason: &str,
    ) -> Result<(), StoreError> {
        catalog::suppress(&self.pool, tenant, email, reason).await
    }

    async fn is_suppressed(
        &self,
        tenant: &TenantId,
        email: &EmailAddress,
    ) -> Result<bool, StoreError> {
        catalog::is_suppressed(&self.pool, tenant, email).await
    }

    async fn suppression_page(
        &self,
        tenant: &TenantId,
        after: Option<&EmailAddress>,
        limit: usize,
    ) -> Result<Vec<(EmailAddress, String)>, StoreError> {
        catalog::suppression_page(&self.pool, tenant, after, limit).await
    }

    async fn suppressions(
        &self,
        tenant: &TenantId,
    ) -> Result<Vec<(EmailAddress, String)>, StoreError> {
        catalog::suppressions(&self.pool, tenant).await
    }

    async fn unsuppress(
        &self,
        tenant: &TenantId,
        email: &EmailAddress,
    ) -> Result<bool, StoreError> {
        catalog::unsuppress(&self.pool, tenant, email).await
    }
}

#[async_trait]
impl LedgerStore for PostgresStore {
    async fn commit_settlement(
        &self,
        settlement: &Settlement,
        fence: Option<&Fence>,
    ) -> Result<(), StoreError> {
        settlement::commit_settlement(&self.pool, settlement, fence).await
    }

    async fn settlement(&self, epoch: u64) -> Result<Option<Settlement>, StoreError> {
        settlement::settlement(&self.pool, epoch).await
    }

    async fn last_settled_epoch(&self) -> Result<Option<u64>, StoreError> {
        settlement::last_settled_epoch(&self.pool).await
    }

    async fn ledger_head(&self) -> Result<Option<LedgerEntry>, StoreError> {
        ledger::ledger_head(&self.pool).await
    }

    async fn append_ledger(&self, entry: &LedgerEntry) -> Result<(), StoreError> {
        ledger::append_ledger(&self.pool, entry).await
    }

    async fn ledger_entry(&self, epoch: u64) -> Result<Option<LedgerEntry>, StoreError> {
        ledger::ledger_entry(&self.pool, epoch).await
    }

    async fn ledger_entries(&self) -> Result<Vec<LedgerEntry>, StoreError> {
        ledger::ledger_entries(&self.pool).await
    }

    async fn record_anchor(
        &self,
        chain: &str,
        epoch: u64,
        root: &Hash32,
        reference: &str,
    ) -> Result<(), StoreError> {
        ledger::record_anchor(&self.pool, chain, epoch, root, reference).await
    }

    async fn epochs_to_anchor(&self, chain: &str) -> Result<Vec<u64>, StoreError> {
        ledger::epochs_to_anchor(&self.pool, chain).await
    }

    async fn store_proofs(&self, proofs: &[StoredProof]) -> Result<(), StoreError> {
        ledger::store_proofs(&self.pool, proofs).await
    }

    async fn save_submission(&self, submission: &ChainSubmission) -> Result<(), StoreError> {
        ledger::save_submission(&self.pool, submission).await
    }

    async fn submission(
        &self,
        chain: &str,
        epoch: u64,
    ) -> Result<Option<ChainSubmission>, StoreError> {
        ledger::submission(&self.pool, chain, epoch).await
    }

    async fn clear_submission(&self, chain: &str, epoch: u64) -> Result<(), StoreError> {
        ledger::clear_submission(&self.pool, chain, epoch).await
    }

    async fn proof(
        &self,
        epoch: u64,
        campaign: CampaignId,
    ) -> Result<Option<StoredProof>, StoreError> {
        ledger::proof(&self.pool, epoch, campaign).await
    }
}

#[async_trait]
impl LeaseStore for PostgresStore {
    async fn acquire_lease(
        &self,
        resource: &str,
        owner: &str,
        now: Timestamp,
        ttl: Duration,
    ) -> Result<Option<Lease>, StoreError> {
        leases::acquire_lease(&self.pool, resource, owner, now, ttl).await
    }

    async fn release_lease(&self, fence: &Fence) -> Result<(), StoreError> {
        leases::release_lease(&self.pool, fence).await
    }

    async fn leases(&self) -> Result<Vec<Lease>, StoreError> {
        leases::leases(&self.pool).await
    }

    async fn heartbeat(&self, member: &str, now: Timestamp) -> Result<(), StoreError> {
        leases::heartbeat(&self.pool, member, now).await
    }

    async fn live_members(&self, since: Timestamp) -> Result<Vec<String>, StoreError> {
        leases::live_members(&self.pool, since).await
    }
}

#[async_trait]
impl AudienceStore for PostgresStore {
    async fn upsert_contacts(&self, contacts: &[Contact]) -> Result<(), StoreError> {
        contacts::upsert_contacts(&self.pool, contacts, self.batch_rows).await
    }

    async fn contact(
        &self,
        tenant: &TenantId,
        email: &EmailAddress,
    ) -> Result<Option<Contact>, StoreError> {
        contacts::contact(&self.pool, tenant, email).await
    }

    async fn delete_contact(
        &self,
        tenant: &TenantId,
        email: &EmailAddress,
    ) -> Result<bool, StoreError> {
        contacts::delete_contact(&self.pool, tenant, email).await
    }

    async fn contacts(
        &self,
        tenant: &TenantId,
        list: Option<ListId>,
        after: Option<&EmailAddress>,
        limit: usize,
    ) -> Result<Vec<Contact>, StoreError> {
        contacts::contacts(&self.pool, tenant, list, after, limit).await
    }

    async fn create_list(&self, list: &ContactList) -> Result<(), StoreError> {
        contacts::create_list(&self.pool, list).await
    }

    async fn lists(&self, tenant: &TenantId) -> Result<Vec<ContactList>, StoreError> {
        contacts::lists(&self.pool, tenant).await
    }

    async fn list(&self, tenant: &TenantId, id: ListId) -> Result<Option<ContactList>, StoreError> {
        contacts::list(&self.pool, tenant, id).await
    }

    async fn delete_list(&self, tenant: &TenantId, id: ListId) -> Result<bool, StoreError> {
        contacts::delete_list(&self.pool, tenant, id).await
    }

    async fn add_list_members(
        &self,
        tenant: &TenantId,
        list: ListId,
        emails: &[EmailAddress],
    ) -> Result<u64, StoreError> {
        contacts::add_list_members(&self.pool, tenant, list, emails).await
    }

    async fn remove_list_members(
        &self,
        tenant: &TenantId,
        list: ListId,
        emails: &[EmailAddress],
    ) -> Result<u64, StoreError> {
        contacts::remove_list_members(&self.pool, tenant, list, emails).await
    }

    async fn create_segment(&self, segment: &Segment) -> Result<(), StoreError> {
        contacts::create_segment(&self.pool, segment).await
    }

    async fn segments(&self, tenant: &TenantId) -> Result<Vec<Segment>, StoreError> {
        contacts::segments(&self.pool, tenant).await
    }

    async fn segment(
        &self,
        tenant: &TenantId,
        id: SegmentId,
    ) -> Result<Option<Segment>, StoreError> {
        contacts::segment(&self.pool, tenant, id).await
    }

    async fn delete_segment(&self, tenant: &TenantId, id: SegmentId) -> Result<bool, StoreError> {
        contacts::delete_segment(&self.pool, tenant, id).await
    }
}

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
