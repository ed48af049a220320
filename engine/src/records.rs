//! The payloads carried by each topic, and their wire codec (JSON).
//!
//! Every record is keyed by its campaign id so one campaign's records share a partition
//! and its state has exactly one writer.

use crate::domain::{
    address::EmailAddress,
    event::EventKind,
    ids::{CampaignId, MessageId, TenantId},
    stats::CampaignStats,
};
use crate::reply::SmtpReply;
use crate::time::Timestamp;
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use std::collections::BTreeMap;

/// Topic names below the configured prefix.
pub mod topics {
    /// One record per message to send.
    pub const SEND: &str = "send";
    /// Delivery and engagement events.
    pub const EVENTS: &str = "events";
    /// Negative SMTP replies and raw DSN/ARF reports, for the bounce actor.
    pub const INBOUND: &str = "inbound";
    /// Per-campaign stats snapshots after each analytics flush.
    pub const STATS: &str = "stats";
    /// Records that could not be decoded, with the reason.
    pub const DEAD_LETTER: &str = "dead-letter";

    /// The delay topic of retry tier `tier` (0-based).
    pub fn retry(tier: usize) -> String {
        format!("retry.{tier}")
    }
}

/// A request to send one campaign message to one recipient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendRecord {
    pub message_id: MessageId,
    pub tenant: TenantId,
    pub campaign: CampaignId,
    pub recipient: EmailAddress,
    #[serde(default)]
    pub vars: BTreeMap<String, String>,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// When the sender accepted the request; the age limit counts from here.
    pub accepted_at: Timestamp,
    /// A retry is not attempted before this time.
    #[serde(default)]
    pub not_before: Option<Timestamp>,
}

impl SendRecord {
    /// The first attempt of message `message_id` of `campaign` (of `tenant`) to
    /// `recipient`, accepted at `accepted_at`: what intake, keyed sends and the
    /// launcher put on the send topic.
    pub fn first(
        message_id: MessageId,
        tenant: TenantId,
        campaign: CampaignId,
        recipient: EmailAddress,
        vars: BTreeMap<String, String>,
        accepted_at: Timestamp,
    ) -> Self {
        SendRecord {
            message_id,
            tenant,
            campaign,
            recipient,
            vars,
            attempt: 1,
            accepted_at,
            not_before: None,
        }
    }

    /// The next attempt of this message, not before `not_before`.
    pub fn retry(self, not_before: Timestamp) -> Self {
        SendRecord {
            attempt: self.attempt + 1,
            not_before: Some(not_before),
            ..self
        }
    }
}

/// Something for the bounce actor to classify.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum InboundRecord {
    /// A permanent failure reply received while delivering.
    SyncReply {
        message_id: MessageId,
        tenant: TenantId,
        campaign: CampaignId,
        recipient: EmailAddress,
        reply: SmtpReply,
    },
    /// A report (DSN or ARF complaint) the inbound listener received and attributed
    /// to one message.
    Report {
        message_id: MessageId,
        tenant: TenantId,
        campaign: CampaignId,
        recipient: EmailAddress,
        report: ReceivedReport,
    },
}

impl InboundRecord {
    /// The campaign the record belongs to.
    pub fn campaign(&self) -> CampaignId {
        match self {
            InboundRecord::SyncReply { campaign, .. } | InboundRecord::Report { campaign, .. } => {
                *campaign
            }
        }
    }
}

/// What an asynchronous report says about one message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceivedReport {
    pub kind: ReportKind,
    /// The failure reply (from the Diagnostic-Code, or made from the Status) of a bounce
    /// or delay.
    #[serde(default)]
    pub reply: Option<SmtpReply>,
    /// The server that refused the message, when the report names it.
    #[serde(default)]
    pub remote_mta: Option<String>,
    /// The server that wrote the report.
    #[serde(default)]
    pub reporting_mta: Option<String>,
    /// How the report was tied to the message: "verp", "return-path" or "headers".
    pub attributed_by: String,
    /// The bounce analyser's verdict on this recipient (reason, hard or soft, status),
    /// read with the whole report in view (its MTA's format and wording, the SMTP step
    /// that failed). Absent on records written before the analyser: the bounce actor
    /// then classifies the reply alone.
    #[serde(default)]
    pub verdict: Option<ReportVerdict>,
}

/// What the bounce analyser concluded about one recipient of a report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportVerdict {
    pub reason: crate::reply::Reason,
    pub class: crate::domain::event::BounceClass,
    /// The RFC 3463 status the report gave, or the pseudo code for the reason.
    pub status: Option<String>,
    /// The MTA format that read the report (`postfix`, `rfc3464`, `arf`...).
    pub format: Option<String>,
}

/// The kinds of asynchronous report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ReportKind {
    /// A DSN with `Action: failed`: the message bounced after it was accepted.
    Bounce,
    /// A DSN with `Action: delayed`: a relay is still trying.
    Delay,
    /// An ARF report: the recipient (or their provider) complained.
    Complaint { feedback_type: String },
}

/// One event about one message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord {
    pub message_id: MessageId,
    pub tenant: TenantId,
    pub campaign: CampaignId,
    pub recipient: EmailAddress,
    pub at: Timestamp,
    #[serde(flatten)]
    pub kind: EventKind,
}

/// A campaign's stats as of an analytics flush.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsRecord {
    pub tenant: TenantId,
    pub campaign: CampaignId,
    pub stats: CampaignStats,
    pub at: Timestamp,
}

/// A record that cannot be decoded.
#[derive(Debug, thiserror::Error)]
#[error("undecodable {what} record: {source}")]
pub struct DecodeError {
    pub what: &'static str,
    #[source]
    pub source: serde_json::Error,
}

/// Encodes a record for the wire.
pub fn encode<T: Serialize>(record: &T) -> Vec<u8> {
    serde_json::to_vec(record).expect("records serialise to JSON")
}

/// Decodes a record, naming the record type on failure.
pub fn decode<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T, DecodeError> {
    serde_json::from_slice(bytes).map_err(|source| DecodeError { what, source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::event::BounceClass;
    use crate::reply::Reason;

    #[test]
    fn event_records_round_trip() {
        let e = EventRecord {
            message_id: MessageId::new(),
            tenant: TenantId::parse("acme").unwrap(),
            campaign: CampaignId::new(),
            recipient: EmailAddress::parse("a@b.org").unwrap(),
            at: Timestamp(1),
            kind: EventKind::Bounced {
                class: BounceClass::Hard,
                reason: Reason::UserUnknown,
                status: Some("5.1.1".into()),
                reply: "550 5.1.1 no".into(),
            },
        };
        let back: EventRecord = decode("event", &encode(&e)).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn a_bad_address_in_a_record_is_a_decode_error() {
        let raw = br#"{"message_id":"6c8f6f5e-8a1d-4c39-9f55-3f5e2c1a0b11","tenant":"acme","campaign":"6c8f6f5e-8a1d-4c39-9f55-3f5e2c1a0b11","recipient":"not an address","attempt":1,"accepted_at":0}"#;
        let err = decode::<SendRecord>("send", raw).unwrap_err();
        assert!(err.to_string().starts_with("undecodable send record"));
    }
}
