//! One client SMTP session: greeting, EHLO, mail transactions, RSET and QUIT.
//!
//! The transport owns pooling and outcome mapping; this module only speaks the
//! protocol and reports what the server said or why the conversation broke.

use crate::dot::dot_stuff;
use crate::line::{Line, read_line, trim_eol};
use crate::stream::Stream;
use crate::tls::TlsMode;
use maily_engine::ports::{OutboundMessage, Route};
use maily_engine::reply::SmtpReply;
use rustls::pki_types::ServerName;
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::timeout;

/// RFC 5321 allows 512 bytes per reply line; leave room for chatty servers.
const MAX_REPLY_LINE: usize = 4096;
/// Bounds a multi-line reply so a hostile server cannot grow it forever.
const MAX_REPLY_LINES: usize = 128;
/// A write buffer that grew past this for a large message is shrunk afterwards, so an
/// idle pooled connection does not pin megabytes.
const KEEP_WRITE_BUFFER: usize = 1 << 20;

/// The command (or stage) a reply or failure belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    Greeting,
    Ehlo,
    Helo,
    StartTls,
    Mail,
    Rcpt,
    Data,
    EndOfData,
    Rset,
    Quit,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Step::Greeting => "greeting",
            Step::Ehlo => "EHLO",
            Step::Helo => "HELO",
            Step::StartTls => "STARTTLS",
            Step::Mail => "MAIL FROM",
            Step::Rcpt => "RCPT TO",
            Step::Data => "DATA",
            Step::EndOfData => "end of data",
            Step::Rset => "RSET",
            Step::Quit => "QUIT",
        })
    }
}

/// Why a session cannot go on; the connection is unusable afterwards.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SessionError {
    #[error("connecting to {peer} failed: {source}")]
    Connect { peer: String, source: io::Error },
    #[error("connecting to {peer} timed out after {after:?}")]
    ConnectTimeout { peer: String, after: Duration },
    #[error("i/o error with {peer} at {step}: {source}")]
    Io {
        peer: String,
        step: Step,
        source: io::Error,
    },
    #[error("{peer} did not answer {step} within {after:?}")]
    Timeout {
        peer: String,
        step: Step,
        after: Duration,
    },
    #[error("{peer} closed the connection at {step}")]
    Closed { peer: String, step: Step },
    #[error("malformed reply from {peer} to {step}: {detail}")]
    Malformed {
        peer: String,
        step: Step,
        detail: String,
    },
    #[error("{peer} refused the session at {step}: {reply}")]
    Refused {
        peer: String,
        step: Step,
        reply: SmtpReply,
    },
    #[error("TLS with {peer} is required but {reason}")]
    TlsRequired { peer: String, reason: String },
    #[error("TLS handshake with {peer} failed: {source}")]
    Handshake { peer: String, source: io::Error },
    #[error("{peer} answered {step} with an unexpected reply: {reply}")]
    Unexpected {
        peer: String,
        step: Step,
        reply: SmtpReply,
    },
}

impl SessionError {
    /// The server's reply, when it refused the session (greeting, EHLO or HELO).
    pub(crate) fn refusal(&self) -> Option<&SmtpReply> {
        match self {
            SessionError::Refused { reply, .. } => Some(reply),
            _ => None,
        }
    }

    /// Whether the route's host had only addresses a DNS route may not use.
    pub(crate) fn is_not_public(&self) -> bool {
        matches!(self, SessionError::Connect { source, .. }
            if source.kind() == io::ErrorKind::PermissionDenied
                && source.to_string().contains(NOT_PUBLIC))
    }

    /// Whether this is how a server that dropped an idle connection shows up on the
    /// first command of the next transaction: EOF, reset or broken pipe.
    pub(crate) fn is_stale_connection(&self) -> bool {
        matches!(
            self,
            SessionError::Closed {
                step: Step::Mail,
                ..
            } | SessionError::Io {
                step: Step::Mail,
                ..
            }
        )
    }
}

/// What the server advertised in its EHLO reply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Capabilities {
    pub pipelining: bool,
    /// `SIZE`, with its limit (0: no fixed limit).
    pub size: Option<u64>,
    pub eight_bit_mime: bool,
    pub enhanced_status_codes: bool,
    pub starttls: bool,
}

impl Capabilities {
    /// Parses the keyword lines of an EHLO reply (all lines after the first).
    pub(crate) fn parse<S: AsRef<str>>(lines: &[S]) -> Self {
        let mut caps = Capabilities::default();
        for line in lines.iter().skip(1) {
            let text = line.as_ref().get(4..).unwrap_or("");
            let mut words = text.split_ascii_whitespace();
            let keyword = words.next().unwrap_or("").to_ascii_uppercase();
            match keyword.as_str() {
                "PIPELINING" => caps.pipelining = true,
                "SIZE" => caps.size = Some(words.next().and_then(|n| n.parse().ok()).unwrap_or(0)),
                "8BITMIME" => caps.eight_bit_mime = true,
                "ENHANCEDSTATUSCODES" => caps.enhanced_status_codes = true,
                "STARTTLS" => caps.starttls = true,
                _ => {}
            }
        }
        caps
    }
}

/// How one mail transaction ended, when the conversation itself stayed intact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TxResult {
    /// The final reply to the data was positive.
    Delivered(SmtpReply),
    /// A 4xx or 5xx reply at `step`; the server may still hold transaction state.
    Rejected { step: Step, reply: SmtpReply },
}

/// Why reading a reply failed, before the peer and step are attached.
enum ReadFail {
    Io(io::Error),
    Closed,
    Malformed(String),
}

/// How to open a connection.
#[derive(Clone)]
pub(crate) struct ConnectOptions {
    pub helo_name: String,
    pub connect_timeout: Duration,
    pub command_timeout: Duration,
    /// The local address to send from (a source-IP pool member); any when `None`.
    pub local: Option<IpAddr>,
    pub tls: TlsMode,
    pub tls_config: Arc<rustls::ClientConfig>,
}

/// An open, greeted SMTP connection.
pub(crate) struct Connection {
    peer: String,
    /// Reads are buffered; writes go straight through to the stream.
    io: BufReader<Stream>,
    /// Each write is built here and sent with one `write_all`, so a pipelined group
    /// leaves in one segment.
    wbuf: Vec<u8>,
    line: Vec<u8>,
    lines: Vec<String>,
    caps: Capabilities,
    transactions: usize,
    command_timeout: Duration,
}

/// Whether `ip` is an address of the public internet: not loopback, private (RFC 1918,
/// unique local), shared (CGNAT), link-local, unspecified, multicast, broadcast or
/// documentation, including IPv4 addresses mapped into IPv6.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || first == 0x2001 && v6.segments()[1] == 0x0db8)
        }
    }
}

/// The error of a route whose host has no public address.
pub(crate) const NOT_PUBLIC: &str = "resolves only to addresses that are not public";

/// Opens the TCP connection, from `local` when given: every address of the host in
/// the same family is tried in turn. A [`Route::public_only`] route (from DNS) is
/// never connected to an address that is not public.
async fn connect(route: &Route, local: Option<IpAddr>) -> io::Result<TcpStream> {
    if local.is_none() && !route.public_only {
        return TcpStream::connect((route.host.as_str(), route.port)).await;
    }
    let mut last = None;
    let mut refused = false;
    for addr in tokio::net::lookup_host((route.host.as_str(), route.port)).await? {
        if route.public_only && !is_public(addr.ip()) {
            refused = true;
            continue;
        }
        let Some(local) = local else {
            match TcpStream::connect(addr).await {
                Ok(stream) => return Ok(stream),
                Err(e) => {
                    last = Some(e);
                    continue;
                }
            }
        };
        if addr.is_ipv4() != local.is_ipv4() {
            continue;
        }
        let socket = if local.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        socket.bind(SocketAddr::new(local, 0))?;
        match socket.connect(addr).await {
            Ok(stream) => return Ok(stream),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        if refused {
            io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "{} {NOT_PUBLIC} (loopback, private or reserved): not connected \
                     (smtp.allow_private_mx)",
                    route.host
                ),
            )
        } else {
            io::Error::new(
                io::ErrorKind::AddrNotAvailable,
                match local {
                    Some(local) => format!(
                        "{} has no address of the family of source address {local}",
                        route.host
                    ),
                    None => format!("{} has no address", route.host),
                },
            )
        }
    }))
}

/// `host:port`, with brackets around an IPv6 host.
pub(crate) fn peer_name(route: &Route) -> String {
    if route.host.contains(':') {
        format!("[{}]:{}", route.host, route.port)
    } else {
        format!("{}:{}", route.host, route.port)
    }
}

impl Connection {
    /// Connects, reads the greeting, says EHLO (HELO if EHLO is refused) and, as the
    /// TLS mode asks, upgrades with STARTTLS and says EHLO again.
    pub(crate) async fn open(
        route: &Route,
        options: &ConnectOptions,
    ) -> Result<Self, SessionError> {
        let peer = peer_name(route);
        let connect_timeout = options.connect_timeout;
        let stream = match timeout(connect_timeout, connect(route, options.local)).await {
            Err(_) => {
                return Err(SessionError::ConnectTimeout {
                    peer,
                    after: connect_timeout,
                });
            }
            Ok(Err(source)) => return Err(SessionError::Connect { peer, source }),
            Ok(Ok(stream)) => stream,
        };
        // We batch writes ourselves; Nagle would only delay the pipelined group.
        if let Err(source) = stream.set_nodelay(true) {
            return Err(SessionError::Connect { peer, source });
        }
        let command_timeout = options.command_timeout;
        let mut conn = Connection {
            peer,
            io: BufReader::new(Stream::Plain(stream)),
            wbuf: Vec::with_capacity(4096),
            line: Vec::with_capacity(256),
            lines: Vec::new(),
            caps: Capabilities::default(),
            transactions: 0,
            command_timeout,
        };
        let greeting = conn.read_reply(Step::Greeting).await?;
        if greeting.code != 220 {
            return Err(conn.refused(Step::Greeting, greeting));
        }
        conn.hello(&options.helo_name).await?;
        match options.tls {
            TlsMode::Off => {}
            TlsMode::Opportunistic if !conn.caps.starttls => {}
            TlsMode::Required if !conn.caps.starttls => {
                let peer = conn.peer.clone();
                conn.quit().await;
                return Err(SessionError::TlsRequired {
                    peer,
                    reason: "the server does not offer STARTTLS".into(),
                });
            }
            TlsMode::Opportunistic | TlsMode::Required => {
                conn.start_tls(route, options).await?;
            }
        }
        Ok(conn)
    }

    /// RFC 3207: STARTTLS, the handshake, then EHLO again (capabilities may differ).
    async fn start_tls(
        &mut self,
        route: &Route,
        options: &ConnectOptions,
    ) -> Result<(), SessionError> {
        self.command(format_args!("STARTTLS"));
        self.flush(Step::StartTls).await?;
        let reply = self.read_reply(Step::StartTls).await?;
        if reply.code != 220 {
            return Err(self.refused(Step::StartTls, reply));
        }
        if !self.io.buffer().is_empty() {
            // Plain-text bytes after 220 would be read as if they came over TLS.
            return Err(SessionError::Malformed {
                peer: self.peer.clone(),
                step: Step::StartTls,
                detail: "data sent after the 220 reply to STARTTLS".into(),
            });
        }
        let stream = std::mem::replace(&mut self.io, BufReader::new(Stream::Detached));
        let tcp = stream
            .into_inner()
            .into_tcp()
            .expect("STARTTLS is only sent on a plain connection");
        let name = match route.host.parse::<IpAddr>() {
            Ok(ip) => ServerName::IpAddress(ip.into()),
            Err(_) => {
                ServerName::try_from(route.host.clone()).map_err(|e| SessionError::Handshake {
                    peer: self.peer.clone(),
                    source: io::Error::new(io::ErrorKind::InvalidInput, e),
                })?
            }
        };
        let connector = tokio_rustls::TlsConnector::from(Arc::clone(&options.tls_config));
        let tls = match timeout(self.command_timeout, connector.connect(name, tcp)).await {
            Err(_) => {
                return Err(SessionError::Timeout {
                    peer: self.peer.clone(),
                    step: Step::StartTls,
                    after: self.command_timeout,
                });
            }
            Ok(Err(source)) => {
                return Err(SessionError::Handshake {
                    peer: self.peer.clone(),
                    source,
                });
            }
            Ok(Ok(tls)) => tls,
        };
        self.io = BufReader::new(Stream::Client(Box::new(tls)));
        self.caps = Capabilities::default();
        self.hello(&options.helo_name).await
    }

    /// Whether the session runs over TLS.
    pub(crate) fn is_tls(&self) -> bool {
        self.io.get_ref().is_tls()
    }

    async fn hello(&mut self, helo_name: &str) -> Result<(), SessionError> {
        self.command(format_args!("EHLO {helo_name}"));
        self.flush(Step::Ehlo).await?;
        let reply = self.read_reply(Step::Ehlo).await?;
        if reply.code == 250 {
            self.caps = Capabilities::parse(&self.lines);
            return Ok(());
        }
        if !reply.is_permanent() {
            return Err(self.refused(Step::Ehlo, reply));
        }
        // RFC 5321 section 3.2: an old server refuses EHLO; fall back to HELO.
        self.command(format_args!("HELO {helo_name}"));
        self.flush(Step::Helo).await?;
        let reply = self.read_reply(Step::Helo).await?;
        if reply.code != 250 {
            return Err(self.refused(Step::Helo, reply));
        }
        self.caps = Capabilities::default();
        Ok(())
    }

    /// `host:port` of the server.
    pub(crate) fn peer(&self) -> &str {
        &self.peer
    }

    /// What the server advertised.
    pub(crate) fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    /// Transactions started on this connection.
    pub(crate) fn transactions(&self) -> usize {
        self.transactions
    }

    /// Runs one mail transaction, pipelined when the server allows it.
    pub(crate) async fn transact(
        &mut self,
        message: &OutboundMessage,
    ) -> Result<TxResult, SessionError> {
        self.transactions += 1;
        self.mail_from(message);
        if self.caps.pipelining {
            self.command(format_args!("RCPT TO:<{}>", message.rcpt_to));
            self.command(format_args!("DATA"));
            self.flush(Step::Mail).await?;
            if let Some(result) = self.read_pipelined().await? {
                return Ok(result);
            }
        } else {
            self.flush(Step::Mail).await?;
            let mail = self.read_reply(Step::Mail).await?;
            if !mail.is_positive() {
                return self.rejected(Step::Mail, mail);
            }
            self.command(format_args!("RCPT TO:<{}>", message.rcpt_to));
            self.flush(Step::Rcpt).await?;
            let rcpt = self.read_reply(Step::Rcpt).await?;
            if !rcpt.is_positive() {
                return self.rejected(Step::Rcpt, rcpt);
            }
            self.command(format_args!("DATA"));
            self.flush(Step::Data).await?;
            let data = self.read_reply(Step::Data).await?;
            if data.code != 354 {
                return self.rejected(Step::Data, data);
            }
        }
        dot_stuff(&message.data, &mut self.wbuf);
        self.flush(Step::EndOfData).await?;
        let end = self.read_reply(Step::EndOfData).await?;
        if end.is_positive() {
            Ok(TxResult::Delivered(end))
        } else {
            self.rejected(Step::EndOfData, end)
        }
    }

    /// Writes MAIL FROM with the SIZE (RFC 1870) and BODY (RFC 6152) parameters the
    /// server understands.
    fn mail_from(&mut self, message: &OutboundMessage) {
        use std::io::Write;
        let _ = write!(self.wbuf, "MAIL FROM:<{}>", message.mail_from);
        if self.caps.size.is_some() {
            let _ = write!(self.wbuf, " SIZE={}", message.data.len());
        }
        if self.caps.eight_bit_mime && !message.data.is_ascii() {
            self.wbuf.extend_from_slice(b" BODY=8BITMIME");
        }
        self.wbuf.extend_from_slice(b"\r\n");
    }

    /// Reads the replies to a pipelined MAIL, RCPT, DATA group; `None` means DATA got
    /// 354 and the message data may follow.
    async fn read_pipelined(&mut self) -> Result<Option<TxResult>, SessionError> {
        let mail = self.read_reply(Step::Mail).await?;
        // 421 means the server is closing: the other replies will never come.
        if mail.code == 421 {
            return self.rejected(Step::Mail, mail).map(Some);
        }
        let rcpt = self.read_reply(Step::Rcpt).await?;
        if rcpt.code == 421 {
            return self.rejected(Step::Rcpt, rcpt).map(Some);
        }
        let data = self.read_reply(Step::Data).await?;
        let first_negative = if !mail.is_positive() {
            Some((Step::Mail, mail))
        } else if !rcpt.is_positive() {
            Some((Step::Rcpt, rcpt))
        } else {
            None
        };
        match first_negative {
            Some((step, reply)) => {
                if data.code == 354 {
                    // RFC 2920 section 3.1: DATA was accepted without a recipient, so
                    // end the (empty) data to get the server out of data mode.
                    self.wbuf.extend_from_slice(b".\r\n");
                    self.flush(Step::EndOfData).await?;
                    self.read_reply(Step::EndOfData).await?;
                }
                self.rejected(step, reply).map(Some)
            }
            None if data.code == 354 => Ok(None),
            None => self.rejected(Step::Data, data).map(Some),
        }
    }

    /// Classifies a reply that is not the hoped-for one: 4xx/5xx are rejections the
    /// session survives, anything else means we no longer understand the server.
    fn rejected(&self, step: Step, reply: SmtpReply) -> Result<TxResult, SessionError> {
        if reply.is_transient() || reply.is_permanent() {
            Ok(TxResult::Rejected { step, reply })
        } else {
            Err(SessionError::Unexpected {
                peer: self.peer.clone(),
                step,
                reply,
            })
        }
    }

    /// Sends RSET; true when the server confirmed, i.e. the connection is reusable.
    pub(crate) async fn reset(&mut self) -> bool {
        self.command(format_args!("RSET"));
        if self.flush(Step::Rset).await.is_err() {
            return false;
        }
        matches!(self.read_reply(Step::Rset).await, Ok(r) if r.code == 250)
    }

    /// Says goodbye; failures do not matter because the connection is dropped anyway.
    pub(crate) async fn quit(mut self) {
        self.command(format_args!("QUIT"));
        if self.flush(Step::Quit).await.is_ok() {
            let _ = self.read_reply(Step::Quit).await;
        }
    }

    fn command(&mut self, command: fmt::Arguments<'_>) {
        use std::io::Write;
        // Writing into a Vec cannot fail.
        let _ = write!(self.wbuf, "{command}\r\n");
    }

    async fn flush(&mut self, step: Step) -> Result<(), SessionError> {
        let result = timeout(
            self.command_timeout,
            self.io.get_mut().write_all(&self.wbuf),
        )
        .await;
        self.wbuf.clear();
        if self.wbuf.capacity() > KEEP_WRITE_BUFFER {
            self.wbuf.shrink_to(4096);
        }
        match result {
            Err(_) => Err(SessionError::Timeout {
                peer: self.peer.clone(),
                step,
                after: self.command_timeout,
            }),
            Ok(Err(source)) => Err(SessionError::Io {
                peer: self.peer.clone(),
                step,
                source,
            }),
            Ok(Ok(())) => Ok(()),
        }
    }

    /// Reads one complete reply; its raw lines stay in `self.lines`.
    async fn read_reply(&mut self, step: Step) -> Result<SmtpReply, SessionError> {
        let result = timeout(self.command_timeout, self.read_reply_lines()).await;
        let fail = match result {
            Ok(Ok(())) => match SmtpReply::parse_lines(&self.lines) {
                Ok(reply) => return Ok(reply),
                Err(e) => ReadFail::Malformed(e.to_string()),
            },
            Ok(Err(fail)) => fail,
            Err(_) => {
                return Err(SessionError::Timeout {
                    peer: self.peer.clone(),
                    step,
                    after: self.command_timeout,
                });
            }
        };
        let peer = self.peer.clone();
        Err(match fail {
            ReadFail::Io(source) => SessionError::Io { peer, step, source },
            ReadFail::Closed => SessionError::Closed { peer, step },
            ReadFail::Malformed(detail) => SessionError::Malformed { peer, step, detail },
        })
    }

    async fn read_reply_lines(&mut self) -> Result<(), ReadFail> {
        self.lines.clear();
        loop {
            self.line.clear();
            match read_line(&mut self.io, &mut self.line, MAX_REPLY_LINE)
                .await
                .map_err(ReadFail::Io)?
            {
                Line::Complete => {}
                Line::TooLong => {
                    return Err(ReadFail::Malformed(format!(
                        "reply line longer than {MAX_REPLY_LINE} bytes"
                    )));
                }
                Line::Eof => return Err(ReadFail::Closed),
            }
            let text = String::from_utf8_lossy(trim_eol(&self.line)).into_owned();
            let more = text.as_bytes().get(3) == Some(&b'-');
            self.lines.push(text);
            if !more {
                return Ok(());
            }
            if self.lines.len() >= MAX_REPLY_LINES {
                return Err(ReadFail::Malformed(format!(
                    "reply has more than {MAX_REPLY_LINES} lines"
                )));
            }
        }
    }

    fn refused(&self, step: Step, reply: SmtpReply) -> SessionError {
        SessionError::Refused {
            peer: self.peer.clone(),
            step,
            reply,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ehlo_keywords() {
        let caps = Capabilities::parse(&[
            "250-mx.example.org greets you",
            "250-pipelining",
            "250-SIZE 1000000",
            "250-8BITMIME",
            "250 ENHANCEDSTATUSCODES",
        ]);
        assert_eq!(
            caps,
            Capabilities {
                pipelining: true,
                size: Some(1_000_000),
                eight_bit_mime: true,
                enhanced_status_codes: true,
                starttls: false,
            }
        );
        // The greeting line is not a keyword, even if it looks like one.
        assert_eq!(
            Capabilities::parse(&["250 PIPELINING"]),
            Capabilities::default()
        );
        assert_eq!(Capabilities::parse(&["250-x", "250 SIZE"]).size, Some(0));
    }

    #[test]
    fn peer_names_bracket_ipv6_hosts() {
        let r = |h: &str| Route::new(h, 25);
        assert_eq!(peer_name(&r("mx.example.org")), "mx.example.org:25");
        assert_eq!(peer_name(&r("::1")), "[::1]:25");
    }
}
