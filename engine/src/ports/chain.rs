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
}
