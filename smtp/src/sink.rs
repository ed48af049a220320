//! The built-in SMTP server: a small ESMTP server that accepts everything it is sent,
//! or rejects chosen recipients (optionally with a script of replies per recipient),
//! and counts (optionally keeps) what it accepted.
//!
//! The demo and the tests deliver into it as a sink; with a [`MessageHandler`] it is
//! the inbound listener that receives bounce reports and complaints. It stores nothing
//! on disk, offers STARTTLS when given a certificate and speaks no AUTH.
//!
//! Open to the internet as the inbound listener, what it holds is bounded by
//! [`SinkLimits`]: connections in all and per client address (421 beyond), an overall
//! session deadline besides the idle timeout, a least data rate once a message has had
//! its grace period, and messages received at once, so memory stays under about
//! `max_concurrent_messages × max_message_size + max_connections × 64 KiB`.

mod session;

use crate::stream;

use async_trait::async_trait;
use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tracing::{debug, warn};

/// A reply the sink gives to a chosen recipient instead of 250.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkReply {
    /// The reply code, e.g. 550.
    pub code: u16,
    /// The text after the code, optionally starting with an enhanced code: "5.1.1 no such user".
    pub text: String,
}

impl SinkReply {
    /// A reply from its parts.
    pub fn new(code: u16, text: impl Into<String>) -> Self {
        SinkReply {
            code,
            text: text.into(),
        }
    }
}

/// How a sink is set up.
#[derive(Clone)]
pub struct SinkConfig {
    /// Where to listen; port 0 picks a free port (see [`SinkHandle::addr`]).
    pub bind: SocketAddr,
    /// Keep every accepted message for [`SinkHandle::received`].
    pub capture: bool,
    /// Replies for chosen recipients, keyed by the lower-cased address.
    pub rejections: HashMap<String, SinkReply>,
    /// The name in the greeting and the EHLO reply.
    pub hostname: String,
    /// Larger messages get 552 and are not kept; bounds memory per connection.
    pub max_message_size: usize,
    /// Offer STARTTLS with this configuration (see [`crate::tls::server_config`]).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Decides on recipients and takes each message instead of the built-in counting
    /// (the inbound listener).
    pub handler: Option<Arc<dyn MessageHandler>>,
    /// What clients may hold.
    pub limits: SinkLimits,
}

/// What the sink's clients may hold; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SinkLimits {
    /// Connections open at once; more are answered 421 and closed.
    pub max_connections: usize,
    /// Connections open at once from one client address.
    pub max_connections_per_peer: usize,
    /// A connection is closed (421) after this long, whatever it is doing.
    pub session_timeout: Duration,
    /// A connection silent this long is closed (RFC 5321 asks for 5 minutes).
    pub idle_timeout: Duration,
    /// Message data slower than this many bytes a second, once `data_grace` has passed,
    /// ends the connection; 0 turns the check off.
    pub min_data_rate: u64,
    pub data_grace: Duration,
    /// Messages being received at once, in all and from one client address; a DATA
    /// beyond either is answered 451.
    pub max_concurrent_messages: usize,
    pub max_concurrent_messages_per_peer: usize,
}

impl Default for SinkLimits {
    /// Generous limits for a sink on loopback (tests and benchmarks): 10,000
    /// connections, an hour per session, 5 minutes idle, no data-rate check.
    fn default() -> Self {
        SinkLimits {
            max_connections: 10_000,
            max_connections_per_peer: 10_000,
            session_timeout: Duration::from_secs(3600),
            idle_timeout: Duration::from_secs(300),
            min_data_rate: 0,
            data_grace: Duration::from_secs(30),
            max_concurrent_messages: 10_000,
            max_concurrent_messages_per_peer: 10_000,
        }
    }
}

/// What a [`MessageHandler`] says about a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// 250: the message is taken care of.
    Accept,
    /// The reply to give instead, 4xx or 5xx.
    Refuse(SinkReply),
}

/// Takes the messages a server receives; implemented by the inbound listener.
#[async_trait]
pub trait MessageHandler: Send + Sync + 'static {
    /// Whether `address` may receive mail here; the error is the RCPT reply.
    fn check_recipient(&self, address: &str) -> Result<(), SinkReply>;

    /// Handles one received message; answered only once this returns, so a message
    /// is only acknowledged once it is safe.
    async fn message(&self, message: ReceivedMessage) -> Verdict;
}
impl std::fmt::Debug for SinkConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SinkConfig")
            .field("bind", &self.bind)
            .field("capture", &self.capture)
            .field("rejections", &self.rejections.len())
            .field("hostname", &self.hostname)
            .field("max_message_size", &self.max_message_size)
            .field("tls", &self.tls.is_some())
            .field("handler", &self.handler.is_some())
            .field("limits", &self.limits)
            .finish()
    }
}

impl Default for SinkConfig {
    fn default() -> Self {
        SinkConfig {
            bind: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            capture: false,
            rejections: HashMap::new(),
            hostname: "sink.maily.invalid".into(),
            max_message_size: 10 * 1024 * 1024,
            tls: None,
            handler: None,
            limits: SinkLimits::default(),
        }
    }
}

/// A message the sink accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMessage {
    /// The MAIL FROM address (empty for the null sender).
    pub mail_from: String,
    /// The accepted RCPT TO addresses, as given.
    pub rcpt_to: Vec<String>,
    /// The message with dot-stuffing undone, ending in CRLF.
    pub data: Vec<u8>,
    /// The client's address.
    pub peer: SocketAddr,
    /// Whether it came over TLS.
    pub tls: bool,
    /// When the end of data arrived.
    pub at: Instant,
}

/// State shared by the accept loop, the sessions and the handle.
struct Shared {
    hostname: String,
    capture: bool,
    max_message_size: usize,
    tls: Option<Arc<rustls::ServerConfig>>,
    handler: Option<Arc<dyn MessageHandler>>,
    rejections: RwLock<HashMap<String, SinkReply>>,
    /// Replies given in turn to a recipient's RCPTs before its rejection or 250.
    scripts: Mutex<HashMap<String, VecDeque<SinkReply>>>,
    /// Client addresses, one per connection, in order of arrival (kept only when
    /// capturing).
    peers: Mutex<Vec<IpAddr>>,
    limits: SinkLimits,
    /// Connections open now and messages being received, per client address.
    open: Mutex<HashMap<IpAddr, PeerCount>>,
    open_total: AtomicUsize,
    refused_connections: AtomicU64,
    /// Permits of messages being received.
    receiving: Arc<tokio::sync::Semaphore>,
    tls_sessions: AtomicU64,
    open_transactions: AtomicUsize,
    max_open_transactions: AtomicUsize,
    received: Mutex<Vec<ReceivedMessage>>,
    connections: AtomicU64,
    rejected_recipients: AtomicU64,
    queue_ids: AtomicU64,
    /// The accepted-message count; a watch so [`SinkHandle::wait_for`] can sleep on it.
    accepted: watch::Sender<u64>,
}

impl Shared {
    fn rejection_for(&self, address: &str) -> Option<SinkReply> {
        {
            let mut scripts = self.scripts.lock().unwrap_or_else(PoisonError::into_inner);
            if !scripts.is_empty()
                && let Some(reply) = scripts
                    .get_mut(&address.to_ascii_lowercase())
                    .and_then(VecDeque::pop_front)
            {
                return Some(reply);
            }
        }
        let rejections = self
            .rejections
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        if rejections.is_empty() {
            return None;
        }
        rejections.get(&address.to_ascii_lowercase()).cloned()
    }

    /// Counts an accepted message, keeps it when capturing, and returns its queue id.
    fn accept(&self, message: ReceivedMessage) -> u64 {
        if self.capture {
            self.received
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(message);
        }
        // After the push, so a waiter woken by the count finds the message.
        self.count_accepted()
    }

    /// Counts an accepted message and returns its queue id.
    fn count_accepted(&self) -> u64 {
        let id = self.queue_ids.fetch_add(1, Ordering::Relaxed) + 1;
        self.accepted.send_modify(|n| *n += 1);
        id
    }

    fn transaction_started(&self) {
        let open = self.open_transactions.fetch_add(1, Ordering::AcqRel) + 1;
        self.max_open_transactions.fetch_max(open, Ordering::AcqRel);
    }

    fn transaction_ended(&self) {
        self.open_transactions.fetch_sub(1, Ordering::AcqRel);
    }

    /// Counts a new connection from `ip` in, or says why it is refused.
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Admitted, &'static str> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if self.open_total.load(Ordering::Acquire) >= self.limits.max_connections {
            return Err("4.7.0 too many connections, try again later");
        }
        let from_peer = open.entry(ip).or_default();
        if from_peer.connections >= self.limits.max_connections_per_peer {
            return Err("4.7.0 too many connections from your address, try again later");
        }
        from_peer.connections += 1;
        self.open_total.fetch_add(1, Ordering::AcqRel);
        Ok(Admitted {
            shared: Arc::clone(self),
            ip,
        })
    }

    /// A permit to receive one message from `ip`, if neither limit is reached.
    fn start_receiving(self: &Arc<Self>, ip: IpAddr) -> Option<Receiving> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let from_peer = open.entry(ip).or_default();
        if from_peer.receiving >= self.limits.max_concurrent_messages_per_peer {
            return None;
        }
        let permit = Arc::clone(&self.receiving).try_acquire_owned().ok()?;
        from_peer.receiving += 1;
        Some(Receiving {
            shared: Arc::clone(self),
            ip,
            _permit: permit,
        })
    }
}

/// Per client address: connections open and messages being received.
#[derive(Debug, Default)]
struct PeerCount {
    connections: usize,
    receiving: usize,
}

/// A message being received; uncounted when dropped.
struct Receiving {
    shared: Arc<Shared>,
    ip: IpAddr,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Drop for Receiving {
    fn drop(&mut self) {
        let mut open = self
            .shared
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = open.get_mut(&self.ip) {
            n.receiving = n.receiving.saturating_sub(1);
        }
    }
}

/// A connection counted as open; uncounted when dropped.
struct Admitted {
    shared: Arc<Shared>,
    ip: IpAddr,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut open = self
            .shared
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = open.get_mut(&self.ip) {
            n.connections = n.connections.saturating_sub(1);
            if n.connections == 0 && n.receiving == 0 {
                open.remove(&self.ip);
            }
        }
        self.shared.open_total.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Starts sinks.
#[derive(Debug)]
pub struct SmtpSink;

impl SmtpSink {
    /// Binds `config.bind` and serves connections until the handle is shut down or
    /// dropped. Must be called within a tokio runtime.
    pub async fn start(config: SinkConfig) -> io::Result<SinkHandle> {
        let listener = TcpListener::bind(config.bind).await?;
        let addr = listener.local_addr()?;
        let rejections = config
            .rejections
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect();
        let shared = Arc::new(Shared {
            hostname: config.hostname,
            capture: config.capture,
            max_message_size: config.max_message_size,
            tls: config.tls,
            handler: config.handler,
            rejections: RwLock::new(rejections),
            scripts: Mutex::new(HashMap::new()),
            peers: Mutex::new(Vec::new()),
            limits: config.limits,
            open: Mutex::new(HashMap::new()),
            open_total: AtomicUsize::new(0),
            refused_connections: AtomicU64::new(0),
            receiving: Arc::new(tokio::sync::Semaphore::new(
                config.limits.max_concurrent_messages.max(1),
            )),
            tls_sessions: AtomicU64::new(0),
            open_transactions: AtomicUsize::new(0),
            max_open_transactions: AtomicUsize::new(0),
            received: Mutex::new(Vec::new()),
            connections: AtomicU64::new(0),
            rejected_recipients: AtomicU64::new(0),
            queue_ids: AtomicU64::new(0),
            accepted: watch::Sender::new(0),
        });
        let (shutdown, shutdown_rx) = watch::channel(false);
        let task = tokio::spawn(accept_loop(listener, Arc::clone(&shared), shutdown_rx));
        debug!(%addr, "smtp sink listening");
        Ok(SinkHandle {
            addr,
            shared,
            shutdown,
            task: Some(task),
        })
    }
}

/// Controls a running sink; dropping it stops the sink too.
pub struct SinkHandle {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl SinkHandle {
    /// The address the sink listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::Relaxed)
    }

    /// Messages accepted so far.
    pub fn accepted(&self) -> u64 {
        *self.shared.accepted.borrow()
    }

    /// Connections open right now.
    pub fn open_connections(&self) -> usize {
        self.shared.open_total.load(Ordering::Acquire)
    }

    /// Client addresses with a connection open right now.
    pub fn open_peers(&self) -> usize {
        self.shared
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Connections refused (421) for being over a connection limit.
    pub fn refused_connections(&self) -> u64 {
        self.shared.refused_connections.load(Ordering::Relaxed)
    }

    /// Client addresses, one per connection accepted so far (when capturing).
    pub fn peers(&self) -> Vec<IpAddr> {
        self.shared
            .peers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Sessions upgraded with STARTTLS so far.
    pub fn tls_sessions(&self) -> u64 {
        self.shared.tls_sessions.load(Ordering::Relaxed)
    }

    /// Mail transactions (MAIL to end of data or RSET) open right now.
    pub fn open_transactions(&self) -> usize {
        self.shared.open_transactions.load(Ordering::Acquire)
    }

    /// The most mail transactions that were open at once since the last reset.
    pub fn max_open_transactions(&self) -> usize {
        self.shared.max_open_transactions.load(Ordering::Acquire)
    }

    /// Starts a new high-water mark for [`Self::max_open_transactions`].
    pub fn reset_max_open_transactions(&self) {
        let open = self.open_transactions();
        self.shared
            .max_open_transactions
            .store(open, Ordering::Release);
    }

    /// Answers the next RCPTs for `address` with `replies` in turn, then as before
    /// (a configured rejection, or 250).
    pub fn script(&self, address: &str, replies: impl IntoIterator<Item = SinkReply>) {
        self.shared
            .scripts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(address.to_ascii_lowercase(), replies.into_iter().collect());
    }

    /// Recipients answered with a configured rejection so far.
    pub fn rejected_recipients(&self) -> u64 {
        self.shared.rejected_recipients.load(Ordering::Relaxed)
    }

    /// The accepted messages, oldest first; empty unless `capture` is on.
    pub fn received(&self) -> Vec<ReceivedMessage> {
        self.shared
            .received
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Waits until `n` messages were accepted or `timeout` passed; returns the count.
    pub async fn wait_for(&self, n: u64, timeout: Duration) -> u64 {
        let mut rx = self.shared.accepted.subscribe();
        let _ = tokio::time::timeout(timeout, rx.wait_for(|&count| count >= n)).await;
        self.accepted()
    }

    /// Answers RCPT TO for `address` (any case) with `reply` from now on.
    pub fn set_rejection(&self, address: &str, reply: SinkReply) {
        self.shared
            .rejections
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(address.to_ascii_lowercase(), reply);
    }

    /// Accepts `address` again.
    pub fn clear_rejection(&self, address: &str) {
        self.shared
            .rejections
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&address.to_ascii_lowercase());
    }

    /// Runs one session as if a client at `peer` had sent `input` and then closed its
    /// side, under the sink's limits; returns everything the sink answered. For tests
    /// and fuzzing of the session: no socket is involved.
    pub async fn converse(&self, peer: SocketAddr, input: &[u8]) -> Vec<u8> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let admitted = match self.shared.admit(peer.ip()) {
            Ok(admitted) => admitted,
            Err(why) => return format!("421 {why}\r\n").into_bytes(),
        };
        let (client, server) = tokio::io::duplex(64 * 1024);
        let session = tokio::spawn(session::serve_stream(
            stream::Stream::Memory(server),
            peer,
            Arc::clone(&self.shared),
            admitted,
        ));
        let (mut read, mut write) = tokio::io::split(client);
        let writer = {
            let input = input.to_vec();
            tokio::spawn(async move {
                // The session may stop reading (QUIT, too many errors): fine.
                let _ = write.write_all(&input).await;
                let _ = write.shutdown().await;
            })
        };
        let mut out = Vec::new();
        let _ = read.read_to_end(&mut out).await;
        let _ = writer.await;
        let _ = session.await;
        out
    }

    /// Stops accepting, closes every open connection and waits until that is done.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for SinkHandle {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

impl std::fmt::Debug for SinkHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SinkHandle")
            .field("addr", &self.addr)
            .field("connections", &self.connections())
            .field("accepted", &self.accepted())
            .finish_non_exhaustive()
    }
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut sessions = JoinSet::new();
    loop {
        tokio::select! {
            // Fires on shutdown() and when the handle is dropped.
            _ = shutdown.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    shared.connections.fetch_add(1, Ordering::Relaxed);
                    match shared.admit(peer.ip()) {
                        Ok(admitted) => {
                            if shared.capture {
                                shared.peers.lock().unwrap_or_else(PoisonError::into_inner).push(peer.ip());
                            }
                            sessions.spawn(session::run(stream, peer, Arc::clone(&shared), admitted));
                        }
                        Err(why) => {
                            shared.refused_connections.fetch_add(1, Ordering::Relaxed);
                            metrics::counter!("maily_smtp_in_refused_connections_total").increment(1);
                            debug!(%peer, why, "connection refused");
                            sessions.spawn(session::refuse(stream, why));
                        }
                    }
                }
                Err(e) => {
                    // Typically out of file descriptors: pause instead of spinning.
                    warn!(error = %e, "smtp sink accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(joined) = sessions.join_next(), if !sessions.is_empty() => {
                if let Err(e) = joined {
                    warn!(error = %e, "smtp sink session panicked");
                }
            }
        }
    }
    drop(listener);
    sessions.shutdown().await;
    debug!("smtp sink stopped");
}
