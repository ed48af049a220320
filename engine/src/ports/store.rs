//! The store port: the engine's durable record (Postgres's model).
//!
//! Aggregates are written together with the log offsets they include, in one
//! transaction, so a restarted consumer resumes exactly where its state ends.

use crate::domain::{
    address::EmailAddress,
    campaign::{
        Campaign, CampaignState, CampaignStatus, Contact, ContactList, Segment, StagedRecipient,
    },
    ids::{CampaignId, ListId, MessageId, SegmentId, TenantId},
    stats::{CampaignStats, ReasonCount, bounce_reason_of, count_reasons},
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
    /// The part of each campaign's figures these stats are: the analytics partition
    /// that counted them. A campaign's stats are the sum of its parts.
    pub part: u32,
    pub stats: Vec<(TenantId, CampaignId, CampaignStats)>,
    /// Message states; a message's mask is merged (or-ed) with the stored one, so
    /// parts that count different events of one message never undo each other.
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

/// A transaction sent to a chain and not yet confirmed: kept so that an engine that
/// restarts waits for it (or replaces it at its nonce) instead of sending another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainSubmission {
    /// What was written where: the chain's name, or `<chain>/rewards`.
    pub chain: String,
    pub epoch: u64,
    pub nonce: u64,
    /// Every version's transaction hash, the latest last.
    pub hashes: Vec<Hash32>,
    /// The latest version, signed and encoded (EIP-2718).
    pub raw: Vec<u8>,
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
    /// The tenant key that issued it, if one did (not an operator): revoking that
    /// key revokes this one too.
    pub issued_by: Option<String>,
}

/// A sending domain of a tenant: it may send From addresses there once verified. A
/// domain belongs to one tenant at most.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantDomain {
    pub domain: crate::Domain,
    pub tenant: TenantId,
    /// What the tenant publishes in DNS to prove it holds the domain.
    pub token: String,
    pub created_at: Timestamp,
    /// When it was verified (by its DNS record or an operator); `None` while pending.
    pub verified_at: Option<Timestamp>,
    /// The tenant's own DKIM key for the domain, made when it was registered; mail
    /// From it (or a subdomain) is signed with it, as `d=<domain>`.
    pub dkim: Option<DomainKey>,
    /// The tenant's own return-path domain under it (`<label>.<domain>`), set once
    /// its MX was seen pointing at the engine; mail From the domain then bounces there.
    pub return_path: Option<crate::Domain>,
    /// The tenant's own tracking host under it (`<label>.<domain>`), set once its
    /// CNAME was seen pointing at the tracking listener; its mail's links then use it.
    pub tracking_host: Option<crate::Domain>,
}

/// A DKIM key of a tenant's sending domain.
#[derive(Clone, PartialEq, Eq)]
pub struct DomainKey {
    /// The DNS label under `_domainkey.<domain>`.
    pub selector: String,
    /// `rsa-sha256` or `ed25519-sha256`.
    pub algorithm: String,
    /// The private key, PKCS#8 PEM. Never shown by the API nor logged.
    pub private_key: String,
    /// The value of the TXT record at `<selector>._domainkey.<domain>`.
    pub dns_record: String,
}

impl DomainKey {
    /// Where the public key is published for `domain`.
    pub fn dns_name(&self, domain: &crate::Domain) -> String {
        format!("{}._domainkey.{domain}", self.selector)
    }
}

impl std::fmt::Debug for DomainKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DomainKey")
            .field("selector", &self.selector)
            .field("algorithm", &self.algorithm)
            .field("private_key", &"<redacted>")
            .field("dns_record", &self.dns_record)
            .finish()
    }
}

/// Whether `tenant` may send From `domain`: the closest of `domain` and its parents
/// that the tenant registered decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SenderDomain {
    /// The closest registered, verified domain of the tenant (`domain` or a parent).
    Verified(Box<TenantDomain>),
    /// Registered by the tenant, not verified yet.
    Pending,
    /// Neither it nor a parent is the tenant's.
    NotOwned,
}

impl SenderDomain {
    /// Looks `domain` and its parents up in `store` for `tenant`.
    pub async fn of<S: TenantAccess + ?Sized>(
        store: &S,
        tenant: &TenantId,
        domain: &str,
    ) -> Result<SenderDomain, StoreError> {
        let mut name = domain;
        let mut pending = false;
        loop {
            if let Ok(d) = crate::Domain::parse(name)
                && let Some(found) = store.domain(&d).await?
                && found.tenant == *tenant
            {
                if found.verified_at.is_some() {
                    return Ok(SenderDomain::Verified(Box::new(found)));
                }
                pending = true;
            }
            match name.split_once('.') {
                Some((_, parent)) if parent.contains('.') => name = parent,
                _ => break,
            }
        }
        Ok(if pending {
            SenderDomain::Pending
        } else {
            SenderDomain::NotOwned
        })
    }

    /// Why a campaign may not send From `domain` of `tenant`, if it may not.
    pub fn refusal(&self, tenant: &TenantId, domain: &str) -> Option<String> {
        match self {
            SenderDomain::Verified(_) => None,
            SenderDomain::Pending => Some(format!("the domain {domain} is not verified yet")),
            SenderDomain::NotOwned => Some(format!(
                "the domain {domain} is not a sending domain of tenant {tenant}: register it \
                 (POST /v1/tenants/{tenant}/domains) and have it verified"
            )),
        }
    }
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
    /// The tenant key that issued it, if one did.
    pub issued_by: Option<String>,
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
            .field("issued_by", &self.issued_by)
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
            .field("issued_by", &self.issued_by)
            .finish()
    }
}

/// The outcome of a compare-and-set on a campaign's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// The status changed; the new state.
    Done(CampaignState),
    /// The status was not one of those allowed; the state as it is.
    Refused(CampaignState),
    /// No such campaign.
    Unknown,
}

/// A message sent on its own under a caller's idempotency key.
///
/// The first request with a key stores this; a repeat finds it and sends nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotentSend {
    pub tenant: TenantId,
    /// The caller's key, unique per tenant.
    pub key: String,
    pub campaign: CampaignId,
    pub message_id: MessageId,
    pub email: EmailAddress,
    /// A hash of what was asked (campaign, recipient, variables), so a key reused for
    /// a different message is told apart from a repeat.
    pub fingerprint: [u8; 32],
    pub accepted_at: Timestamp,
    /// Whether the log acknowledged the message. A stored but not enqueued send (the
    /// process stopped in between) is enqueued again by the next repeat, with the same
    /// message id, so it still goes out once.
    pub enqueued: bool,
}

/// Tenants, their API keys and their sending domains.
#[async_trait]
pub trait TenantAccess: Send + Sync + 'static {
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

    /// Revokes `tenant`'s key `id` at `at`, with every key it issued (and theirs, and
    /// so on). Returns `false` when the tenant has no such key (unknown, or another
    /// tenant's, which stays untouched). Revoking again returns `true` and keeps the
    /// first revocation time.
    async fn revoke_api_key(
        &self,
        tenant: &TenantId,
        id: &str,
        at: Timestamp,
    ) -> Result<bool, StoreError>;

    /// Records that key `id` was used at `at`; best effort: an unknown id is a no-op,
    /// and an earlier `at` than the one recorded never moves it back.
    async fn touch_api_key(&self, id: &str, at: Timestamp) -> Result<(), StoreError>;

    /// Registers a sending domain; a domain some tenant already has is a conflict.
    async fn add_domain(&self, domain: &TenantDomain) -> Result<(), StoreError>;

    /// The registration of `domain`, whichever tenant holds it.
    async fn domain(&self, domain: &crate::Domain) -> Result<Option<TenantDomain>, StoreError>;

    /// A tenant's sending domains, by name.
    async fn domains(&self, tenant: &TenantId) -> Result<Vec<TenantDomain>, StoreError>;

    /// Marks `domain` verified at `at` (kept if it already was); false when no tenant
    /// has it.
    async fn verify_domain(
        &self,
        domain: &crate::Domain,
        at: Timestamp,
    ) -> Result<bool, StoreError>;

    /// Sets (or clears) the return-path and tracking hosts of `domain`; false when no
    /// tenant has it.
    async fn set_domain_hosts(
        &self,
        domain: &crate::Domain,
        return_path: Option<&crate::Domain>,
        tracking: Option<&crate::Domain>,
    ) -> Result<bool, StoreError>;

    /// Removes `tenant`'s `domain`; false when the tenant does not have it.
    async fn remove_domain(
        &self,
        tenant: &TenantId,
        domain: &crate::Domain,
    ) -> Result<bool, StoreError>;
}

/// Campaigns and their lifecycle.
#[async_trait]
pub trait CampaignStore: Send + Sync + 'static {
    /// Stores a new campaign; an existing id is a conflict.
    async fn insert_campaign(&self, campaign: &Campaign) -> Result<(), StoreError>;

    /// A campaign by id.
    async fn campaign(&self, id: CampaignId) -> Result<Option<Campaign>, StoreError>;

    /// Stores a new campaign with its state (`Draft`, or `Scheduled` with a time); an
    /// existing id is a conflict.
    async fn create_campaign(
        &self,
        campaign: &Campaign,
        state: &CampaignState,
    ) -> Result<(), StoreError>;

    /// Replaces a campaign's name, sender and template. Returns `false` for an unknown
    /// id. Its tenant never changes (the given one must match, else a conflict).
    async fn update_campaign(&self, campaign: &Campaign) -> Result<bool, StoreError>;

    /// A campaign's state. Campaigns stored with `insert_campaign` are `Running`.
    async fn campaign_state(&self, id: CampaignId) -> Result<Option<CampaignState>, StoreError>;

    /// A tenant's campaigns with their states, oldest first.
    async fn campaigns(
        &self,
        tenant: &TenantId,
    ) -> Result<Vec<(Campaign, CampaignState)>, StoreError>;

    /// Moves a campaign to `to` (with `scheduled_at`, kept as is when `None`) if and only
    /// if its status is one of `from`, atomically: of several callers racing, exactly
    /// one gets `Done`. Cancelling also drops the campaign's staged recipients that
    /// are still pending.
    async fn transition_campaign(
        &self,
        id: CampaignId,
        from: &[CampaignStatus],
        to: CampaignStatus,
        scheduled_at: Option<Timestamp>,
        now: Timestamp,
    ) -> Result<Transition, StoreError>;

    /// Scheduled campaigns whose time is at or before `now`, earliest first.
    async fn due_campaigns(&self, now: Timestamp) -> Result<Vec<CampaignId>, StoreError>;
}

/// What moves campaigns' recipients into the log: the staged recipients the launcher
/// launches, how many shards each campaign is spread over, and keyed sends.
#[async_trait]
pub trait DispatchStore: Send + Sync + 'static {
    /// Stages recipients of a campaign as pending, in the given order after those
    /// already staged, all or none. A message id staged before is set pending again
    /// (its address and variables replaced, moved to the end), which is how paused
    /// messages are held; given twice, the later row wins. An unknown campaign is an
    /// invalid row.
    async fn stage_recipients(
        &self,
        campaign: CampaignId,
        recipients: &[StagedRecipient],
    ) -> Result<(), StoreError>;

    /// Up to `limit` pending recipients of a campaign, in staging order.
    async fn pending_recipients(
        &self,
        campaign: CampaignId,
        limit: usize,
    ) -> Result<Vec<StagedRecipient>, StoreError>;

    /// Marks staged recipients as launched (in the send topic); unknown ids are skipped.
    async fn mark_launched(
        &self,
        campaign: CampaignId,
        ids: &[MessageId],
    ) -> Result<(), StoreError>;

    /// Running campaigns that have pending recipients.
    async fn launchable_campaigns(&self) -> Result<Vec<CampaignId>, StoreError>;

    /// Staged recipients of a campaign: `(pending, launched)`.
    async fn staged_counts(&self, campaign: CampaignId) -> Result<(u64, u64), StoreError>;

    /// Stores each send whose `(tenant, key)` is new and returns, in the same order,
    /// the stored send for every key: the given one when it was new, the first one
    /// otherwise.
    async fn reserve_sends(
        &self,
        sends: &[IdempotentSend],
    ) -> Result<Vec<IdempotentSend>, StoreError>;

    /// Records that the log acknowledged these keys' messages.
    async fn mark_sends_enqueued(
        &self,
        tenant: &TenantId,
        keys: &[String],
    ) -> Result<(), StoreError>;

    /// The number of shards campaign `id` is launched over: `proposed` (at least 1)
    /// if none was recorded yet, which is then recorded; the recorded number
    /// otherwise, so every launch of the campaign uses the same. An unknown campaign
    /// is an invalid row.
    async fn fix_shards(&self, id: CampaignId, proposed: u32) -> Result<u32, StoreError>;
}

/// What happened to messages: per-message state, campaign aggregates, the consumers' offsets stored with them.
#[async_trait]
pub trait OutcomeStore: Send + Sync + 'static {
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

    /// A campaign's stats as last committed: the sum of its parts.
    async fn campaign_stats(&self, id: CampaignId) -> Result<Option<CampaignStats>, StoreError>;

    /// One part of a campaign's stats (see [`AggregateBatch::part`]).
    async fn part_stats(
        &self,
        id: CampaignId,
        part: u32,
    ) -> Result<Option<CampaignStats>, StoreError>;

    /// Every campaign's stats, ordered by campaign id.
    async fn all_stats(&self) -> Result<Vec<(TenantId, CampaignId, CampaignStats)>, StoreError>;

    /// Applied-kind masks of the given messages (absent ids have none).
    async fn message_masks(&self, ids: &[MessageId])
    -> Result<HashMap<MessageId, u32>, StoreError>;

    /// The latest state of one message, if analytics has recorded it.
    async fn message(&self, id: MessageId) -> Result<Option<MessageState>, StoreError>;

    /// Messages of a campaign whose last status is `status`.
    async fn messages_with_status(
        &self,
        campaign: CampaignId,
        status: &str,
    ) -> Result<Vec<MessageState>, StoreError>;

    /// A campaign's bounced messages counted by reason and class, most frequent
    /// first, as committed with its stats (so the counts add up to `bounced_hard` and
    /// `bounced_soft`). Adapters answer it with one grouped query; this default reads
    /// the bounced messages.
    async fn bounce_reasons(&self, campaign: CampaignId) -> Result<Vec<ReasonCount>, StoreError> {
        let hard = self.messages_with_status(campaign, "bounced_hard").await?;
        let soft = self.messages_with_status(campaign, "bounced_soft").await?;
        let reasons = hard
            .iter()
            .map(|m| (bounce_reason_of(m.detail.as_deref()), true))
            .chain(
                soft.iter()
                    .map(|m| (bounce_reason_of(m.detail.as_deref()), false)),
            );
        Ok(count_reasons(reasons))
    }
}

/// Each tenant's suppression list.
#[async_trait]
pub trait SuppressionStore: Send + Sync + 'static {
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

    /// Up to `limit` of a tenant's suppressions, ordered by address, after `after`.
    async fn suppression_page(
        &self,
        tenant: &TenantId,
        after: Option<&EmailAddress>,
        limit: usize,
    ) -> Result<Vec<(EmailAddress, String)>, StoreError>;

    /// Removes an address from a tenant's suppression list; `false` if it was not on it.
    async fn unsuppress(&self, tenant: &TenantId, email: &EmailAddress)
    -> Result<bool, StoreError>;
}

/// Settlements, the hash-chained ledger, anchors, proofs and chain submissions.
#[async_trait]
pub trait LedgerStore: Send + Sync + 'static {
    /// Records a settled epoch with its offsets; an epoch settles once (else conflict).
    /// With a `fence` (the leader lease), nothing is written once the lease has changed
    /// hands ([`StoreError::Fenced`]).
    async fn commit_settlement(
        &self,
        settlement: &Settlement,
        fence: Option<&Fence>,
    ) -> Result<(), StoreError>;

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

    /// Saves (or replaces) the unconfirmed transaction of `chain` and `epoch`.
    async fn save_submission(&self, submission: &ChainSubmission) -> Result<(), StoreError>;

    /// The unconfirmed transaction of `chain` and `epoch`, if any.
    async fn submission(
        &self,
        chain: &str,
        epoch: u64,
    ) -> Result<Option<ChainSubmission>, StoreError>;

    /// Forgets the transaction of `chain` and `epoch` (confirmed, or given up).
    async fn clear_submission(&self, chain: &str, epoch: u64) -> Result<(), StoreError>;

    /// A campaign's proof in an epoch.
    async fn proof(
        &self,
        epoch: u64,
        campaign: CampaignId,
    ) -> Result<Option<StoredProof>, StoreError>;
}

/// Partition leases and live members.
#[async_trait]
pub trait LeaseStore: Send + Sync + 'static {
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
}

/// Contacts, lists and segments.
#[async_trait]
pub trait AudienceStore: Send + Sync + 'static {
    /// Creates or updates contacts by `(tenant, email)`, all or none: attributes are
    /// replaced, `created_at` of an existing contact is kept, `updated_at` is taken as
    /// given. A contact of a tenant that does not exist is an invalid row.
    async fn upsert_contacts(&self, contacts: &[Contact]) -> Result<(), StoreError>;

    /// A contact by address.
    async fn contact(
        &self,
        tenant: &TenantId,
        email: &EmailAddress,
    ) -> Result<Option<Contact>, StoreError>;

    /// Deletes a contact and its list memberships; `false` if there was none.
    async fn delete_contact(
        &self,
        tenant: &TenantId,
        email: &EmailAddress,
    ) -> Result<bool, StoreError>;

    /// A page of a tenant's contacts (of one list's members when `list` is set),
    /// ordered by address, starting after `after`.
    async fn contacts(
        &self,
        tenant: &TenantId,
        list: Option<ListId>,
        after: Option<&EmailAddress>,
        limit: usize,
    ) -> Result<Vec<Contact>, StoreError>;

    /// Creates a list; an existing id is a conflict, a tenant that does not exist an
    /// invalid row.
    async fn create_list(&self, list: &ContactList) -> Result<(), StoreError>;

    /// A tenant's lists, oldest first.
    async fn lists(&self, tenant: &TenantId) -> Result<Vec<ContactList>, StoreError>;

    /// A tenant's list (another tenant's id is `None`).
    async fn list(&self, tenant: &TenantId, id: ListId) -> Result<Option<ContactList>, StoreError>;

    /// Deletes a tenant's list and its memberships (not the contacts); `false` if none.
    async fn delete_list(&self, tenant: &TenantId, id: ListId) -> Result<bool, StoreError>;

    /// Adds existing contacts to a tenant's list (idempotent); returns how many were
    /// not members yet. An address that is not a contact of the tenant is an invalid row
    /// naming it, and nothing is added; so is an unknown list (or another tenant's).
    async fn add_list_members(
        &self,
        tenant: &TenantId,
        list: ListId,
        emails: &[EmailAddress],
    ) -> Result<u64, StoreError>;

    /// Removes members from a tenant's list; returns how many were members (none of an
    /// unknown list).
    async fn remove_list_members(
        &self,
        tenant: &TenantId,
        list: ListId,
        emails: &[EmailAddress],
    ) -> Result<u64, StoreError>;

    /// Creates a segment; an existing id is a conflict, a tenant that does not exist an
    /// invalid row.
    async fn create_segment(&self, segment: &Segment) -> Result<(), StoreError>;

    /// A tenant's segments, oldest first.
    async fn segments(&self, tenant: &TenantId) -> Result<Vec<Segment>, StoreError>;

    /// A tenant's segment (another tenant's id is `None`).
    async fn segment(
        &self,
        tenant: &TenantId,
        id: SegmentId,
    ) -> Result<Option<Segment>, StoreError>;

    /// Deletes a tenant's segment; `false` if none.
    async fn delete_segment(&self, tenant: &TenantId, id: SegmentId) -> Result<bool, StoreError>;
}

/// What retention deletes: rows older than these times (milliseconds since the
/// epoch, as [`Timestamp`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cutoffs {
    /// Keyed sends accepted before this.
    pub keyed_sends: Timestamp,
    /// Staged recipients launched before this (pending ones are never deleted).
    pub launched_recipients: Timestamp,
    /// Message states last changed before this.
    pub messages: Timestamp,
}

/// How many rows one pass of retention deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    pub keyed_sends: u64,
    pub launched_recipients: u64,
    pub messages: u64,
}

impl Pruned {
    pub fn total(&self) -> u64 {
        self.keyed_sends + self.launched_recipients + self.messages
    }
}

/// What the store forgets: rows it no longer needs to work, past their retention.
#[async_trait]
pub trait RetentionStore: Send + Sync + 'static {
    /// Deletes up to `limit` rows of each kind older than `cutoffs`; returns how many
    /// went. Called again until it deletes fewer than `limit` of each.
    async fn prune(&self, cutoffs: &Cutoffs, limit: usize) -> Result<Pruned, StoreError>;
}

/// A send held back from its sender's window until it is due, because its
/// destination's limits would have kept it waiting there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeferredSend {
    pub message_id: MessageId,
    /// The send topic's partition whose sender owns it.
    pub partition: u32,
    /// The recipient's domain (lower case).
    pub destination: String,
    /// When it may be tried.
    pub due: Timestamp,
    /// The key of the log record it came in (its campaign's shard).
    pub key: Vec<u8>,
    /// The send record, encoded.
    pub payload: Vec<u8>,
}

/// The deferred queue: per partition, sends waiting for their destination, each due
/// at its own time. Only the sender owning a partition reads or writes its rows.
#[async_trait]
pub trait DeferredStore: Send + Sync + 'static {
    /// Stores sends (replacing one with the same message id, which is then no longer
    /// taken) in one transaction, refused with `Fenced` unless `fence` still holds.
    async fn defer_sends(
        &self,
        sends: &[DeferredSend],
        fence: Option<&Fence>,
    ) -> Result<(), StoreError>;

    /// Up to `limit` sends of `partition` due at or before `now` and not taken,
    /// earliest first, marked taken so the next call skips them.
    async fn take_due_sends(
        &self,
        partition: u32,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<DeferredSend>, StoreError>;

    /// When the earliest send of `partition` not taken is due.
    async fn next_deferred_due(&self, partition: u32) -> Result<Option<Timestamp>, StoreError>;

    /// Makes every taken send of `partition` takeable again (a new owner starting:
    /// the window that took them is gone); returns how many sends the partition has.
    async fn release_deferred(&self, partition: u32) -> Result<u64, StoreError>;

    /// Deletes these sends (their messages finished); unknown ids are skipped.
    async fn forget_deferred(&self, ids: &[MessageId]) -> Result<(), StoreError>;
}

/// The durable record of the engine: every role above, as one adapter implements
/// them. Code that needs one role takes that port (`Arc<dyn CampaignStore>`, ...);
/// an `Arc<dyn Store>` converts to any of them.
pub trait Store:
    TenantAccess
    + CampaignStore
    + DispatchStore
    + OutcomeStore
    + SuppressionStore
    + LedgerStore
    + LeaseStore
    + AudienceStore
    + RetentionStore
    + DeferredStore
{
}

impl<T> Store for T where
    T: TenantAccess
        + CampaignStore
        + DispatchStore
        + OutcomeStore
        + SuppressionStore
        + LedgerStore
        + LeaseStore
        + AudienceStore
        + RetentionStore
        + DeferredStore
{
}
