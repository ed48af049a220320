//! au by KDDI (EZweb): "Mail System Error - Returned Mail" from Postmaster@ezweb.ne.jp,
//! a Japanese explanation with an English summary, then the recipients. The summary
//! decides: a disabled account, a message that could not be delivered in time, or a
//! recipient the filter refused.

use super::{Delivery, Parsed, contains_any, find_address, finish, leading_address};
use crate::report::mail::Mail;
use maily_engine::reply::Reason;

pub(super) fn parse(mail: &Mail) -> Option<Parsed> {
    let from = mail.header("from").to_ascii_lowercase();
    if !from.contains("@ezweb.ne.jp") {
        return None;
    }
    let text = super::before_marker(&mail.text, &["-----------------------------"]);
    let summary: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && l.is_ascii() && l.chars().any(|c| c.is_ascii_lowercase()))
        .filter(|l| leading_address(l).is_none() && !l.starts_with("Recipient:"))
        .collect();
    let summary = super::squash(&summary.join(" "));
    let reason = if contains_any(&summary, &["account is disabled"]) {
        Some(Reason::Suspend)
    } else if contains_any(&summary, &["not delivered within", "is not responding"]) {
        Some(Reason::Expired)
    } else if !summary.contains("<<<") && contains_any(&summary, &["was rejected by"]) {
        Some(Reason::Filtered)
    } else {
        None
    };
    if let Some(mut parsed) = super::rfc3464::parse(mail) {
        for d in &mut parsed.deliveries {
            d.reason = reason.or(d.reason);
        }
        return Some(parsed);
    }
    let mut deliveries: Vec<Delivery> = Vec::new();
    for line in text.lines() {
        if deliveries.len() >= crate::report::MAX_RECIPIENTS {
            break;
        }
        let address = leading_address(line).or_else(|| {
            line.trim_start()
                .strip_prefix("Recipient:")
                .and_then(find_address)
        });
        if let Some(a) = address
            && !deliveries.iter().any(|d| d.recipient == a)
        {
            deliveries.push(Delivery {
                recipient: a,
                diagnostic: summary.clone(),
                reason,
                ..Delivery::default()
            });
        }
    }
    finish(deliveries, None)
}
