//! `maily serve` child processes sharing one broker and store, and the configuration
//! they share.

use super::kafka_brokers;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Partitions of every topic in these configurations.
pub const PARTITIONS: u32 = 8;
/// The sender's batch size in these configurations.
pub const BATCH: u64 = 100;

/// A `maily serve` child process; killed when dropped.
pub struct Serve {
    pub child: Child,
    pub member: String,
    pub log: PathBuf,
}

impl Serve {
    pub fn spawn(config: &Path, member: &str, dir: &Path) -> Serve {
        Self::spawn_with(config, member, dir, &[])
    }

    /// Like [`Serve::spawn`], with more environment variables (secrets, for one).
    pub fn spawn_with(config: &Path, member: &str, dir: &Path, env: &[(&str, &str)]) -> Serve {
        let log = dir.join(format!("{member}.log"));
        let out = File::create(&log).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_maily"))
            .args(["serve", "--config"])
            .arg(config)
            .env("MAILY__OWNERSHIP__MEMBER", member)
            // MAILY_TEST_PROC_LOG sets the processes' log filter for a diagnosis.
            .env(
                "RUST_LOG",
                std::env::var("MAILY_TEST_PROC_LOG").unwrap_or_else(|_| "info".into()),
            )
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log handle"))
            .stderr(out)
            .spawn()
            .expect("maily serve starts");
        Serve {
            child,
            member: member.to_string(),
            log,
        }
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill runs")
            .success();
        assert!(ok, "could not send SIG{sig} to {}", self.member);
    }

    /// The process's log so far, colour codes removed.
    pub fn log(&self) -> String {
        let raw = std::fs::read_to_string(&self.log).unwrap_or_default();
        let mut out = String::with_capacity(raw.len());
        let mut chars = raw.chars();
        while let Some(c) = chars.next() {
            if c == '\u{1b}' {
                for c in chars.by_ref() {
                    if c == 'm' {
                        break;
                    }
                }
            } else {
                out.push(c);
            }
        }
        out
    }

    /// SIGTERM, then the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        self.signal("TERM");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not stop:\n{}",
                self.member,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A shared configuration for the processes and the test's own intake.
pub fn write_config(dir: &Path, sink: std::net::SocketAddr, flush_interval: &str) -> PathBuf {
    write_config_for(dir, sink, flush_interval, &kafka_brokers())
}

/// Like [`write_config`], against the broker at `brokers`.
pub fn write_config_for(
    dir: &Path,
    sink: std::net::SocketAddr,
    flush_interval: &str,
    brokers: &str,
) -> PathBuf {
    let prefix = format!("test-{}.", uuid::Uuid::new_v4().simple());
    let path = dir.join("maily.toml");
    let toml = format!(
        r#"
[engine]
partitions = {PARTITIONS}
[log]
kind = "kafka"
[log.kafka]
brokers = "{brokers}"
topic_prefix = "{prefix}"
group_prefix = "{prefix}"
linger = "2ms"
[store]
path = "{db}"
[smtp.routes]
"*" = "{sink}"
[ownership]
lease_ttl = "3s"
renew_interval = "500ms"
[sender]
batch_size = {BATCH}
idle_wait = "20ms"
[analytics]
flush_interval = "{flush_interval}"
"#,
        db = dir.join("maily.db").display(),
    );
    std::fs::write(&path, toml).expect("config written");
    path
}

/// Switches a written configuration to a Postgres store in a schema of its own.
pub fn use_postgres(config: &Path) {
    let url = std::env::var("MAILY_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
    let toml = std::fs::read_to_string(config).expect("config readable");
    let (before, after) = toml.split_once("[store]").expect("a [store] section");
    let rest = after.split_once('\n').map_or("", |(_, r)| r);
    let rest = rest.split_once('\n').map_or("", |(_, r)| r);
    let store = format!(
        "[store]\nkind = \"postgres\"\n[store.postgres]\nurl = \"{url}\"\nschema = \"{schema}\"\n\
         statement_timeout = \"2s\"\nacquire_timeout = \"2s\"\n"
    );
    std::fs::write(config, format!("{before}{store}{rest}")).expect("config written");
}

/// Waits until `check` holds, failing with `what` and the processes' logs.
pub async fn wait_until<F, Fut>(what: &str, limit: Duration, procs: &[&Serve], mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !check().await {
        if Instant::now() > deadline {
            let logs: Vec<String> = procs
                .iter()
                .map(|p| format!("--- {} ---\n{}", p.member, tail(&p.log(), 40)))
                .collect();
            panic!("timed out waiting for {what}\n{}", logs.join("\n"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A tansu broker of the test's own, on a port and storage of its own: a test that runs
/// several engine processes does not share the suite's broker, whose storage grows
/// with every test and whose CPU every other test competes for.
pub struct Broker {
    child: Child,
    pub port: u16,
}

impl Broker {
    /// Starts tansu on a free port with its SQLite storage in `dir`; `log` is a file
    /// name in `dir`.
    pub fn start(dir: &Path, log: &str) -> Broker {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        Broker::restart(port, dir, log)
    }

    /// Starts tansu on `port` over the storage a broker left in `dir`, if any.
    pub fn restart(port: u16, dir: &Path, log: &str) -> Broker {
        let bin = std::env::var("MAILY_TANSU").unwrap_or_else(|_| {
            format!(
                "{}/.cache/maily/tools/bin/tansu",
                std::env::var("HOME").unwrap_or_default()
            )
        });
        let out = File::create(dir.join(log)).expect("broker log");
        let url = format!("tcp://127.0.0.1:{port}");
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
            .stdout(out.try_clone().expect("log handle"))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {bin} (run scripts/kafka.sh install): {e}"));
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "broker did not listen on {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        Broker { child, port }
    }

    /// The bootstrap address for `[log.kafka] brokers`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
