//! Crash safety on the user's path: `maily serve` processes driven through the public
//! gRPC API, stopped at seeded random points and restarted alone, with every envelope
//! recipient counted at the sink (`common::chaos`). This is the short profile that runs
//! with the suite; `scripts/chaos.sh` runs the long one (many faults, 100,000
//! recipients, several seeds).
//!
//! Duplicates are bounded, not zero: with Redis claims, only messages whose SMTP
//! transaction was accepted but whose outcome was not yet recorded when the process
//! died (at most `sender.concurrency` per partition the process owned); with the
//! in-memory hot state of the embedded profile the claims die with the process, so what
//! was delivered past each partition's stored position is sent again (the window reads
//! at most `2 × sender.batch_size + sender.concurrency` past it). ARCHITECTURE.md
//! states the same.

mod common;

use common::chaos::{
    Chaos, Fault, Plan, Profile, Report, Stop, authed, command, receipts, run_plan, stats, upload,
    upload_to,
};
use common::run;
use maily_api::grpc::proto::ScheduleCampaignRequest;
use std::time::{Duration, Instant};

/// The documented duplicate bound of one fault, for the profile's configuration.
fn bound(profile: Profile, partitions: u64) -> u64 {
    match profile {
        // sender.concurrency (64) transactions in flight per partition.
        Profile::Production => 64 * partitions,
        // 2 × sender.batch_size (512) + sender.concurrency (64) per partition.
        Profile::Embedded => (2 * 512 + 64) * partitions,
    }
}

fn check(report: &Report, profile: Profile, partitions: u64) {
    assert_eq!(report.lost, 0, "mail was lost: {report}");
    assert_eq!(report.stuck, 0, "messages were never final: {report}");
    assert_eq!(
        report.stats_delivered, report.delivered,
        "GetCampaignStats disagrees with the sink: {report}"
    );
    let faults = report.faults.len().max(1) as u64;
    assert!(
        report.duplicates <= bound(profile, partitions) * faults,
        "more duplicates than documented: {report}"
    );
    for f in &report.faults {
        assert!(
            f.first_delivery_after_restart.is_some() || f.left_at_restart == 0,
            "nothing was delivered after a restart: {report}"
        );
    }
}

#[test]
fn production_one_process_killed_and_restarted_delivers_everything() {
    let plan = Plan::from_env(Profile::Production, 1, 20_000, 1);
    let report = run(run_plan(plan));
    check(&report, Profile::Production, 32);
}

#[test]
fn production_two_processes_each_killed_once_deliver_everything() {
    let plan = Plan::from_env(Profile::Production, 2, 20_000, 2);
    let report = run(run_plan(plan));
    check(&report, Profile::Production, 32);
}

#[test]
fn production_restart_of_all_a_broker_restart_and_a_frozen_process_lose_nothing() {
    let mut plan = Plan::from_env(Profile::Production, 2, 10_000, 3);
    plan.kinds = vec![Fault::RestartAll, Fault::RestartBroker, Fault::Freeze];
    let report = run(run_plan(plan));
    check(&report, Profile::Production, 32);
}

/// The sum of a Prometheus counter's samples in process `i`'s scrape.
async fn counter(chaos: &Chaos, i: usize, name: &str, labels: &str) -> f64 {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", chaos.metrics_ports[i])).await
    else {
        return 0.0;
    };
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).await.unwrap();
    body.lines()
        .filter(|l| l.starts_with(name) && l.contains(labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Waits until GetCampaignStats shows `n` messages finished and the sink has `n`
/// recipients, failing with the processes' logs after `limit`.
async fn finished(chaos: &Chaos, key: &str, id: &str, n: u64, limit: Duration) {
    let mut client = chaos.client().await;
    let deadline = Instant::now() + limit;
    loop {
        if let Some((_, finished)) = stats(&mut client, key, id).await
            && finished >= n
            && receipts(&chaos.sink).len() as u64 >= n
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the campaign did not finish:\n{}",
            chaos.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[test]
fn two_processes_share_one_campaign_over_its_shards() {
    run(async {
        let mut plan = Plan::from_env(Profile::Production, 2, 20_000, 0);
        plan.faults = 0;
        let n = plan.recipients as u64;
        let mut chaos = Chaos::prepare(plan).await;
        chaos.spawn(0);
        chaos.spawn(1);
        chaos.ready(0).await;
        chaos.ready(1).await;
        // Both hold their share of the partitions before the campaign starts.
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let a = counter(&chaos, 0, "maily_owned_partitions", "").await;
            let b = counter(&chaos, 1, "maily_owned_partitions", "").await;
            if a > 0.0 && b > 0.0 && a + b == 32.0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "partitions never split: {a} and {b}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let mut client = chaos.client().await;
        let key = chaos.api_key().await;
        let id = upload(&mut client, &key, "shared", n as usize).await;
        command(&mut client, &key, &id, "start").await;
        finished(&chaos, &key, &id, n, Duration::from_secs(240)).await;
        let counts = receipts(&chaos.sink);
        assert_eq!(counts.len() as u64, n, "every recipient received");
        assert!(counts.values().all(|c| *c == 1), "nobody received twice");
        let (delivered, _) = stats(&mut client, &key, &id).await.unwrap();
        assert_eq!(delivered, n, "the summed stats match the sink");
        let label = r#"result="delivered""#;
        let a = counter(&chaos, 0, "maily_deliveries_total", label).await;
        let b = counter(&chaos, 1, "maily_deliveries_total", label).await;
        println!("deliveries: m0 {a}, m1 {b}");
        assert_eq!((a + b) as u64, n);
        for (i, sent) in [a, b].into_iter().enumerate() {
            assert!(
                sent >= 0.3 * n as f64,
                "m{i} delivered {sent} of {n}: the campaign was not spread"
            );
        }
        for i in 0..2 {
            let p = chaos.procs[i].take().expect("running");
            assert!(p.terminate().success());
        }
    });
}

/// One campaign over ten domains, one of them limited to 10 messages a second: its
/// messages leave the sender's window for the deferred queue, so the other nine go
/// out at full speed meanwhile, and the slow domain's arrive no faster than its limit.
#[test]
fn a_throttled_domain_holds_back_no_other() {
    run(async {
        let mut plan = Plan::from_env(Profile::Embedded, 1, 2_000, 0);
        plan.faults = 0;
        let n = plan.recipients;
        let extra = r#"
[smtp.limits.domains."slow.test"]
rate = "10/s"
"#;
        let mut chaos = Chaos::prepare_with(plan, extra).await;
        chaos.spawn(0);
        chaos.ready(0).await;
        let mut client = chaos.client().await;
        let key = chaos.api_key().await;
        let domain = |i: usize| {
            if i.is_multiple_of(10) {
                "slow.test".to_string()
            } else {
                format!("d{}.test", i % 10)
            }
        };
        let id = upload_to(&mut client, &key, "ten domains", n, |i| {
            format!("r{i}@{}", domain(i))
        })
        .await;
        command(&mut client, &key, &id, "start").await;
        finished(&chaos, &key, &id, n as u64, Duration::from_secs(180)).await;
        let counts = receipts(&chaos.sink);
        assert_eq!(counts.len(), n, "every recipient received");
        assert!(counts.values().all(|c| *c == 1), "nobody received twice");

        let mut slow = Vec::new();
        let mut fast = Vec::new();
        for m in chaos.sink.received() {
            let to = &m.rcpt_to[0];
            if to.ends_with("@slow.test") {
                slow.push(m.at);
            } else {
                fast.push(m.at);
            }
        }
        slow.sort();
        let last_fast = fast.iter().max().copied().expect("fast mail");
        let slow_before = slow.iter().filter(|t| **t <= last_fast).count();
        println!(
            "slow.test: {} messages over {:?}; the other {} done after {} of them",
            slow.len(),
            slow[slow.len() - 1] - slow[0],
            fast.len(),
            slow_before
        );
        // Behind a window barrier the others would wait for nearly every slow message.
        assert!(
            slow_before < slow.len() / 2,
            "the other domains waited for slow.test: {slow_before} of its {} messages came first",
            slow.len()
        );
        // The limit held: 10/s with a burst of one, so k messages span (k-1)/10 s,
        // less a little of the sink's own timing.
        let span = slow[slow.len() - 1] - slow[0];
        let floor = Duration::from_millis(100 * (slow.len() as u64 - 1));
        assert!(
            span + Duration::from_millis(250) >= floor,
            "slow.test got {} messages in {span:?}, faster than 10/s",
            slow.len()
        );
        let deferred = counter(&chaos, 0, "maily_sender_deferred_total", "").await;
        assert!(deferred > 0.0, "nothing went through the deferred queue");
        let p = chaos.procs[0].take().expect("running");
        assert!(p.terminate().success());
    });
}

#[test]
fn embedded_process_killed_and_restarted_delivers_everything() {
    let plan = Plan::from_env(Profile::Embedded, 1, 20_000, 1);
    let report = run(run_plan(plan));
    check(&report, Profile::Embedded, 8);
}

#[test]
fn production_graceful_restart_with_campaigns_in_every_state() {
    run(async {
        let mut plan = Plan::from_env(Profile::Production, 1, 3_000, 1);
        plan.stop = Stop::Term;
        let n = plan.recipients as u64;
        let mut chaos = common::chaos::Chaos::prepare(plan.clone()).await;
        chaos.spawn(0);
        let mut client = chaos.client().await;
        let key = chaos.api_key().await;
        let draft = upload(&mut client, &key, "draft", plan.recipients).await;
        let scheduled = upload(&mut client, &key, "scheduled", plan.recipients).await;
        let running = upload(&mut client, &key, "running", plan.recipients).await;
        let paused = upload(&mut client, &key, "paused", plan.recipients).await;
        let start_at = std::time::SystemTime::now() + Duration::from_secs(20);
        client
            .schedule_campaign(authed(
                ScheduleCampaignRequest {
                    campaign_id: scheduled.clone(),
                    start_at: Some(start_at.into()),
                },
                &key,
            ))
            .await
            .expect("scheduled");
        command(&mut client, &key, &running, "start").await;
        command(&mut client, &key, &paused, "start").await;
        command(&mut client, &key, &paused, "pause").await;
        // Restart while the running campaign is under way.
        // A first start once took five minutes to send anything: the lag probe had
        // asked about the topics while they were being created, and the client it
        // shares with the senders remembered them as missing until its periodic
        // metadata refresh. Bounded past that; a slow start prints the process's log
        // (with --no-capture).
        let started = Instant::now();
        while chaos.sink.accepted() < n / 4 {
            assert!(
                started.elapsed() < Duration::from_secs(420),
                "the running campaign never got under way ({} received):\n{}",
                chaos.sink.accepted(),
                chaos.logs()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if started.elapsed() > Duration::from_secs(30) {
            eprintln!(
                "the running campaign took {:?} to get under way:\n{}",
                started.elapsed(),
                chaos.logs()
            );
        }
        chaos.stop(0);
        chaos.spawn(0);
        let mut client = chaos.client().await;
        command(&mut client, &key, &draft, "start").await;
        command(&mut client, &key, &paused, "resume").await;
        let deadline = Instant::now() + Duration::from_secs(180);
        for id in [&draft, &scheduled, &running, &paused] {
            loop {
                let s = stats(&mut client, &key, id).await;
                if s.is_some_and(|(_, finished)| finished >= n) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "campaign {id} stuck at {s:?}:\n{}",
                    chaos.logs()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        let counts = receipts(&chaos.sink);
        assert_eq!(counts.len() as u64, n, "every recipient received");
        let total: u64 = counts.values().sum();
        // Four campaigns to the same n addresses.
        assert!(total >= 4 * n, "{total} receipts for 4 x {n} messages");
        for id in [&draft, &scheduled, &running, &paused] {
            let (delivered, _) = stats(&mut client, &key, id).await.expect("stats");
            assert_eq!(delivered, n, "campaign {id}");
        }
        chaos.stop(0);
    });
}

#[test]
fn a_log_recreated_under_stored_offsets_stops_its_stages_loudly() {
    run(async {
        let plan = Plan::from_env(Profile::Embedded, 1, 200, 0);
        let n = plan.recipients as u64;
        let mut chaos = common::chaos::Chaos::prepare(plan).await;
        chaos.spawn(0);
        let mut client = chaos.client().await;
        let key = chaos.api_key().await;
        let id = upload(&mut client, &key, "before", n as usize).await;
        command(&mut client, &key, &id, "start").await;
        let deadline = Instant::now() + Duration::from_secs(60);
        while stats(&mut client, &key, &id)
            .await
            .is_none_or(|(_, f)| f < n)
        {
            assert!(
                Instant::now() < deadline,
                "never finished:\n{}",
                chaos.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        chaos.stop(0);
        // The operator loses the log but keeps the store.
        std::fs::remove_dir_all(chaos.dir.path().join("log")).expect("log removed");
        chaos.spawn(0);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let log = chaos.logs();
            if log.contains("past the log's end") && log.contains("sender") {
                break;
            }
            assert!(Instant::now() < deadline, "no loud error:\n{log}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let log = chaos.logs();
        if let Some(line) = log.lines().find(|l| l.contains("past the log's end")) {
            println!("{line}");
        }
        assert!(
            log.contains("in send/"),
            "the error names the topic and partition:\n{log}"
        );
        chaos.stop(0);
    });
}
