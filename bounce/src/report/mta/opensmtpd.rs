//! OpenSMTPD: "This is the MAILER-DAEMON, please DO NOT REPLY to this e-mail." then
//! one line per recipient, `address: error`, and "Below is a copy of the original
//! message:".

use super::{Layout, Parsed, finish, leading_address, paragraphs};
use crate::report::mail::Mail;

const LAYOUT: Layout = Layout {
    begin: &["list of recipients:", "following recipients:"],
    end: &[
        "Below is a copy of the original message",
        "Below is a copy of the message",
    ],
};

pub(super) fn parse(mail: &Mail) -> Option<Parsed> {
    if !mail.mentions(&["This is the MAILER-DAEMON, please DO NOT REPLY"]) {
        return None;
    }
    let (section, original) = LAYOUT.split(mail)?;
    // Each recipient's error is the rest of its line; the notes after it are OpenSMTPD's.
    let section: String = section
        .lines()
        .filter(|l| !l.starts_with([' ', '\t']))
        .collect::<Vec<_>>()
        .join("\n");
    let deliveries = paragraphs(&section, true, leading_address);
    finish(deliveries, original)
}
