//! Delivery status notifications (RFC 3464), read leniently: the fields of a
//! `message/delivery-status` part, or the same fields written into the text of a
//! message that lost its MIME structure.
//!
//! Unlike the strict parser behind [`crate::report::parse_report`], nothing here is
//! required: a recipient block without Action is taken as failed, a missing Status is
//! read from the Diagnostic-Code, and a missing Diagnostic-Code from the human text
//! about the recipient.

use super::{
    Delivery, Parsed, SmtpCommand, find_command, find_reply_code, find_status, is_address,
};
use crate::report::dsn::{parse_diagnostic, typed_name};
use crate::report::mail::Mail;
use crate::report::{Action, bare_address, field_blocks};

/// Fields of a per-recipient block; a repeated one starts the next recipient.
const PER_RECIPIENT: &[&str] = &[
    "final-recipient",
    "original-recipient",
    "x-actual-recipient",
    "action",
    "status",
    "remote-mta",
    "diagnostic-code",
    "last-attempt-date",
    "will-retry-until",
    "final-log-id",
    "x-remote-host",
];

pub(super) fn parse(mail: &Mail) -> Option<Parsed> {
    let mut deliveries = Vec::new();
    if mail.status_parts.is_empty() {
        // Fields written as text (a forwarded or flattened report).
        let start = ["Final-Recipient:", "Original-Recipient:"]
            .iter()
            .filter_map(|m| mail.find(m, 0))
            .min()?;
        let head = mail.text[..start].rfind("\n\n").map_or(0, |i| i + 2);
        deliveries.extend(read_fields(&mail.text[head..]));
    } else {
        for part in &mail.status_parts {
            deliveries.extend(read_fields(part));
        }
    }
    if deliveries.is_empty() {
        return None;
    }
    let human = human_text(mail);
    let single = deliveries.len() == 1;
    for d in &mut deliveries {
        let about = text_about(human, &d.recipient);
        if d.diagnostic.is_empty()
            && let Some(text) = &about
        {
            d.diagnostic = text.clone();
        }
        if let Some(comment) = d.status_comment.take()
            && !comment.is_empty()
            && !d
                .diagnostic
                .to_ascii_lowercase()
                .contains(&comment.to_ascii_lowercase())
        {
            d.diagnostic = super::squash(&format!("{} ({comment})", d.diagnostic));
        }
        fill_from_diagnostic(d);
        // The human text often names the command the reply answered ("in reply to
        // RCPT TO command", ">>> RCPT To:<...>") when the Diagnostic-Code does not.
        if d.command.is_none() {
            d.command = command_in(human, about.as_deref(), single);
        }
    }
    Some(Parsed {
        deliveries,
        original: None,
    })
}

/// Most of the human text searched for each recipient's paragraph; real ones are a
/// few kilobytes, and each recipient is a search.
const MAX_HUMAN_TEXT: usize = 64 * 1024;

/// The text before the delivery-status fields: what the reporting MTA wrote for people.
pub(super) fn human_text(mail: &Mail) -> &str {
    let end = ["Reporting-MTA:", "Final-Recipient:", "Original-Recipient:"]
        .iter()
        .filter_map(|m| mail.find(m, 0))
        .min()
        .unwrap_or(mail.text.len());
    crate::report::mail::cut(&mail.text[..end], MAX_HUMAN_TEXT)
}

/// The command a failure answered, from the human text: the paragraph about the
/// recipient, or the whole text when the report is about one recipient.
fn command_in(human: &str, about: Option<&str>, single: bool) -> Option<SmtpCommand> {
    about
        .and_then(find_command)
        .or_else(|| single.then(|| find_command(human)).flatten())
}

/// Reads every per-recipient block of a delivery-status text.
pub(super) fn read_fields(text: &str) -> Vec<Delivery> {
    let mut out: Vec<Delivery> = Vec::new();
    for block in field_blocks(text)
        .into_iter()
        .take(crate::report::MAX_RECIPIENTS)
    {
        let mut current: Option<Delivery> = None;
        let mut seen: Vec<String> = Vec::new();
        for (name, value) in block.iter() {
            let lname = name.to_ascii_lowercase();
            if !PER_RECIPIENT.contains(&lname.as_str()) {
                continue;
            }
            if seen.contains(&lname) {
                if let Some(d) = current.take() {
                    out.push(d);
                }
                seen.clear();
            }
            seen.push(lname.clone());
            let d = current.get_or_insert_with(Delivery::default);
            apply(d, &lname, value);
        }
        if let Some(d) = current {
            out.push(d);
        }
    }
    out.retain(|d| is_address(&d.recipient));
    out.truncate(crate::report::MAX_RECIPIENTS);
    out
}

fn apply(d: &mut Delivery, name: &str, value: &str) {
    match name {
        "final-recipient" | "original-recipient" | "x-actual-recipient" => {
            let a = bare_address(value).trim().trim_matches(['<', '>', '"']);
            // Final-Recipient wins over the others; the others fill a gap.
            if is_address(a) && (name == "final-recipient" || d.recipient.is_empty()) {
                d.recipient = a.to_string();
            }
        }
        "action" => d.action = Action::parse(value.trim()),
        "status" => {
            d.status = find_status(value);
            // "5.2.1 (mailbox disabled, not accepting messages)": the comment is
            // wording too.
            if let (Some(l), Some(r)) = (value.find('('), value.rfind(')'))
                && l < r
            {
                d.status_comment = Some(value[l + 1..r].trim().to_string());
            }
        }
        "remote-mta" | "x-remote-host" => {
            let host = typed_name(value);
            if !host.is_empty() {
                d.remote_host = Some(host.trim_matches(['[', ']']).to_ascii_lowercase());
            }
        }
        "diagnostic-code" => {
            let diag = parse_diagnostic(value);
            d.diagnostic_type = diag.kind;
            d.diagnostic = diag.text;
            if let Some(r) = diag.reply {
                d.reply_code = Some(r.code);
            }
        }
        _ => {}
    }
}

/// Fills the reply code, status and command from the diagnostic text when the fields
/// did not give them.
pub(super) fn fill_from_diagnostic(d: &mut Delivery) {
    if d.reply_code.is_none() {
        d.reply_code = find_reply_code(&d.diagnostic);
    }
    if d.status.is_none() {
        d.status = find_status(&d.diagnostic);
    }
    if d.command.is_none() {
        d.command = find_command(&d.diagnostic);
    }
}

/// The lines of `text` about `recipient`: from the line naming it to the next blank
/// line, without the address itself, squashed.
pub(super) fn text_about(text: &str, recipient: &str) -> Option<String> {
    if recipient.is_empty() {
        return None;
    }
    let at = crate::report::mail::find_ignore_case(text, recipient)?;
    let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let rest = &text[line_start..];
    let end = rest.find("\n\n").unwrap_or(rest.len());
    let para = super::squash(&rest[..end]);
    (!para.is_empty()).then_some(para)
}
