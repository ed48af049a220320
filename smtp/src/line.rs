//! Bounded line reading, shared by the client and the sink.

use std::io;
use tokio::io::{AsyncBufRead, AsyncBufReadExt};

/// How a bounded line read ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Line {
    /// A whole line, through its `\n`, is in the buffer.
    Complete,
    /// The line was longer than the limit; its head is in the buffer, the rest was
    /// consumed and dropped so the stream stays in step with the peer.
    TooLong,
    /// The peer closed the stream before a `\n`; any partial line is in the buffer.
    Eof,
}

/// Appends one line (through its `\n`) to `buf`, keeping at most `max` bytes.
///
/// `read_until` would grow the buffer without bound for a peer that never sends a
/// newline; this keeps memory per connection fixed.
pub(crate) async fn read_line<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> io::Result<Line> {
    let mut too_long = false;
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(Line::Eof);
        }
        let (chunk, complete) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (&available[..=i], true),
            None => (available, false),
        };
        let room = max.saturating_sub(buf.len());
        if chunk.len() > room {
            too_long = true;
            buf.extend_from_slice(&chunk[..room]);
        } else {
            buf.extend_from_slice(chunk);
        }
        let used = chunk.len();
        reader.consume(used);
        if complete {
            return Ok(if too_long {
                Line::TooLong
            } else {
                Line::Complete
            });
        }
    }
}

/// The line without its trailing CRLF (or bare LF).
pub(crate) fn trim_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::BufReader;

    #[tokio::test]
    async fn overlong_lines_are_cut_and_the_stream_stays_in_step() {
        let input: &[u8] = b"short\r\nthis line is far too long\r\nnext\r\npartial";
        let mut r = BufReader::with_capacity(4, input);
        let mut buf = Vec::new();
        assert_eq!(
            read_line(&mut r, &mut buf, 10).await.unwrap(),
            Line::Complete
        );
        assert_eq!(buf, b"short\r\n");
        buf.clear();
        assert_eq!(
            read_line(&mut r, &mut buf, 10).await.unwrap(),
            Line::TooLong
        );
        assert_eq!(buf, b"this line ");
        buf.clear();
        assert_eq!(
            read_line(&mut r, &mut buf, 10).await.unwrap(),
            Line::Complete
        );
        assert_eq!(trim_eol(&buf), b"next");
        buf.clear();
        assert_eq!(read_line(&mut r, &mut buf, 10).await.unwrap(), Line::Eof);
        assert_eq!(buf, b"partial");
    }
}
