//! Microsoft Exchange Server 2003 and earlier: "Your message ... did not reach the
//! following recipient(s):", one `address on date` line per recipient and the error
//! indented under it, with an Exchange status code in parentheses.

use super::{Layout, Parsed, contains_any, finish, leading_address, paragraphs};
use crate::report::mail::Mail;
use maily_engine::reply::Reason;

const LAYOUT: Layout = Layout {
    begin: &[
        "did not reach the following recipient(s):",
        "following recipient(s) could not be reached:",
    ],
    end: &[],
};

/// Exchange's own status codes that say the recipient does not exist.
const UNKNOWN_RECIPIENT: &[&str] = &["(000C05A6)", "(000C0595)", "(000B099C)"];

pub(super) fn parse(mail: &Mail) -> Option<Parsed> {
    if super::has_dsn_recipients(mail) || !mail.mentions(LAYOUT.begin) {
        return None;
    }
    let (section, original) = LAYOUT.split(mail)?;
    let mut deliveries = paragraphs(section, false, |l| {
        leading_address(l).filter(|a| l.trim_start()[a.len()..].trim_start().starts_with("on "))
    });
    for d in &mut deliveries {
        if contains_any(&d.diagnostic, UNKNOWN_RECIPIENT) {
            d.reason = Some(Reason::UserUnknown);
        }
    }
    // Its connectors report on messages Exchange had accepted.
    super::after_acceptance(&mut deliveries);
    finish(deliveries, original)
}
