//! The analytics actor: aggregates the events of one partition per campaign and
//! flushes them in batches to the store (with the offsets they include, in one
//! transaction), then to hot state and the stats topic.
//!
//! Each message counts at most once per event kind, tracked by a per-message bit mask
//! stored with the aggregates, so duplicate events (replays, retried produces) never
//! skew the counts.

use crate::common::{
    Cursor, Feed, Outbox, Ports, commit_positions, dead_letter_item, hot_down, hot_ok,
};
use crate::faults::{FaultPoint, Faults};
use crate::worker::{Step, Worker};
use anyhow::Context as _;
use maily_engine::domain::event::status_from_mask;
use maily_engine::ports::{AggregateBatch, Fence, HotState, MessageState, StoreError};
use maily_engine::records::{self, EventRecord, StatsRecord, topics};
use maily_engine::{CampaignId, CampaignStats, MessageId, TenantId, Timestamp};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

const GROUP: &str = "analytics";
/// Known message states kept between flushes by all of a process's analytics actors
/// together; each of `partitions` actors keeps its share before dropping its cache, so
/// a campaign spread over every partition costs no more memory than one on one.
pub const MESSAGE_CACHE_TOTAL: usize = 200_000;

/// Tuning of the analytics actor.
#[derive(Debug, Clone)]
pub struct AnalyticsSettings {
    /// Events applied before a flush is forced; also the most held in memory (a
    /// flush comes first when the next record would not fit, so only a single record
    /// larger than this goes over it).
    pub flush_size: usize,
    /// Message states one actor keeps between flushes before dropping them (its
    /// share of [`MESSAGE_CACHE_TOTAL`]).
    pub message_cache: usize,
    /// Longest time applied events wait before a flush.
    pub flush_interval: Duration,
    pub idle_wait: Duration,
}

/// The ports an analytics worker uses: its feed (the events, and the store it
/// commits aggregates and positions to) and hot state for live counters.
#[derive(Clone)]
pub struct AnalyticsPorts {
    pub feed: Feed,
    pub hot: Arc<dyn HotState>,
}

impl From<&Ports> for AnalyticsPorts {
    fn from(ports: &Ports) -> Self {
        AnalyticsPorts {
            feed: ports.into(),
            hot: ports.hot.clone(),
        }
    }
}

/// The analytics actor of one partition.
pub struct AnalyticsWorker {
    ports: AnalyticsPorts,
    settings: AnalyticsSettings,
    faults: Arc<Faults>,
    partition: u32,
    cursor: Option<Cursor>,
    stats: HashMap<CampaignId, (TenantId, CampaignStats)>,
    messages: HashMap<MessageId, MessageState>,
    dirty_campaigns: HashSet<CampaignId>,
    dirty_messages: HashSet<MessageId>,
    /// Events consumed since the last flush.
    pending: usize,
    /// Events per record lately, to size fetches to the room left in the buffer.
    per_record: usize,
    last_flush: Instant,
    flush_failures: u32,
    fence: Option<Fence>,
    /// Live counters in hot state may lag the store (a hot-state outage).
    hot_stale: bool,
    last_catch_up: Instant,
}

impl AnalyticsWorker {
    /// An analytics worker for `partition`.
    pub fn new(
        ports: AnalyticsPorts,
        settings: AnalyticsSettings,
        faults: Arc<Faults>,
        partition: u32,
        fence: Option<Fence>,
    ) -> Self {
        AnalyticsWorker {
            ports,
            settings,
            faults,
            partition,
            cursor: None,
            stats: HashMap::new(),
            messages: HashMap::new(),
            dirty_campaigns: HashSet::new(),
            dirty_messages: HashSet::new(),
            pending: 0,
            // Assume large records until some are seen: a first fetch never overshoots much.
            per_record: 512,
            last_flush: Instant::now(),
            flush_failures: 0,
            fence,
            hot_stale: false,
            last_catch_up: Instant::now(),
        }
    }

    /// What the store knows about the events' messages and campaigns that this
    /// worker has not cached yet. Read before anything changes, so a store outage
    /// leaves the worker exactly as it was.
    async fn prior_state(
        &self,
        events: &[EventRecord],
    ) -> Result<(HashMap<MessageId, u32>, HashMap<CampaignId, CampaignStats>), StoreError> {
        let unknown: Vec<MessageId> = events
            .iter()
            .map(|e| e.message_id)
            .filter(|id| !self.messages.contains_key(id))
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let masks = if unknown.is_empty() {
            HashMap::new()
        } else {
            self.ports.feed.outcomes.message_masks(&unknown).await?
        };
        let mut stats = HashMap::new();
        for e in events {
            if !self.stats.contains_key(&e.campaign) && !stats.contains_key(&e.campaign) {
                let stored = self
                    .ports
                    .feed
                    .outcomes
                    .part_stats(e.campaign, self.partition)
                    .await?;
                stats.insert(e.campaign, stored.unwrap_or_default());
            }
        }
        Ok((masks, stats))
    }

    fn apply(
        &mut self,
        events: Vec<EventRecord>,
        masks: HashMap<MessageId, u32>,
        mut loaded: HashMap<CampaignId, CampaignStats>,
    ) {
        for e in events {
            if let std::collections::hash_map::Entry::Vacant(slot) = self.stats.entry(e.campaign) {
                let stored = loaded.remove(&e.campaign).unwrap_or_default();
                slot.insert((e.tenant.clone(), stored));
            }
            let state = self
                .messages
                .entry(e.message_id)
                .or_insert_with(|| MessageState {
                    message_id: e.message_id,
                    tenant: e.tenant.clone(),
                    campaign: e.campaign,
                    recipient: e.recipient.clone(),
                    mask: masks.get(&e.message_id).copied().unwrap_or(0),
                    status: String::new(),
                    detail: None,
                });
            let bit = e.kind.bit();
            if state.mask & bit != 0 {
                metrics::counter!("maily_analytics_duplicates_total").increment(1);
                continue;
            }
            state.mask |= bit;
            state.status = status_from_mask(state.mask, &e.kind).to_string();
            if let Some(detail) = e.kind.detail() {
                state.detail = Some(detail);
            }
            if let Some((_, stats)) = self.stats.get_mut(&e.campaign) {
                stats.apply(&e.kind);
            }
            self.dirty_campaigns.insert(e.campaign);
            self.dirty_messages.insert(e.message_id);
        }
    }

    async fn flush(&mut self) -> anyhow::Result<()> {
        self.faults.check(FaultPoint::AnalyticsBeforeFlush);
        let cursor = self.cursor.clone().context("analytics not loaded")?;
        let batch = AggregateBatch {
            group: GROUP.to_string(),
            fence: self.fence.clone(),
            offsets: vec![cursor.offset()],
            part: self.partition,
            stats: self
                .dirty_campaigns
                .iter()
                .filter_map(|c| self.stats.get(c).map(|(t, s)| (t.clone(), *c, *s)))
                .collect(),
            messages: self
                .dirty_messages
                .iter()
                .filter_map(|m| self.messages.get(m).cloned())
                .collect(),
        };
        let started = Instant::now();
        match self.ports.feed.outcomes.commit_aggregates(&batch).await {
            Ok(()) => {}
            Err(StoreError::RowsRejected {
                row,
                reason,
                rejected,
            }) => {
                // The store committed everything but the named rows: retrying the
                // same batch would only stall the partition.
                warn!(partition = self.partition, %row, %reason, rejected, "rows rejected by the store, the rest of the flush committed");
                metrics::counter!("maily_analytics_rejected_rows_total").increment(rejected as u64);
            }
            Err(e) => return Err(e).context("committing aggregates"),
        }
        metrics::histogram!("maily_analytics_flush_seconds")
            .record(started.elapsed().as_secs_f64());
        metrics::histogram!("maily_analytics_flush_rows").record(batch.messages.len() as f64);
        debug!(
            partition = self.partition,
            campaigns = batch.stats.len(),
            messages = batch.messages.len(),
            next = cursor.next,
            "aggregates flushed"
        );

        let now = Timestamp::now();
        let mut outbox = Outbox::default();
        if self.hot_stale {
            self.catch_up_live_counters().await;
        }
        for (tenant, campaign, stats) in &batch.stats {
            if !self.hot_stale {
                self.push_live(campaign, stats).await;
            }
            outbox.push(
                topics::STATS,
                campaign,
                &StatsRecord {
                    tenant: tenant.clone(),
                    campaign: *campaign,
                    part: self.partition,
                    stats: *stats,
                    at: now,
                },
            );
        }
        outbox
            .send(self.ports.feed.log.as_ref(), &[topics::STATS])
            .await?;
        commit_positions(self.ports.feed.log.as_ref(), GROUP, &[&cursor]).await?;
        self.dirty_campaigns.clear();
        self.dirty_messages.clear();
        if self.messages.len() > self.settings.message_cache {
            self.messages.clear();
        }
        self.pending = 0;
        self.last_flush = Instant::now();
        Ok(())
    }

    /// Sets one campaign's live counters; a failure marks hot state stale.
    async fn push_live(&mut self, campaign: &CampaignId, stats: &CampaignStats) {
        match self
            .ports
            .hot
            .set_live_stats(campaign, self.partition, stats)
            .await
        {
            Ok(()) => hot_ok(),
            Err(e) => {
                hot_down(&e, "live counters catch up from the store later");
                self.hot_stale = true;
            }
        }
    }

    /// After a hot-state outage, sets every campaign this partition knows to its
    /// committed figures, so live counters catch up even without new events.
    async fn catch_up_live_counters(&mut self) {
        self.last_catch_up = Instant::now();
        let known: Vec<(CampaignId, CampaignStats)> =
            self.stats.iter().map(|(c, (_, s))| (*c, *s)).collect();
        for (campaign, stats) in known {
            if let Err(e) = self
                .ports
                .hot
                .set_live_stats(&campaign, self.partition, &stats)
                .await
            {
                hot_down(&e, "live counters catch up from the store later");
                return;
            }
        }
        hot_ok();
        self.hot_stale = false;
        info!(
            partition = self.partition,
            campaigns = self.stats.len(),
            "live counters caught up"
        );
    }

    /// A flush is due when the buffer is full, when the next record (of the size
    /// records have had lately) would not fit in it, or when the oldest buffered
    /// event has waited `flush_interval`.
    fn flush_due(&self) -> bool {
        let room = self.settings.flush_size.saturating_sub(self.pending);
        self.pending > 0
            && (room < self.per_record || self.last_flush.elapsed() >= self.settings.flush_interval)
    }
}

fn is_fenced(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        matches!(
            c.downcast_ref::<StoreError>(),
            Some(StoreError::Fenced { .. })
        )
    })
}

impl Worker for AnalyticsWorker {
    type Command = ();
    type Reply = ();

    fn name(&self) -> String {
        format!("analytics/{}", self.partition)
    }

    async fn load(&mut self) -> anyhow::Result<()> {
        self.cursor = Cursor::load(&self.ports.feed, GROUP, topics::EVENTS, [self.partition])
            .await?
            .pop();
        self.last_flush = Instant::now();
        Ok(())
    }

    async fn step(&mut self) -> anyhow::Result<Step> {
        if self.hot_stale
            && self.pending == 0
            && self.last_catch_up.elapsed() >= Duration::from_secs(1)
        {
            self.catch_up_live_counters().await;
        }
        if self.flush_due() {
            return match self.flush().await {
                Ok(()) => {
                    self.flush_failures = 0;
                    Ok(Step::Busy)
                }
                Err(e) if is_fenced(&e) => Err(e),
                Err(e) => {
                    // Hold the buffer and stop consuming until the store is back.
                    self.flush_failures += 1;
                    let backoff = Duration::from_millis(100 * 2u64.pow(self.flush_failures.min(6)));
                    warn!(partition = self.partition, error = %format!("{e:#}"), retry_ms = backoff.as_millis() as u64, "flush failed, holding buffer");
                    metrics::counter!("maily_analytics_flush_failures_total").increment(1);
                    Ok(Step::Idle(backoff))
                }
            };
        }
        let wait = if self.pending > 0 {
            self.settings
                .flush_interval
                .saturating_sub(self.last_flush.elapsed())
        } else {
            self.settings.idle_wait
        };
        // A record holds a batch of events: read about what the buffer has room for.
        let room = self.settings.flush_size.saturating_sub(self.pending).max(1);
        let max = room.div_ceil(self.per_record.max(1)).max(1);
        let log = self.ports.feed.log.clone();
        let cursor = self.cursor.as_mut().context("analytics not loaded")?;
        let mut records = cursor.fetch(log.as_ref(), max, wait).await?;
        let mut decoded: Vec<Vec<_>> = records
            .iter()
            .map(|r| records::decode_many::<EventRecord>("event", &r.payload))
            .collect();
        // Records differ in size: take those that fit the buffer (an empty buffer
        // takes one whatever its size), and read the rest again after the flush.
        let mut fits = 0;
        let mut taken = 0;
        for items in &decoded {
            if (fits > 0 || self.pending > 0) && taken + items.len() > room {
                break;
            }
            taken += items.len();
            fits += 1;
        }
        if fits == 0 && !decoded.is_empty() {
            // The next record does not fit: flush first.
            self.per_record = decoded[0].len().max(1);
            return Ok(Step::Busy);
        }
        records.truncate(fits);
        decoded.truncate(fits);
        let events: Vec<EventRecord> = decoded
            .iter()
            .flatten()
            .filter_map(|d| d.as_ref().ok().cloned())
            .collect();
        let (masks, loaded) = match self.prior_state(&events).await {
            Ok(prior) => prior,
            Err(StoreError::Unavailable(why)) => {
                // Hold: nothing consumed, nothing changed; the same records are read
                // again once the store answers.
                warn!(partition = self.partition, %why, "store unavailable, analytics waiting");
                metrics::counter!("maily_analytics_store_waits_total").increment(1);
                return Ok(Step::Idle(Duration::from_millis(500)));
            }
            Err(e) => return Err(e).context("loading prior state"),
        };
        for (record, items) in records.iter().zip(&decoded) {
            for bad in items.iter().filter_map(|d| d.as_ref().err()) {
                dead_letter_item(log.as_ref(), topics::EVENTS, record, bad).await?;
            }
        }
        if let Some(last) = records.last() {
            self.cursor.as_mut().context("analytics not loaded")?.next = last.offset + 1;
        }
        let items: usize = decoded.iter().map(Vec::len).sum();
        if !records.is_empty() {
            self.per_record = items.div_ceil(records.len()).max(1);
        }
        self.pending += items;
        // A distribution, so the highest fill over time is visible, not just the last.
        metrics::histogram!("maily_analytics_buffered_events").record(self.pending as f64);
        self.apply(events, masks, loaded);
        Ok(Step::Busy)
    }

    async fn command(&mut self, _: ()) -> anyhow::Result<()> {
        Ok(())
    }

    async fn shutdown(&mut self) -> anyhow::Result<()> {
        if self.pending > 0 {
            self.flush().await?;
        }
        Ok(())
    }
}
