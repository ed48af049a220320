//! Ipswitch IMail Server: one line per recipient naming the failure (`Unknown user:
//! address`, `undeliverable to address`), the server's response after "Body of
//! message generated response:", then "Original message follows.".

use super::{Delivery, Layout, Parsed, find_address, finish};
use crate::report::mail::Mail;
use maily_engine::reply::Reason;

const LAYOUT: Layout = Layout {
    begin: &[],
    end: &["Original message follows."],
};

/// IMail's own words for each failure, and what they mean.
const FAILURES: &[(&str, Option<Reason>)] = &[
    ("Unknown user:", Some(Reason::UserUnknown)),
    ("Invalid final delivery userid:", Some(Reason::UserUnknown)),
    (
        "User mailbox exceeds allowed size:",
        Some(Reason::MailboxFull),
    ),
    ("Delivery failed", None),
    ("undeliverable to", None),
];

pub(super) fn parse(mail: &Mail) -> Option<Parsed> {
    let mailer = mail.header("x-mailer");
    let recognised = mailer.contains("SMTP32")
        || (mail.mentions(&["Original message follows."])
            && mail
                .header("subject")
                .trim()
                .eq_ignore_ascii_case("Undeliverable Mail"));
    if !recognised || super::has_dsn_recipients(mail) {
        return None;
    }
    let (section, original) = LAYOUT.split(mail)?;
    let response = super::after_marker(section, &["Body of message generated response:"])
        .map(super::squash)
        .unwrap_or_default();
    let mut deliveries = Vec::new();
    for line in section.lines() {
        let Some((_, reason)) = FAILURES
            .iter()
            .find(|(p, _)| line.trim_start().starts_with(p))
        else {
            continue;
        };
        let Some(recipient) = find_address(line) else {
            continue;
        };
        let mut diagnostic = super::squash(&line.replace(&recipient, ""));
        if !response.is_empty() {
            diagnostic = format!("{diagnostic} {response}");
        }
        deliveries.push(Delivery {
            recipient,
            diagnostic,
            reason: *reason,
            ..Delivery::default()
        });
    }
    finish(deliveries, original)
}
