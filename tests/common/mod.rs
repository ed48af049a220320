//! A whole engine on embedded adapters with a capturing SMTP sink, for black-box tests.

#![allow(dead_code)]

pub mod chaos;
pub mod dns;
pub mod postfix;
pub mod procs;

use figment::Figment;
use maily::wiring::{build_ports, engine_settings};
use maily_actors::{EngineHandle, EngineSettings, Ports};
use maily_api::intake::{Intake, NewCampaign, Row};
use maily_config::Settings;
use maily_engine::template::Template;
use maily_engine::{Campaign, CampaignId, CampaignStats, TenantId};
use maily_smtp::{ReceivedMessage, SinkConfig, SinkHandle, SinkReply, SmtpSink};
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::time::{Duration, Instant};

/// Runs `f` on an actix system backed by a multi-threaded tokio runtime, as the binary does.
pub fn run<F: Future>(f: F) -> F::Output {
    actix_rt::System::with_tokio_rt(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime")
    })
    .block_on(f)
}

/// A running engine, its sink and a tenant.
pub struct Harness {
    pub settings: EngineSettings,
    pub ports: Ports,
    pub engine: EngineHandle,
    pub sink: SinkHandle,
    pub intake: Intake,
    pub tenant: TenantId,
    _dir: tempfile::TempDir,
}

impl Harness {
    /// Starts a sink refusing `rejections` and an engine delivering into it.
    pub async fn start(rejections: HashMap<String, SinkReply>) -> Harness {
        Self::start_with(rejections, |f| f).await
    }

    /// Like [`Harness::start`], with settings adjusted by `tune`.
    pub async fn start_with(
        rejections: HashMap<String, SinkReply>,
        tune: impl FnOnce(Figment) -> Figment,
    ) -> Harness {
        let sink = SmtpSink::start(SinkConfig {
            capture: true,
            rejections,
            ..SinkConfig::default()
        })
        .await
        .expect("sink starts");
        let dir = tempfile::tempdir().expect("temp dir");
        let fig = Settings::figment(None)
            .expect("defaults")
            .merge(("engine.partitions", 4))
            // The in-process log, explicitly: these engines share their ports across
            // a restart in one process (the durable log has its own tests).
            .merge(("log.kind", "memory"))
            .merge((
                "store.path",
                dir.path().join("maily.db").display().to_string(),
            ))
            .merge(("analytics.flush_interval", "50ms"))
            .merge(("analytics.flush_size", 500))
            .merge(("sender.batch_size", 100))
            .merge(("reward.epoch_interval", "1h"))
            .merge(("anchor.interval", "1h"))
            .merge(("supervisor.min_backoff", "10ms"))
            .merge((
                "smtp.routes",
                BTreeMap::from([("*".to_string(), sink.addr().to_string())]),
            ));
        let settings = Settings::from_figment(tune(fig)).expect("valid settings");
        let ports = build_ports(&settings).await.expect("ports");
        let engine =
            maily_actors::start(ports.clone(), engine_settings(&settings).expect("settings"))
                .await
                .expect("engine starts");
        let settings = engine_settings(&settings).expect("settings");
        let tenant = TenantId::parse("acme").expect("tenant");
        ports
            .store
            .upsert_tenant(&tenant, "Acme")
            .await
            .expect("tenant stored");
        maily_engine::testkit::sending_domain(ports.store.as_ref(), &tenant, "shop.example").await;
        Harness {
            settings,
            intake: Intake::new(ports.log.clone(), ports.store.clone()),
            ports,
            engine,
            sink,
            tenant,
            _dir: dir,
        }
    }

    /// Creates a campaign personalised with `first_name`, `code` and `city`.
    pub async fn campaign(&self, name: &str) -> Campaign {
        self.intake
            .create_campaign(NewCampaign {
                tenant: self.tenant.clone(),
                name: name.into(),
                from: "news@shop.example".into(),
                from_name: Some("Shop".into()),
                template: Template {
                    subject: "Hello {{ first_name }}, news for {{ city }}".into(),
                    text: Some("Dear {{ first_name }},\nyour code is {{ code }}.\n".into()),
                    html: Some("<p>Dear {{ first_name }}, your code is {{ code }}.</p>".into()),
                },
            })
            .await
            .expect("campaign created")
    }

    /// Waits until every accepted message of each campaign is accounted for in the store.
    pub async fn wait_finished(&self, campaigns: &[(CampaignId, u64)]) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let mut pending = Vec::new();
            for (id, accepted) in campaigns {
                let s = self.stats(*id).await;
                if s.finished() < *accepted {
                    pending.push((id, s.finished(), accepted));
                }
            }
            if pending.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "campaigns never finished: {pending:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Shuts the engine down gracefully and starts a new one on the same log, store
    /// and hot state; returns the messages the sink had when the first one stopped.
    pub async fn restart(self) -> (Harness, u64) {
        let Harness {
            settings,
            ports,
            engine,
            sink,
            intake,
            tenant,
            _dir,
        } = self;
        engine.shutdown().await;
        let before = sink.accepted();
        let engine = maily_actors::start(ports.clone(), settings.clone())
            .await
            .expect("engine restarts");
        let h = Harness {
            settings,
            ports,
            engine,
            sink,
            intake,
            tenant,
            _dir,
        };
        (h, before)
    }

    /// A campaign's stats as committed in the store.
    pub async fn stats(&self, id: CampaignId) -> CampaignStats {
        self.ports
            .store
            .campaign_stats(id)
            .await
            .expect("store readable")
            .unwrap_or_default()
    }
}

/// A recipient row numbered `i`.
pub fn row(i: usize) -> Row {
    Row {
        email: format!("person{i}@example.com"),
        vars: BTreeMap::from([
            ("first_name".to_string(), format!("Name{i}")),
            ("code".to_string(), format!("CODE-{i}")),
            ("city".to_string(), "Oslo".to_string()),
        ]),
    }
}

/// The value of `header` in a received message.
pub fn header(m: &ReceivedMessage, header: &str) -> Option<String> {
    let text = String::from_utf8_lossy(&m.data);
    let prefix = format!("{header}: ");
    text.split("\r\n\r\n")
        .next()?
        .split("\r\n")
        .find_map(|l| l.strip_prefix(&prefix).map(str::to_string))
}

/// How many messages the sink received per recipient.
pub fn per_recipient(received: &[ReceivedMessage]) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for m in received {
        for r in &m.rcpt_to {
            *counts.entry(r.clone()).or_insert(0) += 1;
        }
    }
    counts
}

/// The broker the Kafka tests use (`scripts/kafka.sh start` runs one).
pub fn kafka_brokers() -> String {
    std::env::var("MAILY_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

/// Settings for the Kafka log with topic and group names of their own.
pub fn on_kafka(f: Figment) -> Figment {
    let prefix = format!("test-{}.", uuid::Uuid::new_v4().simple());
    f.merge(("log.kind", "kafka"))
        .merge(("log.kafka.brokers", kafka_brokers()))
        .merge(("log.kafka.topic_prefix", prefix.clone()))
        .merge(("log.kafka.group_prefix", prefix))
        .merge(("log.kafka.linger", "2ms"))
}

/// Verifies `message` with dkimpy, answering the key lookup with `record`.
pub fn dkimpy_verifies(message: &[u8], name: &str, record: &str) -> bool {
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/smtp/tests/data/dkim/verify.py"
    );
    let mut child = Command::new("python3")
        .arg(script)
        .env("DKIM_NAME", name)
        .env("DKIM_TXT", record)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs: run scripts/python-tools.sh");
    child.stdin.take().unwrap().write_all(message).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_ne!(
        out.status.code(),
        Some(3),
        "dkimpy is missing: run scripts/python-tools.sh"
    );
    out.status.success()
}
