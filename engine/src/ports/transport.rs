//! The transport port: hand one message to the destination's server.

use crate::domain::{
    address::EmailAddress,
    ids::{MessageId, TenantId},
};
use crate::reply::SmtpReply;
use async_trait::async_trait;
use std::sync::Arc;
use std::time::Duration;

/// A built message with its envelope.
#[derive(Debug, Clone)]
pub struct OutboundMessage {
    pub message_id: MessageId,
    /// Whose mail it is; tenant limits and source-IP pools apply by it.
    pub tenant: TenantId,
    /// Envelope sender (MAIL FROM), the return path for bounces.
    pub mail_from: EmailAddress,
    /// Envelope recipient (RCPT TO).
    pub rcpt_to: EmailAddress,
    /// The RFC 5322 message, CRLF line ends, not dot-stuffed.
    pub data: Arc<[u8]>,
    /// Asked just before the transaction starts (after any wait for a connection):
    /// when it says no, the transport sends nothing and answers `Transient`.
    pub guard: Option<Arc<dyn SendGuard>>,
}

/// Whether a message may still be sent, e.g. because the sender still holds the lease
/// of its partition.
pub trait SendGuard: Send + Sync + std::fmt::Debug {
    /// True while sending is allowed.
    fn may_send(&self) -> bool;
}

/// What became of one delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// The server accepted the message.
    Delivered { reply: SmtpReply },
    /// Try again later: a 4xx reply, or no conversation could be had.
    Transient {
        reply: Option<SmtpReply>,
        error: String,
    },
    /// The server refused the message for good (5xx).
    Permanent { reply: SmtpReply },
}

/// How the limits on a destination would hold a message back if it started now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pace {
    /// How long it would wait before it may start.
    pub wait: Duration,
    /// The spacing the binding limit keeps between messages.
    pub spacing: Duration,
}

/// Delivers messages; implementations pool connections and enforce limits.
#[async_trait]
pub trait Transport: Send + Sync + 'static {
    /// Attempts delivery of one message.
    async fn deliver(&self, message: &OutboundMessage) -> DeliveryOutcome;

    /// How the rate limits on mail from `tenant` to `domain` would hold a message
    /// back if it started now, without reserving anything; `None` when no rate limit
    /// applies. A sender defers a message that would wait long rather than hold a
    /// place in its window.
    fn pace(&self, _tenant: &TenantId, _domain: &str) -> Option<Pace> {
        None
    }
}
