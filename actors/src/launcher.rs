//! The launcher (leader role): starts scheduled campaigns when their time comes and
//! moves the staged recipients of running campaigns into the send topic.
//!
//! Starting is a compare-and-set in the store (`Scheduled` to `Running`), so a
//! campaign starts once however many processes look at it, and a restart in between
//! only delays it until the next leader's first round. Launching produces a chunk of
//! pending recipients, then marks them launched: a leader that stops in between leaves
//! them pending and the next one produces them again under the same message ids, which
//! the sender delivers once (its idempotency claims and the committed message states).
//!
//! A campaign is spread over shards: the first time it is launched, its shard count
//! is chosen from its size (one shard per `shard_size` recipients, at most one per
//! partition) and recorded with it, and each recipient is launched under the key of
//! its shard (fixed by its message id), so the campaign's sending, bounces and
//! aggregates run on that many partitions, whichever processes own them.
//!
//! As the leader it also applies the store's retention every `retention.interval`:
//! keyed sends, launched recipients and message states past their age are deleted in
//! bounded passes, so the store does not grow with every message ever sent.

use crate::common::Ports;
use crate::worker::{Step, Worker};
use anyhow::Context as _;
use maily_engine::partition::{shard_keys, shard_of};
use maily_engine::ports::{
    CampaignStore, Cutoffs, DispatchStore, EventLog, RetentionStore, Transition,
};
use maily_engine::records::{self, SendRecord, topics};
use maily_engine::{CampaignId, CampaignStatus, Timestamp};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::info;

/// How the launcher paces itself.
#[derive(Debug, Clone, Copy)]
pub struct LauncherSettings {
    /// Pause between rounds when there is nothing to launch; also how late a scheduled
    /// campaign may start.
    pub interval: Duration,
    /// Recipients produced per write to the log.
    pub chunk: usize,
    /// Chunks launched per campaign per round, so one huge campaign does not hold back
    /// the others (or the schedule) for long.
    pub chunks_per_round: usize,
    /// Recipients per shard when a campaign's shard count is chosen.
    pub shard_size: u64,
    /// How long the store keeps what it no longer needs.
    pub retention: Retention,
}

/// How long the store keeps rows it no longer needs (`[retention]`).
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub keyed_sends: Duration,
    pub launched_recipients: Duration,
    pub messages: Duration,
    /// Time between two passes.
    pub interval: Duration,
}

impl Retention {
    /// The cutoffs of a pass at `now`.
    fn cutoffs(&self, now: Timestamp) -> Cutoffs {
        let before = |d: Duration| Timestamp(now.0.saturating_sub(d.as_millis() as i64));
        Cutoffs {
            keyed_sends: before(self.keyed_sends),
            launched_recipients: before(self.launched_recipients),
            messages: before(self.messages),
        }
    }
}

impl Default for Retention {
    fn default() -> Self {
        const DAY: u64 = 24 * 3600;
        Retention {
            keyed_sends: Duration::from_secs(7 * DAY),
            launched_recipients: Duration::from_secs(7 * DAY),
            messages: Duration::from_secs(90 * DAY),
            interval: Duration::from_secs(600),
        }
    }
}

/// Rows of each kind one retention statement deletes at most.
const PRUNE_BATCH: usize = 5_000;
/// Statements of a retention pass per launcher round, so a large backlog of old rows
/// is deleted over several rounds rather than holding up launches.
const PRUNE_PASSES_PER_ROUND: usize = 4;

impl Default for LauncherSettings {
    fn default() -> Self {
        LauncherSettings {
            interval: Duration::from_millis(200),
            chunk: 1000,
            chunks_per_round: 10,
            shard_size: 2_000,
            retention: Retention::default(),
        }
    }
}

/// The ports the launcher uses: the campaigns and their staged recipients, and the
/// log it launches them into.
#[derive(Clone)]
pub struct LauncherPorts {
    pub campaigns: Arc<dyn CampaignStore>,
    pub dispatch: Arc<dyn DispatchStore>,
    pub retention: Arc<dyn RetentionStore>,
    pub log: Arc<dyn EventLog>,
}

impl From<&Ports> for LauncherPorts {
    fn from(ports: &Ports) -> Self {
        LauncherPorts {
            campaigns: ports.store.clone(),
            dispatch: ports.store.clone(),
            retention: ports.store.clone(),
            log: ports.log.clone(),
        }
    }
}

/// The launcher actor (one per engine, with the leader role).
pub struct LauncherWorker {
    ports: LauncherPorts,
    settings: LauncherSettings,
    /// The shard keys of the campaigns being launched.
    keys: HashMap<CampaignId, Arc<Vec<Vec<u8>>>>,
    /// When the next retention pass is due; `None` while one is under way.
    next_prune: Option<Instant>,
}

impl LauncherWorker {
    pub fn new(ports: LauncherPorts, settings: LauncherSettings) -> Self {
        LauncherWorker {
            ports,
            settings,
            keys: HashMap::new(),
            next_prune: None,
        }
    }

    /// Runs part of a retention pass when one is due; returns the rows deleted.
    async fn prune(&mut self) -> anyhow::Result<u64> {
        if self.next_prune.is_some_and(|at| Instant::now() < at) {
            return Ok(0);
        }
        let retention = self.settings.retention;
        let cutoffs = retention.cutoffs(Timestamp::now());
        let mut deleted = 0;
        for _ in 0..PRUNE_PASSES_PER_ROUND {
            let pass = self
                .ports
                .retention
                .prune(&cutoffs, PRUNE_BATCH)
                .await
                .context("deleting rows past their retention")?;
            deleted += pass.total();
            for (kind, n) in [
                ("keyed_sends", pass.keyed_sends),
                ("launched_recipients", pass.launched_recipients),
                ("messages", pass.messages),
            ] {
                metrics::counter!("maily_retention_deleted_total", "kind" => kind).increment(n);
            }
            let batch = PRUNE_BATCH as u64;
            if pass.keyed_sends < batch && pass.launched_recipients < batch && pass.messages < batch
            {
                // Done until the next interval.
                if deleted > 0 {
                    info!(deleted, "retention pass done");
                }
                self.next_prune = Some(Instant::now() + retention.interval);
                return Ok(deleted);
            }
        }
        // More to delete: go on next round.
        self.next_prune = None;
        Ok(deleted)
    }

    /// The partition keys of campaign `id`'s shards, its shard count recorded the
    /// first time it is asked for.
    async fn shard_keys(&mut self, id: CampaignId) -> anyhow::Result<Arc<Vec<Vec<u8>>>> {
        if let Some(keys) = self.keys.get(&id) {
            return Ok(keys.clone());
        }
        let partitions = self
            .ports
            .log
            .partitions(topics::SEND)
            .await
            .context("reading the send topic's partition count")?;
        let (pending, launched) = self
            .ports
            .dispatch
            .staged_counts(id)
            .await
            .with_context(|| format!("counting the recipients of {id}"))?;
        let size = (pending + launched).div_ceil(self.settings.shard_size.max(1));
        let proposed = size.clamp(1, u64::from(partitions.max(1))) as u32;
        let shards = self
            .ports
            .dispatch
            .fix_shards(id, proposed)
            .await
            .with_context(|| format!("recording the shard count of {id}"))?;
        let keys = Arc::new(shard_keys(&id.to_string(), shards, partitions));
        info!(campaign = %id, shards, partitions = keys.len(), "campaign sharded");
        self.keys.insert(id, keys.clone());
        Ok(keys)
    }

    /// Moves due scheduled campaigns to running; returns how many started here.
    async fn start_due(&self, now: Timestamp) -> anyhow::Result<usize> {
        let store = &self.ports.campaigns;
        let due = store
            .due_campaigns(now)
            .await
            .context("listing due campaigns")?;
        let mut started = 0;
        for id in due {
            let t = store
                .transition_campaign(
                    id,
                    &[CampaignStatus::Scheduled],
                    CampaignStatus::Running,
                    None,
                    now,
                )
                .await
                .with_context(|| format!("starting scheduled campaign {id}"))?;
            if let Transition::Done(state) = t {
                let late = state
                    .scheduled_at
                    .map_or(Duration::ZERO, |at| now.since(at));
                info!(campaign = %id, late_ms = late.as_millis() as u64, "scheduled campaign started");
                metrics::counter!("maily_campaigns_started_total", "how" => "schedule")
                    .increment(1);
                metrics::histogram!("maily_schedule_lateness_seconds").record(late.as_secs_f64());
                started += 1;
            }
        }
        Ok(started)
    }

    /// Launches up to a round's worth of each running campaign's pending recipients;
    /// returns how many were launched.
    async fn launch(&mut self) -> anyhow::Result<usize> {
        let mut launched = 0;
        let ids = self
            .ports
            .dispatch
            .launchable_campaigns()
            .await
            .context("listing campaigns to launch")?;
        self.keys.retain(|id, _| ids.contains(id));
        for id in ids {
            let Some(campaign) = self
                .ports
                .campaigns
                .campaign(id)
                .await
                .with_context(|| format!("loading campaign {id}"))?
            else {
                continue;
            };
            let keys = self.shard_keys(id).await?;
            let dispatch = &self.ports.dispatch;
            for _ in 0..self.settings.chunks_per_round.max(1) {
                let rows = dispatch
                    .pending_recipients(id, self.settings.chunk.max(1))
                    .await
                    .with_context(|| format!("reading pending recipients of {id}"))?;
                if rows.is_empty() {
                    break;
                }
                let now = Timestamp::now();
                let ids: Vec<_> = rows.iter().map(|r| r.message_id).collect();
                let mut shards: Vec<Vec<Vec<u8>>> = vec![Vec::new(); keys.len()];
                for r in rows {
                    let shard = shard_of(r.message_id.as_bytes(), keys.len());
                    shards[shard].push(records::encode(&SendRecord::first(
                        r.message_id,
                        campaign.tenant.clone(),
                        id,
                        r.email,
                        r.vars,
                        now,
                    )));
                }
                // A few records per shard, each holding hundreds of recipients.
                let batch = shards
                    .into_iter()
                    .zip(keys.iter())
                    .flat_map(|(payloads, key)| {
                        records::pack_keyed(key, payloads, records::SEND_ITEMS_PER_RECORD)
                    })
                    .collect();
                self.ports
                    .log
                    .produce(topics::SEND, batch)
                    .await
                    .context("producing launched recipients")?;
                dispatch
                    .mark_launched(id, &ids)
                    .await
                    .with_context(|| format!("marking recipients of {id} launched"))?;
                launched += ids.len();
                metrics::counter!("maily_launched_total").increment(ids.len() as u64);
            }
        }
        Ok(launched)
    }
}

impl Worker for LauncherWorker {
    type Command = ();
    type Reply = ();

    fn name(&self) -> String {
        "launcher".into()
    }

    async fn load(&mut self) -> anyhow::Result<()> {
        Ok(())
    }

    async fn step(&mut self) -> anyhow::Result<Step> {
        let started = self.start_due(Timestamp::now()).await?;
        let launched = self.launch().await?;
        let pruned = self.prune().await?;
        if started + launched + pruned as usize > 0 {
            Ok(Step::Busy)
        } else {
            Ok(Step::Idle(self.settings.interval))
        }
    }

    async fn command(&mut self, _: ()) -> anyhow::Result<()> {
        Ok(())
    }

    async fn shutdown(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
}
