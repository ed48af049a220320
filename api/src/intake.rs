//! Campaign intake: create campaigns, stage their recipients, move them through their
//! life (schedule, start, pause, resume, cancel) and send single messages under
//! idempotency keys.
//!
//! Every row is checked on its own; a bad row is reported with its number and reason
//! and the rest are accepted. A row counts as accepted only once the store holds it
//! (staged recipients) or the log has acked it (messages enqueued directly).
//!
//! Staged recipients wait in the store until their campaign runs; the leader's launcher
//! (`maily_actors::launcher`) moves them into the send topic. Their message ids are
//! fixed at staging, so launching a row twice still sends it once.

use maily_engine::ports::{
    CampaignStore, DispatchStore, EventLog, IdempotentSend, KeyedPayload, LogError, Store,
    StoreError, TenantAccess, Transition,
};
use maily_engine::records::{self, SendRecord, topics};
use maily_engine::template::{CompiledTemplate, Template, TemplateError};
use maily_engine::{
    Campaign, CampaignId, CampaignState, CampaignStatus, EmailAddress, MessageId, StagedRecipient,
    TenantId, Timestamp,
};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// Records produced per call to the log.
pub const CHUNK: usize = 1000;
/// Longest campaign name accepted, in characters.
pub const MAX_NAME_CHARS: usize = 200;
/// Longest idempotency key accepted, in bytes (printable ASCII only).
pub const MAX_KEY_BYTES: usize = 200;
/// Most messages in one transactional send.
pub const MAX_BATCH: usize = 1000;

/// Why a request as a whole was refused.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    #[error("name {0}")]
    Name(String),
    #[error("from address: {0}")]
    From(#[from] maily_engine::AddressError),
    #[error("from name holds a line break")]
    FromNameLineBreak,
    /// The From address's domain is not a verified sending domain of the tenant.
    #[error("from address: {reason}")]
    FromDomain { domain: String, reason: String },
    #[error("template: {0}")]
    Template(#[from] TemplateError),
    #[error("campaign {0} does not exist")]
    UnknownCampaign(CampaignId),
    /// The campaign's status does not allow the action.
    #[error("campaign {campaign} is {status}: cannot {action} it (only when {allowed})")]
    WrongStatus {
        campaign: CampaignId,
        status: CampaignStatus,
        action: &'static str,
        allowed: String,
    },
    #[error("schedule time {0} is not in the future")]
    ScheduleInPast(Timestamp),
    #[error("a send holds {0} messages; at most {MAX_BATCH} are accepted per call")]
    BatchTooLarge(usize),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("event log: {0}")]
    Log(#[from] LogError),
}

/// A rejected row: its 1-based number, what was given, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowError {
    pub row: u64,
    pub input: String,
    pub reason: String,
}

/// The result of an upload.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnqueueReport {
    pub accepted: u64,
    pub rejected: Vec<RowError>,
    /// Message ids of accepted rows, in row order.
    pub message_ids: Vec<MessageId>,
}

/// A recipient row as uploaded: an unparsed address and its variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub email: String,
    pub vars: BTreeMap<String, String>,
}

/// A change of a campaign's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Start by itself at the given time (from draft, or to move a schedule).
    Schedule(Timestamp),
    /// Start now (from draft or scheduled).
    Start,
    /// Hold the campaign's messages (while running).
    Pause,
    /// Send again (while paused).
    Resume,
    /// Stop for good (anything but cancelled).
    Cancel,
}

impl Command {
    /// What the command is called in errors.
    pub fn action(self) -> &'static str {
        match self {
            Command::Schedule(_) => "schedule",
            Command::Start => "start",
            Command::Pause => "pause",
            Command::Resume => "resume",
            Command::Cancel => "cancel",
        }
    }

    /// The statuses the command applies to, and the status it leads to.
    pub fn transition(self) -> (&'static [CampaignStatus], CampaignStatus) {
        use CampaignStatus::*;
        match self {
            Command::Schedule(_) => (&[Draft, Scheduled], Scheduled),
            Command::Start => (&[Draft, Scheduled], Running),
            Command::Pause => (&[Running], Paused),
            Command::Resume => (&[Paused], Running),
            Command::Cancel => (&[Draft, Scheduled, Running, Paused], Cancelled),
        }
    }
}

/// A message sent on its own under the caller's idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyedMessage {
    /// 1 to [`MAX_KEY_BYTES`] printable ASCII characters, unique per tenant.
    pub key: String,
    pub email: String,
    pub vars: BTreeMap<String, String>,
}

/// What became of one message of a transactional send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendOutcome {
    /// New key: the message is enqueued.
    Accepted { message_id: MessageId },
    /// The key was used before for the same message: nothing new is sent; the id is
    /// the first request's.
    Repeated { message_id: MessageId },
    /// Refused, with the reason (the others of the batch are unaffected).
    Rejected { reason: String },
}

/// Creates campaigns and enqueues their recipients.
pub struct Intake {
    log: Arc<dyn EventLog>,
    /// Campaigns.
    campaigns: Arc<dyn CampaignStore>,
    /// Their staged recipients and keyed sends.
    dispatch: Arc<dyn DispatchStore>,
    /// The tenants' sending domains a From is checked against.
    access: Arc<dyn TenantAccess>,
    /// Whether a campaign's From domain must be a verified sending domain of its
    /// tenant (or below one).
    verified_domains_only: bool,
}

/// A campaign to create.
#[derive(Debug, Clone)]
pub struct NewCampaign {
    pub tenant: TenantId,
    pub name: String,
    pub from: String,
    pub from_name: Option<String>,
    pub template: Template,
}

impl Intake {
    /// Intake over the given log and store; campaigns send only From their tenant's
    /// verified domains.
    pub fn new(log: Arc<dyn EventLog>, store: Arc<dyn Store>) -> Self {
        Self::on_ports(log, store.clone(), store.clone(), store)
    }

    /// Intake over the three roles of the store it uses.
    pub fn on_ports(
        log: Arc<dyn EventLog>,
        campaigns: Arc<dyn CampaignStore>,
        dispatch: Arc<dyn DispatchStore>,
        access: Arc<dyn TenantAccess>,
    ) -> Self {
        Intake {
            log,
            campaigns,
            dispatch,
            access,
            verified_domains_only: true,
        }
    }

    /// Lets campaigns send From any domain (a single-tenant installation that does
    /// not register its domains: `[intake] verified_domains_only = false`).
    pub fn any_sender_domain(mut self) -> Self {
        self.verified_domains_only = false;
        self
    }

    /// Refuses a From domain that is not a verified sending domain of `tenant`, or
    /// below one.
    async fn check_sender(
        &self,
        tenant: &TenantId,
        from: &EmailAddress,
    ) -> Result<(), IntakeError> {
        if !self.verified_domains_only {
            return Ok(());
        }
        let status =
            maily_engine::ports::SenderDomain::of(self.access.as_ref(), tenant, from.domain())
                .await?;
        match status.refusal(tenant, from.domain()) {
            None => Ok(()),
            Some(reason) => Err(IntakeError::FromDomain {
                domain: from.domain().to_string(),
                reason,
            }),
        }
    }

    /// Validates and stores a campaign.
    pub async fn create_campaign(&self, new: NewCampaign) -> Result<Campaign, IntakeError> {
        let campaign = self.check(new)?;
        self.check_sender(&campaign.tenant, &campaign.from).await?;
        let state = CampaignState {
            status: CampaignStatus::Draft,
            scheduled_at: None,
            updated_at: Timestamp::now(),
        };
        self.campaigns.create_campaign(&campaign, &state).await?;
        Ok(campaign)
    }

    /// Validates a campaign's contents into a campaign with a fresh id.
    fn check(&self, new: NewCampaign) -> Result<Campaign, IntakeError> {
        let name = new.name.trim();
        if name.is_empty() {
            return Err(IntakeError::Name("is empty".into()));
        }
        if name.chars().count() > MAX_NAME_CHARS {
            return Err(IntakeError::Name(format!(
                "is longer than {MAX_NAME_CHARS} characters"
            )));
        }
        if name.chars().any(char::is_control) {
            return Err(IntakeError::Name("holds control characters".into()));
        }
        let name = name.to_string();
        let from = EmailAddress::parse(&new.from)?;
        if new
            .from_name
            .as_deref()
            .is_some_and(|n| n.contains(['\r', '\n']))
        {
            return Err(IntakeError::FromNameLineBreak);
        }
        CompiledTemplate::compile(&new.template)?;
        Ok(Campaign {
            from_name: new.from_name,
            ..Campaign::new(CampaignId::new(), new.tenant, name, from, new.template)
        })
    }

    /// Validates and stores new contents for a campaign (name, sender, template); its
    /// id and tenant stay. A cancelled campaign cannot change.
    pub async fn update_campaign(
        &self,
        id: CampaignId,
        new: NewCampaign,
    ) -> Result<Campaign, IntakeError> {
        let state = self.state(id).await?;
        if state.status == CampaignStatus::Cancelled {
            return Err(IntakeError::WrongStatus {
                campaign: id,
                status: state.status,
                action: "update",
                allowed: "not cancelled".into(),
            });
        }
        let checked = self.check(new)?;
        self.check_sender(&checked.tenant, &checked.from).await?;
        let campaign = Campaign { id, ..checked };
        if !self.campaigns.update_campaign(&campaign).await? {
            return Err(IntakeError::UnknownCampaign(id));
        }
        Ok(campaign)
    }

    /// A campaign's current state.
    pub async fn state(&self, id: CampaignId) -> Result<CampaignState, IntakeError> {
        self.campaigns
            .campaign_state(id)
            .await?
            .ok_or(IntakeError::UnknownCampaign(id))
    }

    /// Applies a status change, atomically: of several callers racing, one wins and
    /// the others see the status it left.
    pub async fn control(
        &self,
        id: CampaignId,
        command: Command,
        now: Timestamp,
    ) -> Result<CampaignState, IntakeError> {
        let at = match command {
            Command::Schedule(at) if at <= now => return Err(IntakeError::ScheduleInPast(at)),
            Command::Schedule(at) => Some(at),
            _ => None,
        };
        let (from, to) = command.transition();
        match self
            .campaigns
            .transition_campaign(id, from, to, at, now)
            .await?
        {
            Transition::Done(state) => {
                tracing::info!(campaign = %id, status = %state.status, "campaign status changed");
                Ok(state)
            }
            Transition::Refused(state) => Err(IntakeError::WrongStatus {
                campaign: id,
                status: state.status,
                action: command.action(),
                allowed: from
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(" or "),
            }),
            Transition::Unknown => Err(IntakeError::UnknownCampaign(id)),
        }
    }

    /// Stages rows of an upload whose first row is number `first_row`: valid rows wait
    /// in the store until the campaign runs (at once, if it runs already); invalid ones
    /// are reported. Nothing is staged for a cancelled campaign.
    ///
    /// On an error, the chunks of [`CHUNK`] rows stored before it stay accepted; callers
    /// that must know exactly what was accepted pass at most [`CHUNK`] rows per call.
    pub async fn stage_from(
        &self,
        campaign: &Campaign,
        first_row: u64,
        rows: impl IntoIterator<Item = Row>,
    ) -> Result<EnqueueReport, IntakeError> {
        let state = self.state(campaign.id).await?;
        if state.status == CampaignStatus::Cancelled {
            return Err(IntakeError::WrongStatus {
                campaign: campaign.id,
                status: state.status,
                action: "add recipients to",
                allowed: "not cancelled".into(),
            });
        }
        let mut report = EnqueueReport::default();
        let mut chunk = Vec::with_capacity(CHUNK);
        for (i, row) in rows.into_iter().enumerate() {
            match EmailAddress::parse(&row.email) {
                Ok(email) => chunk.push(StagedRecipient {
                    message_id: MessageId::new(),
                    email,
                    vars: row.vars,
                }),
                Err(e) => report.rejected.push(RowError {
                    row: first_row + i as u64,
                    input: row.email.chars().take(200).collect(),
                    reason: format!("invalid address: {e}"),
                }),
            }
            if chunk.len() == CHUNK {
                self.stage_chunk(campaign.id, &mut chunk, &mut report)
                    .await?;
            }
        }
        self.stage_chunk(campaign.id, &mut chunk, &mut report)
            .await?;
        Ok(report)
    }

    async fn stage_chunk(
        &self,
        campaign: CampaignId,
        chunk: &mut Vec<StagedRecipient>,
        report: &mut EnqueueReport,
    ) -> Result<(), IntakeError> {
        if chunk.is_empty() {
            return Ok(());
        }
        self.dispatch.stage_recipients(campaign, chunk).await?;
        report.accepted += chunk.len() as u64;
        report
            .message_ids
            .extend(chunk.drain(..).map(|r| r.message_id));
        Ok(())
    }

    /// Sends single messages of a campaign now, each under the caller's idempotency
    /// key: a key seen before (in this call or an earlier one) sends nothing new and
    /// answers the first message id; a key reused for a different message is refused.
    /// The messages go out whatever the campaign's status, except that a paused
    /// campaign holds them and a cancelled one refuses the call.
    pub async fn send_keyed(
        &self,
        campaign: &Campaign,
        messages: Vec<KeyedMessage>,
    ) -> Result<Vec<SendOutcome>, IntakeError> {
        if messages.len() > MAX_BATCH {
            return Err(IntakeError::BatchTooLarge(messages.len()));
        }
        let state = self.state(campaign.id).await?;
        if state.status == CampaignStatus::Cancelled {
            return Err(IntakeError::WrongStatus {
                campaign: campaign.id,
                status: state.status,
                action: "send with",
                allowed: "not cancelled".into(),
            });
        }
        let now = Timestamp::now();
        let mut outcomes: Vec<Option<SendOutcome>> = vec![None; messages.len()];
        let mut asked: Vec<(usize, IdempotentSend, BTreeMap<String, String>)> = Vec::new();
        let mut first_of_key: HashMap<&str, usize> = HashMap::new();
        let mut repeats_in_call: Vec<(usize, usize)> = Vec::new();
        for (i, m) in messages.iter().enumerate() {
            if let Err(reason) = check_key(&m.key) {
                outcomes[i] = Some(SendOutcome::Rejected { reason });
                continue;
            }
            let email = match EmailAddress::parse(&m.email) {
                Ok(e) => e,
                Err(e) => {
                    outcomes[i] = Some(SendOutcome::Rejected {
                        reason: format!("invalid address: {e}"),
                    });
                    continue;
                }
            };
            if let Some(&j) = first_of_key.get(m.key.as_str()) {
                repeats_in_call.push((i, j));
                continue;
            }
            first_of_key.insert(&m.key, asked.len());
            asked.push((
                i,
                IdempotentSend {
                    tenant: campaign.tenant.clone(),
                    key: m.key.clone(),
                    campaign: campaign.id,
                    message_id: MessageId::new(),
                    fingerprint: fingerprint(campaign.id, &email, &m.vars),
                    email,
                    accepted_at: now,
                    enqueued: false,
                },
                m.vars.clone(),
            ));
        }
        let wanted: Vec<IdempotentSend> = asked.iter().map(|(_, s, _)| s.clone()).collect();
        let stored = self.dispatch.reserve_sends(&wanted).await?;
        let key = campaign.id.to_string().into_bytes();
        let mut produce = Vec::new();
        let mut produced_keys = Vec::new();
        for ((i, ours, vars), first) in asked.iter().zip(stored) {
            let outcome = if first.fingerprint != ours.fingerprint {
                SendOutcome::Rejected {
                    reason: format!(
                        "idempotency key {:?} was used for a different message",
                        ours.key
                    ),
                }
            } else {
                if !first.enqueued {
                    // New, or stored by a request that stopped before the log took it:
                    // (re)enqueue under the stored id, which the sender sends once.
                    let record = SendRecord::first(
                        first.message_id,
                        campaign.tenant.clone(),
                        campaign.id,
                        first.email.clone(),
                        vars.clone(),
                        first.accepted_at,
                    );
                    produce.push((key.clone(), records::encode(&record)));
                    produced_keys.push(first.key.clone());
                }
                if first.message_id == ours.message_id {
                    SendOutcome::Accepted {
                        message_id: first.message_id,
                    }
                } else {
                    SendOutcome::Repeated {
                        message_id: first.message_id,
                    }
                }
            };
            outcomes[*i] = Some(outcome);
        }
        if !produce.is_empty() {
            self.log.produce(topics::SEND, packed(produce)).await?;
            self.dispatch
                .mark_sends_enqueued(&campaign.tenant, &produced_keys)
                .await?;
        }
        for (i, j) in repeats_in_call {
            let first = asked[j].0;
            outcomes[i] = Some(match &outcomes[first] {
                Some(
                    SendOutcome::Accepted { message_id } | SendOutcome::Repeated { message_id },
                ) => {
                    if fingerprint_of(campaign.id, &messages[i]) == asked[j].1.fingerprint {
                        SendOutcome::Repeated {
                            message_id: *message_id,
                        }
                    } else {
                        SendOutcome::Rejected {
                            reason: format!(
                                "idempotency key {:?} was used for a different message",
                                messages[i].key
                            ),
                        }
                    }
                }
                other => other.clone().unwrap_or(SendOutcome::Rejected {
                    reason: "refused with its first use in this call".into(),
                }),
            });
        }
        Ok(outcomes
            .into_iter()
            .map(|o| {
                o.unwrap_or(SendOutcome::Rejected {
                    reason: "not processed".into(),
                })
            })
            .collect())
    }

    /// Accepts rows into the send topic; invalid addresses are reported per row.
    pub async fn enqueue(
        &self,
        campaign: &Campaign,
        rows: impl IntoIterator<Item = Row>,
    ) -> Result<EnqueueReport, IntakeError> {
        self.enqueue_from(campaign, 1, rows).await
    }

    /// Like [`Intake::enqueue`] for a part of a longer upload whose first row is number
    /// `first_row`, so reported row numbers count across the whole upload.
    ///
    /// On an error, the rows of the chunks produced before it (of [`CHUNK`] rows each)
    /// are accepted already; callers that must know exactly what was accepted pass at
    /// most [`CHUNK`] rows per call.
    pub async fn enqueue_from(
        &self,
        campaign: &Campaign,
        first_row: u64,
        rows: impl IntoIterator<Item = Row>,
    ) -> Result<EnqueueReport, IntakeError> {
        let mut report = EnqueueReport::default();
        let key = campaign.id.to_string().into_bytes();
        let now = Timestamp::now();
        let mut chunk = Vec::with_capacity(CHUNK);
        let mut ids = Vec::with_capacity(CHUNK);
        for (i, row) in rows.into_iter().enumerate() {
            let recipient = match EmailAddress::parse(&row.email) {
                Ok(a) => a,
                Err(e) => {
                    report.rejected.push(RowError {
                        row: first_row + i as u64,
                        input: row.email.chars().take(200).collect(),
                        reason: format!("invalid address: {e}"),
                    });
                    continue;
                }
            };
            let record = SendRecord::first(
                MessageId::new(),
                campaign.tenant.clone(),
                campaign.id,
                recipient,
                row.vars,
                now,
            );
            ids.push(record.message_id);
            chunk.push((key.clone(), records::encode(&record)));
            if chunk.len() == CHUNK {
                self.flush(&mut chunk, &mut ids, &mut report).await?;
            }
        }
        self.flush(&mut chunk, &mut ids, &mut report).await?;
        Ok(report)
    }

    async fn flush(
        &self,
        chunk: &mut Vec<KeyedPayload>,
        ids: &mut Vec<MessageId>,
        report: &mut EnqueueReport,
    ) -> Result<(), IntakeError> {
        if chunk.is_empty() {
            return Ok(());
        }
        let n = chunk.len() as u64;
        self.log
            .produce(topics::SEND, packed(std::mem::take(chunk)))
            .await?;
        report.accepted += n;
        report.message_ids.append(ids);
        Ok(())
    }
}

/// Payloads of one key packed into as few records as fit (see [`records::pack`]).
fn packed(payloads: Vec<KeyedPayload>) -> Vec<KeyedPayload> {
    let mut by_key: Vec<(Vec<u8>, Vec<Vec<u8>>)> = Vec::new();
    for (key, payload) in payloads {
        match by_key.last_mut() {
            Some((k, group)) if *k == key => group.push(payload),
            _ => by_key.push((key, vec![payload])),
        }
    }
    by_key
        .into_iter()
        .flat_map(|(key, group)| records::pack_keyed(&key, group, records::SEND_ITEMS_PER_RECORD))
        .collect()
}

/// Why an idempotency key is refused, if it is.
fn check_key(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("idempotency key is empty".into());
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(format!(
            "idempotency key is longer than {MAX_KEY_BYTES} bytes"
        ));
    }
    if !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("idempotency key holds characters other than printable ASCII".into());
    }
    Ok(())
}

/// What a keyed message asks for, hashed: campaign, recipient, variables, each
/// length-prefixed so no two different messages share an encoding.
fn fingerprint(
    campaign: CampaignId,
    email: &EmailAddress,
    vars: &BTreeMap<String, String>,
) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(campaign.as_bytes());
    let mut field = |b: &[u8]| {
        h.update((b.len() as u64).to_be_bytes());
        h.update(b);
    };
    field(email.as_str().as_bytes());
    for (k, v) in vars {
        field(k.as_bytes());
        field(v.as_bytes());
    }
    h.finalize().into()
}

/// The fingerprint of a message as given; an unparsable address has none that matches.
fn fingerprint_of(campaign: CampaignId, m: &KeyedMessage) -> [u8; 32] {
    match EmailAddress::parse(&m.email) {
        Ok(email) => fingerprint(campaign, &email, &m.vars),
        Err(_) => [0; 32],
    }
}
