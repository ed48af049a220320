//! Building the RFC 5322 message a recipient receives.

use crate::domain::{
    address::EmailAddress,
    ids::{CampaignId, MessageId},
};
use crate::template::Rendered;
use crate::time::Timestamp;
use base64::Engine as _;
use std::fmt::Write as _;

/// The header naming the engine's message id, used to attribute returned mail.
pub const MESSAGE_ID_HEADER: &str = "X-Maily-Message-Id";
/// The header naming the campaign.
pub const CAMPAIGN_HEADER: &str = "X-Maily-Campaign";

/// Everything needed to build one message besides its rendered parts.
pub struct Envelope<'a> {
    pub message_id: MessageId,
    pub campaign: CampaignId,
    pub from: &'a EmailAddress,
    pub from_name: Option<&'a str>,
    pub to: &'a EmailAddress,
    pub date: Timestamp,
}

/// Builds the message: headers, then a text part, an HTML part, or both as
/// multipart/alternative. Lines end in CRLF; bodies are quoted-printable.
pub fn build(env: &Envelope<'_>, parts: &Rendered) -> Vec<u8> {
    let mut h = String::with_capacity(1024);
    let from_domain = env.from.domain();
    match env.from_name {
        Some(name) => {
            let _ = write!(h, "From: {} <{}>\r\n", encode_phrase(name), env.from);
        }
        None => {
            let _ = write!(h, "From: <{}>\r\n", env.from);
        }
    }
    let _ = write!(h, "To: <{}>\r\n", env.to);
    let _ = write!(h, "Subject: {}\r\n", encode_header_text(&parts.subject));
    let _ = write!(h, "Date: {}\r\n", rfc2822_date(env.date));
    let _ = write!(h, "Message-ID: <{}@{}>\r\n", env.message_id, from_domain);
    let _ = write!(h, "{MESSAGE_ID_HEADER}: {}\r\n", env.message_id);
    let _ = write!(h, "{CAMPAIGN_HEADER}: {}\r\n", env.campaign);
    h.push_str("MIME-Version: 1.0\r\n");
    match (&parts.text, &parts.html) {
        (Some(text), Some(html)) => {
            let boundary = format!(
                "=_maily_{}",
                env.message_id
                    .as_bytes()
                    .map(|b| format!("{b:02x}"))
                    .concat()
            );
            let _ = write!(
                h,
                "Content-Type: multipart/alternative; boundary=\"{boundary}\"\r\n\r\n"
            );
            let _ = write!(h, "--{boundary}\r\n");
            push_part(&mut h, "text/plain", text);
            let _ = write!(h, "--{boundary}\r\n");
            push_part(&mut h, "text/html", html);
            let _ = write!(h, "--{boundary}--\r\n");
        }
        (Some(body), None) => push_part(&mut h, "text/plain", body),
        (None, Some(body)) => push_part(&mut h, "text/html", body),
        (None, None) => push_part(&mut h, "text/plain", ""),
    }
    h.into_bytes()
}

fn push_part(out: &mut String, content_type: &str, body: &str) {
    let _ = write!(
        out,
        "Content-Type: {content_type}; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
    );
    quoted_printable(out, body);
    out.push_str("\r\n");
}

/// Encodes `body` as quoted-printable (RFC 2045), normalising line ends to CRLF.
pub fn quoted_printable(out: &mut String, body: &str) {
    let normalised = body.replace("\r\n", "\n");
    for (i, line) in normalised.split('\n').enumerate() {
        if i > 0 {
            out.push_str("\r\n");
        }
        let mut col = 0;
        let bytes = line.as_bytes();
        for (j, &b) in bytes.iter().enumerate() {
            let last = j + 1 == bytes.len();
            let literal =
                (b == b' ' || b == b'\t') && !last || (33..=126).contains(&b) && b != b'=';
            let width = if literal { 1 } else { 3 };
            if col + width > 75 {
                out.push_str("=\r\n");
                col = 0;
            }
            if literal {
                out.push(b as char);
            } else {
                let _ = write!(out, "={b:02X}");
            }
            col += width;
        }
    }
}

/// Encodes header text as an RFC 2047 encoded-word when it is not plain ASCII.
pub fn encode_header_text(text: &str) -> String {
    if text.bytes().all(|b| (32..127).contains(&b)) {
        text.to_string()
    } else {
        format!(
            "=?utf-8?B?{}?=",
            base64::engine::general_purpose::STANDARD.encode(text)
        )
    }
}

fn encode_phrase(name: &str) -> String {
    let ascii_atoms = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b' ' || b"!#$%&'*+-/=?^_`{|}~".contains(&b));
    if ascii_atoms {
        name.to_string()
    } else if name.bytes().all(|b| (32..127).contains(&b)) {
        format!("\"{}\"", name.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        encode_header_text(name)
    }
}

/// Formats a timestamp as an RFC 5322 date in UTC.
pub fn rfc2822_date(t: Timestamp) -> String {
    let secs = t.0.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let weekday = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][days.rem_euclid(7) as usize];
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ][(m - 1) as usize];
    format!(
        "{weekday}, {d:02} {month} {y} {:02}:{:02}:{:02} +0000",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

// Howard Hinnant's days-to-civil algorithm.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_dates() {
        assert_eq!(
            rfc2822_date(Timestamp(0)),
            "Thu, 01 Jan 1970 00:00:00 +0000"
        );
        assert_eq!(
            rfc2822_date(Timestamp(1_795_000_000_000)),
            "Wed, 18 Nov 2026 11:06:40 +0000"
        );
    }

    #[test]
    fn quoted_printable_wraps_and_escapes() {
        let mut out = String::new();
        quoted_printable(&mut out, &format!("a=b café {}\nend ", "x".repeat(100)));
        assert!(out.starts_with("a=3Db caf=C3=A9 "));
        assert!(out.lines().all(|l| l.len() <= 76));
        assert!(out.ends_with("end=20"));
    }

    #[test]
    fn builds_multipart_with_crlf_only() {
        let from = EmailAddress::parse("news@shop.example").unwrap();
        let to = EmailAddress::parse("ann@example.com").unwrap();
        let msg = build(
            &Envelope {
                message_id: MessageId::new(),
                campaign: CampaignId::new(),
                from: &from,
                from_name: Some("Shop \"Deals\""),
                to: &to,
                date: Timestamp(0),
            },
            &Rendered {
                subject: "Grüße".into(),
                text: Some("hi\nthere".into()),
                html: Some("<p>hi</p>".into()),
            },
        );
        let text = String::from_utf8(msg).unwrap();
        assert!(text.contains("Subject: =?utf-8?B?R3LDvMOfZQ==?=\r\n"));
        assert!(text.contains("From: \"Shop \\\"Deals\\\"\" <news@shop.example>\r\n"));
        assert!(text.contains("multipart/alternative"));
        assert!(!text.replace("\r\n", "").contains('\n'));
    }
}
