//! Google Groups: a post to a group that does not exist or does not let the sender
//! post comes back from Gmail's mailer-daemon with the group in X-Failed-Recipients
//! and an explanation in the sender's language. The group refused the sender.

use super::{Delivery, Parsed, finish, is_address};
use crate::report::mail::Mail;
use maily_engine::reply::Reason;

pub(super) fn parse(mail: &Mail) -> Option<Parsed> {
    let failed = mail.header("x-failed-recipients");
    let from = mail.header("from").to_ascii_lowercase();
    if failed.is_empty()
        || !(from.contains("@googlemail.com") || from.contains("@google.com"))
        || !mail.mentions(&["Google Groups", "groups.google.com"])
    {
        return None;
    }
    let text = super::before_marker(&mail.text, &["----- Original message -----"]);
    let diagnostic: String = super::squash(text).chars().take(500).collect();
    let deliveries = failed
        .split(',')
        .map(|a| a.trim().trim_matches(['<', '>']))
        .filter(|a| is_address(a))
        .map(|a| Delivery {
            recipient: a.to_string(),
            diagnostic: diagnostic.clone(),
            reason: Some(Reason::Rejected),
            ..Delivery::default()
        })
        .collect();
    finish(deliveries, None)
}
