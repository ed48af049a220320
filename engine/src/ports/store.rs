//! The store port: the engine's durable record (Postgres's model).
//!
//! Aggregates are written together with the log offsets they include, in one
//! transaction, so a restarted consumer resumes exactly where its state ends.

use crate::domain::{
    address::EmailAddress,
    campaign::Campaign,
    ids::{CampaignId, MessageId, TenantId},
    stats::CampaignStats,
};
use crate::merkle::{CampaignLeaf, Hash32};
use crate::time::Timestamp;
use async_trait::async_trait;
use std::collections::{BTreeMap, HashMap};

/// What a store operation can fail with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("conflict: {0}")]
    Conflict(String),
    /// Nothing was written: `row` cannot be stored.
    #[error("row {row} rejected: {reason}")]
    InvalidRow { row: String, reason: String },
    /// The write committed without `rejected` rows, the first of which is `row`.
    #[error("row {row} rejected ({rejected} in all): {reason}; the rest was committed")]
    RowsRejected {
        row: String,
        reason: String,
        rejected: usize,
    },
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The writer's lease was taken over: it must stop writing for that resource.
    #[error("fenced: {owner} no longer holds {resource} at epoch {epoch}")]
    Fenced {
        resource: String,
        owner: String,
        epoch: u64,
    },
}

/// Who owns a resource (a partition, or the leader role) and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// What is leased, e.g. `partition/3` or `leader`.
    pub resource: String,
    /// The engine process holding it.
    pub owner: String,
    /// Raised each time the lease changes hands; writes carry it as their fence.
    pub epoch: u64,
    pub expires_at: Timestamp,
}

impl Lease {
    /// The fence that writes under this lease carry.
    pub fn fence(&self) -> Fence {
        Fence {
            resource: self.resource.clone(),
            owner: self.owner.clone(),
            epoch: self.epoch,
        }
    }
}

/// Proof of ownership checked in the same transaction as a write: the write is
/// refused with [`StoreError::Fenced`] unless `owner` still holds `resource` at `epoch`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Fence {
    pub resource: String,
    pub owner: String,
    pub epoch: u64,
}

/// A consumer position: everything before `next` in the partition is processed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredOffset {
    pub topic: String,
    pub partition: u32,
    pub next: u64,
}

/// The latest known state of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageState {
    pub message_id: MessageId,
    pub tenant: TenantId,
    pub campaign: CampaignId,
    pub recipient: EmailAddress,
    /// Bits of [`crate::EventKind::bit`] for every kind applied so far.
    pub mask: u32,
    /// Name of the last event kind applied.
    pub status: String,
    /// Reply text or reason of the last event that had one.
    pub detail: Option<String>,
}

/// One analytics flush: stats, message states and offsets, committed atomically.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AggregateBatch {
    pub group: String,
    /// Checked in the transaction; `None` writes unconditionally.
    pub fence: Option<Fence>,
    pub offsets: Vec<StoredOffset>,
    pub stats: Vec<(TenantId, CampaignId, CampaignStats)>,
    pub messages: Vec<MessageState>,
}

/// One campaign's figures in a settled epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettlementEntry {
    pub tenant: TenantId,
    pub campaign: CampaignId,
    pub stats: CampaignStats,
    /// Cumulative reward up to and including this epoch.
    pub reward_total: u128,
    /// Reward earned in this epoch.
    pub reward_delta: u128,
}

/// A settled reward epoch, with the stats-topic offsets it includes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settlement {
    pub epoch: u64,
    pub settled_at: Timestamp,
    pub group: String,
    pub offsets: Vec<StoredOffset>,
    pub entries: Vec<SettlementEntry>,
}

/// One entry of the local hash-chained anchor ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerEntry {
    pub epoch: u64,
    pub root: Hash32,
    /// Hash of the previous entry (zeros for the first).
    pub prev: Hash32,
    /// Hash of this entry, chaining it to `prev`.
    pub hash: Hash32,
    pub at: Timestamp,
}

/// A campaign's leaf in an anchored epoch with its inclusion proof.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredProof {
    pub leaf: CampaignLeaf,
    pub leaf_index: u32,
    pub root: Hash32,
    pub proof: Vec<Hash32>,
}

/// A tenant as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantRecord {
    pub id: TenantId,
    pub name: String,
    /// When the tenant was first stored (a rename keeps it).
    pub created_at: Timestamp,
}

/// An API key to store: who it belongs to, what it may do, and a hash of its secret.
///
/// The secret itself never reaches the store; the API hashes it (see
/// `maily_api::auth::keys`) and only compares hashes. Debug output leaves the hash out.
#[derive(Clone, PartialEq, Eq)]
pub struct NewApiKey {
    /// The public part of the key, unique across all tenants.
    pub id: String,
    /// The tenant whose API the key opens.
    pub tenant: TenantId,
    /// What the tenant calls the key.
    pub name: String,
    /// Scope names as the API defines them (`send`, `read`, `admin`), stored as given.
    pub scopes: Vec<String>,
    /// The hash of the key's secret.
    pub secret_hash: [u8; 32],
    pub created_at: Timestamp,
}

/// A stored API key, with when it was last used and whether it was revoked.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKeyRecord {
    pub id: String,
    pub tenant: TenantId,
    pub name: String,
    pub scopes: Vec<String>,
    /// The hash of the key's secret (never the secret).
    pub secret_hash: [u8; 32],
    pub created_at: Timestamp,
    /// The latest time the key authenticated a request, as recorded (best effort).
    pub last_used_at: Option<Timestamp>,
    /// When the key was revoked; a revoked key never authenticates again.
    pub revoked_at: Option<Timestamp>,
}

impl std::fmt::Debug for NewApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewApiKey")
            .field("id", &self.id)
            .field("tenant", &self.tenant)
            .field("name", &self.name)
            .field("scopes", &self.scopes)
            .field("secret_hash", &"<redacted>")
            .field("created_at", &self.created_at)
            .finish()
    }
}

impl std::fmt::Debug for ApiKeyRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeyRecord")
            .field("id", &self.id)
            .field("tenant", &self.tenant)
            .field("name", &self.name)
            .field("scopes", &self.scopes)
            .field("secret_hash", &"<redacted>")
            .field("created_at", &self.created_at)
            .field("last_used_at", &self.last_used_at)
            .field("revoked_at", &self.revoked_at)
            .finish()
    }
}

/// The durable record of the engine.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Creates or renames a tenant.
    async fn upsert_tenant(&self, tenant: &TenantId, name: &str) -> Result<(), StoreError>;

    /// Every tenant, ordered by id.
    async fn tenants(&self) -> Result<Vec<TenantRecord>, StoreError>;

    /// A tenant by id.
    async fn tenant(&self, id: &TenantId) -> Result<Option<TenantRecord>, StoreError>;

    /// Stores a new API key. An existing id is a conflict; a tenant that does not exist
    /// is an invalid row.
    async fn create_api_key(&self, key: &NewApiKey) -> Result<(), StoreError>;

    /// An API key by id, revoked or not.
    async fn api_key(&self, id: &str) -> Result<Option<ApiKeyRecord>, StoreError>;

    /// A tenant's API keys, revoked ones included, oldest first (then by id).
    async fn api_keys(&self, tenant: &TenantId) -> Result<Vec<ApiKeyRecord>, StoreError>;

    /// Revokes `tenant`'s key `id` at `at`. Returns `false` when the tenant has no such
    /// key (unknown, or another tenant's, which stays untouched). Revoking again
    /// returns `true` and keeps the first revocation time.
    async fn revoke_api_key(
        &self,
        tenant: &TenantId,
        id: &str,
        at: Timestamp,
    ) -> Result<bool, StoreError>;

    /// Records that key `id` was used at `at`; best effort: an unknown id is a no-op,
    /// and an earlier `at` than the one recorded never moves it back.
    async fn touch_api_key(&self, id: &str, at: Timestamp) -> Result<(), StoreError>;

    /// Stores a new campaign; an existing id is a conflict.
    async fn insert_campaign(&self, campaign: &Campaign) -> Result<(), StoreError>;

    /// A campaign by id.
    async fn campaign(&self, id: CampaignId) -> Result<Option<Campaign>, StoreError>;

    /// Stored positions of `group` in `topic`, by partition.
    async fn load_offsets(
        &self,
        group: &str,
        topic: &str,
    ) -> Result<BTreeMap<u32, u64>, StoreError>;

    /// Stores positions of `group` for consumers whose state lives elsewhere, checking
    /// `fence` in the same transaction when given.
    async fn save_offsets(
        &self,
        group: &str,
        offsets: &[StoredOffset],
        fence: Option<&Fence>,
    ) -> Result<(), StoreError>;

    /// Commits one analytics flush in a single transaction.
    async fn commit_aggregates(&self, batch: &AggregateBatch) -> Result<(), StoreError>;

    /// A campaign's stats as last committed.
    async fn campaign_stats(&self, id: CampaignId) -> Result<Option<CampaignStats>, StoreError>;

    /// Every campaign's stats, ordered by campaign id.
    async fn all_stats(&self) -> Result<Vec<(TenantId, CampaignId, CampaignStats)>, StoreError>;

    /// Applied-kind masks of the given messages (absent ids have none).
    async fn message_masks(&self, ids: &[MessageId])
    -> Result<HashMap<MessageId, u32>, StoreError>;

    /// Messages of a campaign whose last status is `status`.
    async fn messages_with_status(
        &self,
        campaign: CampaignId,
        status: &str,
    ) -> Result<Vec<MessageState>, StoreError>;

    /// Adds an address to a tenant's suppression list (idempotent).
    async fn suppress(
        &self,
        tenant: &TenantId,
        email: &EmailAddress,
        reason: &str,
    ) -> Result<(), StoreError>;

    /// Whether an address is on a tenant's suppression list (the fallback when hot
    /// state is unavailable).
    async fn is_suppressed(
        &self,
        tenant: &TenantId,
        email: &EmailAddress,
    ) -> Result<bool, StoreError>;

    /// A tenant's suppression list with reasons.
    async fn suppressions(
        &self,
        tenant: &TenantId,
    ) -> Result<Vec<(EmailAddress, String)>, StoreError>;

    /// Records a settled epoch with its offsets; an epoch settles once (else conflict).
    async fn commit_settlement(&self, settlement: &Settlement) -> Result<(), StoreError>;

    /// The settlement of `epoch`.
    async fn settlement(&self, epoch: u64) -> Result<Option<Settlement>, StoreError>;

    /// The highest settled epoch.
    async fn last_settled_epoch(&self) -> Result<Option<u64>, StoreError>;

    /// The newest ledger entry.
    async fn ledger_head(&self) -> Result<Option<LedgerEntry>, StoreError>;

    /// Appends an entry; fails with a conflict unless `entry.prev` is the current head's
    /// hash and the epoch is above the head's (epochs are anchored in order).
    async fn append_ledger(&self, entry: &LedgerEntry) -> Result<(), StoreError>;

    /// The ledger entry of `epoch`.
    async fn ledger_entry(&self, epoch: u64) -> Result<Option<LedgerEntry>, StoreError>;

    /// Every ledger entry, oldest first.
    async fn ledger_entries(&self) -> Result<Vec<LedgerEntry>, StoreError>;

    /// Records that `epoch` was anchored on `chain` (idempotent per epoch and chain).
    async fn record_anchor(
        &self,
        chain: &str,
        epoch: u64,
        root: &Hash32,
        reference: &str,
    ) -> Result<(), StoreError>;

    /// Settled epochs not yet anchored on `chain`, oldest first.
    async fn epochs_to_anchor(&self, chain: &str) -> Result<Vec<u64>, StoreError>;

    /// Stores the proofs of an epoch (idempotent).
    async fn store_proofs(&self, proofs: &[StoredProof]) -> Result<(), StoreError>;

    /// Takes, renews or takes over the lease on `resource` for `owner` until
    /// `now + ttl`. Succeeds when the lease is free, expired (`expires_at <= now`) or
    /// already held by `owner`; changing hands raises the epoch, a renewal keeps it.
    /// Returns `None` while another owner holds an unexpired lease.
    async fn acquire_lease(
        &self,
        resource: &str,
        owner: &str,
        now: Timestamp,
        ttl: std::time::Duration,
    ) -> Result<Option<Lease>, StoreError>;

    /// Gives a lease up (it expires at once) if `fence` still holds it; otherwise a
    /// no-op.
    async fn release_lease(&self, fence: &Fence) -> Result<(), StoreError>;

    /// Every lease, ordered by resource.
    async fn leases(&self) -> Result<Vec<Lease>, StoreError>;

    /// Records that engine process `member` is alive at `now`.
    async fn heartbeat(&self, member: &str, now: Timestamp) -> Result<(), StoreError>;

    /// Members whose last heartbeat is at or after `since`, sorted.
    async fn live_members(&self, since: Timestamp) -> Result<Vec<String>, StoreError>;

    /// A campaign's proof in an epoch.
    async fn proof(
        &self,
        epoch: u64,
        campaign: CampaignId,
    ) -> Result<Option<StoredProof>, StoreError>;
}
