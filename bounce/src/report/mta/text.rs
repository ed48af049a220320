//! What the formats share: finding codes, addresses and commands in free text, the
//! per-recipient paragraph reader of plain-text bounces, and the last touches every
//! parse result gets ([`finish`]).

use super::{Delivery, Parsed, SmtpCommand};
use crate::report::mail::{Mail, find_ignore_case};
use maily_engine::reply::EnhancedStatus;

/// Every RFC 3463 status code written in `text`, in order, without repeats.
pub(crate) fn find_statuses(text: &str) -> Vec<EnhancedStatus> {
    let mut out: Vec<EnhancedStatus> = Vec::new();
    let mut rest = text;
    while let Some(s) = find_status(rest) {
        if !out.contains(&s) {
            out.push(s);
        }
        let token = s.to_string();
        match rest.find(&token) {
            Some(i) => rest = &rest[i + token.len()..],
            None => break,
        }
        if out.len() >= 8 {
            break;
        }
    }
    out
}

/// The first RFC 3463 status code written in `text` (`5.1.1`, `#5.1.1`, `(5.7.1)`),
/// skipping dotted numbers that are part of something longer (IP addresses, versions).
pub(crate) fn find_status(text: &str) -> Option<EnhancedStatus> {
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if matches!(b[i], b'2' | b'4' | b'5')
            && b.get(i + 1) == Some(&b'.')
            && (i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'.'))
        {
            let end = i + b[i..]
                .iter()
                .position(|c| !(c.is_ascii_digit() || *c == b'.'))
                .unwrap_or(b.len() - i);
            let mut token = &text[i..end];
            // A sentence may end right after the code.
            if let Some(t) = token.strip_suffix('.') {
                token = t;
            }
            let next_is_word = b
                .get(end)
                .is_some_and(|c| c.is_ascii_alphabetic() || *c == b'-');
            if !next_is_word && let Some(s) = EnhancedStatus::parse(token) {
                return Some(s);
            }
            i = end.max(i + 1);
            continue;
        }
        i += 1;
    }
    None
}

/// The first SMTP reply code (`4xx` or `5xx`) written as one in `text`: three digits on
/// their own, followed by a space, a hyphen or the end, not part of a number, a date or
/// an address.
pub(crate) fn find_reply_code(text: &str) -> Option<u16> {
    let b = text.as_bytes();
    for i in 0..b.len().saturating_sub(2) {
        if !matches!(b[i], b'4' | b'5') || !b[i + 1].is_ascii_digit() || !b[i + 2].is_ascii_digit()
        {
            continue;
        }
        let before_ok = i == 0
            || matches!(
                b[i - 1],
                b' ' | b'\t' | b'\n' | b'(' | b'"' | b':' | b'[' | b'\'' | b'=' | b'>'
            );
        let after_ok = matches!(
            b.get(i + 3),
            None | Some(b' ' | b'-' | b'\n' | b'\t' | b')' | b'"' | b'.' | b',')
        ) && !(b.get(i + 3) == Some(&b'.')
            && b.get(i + 4).is_some_and(|c| c.is_ascii_digit()));
        if before_ok && after_ok {
            let code: u16 = text[i..i + 3].parse().ok()?;
            if (b[i + 1] - b'0') <= 5 {
                return Some(code);
            }
        }
    }
    None
}

/// The first email address in `text`: in angle brackets if there are any, else the
/// first word with an `@`, without quotes, brackets, `mailto:` or a trailing dot.
pub(crate) fn find_address(text: &str) -> Option<String> {
    let mut rest = text;
    while let Some(l) = rest.find('<') {
        let after = &rest[l + 1..];
        let Some(r) = after.find('>') else { break };
        let inner = after[..r].trim();
        let inner = inner.strip_prefix("mailto:").unwrap_or(inner);
        if is_address(inner) {
            return Some(inner.to_string());
        }
        rest = &after[r + 1..];
    }
    text.split(|c: char| {
        c.is_whitespace()
            || matches!(
                c,
                '<' | '>' | '(' | ')' | ',' | ';' | '"' | '\'' | '[' | ']'
            )
    })
    .map(|w| w.strip_prefix("mailto:").unwrap_or(w))
    .map(|w| w.trim_end_matches(['.', ':']))
    .find(|w| is_address(w))
    .map(str::to_string)
}

/// Whether `s` looks like an email address: one `@` with something on both sides, no
/// white space, a dot or a bracket in the domain.
pub(crate) fn is_address(s: &str) -> bool {
    let Some((local, domain)) = s.rsplit_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.is_empty()
        && s.len() <= 320
        && !s.contains(char::is_whitespace)
        && !local.contains(['<', '>', '(', ')'])
        && !domain.contains(['@', '<', '>', '(', ')', ',', ';'])
        && (domain.contains('.') || domain.starts_with('['))
}

/// The SMTP command named in an error text, as MTAs write it: "in reply to RCPT TO
/// command", "after RCPT TO", ">>> DATA", "SMTP error from remote mail server after
/// end of data".
pub(crate) fn find_command(text: &str) -> Option<SmtpCommand> {
    let lower = text.to_ascii_lowercase();
    const LEADS: &[&str] = &[
        "in reply to ",
        "did not like our ",
        "progress was ",
        "after ",
        ">>> ",
        "while sending ",
        "in response to ",
        "during ",
    ];
    for lead in LEADS {
        for (i, _) in lower.match_indices(lead) {
            if let Some(c) = command_word(&lower[i + lead.len()..]) {
                return Some(c);
            }
        }
    }
    if lower.contains("end of data") || lower.contains("end of message") {
        return Some(SmtpCommand::Body);
    }
    // Yahoo!'s bracketed stage names.
    for (mark, command) in [
        ("[rcpt_to]", SmtpCommand::Rcpt),
        ("[mail_from]", SmtpCommand::Mail),
        ("[data]", SmtpCommand::Data),
    ] {
        if lower.contains(mark) {
            return Some(command);
        }
    }
    None
}

/// The command `s` (lower case) starts with, as a whole word.
pub(crate) fn command_word(s: &str) -> Option<SmtpCommand> {
    let s = s.trim_start();
    const TABLE: &[(&str, SmtpCommand)] = &[
        ("rcpt", SmtpCommand::Rcpt),
        ("mail", SmtpCommand::Mail),
        ("end of data", SmtpCommand::Body),
        ("final data", SmtpCommand::Body),
        ("data", SmtpCommand::Data),
        ("ehlo", SmtpCommand::Ehlo),
        ("helo", SmtpCommand::Helo),
        ("starttls", SmtpCommand::StartTls),
        ("auth", SmtpCommand::Auth),
        ("initial connection", SmtpCommand::Connect),
        ("connect", SmtpCommand::Connect),
        ("greeting", SmtpCommand::Connect),
        ("banner", SmtpCommand::Connect),
    ];
    TABLE
        .iter()
        .find(|(w, _)| {
            s.starts_with(w)
                && !s[w.len()..]
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphanumeric())
        })
        .map(|(_, c)| *c)
}

/// Whether the message carries a delivery-status part naming at least one recipient
/// (text formats defer to it then, unless they read more from the text).
pub(crate) fn has_dsn_recipients(mail: &Mail) -> bool {
    mail.status_parts
        .iter()
        .any(|p| contains_any(p, &["Final-Recipient:", "Original-Recipient:"]))
}

/// Marks deliveries whose SMTP stage the report does not name as refused after the
/// message was accepted: what content gateways and final destinations report.
pub(crate) fn after_acceptance(deliveries: &mut [Delivery]) {
    for d in deliveries {
        d.command.get_or_insert(SmtpCommand::Data);
    }
}

/// Whether the message came from a mail system rather than a person: its sender is a
/// mailer daemon, a postmaster or a mail delivery system.
pub(crate) fn from_daemon(mail: &Mail) -> bool {
    let from = mail.header("from").to_ascii_lowercase();
    [
        "mailer-daemon",
        "postmaster",
        "mail delivery",
        "mail-daemon",
        "maildelivery",
        "mailerdaemon",
    ]
    .iter()
    .any(|w| from.contains(w))
}

/// `text` with runs of white space collapsed to one space, trimmed.
pub(crate) fn squash(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The text from `marker` (ASCII, any case) to the end, if `marker` occurs.
pub(crate) fn after_marker<'a>(text: &'a str, markers: &[&str]) -> Option<&'a str> {
    markers
        .iter()
        .filter_map(|m| find_ignore_case(text, m).map(|i| (i, m.len())))
        .min_by_key(|(i, _)| *i)
        .map(|(i, n)| {
            let rest = &text[i + n..];
            // Skip the rest of the marker's line.
            match rest.find('\n') {
                Some(nl) => &rest[nl + 1..],
                None => "",
            }
        })
}

/// The text before the first of `markers` (any case), or all of it.
pub(crate) fn before_marker<'a>(text: &'a str, markers: &[&str]) -> &'a str {
    markers
        .iter()
        .filter_map(|m| find_ignore_case(text, m))
        .min()
        .map_or(text, |i| &text[..i])
}

/// The host name or address in a `host NAME[IP] said:` or `remote host NAME said:`
/// clause of `text`.
pub(crate) fn find_remote_host(text: &str) -> Option<String> {
    let lower = text.to_ascii_lowercase();
    for marker in ["remote host ", "host ", "connect to ", "server "] {
        let mut from = 0;
        while let Some(i) = lower[from..].find(marker) {
            let at = from + i;
            from = at + marker.len();
            if at > 0 && lower.as_bytes()[at - 1].is_ascii_alphanumeric() {
                continue;
            }
            let word: String = text[from..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'))
                .collect();
            let word = word.trim_end_matches(['.', ':']);
            if word.contains('.')
                && word
                    .chars()
                    .any(|c| c.is_ascii_alphabetic() || c.is_ascii_digit())
                && word.len() > 3
            {
                return Some(word.to_ascii_lowercase());
            }
        }
    }
    None
}

/// Where a plain-text bounce keeps its per-recipient paragraphs: after the first
/// `begin` marker (from the start when there are none) and before the first `end`
/// marker after it. Markers are compared without regard to ASCII case.
pub(crate) struct Layout {
    pub begin: &'static [&'static str],
    pub end: &'static [&'static str],
}

impl Layout {
    /// The per-recipient section of the mail's text, and what follows the end
    /// marker's line (the returned message, when the end marker introduces it).
    /// `None` when there are begin markers and none occurs.
    pub fn split<'a>(&self, mail: &'a Mail) -> Option<(&'a str, Option<&'a str>)> {
        let text = mail.text.as_str();
        let line_after = |at: usize| text[at..].find('\n').map_or(text.len(), |i| at + i + 1);
        let start = if self.begin.is_empty() {
            0
        } else {
            let (at, len) = self
                .begin
                .iter()
                .filter_map(|m| mail.find(m, 0).map(|i| (i, m.len())))
                .min_by_key(|(i, _)| *i)?;
            line_after(at + len)
        };
        let end = self.end.iter().filter_map(|m| mail.find(m, start)).min();
        let section = &text[start..end.unwrap_or(text.len())];
        let rest = end.map(|e| &text[line_after(e)..]);
        Some((section, rest))
    }
}

/// Reads per-recipient paragraphs: a line for which `recipient_of` gives an address
/// starts a recipient, and the lines after it (with the rest of that line when
/// `keep_line`), up to the next such line, are its error text. A recipient named twice
/// keeps one entry.
pub(crate) fn paragraphs(
    section: &str,
    keep_line: bool,
    recipient_of: impl Fn(&str) -> Option<String>,
) -> Vec<Delivery> {
    let mut out: Vec<Delivery> = Vec::new();
    // Recipients seen, lower case, and where they are in `out`.
    let mut seen: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    let mut current: Option<usize> = None;
    for line in section.lines() {
        if let Some(address) = recipient_of(line) {
            let rest = squash(&line.replacen(&address, " ", 1))
                .trim_matches(|c: char| {
                    c == '<' || c == '>' || c == ':' || c == '"' || c.is_whitespace()
                })
                .to_string();
            let index = match seen.get(&address.to_ascii_lowercase()) {
                Some(&i) => i,
                None => {
                    if out.len() >= crate::report::MAX_RECIPIENTS {
                        break;
                    }
                    seen.insert(address.to_ascii_lowercase(), out.len());
                    out.push(Delivery {
                        recipient: address,
                        ..Delivery::default()
                    });
                    out.len() - 1
                }
            };
            if keep_line {
                append(&mut out[index].diagnostic, &rest);
            }
            current = Some(index);
            continue;
        }
        if let Some(i) = current {
            append(&mut out[i].diagnostic, line.trim());
        }
    }
    for d in &mut out {
        d.diagnostic = squash(&d.diagnostic);
    }
    out
}

fn append(text: &mut String, more: &str) {
    if more.is_empty() || text.len() > crate::report::MAX_DIAGNOSTIC_LEN * 4 {
        return;
    }
    if !text.is_empty() {
        text.push(' ');
    }
    text.push_str(more);
}

/// The address a line starts with (after white space, optionally in angle brackets or
/// quotes), when it is followed by nothing, a colon, a bracket or white space.
pub(crate) fn leading_address(line: &str) -> Option<String> {
    let t = line.trim_start();
    let t = t.strip_prefix("* ").unwrap_or(t);
    let (open, t) = match t.chars().next()? {
        '<' => (Some('>'), &t[1..]),
        '"' => (Some('"'), &t[1..]),
        _ => (None, t),
    };
    let end = match open {
        Some(close) => t.find(close)?,
        None => t
            .find(|c: char| c.is_whitespace() || matches!(c, ':' | '<' | '[' | '(' | ','))
            .unwrap_or(t.len()),
    };
    let candidate = t[..end].trim_end_matches('.');
    let after = &t[end + usize::from(open.is_some())..];
    let after_ok = after.is_empty()
        || after.starts_with(|c: char| {
            c.is_whitespace() || matches!(c, ':' | '[' | '(' | ',' | '<' | '.')
        });
    (after_ok && is_address(candidate)).then(|| candidate.to_string())
}

/// Fills what the error texts of `deliveries` say (reply code, status, command,
/// remote host) and wraps them up as a parse result.
pub(crate) fn finish(mut deliveries: Vec<Delivery>, original: Option<&str>) -> Option<Parsed> {
    if deliveries.is_empty() {
        return None;
    }
    deliveries.truncate(crate::report::MAX_RECIPIENTS);
    for d in &mut deliveries {
        if d.reply_code.is_none() {
            d.reply_code = find_reply_code(&d.diagnostic);
        }
        if d.status.is_none() {
            d.status = find_status(&d.diagnostic);
        }
        if d.command.is_none() {
            d.command = find_command(&d.diagnostic);
        }
        if d.remote_host.is_none() {
            d.remote_host = find_remote_host(&d.diagnostic);
        }
    }
    Some(Parsed {
        deliveries,
        original: original.map(str::to_string),
    })
}

/// Whether the text contains any of `phrases` (ASCII, any case).
pub(crate) fn contains_any(text: &str, phrases: &[&str]) -> bool {
    phrases.iter().any(|p| find_ignore_case(text, p).is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_status_codes_but_not_addresses() {
        let s = |t: &str| find_status(t).map(|s| s.to_string());
        assert_eq!(
            s("remote host 192.0.2.1 said: 550 5.1.1 gone"),
            Some("5.1.1".into())
        );
        assert_eq!(s("(#5.7.1)"), Some("5.7.1".into()));
        assert_eq!(s("Status: 4.4.7."), Some("4.4.7".into()));
        assert_eq!(s("version 2.0.2.1 and 5.5"), None);
        assert_eq!(s("[192.0.2.25]"), None);
    }

    #[test]
    fn finds_reply_codes() {
        assert_eq!(find_reply_code("said: 550 5.1.1 gone"), Some(550));
        assert_eq!(find_reply_code("550-5.7.1 spam"), Some(550));
        assert_eq!(find_reply_code("port 25000 and 192.0.2.550"), None);
        assert_eq!(find_reply_code("id 4512345"), None);
    }

    #[test]
    fn finds_addresses_and_commands() {
        assert_eq!(
            find_address("<a@b.example>: x").as_deref(),
            Some("a@b.example")
        );
        assert_eq!(
            find_address("to mailto:a@b.example.").as_deref(),
            Some("a@b.example")
        );
        assert_eq!(find_address("no address"), None);
        assert_eq!(
            find_command("(in reply to RCPT TO command)"),
            Some(SmtpCommand::Rcpt)
        );
        assert_eq!(
            find_command("SMTP error from remote mail server after end of data:"),
            Some(SmtpCommand::Body)
        );
        assert_eq!(
            find_command(">>> MAIL From:<a@b.c>"),
            Some(SmtpCommand::Mail)
        );
        assert_eq!(
            find_remote_host("host mx.example.net[192.0.2.1] said: 550").as_deref(),
            Some("mx.example.net")
        );
    }
}
