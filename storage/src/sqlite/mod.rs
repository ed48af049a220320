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
mod domains;
mod leases;
mod ledger;
mod lifecycle;
mod messages;
pub(crate) mod migrate;
mod rows;
mod settlement;

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
    EmailAddress, ListId, MessageId, ReasonCount, Segment, SegmentId, StagedRecipient, TenantId,
    Timestamp,
};
use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use std::collections::{BTreeMap, HashMap};
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

#[async_trait]
impl TenantAccess for SqliteStore {
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
impl CampaignStore for SqliteStore {
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
        lifecycle::stage_recipients(&self.pool, campaign, recipients).await
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
impl OutcomeStore for SqliteStore {
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

    async fn commit_aggregates(&self, batch: &AggregateBatch) -> Result<(), StoreError> {
        analytics::commit_aggregates(&self.pool, batch).await
    }

    async fn campaign_stats(&self, id: CampaignId) -> Result<Option<CampaignStats>, StoreError> {
        analytics::campaign_stats(&self.pool, id).await
    }

    async fn all_stats(&self) -> Result<Vec<(TenantId, CampaignId, CampaignStats)>, StoreError> {
        analytics::all_stats(&self.pool).await
    }

    async fn bounce_reasons(&self, campaign: CampaignId) -> Result<Vec<ReasonCount>, StoreError> {
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
impl SuppressionStore for SqliteStore {
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
impl LedgerStore for SqliteStore {
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
impl LeaseStore for SqliteStore {
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
impl AudienceStore for SqliteStore {
    async fn upsert_contacts(&self, contacts: &[Contact]) -> Result<(), StoreError> {
        contacts::upsert_contacts(&self.pool, contacts).await
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
