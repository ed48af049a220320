//! Partition ownership across engine processes: leases with fencing epochs in the
//! store.
//!
//! Every process heartbeats into the store and computes the same assignment from the
//! live members: partition p belongs to the member at index `p % n` of the sorted
//! member ids, and the leader role (reward and anchor actors) to the first member. A
//! process takes a partition by acquiring its lease and starts that partition's actors
//! with the lease's fence; every offset and aggregate write carries the fence and is
//! refused in the same transaction once the lease has changed hands. So a process that
//! was paused past its lease (a zombie) cannot write, and a dead process's partitions
//! move to live ones once its lease expires: within `lease_ttl + renew_interval`.

use maily_engine::Timestamp;
use maily_engine::ports::SendGuard;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

/// How ownership is negotiated.
#[derive(Debug, Clone)]
pub struct OwnershipSettings {
    /// This process's member id, unique among the engines sharing a store.
    pub member: String,
    /// How long a lease (and a heartbeat) stays valid without renewal.
    pub lease_ttl: Duration,
    /// How often leases are renewed and the assignment recomputed.
    pub renew_interval: Duration,
}

/// The expiry of the lease a partition's actors work under, as this process last
/// renewed it. Before a side effect the store cannot fence (an SMTP delivery), the
/// sender checks it: a process that was paused past its lease must not act on it,
/// even before it learns that someone else took over.
#[derive(Debug)]
pub struct LeaseGuard {
    expires_at: AtomicI64,
}

impl LeaseGuard {
    /// A guard valid until `expires_at`.
    pub fn new(expires_at: Timestamp) -> Arc<Self> {
        Arc::new(LeaseGuard {
            expires_at: AtomicI64::new(expires_at.0),
        })
    }

    /// Records a renewal.
    pub fn extend(&self, expires_at: Timestamp) {
        self.expires_at.store(expires_at.0, Ordering::SeqCst);
    }

    /// Whether the lease is still ours at `now` by our own clock.
    pub fn valid_at(&self, now: Timestamp) -> bool {
        now.0 < self.expires_at.load(Ordering::SeqCst)
    }
}

impl SendGuard for LeaseGuard {
    fn may_send(&self) -> bool {
        self.valid_at(Timestamp::now())
    }
}

/// The lease resource of partition `p`.
pub fn partition_resource(p: u32) -> String {
    format!("partition/{p}")
}

/// The lease resource of the leader role.
pub const LEADER: &str = "leader";

/// What `me` should own among `partitions`, given the live members.
pub fn assignment(partitions: u32, members: &[String], me: &str) -> (BTreeSet<u32>, bool) {
    let mut sorted: Vec<&String> = members.iter().collect();
    if !sorted.iter().any(|m| m.as_str() == me) {
        // Our own heartbeat may not be visible yet; we are alive regardless.
        return (BTreeSet::new(), false);
    }
    sorted.sort();
    sorted.dedup();
    let n = sorted.len() as u32;
    let index = sorted
        .iter()
        .position(|m| m.as_str() == me)
        .expect("present") as u32;
    let mine = (0..partitions).filter(|p| p % n == index).collect();
    (mine, index == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(ids: &[&str]) -> Vec<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn every_partition_has_exactly_one_owner_and_one_leader() {
        for n in 1..5 {
            let ids: Vec<String> = (0..n).map(|i| format!("m{i}")).collect();
            let mut seen = BTreeSet::new();
            let mut leaders = 0;
            for me in &ids {
                let (mine, leader) = assignment(8, &ids, me);
                for p in mine {
                    assert!(seen.insert(p), "partition {p} owned twice");
                }
                leaders += leader as u32;
            }
            assert_eq!(seen.len(), 8);
            assert_eq!(leaders, 1);
        }
    }

    #[test]
    fn a_member_missing_from_the_list_owns_nothing() {
        assert_eq!(
            assignment(8, &members(&["a"]), "b"),
            (BTreeSet::new(), false)
        );
    }
}
