//! An unidentified MTA (Sisimai's "X3"): "This is an automatically generated Delivery
//! Status Notification.", the recipients as `* address` lines, then "Technical
//! details:". A delivery "aborted after" some time expired.

use super::{Layout, Parsed, finish, leading_address, paragraphs};
use crate::report::mail::Mail;
use maily_engine::reply::Reason;

const LAYOUT: Layout = Layout {
    begin: &[
        "Delivery to the following recipients",
        "Delevery to the following recipients",
    ],
    end: &["Reporting-MTA:", "Original-Recipient:", "Final-Recipient:"],
};

pub(super) fn parse(mail: &Mail) -> Option<Parsed> {
    if super::has_dsn_recipients(mail)
        || !mail.mentions(&["This is an automatically generated Delivery Status Notification"])
    {
        return None;
    }
    let aborted = mail.mentions(&["recipients was aborted after"]);
    let (section, original) = LAYOUT.split(mail)?;
    let mut deliveries = paragraphs(section, false, |l| {
        l.trim_start()
            .starts_with("* ")
            .then(|| leading_address(l))
            .flatten()
    });
    for d in &mut deliveries {
        d.diagnostic = super::squash(
            &d.diagnostic
                .replace("Technical details:", "")
                .replace('=', ""),
        );
        if aborted {
            d.reason = Some(Reason::Expired);
        }
    }
    finish(deliveries, original)
}
