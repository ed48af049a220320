//! Several `maily serve` processes sharing partitions over Kafka and one store:
//! failover after SIGKILL, and a paused process (a zombie) that lost its lease.

mod common;

use common::procs::{BATCH, Broker, PARTITIONS, Serve, use_postgres, wait_until, write_config_for};
use common::{per_recipient, row, run};
use maily::wiring::build_ports;
use maily_api::intake::{Intake, NewCampaign};
use maily_config::Settings;
use maily_engine::ports::Store;
use maily_engine::template::Template;
use maily_engine::{CampaignId, TenantId};
use maily_smtp::{SinkConfig, SmtpSink};
use std::time::Duration;

/// The members holding a live partition lease.
async fn owners(store: &dyn Store) -> Vec<String> {
    let now = maily_engine::Timestamp::now();
    store
        .leases()
        .await
        .expect("leases")
        .into_iter()
        .filter(|l| l.resource.starts_with("partition/") && l.expires_at > now)
        .map(|l| l.owner)
        .collect()
}

async fn campaign(
    intake: &Intake,
    store: &dyn maily_engine::ports::Store,
) -> maily_engine::Campaign {
    let tenant = TenantId::parse("acme").unwrap();
    store.upsert_tenant(&tenant, "Acme").await.unwrap();
    maily_engine::testkit::sending_domain(store, &tenant, "shop.example").await;
    intake
        .create_campaign(NewCampaign {
            tenant,
            name: "failover".into(),
            from: "news@shop.example".into(),
            from_name: None,
            template: Template {
                subject: "Hello {{ first_name }}, news for {{ city }}".into(),
                text: Some("Dear {{ first_name }}, your code is {{ code }}.".into()),
                html: None,
            },
        })
        .await
        .unwrap()
}

async fn finished(store: &dyn Store, id: CampaignId) -> u64 {
    store
        .campaign_stats(id)
        .await
        .unwrap()
        .unwrap_or_default()
        .finished()
}

#[test]
fn a_killed_process_hands_its_partitions_to_the_survivor() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let sink = SmtpSink::start(SinkConfig {
            capture: true,
            ..SinkConfig::default()
        })
        .await
        .unwrap();
        let broker = Broker::start(dir.path(), "broker.log");
        let config = write_config_for(dir.path(), sink.addr(), "100ms", &broker.addr());
        // Several processes share one store: Postgres, as docs/kafka.md asks.
        use_postgres(&config);
        let settings = Settings::load(Some(&config)).unwrap();
        // One set of clients for the whole test: the checks below poll every 100 ms.
        let ports = build_ports(&settings).await.unwrap();
        let a = Serve::spawn(&config, "a", dir.path());
        let b = Serve::spawn(&config, "b", dir.path());
        wait_until(
            "both processes to own partitions",
            Duration::from_secs(60),
            &[&a, &b],
            || async {
                let o = owners(ports.store.as_ref()).await;
                o.len() == PARTITIONS as usize && o.contains(&"a".into()) && o.contains(&"b".into())
            },
        )
        .await;

        let intake = Intake::new(ports.log.clone(), ports.store.clone());
        let c = campaign(&intake, ports.store.as_ref()).await;
        let report = intake.enqueue(&c, (0..20_000).map(row)).await.unwrap();
        assert_eq!(report.accepted, 20_000);

        wait_until(
            "a quarter of the campaign",
            Duration::from_secs(120),
            &[&a, &b],
            || async { sink.accepted() >= 5_000 },
        )
        .await;
        a.signal("KILL");
        let killed_at = sink.accepted();

        wait_until(
            "the campaign to finish",
            Duration::from_secs(240),
            &[&b],
            || async { finished(ports.store.as_ref(), c.id).await >= 20_000 },
        )
        .await;
        let o = owners(ports.store.as_ref()).await;
        assert!(
            o.iter().all(|m| m == "b"),
            "survivor owns everything: {o:?}"
        );

        let received = sink.received();
        let counts = per_recipient(&received);
        assert_eq!(
            counts.len(),
            20_000,
            "every accepted recipient was delivered"
        );
        let duplicates: usize = counts.values().map(|n| n - 1).sum();
        // With process-local hot state the survivor cannot see the dead process's
        // idempotency claims: at most its in-flight batches are sent again.
        let bound = (BATCH * PARTITIONS as u64) as usize;
        eprintln!(
            "failover: killed at {killed_at} delivered, {duplicates} duplicate deliveries (bound {bound})"
        );
        assert!(
            duplicates <= bound,
            "{duplicates} duplicates exceed the bound {bound}"
        );
        let stats = ports.store.campaign_stats(c.id).await.unwrap().unwrap();
        assert_eq!(
            stats.delivered,
            counts.len() as u64,
            "aggregates equal what the sink saw"
        );
        assert_eq!(stats.injected, 20_000);
        assert!(b.log().contains("partition owned"));
        let status = b.terminate();
        assert!(status.success(), "graceful stop: {status}");
    });
}

#[test]
fn a_paused_process_that_lost_its_lease_cannot_write() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let sink = SmtpSink::start(SinkConfig::default()).await.unwrap();
        // A long flush interval: the zombie is all but sure to hold unflushed events.
        let broker = Broker::start(dir.path(), "broker.log");
        let config = write_config_for(dir.path(), sink.addr(), "2s", &broker.addr());
        // Postgres, not SQLite: a process frozen inside a SQLite write transaction
        // locks the whole file for everyone, while Postgres ends its session.
        use_postgres(&config);
        let settings = Settings::load(Some(&config)).unwrap();
        // One set of clients for the whole test: the checks below poll every 100 ms.
        let ports = build_ports(&settings).await.unwrap();
        let a = Serve::spawn(&config, "a", dir.path());
        wait_until(
            "a to own every partition",
            Duration::from_secs(60),
            &[&a],
            || async { owners(ports.store.as_ref()).await.len() == PARTITIONS as usize },
        )
        .await;
        let intake = Intake::new(ports.log.clone(), ports.store.clone());
        let c = campaign(&intake, ports.store.as_ref()).await;
        intake.enqueue(&c, (0..6_000).map(row)).await.unwrap();
        wait_until(
            "the campaign to start",
            Duration::from_secs(60),
            &[&a],
            || async { sink.accepted() >= 1_000 },
        )
        .await;

        // Freeze a past its lease; b takes over and finishes the campaign.
        a.signal("STOP");
        tokio::time::sleep(Duration::from_secs(4)).await;
        let b = Serve::spawn(&config, "b", dir.path());
        wait_until(
            "b to finish the campaign",
            Duration::from_secs(240),
            &[&b],
            || async { finished(ports.store.as_ref(), c.id).await >= 6_000 },
        )
        .await;
        let before = ports.store.campaign_stats(c.id).await.unwrap().unwrap();
        let offsets_before = ports
            .store
            .load_offsets("analytics", "events")
            .await
            .unwrap();

        let delivered_before = sink.accepted();

        // Wake the zombie: its buffered flush and offsets must be refused, and it
        // must deliver nothing on a lease it no longer holds.
        a.signal("CONT");
        wait_until(
            "a to be fenced",
            Duration::from_secs(30),
            &[&a, &b],
            || async { a.log().contains("fenced: a no longer holds partition/") },
        )
        .await;
        // Every actor that ran on the old leases stops, whether its partition was
        // given up or taken again under a new epoch.
        wait_until(
            "a to stop its old senders",
            Duration::from_secs(30),
            &[&a, &b],
            || async {
                a.log().matches("actor stopped actor=sender/").count() >= PARTITIONS as usize
            },
        )
        .await;
        // Nothing new is started on the expired lease (the transport asks the lease
        // again after waiting for a connection): only SMTP transactions already on
        // the wire when the process froze can complete, at most one per connection
        // the process may hold to the route (smtp.max_connections_per_route).
        let late = sink.accepted() - delivered_before;
        eprintln!("zombie: {late} deliveries completed after waking");
        let bound = 32;
        assert!(
            late <= bound,
            "the zombie delivered {late} messages on an expired lease"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(
            ports.store.campaign_stats(c.id).await.unwrap().unwrap(),
            before
        );
        // b may still consume its own late duplicates, so offsets can move on; a stale
        // write from a would move them back.
        let offsets_after = ports
            .store
            .load_offsets("analytics", "events")
            .await
            .unwrap();
        for (p, before) in &offsets_before {
            assert!(
                offsets_after[p] >= *before,
                "partition {p} went back: {offsets_after:?}"
            );
        }
        // Having given its stale leases up, a may rejoin as a live member with fresh
        // leases: b then releases the partitions that become a's, and each is unowned
        // until a's next round takes it. A lease names one owner, so what can go wrong
        // is a partition left without one.
        wait_until(
            "every partition to have an owner again",
            Duration::from_secs(30),
            &[&a, &b],
            || async { owners(ports.store.as_ref()).await.len() == PARTITIONS as usize },
        )
        .await;
        assert_eq!(before.finished(), 6_000);
        drop(b);
        drop(a);
    });
}

#[test]
fn a_process_joining_mid_campaign_takes_its_share_without_duplicates() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let sink = SmtpSink::start(SinkConfig {
            capture: true,
            ..SinkConfig::default()
        })
        .await
        .unwrap();
        let broker = Broker::start(dir.path(), "broker.log");
        let config = write_config_for(dir.path(), sink.addr(), "100ms", &broker.addr());
        // Several processes share one store: Postgres, as docs/kafka.md asks.
        use_postgres(&config);
        let settings = Settings::load(Some(&config)).unwrap();
        // One set of clients for the whole test: the checks below poll every 100 ms.
        let ports = build_ports(&settings).await.unwrap();
        let a = Serve::spawn(&config, "a", dir.path());
        let b = Serve::spawn(&config, "b", dir.path());
        wait_until(
            "a and b to own partitions",
            Duration::from_secs(60),
            &[&a, &b],
            || async { owners(ports.store.as_ref()).await.len() == PARTITIONS as usize },
        )
        .await;
        let intake = Intake::new(ports.log.clone(), ports.store.clone());
        let c = campaign(&intake, ports.store.as_ref()).await;
        intake.enqueue(&c, (0..20_000).map(row)).await.unwrap();
        wait_until(
            "the campaign to be under way",
            Duration::from_secs(120),
            &[&a, &b],
            || async { sink.accepted() >= 4_000 },
        )
        .await;

        let joined = Serve::spawn(&config, "c", dir.path());
        wait_until(
            "c to take its share",
            Duration::from_secs(60),
            &[&a, &b, &joined],
            || async {
                owners(ports.store.as_ref())
                    .await
                    .iter()
                    .filter(|m| m.as_str() == "c")
                    .count()
                    > 0
            },
        )
        .await;
        let delivered_at_join = sink.accepted();
        wait_until(
            "the campaign to finish",
            Duration::from_secs(240),
            &[&a, &b, &joined],
            || async { finished(ports.store.as_ref(), c.id).await >= 20_000 },
        )
        .await;

        let o = owners(ports.store.as_ref()).await;
        for m in ["a", "b", "c"] {
            assert!(
                o.iter().any(|x| x == m),
                "{m} owns a share after the rebalance: {o:?}"
            );
        }
        let counts = per_recipient(&sink.received());
        assert_eq!(counts.len(), 20_000);
        let duplicates: usize = counts.values().map(|n| n - 1).sum();
        eprintln!("scale-out: c joined at {delivered_at_join} delivered, {duplicates} duplicates");
        assert_eq!(duplicates, 0, "a graceful handoff sends nothing twice");
        let stats = ports.store.campaign_stats(c.id).await.unwrap().unwrap();
        assert_eq!((stats.delivered, stats.injected), (20_000, 20_000));
        for p in [a, b, joined] {
            assert!(p.terminate().success());
        }
    });
}

#[test]
fn a_broker_restart_loses_nothing_acknowledged() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let broker = Broker::start(dir.path(), "broker.log");
        let port = broker.port;
        let sink = SmtpSink::start(SinkConfig {
            capture: true,
            ..SinkConfig::default()
        })
        .await
        .unwrap();
        let config = write_config_for(dir.path(), sink.addr(), "100ms", &broker.addr());
        let settings = Settings::load(Some(&config)).unwrap();
        // One set of clients for the whole test: the checks below poll every 100 ms.
        let ports = build_ports(&settings).await.unwrap();
        let a = Serve::spawn(&config, "a", dir.path());
        wait_until(
            "a to own every partition",
            Duration::from_secs(60),
            &[&a],
            || async { owners(ports.store.as_ref()).await.len() == PARTITIONS as usize },
        )
        .await;
        let intake = Intake::new(ports.log.clone(), ports.store.clone());
        let c = campaign(&intake, ports.store.as_ref()).await;
        let report = intake.enqueue(&c, (0..5_000).map(row)).await.unwrap();
        assert_eq!(
            report.accepted, 5_000,
            "every row acknowledged by the broker"
        );
        wait_until(
            "the campaign to start",
            Duration::from_secs(60),
            &[&a],
            || async { sink.accepted() >= 500 },
        )
        .await;

        drop(broker);
        tokio::time::sleep(Duration::from_secs(2)).await;
        let _broker = Broker::restart(port, dir.path(), "broker-2.log");
        wait_until(
            "the campaign to finish after the restart",
            Duration::from_secs(240),
            &[&a],
            || async { finished(ports.store.as_ref(), c.id).await >= 5_000 },
        )
        .await;
        let counts = per_recipient(&sink.received());
        assert_eq!(
            counts.len(),
            5_000,
            "every acknowledged recipient was delivered"
        );
        let stats = ports.store.campaign_stats(c.id).await.unwrap().unwrap();
        assert_eq!(stats.delivered, 5_000);
        assert!(a.terminate().success());
    });
}
