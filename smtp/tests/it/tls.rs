//! STARTTLS between the transport and the sink: opportunistic, required, and
//! certificate checks against a test CA.

use crate::support::*;
use maily_engine::ports::{DeliveryOutcome, Transport};
use maily_smtp::tls::{CertificateCheck, client_config, server_config};
use maily_smtp::{SinkConfig, SinkHandle, SmtpClientParams, SmtpTransport, TlsMode};
use std::path::PathBuf;

fn data_file(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/tls")
        .join(name)
}

async fn tls_sink() -> SinkHandle {
    let tls = server_config(&data_file("server.pem"), &data_file("server.key")).unwrap();
    start_sink(SinkConfig {
        capture: true,
        tls: Some(tls),
        ..SinkConfig::default()
    })
    .await
}

fn transport(sink: &SinkHandle, tls: TlsMode, check: Option<CertificateCheck>) -> SmtpTransport {
    let t = transport_to(sink.addr(), SmtpClientParams { tls, ..params() });
    match check {
        Some(check) => t.with_tls_config(client_config(&check).unwrap()),
        None => t,
    }
}

const BODY: &[u8] = b"Subject: secret\r\n\r\nover TLS\r\n.leading dot\r\n";

#[tokio::test]
async fn opportunistic_tls_encrypts_when_offered() {
    let sink = tls_sink().await;
    let t = transport(&sink, TlsMode::Opportunistic, None);
    for i in 0..3 {
        let msg = message("a@shop.example", &format!("u{i}@x.test"), BODY);
        let outcome = t.deliver(&msg).await;
        assert!(
            matches!(outcome, DeliveryOutcome::Delivered { .. }),
            "{outcome:?}"
        );
    }
    assert_eq!(
        sink.tls_sessions(),
        1,
        "one connection, upgraded once, reused"
    );
    let received = sink.received();
    assert!(received.iter().all(|m| m.tls));
    assert_eq!(received[0].data, BODY);
}

#[tokio::test]
async fn opportunistic_tls_sends_in_plain_text_without_starttls() {
    let sink = start_sink(SinkConfig {
        capture: true,
        ..SinkConfig::default()
    })
    .await;
    let t = transport(&sink, TlsMode::Opportunistic, None);
    let outcome = t
        .deliver(&message("a@shop.example", "u@x.test", BODY))
        .await;
    assert!(
        matches!(outcome, DeliveryOutcome::Delivered { .. }),
        "{outcome:?}"
    );
    assert!(!sink.received()[0].tls);
}

#[tokio::test]
async fn required_tls_refuses_a_server_without_starttls() {
    let sink = start_sink(SinkConfig::default()).await;
    let t = transport(&sink, TlsMode::Required, None);
    let outcome = t
        .deliver(&message("a@shop.example", "u@x.test", BODY))
        .await;
    match outcome {
        DeliveryOutcome::Transient { error, .. } => {
            assert!(
                error.contains("TLS") && error.contains("does not offer STARTTLS"),
                "{error}"
            );
        }
        other => panic!("expected a transient failure, got {other:?}"),
    }
    assert_eq!(sink.accepted(), 0);
}

#[tokio::test]
async fn required_tls_with_the_right_ca_verifies_and_delivers() {
    let sink = tls_sink().await;
    // The certificate names 127.0.0.1, which is the route's host.
    let t = transport(
        &sink,
        TlsMode::Required,
        Some(CertificateCheck::CaFile(data_file("ca.pem"))),
    );
    let outcome = t
        .deliver(&message("a@shop.example", "u@x.test", BODY))
        .await;
    assert!(
        matches!(outcome, DeliveryOutcome::Delivered { .. }),
        "{outcome:?}"
    );
    assert!(sink.received()[0].tls);
}

#[tokio::test]
async fn required_tls_with_an_unknown_issuer_fails_and_sends_nothing() {
    let sink = tls_sink().await;
    let t = transport(
        &sink,
        TlsMode::Required,
        Some(CertificateCheck::CaFile(data_file("other-ca.pem"))),
    );
    let outcome = t
        .deliver(&message("a@shop.example", "u@x.test", BODY))
        .await;
    match outcome {
        DeliveryOutcome::Transient { error, .. } => {
            assert!(error.contains("TLS handshake"), "{error}");
        }
        other => panic!("expected a transient failure, got {other:?}"),
    }
    assert_eq!(sink.accepted(), 0);
}

#[tokio::test]
async fn opportunistic_tls_falls_back_to_plain_text_when_the_handshake_fails() {
    let sink = tls_sink().await;
    let t = transport(
        &sink,
        TlsMode::Opportunistic,
        Some(CertificateCheck::CaFile(data_file("other-ca.pem"))),
    );
    let outcome = t
        .deliver(&message("a@shop.example", "u@x.test", BODY))
        .await;
    assert!(
        matches!(outcome, DeliveryOutcome::Delivered { .. }),
        "{outcome:?}"
    );
    assert!(!sink.received()[0].tls, "delivered in plain text");
}

#[test]
fn a_bad_ca_file_is_named() {
    let err = client_config(&CertificateCheck::CaFile(data_file("missing.pem"))).unwrap_err();
    assert!(err.to_string().contains("missing.pem"), "{err}");
    let err = client_config(&CertificateCheck::CaFile(data_file("README.md"))).unwrap_err();
    assert!(err.to_string().contains("no PEM certificate"), "{err}");
    let err = server_config(&data_file("server.pem"), &data_file("ca.pem")).unwrap_err();
    assert!(err.to_string().contains("ca.pem"), "{err}");
}
