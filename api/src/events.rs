//! The event feed: one reader follows the events topic and fans the records out to
//! every subscriber (gRPC `StreamEvents`), each of which sees only its tenant's events.
//!
//! One reader serves all subscribers, so a thousand followers cost one consumer. The
//! hub reads with its own [`EventLog`] handle (the binary gives it a separate Kafka
//! consumer), never the one the actors consume with. Subscribers get events recorded
//! after they subscribed. A subscriber that falls more than [`BUFFER`] events behind
//! is told how many it missed and its stream ends, rather than slowing the others.
//! The reader commits its position under the group [`GROUP`], so lag tools show it
//! and the embedded log keeps events until the feed has read them.

use maily_engine::ports::{EventLog, LogError};
use maily_engine::records::{self, EventRecord, topics};
use maily_engine::{CampaignId, TenantId};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;
use tracing::{debug, warn};

/// Events a subscriber may fall behind by before its stream ends.
pub const BUFFER: usize = 65_536;

/// The consumer group the feed commits its position under.
pub const GROUP: &str = "event-feed";

/// Records fetched per partition per round.
const FETCH_MAX: usize = 5000;

/// What the reader hands to subscribers.
#[derive(Debug, Clone)]
enum Item {
    Event(Arc<EventRecord>),
    /// The log dropped this many events before the reader got them.
    Gap(u64),
}

/// Follows the events topic for subscribers.
pub struct EventHub {
    tx: broadcast::Sender<Item>,
}

/// What a subscriber wants to see.
#[derive(Debug, Clone)]
pub struct EventFilter {
    /// Only this tenant's events; `None` for operators, who see every tenant's.
    pub tenant: Option<TenantId>,
    /// Only this campaign's events.
    pub campaign: Option<CampaignId>,
}

impl EventFilter {
    /// Whether `e` passes the filter.
    pub fn admits(&self, e: &EventRecord) -> bool {
        self.tenant.as_ref().is_none_or(|t| *t == e.tenant)
            && self.campaign.is_none_or(|c| c == e.campaign)
    }
}

/// Why a subscription ended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FeedError {
    #[error("the subscriber fell behind by {0} events; subscribe again")]
    Lagged(u64),
    #[error("the event feed stopped")]
    Closed,
}

/// One subscriber's view of the feed.
pub struct Subscription {
    rx: broadcast::Receiver<Item>,
    filter: EventFilter,
}

impl Subscription {
    /// The next event that passes the filter.
    pub async fn next(&mut self) -> Result<Arc<EventRecord>, FeedError> {
        loop {
            match self.rx.recv().await {
                Ok(Item::Event(e)) if self.filter.admits(&e) => return Ok(e),
                Ok(Item::Event(_)) => continue,
                Ok(Item::Gap(n)) => return Err(FeedError::Lagged(n)),
                Err(broadcast::error::RecvError::Lagged(n)) => return Err(FeedError::Lagged(n)),
                Err(broadcast::error::RecvError::Closed) => return Err(FeedError::Closed),
            }
        }
    }
}

impl EventHub {
    /// Starts following the events topic from its current end with `log`. The
    /// reader stops when the hub and every subscription are dropped.
    pub async fn start(log: Arc<dyn EventLog>) -> Result<Arc<EventHub>, LogError> {
        let partitions = log.partitions(topics::EVENTS).await?;
        let mut next = Vec::with_capacity(partitions as usize);
        for p in 0..partitions {
            let end = log.end_offset(topics::EVENTS, p).await?;
            // Registers the feed's position at once, so the embedded log keeps what
            // comes next until the feed has read it.
            log.commit(GROUP, topics::EVENTS, p, end).await?;
            next.push(end);
        }
        let (tx, _) = broadcast::channel(BUFFER);
        let hub = Arc::new(EventHub { tx: tx.clone() });
        let weak = Arc::downgrade(&hub);
        tokio::spawn(async move {
            // Wait for new records only when a whole round found none, and then spread
            // the wait over the partitions: an idle topic costs a few fetches a second,
            // a busy one is read without waiting.
            let idle_wait = Duration::from_millis(200 / u64::from(partitions.max(1)))
                .max(Duration::from_millis(10));
            let mut wait = Duration::ZERO;
            loop {
                if weak.strong_count() == 0 && tx.receiver_count() == 0 {
                    debug!("event feed reader stopping");
                    return;
                }
                let mut got = 0;
                for (p, offset) in next.iter_mut().enumerate() {
                    let fetched = match log
                        .fetch(topics::EVENTS, p as u32, *offset, FETCH_MAX, wait)
                        .await
                    {
                        Ok(r) => r,
                        Err(LogError::OffsetOutOfRange { earliest, .. }) => {
                            // Retention dropped events before the reader got to them:
                            // subscribers are told, and reading goes on from what is left.
                            warn!(
                                partition = p,
                                lost = earliest - *offset,
                                "event feed fell behind the log's retention"
                            );
                            metrics::counter!("maily_event_feed_gaps_total").increment(1);
                            let _ = tx.send(Item::Gap(earliest - *offset));
                            *offset = earliest;
                            continue;
                        }
                        Err(e) => {
                            warn!(error = %e, partition = p, "event feed: fetch failed; retrying");
                            metrics::counter!("maily_event_feed_errors_total").increment(1);
                            tokio::time::sleep(Duration::from_secs(1)).await;
                            continue;
                        }
                    };
                    got += fetched.len();
                    let read = !fetched.is_empty();
                    for rec in fetched {
                        *offset = rec.offset + 1;
                        for item in records::decode_many::<EventRecord>("event", &rec.payload) {
                            match item {
                                // No subscriber: nothing to do, not an error.
                                Ok(e) => drop(tx.send(Item::Event(Arc::new(e)))),
                                Err(bad) => {
                                    debug!(error = %bad.error, "event feed: undecodable event skipped")
                                }
                            }
                        }
                    }
                    // The feed's position, for lag tools; the embedded log also keeps
                    // records until the feed has read them.
                    if read
                        && let Err(e) = log.commit(GROUP, topics::EVENTS, p as u32, *offset).await
                    {
                        debug!(error = %e, "event feed: committing its position failed");
                    }
                }
                wait = if got == 0 { idle_wait } else { Duration::ZERO };
            }
        });
        Ok(hub)
    }

    /// Subscribes to the events recorded from now on that pass `filter`.
    pub fn subscribe(&self, filter: EventFilter) -> Subscription {
        Subscription {
            rx: self.tx.subscribe(),
            filter,
        }
    }
}
