//! A flattened view of an inbound message, for the bounce analyser.
//!
//! Bounces are written for people first: the machine-readable part is often missing,
//! and what matters is spread over text parts, an HTML part and the returned message.
//! [`Mail`] walks the MIME tree once and keeps what the format parsers read: the
//! message's own header fields, its text (text parts decoded to UTF-8, HTML reduced to
//! text, delivery-status parts kept in place), the machine-readable parts on their own,
//! and the returned original message.

use super::mime::{self, Entity};
use super::{ARF_TYPE, DSN_TYPES, Headers, MAX_DEPTH, ORIGINAL_TYPES};

/// Longest text kept from one message (bytes); a real bounce's text is a few kilobytes.
const MAX_TEXT: usize = 512 * 1024;

/// An inbound message, flattened.
#[derive(Debug, Default)]
pub(crate) struct Mail {
    /// The message's own header fields.
    pub headers: Headers,
    /// The message's text, LF line endings: text parts (HTML as text) and
    /// delivery-status parts in order, the returned message excluded.
    pub text: String,
    /// The text of each `message/delivery-status` part.
    pub status_parts: Vec<String>,
    /// The text of each `message/feedback-report` part.
    pub feedback_parts: Vec<String>,
    /// The returned message (or its header section) when a MIME part carries it.
    pub original: Option<String>,
    /// `text` in ASCII lower case (same byte offsets), searched by [`Mail::mentions`].
    lower: String,
}

impl Mail {
    /// Reads a raw message. Never fails: what cannot be decoded is left out.
    pub fn parse(raw: &[u8]) -> Mail {
        let top = Entity::parse(raw, "text/plain");
        let mut mail = Mail::default();
        mail.walk(&top, 0);
        mail.headers = top.headers;
        mail.lower = mail.text.to_ascii_lowercase();
        mail
    }

    /// The value of a header field of the message itself, or "".
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).unwrap_or("")
    }

    /// Whether the text contains any of `phrases` (ASCII, any case). The formats ask
    /// this of every message, so it searches a lower-case copy made once.
    pub fn mentions(&self, phrases: &[&str]) -> bool {
        phrases
            .iter()
            .any(|p| self.lower.contains(p.to_ascii_lowercase().as_str()))
    }

    /// Where `phrase` (ASCII, any case) first occurs in the text at or after byte
    /// `from` (a character boundary of the text).
    pub fn find(&self, phrase: &str, from: usize) -> Option<usize> {
        let rest = self.lower.get(from..)?;
        rest.find(phrase.to_ascii_lowercase().as_str())
            .map(|i| i + from)
    }

    /// The Subject, with encoded words decoded.
    pub fn subject(&self) -> String {
        decode_words(self.header("subject"))
    }

    fn walk(&mut self, entity: &Entity<'_>, depth: usize) {
        if depth > MAX_DEPTH {
            return;
        }
        let ct = &entity.content_type;
        let mime = ct.mime.as_str();
        if ct.is_multipart() {
            let Ok(body) = entity.body() else { return };
            let Ok(parts) = mime::parts(ct, &body) else {
                // A multipart without usable boundaries: read it as text, as people do.
                self.push_text(&decode_text(&body));
                return;
            };
            let alternative = mime == "multipart/alternative";
            // Of alternatives, the plain text is enough when there is one.
            let has_plain =
                alternative && parts.iter().any(|p| p.content_type.mime == "text/plain");
            for part in &parts {
                if has_plain && part.content_type.mime == "text/html" {
                    continue;
                }
                self.walk(part, depth + 1);
            }
            return;
        }
        if ORIGINAL_TYPES.contains(&mime) || mime == "message/partial" {
            if self.original.is_none()
                && let Ok(body) = entity.body()
            {
                self.original = Some(decode_text(cut_bytes(&body, MAX_TEXT)));
            }
            return;
        }
        let Ok(body) = entity.body() else { return };
        if DSN_TYPES.contains(&mime) {
            let text = decode_text(cut_bytes(&body, MAX_TEXT));
            self.push_text(&text);
            self.status_parts.push(text);
        } else if mime == ARF_TYPE {
            self.feedback_parts
                .push(decode_text(cut_bytes(&body, MAX_TEXT)));
        } else if self.text.len() < MAX_TEXT {
            // Only what still fits is decoded: the rest would be cut anyway.
            let body = cut_bytes(&body, MAX_TEXT - self.text.len() + 1024);
            if mime == "text/html" {
                self.push_text(&html_to_text(&decode_text(body)));
            } else if mime.starts_with("text/") {
                self.push_text(&decode_text(body));
            }
        }
    }

    fn push_text(&mut self, text: &str) {
        if self.text.len() >= MAX_TEXT {
            return;
        }
        if !self.text.is_empty() && !self.text.ends_with('\n') {
            self.text.push('\n');
        }
        let room = MAX_TEXT - self.text.len();
        self.text.push_str(cut(text, room));
        self.text.push('\n');
    }

    /// The header fields of the returned message, from its MIME part or, failing that,
    /// from `fallback` (the text after a format's "copy of the message" marker).
    pub fn original_headers(&self, fallback: Option<&str>) -> Option<Headers> {
        let text = self.original.as_deref().or(fallback)?;
        let text = text.trim_start_matches(['\n', '\r', ' ', '\t']);
        let (headers, _) = mime::parse_headers(text.as_bytes());
        (!headers.is_empty()).then_some(headers)
    }
}

/// One header field (first occurrence, any case) of a message given as text, such as
/// the returned message after a format's marker line.
pub(crate) fn original_field(text: &str, name: &str) -> Option<String> {
    let text = text.trim_start_matches(['\n', '\r', ' ', '\t']);
    let (headers, _) = mime::parse_headers(text.as_bytes());
    headers.get(name).map(str::to_string)
}

/// The first `max` bytes of `b` (a text cut there reads as a replacement character).
fn cut_bytes(b: &[u8], max: usize) -> &[u8] {
    &b[..b.len().min(max)]
}

/// `s` cut to at most `max` bytes at a character boundary.
pub(crate) fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A part's bytes as text: UTF-8 when they are, else read as Latin-1 (every byte a
/// character, so Western European wording stays readable); CR LF and CR become LF.
pub(crate) fn decode_text(bytes: &[u8]) -> String {
    let text = match std::str::from_utf8(bytes) {
        Ok(s) => std::borrow::Cow::Borrowed(s),
        Err(_) => std::borrow::Cow::Owned(bytes.iter().map(|&b| b as char).collect::<String>()),
    };
    if !text.contains('\r') {
        return text.into_owned();
    }
    text.replace("\r\n", "\n").replace('\r', "\n")
}

/// HTML reduced to text: tags dropped (block tags end a line), the common entities
/// decoded, `<style>` and `<script>` contents dropped.
pub(crate) fn html_to_text(html: &str) -> String {
    let mut out = String::with_capacity(html.len() / 2);
    let mut rest = html;
    while let Some(lt) = rest.find('<') {
        out.push_str(&rest[..lt]);
        let close = rest[lt..].find('>').map_or(rest.len(), |i| lt + i);
        let tag = &rest[lt + 1..close];
        let closing = tag.starts_with('/');
        let name: String = tag
            .trim_start_matches('/')
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .map(|c| c.to_ascii_lowercase())
            .collect();
        rest = &rest[(close + 1).min(rest.len())..];
        if (name == "style" || name == "script") && !closing {
            rest = match find_ignore_case(rest, &format!("</{name}")) {
                Some(i) => &rest[i..],
                None => "",
            };
            continue;
        }
        if matches!(
            name.as_str(),
            "br" | "p" | "div" | "tr" | "li" | "table" | "h1" | "h2" | "h3" | "h4" | "pre"
        ) {
            out.push('\n');
        } else if matches!(name.as_str(), "td" | "th") {
            out.push(' ');
        }
    }
    out.push_str(rest);
    decode_entities(&out)
}

/// The position of `needle` (ASCII) in `hay`, ignoring ASCII case.
pub(crate) fn find_ignore_case(hay: &str, needle: &str) -> Option<usize> {
    let (h, n) = (hay.as_bytes(), needle.as_bytes());
    if n.is_empty() || n.len() > h.len() {
        return None;
    }
    let (lower, upper) = (n[0].to_ascii_lowercase(), n[0].to_ascii_uppercase());
    (0..=h.len() - n.len())
        .find(|&i| (h[i] == lower || h[i] == upper) && h[i..i + n.len()].eq_ignore_ascii_case(n))
}

fn decode_entities(s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        let end = cut(rest, 10).find(';');
        let replaced = end.and_then(|e| {
            let name = &rest[1..e];
            let c = match name {
                "lt" => '<',
                "gt" => '>',
                "amp" => '&',
                "quot" => '"',
                "apos" => '\'',
                "nbsp" => ' ',
                _ => {
                    let n = name.strip_prefix('#')?;
                    let v = match n.strip_prefix(['x', 'X']) {
                        Some(h) => u32::from_str_radix(h, 16).ok()?,
                        None => n.parse().ok()?,
                    };
                    char::from_u32(v)?
                }
            };
            Some((c, e + 1))
        });
        match replaced {
            Some((c, used)) => {
                out.push(c);
                rest = &rest[used..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Decodes RFC 2047 encoded words (`=?charset?B|Q?...?=`); UTF-8 and Latin-1 decode
/// exactly, other charsets as far as their bytes are ASCII.
pub(crate) fn decode_words(value: &str) -> String {
    if !value.contains("=?") {
        return value.to_string();
    }
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    let mut last_was_word = false;
    while let Some(start) = rest.find("=?") {
        let before = &rest[..start];
        let Some((word, used)) = encoded_word(&rest[start..]) else {
            out.push_str(&rest[..start + 2]);
            rest = &rest[start + 2..];
            last_was_word = false;
            continue;
        };
        // White space between two encoded words is not part of the text.
        if !(last_was_word && before.trim().is_empty()) {
            out.push_str(before);
        }
        out.push_str(&word);
        rest = &rest[start + used..];
        last_was_word = true;
    }
    out.push_str(rest);
    out
}

fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

fn encoded_word(s: &str) -> Option<(String, usize)> {
    let inner = s.strip_prefix("=?")?;
    let q1 = inner.find('?')?;
    let charset = inner[..q1].to_ascii_lowercase();
    let after = &inner[q1 + 1..];
    let q2 = after.find('?')?;
    let encoding = after[..q2].to_ascii_lowercase();
    let payload_and_rest = &after[q2 + 1..];
    let end = payload_and_rest.find("?=")?;
    let payload = &payload_and_rest[..end];
    let bytes = match encoding.as_str() {
        "b" => {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD_NO_PAD
                .decode(payload.trim_end_matches('='))
                .ok()?
        }
        "q" => {
            let b = payload.as_bytes();
            let mut out = Vec::with_capacity(b.len());
            let mut i = 0;
            while i < b.len() {
                match (
                    b[i],
                    b.get(i + 1).and_then(|c| hex(*c)),
                    b.get(i + 2).and_then(|c| hex(*c)),
                ) {
                    (b'_', _, _) => out.push(b' '),
                    (b'=', Some(h), Some(l)) => {
                        out.push(h << 4 | l);
                        i += 2;
                    }
                    (c, _, _) => out.push(c),
                }
                i += 1;
            }
            out
        }
        _ => return None,
    };
    let text = if charset.starts_with("iso-8859-1") || charset == "latin1" {
        bytes.iter().map(|&b| b as char).collect()
    } else {
        String::from_utf8_lossy(&bytes).into_owned()
    };
    let used = 2 + q1 + 1 + q2 + 1 + end + 2;
    Some((text, used))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flattens_text_status_and_original() {
        let raw = b"From: MAILER-DAEMON@x.example\nSubject: =?UTF-8?B?VW5kZWxpdmVyYWJsZQ==?= mail\n\
Content-Type: multipart/report; report-type=delivery-status; boundary=b\n\n\
--b\nContent-Type: multipart/alternative; boundary=c\n\n--c\nContent-Type: text/plain\n\nplain &amp; text\n\
--c\nContent-Type: text/html\n\n<p>html</p>\n--c--\n\
--b\nContent-Type: message/delivery-status\n\nFinal-Recipient: rfc822; a@b.example\n\
--b\nContent-Type: message/rfc822\n\nMessage-ID: <x@y>\nSubject: hi\n\nbody\n--b--\n";
        let m = Mail::parse(raw);
        assert_eq!(m.subject(), "Undeliverable mail");
        assert!(m.text.contains("plain &amp; text"));
        assert!(!m.text.contains("html"));
        assert!(m.text.contains("Final-Recipient"));
        assert_eq!(m.status_parts.len(), 1);
        assert_eq!(
            m.original_headers(None).unwrap().get("message-id"),
            Some("<x@y>")
        );
    }

    #[test]
    fn html_becomes_text() {
        assert_eq!(
            html_to_text("<style>p{}</style><p>a&lt;b&gt;</p><br>c&#64;d&nbsp;e"),
            "\na<b>\n\nc@d e"
        );
        assert_eq!(html_to_text("x < y"), "x ");
        assert_eq!(
            html_to_text("&éé;&#xZZ;&#99999999;&"),
            "&éé;&#xZZ;&#99999999;&"
        );
    }

    #[test]
    fn finds_ascii_needles_in_any_case() {
        assert_eq!(
            find_ignore_case("Über USER unknown", "user unknown"),
            Some(6)
        );
        assert_eq!(find_ignore_case("abc", "abcd"), None);
        assert_eq!(find_ignore_case("ab", ""), None);
        assert_eq!(find_ignore_case("xx-- Below", "-- below"), Some(2));
        assert_eq!(find_ignore_case("aaab", "ab"), Some(2));
    }

    #[test]
    fn decodes_encoded_words() {
        assert_eq!(
            decode_words("=?iso-8859-1?Q?Caf=E9_au_lait?="),
            "Café au lait"
        );
        assert_eq!(decode_words("=?utf-8?B?YQ==?= =?utf-8?B?Yg==?= c"), "ab c");
        assert_eq!(decode_words("=?broken"), "=?broken");
        assert_eq!(decode_words("=?utf-8?Q?a=?="), "a=");
    }
}
