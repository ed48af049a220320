//! m-FILTER (Digital Arts): the recipient on a line of its own, then
//! "-------server message", the reply, "-------SMTP command" and the command.

use super::{Delivery, Parsed, command_word, finish, leading_address};
use crate::report::mail::Mail;

pub(super) fn parse(mail: &Mail) -> Option<Parsed> {
    if super::has_dsn_recipients(mail) || !mail.mentions(&["-------server message"]) {
        return None;
    }
    let head = super::before_marker(&mail.text, &["-------server message"]);
    let recipient = head
        .lines()
        .rev()
        .find_map(|l| leading_address(l).filter(|a| a.len() == l.trim().len()))?;
    let after = super::after_marker(&mail.text, &["-------server message"])?;
    let message = super::before_marker(after, &["-------SMTP command", "-------original"]);
    let command = super::after_marker(after, &["-------SMTP command"])
        .and_then(|c| c.lines().map(str::trim).find(|l| !l.is_empty()))
        .and_then(|c| command_word(&c.to_ascii_lowercase()));
    let original = super::after_marker(&mail.text, &["-------original message"]);
    finish(
        vec![Delivery {
            recipient,
            diagnostic: super::squash(message),
            command,
            ..Delivery::default()
        }],
        original,
    )
}
