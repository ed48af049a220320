//! Campaign intake: create campaigns and accept recipients into the send topic.
//!
//! Every row is checked on its own; a bad row is reported with its number and reason
//! and the rest are accepted. A row counts as accepted only once the log has acked it.

use maily_engine::ports::{EventLog, KeyedPayload, LogError, Store, StoreError};
use maily_engine::records::{self, SendRecord, topics};
use maily_engine::template::{CompiledTemplate, Template, TemplateError};
use maily_engine::{Campaign, CampaignId, EmailAddress, MessageId, TenantId, Timestamp};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Records produced per call to the log.
pub const CHUNK: usize = 1000;
/// Longest campaign name accepted, in characters.
pub const MAX_NAME_CHARS: usize = 200;

/// Why a request as a whole was refused.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    #[error("name {0}")]
    Name(String),
    #[error("from address: {0}")]
    From(#[from] maily_engine::AddressError),
    #[error("from name holds a line break")]
    FromNameLineBreak,
    #[error("template: {0}")]
    Template(#[from] TemplateError),
    #[error("campaign {0} does not exist")]
    UnknownCampaign(CampaignId),
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

/// Creates campaigns and enqueues their recipients.
pub struct Intake {
    log: Arc<dyn EventLog>,
    store: Arc<dyn Store>,
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
    /// Intake over the given log and store.
    pub fn new(log: Arc<dyn EventLog>, store: Arc<dyn Store>) -> Self {
        Intake { log, store }
    }

    /// Validates and stores a campaign.
    pub async fn create_campaign(&self, new: NewCampaign) -> Result<Campaign, IntakeError> {
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
        let campaign = Campaign {
            id: CampaignId::new(),
            tenant: new.tenant,
            name,
            from,
            from_name: new.from_name,
            template: new.template,
        };
        self.store.insert_campaign(&campaign).await?;
        Ok(campaign)
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
            let record = SendRecord {
                message_id: MessageId::new(),
                tenant: campaign.tenant.clone(),
                campaign: campaign.id,
                recipient,
                vars: row.vars,
                attempt: 1,
                accepted_at: now,
                not_before: None,
            };
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
            .produce(topics::SEND, std::mem::take(chunk))
            .await?;
        report.accepted += n;
        report.message_ids.append(ids);
        Ok(())
    }
}
