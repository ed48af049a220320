//! The in-memory hot state: the embedded adapter of [`HotState`], for single-node
//! deployments and tests.
//!
//! Idempotency keys live in a few mutex-guarded shards so concurrent senders rarely
//! wait on each other. Expiry is measured with [`Instant`], not the caller's
//! timestamps, so a wrong wall clock can neither keep a claim alive nor end it early.
//! Expired keys are dropped when next touched and by an occasional sweep of their
//! shard, which keeps memory proportional to the keys still alive.
//!
//! A key is held as 32 bytes, so a million recipients' claims take tens of megabytes:
//! the key itself as a 128-bit keyed hash (two SipHash values under random keys; a
//! collision among even billions of live keys is beyond any practical chance), its
//! expiry in whole seconds, and an outcome interned per shard (a campaign's outcomes
//! repeat: "delivered" for most messages). Outcomes that do not repeat (a bounce's
//! reply text naming its recipient) are kept beside, once the shard holds
//! [`MAX_INTERNED`] distinct ones.

use async_trait::async_trait;
use maily_engine::ports::{Claim, HotError, HotState};
use maily_engine::{CampaignId, CampaignStats, EmailAddress, TenantId, Timestamp};
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, Instant};

/// Independent locks for idempotency keys.
const SHARDS: usize = 16;

/// A shard is swept once it holds this many keys, then each time it doubles.
const MIN_SWEEP_LEN: usize = 1024;

/// Distinct outcomes a shard interns; further ones are stored per key.
const MAX_INTERNED: usize = 256;

/// A [`HotState`] held in this process's memory; lost on restart, like a cache.
#[derive(Debug)]
pub struct MemoryHotState {
    hashers: [RandomState; 2],
    /// What key expiries count their seconds from.
    epoch: Instant,
    shards: Box<[Mutex<KeyShard>]>,
    suppressed: RwLock<HashMap<TenantId, HashSet<EmailAddress>>>,
    live: RwLock<HashMap<CampaignId, std::collections::BTreeMap<u32, CampaignStats>>>,
    buckets: Mutex<HashMap<String, Bucket>>,
}

/// An idempotency key: its 128-bit keyed hash.
type KeyHash = [u64; 2];

#[derive(Debug, Default)]
struct KeyShard {
    keys: HashMap<KeyHash, KeyEntry>,
    /// Interned outcomes and their indexes.
    outcomes: Vec<Arc<str>>,
    outcome_ids: HashMap<Arc<str>, u32>,
    /// Outcomes of keys that were not interned.
    rare: HashMap<KeyHash, Box<str>>,
    /// Length at which the next sweep of expired keys runs.
    sweep_at: usize,
}

#[derive(Debug, Clone, Copy)]
struct KeyEntry {
    /// `InFlight`: since when (the caller's timestamp); `Done`: the interned
    /// outcome's index, or `u64::MAX` for one in `rare`.
    value: i64,
    /// Seconds after the state's epoch at which the key expires.
    expires: u32,
    done: bool,
}

/// Marks a `Done` entry whose outcome is in `rare`.
const RARE: i64 = -1;

impl KeyShard {
    /// Drops expired keys once the shard has grown enough to make a full pass cheap
    /// per insert (amortised O(1)).
    fn maybe_sweep(&mut self, now: u32) {
        if self.keys.len() < self.sweep_at.max(MIN_SWEEP_LEN) {
            return;
        }
        self.keys.retain(|_, e| e.expires > now);
        let keys = &self.keys;
        self.rare.retain(|k, _| keys.contains_key(k));
        self.sweep_at = (self.keys.len() * 2).max(MIN_SWEEP_LEN);
    }

    fn live(&self, key: &KeyHash, now: u32) -> Option<KeyEntry> {
        self.keys.get(key).filter(|e| e.expires > now).copied()
    }

    fn outcome(&self, key: &KeyHash, entry: KeyEntry) -> String {
        match entry.value {
            RARE => self
                .rare
                .get(key)
                .map(|o| o.to_string())
                .unwrap_or_default(),
            i => self.outcomes[i as usize].to_string(),
        }
    }

    /// Records `outcome` for `key`, interned while there is room.
    fn set_done(&mut self, key: KeyHash, outcome: &str, expires: u32) {
        let id = match self.outcome_ids.get(outcome) {
            Some(id) => Some(*id),
            None if self.outcomes.len() < MAX_INTERNED => {
                let shared: Arc<str> = outcome.into();
                let id = self.outcomes.len() as u32;
                self.outcomes.push(shared.clone());
                self.outcome_ids.insert(shared, id);
                Some(id)
            }
            None => None,
        };
        let value = match id {
            Some(id) => {
                self.rare.remove(&key);
                i64::from(id)
            }
            None => {
                self.rare.insert(key, outcome.into());
                RARE
            }
        };
        self.keys.insert(
            key,
            KeyEntry {
                value,
                expires,
                done: true,
            },
        );
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
            hashers: [RandomState::new(), RandomState::new()],
            epoch: Instant::now(),
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(KeyShard {
                        sweep_at: MIN_SWEEP_LEN,
                        ..KeyShard::default()
                    })
                })
                .collect(),
            suppressed: RwLock::new(HashMap::new()),
            live: RwLock::new(HashMap::new()),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn hash(&self, key: &str) -> KeyHash {
        [self.hashers[0].hash_one(key), self.hashers[1].hash_one(key)]
    }

    fn shard(&self, key: &KeyHash) -> MutexGuard<'_, KeyShard> {
        let i = (key[0] % SHARDS as u64) as usize;
        // Every update below leaves the maps consistent before anything can panic, so a
        // poisoned lock still guards valid data.
        self.shards[i]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Now, in seconds after the epoch.
    fn now(&self) -> u32 {
        u32::try_from(self.epoch.elapsed().as_secs()).unwrap_or(u32::MAX)
    }

    /// The expiry `ttl` from now: whole seconds, rounded up, saturating.
    fn deadline(&self, ttl: Duration) -> u32 {
        let secs = self
            .epoch
            .elapsed()
            .saturating_add(ttl)
            .as_secs_f64()
            .ceil();
        if secs >= f64::from(u32::MAX) {
            u32::MAX
        } else {
            secs as u32
        }
    }

    /// Idempotency keys currently held, expired ones not yet swept included.
    pub fn key_count(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).keys.len())
            .sum()
    }
}

/// A token bucket: tokens held at `at`.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

#[async_trait]
impl HotState for MemoryHotState {
    async fn claim(&self, key: &str, now: Timestamp, ttl: Duration) -> Result<Claim, HotError> {
        let key = self.hash(key);
        let clock = self.now();
        let expires = self.deadline(ttl);
        let mut shard = self.shard(&key);
        if let Some(entry) = shard.live(&key, clock) {
            return Ok(if entry.done {
                Claim::Done {
                    outcome: shard.outcome(&key, entry),
                }
            } else {
                Claim::InFlight {
                    since: Timestamp(entry.value),
                    // One process holds the whole in-memory state.
                    mine: true,
                }
            });
        }
        shard.maybe_sweep(clock);
        shard.rare.remove(&key);
        shard.keys.insert(
            key,
            KeyEntry {
                value: now.0,
                expires,
                done: false,
            },
        );
        Ok(Claim::Acquired)
    }

    async fn complete(&self, key: &str, outcome: &str, ttl: Duration) -> Result<(), HotError> {
        let key = self.hash(key);
        let clock = self.now();
        let expires = self.deadline(ttl);
        let mut shard = self.shard(&key);
        shard.maybe_sweep(clock);
        shard.set_done(key, outcome, expires);
        Ok(())
    }

    async fn release(&self, key: &str) -> Result<(), HotError> {
        let key = self.hash(key);
        let mut shard = self.shard(&key);
        // Only a claim is released: a recorded outcome must keep repeats from redoing work.
        if shard.keys.get(&key).is_some_and(|e| !e.done) {
            shard.keys.remove(&key);
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
        // Expiry counts whole seconds, rounded up: these live about a second.
        let short = Duration::from_millis(1);
        for round in 0..6 {
            for i in 0..(SHARDS * MIN_SWEEP_LEN) {
                let key = format!("r{round}-k{i}");
                hot.claim(&key, Timestamp(0), short).await.unwrap();
            }
            tokio::time::sleep(Duration::from_millis(1100)).await;
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
        let hot = MemoryHotState::new();
        assert_eq!(hot.deadline(Duration::MAX), u32::MAX);
        assert!(hot.deadline(Duration::from_millis(1)) >= 1);
    }

    #[tokio::test]
    async fn outcomes_are_kept_whether_they_repeat_or_not() {
        let hot = MemoryHotState::new();
        let ttl = Duration::from_secs(60);
        // Enough distinct outcomes to fill every shard's intern table and spill over.
        let n = SHARDS * MAX_INTERNED * 2;
        for i in 0..n {
            let key = format!("k{i}");
            assert_eq!(
                hot.claim(&key, Timestamp(7), ttl).await.unwrap(),
                Claim::Acquired
            );
            let outcome = if i % 2 == 0 {
                "delivered".to_string()
            } else {
                format!("550 {i}")
            };
            hot.complete(&key, &outcome, ttl).await.unwrap();
        }
        for i in 0..n {
            let outcome = if i % 2 == 0 {
                "delivered".to_string()
            } else {
                format!("550 {i}")
            };
            assert_eq!(
                hot.claim(&format!("k{i}"), Timestamp(8), ttl)
                    .await
                    .unwrap(),
                Claim::Done { outcome }
            );
        }
        assert_eq!(
            hot.claim("other", Timestamp(9), ttl).await.unwrap(),
            Claim::Acquired
        );
        assert_eq!(
            hot.claim("other", Timestamp(10), ttl).await.unwrap(),
            Claim::InFlight {
                since: Timestamp(9),
                mine: true
            }
        );
    }
}
