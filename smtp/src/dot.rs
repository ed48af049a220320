//! Dot-stuffing of message data (RFC 5321 section 4.5.2).
//!
//! Lines end with CRLF. Sending, a bare `\n` or `\r` in the data goes out as CRLF, so
//! every line break on the wire is one, every line after it is stuffed, and no reading
//! of the data (a strict server's or a lenient one's that ends lines at a bare LF) finds
//! a terminator (`\n.\n`, `\r\n.\n`, ...) before ours: a message cannot smuggle SMTP
//! commands to the next server. Receiving, a bare `\n` or `\r` is ordinary data.

/// Appends `data` to `out` as it is sent after a 354 reply.
///
/// Bare CR and LF become CRLF, every line that starts with `.` gets another `.`, a
/// missing final CRLF is added (the server treats it as part of the message), and the
/// terminating `.` CRLF follows.
pub fn dot_stuff(data: &[u8], out: &mut Vec<u8>) {
    // A line starting with '.' is rare; reserve for the common case only.
    out.reserve(data.len() + 5);
    let mut copied = 0;
    let mut i = 0;
    let mut line_start = true;
    while i < data.len() {
        let Some(offset) = data[i..]
            .iter()
            .position(|&b| b == b'\r' || b == b'\n' || (line_start && b == b'.'))
        else {
            break;
        };
        let at = i + offset;
        if offset > 0 {
            line_start = false;
        }
        match data[at] {
            b'.' if line_start => {
                out.extend_from_slice(&data[copied..at]);
                out.push(b'.');
                copied = at;
                line_start = false;
                i = at + 1;
            }
            b'.' => {
                line_start = false;
                i = at + 1;
            }
            b'\r' if data.get(at + 1) == Some(&b'\n') => {
                line_start = true;
                i = at + 2;
            }
            _ => {
                // A bare CR or LF: the wire gets CRLF.
                out.extend_from_slice(&data[copied..at]);
                out.extend_from_slice(b"\r\n");
                copied = at + 1;
                line_start = true;
                i = at + 1;
            }
        }
    }
    out.extend_from_slice(&data[copied..]);
    if !data.is_empty() && !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
}

/// Where the decoder stands in the line structure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of a line.
    LineStart,
    /// Saw `.` at the start of a line.
    Dot,
    /// Saw `.` CR at the start of a line: LF now ends the data.
    DotCr,
    /// Inside a line.
    Mid,
    /// Just after a CR.
    Cr,
    /// The terminating `.` CRLF has been read.
    Done,
}

/// Incremental decoder for dot-stuffed data, fed as it arrives after a 354 reply.
///
/// It stops right after the terminating `.` CRLF, so commands that a pipelining
/// client sends behind the data are left in the caller's buffer.
#[derive(Debug, Clone)]
pub struct Unstuffer {
    state: State,
    limit: usize,
    overflowed: bool,
}

impl Unstuffer {
    /// A decoder that keeps at most `limit` bytes of decoded data.
    pub fn new(limit: usize) -> Self {
        Unstuffer {
            state: State::LineStart,
            limit,
            overflowed: false,
        }
    }

    /// Decodes `input` into `out` and returns how many input bytes were used; fewer
    /// than `input.len()` only when the terminator was reached.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> usize {
        let mut i = 0;
        while i < input.len() {
            match self.state {
                State::Done => return i,
                State::Mid => match input[i..].iter().position(|&b| b == b'\r') {
                    Some(offset) => {
                        self.emit(out, &input[i..=i + offset]);
                        i += offset + 1;
                        self.state = State::Cr;
                    }
                    None => {
                        self.emit(out, &input[i..]);
                        i = input.len();
                    }
                },
                State::LineStart => {
                    let b = input[i];
                    i += 1;
                    if b == b'.' {
                        self.state = State::Dot;
                    } else {
                        self.emit(out, &[b]);
                        self.state = if b == b'\r' { State::Cr } else { State::Mid };
                    }
                }
                State::Dot => {
                    if input[i] == b'\r' {
                        i += 1;
                        self.state = State::DotCr;
                    } else {
                        // The leading dot was stuffing: drop it, the byte is line content.
                        self.state = State::Mid;
                    }
                }
                State::DotCr => {
                    if input[i] == b'\n' {
                        self.state = State::Done;
                        return i + 1;
                    }
                    // "." CR without LF is not the terminator: the CR is data.
                    self.emit(out, b"\r");
                    self.state = State::Cr;
                }
                State::Cr => match input[i] {
                    b'\n' => {
                        self.emit(out, b"\n");
                        i += 1;
                        self.state = State::LineStart;
                    }
                    b'\r' => {
                        self.emit(out, b"\r");
                        i += 1;
                    }
                    _ => self.state = State::Mid,
                },
            }
        }
        i
    }

    /// Whether the terminating `.` CRLF has been read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Whether the data grew past the limit; `out` then holds an incomplete prefix.
    pub fn overflowed(&self) -> bool {
        self.overflowed
    }

    fn emit(&mut self, out: &mut Vec<u8>, bytes: &[u8]) {
        // Once over the limit nothing more is kept: a truncated message is useless and
        // the point of the limit is bounded memory.
        if self.overflowed {
            return;
        }
        if out.len() + bytes.len() > self.limit {
            self.overflowed = true;
        } else {
            out.extend_from_slice(bytes);
        }
    }
}

/// Why a complete wire form could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnstuffError {
    #[error("data ends without the terminating <CRLF>.<CRLF>")]
    Unterminated,
    #[error("{0} bytes follow the terminating <CRLF>.<CRLF>")]
    TrailingData(usize),
}

/// Decodes a complete dot-stuffed wire form (as produced by [`dot_stuff`]).
pub fn dot_unstuff(wire: &[u8]) -> Result<Vec<u8>, UnstuffError> {
    let mut decoder = Unstuffer::new(usize::MAX);
    let mut out = Vec::with_capacity(wire.len());
    let used = decoder.feed(wire, &mut out);
    if !decoder.is_done() {
        return Err(UnstuffError::Unterminated);
    }
    if used < wire.len() {
        return Err(UnstuffError::TrailingData(wire.len() - used));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn stuffed(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        dot_stuff(data, &mut out);
        out
    }

    /// What the receiver ends up with: the data with bare CR and LF as CRLF and a
    /// final CRLF.
    fn normalized(data: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        let mut i = 0;
        while i < data.len() {
            match data[i] {
                b'\r' if data.get(i + 1) == Some(&b'\n') => {
                    v.extend_from_slice(b"\r\n");
                    i += 2;
                    continue;
                }
                b'\r' | b'\n' => v.extend_from_slice(b"\r\n"),
                b => v.push(b),
            }
            i += 1;
        }
        if !v.is_empty() && !v.ends_with(b"\r\n") {
            v.extend_from_slice(b"\r\n");
        }
        v
    }

    /// Whether `wire` holds a bare CR or LF before its terminator: where a lenient
    /// server could find an early end of data (a dot after it would go unstuffed).
    fn smuggles(wire: &[u8]) -> bool {
        let body = &wire[..wire.len() - 3];
        body.iter().enumerate().any(|(i, &b)| match b {
            b'\r' => body.get(i + 1) != Some(&b'\n'),
            b'\n' => i == 0 || body[i - 1] != b'\r',
            _ => false,
        })
    }

    #[test]
    fn stuffs_leading_dots_and_terminates() {
        assert_eq!(stuffed(b""), b".\r\n");
        assert_eq!(stuffed(b"a\r\n"), b"a\r\n.\r\n");
        assert_eq!(stuffed(b"a"), b"a\r\n.\r\n");
        assert_eq!(
            stuffed(b".\r\n..x\r\nb.c\r\n.\r\n"),
            b"..\r\n...x\r\nb.c\r\n..\r\n.\r\n"
        );
        // A bare LF or CR goes out as CRLF and starts a line, stuffed like any other.
        assert_eq!(stuffed(b"a\n.b\r\n"), b"a\r\n..b\r\n.\r\n");
        assert_eq!(
            stuffed(b"a\n.\nMAIL FROM:<x>"),
            b"a\r\n..\r\nMAIL FROM:<x>\r\n.\r\n"
        );
        assert_eq!(stuffed(b"a\r.\r\n"), b"a\r\n..\r\n.\r\n");
    }

    #[test]
    fn decoding_stops_at_the_terminator_and_honours_the_limit() {
        let mut d = Unstuffer::new(1024);
        let mut out = Vec::new();
        let wire = b"..hi\r\n.\r\nQUIT\r\n";
        let used = d.feed(wire, &mut out);
        assert!(d.is_done());
        assert_eq!(&wire[used..], b"QUIT\r\n");
        assert_eq!(out, b".hi\r\n");

        let mut d = Unstuffer::new(4);
        let mut out = Vec::new();
        d.feed(b"hello\r\n.\r\n", &mut out);
        assert!(d.is_done() && d.overflowed());

        assert_eq!(dot_unstuff(b"abc\r\n"), Err(UnstuffError::Unterminated));
        assert_eq!(dot_unstuff(b".\r\nx"), Err(UnstuffError::TrailingData(1)));
    }

    #[test]
    fn decodes_when_fed_one_byte_at_a_time() {
        let body = b"x\r\n.\r\n..\r\n.\ry\r\n";
        let wire = stuffed(body);
        let mut d = Unstuffer::new(usize::MAX);
        let mut out = Vec::new();
        for b in &wire {
            assert_eq!(d.feed(std::slice::from_ref(b), &mut out), 1);
        }
        assert!(d.is_done());
        assert_eq!(out, normalized(body));
    }

    fn line_bodies() -> impl Strategy<Value = Vec<u8>> {
        let line = prop_oneof![
            Just(String::new()),
            Just(".".to_string()),
            Just("..".to_string()),
            "\\.{0,3}[a-z .]{0,10}",
        ];
        prop::collection::vec(line, 0..8).prop_map(|lines| {
            let mut body = Vec::new();
            for l in lines {
                body.extend_from_slice(l.as_bytes());
                body.extend_from_slice(b"\r\n");
            }
            body
        })
    }

    proptest! {
        #[test]
        fn unstuffing_inverts_stuffing_for_arbitrary_bytes(
            body in prop::collection::vec(
                prop_oneof![Just(b'.'), Just(b'\r'), Just(b'\n'), any::<u8>()],
                0..200,
            )
        ) {
            let wire = stuffed(&body);
            prop_assert!(!smuggles(&wire), "{:?}", String::from_utf8_lossy(&wire));
            prop_assert_eq!(dot_unstuff(&wire), Ok(normalized(&body)));
        }

        #[test]
        fn unstuffing_inverts_stuffing_for_crlf_messages(body in line_bodies()) {
            prop_assert_eq!(dot_unstuff(&stuffed(&body)), Ok(body));
        }

        #[test]
        fn chunking_does_not_change_the_result(
            body in prop::collection::vec(
                prop_oneof![Just(b'.'), Just(b'\r'), Just(b'\n'), Just(b'a')],
                0..100,
            ),
            chunk in 1usize..7,
        ) {
            let wire = stuffed(&body);
            let mut d = Unstuffer::new(usize::MAX);
            let mut out = Vec::new();
            let mut used = 0;
            for piece in wire.chunks(chunk) {
                used += d.feed(piece, &mut out);
            }
            prop_assert!(d.is_done());
            prop_assert_eq!(used, wire.len());
            prop_assert_eq!(out, normalized(&body));
        }
    }
}
