//! The chain port: publish and read Merkle roots of campaign performance.

use crate::merkle::Hash32;
use async_trait::async_trait;

/// Proof that a root was anchored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnchorReceipt {
    /// Which chain or ledger holds it.
    pub chain: String,
    pub epoch: u64,
    pub root: Hash32,
    /// A transaction hash, or the ledger entry hash.
    pub reference: String,
}

/// What a chain operation can fail with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error("epoch {epoch} is already anchored on {chain} with a different root")]
    Conflict { chain: String, epoch: u64 },
    #[error("chain {chain} unavailable: {reason}")]
    Unavailable { chain: String, reason: String },
    #[error("chain {chain} rejected the anchor: {reason}")]
    Rejected { chain: String, reason: String },
    /// The configuration does not match the chain (wrong chain id, no contract at
    /// the configured address): retrying cannot help until it is fixed.
    #[error("chain {chain} is misconfigured: {reason}")]
    Misconfigured { chain: String, reason: String },
    /// The signer cannot pay for the transaction.
    #[error("chain {chain}: signer {signer} cannot pay: {reason}")]
    Underfunded {
        chain: String,
        signer: String,
        reason: String,
    },
}

impl ChainError {
    /// A short label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            ChainError::Conflict { .. } => "conflict",
            ChainError::Unavailable { .. } => "unavailable",
            ChainError::Rejected { .. } => "rejected",
            ChainError::Misconfigured { .. } => "misconfigured",
            ChainError::Underfunded { .. } => "underfunded",
        }
    }
}

/// A place roots are anchored: an EVM chain, or the local ledger.
#[async_trait]
pub trait Chain: Send + Sync + 'static {
    /// The chain's configured name.
    fn name(&self) -> &str;

    /// Anchors `root` for `epoch`. Anchoring the same root again returns the first
    /// receipt; a different root for an anchored epoch is a conflict.
    async fn anchor(&self, epoch: u64, root: Hash32) -> Result<AnchorReceipt, ChainError>;

    /// The root anchored for `epoch`, if any.
    async fn root(&self, epoch: u64) -> Result<Option<Hash32>, ChainError>;

    /// Whether this chain publishes reward roots (it has a reward distributor).
    fn pays_rewards(&self) -> bool {
        false
    }

    /// Publishes the reward root of `epoch` to the chain's reward distributor, with
    /// the same once-only rule as [`Chain::anchor`]. Chains without a distributor
    /// refuse.
    async fn publish_rewards(&self, epoch: u64, root: Hash32) -> Result<AnchorReceipt, ChainError> {
        let _ = root;
        Err(ChainError::Misconfigured {
            chain: self.name().to_string(),
            reason: format!("no reward distributor to publish epoch {epoch} to"),
        })
    }
}
