//! Faults injected mid-campaign into the sender and the analytics actor: both are
//! rebuilt from their factories, counts stay exact and nobody gets a second message.

mod common;

use common::{Harness, per_recipient, row, run};
use maily_actors::FaultPoint;
use std::collections::HashMap;
use std::time::Duration;

#[test]
fn failed_actors_restart_without_loss_or_duplicates() {
    run(async {
        let h = Harness::start(HashMap::new()).await;
        let campaigns = [
            h.campaign("one").await,
            h.campaign("two").await,
            h.campaign("three").await,
        ];
        let mut rows: Vec<Vec<_>> = vec![Vec::new(); 3];
        for i in 0..3000 {
            rows[i % 3].push(row(i));
        }
        // Hold the first half back so the faults land mid-campaign.
        let mut later: Vec<Vec<_>> = rows.iter_mut().map(|r| r.split_off(500)).collect();
        let mut accepted = HashMap::new();
        for (c, rows) in campaigns.iter().zip(rows) {
            *accepted.entry(c.id).or_insert(0) += h.intake.enqueue(c, rows).await.unwrap().accepted;
        }
        h.sink.wait_for(300, Duration::from_secs(60)).await;
        for point in [
            FaultPoint::SenderBeforeCommit,
            FaultPoint::SenderBeforeCommit,
            FaultPoint::AnalyticsBeforeFlush,
            FaultPoint::AnalyticsBeforeFlush,
        ] {
            h.engine.faults().arm(point);
        }
        for (c, rows) in campaigns.iter().zip(later.drain(..)) {
            *accepted.entry(c.id).or_insert(0) += h.intake.enqueue(c, rows).await.unwrap().accepted;
        }
        let accepted: Vec<_> = accepted.into_iter().collect();
        h.wait_finished(&accepted).await;

        assert_eq!(h.engine.faults().pending(), 0, "every armed fault fired");
        assert!(
            h.engine.restarts() >= 4,
            "restarts: {}",
            h.engine.restarts()
        );
        let received = h.sink.received();
        assert_eq!(received.len(), 3000);
        let counts = per_recipient(&received);
        assert_eq!(counts.len(), 3000);
        assert!(
            counts.values().all(|n| *n == 1),
            "a recipient got two messages"
        );
        for (id, n) in &accepted {
            let s = h.stats(*id).await;
            assert_eq!(s.delivered, *n);
            assert_eq!(s.injected, *n);
            assert_eq!(s.finished(), *n);
        }
        h.engine.shutdown().await;
    });
}
