//! Asynchronous reports: delivery status notifications (bounces, RFC 3464) and abuse
//! complaints (ARF, RFC 5965), read from the raw bytes of an inbound message.
//!
//! Two readers share the MIME layer. [`parse_report`] is strict: standard reports only,
//! and a precise error for anything else. [`analyse`] is the bounce analyser for
//! real-world mail: it also reads the non-standard bounces of the common MTAs and
//! mailbox providers (one module per format under `mta/`), automatic replies, and
//! classifies every recipient in Sisimai's vocabulary with the bounce rules
//! ([`Analysis`], [`Finding`]).
//!
//! [`parse_report`] finds the `multipart/report` (at the top or wrapped in other
//! multiparts or forwarded as `message/rfc822`), reads its machine-readable part and the
//! headers of the returned original message, and says precisely why when the input is
//! not a usable report ([`ReportError`]). Attribution helpers on [`Report`] find what
//! the bounce actor needs: the return paths to try as VERP ([`Report::verp_candidates`]),
//! the returned message's headers ([`Report::original_header`]) and the engine's ids
//! ([`Report::original_message_id`], [`Report::original_campaign`]).
//!
//! Parsing is pure and defensive: it never panics, input is capped at [`MAX_INPUT`],
//! MIME nesting at [`MAX_DEPTH`], parts per multipart at [`MAX_PARTS`], recipients at
//! [`MAX_RECIPIENTS`] and diagnostic texts at [`MAX_DIAGNOSTIC_LEN`], and every step is
//! linear in the input (each nesting level reads its bytes once). The MIME reader is
//! written here rather than taken from a crate (`mail-parser` would do, but brings a
//! large charset and header-decoding surface): reports need only header fields,
//! multipart splitting and two transfer encodings, and owning those few hundred lines
//! keeps the limits above under our control.

mod analysis;
mod arf;
mod dsn;
mod mail;
mod mime;
mod mta;
mod verdict;

pub use analysis::{Analysis, Finding, MessageKind, analyse, analyse_with};
pub use arf::{Arf, FeedbackType};
pub use dsn::{Action, Diagnostic, Dsn, DsnRecipient};
pub use mime::{Headers, MAX_PARTS};
pub use mta::SmtpCommand;

use maily_engine::message::{CAMPAIGN_HEADER, MESSAGE_ID_HEADER};
use maily_engine::{CampaignId, EmailAddress, MessageId};
use mime::{ContentType, Entity};
use serde::{Deserialize, Serialize};

/// Largest input accepted (10 MiB).
pub const MAX_INPUT: usize = 10 * 1024 * 1024;
/// Deepest MIME nesting followed (multiparts and forwarded messages).
pub const MAX_DEPTH: usize = 8;
/// Most per-recipient blocks read from one delivery-status part.
pub const MAX_RECIPIENTS: usize = 1000;
/// Longest Diagnostic-Code text kept (bytes). Real ones are a few hundred bytes (an
/// SMTP reply line is at most 512 octets); the cap keeps a hostile report from handing
/// megabytes of text to storage and to the reply classifier.
pub const MAX_DIAGNOSTIC_LEN: usize = 2048;

/// Content types of the part carrying the returned original message (or its headers).
pub(crate) const ORIGINAL_TYPES: &[&str] = &[
    "message/rfc822",
    "message/global",
    "text/rfc822-headers",
    "message/rfc822-headers",
    "message/global-headers",
];
pub(crate) const DSN_TYPES: &[&str] =
    &["message/delivery-status", "message/global-delivery-status"];
pub(crate) const ARF_TYPE: &str = "message/feedback-report";

/// A parsed report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Report {
    /// A delivery status notification (`report-type=delivery-status`).
    Dsn(Dsn),
    /// A complaint in Abuse Reporting Format (`report-type=feedback-report`).
    Complaint(Arf),
}

/// Why an input is not a usable report.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReportError {
    #[error("input is empty")]
    Empty,
    #[error("input is {size} bytes, more than the {limit} accepted")]
    TooLarge { size: usize, limit: usize },
    #[error("input has no header fields: it is not an email message")]
    NotAMessage,
    #[error("not a multipart/report (content type is {content_type})")]
    NotReport { content_type: String },
    #[error("report type {0:?} is neither delivery-status nor feedback-report")]
    UnsupportedReportType(String),
    #[error("multipart/report has no report-type and no delivery-status or feedback-report part")]
    UnknownReportType,
    #[error("{content_type} has no boundary parameter")]
    MissingBoundary { content_type: String },
    #[error("boundary {0:?} is empty, too long or contains control characters")]
    BadBoundary(String),
    #[error("the boundary {boundary:?} never occurs in the body")]
    BoundaryNotFound { boundary: String },
    #[error("the message ends inside the {part} part (no closing boundary)")]
    Truncated { part: &'static str },
    #[error("MIME nesting is deeper than {limit} levels")]
    TooDeep { limit: usize },
    #[error("a multipart has more than {limit} parts")]
    TooManyParts { limit: usize },
    #[error("the {encoding} transfer encoding of a {content_type} part is invalid")]
    BadTransferEncoding {
        encoding: &'static str,
        content_type: String,
    },
    #[error("delivery-status report has no message/delivery-status part")]
    MissingStatusPart,
    #[error("feedback report has no message/feedback-report part")]
    MissingFeedbackPart,
    #[error("the {part} part is not valid UTF-8")]
    NotUtf8 { part: &'static str },
    #[error("the delivery-status part has no per-recipient fields")]
    NoRecipients,
    #[error("the delivery-status part has more than {limit} recipients")]
    TooManyRecipients { limit: usize },
    #[error("{location} lacks the {field} field")]
    MissingField {
        field: &'static str,
        location: String,
    },
    #[error("{location} has an invalid {field} field: {value:?}")]
    BadField {
        field: &'static str,
        location: String,
        value: String,
    },
}

/// The messages of an mbox file, each starting with its `From sender date` line; the
/// whole input when it is one message. Body lines that start with "From " are not
/// separators unless they end in a year, as the separator line does.
pub fn mbox_messages(raw: &[u8]) -> Vec<&[u8]> {
    let mut starts = vec![0];
    let mut start = 0;
    for (line, next) in mime::lines(raw) {
        if start > 0 && is_mbox_separator(line) {
            starts.push(start);
        }
        start = next;
    }
    starts.push(raw.len());
    starts
        .windows(2)
        .map(|w| &raw[w[0]..w[1]])
        .filter(|m| m.iter().any(|b| !b.is_ascii_whitespace()))
        .collect()
}

/// `From MAILER-DAEMON  Thu Jul  2 12:05:05 2020`.
fn is_mbox_separator(line: &[u8]) -> bool {
    let Some(rest) = line.strip_prefix(b"From ") else {
        return false;
    };
    let words: Vec<&[u8]> = rest
        .split(|b| b.is_ascii_whitespace())
        .filter(|w| !w.is_empty())
        .collect();
    words.len() >= 3
        && !words[0].contains(&b':')
        && words
            .last()
            .is_some_and(|y| y.len() == 4 && y.iter().all(u8::is_ascii_digit))
}

/// Parses a raw inbound message as a DSN or an ARF complaint.
pub fn parse_report(raw: &[u8]) -> Result<Report, ReportError> {
    if raw.is_empty() {
        return Err(ReportError::Empty);
    }
    if raw.len() > MAX_INPUT {
        return Err(ReportError::TooLarge {
            size: raw.len(),
            limit: MAX_INPUT,
        });
    }
    let top = Entity::parse(raw, "text/plain");
    if top.headers.is_empty() {
        return Err(ReportError::NotAMessage);
    }
    let mut report = find_report(&top, 0)?;
    let outer = top.headers;
    match &mut report {
        Report::Dsn(d) => d.headers = outer,
        Report::Complaint(a) => a.headers = outer,
    }
    Ok(report)
}

/// Looks for the multipart/report in `entity`, descending into multiparts and
/// forwarded messages.
fn find_report(entity: &Entity<'_>, depth: usize) -> Result<Report, ReportError> {
    if depth > MAX_DEPTH {
        return Err(ReportError::TooDeep { limit: MAX_DEPTH });
    }
    let ct = &entity.content_type;
    if ct.mime == "multipart/report" {
        return read_report(entity);
    }
    let not_report = || ReportError::NotReport {
        content_type: ct.mime.clone(),
    };
    if ct.is_multipart() {
        let body = entity.body()?;
        let parts = mime::parts(ct, &body)?;
        let mut first_error = None;
        for part in &parts {
            let pct = &part.content_type;
            if !(pct.is_multipart() || is_forwarded_message(pct)) {
                continue;
            }
            match find_report(part, depth + 1) {
                Ok(r) => return Ok(r),
                Err(ReportError::NotReport { .. }) => {}
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        return Err(first_error.unwrap_or_else(not_report));
    }
    if is_forwarded_message(ct) {
        let body = entity.body()?;
        let inner = Entity::parse(&body, "text/plain");
        return find_report(&inner, depth + 1);
    }
    Err(not_report())
}

fn is_forwarded_message(ct: &ContentType) -> bool {
    ct.mime == "message/rfc822" || ct.mime == "message/global"
}

/// Reads a multipart/report entity.
fn read_report(entity: &Entity<'_>) -> Result<Report, ReportError> {
    let ct = &entity.content_type;
    let body = entity.body()?;
    let parts = mime::parts(ct, &body)?;
    let has = |types: &[&str]| {
        parts
            .iter()
            .any(|p| types.contains(&p.content_type.mime.as_str()))
    };
    let report_type = ct
        .param("report-type")
        .map(|t| t.trim().to_ascii_lowercase());
    let is_dsn = match report_type.as_deref() {
        Some("delivery-status" | "global-delivery-status") => true,
        Some("feedback-report") => false,
        Some(other) => {
            return Err(ReportError::UnsupportedReportType(
                other.chars().take(80).collect(),
            ));
        }
        None if has(DSN_TYPES) => true,
        None if has(&[ARF_TYPE]) => false,
        None => return Err(ReportError::UnknownReportType),
    };
    let original = original_headers(&parts);
    if is_dsn {
        let part = parts
            .iter()
            .find(|p| DSN_TYPES.contains(&p.content_type.mime.as_str()))
            .ok_or(ReportError::MissingStatusPart)?;
        let text = machine_part_text(part, "message/delivery-status")?;
        let mut dsn = dsn::parse(&text)?;
        dsn.original = original;
        Ok(Report::Dsn(dsn))
    } else {
        let part = parts
            .iter()
            .find(|p| p.content_type.mime == ARF_TYPE)
            .ok_or(ReportError::MissingFeedbackPart)?;
        let text = machine_part_text(part, ARF_TYPE)?;
        let mut arf = arf::parse(&text)?;
        arf.original = original;
        Ok(Report::Complaint(arf))
    }
}

/// The decoded text of a report's machine-readable part, which must be complete and
/// UTF-8 (US-ASCII per RFC 3464 and RFC 5965, UTF-8 per RFC 6533).
fn machine_part_text(part: &Entity<'_>, name: &'static str) -> Result<String, ReportError> {
    if part.truncated {
        return Err(ReportError::Truncated { part: name });
    }
    let body = part.body()?;
    String::from_utf8(body.into_owned()).map_err(|_| ReportError::NotUtf8 { part: name })
}

/// The headers of the returned message, if the report carries it. Best effort: an
/// undecodable or truncated original yields what could be read, or nothing.
fn original_headers(parts: &[Entity<'_>]) -> Option<Headers> {
    let part = parts
        .iter()
        .find(|p| ORIGINAL_TYPES.contains(&p.content_type.mime.as_str()))?;
    let body = part.body().ok()?;
    let (headers, _) = mime::parse_headers(&body);
    (!headers.is_empty()).then_some(headers)
}

/// Strips a display name, angle brackets and an address type (`rfc822;`).
fn bare_address(value: &str) -> &str {
    let v = value.trim();
    let v = match (v.rfind('<'), v.rfind('>')) {
        (Some(l), Some(r)) if l < r => &v[l + 1..r],
        _ => v,
    };
    let v = match v.split_once(';') {
        Some((kind, rest)) if !kind.contains('@') => rest,
        _ => v,
    };
    v.trim()
}

impl Report {
    /// The headers of the report message itself (as it arrived: From, To, Delivered-To...).
    pub fn headers(&self) -> &Headers {
        match self {
            Report::Dsn(d) => &d.headers,
            Report::Complaint(a) => &a.headers,
        }
    }

    /// The headers of the returned original message, when the report includes it.
    pub fn original_headers(&self) -> Option<&Headers> {
        match self {
            Report::Dsn(d) => d.original.as_ref(),
            Report::Complaint(a) => a.original.as_ref(),
        }
    }

    /// One header of the returned original message (first occurrence, any case).
    pub fn original_header(&self, name: &str) -> Option<&str> {
        self.original_headers()?.get(name)
    }

    /// The address the report was delivered to, from the report's own headers
    /// (`Delivered-To`, `X-Original-To`, `Envelope-To`, `X-Envelope-To`, then `To`).
    /// Prefer the SMTP RCPT TO when the report arrived over SMTP.
    pub fn envelope_recipient(&self) -> Option<&str> {
        envelope_recipient_in(self.headers())
    }

    /// Addresses that may be the VERP return path of the original message, most
    /// reliable first: the report's envelope recipient, the returned message's
    /// `Return-Path`, the complaint's `Original-Mail-From`, and the sender fields
    /// MTAs add to a DSN (`X-Postfix-Sender`, `X-Original-Sender`).
    pub fn verp_candidates(&self) -> Vec<&str> {
        let (first, second) = match self {
            Report::Dsn(d) => (
                d.message_fields.get("x-postfix-sender"),
                d.message_fields.get("x-original-sender"),
            ),
            Report::Complaint(a) => (a.original_mail_from.as_deref(), None),
        };
        distinct_addresses([
            self.envelope_recipient(),
            self.original_header("return-path"),
            first,
            second,
        ])
    }

    /// The engine's id of the returned message: `X-Maily-Message-Id`, else the
    /// `Message-ID` the engine builds (`<uuid@domain>`).
    pub fn original_message_id(&self) -> Option<MessageId> {
        engine_message_id(self.original_headers())
    }

    /// The campaign of the returned message (`X-Maily-Campaign`).
    pub fn original_campaign(&self) -> Option<CampaignId> {
        engine_campaign(self.original_headers())
    }

    /// The recipients the report is about, where they parse as addresses: each DSN
    /// recipient's final address, or a complaint's `Original-Rcpt-To` values.
    pub fn recipients(&self) -> Vec<EmailAddress> {
        match self {
            Report::Dsn(d) => d
                .recipients
                .iter()
                .filter_map(|r| r.address().ok())
                .collect(),
            Report::Complaint(a) => a
                .original_rcpt_to
                .iter()
                .filter_map(|r| EmailAddress::parse(r).ok())
                .collect(),
        }
    }
}

/// The address a message was delivered to, from its header fields (`Delivered-To`,
/// `X-Original-To`, `Envelope-To`, `X-Envelope-To`, then `To`).
fn envelope_recipient_in(h: &Headers) -> Option<&str> {
    [
        "delivered-to",
        "x-original-to",
        "envelope-to",
        "x-envelope-to",
        "to",
    ]
    .iter()
    .find_map(|n| h.get(n))
    .map(bare_address)
    .filter(|a| a.contains('@'))
}

/// The engine's id of a returned message: `X-Maily-Message-Id`, else the `Message-ID`
/// the engine builds (`<uuid@domain>`).
fn engine_message_id(original: Option<&Headers>) -> Option<MessageId> {
    let original = original?;
    if let Some(id) = original
        .get(MESSAGE_ID_HEADER)
        .and_then(|v| MessageId::parse(v.trim()).ok())
    {
        return Some(id);
    }
    let inner = bare_address(original.get("message-id")?);
    MessageId::parse(inner.split('@').next()?).ok()
}

/// The campaign of a returned message (`X-Maily-Campaign`).
fn engine_campaign(original: Option<&Headers>) -> Option<CampaignId> {
    original?
        .get(CAMPAIGN_HEADER)
        .and_then(|v| CampaignId::parse(v.trim()).ok())
}

/// Reads the blocks of a machine-readable part (fields separated by blank lines).
fn field_blocks(text: &str) -> Vec<Headers> {
    let bytes = text.as_bytes();
    let mut blocks = Vec::new();
    let mut pos = 0;
    while pos < bytes.len() {
        let rest = &bytes[pos..];
        if let Some((line, next)) = mime::lines(rest).next()
            && line.iter().all(|b| b.is_ascii_whitespace())
        {
            pos += next;
            continue;
        }
        let (headers, used) = mime::parse_block(rest, true);
        // `used` is positive: the block starts with a non-blank line.
        pos += used.max(1);
        if !headers.is_empty() {
            blocks.push(headers);
        }
    }
    blocks
}

/// The bare addresses among `candidates`, in order, each once; values without an `@`
/// are skipped.
pub(crate) fn distinct_addresses<'a>(
    candidates: impl IntoIterator<Item = Option<&'a str>>,
) -> Vec<&'a str> {
    let mut out: Vec<&str> = Vec::new();
    for candidate in candidates.into_iter().flatten() {
        let a = bare_address(candidate);
        if a.contains('@') && !out.contains(&a) {
            out.push(a);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const DSN: &str = "From: MAILER-DAEMON@mx.example.org\r\n\
To: <b+tag@bounce.example>\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/report; report-type=delivery-status;\r\n\
\tboundary=\"XX/mx.example.org\"\r\n\
\r\n\
--XX/mx.example.org\r\n\
Content-Type: text/plain\r\n\
\r\n\
It failed.\r\n\
--XX/mx.example.org\r\n\
Content-Type: message/delivery-status\r\n\
\r\n\
Reporting-MTA: dns; mx.example.org\r\n\
X-Postfix-Sender: rfc822; b+tag@bounce.example\r\n\
\r\n\
Final-Recipient: rfc822; jane@example.net\r\n\
Action: failed\r\n\
Status: 5.1.1\r\n\
Diagnostic-Code: smtp; 550 5.1.1 <jane@example.net>: Recipient address\r\n \
    rejected: User unknown\r\n\
\r\n\
--XX/mx.example.org\r\n\
Content-Type: text/rfc822-headers\r\n\
\r\n\
Return-Path: <b+tag@bounce.example>\r\n\
Message-ID: <0b4e2f9a-8d1c-4e7b-a3f0-5c6d7e8f9a0b@shop.example>\r\n\
X-Maily-Campaign: 6f1c7c1e-3b7a-4c55-9a55-0f3c1b2a9d10\r\n\
\r\n\
--XX/mx.example.org--\r\n";

    #[test]
    fn reads_a_dsn_and_its_attribution() {
        let r = parse_report(DSN.as_bytes()).unwrap();
        let Report::Dsn(d) = &r else {
            panic!("not a DSN: {r:?}")
        };
        assert_eq!(d.reporting_mta.as_deref(), Some("mx.example.org"));
        let rcpt = &d.recipients[0];
        assert_eq!(rcpt.final_recipient, "jane@example.net");
        assert_eq!(rcpt.action, Action::Failed);
        assert_eq!(rcpt.status.to_string(), "5.1.1");
        let diag = rcpt.diagnostic_code.as_ref().unwrap();
        assert_eq!(diag.kind.as_deref(), Some("smtp"));
        let reply = diag.reply.as_ref().unwrap();
        assert_eq!(reply.code, 550);
        assert_eq!(
            reply.text,
            "<jane@example.net>: Recipient address rejected: User unknown"
        );
        assert_eq!(r.envelope_recipient(), Some("b+tag@bounce.example"));
        assert_eq!(r.verp_candidates(), ["b+tag@bounce.example"]);
        assert_eq!(
            r.original_message_id().unwrap().to_string(),
            "0b4e2f9a-8d1c-4e7b-a3f0-5c6d7e8f9a0b"
        );
        assert!(r.original_campaign().is_some());
        assert_eq!(r.recipients()[0].as_str(), "jane@example.net");
    }

    #[test]
    fn bare_lf_and_a_wrapping_multipart_are_fine() {
        let lf = DSN.replace("\r\n", "\n");
        let wrapped = format!(
            "Content-Type: multipart/mixed; boundary=w\n\n--w\nContent-Type: text/plain\n\nFYI\n--w\nContent-Type: message/rfc822\n\n{lf}\n--w--\n"
        );
        for input in [lf.as_str(), wrapped.as_str()] {
            let r = parse_report(input.as_bytes()).unwrap();
            assert!(
                matches!(&r, Report::Dsn(d) if d.recipients.len() == 1),
                "{r:?}"
            );
        }
    }

    #[test]
    fn names_why_an_input_is_not_a_report() {
        assert_eq!(parse_report(b""), Err(ReportError::Empty));
        assert_eq!(parse_report(b"\0\x01\x02"), Err(ReportError::NotAMessage));
        assert_eq!(
            parse_report(b"Subject: hi\n\nhello"),
            Err(ReportError::NotReport {
                content_type: "text/plain".into()
            })
        );
        let big = vec![b'a'; MAX_INPUT + 1];
        assert!(matches!(
            parse_report(&big),
            Err(ReportError::TooLarge { .. })
        ));
        let cut = &DSN[..DSN.find("Action").unwrap()];
        assert_eq!(
            parse_report(cut.as_bytes()),
            Err(ReportError::Truncated {
                part: "message/delivery-status"
            })
        );
        let no_boundary = DSN.replace("--XX/mx.example.org", "--YY");
        assert!(matches!(
            parse_report(no_boundary.as_bytes()),
            Err(ReportError::BoundaryNotFound { .. })
        ));
    }

    #[test]
    fn nesting_is_bounded() {
        let mut msg = DSN.to_string();
        for _ in 0..(MAX_DEPTH + 2) {
            msg = format!("Content-Type: message/rfc822\r\n\r\n{msg}");
        }
        assert_eq!(
            parse_report(msg.as_bytes()),
            Err(ReportError::TooDeep { limit: MAX_DEPTH })
        );
    }

    #[test]
    fn huge_inputs_stay_fast() {
        // Many tiny parts, many folded lines and long lines: all linear.
        let mut s = String::from("Content-Type: multipart/mixed; boundary=b\n\n");
        for _ in 0..200 {
            s.push_str("--b\nContent-Type: multipart/mixed; boundary=c\n\n");
        }
        s.push_str(&"x".repeat(MAX_INPUT - s.len() - 10));
        let start = std::time::Instant::now();
        let _ = parse_report(s.as_bytes());
        let folded = format!("Subject: a\n{}", " b\n".repeat(MAX_INPUT / 3 - 10));
        let _ = parse_report(folded.as_bytes());
        assert!(start.elapsed().as_secs() < 10, "{:?}", start.elapsed());
    }

    #[test]
    fn mbox_files_split_into_messages() {
        let one = b"From a@b  Thu Apr 29 2015\nSubject: x\n\nbody\n";
        assert_eq!(mbox_messages(one), [&one[..]]);
        let two = b"From a  Thu Jul  2 12:05:05 2020\nSubject: x\n\nbody\nFrom here is not a separator\n--b--\nFrom b  Thu Jul  2 12:05:06 2020\nSubject: y\n\n";
        let parts = mbox_messages(two);
        assert_eq!(parts.len(), 2);
        assert!(parts[1].starts_with(b"From b"));
        assert!(mbox_messages(b"").is_empty());
    }

    #[test]
    fn field_blocks_split_on_blank_lines() {
        let blocks = field_blocks("\n\nA: 1\nB: 2\n \nC: 3\n\n\n");
        assert_eq!(blocks.len(), 2);
        assert_eq!(blocks[1].get("c"), Some("3"));
    }
}
