//! The anchor actor: for every settled epoch, builds the Merkle tree over the
//! campaigns' leaves, stores each campaign's proof, and anchors the root on every
//! configured chain; on chains with a reward distributor it then publishes the
//! epoch's reward root. An epoch is anchored once per chain: a restart re-submits the
//! same root, which the chain adapter answers with the first receipt.
//!
//! Chains are worked on side by side, so a slow or unreachable chain delays only its
//! own epochs. A chain that fails is retried with exponential backoff (from the anchor
//! interval up to `max_backoff`); its failures never stop the actor, and mail is never
//! waiting on it.

use crate::common::Ports;
use crate::worker::{Step, Worker};
use anyhow::Context as _;
use maily_engine::TenantId;
use maily_engine::merkle::{CampaignLeaf, MerkleTree};
use maily_engine::ports::{AnchorReceipt, Chain, ChainError, LedgerStore, Settlement, StoredProof};
use maily_engine::reward::{Account, RewardTree};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// Anchor every pending epoch now, on every chain, backoff or not; replies with the
/// receipts made.
#[derive(Debug)]
pub struct AnchorNow;

/// How the anchor actor runs.
#[derive(Debug, Clone)]
pub struct AnchorSettings {
    /// How often settled epochs are looked for.
    pub interval: Duration,
    /// The longest wait between attempts on a failing chain.
    pub max_backoff: Duration,
    /// Each tenant's reward account on the distributors.
    pub payees: Arc<HashMap<TenantId, Account>>,
}

/// The least time a timer round gives each chain.
const MIN_ROUND: Duration = Duration::from_secs(5);

/// The store key under which a chain's published reward roots are recorded.
pub fn rewards_key(chain: &str) -> String {
    format!("{chain}/rewards")
}

/// The ports the anchor worker uses: the ledger (settlements, proofs, what was
/// anchored where) and the chains it anchors to.
#[derive(Clone)]
pub struct AnchorPorts {
    pub ledger: Arc<dyn LedgerStore>,
    pub chains: Vec<Arc<dyn Chain>>,
}

impl From<&Ports> for AnchorPorts {
    fn from(ports: &Ports) -> Self {
        AnchorPorts {
            ledger: ports.store.clone(),
            chains: ports.chains.clone(),
        }
    }
}

/// The anchor actor (one per engine).
pub struct AnchorWorker {
    ports: AnchorPorts,
    settings: AnchorSettings,
    next_tick: Instant,
    /// Per failing chain: when to try again, and the failures in a row so far.
    backoff: HashMap<String, (Instant, u32)>,
}

/// A chain's round failed: either the chain (retried with backoff) or the store.
enum Failure {
    Chain(ChainError),
    Store(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Store(e)
    }
}

impl AnchorWorker {
    /// An anchor worker.
    pub fn new(ports: AnchorPorts, settings: AnchorSettings) -> Self {
        AnchorWorker {
            ports,
            settings,
            next_tick: Instant::now(),
            backoff: HashMap::new(),
        }
    }

    async fn anchor_pending(&mut self, forced: bool) -> anyhow::Result<Vec<AnchorReceipt>> {
        let now = Instant::now();
        let due: Vec<Arc<dyn Chain>> = self
            .ports
            .chains
            .iter()
            .filter(|c| forced || self.backoff.get(c.name()).is_none_or(|(at, _)| *at <= now))
            .cloned()
            .collect();
        // A timer round gives each chain a bounded time, so the actor stays free for
        // commands and shutdown while a chain waits for blocks; the wait resumes next
        // round (the adapter remembers what it sent, and the store keeps it). Stopping
        // a round at any point is safe: every step is re-read from the chain.
        let limit = (!forced).then(|| self.settings.interval.max(MIN_ROUND));
        let rounds = due.iter().map(|chain| {
            let (ports, payees) = (&self.ports, &self.settings.payees);
            async move {
                let round = chain_round(ports, chain.as_ref(), payees);
                let result = match limit {
                    Some(limit) => tokio::time::timeout(limit, round).await.ok(),
                    None => Some(round.await),
                };
                (chain.name(), result)
            }
        });
        let mut receipts = Vec::new();
        for (name, result) in futures::future::join_all(rounds).await {
            let Some(result) = result else {
                debug!(
                    chain = name,
                    "still waiting for the chain; continuing next round"
                );
                continue;
            };
            match result {
                Ok(mut r) => {
                    self.backoff.remove(name);
                    receipts.append(&mut r);
                }
                Err(Failure::Chain(e)) => {
                    let failures = self.backoff.get(name).map_or(1, |(_, n)| n + 1);
                    let (interval, max) = (self.settings.interval, self.settings.max_backoff);
                    let wait = retry_wait(interval, max, failures);
                    self.backoff
                        .insert(name.to_string(), (Instant::now() + wait, failures));
                    warn!(chain = name, error = %e, retry_in = ?wait, "anchoring failed");
                    metrics::counter!("maily_anchor_failures_total", "chain" => name.to_string(), "kind" => e.kind()).increment(1);
                }
                Err(Failure::Store(e)) => return Err(e),
            }
        }
        Ok(receipts)
    }
}

/// The wait after the `failures`-th failure in a row: the interval, doubled with each
/// further failure, at most `max` (and never below the interval).
fn retry_wait(interval: Duration, max: Duration, failures: u32) -> Duration {
    let doubled = interval.saturating_mul(1 << failures.saturating_sub(1).min(20));
    doubled.min(max.max(interval))
}

/// Anchors a chain's pending epochs in order, then publishes its pending reward roots.
async fn chain_round(
    ports: &AnchorPorts,
    chain: &dyn Chain,
    payees: &HashMap<TenantId, Account>,
) -> Result<Vec<AnchorReceipt>, Failure> {
    let mut receipts = Vec::new();
    let epochs = ports
        .ledger
        .epochs_to_anchor(chain.name())
        .await
        .context("listing epochs to anchor")?;
    for epoch in epochs {
        let root = store_epoch_proofs(ports, epoch).await?;
        let receipt = chain.anchor(epoch, root).await.map_err(Failure::Chain)?;
        ports
            .ledger
            .record_anchor(chain.name(), epoch, &root, &receipt.reference)
            .await
            .context("recording anchor")?;
        info!(chain = chain.name(), epoch, root = %hex::encode(root), reference = %receipt.reference, "epoch anchored");
        metrics::gauge!("maily_anchor_last_epoch", "chain" => chain.name().to_string())
            .set(epoch as f64);
        receipts.push(receipt);
    }
    if !chain.pays_rewards() {
        return Ok(receipts);
    }
    let key = rewards_key(chain.name());
    let epochs = ports
        .ledger
        .epochs_to_anchor(&key)
        .await
        .context("listing reward epochs to publish")?;
    for epoch in epochs {
        let settlement = settlement(ports, epoch).await?;
        let Some(tree) = RewardTree::build(&settlement.entries, payees) else {
            // Nobody with a payee earned anything: nothing to publish, nothing to claim.
            ports
                .ledger
                .record_anchor(&key, epoch, &[0; 32], "nothing to pay")
                .await
                .context("recording reward epoch")?;
            continue;
        };
        let root = tree.root();
        let receipt = chain
            .publish_rewards(epoch, root)
            .await
            .map_err(Failure::Chain)?;
        ports
            .ledger
            .record_anchor(&key, epoch, &root, &receipt.reference)
            .await
            .context("recording reward root")?;
        let paid: u128 = tree.leaves.iter().map(|l| l.amount).sum();
        info!(chain = chain.name(), epoch, accounts = tree.leaves.len(), amount = %paid, reference = %receipt.reference, "reward root published");
        receipts.push(AnchorReceipt {
            chain: key.clone(),
            ..receipt
        });
    }
    Ok(receipts)
}

async fn settlement(ports: &AnchorPorts, epoch: u64) -> anyhow::Result<Settlement> {
    ports
        .ledger
        .settlement(epoch)
        .await
        .context("loading settlement")?
        .with_context(|| format!("settlement {epoch} vanished"))
}

/// Builds an epoch's campaign tree from its settlement, stores every campaign's
/// proof (idempotent) and returns the root.
async fn store_epoch_proofs(ports: &AnchorPorts, epoch: u64) -> anyhow::Result<[u8; 32]> {
    let settlement = settlement(ports, epoch).await?;
    let mut leaves: Vec<CampaignLeaf> = settlement
        .entries
        .iter()
        .map(|e| CampaignLeaf {
            epoch,
            campaign: e.campaign,
            stats: e.stats,
            reward_total: e.reward_total,
        })
        .collect();
    leaves.sort_by_key(|l| l.campaign);
    let tree = MerkleTree::new(leaves.iter().map(CampaignLeaf::hash).collect());
    let root = tree.root();
    let proofs: Vec<StoredProof> = leaves
        .into_iter()
        .enumerate()
        .map(|(i, leaf)| StoredProof {
            leaf,
            leaf_index: i as u32,
            root,
            proof: tree.proof(i).unwrap_or_default(),
        })
        .collect();
    ports
        .ledger
        .store_proofs(&proofs)
        .await
        .context("storing proofs")?;
    Ok(root)
}

impl Worker for AnchorWorker {
    type Command = AnchorNow;
    type Reply = Vec<AnchorReceipt>;

    fn name(&self) -> String {
        "anchor".into()
    }

    async fn load(&mut self) -> anyhow::Result<()> {
        Ok(())
    }

    async fn step(&mut self) -> anyhow::Result<Step> {
        let now = Instant::now();
        if now < self.next_tick {
            return Ok(Step::Idle(self.next_tick - now));
        }
        self.next_tick = now + self.settings.interval;
        self.anchor_pending(false).await?;
        Ok(Step::Idle(self.settings.interval))
    }

    async fn command(&mut self, _: AnchorNow) -> anyhow::Result<Vec<AnchorReceipt>> {
        self.anchor_pending(true).await
    }

    async fn shutdown(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::retry_wait;
    use std::time::Duration;

    #[test]
    fn a_failing_chain_is_retried_after_doubling_waits_up_to_the_cap() {
        let s = Duration::from_secs;
        let waits: Vec<u64> = (1..=8)
            .map(|n| retry_wait(s(10), s(300), n).as_secs())
            .collect();
        assert_eq!(waits, [10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(retry_wait(s(10), s(300), 10_000), s(300));
        // A cap below the interval still waits the interval.
        assert_eq!(retry_wait(s(10), s(1), 3), s(10));
    }
}
