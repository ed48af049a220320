//! What Postfix sends without a usable delivery-status part: its notice to the
//! postmaster about a failed SMTP session it served ("Postfix SMTP server: errors
//! from ..."; the session transcript, `In:` commands and `Out:` replies, each
//! recipient given at `RCPT TO` failing with the last negative reply), and a bounce
//! whose report was lost ("Delivery report unavailable"), which names its recipients
//! only in the returned message.

use super::{Delivery, Parsed, SmtpCommand, command_word, contains_any, find_address, finish};
use crate::report::mail::Mail;

pub(super) fn parse(mail: &Mail) -> Option<Parsed> {
    if super::has_dsn_recipients(mail) {
        return None;
    }
    if mail.mentions(&["--- Delivery report unavailable ---"]) {
        return unavailable(mail);
    }
    if !contains_any(
        mail.header("subject"),
        &["Postfix SMTP server: errors from"],
    ) || !mail.mentions(&["Transcript of session follows"])
    {
        return None;
    }
    let mut recipients: Vec<String> = Vec::new();
    let mut failure: Option<(String, Option<SmtpCommand>)> = None;
    let mut command = None;
    for line in mail.text.lines() {
        let line = line.trim();
        if let Some(cmd) = line.strip_prefix("In:") {
            let cmd = cmd.trim();
            command = command_word(&cmd.to_ascii_lowercase());
            if command == Some(SmtpCommand::Rcpt)
                && let Some(a) = find_address(cmd)
            {
                recipients.push(a);
            }
        } else if let Some(reply) = line.strip_prefix("Out:") {
            let reply = reply.trim();
            if reply.starts_with(['4', '5']) {
                failure = Some((reply.to_string(), command));
            }
        }
    }
    let (reply, command) = failure?;
    let deliveries = recipients
        .into_iter()
        .map(|recipient| Delivery {
            recipient,
            diagnostic: reply.clone(),
            command,
            ..Delivery::default()
        })
        .collect();
    finish(deliveries, None)
}

/// A bounce without its report: the returned message's recipients, no error.
fn unavailable(mail: &Mail) -> Option<Parsed> {
    let to = mail.original_headers(None)?.get("to").map(str::to_string)?;
    let deliveries = to
        .split(',')
        .filter_map(find_address)
        .map(|recipient| Delivery {
            recipient,
            ..Delivery::default()
        })
        .collect();
    finish(deliveries, None)
}
