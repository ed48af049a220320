//! End to end on embedded adapters: intake, sender, bounce, analytics, reward and
//! anchor actors, delivering into a real SMTP sink over TCP.

mod common;

use common::{Harness, header, per_recipient, row, run};
use maily_engine::merkle::verify;
use maily_smtp::SinkReply;
use std::collections::{HashMap, HashSet};

#[test]
fn a_campaign_flows_through_every_actor_into_the_sink() {
    run(async {
        let hard: Vec<usize> = vec![3, 400, 801, 1202, 1603];
        let soft: Vec<usize> = vec![10, 1000, 1990];
        let mut rejections = HashMap::new();
        for i in &hard {
            rejections.insert(
                format!("person{i}@example.com"),
                SinkReply::new(550, "5.1.1 no such user here"),
            );
        }
        for i in &soft {
            rejections.insert(
                format!("person{i}@example.com"),
                SinkReply::new(552, "5.2.2 mailbox full"),
            );
        }
        let h = Harness::start(rejections).await;
        let campaigns = [
            h.campaign("one").await,
            h.campaign("two").await,
            h.campaign("three").await,
        ];

        // 2,000 good rows plus bad ones, all in campaign "one".
        let mut rows: Vec<Vec<_>> = vec![Vec::new(); 3];
        for i in 0..2000 {
            rows[i % 3].push(row(i));
        }
        let mut bad_address = row(5000);
        bad_address.email = "no-at-sign.example.com".into();
        let mut missing_var = row(5001);
        missing_var.vars.remove("city");
        let mut injected = row(5002);
        injected.vars.insert(
            "first_name".into(),
            "Eve\r\nBcc: everyone@example.org".into(),
        );
        rows[0].extend([bad_address, missing_var, injected]);

        let mut accepted = Vec::new();
        let mut intake_errors = Vec::new();
        for (c, rows) in campaigns.iter().zip(rows) {
            let report = h.intake.enqueue(c, rows).await.expect("enqueued");
            accepted.push((c.id, report.accepted));
            intake_errors.extend(report.rejected);
        }
        assert_eq!(intake_errors.len(), 1, "{intake_errors:?}");
        assert_eq!(intake_errors[0].input, "no-at-sign.example.com");
        assert!(
            intake_errors[0].reason.contains("invalid address"),
            "{:?}",
            intake_errors[0]
        );

        h.wait_finished(&accepted).await;
        let received = h.sink.received();

        // Exactly one message per deliverable recipient, each with its own fields.
        let counts = per_recipient(&received);
        assert!(
            counts.values().all(|n| *n == 1),
            "a recipient got two messages"
        );
        let refused: HashSet<usize> = hard.iter().chain(&soft).copied().collect();
        let expected: HashSet<String> = (0..2000)
            .filter(|i| !refused.contains(i))
            .map(|i| format!("person{i}@example.com"))
            .collect();
        assert_eq!(counts.keys().cloned().collect::<HashSet<_>>(), expected);
        for m in &received {
            let to = &m.rcpt_to[0];
            let i: usize = to["person".len()..to.find('@').unwrap()].parse().unwrap();
            assert_eq!(
                header(m, "Subject").unwrap(),
                format!("Hello Name{i}, news for Oslo")
            );
            let body = String::from_utf8_lossy(&m.data);
            assert!(body.contains(&format!("your code is CODE-{i}.")), "{body}");
            assert!(
                !body.contains("\r\nBcc:"),
                "header injection reached the wire"
            );
        }

        // Stats in the store equal what the sink saw, campaign by campaign.
        let mut by_campaign: HashMap<String, u64> = HashMap::new();
        for m in &received {
            *by_campaign
                .entry(header(m, "X-Maily-Campaign").unwrap())
                .or_default() += 1;
        }
        for (k, (id, n)) in accepted.iter().enumerate() {
            let s = h.stats(*id).await;
            assert_eq!(s.delivered, by_campaign[&id.to_string()], "campaign {k}");
            let hard_here = hard.iter().filter(|i| *i % 3 == k).count() as u64;
            let soft_here = soft.iter().filter(|i| *i % 3 == k).count() as u64;
            assert_eq!(s.bounced_hard, hard_here, "campaign {k}");
            assert_eq!(s.bounced_soft, soft_here, "campaign {k}");
            let rejected_here = if k == 0 { 2 } else { 0 };
            assert_eq!(s.rejected, rejected_here, "campaign {k}");
            assert_eq!(s.injected, s.delivered + s.bounced(), "campaign {k}");
            assert_eq!(s.finished(), *n, "campaign {k}");
        }

        // Bad rows are reported per recipient with a clear reason.
        let rejected = h
            .ports
            .store
            .messages_with_status(campaigns[0].id, "rejected")
            .await
            .unwrap();
        let reason_of = |who: &str| {
            rejected
                .iter()
                .find(|m| m.recipient.as_str() == who)
                .and_then(|m| m.detail.clone())
                .unwrap_or_default()
        };
        assert!(
            reason_of("person5001@example.com").contains("`city`"),
            "{rejected:?}"
        );
        assert!(
            reason_of("person5002@example.com").contains("line break"),
            "{rejected:?}"
        );

        // Hard bounces are suppressed, soft ones are not.
        let suppressed: HashSet<String> = h
            .ports
            .store
            .suppressions(&h.tenant)
            .await
            .unwrap()
            .into_iter()
            .map(|(a, _)| a.to_string())
            .collect();
        let hard_addrs: HashSet<String> = hard
            .iter()
            .map(|i| format!("person{i}@example.com"))
            .collect();
        assert_eq!(suppressed, hard_addrs);
        for i in &hard {
            let a = maily_engine::EmailAddress::parse(&format!("person{i}@example.com")).unwrap();
            assert!(h.ports.hot.is_suppressed(&h.tenant, &a).await.unwrap());
        }

        // Every campaign's leaf verifies against the anchored root.
        let (epoch, receipts) = h.engine.close_epoch().await.expect("epoch closes");
        let epoch = epoch.expect("an epoch was settled");
        assert_eq!(receipts.len(), 1);
        let root = h.ports.chains[0]
            .root(epoch)
            .await
            .unwrap()
            .expect("root anchored");
        for (id, _) in &accepted {
            let p = h
                .ports
                .store
                .proof(epoch, *id)
                .await
                .unwrap()
                .expect("proof stored");
            assert_eq!(p.leaf.stats, h.stats(*id).await);
            assert!(verify(&root, &p.leaf.hash(), &p.proof), "campaign {id}");
            let mut tampered = p.leaf.clone();
            tampered.stats.delivered += 1;
            assert!(!verify(&root, &tampered.hash(), &p.proof));
        }
        // Nothing changed: closing again neither settles nor anchors a new epoch.
        let (again, receipts) = h.engine.close_epoch().await.unwrap();
        assert_eq!(again, Some(epoch));
        assert!(receipts.is_empty());
        assert_eq!(h.engine.restarts(), 0);
        h.engine.shutdown().await;
    });
}

#[test]
fn the_pipeline_runs_on_kafka() {
    run(async {
        let mut rejections = HashMap::new();
        rejections.insert(
            "person7@example.com".to_string(),
            SinkReply::new(550, "5.1.1 no such user here"),
        );
        let h = Harness::start_with(rejections, common::on_kafka).await;
        let campaigns = [h.campaign("one").await, h.campaign("two").await];
        let mut accepted = Vec::new();
        for (k, c) in campaigns.iter().enumerate() {
            let rows = (0..1000).filter(|i| i % 2 == k).map(row);
            accepted.push((c.id, h.intake.enqueue(c, rows).await.unwrap().accepted));
        }
        h.wait_finished(&accepted).await;
        let counts = per_recipient(&h.sink.received());
        assert_eq!(counts.len(), 999);
        assert!(counts.values().all(|n| *n == 1));
        let one = h.stats(campaigns[1].id).await;
        assert_eq!((one.delivered, one.bounced_hard), (499, 1));
        let (epoch, _) = h.engine.close_epoch().await.unwrap();
        let epoch = epoch.expect("settled");
        let root = h.ports.chains[0].root(epoch).await.unwrap().unwrap();
        for (id, _) in &accepted {
            let p = h.ports.store.proof(epoch, *id).await.unwrap().unwrap();
            assert!(verify(&root, &p.leaf.hash(), &p.proof));
        }
        h.engine.shutdown().await;
    });
}

#[test]
fn retention_forgets_launched_recipients_and_message_states_but_keeps_the_stats() {
    use maily_api::intake::Command;
    use maily_engine::Timestamp;
    use std::time::{Duration, Instant};
    run(async {
        let h = Harness::start_with(HashMap::new(), |f| {
            f.merge(("retention.launched_recipients", "1ms"))
                .merge(("retention.messages", "1ms"))
                .merge(("retention.interval", "100ms"))
        })
        .await;
        let c = h.campaign("short-lived").await;
        let staged = h.intake.stage_from(&c, 0, (0..40).map(row)).await.unwrap();
        assert_eq!(staged.accepted, 40);
        h.intake
            .control(c.id, Command::Start, Timestamp::now())
            .await
            .unwrap();
        h.wait_finished(&[(c.id, 40)]).await;
        assert_eq!(per_recipient(&h.sink.received()).len(), 40);

        // The leader deletes the launched recipients and the message states once past
        // their retention; the campaign's figures stay.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let counts = h.ports.store.staged_counts(c.id).await.unwrap();
            let mut left = 0;
            for id in &staged.message_ids {
                left += usize::from(h.ports.store.message(*id).await.unwrap().is_some());
            }
            if counts == (0, 0) && left == 0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "retention left {counts:?} staged and {left} message states"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let s = h.stats(c.id).await;
        assert_eq!((s.injected, s.delivered), (40, 40));
        h.engine.shutdown().await;
    });
}
