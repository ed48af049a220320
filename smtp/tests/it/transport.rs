//! SmtpTransport against the built-in sink.

use crate::support::*;
use maily_engine::ports::{DeliveryOutcome, Transport};
use maily_smtp::{SinkConfig, SinkReply, SmtpClientParams, SmtpTransport, StaticRoutes};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::task::JoinSet;

fn body(i: usize) -> Vec<u8> {
    format!(
        "From: shop@shop.example\r\nTo: user{i}@example.com\r\nSubject: Hello {i}\r\n\r\n\
         Line one for {i}\r\n.a line that starts with a dot\r\n.\r\nlast line\r\n"
    )
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_messages_arrive_over_at_most_four_connections() {
    let sink = start_sink(SinkConfig {
        capture: true,
        ..SinkConfig::default()
    })
    .await;
    let transport = Arc::new(transport_to(
        sink.addr(),
        SmtpClientParams {
            max_connections_per_route: 4,
            max_messages_per_connection: 10_000,
            ..params()
        },
    ));
    let mut sent = Vec::new();
    let mut tasks = JoinSet::new();
    for i in 0..1000 {
        let msg = message(
            &format!("bounces+{i}@shop.example"),
            &format!("user{i}@example.com"),
            &body(i),
        );
        sent.push(msg.clone());
        let transport = Arc::clone(&transport);
        tasks.spawn(async move { transport.deliver(&msg).await });
    }
    while let Some(outcome) = tasks.join_next().await {
        let outcome = outcome.expect("delivery task");
        assert!(
            matches!(outcome, DeliveryOutcome::Delivered { .. }),
            "{outcome:?}"
        );
    }

    assert_eq!(sink.accepted(), 1000);
    assert!(
        sink.connections() <= 4,
        "sink saw {} connections",
        sink.connections()
    );
    let mut received: Vec<_> = sink
        .received()
        .into_iter()
        .map(|m| (m.mail_from, m.rcpt_to, m.data))
        .collect();
    let mut expected: Vec<_> = sent
        .iter()
        .map(|m| {
            (
                m.mail_from.to_string(),
                vec![m.rcpt_to.to_string()],
                m.data.to_vec(),
            )
        })
        .collect();
    received.sort();
    expected.sort();
    assert_eq!(received, expected);
}

#[tokio::test]
async fn a_rejected_recipient_is_permanent_and_the_connection_is_reused() {
    let sink = start_sink(SinkConfig {
        capture: true,
        rejections: HashMap::from([(
            "gone@example.com".to_string(),
            SinkReply::new(550, "5.1.1 no such user"),
        )]),
        ..SinkConfig::default()
    })
    .await;
    let transport = transport_to(sink.addr(), params());

    let outcome = transport
        .deliver(&message("a@shop.example", "Gone@example.com", b"hi\r\n"))
        .await;
    let DeliveryOutcome::Permanent { reply } = outcome else {
        panic!("expected a permanent failure, got {outcome:?}");
    };
    assert_eq!(reply.code, 550);
    assert_eq!(reply.enhanced.map(|e| e.to_string()), Some("5.1.1".into()));
    assert_eq!(reply.text, "no such user");

    // The same connection carries the next message (after RSET).
    let outcome = transport
        .deliver(&message("a@shop.example", "here@example.com", b"hi\r\n"))
        .await;
    assert!(
        matches!(outcome, DeliveryOutcome::Delivered { ref reply } if reply.code == 250),
        "{outcome:?}"
    );
    assert_eq!(sink.connections(), 1);
    assert_eq!(sink.rejected_recipients(), 1);
    assert_eq!(sink.received()[0].rcpt_to, vec!["here@example.com"]);
}

#[tokio::test]
async fn a_temporary_rejection_is_transient_with_the_reply() {
    let sink = start_sink(SinkConfig::default()).await;
    sink.set_rejection(
        "busy@example.com",
        SinkReply::new(451, "4.2.1 try again later"),
    );
    let transport = transport_to(sink.addr(), params());

    let outcome = transport
        .deliver(&message("a@shop.example", "busy@example.com", b"hi\r\n"))
        .await;
    let DeliveryOutcome::Transient {
        reply: Some(reply),
        error,
    } = outcome
    else {
        panic!("expected a transient failure with a reply, got {outcome:?}");
    };
    assert_eq!(reply.code, 451);
    assert!(error.contains("451"), "{error}");

    sink.clear_rejection("busy@example.com");
    let outcome = transport
        .deliver(&message("a@shop.example", "busy@example.com", b"hi\r\n"))
        .await;
    assert!(
        matches!(outcome, DeliveryOutcome::Delivered { .. }),
        "{outcome:?}"
    );
    assert_eq!(sink.connections(), 1);
}

#[tokio::test]
async fn dot_stuffing_round_trips_through_the_wire() {
    let sink = start_sink(SinkConfig {
        capture: true,
        ..SinkConfig::default()
    })
    .await;
    let transport = transport_to(sink.addr(), params());
    let bodies: [&[u8]; 4] = [
        b".\r\n..\r\n...\r\n.leading\r\n..double\r\nmiddle . dot\r\n",
        b"no final newline.",
        b"",
        b"\r\n.\r\n\r\n.\r\n",
    ];
    for body in bodies {
        let outcome = transport
            .deliver(&message("a@shop.example", "b@example.com", body))
            .await;
        assert!(
            matches!(outcome, DeliveryOutcome::Delivered { .. }),
            "{outcome:?}"
        );
    }
    let received: Vec<Vec<u8>> = sink.received().into_iter().map(|m| m.data).collect();
    assert_eq!(
        received,
        vec![
            bodies[0].to_vec(),
            b"no final newline.\r\n".to_vec(),
            Vec::new(),
            bodies[3].to_vec(),
        ]
    );
}

#[tokio::test]
async fn connections_are_replaced_after_max_messages() {
    let sink = start_sink(SinkConfig::default()).await;
    let transport = transport_to(
        sink.addr(),
        SmtpClientParams {
            max_messages_per_connection: 10,
            ..params()
        },
    );
    for i in 0..50 {
        let outcome = transport
            .deliver(&message(
                "a@shop.example",
                &format!("u{i}@example.com"),
                b"hi\r\n",
            ))
            .await;
        assert!(
            matches!(outcome, DeliveryOutcome::Delivered { .. }),
            "{outcome:?}"
        );
    }
    assert_eq!(sink.accepted(), 50);
    assert_eq!(sink.connections(), 5);
}

#[tokio::test]
async fn a_refused_connection_is_transient_and_names_the_address() {
    let dead = dead_address().await;
    let transport = transport_to(dead, params());
    let outcome = transport
        .deliver(&message("a@shop.example", "b@example.com", b"hi\r\n"))
        .await;
    let DeliveryOutcome::Transient { reply: None, error } = outcome else {
        panic!("expected a transient failure without reply, got {outcome:?}");
    };
    assert!(error.contains(&dead.to_string()), "{error}");
}

#[tokio::test]
async fn the_next_route_is_tried_when_connecting_fails() {
    let sink = start_sink(SinkConfig::default()).await;
    let dead = dead_address().await;
    let routes = StaticRoutes::from_entries([
        ("example.com", dead.to_string()),
        ("example.com", sink.addr().to_string()),
    ])
    .unwrap();
    let transport = SmtpTransport::new(Arc::new(routes), params());
    let outcome = transport
        .deliver(&message("a@shop.example", "b@example.com", b"hi\r\n"))
        .await;
    assert!(
        matches!(outcome, DeliveryOutcome::Delivered { .. }),
        "{outcome:?}"
    );
    assert_eq!(sink.accepted(), 1);
}

#[tokio::test]
async fn a_domain_without_route_fails_permanently() {
    let routes = StaticRoutes::from_entries([("example.com", "127.0.0.1:25")]).unwrap();
    let transport = SmtpTransport::new(Arc::new(routes), params());
    let outcome = transport
        .deliver(&message("a@shop.example", "b@elsewhere.org", b"hi\r\n"))
        .await;
    let DeliveryOutcome::Permanent { reply } = outcome else {
        panic!("expected a permanent failure, got {outcome:?}");
    };
    assert_eq!(reply.code, 550);
    assert_eq!(reply.enhanced.map(|e| e.to_string()), Some("5.1.2".into()));
}

#[tokio::test]
async fn an_oversized_message_is_refused_permanently() {
    let sink = start_sink(SinkConfig {
        max_message_size: 64,
        ..SinkConfig::default()
    })
    .await;
    let transport = transport_to(sink.addr(), params());
    let outcome = transport
        .deliver(&message("a@shop.example", "b@example.com", &[b'x'; 100]))
        .await;
    // The sink advertises SIZE 64, the client declares SIZE=100, MAIL gets 552.
    assert!(
        matches!(outcome, DeliveryOutcome::Permanent { ref reply } if reply.code == 552),
        "{outcome:?}"
    );
    let outcome = transport
        .deliver(&message("a@shop.example", "b@example.com", b"small\r\n"))
        .await;
    assert!(
        matches!(outcome, DeliveryOutcome::Delivered { .. }),
        "{outcome:?}"
    );
    assert_eq!(sink.connections(), 1);
}

#[tokio::test]
async fn idle_connections_are_closed_on_request() {
    let sink = start_sink(SinkConfig::default()).await;
    let transport = transport_to(sink.addr(), params());
    let outcome = transport
        .deliver(&message("a@shop.example", "b@example.com", b"hi\r\n"))
        .await;
    assert!(
        matches!(outcome, DeliveryOutcome::Delivered { .. }),
        "{outcome:?}"
    );
    assert_eq!(transport.idle_connections(), 1);
    transport.close_idle().await;
    assert_eq!(transport.idle_connections(), 0);
}

/// A guard that says whether sending is still allowed.
#[derive(Debug)]
struct Switch(std::sync::atomic::AtomicBool);

impl maily_engine::ports::SendGuard for Switch {
    fn may_send(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[tokio::test]
async fn a_guard_that_says_no_stops_the_transaction_before_it_starts() {
    let sink = start_sink(SinkConfig::default()).await;
    let transport = transport_to(sink.addr(), params());
    let switch = Arc::new(Switch(std::sync::atomic::AtomicBool::new(true)));
    let mut msg = message("shop@shop.example", "ann@example.com", &body(1));
    msg.guard = Some(switch.clone());
    assert!(matches!(
        transport.deliver(&msg).await,
        DeliveryOutcome::Delivered { .. }
    ));

    switch.0.store(false, std::sync::atomic::Ordering::SeqCst);
    match transport.deliver(&msg).await {
        DeliveryOutcome::Transient { reply: None, error } => {
            assert!(error.contains("may no longer send"), "{error}");
        }
        other => panic!("expected a refusal before sending, got {other:?}"),
    }
    assert_eq!(
        sink.accepted(),
        1,
        "nothing was sent after the guard said no"
    );
}
