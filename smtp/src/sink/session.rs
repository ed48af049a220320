//! One sink connection: reads commands in order from a buffered reader and answers
//! them, flushing replies whenever the client's input is drained (RFC 2920 server
//! behaviour, so pipelining clients get their replies in one segment).

use super::{Admitted, ReceivedMessage, Receiving, Shared, Verdict};
use crate::dot::Unstuffer;
use crate::line::{Line, read_line, trim_eol};
use crate::stream::Stream;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tracing::debug;

/// RFC 5321 section 4.5.3.1.4 allows 512 bytes; be lenient with extensions.
const MAX_COMMAND_LINE: usize = 2048;
/// RFC 5321 section 4.5.3.1.8 asks servers to take at least 100.
const MAX_RECIPIENTS: usize = 1000;
/// A data buffer larger than this is freed after the message instead of reused, so
/// idle connections hold little.
const KEEP_DATA_BUFFER: usize = 64 * 1024;
/// Commands one connection may send, so a client cannot keep a session busy forever
/// with cheap ones.
const MAX_COMMANDS: usize = 10_000;

/// Answers a connection over a limit with 421 and closes it.
pub(super) async fn refuse(mut stream: TcpStream, why: &'static str) {
    let reply = format!("421 {why}\r\n");
    let _ = timeout(Duration::from_secs(5), stream.write_all(reply.as_bytes())).await;
    let _ = timeout(Duration::from_secs(1), stream.shutdown()).await;
}

/// Serves one connection until QUIT, EOF, an I/O error, the idle timeout or the
/// session deadline.
pub(super) async fn run(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    admitted: Admitted,
) {
    // Replies are batched by hand; Nagle would only add latency.
    let _ = stream.set_nodelay(true);
    serve_stream(Stream::Plain(stream), peer, shared, admitted).await;
}

/// Serves one session over `stream` (a connection, or an in-memory pipe for tests
/// and fuzzing).
pub(super) async fn serve_stream(
    stream: Stream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    admitted: Admitted,
) {
    let _admitted = admitted;
    let deadline = shared.limits.session_timeout;
    let mut session = Session {
        shared,
        peer,
        io: BufReader::new(stream),
        out: Vec::with_capacity(512),
        line: Vec::with_capacity(256),
        data: Vec::new(),
        greeted: false,
        envelope: None,
        commands: 0,
        receiving: None,
    };
    let result = match timeout(deadline, session.serve()).await {
        Ok(result) => result,
        Err(_) => {
            session.out.clear();
            session.reply(421, "4.4.2 session too long, closing connection");
            let _ = timeout(Duration::from_secs(5), session.flush()).await;
            Err(io::Error::new(io::ErrorKind::TimedOut, "session deadline"))
        }
    };
    session.end_transaction();
    match result {
        Ok(()) => debug!(%peer, "smtp sink session closed"),
        Err(e) => debug!(%peer, error = %e, "smtp sink session ended"),
    }
}

/// The current mail transaction.
struct Envelope {
    mail_from: String,
    rcpt_to: Vec<String>,
}

/// What the read loop does after a command.
enum Flow {
    Continue,
    /// 354 was queued: flush it and read the message data.
    Data,
    /// 220 was queued for STARTTLS: flush it and run the handshake.
    StartTls,
    Quit,
}

struct Session {
    shared: Arc<Shared>,
    peer: SocketAddr,
    /// Reads are buffered; writes go straight through.
    io: BufReader<Stream>,
    /// Replies not yet written.
    out: Vec<u8>,
    line: Vec<u8>,
    data: Vec<u8>,
    greeted: bool,
    envelope: Option<Envelope>,
    commands: usize,
    /// Held while a message is received (`max_concurrent_messages`).
    receiving: Option<Receiving>,
}

impl Session {
    async fn serve(&mut self) -> io::Result<()> {
        let greeting = format!("{} ESMTP maily sink", self.shared.hostname);
        self.reply(220, &greeting);
        self.flush().await?;
        loop {
            self.line.clear();
            self.commands += 1;
            if self.commands > MAX_COMMANDS {
                self.reply(421, "4.7.0 too many commands, closing connection");
                self.flush().await?;
                return Ok(());
            }
            let read = timeout(
                self.shared.limits.idle_timeout,
                read_line(&mut self.io, &mut self.line, MAX_COMMAND_LINE),
            )
            .await;
            let flow = match read {
                Err(_) => {
                    self.reply(421, "4.4.2 idle too long, closing connection");
                    self.flush().await?;
                    return Ok(());
                }
                Ok(line) => match line? {
                    Line::Eof => return Ok(()),
                    Line::TooLong => {
                        self.reply(500, "5.5.2 line too long");
                        Flow::Continue
                    }
                    Line::Complete => self.command(),
                },
            };
            match flow {
                Flow::Continue => {}
                Flow::Data => {
                    self.flush().await?;
                    let received = self.receive_data().await;
                    self.receiving = None;
                    received?;
                }
                Flow::StartTls => {
                    self.flush().await?;
                    self.start_tls().await?;
                }
                Flow::Quit => {
                    self.flush().await?;
                    return Ok(());
                }
            }
            if self.io.buffer().is_empty() {
                self.flush().await?;
            }
        }
    }

    /// RFC 3207 server side: the handshake, then a fresh, ungreeted session.
    async fn start_tls(&mut self) -> io::Result<()> {
        let Some(config) = self.shared.tls.clone() else {
            return Err(io::Error::other("STARTTLS without a TLS configuration"));
        };
        if !self.io.buffer().is_empty() {
            // Plain-text commands pipelined after STARTTLS must not survive the upgrade.
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "client sent data after STARTTLS",
            ));
        }
        let stream = std::mem::replace(&mut self.io, BufReader::new(Stream::Detached));
        let tcp = stream
            .into_inner()
            .into_tcp()
            .ok_or_else(|| io::Error::other("STARTTLS on an encrypted session"))?;
        let tls = timeout(
            self.shared.limits.idle_timeout,
            tokio_rustls::TlsAcceptor::from(config).accept(tcp),
        )
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))??;
        self.io = BufReader::new(Stream::Server(Box::new(tls)));
        self.shared.tls_sessions.fetch_add(1, Ordering::Relaxed);
        self.greeted = false;
        self.envelope = None;
        Ok(())
    }

    /// Ends the open transaction, if any, in the concurrency count.
    fn end_transaction(&mut self) {
        if self.envelope.take().is_some() {
            self.shared.transaction_ended();
        }
    }

    /// Handles the command in `self.line`, queueing its reply.
    fn command(&mut self) -> Flow {
        let line = String::from_utf8_lossy(trim_eol(&self.line)).into_owned();
        let (verb, args) = line.split_once(' ').unwrap_or((&line, ""));
        match verb.to_ascii_uppercase().as_str() {
            "EHLO" => self.hello(args, true),
            "HELO" => self.hello(args, false),
            "MAIL" => self.mail(args),
            "RCPT" => self.rcpt(args),
            "DATA" => return self.data_command(),
            "RSET" => {
                self.end_transaction();
                self.reply(250, "2.0.0 ok");
            }
            "STARTTLS" if self.shared.tls.is_some() => {
                if self.io.get_ref().is_tls() {
                    self.reply(503, "5.5.1 TLS already active");
                } else {
                    self.reply(220, "2.0.0 ready to start TLS");
                    return Flow::StartTls;
                }
            }
            "NOOP" => self.reply(250, "2.0.0 ok"),
            "QUIT" => {
                self.reply(221, "2.0.0 bye");
                return Flow::Quit;
            }
            "VRFY" | "EXPN" | "HELP" | "STARTTLS" | "AUTH" | "BDAT" | "ETRN" | "TURN" => {
                self.reply(502, "5.5.1 command not implemented");
            }
            _ => self.reply(500, "5.5.2 command unrecognized"),
        }
        Flow::Continue
    }

    fn hello(&mut self, args: &str, extended: bool) {
        let client = args.trim();
        if client.is_empty() {
            self.reply(501, "5.5.4 a domain or address literal is required");
            return;
        }
        self.greeted = true;
        self.end_transaction();
        let host = &self.shared.hostname;
        if extended {
            let _ = write!(
                self.out,
                "250-{host} greets {client}\r\n250-PIPELINING\r\n250-8BITMIME\r\n\
                 250-SIZE {}\r\n",
                self.shared.max_message_size
            );
            if self.shared.tls.is_some() && !self.io.get_ref().is_tls() {
                self.out.extend_from_slice(b"250-STARTTLS\r\n");
            }
            self.out.extend_from_slice(b"250 ENHANCEDSTATUSCODES\r\n");
        } else {
            let _ = write!(self.out, "250 {host} greets {client}\r\n");
        }
    }

    fn mail(&mut self, args: &str) {
        if !self.greeted {
            return self.reply(503, "5.5.1 send EHLO or HELO first");
        }
        if self.envelope.is_some() {
            return self.reply(503, "5.5.1 nested MAIL command");
        }
        let Some((path, params)) = parse_path(args, "FROM:") else {
            return self.reply(501, "5.5.4 syntax: MAIL FROM:<address>");
        };
        if size_param(params).is_some_and(|size| size > self.shared.max_message_size as u64) {
            return self.reply(552, "5.3.4 message size exceeds fixed maximum message size");
        }
        self.envelope = Some(Envelope {
            mail_from: path.to_string(),
            rcpt_to: Vec::new(),
        });
        self.shared.transaction_started();
        self.reply(250, "2.1.0 sender ok");
    }

    fn rcpt(&mut self, args: &str) {
        let Some(envelope) = &mut self.envelope else {
            return self.reply(503, "5.5.1 need MAIL before RCPT");
        };
        let path = match parse_path(args, "TO:") {
            Some((path, _)) if !path.is_empty() => path,
            _ => return self.reply(501, "5.5.4 syntax: RCPT TO:<address>"),
        };
        if envelope.rcpt_to.len() >= MAX_RECIPIENTS {
            return self.reply(452, "4.5.3 too many recipients");
        }
        let verdict = match self.shared.rejection_for(path) {
            Some(reply) => Some(reply),
            None => match &self.shared.handler {
                Some(handler) => handler.check_recipient(path).err(),
                None => None,
            },
        };
        match verdict {
            Some(rejection) if rejection.code >= 400 => {
                self.shared
                    .rejected_recipients
                    .fetch_add(1, Ordering::Relaxed);
                self.reply(rejection.code, &rejection.text);
            }
            // A configured 2xx is an accepted recipient with custom text.
            Some(custom) => {
                envelope.rcpt_to.push(path.to_string());
                self.reply(custom.code, &custom.text);
            }
            None => {
                envelope.rcpt_to.push(path.to_string());
                self.reply(250, "2.1.5 recipient ok");
            }
        }
    }

    fn data_command(&mut self) -> Flow {
        match &self.envelope {
            None => self.reply(503, "5.5.1 need MAIL before DATA"),
            Some(envelope) if envelope.rcpt_to.is_empty() => {
                self.reply(554, "5.5.1 no valid recipients")
            }
            Some(_) => match self.shared.start_receiving(self.peer.ip()) {
                Some(permit) => {
                    self.receiving = Some(permit);
                    self.reply(354, "end data with <CR><LF>.<CR><LF>");
                    return Flow::Data;
                }
                None => self.reply(
                    451,
                    "4.3.2 too many messages being received, try again later",
                ),
            },
        }
        Flow::Continue
    }

    /// Reads the message data up to the terminator and queues the final reply.
    async fn receive_data(&mut self) -> io::Result<()> {
        let mut decoder = Unstuffer::new(self.shared.max_message_size);
        self.data.clear();
        let limits = self.shared.limits;
        let started = std::time::Instant::now();
        let mut received = 0u64;
        while !decoder.is_done() {
            let input = match timeout(limits.idle_timeout, self.io.fill_buf()).await {
                Ok(input) => input?,
                Err(_) => return Err(io::Error::new(io::ErrorKind::TimedOut, "data timed out")),
            };
            if input.is_empty() {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            let used = decoder.feed(input, &mut self.data);
            self.io.consume(used);
            received += used as u64;
            let elapsed = started.elapsed();
            if limits.min_data_rate > 0
                && elapsed > limits.data_grace
                && received < (limits.min_data_rate as f64 * elapsed.as_secs_f64()) as u64
            {
                self.out.clear();
                self.reply(421, "4.4.2 data too slow, closing connection");
                self.flush().await?;
                return Err(io::Error::new(io::ErrorKind::TimedOut, "data too slow"));
            }
        }
        // RFC 5321 section 4.1.1.4: the transaction ends with the data, whatever the reply.
        let envelope = self
            .envelope
            .take()
            .expect("data is only read inside a transaction");
        if decoder.overflowed() {
            self.shared.transaction_ended();
            self.reply(552, "5.3.4 message exceeds fixed maximum message size");
        } else if let Some(handler) = self.shared.handler.clone() {
            let message = ReceivedMessage {
                mail_from: envelope.mail_from,
                rcpt_to: envelope.rcpt_to,
                data: std::mem::take(&mut self.data),
                peer: self.peer,
                tls: self.io.get_ref().is_tls(),
                at: std::time::Instant::now(),
            };
            let verdict = handler.message(message).await;
            self.shared.transaction_ended();
            match verdict {
                Verdict::Accept => {
                    let id = self.shared.count_accepted();
                    self.reply(250, &format!("2.0.0 ok: queued as {id:08X}"));
                }
                Verdict::Refuse(reply) => self.reply(reply.code, &reply.text),
            }
        } else {
            let data = if self.shared.capture {
                std::mem::take(&mut self.data)
            } else {
                Vec::new()
            };
            let message = ReceivedMessage {
                mail_from: envelope.mail_from,
                rcpt_to: envelope.rcpt_to,
                data,
                peer: self.peer,
                tls: self.io.get_ref().is_tls(),
                at: std::time::Instant::now(),
            };
            self.shared.transaction_ended();
            let id = self.shared.accept(message);
            self.reply(250, &format!("2.0.0 ok: queued as {id:08X}"));
        }
        if self.data.capacity() > KEEP_DATA_BUFFER {
            self.data = Vec::new();
        }
        Ok(())
    }

    fn reply(&mut self, code: u16, text: &str) {
        // Configured texts must not break the reply framing.
        let text = text.replace(['\r', '\n'], " ");
        let _ = write!(self.out, "{code} {text}\r\n");
    }

    async fn flush(&mut self) -> io::Result<()> {
        if !self.out.is_empty() {
            self.io.get_mut().write_all(&self.out).await?;
            self.out.clear();
        }
        Ok(())
    }
}

/// Splits `FROM:<path> params` (or `TO:...`) into the path and the parameters.
fn parse_path<'a>(args: &'a str, keyword: &str) -> Option<(&'a str, &'a str)> {
    let args = args.trim_start();
    let head = args.get(..keyword.len())?;
    if !head.eq_ignore_ascii_case(keyword) {
        return None;
    }
    let rest = args[keyword.len()..].trim_start().strip_prefix('<')?;
    let end = rest.find('>')?;
    Some((&rest[..end], rest[end + 1..].trim()))
}

/// The `SIZE=n` parameter of MAIL FROM (RFC 1870), if present and numeric.
fn size_param(params: &str) -> Option<u64> {
    params.split_ascii_whitespace().find_map(|p| {
        let (key, value) = p.split_once('=')?;
        key.eq_ignore_ascii_case("SIZE")
            .then(|| value.parse().ok())
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_paths_and_parameters() {
        assert_eq!(
            parse_path("FROM:<a@x.org> SIZE=10", "FROM:"),
            Some(("a@x.org", "SIZE=10"))
        );
        assert_eq!(parse_path("from: <>", "FROM:"), Some(("", "")));
        assert_eq!(parse_path("TO:<b@y.org>", "TO:"), Some(("b@y.org", "")));
        assert_eq!(parse_path("TO:b@y.org", "TO:"), None);
        assert_eq!(parse_path("FROM:<a@x.org>", "TO:"), None);
        assert_eq!(parse_path("", "TO:"), None);
        assert_eq!(size_param("BODY=8BITMIME size=42"), Some(42));
        assert_eq!(size_param("SIZE=lots"), None);
        assert_eq!(size_param(""), None);
    }
}
