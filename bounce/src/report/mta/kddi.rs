//! au one net (KDDI, dion.ne.jp): "Could not be delivered to: <address>" and the
//! reason under it ("As their mailbox is full.").

use super::{Layout, Parsed, contains_any, find_address, finish, paragraphs};
use crate::report::mail::Mail;

const LAYOUT: Layout = Layout {
    begin: &[],
    end: &["----- Original message", "--- Original message"],
};

pub(super) fn parse(mail: &Mail) -> Option<Parsed> {
    if super::has_dsn_recipients(mail) || !mail.mentions(&["Could not be delivered to:"]) {
        return None;
    }
    let (section, original) = LAYOUT.split(mail)?;
    let deliveries = paragraphs(section, false, |l| {
        contains_any(l, &["Could not be delivered to:"])
            .then(|| find_address(l))
            .flatten()
    });
    finish(deliveries, original)
}
