//! An unidentified MTA (Sisimai's "X2"): "Unable to deliver message to the following
//! address(es).", each address in angle brackets on a line of its own, the returned
//! message after "--- Original message follows.". It gives up on a message that stayed
//! queued too long without naming the failure: that is an expiry.

use super::{Layout, Parsed, finish, leading_address, paragraphs};
use crate::report::mail::Mail;
use maily_engine::reply::Reason;

const LAYOUT: Layout = Layout {
    begin: &["Unable to deliver message to the following address"],
    end: &["--- Original message follows"],
};

pub(super) fn parse(mail: &Mail) -> Option<Parsed> {
    if !mail.mentions(&["--- Original message follows"]) || super::has_dsn_recipients(mail) {
        return None;
    }
    let (section, original) = LAYOUT.split(mail)?;
    let mut deliveries = paragraphs(section, true, |l| {
        l.starts_with('<').then(|| leading_address(l)).flatten()
    });
    for d in &mut deliveries {
        if d.diagnostic.contains("in the queue too long") {
            d.reason = Some(Reason::Expired);
        }
    }
    // It reports on messages it accepted.
    super::after_acceptance(&mut deliveries);
    finish(deliveries, original)
}
