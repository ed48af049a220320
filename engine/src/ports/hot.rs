//! The hot-state port: fast, shared, loss-tolerant state (Redis's model).
//!
//! Anything here can be rebuilt from the store; the store stays the record.

use crate::domain::{
    address::EmailAddress,
    ids::{CampaignId, TenantId},
    stats::CampaignStats,
};
use crate::time::Timestamp;
use async_trait::async_trait;
use std::time::Duration;

/// The state of an idempotency key after a claim attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The caller now owns the key and must `complete` or `release` it.
    Acquired,
    /// Someone claimed the key at `since` and has not completed it. `mine` says the
    /// claim was made through this same adapter instance (this process); a claim of
    /// another process is one a partition's new owner may take over at once, since
    /// the process that made it no longer owns the partition.
    InFlight { since: Timestamp, mine: bool },
    /// The work was done; `outcome` is what `complete` recorded.
    Done { outcome: String },
}

/// What a hot-state operation can fail with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HotError {
    #[error("hot state unavailable: {0}")]
    Unavailable(String),
    #[error("hot state value for {key:?} is corrupt: {reason}")]
    Corrupt { key: String, reason: String },
    #[error("invalid request: {0}")]
    Invalid(String),
}

/// Live counters, suppression lookups and idempotency keys.
#[async_trait]
pub trait HotState: Send + Sync + 'static {
    /// Claims `key` (SET NX semantics); a claim expires after `ttl`.
    async fn claim(&self, key: &str, now: Timestamp, ttl: Duration) -> Result<Claim, HotError>;

    /// Marks a claimed key done with its outcome, kept for `ttl`.
    async fn complete(&self, key: &str, outcome: &str, ttl: Duration) -> Result<(), HotError>;

    /// Drops a claim so the work can be tried again.
    async fn release(&self, key: &str) -> Result<(), HotError>;

    /// Adds an address to the tenant's suppression set.
    async fn suppress(&self, tenant: &TenantId, email: &EmailAddress) -> Result<(), HotError>;

    /// Removes an address from the tenant's suppression set (absent: a no-op).
    async fn unsuppress(&self, tenant: &TenantId, email: &EmailAddress) -> Result<(), HotError>;

    /// Whether the address is suppressed for the tenant.
    async fn is_suppressed(
        &self,
        tenant: &TenantId,
        email: &EmailAddress,
    ) -> Result<bool, HotError>;

    /// Replaces part `part` of the live counters of a campaign (the share one
    /// analytics partition counts).
    async fn set_live_stats(
        &self,
        campaign: &CampaignId,
        part: u32,
        stats: &CampaignStats,
    ) -> Result<(), HotError>;

    /// The live counters of a campaign, its parts summed, if any were set.
    async fn live_stats(&self, campaign: &CampaignId) -> Result<Option<CampaignStats>, HotError>;

    /// Takes `n` tokens from the shared bucket `bucket`, refilled at `rate` tokens a
    /// second up to `burst`. Returns zero when the tokens were taken; otherwise takes
    /// nothing and returns how long until `n` tokens will be there. `n` above `burst`
    /// can never be satisfied and is an error.
    async fn take_tokens(
        &self,
        bucket: &str,
        rate: f64,
        burst: u64,
        n: u64,
    ) -> Result<Duration, HotError>;
}
