//! Contract suite of the store port.

use super::{addr, sample_campaign};
use crate::merkle::{CampaignLeaf, MerkleTree};
use crate::ports::{
    AggregateBatch, LedgerEntry, MessageState, Settlement, SettlementEntry, Store, StoreError,
    StoredOffset, StoredProof,
};
use crate::{CampaignStats, MessageId, TenantId, Timestamp};

/// Generates the store contract tests for the adapter returned by `$make().await`.
#[macro_export]
macro_rules! store_contract {
    ($make:ident) => {
        mod store_contract {
            use $crate::testkit::store as suite;
            #[tokio::test]
            async fn campaigns_round_trip() {
                suite::campaigns_round_trip(&super::$make().await).await
            }
            #[tokio::test]
            async fn offsets_round_trip() {
                suite::offsets_round_trip(&super::$make().await).await
            }
            #[tokio::test]
            async fn aggregates_commit_with_their_offsets() {
                suite::aggregates_commit_with_their_offsets(&super::$make().await).await
            }
            #[tokio::test]
            async fn suppression_is_idempotent() {
                suite::suppression_is_idempotent(&super::$make().await).await
            }
            #[tokio::test]
            async fn epochs_settle_once() {
                suite::epochs_settle_once(&super::$make().await).await
            }
            #[tokio::test]
            async fn ledger_is_hash_chained() {
                suite::ledger_is_hash_chained(&super::$make().await).await
            }
            #[tokio::test]
            async fn anchors_and_proofs_round_trip() {
                suite::anchors_and_proofs_round_trip(&super::$make().await).await
            }
        }
    };
}

fn off(topic: &str, partition: u32, next: u64) -> StoredOffset {
    StoredOffset {
        topic: topic.into(),
        partition,
        next,
    }
}

/// Campaigns come back as stored; an id is stored once.
pub async fn campaigns_round_trip(store: &impl Store) {
    let c = sample_campaign("acme");
    store.upsert_tenant(&c.tenant, "Acme").await.unwrap();
    store.upsert_tenant(&c.tenant, "Acme Inc").await.unwrap();
    store.insert_campaign(&c).await.unwrap();
    assert_eq!(store.campaign(c.id).await.unwrap(), Some(c.clone()));
    assert!(matches!(
        store.insert_campaign(&c).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        store.campaign(crate::CampaignId::new()).await.unwrap(),
        None
    );
}

/// Offsets are per group and topic, and later saves win.
pub async fn offsets_round_trip(store: &impl Store) {
    assert!(
        store
            .load_offsets("sender", "send")
            .await
            .unwrap()
            .is_empty()
    );
    store
        .save_offsets("sender", &[off("send", 0, 10), off("send", 3, 4)])
        .await
        .unwrap();
    store
        .save_offsets("sender", &[off("send", 0, 12)])
        .await
        .unwrap();
    let got = store.load_offsets("sender", "send").await.unwrap();
    assert_eq!(got.into_iter().collect::<Vec<_>>(), vec![(0, 12), (3, 4)]);
    assert!(
        store
            .load_offsets("other", "send")
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .load_offsets("sender", "events")
            .await
            .unwrap()
            .is_empty()
    );
}

/// Stats, message states and offsets of a flush are all visible after commit.
pub async fn aggregates_commit_with_their_offsets(store: &impl Store) {
    let c = sample_campaign("acme");
    store.upsert_tenant(&c.tenant, "Acme").await.unwrap();
    store.insert_campaign(&c).await.unwrap();
    let m1 = MessageId::new();
    let m2 = MessageId::new();
    let state = |id, mask, status: &str, detail: Option<&str>| MessageState {
        message_id: id,
        tenant: c.tenant.clone(),
        campaign: c.id,
        recipient: addr("ann@example.com"),
        mask,
        status: status.into(),
        detail: detail.map(String::from),
    };
    let stats = CampaignStats {
        injected: 2,
        delivered: 1,
        bounced_hard: 1,
        ..Default::default()
    };
    store
        .commit_aggregates(&AggregateBatch {
            group: "analytics".into(),
            offsets: vec![off("events", 2, 40)],
            stats: vec![(c.tenant.clone(), c.id, stats)],
            messages: vec![
                state(m1, 0b11, "delivered", None),
                state(
                    m2,
                    0b1001,
                    "bounced_hard",
                    Some("userunknown: 550 5.1.1 no such user"),
                ),
            ],
        })
        .await
        .unwrap();
    assert_eq!(store.campaign_stats(c.id).await.unwrap(), Some(stats));
    assert_eq!(
        store
            .load_offsets("analytics", "events")
            .await
            .unwrap()
            .get(&2),
        Some(&40)
    );
    let masks = store
        .message_masks(&[m1, m2, MessageId::new()])
        .await
        .unwrap();
    assert_eq!(masks.len(), 2);
    assert_eq!(masks[&m1], 0b11);
    let bounced = store
        .messages_with_status(c.id, "bounced_hard")
        .await
        .unwrap();
    assert_eq!(
        bounced,
        vec![state(
            m2,
            0b1001,
            "bounced_hard",
            Some("userunknown: 550 5.1.1 no such user")
        )]
    );

    let later = CampaignStats {
        delivered: 2,
        ..stats
    };
    store
        .commit_aggregates(&AggregateBatch {
            group: "analytics".into(),
            offsets: vec![off("events", 2, 41)],
            stats: vec![(c.tenant.clone(), c.id, later)],
            messages: vec![state(m1, 0b111, "delivered", None)],
        })
        .await
        .unwrap();
    assert_eq!(store.campaign_stats(c.id).await.unwrap(), Some(later));
    assert_eq!(store.message_masks(&[m1]).await.unwrap()[&m1], 0b111);
    let all = store.all_stats().await.unwrap();
    assert_eq!(all, vec![(c.tenant.clone(), c.id, later)]);
}

/// Suppressing twice keeps one entry.
pub async fn suppression_is_idempotent(store: &impl Store) {
    let t = TenantId::parse("acme").unwrap();
    store.upsert_tenant(&t, "Acme").await.unwrap();
    store
        .suppress(&t, &addr("a@x.org"), "bounce: userunknown")
        .await
        .unwrap();
    store
        .suppress(&t, &addr("a@x.org"), "bounce: userunknown")
        .await
        .unwrap();
    store
        .suppress(&t, &addr("b@x.org"), "complaint")
        .await
        .unwrap();
    let mut list = store.suppressions(&t).await.unwrap();
    list.sort();
    assert_eq!(
        list,
        vec![
            (addr("a@x.org"), "bounce: userunknown".to_string()),
            (addr("b@x.org"), "complaint".to_string())
        ]
    );
}

/// An epoch settles once, with its offsets; huge rewards survive.
pub async fn epochs_settle_once(store: &impl Store) {
    let c = sample_campaign("acme");
    store.upsert_tenant(&c.tenant, "Acme").await.unwrap();
    store.insert_campaign(&c).await.unwrap();
    assert_eq!(store.last_settled_epoch().await.unwrap(), None);
    let s = Settlement {
        epoch: 1,
        settled_at: Timestamp(5),
        group: "reward".into(),
        offsets: vec![off("stats", 0, 9)],
        entries: vec![SettlementEntry {
            tenant: c.tenant.clone(),
            campaign: c.id,
            stats: CampaignStats {
                delivered: 3,
                ..Default::default()
            },
            reward_total: u128::MAX - 1,
            reward_delta: 30,
        }],
    };
    store.commit_settlement(&s).await.unwrap();
    assert!(matches!(
        store.commit_settlement(&s).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(store.settlement(1).await.unwrap(), Some(s));
    assert_eq!(store.settlement(2).await.unwrap(), None);
    assert_eq!(store.last_settled_epoch().await.unwrap(), Some(1));
    assert_eq!(
        store.load_offsets("reward", "stats").await.unwrap().get(&0),
        Some(&9)
    );
}

/// Ledger entries append only on top of the head, one per epoch.
pub async fn ledger_is_hash_chained(store: &impl Store) {
    assert_eq!(store.ledger_head().await.unwrap(), None);
    let e1 = LedgerEntry {
        epoch: 1,
        root: [1; 32],
        prev: [0; 32],
        hash: [11; 32],
        at: Timestamp(1),
    };
    store.append_ledger(&e1).await.unwrap();
    let wrong_prev = LedgerEntry {
        epoch: 2,
        root: [2; 32],
        prev: [99; 32],
        hash: [12; 32],
        at: Timestamp(2),
    };
    assert!(matches!(
        store.append_ledger(&wrong_prev).await,
        Err(StoreError::Conflict(_))
    ));
    let e2 = LedgerEntry {
        prev: e1.hash,
        ..wrong_prev
    };
    store.append_ledger(&e2).await.unwrap();
    let again = LedgerEntry {
        prev: e2.hash,
        hash: [13; 32],
        ..e2.clone()
    };
    assert!(matches!(
        store.append_ledger(&again).await,
        Err(StoreError::Conflict(_))
    ));
    let below_head = LedgerEntry {
        epoch: 1,
        prev: e2.hash,
        hash: [14; 32],
        ..e2.clone()
    };
    assert!(matches!(
        store.append_ledger(&below_head).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(store.ledger_head().await.unwrap(), Some(e2.clone()));
    assert_eq!(store.ledger_entry(1).await.unwrap(), Some(e1.clone()));
    assert_eq!(store.ledger_entries().await.unwrap(), vec![e1, e2]);
}

/// Settled epochs wait for anchoring per chain; proofs come back intact.
pub async fn anchors_and_proofs_round_trip(store: &impl Store) {
    let c = sample_campaign("acme");
    store.upsert_tenant(&c.tenant, "Acme").await.unwrap();
    store.insert_campaign(&c).await.unwrap();
    for epoch in 1..=2 {
        store
            .commit_settlement(&Settlement {
                epoch,
                settled_at: Timestamp(epoch as i64),
                group: "reward".into(),
                offsets: vec![],
                entries: vec![],
            })
            .await
            .unwrap();
    }
    assert_eq!(store.epochs_to_anchor("ledger").await.unwrap(), vec![1, 2]);
    store
        .record_anchor("ledger", 1, &[7; 32], "ref-1")
        .await
        .unwrap();
    store
        .record_anchor("ledger", 1, &[7; 32], "ref-1")
        .await
        .unwrap();
    assert_eq!(store.epochs_to_anchor("ledger").await.unwrap(), vec![2]);
    assert_eq!(store.epochs_to_anchor("polygon").await.unwrap(), vec![1, 2]);

    let leaves: Vec<CampaignLeaf> = (0..3)
        .map(|i| CampaignLeaf {
            epoch: 1,
            campaign: if i == 0 {
                c.id
            } else {
                crate::CampaignId::new()
            },
            stats: CampaignStats {
                delivered: i,
                ..Default::default()
            },
            reward_total: i as u128,
        })
        .collect();
    let tree = MerkleTree::new(leaves.iter().map(|l| l.hash()).collect());
    let proofs: Vec<StoredProof> = leaves
        .iter()
        .enumerate()
        .map(|(i, leaf)| StoredProof {
            leaf: leaf.clone(),
            leaf_index: i as u32,
            root: tree.root(),
            proof: tree.proof(i).unwrap(),
        })
        .collect();
    store.store_proofs(&proofs).await.unwrap();
    store.store_proofs(&proofs).await.unwrap();
    let got = store.proof(1, c.id).await.unwrap().unwrap();
    assert_eq!(got, proofs[0]);
    assert!(crate::merkle::verify(
        &got.root,
        &got.leaf.hash(),
        &got.proof
    ));
    assert_eq!(store.proof(2, c.id).await.unwrap(), None);
}
