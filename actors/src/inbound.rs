//! The inbound side: reports received by the listener are read by the bounce analyser
//! (`maily_bounce::report::analyse`: RFC 3464 DSNs, ARF complaints and the formats of
//! the common MTAs and mailbox providers), attributed to the message they are about and
//! published to the inbound topic with the analyser's verdict, where the bounce actor
//! records them and applies the suppression policy. Automatic replies and delivery
//! confirmations are accepted and dropped; anything else is refused as not a report.
//!
//! Attribution, most trusted first: the VERP address the report was sent to (signed,
//! so it cannot be forged to suppress someone else's address); a VERP address among
//! the return paths the report quotes (`Return-Path` of the returned message, the
//! `Original-Mail-From` of a complaint); the engine's own headers in the returned
//! message (`X-Maily-Message-Id`, `X-Maily-Campaign`). Those headers are not signed,
//! so they are believed only for a message the store holds, of that campaign, sent to
//! the very recipient the report line is about: at most, an unsigned report acts on
//! one message its sender could read (a recipient reporting their own mail). A report
//! none of whose lines can be tied to a message is refused with the reason, and so is
//! one whose headers name a message that is not what they claim (a forgery).
//!
//! The listener acknowledges a report only after the inbound topic accepted its
//! records, so a report is never lost between the two; when the log is down the
//! reporting server is asked to try again later.

use crate::common::Outbox;
use maily_bounce::Rules;
use maily_bounce::report::{
    Action, Analysis, Finding, MessageKind, Report, ReportError, analyse_with, parse_report,
};
use maily_engine::ports::{EventLog, OutcomeStore, TenantAccess};
use maily_engine::records::{InboundRecord, ReceivedReport, ReportKind, ReportVerdict, topics};
use maily_engine::reply::SmtpReply;
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
    /// A readable message that is neither a bounce nor a complaint nor an automatic
    /// reply (a person writing to a return path, say).
    #[error("not a bounce, complaint or automatic reply")]
    NotAReport,
    /// No line of the report could be tied to a message of ours; the reason of the
    /// first line.
    #[error("{0}")]
    Unattributable(String),
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
    /// Of those, lines whose unsigned headers named a message that is not theirs.
    pub refused: usize,
}

/// How one report line was tied to a message, or why not.
enum Attribution {
    Found(Attributed),
    /// Nothing in the report names a message of ours.
    Nothing,
    /// The report's unsigned headers name a message that does not match the line.
    Refused(String),
}

/// Parses, attributes and publishes reports.
pub struct InboundReports {
    log: Arc<dyn EventLog>,
    /// The stored messages reports are matched against.
    messages: Arc<dyn OutcomeStore>,
    /// The tenants' sending domains, whose return paths take reports.
    domains: Arc<dyn TenantAccess>,
    verp: Option<Arc<VerpCodec>>,
    /// The reply-text rules the analyser classifies failures with (`[bounce]
    /// rules_file`, the same the delivery path uses).
    rules: Arc<Rules>,
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
        messages: Arc<dyn OutcomeStore>,
        domains: Arc<dyn TenantAccess>,
        verp: Option<Arc<VerpCodec>>,
        complaint_addresses: Vec<String>,
    ) -> Self {
        InboundReports {
            log,
            messages,
            domains,
            verp,
            rules: Arc::new(Rules::defaults().clone()),
            complaint_addresses: complaint_addresses
                .into_iter()
                .map(|a| a.to_ascii_lowercase())
                .collect(),
        }
    }

    /// Classifies failures with `rules` instead of the shipped ones.
    pub fn with_rules(mut self, rules: Arc<Rules>) -> Self {
        self.rules = rules;
        self
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

    /// Analyses `raw`, attributes it and publishes one record per attributed recipient.
    pub async fn accept(&self, rcpt_to: &[String], raw: &[u8]) -> Result<Outcome, InboundError> {
        let report = analyse_with(raw, &self.rules)?;
        match report.kind {
            MessageKind::Bounce | MessageKind::Complaint => {}
            MessageKind::AutoReply | MessageKind::Delivered => {
                let kind = if report.kind == MessageKind::AutoReply {
                    "auto_reply"
                } else {
                    "delivered"
                };
                metrics::counter!("maily_inbound_reports_total", "result" => kind).increment(1);
                debug!(kind, "nothing to act on");
                return Ok(Outcome {
                    published: 0,
                    unattributed: 0,
                    refused: 0,
                });
            }
            MessageKind::Other => return Err(InboundError::NotAReport),
        }
        // Sender fields only a structured report carries (a complaint's
        // Original-Mail-From, X-Postfix-Sender) are further VERP candidates.
        let structured = parse_report(raw).ok();
        let mut envelope_tag = None;
        for a in rcpt_to {
            if let Some(tag) = self.tag_of(a).await.map_err(InboundError::Unavailable)? {
                envelope_tag = Some(tag);
                break;
            }
        }
        let mut outbox = Outbox::default();
        let mut outcome = Outcome {
            published: 0,
            unattributed: 0,
            refused: 0,
        };
        let mut why_not = None;
        for (named, detail) in lines(&report, structured.as_ref()) {
            let Some(detail) = detail else { continue };
            let found = self
                .attribute(
                    &report,
                    structured.as_ref(),
                    envelope_tag.as_ref(),
                    named.as_ref(),
                )
                .await
                .map_err(InboundError::Unavailable)?;
            let a = match found {
                Attribution::Found(a) => a,
                Attribution::Nothing => {
                    outcome.unattributed += 1;
                    why_not.get_or_insert_with(|| {
                        "5.7.1 the report names no message of ours".to_string()
                    });
                    continue;
                }
                Attribution::Refused(why) => {
                    outcome.unattributed += 1;
                    outcome.refused += 1;
                    why_not.get_or_insert(why);
                    continue;
                }
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
        if outcome.refused > 0 {
            metrics::counter!("maily_inbound_reports_total", "result" => "refused_mismatch")
                .increment(outcome.refused as u64);
        }
        if outcome.unattributed > outcome.refused {
            metrics::counter!("maily_inbound_reports_total", "result" => "unattributed")
                .increment((outcome.unattributed - outcome.refused) as u64);
        }
        if outcome.published == 0
            && let Some(why) = why_not
        {
            info!(
                lines = outcome.unattributed,
                refused = outcome.refused,
                "report refused: {why}"
            );
            return Err(InboundError::Unattributable(why));
        }
        outbox
            .send(self.log.as_ref(), &[topics::INBOUND])
            .await
            .map_err(InboundError::Unavailable)?;
        metrics::counter!("maily_inbound_reports_total", "result" => "published")
            .increment(outcome.published as u64);
        if outcome.unattributed > 0 {
            info!(
                unattributed = outcome.unattributed,
                refused = outcome.refused,
                "report lines that name no message of ours"
            );
        }
        debug!(published = outcome.published, "report accepted");
        Ok(outcome)
    }

    /// The tag of a return path of ours. One on a tenant's return-path domain counts
    /// only when that sending domain is the tag's tenant's (the signature already
    /// binds the tag; this keeps a tenant's domain to its own mail).
    async fn tag_of(&self, address: &str) -> anyhow::Result<Option<VerpTag>> {
        let Some(verp) = &self.verp else {
            return Ok(None);
        };
        let Ok((tag, parent)) = verp.decode_on(address) else {
            return Ok(None);
        };
        let Some(parent) = parent else {
            return Ok(Some(tag));
        };
        let owner = self
            .domains
            .domain(&parent)
            .await
            .map_err(|e| anyhow::anyhow!("looking up the sending domain {parent}: {e}"))?;
        Ok(owner.filter(|d| d.tenant == tag.tenant).map(|_| tag))
    }

    /// Ties one report line (about `named`, when the report says) to a message.
    async fn attribute(
        &self,
        report: &Analysis,
        structured: Option<&Report>,
        envelope_tag: Option<&VerpTag>,
        named: Option<&EmailAddress>,
    ) -> anyhow::Result<Attribution> {
        let from_tag = |tag: &VerpTag, by| {
            Attribution::Found(Attributed {
                message_id: tag.message_id,
                tenant: tag.tenant.clone(),
                campaign: tag.campaign,
                recipient: tag.recipient.clone(),
                by,
            })
        };
        // One message per recipient is sent, so a VERP tag names exactly one line:
        // the one about its recipient, or the only one.
        let single = report.findings.len() == 1;
        let fits = |tag: &VerpTag| single || named.is_none_or(|n| n.same_mailbox(&tag.recipient));
        if let Some(tag) = envelope_tag.filter(|t| fits(t)) {
            return Ok(from_tag(tag, "verp"));
        }
        if self.verp.is_some() {
            let mut candidates = report.verp_candidates();
            candidates.extend(structured.map(Report::verp_candidates).unwrap_or_default());
            for candidate in candidates {
                if let Some(tag) = self.tag_of(candidate).await?
                    && fits(&tag)
                {
                    return Ok(from_tag(&tag, "return-path"));
                }
            }
        }
        let (Some(message_id), Some(campaign), Some(recipient)) = (
            report.engine_message_id(),
            report.engine_campaign(),
            named.cloned().or_else(|| {
                report
                    .original_header("to")
                    .and_then(|to| EmailAddress::parse(bare(to)).ok())
            }),
        ) else {
            return Ok(Attribution::Nothing);
        };
        // The headers are not signed: believe them only for a message we hold, of
        // that campaign, sent to this very recipient; the tenant comes from the store.
        let Some(stored) = self.messages.message(message_id).await? else {
            return Ok(Attribution::Refused(format!(
                "5.7.1 the report names message {message_id}, which is not ours"
            )));
        };
        if stored.campaign != campaign || !stored.recipient.same_mailbox(&recipient) {
            return Ok(Attribution::Refused(format!(
                "5.7.1 the report's headers do not match message {message_id} \
                 (another campaign or recipient)"
            )));
        }
        Ok(Attribution::Found(Attributed {
            message_id,
            tenant: stored.tenant,
            campaign,
            recipient: stored.recipient,
            by: "headers",
        }))
    }
}

/// The report's lines: the recipient each is about (when it parses) and what it says
/// (`None` for what needs nothing: delivered, relayed or expanded recipients, and
/// complaints that are not about the recipient's wishes, such as not-spam).
fn lines(
    report: &Analysis,
    structured: Option<&Report>,
) -> Vec<(Option<EmailAddress>, Option<ReceivedReport>)> {
    let reporting_mta = structured.and_then(|r| match r {
        Report::Dsn(dsn) => dsn.reporting_mta.clone(),
        Report::Complaint(arf) => arf.reporting_mta.clone(),
    });
    report
        .findings
        .iter()
        .map(|f| {
            let kind = match report.kind {
                MessageKind::Complaint => f
                    .feedback_type
                    .as_ref()
                    .filter(|t| t.is_complaint())
                    .map(|t| ReportKind::Complaint {
                        feedback_type: t.as_str().to_string(),
                    }),
                _ => match f.action {
                    Some(Action::Delayed) => Some(ReportKind::Delay),
                    Some(Action::Delivered | Action::Relayed | Action::Expanded) => None,
                    Some(Action::Failed) | None => Some(ReportKind::Bounce),
                },
            };
            let detail = kind.map(|kind| {
                let complaint = matches!(kind, ReportKind::Complaint { .. });
                ReceivedReport {
                    reply: (!complaint).then(|| reply_of(f)),
                    remote_mta: f.remote_host.clone(),
                    reporting_mta: reporting_mta.clone(),
                    attributed_by: String::new(),
                    verdict: (!complaint).then(|| ReportVerdict {
                        reason: f.reason,
                        class: f.class,
                        status: f.status.map(|s| s.to_string()),
                        format: report.format.clone(),
                    }),
                    kind,
                }
            });
            (f.address().ok(), detail)
        })
        .collect()
}

/// The failure reply of a finding: its reply code (else one of the status's class),
/// the status the report gave, and the diagnostic text.
fn reply_of(f: &Finding) -> SmtpReply {
    let status = f.status.filter(|_| !f.pseudo_status);
    let code = f.reply_code.unwrap_or(match status.map(|s| s.class) {
        Some(4) => 450,
        _ => 550,
    });
    let text = match status {
        Some(s) if !f.diagnostic.contains(&s.to_string()) => format!("{s} {}", f.diagnostic),
        _ => f.diagnostic.clone(),
    };
    let mut reply = SmtpReply::new(code, text);
    reply.enhanced = reply.enhanced.or(status);
    reply
}

/// The address inside `Name <addr>` or `<addr>`.
fn bare(value: &str) -> &str {
    let v = value.trim();
    match (v.rfind('<'), v.rfind('>')) {
        (Some(start), Some(end)) if start < end => &v[start + 1..end],
        _ => v,
    }
}
