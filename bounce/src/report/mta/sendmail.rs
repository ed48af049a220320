//! Sendmail before it wrote RFC 3464 reports (V5 and its relatives): the SMTP session
//! transcript ("----- Transcript of session follows -----") with `>>>` commands,
//! `<<<` replies and one `NNN <address>... text` line per failed recipient, then the
//! returned message ("----- Unsent message follows -----").

use super::{
    Delivery, Layout, Parsed, SmtpCommand, command_word, find_address, finish, is_address,
};
use crate::report::mail::Mail;

const LAYOUT: Layout = Layout {
    begin: &["----- Transcript of session follows -----"],
    end: &[
        "----- Unsent message follows -----",
        "----- Original message follows -----",
        "----- Message header follows -----",
    ],
};

pub(super) fn parse(mail: &Mail) -> Option<Parsed> {
    if super::has_dsn_recipients(mail)
        || !mail.mentions(&["----- Transcript of session follows -----"])
    {
        return None;
    }
    let (section, original) = LAYOUT.split(mail)?;
    let mut deliveries: Vec<Delivery> = Vec::new();
    // What the session said since the last recipient line.
    let mut command: Option<SmtpCommand> = None;
    let mut replies: Vec<String> = Vec::new();
    let mut host: Option<String> = None;
    // Failures of a whole domain ("550 example.org (smtp)... 550 Host unknown").
    let mut domain_errors: Vec<(String, String)> = Vec::new();
    for line in section.lines() {
        if deliveries.len() >= crate::report::MAX_RECIPIENTS {
            break;
        }
        let line = line.trim();
        if let Some(rest) = line.strip_prefix(">>>") {
            command = command_word(&rest.trim().to_ascii_lowercase());
            continue;
        }
        if let Some(rest) = line.strip_prefix("<<<") {
            replies.push(rest.trim().to_string());
            continue;
        }
        if let Some(rest) = line
            .strip_prefix("While talking to ")
            .or_else(|| line.strip_prefix("... while talking to "))
        {
            host = Some(rest.trim_end_matches([':', '.']).to_ascii_lowercase());
            continue;
        }
        let Some((code, text)) = coded_line(line) else {
            continue;
        };
        let Some((subject, said)) = text.split_once("...") else {
            continue;
        };
        let subject = subject.trim();
        let address = subject.trim_matches(['<', '>']);
        if is_address(address) {
            let mut diagnostic = replies.join(" ");
            if !diagnostic.is_empty() {
                diagnostic.push(' ');
            }
            diagnostic.push_str(&format!("{code} {}", said.trim()));
            match deliveries
                .iter_mut()
                .find(|d| d.recipient.eq_ignore_ascii_case(address))
            {
                Some(d) => {
                    d.diagnostic.push(' ');
                    d.diagnostic.push_str(&diagnostic);
                }
                None => deliveries.push(Delivery {
                    recipient: address.to_string(),
                    reply_code: replies
                        .first()
                        .and_then(|r| coded_line(r))
                        .map(|(c, _)| c)
                        .or(Some(code)),
                    diagnostic,
                    command,
                    remote_host: host.clone(),
                    ..Delivery::default()
                }),
            }
            replies.clear();
            command = None;
        } else if let Some(domain) = subject.split_whitespace().next() {
            domain_errors.push((
                domain.to_ascii_lowercase(),
                format!("{code} {}", said.trim()),
            ));
        }
    }
    if deliveries.is_empty() {
        // Only whole domains failed: the recipients are the returned message's.
        let to = original.and_then(|o| crate::report::mail::original_field(o, "to"));
        for (domain, text) in domain_errors {
            if let Some(address) = to
                .as_deref()
                .and_then(find_address)
                .filter(|a| a.to_ascii_lowercase().ends_with(&domain))
            {
                deliveries.push(Delivery {
                    recipient: address,
                    diagnostic: text,
                    ..Delivery::default()
                });
            }
        }
    }
    finish(deliveries, original)
}

/// `550 text` -> (550, "text").
fn coded_line(line: &str) -> Option<(u16, &str)> {
    let code: u16 = line
        .get(..3)?
        .parse()
        .ok()
        .filter(|c| (200..600).contains(c))?;
    let rest = line.get(3..)?;
    rest.starts_with([' ', '-'])
        .then(|| (code, rest[1..].trim()))
}
