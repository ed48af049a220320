//! The anchor actor: for every settled epoch, builds the Merkle tree over the
//! campaigns' leaves, stores each campaign's proof, and anchors the root on every
//! configured chain. An epoch is anchored once per chain: a restart re-submits the
//! same root, which the chain adapter answers with the first receipt.

use crate::common::Ports;
use crate::worker::{Step, Worker};
use anyhow::Context as _;
use maily_engine::merkle::{CampaignLeaf, MerkleTree};
use maily_engine::ports::{AnchorReceipt, StoredProof};
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// Anchor every pending epoch now; replies with the receipts made.
#[derive(Debug)]
pub struct AnchorNow;

/// The anchor actor (one per engine).
pub struct AnchorWorker {
    ports: Ports,
    interval: Duration,
    next_tick: Instant,
}

impl AnchorWorker {
    /// An anchor worker checking for settled epochs every `interval`.
    pub fn new(ports: Ports, interval: Duration) -> Self {
        AnchorWorker {
            ports,
            interval,
            next_tick: Instant::now(),
        }
    }

    async fn anchor_pending(&mut self) -> anyhow::Result<Vec<AnchorReceipt>> {
        let mut receipts = Vec::new();
        for chain in self.ports.chains.clone() {
            let epochs = self
                .ports
                .store
                .epochs_to_anchor(chain.name())
                .await
                .context("listing epochs to anchor")?;
            for epoch in epochs {
                let settlement = self
                    .ports
                    .store
                    .settlement(epoch)
                    .await
                    .context("loading settlement")?
                    .with_context(|| format!("settlement {epoch} vanished"))?;
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
                self.ports
                    .store
                    .store_proofs(&proofs)
                    .await
                    .context("storing proofs")?;
                let receipt = match chain.anchor(epoch, root).await {
                    Ok(r) => r,
                    Err(e) => {
                        // Retried on the next tick; later epochs wait for this one.
                        warn!(chain = chain.name(), epoch, error = %e, "anchoring failed");
                        metrics::counter!("maily_anchor_failures_total", "chain" => chain.name().to_string()).increment(1);
                        break;
                    }
                };
                self.ports
                    .store
                    .record_anchor(chain.name(), epoch, &root, &receipt.reference)
                    .await
                    .context("recording anchor")?;
                info!(chain = chain.name(), epoch, root = %hex::encode(root), reference = %receipt.reference, "epoch anchored");
                metrics::gauge!("maily_anchor_last_epoch", "chain" => chain.name().to_string())
                    .set(epoch as f64);
                receipts.push(receipt);
            }
        }
        Ok(receipts)
    }
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
        self.next_tick = now + self.interval;
        self.anchor_pending().await?;
        Ok(Step::Idle(self.interval))
    }

    async fn command(&mut self, _: AnchorNow) -> anyhow::Result<Vec<AnchorReceipt>> {
        self.anchor_pending().await
    }

    async fn shutdown(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
}
