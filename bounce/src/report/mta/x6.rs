//! An unidentified MTA (Sisimai's "X6"): "We had trouble delivering your message.
//! Full details follow:", then one sentence per failure naming the recipient and
//! quoting the server's reply in brackets.

use super::{Delivery, Parsed, SmtpCommand, contains_any, find_address, finish};
use crate::report::mail::Mail;

pub(super) fn parse(mail: &Mail) -> Option<Parsed> {
    if super::has_dsn_recipients(mail)
        || !mail.mentions(&["We had trouble delivering your message"])
    {
        return None;
    }
    let section = super::before_marker(&mail.text, &["The attachment contains the original"]);
    let mut deliveries: Vec<Delivery> = Vec::new();
    for line in section.lines() {
        if !contains_any(
            line,
            &[
                "returned permanent errors",
                "rejected recipient",
                "returned temporary errors",
            ],
        ) {
            continue;
        }
        let Some(recipient) = find_address(line) else {
            continue;
        };
        let command = if contains_any(line, &["RCPT command"]) {
            Some(SmtpCommand::Rcpt)
        } else if contains_any(line, &["(DATA)"]) {
            Some(SmtpCommand::Data)
        } else {
            None
        };
        let said = match (line.rfind('['), line.rfind(']')) {
            (Some(l), Some(r)) if l < r => &line[l + 1..r],
            _ => line,
        };
        deliveries.push(Delivery {
            recipient,
            diagnostic: super::squash(said),
            command,
            ..Delivery::default()
        });
    }
    finish(deliveries, None)
}
