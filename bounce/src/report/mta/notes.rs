//! Lotus Notes and Domino: "------- Failure Reasons --------" with the reason above
//! the recipient, or "Your message ... was not delivered to: address because: reason".

use super::{Delivery, Parsed, contains_any, finish, leading_address};
use crate::report::mail::Mail;
use maily_engine::reply::Reason;

pub(super) fn parse(mail: &Mail) -> Option<Parsed> {
    if super::has_dsn_recipients(mail) {
        return None;
    }
    let (recipients, reason_text, original) = if mail.mentions(&["------- Failure Reasons"]) {
        let section = super::after_marker(&mail.text, &["------- Failure Reasons"])?;
        let section_end = super::before_marker(section, &["------- Returned Message"]);
        let original = super::after_marker(section, &["------- Returned Message"]);
        let mut recipients = Vec::new();
        let mut reasons = Vec::new();
        for line in section_end.lines().map(str::trim).filter(|l| !l.is_empty()) {
            match leading_address(line).filter(|a| a.len() == line.len()) {
                Some(a) => recipients.push(a),
                None => reasons.push(line),
            }
        }
        (recipients, reasons.join(" "), original)
    } else if mail.mentions(&["was not delivered to:"]) && mail.mentions(&["because:"]) {
        let after = super::after_marker(&mail.text, &["was not delivered to:"])?;
        let recipients: Vec<String> = super::before_marker(after, &["because:"])
            .lines()
            .filter_map(leading_address)
            .collect();
        let because = super::after_marker(&mail.text, &["because:"]).unwrap_or("");
        (recipients, because.to_string(), None)
    } else {
        return None;
    };
    let reason_text = super::squash(&reason_text);
    // Notes' own wording for an address missing from its directory.
    let reason = contains_any(
        &reason_text,
        &[
            "not listed in public Name & Address Book",
            "not listed in Domino Directory",
        ],
    )
    .then_some(Reason::UserUnknown);
    let deliveries = recipients
        .into_iter()
        .map(|recipient| Delivery {
            recipient,
            diagnostic: reason_text.clone(),
            reason,
            ..Delivery::default()
        })
        .collect();
    finish(deliveries, original)
}
