//! Shared test helpers: messages, transports, a raw line-based TCP peer and a
//! scriptable SMTP server.

use maily_engine::ports::{OutboundMessage, Route};
use maily_engine::{EmailAddress, MessageId};
use maily_smtp::{SinkConfig, SinkHandle, SmtpClientParams, SmtpSink, SmtpTransport, StaticRoutes};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

/// Guards against a hung peer; never a pass/fail threshold.
pub const GUARD: Duration = Duration::from_secs(20);

pub fn address(s: &str) -> EmailAddress {
    EmailAddress::parse(s).expect("valid test address")
}

pub fn message(from: &str, to: &str, data: &[u8]) -> OutboundMessage {
    OutboundMessage {
        message_id: MessageId::new(),
        tenant: maily_engine::TenantId::parse("test").expect("valid tenant"),
        mail_from: address(from),
        rcpt_to: address(to),
        data: data.into(),
        guard: None,
    }
}

pub fn route(addr: SocketAddr) -> Route {
    Route::new(addr.ip().to_string(), addr.port())
}

pub fn params() -> SmtpClientParams {
    SmtpClientParams {
        helo_name: "client.maily.test".into(),
        connect_timeout: GUARD,
        command_timeout: GUARD,
        ..SmtpClientParams::default()
    }
}

/// A transport that sends everything to `addr`.
pub fn transport_to(addr: SocketAddr, params: SmtpClientParams) -> SmtpTransport {
    SmtpTransport::new(Arc::new(StaticRoutes::smart_host(route(addr))), params)
}

pub async fn start_sink(config: SinkConfig) -> SinkHandle {
    SmtpSink::start(config).await.expect("sink starts")
}

/// An address nothing listens on: bound once, then released.
pub async fn dead_address() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    addr
}

/// A raw line-based TCP peer, used as a hand-written client or server.
pub struct RawConn {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

impl RawConn {
    pub fn new(stream: TcpStream) -> Self {
        let (r, w) = stream.into_split();
        RawConn {
            reader: BufReader::new(r),
            writer: w,
        }
    }

    pub async fn connect(addr: SocketAddr) -> Self {
        RawConn::new(TcpStream::connect(addr).await.expect("connect"))
    }

    /// Sends raw bytes as they are.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).await.expect("write");
    }

    /// Sends `text` followed by CRLF.
    pub async fn send(&mut self, text: &str) {
        self.send_raw(format!("{text}\r\n").as_bytes()).await;
    }

    /// The next line without CRLF; `None` at EOF.
    pub async fn line(&mut self) -> Option<String> {
        let mut buf = Vec::new();
        let n = tokio::time::timeout(GUARD, self.reader.read_until(b'\n', &mut buf))
            .await
            .expect("peer answers")
            .ok()?;
        if n == 0 {
            return None;
        }
        let text = String::from_utf8_lossy(&buf);
        Some(text.trim_end_matches(['\r', '\n']).to_string())
    }

    /// A whole reply: its code and every line.
    pub async fn reply(&mut self) -> (u16, Vec<String>) {
        let mut lines = Vec::new();
        loop {
            let line = self.line().await.expect("a reply line");
            let more = line.as_bytes().get(3) == Some(&b'-');
            lines.push(line);
            if !more {
                break;
            }
        }
        let code = lines[0][..3].parse().expect("numeric code");
        (code, lines)
    }

    /// The code of the next reply.
    pub async fn code(&mut self) -> u16 {
        self.reply().await.0
    }

    /// Whether nothing more has been read from the peer than was consumed.
    pub fn nothing_buffered(&self) -> bool {
        self.reader.buffer().is_empty()
    }

    /// Reads message data lines up to the terminating "." line; returns the raw
    /// (still dot-stuffed) bytes without the terminator.
    pub async fn read_data(&mut self) -> Vec<u8> {
        let mut data = Vec::new();
        loop {
            let mut line = Vec::new();
            let n = tokio::time::timeout(GUARD, self.reader.read_until(b'\n', &mut line))
                .await
                .expect("peer sends data")
                .expect("read");
            assert!(n > 0, "client closed during data");
            if line == b".\r\n" {
                return data;
            }
            data.extend_from_slice(&line);
        }
    }

    /// Waits until the peer closes the connection.
    pub async fn closed(&mut self) -> bool {
        let mut buf = Vec::new();
        matches!(
            tokio::time::timeout(GUARD, self.reader.read_until(b'\n', &mut buf)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }
}

/// How a scripted server drops a connection that has delivered enough messages.
#[derive(Debug, Clone, Copy)]
pub enum Hangup {
    /// Closes the socket when the next MAIL arrives.
    Close,
    /// Answers the next MAIL with 421 and closes.
    Reply421,
}

/// What a scripted server does.
#[derive(Debug, Clone, Default)]
pub struct Script {
    /// EHLO keywords to advertise; `None` refuses EHLO so the client must use HELO.
    pub ehlo_keywords: Option<Vec<&'static str>>,
    /// The first connection hangs up after this many messages.
    pub first_connection_hangup: Option<(usize, Hangup)>,
    /// Reply to every RCPT instead of 250.
    pub rcpt_reply: Option<&'static str>,
    /// Answer DATA with 354 even without an accepted recipient, as RFC 2920
    /// section 3.1 warns some servers do.
    pub data_always_354: bool,
}

/// What a scripted server saw.
#[derive(Debug, Default)]
pub struct Seen {
    pub connections: AtomicUsize,
    pub commands: Mutex<Vec<String>>,
    /// Set when a command line arrived while more input was already buffered.
    pub pipelined_input: AtomicBool,
    /// Raw message data, still dot-stuffed.
    pub messages: Mutex<Vec<Vec<u8>>>,
}

impl Seen {
    pub fn commands(&self) -> Vec<String> {
        self.commands.lock().unwrap().clone()
    }
}

/// Starts a scripted SMTP server on port 0.
pub async fn scripted_server(script: Script) -> (SocketAddr, Arc<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Seen::default());
    let script = Arc::new(script);
    let state = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let index = state.connections.fetch_add(1, Ordering::SeqCst);
            let hangup = script.first_connection_hangup.filter(|_| index == 0);
            tokio::spawn(serve_script(
                RawConn::new(stream),
                Arc::clone(&script),
                hangup,
                Arc::clone(&state),
            ));
        }
    });
    (addr, seen)
}

async fn serve_script(
    mut conn: RawConn,
    script: Arc<Script>,
    hangup: Option<(usize, Hangup)>,
    seen: Arc<Seen>,
) {
    conn.send("220 raw.example ESMTP").await;
    let mut delivered = 0;
    let mut rcpt_ok = false;
    while let Some(line) = conn.line().await {
        if !conn.nothing_buffered() {
            seen.pipelined_input.store(true, Ordering::SeqCst);
        }
        let verb = line.split(' ').next().unwrap_or("").to_ascii_uppercase();
        seen.commands.lock().unwrap().push(verb.clone());
        match verb.as_str() {
            "EHLO" => match &script.ehlo_keywords {
                Some(keywords) => {
                    let mut reply = String::from("250");
                    reply.push(if keywords.is_empty() { ' ' } else { '-' });
                    reply.push_str("raw.example");
                    for (i, k) in keywords.iter().enumerate() {
                        let sep = if i + 1 == keywords.len() { ' ' } else { '-' };
                        reply.push_str(&format!("\r\n250{sep}{k}"));
                    }
                    conn.send(&reply).await;
                }
                None => conn.send("502 5.5.2 EHLO not supported").await,
            },
            "HELO" => conn.send("250 raw.example").await,
            "MAIL" => {
                if let Some((after, how)) = hangup
                    && delivered >= after
                {
                    if let Hangup::Reply421 = how {
                        conn.send("421 4.4.2 raw.example closing idle connection")
                            .await;
                    }
                    return;
                }
                rcpt_ok = false;
                conn.send("250 2.1.0 ok").await;
            }
            "RCPT" => match script.rcpt_reply {
                Some(reply) => conn.send(reply).await,
                None => {
                    rcpt_ok = true;
                    conn.send("250 2.1.5 ok").await;
                }
            },
            "DATA" if rcpt_ok || script.data_always_354 => {
                conn.send("354 go ahead").await;
                let data = conn.read_data().await;
                if rcpt_ok {
                    seen.messages.lock().unwrap().push(data);
                    delivered += 1;
                    conn.send("250 2.0.0 queued").await;
                } else {
                    conn.send("554 5.5.1 no valid recipients").await;
                }
            }
            "DATA" => conn.send("554 5.5.1 no valid recipients").await,
            "RSET" => {
                rcpt_ok = false;
                conn.send("250 2.0.0 ok").await;
            }
            "QUIT" => {
                conn.send("221 2.0.0 bye").await;
                return;
            }
            _ => conn.send("500 5.5.2 unrecognized").await,
        }
    }
}

/// Starts a server that runs `handler` on every connection.
pub async fn raw_server<F, Fut>(handler: F) -> SocketAddr
where
    F: Fn(RawConn) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(handler(RawConn::new(stream)));
        }
    });
    addr
}
