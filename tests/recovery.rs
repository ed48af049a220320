//! Retries, expiry, dead letters and restarts on the embedded pipeline.

mod common;

use common::{Harness, per_recipient, row, run};
use maily_engine::records::topics;
use maily_smtp::SinkReply;
use std::collections::HashMap;
use std::time::Duration;

fn quick_retries(f: figment::Figment) -> figment::Figment {
    f.merge(("sender.retry_tiers", vec!["300ms", "600ms"]))
        .merge(("sender.max_attempts", 3))
        .merge(("sender.idle_wait", "10ms"))
}

#[test]
fn temporary_failures_retry_through_delay_topics_then_deliver_or_expire() {
    run(async {
        let mut rejections = HashMap::new();
        rejections.insert(
            "person1@example.com".to_string(),
            SinkReply::new(451, "4.7.1 greylisted, try later"),
        );
        rejections.insert(
            "person2@example.com".to_string(),
            SinkReply::new(421, "4.3.2 service busy"),
        );
        let h = Harness::start_with(rejections, quick_retries).await;
        let c = h.campaign("retries").await;
        let report = h.intake.enqueue(&c, (0..20).map(row)).await.unwrap();
        // person1 is greylisted once, then accepted.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let deferred = h
                .ports
                .store
                .messages_with_status(c.id, "deferred")
                .await
                .unwrap();
            if deferred
                .iter()
                .any(|m| m.recipient.as_str() == "person1@example.com")
            {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "person1 was never deferred"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        h.sink.clear_rejection("person1@example.com");
        h.wait_finished(&[(c.id, report.accepted)]).await;

        let s = h.stats(c.id).await;
        assert_eq!(s.delivered, 19);
        assert_eq!(s.expired, 1, "person2 never got through");
        assert_eq!(s.deferred, 2);
        assert_eq!(s.bounced(), 0);
        let expired = h
            .ports
            .store
            .messages_with_status(c.id, "expired")
            .await
            .unwrap();
        assert_eq!(expired.len(), 1);
        assert_eq!(expired[0].recipient.as_str(), "person2@example.com");
        assert!(
            expired[0].detail.as_deref().unwrap_or("").contains("421"),
            "{expired:?}"
        );
        let counts = per_recipient(&h.sink.received());
        assert_eq!(counts.get("person1@example.com"), Some(&1));
        assert!(counts.values().all(|n| *n == 1));
        h.engine.shutdown().await;
    });
}

#[test]
fn malformed_records_go_to_the_dead_letter_topic_and_consumption_goes_on() {
    run(async {
        let h = Harness::start(HashMap::new()).await;
        let c = h.campaign("poison").await;
        let key = c.id.to_string().into_bytes();
        h.ports
            .log
            .produce(
                topics::SEND,
                vec![
                    (key.clone(), b"{not json".to_vec()),
                    (key.clone(), br#"{"message_id":"x"}"#.to_vec()),
                ],
            )
            .await
            .unwrap();
        let report = h.intake.enqueue(&c, (0..50).map(row)).await.unwrap();
        h.wait_finished(&[(c.id, report.accepted)]).await;
        assert_eq!(h.stats(c.id).await.delivered, 50);
        assert_eq!(
            h.engine.restarts(),
            0,
            "a bad record must not restart the actor"
        );

        let mut letters = Vec::new();
        for p in 0..h.settings.partitions {
            letters.extend(
                h.ports
                    .log
                    .fetch(topics::DEAD_LETTER, p, 0, 100, Duration::ZERO)
                    .await
                    .unwrap(),
            );
        }
        assert_eq!(letters.len(), 2);
        let first: serde_json::Value = serde_json::from_slice(&letters[0].payload).unwrap();
        assert_eq!(first["topic"], "send");
        assert!(
            first["reason"]
                .as_str()
                .unwrap()
                .starts_with("undecodable send record"),
            "{first}"
        );
        h.engine.shutdown().await;
    });
}

#[test]
fn a_stopped_engine_resumes_from_its_stored_offsets() {
    run(async {
        let h = Harness::start(HashMap::new()).await;
        let c = h.campaign("resume").await;
        let report = h.intake.enqueue(&c, (0..3000).map(row)).await.unwrap();
        h.sink.wait_for(500, Duration::from_secs(60)).await;
        // Shut down mid-campaign, then start a new engine on the same log and store.
        let (h, partial) = h.restart().await;
        assert!(partial < 3000, "the campaign finished before the shutdown");
        h.wait_finished(&[(c.id, report.accepted)]).await;
        let counts = per_recipient(&h.sink.received());
        assert_eq!(counts.len(), 3000);
        assert!(
            counts.values().all(|n| *n == 1),
            "a recipient got two messages"
        );
        let s = h.stats(c.id).await;
        assert_eq!((s.delivered, s.injected), (3000, 3000));
        assert_eq!(h.engine.restarts(), 0);
        h.engine.shutdown().await;
    });
}

#[test]
fn on_kafka_malformed_records_are_dead_lettered_and_the_campaign_completes() {
    run(async {
        let h = Harness::start_with(HashMap::new(), common::on_kafka).await;
        let c = h.campaign("poison").await;
        let key = c.id.to_string().into_bytes();
        h.ports
            .log
            .produce(topics::SEND, vec![(key, b"\xff\xfe not json".to_vec())])
            .await
            .unwrap();
        let report = h.intake.enqueue(&c, (0..200).map(row)).await.unwrap();
        h.wait_finished(&[(c.id, report.accepted)]).await;
        assert_eq!(h.stats(c.id).await.delivered, 200);
        assert_eq!(h.engine.restarts(), 0);
        let p = maily_engine::partition::partition_for(
            c.id.to_string().as_bytes(),
            h.settings.partitions,
        );
        let letters = h
            .ports
            .log
            .fetch(topics::DEAD_LETTER, p, 0, 10, Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(letters.len(), 1);
        let letter: serde_json::Value = serde_json::from_slice(&letters[0].payload).unwrap();
        assert!(
            letter["reason"]
                .as_str()
                .unwrap()
                .contains("undecodable send record"),
            "{letter}"
        );
        h.engine.shutdown().await;
    });
}
