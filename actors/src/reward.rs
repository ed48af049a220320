//! The reward actor: settles per-campaign rewards once per epoch.
//!
//! It settles from the aggregates committed in the store (not from the stats topic),
//! so a settlement always matches exact, committed figures. Rewards are cumulative
//! and never decrease: an epoch's delta is what the campaign earned since the last.

use crate::worker::{Step, Worker};
use anyhow::Context as _;
use maily_engine::ports::{
    Fence, LedgerStore, OutcomeStore, Settlement, SettlementEntry, StoreError,
};
use maily_engine::reward::RewardFormula;
use maily_engine::{CampaignId, CampaignStats, Timestamp};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::info;

use crate::common::Ports;

/// Settle now, even if the epoch timer has not fired; replies with the epoch that
/// covers the current figures (`None` if nothing was ever settled).
#[derive(Debug)]
pub struct CloseEpoch;

/// The ports the reward worker uses: the committed aggregates it settles from, and
/// the ledger it settles into.
#[derive(Clone)]
pub struct RewardPorts {
    pub outcomes: Arc<dyn OutcomeStore>,
    pub ledger: Arc<dyn LedgerStore>,
}

impl From<&Ports> for RewardPorts {
    fn from(ports: &Ports) -> Self {
        RewardPorts {
            outcomes: ports.store.clone(),
            ledger: ports.store.clone(),
        }
    }
}

/// The reward actor (one per engine).
pub struct RewardWorker {
    ports: RewardPorts,
    formula: RewardFormula,
    epoch_interval: Duration,
    /// The leader lease: a settlement is refused once another process took the role.
    fence: Option<Fence>,
    next_tick: Instant,
    last_epoch: Option<u64>,
    settled: HashMap<CampaignId, (CampaignStats, u128)>,
}

impl RewardWorker {
    /// A reward worker settling every `epoch_interval`.
    pub fn new(
        ports: RewardPorts,
        formula: RewardFormula,
        epoch_interval: Duration,
        fence: Option<Fence>,
    ) -> Self {
        RewardWorker {
            ports,
            formula,
            epoch_interval,
            fence,
            next_tick: Instant::now() + epoch_interval,
            last_epoch: None,
            settled: HashMap::new(),
        }
    }

    /// Settles a new epoch if any campaign's figures changed since the last one.
    async fn settle(&mut self) -> anyhow::Result<Option<u64>> {
        let all = self
            .ports
            .outcomes
            .all_stats()
            .await
            .context("loading stats")?;
        let changed = all
            .iter()
            .any(|(_, c, s)| self.settled.get(c).map(|(prev, _)| prev) != Some(s));
        if !changed {
            return Ok(self.last_epoch);
        }
        let epoch = self.last_epoch.map_or(1, |e| e + 1);
        let entries: Vec<SettlementEntry> = all
            .into_iter()
            .map(|(tenant, campaign, stats)| {
                let before = self.settled.get(&campaign).map_or(0, |(_, total)| *total);
                let reward_total = self.formula.reward(&stats).max(before);
                SettlementEntry {
                    tenant,
                    campaign,
                    stats,
                    reward_total,
                    reward_delta: reward_total - before,
                }
            })
            .collect();
        let settlement = Settlement {
            epoch,
            settled_at: Timestamp::now(),
            group: "reward".into(),
            offsets: Vec::new(),
            entries,
        };
        match self
            .ports
            .ledger
            .commit_settlement(&settlement, self.fence.as_ref())
            .await
        {
            Ok(()) => {}
            Err(StoreError::Conflict(why)) => {
                // Another process settled this epoch first; take its view.
                info!(epoch, %why, "epoch already settled elsewhere");
                self.load().await?;
                return Ok(self.last_epoch);
            }
            Err(e) => return Err(e).context("committing settlement"),
        }
        let paid: u128 = settlement.entries.iter().map(|e| e.reward_delta).sum();
        info!(epoch, campaigns = settlement.entries.len(), reward = %paid, "epoch settled");
        metrics::counter!("maily_reward_epochs_total").increment(1);
        self.apply(&settlement);
        Ok(Some(epoch))
    }

    fn apply(&mut self, s: &Settlement) {
        self.last_epoch = Some(s.epoch);
        for e in &s.entries {
            self.settled.insert(e.campaign, (e.stats, e.reward_total));
        }
    }
}

impl Worker for RewardWorker {
    type Command = CloseEpoch;
    type Reply = Option<u64>;

    fn name(&self) -> String {
        "reward".into()
    }

    async fn load(&mut self) -> anyhow::Result<()> {
        self.settled.clear();
        self.last_epoch = None;
        let last = self
            .ports
            .ledger
            .last_settled_epoch()
            .await
            .context("loading last epoch")?;
        if let Some(epoch) = last {
            let s = self
                .ports
                .ledger
                .settlement(epoch)
                .await
                .context("loading last settlement")?
                .with_context(|| format!("settlement {epoch} vanished"))?;
            self.apply(&s);
        }
        Ok(())
    }

    async fn step(&mut self) -> anyhow::Result<Step> {
        let now = Instant::now();
        if now < self.next_tick {
            return Ok(Step::Idle(self.next_tick - now));
        }
        self.next_tick = now + self.epoch_interval;
        self.settle().await?;
        Ok(Step::Idle(self.epoch_interval))
    }

    async fn command(&mut self, _: CloseEpoch) -> anyhow::Result<Option<u64>> {
        self.settle().await
    }

    async fn shutdown(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
}
