//! The reward formula: what a campaign earns from its delivery performance.

use crate::domain::stats::CampaignStats;
use serde::{Deserialize, Serialize};

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
