//! The stuck-work detector: a partition that has records waiting in a stage's topic and
//! whose stored position has not moved for `stall_after` is reported, so a stall is
//! never silent. It watches what the store says was processed (the same offsets a
//! restart resumes from), not what an actor believes, so an actor stuck inside a step
//! shows as well as a reader that receives nothing.
//!
//! Each process watches only the partitions it owns. A stalled partition is logged
//! once as a warning (stage, topic, partition, position, end, for how long) and counted
//! in `maily_stalled_partitions{stage}`; its recovery is logged too. Retry tiers are
//! not watched: their records wait for their due time by design.

use crate::common::Feed;
use maily_engine::records::topics;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// The consuming stages and the topic each reads.
pub const STAGES: [(&str, &str); 3] = [
    ("sender", topics::SEND),
    ("bounce", topics::INBOUND),
    ("analytics", topics::EVENTS),
];

/// What the detector remembers of one stage's partition.
struct Progress {
    position: u64,
    since: Instant,
    stalled: bool,
}

/// Progress per stage and partition, checked a round at a time.
pub struct Watchdog {
    stall_after: Duration,
    seen: HashMap<(&'static str, u32), Progress>,
}

impl Watchdog {
    pub fn new(stall_after: Duration) -> Self {
        Watchdog {
            stall_after,
            seen: HashMap::new(),
        }
    }

    /// How often [`Watchdog::check`] should run: often enough to report a stall soon
    /// after `stall_after`, rarely enough to cost the log and store nothing to speak of.
    pub fn interval(&self) -> Duration {
        (self.stall_after / 4).clamp(Duration::from_secs(1), Duration::from_secs(30))
    }

    /// One round over the `owned` partitions. Errors reading the store or the log are
    /// skipped: the outage has its own metrics, and the next round tries again.
    pub async fn check(&mut self, feed: &Feed, owned: &[u32]) {
        let now = Instant::now();
        self.seen.retain(|(_, p), _| owned.contains(p));
        for (stage, topic) in STAGES {
            let Ok(stored) = feed.outcomes.load_offsets(stage, topic).await else {
                continue;
            };
            let mut stalled = 0u64;
            for &p in owned {
                let position = stored.get(&p).copied().unwrap_or(0);
                let Ok(end) = feed.log.end_offset(topic, p).await else {
                    continue;
                };
                let entry = self.seen.entry((stage, p)).or_insert(Progress {
                    position,
                    since: now,
                    stalled: false,
                });
                if position != entry.position || end <= position {
                    if entry.stalled {
                        info!(
                            stage,
                            topic,
                            partition = p,
                            position,
                            "partition making progress again"
                        );
                    }
                    *entry = Progress {
                        position,
                        since: now,
                        stalled: false,
                    };
                    continue;
                }
                let idle = now.duration_since(entry.since);
                if idle >= self.stall_after {
                    if !entry.stalled {
                        warn!(
                            stage,
                            topic,
                            partition = p,
                            position,
                            end,
                            waiting = end - position,
                            stalled_for = ?idle,
                            "partition has unfinished work and made no progress"
                        );
                    }
                    entry.stalled = true;
                    stalled += 1;
                }
            }
            metrics::gauge!("maily_stalled_partitions", "stage" => stage).set(stalled as f64);
        }
    }
}
