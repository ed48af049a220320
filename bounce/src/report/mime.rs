//! A small, defensive MIME reader: just enough of RFC 5322 and RFC 2045-2046 to take a
//! report apart.
//!
//! Everything here is linear in the input: header blocks and multipart bodies are read
//! line by line once, boundaries are compared only on lines that start with `--`, and
//! transfer decoding is a single pass. Lines may end in CRLF or a bare LF.

use super::ReportError;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

/// Longest boundary accepted (RFC 2046 allows 70; some senders go a little over).
const MAX_BOUNDARY_LEN: usize = 200;
/// Most body parts in one multipart.
pub const MAX_PARTS: usize = 256;

/// A header section: unfolded fields in their original order, names compared without
/// regard to case. Values are trimmed; undecodable bytes are replaced (U+FFFD).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Headers {
    fields: Vec<(String, String)>,
}

impl Headers {
    /// The first field called `name` (any case).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every field called `name` (any case), in order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.fields
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Builds headers from `(name, value)` pairs.
    pub(crate) fn from_fields(fields: Vec<(String, String)>) -> Self {
        Headers { fields }
    }

    /// All fields as `(name, value)`.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.fields.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// Number of fields.
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// No fields at all.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }
}

/// Iterates over lines: `(line without its line ending, offset of the next line)`.
pub(crate) fn lines(input: &[u8]) -> impl Iterator<Item = (&[u8], usize)> {
    let mut pos = 0;
    std::iter::from_fn(move || {
        if pos >= input.len() {
            return None;
        }
        let start = pos;
        let (end, next) = match input[start..].iter().position(|&b| b == b'\n') {
            Some(i) => (start + i, start + i + 1),
            None => (input.len(), input.len()),
        };
        pos = next;
        let line = &input[start..end];
        Some((line.strip_suffix(b"\r").unwrap_or(line), next))
    })
}

/// Reads a header block up to (and including) the first empty line. Returns the fields
/// and the offset of what follows the block. Lines that are neither a field nor a
/// continuation are skipped; a continuation with no field before it is ignored.
pub(crate) fn parse_headers(input: &[u8]) -> (Headers, usize) {
    parse_block(input, false)
}

/// [`parse_headers`], where `blank_ends` also ends the block at a line of only white
/// space (as report parts are written in practice) instead of reading it as folding.
pub(crate) fn parse_block(input: &[u8], blank_ends: bool) -> (Headers, usize) {
    let mut fields: Vec<(String, Vec<u8>)> = Vec::new();
    let mut end = input.len();
    let mut current: Option<usize> = None;
    for (line, next) in lines(input) {
        if line.is_empty() || (blank_ends && line.iter().all(|b| *b == b' ' || *b == b'\t')) {
            end = next;
            break;
        }
        if line[0] == b' ' || line[0] == b'\t' {
            if let Some(i) = current {
                fields[i].1.extend_from_slice(line);
            }
            continue;
        }
        current = None;
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = trim_ascii_end(&line[..colon]);
        if name.is_empty() || !name.iter().all(|&b| (33..=126).contains(&b)) {
            continue;
        }
        fields.push((
            String::from_utf8_lossy(name).into_owned(),
            line[colon + 1..].to_vec(),
        ));
        current = Some(fields.len() - 1);
    }
    let fields = fields
        .into_iter()
        .map(|(n, v)| (n, String::from_utf8_lossy(&v).trim().to_string()))
        .collect();
    (Headers { fields }, end)
}

fn trim_ascii_end(s: &[u8]) -> &[u8] {
    let n = s
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(0, |i| i + 1);
    &s[..n]
}

/// A parsed Content-Type: lower-cased `type/subtype` and parameters (names lower-cased).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ContentType {
    pub mime: String,
    pub params: Vec<(String, String)>,
}

impl ContentType {
    /// RFC 2045's default, used when the field is missing or unreadable.
    pub fn text_plain() -> Self {
        ContentType {
            mime: "text/plain".into(),
            params: Vec::new(),
        }
    }

    /// Parses a Content-Type value; an unreadable one is taken as text/plain.
    pub fn parse(value: &str) -> Self {
        let mut pieces = split_params(value).into_iter();
        let mime = pieces
            .next()
            .map(|m| strip_comments(&m).trim().to_ascii_lowercase())
            .unwrap_or_default();
        let Some((ty, sub)) = mime.split_once('/') else {
            return Self::text_plain();
        };
        if ty.is_empty() || sub.is_empty() || mime.contains(char::is_whitespace) {
            return Self::text_plain();
        }
        let params = pieces
            .filter_map(|p| {
                let (k, v) = p.split_once('=')?;
                let k = strip_comments(k).trim().to_ascii_lowercase();
                Some((k, unquote(v.trim())))
            })
            .collect();
        ContentType { mime, params }
    }

    /// A parameter's value by (case-insensitive) name.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn is_multipart(&self) -> bool {
        self.mime.starts_with("multipart/")
    }
}

/// Splits on `;` outside quoted strings.
fn split_params(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let (mut quoted, mut escaped) = (false, false);
    for c in s.chars() {
        if escaped {
            cur.push(c);
            escaped = false;
            continue;
        }
        match c {
            '\\' if quoted => {
                cur.push(c);
                escaped = true;
            }
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            ';' if !quoted => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out
}

/// Removes `(comments)` (not nested-aware beyond a depth counter).
fn strip_comments(s: &str) -> String {
    let mut depth = 0usize;
    s.chars()
        .filter(|&c| match c {
            '(' => {
                depth += 1;
                false
            }
            ')' if depth > 0 => {
                depth -= 1;
                false
            }
            _ => depth == 0,
        })
        .collect()
}

/// A parameter value: a quoted-string with its escapes undone, or a token (comments
/// dropped).
fn unquote(v: &str) -> String {
    let Some(inner) = v.strip_prefix('"') else {
        return strip_comments(v).trim().to_string();
    };
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    out.push(n);
                }
            }
            '"' => break,
            _ => out.push(c),
        }
    }
    out
}

/// One MIME entity: its headers, parsed content type and (still encoded) body.
#[derive(Debug)]
pub(crate) struct Entity<'a> {
    pub headers: Headers,
    pub content_type: ContentType,
    raw_body: &'a [u8],
    /// The multipart this entity came from ended before this part's closing boundary.
    pub truncated: bool,
}

impl<'a> Entity<'a> {
    /// Reads an entity: headers, blank line, body. `default_type` applies when there is
    /// no Content-Type field.
    pub fn parse(raw: &'a [u8], default_type: &str) -> Self {
        let (headers, body_at) = parse_headers(raw);
        let content_type = match headers.get("content-type") {
            Some(v) => ContentType::parse(v),
            None => ContentType::parse(default_type),
        };
        Entity {
            headers,
            content_type,
            raw_body: &raw[body_at.min(raw.len())..],
            truncated: false,
        }
    }

    /// The body with its Content-Transfer-Encoding undone.
    pub fn body(&self) -> Result<Cow<'a, [u8]>, ReportError> {
        decode_transfer(
            self.raw_body,
            self.headers.get("content-transfer-encoding"),
            &self.content_type.mime,
        )
    }
}

/// The parts of a multipart entity whose decoded body is `body`. The last part is
/// marked `truncated` when the closing delimiter is missing.
pub(crate) fn parts<'b>(ct: &ContentType, body: &'b [u8]) -> Result<Vec<Entity<'b>>, ReportError> {
    let boundary = ct
        .param("boundary")
        .ok_or_else(|| ReportError::MissingBoundary {
            content_type: ct.mime.clone(),
        })?;
    if boundary.is_empty()
        || boundary.len() > MAX_BOUNDARY_LEN
        || boundary.bytes().any(|b| b.is_ascii_control())
    {
        return Err(ReportError::BadBoundary(
            boundary.chars().take(80).collect(),
        ));
    }
    let default_type = if ct.mime == "multipart/digest" {
        "message/rfc822"
    } else {
        "text/plain"
    };
    let (raw_parts, closed) = split_multipart(body, boundary.as_bytes())?;
    let count = raw_parts.len();
    Ok(raw_parts
        .into_iter()
        .enumerate()
        .map(|(i, raw)| {
            let mut e = Entity::parse(raw, default_type);
            e.truncated = !closed && i + 1 == count;
            e
        })
        .collect())
}

/// Splits a multipart body on its delimiter lines. Returns the parts (without the line
/// ending that belongs to the next delimiter) and whether the close delimiter was seen.
fn split_multipart<'b>(
    body: &'b [u8],
    boundary: &[u8],
) -> Result<(Vec<&'b [u8]>, bool), ReportError> {
    let mut parts = Vec::new();
    // Start of the current part's content, once the first delimiter has been seen.
    let mut start: Option<usize> = None;
    let mut line_start = 0;
    for (line, next) in lines(body) {
        let this_line = line_start;
        line_start = next;
        let Some(kind) = delimiter_kind(line, boundary) else {
            continue;
        };
        if let Some(s) = start {
            // The line ending before the delimiter belongs to the delimiter.
            let mut end = this_line.max(s);
            if end > s && body[end - 1] == b'\n' {
                end -= 1;
                if end > s && body[end - 1] == b'\r' {
                    end -= 1;
                }
            }
            if parts.len() == MAX_PARTS {
                return Err(ReportError::TooManyParts { limit: MAX_PARTS });
            }
            parts.push(&body[s..end]);
        }
        match kind {
            Delimiter::Close if start.is_some() => return Ok((parts, true)),
            // A close delimiter before any part: nothing inside.
            Delimiter::Close => return Ok((parts, true)),
            Delimiter::Open => start = Some(next),
        }
    }
    match start {
        None => Err(ReportError::BoundaryNotFound {
            boundary: String::from_utf8_lossy(boundary).chars().take(80).collect(),
        }),
        Some(s) => {
            if parts.len() == MAX_PARTS {
                return Err(ReportError::TooManyParts { limit: MAX_PARTS });
            }
            parts.push(&body[s.min(body.len())..]);
            Ok((parts, false))
        }
    }
}

enum Delimiter {
    Open,
    Close,
}

fn delimiter_kind(line: &[u8], boundary: &[u8]) -> Option<Delimiter> {
    let rest = line.strip_prefix(b"--")?.strip_prefix(boundary)?;
    let (kind, rest) = match rest.strip_prefix(b"--") {
        Some(r) => (Delimiter::Close, r),
        None => (Delimiter::Open, rest),
    };
    // Transport padding (linear white space) may follow the delimiter.
    rest.iter()
        .all(|b| *b == b' ' || *b == b'\t')
        .then_some(kind)
}

/// Undoes a Content-Transfer-Encoding.
fn decode_transfer<'a>(
    body: &'a [u8],
    encoding: Option<&str>,
    mime: &str,
) -> Result<Cow<'a, [u8]>, ReportError> {
    let encoding = encoding
        .map(|e| strip_comments(e).trim().to_ascii_lowercase())
        .unwrap_or_default();
    match encoding.as_str() {
        "base64" => {
            decode_base64(body)
                .map(Cow::Owned)
                .ok_or_else(|| ReportError::BadTransferEncoding {
                    encoding: "base64",
                    content_type: mime.to_string(),
                })
        }
        "quoted-printable" => Ok(Cow::Owned(decode_quoted_printable(body))),
        // 7bit, 8bit, binary, missing or unknown: taken as is.
        _ => Ok(Cow::Borrowed(body)),
    }
}

/// Base64 with line breaks and other white space ignored; padding optional.
fn decode_base64(body: &[u8]) -> Option<Vec<u8>> {
    let mut clean: Vec<u8> = body
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    // Stop at the first padding: some senders append junk after the last quantum.
    if let Some(p) = clean.iter().position(|&b| b == b'=') {
        clean.truncate(p);
    }
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_allow_trailing_bits(true)
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::RequireNone),
    );
    engine.decode(&clean).ok()
}

/// Quoted-printable (RFC 2045 6.7), leniently: a malformed `=` escape is kept as is.
fn decode_quoted_printable(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len());
    let mut i = 0;
    while i < body.len() {
        let b = body[i];
        if b != b'=' {
            out.push(b);
            i += 1;
            continue;
        }
        let rest = &body[i + 1..];
        // Soft line break: '=' then optional white space then a line ending.
        let ws = rest
            .iter()
            .take_while(|c| **c == b' ' || **c == b'\t')
            .count();
        match &rest[ws..] {
            [b'\r', b'\n', ..] => {
                i += 1 + ws + 2;
                continue;
            }
            [b'\n', ..] => {
                i += 1 + ws + 1;
                continue;
            }
            [] => {
                i += 1 + ws;
                continue;
            }
            _ => {}
        }
        match (
            rest.first().and_then(|c| hex_val(*c)),
            rest.get(1).and_then(|c| hex_val(*c)),
        ) {
            (Some(h), Some(l)) => {
                out.push(h << 4 | l);
                i += 3;
            }
            _ => {
                out.push(b'=');
                i += 1;
            }
        }
    }
    out
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unfolds_headers_and_finds_them_in_any_case() {
        let raw = b"Subject: a\r\n  folded\r\n\tline\r\nX-One: 1\nx-one: 2\nnot a header\n\nbody";
        let (h, end) = parse_headers(raw);
        assert_eq!(h.get("SUBJECT"), Some("a  folded\tline"));
        assert_eq!(h.get_all("X-ONE").collect::<Vec<_>>(), ["1", "2"]);
        assert_eq!(h.len(), 3);
        assert_eq!(&raw[end..], b"body");
    }

    #[test]
    fn parses_content_types_with_quoted_parameters() {
        let ct = ContentType::parse(
            "Multipart/Report; report-type=\"delivery-status\";\tboundary=\"a;b \\\"c\\\"\" (x)",
        );
        assert_eq!(ct.mime, "multipart/report");
        assert_eq!(ct.param("Report-Type"), Some("delivery-status"));
        assert_eq!(ct.param("boundary"), Some("a;b \"c\""));
        assert_eq!(ContentType::parse("garbage").mime, "text/plain");
        assert_eq!(
            ContentType::parse("text/plain; charset=us-ascii (plain)").param("charset"),
            Some("us-ascii")
        );
    }

    #[test]
    fn splits_multiparts_and_notices_a_missing_close_delimiter() {
        let body = b"preamble\r\n--b\r\nA: 1\r\n\r\none\r\n--b  \r\n\r\ntwo\r\n--b--\r\nepilogue";
        let (parts, closed) = split_multipart(body, b"b").unwrap();
        assert!(closed);
        assert_eq!(parts, [&b"A: 1\r\n\r\none"[..], &b"\r\ntwo"[..]]);
        let (parts, closed) = split_multipart(b"--b\none\n--b\ntw", b"b").unwrap();
        assert!(!closed);
        assert_eq!(parts, [&b"one"[..], &b"tw"[..]]);
        assert!(matches!(
            split_multipart(b"no delimiters", b"b"),
            Err(ReportError::BoundaryNotFound { .. })
        ));
        // A longer boundary that merely starts with ours is not a delimiter.
        let (parts, _) = split_multipart(b"--b\none\n--bx\n--b--", b"b").unwrap();
        assert_eq!(parts, [&b"one\n--bx"[..]]);
    }

    #[test]
    fn decodes_transfer_encodings() {
        assert_eq!(decode_base64(b"aGVs\r\nbG8=\r\n").unwrap(), b"hello");
        assert_eq!(decode_base64(b"aGVsbG8").unwrap(), b"hello");
        assert_eq!(decode_base64(b"a*b"), None);
        assert_eq!(
            decode_quoted_printable(b"caf=C3=A9 =\r\nsoft=\nbreak =ZZ ="),
            "café softbreak =ZZ ".as_bytes()
        );
    }
}
