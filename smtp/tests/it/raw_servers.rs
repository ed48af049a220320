//! SmtpTransport against hand-written servers that behave in particular ways.

use crate::support::*;
use maily_engine::ports::{DeliveryOutcome, Transport};

fn assert_delivered(outcome: &DeliveryOutcome) {
    assert!(
        matches!(outcome, DeliveryOutcome::Delivered { .. }),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn a_server_without_pipelining_gets_one_command_at_a_time() {
    let (addr, seen) = scripted_server(Script {
        ehlo_keywords: Some(vec!["SIZE 100000", "8BITMIME"]),
        ..Script::default()
    })
    .await;
    let transport = transport_to(addr, params());
    for to in ["a@example.com", "b@example.com"] {
        assert_delivered(
            &transport
                .deliver(&message("s@shop.example", to, b"..hi\r\n.\r\n"))
                .await,
        );
    }
    assert!(
        !seen
            .pipelined_input
            .load(std::sync::atomic::Ordering::SeqCst)
    );
    assert_eq!(
        seen.commands(),
        ["EHLO", "MAIL", "RCPT", "DATA", "MAIL", "RCPT", "DATA"]
    );
    // On the wire the data is stuffed: each leading dot doubled.
    assert_eq!(seen.messages.lock().unwrap()[0], b"...hi\r\n..\r\n");
}

#[tokio::test]
async fn a_server_that_refuses_ehlo_is_greeted_with_helo() {
    let (addr, seen) = scripted_server(Script::default()).await;
    let transport = transport_to(addr, params());
    assert_delivered(
        &transport
            .deliver(&message("s@shop.example", "a@example.com", b"hi\r\n"))
            .await,
    );
    assert_eq!(seen.commands(), ["EHLO", "HELO", "MAIL", "RCPT", "DATA"]);
}

#[tokio::test]
async fn a_pipelining_server_gets_mail_rcpt_and_data_in_one_write() {
    let (addr, seen) = scripted_server(Script {
        ehlo_keywords: Some(vec!["PIPELINING"]),
        ..Script::default()
    })
    .await;
    let transport = transport_to(addr, params());
    assert_delivered(
        &transport
            .deliver(&message("s@shop.example", "a@example.com", b"hi\r\n"))
            .await,
    );
    // MAIL arrived with RCPT and DATA already behind it.
    assert!(
        seen.pipelined_input
            .load(std::sync::atomic::Ordering::SeqCst)
    );
    assert_eq!(seen.commands(), ["EHLO", "MAIL", "RCPT", "DATA"]);
}

#[tokio::test]
async fn a_server_that_answers_garbage_is_transient() {
    let garbage_greeting = raw_server(|mut conn| async move {
        conn.send("hello, I am not an SMTP server").await;
        let _ = conn.line().await;
    })
    .await;
    let garbage_ehlo = raw_server(|mut conn| async move {
        conn.send("220 ready").await;
        let _ = conn.line().await;
        conn.send("?!? 250 whatever").await;
        let _ = conn.line().await;
    })
    .await;
    for addr in [garbage_greeting, garbage_ehlo] {
        let transport = transport_to(addr, params());
        let outcome = transport
            .deliver(&message("s@shop.example", "a@example.com", b"hi\r\n"))
            .await;
        let DeliveryOutcome::Transient { reply: None, error } = outcome else {
            panic!("expected a transient failure without reply, got {outcome:?}");
        };
        assert!(error.contains("malformed reply"), "{error}");
        assert!(error.contains(&addr.to_string()), "{error}");
    }
}

#[tokio::test]
async fn a_server_that_hangs_up_mid_transaction_is_transient() {
    let addr = raw_server(|mut conn| async move {
        conn.send("220 ready").await;
        let _ = conn.line().await;
        conn.send("250 ok").await;
        // MAIL arrives on a fresh connection; hang up without a word.
        let _ = conn.line().await;
    })
    .await;
    let transport = transport_to(addr, params());
    let outcome = transport
        .deliver(&message("s@shop.example", "a@example.com", b"hi\r\n"))
        .await;
    let DeliveryOutcome::Transient { reply: None, error } = outcome else {
        panic!("expected a transient failure without reply, got {outcome:?}");
    };
    assert!(
        error.contains("closed the connection") || error.contains("i/o error"),
        "{error}"
    );
    assert!(error.contains(&addr.to_string()), "{error}");
}

async fn stale_connection_is_retried(hangup: Hangup, pipelining: bool) {
    let keywords = if pipelining {
        vec!["PIPELINING"]
    } else {
        vec![]
    };
    let (addr, seen) = scripted_server(Script {
        ehlo_keywords: Some(keywords),
        first_connection_hangup: Some((1, hangup)),
        ..Script::default()
    })
    .await;
    let transport = transport_to(addr, params());
    for to in ["a@example.com", "b@example.com", "c@example.com"] {
        assert_delivered(
            &transport
                .deliver(&message("s@shop.example", to, b"hi\r\n"))
                .await,
        );
    }
    assert_eq!(
        seen.connections.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "one replacement connection, then reuse"
    );
    assert_eq!(seen.messages.lock().unwrap().len(), 3);
}

#[tokio::test]
async fn a_pooled_connection_closed_by_the_server_is_retried_once() {
    stale_connection_is_retried(Hangup::Close, true).await;
    stale_connection_is_retried(Hangup::Close, false).await;
}

#[tokio::test]
async fn a_pooled_connection_answered_with_421_is_retried_once() {
    stale_connection_is_retried(Hangup::Reply421, true).await;
    stale_connection_is_retried(Hangup::Reply421, false).await;
}

#[tokio::test]
async fn data_accepted_after_a_failed_recipient_is_ended_and_the_connection_kept() {
    let (addr, seen) = scripted_server(Script {
        ehlo_keywords: Some(vec!["PIPELINING"]),
        rcpt_reply: Some("550 5.1.1 unknown user"),
        data_always_354: true,
        ..Script::default()
    })
    .await;
    let transport = transport_to(addr, params());
    for _ in 0..2 {
        let outcome = transport
            .deliver(&message("s@shop.example", "a@example.com", b"hi\r\n"))
            .await;
        assert!(
            matches!(outcome, DeliveryOutcome::Permanent { ref reply } if reply.code == 550),
            "{outcome:?}"
        );
    }
    assert_eq!(
        seen.commands(),
        [
            "EHLO", "MAIL", "RCPT", "DATA", "RSET", "MAIL", "RCPT", "DATA", "RSET"
        ]
    );
    assert_eq!(
        seen.connections.load(std::sync::atomic::Ordering::SeqCst),
        1
    );
}
