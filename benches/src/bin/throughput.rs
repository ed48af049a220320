//! End-to-end delivery throughput: how fast does the whole engine turn an upload into
//! mail accepted by a real SMTP server, and what does each message cost?
//!
//! Each run starts the engine in this process on its embedded adapters, wired by
//! `maily::wiring` exactly as `maily serve` wires them (the event log `--log` names:
//! the in-process one or the durable segment files `maily serve` uses by default;
//! SQLite store in a temporary directory, memory hot state; jemalloc, as in the
//! binary), and sends
//! `--messages` recipients of one campaign (`--campaigns` spreads them over several)
//! into a fresh Postfix `smtp-sink` on a loopback port. Every message takes the real path: intake (validation, acked produce into the
//! send topic) → the sender actor of the campaign's partition → suppression check →
//! render (a minijinja template with per-recipient variables, sized so that the built
//! message is about `--size` bytes) → compose (MIME build, DKIM per `--dkim` mode) →
//! idempotency claim → pooled, pipelined SMTP (`smtp.max_connections_per_route` and
//! `[smtp.limits.domain] max_connections` = `--connections`, TLS off since smtp-sink
//! has none) → outcome recorded → events → analytics → SQLite.
//!
//! A run is timed from the start of the enqueue until the store's committed stats show
//! every message delivered (polled every 10 ms); the engine's CPU time is
//! `getrusage(RUSAGE_SELF)` over the same span (the engine runs in this process: every
//! actor, tokio worker and SQLite thread). The sink's CPU time is measured apart, and
//! what the sink counted (`smtp-sink -c`) must equal the messages sent, or the run
//! fails. In the same rounds, `smtp-source -d -s C -m N` sends a message of the same
//! size (the one the engine builds with DKIM off) over the same number of connections
//! into a fresh sink: the reference ceiling of the machine. Runs are interleaved (every
//! round runs each contender once, in rotating order, after one untimed warm-up round)
//! and the median of each figure is reported.
//!
//! With `--served`, a further contender takes the path a sender takes: a `maily serve`
//! process (the release binary beside this one, on the embedded defaults: durable
//! file log, SQLite, DKIM off), set up as an operator would (tenant, verified domain,
//! API key), to which a client generated from the proto uploads the recipients over
//! gRPC (`UploadRecipients`: staged in the store) and starts the campaign
//! (`StartCampaign`: the launcher moves the staged recipients into the send topic).
//! It is timed from `CreateCampaign` until `GetCampaignStats` shows every message
//! finished; its CPU is the serving process's (`/proc/<pid>/stat`) over that span.
//!
//! ```text
//! cargo build --release -p maily -p maily-benches --bin maily --bin throughput
//! target/release/throughput [--messages 20000] [--size 4096] [--connections 32] \
//!     [--dkim off,ed25519,rsa2048] [--log memory,file] [--served] [--runs 3] \
//!     [--warmup 2000] [--json]
//! ```

use anyhow::{Context, Result, bail, ensure};
use clap::{Parser, ValueEnum};
use maily::wiring::{build_ports, composer, engine_settings};
use maily_api::intake::{Intake, NewCampaign, Row};
use maily_benches::mail::{HEADER_TO, campaign_template, fewest_words};
use maily_benches::measure::{Medians, Run, Stopwatch, Table, cores, interleaved};
use maily_benches::postfix::{
    PostfixTools, SourceJob, run_into_sink, smtp_source, write_source_file,
};
use maily_benches::{sample_campaign_id, sample_message_id, sample_recipient};
use maily_config::Settings;
use maily_engine::partition::partition_for;
use maily_engine::template::{CompiledTemplate, Template};
use maily_engine::{Campaign, CampaignStats, EmailAddress, Recipient, TenantId};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// The campaign's sender; the DKIM keys sign for its domain.
const FROM: &str = "news@shop.example";
const FROM_DOMAIN: &str = "shop.example";
/// How often the store's stats are read while a run goes on.
const POLL: Duration = Duration::from_millis(10);
/// A run that makes no progress for this long has failed.
const STALL: Duration = Duration::from_secs(60);

#[derive(Debug, Parser)]
#[command(
    about = "Messages per second through the whole engine into Postfix's smtp-sink, beside smtp-source"
)]
struct Args {
    /// Messages per run.
    #[arg(long, short = 'n', default_value_t = 20_000)]
    messages: usize,
    /// Size of the built message in bytes, headers included, before any DKIM signature.
    #[arg(long, short = 's', default_value_t = 4096)]
    size: usize,
    /// SMTP connections to the sink (C): per route, per domain, and smtp-source's sessions.
    #[arg(long, short = 'c', default_value_t = 32)]
    connections: usize,
    /// DKIM modes to measure, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = Dkim::ALL)]
    dkim: Vec<Dkim>,
    /// Event logs to measure the engine on, comma-separated: the in-process one and
    /// the durable segment files (`maily serve`'s default), in the same rounds.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Log::Memory, Log::File])]
    log: Vec<Log>,
    /// Timed runs of each contender; the median is reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Messages each contender sends in the untimed warm-up round (0: no warm-up).
    #[arg(long, default_value_t = 2_000)]
    warmup: usize,
    /// Campaigns the messages are spread over (one partition, so one sender actor, each;
    /// campaign ids are random, so two may share a partition).
    #[arg(long, default_value_t = 1)]
    campaigns: usize,
    /// Deliveries in flight per partition (`sender.concurrency`); default 2C.
    #[arg(long)]
    sender_concurrency: Option<usize>,
    /// `analytics.flush_interval`: the store shows the last events at most this long
    /// after they happened.
    #[arg(long, default_value = "50ms")]
    flush_interval: String,
    /// The folder holding `ed25519.pem` and `rsa2048.pem`.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../smtp/tests/data/dkim"))]
    dkim_keys: PathBuf,
    /// Print the results as JSON instead of a table (the table goes to stderr).
    #[arg(long)]
    json: bool,
    /// The smtp-sink program (looked up in PATH, then /usr/sbin).
    #[arg(long, default_value = "smtp-sink")]
    smtp_sink: String,
    /// The smtp-source program (looked up in PATH, then /usr/sbin).
    #[arg(long, default_value = "smtp-source")]
    smtp_source: String,
    /// Also measure the path a sender takes: a `maily serve` process (the binary beside
    /// this one, on its embedded defaults: file log, SQLite, DKIM off) to which a
    /// client generated from the proto uploads the recipients over gRPC
    /// (`UploadRecipients`, staged in the store) and starts the campaign (the
    /// launcher moves them into the send topic). CPU is that process's. Profiles,
    /// comma-separated: `embedded` (its defaults) and `production`
    /// (`config/production.toml` on a tansu broker of the run's own, the local
    /// Postgres in a schema of the run's own and the local Redis; their CPU is shown
    /// per message too).
    #[arg(long, value_enum, value_delimiter = ',', num_args = 0..)]
    served: Vec<Profile>,
    /// The Postgres the production profile uses (a fresh schema per run).
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/test")]
    postgres: String,
    /// The Redis the production profile uses (a fresh key prefix per run).
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    redis: String,
}

/// How `maily serve` runs for `--served`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Profile {
    Embedded,
    Production,
}

impl Profile {
    fn name(self) -> &'static str {
        match self {
            Profile::Embedded => "embedded",
            Profile::Production => "production",
        }
    }
}

/// How the engine signs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Dkim {
    Off,
    Ed25519,
    Rsa2048,
}

impl Dkim {
    const ALL: [Dkim; 3] = [Dkim::Off, Dkim::Ed25519, Dkim::Rsa2048];

    fn name(self) -> &'static str {
        match self {
            Dkim::Off => "off",
            Dkim::Ed25519 => "ed25519",
            Dkim::Rsa2048 => "rsa2048",
        }
    }
}

impl std::fmt::Display for Dkim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Which event log the engine runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Log {
    Memory,
    File,
}

impl Log {
    fn name(self) -> &'static str {
        match self {
            Log::Memory => "memory",
            Log::File => "file",
        }
    }
}

impl std::fmt::Display for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What sends in a run: the engine in one DKIM mode on one log, or the reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Contender {
    Engine(Dkim, Log),
    /// `maily serve` driven over gRPC (see `--served`).
    Served(Profile),
    SmtpSource,
}

impl Contender {
    fn name(self) -> String {
        match self {
            Contender::Engine(mode, log) => format!("maily dkim={mode} log={log}"),
            Contender::Served(profile) => format!("maily serve {}, gRPC", profile.name()),
            Contender::SmtpSource => "smtp-source".into(),
        }
    }
}

/// Everything the runs share.
struct Bench {
    args: Args,
    tools: PostfixTools,
    /// The actix system on a multi-threaded tokio runtime, as the binary builds it.
    system: actix_rt::SystemRunner,
    /// Holds the sink's files, the message file and each run's store.
    dir: tempfile::TempDir,
    template: Template,
    /// One row per message, built before any run.
    rows: Vec<Row>,
    /// The message smtp-source sends (LF line ends).
    source_file: PathBuf,
}

/// The medians of a contender's runs, and the size of what it sent.
struct Summary {
    contender: Contender,
    message_bytes: usize,
    medians: Medians,
}

fn main() -> Result<()> {
    let args = Args::parse();
    ensure!(args.messages > 0, "--messages must be at least 1");
    ensure!(args.connections > 0, "--connections must be at least 1");
    ensure!(args.runs > 0, "--runs must be at least 1");
    ensure!(
        (1..=args.messages).contains(&args.campaigns),
        "--campaigns must be between 1 and --messages"
    );
    let mut contenders: Vec<Contender> = Vec::new();
    for &mode in &args.dkim {
        for &log in &args.log {
            if !contenders.contains(&Contender::Engine(mode, log)) {
                contenders.push(Contender::Engine(mode, log));
            }
        }
    }
    for &profile in &args.served {
        if !contenders.contains(&Contender::Served(profile)) {
            contenders.push(Contender::Served(profile));
        }
    }
    contenders.push(Contender::SmtpSource);

    let dir = tempfile::tempdir().context("creating a temporary directory")?;
    let tools = PostfixTools::find(&args.smtp_sink, &args.smtp_source)?;
    // The template's prose grows until the message built with DKIM off reaches --size.
    let probe = settings(&args, Dkim::Off, Log::Memory, dir.path(), "127.0.0.1:25")?;
    let words = fewest_words(args.size, |words| {
        Ok(built(&probe, &campaign_template(words), 0)?.len())
    })?;
    let template = campaign_template(words);
    let source_file = dir.path().join("message.eml");
    write_source_file(&source_file, &built(&probe, &template, 0)?)?;
    let system = actix_rt::System::with_tokio_rt(|| {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("building the tokio runtime")
    });
    let bench = Bench {
        rows: (0..args.messages.max(args.warmup)).map(row).collect(),
        args,
        tools,
        system,
        dir,
        template,
        source_file,
    };
    let mut sizes = Vec::new();
    for &c in &contenders {
        sizes.push(bench.message_bytes(c)?);
    }
    let args = &bench.args;
    for var in maily_env() {
        eprintln!("engine setting from the environment: {var}");
    }
    eprintln!(
        "{} messages in {} campaign(s) over {} connections, sender concurrency {}, {} runs per contender, {} cores",
        args.messages,
        args.campaigns,
        args.connections,
        sender_concurrency(&bench.args),
        args.runs,
        cores()
    );

    let medians = interleaved(
        &contenders,
        Contender::name,
        args.warmup,
        args.runs,
        args.messages,
        |c, n| bench.run(c, n),
    )?;
    let summaries: Vec<Summary> = contenders
        .iter()
        .zip(sizes)
        .zip(medians)
        .map(|((&contender, message_bytes), medians)| Summary {
            contender,
            message_bytes,
            medians,
        })
        .collect();
    let table = table(&bench, &summaries);
    if args.json {
        eprint!("{table}");
        print_json(&bench, &summaries)?;
    } else {
        print!("{table}");
    }
    Ok(())
}

impl Bench {
    /// One run of `contender` sending `n` messages into a fresh sink.
    fn run(&self, contender: Contender, n: usize) -> Result<Run> {
        let name = contender.name();
        run_into_sink(
            &self.tools.sink,
            self.dir.path(),
            n,
            &name,
            |port| match contender {
                Contender::Engine(mode, log) => {
                    self.system.block_on(self.engine_run(mode, log, n, port))
                }
                Contender::Served(profile) => {
                    self.system.block_on(served::run(self, profile, n, port))
                }
                Contender::SmtpSource => smtp_source(
                    &self.tools.source,
                    &SourceJob {
                        sessions: self.args.connections,
                        messages: n,
                        message_file: &self.source_file,
                        from: FROM,
                        to: HEADER_TO,
                        port,
                    },
                ),
            },
        )
    }

    /// A fresh engine sends `n` messages, of `--campaigns` campaigns, to the sink on
    /// `port`; returns the wall and CPU time from the start of the enqueue until the
    /// store shows them all delivered.
    async fn engine_run(
        &self,
        mode: Dkim,
        log: Log,
        n: usize,
        port: u16,
    ) -> Result<(Duration, Duration)> {
        let data = tempfile::tempdir_in(self.dir.path()).context("the run's store folder")?;
        let settings = settings(
            &self.args,
            mode,
            log,
            data.path(),
            &format!("127.0.0.1:{port}"),
        )?;
        let ports = build_ports(&settings).await?;
        let engine = maily_actors::start(ports.clone(), engine_settings(&settings)?).await?;
        let intake = Intake::new(ports.log.clone(), ports.store.clone());
        let tenant = tenant();
        ports.store.upsert_tenant(&tenant, "Bench").await?;
        ports
            .store
            .add_domain(&maily_engine::ports::TenantDomain {
                domain: maily_engine::Domain::parse(FROM_DOMAIN).expect("valid domain"),
                tenant: tenant.clone(),
                token: "operator".into(),
                created_at: maily_engine::Timestamp::now(),
                verified_at: Some(maily_engine::Timestamp::now()),
                dkim: None,
                return_path: None,
                tracking_host: None,
            })
            .await?;
        let k = self.args.campaigns;
        let mut campaigns = Vec::with_capacity(k);
        for c in 0..k {
            let campaign = intake
                .create_campaign(NewCampaign {
                    tenant: tenant.clone(),
                    name: format!("throughput {mode} #{c}"),
                    from: FROM.into(),
                    from_name: Some("Shop".into()),
                    template: self.template.clone(),
                })
                .await?;
            campaigns.push(campaign);
        }
        let mut partitions: Vec<u32> = campaigns
            .iter()
            .map(|c| partition_for(c.id.to_string().as_bytes(), settings.engine.partitions))
            .collect();
        partitions.sort_unstable();
        partitions.dedup();
        if partitions.len() < k {
            eprintln!(
                "note: the {k} campaigns share {} partitions",
                partitions.len()
            );
        }
        // Row i goes to campaign i mod k.
        let mut uploads: Vec<Vec<Row>> = vec![Vec::with_capacity(n / k + 1); k];
        for (i, row) in self.rows[..n].iter().enumerate() {
            uploads[i % k].push(row.clone());
        }

        let watch = Stopwatch::start(libc::RUSAGE_SELF)?;
        for (campaign, rows) in campaigns.iter().zip(uploads) {
            let expected = rows.len() as u64;
            let report = intake.enqueue(campaign, rows).await?;
            ensure!(
                report.accepted == expected,
                "intake accepted {} of {expected} rows: {:?}",
                report.accepted,
                report.rejected.first()
            );
        }
        let mut last = CampaignStats::default();
        let mut last_change = Instant::now();
        loop {
            let mut sum = [0u64; 12];
            for c in &campaigns {
                let stats = ports.store.campaign_stats(c.id).await?.unwrap_or_default();
                for (total, v) in sum.iter_mut().zip(stats.to_array()) {
                    *total += v;
                }
            }
            let stats = CampaignStats::from_array(sum);
            if stats.finished() >= n as u64 {
                last = stats;
                break;
            }
            if stats.finished() != last.finished() || stats.deferred != last.deferred {
                last = stats;
                last_change = Instant::now();
            } else if last_change.elapsed() > STALL {
                bail!("no progress for {} s, stats {last:?}", STALL.as_secs());
            }
            tokio::time::sleep(POLL).await;
        }
        let times = watch.stop()?;
        engine.shutdown().await;
        ensure!(
            last.delivered == n as u64 && last.deferred == 0,
            "{n} messages sent, the store shows {last:?}"
        );
        Ok(times)
    }

    /// The mean size of the messages `contender` sends (over the first 64 recipients
    /// for the engine).
    fn message_bytes(&self, contender: Contender) -> Result<usize> {
        match contender {
            Contender::Engine(mode, log) => {
                let s = settings(&self.args, mode, log, self.dir.path(), "127.0.0.1:25")?;
                let k = self.rows.len().min(64);
                let mut total = 0;
                for i in 0..k {
                    total += built(&s, &self.template, i)?.len();
                }
                Ok(total / k)
            }
            Contender::Served(_) => self.message_bytes(Contender::Engine(Dkim::Off, Log::File)),
            Contender::SmtpSource => {
                let lf = std::fs::read(&self.source_file)
                    .with_context(|| format!("reading {}", self.source_file.display()))?;
                // smtp-source sends every line with CRLF.
                Ok(lf.len() + lf.iter().filter(|&&b| b == b'\n').count())
            }
        }
    }
}

/// Deliveries in flight per partition: enough to keep every connection busy while
/// others wait for their replies.
fn sender_concurrency(args: &Args) -> usize {
    args.sender_concurrency.unwrap_or(2 * args.connections)
}

/// The `MAILY__*` variables set, which tune the engine's other settings.
fn maily_env() -> Vec<String> {
    let mut vars: Vec<String> = std::env::vars()
        .filter(|(k, _)| k.starts_with("MAILY__"))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    vars.sort();
    vars
}

/// The engine's settings for a run: the defaults and `MAILY__*` variables, with the
/// store in `data`, every domain routed to `sink`, TLS off, C connections, the sender
/// concurrency, the analytics flush interval, and the key of `mode`.
fn settings(args: &Args, mode: Dkim, log: Log, data: &Path, sink: &str) -> Result<Settings> {
    // MAILY__* variables tune any other setting (batch sizes, partitions, ...); the
    // layers after them fix what the harness needs.
    let mut fig = Settings::figment(None)?
        .merge(maily_config::env())
        .merge(("log.kind", log.name()))
        .merge(("store.path", data.join("maily.db").display().to_string()))
        .merge(("log.file.dir", data.join("maily-log").display().to_string()))
        .merge((
            "smtp.routes",
            BTreeMap::from([("*".to_string(), sink.to_string())]),
        ))
        .merge(("smtp.tls", "off"))
        .merge(("smtp.max_connections_per_route", args.connections))
        .merge(("smtp.limits.domain.max_connections", args.connections))
        .merge(("sender.concurrency", sender_concurrency(args)))
        .merge(("analytics.flush_interval", args.flush_interval.as_str()));
    let key = match mode {
        Dkim::Off => None,
        Dkim::Ed25519 => Some(("ed1", "ed25519.pem")),
        Dkim::Rsa2048 => Some(("rsa1", "rsa2048.pem")),
    };
    if let Some((selector, file)) = key {
        let path = args.dkim_keys.join(file);
        ensure!(path.is_file(), "no DKIM key at {}", path.display());
        fig = fig.merge((
            "dkim.keys",
            json!([{
                "domain": FROM_DOMAIN,
                "selector": selector,
                "key_file": path.display().to_string(),
            }]),
        ));
    }
    Ok(Settings::from_figment(fig)?)
}

fn tenant() -> TenantId {
    TenantId::parse("bench").expect("a valid tenant id")
}

/// Recipient row `i`: one domain, so one route and one domain limit, with the
/// variables of the sample campaign.
fn row(i: usize) -> Row {
    Row {
        email: format!("user{i}@example.com"),
        vars: sample_recipient(i).vars,
    }
}

/// The message the engine builds for row `i` with these settings (VERP, tracking and
/// DKIM as they say).
fn built(settings: &Settings, template: &Template, i: usize) -> Result<Vec<u8>> {
    let row = row(i);
    let recipient = Recipient {
        email: EmailAddress::parse(&row.email).map_err(|e| anyhow::anyhow!("{e:?}"))?,
        vars: row.vars,
    };
    let rendered = CompiledTemplate::compile(template)?.render(&recipient)?;
    let campaign = Campaign {
        from_name: Some("Shop".into()),
        ..Campaign::new(
            sample_campaign_id(1),
            tenant(),
            "probe",
            EmailAddress::parse(FROM).map_err(|e| anyhow::anyhow!("{e:?}"))?,
            template.clone(),
        )
    };
    let composed = composer(settings)?.compose(
        &campaign.tenant,
        &campaign,
        sample_message_id(i as u64),
        &recipient.email,
        &rendered,
    )?;
    Ok(composed.data)
}

/// Each contender's rate relative to smtp-source's.
fn ratio(summaries: &[Summary], s: &Summary) -> Option<f64> {
    summaries
        .iter()
        .find(|x| x.contender == Contender::SmtpSource)
        .map(|source| s.medians.rate / source.medians.rate)
}

/// The results as a text table.
fn table(bench: &Bench, summaries: &[Summary]) -> String {
    let mut table = Table::new([
        "sender",
        "bytes/msg",
        "msg/s",
        "wall s",
        "vs source",
        "CPU µs/msg",
        "sink µs/msg",
        "accepted",
    ]);
    for s in summaries {
        let m = &s.medians;
        table.row([
            s.contender.name(),
            s.message_bytes.to_string(),
            format!("{:.0}", m.rate),
            format!("{:.2}", m.wall_s),
            ratio(summaries, s).map_or("-".to_string(), |r| format!("{r:.2}x")),
            format!("{:.1}", m.cpu_us),
            format!("{:.1}", m.sink_cpu_us),
            format!("{:.0}", m.accepted),
        ]);
    }
    let a = &bench.args;
    format!(
        "{} messages in {} campaign(s), {} connections, median of {} runs, {} cores, into smtp-sink \
         on 127.0.0.1 (CPU: the engine process for maily, smtp-source's for smtp-source)\n{}",
        a.messages,
        a.campaigns,
        a.connections,
        a.runs,
        cores(),
        table.render()
    )
}

fn print_json(bench: &Bench, summaries: &[Summary]) -> Result<()> {
    let contenders: Vec<_> = summaries
        .iter()
        .map(|s| {
            let mut out = serde_json::Map::new();
            out.insert("sender".into(), json!(s.contender.name()));
            out.insert(
                "dkim".into(),
                json!(match s.contender {
                    Contender::Engine(mode, _) => Some(mode.name()),
                    Contender::Served(_) => Some(Dkim::Off.name()),
                    Contender::SmtpSource => None,
                }),
            );
            out.insert(
                "log".into(),
                json!(match s.contender {
                    Contender::Engine(_, log) => Some(log.name()),
                    Contender::Served(Profile::Embedded) => Some(Log::File.name()),
                    Contender::Served(Profile::Production) => Some("kafka"),
                    Contender::SmtpSource => None,
                }),
            );
            out.insert("message_bytes".into(), json!(s.message_bytes));
            out.insert("ratio_to_smtp_source".into(), json!(ratio(summaries, s)));
            out.extend(s.medians.to_json());
            out
        })
        .collect();
    let a = &bench.args;
    let report = json!({
        "messages": a.messages,
        "size": a.size,
        "connections": a.connections,
        "campaigns": a.campaigns,
        "environment": maily_env(),
        "sender_concurrency": sender_concurrency(&bench.args),
        "analytics_flush_interval": a.flush_interval,
        "runs": a.runs,
        "warmup_messages": a.warmup,
        "cores": cores(),
        "statistic": "median over runs, per figure",
        "cpu": "getrusage RUSAGE_SELF of the engine process for maily, RUSAGE_CHILDREN for smtp-source",
        "contenders": contenders,
    });
    println!(
        "{}",
        serde_json::to_string_pretty(&report).context("encoding the results")?
    );
    Ok(())
}

/// The `--served` contender: the user's path through a `maily serve` process.
mod served {
    use super::{Bench, FROM, FROM_DOMAIN, POLL, Profile, STALL, tenant};
    use anyhow::{Context, Result, bail, ensure};
    use maily_api::auth::{Scope, keys};
    use maily_api::grpc::proto::campaign_service_client::CampaignServiceClient;
    use maily_api::grpc::proto::{
        CampaignCommandRequest, CreateCampaignRequest, GetCampaignStatsRequest, Recipient,
        Template, UploadRecipientsRequest,
    };
    use maily_benches::postfix::free_port;
    use std::path::Path;
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};
    use tonic::Request;
    use tonic::transport::Channel;

    /// Recipients per upload message.
    const CHUNK: usize = 1000;

    /// A `maily serve` process, stopped when dropped.
    struct Served(Child);

    impl Drop for Served {
        fn drop(&mut self) {
            // SIGTERM: a graceful stop, as an operator would.
            unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.0.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    /// User plus system CPU time of process `pid` so far.
    /// The most resident memory process `pid` has had, in KiB (`VmHWM`).
    fn peak_rss(pid: u32) -> Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .with_context(|| format!("reading /proc/{pid}/status"))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .context("no VmHWM in /proc status")
    }

    fn cpu_of(pid: u32) -> Result<Duration> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .with_context(|| format!("reading /proc/{pid}/stat"))?;
        // The command name may hold spaces: the fields counted here follow its ')'.
        let after = stat.rsplit_once(')').context("a /proc stat line")?.1;
        let fields: Vec<&str> = after.split_whitespace().collect();
        let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
        let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
        Ok(Duration::from_micros(ticks * 1_000_000 / per_second))
    }

    fn authed<T>(message: T, key: &str) -> Request<T> {
        let mut request = Request::new(message);
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {key}").parse().expect("an ASCII key"),
        );
        request
    }

    /// Overrides `over` merged into `base`, table by table.
    fn merge(base: &mut toml::Table, over: toml::Table) {
        for (k, v) in over {
            match (base.get_mut(&k), v) {
                (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
                (_, v) => {
                    base.insert(k, v);
                }
            }
        }
    }

    /// A tansu broker of the run's own (a fresh SQLite storage in `dir`), so its CPU is
    /// the run's alone; stopped when dropped.
    struct Broker {
        child: Served,
        addr: String,
    }

    impl Broker {
        fn start(dir: &Path) -> Result<Broker> {
            let bin = std::env::var("MAILY_TANSU").unwrap_or_else(|_| {
                format!(
                    "{}/.cache/maily/tools/bin/tansu",
                    std::env::var("HOME").unwrap_or_default()
                )
            });
            let port = free_port()?;
            let url = format!("tcp://127.0.0.1:{port}");
            let log = std::fs::File::create(dir.join("broker.log"))?;
            let child = Command::new(&bin)
                .args([
                    "broker",
                    "--listener-url",
                    &url,
                    "--advertised-listener-url",
                    &url,
                ])
                .args(["--storage-engine", "sqlite://broker.db"])
                .current_dir(dir)
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .with_context(|| format!("starting {bin} (scripts/kafka.sh install)"))?;
            let broker = Broker {
                child: Served(child),
                addr: format!("127.0.0.1:{port}"),
            };
            let deadline = Instant::now() + Duration::from_secs(30);
            while std::net::TcpStream::connect(&broker.addr).is_err() {
                ensure!(Instant::now() < deadline, "tansu did not listen on {port}");
                std::thread::sleep(Duration::from_millis(50));
            }
            Ok(broker)
        }
    }

    /// Writes the configuration of a run: what the in-process contenders run with
    /// (`super::settings` with the file log and DKIM off), with the gRPC API on `grpc`
    /// and nothing else listening; for `production`, over `config/production.toml`
    /// with the run's broker, schema and key prefix.
    fn config(
        bench: &Bench,
        profile: Profile,
        data: &Path,
        sink: &str,
        (grpc, metrics): (&str, &str),
        broker: Option<&Broker>,
    ) -> Result<std::path::PathBuf> {
        let a = &bench.args;
        let common = format!(
            r#"
[smtp]
tls = "off"
max_connections_per_route = {c}
[smtp.routes]
"*" = "{sink}"
[smtp.limits.domain]
max_connections = {c}
[sender]
concurrency = {concurrency}
[analytics]
flush_interval = "{flush}"
[grpc]
enabled = true
bind = "{grpc}"
[admin]
enabled = false
[metrics]
enabled = true
bind = "{metrics}"
[inbound]
enabled = false
"#,
            c = a.connections,
            concurrency = super::sender_concurrency(a),
            flush = a.flush_interval,
        );
        let mut table = match (profile, broker) {
            (Profile::Embedded, _) => format!(
                r#"
[store]
path = "{db}"
[log]
kind = "file"
[log.file]
dir = "{log}"
"#,
                db = data.join("maily.db").display(),
                log = data.join("maily-log").display(),
            )
            .parse::<toml::Table>()?,
            (Profile::Production, Some(broker)) => {
                let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/production.toml");
                let mut t: toml::Table = std::fs::read_to_string(&file)
                    .with_context(|| format!("reading {}", file.display()))?
                    .parse()?;
                let prefix = format!("bench-{}.", uuid::Uuid::new_v4().simple());
                let over = format!(
                    r#"
[log.kafka]
brokers = "{brokers}"
topic_prefix = "{prefix}"
group_prefix = "{prefix}"
fetch_wait = "{fetch_wait}"
[store.postgres]
url = "{postgres}"
schema = "maily_tmp_{secs}_{schema}"
[hot.redis]
url = "{redis}"
key_prefix = "{prefix}"
"#,
                    brokers = broker.addr,
                    postgres = a.postgres,
                    redis = a.redis,
                    // A throwaway schema by the store's naming: the next store that
                    // opens one drops those over an hour old.
                    secs = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap_or_default()
                        .as_secs(),
                    schema = uuid::Uuid::new_v4().simple(),
                    // tansu sleeps half the fetch wait before answering, even with
                    // records to send (docs/kafka.md); Kafka answers at once.
                    // MAILY__LOG__KAFKA__FETCH_WAIT overrides it for another broker.
                    fetch_wait = std::env::var("MAILY__LOG__KAFKA__FETCH_WAIT")
                        .unwrap_or_else(|_| "50ms".into()),
                );
                merge(&mut t, over.parse()?);
                t
            }
            (Profile::Production, None) => bail!("the production profile needs a broker"),
        };
        merge(&mut table, common.parse()?);
        let path = data.join("maily.toml");
        std::fs::write(&path, toml::to_string(&table)?).context("writing the configuration")?;
        Ok(path)
    }

    /// The processes whose CPU the production profile reports beside the engine's.
    fn components(broker: Option<&Broker>) -> Vec<(&'static str, Vec<u32>)> {
        let Some(broker) = broker else {
            return Vec::new();
        };
        let named = |name: &str| -> Vec<u32> {
            let mut pids = Vec::new();
            for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
                let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                    continue;
                };
                let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                if comm.trim_end().starts_with(name) {
                    pids.push(pid);
                }
            }
            pids
        };
        vec![
            ("broker", vec![broker.child.0.id()]),
            ("postgres", named("postgres")),
            ("redis", named("redis-server")),
        ]
    }

    /// `maily_log_records_total` over the delivered count of
    /// `maily_deliveries_total`, read from the process's Prometheus endpoint.
    fn records_per_message(metrics: &str) -> Result<f64> {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(metrics)?;
        stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: bench\r\n\r\n")?;
        let mut body = String::new();
        stream.read_to_string(&mut body)?;
        let sum = |prefix: &str, also: &str| -> f64 {
            body.lines()
                .filter(|l| l.starts_with(prefix) && l.contains(also))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum()
        };
        let records = sum("maily_log_records_total", "");
        let delivered = sum("maily_deliveries_total", "result=\"delivered\"");
        ensure!(delivered > 0.0, "no delivered messages counted");
        Ok(records / delivered)
    }

    /// The CPU the processes of `pids` used so far (those that went away count none).
    fn cpu_of_all(pids: &[u32]) -> Duration {
        pids.iter().filter_map(|&p| cpu_of(p).ok()).sum()
    }

    /// One run: a fresh `maily serve` on a fresh store sends `n` messages to the sink
    /// on `port`. Returns the wall and CPU time of the serving process from the first
    /// upload until GetCampaignStats shows every message finished.
    pub(super) async fn run(
        bench: &Bench,
        profile: Profile,
        n: usize,
        port: u16,
    ) -> Result<(Duration, Duration)> {
        let data = tempfile::tempdir_in(bench.dir.path()).context("the run's folder")?;
        let grpc = format!("127.0.0.1:{}", free_port()?);
        let metrics = format!("127.0.0.1:{}", free_port()?);
        let broker = match profile {
            Profile::Embedded => None,
            Profile::Production => Some(Broker::start(data.path())?),
        };
        let path = config(
            bench,
            profile,
            data.path(),
            &format!("127.0.0.1:{port}"),
            (&grpc, &metrics),
            broker.as_ref(),
        )?;
        // The operator's part, before the process starts: the tenant, its verified
        // sending domain and an API key.
        let key = {
            let loaded = maily_config::Settings::load(Some(&path))?;
            let store = maily::wiring::open_store(&loaded).await?;
            let tenant = tenant();
            store.upsert_tenant(&tenant, "Bench").await?;
            store
                .add_domain(&maily_engine::ports::TenantDomain {
                    domain: maily_engine::Domain::parse(FROM_DOMAIN).expect("valid domain"),
                    tenant: tenant.clone(),
                    token: "operator".into(),
                    created_at: maily_engine::Timestamp::now(),
                    verified_at: Some(maily_engine::Timestamp::now()),
                    dkim: None,
                    return_path: None,
                    tracking_host: None,
                })
                .await?;
            let (record, plain) = keys::generate(&tenant, "bench", &[Scope::Send, Scope::Read])
                .context("making an API key")?;
            store.create_api_key(&record).await?;
            plain.into_string()
        };
        let binary = std::env::current_exe()?.with_file_name("maily");
        ensure!(
            binary.is_file(),
            "no maily binary at {} (cargo build --release -p maily)",
            binary.display()
        );
        let log = std::fs::File::create(data.path().join("serve.log"))?;
        let child = Command::new(&binary)
            .args(["serve", "--config"])
            .arg(&path)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let pid = child.id();
        let mut served = Served(child);
        let mut client = connect(&mut served, &grpc, data.path()).await?;

        let others = components(broker.as_ref());
        let others_before: Vec<Duration> = others.iter().map(|(_, p)| cpu_of_all(p)).collect();
        let cpu_before = cpu_of(pid)?;
        let started = Instant::now();
        let created = client
            .create_campaign(authed(
                CreateCampaignRequest {
                    name: "throughput (served)".into(),
                    from: FROM.into(),
                    from_name: Some("Shop".into()),
                    template: Some(Template {
                        subject: bench.template.subject.clone(),
                        text: bench.template.text.clone(),
                        html: bench.template.html.clone(),
                    }),
                    tenant: String::new(),
                },
                &key,
            ))
            .await
            .context("CreateCampaign")?
            .into_inner()
            .campaign
            .context("CreateCampaign answered no campaign")?;
        let chunks: Vec<UploadRecipientsRequest> = bench.rows[..n]
            .chunks(CHUNK)
            .enumerate()
            .map(|(k, rows)| UploadRecipientsRequest {
                campaign_id: if k == 0 {
                    created.id.clone()
                } else {
                    String::new()
                },
                recipients: rows
                    .iter()
                    .map(|r| Recipient {
                        email: r.email.clone(),
                        variables: r.vars.clone(),
                    })
                    .collect(),
            })
            .collect();
        let uploaded = client
            .upload_recipients(authed(futures::stream::iter(chunks), &key))
            .await
            .context("UploadRecipients")?
            .into_inner();
        ensure!(
            uploaded.accepted == n as u64,
            "the upload accepted {} of {n} recipients: {uploaded:?}",
            uploaded.accepted
        );
        client
            .start_campaign(authed(
                CampaignCommandRequest {
                    campaign_id: created.id.clone(),
                },
                &key,
            ))
            .await
            .context("StartCampaign")?;
        let (mut last, mut last_change) = (0, Instant::now());
        loop {
            let stats = client
                .get_campaign_stats(authed(
                    GetCampaignStatsRequest {
                        campaign_id: created.id.clone(),
                    },
                    &key,
                ))
                .await
                .context("GetCampaignStats")?
                .into_inner()
                .stats
                .unwrap_or_default();
            if stats.finished >= n as u64 {
                ensure!(
                    stats.delivered == n as u64,
                    "{n} messages sent, the engine shows {stats:?}"
                );
                break;
            }
            if stats.finished != last {
                (last, last_change) = (stats.finished, Instant::now());
            } else if last_change.elapsed() > STALL {
                bail!(
                    "no progress for {} s at {last} finished; the process's log is in {}",
                    STALL.as_secs(),
                    data.path().join("serve.log").display()
                );
            }
            tokio::time::sleep(POLL).await;
        }
        let wall = started.elapsed();
        let cpu = cpu_of(pid)? - cpu_before;
        let mut line = Vec::new();
        for ((name, pids), before) in others.iter().zip(others_before) {
            let used = cpu_of_all(pids).saturating_sub(before);
            line.push(format!("{name} {:.1}", used.as_secs_f64() * 1e6 / n as f64));
        }
        if !line.is_empty() {
            eprintln!("  CPU µs/msg of the services: {}", line.join(", "));
        }
        match records_per_message(&metrics) {
            Ok(per) => eprintln!("  event-log records per delivered message: {per:.2}"),
            Err(e) => eprintln!("  event-log records per message unknown: {e:#}"),
        }
        match peak_rss(pid) {
            Ok(kb) => eprintln!("  peak RSS of maily serve: {:.1} MB", kb as f64 / 1024.0),
            Err(e) => eprintln!("  peak RSS unknown: {e:#}"),
        }
        drop(served);
        drop(broker);
        Ok((wall, cpu))
    }

    /// A gRPC client of the process, once it answers.
    async fn connect(
        served: &mut Served,
        grpc: &str,
        data: &Path,
    ) -> Result<CampaignServiceClient<Channel>> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = served.0.try_wait()? {
                bail!(
                    "maily serve exited ({status}); its log is in {}",
                    data.join("serve.log").display()
                );
            }
            let endpoint = Channel::from_shared(format!("http://{grpc}"))?;
            if let Ok(channel) = endpoint.connect().await {
                return Ok(CampaignServiceClient::new(channel));
            }
            ensure!(
                Instant::now() < deadline,
                "maily serve did not answer on {grpc}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
