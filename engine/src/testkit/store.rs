//! Contract suite of the store port.
//!
//! The cases of the campaign lifecycle and of contacts live in submodules and are
//! re-exported here, so the macro names every case the same way.

mod contacts;
mod lifecycle;

pub use contacts::*;
pub use lifecycle::*;

use super::{addr, sample_campaign};
use crate::merkle::{CampaignLeaf, MerkleTree};
use crate::ports::{
    AggregateBatch, ApiKeyRecord, Fence, Lease, LedgerEntry, MessageState, NewApiKey, Settlement,
    SettlementEntry, Store, StoreError, StoredOffset, StoredProof,
};
use crate::{CampaignId, CampaignStats, MessageId, TenantId, Timestamp};
use std::time::Duration;

/// Generates the store contract tests for the adapter returned by `$make().await`,
/// one module per role port.
#[macro_export]
macro_rules! store_contract {
    ($make:ident) => {
        mod store_contract {
            /// `TenantAccess`.
            mod tenant_access {
                use $crate::testkit::store as suite;
                #[tokio::test]
                async fn a_sending_domain_belongs_to_one_tenant() {
                    suite::a_sending_domain_belongs_to_one_tenant(&super::super::$make().await)
                        .await
                }
                #[tokio::test]
                async fn tenants_are_listed_and_found() {
                    suite::tenants_are_listed_and_found(&super::super::$make().await).await
                }
                #[tokio::test]
                async fn api_keys_round_trip() {
                    suite::api_keys_round_trip(&super::super::$make().await).await
                }
                #[tokio::test]
                async fn api_keys_are_revoked_by_their_tenant_only() {
                    suite::api_keys_are_revoked_by_their_tenant_only(&super::super::$make().await)
                        .await
                }
                #[tokio::test]
                async fn revoking_a_key_revokes_what_it_issued() {
                    suite::revoking_a_key_revokes_what_it_issued(&super::super::$make().await).await
                }
                #[tokio::test]
                async fn api_key_use_is_recorded() {
                    suite::api_key_use_is_recorded(&super::super::$make().await).await
                }
            }
            /// `CampaignStore`.
            mod campaigns {
                use $crate::testkit::store as suite;
                #[tokio::test]
                async fn campaigns_round_trip() {
                    suite::campaigns_round_trip(&super::super::$make().await).await
                }
                #[tokio::test]
                async fn campaign_states_round_trip() {
                    suite::campaign_states_round_trip(&super::super::$make().await).await
                }
                #[tokio::test]
                async fn transitions_are_compare_and_set() {
                    suite::transitions_are_compare_and_set(&super::super::$make().await).await
                }
                #[tokio::test]
                async fn racing_transitions_elect_one() {
                    suite::racing_transitions_elect_one(&super::super::$make().await).await
                }
                #[tokio::test]
                async fn due_campaigns_by_time() {
                    suite::due_campaigns_by_time(&super::super::$make().await).await
                }
                #[tokio::test]
                async fn staging_keeps_order() {
                    suite::staging_keeps_order(&super::super::$make().await).await
                }
                #[tokio::test]
                async fn launchable_campaigns_and_cancelling() {
                    suite::launchable_campaigns_and_cancelling(&super::super::$make().await).await
                }
                #[tokio::test]
                async fn large_stagings_keep_order() {
                    suite::large_stagings_keep_order(&super::super::$make().await).await
                }
                #[tokio::test]
                async fn idempotent_sends_keep_the_first() {
                    suite::idempotent_sends_keep_the_first(&super::super::$make().await).await
                }
                #[tokio::test]
                async fn deferred_sends_come_due_once_in_order() {
                    suite::deferred_sends_come_due_once_in_order(&super::super::$make().await).await
                }
                #[tokio::test]
                async fn retention_deletes_only_what_is_past_its_cutoff() {
                    suite::retention_deletes_only_what_is_past_its_cutoff(
                        &super::super::$make().await,
                    )
                    .await
                }
            }
            /// `OutcomeStore`.
            mod outcomes {
                use $crate::testkit::store as suite;
                #[tokio::test]
                async fn offsets_round_trip() {
                    suite::offsets_round_trip(&super::super::$make().await).await
                }
                #[tokio::test]
                async fn bounce_reasons_count_the_committed_bounces() {
                    suite::bounce_reasons_count_the_committed_bounces(&super::super::$make().await)
                        .await
                }
                #[tokio::test]
                async fn aggregates_commit_with_their_offsets() {
                    suite::aggregates_commit_with_their_offsets(&super::super::$make().await).await
                }
            }
            /// `SuppressionStore`.
            mod suppressions {
                use $crate::testkit::store as suite;
                #[tokio::test]
                async fn suppression_is_idempotent() {
                    suite::suppression_is_idempotent(&super::super::$make().await).await
                }
                #[tokio::test]
                async fn unsuppress_removes_one_address() {
                    suite::unsuppress_removes_one_address(&super::super::$make().await).await
                }
            }
            /// `LedgerStore`.
            mod ledger {
                use $crate::testkit::store as suite;
                #[tokio::test]
                async fn epochs_settle_once() {
                    suite::epochs_settle_once(&super::super::$make().await).await
                }
                #[tokio::test]
                async fn ledger_is_hash_chained() {
                    suite::ledger_is_hash_chained(&super::super::$make().await).await
                }
                #[tokio::test]
                async fn chain_submissions_are_saved_replaced_and_cleared() {
                    suite::chain_submissions_are_saved_replaced_and_cleared(
                        &super::super::$make().await,
                    )
                    .await
                }
                #[tokio::test]
                async fn anchors_and_proofs_round_trip() {
                    suite::anchors_and_proofs_round_trip(&super::super::$make().await).await
                }
            }
            /// `LeaseStore`.
            mod leases {
                use $crate::testkit::store as suite;
                #[tokio::test]
                async fn leases_change_hands_with_a_higher_epoch() {
                    suite::leases_change_hands_with_a_higher_epoch(&super::super::$make().await)
                        .await
                }
                #[tokio::test]
                async fn fenced_writes_are_refused_whole() {
                    suite::fenced_writes_are_refused_whole(&super::super::$make().await).await
                }
                #[tokio::test]
                async fn members_heartbeat() {
                    suite::members_heartbeat(&super::super::$make().await).await
                }
            }
            /// `AudienceStore`.
            mod audience {
                use $crate::testkit::store as suite;
                #[tokio::test]
                async fn contacts_upsert_and_page() {
                    suite::contacts_upsert_and_page(&super::super::$make().await).await
                }
                #[tokio::test]
                async fn lists_and_members() {
                    suite::lists_and_members(&super::super::$make().await).await
                }
                #[tokio::test]
                async fn segments_round_trip() {
                    suite::segments_round_trip(&super::super::$make().await).await
                }
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
        .save_offsets("sender", &[off("send", 0, 10), off("send", 3, 4)], None)
        .await
        .unwrap();
    store
        .save_offsets("sender", &[off("send", 0, 12)], None)
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

/// An unconfirmed chain transaction is kept per chain and epoch, replaced by its next
/// version, and gone once cleared.
pub async fn chain_submissions_are_saved_replaced_and_cleared(store: &impl Store) {
    use crate::ports::ChainSubmission;
    assert_eq!(store.submission("ethereum", 3).await.unwrap(), None);
    let first = ChainSubmission {
        chain: "ethereum".into(),
        epoch: 3,
        nonce: 41,
        hashes: vec![[1; 32]],
        raw: vec![2, 0xf8, 7],
    };
    store.save_submission(&first).await.unwrap();
    let rewards = ChainSubmission {
        chain: "ethereum/rewards".into(),
        ..first.clone()
    };
    store.save_submission(&rewards).await.unwrap();
    assert_eq!(
        store.submission("ethereum", 3).await.unwrap(),
        Some(first.clone())
    );
    let bumped = ChainSubmission {
        hashes: vec![[1; 32], [9; 32]],
        raw: vec![2, 0xf8, 8, 8],
        ..first.clone()
    };
    store.save_submission(&bumped).await.unwrap();
    assert_eq!(store.submission("ethereum", 3).await.unwrap(), Some(bumped));
    assert_eq!(store.submission("ethereum", 4).await.unwrap(), None);
    assert_eq!(store.submission("polygon", 3).await.unwrap(), None);
    store.clear_submission("ethereum", 3).await.unwrap();
    assert_eq!(store.submission("ethereum", 3).await.unwrap(), None);
    assert_eq!(
        store.submission("ethereum/rewards", 3).await.unwrap(),
        Some(rewards)
    );
    store.clear_submission("ethereum", 3).await.unwrap();
}

/// Bounced messages are counted by the reason in their detail and by class, most
/// frequent first; other statuses and other campaigns are not counted.
pub async fn bounce_reasons_count_the_committed_bounces(store: &impl Store) {
    let c = sample_campaign("acme");
    let other = sample_campaign("acme");
    store.upsert_tenant(&c.tenant, "Acme").await.unwrap();
    store.insert_campaign(&c).await.unwrap();
    store.insert_campaign(&other).await.unwrap();
    let state = |campaign: CampaignId, status: &str, detail: Option<&str>| MessageState {
        message_id: MessageId::new(),
        tenant: c.tenant.clone(),
        campaign,
        recipient: addr("ann@example.com"),
        mask: 0b1000,
        status: status.into(),
        detail: detail.map(String::from),
    };
    let messages = vec![
        state(
            c.id,
            "bounced_hard",
            Some("userunknown: 550 5.1.1 no such user"),
        ),
        state(
            c.id,
            "bounced_hard",
            Some("userunknown: 550 5.1.1 unknown: gone"),
        ),
        state(c.id, "bounced_soft", Some("mailboxfull: 552 5.2.2 full")),
        state(
            c.id,
            "bounced_hard",
            Some("hostunknown: 550 5.1.2 no such domain"),
        ),
        state(c.id, "bounced_soft", None),
        state(c.id, "delivered", None),
        state(c.id, "deferred", Some("451 4.7.1 try later")),
        state(other.id, "bounced_hard", Some("userunknown: 550 5.1.1 x")),
    ];
    store
        .commit_aggregates(&AggregateBatch {
            part: 0,
            group: "analytics".into(),
            fence: None,
            offsets: vec![],
            stats: vec![],
            messages,
        })
        .await
        .unwrap();
    let counted: Vec<(String, bool, u64)> = store
        .bounce_reasons(c.id)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.reason, r.hard, r.count))
        .collect();
    let expected = [
        ("userunknown", true, 2),
        ("hostunknown", true, 1),
        ("mailboxfull", false, 1),
        ("unknown", false, 1),
    ]
    .map(|(r, h, n)| (r.to_string(), h, n));
    assert_eq!(counted, expected);
    assert!(
        store
            .bounce_reasons(CampaignId::new())
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
            part: 0,
            group: "analytics".into(),
            fence: None,
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
    assert_eq!(
        store.message(m1).await.unwrap(),
        Some(state(m1, 0b11, "delivered", None)),
        "one message by id: tenant, campaign and recipient as recorded"
    );
    assert_eq!(store.message(MessageId::new()).await.unwrap(), None);
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
            part: 0,
            group: "analytics".into(),
            fence: None,
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

    // Another analytics partition counts its own part of the campaign: the campaign's
    // stats are the sum, each part stays its own, and a message's mask merges with
    // what the other part stored rather than replacing it.
    let other_part = CampaignStats {
        injected: 3,
        opened: 1,
        ..Default::default()
    };
    store
        .commit_aggregates(&AggregateBatch {
            part: 5,
            group: "analytics".into(),
            fence: None,
            offsets: vec![off("events", 5, 9)],
            stats: vec![(c.tenant.clone(), c.id, other_part)],
            messages: vec![state(m1, 0b1000_0000, "opened", None)],
        })
        .await
        .unwrap();
    let mut sum = later;
    sum.add(&other_part);
    assert_eq!(store.campaign_stats(c.id).await.unwrap(), Some(sum));
    assert_eq!(store.part_stats(c.id, 0).await.unwrap(), Some(later));
    assert_eq!(store.part_stats(c.id, 5).await.unwrap(), Some(other_part));
    assert_eq!(store.part_stats(c.id, 7).await.unwrap(), None);
    assert_eq!(
        store.message_masks(&[m1]).await.unwrap()[&m1],
        0b1000_0111,
        "masks of two parts merge"
    );
    assert_eq!(
        store.all_stats().await.unwrap(),
        vec![(c.tenant.clone(), c.id, sum)]
    );

    // The shard count is recorded once: the first proposal stands.
    assert_eq!(store.fix_shards(c.id, 4).await.unwrap(), 4);
    assert_eq!(store.fix_shards(c.id, 9).await.unwrap(), 4);
    assert!(matches!(
        store.fix_shards(CampaignId::new(), 2).await,
        Err(StoreError::InvalidRow { .. })
    ));
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
    assert!(store.is_suppressed(&t, &addr("a@x.org")).await.unwrap());
    assert!(!store.is_suppressed(&t, &addr("c@x.org")).await.unwrap());
    // The same mailbox in any case: one entry, found whatever the case.
    store
        .suppress(&t, &addr("Ann@X.org"), "complaint")
        .await
        .unwrap();
    store
        .suppress(&t, &addr("ANN@x.org"), "bounce: userunknown")
        .await
        .unwrap();
    for spelling in ["ann@x.org", "ANN@X.ORG", "Ann@x.org"] {
        assert!(
            store.is_suppressed(&t, &addr(spelling)).await.unwrap(),
            "{spelling}"
        );
    }
    assert!(store.unsuppress(&t, &addr("aNN@x.org")).await.unwrap());
    assert!(!store.is_suppressed(&t, &addr("ann@x.org")).await.unwrap());
    // Pages in address order, resuming after the last one seen.
    let first = store.suppression_page(&t, None, 1).await.unwrap();
    assert_eq!(
        first,
        vec![(addr("a@x.org"), "bounce: userunknown".to_string())]
    );
    let rest = store
        .suppression_page(&t, Some(&addr("A@x.org")), 10)
        .await
        .unwrap();
    assert_eq!(rest, vec![(addr("b@x.org"), "complaint".to_string())]);
    let other = TenantId::parse("other").unwrap();
    assert!(!store.is_suppressed(&other, &addr("a@x.org")).await.unwrap());
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

/// A domain is registered by one tenant only, starts pending, is verified once (the
/// first time stays) and is removed only by its tenant.
pub async fn a_sending_domain_belongs_to_one_tenant(store: &impl Store) {
    use crate::Domain;
    use crate::ports::{DomainKey, TenantDomain};
    let acme = TenantId::parse("acme").unwrap();
    let beta = TenantId::parse("beta").unwrap();
    store.upsert_tenant(&acme, "Acme").await.unwrap();
    store.upsert_tenant(&beta, "Beta").await.unwrap();
    let shop = Domain::parse("shop.example").unwrap();
    let pending = TenantDomain {
        domain: shop.clone(),
        tenant: acme.clone(),
        token: "maily-verify-0123".into(),
        created_at: Timestamp(1_000),
        verified_at: None,
        dkim: Some(DomainKey {
            selector: "maily20261207".into(),
            algorithm: "ed25519-sha256".into(),
            private_key: "-----BEGIN PRIVATE KEY-----\nMC4CAQ\n-----END PRIVATE KEY-----\n".into(),
            dns_record: "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=".into(),
        }),
        return_path: None,
        tracking_host: None,
    };
    store.add_domain(&pending).await.unwrap();
    let taken = store
        .add_domain(&TenantDomain {
            tenant: beta.clone(),
            ..pending.clone()
        })
        .await
        .unwrap_err();
    assert!(matches!(taken, StoreError::Conflict(_)), "{taken}");
    let unknown = store
        .add_domain(&TenantDomain {
            domain: Domain::parse("other.example").unwrap(),
            tenant: TenantId::parse("nobody").unwrap(),
            ..pending.clone()
        })
        .await
        .unwrap_err();
    assert!(
        matches!(unknown, StoreError::InvalidRow { .. }),
        "{unknown}"
    );
    assert_eq!(store.domain(&shop).await.unwrap(), Some(pending.clone()));
    assert!(store.verify_domain(&shop, Timestamp(2_000)).await.unwrap());
    assert!(store.verify_domain(&shop, Timestamp(3_000)).await.unwrap());
    let verified = store.domain(&shop).await.unwrap().unwrap();
    assert_eq!(verified.verified_at, Some(Timestamp(2_000)));
    let bounces = Domain::parse("bounces.shop.example").unwrap();
    let track = Domain::parse("track.shop.example").unwrap();
    assert!(
        store
            .set_domain_hosts(&shop, Some(&bounces), Some(&track))
            .await
            .unwrap()
    );
    let with_hosts = store.domain(&shop).await.unwrap().unwrap();
    assert_eq!(
        (with_hosts.return_path, with_hosts.tracking_host),
        (Some(bounces), Some(track))
    );
    assert!(store.set_domain_hosts(&shop, None, None).await.unwrap());
    let without = store.domain(&shop).await.unwrap().unwrap();
    assert_eq!((without.return_path, without.tracking_host), (None, None));
    assert!(
        !store
            .set_domain_hosts(&Domain::parse("nobody.example").unwrap(), None, None)
            .await
            .unwrap()
    );
    let news = Domain::parse("news.shop.example").unwrap();
    store
        .add_domain(&TenantDomain {
            domain: news.clone(),
            ..pending.clone()
        })
        .await
        .unwrap();
    let listed: Vec<Domain> = store
        .domains(&acme)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.domain)
        .collect();
    assert_eq!(listed, vec![news.clone(), shop.clone()]);
    assert!(store.domains(&beta).await.unwrap().is_empty());
    assert!(
        !store.remove_domain(&beta, &shop).await.unwrap(),
        "not beta's"
    );
    assert!(store.remove_domain(&acme, &shop).await.unwrap());
    assert_eq!(store.domain(&shop).await.unwrap(), None);
    assert!(!store.verify_domain(&shop, Timestamp(4_000)).await.unwrap());
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
    store.commit_settlement(&s, None).await.unwrap();
    assert!(matches!(
        store.commit_settlement(&s, None).await,
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
            .commit_settlement(
                &Settlement {
                    epoch,
                    settled_at: Timestamp(epoch as i64),
                    group: "reward".into(),
                    offsets: vec![],
                    entries: vec![],
                },
                None,
            )
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

/// A lease is held, renewed at the same epoch, and changes hands only once expired or
/// released, each time at a higher epoch.
pub async fn leases_change_hands_with_a_higher_epoch(store: &impl Store) {
    let ttl = Duration::from_secs(10);
    let part = "partition/0";
    assert!(store.leases().await.unwrap().is_empty());

    let t0 = Timestamp(1_000);
    let a = store
        .acquire_lease(part, "engine-a", t0, ttl)
        .await
        .unwrap()
        .expect("a free lease is granted");
    assert_eq!(
        a,
        Lease {
            resource: part.into(),
            owner: "engine-a".into(),
            epoch: 1,
            expires_at: t0.plus(ttl),
        }
    );

    let t1 = Timestamp(5_000);
    let renewed = store
        .acquire_lease(part, "engine-a", t1, ttl)
        .await
        .unwrap()
        .expect("the holder renews");
    assert_eq!(
        renewed,
        Lease {
            expires_at: t1.plus(ttl),
            ..a.clone()
        }
    );

    let expiry = renewed.expires_at;
    assert_eq!(
        store
            .acquire_lease(part, "engine-b", Timestamp(expiry.0 - 1), ttl)
            .await
            .unwrap(),
        None,
        "an unexpired lease is not taken over"
    );
    let b = store
        .acquire_lease(part, "engine-b", expiry, ttl)
        .await
        .unwrap()
        .expect("a lease is taken over once expires_at <= now");
    assert_eq!(
        b,
        Lease {
            resource: part.into(),
            owner: "engine-b".into(),
            epoch: 2,
            expires_at: expiry.plus(ttl),
        }
    );
    assert_eq!(
        store
            .acquire_lease(part, "engine-a", expiry, ttl)
            .await
            .unwrap(),
        None,
        "the previous holder cannot renew a lease it lost"
    );

    // Releasing with a stale fence is a no-op; with the current one the lease expires
    // at once but keeps its owner and epoch.
    store.release_lease(&a.fence()).await.unwrap();
    assert_eq!(store.leases().await.unwrap(), vec![b.clone()]);
    store.release_lease(&b.fence()).await.unwrap();
    let released = store.leases().await.unwrap();
    assert_eq!(released.len(), 1);
    assert_eq!(
        (released[0].owner.as_str(), released[0].epoch),
        ("engine-b", 2)
    );
    assert!(released[0].expires_at <= expiry, "{released:?}");

    let a3 = store
        .acquire_lease(part, "engine-a", expiry, ttl)
        .await
        .unwrap()
        .expect("a released lease is free");
    assert_eq!((a3.owner.as_str(), a3.epoch), ("engine-a", 3));

    // A holder renews even after expiry as long as nobody took the lease.
    let late = a3.expires_at.plus(ttl);
    let a3_late = store
        .acquire_lease(part, "engine-a", late, ttl)
        .await
        .unwrap()
        .expect("an expired lease nobody took is renewed");
    assert_eq!(
        a3_late,
        Lease {
            expires_at: late.plus(ttl),
            ..a3
        }
    );

    let leader = store
        .acquire_lease("leader", "engine-b", late, ttl)
        .await
        .unwrap()
        .expect("leases are per resource");
    assert_eq!(leader.epoch, 1);
    assert_eq!(store.leases().await.unwrap(), vec![leader, a3_late]);
}

/// A write carrying a fence its owner lost is refused whole; the holder's and
/// unfenced writes go through.
pub async fn fenced_writes_are_refused_whole(store: &impl Store) {
    let c = sample_campaign("acme");
    store.upsert_tenant(&c.tenant, "Acme").await.unwrap();
    store.insert_campaign(&c).await.unwrap();
    let ttl = Duration::from_secs(10);
    let part = "partition/1";
    // Timestamps long past by any wall clock: the fence check must not look at expiry.
    let t0 = Timestamp(1_000);
    let a = store
        .acquire_lease(part, "engine-a", t0, ttl)
        .await
        .unwrap()
        .unwrap();
    let (m1, m2) = (MessageId::new(), MessageId::new());
    let state = |id, mask| MessageState {
        message_id: id,
        tenant: c.tenant.clone(),
        campaign: c.id,
        recipient: addr("ann@example.com"),
        mask,
        status: "injected".into(),
        detail: None,
    };
    let batch = |fence: Option<Fence>, next, injected, messages| AggregateBatch {
        part: 0,
        group: "analytics".into(),
        fence,
        offsets: vec![off("events", 1, next)],
        stats: vec![(
            c.tenant.clone(),
            c.id,
            CampaignStats {
                injected,
                ..Default::default()
            },
        )],
        messages,
    };
    let stats_of = |injected| {
        Some(CampaignStats {
            injected,
            ..Default::default()
        })
    };

    store
        .commit_aggregates(&batch(Some(a.fence()), 10, 1, vec![state(m1, 1)]))
        .await
        .unwrap();
    store
        .save_offsets("sender", &[off("send", 1, 5)], Some(&a.fence()))
        .await
        .unwrap();

    let b = store
        .acquire_lease(part, "engine-b", t0.plus(ttl), ttl)
        .await
        .unwrap()
        .expect("expired lease taken over");
    let fenced = StoreError::Fenced {
        resource: part.into(),
        owner: "engine-a".into(),
        epoch: 1,
    };
    assert_eq!(
        store
            .commit_aggregates(&batch(
                Some(a.fence()),
                11,
                2,
                vec![state(m1, 3), state(m2, 1)]
            ))
            .await,
        Err(fenced.clone())
    );
    assert_eq!(
        store
            .save_offsets("sender", &[off("send", 1, 9)], Some(&a.fence()))
            .await,
        Err(fenced)
    );
    assert_eq!(store.campaign_stats(c.id).await.unwrap(), stats_of(1));
    let masks = store.message_masks(&[m1, m2]).await.unwrap();
    assert_eq!(masks.into_iter().collect::<Vec<_>>(), vec![(m1, 1)]);
    let offsets = |group, topic| async move {
        store
            .load_offsets(group, topic)
            .await
            .unwrap()
            .into_iter()
            .collect::<Vec<_>>()
    };
    assert_eq!(offsets("analytics", "events").await, vec![(1, 10)]);
    assert_eq!(offsets("sender", "send").await, vec![(1, 5)]);

    // A settlement under the old holder's fence is refused too, and nothing of it stays.
    let settlement = Settlement {
        epoch: 1,
        settled_at: t0,
        group: "reward".into(),
        offsets: vec![],
        entries: vec![],
    };
    assert!(matches!(
        store.commit_settlement(&settlement, Some(&a.fence())).await,
        Err(StoreError::Fenced { .. })
    ));
    assert_eq!(store.settlement(1).await.unwrap(), None);
    store
        .commit_settlement(&settlement, Some(&b.fence()))
        .await
        .unwrap();

    // A resource nobody leased fences every writer.
    let unleased = Fence {
        resource: "partition/9".into(),
        ..a.fence()
    };
    assert!(matches!(
        store
            .save_offsets("sender", &[off("send", 1, 9)], Some(&unleased))
            .await,
        Err(StoreError::Fenced { .. })
    ));

    store
        .commit_aggregates(&batch(Some(b.fence()), 11, 2, vec![state(m1, 3)]))
        .await
        .unwrap();
    assert_eq!(store.campaign_stats(c.id).await.unwrap(), stats_of(2));
    assert_eq!(offsets("analytics", "events").await, vec![(1, 11)]);

    store
        .commit_aggregates(&batch(None, 12, 3, vec![state(m2, 1)]))
        .await
        .unwrap();
    store
        .save_offsets("sender", &[off("send", 1, 9)], None)
        .await
        .unwrap();
    assert_eq!(store.campaign_stats(c.id).await.unwrap(), stats_of(3));
    assert_eq!(store.message_masks(&[m2]).await.unwrap()[&m2], 1);
    assert_eq!(offsets("analytics", "events").await, vec![(1, 12)]);
    assert_eq!(offsets("sender", "send").await, vec![(1, 9)]);
}

/// Live members are those seen at or after `since`, sorted; a heartbeat moves a
/// member's last sighting.
pub async fn members_heartbeat(store: &impl Store) {
    assert!(store.live_members(Timestamp(0)).await.unwrap().is_empty());
    store.heartbeat("engine-b", Timestamp(100)).await.unwrap();
    store.heartbeat("engine-a", Timestamp(200)).await.unwrap();
    store.heartbeat("engine-c", Timestamp(50)).await.unwrap();
    assert_eq!(
        store.live_members(Timestamp(100)).await.unwrap(),
        vec!["engine-a", "engine-b"]
    );
    store.heartbeat("engine-c", Timestamp(300)).await.unwrap();
    assert_eq!(
        store.live_members(Timestamp(150)).await.unwrap(),
        vec!["engine-a", "engine-c"]
    );
    assert_eq!(
        store.live_members(Timestamp(0)).await.unwrap(),
        vec!["engine-a", "engine-b", "engine-c"]
    );
    assert!(store.live_members(Timestamp(301)).await.unwrap().is_empty());
}

/// Tenants come back ordered by id; a rename keeps the creation time.
pub async fn tenants_are_listed_and_found(store: &impl Store) {
    assert!(store.tenants().await.unwrap().is_empty());
    let acme = TenantId::parse("acme").unwrap();
    let beta = TenantId::parse("beta").unwrap();
    store.upsert_tenant(&beta, "Beta").await.unwrap();
    store.upsert_tenant(&acme, "Acme").await.unwrap();
    let first = store.tenant(&acme).await.unwrap().expect("acme stored");
    assert_eq!(
        (first.id.clone(), first.name.as_str()),
        (acme.clone(), "Acme")
    );
    assert!(first.created_at.0 > 0, "{first:?}");
    store.upsert_tenant(&acme, "Acme Inc").await.unwrap();

    let all = store.tenants().await.unwrap();
    let names: Vec<_> = all
        .iter()
        .map(|t| (t.id.as_str(), t.name.as_str()))
        .collect();
    assert_eq!(names, vec![("acme", "Acme Inc"), ("beta", "Beta")]);
    assert_eq!(
        all[0].created_at, first.created_at,
        "a rename keeps created_at"
    );
    assert_eq!(store.tenant(&acme).await.unwrap().as_ref(), Some(&all[0]));
    let missing = TenantId::parse("missing").unwrap();
    assert_eq!(store.tenant(&missing).await.unwrap(), None);
}

fn new_key(id: &str, tenant: &TenantId, created_at: i64) -> NewApiKey {
    NewApiKey {
        id: id.into(),
        tenant: tenant.clone(),
        name: format!("key {id}"),
        scopes: vec!["send".into(), "read".into()],
        secret_hash: [id.len() as u8; 32],
        created_at: Timestamp(created_at),
        issued_by: None,
    }
}

fn stored(key: &NewApiKey) -> ApiKeyRecord {
    ApiKeyRecord {
        id: key.id.clone(),
        tenant: key.tenant.clone(),
        name: key.name.clone(),
        scopes: key.scopes.clone(),
        secret_hash: key.secret_hash,
        created_at: key.created_at,
        last_used_at: None,
        revoked_at: None,
        issued_by: key.issued_by.clone(),
    }
}

/// Keys come back as stored, per tenant and oldest first; ids are unique across
/// tenants and a key needs an existing tenant.
pub async fn api_keys_round_trip(store: &impl Store) {
    let acme = TenantId::parse("acme").unwrap();
    let beta = TenantId::parse("beta").unwrap();
    store.upsert_tenant(&acme, "Acme").await.unwrap();
    store.upsert_tenant(&beta, "Beta").await.unwrap();
    assert_eq!(store.api_key("k1").await.unwrap(), None);
    assert!(store.api_keys(&acme).await.unwrap().is_empty());

    let later = new_key("k1", &acme, 2_000);
    let earlier = NewApiKey {
        scopes: vec!["admin".into()],
        secret_hash: [0xab; 32],
        ..new_key("k2", &acme, 1_000)
    };
    let no_scopes = NewApiKey {
        scopes: vec![],
        ..new_key("k3", &beta, 1_500)
    };
    for k in [&later, &earlier, &no_scopes] {
        store.create_api_key(k).await.unwrap();
    }
    assert_eq!(store.api_key("k1").await.unwrap(), Some(stored(&later)));
    assert_eq!(store.api_key("k3").await.unwrap(), Some(stored(&no_scopes)));
    assert_eq!(
        store.api_keys(&acme).await.unwrap(),
        vec![stored(&earlier), stored(&later)]
    );
    assert_eq!(
        store.api_keys(&beta).await.unwrap(),
        vec![stored(&no_scopes)]
    );

    let same_id = new_key("k1", &beta, 3_000);
    assert!(matches!(
        store.create_api_key(&same_id).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(store.api_key("k1").await.unwrap(), Some(stored(&later)));
    let orphan = new_key("k9", &TenantId::parse("nobody").unwrap(), 1);
    assert!(matches!(
        store.create_api_key(&orphan).await,
        Err(StoreError::InvalidRow { .. })
    ));
    assert_eq!(store.api_key("k9").await.unwrap(), None);
}

/// Only the owning tenant revokes a key; revoking again keeps the first time.
pub async fn api_keys_are_revoked_by_their_tenant_only(store: &impl Store) {
    let acme = TenantId::parse("acme").unwrap();
    let beta = TenantId::parse("beta").unwrap();
    store.upsert_tenant(&acme, "Acme").await.unwrap();
    store.upsert_tenant(&beta, "Beta").await.unwrap();
    let key = new_key("k1", &acme, 1_000);
    store.create_api_key(&key).await.unwrap();

    assert!(
        !store
            .revoke_api_key(&beta, "k1", Timestamp(5_000))
            .await
            .unwrap(),
        "another tenant's key is not revoked"
    );
    assert!(
        !store
            .revoke_api_key(&acme, "nope", Timestamp(5_000))
            .await
            .unwrap()
    );
    assert_eq!(store.api_key("k1").await.unwrap(), Some(stored(&key)));

    assert!(
        store
            .revoke_api_key(&acme, "k1", Timestamp(6_000))
            .await
            .unwrap()
    );
    let revoked = ApiKeyRecord {
        revoked_at: Some(Timestamp(6_000)),
        ..stored(&key)
    };
    assert_eq!(store.api_key("k1").await.unwrap(), Some(revoked.clone()));
    assert!(
        store
            .revoke_api_key(&acme, "k1", Timestamp(9_000))
            .await
            .unwrap()
    );
    assert_eq!(store.api_key("k1").await.unwrap(), Some(revoked.clone()));
    assert_eq!(store.api_keys(&acme).await.unwrap(), vec![revoked]);
}

/// Revoking a key revokes the keys it issued, and theirs; nothing else.
pub async fn revoking_a_key_revokes_what_it_issued(store: &impl Store) {
    let acme = TenantId::parse("acme").unwrap();
    store.upsert_tenant(&acme, "Acme").await.unwrap();
    let issued = |id: &str, by: &str| NewApiKey {
        issued_by: Some(by.into()),
        ..new_key(id, &acme, 2_000)
    };
    for key in [
        new_key("root", &acme, 1_000),
        issued("child", "root"),
        issued("grandchild", "child"),
        new_key("other", &acme, 1_000),
        issued("sibling", "other"),
    ] {
        store.create_api_key(&key).await.unwrap();
    }
    assert_eq!(
        store.api_key("child").await.unwrap().unwrap().issued_by,
        Some("root".to_string())
    );
    assert!(
        store
            .revoke_api_key(&acme, "root", Timestamp(5_000))
            .await
            .unwrap()
    );
    for (id, revoked) in [
        ("root", true),
        ("child", true),
        ("grandchild", true),
        ("other", false),
        ("sibling", false),
    ] {
        let key = store.api_key(id).await.unwrap().unwrap();
        assert_eq!(key.revoked_at.is_some(), revoked, "{id}: {key:?}");
    }
}

/// Touching records the latest use and never moves it back; unknown ids are ignored.
pub async fn api_key_use_is_recorded(store: &impl Store) {
    let acme = TenantId::parse("acme").unwrap();
    store.upsert_tenant(&acme, "Acme").await.unwrap();
    let key = new_key("k1", &acme, 1_000);
    store.create_api_key(&key).await.unwrap();
    store.touch_api_key("k1", Timestamp(3_000)).await.unwrap();
    store.touch_api_key("k1", Timestamp(2_000)).await.unwrap();
    store.touch_api_key("nope", Timestamp(2_000)).await.unwrap();
    let used = store.api_key("k1").await.unwrap().unwrap();
    assert_eq!(used.last_used_at, Some(Timestamp(3_000)));
    store.touch_api_key("k1", Timestamp(4_000)).await.unwrap();
    let used = store.api_key("k1").await.unwrap().unwrap();
    assert_eq!(
        used,
        ApiKeyRecord {
            last_used_at: Some(Timestamp(4_000)),
            ..stored(&key)
        }
    );
}
