//! Contract cases of the campaign lifecycle: states, transitions, staged recipients
//! and idempotent single sends.

use crate::ports::{IdempotentSend, Store, StoreError, Transition};
use crate::testkit::{addr, sample_campaign};
use crate::{
    Campaign, CampaignId, CampaignState, CampaignStatus, MessageId, StagedRecipient, TenantId,
    Timestamp,
};
use std::collections::BTreeMap;

use CampaignStatus::{Cancelled, Draft, Paused, Running, Scheduled};

fn state(status: CampaignStatus, scheduled_at: Option<i64>, updated_at: i64) -> CampaignState {
    CampaignState {
        status,
        scheduled_at: scheduled_at.map(Timestamp),
        updated_at: Timestamp(updated_at),
    }
}

/// A campaign of `tenant` (created if missing) stored with `s`.
async fn created(store: &impl Store, tenant: &str, s: CampaignState) -> Campaign {
    let c = sample_campaign(tenant);
    store.upsert_tenant(&c.tenant, tenant).await.unwrap();
    store.create_campaign(&c, &s).await.unwrap();
    c
}

fn staged(email: &str, var: &str) -> StagedRecipient {
    StagedRecipient {
        message_id: MessageId::new(),
        email: addr(email),
        vars: BTreeMap::from([("first_name".to_string(), var.to_string())]),
    }
}

fn ids(rows: &[StagedRecipient]) -> Vec<MessageId> {
    rows.iter().map(|r| r.message_id).collect()
}

/// Campaigns are stored with their state and listed per tenant, oldest first;
/// `insert_campaign` stores a running campaign; updates keep the state and tenant.
pub async fn campaign_states_round_trip(store: &impl Store) {
    let before = Timestamp::now();
    let running = sample_campaign("acme");
    store.upsert_tenant(&running.tenant, "Acme").await.unwrap();
    store.insert_campaign(&running).await.unwrap();
    let got = store.campaign_state(running.id).await.unwrap().unwrap();
    assert_eq!((got.status, got.scheduled_at), (Running, None));
    assert!(got.updated_at >= before, "{got:?} set at insertion");

    let draft = created(store, "acme", state(Draft, None, 1_000)).await;
    let scheduled = created(store, "acme", state(Scheduled, Some(9_000), 2_000)).await;
    let other = created(store, "beta", state(Draft, None, 3_000)).await;
    assert_eq!(
        store.campaign_state(scheduled.id).await.unwrap(),
        Some(state(Scheduled, Some(9_000), 2_000))
    );
    assert_eq!(store.campaign_state(CampaignId::new()).await.unwrap(), None);
    assert!(matches!(
        store.create_campaign(&draft, &state(Draft, None, 1)).await,
        Err(StoreError::Conflict(_))
    ));

    let acme = store.campaigns(&running.tenant).await.unwrap();
    assert_eq!(
        acme,
        vec![
            (running.clone(), got),
            (draft.clone(), state(Draft, None, 1_000)),
            (scheduled.clone(), state(Scheduled, Some(9_000), 2_000)),
        ]
    );
    assert_eq!(
        store.campaigns(&other.tenant).await.unwrap(),
        vec![(other.clone(), state(Draft, None, 3_000))]
    );
    let nobody = TenantId::parse("nobody").unwrap();
    assert!(store.campaigns(&nobody).await.unwrap().is_empty());

    let mut renamed = draft.clone();
    renamed.name = "Summer sale".into();
    renamed.from = addr("deals@shop.example");
    renamed.from_name = None;
    renamed.template.subject = "Hi {{ first_name }}".into();
    assert!(store.update_campaign(&renamed).await.unwrap());
    assert_eq!(
        store.campaign(draft.id).await.unwrap(),
        Some(renamed.clone())
    );
    assert_eq!(
        store.campaign_state(draft.id).await.unwrap(),
        Some(state(Draft, None, 1_000)),
        "an update leaves the state alone"
    );
    let unknown = Campaign {
        id: CampaignId::new(),
        ..renamed.clone()
    };
    assert!(!store.update_campaign(&unknown).await.unwrap());
    let moved = Campaign {
        tenant: other.tenant.clone(),
        ..renamed.clone()
    };
    assert!(matches!(
        store.update_campaign(&moved).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(store.campaign(draft.id).await.unwrap(), Some(renamed));
}

/// A transition happens only from the allowed statuses; otherwise it reports the
/// status as it is, or that the campaign is unknown.
pub async fn transitions_are_compare_and_set(store: &impl Store) {
    let c = created(store, "acme", state(Draft, None, 1_000)).await;
    let t = store
        .transition_campaign(
            c.id,
            &[Draft],
            Scheduled,
            Some(Timestamp(9_000)),
            Timestamp(2_000),
        )
        .await
        .unwrap();
    assert_eq!(t, Transition::Done(state(Scheduled, Some(9_000), 2_000)));

    let t = store
        .transition_campaign(c.id, &[Draft, Paused], Running, None, Timestamp(3_000))
        .await
        .unwrap();
    assert_eq!(
        t,
        Transition::Refused(state(Scheduled, Some(9_000), 2_000)),
        "refused, with the state as it is"
    );
    let t = store
        .transition_campaign(c.id, &[], Running, None, Timestamp(3_000))
        .await
        .unwrap();
    assert_eq!(t, Transition::Refused(state(Scheduled, Some(9_000), 2_000)));

    let t = store
        .transition_campaign(c.id, &[Scheduled], Running, None, Timestamp(4_000))
        .await
        .unwrap();
    assert_eq!(
        t,
        Transition::Done(state(Running, Some(9_000), 4_000)),
        "the schedule is kept for the record"
    );
    assert_eq!(
        store.campaign_state(c.id).await.unwrap(),
        Some(state(Running, Some(9_000), 4_000))
    );
    let t = store
        .transition_campaign(c.id, &[Running], Paused, None, Timestamp(5_000))
        .await
        .unwrap();
    assert_eq!(t, Transition::Done(state(Paused, Some(9_000), 5_000)));

    let t = store
        .transition_campaign(CampaignId::new(), &[Draft], Running, None, Timestamp(5_000))
        .await
        .unwrap();
    assert_eq!(t, Transition::Unknown);
}

/// Of two callers starting the same scheduled campaign at once, exactly one does.
pub async fn racing_transitions_elect_one(store: &impl Store) {
    for round in 0..5 {
        let c = created(store, "acme", state(Scheduled, Some(1_000), 500)).await;
        let (a, b) = tokio::join!(
            store.transition_campaign(c.id, &[Scheduled], Running, None, Timestamp(2_000)),
            store.transition_campaign(c.id, &[Scheduled], Running, None, Timestamp(3_000)),
        );
        let (a, b) = (a.unwrap(), b.unwrap());
        let done = [a, b]
            .iter()
            .filter(|t| matches!(t, Transition::Done(_)))
            .count();
        assert_eq!(done, 1, "round {round}: {a:?} {b:?}");
        let winner = match (a, b) {
            (Transition::Done(s), Transition::Refused(r))
            | (Transition::Refused(r), Transition::Done(s)) => {
                assert_eq!(r, s, "the loser sees the winner's state");
                s
            }
            other => panic!("round {round}: {other:?}"),
        };
        assert_eq!(winner.status, Running);
        assert_eq!(store.campaign_state(c.id).await.unwrap(), Some(winner));
    }
}

/// Due campaigns are the scheduled ones whose time has come, earliest first.
pub async fn due_campaigns_by_time(store: &impl Store) {
    let late = created(store, "acme", state(Scheduled, Some(3_000), 1)).await;
    let early = created(store, "acme", state(Scheduled, Some(1_000), 1)).await;
    let middle = created(store, "beta", state(Scheduled, Some(2_000), 1)).await;
    created(store, "acme", state(Draft, None, 1)).await;
    created(store, "acme", state(Running, Some(500), 1)).await;

    assert!(
        store
            .due_campaigns(Timestamp(999))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store.due_campaigns(Timestamp(2_000)).await.unwrap(),
        vec![early.id, middle.id],
        "at or before now"
    );
    store
        .transition_campaign(early.id, &[Scheduled], Running, None, Timestamp(2_500))
        .await
        .unwrap();
    assert_eq!(
        store.due_campaigns(Timestamp(10_000)).await.unwrap(),
        vec![middle.id, late.id]
    );
}

/// Staged recipients come back in staging order; re-staging moves a message to the
/// end, pending; launched ones are counted apart.
pub async fn staging_keeps_order(store: &impl Store) {
    let c = created(store, "acme", state(Draft, None, 1)).await;
    assert!(store.pending_recipients(c.id, 10).await.unwrap().is_empty());
    assert_eq!(store.staged_counts(c.id).await.unwrap(), (0, 0));

    let a = staged("a@example.com", "A");
    let b = staged("b@example.com", "B");
    let d = staged("d@example.com", "D");
    store
        .stage_recipients(c.id, &[a.clone(), b.clone()])
        .await
        .unwrap();
    store
        .stage_recipients(c.id, std::slice::from_ref(&d))
        .await
        .unwrap();
    store.stage_recipients(c.id, &[]).await.unwrap();
    assert_eq!(
        store.pending_recipients(c.id, 10).await.unwrap(),
        vec![a.clone(), b.clone(), d.clone()]
    );
    assert_eq!(
        store.pending_recipients(c.id, 2).await.unwrap(),
        vec![a.clone(), b.clone()]
    );
    assert!(store.pending_recipients(c.id, 0).await.unwrap().is_empty());

    store
        .mark_launched(c.id, &[a.message_id, MessageId::new()])
        .await
        .unwrap();
    assert_eq!(store.staged_counts(c.id).await.unwrap(), (2, 1));
    assert_eq!(
        store.pending_recipients(c.id, 10).await.unwrap(),
        vec![b.clone(), d.clone()]
    );

    // A held message comes back: pending again, last, with its new address and vars.
    let a2 = StagedRecipient {
        message_id: a.message_id,
        ..staged("a2@example.com", "A2")
    };
    let b2 = StagedRecipient {
        message_id: b.message_id,
        ..staged("b2@example.com", "B2")
    };
    store
        .stage_recipients(c.id, &[a2.clone(), b2.clone()])
        .await
        .unwrap();
    assert_eq!(
        store.pending_recipients(c.id, 10).await.unwrap(),
        vec![d.clone(), a2.clone(), b2.clone()]
    );
    assert_eq!(store.staged_counts(c.id).await.unwrap(), (3, 0));

    // A message id given twice in one call: the later row wins, at its place.
    let e = staged("e@example.com", "E");
    let e2 = StagedRecipient {
        message_id: e.message_id,
        ..staged("e2@example.com", "E2")
    };
    let f = staged("f@example.com", "F");
    store
        .stage_recipients(c.id, &[e, f.clone(), e2.clone()])
        .await
        .unwrap();
    assert_eq!(
        store.pending_recipients(c.id, 10).await.unwrap(),
        vec![d, a2, b2, f, e2]
    );
    assert_eq!(store.staged_counts(c.id).await.unwrap(), (5, 0));

    let other = created(store, "acme", state(Draft, None, 1)).await;
    assert_eq!(store.staged_counts(other.id).await.unwrap(), (0, 0));
    assert!(matches!(
        store
            .stage_recipients(CampaignId::new(), &[staged("x@example.com", "X")])
            .await,
        Err(StoreError::InvalidRow { .. })
    ));
}

/// Only running campaigns with pending recipients are launchable; cancelling drops
/// pending recipients and keeps the launched ones.
pub async fn launchable_campaigns_and_cancelling(store: &impl Store) {
    let running = created(store, "acme", state(Running, None, 1)).await;
    let drained = created(store, "acme", state(Running, None, 1)).await;
    let draft = created(store, "acme", state(Draft, None, 1)).await;
    let paused = created(store, "acme", state(Paused, None, 1)).await;
    let rows = [staged("a@example.com", "A"), staged("b@example.com", "B")];
    for c in [&running, &drained, &draft, &paused] {
        let fresh: Vec<StagedRecipient> = rows
            .iter()
            .map(|r| StagedRecipient {
                message_id: MessageId::new(),
                ..r.clone()
            })
            .collect();
        store.stage_recipients(c.id, &fresh).await.unwrap();
    }
    let done = store.pending_recipients(drained.id, 10).await.unwrap();
    store.mark_launched(drained.id, &ids(&done)).await.unwrap();
    assert_eq!(store.staged_counts(drained.id).await.unwrap(), (0, 2));
    assert_eq!(
        store.launchable_campaigns().await.unwrap(),
        vec![running.id]
    );

    store
        .transition_campaign(draft.id, &[Draft], Running, None, Timestamp(2))
        .await
        .unwrap();
    let mut launchable = store.launchable_campaigns().await.unwrap();
    launchable.sort();
    let mut expected = vec![running.id, draft.id];
    expected.sort();
    assert_eq!(launchable, expected);

    let first = store.pending_recipients(running.id, 1).await.unwrap();
    store.mark_launched(running.id, &ids(&first)).await.unwrap();
    let t = store
        .transition_campaign(
            running.id,
            &[Running, Paused],
            Cancelled,
            None,
            Timestamp(3),
        )
        .await
        .unwrap();
    assert!(matches!(t, Transition::Done(s) if s.status == Cancelled));
    assert_eq!(
        store.staged_counts(running.id).await.unwrap(),
        (0, 1),
        "pending dropped, launched kept"
    );
    assert!(
        store
            .pending_recipients(running.id, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.launchable_campaigns().await.unwrap(), vec![draft.id]);
    assert_eq!(
        store.staged_counts(paused.id).await.unwrap(),
        (2, 0),
        "other campaigns keep theirs"
    );
}

/// Ten thousand recipients stage in one call, in order, and launch in one call.
pub async fn large_stagings_keep_order(store: &impl Store) {
    let c = created(store, "acme", state(Running, None, 1)).await;
    let rows: Vec<StagedRecipient> = (0..10_000)
        .map(|i| staged(&format!("r{i}@example.com"), &i.to_string()))
        .collect();
    store.stage_recipients(c.id, &rows).await.unwrap();
    assert_eq!(store.staged_counts(c.id).await.unwrap(), (10_000, 0));
    assert_eq!(store.pending_recipients(c.id, 20_000).await.unwrap(), rows);
    store.mark_launched(c.id, &ids(&rows)).await.unwrap();
    assert_eq!(store.staged_counts(c.id).await.unwrap(), (0, 10_000));
    assert!(store.launchable_campaigns().await.unwrap().is_empty());
}

fn send(c: &Campaign, key: &str, email: &str, fingerprint: u8) -> IdempotentSend {
    IdempotentSend {
        tenant: c.tenant.clone(),
        key: key.into(),
        campaign: c.id,
        message_id: MessageId::new(),
        email: addr(email),
        fingerprint: [fingerprint; 32],
        accepted_at: Timestamp(1_000 + i64::from(fingerprint)),
        enqueued: false,
    }
}

/// The first send stored under a key is the one every repeat gets back; enqueueing
/// is recorded per key and tenant.
pub async fn idempotent_sends_keep_the_first(store: &impl Store) {
    let c = created(store, "acme", state(Running, None, 1)).await;
    let beta = created(store, "beta", state(Running, None, 1)).await;
    assert!(store.reserve_sends(&[]).await.unwrap().is_empty());

    let k1 = send(&c, "order-1", "a@example.com", 1);
    let k2 = send(&c, "order-2", "b@example.com", 2);
    let got = store
        .reserve_sends(&[k1.clone(), k2.clone()])
        .await
        .unwrap();
    assert_eq!(got, vec![k1.clone(), k2.clone()]);

    // A repeat with a new message id (and another fingerprint) gets the first back.
    let repeat = send(&c, "order-1", "other@example.com", 9);
    let k3 = send(&c, "order-3", "c@example.com", 3);
    let k3_again = send(&c, "order-3", "c@example.com", 4);
    let got = store
        .reserve_sends(&[k3.clone(), repeat, k3_again])
        .await
        .unwrap();
    assert_eq!(
        got,
        vec![k3.clone(), k1.clone(), k3.clone()],
        "in the given order; a key given twice in one call keeps the first"
    );

    store
        .mark_sends_enqueued(&c.tenant, &["order-1".to_string(), "nope".to_string()])
        .await
        .unwrap();
    store.mark_sends_enqueued(&c.tenant, &[]).await.unwrap();
    let got = store
        .reserve_sends(&[send(&c, "order-2", "b@example.com", 2), k1.clone()])
        .await
        .unwrap();
    let enqueued = IdempotentSend {
        enqueued: true,
        ..k1.clone()
    };
    assert_eq!(got, vec![k2, enqueued]);

    // Keys are per tenant.
    let theirs = send(&beta, "order-1", "z@example.com", 7);
    assert_eq!(
        store
            .reserve_sends(std::slice::from_ref(&theirs))
            .await
            .unwrap(),
        vec![theirs]
    );
}

/// Retention deletes keyed sends, launched recipients and message states past their
/// cutoffs, in passes of at most `limit` rows of each kind, and nothing younger;
/// pending recipients and campaign stats stay whatever their age.
pub async fn retention_deletes_only_what_is_past_its_cutoff(store: &impl Store) {
    use crate::ports::{AggregateBatch, Cutoffs, MessageState, Pruned};
    let c = created(store, "acme", state(Running, None, 1)).await;
    // Keyed sends accepted at 1,001..1,005 (their fingerprints).
    let sends: Vec<IdempotentSend> = (1..=5)
        .map(|i| send(&c, &format!("k{i}"), "a@example.com", i))
        .collect();
    store.reserve_sends(&sends).await.unwrap();
    let rows: Vec<StagedRecipient> = (0..5)
        .map(|i| staged(&format!("r{i}@example.com"), "x"))
        .collect();
    store.stage_recipients(c.id, &rows).await.unwrap();
    store.mark_launched(c.id, &ids(&rows[..3])).await.unwrap();
    let messages: Vec<MessageState> = rows
        .iter()
        .map(|r| MessageState {
            message_id: r.message_id,
            tenant: c.tenant.clone(),
            campaign: c.id,
            recipient: r.email.clone(),
            mask: 1,
            status: "injected".into(),
            detail: None,
        })
        .collect();
    let stats = crate::CampaignStats {
        injected: 5,
        ..Default::default()
    };
    store
        .commit_aggregates(&AggregateBatch {
            group: "analytics".into(),
            fence: None,
            offsets: vec![],
            part: 0,
            stats: vec![(c.tenant.clone(), c.id, stats)],
            messages: messages.clone(),
        })
        .await
        .unwrap();
    let now = Timestamp::now();

    // Cutoffs before everything: nothing goes.
    let before = Cutoffs {
        keyed_sends: Timestamp(1_000),
        launched_recipients: Timestamp(now.0 - 3_600_000),
        messages: Timestamp(now.0 - 3_600_000),
    };
    assert_eq!(store.prune(&before, 100).await.unwrap(), Pruned::default());

    // Keyed sends accepted before 1,003 go (two); recipients launched and messages
    // written before an hour from now go, two at a time.
    let after = Cutoffs {
        keyed_sends: Timestamp(1_003),
        launched_recipients: Timestamp(now.0 + 3_600_000),
        messages: Timestamp(now.0 + 3_600_000),
    };
    let first = store.prune(&after, 2).await.unwrap();
    assert_eq!(
        first,
        Pruned {
            keyed_sends: 2,
            launched_recipients: 2,
            messages: 2
        }
    );
    let mut total = first;
    loop {
        let pass = store.prune(&after, 2).await.unwrap();
        if pass.total() == 0 {
            break;
        }
        total.keyed_sends += pass.keyed_sends;
        total.launched_recipients += pass.launched_recipients;
        total.messages += pass.messages;
    }
    assert_eq!(
        total,
        Pruned {
            keyed_sends: 2,
            launched_recipients: 3,
            messages: 5
        }
    );
    // What is left: the younger keyed sends (a repeat of k1 is new again), the two
    // pending recipients, the campaign's stats.
    let again = send(&c, "k1", "b@example.com", 9);
    let got = store
        .reserve_sends(&[again.clone(), sends[3].clone()])
        .await
        .unwrap();
    assert_eq!(got, vec![again, sends[3].clone()]);
    assert_eq!(store.staged_counts(c.id).await.unwrap(), (2, 0));
    assert_eq!(
        ids(&store.pending_recipients(c.id, 10).await.unwrap()),
        ids(&rows[3..])
    );
    assert_eq!(store.message(rows[0].message_id).await.unwrap(), None);
    assert_eq!(store.campaign_stats(c.id).await.unwrap(), Some(stats));
}

/// Unsuppressing takes an address off one tenant's list only.
pub async fn unsuppress_removes_one_address(store: &impl Store) {
    let acme = TenantId::parse("acme").unwrap();
    let beta = TenantId::parse("beta").unwrap();
    let a = addr("a@example.com");
    store.suppress(&acme, &a, "bounce").await.unwrap();
    store.suppress(&beta, &a, "complaint").await.unwrap();
    assert!(store.unsuppress(&acme, &a).await.unwrap());
    assert!(!store.is_suppressed(&acme, &a).await.unwrap());
    assert!(store.is_suppressed(&beta, &a).await.unwrap());
    assert!(!store.unsuppress(&acme, &a).await.unwrap());
    assert!(
        !store
            .unsuppress(&acme, &addr("never@example.com"))
            .await
            .unwrap()
    );
    store.suppress(&acme, &a, "manual").await.unwrap();
    assert_eq!(
        store.suppressions(&acme).await.unwrap(),
        vec![(a, "manual".to_string())],
        "suppressed again with the new reason"
    );
}

/// The deferred queue: sends come back once due, earliest first, each taken once
/// until its partition's new owner releases them; one deferred again is takeable at
/// its new time; forgotten ones are gone; partitions are apart; and a write under a
/// fence its owner lost is refused whole.
pub async fn deferred_sends_come_due_once_in_order(store: &impl Store) {
    use crate::ports::DeferredSend;
    let send = |partition: u32, due: i64, n: u8| DeferredSend {
        message_id: MessageId::new(),
        partition,
        destination: "slow.example".into(),
        due: Timestamp(due),
        key: vec![b'k', n],
        payload: vec![n; 3],
    };
    let (a, b, c) = (send(0, 3_000, 1), send(0, 1_000, 2), send(0, 2_000, 3));
    let other = send(1, 500, 4);
    assert_eq!(store.next_deferred_due(0).await.unwrap(), None);
    store
        .defer_sends(&[a.clone(), b.clone(), c.clone(), other.clone()], None)
        .await
        .unwrap();
    assert_eq!(
        store.next_deferred_due(0).await.unwrap(),
        Some(Timestamp(1_000))
    );
    let take = |at: i64, limit: usize| store.take_due_sends(0, Timestamp(at), limit);
    assert_eq!(take(999, 10).await.unwrap(), vec![]);
    assert_eq!(take(2_500, 1).await.unwrap(), vec![b.clone()]);
    assert_eq!(take(2_500, 10).await.unwrap(), vec![c.clone()]);
    // Taken ones wait for their window: skipped by takes and by the next due time.
    assert_eq!(take(2_500, 10).await.unwrap(), vec![]);
    assert_eq!(
        store.next_deferred_due(0).await.unwrap(),
        Some(Timestamp(3_000))
    );

    // Deferred again (still held back): takeable once its new time comes.
    let later = DeferredSend {
        due: Timestamp(4_000),
        ..c.clone()
    };
    store
        .defer_sends(std::slice::from_ref(&later), None)
        .await
        .unwrap();
    assert_eq!(take(3_500, 10).await.unwrap(), vec![a.clone()]);
    store
        .forget_deferred(&[b.message_id, MessageId::new()])
        .await
        .unwrap();
    // A new owner releases what the old window held: `a` (taken) and `later`.
    assert_eq!(store.release_deferred(0).await.unwrap(), 2);
    assert_eq!(
        take(5_000, 10).await.unwrap(),
        vec![a.clone(), later.clone()]
    );
    assert_eq!(
        store.take_due_sends(1, Timestamp(5_000), 10).await.unwrap(),
        vec![other.clone()]
    );
    store
        .forget_deferred(&[a.message_id, later.message_id, other.message_id])
        .await
        .unwrap();
    assert_eq!(store.release_deferred(0).await.unwrap(), 0);
    assert_eq!(store.release_deferred(1).await.unwrap(), 0);

    // Only the partition's owner writes: a lost lease's fence is refused.
    let ttl = std::time::Duration::from_secs(10);
    let t0 = Timestamp(1_000);
    let old = store
        .acquire_lease("partition/3", "engine-a", t0, ttl)
        .await
        .unwrap()
        .unwrap();
    store
        .acquire_lease("partition/3", "engine-b", t0.plus(ttl), ttl)
        .await
        .unwrap()
        .expect("expired lease taken over");
    let stale = send(3, 1_000, 5);
    assert!(matches!(
        store.defer_sends(&[stale], Some(&old.fence())).await,
        Err(crate::ports::StoreError::Fenced { .. })
    ));
    assert_eq!(store.next_deferred_due(3).await.unwrap(), None);
}
