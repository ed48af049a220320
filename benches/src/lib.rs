//! Fixtures for Maily's benchmarks: realistic campaign data, built deterministically so
//! figures from different runs and machines measure the same work.
//!
//! The criterion micro-benchmarks (`benches/core.rs`) take their inputs from here, and
//! the tests below check every fixture takes the success path, so a benchmark never
//! ends up timing an error. The harnesses in `src/bin` share [`mail`] (messages of a
//! chosen size), [`measure`] (wall and CPU time, medians, tables) and [`postfix`]
//! (`smtp-sink` and `smtp-source`).

pub mod mail;
pub mod measure;
pub mod postfix;

use maily_engine::merkle::{CampaignLeaf, Hash32};
use maily_engine::reply::SmtpReply;
use maily_engine::template::Template;
use maily_engine::{CampaignId, CampaignStats, EmailAddress, MessageId, Recipient};
use std::collections::BTreeMap;

/// First names cycled over recipients; two are non-ASCII because real lists carry such
/// names, and they take the encoded-word and quoted-printable paths.
const FIRST_NAMES: [&str; 8] = [
    "Ann", "Bo", "Chiara", "Dmitri", "Zoë", "Farid", "Gus", "Łucja",
];
const CITIES: [&str; 6] = ["Lisbon", "Oslo", "Kyoto", "Lima", "Accra", "Perth"];
const DOMAINS: [&str; 3] = ["example.com", "example.org", "mail.example.net"];

/// The demo's campaign template: a personalised subject, text and HTML part.
pub fn sample_campaign_template() -> Template {
    Template {
        subject: "{{ first_name }}, spring sale picks for {{ city }}".into(),
        text: Some(
            "Hello {{ first_name }},\n\nYour code is {{ code }}.\nSee you in {{ city }}!\n".into(),
        ),
        html: Some(
            "<p>Hello {{ first_name }},</p><p>Your code is <b>{{ code }}</b>. \
             See you in {{ city }}!</p>"
                .into(),
        ),
    }
}

/// Recipient number `i`, carrying every variable [`sample_campaign_template`] uses.
pub fn sample_recipient(i: usize) -> Recipient {
    let email = format!("user{i}@{}", DOMAINS[i % DOMAINS.len()]);
    Recipient {
        email: EmailAddress::parse(&email).expect("fixture address is valid"),
        vars: BTreeMap::from([
            (
                "first_name".to_string(),
                FIRST_NAMES[i % FIRST_NAMES.len()].to_string(),
            ),
            ("city".to_string(), CITIES[i % CITIES.len()].to_string()),
            ("code".to_string(), format!("M-{i:06}")),
        ]),
    }
}

/// The address campaigns are sent from.
pub fn sample_sender() -> EmailAddress {
    EmailAddress::parse("news@maily.example").expect("fixture address is valid")
}

/// Campaign number `i`, with a fixed id instead of a random one.
pub fn sample_campaign_id(i: u64) -> CampaignId {
    CampaignId::from_bytes(id_bytes(0xca, i))
}

/// Message number `i`, with a fixed id instead of a random one.
pub fn sample_message_id(i: u64) -> MessageId {
    MessageId::from_bytes(id_bytes(0x3e, i))
}

fn id_bytes(tag: u8, i: u64) -> [u8; 16] {
    let mut b = [tag; 16];
    b[8..].copy_from_slice(&i.to_be_bytes());
    b
}

/// Negative SMTP replies as large providers word them, one per common outcome: unknown
/// user, full mailbox, spam, blocklist, greylisting, rate limit, and two that only the
/// status code or the basic code can classify.
pub fn sample_replies() -> Vec<SmtpReply> {
    let multi_line = SmtpReply::parse_lines(&[
        "550-5.1.1 The email account that you tried to reach does not exist. Please try",
        "550-5.1.1 double-checking the recipient's email address for typos or",
        "550 5.1.1 unnecessary spaces. https://support.example/mail/?p=NoSuchUser",
    ])
    .expect("fixture reply parses");
    vec![
        multi_line,
        SmtpReply::new(
            552,
            "5.2.2 The recipient's mailbox is full and can't accept messages now",
        ),
        SmtpReply::new(554, "5.7.1 Message rejected because it looks like spam"),
        SmtpReply::new(
            550,
            "5.7.1 Service unavailable; client host listed at zen.spamhaus.org",
        ),
        SmtpReply::new(450, "4.2.0 Greylisted, please try again in 5 minutes"),
        SmtpReply::new(
            421,
            "4.7.0 Too many messages from your IP, rate limit exceeded",
        ),
        SmtpReply::new(550, "5.4.4 Unable to route"),
        SmtpReply::new(554, "Transaction failed"),
    ]
}

/// Leaf hashes of `n` campaigns' figures for one epoch, in the order the anchor actor
/// builds its tree (by campaign id).
pub fn sample_leaf_hashes(n: usize) -> Vec<Hash32> {
    (0..n as u64)
        .map(|i| {
            let mut stats = [0u64; 12];
            for (k, v) in stats.iter_mut().enumerate() {
                *v = i.wrapping_mul(31).wrapping_add(k as u64 * 1_000);
            }
            CampaignLeaf {
                epoch: 42,
                campaign: sample_campaign_id(i),
                stats: CampaignStats::from_array(stats),
                reward_total: u128::from(i) * 1_000_000_000,
            }
            .hash()
        })
        .collect()
}

/// `n` event-log keys as intake writes them: campaign ids in text form.
pub fn sample_partition_keys(n: usize) -> Vec<Vec<u8>> {
    (0..n as u64)
        .map(|i| sample_campaign_id(i).to_string().into_bytes())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use maily_engine::template::CompiledTemplate;

    #[test]
    fn every_sample_recipient_renders_the_sample_template() {
        let template = CompiledTemplate::compile(&sample_campaign_template()).unwrap();
        for i in 0..64 {
            let rendered = template.render(&sample_recipient(i)).unwrap();
            assert!(rendered.subject.contains(CITIES[i % CITIES.len()]));
            assert!(rendered.html.unwrap().contains(&format!("M-{i:06}")));
        }
    }

    #[test]
    fn sample_replies_are_failures() {
        for reply in sample_replies() {
            assert!(!reply.is_positive(), "{reply}");
        }
    }

    #[test]
    fn sample_ids_are_distinct() {
        let mut keys = sample_partition_keys(1_000);
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), 1_000);
        assert_ne!(
            sample_message_id(1).as_bytes(),
            sample_campaign_id(1).as_bytes()
        );
    }
}
