//! The in-memory hot state: the embedded adapter of [`HotState`], for single-node
//! deployments and tests.
//!
//! Idempotency keys live in a few mutex-guarded shards so concurrent senders rarely
//! wait on each other. Expiry is measured with [`Instant`], not the caller's
//! timestamps, so a wrong wall clock can neither keep a claim alive nor end it early.
//! Expired keys are dropped when next touched and by an occasional sweep of their
//! shard, which keeps memory proportional to the keys still alive.

use async_trait::async_trait;
use maily_engine::ports::{Claim, HotError, HotState};
use maily_engine::{CampaignId, CampaignStats, EmailAddress, TenantId, Timestamp};
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, RandomState};
use std::sync::{Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, Instant};

/// Independent locks for idempotency keys.
const SHARDS: usize = 16;

/// A shard is swept once it holds this many keys, then each time it doubles.
const MIN_SWEEP_LEN: usize = 1024;

/// A [`HotState`] held in this process's memory; lost on restart, like a cache.
#[derive(Debug)]
pub struct MemoryHotState {
    hasher: RandomState,
    shards: Box<[Mutex<KeyShard>]>,
    suppressed: RwLock<HashMap<TenantId, HashSet<EmailAddress>>>,
    live: RwLock<HashMap<CampaignId, std::collections::BTreeMap<u32, CampaignStats>>>,
    buckets: Mutex<HashMap<String, Bucket>>,
}

/// A token bucket: tokens held at `at`.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

#[derive(Debug)]
struct KeyShard {
    keys: HashMap<String, KeyEntry>,
    /// Length at which the next sweep of expired keys runs.
    sweep_at: usize,
}

#[derive(Debug)]
struct KeyEntry {
    state: KeyState,
    expires: Instant,
}

#[derive(Debug)]
enum KeyState {
    InFlight { since: Timestamp },
    Done { outcome: String },
}

impl KeyShard {
    /// Drops expired keys once the shard has grown enough to make a full pass cheap
    /// per insert (amortised O(1)).
    fn maybe_sweep(&mut self, now: Instant) {
        if self.keys.len() < self.sweep_at {
            return;
        }
        self.keys.retain(|_, e| e.expires > now);
        self.sweep_at = (self.keys.len() * 2).max(MIN_SWEEP_LEN);
    }
}

impl Default for MemoryHotState {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryHotState {
    /// An empty hot state.
    pub fn new() -> Self {
        MemoryHotState {
            hasher: RandomState::new(),
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(KeyShard {
                        keys: HashMap::new(),
                        sweep_at: MIN_SWEEP_LEN,
                    })
                })
                .collect(),
            suppressed: RwLock::new(HashMap::new()),
            live: RwLock::new(HashMap::new()),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn shard(&self, key: &str) -> MutexGuard<'_, KeyShard> {
        let i = (self.hasher.hash_one(key) % SHARDS as u64) as usize;
        // Every update below leaves the maps consistent before anything can panic, so a
        // poisoned lock still guards valid data.
        self.shards[i]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Idempotency keys currently held, expired ones not yet swept included.
    pub fn key_count(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).keys.len())
            .sum()
    }
}

/// `now + ttl`, saturating far in the future for absurd time-to-live values.
fn deadline(now: Instant, ttl: Duration) -> Instant {
    now.checked_add(ttl)
        .or_else(|| now.checked_add(Duration::from_secs(100 * 365 * 24 * 3600)))
        .unwrap_or(now)
}

#[async_trait]
impl HotState for MemoryHotState {
    async fn claim(&self, key: &str, now: Timestamp, ttl: Duration) -> Result<Claim, HotError> {
        let clock = Instant::now();
        let mut shard = self.shard(key);
        if let Some(entry) = shard.keys.get(key).filter(|e| e.expires > clock) {
            return Ok(match &entry.state {
                KeyState::InFlight { since } => Claim::InFlight {
                    since: *since,
                    // One process holds the whole in-memory state.
                    mine: true,
                },
                KeyState::Done { outcome } => Claim::Done {
                    outcome: outcome.clone(),
                },
            });
        }
        shard.maybe_sweep(clock);
        shard.keys.insert(
            key.to_string(),
            KeyEntry {
                state: KeyState::InFlight { since: now },
                expires: deadline(clock, ttl),
            },
        );
        Ok(Claim::Acquired)
    }

    async fn complete(&self, key: &str, outcome: &str, ttl: Duration) -> Result<(), HotError> {
        let clock = Instant::now();
        let mut shard = self.shard(key);
        shard.maybe_sweep(clock);
        shard.keys.insert(
            key.to_string(),
            KeyEntry {
                state: KeyState::Done {
                    outcome: outcome.to_string(),
                },
                expires: deadline(clock, ttl),
            },
        );
        Ok(())
    }

    async fn release(&self, key: &str) -> Result<(), HotError> {
        let mut shard = self.shard(key);
        // Only a claim is released: a recorded outcome must keep repeats from redoing work.
        if matches!(
            shard.keys.get(key).map(|e| &e.state),
            Some(KeyState::InFlight { .. })
        ) {
            shard.keys.remove(key);
        }
        Ok(())
    }

    async fn suppress(&self, tenant: &TenantId, email: &EmailAddress) -> Result<(), HotError> {
        let mut sets = self
            .suppressed
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        sets.entry(tenant.clone())
            .or_default()
            .insert(email.mailbox_key());
        Ok(())
    }

    async fn unsuppress(&self, tenant: &TenantId, email: &EmailAddress) -> Result<(), HotError> {
        let mut sets = self
            .suppressed
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(set) = sets.get_mut(tenant) {
            set.remove(&email.mailbox_key());
        }
        Ok(())
    }

    async fn is_suppressed(
        &self,
        tenant: &TenantId,
        email: &EmailAddress,
    ) -> Result<bool, HotError> {
        let sets = self
            .suppressed
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        Ok(sets
            .get(tenant)
            .is_some_and(|s| s.contains(&email.mailbox_key())))
    }

    async fn set_live_stats(
        &self,
        campaign: &CampaignId,
        part: u32,
        stats: &CampaignStats,
    ) -> Result<(), HotError> {
        self.live
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(*campaign)
            .or_default()
            .insert(part, *stats);
        Ok(())
    }

    async fn live_stats(&self, campaign: &CampaignId) -> Result<Option<CampaignStats>, HotError> {
        Ok(self
            .live
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(campaign)
            .map(|parts| {
                let mut sum = CampaignStats::default();
                parts.values().for_each(|s| sum.add(s));
                sum
            }))
    }

    async fn take_tokens(
        &self,
        bucket: &str,
        rate: f64,
        burst: u64,
        n: u64,
    ) -> Result<Duration, HotError> {
        if n > burst {
            return Err(HotError::Invalid(format!(
                "{n} tokens asked of bucket {bucket:?} whose burst is {burst}"
            )));
        }
        if !(rate > 0.0 && rate.is_finite()) {
            return Err(HotError::Invalid(format!(
                "refill rate {rate} of bucket {bucket:?} is not positive"
            )));
        }
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        let b = buckets.entry(bucket.to_string()).or_insert(Bucket {
            tokens: burst as f64,
            at: now,
        });
        let refilled = (b.tokens + now.duration_since(b.at).as_secs_f64() * rate).min(burst as f64);
        *b = Bucket {
            tokens: refilled,
            at: now,
        };
        if refilled >= n as f64 {
            b.tokens -= n as f64;
            Ok(Duration::ZERO)
        } else {
            Ok(Duration::from_secs_f64((n as f64 - refilled) / rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn expired_keys_are_swept_so_memory_stays_bounded() {
        let hot = MemoryHotState::new();
        let short = Duration::from_millis(1);
        for round in 0..6 {
            for i in 0..(SHARDS * MIN_SWEEP_LEN) {
                let key = format!("r{round}-k{i}");
                hot.claim(&key, Timestamp(0), short).await.unwrap();
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Without sweeping, six rounds would hold 6 * SHARDS * MIN_SWEEP_LEN keys; with
        // it, the live round plus what a shard may hold before its next sweep.
        assert!(
            hot.key_count() <= 3 * SHARDS * MIN_SWEEP_LEN,
            "{} keys held",
            hot.key_count()
        );
    }

    #[tokio::test]
    async fn release_keeps_a_recorded_outcome() {
        let hot = MemoryHotState::new();
        let ttl = Duration::from_secs(60);
        assert_eq!(
            hot.claim("k", Timestamp(1), ttl).await.unwrap(),
            Claim::Acquired
        );
        hot.complete("k", "delivered", ttl).await.unwrap();
        hot.release("k").await.unwrap();
        assert_eq!(
            hot.claim("k", Timestamp(2), ttl).await.unwrap(),
            Claim::Done {
                outcome: "delivered".into()
            }
        );
    }

    #[test]
    fn huge_ttls_do_not_overflow() {
        let now = Instant::now();
        assert!(deadline(now, Duration::MAX) > now);
    }
}
