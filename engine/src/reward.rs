//! The reward formula: what a campaign earns from its delivery performance.

use crate::domain::ids::TenantId;
use crate::domain::stats::CampaignStats;
use crate::merkle::{Hash32, MerkleTree, keccak};
use crate::ports::SettlementEntry;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// Weights in reward-token base units per message; penalties are subtracted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RewardFormula {
    pub per_delivered: u64,
    pub per_open: u64,
    pub per_click: u64,
    pub per_complaint_penalty: u64,
    pub per_bounce_penalty: u64,
}

impl Default for RewardFormula {
    fn default() -> Self {
        RewardFormula {
            per_delivered: 10,
            per_open: 20,
            per_click: 50,
            per_complaint_penalty: 500,
            per_bounce_penalty: 25,
        }
    }
}

impl RewardFormula {
    /// The cumulative reward for the given stats; never negative.
    pub fn reward(&self, s: &CampaignStats) -> u128 {
        let gain = s.delivered as u128 * self.per_delivered as u128
            + s.opened as u128 * self.per_open as u128
            + s.clicked as u128 * self.per_click as u128;
        let loss = s.complained as u128 * self.per_complaint_penalty as u128
            + s.bounced() as u128 * self.per_bounce_penalty as u128;
        gain.saturating_sub(loss)
    }
}

/// A 20-byte EVM account address.
pub type Account = [u8; 20];

/// One account's payout in an epoch: a leaf of the reward distributor's tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RewardLeaf {
    pub account: Account,
    /// Reward-token base units earned in the epoch.
    pub amount: u128,
}

impl RewardLeaf {
    /// `abi.encode(address account, uint256 amount)`: 12 zero bytes, the address, the
    /// amount as a 32-byte big-endian integer (OpenZeppelin `StandardMerkleTree`).
    pub fn encode(&self) -> [u8; 64] {
        let mut out = [0u8; 64];
        out[12..32].copy_from_slice(&self.account);
        out[48..64].copy_from_slice(&self.amount.to_be_bytes());
        out
    }

    /// The leaf hash: keccak(keccak(encoding)).
    pub fn hash(&self) -> Hash32 {
        keccak(&keccak(&self.encode()))
    }
}

/// An epoch's reward tree: one leaf per paid account, sorted by account.
#[derive(Debug, Clone)]
pub struct RewardTree {
    pub leaves: Vec<RewardLeaf>,
    tree: MerkleTree,
}

impl RewardTree {
    /// Sums each tenant's campaign rewards earned in the epoch (`reward_delta`) into
    /// its payee account; tenants without a payee and zero amounts get no leaf. `None`
    /// when nobody is paid.
    pub fn build(entries: &[SettlementEntry], payees: &HashMap<TenantId, Account>) -> Option<Self> {
        let mut by_account: BTreeMap<Account, u128> = BTreeMap::new();
        for e in entries {
            if let Some(account) = payees.get(&e.tenant) {
                *by_account.entry(*account).or_default() += e.reward_delta;
            }
        }
        let leaves: Vec<RewardLeaf> = by_account
            .into_iter()
            .filter(|(_, amount)| *amount > 0)
            .map(|(account, amount)| RewardLeaf { account, amount })
            .collect();
        if leaves.is_empty() {
            return None;
        }
        let tree = MerkleTree::new(leaves.iter().map(RewardLeaf::hash).collect());
        Some(RewardTree { leaves, tree })
    }

    /// The root published to the distributor.
    pub fn root(&self) -> Hash32 {
        self.tree.root()
    }

    /// The account's leaf and its proof.
    pub fn proof(&self, account: &Account) -> Option<(RewardLeaf, Vec<Hash32>)> {
        let i = self.leaves.iter().position(|l| &l.account == account)?;
        Some((self.leaves[i], self.tree.proof(i)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CampaignId;

    #[test]
    fn rewards_engagement_and_penalises_bounces_without_going_negative() {
        let f = RewardFormula::default();
        let s = CampaignStats {
            delivered: 100,
            opened: 10,
            clicked: 2,
            bounced_hard: 4,
            ..Default::default()
        };
        assert_eq!(f.reward(&s), 1000 + 200 + 100 - 100);
        let bad = CampaignStats {
            complained: 10,
            ..Default::default()
        };
        assert_eq!(f.reward(&bad), 0);
    }

    #[test]
    fn reward_leaf_matches_the_distributor() {
        // docs/chain.md: the leaf RewardDistributor.leafHash computes for this pair.
        let account: Account = hex::decode("70997970C51812dc3A010C7d01b50e0d17dc79C8")
            .unwrap()
            .try_into()
            .unwrap();
        let leaf = RewardLeaf {
            account,
            amount: 1_000_000_000_000_000_000,
        };
        assert_eq!(
            hex::encode(leaf.hash()),
            "48b89d46ac36bc91cff52fda8f367663966eeb47da22a76a3f52c1ed976504ee"
        );
    }

    #[test]
    fn a_tenant_is_paid_the_sum_of_its_campaigns_and_unpaid_tenants_are_left_out() {
        let t = |s| TenantId::parse(s).unwrap();
        let (a, b, c) = (t("a"), t("b"), t("c"));
        let entry = |tenant: &TenantId, delta| SettlementEntry {
            tenant: tenant.clone(),
            campaign: CampaignId::new(),
            stats: CampaignStats::default(),
            reward_total: delta,
            reward_delta: delta,
        };
        let payees = HashMap::from([(a.clone(), [0xaa; 20]), (b.clone(), [0xbb; 20])]);
        let entries = [entry(&a, 5), entry(&a, 7), entry(&b, 0), entry(&c, 9)];
        let tree = RewardTree::build(&entries, &payees).expect("a is paid");
        assert_eq!(
            tree.leaves,
            vec![RewardLeaf {
                account: [0xaa; 20],
                amount: 12
            }]
        );
        let (leaf, proof) = tree.proof(&[0xaa; 20]).unwrap();
        assert!(crate::merkle::verify(&tree.root(), &leaf.hash(), &proof));
        assert!(tree.proof(&[0xbb; 20]).is_none());
        assert!(RewardTree::build(&[entry(&c, 3)], &payees).is_none());
    }
}
