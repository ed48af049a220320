//! Verizon Wireless's multimedia message centre (vzwpix.com, vtext.com): "Message could
//! not be delivered to mobile." with an `Error:` line, the recipient only in the
//! returned message's To field.

use super::{Delivery, Parsed, contains_any, find_address, finish};
use crate::report::mail::{Mail, original_field};
use maily_engine::reply::Reason;

pub(super) fn parse(mail: &Mail) -> Option<Parsed> {
    if super::has_dsn_recipients(mail)
        || !mail.mentions(&["Message could not be delivered to mobile"])
    {
        return None;
    }
    let error = mail
        .text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Error:"))
        .map(super::squash)
        .unwrap_or_default();
    let original = super::after_marker(&mail.text, &["Original Message:"]);
    let recipient = original
        .and_then(|o| original_field(o, "to"))
        .and_then(|t| find_address(&t))?;
    let reason = contains_any(&error, &["No valid recipients"]).then_some(Reason::UserUnknown);
    finish(
        vec![Delivery {
            recipient,
            diagnostic: error,
            reason,
            ..Delivery::default()
        }],
        original,
    )
}
