//! The ledger chain on a real SQLite store: hash chaining, idempotent anchoring,
//! conflicts, ordering, and concurrent anchorers sharing one store.

use async_trait::async_trait;
use maily_chain::LedgerChain;
use maily_chain::ledger::{LedgerError, entry_hash};
use maily_engine::CampaignId;
use maily_engine::merkle::{Hash32, keccak};
use maily_engine::ports::{
    AnchorReceipt, Chain, ChainError, ChainSubmission, Fence, LedgerEntry, LedgerStore, Settlement,
    StoreError, StoredProof,
};
use maily_storage::SqliteStore;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

const CHAIN: &str = "ledger";

/// A distinct, reproducible root per epoch.
fn root_of(epoch: u64) -> Hash32 {
    keccak(&epoch.to_be_bytes())
}

async fn fresh_store() -> Arc<SqliteStore> {
    Arc::new(
        SqliteStore::open_temp()
            .await
            .expect("temporary sqlite store"),
    )
}

fn ledger_over(store: &Arc<SqliteStore>) -> LedgerChain {
    LedgerChain::new(CHAIN, store.clone())
}

async fn entry(store: &SqliteStore, epoch: u64) -> LedgerEntry {
    store
        .ledger_entry(epoch)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("no ledger entry for epoch {epoch}"))
}

/// Asserts the stored ledger is exactly `epochs` (ascending), each entry hashing to its
/// recorded hash and pointing at the one before it, the first at zeros.
async fn assert_ledger_is(store: &SqliteStore, epochs: &[u64]) {
    let mut prev = [0u8; 32];
    for &epoch in epochs {
        let e = entry(store, epoch).await;
        assert_eq!(e.epoch, epoch);
        assert_eq!(e.root, root_of(epoch), "root of epoch {epoch}");
        assert_eq!(
            e.prev, prev,
            "epoch {epoch} must point at the entry before it"
        );
        assert_eq!(
            e.hash,
            entry_hash(&prev, epoch, &e.root),
            "hash of epoch {epoch}"
        );
        prev = e.hash;
    }
    let head = store.ledger_head().await.unwrap().map(|h| h.epoch);
    assert_eq!(head, epochs.last().copied(), "ledger head");
}

#[tokio::test]
async fn each_anchor_chains_onto_the_previous_entry() {
    let store = fresh_store().await;
    let ledger = ledger_over(&store);

    for epoch in 1..=3 {
        let receipt = ledger.anchor(epoch, root_of(epoch)).await.unwrap();
        let stored = entry(&store, epoch).await;
        assert_eq!(
            receipt,
            AnchorReceipt {
                chain: CHAIN.into(),
                epoch,
                root: root_of(epoch),
                reference: hex::encode(stored.hash),
            }
        );
    }

    assert_ledger_is(&store, &[1, 2, 3]).await;
    ledger.verify_chain().await.unwrap();
}

#[tokio::test]
async fn anchoring_the_same_root_again_returns_the_first_receipt() {
    let store = fresh_store().await;
    let ledger = ledger_over(&store);
    let first = ledger.anchor(1, root_of(1)).await.unwrap();
    let second = ledger.anchor(2, root_of(2)).await.unwrap();
    let entry_before = entry(&store, 1).await;

    assert_eq!(ledger.anchor(1, root_of(1)).await.unwrap(), first);
    assert_eq!(ledger.anchor(2, root_of(2)).await.unwrap(), second);

    // No new entry: the head has not moved and epoch 1 still carries its first
    // timestamp, which a rewrite would have refreshed.
    assert_eq!(entry(&store, 1).await, entry_before);
    assert_ledger_is(&store, &[1, 2]).await;
}

#[tokio::test]
async fn a_different_root_for_an_anchored_epoch_is_a_conflict() {
    let store = fresh_store().await;
    let ledger = ledger_over(&store);
    ledger.anchor(1, root_of(1)).await.unwrap();
    ledger.anchor(2, root_of(2)).await.unwrap();

    for epoch in [1, 2] {
        assert_eq!(
            ledger.anchor(epoch, root_of(99)).await,
            Err(ChainError::Conflict {
                chain: CHAIN.into(),
                epoch
            })
        );
    }
    assert_eq!(ledger.root(1).await.unwrap(), Some(root_of(1)));
    assert_ledger_is(&store, &[1, 2]).await;
}

#[tokio::test]
async fn an_unanchored_epoch_older_than_the_head_is_rejected() {
    let store = fresh_store().await;
    let ledger = ledger_over(&store);
    ledger.anchor(1, root_of(1)).await.unwrap();
    // Skipping an epoch is allowed: epoch 3 chains straight onto epoch 1.
    ledger.anchor(3, root_of(3)).await.unwrap();

    let err = ledger.anchor(2, root_of(2)).await.unwrap_err();
    assert!(
        matches!(&err, ChainError::Rejected { chain, .. } if chain == CHAIN),
        "{err:?}"
    );
    assert_eq!(ledger.root(2).await.unwrap(), None);
    assert_ledger_is(&store, &[1, 3]).await;
    ledger.verify_chain().await.unwrap();
}

#[tokio::test]
async fn root_is_the_anchored_root_or_none() {
    let store = fresh_store().await;
    let ledger = ledger_over(&store);
    assert_eq!(ledger.root(1).await.unwrap(), None);

    ledger.anchor(1, root_of(1)).await.unwrap();
    ledger.anchor(2, root_of(2)).await.unwrap();

    assert_eq!(ledger.root(1).await.unwrap(), Some(root_of(1)));
    assert_eq!(ledger.root(2).await.unwrap(), Some(root_of(2)));
    assert_eq!(ledger.root(3).await.unwrap(), None);
    // Beyond what SQLite can key: absent, not an error.
    assert_eq!(ledger.root(u64::MAX).await.unwrap(), None);
}

#[tokio::test]
async fn an_epoch_anchored_by_someone_else_meanwhile_is_not_rejected() {
    // A rival anchors epochs 2 and 3 right after this anchorer looked up epoch 2 and
    // found nothing: the head is now past epoch 2, but epoch 2 holds the very root
    // being anchored, so the answer is its receipt, not "older than the head".
    let inner = fresh_store().await;
    ledger_over(&inner).anchor(1, root_of(1)).await.unwrap();
    let store = Arc::new(HookedStore::new(
        inner.clone(),
        Hook::RivalAnchorsAfterLookup {
            epochs: vec![2, 3],
            fired: AtomicBool::new(false),
        },
    ));
    let ledger = LedgerChain::new(CHAIN, store.clone());

    let receipt = ledger.anchor(2, root_of(2)).await.unwrap();

    assert!(
        store.fired(),
        "the rival never ran, so the race was not exercised"
    );
    assert_eq!(receipt.reference, hex::encode(entry(&inner, 2).await.hash));
    assert_ledger_is(&inner, &[1, 2, 3]).await;
}

#[tokio::test]
async fn verify_chain_detects_a_rewritten_root() {
    let inner = fresh_store().await;
    let ledger = ledger_over(&inner);
    for epoch in 1..=3 {
        ledger.anchor(epoch, root_of(epoch)).await.unwrap();
    }

    // The root changed but the recorded hash did not.
    let tampered = LedgerChain::new(
        CHAIN,
        Arc::new(HookedStore::new(
            inner.clone(),
            Hook::ReplaceRoot {
                epoch: 2,
                rehash: false,
            },
        )),
    );
    assert_eq!(
        tampered.verify_chain().await,
        Err(LedgerError::BadHash { epoch: 2 })
    );

    // The root changed and the entry was re-hashed: the next entry no longer links.
    let rehashed = LedgerChain::new(
        CHAIN,
        Arc::new(HookedStore::new(
            inner.clone(),
            Hook::ReplaceRoot {
                epoch: 2,
                rehash: true,
            },
        )),
    );
    assert_eq!(
        rehashed.verify_chain().await,
        Err(LedgerError::BrokenLink { epoch: 3 })
    );

    assert_eq!(ledger.verify_chain().await, Ok(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_anchorers_on_one_store_keep_a_single_unbroken_chain() {
    const EPOCHS: u64 = 60;
    let store = fresh_store().await;
    let anchorers: Vec<_> = (0..2)
        .map(|_| {
            let ledger = ledger_over(&store);
            tokio::spawn(async move {
                let mut receipts = Vec::new();
                for epoch in 1..=EPOCHS {
                    let receipt = ledger.anchor(epoch, root_of(epoch)).await;
                    receipts.push(receipt.unwrap_or_else(|e| panic!("epoch {epoch}: {e}")));
                }
                receipts
            })
        })
        .collect();
    let mut results = Vec::new();
    for task in anchorers {
        results.push(task.await.expect("anchoring task panicked"));
    }

    // Whichever instance appended an epoch, both hold the same receipt for it.
    assert_eq!(results[0], results[1]);
    let all: Vec<u64> = (1..=EPOCHS).collect();
    assert_ledger_is(&store, &all).await;
    ledger_over(&store).verify_chain().await.unwrap();
}

/// How [`HookedStore`] departs from the store it wraps.
enum Hook {
    /// After the first lookup of `epochs[0]`, a rival ledger anchors all of `epochs`.
    RivalAnchorsAfterLookup { epochs: Vec<u64>, fired: AtomicBool },
    /// Reads of `epoch` return another root, optionally with a matching hash.
    ReplaceRoot { epoch: u64, rehash: bool },
}

/// A SQLite store with one scripted interference on ledger reads, to reproduce a race
/// at an exact point or to show tampered data to the verifier.
struct HookedStore {
    inner: Arc<SqliteStore>,
    hook: Hook,
}

impl HookedStore {
    fn new(inner: Arc<SqliteStore>, hook: Hook) -> Self {
        HookedStore { inner, hook }
    }

    /// Applies a [`Hook::ReplaceRoot`] to an entry read from the store.
    fn tamper(&self, mut e: LedgerEntry) -> LedgerEntry {
        if let Hook::ReplaceRoot { epoch, rehash } = &self.hook
            && *epoch == e.epoch
        {
            e.root = root_of(1000 + e.epoch);
            if *rehash {
                e.hash = entry_hash(&e.prev, e.epoch, &e.root);
            }
        }
        e
    }

    fn fired(&self) -> bool {
        match &self.hook {
            Hook::RivalAnchorsAfterLookup { fired, .. } => fired.load(Ordering::SeqCst),
            Hook::ReplaceRoot { .. } => false,
        }
    }
}

#[async_trait]
impl LedgerStore for HookedStore {
    async fn ledger_entry(&self, epoch: u64) -> Result<Option<LedgerEntry>, StoreError> {
        let found = self.inner.ledger_entry(epoch).await?;
        match &self.hook {
            Hook::RivalAnchorsAfterLookup { epochs, fired }
                if epochs.first() == Some(&epoch) && !fired.swap(true, Ordering::SeqCst) =>
            {
                let rival = ledger_over(&self.inner);
                for &e in epochs {
                    rival.anchor(e, root_of(e)).await.expect("rival anchor");
                }
                Ok(found)
            }
            _ => Ok(found.map(|e| self.tamper(e))),
        }
    }

    async fn ledger_entries(&self) -> Result<Vec<LedgerEntry>, StoreError> {
        let entries = self.inner.ledger_entries().await?;
        Ok(entries.into_iter().map(|e| self.tamper(e)).collect())
    }

    async fn ledger_head(&self) -> Result<Option<LedgerEntry>, StoreError> {
        self.inner.ledger_head().await
    }

    async fn append_ledger(&self, entry: &LedgerEntry) -> Result<(), StoreError> {
        self.inner.append_ledger(entry).await
    }

    async fn commit_settlement(
        &self,
        settlement: &Settlement,
        fence: Option<&Fence>,
    ) -> Result<(), StoreError> {
        self.inner.commit_settlement(settlement, fence).await
    }

    async fn settlement(&self, epoch: u64) -> Result<Option<Settlement>, StoreError> {
        self.inner.settlement(epoch).await
    }

    async fn last_settled_epoch(&self) -> Result<Option<u64>, StoreError> {
        self.inner.last_settled_epoch().await
    }

    async fn record_anchor(
        &self,
        chain: &str,
        epoch: u64,
        root: &Hash32,
        reference: &str,
    ) -> Result<(), StoreError> {
        self.inner
            .record_anchor(chain, epoch, root, reference)
            .await
    }

    async fn epochs_to_anchor(&self, chain: &str) -> Result<Vec<u64>, StoreError> {
        self.inner.epochs_to_anchor(chain).await
    }

    async fn store_proofs(&self, proofs: &[StoredProof]) -> Result<(), StoreError> {
        self.inner.store_proofs(proofs).await
    }

    async fn save_submission(&self, s: &ChainSubmission) -> Result<(), StoreError> {
        self.inner.save_submission(s).await
    }

    async fn submission(
        &self,
        chain: &str,
        epoch: u64,
    ) -> Result<Option<ChainSubmission>, StoreError> {
        self.inner.submission(chain, epoch).await
    }

    async fn clear_submission(&self, chain: &str, epoch: u64) -> Result<(), StoreError> {
        self.inner.clear_submission(chain, epoch).await
    }

    async fn proof(
        &self,
        epoch: u64,
        campaign: CampaignId,
    ) -> Result<Option<StoredProof>, StoreError> {
        self.inner.proof(epoch, campaign).await
    }
}
