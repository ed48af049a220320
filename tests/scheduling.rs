//! Scheduled campaigns start at their time, once: across an engine restart in between,
//! and with several engine processes sharing one broker and store.

mod common;

use common::procs::{Serve, use_postgres, wait_until, write_config};
use common::{Harness, per_recipient, row, run};
use maily::wiring::build_ports;
use maily_api::intake::{Command, Intake, NewCampaign};
use maily_config::Settings;
use maily_engine::template::Template;
use maily_engine::{CampaignStatus, TenantId, Timestamp};
use maily_smtp::{SinkConfig, SmtpSink};
use std::collections::HashMap;
use std::time::Duration;

const AHEAD: Duration = Duration::from_secs(2);

#[test]
fn a_scheduled_campaign_starts_on_time_across_a_restart() {
    run(async {
        let h = Harness::start(HashMap::new()).await;
        let campaign = h.campaign("scheduled").await;
        let staged = h
            .intake
            .stage_from(&campaign, 1, (0..50).map(row))
            .await
            .expect("staged");
        assert_eq!(staged.accepted, 50);
        let at = Timestamp::now().plus(AHEAD);
        let state = h
            .intake
            .control(campaign.id, Command::Schedule(at), Timestamp::now())
            .await
            .expect("scheduled");
        assert_eq!(state.status, CampaignStatus::Scheduled);
        assert_eq!(state.scheduled_at, Some(at));

        // The engine stops and starts again before the time comes.
        let (h, before) = h.restart().await;
        assert_eq!(before, 0, "nothing was sent before the restart");
        let until_just_before = at
            .since(Timestamp::now())
            .saturating_sub(Duration::from_millis(300));
        tokio::time::sleep(until_just_before).await;
        assert_eq!(
            h.sink.accepted(),
            0,
            "nothing is sent before the scheduled time"
        );

        h.wait_finished(&[(campaign.id, 50)]).await;
        let state = h.intake.state(campaign.id).await.expect("state");
        assert_eq!(state.status, CampaignStatus::Running);
        assert!(
            state.updated_at >= at,
            "started at {} for {at}",
            state.updated_at
        );
        let received = h.sink.received();
        let per = per_recipient(&received);
        assert_eq!(per.len(), 50);
        assert!(per.values().all(|n| *n == 1), "each recipient once");
    });
}

/// Two `maily serve` processes over Kafka and Postgres; the leader is stopped before
/// the time, so the campaign is started by the other one, and only once.
#[test]
fn a_scheduled_campaign_starts_once_with_two_engine_processes() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let sink = SmtpSink::start(SinkConfig {
            capture: true,
            ..SinkConfig::default()
        })
        .await
        .unwrap();
        let config = write_config(dir.path(), sink.addr(), "100ms");
        use_postgres(&config);
        let settings = Settings::load(Some(&config)).unwrap();
        let ports = build_ports(&settings).await.unwrap();
        let a = Serve::spawn(&config, "a", dir.path());
        let b = Serve::spawn(&config, "b", dir.path());
        let leader = |store: std::sync::Arc<dyn maily_engine::ports::Store>| async move {
            let now = Timestamp::now();
            store
                .leases()
                .await
                .expect("leases")
                .into_iter()
                .find(|l| l.resource == "leader" && l.expires_at > now)
                .map(|l| l.owner)
        };
        wait_until("a leader", Duration::from_secs(60), &[&a, &b], || async {
            leader(ports.store.clone()).await.is_some()
        })
        .await;

        let intake = Intake::new(ports.log.clone(), ports.store.clone());
        let tenant = TenantId::parse("acme").unwrap();
        ports.store.upsert_tenant(&tenant, "Acme").await.unwrap();
        maily_engine::testkit::sending_domain(ports.store.as_ref(), &tenant, "shop.example").await;
        let campaign = intake
            .create_campaign(NewCampaign {
                tenant,
                name: "scheduled".into(),
                from: "news@shop.example".into(),
                from_name: None,
                template: Template {
                    subject: "Hello {{ first_name }}".into(),
                    text: Some("Your code is {{ code }}.".into()),
                    html: None,
                },
            })
            .await
            .unwrap();
        let staged = intake
            .stage_from(&campaign, 1, (0..500).map(row))
            .await
            .unwrap();
        assert_eq!(staged.accepted, 500);
        let at = Timestamp::now().plus(AHEAD);
        intake
            .control(campaign.id, Command::Schedule(at), Timestamp::now())
            .await
            .expect("scheduled");

        // The leader stops (gracefully) before the time: the other takes over.
        let first = leader(ports.store.clone()).await.expect("leader");
        let (stopped, survivor) = if first == "a" { (a, b) } else { (b, a) };
        let status = stopped.terminate();
        assert!(status.success(), "{status}");

        wait_until(
            "the scheduled campaign to be delivered",
            Duration::from_secs(120),
            &[&survivor],
            || async { per_recipient(&sink.received()).len() == 500 },
        )
        .await;
        // Late duplicates would show up within a few rounds.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let per = per_recipient(&sink.received());
        assert!(per.values().all(|n| *n == 1), "each recipient once");
        let state = intake.state(campaign.id).await.unwrap();
        assert_eq!(state.status, CampaignStatus::Running);
        assert!(
            state.updated_at >= at,
            "started at {} for {at}",
            state.updated_at
        );
        let starts = |log: &str| log.matches("scheduled campaign started").count();
        assert_eq!(
            starts(&survivor.log())
                + starts(&std::fs::read_to_string(stopped_log(&dir, &first)).unwrap_or_default()),
            1,
            "started exactly once"
        );
    });
}

fn stopped_log(dir: &tempfile::TempDir, member: &str) -> std::path::PathBuf {
    dir.path().join(format!("{member}.log"))
}
