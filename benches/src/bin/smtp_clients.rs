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
use maily_benches::mail::{HEADER_TO, build_message};
use maily_benches::measure::{Medians, Run, Stopwatch, Table, cores, interleaved};
use maily_benches::postfix::{
    PostfixTools, SourceJob, run_into_sink, smtp_source, write_source_file,
};
use maily_benches::{sample_message_id, sample_sender};
use maily_engine::ports::{DeliveryOutcome, OutboundMessage, Route, Transport};
use maily_engine::{EmailAddress, TenantId};
use maily_smtp::{SmtpClientParams, SmtpTransport, StaticRoutes};
use serde_json::json;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::runtime::Runtime;
use tokio::task::JoinSet;

/// Guards every connect, command and reply against a hung peer; never a threshold.
const TIMEOUT: Duration = Duration::from_secs(30);

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
    tools: PostfixTools,
    runtime: Runtime,
    /// Holds the sink's output files and the message file.
    dir: tempfile::TempDir,
}

/// The medians of a client's runs.
struct Summary {
    client: ClientKind,
    medians: Medians,
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
        tools: PostfixTools::find(&args.smtp_sink, &args.smtp_source)?,
        runtime: tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("building the tokio runtime")?,
        dir: tempfile::tempdir().context("creating a temporary directory")?,
    };
    let body = build_message(args.size)?;
    let source_file = bench.dir.path().join("message.eml");
    write_source_file(&source_file, &body)?;
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

    let medians = interleaved(
        &clients,
        |c| c.name().to_string(),
        args.warmup,
        args.runs,
        args.messages,
        |client, n| bench.run(client, &workload, n),
    )?;
    let summaries: Vec<Summary> = clients
        .iter()
        .zip(medians)
        .map(|(&client, medians)| Summary { client, medians })
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
        run_into_sink(
            &self.tools.sink,
            self.dir.path(),
            n,
            client.name(),
            |port| match client {
                ClientKind::Lettre => self.runtime.block_on(send_lettre(w, port, n)),
                ClientKind::MailSend => self.runtime.block_on(send_mail_send(w, port, n, false)),
                ClientKind::MailSendNodelay => {
                    self.runtime.block_on(send_mail_send(w, port, n, true))
                }
                ClientKind::Maily => self.runtime.block_on(send_maily(w, port, n)),
                ClientKind::SmtpSource => smtp_source(
                    &self.tools.source,
                    &SourceJob {
                        sessions: w.concurrency,
                        messages: n,
                        message_file: &w.source_file,
                        from: &w.from,
                        to: HEADER_TO,
                        port,
                    },
                ),
            },
        )
    }
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
    let routes = StaticRoutes::smart_host(Route::new("127.0.0.1", port));
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

/// Each client's rate relative to smtp-source's, when smtp-source ran.
fn ratio(summaries: &[Summary], s: &Summary) -> Option<f64> {
    summaries
        .iter()
        .find(|x| x.client == ClientKind::SmtpSource)
        .map(|source| s.medians.rate / source.medians.rate)
}

/// The results as a text table.
fn table(args: &Args, w: &Workload, summaries: &[Summary]) -> String {
    let mut table = Table::new([
        "client",
        "msg/s",
        "wall s",
        "vs source",
        "CPU µs/msg",
        "sink µs/msg",
        "accepted",
        "RTT/msg",
    ]);
    for s in summaries {
        let m = &s.medians;
        table.row([
            s.client.name().to_string(),
            format!("{:.0}", m.rate),
            format!("{:.2}", m.wall_s),
            ratio(summaries, s).map_or("-".to_string(), |r| format!("{r:.2}x")),
            format!("{:.1}", m.cpu_us),
            format!("{:.1}", m.sink_cpu_us),
            format!("{:.0}", m.accepted),
            s.client.round_trips_per_message().to_string(),
        ]);
    }
    format!(
        "{} messages of {} bytes, {} connections, median of {} runs, {} cores, into smtp-sink on 127.0.0.1\n{}",
        args.messages,
        w.body.len(),
        args.concurrency,
        args.runs,
        cores(),
        table.render()
    )
}

fn print_json(args: &Args, w: &Workload, summaries: &[Summary]) -> Result<()> {
    let clients: Vec<_> = summaries
        .iter()
        .map(|s| {
            let mut client = serde_json::Map::new();
            client.insert("client".into(), json!(s.client.name()));
            client.insert("ratio_to_smtp_source".into(), json!(ratio(summaries, s)));
            client.insert(
                "round_trips_per_message".into(),
                json!(s.client.round_trips_per_message()),
            );
            client.extend(s.medians.to_json());
            client
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
