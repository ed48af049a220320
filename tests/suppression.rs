//! The suppression policy: which bounce reasons suppress an address is set per tenant
//! in `[bounce]`, and the delivery path applies it to the replies it gets.

mod common;

use common::{Harness, row, run};
use maily_smtp::SinkReply;
use std::collections::{BTreeMap, BTreeSet, HashMap};

#[test]
fn a_tenant_list_suppresses_the_reasons_it_names() {
    run(async {
        let rejections = HashMap::from([
            (
                "person0@example.com".to_string(),
                SinkReply::new(550, "5.1.1 no such user here"),
            ),
            (
                "person1@example.com".to_string(),
                SinkReply::new(552, "5.2.2 mailbox full"),
            ),
            (
                "person2@example.com".to_string(),
                SinkReply::new(550, "5.7.1 message refused as spam"),
            ),
        ]);
        // acme also gives up on full mailboxes; other tenants keep the default.
        let h = Harness::start_with(rejections, |f| {
            f.merge((
                "bounce.tenants",
                BTreeMap::from([(
                    "acme".to_string(),
                    BTreeMap::from([("suppress", vec!["hard", "mailboxfull"])]),
                )]),
            ))
        })
        .await;
        let c = h.campaign("policy").await;
        let report = h.intake.enqueue(&c, (0..5).map(row)).await.unwrap();
        h.wait_finished(&[(c.id, report.accepted)]).await;
        let stats = h.stats(c.id).await;
        assert_eq!((stats.bounced_hard, stats.bounced_soft), (1, 2));

        let suppressed: BTreeSet<String> = h
            .ports
            .store
            .suppressions(&h.tenant)
            .await
            .unwrap()
            .into_iter()
            .map(|(a, _)| a.to_string())
            .collect();
        assert_eq!(
            suppressed,
            BTreeSet::from([
                "person0@example.com".to_string(),
                "person1@example.com".to_string()
            ])
        );
        // The bounces by reason add up to the counters.
        let reasons = h.ports.store.bounce_reasons(c.id).await.unwrap();
        assert_eq!(
            reasons.iter().map(|r| r.count).sum::<u64>(),
            3,
            "{reasons:?}"
        );
        let of = |name: &str| reasons.iter().find(|r| r.reason == name).cloned();
        assert_eq!(
            of("userunknown").map(|r| (r.hard, r.count)),
            Some((true, 1))
        );
        assert_eq!(
            of("mailboxfull").map(|r| (r.hard, r.count)),
            Some((false, 1))
        );
        let full = maily_engine::EmailAddress::parse("person1@example.com").unwrap();
        assert!(h.ports.hot.is_suppressed(&h.tenant, &full).await.unwrap());
    });
}

#[test]
fn an_unknown_reason_in_a_list_is_an_error_naming_it() {
    let figment = maily_config::Settings::figment(None)
        .expect("defaults")
        .merge((
            "bounce.tenants",
            BTreeMap::from([(
                "acme".to_string(),
                BTreeMap::from([("suppress", vec!["hard", "mailbox-full"])]),
            )]),
        ));
    let settings = maily_config::Settings::from_figment(figment).expect("settings");
    let err = format!("{:#}", maily::wiring::suppression(&settings).unwrap_err());
    assert!(err.contains("bounce.tenants.acme.suppress"), "{err}");
    assert!(err.contains("\"mailbox-full\""), "{err}");
}
