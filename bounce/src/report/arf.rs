//! The `message/feedback-report` part of an abuse report (RFC 5965 section 3.1).
//!
//! Only Feedback-Type is required here: User-Agent and Version are required by the RFC
//! but some feedback loops leave them out, and a complaint is worth acting on anyway.
//! `Received-Date`, the name used by the drafts that preceded RFC 5965 (and still
//! sent by some mailbox providers), stands in for a missing `Arrival-Date`.

use super::{Headers, ReportError, bare_address, field_blocks};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// What a complaint reports (RFC 5965 and its IANA registry).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FeedbackType {
    /// Unsolicited email or some other kind of abuse ("this is spam").
    Abuse,
    /// An email authentication failure report.
    AuthFailure,
    /// Fraud or phishing.
    Fraud,
    /// The recipient says it is not spam (moved out of the spam folder).
    NotSpam,
    /// Any other feedback.
    Other,
    /// A virus found in the message.
    Virus,
    /// A type outside the registry, lower-cased as received.
    Unregistered(String),
}

impl FeedbackType {
    fn parse(s: &str) -> Option<Self> {
        let word = s
            .split(|c: char| c.is_whitespace() || c == '(' || c == ';')
            .next()?;
        if word.is_empty() {
            return None;
        }
        Some(match word.to_ascii_lowercase().as_str() {
            "abuse" => FeedbackType::Abuse,
            "auth-failure" => FeedbackType::AuthFailure,
            "fraud" => FeedbackType::Fraud,
            "not-spam" => FeedbackType::NotSpam,
            "other" => FeedbackType::Other,
            "virus" => FeedbackType::Virus,
            other => FeedbackType::Unregistered(other.chars().take(64).collect()),
        })
    }

    /// The type as the report spells it.
    pub fn as_str(&self) -> &str {
        match self {
            FeedbackType::Abuse => "abuse",
            FeedbackType::AuthFailure => "auth-failure",
            FeedbackType::Fraud => "fraud",
            FeedbackType::NotSpam => "not-spam",
            FeedbackType::Other => "other",
            FeedbackType::Virus => "virus",
            FeedbackType::Unregistered(s) => s,
        }
    }

    /// Whether the recipient complained (everything but `not-spam` and
    /// `auth-failure`, which are not about the recipient's wishes).
    pub fn is_complaint(&self) -> bool {
        !matches!(self, FeedbackType::NotSpam | FeedbackType::AuthFailure)
    }
}

/// An Abuse Reporting Format report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Arf {
    /// The headers of the report message itself.
    pub headers: Headers,
    pub feedback_type: FeedbackType,
    pub user_agent: Option<String>,
    pub version: Option<String>,
    /// `Original-Mail-From`, angle brackets removed: the original return path.
    pub original_mail_from: Option<String>,
    /// `Original-Rcpt-To` values, angle brackets removed (often redacted or absent).
    pub original_rcpt_to: Vec<String>,
    /// `Arrival-Date` (or `Received-Date`), as written.
    pub arrival_date: Option<String>,
    /// `Source-IP`, when it is an IP address.
    pub source_ip: Option<IpAddr>,
    /// `Reported-Domain` values.
    pub reported_domain: Vec<String>,
    pub reporting_mta: Option<String>,
    pub original_envelope_id: Option<String>,
    /// Every field of the feedback-report part.
    pub fields: Headers,
    /// Headers of the returned original message, if present.
    pub original: Option<Headers>,
}

/// Parses the text of a `message/feedback-report` part.
pub(super) fn parse(text: &str) -> Result<Arf, ReportError> {
    let fields = Headers::from_fields(
        field_blocks(text)
            .iter()
            .flat_map(|b| b.iter().map(|(n, v)| (n.to_string(), v.to_string())))
            .collect(),
    );
    let location = || "feedback report".to_string();
    let feedback_type = match fields.get("feedback-type") {
        None => {
            return Err(ReportError::MissingField {
                field: "Feedback-Type",
                location: location(),
            });
        }
        Some(v) => FeedbackType::parse(v).ok_or_else(|| ReportError::BadField {
            field: "Feedback-Type",
            location: location(),
            value: v.chars().take(80).collect(),
        })?,
    };
    let text_field = |name: &str| {
        fields
            .get(name)
            .map(str::to_string)
            .filter(|v| !v.is_empty())
    };
    let addresses = |name: &str| -> Vec<String> {
        fields
            .get_all(name)
            .map(|v| bare_address(v).to_string())
            .filter(|v| !v.is_empty())
            .collect()
    };
    let source_ip = fields.get("source-ip").and_then(|v| {
        let v = v.trim().trim_start_matches('[');
        let v = v.split([']', ' ', '(']).next().unwrap_or("");
        v.parse().ok()
    });
    Ok(Arf {
        headers: Headers::default(),
        feedback_type,
        user_agent: text_field("user-agent"),
        version: text_field("version"),
        original_mail_from: addresses("original-mail-from").into_iter().next(),
        original_rcpt_to: addresses("original-rcpt-to"),
        arrival_date: text_field("arrival-date").or_else(|| text_field("received-date")),
        source_ip,
        reported_domain: fields
            .get_all("reported-domain")
            .map(|v| v.trim().to_ascii_lowercase())
            .filter(|v| !v.is_empty())
            .collect(),
        reporting_mta: fields.get("reporting-mta").map(|v| {
            bare_address(v)
                .split('(')
                .next()
                .unwrap_or("")
                .trim()
                .to_string()
        }),
        original_envelope_id: text_field("original-envelope-id"),
        fields,
        original: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_fields() {
        let arf = parse(
            "Feedback-Type: Abuse\nUser-Agent: SomeGenerator/1.0\nVersion: 1\n\
             Original-Mail-From: <b+x@bounce.example>\nOriginal-Rcpt-To: <a@example.net>\n\
             Original-Rcpt-To: c@example.net\nReceived-Date: Thu, 8 Mar 2005 14:00:00 EDT\n\
             Source-IP: [192.0.2.1]\nReported-Domain: Example.COM\n",
        )
        .unwrap();
        assert_eq!(arf.feedback_type, FeedbackType::Abuse);
        assert_eq!(
            arf.original_mail_from.as_deref(),
            Some("b+x@bounce.example")
        );
        assert_eq!(arf.original_rcpt_to, ["a@example.net", "c@example.net"]);
        assert_eq!(
            arf.arrival_date.as_deref(),
            Some("Thu, 8 Mar 2005 14:00:00 EDT")
        );
        assert_eq!(arf.source_ip, Some("192.0.2.1".parse().unwrap()));
        assert_eq!(arf.reported_domain, ["example.com"]);
        assert_eq!(arf.version.as_deref(), Some("1"));
    }

    #[test]
    fn feedback_type_is_required_and_open_ended() {
        assert!(matches!(
            parse("User-Agent: x\n"),
            Err(ReportError::MissingField {
                field: "Feedback-Type",
                ..
            })
        ));
        assert!(matches!(
            parse("Feedback-Type: \n"),
            Err(ReportError::BadField { .. })
        ));
        let arf = parse("Feedback-Type: dkim\n").unwrap();
        assert_eq!(arf.feedback_type, FeedbackType::Unregistered("dkim".into()));
        assert!(arf.feedback_type.is_complaint());
        assert!(!FeedbackType::NotSpam.is_complaint());
    }
}
