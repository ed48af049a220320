//! The sender: consumes a partition of the send topic and its retry tiers, renders,
//! suppresses and delivers each message, and emits what happened.
//!
//! Idempotency: each message's key is claimed in hot state before delivery and marked
//! with the outcome after, so a replay after a crash re-emits the recorded outcome
//! instead of sending again. The window left is between the server's 250 and the mark
//! (one hot-state write). A claim found in flight that another process made is taken
//! over at once (that process no longer holds the partition's lease, which this one
//! does); one of this process's own (an earlier actor's, whose delivery may still be
//! running) is waited for and taken over only once older than `in_flight_timeout`.

use crate::common::{
    Cursor, Feed, Outbox, Ports, dead_letter_item, decode_items_or_dead_letter, hot_down, hot_ok,
    save_positions,
};
use crate::compose::{Composer, Own};
use crate::faults::{FaultPoint, Faults};
use crate::ownership::LeaseGuard;
use crate::worker::{Step, Worker};
use anyhow::Context as _;
use futures::StreamExt as _;
use maily_engine::ports::{
    CampaignStore, Claim, DeliveryOutcome, DispatchStore, Fence, HotState, OutboundMessage,
    SenderDomain, StoreError, SuppressionStore, TenantAccess, Transport,
};
use maily_engine::records::{self, EventRecord, InboundRecord, SendRecord, topics};
use maily_engine::reply::SmtpReply;
use maily_engine::template::{CompiledTemplate, RenderError, Rendered};
use maily_engine::{
    Campaign, CampaignId, CampaignStatus, EventKind, MessageId, Recipient, StagedRecipient,
    Timestamp,
};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::debug;

/// Tuning of the sender.
#[derive(Debug, Clone)]
pub struct SenderSettings {
    pub batch_size: usize,
    /// Deliveries in flight per partition.
    pub concurrency: usize,
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
/// emits, its positions), the campaigns it sends, the tenants' sending domains, the
/// suppression list, hot state (idempotency claims, cached suppressions, rate
/// buckets) and the transport.
#[derive(Clone)]
pub struct SenderPorts {
    pub feed: Feed,
    pub campaigns: Arc<dyn CampaignStore>,
    /// Where a paused campaign's messages go back to, staged.
    pub dispatch: Arc<dyn DispatchStore>,
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
            access: ports.store.clone(),
            suppressions: ports.store.clone(),
            hot: ports.hot.clone(),
            transport: ports.transport.clone(),
        }
    }
}

/// The sender of one partition.
pub struct SenderWorker {
    ports: SenderPorts,
    settings: Arc<SenderSettings>,
    faults: Arc<Faults>,
    partition: u32,
    send: Option<Cursor>,
    retries: Vec<Cursor>,
    plans: HashMap<CampaignId, (Instant, Option<Arc<Plan>>)>,
    fence: Option<Fence>,
    guard: Option<Arc<LeaseGuard>>,
    /// Messages per send record lately, to size fetches to a batch.
    per_record: usize,
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
            send: None,
            retries: Vec::new(),
            plans: HashMap::new(),
            fence,
            guard,
            // Assume full records until some are seen: a first fetch never overshoots.
            per_record: records::SEND_ITEMS_PER_RECORD,
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
}

impl Worker for SenderWorker {
    type Command = ();
    type Reply = ();

    fn name(&self) -> String {
        format!("sender/{}", self.partition)
    }

    async fn load(&mut self) -> anyhow::Result<()> {
        let p = [self.partition];
        self.send = Cursor::load(&self.ports.feed, GROUP, topics::SEND, p)
            .await?
            .pop();
        self.retries.clear();
        for tier in 0..self.settings.retry_tiers.len() {
            let topic = topics::retry(tier);
            self.retries
                .extend(Cursor::load(&self.ports.feed, GROUP, &topic, p).await?);
        }
        Ok(())
    }

    async fn step(&mut self) -> anyhow::Result<Step> {
        let log = self.ports.feed.log.clone();
        let batch = self.settings.batch_size;
        let now = Timestamp::now();
        if let Some(guard) = &self.guard
            && !guard.valid_at(now)
        {
            // Our lease may have passed to another process: deliver nothing until
            // the ownership round renews it or stops us.
            metrics::counter!("maily_sender_lease_waits_total").increment(1);
            return Ok(Step::Idle(Duration::from_millis(100)));
        }
        let mut work: Vec<SendRecord> = Vec::new();
        // What each message's record was keyed by (its campaign's shard): what the
        // sender emits about it is keyed the same.
        let mut keys: HashMap<MessageId, Arc<[u8]>> = HashMap::new();

        // Due retries first; each tier is ordered by due time, so stop at the first
        // record that is not due yet (a record of several retries is due when its
        // last one is: they were deferred together, within the tier's jitter).
        for cursor in &mut self.retries {
            for record in cursor.fetch(log.as_ref(), batch, Duration::ZERO).await? {
                if work.len() >= batch {
                    break;
                }
                let items = records::decode_many::<SendRecord>("send", &record.payload);
                if items
                    .iter()
                    .flatten()
                    .any(|rec| rec.not_before.is_some_and(|t| t > now))
                {
                    break;
                }
                cursor.next = record.offset + 1;
                let key: Arc<[u8]> = record.key.as_slice().into();
                for item in items {
                    match item {
                        Ok(rec) => {
                            keys.insert(rec.message_id, key.clone());
                            work.push(rec)
                        }
                        Err(bad) => {
                            dead_letter_item(log.as_ref(), &cursor.topic, &record, &bad).await?
                        }
                    }
                }
            }
        }
        let send = self.send.as_mut().context("sender not loaded")?;
        let wait = if work.is_empty() {
            self.settings.idle_wait
        } else {
            Duration::ZERO
        };
        // A send record holds a chunk of recipients: read about a batch's worth.
        let room = batch.saturating_sub(work.len());
        let records = (room / self.per_record.max(1)).max(usize::from(room > 0));
        let fetched = if records > 0 {
            send.fetch(log.as_ref(), records, wait).await?
        } else {
            Vec::new()
        };
        let before = work.len();
        for record in &fetched {
            send.next = record.offset + 1;
            let key: Arc<[u8]> = record.key.as_slice().into();
            let items: Vec<SendRecord> =
                decode_items_or_dead_letter(log.as_ref(), topics::SEND, "send", record).await?;
            for rec in items {
                keys.insert(rec.message_id, key.clone());
                work.push(rec);
            }
        }
        if !fetched.is_empty() {
            self.per_record = (work.len() - before).div_ceil(fetched.len()).max(1);
        }
        if work.is_empty() {
            return Ok(Step::Busy);
        }

        let mut plans = HashMap::new();
        let mut statuses = HashMap::new();
        for rec in &work {
            if let Entry::Vacant(slot) = plans.entry(rec.campaign) {
                slot.insert(self.plan(rec.campaign).await?);
                let state = self
                    .ports
                    .campaigns
                    .campaign_state(rec.campaign)
                    .await
                    .with_context(|| format!("loading the status of campaign {}", rec.campaign))?;
                statuses.insert(rec.campaign, state.map(|s| s.status));
            }
        }
        // A paused campaign's messages go back to the store, staged, until it resumes;
        // a cancelled campaign's are not sent.
        let mut held: HashMap<CampaignId, Vec<StagedRecipient>> = HashMap::new();
        let mut cancelled = Vec::new();
        work.retain(|rec| match statuses.get(&rec.campaign).copied().flatten() {
            Some(CampaignStatus::Paused) => {
                held.entry(rec.campaign).or_default().push(StagedRecipient {
                    message_id: rec.message_id,
                    email: rec.recipient.clone(),
                    vars: rec.vars.clone(),
                });
                false
            }
            Some(CampaignStatus::Cancelled) => {
                cancelled.push(event(
                    rec,
                    EventKind::Rejected {
                        reason: "campaign cancelled".into(),
                    },
                ));
                false
            }
            _ => true,
        });
        for (campaign, rows) in &held {
            self.ports
                .dispatch
                .stage_recipients(*campaign, rows)
                .await
                .with_context(|| format!("holding messages of paused campaign {campaign}"))?;
            metrics::counter!("maily_sender_held_total").increment(rows.len() as u64);
        }
        let started = Instant::now();
        let n = work.len();
        let settings = self.settings.clone();
        let ports = self.ports.clone();
        let results: Vec<anyhow::Result<Vec<Output>>> = futures::stream::iter(work)
            .map(|rec| {
                let plan = plans.get(&rec.campaign).cloned().flatten();
                let ports = ports.clone();
                let settings = settings.clone();
                let lease = self.guard.clone().zip(self.fence.clone());
                async move {
                    tokio::spawn(process(ports, settings, plan, rec, lease))
                        .await
                        .context("delivery task panicked")?
                }
            })
            .buffer_unordered(self.settings.concurrency.max(1))
            .collect()
            .await;

        let mut outbox = Outbox::default();
        let key_of = |id: &MessageId| keys.get(id).map(|k| &k[..]).unwrap_or_default();
        for output in cancelled {
            if let Output::Event(e) = output {
                outbox.push_keyed(topics::EVENTS, key_of(&e.message_id), &e);
            }
        }
        for result in results {
            for output in result? {
                match output {
                    Output::Event(e) => {
                        outbox.push_keyed(topics::EVENTS, key_of(&e.message_id), &e)
                    }
                    Output::Inbound(i) => {
                        outbox.push_keyed(topics::INBOUND, key_of(&i.message_id()), &i)
                    }
                    Output::Retry(tier, r) => {
                        outbox.push_keyed(&topics::retry(tier), key_of(&r.message_id), &r)
                    }
                }
            }
        }
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
            .context("lease expired during the batch");
        }
        let retry_topics: Vec<String> =
            (0..settings.retry_tiers.len()).map(topics::retry).collect();
        let mut order = vec![topics::EVENTS, topics::INBOUND];
        order.extend(retry_topics.iter().map(String::as_str));
        outbox.send(log.as_ref(), &order).await?;
        let mut cursors: Vec<&Cursor> = self.retries.iter().collect();
        cursors.extend(self.send.as_ref());
        save_positions(&self.ports.feed, GROUP, &cursors, self.fence.as_ref()).await?;
        metrics::histogram!("maily_sender_batch_size").record(n as f64);
        debug!(
            partition = self.partition,
            messages = n,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "batch sent"
        );
        Ok(Step::Busy)
    }

    async fn command(&mut self, _: ()) -> anyhow::Result<()> {
        Ok(())
    }

    async fn shutdown(&mut self) -> anyhow::Result<()> {
        // Every step stores its offsets before it ends; nothing is pending here.
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
