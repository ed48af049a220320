//! Building the RFC 5322 message a recipient receives.
//!
//! [`build`] writes a plain message. [`build_with`] also takes the message's
//! [`MessageLinks`]: with a [`Tracking`] configuration the HTML part gets tracked links
//! and the open pixel ([`crate::tracking`]); with an unsubscribe URL or address the
//! message gets `List-Unsubscribe` (RFC 2369) and, when the URL is https,
//! `List-Unsubscribe-Post: List-Unsubscribe=One-Click` (RFC 8058). Text parts are never
//! rewritten.

use crate::domain::{
    address::EmailAddress,
    ids::{CampaignId, MessageId, TenantId},
};
use crate::template::Rendered;
use crate::time::Timestamp;
use crate::tracking::{OpenToken, Tracking, UnsubscribeToken};
use base64::Engine as _;
use std::borrow::Cow;
use std::fmt::Write as _;

/// The header naming the engine's message id, used to attribute returned mail.
pub const MESSAGE_ID_HEADER: &str = "X-Maily-Message-Id";
/// The header naming the campaign.
pub const CAMPAIGN_HEADER: &str = "X-Maily-Campaign";
/// The Feedback-ID's last field: the sender's identifier, the same for every message.
pub const FEEDBACK_SENDER: &str = "maily";

/// Everything needed to build one message besides its rendered parts.
pub struct Envelope<'a> {
    pub message_id: MessageId,
    pub campaign: CampaignId,
    pub from: &'a EmailAddress,
    pub from_name: Option<&'a str>,
    pub to: &'a EmailAddress,
    pub date: Timestamp,
}

/// The per-message inputs of tracking and unsubscribe headers.
#[derive(Debug, Clone, Copy)]
pub struct MessageLinks<'a> {
    /// The tenant sending the message, signed into its tokens.
    pub tenant: &'a TenantId,
    /// The tracking listener and keys: tracked links and the pixel (as its flags say)
    /// and the https unsubscribe URL. `None`: no tracking and no unsubscribe URL.
    pub tracking: Option<&'a Tracking>,
    /// An address that unsubscribes whoever writes to it, offered as
    /// `<mailto:ADDRESS?subject=unsubscribe>` (the subject carries the signed
    /// unsubscribe token too when `tracking` is set).
    pub unsubscribe_mailto: Option<&'a EmailAddress>,
}

/// Builds the message: headers, then a text part, an HTML part, or both as
/// multipart/alternative. Lines end in CRLF; bodies are quoted-printable.
/// No tracking and no `List-Unsubscribe`; see [`build_with`].
pub fn build(env: &Envelope<'_>, parts: &Rendered) -> Vec<u8> {
    build_with(env, parts, None)
}

/// Builds the message like [`build`], plus, when `links` is given: the tracked HTML
/// part, `List-Unsubscribe`, `List-Unsubscribe-Post` (https URL only) and `Feedback-ID`.
pub fn build_with(
    env: &Envelope<'_>,
    parts: &Rendered,
    links: Option<&MessageLinks<'_>>,
) -> Vec<u8> {
    let mut h = String::with_capacity(2048);
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
    let mut html = parts.html.as_deref().map(Cow::Borrowed);
    if let Some(links) = links {
        push_list_headers(&mut h, env, links);
        let _ = write!(
            h,
            "Feedback-ID: {}:{}:{FEEDBACK_SENDER}\r\n",
            env.campaign, links.tenant
        );
        if let (Some(tracking), Some(body)) = (links.tracking, parts.html.as_deref())
            && (tracking.opens() || tracking.clicks())
        {
            let ids = OpenToken {
                message: env.message_id,
                campaign: env.campaign,
                tenant: links.tenant.clone(),
                recipient: env.to.clone(),
            };
            html = Some(Cow::Owned(tracking.track_html(body, &ids)));
        }
    }
    h.push_str("MIME-Version: 1.0\r\n");
    match (&parts.text, &html) {
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

/// `List-Unsubscribe` and, for an https URL, `List-Unsubscribe-Post`.
fn push_list_headers(h: &mut String, env: &Envelope<'_>, links: &MessageLinks<'_>) {
    let token = UnsubscribeToken {
        tenant: links.tenant.clone(),
        campaign: env.campaign,
        recipient: env.to.clone(),
        message: env.message_id,
    };
    // Signed once, used in both URIs (the same as `Tracking::unsubscribe_url`'s).
    let signed = links
        .tracking
        .map(|t| (t, t.keys().sign_unsubscribe(&token)));
    let url = signed
        .as_ref()
        .map(|(t, tok)| (format!("{}/u/{tok}", t.base_url()), t.is_https()));
    let mailto = links.unsubscribe_mailto.map(|addr| {
        let mut m = String::from("mailto:");
        mailto_encode(&mut m, addr.as_str());
        m.push_str("?subject=unsubscribe");
        if let Some((_, tok)) = &signed {
            // base64url: safe in a URI query as it is.
            let _ = write!(m, "%20{tok}");
        }
        m
    });
    match (&url, &mailto) {
        (Some((url, _)), Some(mailto)) => {
            let _ = write!(h, "List-Unsubscribe: <{url}>,\r\n <{mailto}>\r\n");
        }
        (Some((url, _)), None) => {
            let _ = write!(h, "List-Unsubscribe: <{url}>\r\n");
        }
        (None, Some(mailto)) => {
            let _ = write!(h, "List-Unsubscribe: <{mailto}>\r\n");
        }
        (None, None) => {}
    }
    // RFC 8058: one-click only with an https URI.
    if let Some((_, true)) = url {
        h.push_str("List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n");
    }
}

/// Percent-encodes an address for a `mailto:` URI (RFC 6068): everything but
/// unreserved characters, `@` and the sub-delimiters that need no escaping.
fn mailto_encode(out: &mut String, addr: &str) {
    for b in addr.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~@!$'()*+,;".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
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
    let (y, m, d) = crate::time::civil_from_days(days);
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

    use crate::tracking::{TokenKey, TokenKeys};

    /// Decodes a quoted-printable body (test helper).
    fn unqp(s: &str) -> String {
        let s = s.replace("=\r\n", "");
        let b = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'=' {
                out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
                i += 3;
            } else {
                out.push(b[i]);
                i += 1;
            }
        }
        String::from_utf8(out).unwrap()
    }

    fn header<'m>(msg: &'m str, name: &str) -> Option<&'m str> {
        let head = &msg[..msg.find("\r\n\r\n").unwrap()];
        let start = head.find(&format!("\r\n{name}: "))? + name.len() + 4;
        let len = head[start..]
            .match_indices("\r\n")
            .find(|(i, _)| !head[start + i + 2..].starts_with(' '))
            .map_or(head.len() - start, |(i, _)| i);
        Some(&head[start..start + len])
    }

    /// Every token after `prefix` in `text`, up to the first non-base64url character.
    fn tokens<'t>(text: &'t str, prefix: &str) -> Vec<&'t str> {
        text.match_indices(prefix)
            .map(|(i, _)| {
                let rest = &text[i + prefix.len()..];
                let end = rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
                    .unwrap_or(rest.len());
                &rest[..end]
            })
            .collect()
    }

    #[test]
    fn builds_tracked_messages_with_list_unsubscribe() {
        let from = EmailAddress::parse("news@shop.example").unwrap();
        let to = EmailAddress::parse("ann@example.com").unwrap();
        let unsub = EmailAddress::parse("unsub+x/y@shop.example").unwrap();
        let tenant = TenantId::parse("acme").unwrap();
        let keys = TokenKeys::new(TokenKey::new(1, [5u8; 32]).unwrap(), vec![]).unwrap();
        let tracking = Tracking::new("https://t.example.com", keys.clone()).unwrap();
        let env = Envelope {
            message_id: MessageId::new(),
            campaign: CampaignId::new(),
            from: &from,
            from_name: None,
            to: &to,
            date: Timestamp(0),
        };
        let parts = Rendered {
            subject: "Hi".into(),
            text: Some("Visit https://shop.example/sale".into()),
            html: Some(
                "<html><body><a href=\"https://shop.example/sale?a=1&amp;b=2\">Sale</a> \
                 <a href='mailto:help@shop.example'>help</a> \
                 <A HREF=https://shop.example/other>other</A></body></html>"
                    .into(),
            ),
        };
        let links = MessageLinks {
            tenant: &tenant,
            tracking: Some(&tracking),
            unsubscribe_mailto: Some(&unsub),
        };
        let msg = String::from_utf8(build_with(&env, &parts, Some(&links))).unwrap();
        assert!(!msg.replace("\r\n", "").contains('\n'));
        assert!(msg.lines().all(|l| l.len() <= 998));
        assert_eq!(
            header(&msg, "Message-ID"),
            Some(format!("<{}@shop.example>", env.message_id).as_str())
        );

        let list = header(&msg, "List-Unsubscribe").unwrap();
        assert!(list.starts_with("<https://t.example.com/u/"), "{list}");
        assert!(list.contains(">,\r\n <mailto:unsub+x%2Fy@shop.example?subject=unsubscribe%20"));
        let u = keys.verify_unsubscribe(tokens(list, "/u/")[0]).unwrap();
        assert_eq!(
            (u.recipient, u.message, u.tenant),
            (to.clone(), env.message_id, tenant.clone())
        );
        let m = keys
            .verify_unsubscribe(tokens(list, "subject=unsubscribe%20")[0])
            .unwrap();
        assert_eq!(m.campaign, env.campaign);
        assert_eq!(
            header(&msg, "List-Unsubscribe-Post"),
            Some("List-Unsubscribe=One-Click")
        );
        assert_eq!(
            header(&msg, "Feedback-ID"),
            Some(format!("{}:acme:maily", env.campaign).as_str())
        );

        let html_part = msg.find("Content-Type: text/html").unwrap();
        let html_body = html_part + msg[html_part..].find("\r\n\r\n").unwrap() + 4;
        let html_end = html_body + msg[html_body..].find("\r\n--").unwrap();
        let html = unqp(&msg[html_body..html_end]);
        let clicks: Vec<_> = tokens(&html, "https://t.example.com/c/")
            .into_iter()
            .map(|t| keys.verify_click(t).unwrap())
            .collect();
        assert_eq!(clicks.len(), 2);
        assert_eq!(clicks[0].url, "https://shop.example/sale?a=1&b=2");
        assert_eq!(clicks[1].url, "https://shop.example/other");
        assert_eq!((clicks[1].link, clicks[1].message), (1, env.message_id));
        assert!(html.contains("href='mailto:help@shop.example'"));
        let opens = tokens(&html, "<img src=\"https://t.example.com/o/");
        assert_eq!(keys.verify_open(opens[0]).unwrap().message, env.message_id);
        assert!(html.contains("style=\"display:none\"></body>"));
        // The text part is left alone.
        assert!(msg.contains("Visit https://shop.example/sale"));

        // Tracking off but the listener known: links untouched, headers still there.
        let quiet = tracking.clone().with_opens(false).with_clicks(false);
        let links = MessageLinks {
            tracking: Some(&quiet),
            unsubscribe_mailto: None,
            ..links
        };
        let msg = String::from_utf8(build_with(&env, &parts, Some(&links))).unwrap();
        assert!(!msg.contains("/c/") && !msg.contains("/o/"));
        assert!(header(&msg, "List-Unsubscribe").unwrap().ends_with('>'));
        assert!(header(&msg, "List-Unsubscribe-Post").is_some());
    }

    #[test]
    fn one_click_only_with_https_and_nothing_without_links() {
        let from = EmailAddress::parse("news@shop.example").unwrap();
        let to = EmailAddress::parse("ann@example.com").unwrap();
        let tenant = TenantId::parse("acme").unwrap();
        let keys = TokenKeys::new(TokenKey::new(1, [5u8; 32]).unwrap(), vec![]).unwrap();
        let http = Tracking::new("http://t.example.com", keys).unwrap();
        let env = Envelope {
            message_id: MessageId::new(),
            campaign: CampaignId::new(),
            from: &from,
            from_name: None,
            to: &to,
            date: Timestamp(0),
        };
        let parts = Rendered {
            subject: "Hi".into(),
            text: Some("hi".into()),
            html: None,
        };
        let with = |links: &MessageLinks<'_>| {
            String::from_utf8(build_with(&env, &parts, Some(links))).unwrap()
        };
        let msg = with(&MessageLinks {
            tenant: &tenant,
            tracking: Some(&http),
            unsubscribe_mailto: None,
        });
        assert!(
            header(&msg, "List-Unsubscribe")
                .unwrap()
                .starts_with("<http://t.example.com/u/")
        );
        assert!(header(&msg, "List-Unsubscribe-Post").is_none());
        let msg = with(&MessageLinks {
            tenant: &tenant,
            tracking: None,
            unsubscribe_mailto: Some(&from),
        });
        assert_eq!(
            header(&msg, "List-Unsubscribe"),
            Some("<mailto:news@shop.example?subject=unsubscribe>")
        );
        assert!(header(&msg, "List-Unsubscribe-Post").is_none());
        let plain = String::from_utf8(build(&env, &parts)).unwrap();
        assert!(header(&plain, "List-Unsubscribe").is_none());
        assert!(header(&plain, "Feedback-ID").is_none());
        let none = with(&MessageLinks {
            tenant: &tenant,
            tracking: None,
            unsubscribe_mailto: None,
        });
        assert!(header(&none, "List-Unsubscribe").is_none());
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
