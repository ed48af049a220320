//! The bounce analyser: what an inbound message is (a bounce, a complaint, an
//! automatic reply or something else) and, for each recipient it is about, why.
//!
//! [`analyse`] flattens the message ([`Mail`]), reads complaints (ARF), then offers
//! the message to each bounce format in turn ([`super::mta::FORMATS`]: formats of
//! specific MTAs and providers, the standard DSN, a plain-text fallback); the first
//! that recognises it says what happened to each recipient, and [`super::verdict`]
//! classifies each with the bounce rules. A message no format recognises is an
//! automatic reply when it says so (RFC 3834), else something else. Nothing here does
//! I/O or panics on any input; input is capped at [`MAX_INPUT`].

use super::arf::{self, FeedbackType};
use super::mail::{Mail, cut, decode_words};
use super::mta::{FORMATS, SmtpCommand, find_address, is_address};
use super::{Action, Headers, MAX_DIAGNOSTIC_LEN, MAX_INPUT, ReportError, bare_address};
use crate::rules::Rules;
use maily_engine::BounceClass;
use maily_engine::domain::address::{AddressError, EmailAddress};
use maily_engine::reply::{EnhancedStatus, Reason};
use maily_engine::{CampaignId, MessageId};
use serde::{Deserialize, Serialize};

/// What an inbound message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageKind {
    /// A non-delivery report: at least one recipient failed or is delayed.
    Bounce,
    /// A complaint (ARF feedback report, or a provider's unsubscribe notice).
    Complaint,
    /// An automatic reply (RFC 3834): out of office, vacation, autoresponder.
    AutoReply,
    /// A delivery report in which every recipient was delivered (or relayed).
    Delivered,
    /// Anything else: a person's message, a newsletter, an unreadable report.
    Other,
}

/// The verdict on one recipient of a report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// The recipient as the report writes it (for a complaint or an automatic reply:
    /// the complaining or replying address). Empty for a complaint that redacts it:
    /// attribute that one by the returned message's headers.
    pub recipient: String,
    /// What the reporting MTA did, when it says.
    pub action: Option<Action>,
    /// The RFC 3463 status: the report's, else Sisimai's pseudo code for the reason
    /// (`5.0.9xx`, see [`Finding::pseudo_status`]); none for complaints and replies.
    pub status: Option<EnhancedStatus>,
    /// The status is a pseudo code: the report gave none.
    pub pseudo_status: bool,
    /// The SMTP reply code of the failure, when there is one.
    pub reply_code: Option<u16>,
    /// The error text: the remote server's reply or the reporting MTA's own words.
    pub diagnostic: String,
    /// The `Diagnostic-Code` type, lower case (`smtp`, `x-unix`...), when given.
    pub diagnostic_type: Option<String>,
    /// The host that refused the message, when the report names it.
    pub remote_host: Option<String>,
    /// The SMTP command the failure answered, when the report says.
    pub command: Option<SmtpCommand>,
    /// Why, in Sisimai's vocabulary.
    pub reason: Reason,
    /// Hard (stop mailing the address) or soft, by Sisimai's rule: hard for an
    /// address or domain that does not exist or moved (even when the report is a
    /// delay), and for a domain that accepts no mail when the failure is permanent.
    pub class: BounceClass,
    /// For a complaint: its Feedback-Type.
    pub feedback_type: Option<FeedbackType>,
}

impl Finding {
    /// Whether the address should be suppressed for good.
    pub fn is_hard(&self) -> bool {
        self.class == BounceClass::Hard
    }

    /// The recipient as an address.
    pub fn address(&self) -> Result<EmailAddress, AddressError> {
        EmailAddress::parse(&self.recipient)
    }
}

/// What the analyser made of a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Analysis {
    pub kind: MessageKind,
    /// The format that read the message (`postfix`, `qmail`, `rfc3464`, `arf`,
    /// `rfc3834`...), when one did.
    pub format: Option<String>,
    /// One finding per recipient, in the order the report names them; empty for
    /// [`MessageKind::Other`].
    pub findings: Vec<Finding>,
    /// The header fields of the message itself.
    pub headers: Headers,
    /// The header fields of the returned original message, when the report carries it
    /// (as a MIME part or inline after the format's marker line).
    pub original: Option<Headers>,
}

/// Analyses a raw inbound message with the shipped bounce rules.
pub fn analyse(raw: &[u8]) -> Result<Analysis, ReportError> {
    analyse_with(raw, Rules::defaults())
}

/// Analyses a raw inbound message, classifying failures with `rules`.
pub fn analyse_with(raw: &[u8], rules: &Rules) -> Result<Analysis, ReportError> {
    analyse_at(raw, rules, 0)
}

/// How many forwarded messages deep a report is looked for.
const MAX_FORWARDS: usize = 2;

fn analyse_at(raw: &[u8], rules: &Rules, forwards: usize) -> Result<Analysis, ReportError> {
    if raw.is_empty() {
        return Err(ReportError::Empty);
    }
    if raw.len() > MAX_INPUT {
        return Err(ReportError::TooLarge {
            size: raw.len(),
            limit: MAX_INPUT,
        });
    }
    let mail = Mail::parse(raw);
    if mail.headers.is_empty() {
        return Err(ReportError::NotAMessage);
    }
    if let Some(analysis) = complaint(&mail) {
        return Ok(analysis);
    }
    for format in FORMATS {
        let Some(mut parsed) = (format.parse)(&mail) else {
            continue;
        };
        if parsed.deliveries.is_empty() {
            continue;
        }
        for d in &mut parsed.deliveries {
            if d.diagnostic.len() > MAX_DIAGNOSTIC_LEN {
                d.diagnostic = cut(&d.diagnostic, MAX_DIAGNOSTIC_LEN).to_string();
            }
        }
        let findings: Vec<Finding> = parsed
            .deliveries
            .iter()
            .map(|d| {
                let v = super::verdict::judge(d, rules);
                Finding {
                    recipient: d.recipient.clone(),
                    action: d.action,
                    status: v.status,
                    pseudo_status: v.pseudo_status,
                    reply_code: v.reply_code,
                    diagnostic: d.diagnostic.clone(),
                    diagnostic_type: d.diagnostic_type.clone(),
                    remote_host: d.remote_host.clone(),
                    command: d.command,
                    reason: v.reason,
                    class: if v.hard {
                        BounceClass::Hard
                    } else {
                        BounceClass::Soft
                    },
                    feedback_type: None,
                }
            })
            .collect();
        let kind = if findings.iter().all(|f| f.reason == Reason::Delivered) {
            MessageKind::Delivered
        } else {
            MessageKind::Bounce
        };
        return Ok(Analysis {
            kind,
            format: Some(format.name.to_string()),
            findings,
            original: mail.original_headers(parsed.original.as_deref()),
            headers: mail.headers,
        });
    }
    // A report forwarded as an attachment (someone passing a bounce on).
    if forwards < MAX_FORWARDS
        && let Some(inner) = mail.original.as_deref()
        && let Ok(analysis) = analyse_at(inner.as_bytes(), rules, forwards + 1)
        && analysis.kind != MessageKind::Other
        && analysis.kind != MessageKind::AutoReply
    {
        return Ok(analysis);
    }
    if let Some(analysis) = auto_reply(&mail) {
        return Ok(analysis);
    }
    Ok(Analysis {
        kind: MessageKind::Other,
        format: None,
        findings: Vec::new(),
        original: mail.original_headers(None),
        headers: mail.headers,
    })
}

/// An ARF report, or a provider's one-click unsubscribe notice.
fn complaint(mail: &Mail) -> Option<Analysis> {
    let (feedback_type, mut recipients) = if let Some(text) = mail.feedback_parts.first() {
        let arf = arf::parse(text).ok()?;
        (arf.feedback_type, arf.original_rcpt_to)
    } else if mail
        .header("x-apple-unsubscribe")
        .eq_ignore_ascii_case("true")
    {
        let from = find_address(mail.header("from"))?;
        (FeedbackType::Unregistered("opt-out".into()), vec![from])
    } else {
        return None;
    };
    let original = mail.original_headers(None);
    recipients.retain(|r| is_address(r));
    if recipients.is_empty() {
        // Redacted: an opt-out names the address to remove; else the returned
        // message's To may name it. Failing both the complaint is still one, about
        // an address the report does not give (attribute it by the returned headers).
        let removal = mail
            .feedback_parts
            .first()
            .and_then(|t| t.lines().find_map(|l| l.strip_prefix("Removal-Recipient:")))
            .and_then(find_address);
        let to = original
            .as_ref()
            .and_then(|h| h.get("to"))
            .and_then(find_address);
        recipients.push(removal.or(to).unwrap_or_default());
    }
    let findings = recipients
        .into_iter()
        .map(|recipient| Finding {
            recipient,
            action: None,
            status: None,
            pseudo_status: false,
            reply_code: None,
            diagnostic: String::new(),
            diagnostic_type: None,
            remote_host: None,
            command: None,
            reason: Reason::Feedback,
            class: BounceClass::Soft,
            feedback_type: Some(feedback_type.clone()),
        })
        .collect();
    Some(Analysis {
        kind: MessageKind::Complaint,
        format: Some("arf".into()),
        findings,
        original,
        headers: mail.headers.clone(),
    })
}

/// An automatic reply (RFC 3834 and the headers and subjects autoresponders use).
fn auto_reply(mail: &Mail) -> Option<Analysis> {
    let submitted = mail.header("auto-submitted").to_ascii_lowercase();
    let precedence = mail.header("precedence").to_ascii_lowercase();
    let subject = decode_words(mail.header("subject")).to_ascii_lowercase();
    let marked = submitted.starts_with("auto-replied")
        || precedence.contains("auto_reply")
        || ["x-autoreply", "x-autorespond", "x-autoresponder"]
            .iter()
            .any(|h| mail.headers.get(h).is_some())
        || [
            "auto:",
            "automatic reply",
            "autoreply",
            "auto-reply",
            "auto reply",
            "out of office",
            "out of the office",
            "vacation",
        ]
        .iter()
        .any(|p| subject.contains(p));
    if !marked {
        return None;
    }
    let recipient = find_address(mail.header("from"))?;
    Some(Analysis {
        kind: MessageKind::AutoReply,
        format: Some("rfc3834".into()),
        findings: vec![Finding {
            recipient,
            action: None,
            status: None,
            pseudo_status: false,
            reply_code: None,
            diagnostic: String::new(),
            diagnostic_type: None,
            remote_host: None,
            command: None,
            reason: Reason::Vacation,
            class: BounceClass::Soft,
            feedback_type: None,
        }],
        original: mail.original_headers(None),
        headers: mail.headers.clone(),
    })
}

impl Analysis {
    /// Whether the message is a bounce.
    pub fn is_bounce(&self) -> bool {
        self.kind == MessageKind::Bounce
    }

    /// One header field of the returned original message (first occurrence, any case).
    pub fn original_header(&self, name: &str) -> Option<&str> {
        self.original.as_ref()?.get(name)
    }

    /// The returned message's `Message-ID`, without angle brackets.
    pub fn original_message_id(&self) -> Option<&str> {
        let v = bare_address(self.original_header("message-id")?);
        (!v.is_empty()).then_some(v)
    }

    /// The engine's id of the returned message (`X-Maily-Message-Id`, else the
    /// `Message-ID` the engine builds).
    pub fn engine_message_id(&self) -> Option<MessageId> {
        super::engine_message_id(self.original.as_ref())
    }

    /// The campaign of the returned message (`X-Maily-Campaign`).
    pub fn engine_campaign(&self) -> Option<CampaignId> {
        super::engine_campaign(self.original.as_ref())
    }

    /// Addresses that may be the VERP return path of the original message, most
    /// reliable first: the address the report was delivered to, then the returned
    /// message's `Return-Path`.
    pub fn verp_candidates(&self) -> Vec<&str> {
        super::distinct_addresses([
            super::envelope_recipient_in(&self.headers),
            self.original_header("return-path"),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUNCE: &str = "From: MAILER-DAEMON@mx.example.org\r\n\
To: <b+tag@bounce.example>\r\n\
Subject: Undelivered Mail Returned to Sender\r\n\
Content-Type: multipart/report; report-type=delivery-status; boundary=\"b\"\r\n\
\r\n\
--b\r\n\
Content-Type: text/plain\r\n\
\r\n\
<jane@example.net>: host mx.example.net[192.0.2.1] said: 550 5.1.1 User unknown\r\n\
    (in reply to RCPT TO command)\r\n\
--b\r\n\
Content-Type: message/delivery-status\r\n\
\r\n\
Reporting-MTA: dns; mx.example.org\r\n\
\r\n\
Final-Recipient: rfc822; jane@example.net\r\n\
Action: failed\r\n\
Status: 5.1.1\r\n\
Remote-MTA: dns; mx.example.net\r\n\
Diagnostic-Code: smtp; 550 5.1.1 <jane@example.net>: User unknown\r\n\
\r\n\
--b\r\n\
Content-Type: text/rfc822-headers\r\n\
\r\n\
Return-Path: <b+tag@bounce.example>\r\n\
Message-ID: <0b4e2f9a-8d1c-4e7b-a3f0-5c6d7e8f9a0b@shop.example>\r\n\
X-Maily-Campaign: 6f1c7c1e-3b7a-4c55-9a55-0f3c1b2a9d10\r\n\
X-Mailer-Tag: spring-sale\r\n\
\r\n\
--b--\r\n";

    #[test]
    fn reads_a_bounce_and_what_attribution_needs() {
        let a = analyse(BOUNCE.as_bytes()).unwrap();
        assert_eq!(a.kind, MessageKind::Bounce);
        assert_eq!(a.format.as_deref(), Some("rfc3464"));
        let f = &a.findings[0];
        assert_eq!(f.recipient, "jane@example.net");
        assert_eq!(
            (f.reason, f.class),
            (Reason::UserUnknown, BounceClass::Hard)
        );
        assert_eq!(f.status.unwrap().to_string(), "5.1.1");
        assert!(!f.pseudo_status);
        assert_eq!(f.reply_code, Some(550));
        assert_eq!(f.command, Some(SmtpCommand::Rcpt));
        assert_eq!(f.remote_host.as_deref(), Some("mx.example.net"));
        assert_eq!(
            a.original_message_id(),
            Some("0b4e2f9a-8d1c-4e7b-a3f0-5c6d7e8f9a0b@shop.example")
        );
        assert!(a.engine_message_id().is_some());
        assert!(a.engine_campaign().is_some());
        assert_eq!(a.original_header("x-mailer-tag"), Some("spring-sale"));
        assert_eq!(a.verp_candidates(), ["b+tag@bounce.example"]);
    }

    #[test]
    fn a_forwarded_bounce_is_read_inside_its_wrapper() {
        let wrapped = format!(
            "From: someone@example.org\nSubject: Fwd: bounce\nContent-Type: multipart/mixed; boundary=w\n\n\
             --w\nContent-Type: text/plain\n\nFYI\n--w\nContent-Type: message/rfc822\n\n{BOUNCE}\n--w--\n"
        );
        let a = analyse(wrapped.as_bytes()).unwrap();
        assert_eq!(a.kind, MessageKind::Bounce);
        assert_eq!(a.findings[0].reason, Reason::UserUnknown);
    }

    #[test]
    fn recognises_auto_replies_and_redacted_complaints() {
        let reply = "From: Jane <jane@example.net>\nTo: b@bounce.example\nSubject: Out of Office: hello\n\
                     Auto-Submitted: auto-replied\n\nI am away.\n";
        let a = analyse(reply.as_bytes()).unwrap();
        assert_eq!(a.kind, MessageKind::AutoReply);
        assert_eq!(a.findings[0].recipient, "jane@example.net");
        assert_eq!(a.findings[0].reason, Reason::Vacation);
        assert_eq!(a.findings[0].status, None);

        let arf = "From: fbl@isp.example\nContent-Type: multipart/report; report-type=feedback-report; boundary=f\n\n\
                   --f\nContent-Type: message/feedback-report\n\nFeedback-Type: abuse\nUser-Agent: x\nVersion: 1\n\n\
                   --f\nContent-Type: message/rfc822\n\nTo: <Undisclosed Recipients>\nMessage-ID: <m@shop.example>\n\n--f--\n";
        let a = analyse(arf.as_bytes()).unwrap();
        assert_eq!(a.kind, MessageKind::Complaint);
        assert_eq!(a.findings.len(), 1);
        assert_eq!(a.findings[0].recipient, "");
        assert_eq!(a.findings[0].reason, Reason::Feedback);
        assert_eq!(a.original_message_id(), Some("m@shop.example"));

        let person = "From: a@example.net\nSubject: hello\n\nJust a note.\n";
        let a = analyse(person.as_bytes()).unwrap();
        assert_eq!((a.kind, a.findings.len()), (MessageKind::Other, 0));
    }

    #[test]
    fn plain_text_bounces_get_pseudo_statuses() {
        let qmail = "From: MAILER-DAEMON@mx.example.org\nSubject: failure notice\n\n\
                     Hi. This is the qmail-send program at mx.example.org.\n\
                     I'm afraid I wasn't able to deliver your message to the following addresses.\n\n\
                     <gone@example.net>:\nSorry, no mailbox here by that name.\n\n\
                     --- Below this line is a copy of the message.\n\nMessage-ID: <x@shop.example>\n\nhi\n";
        let a = analyse(qmail.as_bytes()).unwrap();
        assert_eq!(a.format.as_deref(), Some("qmail"));
        let f = &a.findings[0];
        assert_eq!(
            (f.recipient.as_str(), f.reason),
            ("gone@example.net", Reason::UserUnknown)
        );
        assert_eq!(f.status.unwrap().to_string(), "5.0.911");
        assert!(f.pseudo_status && f.is_hard());
        assert_eq!(a.original_message_id(), Some("x@shop.example"));
    }
}
