//! The payloads carried by each topic, and their wire codec (JSON).
//!
//! Every record is keyed by its campaign id so one campaign's records share a partition
//! and its state has exactly one writer.
//!
//! A log record carries one payload (a JSON object) or many of the same topic and key
//! (a JSON array of them): the launcher puts a chunk of recipients in one `send`
//! record, and each stage emits its events as one record per campaign and batch, so a
//! broker handles a few records per thousand messages rather than several per message.
//! [`pack`] builds the arrays, bounded in bytes; [`decode_many`] reads either form and
//! names each item it cannot read, so one bad item never costs its neighbours.

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
    /// The message the record is about.
    pub fn message_id(&self) -> MessageId {
        match self {
            InboundRecord::SyncReply { message_id, .. }
            | InboundRecord::Report { message_id, .. } => *message_id,
        }
    }

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
    /// The part of the campaign's figures this is (the analytics partition that
    /// counts them); a campaign's stats are the latest record of each part, summed.
    #[serde(default)]
    pub part: u32,
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

/// The most bytes [`pack`] puts in one payload: well under the 1 MB a Kafka broker
/// takes by default (`message.max.bytes`), whatever the compression.
pub const MAX_PACKED_BYTES: usize = 256 * 1024;

/// The most messages one `send` (or retry) record carries. A record is the unit of
/// the sender's progress (a crash replays it whole), so this also bounds what a
/// replay without hot state's claims can send again, with `sender.batch_size`.
pub const SEND_ITEMS_PER_RECORD: usize = 100;

/// The most payloads one record of `topic` carries: [`SEND_ITEMS_PER_RECORD`] on the
/// send and retry topics, [`ITEMS_PER_RECORD`] elsewhere (and at most
/// [`MAX_PACKED_BYTES`]), small enough that a consumer's buffer takes a record
/// whole without growing much past its bound.
pub fn items_per_record(topic: &str) -> usize {
    if topic == topics::SEND || topic.starts_with("retry.") {
        SEND_ITEMS_PER_RECORD
    } else {
        ITEMS_PER_RECORD
    }
}

/// The most payloads a record of a topic other than `send` and retries carries.
pub const ITEMS_PER_RECORD: usize = 512;

/// Packs encoded payloads (each from [`encode`]) into as few payloads as fit in
/// `max_bytes` and `max_items` each: a JSON array of them, or the payload itself when
/// it is alone (or larger than `max_bytes` on its own). Order is kept.
pub fn pack(
    encoded: impl IntoIterator<Item = Vec<u8>>,
    max_bytes: usize,
    max_items: usize,
) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut group: Vec<Vec<u8>> = Vec::new();
    let mut size = 0;
    let close = |group: &mut Vec<Vec<u8>>, out: &mut Vec<Vec<u8>>| match group.len() {
        0 => {}
        1 => out.extend(group.pop()),
        _ => {
            let len = group.iter().map(|g| g.len() + 1).sum::<usize>() + 1;
            let mut array = Vec::with_capacity(len);
            array.push(b'[');
            for (i, item) in group.drain(..).enumerate() {
                if i > 0 {
                    array.push(b',');
                }
                array.extend_from_slice(&item);
            }
            array.push(b']');
            out.push(array);
        }
    };
    for item in encoded {
        if !group.is_empty() && (size + item.len() + 1 > max_bytes || group.len() >= max_items) {
            close(&mut group, &mut out);
            size = 0;
        }
        size += item.len() + 1;
        group.push(item);
    }
    close(&mut group, &mut out);
    out
}

/// `payloads` packed as [`pack`] does, each record keyed by `key`: what a producer
/// hands the log for one topic and key.
pub fn pack_keyed(key: &[u8], payloads: Vec<Vec<u8>>, max_items: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
    pack(payloads, MAX_PACKED_BYTES, max_items)
        .into_iter()
        .map(|p| (key.to_vec(), p))
        .collect()
}

/// The items of a payload that holds one record or an array of them, each decoded on
/// its own: an item that does not decode is an error in its place, with the item's
/// text, and the others are kept. A payload that is not JSON at all is one error.
pub fn decode_many<T: DeserializeOwned>(
    what: &'static str,
    bytes: &[u8],
) -> Vec<Result<T, ItemError>> {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'[') {
        return vec![decode(what, bytes).map_err(|error| ItemError {
            error,
            item: bytes.to_vec(),
        })];
    }
    match serde_json::from_slice::<Vec<&serde_json::value::RawValue>>(bytes) {
        Ok(items) => items
            .into_iter()
            .map(|raw| {
                decode(what, raw.get().as_bytes()).map_err(|error| ItemError {
                    error,
                    item: raw.get().as_bytes().to_vec(),
                })
            })
            .collect(),
        Err(source) => vec![Err(ItemError {
            error: DecodeError { what, source },
            item: bytes.to_vec(),
        })],
    }
}

/// An item of a payload that does not decode, with its bytes.
#[derive(Debug)]
pub struct ItemError {
    pub error: DecodeError,
    pub item: Vec<u8>,
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

    fn event(n: u64) -> EventRecord {
        EventRecord {
            message_id: MessageId::new(),
            tenant: TenantId::parse("acme").unwrap(),
            campaign: CampaignId::new(),
            recipient: EmailAddress::parse("a@b.org").unwrap(),
            at: Timestamp(n as i64),
            kind: EventKind::Delivered,
        }
    }

    #[test]
    fn packed_payloads_keep_every_item_in_order_within_the_byte_bound() {
        let events: Vec<EventRecord> = (0..500).map(event).collect();
        let one = encode(&events[0]).len();
        let packed = pack(events.iter().map(encode), 40 * one, usize::MAX);
        assert!(packed.len() > 1 && packed.len() < 30, "{}", packed.len());
        assert!(packed.iter().all(|p| p.len() <= 40 * one + 2));
        let back: Vec<EventRecord> = packed
            .iter()
            .flat_map(|p| decode_many::<EventRecord>("event", p))
            .map(Result::unwrap)
            .collect();
        assert_eq!(back, events);
        // Alone, a payload stays the object it was, which a reader of single records
        // takes as before.
        let single = pack([encode(&events[0])], MAX_PACKED_BYTES, 100);
        assert_eq!(single, vec![encode(&events[0])]);
        let read: Vec<_> = decode_many::<EventRecord>("event", &single[0]);
        assert_eq!(
            read.into_iter().map(Result::unwrap).collect::<Vec<_>>(),
            vec![events[0].clone()]
        );
        // Larger than the bound on its own: still sent, alone.
        assert_eq!(
            pack([encode(&events[0]), encode(&events[1])], 10, 100).len(),
            2
        );
        // And at most `max_items` to a record.
        let packed = pack(events.iter().map(encode), MAX_PACKED_BYTES, 100);
        assert_eq!(packed.len(), 5);
        assert!(
            packed
                .iter()
                .all(|p| decode_many::<EventRecord>("event", p).len() == 100)
        );
    }

    #[test]
    fn a_bad_item_in_a_packed_payload_costs_only_itself() {
        let (a, b) = (event(1), event(2));
        let payload = format!(
            "[{},{{\"message_id\":\"nope\"}},{}]",
            String::from_utf8(encode(&a)).unwrap(),
            String::from_utf8(encode(&b)).unwrap()
        );
        let read = decode_many::<EventRecord>("event", payload.as_bytes());
        assert_eq!(read.len(), 3);
        assert_eq!(read[0].as_ref().unwrap(), &a);
        let bad = read[1].as_ref().unwrap_err();
        assert!(
            bad.error
                .to_string()
                .starts_with("undecodable event record")
        );
        assert_eq!(bad.item, br#"{"message_id":"nope"}"#);
        assert_eq!(read[2].as_ref().unwrap(), &b);
        // Not JSON at all: one error for the payload.
        let read = decode_many::<EventRecord>("event", b"[\xff not json");
        assert_eq!(read.len(), 1);
        assert!(read[0].is_err());
    }

    #[test]
    fn a_bad_address_in_a_record_is_a_decode_error() {
        let raw = br#"{"message_id":"6c8f6f5e-8a1d-4c39-9f55-3f5e2c1a0b11","tenant":"acme","campaign":"6c8f6f5e-8a1d-4c39-9f55-3f5e2c1a0b11","recipient":"not an address","attempt":1,"accepted_at":0}"#;
        let err = decode::<SendRecord>("send", raw).unwrap_err();
        assert!(err.to_string().starts_with("undecodable send record"));
    }
}
