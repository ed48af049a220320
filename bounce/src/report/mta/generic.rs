//! The last resort for a bounce in no known format: a message from a mail system
//! (a daemon or postmaster sender, or a bounce subject) whose text names recipients
//! on lines of their own, each followed by its error. Auto-replies and messages from
//! people never get here as bounces: the sender or the subject must say it is one.

use super::{Layout, Parsed, contains_any, finish, from_daemon, leading_address, paragraphs};
use crate::report::mail::Mail;

/// Where bounces commonly start the returned message.
const LAYOUT: Layout = Layout {
    begin: &[],
    end: &[
        "--- Below this line is a copy of the message",
        "----- Original message -----",
        "--- Original message follows",
        "Original message follows",
        "------- Returned Message --------",
        "Below is a copy of the original message",
        "Included is a copy of the message header",
        "--- The header of the original message",
        "----- Unsent message follows -----",
        "------ This is a copy of the message",
        "Message headers follow",
        "--- Enclosed is a copy of the message",
        "----- Original Message -----",
        "Original message:",
        "The original message headers:",
    ],
};

/// Subjects only bounces carry.
const SUBJECTS: &[&str] = &[
    "undeliverable",
    "undelivered mail",
    "delivery failure",
    "delivery status notification",
    "failure notice",
    "returned mail",
    "mail delivery failed",
    "non-delivery",
    "nondeliverable",
    "delivery failed",
    "could not send message",
    "mail system error",
    "delivery notification",
    "message delivery has failed",
];

pub(super) fn parse(mail: &Mail) -> Option<Parsed> {
    let subject = mail.subject().to_ascii_lowercase();
    let bounce_subject = SUBJECTS.iter().any(|s| subject.contains(s));
    if !(from_daemon(mail) || bounce_subject) || super::has_dsn_recipients(mail) {
        return None;
    }
    if mail
        .header("auto-submitted")
        .to_ascii_lowercase()
        .starts_with("auto-replied")
        && !bounce_subject
    {
        return None;
    }
    let (section, original) = LAYOUT.split(mail)?;
    let own = [mail.header("from"), mail.header("to")].map(|h| {
        super::find_address(h)
            .unwrap_or_default()
            .to_ascii_lowercase()
    });
    let deliveries = paragraphs(section, true, |l| {
        leading_address(l).filter(|a| {
            !own.contains(&a.to_ascii_lowercase())
                && !contains_any(a, &["mailer-daemon", "postmaster@"])
        })
    });
    finish(deliveries, original)
}
