//! The sink's side of the protocol, driven by a raw client.

use crate::support::*;
use maily_smtp::{ReceivedMessage, SinkConfig, SinkReply};
use std::collections::HashMap;
use std::time::Duration;

#[tokio::test]
async fn answers_a_pipelined_transaction_in_order() {
    let sink = start_sink(SinkConfig {
        capture: true,
        hostname: "sink.test".into(),
        rejections: HashMap::from([(
            "bad@y.org".to_string(),
            SinkReply::new(550, "5.1.1 no such user"),
        )]),
        ..SinkConfig::default()
    })
    .await;
    let mut c = RawConn::connect(sink.addr()).await;
    let (code, greeting) = c.reply().await;
    assert_eq!(code, 220);
    assert!(greeting[0].contains("sink.test"));

    c.send_raw(
        b"EHLO client.test\r\nMAIL FROM:<a@x.org>\r\nRCPT TO:<b@y.org>\r\n\
          RCPT TO:<BAD@y.org>\r\nDATA\r\n",
    )
    .await;
    let (code, ehlo) = c.reply().await;
    assert_eq!(code, 250);
    let keywords: Vec<&str> = ehlo[1..].iter().map(|l| &l[4..]).collect();
    assert!(keywords.contains(&"PIPELINING"), "{ehlo:?}");
    assert!(keywords.contains(&"8BITMIME"), "{ehlo:?}");
    assert!(keywords.contains(&"ENHANCEDSTATUSCODES"), "{ehlo:?}");
    assert!(keywords.iter().any(|k| k.starts_with("SIZE ")), "{ehlo:?}");
    assert_eq!(c.code().await, 250);
    assert_eq!(c.code().await, 250);
    assert_eq!(
        c.reply().await,
        (550, vec!["550 5.1.1 no such user".to_string()])
    );
    assert_eq!(c.code().await, 354);

    // The data, its terminator and the next commands in one write.
    c.send_raw(b"Subject: x\r\n\r\n..dot\r\n.\r\nNOOP\r\nQUIT\r\n")
        .await;
    let (code, queued) = c.reply().await;
    assert_eq!(code, 250);
    assert!(queued[0].contains("queued as"), "{queued:?}");
    assert_eq!(c.code().await, 250);
    assert_eq!(c.code().await, 221);
    assert!(c.closed().await);

    let received = sink.received();
    assert_eq!(received.len(), 1);
    let ReceivedMessage {
        mail_from,
        rcpt_to,
        data,
        peer,
        tls,
        ..
    } = &received[0];
    assert_eq!(mail_from, "a@x.org");
    assert_eq!(rcpt_to, &["b@y.org".to_string()]);
    assert_eq!(data, b"Subject: x\r\n\r\n.dot\r\n");
    assert!(peer.ip().is_loopback());
    assert!(!tls);
    assert_eq!(sink.accepted(), 1);
    assert_eq!(sink.rejected_recipients(), 1);
    assert_eq!(sink.connections(), 1);
}

#[tokio::test]
async fn enforces_command_order_and_rejects_unknown_commands() {
    let sink = start_sink(SinkConfig::default()).await;
    sink.set_rejection("no@y.org", SinkReply::new(550, "5.7.1 denied"));
    let mut c = RawConn::connect(sink.addr()).await;
    assert_eq!(c.code().await, 220);
    let script = [
        ("MAIL FROM:<a@x.org>", 503),
        ("HELO", 501),
        ("HELO client.test", 250),
        ("DATA", 503),
        ("RCPT TO:<b@y.org>", 503),
        ("MAIL FROM:a@x.org", 501),
        ("MAIL FROM:<a@x.org>", 250),
        ("MAIL FROM:<a@x.org>", 503),
        ("RCPT TO:<>", 501),
        ("RCPT TO:<no@y.org>", 550),
        ("DATA", 554),
        ("RSET", 250),
        ("NOOP", 250),
        ("VRFY a@x.org", 502),
        ("STARTTLS", 502),
        ("FROB", 500),
        ("", 500),
        ("QUIT", 221),
    ];
    for (command, expected) in script {
        c.send(command).await;
        assert_eq!(c.code().await, expected, "reply to {command:?}");
    }
    assert_eq!(sink.accepted(), 0);
}

#[tokio::test]
async fn refuses_oversized_messages_and_stays_usable() {
    let sink = start_sink(SinkConfig {
        capture: true,
        max_message_size: 16,
        ..SinkConfig::default()
    })
    .await;
    let mut c = RawConn::connect(sink.addr()).await;
    assert_eq!(c.code().await, 220);
    c.send("EHLO client.test").await;
    assert_eq!(c.code().await, 250);

    c.send("MAIL FROM:<a@x.org> SIZE=17").await;
    assert_eq!(c.code().await, 552, "declared size over the limit");

    // Undeclared size: found out while reading the data.
    c.send("MAIL FROM:<a@x.org>").await;
    assert_eq!(c.code().await, 250);
    c.send("RCPT TO:<b@y.org>").await;
    assert_eq!(c.code().await, 250);
    c.send("DATA").await;
    assert_eq!(c.code().await, 354);
    c.send_raw(b"0123456789\r\n0123456789\r\n.\r\n").await;
    assert_eq!(c.code().await, 552);

    c.send("MAIL FROM:<a@x.org>").await;
    assert_eq!(c.code().await, 250);
    c.send("RCPT TO:<b@y.org>").await;
    assert_eq!(c.code().await, 250);
    c.send("DATA").await;
    assert_eq!(c.code().await, 354);
    c.send_raw(b"small\r\n.\r\n").await;
    assert_eq!(c.code().await, 250);

    assert_eq!(sink.accepted(), 1);
    assert_eq!(sink.received()[0].data, b"small\r\n");
}

#[tokio::test]
async fn overlong_command_lines_are_refused_without_dropping_the_session() {
    let sink = start_sink(SinkConfig::default()).await;
    let mut c = RawConn::connect(sink.addr()).await;
    assert_eq!(c.code().await, 220);
    c.send(&format!("NOOP {}", "x".repeat(100_000))).await;
    assert_eq!(c.code().await, 500);
    c.send("NOOP").await;
    assert_eq!(c.code().await, 250);
}

#[tokio::test]
async fn wait_for_returns_the_count_when_reached_or_on_timeout() {
    let sink = start_sink(SinkConfig::default()).await;
    assert_eq!(sink.wait_for(1, Duration::from_millis(10)).await, 0);
    assert_eq!(sink.wait_for(0, Duration::from_millis(10)).await, 0);

    let addr = sink.addr();
    let client = tokio::spawn(async move {
        let mut c = RawConn::connect(addr).await;
        assert_eq!(c.code().await, 220);
        c.send_raw(b"HELO c\r\nMAIL FROM:<>\r\nRCPT TO:<b@y.org>\r\nDATA\r\n")
            .await;
        for expected in [250, 250, 250, 354] {
            assert_eq!(c.code().await, expected);
        }
        c.send_raw(b"hi\r\n.\r\n").await;
        assert_eq!(c.code().await, 250);
    });
    assert_eq!(sink.wait_for(1, GUARD).await, 1);
    client.await.unwrap();
}

#[tokio::test]
async fn shutdown_closes_connections_and_stops_listening() {
    let sink = start_sink(SinkConfig::default()).await;
    let addr = sink.addr();
    let mut c = RawConn::connect(addr).await;
    assert_eq!(c.code().await, 220);
    sink.shutdown().await;
    assert!(c.closed().await, "open session is closed");
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

mod session_input {
    use crate::support::*;
    use maily_smtp::{SinkConfig, SinkLimits};
    use proptest::prelude::*;
    use std::net::SocketAddr;

    /// Bytes that look like a session often enough to reach every state: commands
    /// (well and badly formed), data, dots, bare line ends and noise.
    fn session_bytes() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            Just(b"EHLO x\r\n".to_vec()),
            Just(b"HELO x\r\n".to_vec()),
            Just(b"MAIL FROM:<a@b.test> SIZE=99999999999\r\n".to_vec()),
            Just(b"MAIL FROM:<>\r\n".to_vec()),
            Just(b"RCPT TO:<c@d.test>\r\n".to_vec()),
            Just(b"DATA\r\n".to_vec()),
            Just(b"BDAT 10 LAST\r\n".to_vec()),
            Just(b"STARTTLS\r\n".to_vec()),
            Just(b"RSET\r\nNOOP\r\nVRFY x\r\n".to_vec()),
            Just(b".\r\n".to_vec()),
            Just(b"..\r\n\n.\n\r.\r".to_vec()),
            Just(b"QUIT\r\n".to_vec()),
            prop::collection::vec(any::<u8>(), 0..64),
            "[ -~]{0,40}\r\n".prop_map(String::into_bytes),
        ];
        prop::collection::vec(piece, 0..24).prop_map(|p| p.concat())
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]

        /// Whatever a client sends, the session ends when the input does, never
        /// panics, and answers in proportion to what it was sent.
        #[test]
        fn any_input_ends_the_session_with_bounded_answers(
            input in prop_oneof![session_bytes(), prop::collection::vec(any::<u8>(), 0..4096)],
        ) {
            let rt = runtime();
            let out = rt.block_on(async {
                let sink = start_sink(SinkConfig {
                    max_message_size: 1024,
                    limits: SinkLimits {
                        max_concurrent_messages: 1,
                        ..SinkLimits::default()
                    },
                    ..SinkConfig::default()
                })
                .await;
                let peer: SocketAddr = "192.0.2.7:2525".parse().unwrap();
                let out = sink.converse(peer, &input).await;
                assert_eq!(sink.open_connections(), 0, "the session was let go");
                assert_eq!(sink.open_peers(), 0, "and its address forgotten");
                out
            });
            let lines = input.iter().filter(|&&b| b == b'\n').count() + 1;
            prop_assert!(out.starts_with(b"220 "), "{:?}", String::from_utf8_lossy(&out));
            prop_assert!(
                out.len() <= 1024 + 512 * lines,
                "{} bytes answered to {} lines",
                out.len(),
                lines
            );
        }
    }
}
