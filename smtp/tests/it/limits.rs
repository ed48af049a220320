//! Throttles, as measured at the sink: concurrent transactions and messages per window
//! per destination domain, limits changed while mail flows, tenant limits, and
//! source-IP pools on 127.0.0.x.

use crate::support::*;
use maily_engine::ports::{DeliveryOutcome, OutboundMessage, Transport};
use maily_smtp::{
    Limit, Scope, SinkConfig, SinkHandle, SmtpClientParams, SmtpTransport, StaticRoutes, Throttles,
};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

fn data(i: usize) -> Vec<u8> {
    format!("Subject: {i}\r\n\r\nbody {i}\r\n").into_bytes()
}

fn to_domain(domain: &str, i: usize) -> OutboundMessage {
    message("shop@shop.example", &format!("u{i}@{domain}"), &data(i))
}

/// Routes `slow.test` and `fast.test` to two sinks of their own.
async fn two_domains(params: SmtpClientParams) -> (Arc<SmtpTransport>, SinkHandle, SinkHandle) {
    let capture = || SinkConfig {
        capture: true,
        ..SinkConfig::default()
    };
    let slow = start_sink(capture()).await;
    let fast = start_sink(capture()).await;
    let routes = StaticRoutes::from_entries([
        ("slow.test", slow.addr().to_string()),
        ("fast.test", fast.addr().to_string()),
    ])
    .unwrap();
    let transport = SmtpTransport::new(Arc::new(routes), params);
    (Arc::new(transport), slow, fast)
}

async fn deliver_all(transport: &Arc<SmtpTransport>, messages: Vec<OutboundMessage>) {
    let mut tasks = JoinSet::new();
    for msg in messages {
        let transport = Arc::clone(transport);
        tasks.spawn(async move { transport.deliver(&msg).await });
    }
    while let Some(outcome) = tasks.join_next().await {
        let outcome = outcome.expect("delivery task");
        assert!(
            matches!(outcome, DeliveryOutcome::Delivered { .. }),
            "{outcome:?}"
        );
    }
}

/// The most messages the sink accepted within any `window`.
fn max_in_window(sink: &SinkHandle, window: Duration) -> usize {
    let mut times: Vec<Instant> = sink.received().iter().map(|m| m.at).collect();
    times.sort();
    let mut best = 0;
    let mut start = 0;
    for end in 0..times.len() {
        while times[end].duration_since(times[start]) >= window {
            start += 1;
        }
        best = best.max(end - start + 1);
    }
    best
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_domain_concurrency_limit_holds_at_the_sink_and_a_change_takes_effect() {
    let (transport, slow, fast) = two_domains(SmtpClientParams {
        max_connections_per_route: 16,
        max_messages_per_connection: 10_000,
        ..params()
    })
    .await;
    let throttles = Arc::clone(transport.throttles());
    throttles.set(
        Scope::domain("slow.test"),
        Limit {
            max_connections: Some(3),
            ..Limit::default()
        },
    );
    let batch = |from| {
        (from..from + 300)
            .flat_map(|i| [to_domain("slow.test", i), to_domain("fast.test", i)])
            .collect::<Vec<_>>()
    };
    deliver_all(&transport, batch(0)).await;
    assert_eq!(slow.accepted(), 300);
    assert_eq!(fast.accepted(), 300);
    assert!(
        slow.max_open_transactions() <= 3,
        "limited domain had {} transactions open at once",
        slow.max_open_transactions()
    );
    assert!(
        slow.connections() <= 3,
        "{} connections",
        slow.connections()
    );
    assert!(
        fast.max_open_transactions() > 3,
        "the other domain is not held to the limit (it had {})",
        fast.max_open_transactions()
    );

    // Lower the limit while a batch is in flight: once the running transactions
    // drain, never more than one is open.
    slow.reset_max_open_transactions();
    let sending = {
        let transport = Arc::clone(&transport);
        tokio::spawn(async move { deliver_all(&transport, batch(300)).await })
    };
    slow.wait_for(350, GUARD).await;
    throttles.set(
        Scope::domain("slow.test"),
        Limit {
            max_connections: Some(1),
            ..Limit::default()
        },
    );
    // Transactions admitted under the old limit may still be running (some not yet
    // at MAIL, so the sink cannot tell); wait until the client holds at most one.
    let scope = Scope::domain("slow.test");
    let waited = Instant::now();
    while throttles.open(&scope) > 1 && waited.elapsed() < GUARD {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    slow.reset_max_open_transactions();
    sending.await.unwrap();
    assert_eq!(slow.accepted(), 600);
    assert_eq!(
        slow.max_open_transactions(),
        1,
        "after the change only one transaction at a time"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_domain_rate_limit_holds_per_window_and_a_raise_takes_effect() {
    let (transport, slow, fast) = two_domains(params()).await;
    let throttles = Arc::clone(transport.throttles());
    throttles.set(
        Scope::domain("slow.test"),
        Limit {
            rate: Some("20/s".parse().unwrap()),
            burst: Some(2),
            ..Limit::default()
        },
    );
    let started = Instant::now();
    deliver_all(
        &transport,
        (0..30)
            .flat_map(|i| [to_domain("slow.test", i), to_domain("fast.test", i)])
            .collect(),
    )
    .await;
    let limited = started.elapsed();
    assert_eq!(slow.accepted(), 30);
    assert_eq!(fast.accepted(), 30);
    // 20/s with a burst of 2: any 500 ms window holds at most 10 + 2 messages, and 30
    // messages need at least (30 - 2) * 50 ms.
    let in_window = max_in_window(&slow, Duration::from_millis(500));
    assert!(in_window <= 12, "{in_window} messages within 500 ms");
    assert!(limited >= Duration::from_millis(1400), "took {limited:?}");

    throttles.set(
        Scope::domain("slow.test"),
        Limit {
            rate: Some("1000/s".parse().unwrap()),
            burst: Some(50),
            ..Limit::default()
        },
    );
    deliver_all(
        &transport,
        (30..60).map(|i| to_domain("slow.test", i)).collect(),
    )
    .await;
    assert_eq!(slow.accepted(), 60);
    let in_window = max_in_window(&slow, Duration::from_millis(500));
    assert!(
        in_window > 12,
        "the raised rate applies at once: only {in_window} messages within 500 ms"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_limit_applies_across_domains() {
    let (transport, slow, fast) = two_domains(params()).await;
    let throttles: &Arc<Throttles> = transport.throttles();
    throttles.set(
        Scope::Tenant("test".into()),
        Limit {
            max_connections: Some(2),
            ..Limit::default()
        },
    );
    deliver_all(
        &transport,
        (0..200)
            .flat_map(|i| [to_domain("slow.test", i), to_domain("fast.test", i)])
            .collect(),
    )
    .await;
    let together = slow.max_open_transactions() + fast.max_open_transactions();
    assert!(together <= 4, "each sink at most 2, got {together}");
    assert!(slow.max_open_transactions() <= 2);
    assert!(fast.max_open_transactions() <= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_leave_from_the_tenants_source_pool() {
    let sink = start_sink(SinkConfig {
        capture: true,
        bind: "0.0.0.0:0".parse().unwrap(),
        ..SinkConfig::default()
    })
    .await;
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let params = SmtpClientParams {
        max_connections_per_route: 4,
        max_messages_per_connection: 5,
        source_pools: BTreeMap::from([
            ("warm".to_string(), vec![ip("127.0.0.2"), ip("127.0.0.3")]),
            ("cold".to_string(), vec![ip("127.0.0.9")]),
        ]),
        tenant_pools: BTreeMap::from([("test".to_string(), "warm".to_string())]),
        default_pool: Some("cold".into()),
        ..params()
    };
    let routes =
        StaticRoutes::from_entries([("*", format!("127.0.0.1:{}", sink.addr().port()))]).unwrap();
    let transport = Arc::new(SmtpTransport::new(Arc::new(routes), params));
    // Tenant "test" sends from the warm pool; another tenant from the default pool.
    let mut messages: Vec<_> = (0..40).map(|i| to_domain("any.test", i)).collect();
    for i in 40..50 {
        let mut msg = to_domain("any.test", i);
        msg.tenant = maily_engine::TenantId::parse("other").unwrap();
        messages.push(msg);
    }
    deliver_all(&transport, messages).await;
    assert_eq!(sink.accepted(), 50);
    let peers = sink.peers();
    let from = |addr: &str| peers.iter().filter(|p| **p == ip(addr)).count();
    assert!(from("127.0.0.2") > 0, "{peers:?}");
    assert!(from("127.0.0.3") > 0, "{peers:?}");
    assert!(from("127.0.0.9") > 0, "{peers:?}");
    assert_eq!(
        from("127.0.0.2") + from("127.0.0.3") + from("127.0.0.9"),
        peers.len(),
        "every connection came from a pool address: {peers:?}"
    );
    let other: Vec<_> = sink
        .received()
        .into_iter()
        .filter(|m| m.peer.ip() == ip("127.0.0.9"))
        .collect();
    assert_eq!(other.len(), 10, "the other tenant's mail used its own pool");
}
