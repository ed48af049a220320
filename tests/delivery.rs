//! Delivery against real SMTP peers: Postfix's `smtp-sink` with its fault options
//! (refusing MAIL, RCPT or DATA with 4xx or 5xx, or hanging up) and the built-in
//! sink's scripted replies, one peer per recipient domain; every outcome is counted
//! exactly. The backoff schedule itself is checked with deterministic time in the
//! sender's unit tests.

mod common;

use common::postfix::PostfixSink;
use common::{Harness, dkimpy_verifies, per_recipient, row, run};
use figment::providers::{Format as _, Toml};
use maily_api::intake::Row;
use maily_engine::verp::VerpCodec;
use maily_engine::{Domain, EmailAddress};
use maily_smtp::SinkReply;
use std::collections::{BTreeMap, HashMap};

const VERP_SECRET: &str = "delivery-test-verp-secret";

fn to(i: usize, domain: &str) -> Row {
    Row {
        email: format!("person{i}@{domain}"),
        ..row(i)
    }
}

#[test]
fn a_campaign_over_several_domains_ends_with_exact_counts() {
    let ok = PostfixSink::start(&[]);
    let hard = PostfixSink::start(&["-f", "rcpt", "-B", "550 5.1.1 no such user"]);
    let data = PostfixSink::start(&["-f", "data"]);
    let soft = PostfixSink::start(&["-r", "rcpt"]);
    let mail4 = PostfixSink::start(&["-r", "mail"]);
    let hangup = PostfixSink::start(&["-q", "rcpt"]);
    let routes = BTreeMap::from([
        ("ok.test".to_string(), ok.addr.to_string()),
        ("hard.test".to_string(), hard.addr.to_string()),
        ("data.test".to_string(), data.addr.to_string()),
        ("soft.test".to_string(), soft.addr.to_string()),
        ("mail4.test".to_string(), mail4.addr.to_string()),
        ("hangup.test".to_string(), hangup.addr.to_string()),
    ]);
    run(async move {
        let h = Harness::start_with(HashMap::new(), move |f| {
            f.merge(("smtp.routes", routes))
                .merge(("sender.retry_tiers", vec!["200ms", "400ms"]))
                .merge(("sender.max_attempts", 3))
                .merge(("sender.idle_wait", "10ms"))
                .merge(("verp.domain", "bounces.shop.example"))
                .merge(("verp.secret", VERP_SECRET))
        })
        .await;
        // flaky.test goes to the built-in sink (the "*" route), which answers each
        // recipient's first RCPT with 451 and accepts the second.
        for i in 0..2 {
            h.sink.script(
                &format!("person{i}@flaky.test"),
                [SinkReply::new(451, "4.7.1 greylisted, come back later")],
            );
        }
        let c = h.campaign("many domains").await;
        let mut rows: Vec<Row> = (0..6).map(|i| to(i, "ok.test")).collect();
        rows.extend((0..3).map(|i| to(i, "hard.test")));
        rows.extend((0..2).map(|i| to(i, "data.test")));
        rows.extend((0..2).map(|i| to(i, "soft.test")));
        rows.extend((0..1).map(|i| to(i, "mail4.test")));
        rows.extend((0..1).map(|i| to(i, "hangup.test")));
        rows.extend((0..2).map(|i| to(i, "flaky.test")));
        let report = h.intake.enqueue(&c, rows).await.expect("enqueued");
        assert_eq!(report.accepted, 17);
        h.wait_finished(&[(c.id, 17)]).await;

        let s = h.stats(c.id).await;
        assert_eq!(s.delivered, 8, "ok.test and flaky.test: {s:?}");
        assert_eq!(s.bounced(), 5, "hard.test and data.test: {s:?}");
        assert_eq!(
            s.bounced_hard, 3,
            "550 5.1.1 at RCPT is a hard bounce: {s:?}"
        );
        assert_eq!(s.expired, 4, "soft.test, mail4.test and hangup.test: {s:?}");
        // Stats count messages, each kind once: the 4 expired and the 2 flaky.test
        // messages were deferred.
        assert_eq!(s.deferred, 6, "{s:?}");

        // What the peers saw.
        let dumps = ok.messages();
        assert_eq!(dumps.len(), 6);
        for (sink, name) in [
            (&hard, "hard"),
            (&data, "data"),
            (&soft, "soft"),
            (&mail4, "mail4"),
            (&hangup, "hangup"),
        ] {
            assert!(sink.messages().is_empty(), "{name}.test accepted nothing");
        }
        let flaky = per_recipient(&h.sink.received());
        assert_eq!(flaky.get("person0@flaky.test"), Some(&1));
        assert_eq!(flaky.get("person1@flaky.test"), Some(&1));
        assert_eq!(h.sink.accepted(), 2);

        // Every return path is a VERP address that names its recipient.
        let codec = VerpCodec::new(
            "b",
            Domain::parse("bounces.shop.example").unwrap(),
            VERP_SECRET.as_bytes(),
        )
        .unwrap();
        for dump in &dumps {
            let field = |name: &str| {
                dump.lines()
                    .find_map(|l| l.strip_prefix(name))
                    .map(|v| v.trim().trim_matches(['<', '>']).to_string())
                    .unwrap_or_else(|| panic!("{name} missing in {dump}"))
            };
            let tag = codec
                .decode(&field("X-Mail-Args:"))
                .expect("a VERP return path");
            assert_eq!(tag.recipient.as_str(), field("X-Rcpt-Args:"));
            assert_eq!(tag.campaign, c.id);
            assert_eq!(tag.tenant, h.tenant);
        }

        // Hard bounces are suppressed for the tenant; the soft-failing are not.
        for i in 0..3 {
            let addr = EmailAddress::parse(&format!("person{i}@hard.test")).unwrap();
            assert!(h.ports.store.is_suppressed(&h.tenant, &addr).await.unwrap());
        }
        let soft_addr = EmailAddress::parse("person0@soft.test").unwrap();
        assert!(
            !h.ports
                .store
                .is_suppressed(&h.tenant, &soft_addr)
                .await
                .unwrap()
        );
        let expired = h
            .ports
            .store
            .messages_with_status(c.id, "expired")
            .await
            .unwrap();
        let mail4_detail = expired
            .iter()
            .find(|m| m.recipient.as_str() == "person0@mail4.test")
            .and_then(|m| m.detail.clone())
            .unwrap_or_default();
        assert!(
            mail4_detail.contains("450") || mail4_detail.contains("4.3.0"),
            "{mail4_detail}"
        );
        h.engine.shutdown().await;
    });
}

#[test]
fn messages_leave_signed_with_tracked_links_and_one_click_unsubscribe() {
    let keys = concat!(env!("CARGO_MANIFEST_DIR"), "/smtp/tests/data/dkim");
    let ed = format!("{keys}/ed25519.pem");
    let rsa = format!("{keys}/rsa2048.pem");
    run(async move {
        let h = Harness::start_with(HashMap::new(), move |f| {
            f.merge(Toml::string(&format!(
                "[[dkim.keys]]\ndomain = \"shop.example\"\nselector = \"ed1\"\nkey_file = \"{ed}\"\n\
                 [[dkim.keys]]\ndomain = \"esp.example\"\nselector = \"rsa1\"\nkey_file = \"{rsa}\"\nfallback = true\n"
            )))
            .merge(("tracking.base_url", "https://t.shop.example"))
            .merge(("tracking.secret", "00112233445566778899aabbccddeeff"))
            .merge(("tracking.unsubscribe_mailto", "unsubscribe@shop.example"))
        })
        .await;
        let c = h.campaign("signed").await;
        let report = h.intake.enqueue(&c, (0..3).map(row)).await.unwrap();
        h.wait_finished(&[(c.id, report.accepted)]).await;
        let received = h.sink.received();
        assert_eq!(received.len(), 3);
        let ed_key =
            maily_smtp::DkimKey::from_file("shop.example", "ed1", format!("{keys}/ed25519.pem"))
                .unwrap();
        for m in &received {
            let text = String::from_utf8_lossy(&m.data);
            assert!(
                text.starts_with("DKIM-Signature: v=1; a=ed25519-sha256;"),
                "{text}"
            );
            assert!(dkimpy_verifies(
                &m.data,
                &ed_key.dns_name(),
                &ed_key.dns_record()
            ));
            let mut tampered = m.data.clone();
            let last = tampered.len() - 3;
            tampered[last] ^= 1;
            assert!(!dkimpy_verifies(
                &tampered,
                &ed_key.dns_name(),
                &ed_key.dns_record()
            ));
            assert!(
                text.contains("List-Unsubscribe: <https://t.shop.example/u/"),
                "{text}"
            );
            assert!(text.contains("List-Unsubscribe-Post: List-Unsubscribe=One-Click"));
            // The HTML part is quoted-printable: undo its soft line breaks.
            let html = text.replace("=\r\n", "").replace("=3D", "=");
            assert!(
                html.contains("<img src=\"https://t.shop.example/o/"),
                "open pixel: {html}"
            );
        }
        h.engine.shutdown().await;
    });
}
