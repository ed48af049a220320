//! The local hash-chained anchor ledger.
//!
//! Entry n commits to entry n-1: `hash = keccak("maily.ledger.v1" || prev || epoch ||
//! root)`, so rewriting any past root changes every later hash. Entries live in the
//! store, which appends only on top of the current head.

use async_trait::async_trait;
use maily_engine::Timestamp;
use maily_engine::merkle::{Hash32, keccak};
use maily_engine::ports::{AnchorReceipt, Chain, ChainError, LedgerEntry, LedgerStore, StoreError};
use std::sync::Arc;

const DOMAIN: &[u8] = b"maily.ledger.v1";

/// The ledger adapter of the chain port.
pub struct LedgerChain {
    name: String,
    store: Arc<dyn LedgerStore>,
}

/// Why the ledger does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    /// The entry's contents were changed after it was appended.
    #[error("ledger entry of epoch {epoch} does not hash to its recorded hash")]
    BadHash { epoch: u64 },
    /// The entry does not chain to the entry before it (or, first, to zeros).
    #[error("ledger entry of epoch {epoch} does not point at the previous entry")]
    BrokenLink { epoch: u64 },
    /// The store could not be read.
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

/// The hash of a ledger entry.
pub fn entry_hash(prev: &Hash32, epoch: u64, root: &Hash32) -> Hash32 {
    let mut data = Vec::with_capacity(DOMAIN.len() + 72);
    data.extend_from_slice(DOMAIN);
    data.extend_from_slice(prev);
    data.extend_from_slice(&epoch.to_be_bytes());
    data.extend_from_slice(root);
    keccak(&data)
}

impl LedgerChain {
    /// A ledger named `name` kept in `store`.
    pub fn new(name: impl Into<String>, store: Arc<dyn LedgerStore>) -> Self {
        LedgerChain {
            name: name.into(),
            store,
        }
    }

    fn unavailable(&self, e: StoreError) -> ChainError {
        ChainError::Unavailable {
            chain: self.name.clone(),
            reason: e.to_string(),
        }
    }

    fn receipt(&self, e: &LedgerEntry) -> AnchorReceipt {
        AnchorReceipt {
            chain: self.name.clone(),
            epoch: e.epoch,
            root: e.root,
            reference: hex::encode(e.hash),
        }
    }

    /// Walks the whole ledger from its first entry, checking that the first entry
    /// chains to zeros, every entry hashes to its recorded hash, and each points at the
    /// one before. Returns the number of entries checked.
    pub async fn verify_chain(&self) -> Result<usize, LedgerError> {
        let entries = self.store.ledger_entries().await?;
        let mut prev = [0u8; 32];
        for e in &entries {
            if e.prev != prev {
                return Err(LedgerError::BrokenLink { epoch: e.epoch });
            }
            if entry_hash(&e.prev, e.epoch, &e.root) != e.hash {
                return Err(LedgerError::BadHash { epoch: e.epoch });
            }
            prev = e.hash;
        }
        Ok(entries.len())
    }
}

#[async_trait]
impl Chain for LedgerChain {
    fn name(&self) -> &str {
        &self.name
    }

    async fn anchor(&self, epoch: u64, root: Hash32) -> Result<AnchorReceipt, ChainError> {
        loop {
            // Head first, then the entry: the store never appends below its head, so an
            // epoch missing after the head was read stays missing, and "older than the
            // head" is final. In the other order a rival could append this very epoch
            // (and a later one) between the two reads, and an idempotent retry would be
            // refused.
            let head = self
                .store
                .ledger_head()
                .await
                .map_err(|e| self.unavailable(e))?;
            if let Some(existing) = self
                .store
                .ledger_entry(epoch)
                .await
                .map_err(|e| self.unavailable(e))?
            {
                return if existing.root == root {
                    Ok(self.receipt(&existing))
                } else {
                    Err(ChainError::Conflict {
                        chain: self.name.clone(),
                        epoch,
                    })
                };
            }
            if let Some(h) = &head
                && h.epoch > epoch
            {
                return Err(ChainError::Rejected {
                    chain: self.name.clone(),
                    reason: format!(
                        "epoch {epoch} is older than the ledger head (epoch {})",
                        h.epoch
                    ),
                });
            }
            let prev = head.map(|h| h.hash).unwrap_or([0; 32]);
            let entry = LedgerEntry {
                epoch,
                root,
                prev,
                hash: entry_hash(&prev, epoch, &root),
                at: Timestamp::now(),
            };
            match self.store.append_ledger(&entry).await {
                Ok(()) => return Ok(self.receipt(&entry)),
                // Someone appended meanwhile: look again.
                Err(StoreError::Conflict(_)) => continue,
                Err(e) => return Err(self.unavailable(e)),
            }
        }
    }

    async fn root(&self, epoch: u64) -> Result<Option<Hash32>, ChainError> {
        Ok(self
            .store
            .ledger_entry(epoch)
            .await
            .map_err(|e| self.unavailable(e))?
            .map(|e| e.root))
    }
}
