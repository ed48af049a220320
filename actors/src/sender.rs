//! The sender: consumes a partition of the send topic and its retry tiers, renders,
//! suppresses and delivers each message, and emits what happened.
//!
//! Deliveries run in a rolling window (see [`SenderWorker`]): positions only pass a
//! record once each of its messages is delivered, bounced, deferred to a retry tier,
//! rejected or moved to the deferred queue, and those outcomes are written first.
//!
//! Idempotency: each message's key is claimed in hot state before delivery and marked
//! with the outcome after, so a replay after a crash re-emits the recorded outcome
//! instead of sending again. The window left is between the server's 250 and the mark
//! (one hot-state write). A claim found in flight that another process made is taken
//! over at once (that process no longer holds the partition's lease, which this one
//! does); one of this process's own (an earlier actor's, whose delivery may still be
//! running) is waited for and taken over only once older than `in_flight_timeout`.

use crate::common::{
    Cursor, Feed, Outbox, Ports, dead_letter_item, hot_down, hot_ok, save_positions,
};
use crate::compose::{Composer, Own};
use crate::faults::{FaultPoint, Faults};
use crate::ownership::LeaseGuard;
use crate::worker::{Step, Worker};
use anyhow::Context as _;
use futures::StreamExt as _;
use maily_engine::ports::{
    CampaignStore, Claim, DeferredSend, DeferredStore, DeliveryOutcome, DispatchStore, Fence,
    HotState, OutboundMessage, Record, SenderDomain, StoreError, SuppressionStore, TenantAccess,
    Transport,
};
use maily_engine::records::{self, EventRecord, InboundRecord, SendRecord, topics};
use maily_engine::reply::SmtpReply;
use maily_engine::template::{CompiledTemplate, RenderError, Rendered};
use maily_engine::{
    Campaign, CampaignId, CampaignStatus, EventKind, MessageId, Recipient, StagedRecipient,
    TenantId, Timestamp,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::debug;

/// Tuning of the sender.
#[derive(Debug, Clone)]
pub struct SenderSettings {
    /// Finished messages per flush of events and positions.
    pub batch_size: usize,
    /// Deliveries in flight per partition.
    pub concurrency: usize,
    /// The longest finished messages wait for their flush.
    pub flush_interval: Duration,
    /// Spreads deferred messages over the times their destinations can take them,
    /// one for the process.
    pub pacer: Arc<Pacer>,
    /// How long a fetch waits for new records when idle.
    pub idle_wait: Duration,
    /// Delay of each retry tier; attempt n waits in tier min(n-1, last). The tiers
    /// grow exponentially in the defaults; each delay is stretched by a jitter.
    pub retry_tiers: Vec<Duration>,
    /// Up to this fraction of a tier's delay is added to each retry, so messages
    /// deferred together do not all come back in the same instant.
    pub retry_jitter: f64,
    pub max_attempts: u32,
    /// A message older than this is expired instead of retried.
    pub max_age: Duration,
    pub idempotency_ttl: Duration,
    pub in_flight_timeout: Duration,
    /// Return path, links and signature.
    pub composer: Composer,
    /// Where templates are rendered: off the runtime's workers, a few at a time.
    pub renderer: Arc<RenderPool>,
    /// A campaign's From domain must (still) be a verified domain of its tenant
    /// (`[intake] verified_domains_only`).
    pub verified_domains_only: bool,
}

/// Renders templates on the blocking pool, at most `threads` at once, so a costly
/// template (within its fuel) never occupies a worker of the async runtime that other
/// partitions, tenants and the APIs run on.
///
/// A campaign whose renders have all been quick (its first [`Budget::PROBE`] on the
/// pool, none over [`Budget::QUICK`]) renders in place instead: handing a render of a
/// few microseconds to another thread and back costs more than the render. Its first
/// render over that time sends the campaign's renders back to the pool for good.
#[derive(Debug)]
pub struct RenderPool {
    permits: Arc<tokio::sync::Semaphore>,
    /// A render still running after this is given up on (its thread finishes within
    /// the template's fuel) and its message rejected.
    timeout: Duration,
}

impl RenderPool {
    pub fn new(threads: usize, timeout: Duration) -> Self {
        RenderPool {
            permits: Arc::new(tokio::sync::Semaphore::new(threads.max(1))),
            timeout,
        }
    }

    /// One thread per core and a 30 s timeout.
    pub fn per_core() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self::new(cores, Duration::from_secs(30))
    }

    /// Renders `plan`'s template for `recipient`, unless its campaign's renders keep
    /// running over their budget (see [`Budget`]).
    async fn render(&self, plan: Arc<Plan>, recipient: Recipient) -> Result<Rendered, String> {
        if let Some(reason) = plan.budget.tripped() {
            metrics::counter!("maily_sender_render_skipped_total").increment(1);
            return Err(reason);
        }
        if plan.budget.quick() {
            let started = Instant::now();
            let result = plan.template.render(&recipient);
            plan.budget.timed(started.elapsed());
            let over = matches!(
                result,
                Err(RenderError::OutOfFuel { .. } | RenderError::TooLong { .. })
            );
            plan.budget.record(over);
            metrics::counter!("maily_sender_renders_inline_total").increment(1);
            return result.map_err(|e| e.to_string());
        }
        let Ok(permit) = self.permits.clone().acquire_owned().await else {
            return Err("the render pool is closed".into());
        };
        let budget = plan.budget.clone();
        let timing = plan.budget.clone();
        let task = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let started = Instant::now();
            let rendered = plan.template.render(&recipient);
            timing.timed(started.elapsed());
            rendered
        });
        let (result, over) = match tokio::time::timeout(self.timeout, task).await {
            Ok(Ok(Ok(rendered))) => (Ok(rendered), false),
            Ok(Ok(Err(e))) => {
                let over = matches!(
                    e,
                    RenderError::OutOfFuel { .. } | RenderError::TooLong { .. }
                );
                (Err(e.to_string()), over)
            }
            Ok(Err(e)) => (Err(format!("rendering failed: {e}")), false),
            Err(_) => {
                metrics::counter!("maily_sender_render_timeouts_total").increment(1);
                (
                    Err(format!("rendering took longer than {:?}", self.timeout)),
                    true,
                )
            }
        };
        budget.record(over);
        result
    }
}

/// Spreads the messages deferred for one destination over the times its limits let
/// them start, for every sender of the process: the first goes when the destination
/// could take it, each further one a destination's spacing later, so they come back
/// one by one as it takes them instead of all at once.
///
/// Keyed by destination only: where a tenant's or pool's limit is the one holding a
/// message back, a later check re-defers whatever comes due too early.
#[derive(Debug, Default)]
pub struct Pacer {
    /// Per destination, the first start time after those handed out.
    next: std::sync::Mutex<HashMap<String, Instant>>,
}

impl Pacer {
    /// When a message from `tenant` to `domain` is due if its destination's limits
    /// would keep it waiting longer than [`PARK_AFTER`]; `None` to send it now.
    fn defer(
        &self,
        transport: &dyn Transport,
        tenant: &TenantId,
        domain: &str,
    ) -> Option<Timestamp> {
        let pace = transport.pace(tenant, domain)?;
        if pace.wait <= PARK_AFTER {
            return None;
        }
        let now = Instant::now();
        let earliest = now + pace.wait;
        let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
        if next.len() > 10_000 {
            next.retain(|_, t| *t > now);
        }
        let domain = domain.to_ascii_lowercase();
        let at = next
            .get(&domain)
            .copied()
            .map_or(earliest, |t| t.max(earliest));
        next.insert(domain, at + pace.spacing.max(Duration::from_millis(1)));
        Some(Timestamp::now().plus(at - now))
    }
}

/// Renders of one campaign that ran over their fuel, output cap or time: once at
/// least [`Budget::TRIP_AFTER`] did, and they are at least half of its renders, the
/// campaign's other messages are rejected without rendering, so a template that is
/// costly for every recipient costs the shared render pool a few renders per
/// partition, not one per message. Kept across reloads of the campaign while its
/// template stays the same.
#[derive(Debug, Default)]
struct Budget {
    renders: std::sync::atomic::AtomicU32,
    over: std::sync::atomic::AtomicU32,
    /// Renders timed, and whether any took longer than [`Budget::QUICK`].
    timed: std::sync::atomic::AtomicU32,
    slow: std::sync::atomic::AtomicBool,
}

impl Budget {
    const TRIP_AFTER: u32 = 10;
    /// Renders measured on the pool before a campaign may render in place.
    const PROBE: u32 = 32;
    /// The longest render that still counts as quick.
    const QUICK: Duration = Duration::from_micros(200);

    fn timed(&self, took: Duration) {
        use std::sync::atomic::Ordering::Relaxed;
        if took > Self::QUICK {
            self.slow.store(true, Relaxed);
        }
        self.timed.fetch_add(1, Relaxed);
    }

    /// Whether the campaign's renders have all been quick, over enough of them.
    fn quick(&self) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        !self.slow.load(Relaxed) && self.timed.load(Relaxed) >= Self::PROBE
    }

    fn record(&self, over: bool) {
        use std::sync::atomic::Ordering::Relaxed;
        self.renders.fetch_add(1, Relaxed);
        if over {
            self.over.fetch_add(1, Relaxed);
        }
    }

    /// Why the campaign's messages are no longer rendered, once tripped.
    fn tripped(&self) -> Option<String> {
        use std::sync::atomic::Ordering::Relaxed;
        let (renders, over) = (self.renders.load(Relaxed), self.over.load(Relaxed));
        (over >= Self::TRIP_AFTER && over.saturating_mul(2) >= renders).then(|| {
            format!(
                "the campaign's template ran over its budget (fuel, output size or time) in \
                 {over} of {renders} renders; its other messages are rejected unrendered"
            )
        })
    }
}

/// A campaign ready to render.
struct Plan {
    campaign: Campaign,
    template: CompiledTemplate,
    /// Why its messages may not go out (its From domain is no longer the tenant's).
    refused: Option<String>,
    /// The tenant's own key and return path of the From domain.
    own: Own,
    /// How its renders went over their budget.
    budget: Arc<Budget>,
}

/// How long a loaded campaign is used before it is read again, so a changed template
/// or sender reaches the messages sent after it within this.
const PLAN_TTL: Duration = Duration::from_secs(5);

/// The ports a sender uses: its feed (the send and retry topics, the events it
/// emits, its positions), the campaigns it sends, its deferred queue, the tenants'
/// sending domains, the suppression list, hot state (idempotency claims, cached
/// suppressions, rate buckets) and the transport.
#[derive(Clone)]
pub struct SenderPorts {
    pub feed: Feed,
    pub campaigns: Arc<dyn CampaignStore>,
    /// Where a paused campaign's messages go back to, staged.
    pub dispatch: Arc<dyn DispatchStore>,
    /// Messages waiting for their destination, out of the window.
    pub deferred: Arc<dyn DeferredStore>,
    pub access: Arc<dyn TenantAccess>,
    pub suppressions: Arc<dyn SuppressionStore>,
    pub hot: Arc<dyn HotState>,
    pub transport: Arc<dyn Transport>,
}

impl From<&Ports> for SenderPorts {
    fn from(ports: &Ports) -> Self {
        SenderPorts {
            feed: ports.into(),
            campaigns: ports.store.clone(),
            dispatch: ports.store.clone(),
            deferred: ports.store.clone(),
            access: ports.store.clone(),
            suppressions: ports.store.clone(),
            hot: ports.hot.clone(),
            transport: ports.transport.clone(),
        }
    }
}

/// The sender of one partition.
///
/// It keeps a rolling window of deliveries: up to `concurrency` run at once, and a
/// new one starts as soon as one ends, whatever the others are doing. What finished
/// is flushed every `batch_size` messages or `flush_interval`: events (packed per
/// shard), retries, then the stored positions, which only pass a record once every
/// message of it finished. A message whose destination's limits would keep it waiting
/// longer than [`PARK_AFTER`] leaves the window for the deferred queue in the store,
/// due when its destination can take it, so a throttled domain holds back no other.
pub struct SenderWorker {
    ports: SenderPorts,
    settings: Arc<SenderSettings>,
    faults: Arc<Faults>,
    partition: u32,
    /// The send topic's cursor, then each retry tier's: where the next fetch reads.
    cursors: Vec<Cursor>,
    /// When each retry tier is read next: a tier waits at its first record not due.
    tier_due: Vec<Instant>,
    plans: HashMap<CampaignId, (Instant, Option<Arc<Plan>>)>,
    statuses: HashMap<CampaignId, (Instant, Option<CampaignStatus>)>,
    fence: Option<Fence>,
    guard: Option<Arc<LeaseGuard>>,
    /// Messages per send record lately, to size fetches.
    per_record: usize,
    window: Window,
}

/// The longest a message may wait in the window for its destination's limits; one
/// that would wait longer is deferred instead.
const PARK_AFTER: Duration = Duration::from_millis(250);

/// While the window has room and deliveries run, how long to wait for one of them to
/// end before looking for new records again.
const POLL: Duration = Duration::from_millis(20);

/// How often an empty retry tier, or one whose head is not due, is looked at.
const TIER_POLL: Duration = Duration::from_millis(250);

/// How long a stopping sender goes on with what it fetched; a record with a message
/// still unfinished after this is read again by the next owner (claims stop second
/// sends where hot state is shared).
const SHUTDOWN_WAIT: Duration = Duration::from_secs(30);

/// A delivery waiting in the window or running.
struct Job {
    rec: SendRecord,
    /// The key of the record it came in (its campaign's shard).
    key: Arc<[u8]>,
    from: Source,
}

/// Where a message in the window came from, so its end moves the right position.
#[derive(Debug, Clone, Copy)]
enum Source {
    /// A record of `cursors[cursor]` at `offset`.
    Log { cursor: usize, offset: u64 },
    /// The deferred queue.
    Deferred,
}

/// What a delivery task hands back.
struct Finished {
    source: Source,
    key: Arc<[u8]>,
    message_id: MessageId,
    outputs: anyhow::Result<Vec<Output>>,
}

/// The sender's rolling window.
struct Window {
    /// Fetched messages not started yet, in order.
    queued: std::collections::VecDeque<Job>,
    running: futures::stream::FuturesUnordered<tokio::task::JoinHandle<Finished>>,
    /// Per cursor, the records from its stored position on: offset -> (messages,
    /// messages not finished). The position passes a record once it and every
    /// record before it are finished.
    open: Vec<BTreeMap<u64, (usize, usize)>>,
    /// Messages in those records: what a crash could make the next owner read again.
    span: usize,
    /// What finished and is not flushed yet.
    outbox: Outbox,
    /// Messages to move to the deferred queue at the next flush.
    deferring: Vec<DeferredSend>,
    /// Deferred messages that finished: their rows go at the next flush.
    done_deferred: Vec<MessageId>,
    /// Messages finished since the last flush.
    unflushed: usize,
    last_flush: Option<Instant>,
    /// When the deferred queue's next send is due (None: nothing there).
    deferred_due: Option<Timestamp>,
    /// Rows in the deferred queue, for the gauge.
    deferred: u64,
    /// When the log is read next.
    next_fetch: Instant,
    /// Per cursor, the position last stored (None: not yet this incarnation).
    saved: Vec<Option<u64>>,
}

impl Default for Window {
    fn default() -> Self {
        Window {
            queued: Default::default(),
            running: Default::default(),
            open: Vec::new(),
            span: 0,
            outbox: Outbox::default(),
            deferring: Vec::new(),
            done_deferred: Vec::new(),
            unflushed: 0,
            last_flush: None,
            deferred_due: None,
            deferred: 0,
            next_fetch: Instant::now(),
            saved: Vec::new(),
        }
    }
}

impl Window {
    fn is_idle(&self) -> bool {
        self.queued.is_empty() && self.running.is_empty()
    }

    /// Records that a message of `source` finished (or left the window).
    fn close(&mut self, source: Source) {
        self.unflushed += 1;
        if let Source::Log { cursor, offset } = source
            && let Some((_, left)) = self.open.get_mut(cursor).and_then(|o| o.get_mut(&offset))
        {
            *left = left.saturating_sub(1);
        }
    }

    /// Takes out of the queue the messages of records none of whose messages has
    /// started, and deferred sends (their rows stay, for the next owner to release).
    fn drop_untouched(&mut self) {
        let mut queued: HashMap<(usize, u64), usize> = HashMap::new();
        for job in &self.queued {
            if let Source::Log { cursor, offset } = job.from {
                *queued.entry((cursor, offset)).or_default() += 1;
            }
        }
        let open = &self.open;
        self.queued.retain(|job| match job.from {
            Source::Log { cursor, offset } => open[cursor]
                .get(&offset)
                .is_some_and(|(total, _)| queued.get(&(cursor, offset)) != Some(total)),
            Source::Deferred => false,
        });
    }

    /// Drops the finished records at the front of each cursor's list, and returns
    /// each cursor's position: its first record with messages not finished.
    fn positions(&mut self, cursors: &[Cursor]) -> Vec<Cursor> {
        let mut out = Vec::with_capacity(cursors.len());
        for (cursor, open) in cursors.iter().zip(&mut self.open) {
            while let Some(entry) = open.first_entry() {
                if entry.get().1 > 0 {
                    break;
                }
                self.span -= entry.remove().0;
            }
            out.push(Cursor {
                next: open.keys().next().copied().unwrap_or(cursor.next),
                ..cursor.clone()
            });
        }
        out
    }
}

const GROUP: &str = "sender";

/// What the sender recorded for a finished delivery, replayed on duplicates.
#[derive(Debug, Serialize, Deserialize)]
enum Recorded {
    Delivered,
    Bounced { reply: SmtpReply },
}

enum Output {
    Event(EventRecord),
    Inbound(InboundRecord),
    Retry(usize, SendRecord),
}

impl SenderWorker {
    /// A sender for `partition`; state is loaded when the actor starts.
    pub fn new(
        ports: SenderPorts,
        settings: Arc<SenderSettings>,
        faults: Arc<Faults>,
        partition: u32,
        fence: Option<Fence>,
        guard: Option<Arc<LeaseGuard>>,
    ) -> Self {
        SenderWorker {
            ports,
            settings,
            faults,
            partition,
            cursors: Vec::new(),
            tier_due: Vec::new(),
            plans: HashMap::new(),
            statuses: HashMap::new(),
            fence,
            guard,
            // Assume full records until some are seen: a first fetch never overshoots.
            per_record: records::SEND_ITEMS_PER_RECORD,
            window: Window::default(),
        }
    }

    async fn plan(&mut self, id: CampaignId) -> anyhow::Result<Option<Arc<Plan>>> {
        if let Some((loaded, p)) = self.plans.get(&id)
            && loaded.elapsed() < PLAN_TTL
        {
            return Ok(p.clone());
        }
        let campaign = self
            .ports
            .campaigns
            .campaign(id)
            .await
            .with_context(|| format!("loading campaign {id}"))?;
        let plan = match campaign {
            Some(campaign) => match CompiledTemplate::compile(&campaign.template) {
                Ok(template) => {
                    // Checked at intake, and again here: a domain removed (or taken
                    // from the tenant) after the campaign was created stops its mail.
                    let sender = SenderDomain::of(
                        self.ports.access.as_ref(),
                        &campaign.tenant,
                        campaign.from.domain(),
                    )
                    .await
                    .with_context(|| format!("checking the sending domain of campaign {id}"))?;
                    let mut refused = if self.settings.verified_domains_only {
                        sender.refusal(&campaign.tenant, campaign.from.domain())
                    } else {
                        None
                    };
                    let mut own = Own::default();
                    if let SenderDomain::Verified(domain) = &sender
                        && let Some(verp) = &self.settings.composer.verp
                    {
                        // Only while the tenant return paths are on.
                        own.return_path = domain
                            .return_path
                            .clone()
                            .filter(|r| verp.tenant_domain(&domain.domain).as_ref() == Some(r));
                    }
                    if let SenderDomain::Verified(domain) = &sender
                        && let Some(tracking) = &self.settings.composer.tracking
                        && let Some(host) = &domain.tracking_host
                        && tracking.tenant_host(&domain.domain).as_ref() == Some(host)
                    {
                        // Only while the tenant tracking hosts are on.
                        own.tracking = Some(Arc::new(tracking.on_host(host)));
                    }
                    if let (SenderDomain::Verified(own_domain), Some(signers)) =
                        (&sender, &self.settings.composer.domain_signers)
                        && let Some(key) = &own_domain.dkim
                    {
                        match signers.signer(&own_domain.domain, key) {
                            Ok(s) => own.signer = Some(s),
                            // Never another key instead: its messages are refused,
                            // with the reason, until the key is fixed.
                            Err(e) => {
                                let reason = format!(
                                    "the DKIM key of {} does not load: {e:#}",
                                    own_domain.domain
                                );
                                tracing::error!(campaign = %id, %reason, "campaign cannot be signed");
                                refused.get_or_insert(reason);
                            }
                        }
                    }
                    // The budget's record survives a reload of an unchanged template.
                    let budget = match self.plans.get(&id) {
                        Some((_, Some(old))) if old.campaign.template == campaign.template => {
                            old.budget.clone()
                        }
                        _ => Arc::default(),
                    };
                    Some(Arc::new(Plan {
                        campaign,
                        template,
                        refused,
                        own,
                        budget,
                    }))
                }
                Err(e) => {
                    tracing::warn!(campaign = %id, error = %e, "campaign template does not compile");
                    None
                }
            },
            None => None,
        };
        self.plans.insert(id, (Instant::now(), plan.clone()));
        Ok(plan)
    }

    /// The status of campaign `id`, read again after [`STATUS_TTL`].
    async fn status(&mut self, id: CampaignId) -> anyhow::Result<Option<CampaignStatus>> {
        if let Some((read, status)) = self.statuses.get(&id)
            && read.elapsed() < STATUS_TTL
        {
            return Ok(*status);
        }
        let status = self
            .ports
            .campaigns
            .campaign_state(id)
            .await
            .with_context(|| format!("loading the status of campaign {id}"))?
            .map(|s| s.status);
        self.statuses.insert(id, (Instant::now(), status));
        Ok(status)
    }

    /// Reads due retries, due deferred sends and new sends into the window's queue,
    /// up to about `room` messages; waits up to `wait` for new sends if none is there.
    async fn fetch(&mut self, room: usize, wait: Duration) -> anyhow::Result<usize> {
        let log = self.ports.feed.log.clone();
        let now = Timestamp::now();
        let mut taken = 0;
        // Due retries first; each tier is ordered by due time, so stop at the first
        // record that is not due yet (a record of several retries is due when its
        // last one is: they were deferred together, within the tier's jitter).
        for tier in 1..self.cursors.len() {
            if taken >= room || self.tier_due[tier - 1] > Instant::now() {
                continue;
            }
            let cursor = &self.cursors[tier];
            let fetched = cursor
                .fetch(log.as_ref(), room - taken, Duration::ZERO)
                .await?;
            let mut next_look = Instant::now() + TIER_POLL;
            for record in fetched {
                let items = records::decode_many::<SendRecord>("send", &record.payload);
                let due = items
                    .iter()
                    .flatten()
                    .filter_map(|rec| rec.not_before)
                    .max()
                    .filter(|t| *t > now);
                if let Some(due) = due {
                    next_look = next_look.min(Instant::now() + due.since(now));
                    break;
                }
                self.cursors[tier].next = record.offset + 1;
                taken += self.enqueue(tier, &record, items).await?;
                if taken >= room {
                    next_look = Instant::now();
                    break;
                }
            }
            self.tier_due[tier - 1] = next_look;
        }
        // Deferred sends whose time has come.
        if taken < room && self.window.deferred_due.is_some_and(|due| due <= now) {
            let due = self
                .ports
                .deferred
                .take_due_sends(self.partition, now, room - taken)
                .await
                .context("taking due deferred sends")?;
            for row in due {
                match records::decode::<SendRecord>("send", &row.payload) {
                    Ok(rec) => {
                        self.window.queued.push_back(Job {
                            rec,
                            key: row.key.as_slice().into(),
                            from: Source::Deferred,
                        });
                        taken += 1;
                    }
                    Err(e) => {
                        // Stored by this engine, so not expected; dropped with a trace.
                        tracing::error!(message = %row.message_id, error = %e, "deferred send unreadable, dropped");
                        self.window.done_deferred.push(row.message_id);
                    }
                }
            }
            self.refresh_deferred_due().await?;
        }
        // New sends; a send record holds a chunk of recipients.
        if taken < room {
            let wait = if taken == 0 { wait } else { Duration::ZERO };
            let wait = match self.window.deferred_due {
                Some(due) => wait.min(due.since(Timestamp::now())),
                None => wait,
            };
            let records = (room - taken).div_ceil(self.per_record.max(1));
            let fetched = self.cursors[0].fetch(log.as_ref(), records, wait).await?;
            let mut messages = 0;
            for record in &fetched {
                self.cursors[0].next = record.offset + 1;
                let items = records::decode_many::<SendRecord>("send", &record.payload);
                messages += self.enqueue(0, record, items).await?;
            }
            if !fetched.is_empty() {
                self.per_record = messages.div_ceil(fetched.len()).max(1);
            }
            taken += messages;
        }
        Ok(taken)
    }

    /// Reads when the partition's next deferred send (not taken) is due.
    async fn refresh_deferred_due(&mut self) -> anyhow::Result<()> {
        self.window.deferred_due = self
            .ports
            .deferred
            .next_deferred_due(self.partition)
            .await
            .context("reading the next deferred send's due time")?;
        Ok(())
    }

    /// Queues a fetched record's messages; a bad item goes to the dead-letter topic.
    async fn enqueue(
        &mut self,
        cursor: usize,
        record: &Record,
        items: Vec<Result<SendRecord, records::ItemError>>,
    ) -> anyhow::Result<usize> {
        let log = self.ports.feed.log.clone();
        let key: Arc<[u8]> = record.key.as_slice().into();
        let mut n = 0;
        for item in items {
            match item {
                Ok(rec) => {
                    self.window.queued.push_back(Job {
                        rec,
                        key: key.clone(),
                        from: Source::Log {
                            cursor,
                            offset: record.offset,
                        },
                    });
                    n += 1;
                }
                Err(bad) => {
                    dead_letter_item(log.as_ref(), &self.cursors[cursor].topic, record, &bad)
                        .await?
                }
            }
        }
        if n > 0 {
            self.window.open[cursor].insert(record.offset, (n, n));
            self.window.span += n;
        }
        Ok(n)
    }

    /// Starts queued messages while the window has room: a paused campaign's go back
    /// to the store, a cancelled one's are rejected, one whose destination would keep
    /// it waiting is deferred, and the rest are delivered.
    async fn start(&mut self) -> anyhow::Result<()> {
        let limit = self.settings.concurrency.max(1);
        let mut held: HashMap<CampaignId, Vec<StagedRecipient>> = HashMap::new();
        while self.window.running.len() < limit
            && let Some(job) = self.window.queued.pop_front()
        {
            let campaign = job.rec.campaign;
            match self.status(campaign).await? {
                Some(CampaignStatus::Paused) => {
                    // Staged below, before anything is flushed.
                    held.entry(campaign).or_default().push(StagedRecipient {
                        message_id: job.rec.message_id,
                        email: job.rec.recipient.clone(),
                        vars: job.rec.vars.clone(),
                    });
                    self.finish_without_outputs(&job);
                    continue;
                }
                Some(CampaignStatus::Cancelled) => {
                    let output = event(
                        &job.rec,
                        EventKind::Rejected {
                            reason: "campaign cancelled".into(),
                        },
                    );
                    self.finish(Finished {
                        source: job.from,
                        key: job.key,
                        message_id: job.rec.message_id,
                        outputs: Ok(vec![output]),
                    })?;
                    continue;
                }
                _ => {}
            }
            if let Some(due) = self.settings.pacer.defer(
                self.ports.transport.as_ref(),
                &job.rec.tenant,
                job.rec.recipient.domain(),
            ) {
                self.defer(job, due);
                continue;
            }
            let plan = self.plan(campaign).await?;
            let ports = self.ports.clone();
            let settings = self.settings.clone();
            let lease = self.guard.clone().zip(self.fence.clone());
            let Job { rec, key, from } = job;
            self.window.running.push(tokio::spawn(async move {
                let message_id = rec.message_id;
                Finished {
                    source: from,
                    key,
                    message_id,
                    outputs: process(ports, settings, plan, rec, lease).await,
                }
            }));
        }
        for (campaign, rows) in &held {
            self.ports
                .dispatch
                .stage_recipients(*campaign, rows)
                .await
                .with_context(|| format!("holding messages of paused campaign {campaign}"))?;
            metrics::counter!("maily_sender_held_total").increment(rows.len() as u64);
        }
        Ok(())
    }

    /// Moves a message out of the window to the deferred queue, due at `due`.
    fn defer(&mut self, job: Job, due: Timestamp) {
        metrics::counter!("maily_sender_deferred_total").increment(1);
        self.window.deferring.push(DeferredSend {
            message_id: job.rec.message_id,
            partition: self.partition,
            destination: job.rec.recipient.domain().to_ascii_lowercase(),
            due,
            key: job.key.to_vec(),
            payload: records::encode(&job.rec),
        });
        if matches!(job.from, Source::Log { .. }) {
            self.window.deferred += 1;
        }
        self.window.close(job.from);
    }

    /// A message that leaves the window with nothing to emit (held back to staging).
    fn finish_without_outputs(&mut self, job: &Job) {
        if let Source::Deferred = job.from {
            self.window.done_deferred.push(job.rec.message_id);
        }
        self.window.close(job.from);
    }

    /// Takes in what a delivery produced.
    fn finish(&mut self, done: Finished) -> anyhow::Result<()> {
        let outputs = done.outputs?;
        let key = &done.key[..];
        for output in outputs {
            match output {
                Output::Event(e) => self.window.outbox.push_keyed(topics::EVENTS, key, &e),
                Output::Inbound(i) => self.window.outbox.push_keyed(topics::INBOUND, key, &i),
                Output::Retry(tier, r) => {
                    self.window.outbox.push_keyed(&topics::retry(tier), key, &r)
                }
            }
        }
        if let Source::Deferred = done.source {
            self.window.done_deferred.push(done.message_id);
        }
        self.window.close(done.source);
        Ok(())
    }

    /// Waits for a running delivery to end, up to `until`, then takes every one that
    /// has ended.
    async fn collect(&mut self, until: tokio::time::Instant) -> anyhow::Result<()> {
        use futures::FutureExt as _;
        if self.window.running.is_empty() {
            return Ok(());
        }
        let first = tokio::select! {
            done = self.window.running.next() => done,
            () = tokio::time::sleep_until(until) => None,
        };
        // No more than a flush's worth: a flush writes at most about `batch_size`.
        let mut ended = Vec::from_iter(first);
        let room = self
            .settings
            .batch_size
            .max(1)
            .saturating_sub(self.window.unflushed);
        while ended.len() < room
            && let Some(Some(done)) = self.window.running.next().now_or_never()
        {
            ended.push(done);
        }
        for done in ended {
            self.finish(done.context("delivery task panicked")?)?;
        }
        Ok(())
    }

    /// Writes what finished: deferred messages to the store, then events and retries
    /// to the log, then the positions, which pass a record only once every message
    /// of it is in one of those.
    async fn flush(&mut self) -> anyhow::Result<()> {
        self.faults.check(FaultPoint::SenderBeforeCommit);
        // Deliveries already under way when the process froze may have completed;
        // their events would only duplicate what the new owner emits.
        if let (Some(guard), Some(fence)) = (&self.guard, &self.fence)
            && !guard.valid_at(Timestamp::now())
        {
            return Err(StoreError::Fenced {
                resource: fence.resource.clone(),
                owner: fence.owner.clone(),
                epoch: fence.epoch,
            })
            .context("lease expired before the flush");
        }
        let log = self.ports.feed.log.clone();
        if !self.window.deferring.is_empty() {
            let deferring = std::mem::take(&mut self.window.deferring);
            self.ports
                .deferred
                .defer_sends(&deferring, self.fence.as_ref())
                .await
                .context("storing deferred sends")?;
            let first = deferring.iter().map(|d| d.due).min();
            self.window.deferred_due = match (self.window.deferred_due, first) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        let mut order = vec![topics::EVENTS.to_string(), topics::INBOUND.to_string()];
        order.extend((0..self.settings.retry_tiers.len()).map(topics::retry));
        let order: Vec<&str> = order.iter().map(String::as_str).collect();
        self.window.outbox.send(log.as_ref(), &order).await?;
        if !self.window.done_deferred.is_empty() {
            let done = std::mem::take(&mut self.window.done_deferred);
            self.ports
                .deferred
                .forget_deferred(&done)
                .await
                .context("removing finished deferred sends")?;
            self.window.deferred = self.window.deferred.saturating_sub(done.len() as u64);
        }
        // Only positions that moved are written: most flushes move the send topic's
        // alone.
        let positions = self.window.positions(&self.cursors);
        let moved: Vec<&Cursor> = positions
            .iter()
            .zip(&self.window.saved)
            .filter(|(c, saved)| Some(c.next) != **saved)
            .map(|(c, _)| c)
            .collect();
        if !moved.is_empty() {
            save_positions(&self.ports.feed, GROUP, &moved, self.fence.as_ref()).await?;
        }
        self.window.saved = positions.iter().map(|c| Some(c.next)).collect();
        metrics::histogram!("maily_sender_batch_size").record(self.window.unflushed as f64);
        let partition = self.partition.to_string();
        metrics::gauge!("maily_sender_in_flight", "partition" => partition.clone())
            .set(self.window.running.len() as f64);
        metrics::gauge!("maily_sender_deferred", "partition" => partition)
            .set(self.window.deferred as f64);
        debug!(
            partition = self.partition,
            messages = self.window.unflushed,
            "flushed"
        );
        self.window.unflushed = 0;
        self.window.last_flush = Some(Instant::now());
        Ok(())
    }

    /// Whether the queue is low and the window may read further.
    fn wants_records(&self) -> bool {
        self.window.queued.len() < self.settings.concurrency.max(1)
            && self.window.span < self.max_span()
    }

    /// The most messages of fetched records past the stored positions.
    fn max_span(&self) -> usize {
        2 * self.settings.batch_size.max(1) + self.settings.concurrency.max(1)
    }

    fn flush_due(&self) -> bool {
        let w = &self.window;
        let since = w.last_flush.map_or(Duration::MAX, |t| t.elapsed());
        w.unflushed > 0
            && (w.unflushed >= self.settings.batch_size.max(1)
                || since >= self.settings.flush_interval
                || w.running.is_empty())
    }
}

/// How long a campaign's status is used before it is read again: a pause reaches the
/// messages started after it within this.
const STATUS_TTL: Duration = Duration::from_millis(500);

impl Worker for SenderWorker {
    type Command = ();
    type Reply = ();

    fn name(&self) -> String {
        format!("sender/{}", self.partition)
    }

    async fn load(&mut self) -> anyhow::Result<()> {
        let p = [self.partition];
        self.cursors = Cursor::load(&self.ports.feed, GROUP, topics::SEND, p).await?;
        anyhow::ensure!(self.cursors.len() == 1, "sender not loaded");
        for tier in 0..self.settings.retry_tiers.len() {
            let topic = topics::retry(tier);
            self.cursors
                .extend(Cursor::load(&self.ports.feed, GROUP, &topic, p).await?);
        }
        self.tier_due = vec![Instant::now(); self.cursors.len() - 1];
        self.window = Window {
            open: vec![BTreeMap::new(); self.cursors.len()],
            saved: vec![None; self.cursors.len()],
            ..Window::default()
        };
        // A window that died with an earlier owner held some deferred sends: they
        // are due again.
        self.window.deferred = self
            .ports
            .deferred
            .release_deferred(self.partition)
            .await
            .context("releasing deferred sends")?;
        if self.window.deferred > 0 {
            self.refresh_deferred_due().await?;
        }
        Ok(())
    }

    async fn step(&mut self) -> anyhow::Result<Step> {
        let now = Timestamp::now();
        if let Some(guard) = &self.guard
            && !guard.valid_at(now)
        {
            // Our lease may have passed to another process: start nothing until the
            // ownership round renews it or stops us; what runs ends on its own.
            metrics::counter!("maily_sender_lease_waits_total").increment(1);
            let until = tokio::time::Instant::now() + Duration::from_millis(100);
            self.collect(until).await?;
            return Ok(Step::Idle(if self.window.running.is_empty() {
                Duration::from_millis(100)
            } else {
                Duration::ZERO
            }));
        }
        let limit = self.settings.concurrency.max(1);
        // Keep about a batch queued behind the running deliveries, and no more than
        // `max_span` messages past the stored positions (a delivery that takes long
        // holds them there), which bounds what a crash makes the next owner re-read.
        let want = self.settings.batch_size.max(limit);
        let idle = self.window.is_idle();
        if self.wants_records() && (idle || Instant::now() >= self.window.next_fetch) {
            // With nothing to do, wait for records (a flush first, if one is owed).
            let wait = if idle && self.window.unflushed == 0 {
                self.settings.idle_wait
            } else {
                Duration::ZERO
            };
            let got = self.fetch(want - self.window.queued.len(), wait).await?;
            // An empty read is not repeated at once while deliveries run.
            self.window.next_fetch = if got > 0 {
                Instant::now()
            } else {
                Instant::now() + POLL
            };
        }
        // Deliver until a flush is due or the queue wants records: one step covers
        // many deliveries, so the actor's mailbox is visited about once a batch.
        loop {
            self.start().await?;
            if self.window.running.is_empty() {
                break;
            }
            // Wait for a delivery to end, or for the next flush while something is
            // unflushed, or for the next read while the queue is low.
            let mut until = tokio::time::Instant::now() + self.settings.flush_interval;
            if self.window.unflushed > 0
                && let Some(last) = self.window.last_flush
            {
                until = until.min((last + self.settings.flush_interval).into());
            }
            let refill = self.wants_records();
            if refill {
                until = until.min(self.window.next_fetch.into());
            }
            self.collect(until).await?;
            let lease_ok = self
                .guard
                .as_ref()
                .is_none_or(|g| g.valid_at(Timestamp::now()));
            if self.flush_due() || !lease_ok || (refill && Instant::now() >= self.window.next_fetch)
            {
                break;
            }
        }
        if self.flush_due() {
            self.flush().await?;
        }
        Ok(Step::Busy)
    }

    async fn command(&mut self, _: ()) -> anyhow::Result<()> {
        Ok(())
    }

    async fn shutdown(&mut self) -> anyhow::Result<()> {
        // A record is read again by the next owner unless all of its messages
        // finished: drop the queued records none of whose messages started, and
        // deliver the rest of those that did (at most one record per topic), so none
        // is left half-done; within the transport's timeouts and `SHUTDOWN_WAIT`.
        self.window.drop_untouched();
        let give_up = tokio::time::Instant::now() + SHUTDOWN_WAIT;
        while !self.window.is_idle() && tokio::time::Instant::now() < give_up {
            self.start().await?;
            self.collect(give_up.min(tokio::time::Instant::now() + POLL))
                .await?;
        }
        if self.window.unflushed > 0 {
            self.flush().await?;
        }
        Ok(())
    }
}

fn event(rec: &SendRecord, kind: EventKind) -> Output {
    Output::Event(EventRecord {
        message_id: rec.message_id,
        tenant: rec.tenant.clone(),
        campaign: rec.campaign,
        recipient: rec.recipient.clone(),
        at: Timestamp::now(),
        kind,
    })
}

fn replay(rec: &SendRecord, recorded: Recorded) -> Vec<Output> {
    match recorded {
        Recorded::Delivered => vec![
            event(rec, EventKind::Injected),
            event(rec, EventKind::Delivered),
        ],
        Recorded::Bounced { reply } => vec![
            event(rec, EventKind::Injected),
            Output::Inbound(InboundRecord::SyncReply {
                message_id: rec.message_id,
                tenant: rec.tenant.clone(),
                campaign: rec.campaign,
                recipient: rec.recipient.clone(),
                reply,
            }),
        ],
    }
}

/// Delivers one message and says what happened.
async fn process(
    ports: SenderPorts,
    settings: Arc<SenderSettings>,
    plan: Option<Arc<Plan>>,
    rec: SendRecord,
    lease: Option<(Arc<LeaseGuard>, Fence)>,
) -> anyhow::Result<Vec<Output>> {
    // Checked per message, not only per batch: a process frozen mid-batch must not
    // start the rest of the batch on a lease that has expired meanwhile.
    if let Some((guard, fence)) = &lease
        && !guard.valid_at(Timestamp::now())
    {
        return Err(StoreError::Fenced {
            resource: fence.resource.clone(),
            owner: fence.owner.clone(),
            epoch: fence.epoch,
        })
        .context("lease expired before delivery");
    }
    let hot = &ports.hot;
    let suppressed = match hot.is_suppressed(&rec.tenant, &rec.recipient).await {
        Ok(s) => {
            hot_ok();
            s
        }
        Err(e) => {
            hot_down(&e, "suppression read from the store");
            ports
                .suppressions
                .is_suppressed(&rec.tenant, &rec.recipient)
                .await
                .context("checking suppression in the store")?
        }
    };
    if suppressed {
        return Ok(vec![event(&rec, EventKind::Suppressed)]);
    }
    let Some(plan) = plan else {
        let reason = format!(
            "campaign {} is unknown or its template does not compile",
            rec.campaign
        );
        return Ok(vec![event(&rec, EventKind::Rejected { reason })]);
    };
    if let Some(reason) = &plan.refused {
        return Ok(vec![event(
            &rec,
            EventKind::Rejected {
                reason: reason.clone(),
            },
        )]);
    }
    let recipient = Recipient {
        email: rec.recipient.clone(),
        vars: rec.vars.clone(),
    };
    let rendered = match settings.renderer.render(plan.clone(), recipient).await {
        Ok(r) => r,
        Err(reason) => {
            return Ok(vec![event(&rec, EventKind::Rejected { reason })]);
        }
    };
    let campaign = &plan.campaign;
    let composed = match settings.composer.compose_as(
        &rec.tenant,
        campaign,
        rec.message_id,
        &rec.recipient,
        &rendered,
        &plan.own,
    ) {
        Ok(c) => c,
        Err(e) => {
            // A broken key or codec is the operator's to fix; the message is refused
            // with the reason rather than retried forever.
            return Ok(vec![event(
                &rec,
                EventKind::Rejected {
                    reason: format!("composing the message failed: {e:#}"),
                },
            )]);
        }
    };

    let key = format!("send:{}", rec.message_id);
    let ttl = settings.idempotency_ttl;
    loop {
        let claim = match hot.claim(&key, Timestamp::now(), ttl).await {
            Ok(c) => c,
            Err(e) => {
                // Sending goes on without the claim: a replay after a crash during
                // the outage may send this message again (stored offsets still bound it).
                hot_down(&e, "sending without idempotency claims");
                metrics::counter!("maily_sender_unclaimed_total").increment(1);
                break;
            }
        };
        match claim {
            Claim::Acquired => break,
            Claim::Done { outcome } => {
                let recorded: Recorded = serde_json::from_str(&outcome)
                    .with_context(|| format!("recorded outcome of {key} is unreadable"))?;
                metrics::counter!("maily_sender_replayed_total").increment(1);
                return Ok(replay(&rec, recorded));
            }
            Claim::InFlight { since, mine } => {
                // Another process's claim, while this one holds the partition's lease:
                // the claimant lost the partition (killed, or paused past its lease),
                // so its claim is taken over now rather than after the timeout. Our
                // own claim is an earlier actor's of this process, whose delivery may
                // still be running: wait for it.
                let fenced = !mine && lease.is_some();
                if fenced || Timestamp::now().since(since) > settings.in_flight_timeout {
                    // The claimant died mid-delivery; this is the documented window.
                    if fenced {
                        metrics::counter!("maily_sender_claims_taken_over_total").increment(1);
                    }
                    if let Err(e) = hot.release(&key).await {
                        hot_down(&e, "sending without idempotency claims");
                        break;
                    }
                } else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    let message = OutboundMessage {
        message_id: rec.message_id,
        tenant: rec.tenant.clone(),
        mail_from: composed.mail_from,
        rcpt_to: rec.recipient.clone(),
        data: composed.data.into(),
        guard: lease
            .as_ref()
            .map(|(g, _)| Arc::clone(g) as Arc<dyn maily_engine::ports::SendGuard>),
    };
    let started = Instant::now();
    let outcome = ports.transport.deliver(&message).await;
    metrics::histogram!("maily_delivery_seconds").record(started.elapsed().as_secs_f64());
    let domain = rec.recipient.domain().to_string();
    match outcome {
        DeliveryOutcome::Delivered { .. } => {
            complete(&ports, &key, &Recorded::Delivered, ttl).await?;
            metrics::counter!("maily_deliveries_total", "result" => "delivered", "domain" => domain).increment(1);
            Ok(replay(&rec, Recorded::Delivered))
        }
        DeliveryOutcome::Permanent { reply } => {
            let recorded = Recorded::Bounced { reply };
            complete(&ports, &key, &recorded, ttl).await?;
            metrics::counter!("maily_deliveries_total", "result" => "bounced", "domain" => domain)
                .increment(1);
            Ok(replay(&rec, recorded))
        }
        DeliveryOutcome::Transient { reply, error } => {
            if let Err(e) = hot.release(&key).await {
                // The claim expires on its own; until then a retry waits for it.
                hot_down(&e, "claim left to expire");
            }
            metrics::counter!("maily_deliveries_total", "result" => "deferred", "domain" => domain)
                .increment(1);
            let text = reply.map(|r| r.to_string()).unwrap_or(error);
            let jitter = jitter_unit(&rec);
            Ok(defer(&settings, rec, text, Timestamp::now(), jitter))
        }
    }
}

async fn complete(
    ports: &SenderPorts,
    key: &str,
    recorded: &Recorded,
    ttl: Duration,
) -> anyhow::Result<()> {
    let outcome = serde_json::to_string(recorded).context("encoding outcome")?;
    match ports.hot.complete(key, &outcome, ttl).await {
        Ok(()) => hot_ok(),
        // The delivery happened and its events are emitted; only the replay guard
        // is missing until the claim expires.
        Err(e) => hot_down(&e, "outcome not recorded in hot state"),
    }
    Ok(())
}

/// A number in [0, 1) that is fixed for a message and attempt but spread evenly over
/// messages: the retry jitter, deterministic so a replayed batch schedules the same.
fn jitter_unit(rec: &SendRecord) -> f64 {
    use std::hash::{BuildHasher as _, BuildHasherDefault, DefaultHasher};
    let hash = BuildHasherDefault::<DefaultHasher>::default()
        .hash_one((rec.message_id.as_bytes(), rec.attempt));
    (hash >> 11) as f64 / (1u64 << 53) as f64
}

/// The wait before retry `attempt` (1 for the first failure): the attempt's tier
/// delay stretched by `jitter` (in [0, 1)) times the configured fraction.
fn retry_delay(settings: &SenderSettings, attempt: u32, jitter: f64) -> Option<(usize, Duration)> {
    let last = settings.retry_tiers.len().checked_sub(1)?;
    let tier = (attempt.max(1) as usize - 1).min(last);
    let base = settings.retry_tiers[tier];
    let stretch = settings.retry_jitter.clamp(0.0, 1.0) * jitter.clamp(0.0, 1.0);
    Some((tier, base.mul_f64(1.0 + stretch)))
}

/// A temporary failure: retry through the delay tiers, or expire.
///
/// A tier's topic is read in order and waits at the first record not yet due, so the
/// jitter also bounds how long a record can wait behind an earlier one of its tier.
fn defer(
    settings: &SenderSettings,
    rec: SendRecord,
    reply: String,
    now: Timestamp,
    jitter: f64,
) -> Vec<Output> {
    let mut out = vec![
        event(&rec, EventKind::Injected),
        event(
            &rec,
            EventKind::Deferred {
                attempt: rec.attempt,
                reply,
            },
        ),
    ];
    let delay = retry_delay(settings, rec.attempt, jitter);
    let too_old = delay.is_none_or(|(_, d)| now.plus(d).since(rec.accepted_at) > settings.max_age);
    if rec.attempt >= settings.max_attempts || too_old {
        out.push(event(
            &rec,
            EventKind::Expired {
                attempts: rec.attempt,
            },
        ));
    } else if let Some((tier, delay)) = delay {
        out.push(Output::Retry(tier, rec.retry(now.plus(delay))));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use maily_engine::{EmailAddress, MessageId, TenantId};

    #[test]
    fn a_campaign_renders_in_place_only_while_every_render_was_quick() {
        let b = Budget::default();
        for _ in 0..Budget::PROBE - 1 {
            b.timed(Duration::from_micros(5));
        }
        assert!(!b.quick(), "not enough renders measured");
        b.timed(Duration::from_micros(5));
        assert!(b.quick());
        b.timed(Budget::QUICK * 2);
        assert!(!b.quick(), "one slow render sends it back to the pool");
        for _ in 0..100 {
            b.timed(Duration::from_micros(1));
        }
        assert!(!b.quick(), "for good");
    }

    #[test]
    fn a_budget_trips_only_when_most_renders_run_over() {
        let b = Budget::default();
        for _ in 0..Budget::TRIP_AFTER - 1 {
            b.record(true);
        }
        assert_eq!(b.tripped(), None, "fewer than TRIP_AFTER");
        b.record(true);
        assert!(b.tripped().unwrap().contains("10 of 10 renders"));

        // Mostly good renders with a few costly recipients: never trips.
        let mixed = Budget::default();
        for i in 0..100 {
            mixed.record(i % 4 == 0);
        }
        assert_eq!(mixed.tripped(), None);
    }

    fn settings() -> SenderSettings {
        SenderSettings {
            batch_size: 1,
            concurrency: 1,
            flush_interval: Duration::from_millis(100),
            pacer: Arc::default(),
            idle_wait: Duration::ZERO,
            retry_tiers: vec![
                Duration::from_secs(60),
                Duration::from_secs(240),
                Duration::from_secs(960),
            ],
            retry_jitter: 0.1,
            max_attempts: 6,
            max_age: Duration::from_secs(3600),
            idempotency_ttl: Duration::from_secs(60),
            in_flight_timeout: Duration::from_secs(60),
            composer: Composer::default(),
            renderer: Arc::new(RenderPool::per_core()),
            verified_domains_only: false,
        }
    }

    fn record(attempt: u32, accepted_at: Timestamp) -> SendRecord {
        SendRecord {
            message_id: MessageId::new(),
            tenant: TenantId::parse("acme").unwrap(),
            campaign: CampaignId::new(),
            recipient: EmailAddress::parse("a@b.test").unwrap(),
            vars: Default::default(),
            attempt,
            accepted_at,
            not_before: None,
        }
    }

    /// What `defer` decided: the retry's tier and due time, or expiry.
    fn decision(out: &[Output]) -> Result<(usize, u32, Timestamp), u32> {
        for o in out {
            match o {
                Output::Retry(tier, r) => return Ok((*tier, r.attempt, r.not_before.unwrap())),
                Output::Event(EventRecord {
                    kind: EventKind::Expired { attempts },
                    ..
                }) => return Err(*attempts),
                _ => {}
            }
        }
        panic!("neither retried nor expired")
    }

    #[test]
    fn backoff_grows_through_the_tiers_with_bounded_jitter() {
        let s = settings();
        let t0 = Timestamp(1_000_000);
        // attempt -> (tier, delay) at the extremes of the jitter.
        let cases = [
            (1, 0, 60_000),
            (2, 1, 240_000),
            (3, 2, 960_000),
            (5, 2, 960_000),
        ];
        for (attempt, tier, delay_ms) in cases {
            let out = defer(&s, record(attempt, t0), "451".into(), t0, 0.0);
            assert_eq!(
                decision(&out),
                Ok((tier, attempt + 1, Timestamp(t0.0 + delay_ms)))
            );
            let out = defer(&s, record(attempt, t0), "451".into(), t0, 0.5);
            let stretched = delay_ms + delay_ms / 20;
            assert_eq!(
                decision(&out),
                Ok((tier, attempt + 1, Timestamp(t0.0 + stretched)))
            );
        }
        // The jitter of a message is fixed per attempt, spread over messages, in [0, 1).
        let rec = record(1, t0);
        assert_eq!(jitter_unit(&rec), jitter_unit(&rec.clone()));
        let units: Vec<f64> = (0..200).map(|_| jitter_unit(&record(1, t0))).collect();
        assert!(units.iter().all(|u| (0.0..1.0).contains(u)));
        assert!(units.iter().any(|u| *u < 0.3) && units.iter().any(|u| *u > 0.7));
    }

    #[test]
    fn a_message_expires_at_max_attempts_or_when_the_retry_would_pass_max_age() {
        let s = settings();
        let t0 = Timestamp(5_000_000);
        let out = defer(&s, record(6, t0), "451".into(), t0, 0.0);
        assert_eq!(decision(&out), Err(6));
        // Accepted 50 minutes ago: a 16-minute wait would pass the hour.
        let accepted = Timestamp(t0.0 - 50 * 60_000);
        assert_eq!(
            decision(&defer(&s, record(3, accepted), "451".into(), t0, 0.0)),
            Err(3)
        );
        // ...but a one-minute wait would not.
        assert!(decision(&defer(&s, record(1, accepted), "451".into(), t0, 0.0)).is_ok());
        // Every deferral reports the reply.
        let out = defer(&s, record(1, t0), "451 4.7.1 try later".into(), t0, 0.0);
        assert!(out.iter().any(|o| matches!(o, Output::Event(EventRecord {
            kind: EventKind::Deferred { attempt: 1, reply }, ..
        }) if reply == "451 4.7.1 try later")));
    }
}
