//! The user-path chaos harness: `maily serve` processes driven only through the public
//! gRPC API (a client generated from the proto), mail counted at a recording SMTP sink
//! (every envelope recipient, so lost and duplicated mail is exact), and faults
//! injected from outside: SIGKILL or SIGTERM of an engine process at seeded random
//! points, then a restart of that process alone.
//!
//! Profiles: `Production` is `config/production.toml` (Kafka, Postgres, Redis) with
//! only the addresses and names a test needs changed (its own broker, schema, key
//! prefix, ports); `Embedded` is the defaults (the durable file log, SQLite, in-memory
//! hot state) in a folder of its own.
//!
//! Setup that has no public interface yet (the tenant and its API key) goes straight to
//! the store; everything the scenario checks goes through gRPC and the sink.

use super::procs::{Broker, Serve, tail};
use maily_api::auth::{Scope, keys};
use maily_api::grpc::proto::campaign_service_client::CampaignServiceClient;
use maily_api::grpc::proto::{
    CampaignCommandRequest, CreateCampaignRequest, GetCampaignStatsRequest, Recipient, Template,
    UploadRecipientsRequest,
};
use maily_config::Settings;
use maily_engine::TenantId;
use maily_smtp::{SinkConfig, SinkHandle, SmtpSink};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tonic::Request;
use tonic::transport::Channel;

/// Which set of adapters the engine runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// `config/production.toml`: Kafka (a tansu of the test's own), Postgres, Redis.
    Production,
    /// The defaults: the durable file log, SQLite and in-memory hot state.
    Embedded,
}

/// How a process is stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    Kill,
    Term,
}

/// What a fault does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Stop one process the plan's way and start it again alone.
    RestartOne,
    /// SIGKILL every process, then start them all again.
    RestartAll,
    /// Stop the broker and start it again on its storage (production only).
    RestartBroker,
    /// SIGSTOP one process past its lease, then SIGCONT it.
    Freeze,
}

/// One run of the harness.
#[derive(Debug, Clone)]
pub struct Plan {
    pub profile: Profile,
    pub processes: usize,
    pub recipients: usize,
    pub faults: usize,
    pub stop: Stop,
    /// The kinds of fault a run draws from (seeded).
    pub kinds: Vec<Fault>,
    pub seed: u64,
    /// How long after the last restart every message must be final.
    pub settle: Duration,
}

impl Plan {
    /// A plan with the size and seed taken from `MAILY_CHAOS_RECIPIENTS`,
    /// `MAILY_CHAOS_FAULTS` and `MAILY_CHAOS_SEED` when set (the long profile,
    /// `scripts/chaos.sh`), else the short one given.
    pub fn from_env(profile: Profile, processes: usize, recipients: usize, faults: usize) -> Plan {
        let var = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
        let seed = var("MAILY_CHAOS_SEED").unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
        Plan {
            profile,
            processes,
            recipients: var("MAILY_CHAOS_RECIPIENTS").map_or(recipients, |v| v as usize),
            faults: var("MAILY_CHAOS_FAULTS").map_or(faults, |v| v as usize),
            stop: Stop::Kill,
            kinds: match std::env::var("MAILY_CHAOS_KINDS").ok().as_deref() {
                Some("all") if profile == Profile::Production => vec![
                    Fault::RestartOne,
                    Fault::RestartAll,
                    Fault::RestartBroker,
                    Fault::Freeze,
                ],
                Some("all") => vec![Fault::RestartOne, Fault::Freeze],
                _ => vec![Fault::RestartOne],
            },
            seed,
            settle: Duration::from_secs(var("MAILY_CHAOS_SETTLE_SECS").unwrap_or(120)),
        }
    }
}

/// What a run found.
#[derive(Debug, Default, Clone)]
pub struct Report {
    pub recipients: u64,
    /// Recipients the sink received at least once.
    pub delivered: u64,
    /// Recipients never received.
    pub lost: u64,
    /// Receipts beyond the first, over all recipients.
    pub duplicates: u64,
    /// The most receipts of one recipient.
    pub max_per_recipient: u64,
    /// Messages not final (per GetCampaignStats) when the run ended.
    pub stuck: u64,
    /// What GetCampaignStats reported.
    pub stats_delivered: u64,
    pub stats_finished: u64,
    /// Per fault: the sink's count when it struck, the duplicates it caused, the time
    /// from the restart to the first new delivery and to the last.
    pub faults: Vec<FaultReport>,
    pub finished_after_restart: Option<Duration>,
}

#[derive(Debug, Clone)]
pub struct FaultReport {
    pub kind: Fault,
    pub process: usize,
    pub at_sink: u64,
    /// Recipients not yet at the sink when the process came back: with none left (the
    /// other processes finished the campaign meanwhile) there is no first delivery.
    pub left_at_restart: u64,
    pub first_delivery_after_restart: Option<Duration>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "recipients {} delivered {} lost {} stuck {} duplicates {} (max {} per recipient) \
             stats delivered {} finished {}",
            self.recipients,
            self.delivered,
            self.lost,
            self.stuck,
            self.duplicates,
            self.max_per_recipient,
            self.stats_delivered,
            self.stats_finished
        )?;
        for (i, x) in self.faults.iter().enumerate() {
            write!(
                f,
                "\n  fault {i}: {:?} of process {} at {} delivered, {} left at the restart; \
                 first delivery {:?} after the restart",
                x.kind, x.process, x.at_sink, x.left_at_restart, x.first_delivery_after_restart
            )?;
        }
        if let Some(d) = self.finished_after_restart {
            write!(f, "\n  all final {d:?} after the last restart")?;
        }
        Ok(())
    }
}

/// splitmix64: the seeded choices of a run, reproducible from the printed seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// The environment of the run: sink, broker, configuration and processes.
pub struct Chaos {
    pub plan: Plan,
    pub dir: tempfile::TempDir,
    pub sink: SinkHandle,
    pub config: PathBuf,
    broker: Option<Broker>,
    pub procs: Vec<Option<Serve>>,
    pub ports: Vec<u16>,
    /// Each process's Prometheus endpoint port (a fresh one at each start).
    pub metrics_ports: Vec<u16>,
    settings: Settings,
}

/// Deep-merges `over` into `base`.
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

impl Chaos {
    /// Starts the sink (and for production a broker of the run's own) and writes the
    /// configuration; no engine process yet.
    pub async fn prepare(plan: Plan) -> Chaos {
        Self::prepare_with(plan, "").await
    }

    /// Like [`Chaos::prepare`], with `extra` TOML merged over the configuration last.
    pub async fn prepare_with(plan: Plan, extra: &str) -> Chaos {
        println!(
            "chaos plan: {plan:?} (rerun with MAILY_CHAOS_SEED={})",
            plan.seed
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let sink = SmtpSink::start(SinkConfig {
            capture: true,
            ..SinkConfig::default()
        })
        .await
        .expect("sink starts");
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let (mut table, broker) = match plan.profile {
            Profile::Production => {
                let text = std::fs::read_to_string(root.join("config/production.toml"))
                    .expect("config/production.toml");
                let table: toml::Table = text.parse().expect("production.toml parses");
                let broker = Broker::start(dir.path(), "broker.log");
                let prefix = format!("chaos-{}.", uuid::Uuid::new_v4().simple());
                let url = std::env::var("MAILY_TEST_POSTGRES")
                    .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
                let over = format!(
                    r#"
[log.kafka]
brokers = "{brokers}"
topic_prefix = "{prefix}"
group_prefix = "{prefix}"
[store.postgres]
url = "{url}"
schema = "t_{schema}"
[hot.redis]
key_prefix = "{prefix}"
"#,
                    brokers = broker.addr(),
                    schema = uuid::Uuid::new_v4().simple(),
                );
                let mut t = table;
                merge(&mut t, over.parse().expect("overrides parse"));
                (t, Some(broker))
            }
            Profile::Embedded => {
                let over = format!(
                    r#"
[store]
path = "{db}"
[log.file]
dir = "{log}"
"#,
                    db = dir.path().join("maily.db").display(),
                    log = dir.path().join("log").display(),
                );
                (over.parse().expect("overrides parse"), None)
            }
        };
        let common = format!(
            r#"
[smtp.routes]
"*" = "{sink}"
[grpc]
enabled = true
[metrics]
enabled = true
lag_interval = "1s"
[analytics]
flush_interval = "100ms"
"#,
            sink = sink.addr()
        );
        merge(&mut table, common.parse().expect("common overrides parse"));
        merge(&mut table, extra.parse().expect("extra overrides parse"));
        let config = dir.path().join("maily.toml");
        std::fs::write(&config, toml::to_string(&table).expect("toml")).expect("config written");
        let settings = Settings::load(Some(&config)).expect("the configuration loads");
        let ports = (0..plan.processes).map(|_| free_port()).collect();
        let metrics_ports = (0..plan.processes).map(|_| free_port()).collect();
        Chaos {
            procs: (0..plan.processes).map(|_| None).collect(),
            plan,
            dir,
            sink,
            config,
            broker,
            ports,
            metrics_ports,
            settings,
        }
    }

    /// Starts (or restarts) process `i` under its fixed member name and ports.
    pub fn spawn(&mut self, i: usize) {
        let grpc = format!("127.0.0.1:{}", self.ports[i]);
        self.metrics_ports[i] = free_port();
        let metrics = format!("127.0.0.1:{}", self.metrics_ports[i]);
        let serve = Serve::spawn_with(
            &self.config,
            &format!("m{i}"),
            self.dir.path(),
            &[
                ("MAILY__GRPC__BIND", grpc.as_str()),
                ("MAILY__METRICS__BIND", metrics.as_str()),
            ],
        );
        self.procs[i] = Some(serve);
    }

    pub fn logs(&self) -> String {
        self.procs
            .iter()
            .flatten()
            .map(|p| format!("--- {} ---\n{}", p.member, tail(&p.log(), 400)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// A gRPC client of a running process, once it answers.
    pub async fn client(&self) -> CampaignServiceClient<Channel> {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            for (i, p) in self.procs.iter().enumerate() {
                if p.is_none() {
                    continue;
                }
                let url = format!("http://127.0.0.1:{}", self.ports[i]);
                if let Ok(ch) = Channel::from_shared(url).expect("url").connect().await {
                    return CampaignServiceClient::new(ch);
                }
            }
            assert!(
                Instant::now() < deadline,
                "no engine process answered gRPC:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A tenant and an API key with send and read scopes, created in the store (there
    /// is no public interface for the first key yet).
    pub async fn api_key(&self) -> String {
        self.api_key_of("acme").await
    }

    /// Like [`Chaos::api_key`], for the tenant `tenant`.
    pub async fn api_key_of(&self, tenant: &str) -> String {
        self.key_of(tenant, &[Scope::Send, Scope::Read]).await
    }

    /// A key of `tenant` with `scopes` (the tenant and its domains as
    /// [`Chaos::api_key_of`] sets them up).
    pub async fn key_of(&self, tenant: &str, scopes: &[Scope]) -> String {
        let store = maily::wiring::open_store(&self.settings)
            .await
            .expect("store opens");
        let tenant = TenantId::parse(tenant).expect("tenant");
        store
            .upsert_tenant(&tenant, tenant.as_str())
            .await
            .expect("tenant");
        // acme sends From shop.example; every tenant From <tenant>.example.
        if tenant.as_str() == "acme" {
            maily_engine::testkit::sending_domain(store.as_ref(), &tenant, "shop.example").await;
        }
        let own = format!("{tenant}.example");
        maily_engine::testkit::sending_domain(store.as_ref(), &tenant, &own).await;
        let (record, plain) = keys::generate(&tenant, "chaos", scopes).expect("key");
        store.create_api_key(&record).await.expect("key stored");
        plain.into_string()
    }

    /// Applies one fault (`victim` for the faults that strike one process) and returns
    /// once everything it stopped runs again.
    /// Returns when the restart (or the thaw) happened and the sink's count then.
    pub async fn strike(&mut self, kind: Fault, victim: usize) -> (Instant, u64) {
        let now = |sink: &SinkHandle| (Instant::now(), sink.accepted());
        match kind {
            Fault::RestartOne => {
                self.stop(victim);
                self.spawn(victim);
                let at = now(&self.sink);
                self.ready(victim).await;
                at
            }
            Fault::RestartAll => {
                for i in 0..self.procs.len() {
                    drop(self.procs[i].take());
                }
                for i in 0..self.procs.len() {
                    self.spawn(i);
                }
                let at = now(&self.sink);
                for i in 0..self.procs.len() {
                    self.ready(i).await;
                }
                at
            }
            Fault::RestartBroker => {
                let old = self.broker.take().expect("a broker of the run's own");
                let port = old.port;
                drop(old);
                tokio::time::sleep(Duration::from_secs(2)).await;
                self.broker = Some(Broker::restart(port, self.dir.path(), "broker-2.log"));
                now(&self.sink)
            }
            Fault::Freeze => {
                let p = self.procs[victim].as_ref().expect("process running");
                p.signal("STOP");
                let ttl = self.settings.ownership.lease_ttl;
                tokio::time::sleep(ttl + Duration::from_secs(3)).await;
                p.signal("CONT");
                now(&self.sink)
            }
        }
    }

    /// Waits until process `i` answers on its gRPC port (it has started).
    pub async fn ready(&self, i: usize) {
        let deadline = Instant::now() + Duration::from_secs(90);
        while tokio::net::TcpStream::connect(("127.0.0.1", self.ports[i]))
            .await
            .is_err()
        {
            assert!(
                Instant::now() < deadline,
                "m{i} never answered gRPC:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops process `i` the plan's way and waits for it to be gone.
    pub fn stop(&mut self, i: usize) {
        let p = self.procs[i].take().expect("process running");
        match self.plan.stop {
            Stop::Kill => drop(p),
            Stop::Term => {
                let status = p.terminate();
                assert!(status.success(), "m{i} exited with {status} on SIGTERM");
            }
        }
    }
}

pub fn authed<T>(message: T, key: &str) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {key}").parse().expect("ascii"),
    );
    request
}

/// Creates a campaign of `n` recipients (`r{i}@example.com`) over gRPC and uploads
/// them; returns its id.
pub async fn upload(
    client: &mut CampaignServiceClient<Channel>,
    key: &str,
    name: &str,
    n: usize,
) -> String {
    upload_to(client, key, name, n, |i| format!("r{i}@example.com")).await
}

/// Like [`upload`], recipient `i` at `email(i)`.
pub async fn upload_to(
    client: &mut CampaignServiceClient<Channel>,
    key: &str,
    name: &str,
    n: usize,
    email: impl Fn(usize) -> String,
) -> String {
    let recipient = |i: usize| Recipient {
        email: email(i),
        variables: BTreeMap::from([("first_name".to_string(), format!("Name{i}"))]),
    };
    let created = client
        .create_campaign(authed(
            CreateCampaignRequest {
                name: name.into(),
                from: "news@shop.example".into(),
                from_name: Some("Shop".into()),
                template: Some(Template {
                    subject: "Hello {{ first_name }}".into(),
                    text: Some("Dear {{ first_name }}, news for you.\n".into()),
                    html: None,
                }),
                tenant: String::new(),
            },
            key,
        ))
        .await
        .expect("campaign created")
        .into_inner()
        .campaign
        .expect("campaign");
    let chunks: Vec<UploadRecipientsRequest> = (0..n)
        .step_by(1000)
        .enumerate()
        .map(|(k, from)| UploadRecipientsRequest {
            campaign_id: if k == 0 {
                created.id.clone()
            } else {
                String::new()
            },
            recipients: (from..(from + 1000).min(n)).map(recipient).collect(),
        })
        .collect();
    let reply = client
        .upload_recipients(authed(futures::stream::iter(chunks), key))
        .await
        .expect("upload")
        .into_inner();
    assert_eq!(reply.accepted, n as u64, "{reply:?}");
    created.id
}

pub async fn command(client: &mut CampaignServiceClient<Channel>, key: &str, id: &str, what: &str) {
    let req = authed(
        CampaignCommandRequest {
            campaign_id: id.to_string(),
        },
        key,
    );
    let result = match what {
        "start" => client.start_campaign(req).await,
        "pause" => client.pause_campaign(req).await,
        "resume" => client.resume_campaign(req).await,
        other => panic!("no command {other}"),
    };
    result.unwrap_or_else(|e| panic!("{what} {id}: {e}"));
}

/// `(delivered, finished)` of a campaign per GetCampaignStats, if a process answers.
pub async fn stats(
    client: &mut CampaignServiceClient<Channel>,
    key: &str,
    id: &str,
) -> Option<(u64, u64)> {
    let reply = client
        .get_campaign_stats(authed(
            GetCampaignStatsRequest {
                campaign_id: id.to_string(),
            },
            key,
        ))
        .await
        .ok()?
        .into_inner();
    let s = reply.stats?;
    Some((s.delivered, s.finished))
}

/// Counts per recipient at the sink.
pub fn receipts(sink: &SinkHandle) -> HashMap<String, u64> {
    let mut counts = HashMap::new();
    for m in sink.received() {
        for r in &m.rcpt_to {
            *counts.entry(r.clone()).or_insert(0) += 1;
        }
    }
    counts
}

/// Runs the plan: one campaign of `plan.recipients` recipients, `plan.faults` stops of
/// a seeded process at a seeded point, each followed by a restart of that process
/// alone; then waits at most `plan.settle` after the last restart for every message
/// to be final, and reports.
pub async fn run_plan(plan: Plan) -> Report {
    let mut rng = Rng(plan.seed);
    let mut chaos = Chaos::prepare(plan.clone()).await;
    for i in 0..plan.processes {
        chaos.spawn(i);
    }
    let mut client = chaos.client().await;
    let key = chaos.api_key().await;
    let id = upload(&mut client, &key, "chaos", plan.recipients).await;
    command(&mut client, &key, &id, "start").await;

    let n = plan.recipients as u64;
    // Fault points spread over 5%..85% of the campaign, in order.
    let mut points: Vec<u64> = (0..plan.faults)
        .map(|_| n * 5 / 100 + rng.below(n * 80 / 100))
        .collect();
    points.sort_unstable();
    let mut report = Report {
        recipients: n,
        ..Report::default()
    };
    let mut last_restart = Instant::now();
    // Victims take turns from a seeded first one, so with as many faults as processes
    // each process is stopped once.
    let first_victim = rng.below(plan.processes as u64) as usize;
    // Kinds too, so that as many faults as kinds try each once.
    let first_kind = rng.below(plan.kinds.len() as u64) as usize;
    for (k, at) in points.into_iter().enumerate() {
        let deadline = Instant::now() + plan.settle;
        while chaos.sink.accepted() < at {
            assert!(
                Instant::now() < deadline,
                "stuck at {} delivered before fault at {at}:\n{}",
                chaos.sink.accepted(),
                chaos.logs()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let victim = (first_victim + k) % plan.processes;
        let kind = plan.kinds[(first_kind + k) % plan.kinds.len()];
        let at_sink = chaos.sink.accepted();
        let (restarted, before) = chaos.strike(kind, victim).await;
        last_restart = restarted;
        let left_at_restart = n.saturating_sub(receipts(&chaos.sink).len() as u64);
        let mut first = None;
        while Instant::now() < last_restart + plan.settle {
            if chaos.sink.accepted() > before {
                first = Some(last_restart.elapsed());
                break;
            }
            if chaos.sink.accepted() >= n && receipts(&chaos.sink).len() as u64 >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        report.faults.push(FaultReport {
            kind,
            process: victim,
            at_sink,
            left_at_restart,
            first_delivery_after_restart: first,
        });
    }

    let deadline = last_restart + plan.settle;
    let mut client = chaos.client().await;
    loop {
        if let Some((delivered, finished)) = stats(&mut client, &key, &id).await {
            report.stats_delivered = delivered;
            report.stats_finished = finished;
            if finished >= n && receipts(&chaos.sink).len() as u64 >= n {
                report.finished_after_restart = Some(last_restart.elapsed());
                break;
            }
        }
        if Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let counts = receipts(&chaos.sink);
    report.delivered = counts.len() as u64;
    report.lost = (0..plan.recipients)
        .filter(|i| !counts.contains_key(&format!("r{i}@example.com")))
        .count() as u64;
    report.duplicates = counts.values().map(|c| c - 1).sum();
    report.max_per_recipient = counts.values().copied().max().unwrap_or(0);
    report.stuck = n.saturating_sub(report.stats_finished);
    println!("chaos report (seed {}): {report}", plan.seed);
    if report.lost > 0 || report.stuck > 0 {
        println!("{}", chaos.logs());
    }
    for i in 0..plan.processes {
        if chaos.procs[i].is_some() {
            let p = chaos.procs[i].take().expect("running");
            let status = p.terminate();
            assert!(status.success(), "m{i} exited with {status} on SIGTERM");
        }
    }
    report
}
