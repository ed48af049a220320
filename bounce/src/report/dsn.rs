//! The `message/delivery-status` part of a DSN (RFC 3464 section 2).
//!
//! The part is one block of per-message fields and one block per recipient, separated
//! by blank lines. Real reports are read leniently: the order of fields inside a block
//! does not matter, a field repeated inside a block starts a new recipient (for
//! reporters that forget the blank line), an address without a type is taken as
//! `rfc822`, a status followed by a comment is accepted, and a missing or unreadable
//! Status falls back to the enhanced code in the Diagnostic-Code.

use super::{Headers, MAX_DIAGNOSTIC_LEN, MAX_RECIPIENTS, ReportError, bare_address, field_blocks};
use crate::classify::Classification;
use crate::rules::classify_reply;
use maily_engine::BounceClass;
use maily_engine::domain::address::{AddressError, EmailAddress};
use maily_engine::reply::{EnhancedStatus, SmtpReply};
use serde::{Deserialize, Serialize};

/// A delivery status notification.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dsn {
    /// The headers of the report message itself.
    pub headers: Headers,
    /// `Reporting-MTA`, without its `dns;` type.
    pub reporting_mta: Option<String>,
    /// `Arrival-Date`, as written (RFC 5322 date).
    pub arrival_date: Option<String>,
    /// `Original-Envelope-Id` (the ENVID given at MAIL FROM).
    pub original_envelope_id: Option<String>,
    /// All per-message fields, including extensions such as `X-Postfix-Sender`.
    pub message_fields: Headers,
    /// One entry per per-recipient block; never empty.
    pub recipients: Vec<DsnRecipient>,
    /// Headers of the returned original message (third part), if present.
    pub original: Option<Headers>,
}

/// What the reporting MTA did for one recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Failed,
    Delayed,
    Delivered,
    Relayed,
    Expanded,
}

impl Action {
    pub(crate) fn parse(s: &str) -> Option<Self> {
        let word = s.split(|c: char| c.is_whitespace() || c == '(').next()?;
        Some(match word.to_ascii_lowercase().as_str() {
            "failed" => Action::Failed,
            "delayed" => Action::Delayed,
            "delivered" => Action::Delivered,
            "relayed" => Action::Relayed,
            "expanded" => Action::Expanded,
            _ => return None,
        })
    }

    /// The action as RFC 3464 spells it.
    pub fn as_str(&self) -> &'static str {
        match self {
            Action::Failed => "failed",
            Action::Delayed => "delayed",
            Action::Delivered => "delivered",
            Action::Relayed => "relayed",
            Action::Expanded => "expanded",
        }
    }
}

/// A `Diagnostic-Code` field: `type; text`, and the SMTP reply in it when there is one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diagnostic {
    /// The diagnostic type, lower-cased (`smtp`, `x-postfix`, `x-unix`...), if given.
    pub kind: Option<String>,
    /// The text after the type, unfolded, cut to [`MAX_DIAGNOSTIC_LEN`] bytes.
    pub text: String,
    /// The SMTP reply when the text starts with a reply code; multi-line replies are
    /// joined with their repeated codes removed.
    pub reply: Option<SmtpReply>,
}

/// The fields of one per-recipient block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DsnRecipient {
    /// `Final-Recipient` without its address type (falls back to `Original-Recipient`).
    pub final_recipient: String,
    /// `Original-Recipient` without its address type (the ORCPT given at RCPT TO).
    pub original_recipient: Option<String>,
    pub action: Action,
    /// RFC 3463 status code.
    pub status: EnhancedStatus,
    /// `Remote-MTA` without its `dns;` type and comments.
    pub remote_mta: Option<String>,
    pub diagnostic_code: Option<Diagnostic>,
    pub last_attempt_date: Option<String>,
    pub will_retry_until: Option<String>,
}

impl DsnRecipient {
    /// The final recipient as an address.
    pub fn address(&self) -> Result<EmailAddress, AddressError> {
        EmailAddress::parse(&self.final_recipient)
    }

    /// The SMTP reply this recipient failed with, for classification: the reply in the
    /// Diagnostic-Code when there is one (the Status standing in for a missing enhanced
    /// code), else one made from the Status (550, 450 or 250 by its class) and the
    /// diagnostic text.
    pub fn reply(&self) -> SmtpReply {
        match self.diagnostic_code.as_ref() {
            Some(Diagnostic {
                reply: Some(reply), ..
            }) => SmtpReply {
                enhanced: reply.enhanced.or(Some(self.status)),
                ..reply.clone()
            },
            other => SmtpReply {
                code: match self.status.class {
                    5 => 550,
                    4 => 450,
                    _ => 250,
                },
                enhanced: Some(self.status),
                text: other.map(|d| d.text.clone()).unwrap_or_default(),
            },
        }
    }

    /// The bounce verdict with the shipped rules ([`classify_reply`] of [`Self::reply`]);
    /// anything but `Action: failed` is soft. With other rules, classify [`Self::reply`]
    /// and apply the same downgrade.
    pub fn classify(&self) -> Classification {
        let reply = self.reply();
        let mut c = classify_reply(&reply);
        if self.action != Action::Failed {
            c.class = BounceClass::Soft;
        }
        c
    }
}

/// Fields kept per recipient; a repeat inside one block starts the next recipient.
const RECIPIENT_FIELDS: &[&str] = &[
    "final-recipient",
    "original-recipient",
    "action",
    "status",
    "remote-mta",
    "diagnostic-code",
    "last-attempt-date",
    "will-retry-until",
    "final-log-id",
];

/// Parses the text of a `message/delivery-status` part.
pub(super) fn parse(text: &str) -> Result<Dsn, ReportError> {
    let mut message: Vec<(String, String)> = Vec::new();
    let mut drafts: Vec<Vec<(String, String)>> = Vec::new();
    for block in field_blocks(text) {
        let mut draft: Vec<(String, String)> = Vec::new();
        for (name, value) in block.iter() {
            let lname = name.to_ascii_lowercase();
            if !RECIPIENT_FIELDS.contains(&lname.as_str()) {
                message.push((name.to_string(), value.to_string()));
                continue;
            }
            if draft.iter().any(|(n, _)| *n == lname) {
                drafts.push(std::mem::take(&mut draft));
                if drafts.len() > MAX_RECIPIENTS {
                    return Err(ReportError::TooManyRecipients {
                        limit: MAX_RECIPIENTS,
                    });
                }
            }
            draft.push((lname, value.to_string()));
        }
        if !draft.is_empty() {
            drafts.push(draft);
        }
        if drafts.len() > MAX_RECIPIENTS {
            return Err(ReportError::TooManyRecipients {
                limit: MAX_RECIPIENTS,
            });
        }
    }
    if drafts.is_empty() {
        return Err(ReportError::NoRecipients);
    }
    let message_fields = Headers::from_fields(message);
    let recipients = drafts
        .iter()
        .enumerate()
        .map(|(i, d)| recipient(i + 1, d))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Dsn {
        headers: Headers::default(),
        reporting_mta: message_fields.get("reporting-mta").map(typed_name),
        arrival_date: message_fields.get("arrival-date").map(str::to_string),
        original_envelope_id: message_fields
            .get("original-envelope-id")
            .map(str::to_string),
        message_fields,
        recipients,
        original: None,
    })
}

fn recipient(index: usize, fields: &[(String, String)]) -> Result<DsnRecipient, ReportError> {
    let location = || format!("per-recipient block {index}");
    let get = |name: &str| {
        fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    let address = |v: &str| bare_address(v).to_string();
    let original_recipient = get("original-recipient")
        .map(address)
        .filter(|a| !a.is_empty());
    let final_recipient = get("final-recipient")
        .map(address)
        .filter(|a| !a.is_empty())
        .or_else(|| original_recipient.clone())
        .ok_or_else(|| match get("final-recipient") {
            Some(v) => bad_field("Final-Recipient", location(), v),
            None => ReportError::MissingField {
                field: "Final-Recipient",
                location: location(),
            },
        })?;
    let action = match get("action") {
        None => {
            return Err(ReportError::MissingField {
                field: "Action",
                location: location(),
            });
        }
        Some(v) => Action::parse(v).ok_or_else(|| bad_field("Action", location(), v))?,
    };
    let diagnostic_code = get("diagnostic-code").map(parse_diagnostic);
    let from_diagnostic = diagnostic_code
        .as_ref()
        .and_then(|d| d.reply.as_ref())
        .and_then(|r| r.enhanced);
    let status = match get("status") {
        Some(v) => v
            .split(|c: char| c.is_whitespace() || c == '(')
            .next()
            .and_then(EnhancedStatus::parse)
            .or(from_diagnostic)
            .ok_or_else(|| bad_field("Status", location(), v))?,
        None => from_diagnostic.ok_or_else(|| ReportError::MissingField {
            field: "Status",
            location: location(),
        })?,
    };
    Ok(DsnRecipient {
        final_recipient,
        original_recipient,
        action,
        status,
        remote_mta: get("remote-mta").map(typed_name),
        diagnostic_code,
        last_attempt_date: get("last-attempt-date").map(str::to_string),
        will_retry_until: get("will-retry-until").map(str::to_string),
    })
}

fn bad_field(field: &'static str, location: String, value: &str) -> ReportError {
    ReportError::BadField {
        field,
        location,
        value: value.chars().take(80).collect(),
    }
}

/// `dns; mx.example.net (comment)` -> `mx.example.net`.
pub(crate) fn typed_name(value: &str) -> String {
    let v = match value.split_once(';') {
        Some((_, rest)) => rest,
        None => value,
    };
    let v = match v.find('(') {
        Some(i) => &v[..i],
        None => v,
    };
    v.trim().to_string()
}

/// Splits `type; text` and reads the SMTP reply out of the text.
pub(crate) fn parse_diagnostic(value: &str) -> Diagnostic {
    let (kind, text) = match value.split_once(';') {
        Some((k, t))
            if !k.trim().is_empty() && k.len() <= 40 && !k.trim().contains(char::is_whitespace) =>
        {
            (Some(k.trim().to_ascii_lowercase()), t.trim())
        }
        _ => (None, value.trim()),
    };
    let text = truncate(text, MAX_DIAGNOSTIC_LEN);
    Diagnostic {
        kind,
        text: text.to_string(),
        reply: reply_from_text(text),
    }
}

/// `s` cut to at most `max` bytes, at a character boundary.
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// `550-5.2.2 The account ... 550 5.2.2 more` -> code 550, 5.2.2, the text without
/// the repeated code and status. None unless the text starts with a code 200-599.
fn reply_from_text(text: &str) -> Option<SmtpReply> {
    let digits = text.get(..3)?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let code: u16 = digits.parse().ok().filter(|c| (200..600).contains(c))?;
    if !matches!(text.as_bytes().get(3), None | Some(b' ' | b'-' | b'\t')) {
        return None;
    }
    let mut enhanced = None;
    let mut words: Vec<&str> = Vec::new();
    let mut status_may_follow = false;
    for word in text.split_whitespace() {
        let after_code = if word == digits {
            Some("")
        } else {
            word.strip_prefix(digits).and_then(|r| r.strip_prefix('-'))
        };
        if let Some(rest) = after_code {
            status_may_follow = rest.is_empty();
            match EnhancedStatus::parse(rest) {
                Some(e) => {
                    enhanced.get_or_insert(e);
                }
                None if !rest.is_empty() => words.push(rest),
                None => {}
            }
            continue;
        }
        if std::mem::take(&mut status_may_follow)
            && let Some(e) = EnhancedStatus::parse(word)
        {
            enhanced.get_or_insert(e);
            continue;
        }
        words.push(word);
    }
    Some(SmtpReply {
        code,
        enhanced,
        text: words.join(" "),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use maily_engine::reply::Reason;

    #[test]
    fn reads_multi_line_replies_out_of_diagnostic_codes() {
        let d = parse_diagnostic(
            "smtp; 552-5.2.2 The email account that you tried to reach is over quota. \
             552-5.2.2 Please direct the recipient to 552 5.2.2 https://support.google.com",
        );
        assert_eq!(d.kind.as_deref(), Some("smtp"));
        let r = d.reply.unwrap();
        assert_eq!(
            (r.code, r.enhanced.unwrap().to_string()),
            (552, "5.2.2".into())
        );
        assert_eq!(
            r.text,
            "The email account that you tried to reach is over quota. \
             Please direct the recipient to https://support.google.com"
        );
        let d = parse_diagnostic("X-Postfix; connect to mx.example.net[192.0.2.1]:25: timed out");
        assert_eq!(d.kind.as_deref(), Some("x-postfix"));
        assert_eq!(d.reply, None);
        let d = parse_diagnostic("550 no type; just text");
        assert_eq!(d.kind, None);
        assert_eq!(d.reply.unwrap().text, "no type; just text");
        assert_eq!(reply_from_text("5501 x"), None);
        let long = format!("smtp; 550 {}", "é".repeat(MAX_DIAGNOSTIC_LEN));
        let d = parse_diagnostic(&long);
        assert!(d.text.len() <= MAX_DIAGNOSTIC_LEN && d.text.len() > MAX_DIAGNOSTIC_LEN - 4);
        assert!(d.reply.unwrap().text.len() < MAX_DIAGNOSTIC_LEN);
        assert_eq!(reply_from_text("999 x"), None);
    }

    #[test]
    fn recipients_without_blank_lines_and_in_any_order() {
        let dsn = parse(
            "Reporting-MTA: dns; mx.example.org (Postfix)\n\n\
             Action: failed\nFinal-Recipient: rfc822;a@example.net\nStatus: 5.1.1 (no such user)\n\
             Final-Recipient: b@example.net\nAction: Delayed\nStatus: 4.4.1\n",
        )
        .unwrap();
        assert_eq!(dsn.reporting_mta.as_deref(), Some("mx.example.org"));
        assert_eq!(dsn.recipients.len(), 2);
        assert_eq!(dsn.recipients[0].final_recipient, "a@example.net");
        assert_eq!(dsn.recipients[0].status.to_string(), "5.1.1");
        assert_eq!(dsn.recipients[1].final_recipient, "b@example.net");
        assert_eq!(dsn.recipients[1].action, Action::Delayed);
    }

    #[test]
    fn recipients_are_capped() {
        let one = "Final-Recipient: rfc822; a@b.c\nAction: failed\nStatus: 5.1.1\n";
        let in_one_block = one.repeat(MAX_RECIPIENTS + 1);
        let in_blocks = format!("{one}\n").repeat(MAX_RECIPIENTS + 1);
        for text in [in_one_block, in_blocks] {
            assert_eq!(
                parse(&text),
                Err(ReportError::TooManyRecipients {
                    limit: MAX_RECIPIENTS
                })
            );
        }
        assert_eq!(
            parse(&one.repeat(MAX_RECIPIENTS)).unwrap().recipients.len(),
            MAX_RECIPIENTS
        );
    }

    #[test]
    fn names_missing_and_bad_fields() {
        assert_eq!(
            parse("Reporting-MTA: dns; x\n\n"),
            Err(ReportError::NoRecipients)
        );
        assert_eq!(
            parse("Final-Recipient: rfc822; a@b.c\nStatus: 5.0.0\n"),
            Err(ReportError::MissingField {
                field: "Action",
                location: "per-recipient block 1".into()
            })
        );
        assert!(matches!(
            parse("Final-Recipient: rfc822; a@b.c\nAction: exploded\nStatus: 5.0.0\n"),
            Err(ReportError::BadField {
                field: "Action",
                ..
            })
        ));
        assert!(matches!(
            parse("Final-Recipient: rfc822; a@b.c\nAction: failed\nStatus: 9.9\n"),
            Err(ReportError::BadField {
                field: "Status",
                ..
            })
        ));
        let fallback = parse(
            "Final-Recipient: rfc822; a@b.c\nAction: failed\nDiagnostic-Code: smtp; 550 5.1.1 gone\n",
        )
        .unwrap();
        assert_eq!(fallback.recipients[0].status.to_string(), "5.1.1");
    }

    #[test]
    fn classifies_recipients() {
        let dsn = parse(
            "Final-Recipient: rfc822; a@b.c\nAction: failed\nStatus: 5.1.1\n\
             Diagnostic-Code: smtp; 550 5.1.1 user unknown\n\n\
             Final-Recipient: rfc822; d@b.c\nAction: delayed\nStatus: 4.4.1\n\n\
             Final-Recipient: rfc822; e@b.c\nAction: failed\nStatus: 5.2.2\n",
        )
        .unwrap();
        let c: Vec<_> = dsn.recipients.iter().map(|r| r.classify()).collect();
        assert_eq!(
            (c[0].reason, c[0].class),
            (Reason::UserUnknown, BounceClass::Hard)
        );
        assert_eq!(c[1].class, BounceClass::Soft);
        assert_eq!(
            (c[2].reason, c[2].class),
            (Reason::MailboxFull, BounceClass::Soft)
        );
    }
}
