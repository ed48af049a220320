//! What can happen to a message, as recorded in the events topic.

use crate::reply::Reason;
use serde::{Deserialize, Serialize};

/// Whether a bounce means the address is dead (hard) or this message failed (soft).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BounceClass {
    Hard,
    Soft,
}

/// One thing that happened to one message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EventKind {
    /// Handed to the transport.
    Injected,
    /// The receiving server answered 250 to the data.
    Delivered,
    /// A temporary failure; the message will be retried.
    Deferred {
        attempt: u32,
        reply: String,
    },
    /// A permanent failure.
    Bounced {
        class: BounceClass,
        reason: Reason,
        status: Option<String>,
        reply: String,
    },
    /// Retried until its age limit without success.
    Expired {
        attempts: u32,
    },
    Opened,
    Clicked {
        url: String,
    },
    Unsubscribed,
    Complained,
    /// Not sent: the message could not be built for this recipient.
    Rejected {
        reason: String,
    },
    /// Not sent: the recipient is on the tenant's suppression list.
    Suppressed,
}

impl EventKind {
    /// A stable bit per kind, used to apply each kind at most once per message.
    pub fn bit(&self) -> u32 {
        1 << match self {
            EventKind::Injected => 0,
            EventKind::Delivered => 1,
            EventKind::Deferred { .. } => 2,
            EventKind::Bounced {
                class: BounceClass::Hard,
                ..
            } => 3,
            EventKind::Bounced {
                class: BounceClass::Soft,
                ..
            } => 4,
            EventKind::Expired { .. } => 5,
            EventKind::Opened => 6,
            EventKind::Clicked { .. } => 7,
            EventKind::Unsubscribed => 8,
            EventKind::Complained => 9,
            EventKind::Rejected { .. } => 10,
            EventKind::Suppressed => 11,
        }
    }

    /// The kind's name, as used in metrics and tables.
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::Injected => "injected",
            EventKind::Delivered => "delivered",
            EventKind::Deferred { .. } => "deferred",
            EventKind::Bounced {
                class: BounceClass::Hard,
                ..
            } => "bounced_hard",
            EventKind::Bounced {
                class: BounceClass::Soft,
                ..
            } => "bounced_soft",
            EventKind::Expired { .. } => "expired",
            EventKind::Opened => "opened",
            EventKind::Clicked { .. } => "clicked",
            EventKind::Unsubscribed => "unsubscribed",
            EventKind::Complained => "complained",
            EventKind::Rejected { .. } => "rejected",
            EventKind::Suppressed => "suppressed",
        }
    }

    /// True when no further delivery attempt follows this event.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            EventKind::Delivered
                | EventKind::Bounced { .. }
                | EventKind::Expired { .. }
                | EventKind::Rejected { .. }
                | EventKind::Suppressed
        )
    }

    /// A human-readable detail (reply text, reason), if the kind carries one.
    pub fn detail(&self) -> Option<String> {
        match self {
            EventKind::Deferred { reply, .. } => Some(reply.clone()),
            EventKind::Bounced { reason, reply, .. } => Some(format!("{reason}: {reply}")),
            EventKind::Rejected { reason } => Some(reason.clone()),
            EventKind::Clicked { url } => Some(url.clone()),
            _ => None,
        }
    }
}

/// Final kinds in the order a message's status prefers them.
const FINAL_PRIORITY: [(u32, &str); 6] = [
    (1 << 3, "bounced_hard"),
    (1 << 4, "bounced_soft"),
    (1 << 5, "expired"),
    (1 << 10, "rejected"),
    (1 << 11, "suppressed"),
    (1 << 1, "delivered"),
];

/// A message's status from the kinds applied to it: its final kind if it has one
/// (a bounce after a 250 wins over the delivery), else the latest non-final kind.
pub fn status_from_mask(mask: u32, latest: &EventKind) -> &'static str {
    FINAL_PRIORITY
        .iter()
        .find(|(bit, _)| mask & bit != 0)
        .map(|(_, name)| *name)
        .unwrap_or(latest.name())
}
