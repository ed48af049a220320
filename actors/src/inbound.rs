//! The inbound side: reports (DSNs and ARF complaints) received by the listener are
//! parsed, attributed to the message they are about and published to the inbound
//! topic, where the bounce actor classifies them.
//!
//! Attribution, most trusted first: the VERP address the report was sent to (signed,
//! so it cannot be forged to suppress someone else's address); a VERP address among
//! the return paths the report quotes (`Return-Path` of the returned message, the
//! `Original-Mail-From` of a complaint); the engine's own headers in the returned
//! message (`X-Maily-Message-Id`, `X-Maily-Campaign`), whose campaign must exist. A
//! report that names none of these is accepted and counted, not published: nothing
//! can be done with it.
//!
//! The listener acknowledges a report only after the inbound topic accepted its
//! records, so a report is never lost between the two; when the log is down the
//! reporting server is asked to try again later.

use crate::common::Outbox;
use maily_engine::ports::{EventLog, Store};
use maily_engine::records::{InboundRecord, ReceivedReport, ReportKind, topics};
use maily_engine::report::{Action, Report, ReportError, parse_report};
use maily_engine::verp::{VerpCodec, VerpTag};
use maily_engine::{CampaignId, EmailAddress, MessageId, TenantId};
use std::sync::Arc;
use tracing::{debug, info};

/// Why an inbound message was not taken.
#[derive(Debug, thiserror::Error)]
pub enum InboundError {
    /// Not a report, or a broken one; the reporting server should not try again.
    #[error("not a usable report: {0}")]
    Malformed(#[from] ReportError),
    /// The report could not be stored; the reporting server should try again later.
    #[error("the report could not be stored: {0:#}")]
    Unavailable(anyhow::Error),
}

/// Why an address cannot receive reports here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecipientError {
    #[error("{0} is not a return path or complaint address of ours")]
    Unknown(String),
}

/// What became of a report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Records published to the inbound topic.
    pub published: usize,
    /// Recipients the report named that could not be tied to a message.
    pub unattributed: usize,
}

/// Parses, attributes and publishes reports.
pub struct InboundReports {
    log: Arc<dyn EventLog>,
    store: Arc<dyn Store>,
    verp: Option<Arc<VerpCodec>>,
    /// Addresses complaints (feedback loops) are sent to, lower case.
    complaint_addresses: Vec<String>,
}

/// One attributed report line before publishing.
struct Attributed {
    message_id: MessageId,
    tenant: TenantId,
    campaign: CampaignId,
    recipient: EmailAddress,
    by: &'static str,
}

impl InboundReports {
    pub fn new(
        log: Arc<dyn EventLog>,
        store: Arc<dyn Store>,
        verp: Option<Arc<VerpCodec>>,
        complaint_addresses: Vec<String>,
    ) -> Self {
        InboundReports {
            log,
            store,
            verp,
            complaint_addresses: complaint_addresses
                .into_iter()
                .map(|a| a.to_ascii_lowercase())
                .collect(),
        }
    }

    /// Whether `address` may receive reports: a valid VERP address of ours or a
    /// complaint address.
    pub fn check_recipient(&self, address: &str) -> Result<(), RecipientError> {
        if self
            .complaint_addresses
            .iter()
            .any(|a| a.eq_ignore_ascii_case(address))
        {
            return Ok(());
        }
        match &self.verp {
            Some(verp) if verp.decode(address).is_ok() => Ok(()),
            _ => Err(RecipientError::Unknown(address.to_string())),
        }
    }

    /// Parses `raw`, attributes it and publishes one record per attributed recipient.
    pub async fn accept(&self, rcpt_to: &[String], raw: &[u8]) -> Result<Outcome, InboundError> {
        let report = parse_report(raw)?;
        let envelope_tag = rcpt_to
            .iter()
            .find_map(|a| self.verp.as_ref()?.decode(a).ok());
        let mut outbox = Outbox::default();
        let mut outcome = Outcome {
            published: 0,
            unattributed: 0,
        };
        for (named, detail) in lines(&report) {
            let Some(detail) = detail else { continue };
            let found = self
                .attribute(&report, envelope_tag.as_ref(), named.as_ref())
                .await
                .map_err(InboundError::Unavailable)?;
            let Some(a) = found else {
                outcome.unattributed += 1;
                continue;
            };
            let record = InboundRecord::Report {
                message_id: a.message_id,
                tenant: a.tenant,
                campaign: a.campaign,
                recipient: a.recipient,
                report: ReceivedReport {
                    attributed_by: a.by.to_string(),
                    ..detail
                },
            };
            outbox.push(topics::INBOUND, &a.campaign, &record);
            outcome.published += 1;
        }
        outbox
            .send(self.log.as_ref(), &[topics::INBOUND])
            .await
            .map_err(InboundError::Unavailable)?;
        metrics::counter!("maily_inbound_reports_total", "result" => "published")
            .increment(outcome.published as u64);
        if outcome.unattributed > 0 {
            metrics::counter!("maily_inbound_reports_total", "result" => "unattributed")
                .increment(outcome.unattributed as u64);
            info!(
                unattributed = outcome.unattributed,
                "report lines that name no message of ours"
            );
        }
        debug!(published = outcome.published, "report accepted");
        Ok(outcome)
    }

    /// Ties one report line (about `named`, when the report says) to a message.
    async fn attribute(
        &self,
        report: &Report,
        envelope_tag: Option<&VerpTag>,
        named: Option<&EmailAddress>,
    ) -> anyhow::Result<Option<Attributed>> {
        let from_tag = |tag: &VerpTag, by| Attributed {
            message_id: tag.message_id,
            tenant: tag.tenant.clone(),
            campaign: tag.campaign,
            recipient: tag.recipient.clone(),
            by,
        };
        // One message per recipient is sent, so a VERP tag names exactly one line:
        // the one about its recipient, or the only one.
        let single = lines(report).len() == 1;
        let fits = |tag: &VerpTag| single || named.is_none_or(|n| *n == tag.recipient);
        if let Some(tag) = envelope_tag.filter(|t| fits(t)) {
            return Ok(Some(from_tag(tag, "verp")));
        }
        if let Some(verp) = &self.verp {
            for candidate in report.verp_candidates() {
                if let Ok(tag) = verp.decode(candidate)
                    && fits(&tag)
                {
                    return Ok(Some(from_tag(&tag, "return-path")));
                }
            }
        }
        let (Some(message_id), Some(campaign), Some(recipient)) = (
            report.original_message_id(),
            report.original_campaign(),
            named.cloned().or_else(|| {
                report
                    .original_header("to")
                    .and_then(|to| EmailAddress::parse(bare(to)).ok())
            }),
        ) else {
            return Ok(None);
        };
        // The headers are not signed: accept them only for a campaign that exists,
        // and take the tenant from the campaign, never from the report.
        let Some(found) = self.store.campaign(campaign).await? else {
            return Ok(None);
        };
        Ok(Some(Attributed {
            message_id,
            tenant: found.tenant,
            campaign,
            recipient,
            by: "headers",
        }))
    }
}

/// The report's lines: the recipient each is about (when it parses) and what it says
/// (`None` for DSN actions that need nothing: delivered, relayed, expanded).
fn lines(report: &Report) -> Vec<(Option<EmailAddress>, Option<ReceivedReport>)> {
    match report {
        Report::Dsn(dsn) => dsn
            .recipients
            .iter()
            .map(|r| {
                let kind = match r.action {
                    Action::Failed => Some(ReportKind::Bounce),
                    Action::Delayed => Some(ReportKind::Delay),
                    Action::Delivered | Action::Relayed | Action::Expanded => None,
                };
                let detail = kind.map(|kind| ReceivedReport {
                    kind,
                    reply: Some(r.reply()),
                    remote_mta: r.remote_mta.clone(),
                    reporting_mta: dsn.reporting_mta.clone(),
                    attributed_by: String::new(),
                });
                (r.address().ok(), detail)
            })
            .collect(),
        Report::Complaint(arf) => {
            // not-spam and auth-failure reports say nothing about the recipient's wishes.
            let detail = arf.feedback_type.is_complaint().then(|| ReceivedReport {
                kind: ReportKind::Complaint {
                    feedback_type: arf.feedback_type.as_str().to_string(),
                },
                reply: None,
                remote_mta: None,
                reporting_mta: arf.reporting_mta.clone(),
                attributed_by: String::new(),
            });
            // A complaint is about one message; its recipient is often redacted.
            let named = arf
                .original_rcpt_to
                .iter()
                .find_map(|r| EmailAddress::parse(r).ok());
            vec![(named, detail)]
        }
    }
}

/// The address inside `Name <addr>` or `<addr>`.
fn bare(value: &str) -> &str {
    let v = value.trim();
    match (v.rfind('<'), v.rfind('>')) {
        (Some(start), Some(end)) if start < end => &v[start + 1..end],
        _ => v,
    }
}
