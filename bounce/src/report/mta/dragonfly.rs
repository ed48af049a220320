//! DragonFly Mail Agent (dma): "There was an error delivering your mail to <address>."
//! followed by the remote server's reply, the returned headers after "Message headers
//! follow.".

use super::{Layout, Parsed, contains_any, find_address, finish, paragraphs};
use crate::report::mail::Mail;

const LAYOUT: Layout = Layout {
    begin: &["This is the DragonFly Mail Agent"],
    end: &["Message headers follow", "Original message follows"],
};

pub(super) fn parse(mail: &Mail) -> Option<Parsed> {
    if !mail.mentions(&["This is the DragonFly Mail Agent"]) {
        return None;
    }
    let (section, original) = LAYOUT.split(mail)?;
    let deliveries = paragraphs(section, false, |l| {
        contains_any(
            l,
            &[
                "error delivering your mail to",
                "could not deliver your mail to",
            ],
        )
        .then(|| find_address(l))
        .flatten()
    });
    finish(deliveries, original)
}
