//! Per-campaign counters.

use super::event::EventKind;
use serde::{Deserialize, Serialize};

/// Per-campaign counts of messages by what happened to them; each message counts at
/// most once per kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CampaignStats {
    pub injected: u64,
    pub delivered: u64,
    pub deferred: u64,
    pub bounced_hard: u64,
    pub bounced_soft: u64,
    pub expired: u64,
    pub opened: u64,
    pub clicked: u64,
    pub unsubscribed: u64,
    pub complained: u64,
    pub rejected: u64,
    pub suppressed: u64,
}

impl CampaignStats {
    /// Counts one event.
    pub fn apply(&mut self, kind: &EventKind) {
        *self.counter_mut(kind) += 1;
    }

    fn counter_mut(&mut self, kind: &EventKind) -> &mut u64 {
        use super::event::BounceClass::*;
        match kind {
            EventKind::Injected => &mut self.injected,
            EventKind::Delivered => &mut self.delivered,
            EventKind::Deferred { .. } => &mut self.deferred,
            EventKind::Bounced { class: Hard, .. } => &mut self.bounced_hard,
            EventKind::Bounced { class: Soft, .. } => &mut self.bounced_soft,
            EventKind::Expired { .. } => &mut self.expired,
            EventKind::Opened => &mut self.opened,
            EventKind::Clicked { .. } => &mut self.clicked,
            EventKind::Unsubscribed => &mut self.unsubscribed,
            EventKind::Complained => &mut self.complained,
            EventKind::Rejected { .. } => &mut self.rejected,
            EventKind::Suppressed => &mut self.suppressed,
        }
    }

    /// Messages that reached a final state.
    pub fn finished(&self) -> u64 {
        self.delivered
            + self.bounced_hard
            + self.bounced_soft
            + self.expired
            + self.rejected
            + self.suppressed
    }

    /// All bounces, hard and soft.
    pub fn bounced(&self) -> u64 {
        self.bounced_hard + self.bounced_soft
    }

    /// The counters in their canonical order (used by leaf encoding and storage).
    /// Adds `other`'s counters to these (a campaign's parts summed).
    pub fn add(&mut self, other: &CampaignStats) {
        let (mut a, b) = (self.to_array(), other.to_array());
        for (x, y) in a.iter_mut().zip(b) {
            *x = x.saturating_add(y);
        }
        *self = CampaignStats::from_array(a);
    }

    pub fn to_array(&self) -> [u64; 12] {
        [
            self.injected,
            self.delivered,
            self.deferred,
            self.bounced_hard,
            self.bounced_soft,
            self.expired,
            self.opened,
            self.clicked,
            self.unsubscribed,
            self.complained,
            self.rejected,
            self.suppressed,
        ]
    }

    /// The inverse of [`CampaignStats::to_array`].
    pub fn from_array(a: [u64; 12]) -> Self {
        CampaignStats {
            injected: a[0],
            delivered: a[1],
            deferred: a[2],
            bounced_hard: a[3],
            bounced_soft: a[4],
            expired: a[5],
            opened: a[6],
            clicked: a[7],
            unsubscribed: a[8],
            complained: a[9],
            rejected: a[10],
            suppressed: a[11],
        }
    }

    /// The counter names in canonical order.
    pub const FIELDS: [&'static str; 12] = [
        "injected",
        "delivered",
        "deferred",
        "bounced_hard",
        "bounced_soft",
        "expired",
        "opened",
        "clicked",
        "unsubscribed",
        "complained",
        "rejected",
        "suppressed",
    ];
}

/// How many of a campaign's messages ended bounced for one reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReasonCount {
    /// The reason in Sisimai's vocabulary (`userunknown`, `mailboxfull`...).
    pub reason: String,
    /// Whether these bounces were hard.
    pub hard: bool,
    pub count: u64,
}

/// The reason of a bounced message's stored detail (`"<reason>: <reply>"`).
pub fn bounce_reason_of(detail: Option<&str>) -> &str {
    detail
        .and_then(|d| d.split_once(':'))
        .map_or("unknown", |(reason, _)| reason.trim())
}

/// Counts `(reason, hard)` pairs, most frequent first, then by reason.
pub fn count_reasons<'a>(bounces: impl IntoIterator<Item = (&'a str, bool)>) -> Vec<ReasonCount> {
    let mut counts: std::collections::BTreeMap<(&str, bool), u64> = Default::default();
    for key in bounces {
        *counts.entry(key).or_default() += 1;
    }
    let mut out: Vec<ReasonCount> = counts
        .into_iter()
        .map(|((reason, hard), count)| ReasonCount {
            reason: reason.to_string(),
            hard,
            count,
        })
        .collect();
    by_frequency(&mut out);
    out
}

/// Orders counts most frequent first, then by reason: the order the store reports.
pub fn by_frequency(counts: &mut [ReasonCount]) {
    counts.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.reason.cmp(&b.reason)));
}
