//! An unidentified MTA (Sisimai's "X1"): "---The following addresses had delivery
//! errors---", then `address [reason]` per recipient, about messages it had accepted.

use super::{Layout, Parsed, finish, leading_address, paragraphs};
use crate::report::mail::Mail;

const LAYOUT: Layout = Layout {
    begin: &["---The following addresses had delivery errors---"],
    end: &[],
};

pub(super) fn parse(mail: &Mail) -> Option<Parsed> {
    if super::has_dsn_recipients(mail) || !mail.mentions(LAYOUT.begin) {
        return None;
    }
    let (section, _) = LAYOUT.split(mail)?;
    let section = section
        .split("\n\n")
        .find(|p| !p.trim().is_empty())
        .unwrap_or("");
    let mut deliveries = paragraphs(section, true, leading_address);
    for d in &mut deliveries {
        d.diagnostic = d.diagnostic.trim_matches(['[', ']', ' ']).to_string();
    }
    // It reports on messages it accepted.
    super::after_acceptance(&mut deliveries);
    finish(deliveries, None)
}
