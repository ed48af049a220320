//! Which SMTP client should Maily send with? This measures it.
//!
//! The same pre-built MIME message (`--size` bytes, headers included, built by Maily's
//! own `message::build`) goes `--messages` times, to a different envelope recipient each
//! time, over `--concurrency` reused connections into Postfix's `smtp-sink` on
//! 127.0.0.1, through each of:
//!
//! - `lettre`: `AsyncSmtpTransport<Tokio1Executor>` (`builder_dangerous`, plain text)
//!   with its pool of at most C connections, C tasks calling `send_raw`;
//! - `mail-send`: C clients from `SmtpClientBuilder::connect_plain`, each sending one
//!   message after another over its connection;
//! - `mail-send-nodelay`: the same with `TCP_NODELAY` set on each client's socket.
//!   Neither lettre nor mail-send sets it, and both write the end-of-data `.` apart
//!   from the data, so Nagle's algorithm holds it back until the server's delayed ACK
//!   (about 40 ms on Linux) on every message. mail-send's socket is public, so this is
//!   the fix a user can apply; lettre's pooled transport has no such hook;
//! - `maily`: Maily's `SmtpTransport` with a smart-host route, C connections per route,
//!   no limit of messages per connection, driven by 2C concurrent `deliver` calls;
//! - `smtp-source`: Postfix's own load generator as the reference ceiling, `-d` so each
//!   of its C sessions sends many messages over one connection, `-F` so it sends the
//!   very same message.
//!
//! Per client it reports the wall time until every message was acknowledged (connection
//! set-up included, the closing QUITs not), messages per second, the ratio to
//! smtp-source, the CPU time of the sending process per message (`getrusage`:
//! `RUSAGE_SELF` for the Rust clients, which run in this process on a 2-worker tokio
//! runtime, `RUSAGE_CHILDREN` for smtp-source), the sink's CPU time per message, what
//! the sink counted as received (`smtp-sink -c`) and the SMTP round trips each message
//! costs by the client's design. Every run gets a fresh sink on a free port; the runs
//! are interleaved (each round runs every client once, in rotating order, after one
//! untimed warm-up round) and the median of each figure over `--runs` rounds is
//! reported.
//!
//! Needs `smtp-sink` and `smtp-source` (`scripts/postfix-tools.sh` installs them). Run:
//!
//! ```text
//! cargo build --release -p maily-benches --bin smtp_clients
//! target/release/smtp_clients [--messages 20000] [--size 4096] [--concurrency 32] \
//!     [--runs 3] [--clients lettre,mail-send,mail-send-nodelay,maily,smtp-source] [--json]
//! ```

use anyhow::{Context, Result, bail, ensure};
use clap::{Parser, ValueEnum};
use lettre::transport::smtp::PoolConfig;
use lettre::transport::smtp::extension::ClientId;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use maily_benches::{sample_campaign_id, sample_message_id, sample_sender};
use maily_engine::ports::{DeliveryOutcome, OutboundMessage, Route, Transport};
use maily_engine::template::Rendered;
use maily_engine::{EmailAddress, TenantId, Timestamp};
use maily_smtp::{SmtpClientParams, SmtpTransport, StaticRoutes};
use serde_json::json;
use std::fs::File;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::runtime::Runtime;
use tokio::task::JoinSet;

/// Guards every connect, command and reply against a hung peer; never a threshold.
const TIMEOUT: Duration = Duration::from_secs(30);
/// The address in the message's `To:` header (the envelope recipients vary).
const HEADER_TO: &str = "reader@example.com";

#[derive(Debug, Parser)]
#[command(
    about = "Throughput and CPU cost of SMTP clients sending into Postfix's smtp-sink on loopback"
)]
struct Args {
    /// Messages per run.
    #[arg(long, short = 'n', default_value_t = 20_000)]
    messages: usize,
    /// Size of the message in bytes, headers included.
    #[arg(long, short = 's', default_value_t = 4096)]
    size: usize,
    /// Concurrent connections (C).
    #[arg(long, short = 'c', default_value_t = 32)]
    concurrency: usize,
    /// Timed runs of each client; the median is reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Messages each client sends in the untimed warm-up round (0: no warm-up).
    #[arg(long, default_value_t = 2_000)]
    warmup: usize,
    /// The clients to measure, comma-separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_values_t = ClientKind::ALL
    )]
    clients: Vec<ClientKind>,
    /// Print the results as JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// The smtp-sink program (looked up in PATH, then /usr/sbin).
    #[arg(long, default_value = "smtp-sink")]
    smtp_sink: String,
    /// The smtp-source program (looked up in PATH, then /usr/sbin).
    #[arg(long, default_value = "smtp-source")]
    smtp_source: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ClientKind {
    Lettre,
    MailSend,
    MailSendNodelay,
    Maily,
    SmtpSource,
}

impl ClientKind {
    const ALL: [ClientKind; 5] = [
        ClientKind::Lettre,
        ClientKind::MailSend,
        ClientKind::MailSendNodelay,
        ClientKind::Maily,
        ClientKind::SmtpSource,
    ];

    fn name(self) -> &'static str {
        match self {
            ClientKind::Lettre => "lettre",
            ClientKind::MailSend => "mail-send",
            ClientKind::MailSendNodelay => "mail-send-nodelay",
            ClientKind::Maily => "maily",
            ClientKind::SmtpSource => "smtp-source",
        }
    }

    /// Round trips per message on a reused connection, from each client's code: lettre
    /// checks a pooled connection with NOOP before every message, then waits for each
    /// reply to MAIL, RCPT, DATA and the end of data; mail-send and smtp-source wait for
    /// those four; Maily pipelines MAIL, RCPT and DATA (RFC 2920, smtp-sink offers it),
    /// then sends the data.
    fn round_trips_per_message(self) -> u32 {
        match self {
            ClientKind::Lettre => 5,
            ClientKind::MailSend | ClientKind::MailSendNodelay | ClientKind::SmtpSource => 4,
            ClientKind::Maily => 2,
        }
    }
}

impl std::fmt::Display for ClientKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What every client sends.
struct Workload {
    /// The message, CRLF line ends, not dot-stuffed.
    body: Arc<[u8]>,
    /// The envelope sender.
    from: String,
    /// One envelope recipient per message.
    rcpts: Arc<[String]>,
    /// The message with LF line ends, in a file for `smtp-source -F`.
    source_file: PathBuf,
    concurrency: usize,
}

/// The programs and the runtime the runs use.
struct Bench {
    sink_tool: PathBuf,
    source_tool: PathBuf,
    runtime: Runtime,
    /// Holds the sink's output files and the message file.
    dir: tempfile::TempDir,
}

/// One run of one client.
#[derive(Debug, Clone, Copy)]
struct Run {
    messages: usize,
    wall: Duration,
    /// CPU time of the sending process.
    cpu: Duration,
    /// CPU time of the sink.
    sink_cpu: Duration,
    /// Messages the sink counted as received.
    accepted: u64,
}

impl Run {
    fn rate(&self) -> f64 {
        self.messages as f64 / self.wall.as_secs_f64()
    }

    fn cpu_us_per_message(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / self.messages as f64
    }

    fn sink_cpu_us_per_message(&self) -> f64 {
        self.sink_cpu.as_secs_f64() * 1e6 / self.messages as f64
    }
}

/// The medians of a client's runs.
struct Summary {
    client: ClientKind,
    runs: Vec<Run>,
    rate: f64,
    wall_s: f64,
    cpu_us: f64,
    sink_cpu_us: f64,
    accepted: f64,
}

fn main() -> Result<()> {
    let args = Args::parse();
    ensure!(args.messages > 0, "--messages must be at least 1");
    ensure!(args.concurrency > 0, "--concurrency must be at least 1");
    ensure!(args.runs > 0, "--runs must be at least 1");
    let mut clients: Vec<ClientKind> = Vec::new();
    for &client in &args.clients {
        if !clients.contains(&client) {
            clients.push(client);
        }
    }

    let bench = Bench {
        sink_tool: find_tool(&args.smtp_sink)?,
        source_tool: find_tool(&args.smtp_source)?,
        runtime: tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("building the tokio runtime")?,
        dir: tempfile::tempdir().context("creating a temporary directory")?,
    };
    let body = build_message(args.size)?;
    let source_file = bench.dir.path().join("message.eml");
    // smtp-source appends CRLF to each line of the file itself.
    let lf = String::from_utf8(body.clone())
        .context("the message is not UTF-8")?
        .replace("\r\n", "\n");
    std::fs::write(&source_file, lf)
        .with_context(|| format!("writing {}", source_file.display()))?;
    let workload = Workload {
        body: body.into(),
        from: sample_sender().to_string(),
        rcpts: (0..args.messages.max(args.warmup))
            .map(|i| format!("user{i}@example.com"))
            .collect(),
        source_file,
        concurrency: args.concurrency,
    };
    eprintln!(
        "{} messages of {} bytes over {} connections, {} runs per client, {} cores",
        args.messages,
        workload.body.len(),
        args.concurrency,
        args.runs,
        cores()
    );

    if args.warmup > 0 {
        for &client in &clients {
            let run = bench.run(client, &workload, args.warmup)?;
            eprintln!("warm-up   {:<18} {:>8.0} msg/s", client, run.rate());
        }
    }
    let mut runs: Vec<Vec<Run>> = vec![Vec::new(); clients.len()];
    for round in 0..args.runs {
        // Rotate the order so no client always runs first or last.
        for k in 0..clients.len() {
            let at = (k + round) % clients.len();
            let run = bench.run(clients[at], &workload, args.messages)?;
            eprintln!(
                "round {}/{} {:<18} {:>8.0} msg/s  {:>6.1} µs CPU/msg",
                round + 1,
                args.runs,
                clients[at],
                run.rate(),
                run.cpu_us_per_message()
            );
            runs[at].push(run);
        }
    }
    let summaries: Vec<Summary> = clients
        .iter()
        .zip(runs)
        .map(|(&client, runs)| summarize(client, runs))
        .collect();
    let table = table(&args, &workload, &summaries);
    if args.json {
        eprint!("{table}");
        print_json(&args, &workload, &summaries)?;
    } else {
        print!("{table}");
    }
    Ok(())
}

impl Bench {
    /// One run of `client` sending `n` messages into a fresh sink.
    fn run(&self, client: ClientKind, w: &Workload, n: usize) -> Result<Run> {
        let sink = Sink::start(&self.sink_tool, self.dir.path())?;
        let port = sink.port;
        let (wall, cpu) = match client {
            ClientKind::Lettre => self.runtime.block_on(send_lettre(w, port, n)),
            ClientKind::MailSend => self.runtime.block_on(send_mail_send(w, port, n, false)),
            ClientKind::MailSendNodelay => self.runtime.block_on(send_mail_send(w, port, n, true)),
            ClientKind::Maily => self.runtime.block_on(send_maily(w, port, n)),
            ClientKind::SmtpSource => send_smtp_source(&self.source_tool, w, port, n),
        }
        .with_context(|| format!("{client} sending {n} messages into smtp-sink on port {port}"))?;
        let (accepted, sink_cpu) = sink.stop(n as u64)?;
        ensure!(
            accepted == n as u64,
            "{client}: smtp-sink counted {accepted} messages, {n} were sent"
        );
        Ok(Run {
            messages: n,
            wall,
            cpu,
            sink_cpu,
            accepted,
        })
    }
}

/// Wall and CPU time from its start until [`Stopwatch::stop`].
struct Stopwatch {
    who: libc::c_int,
    started: Instant,
    cpu: Duration,
}

impl Stopwatch {
    /// Starts timing; `who` is `RUSAGE_SELF` or `RUSAGE_CHILDREN`.
    fn start(who: libc::c_int) -> Result<Self> {
        Ok(Stopwatch {
            who,
            cpu: cpu_time(who)?,
            started: Instant::now(),
        })
    }

    /// The wall and CPU time since the start.
    fn stop(&self) -> Result<(Duration, Duration)> {
        let wall = self.started.elapsed();
        Ok((wall, cpu_time(self.who)?.saturating_sub(self.cpu)))
    }
}

/// User plus system CPU time of `who` (`RUSAGE_SELF` or `RUSAGE_CHILDREN`).
fn cpu_time(who: libc::c_int) -> Result<Duration> {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes only into the struct it is given, which is big enough.
    let rc = unsafe { libc::getrusage(who, usage.as_mut_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context("getrusage");
    }
    // SAFETY: zero is a valid rusage, and getrusage succeeded.
    let usage = unsafe { usage.assume_init() };
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    Ok(tv(usage.ru_utime) + tv(usage.ru_stime))
}

/// The next message index for a sending task, until `n` are taken.
fn claim(next: &AtomicUsize, n: usize) -> Option<usize> {
    let i = next.fetch_add(1, Ordering::Relaxed);
    (i < n).then_some(i)
}

/// Waits for every task; the first error (or panic) wins.
async fn join_all<T: 'static>(mut tasks: JoinSet<Result<T>>) -> Result<Vec<T>> {
    let mut done = Vec::with_capacity(tasks.len());
    while let Some(joined) = tasks.join_next().await {
        done.push(joined.context("a sending task panicked")??);
    }
    Ok(done)
}

/// lettre's pooled async transport, C tasks sending.
async fn send_lettre(w: &Workload, port: u16, n: usize) -> Result<(Duration, Duration)> {
    let from: lettre::Address = w.from.parse().context("lettre: the sender address")?;
    let watch = Stopwatch::start(libc::RUSAGE_SELF)?;
    let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(port)
        .hello_name(ClientId::Domain("localhost".into()))
        .timeout(Some(TIMEOUT))
        .pool_config(PoolConfig::new().max_size(w.concurrency as u32))
        .build();
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = JoinSet::new();
    for _ in 0..w.concurrency {
        let (transport, from, next) = (transport.clone(), from.clone(), Arc::clone(&next));
        let (rcpts, body) = (Arc::clone(&w.rcpts), Arc::clone(&w.body));
        tasks.spawn(async move {
            while let Some(i) = claim(&next, n) {
                let to: lettre::Address = rcpts[i]
                    .parse()
                    .with_context(|| format!("lettre: recipient {:?}", rcpts[i]))?;
                let envelope = lettre::address::Envelope::new(Some(from.clone()), vec![to])
                    .context("lettre: envelope")?;
                transport
                    .send_raw(&envelope, &body)
                    .await
                    .with_context(|| format!("lettre: message {i}"))?;
            }
            anyhow::Ok(())
        });
    }
    join_all(tasks).await?;
    let times = watch.stop()?;
    transport.shutdown().await;
    Ok(times)
}

/// mail-send: C clients, each sending one message after another over its connection;
/// with `nodelay`, their sockets have `TCP_NODELAY` set.
async fn send_mail_send(
    w: &Workload,
    port: u16,
    n: usize,
    nodelay: bool,
) -> Result<(Duration, Duration)> {
    let watch = Stopwatch::start(libc::RUSAGE_SELF)?;
    let builder = mail_send::SmtpClientBuilder::new("127.0.0.1".to_string(), port)
        .map_err(anyhow::Error::msg)
        .context("mail-send: client builder")?
        .implicit_tls(false)
        .helo_host("localhost")
        .timeout(TIMEOUT);
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = JoinSet::new();
    for _ in 0..w.concurrency {
        let (builder, next) = (builder.clone(), Arc::clone(&next));
        let (from, rcpts, body) = (w.from.clone(), Arc::clone(&w.rcpts), Arc::clone(&w.body));
        tasks.spawn(async move {
            let mut client = builder
                .connect_plain()
                .await
                .context("mail-send: connect")?;
            if nodelay {
                client
                    .stream
                    .set_nodelay(true)
                    .context("mail-send: setting TCP_NODELAY")?;
            }
            while let Some(i) = claim(&next, n) {
                let message = mail_send::smtp::message::Message::new(
                    from.as_str(),
                    [rcpts[i].as_str()],
                    &body[..],
                );
                client
                    .send(message)
                    .await
                    .with_context(|| format!("mail-send: message {i}"))?;
            }
            anyhow::Ok(client)
        });
    }
    let clients = join_all(tasks).await?;
    let times = watch.stop()?;
    for client in clients {
        // Only closing; a failed QUIT changes nothing measured.
        let _ = client.quit().await;
    }
    Ok(times)
}

/// Maily's transport: C connections to the smart host, 2C deliveries at a time.
async fn send_maily(w: &Workload, port: u16, n: usize) -> Result<(Duration, Duration)> {
    let from = EmailAddress::parse(&w.from)
        .map_err(|e| anyhow::anyhow!("{e:?}"))
        .context("maily: the sender address")?;
    let tenant = TenantId::parse("bench")
        .map_err(|e| anyhow::anyhow!("{e:?}"))
        .context("maily: the tenant id")?;
    let watch = Stopwatch::start(libc::RUSAGE_SELF)?;
    let routes = StaticRoutes::smart_host(Route {
        host: "127.0.0.1".into(),
        port,
    });
    let params = SmtpClientParams {
        helo_name: "localhost".into(),
        max_connections_per_route: w.concurrency,
        max_messages_per_connection: usize::MAX,
        connect_timeout: TIMEOUT,
        command_timeout: TIMEOUT,
        ..SmtpClientParams::default()
    };
    let transport = Arc::new(SmtpTransport::new(Arc::new(routes), params));
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = JoinSet::new();
    for _ in 0..w.concurrency * 2 {
        let (transport, next) = (Arc::clone(&transport), Arc::clone(&next));
        let (from, tenant) = (from.clone(), tenant.clone());
        let (rcpts, body) = (Arc::clone(&w.rcpts), Arc::clone(&w.body));
        tasks.spawn(async move {
            while let Some(i) = claim(&next, n) {
                let message = OutboundMessage {
                    message_id: sample_message_id(i as u64),
                    tenant: tenant.clone(),
                    mail_from: from.clone(),
                    rcpt_to: EmailAddress::parse(&rcpts[i])
                        .map_err(|e| anyhow::anyhow!("{e:?}"))
                        .with_context(|| format!("maily: recipient {:?}", rcpts[i]))?,
                    data: Arc::clone(&body),
                    guard: None,
                };
                match transport.deliver(&message).await {
                    DeliveryOutcome::Delivered { .. } => {}
                    other => bail!("maily: message {i} not delivered: {other:?}"),
                }
            }
            Ok(())
        });
    }
    join_all(tasks).await?;
    let times = watch.stop()?;
    transport.close_idle().await;
    Ok(times)
}

/// Postfix's smtp-source: C sessions, each reusing its connection (`-d`).
fn send_smtp_source(
    tool: &Path,
    w: &Workload,
    port: u16,
    n: usize,
) -> Result<(Duration, Duration)> {
    let mut command = Command::new(tool);
    command
        .arg("-d")
        .args(["-s", &w.concurrency.to_string()])
        .args(["-m", &n.to_string()])
        .arg("-F")
        .arg(&w.source_file)
        .args(["-f", &w.from, "-t", HEADER_TO, "-N", "-M", "localhost"])
        .arg(format!("127.0.0.1:{port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let watch = Stopwatch::start(libc::RUSAGE_CHILDREN)?;
    let output = command
        .output()
        .with_context(|| format!("running {}", tool.display()))?;
    let times = watch.stop()?;
    ensure!(
        output.status.success(),
        "smtp-source failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(times)
}

/// A running `smtp-sink -c` on a free loopback port.
struct Sink {
    child: Option<Child>,
    port: u16,
    counts: PathBuf,
    errors: PathBuf,
}

impl Sink {
    fn start(tool: &Path, dir: &Path) -> Result<Sink> {
        let port = free_port()?;
        let counts = dir.join(format!("sink-{port}.out"));
        let errors = dir.join(format!("sink-{port}.err"));
        let mut command = Command::new(tool);
        command.arg("-c");
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            // smtp-sink refuses to run as root without -u.
            command.args(["-u", "root"]);
        }
        command
            .arg(format!("127.0.0.1:{port}"))
            .arg("1024")
            .stdin(Stdio::null())
            .stdout(
                File::create(&counts).with_context(|| format!("creating {}", counts.display()))?,
            )
            .stderr(
                File::create(&errors).with_context(|| format!("creating {}", errors.display()))?,
            );
        let child = command
            .spawn()
            .with_context(|| format!("starting {}", tool.display()))?;
        let mut sink = Sink {
            child: Some(child),
            port,
            counts,
            errors,
        };
        sink.wait_listening()?;
        Ok(sink)
    }

    fn wait_listening(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(());
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!("smtp-sink exited ({status}): {}", self.stderr());
            }
            ensure!(
                Instant::now() < deadline,
                "smtp-sink is not listening on 127.0.0.1:{} after 10 s: {}",
                self.port,
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.errors)
            .unwrap_or_default()
            .trim()
            .to_string()
    }

    /// The `mesg=` count of the sink's last counter line (`sess=N quit=N mesg=N`, each
    /// update ending in a carriage return).
    fn received(&self) -> Result<u64> {
        let text = std::fs::read_to_string(&self.counts)
            .with_context(|| format!("reading {}", self.counts.display()))?;
        let Some(last) = text.split(['\r', '\n']).rfind(|l| !l.trim().is_empty()) else {
            return Ok(0);
        };
        let count = last
            .split_whitespace()
            .find_map(|field| field.strip_prefix("mesg="))
            .with_context(|| format!("no mesg= in smtp-sink's counters {last:?}"))?;
        count
            .parse()
            .with_context(|| format!("smtp-sink's mesg= count {count:?}"))
    }

    /// Stops the sink once it counted `expected` messages (or after a second); returns
    /// what it counted and the CPU time it used.
    fn stop(mut self, expected: u64) -> Result<(u64, Duration)> {
        let deadline = Instant::now() + Duration::from_secs(1);
        while self.received()? < expected && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let mut child = self.child.take().context("the sink was already stopped")?;
        let before = cpu_time(libc::RUSAGE_CHILDREN)?;
        // SAFETY: kill has no memory preconditions; the pid is our own unreaped child.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        child.wait().context("waiting for smtp-sink to stop")?;
        let cpu = cpu_time(libc::RUSAGE_CHILDREN)?.saturating_sub(before);
        Ok((self.received()?, cpu))
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A loopback port nothing listens on (the kernel's pick).
fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
    Ok(listener.local_addr().context("local address")?.port())
}

/// `name` itself when it is a path, else found in PATH or /usr/sbin.
fn find_tool(name: &str) -> Result<PathBuf> {
    if name.contains('/') {
        let path = PathBuf::from(name);
        ensure!(path.is_file(), "{name} does not exist");
        return Ok(path);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .with_context(|| {
            format!("{name} not found in PATH or /usr/sbin; run scripts/postfix-tools.sh")
        })
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// A campaign message (multipart/alternative, text and HTML, quoted-printable) of at
/// least `size` bytes: the smallest such message Maily builds from the sample
/// campaign's wording with enough paragraphs.
fn build_message(size: usize) -> Result<Vec<u8>> {
    let from = sample_sender();
    let to = EmailAddress::parse(HEADER_TO)
        .map_err(|e| anyhow::anyhow!("{e:?}"))
        .context("the header recipient")?;
    let envelope = maily_engine::message::Envelope {
        message_id: sample_message_id(0),
        campaign: sample_campaign_id(1),
        from: &from,
        from_name: Some("Maily News"),
        to: &to,
        date: Timestamp(1_767_225_600_000),
    };
    let build = |words: usize| {
        let (text, html) = body_text(words);
        let parts = Rendered {
            subject: "Ann, spring sale picks for Lisbon".into(),
            text: Some(text),
            html: Some(html),
        };
        maily_engine::message::build(&envelope, &parts)
    };
    // The length grows with the words: find the fewest words that reach `size`.
    let mut high = 16;
    while build(high).len() < size {
        high *= 2;
    }
    let mut low = 0;
    while low < high {
        let mid = (low + high) / 2;
        if build(mid).len() < size {
            low = mid + 1;
        } else {
            high = mid;
        }
    }
    Ok(build(low))
}

/// `words` words of campaign prose as a text part (lines under 72 characters,
/// paragraphs of 40 words) and as an HTML part (one `<p>` per paragraph).
fn body_text(words: usize) -> (String, String) {
    const VOCABULARY: [&str; 24] = [
        "spring", "sale", "picks", "for", "you", "this", "week", "new", "arrivals", "in", "Lisbon",
        "free", "delivery", "on", "orders", "over", "fifty", "euros", "your", "code", "M-000042",
        "ends", "Sunday", "shop",
    ];
    let mut text = String::from("Hello Ann,\n\n");
    let mut html = String::from("<p>Hello Ann,</p>\n<p>");
    let mut line = 0;
    for i in 0..words {
        // A fixed, varied walk through the vocabulary.
        let word = VOCABULARY[(i * 7 + i / 24) % VOCABULARY.len()];
        if i > 0 && i % 40 == 0 {
            text.push_str("\n\n");
            html.push_str("</p>\n<p>");
            line = 0;
        } else if line + word.len() + 1 > 72 {
            text.push('\n');
            html.push(' ');
            line = 0;
        } else if line > 0 {
            text.push(' ');
            html.push(' ');
            line += 1;
        }
        text.push_str(word);
        html.push_str(word);
        line += word.len();
    }
    text.push_str("\n\nSee you in Lisbon!\n");
    html.push_str("</p>\n<p>See you in <b>Lisbon</b>!</p>\n");
    (text, html)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

fn summarize(client: ClientKind, runs: Vec<Run>) -> Summary {
    let of = |f: fn(&Run) -> f64| median(runs.iter().map(f).collect());
    Summary {
        client,
        rate: of(Run::rate),
        wall_s: of(|r| r.wall.as_secs_f64()),
        cpu_us: of(Run::cpu_us_per_message),
        sink_cpu_us: of(Run::sink_cpu_us_per_message),
        accepted: of(|r| r.accepted as f64),
        runs,
    }
}

/// Each client's rate relative to smtp-source's, when smtp-source ran.
fn ratio(summaries: &[Summary], s: &Summary) -> Option<f64> {
    summaries
        .iter()
        .find(|x| x.client == ClientKind::SmtpSource)
        .map(|source| s.rate / source.rate)
}

/// The results as a text table.
fn table(args: &Args, w: &Workload, summaries: &[Summary]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} messages of {} bytes, {} connections, median of {} runs, {} cores, into smtp-sink on 127.0.0.1",
        args.messages,
        w.body.len(),
        args.concurrency,
        args.runs,
        cores()
    );
    let _ = writeln!(
        out,
        "{:<18} {:>9} {:>8} {:>10} {:>12} {:>12} {:>9} {:>8}",
        "client",
        "msg/s",
        "wall s",
        "vs source",
        "CPU µs/msg",
        "sink µs/msg",
        "accepted",
        "RTT/msg"
    );
    for s in summaries {
        let vs = ratio(summaries, s).map_or("-".to_string(), |r| format!("{r:.2}x"));
        let _ = writeln!(
            out,
            "{:<18} {:>9.0} {:>8.2} {:>10} {:>12.1} {:>12.1} {:>9.0} {:>8}",
            s.client.name(),
            s.rate,
            s.wall_s,
            vs,
            s.cpu_us,
            s.sink_cpu_us,
            s.accepted,
            s.client.round_trips_per_message()
        );
    }
    out
}

fn print_json(args: &Args, w: &Workload, summaries: &[Summary]) -> Result<()> {
    let clients: Vec<_> = summaries
        .iter()
        .map(|s| {
            json!({
                "client": s.client.name(),
                "messages_per_second": s.rate,
                "wall_seconds": s.wall_s,
                "ratio_to_smtp_source": ratio(summaries, s),
                "cpu_us_per_message": s.cpu_us,
                "sink_cpu_us_per_message": s.sink_cpu_us,
                "accepted_by_sink": s.accepted,
                "round_trips_per_message": s.client.round_trips_per_message(),
                "runs": s.runs.iter().map(|r| json!({
                    "wall_seconds": r.wall.as_secs_f64(),
                    "messages_per_second": r.rate(),
                    "cpu_us_per_message": r.cpu_us_per_message(),
                    "sink_cpu_us_per_message": r.sink_cpu_us_per_message(),
                    "accepted_by_sink": r.accepted,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let report = json!({
        "messages": args.messages,
        "message_bytes": w.body.len(),
        "concurrency": args.concurrency,
        "runs": args.runs,
        "warmup_messages": args.warmup,
        "cores": cores(),
        "statistic": "median over runs, per figure",
        "clients": clients,
    });
    println!(
        "{}",
        serde_json::to_string_pretty(&report).context("encoding the results")?
    );
    Ok(())
}
