//! qmail ("Hi. This is the qmail-send program") and the providers whose bounces keep
//! its layout (Yahoo!'s "Sorry, we were unable to deliver your message"): each
//! address in angle brackets on a line of its own, the error under it, the returned
//! message after "--- Below this line is a copy of the message.".

use super::{Delivery, Layout, Parsed, SmtpCommand, finish, leading_address, paragraphs};
use crate::report::mail::Mail;

const LAYOUT: Layout = Layout {
    begin: &[],
    end: &[
        "--- Below this line is a copy of the message",
        "--- Enclosed is a copy of the message",
        "--- Enclosed are the original headers of the message",
    ],
};

pub(super) fn parse(mail: &Mail) -> Option<Parsed> {
    let recognised = mail.mentions(&[
        "This is the qmail-send program",
        "Sorry, we were unable to deliver your message to the following address",
    ]) || mail.header("received").contains("invoked for bounce");
    if !recognised || super::has_dsn_recipients(mail) {
        return None;
    }
    let (section, original) = LAYOUT.split(mail)?;
    let mut deliveries = paragraphs(section, true, |l| {
        l.starts_with('<').then(|| leading_address(l)).flatten()
    });
    for d in &mut deliveries {
        d.command = stage(d);
    }
    finish(deliveries, original)
}

/// The SMTP stage qmail names in its own words.
fn stage(d: &Delivery) -> Option<SmtpCommand> {
    let t = d.diagnostic.to_ascii_lowercase();
    if t.contains("my name was rejected") {
        Some(SmtpCommand::Helo)
    } else if t.contains("sender was rejected") || t.contains("[mail_from]") {
        Some(SmtpCommand::Mail)
    } else if t.contains("does not like recipient") || t.contains("[rcpt_to]") {
        Some(SmtpCommand::Rcpt)
    } else if t.contains("failed after i sent the message") || t.contains("failed on data command")
    {
        Some(SmtpCommand::Body)
    } else {
        None
    }
}
