//! How many messages each tenant may hand in through the API: a rate with a burst per
//! tenant (one default, overrides by tenant), counted in messages (uploaded rows and
//! keyed sends), not in calls.
//!
//! The count uses the generic cell rate algorithm: at `n` messages per period a tenant
//! earns one message every `period / n`, and may spend up to `burst` of them at once
//! after a quiet spell. A keyed send that would exceed it is refused at once with the
//! time to wait ([`Quotas::admit`]); an upload waits instead ([`Quotas::reserve`]), so
//! the stream's flow control slows the client down and nothing it sent is refused.

use maily_engine::TenantId;
use maily_engine::rate::Rate;
use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// One tenant's allowance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub rate: Rate,
    /// Messages that may be handed in back to back; at least 1. A single request
    /// larger than this is admitted only once the tenant has been quiet long enough
    /// to have earned all of it.
    pub burst: u32,
}

impl Quota {
    /// `rate` with a burst of one period's worth of messages.
    pub fn per_period(rate: Rate) -> Self {
        Quota {
            rate,
            burst: rate.messages,
        }
    }
}

/// A request the quota does not admit now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "tenant {tenant} is over its API quota of {rate} (burst {burst}): {requested} messages \
     would be admitted in {}ms",
    retry_after.as_millis()
)]
pub struct Exhausted {
    pub tenant: TenantId,
    pub rate: Rate,
    pub burst: u32,
    pub requested: u32,
    /// How long until the same request would be admitted.
    pub retry_after: Duration,
}

/// The quotas in force and what each tenant has used of them.
#[derive(Debug, Default)]
pub struct Quotas {
    default: Option<Quota>,
    tenants: HashMap<TenantId, Quota>,
    /// Per tenant, the theoretical arrival time of its next message.
    next: Mutex<HashMap<TenantId, Instant>>,
}

impl Quotas {
    /// No tenant is limited.
    pub fn unlimited() -> Self {
        Quotas::default()
    }

    /// `default` for every tenant without an entry in `tenants`; `None` leaves them
    /// unlimited.
    pub fn new(default: Option<Quota>, tenants: HashMap<TenantId, Quota>) -> Self {
        Quotas {
            default,
            tenants,
            next: Mutex::new(HashMap::new()),
        }
    }

    /// The quota of `tenant`, if it has one.
    pub fn quota_of(&self, tenant: &TenantId) -> Option<Quota> {
        self.tenants.get(tenant).copied().or(self.default)
    }

    /// Takes `n` messages from `tenant`'s allowance if it has them now; otherwise
    /// takes nothing and says how long to wait.
    pub fn admit(&self, tenant: &TenantId, n: u32, now: Instant) -> Result<(), Exhausted> {
        let Some(quota) = self.quota_of(tenant) else {
            return Ok(());
        };
        let mut next = self.next.lock().unwrap_or_else(PoisonError::into_inner);
        let tat = next.get(tenant).copied().unwrap_or(now).max(now);
        let (after, earliest) = schedule(quota, tat, n);
        if earliest <= now {
            next.insert(tenant.clone(), after);
            Ok(())
        } else {
            Err(Exhausted {
                tenant: tenant.clone(),
                rate: quota.rate,
                burst: quota.burst,
                requested: n,
                retry_after: earliest - now,
            })
        }
    }

    /// Takes `n` messages from `tenant`'s allowance, going into debt if need be, and
    /// returns when the caller may go on (`now` when the allowance covered them).
    pub fn reserve(&self, tenant: &TenantId, n: u32, now: Instant) -> Instant {
        let Some(quota) = self.quota_of(tenant) else {
            return now;
        };
        let mut next = self.next.lock().unwrap_or_else(PoisonError::into_inner);
        let tat = next.get(tenant).copied().unwrap_or(now).max(now);
        let (after, earliest) = schedule(quota, tat, n);
        next.insert(tenant.clone(), after);
        earliest.max(now)
    }

    /// Waits until `n` more messages of `tenant` may go on.
    pub async fn wait(&self, tenant: &TenantId, n: u32) {
        let at = self.reserve(tenant, n, Instant::now());
        tokio::time::sleep_until(at.into()).await;
    }
}

/// For `n` messages after the allowance's theoretical arrival time `tat`: the new
/// arrival time, and the earliest moment they fit within the burst.
fn schedule(quota: Quota, tat: Instant, n: u32) -> (Instant, Instant) {
    let interval = quota.rate.interval();
    let after = tat + interval * n;
    let window = interval * quota.burst.max(n).max(1);
    let earliest = after.checked_sub(window).unwrap_or(tat);
    (after, earliest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(s: &str) -> TenantId {
        TenantId::parse(s).unwrap()
    }

    fn quota(rate: &str, burst: u32) -> Quota {
        Quota {
            rate: rate.parse().unwrap(),
            burst,
        }
    }

    #[test]
    fn a_burst_is_admitted_then_the_rate_holds() {
        let q = Quotas::new(Some(quota("10/s", 20)), HashMap::new());
        let t = tenant("acme");
        let start = Instant::now();
        q.admit(&t, 20, start).expect("the burst");
        let refused = q.admit(&t, 1, start).unwrap_err();
        assert_eq!(refused.retry_after, Duration::from_millis(100));
        assert!(refused.to_string().contains("tenant acme"), "{refused}");
        // Refusals take nothing: after 100 ms one message fits, after 1 s ten.
        q.admit(&t, 1, start + Duration::from_millis(100)).unwrap();
        assert!(
            q.admit(&t, 10, start + Duration::from_millis(1000))
                .is_err()
        );
        q.admit(&t, 9, start + Duration::from_millis(1000)).unwrap();
    }

    #[test]
    fn tenants_are_counted_apart_and_overrides_win() {
        let mut tenants = HashMap::new();
        tenants.insert(tenant("big"), quota("1000/s", 1000));
        let q = Quotas::new(Some(quota("1/s", 1)), tenants);
        let now = Instant::now();
        q.admit(&tenant("a"), 1, now).unwrap();
        q.admit(&tenant("b"), 1, now).unwrap();
        assert!(q.admit(&tenant("a"), 1, now).is_err());
        q.admit(&tenant("big"), 1000, now).unwrap();
        assert!(
            Quotas::unlimited()
                .admit(&tenant("a"), u32::MAX, now)
                .is_ok()
        );
    }

    #[test]
    fn a_request_above_the_burst_waits_for_a_full_allowance() {
        let q = Quotas::new(Some(quota("10/s", 5)), HashMap::new());
        let t = tenant("acme");
        let now = Instant::now();
        // Never refused for good: a quiet tenant may send more than its burst once.
        q.admit(&t, 50, now).unwrap();
        let refused = q.admit(&t, 50, now).unwrap_err();
        assert_eq!(refused.retry_after, Duration::from_secs(5));
    }

    #[test]
    fn reservations_spread_uploads_at_the_rate() {
        let q = Quotas::new(Some(quota("100/s", 100)), HashMap::new());
        let t = tenant("acme");
        let now = Instant::now();
        assert_eq!(q.reserve(&t, 100, now), now);
        assert_eq!(q.reserve(&t, 100, now), now + Duration::from_secs(1));
        assert_eq!(q.reserve(&t, 50, now), now + Duration::from_millis(1500));
    }
}
