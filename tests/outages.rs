//! Outages of the real Redis and Postgres servers under a running campaign: each test
//! starts its own server on its own port and stops it mid-campaign.

mod common;

use common::{Harness, per_recipient, row, run};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_port(port: u16, up: bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() != up {
        assert!(
            Instant::now() < deadline,
            "port {port} never became {}",
            if up { "open" } else { "closed" }
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A redis-server of the test's own.
struct Redis {
    port: u16,
    child: Option<Child>,
}

impl Redis {
    fn start(port: u16) -> Redis {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server runs");
        wait_port(port, true);
        Redis {
            port,
            child: Some(child),
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        wait_port(self.port, false);
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Captures metrics and warning logs of this test process.
struct Observed {
    snapshotter: Snapshotter,
    logs: Arc<Mutex<Vec<u8>>>,
}

#[derive(Clone)]
struct LogBuf(Arc<Mutex<Vec<u8>>>);

impl Write for LogBuf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Observed {
    fn install() -> Observed {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        recorder.install().expect("one recorder per test process");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let buf = LogBuf(logs.clone());
        tracing_subscriber::fmt()
            .with_env_filter("warn,maily_actors=info")
            .with_ansi(false)
            .with_writer(move || buf.clone())
            .init();
        Observed { snapshotter, logs }
    }

    /// Counters summed and histogram maxima by name. A snapshot resets counters and
    /// drains histograms, so take one and read everything from it.
    fn take(&self) -> (HashMap<String, u64>, HashMap<String, f64>) {
        let mut counters = HashMap::new();
        let mut maxima = HashMap::new();
        for (k, _, _, v) in self.snapshotter.snapshot().into_vec() {
            let name = k.key().name().to_string();
            match v {
                DebugValue::Counter(c) => *counters.entry(name).or_insert(0) += c,
                DebugValue::Histogram(samples) => {
                    let top = samples
                        .into_iter()
                        .map(|s| s.into_inner())
                        .fold(0.0, f64::max);
                    let m = maxima.entry(name).or_insert(0.0f64);
                    *m = m.max(top);
                }
                DebugValue::Gauge(_) => {}
            }
        }
        (counters, maxima)
    }

    fn logs(&self) -> String {
        String::from_utf8_lossy(&self.logs.lock().unwrap()).into_owned()
    }
}

#[test]
fn sending_goes_on_through_a_redis_outage_and_counters_catch_up() {
    let observed = Observed::install();
    run(async {
        let port = free_port();
        let mut redis = Redis::start(port);
        let prefix = format!("t{}:", uuid::Uuid::new_v4().simple());
        let h = Harness::start_with(HashMap::new(), |f| {
            f.merge(("hot.kind", "redis"))
                .merge(("hot.redis.url", format!("redis://127.0.0.1:{port}")))
                .merge(("hot.redis.key_prefix", prefix))
                .merge(("hot.redis.command_timeout", "500ms"))
        })
        .await;
        let c = h.campaign("outage").await;
        let report = h.intake.enqueue(&c, (0..4_000).map(row)).await.unwrap();
        h.sink.wait_for(800, Duration::from_secs(60)).await;

        redis.stop();
        let at_outage = h.sink.accepted();
        h.sink
            .wait_for(at_outage + 800, Duration::from_secs(60))
            .await;
        assert!(
            h.sink.accepted() >= at_outage + 800,
            "sending stopped with Redis down"
        );

        let _redis = Redis::start(port);
        h.wait_finished(&[(c.id, report.accepted)]).await;
        let stored = h.stats(c.id).await;
        assert_eq!((stored.delivered, stored.injected), (4_000, 4_000));
        let counts = per_recipient(&h.sink.received());
        assert_eq!(counts.len(), 4_000);
        assert!(counts.values().all(|n| *n == 1));
        // Live counters in Redis catch up with the store.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if h.ports.hot.live_stats(&c.id).await.ok().flatten() == Some(stored) {
                break;
            }
            assert!(Instant::now() < deadline, "live counters never caught up");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        h.engine.shutdown().await;
    });
    let (counters, _) = observed.take();
    assert!(
        counters
            .get("maily_hot_state_errors_total")
            .copied()
            .unwrap_or(0)
            > 0
    );
    let logs = observed.logs();
    assert!(logs.contains("hot state unavailable"), "{logs}");
    assert!(logs.contains("live counters caught up"), "{logs}");
}

/// A Postgres cluster of the test's own, created with initdb.
struct Postgres {
    dir: PathBuf,
    port: u16,
}

fn pg_bin(name: &str) -> PathBuf {
    let base = Path::new("/usr/lib/postgresql");
    let version = std::fs::read_dir(base)
        .expect("postgres installed")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .max()
        .expect("a postgres version");
    base.join(version).join("bin").join(name)
}

fn as_postgres(args: &[&str]) {
    let status = Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .args(args)
        .stdout(Stdio::null())
        .status()
        .expect("runuser");
    assert!(status.success(), "{args:?} failed");
}

impl Postgres {
    fn init(port: u16) -> Postgres {
        let dir = std::env::temp_dir().join(format!("maily-pg-{port}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Command::new("chown")
            .args(["postgres:postgres"])
            .arg(&dir)
            .status()
            .unwrap();
        let data = dir.join("data");
        as_postgres(&[
            pg_bin("initdb").to_str().unwrap(),
            "-D",
            data.to_str().unwrap(),
            "-A",
            "trust",
            "-U",
            "postgres",
        ]);
        let pg = Postgres { dir, port };
        pg.start();
        pg
    }

    fn start(&self) {
        let data = self.dir.join("data");
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            self.port,
            self.dir.display()
        );
        as_postgres(&[
            pg_bin("pg_ctl").to_str().unwrap(),
            "-D",
            data.to_str().unwrap(),
            "-o",
            &opts,
            "-l",
            self.dir.join("log").to_str().unwrap(),
            "-w",
            "start",
        ]);
        wait_port(self.port, true);
    }

    fn stop(&self) {
        let data = self.dir.join("data");
        as_postgres(&[
            pg_bin("pg_ctl").to_str().unwrap(),
            "-D",
            data.to_str().unwrap(),
            "-m",
            "immediate",
            "-w",
            "stop",
        ]);
        wait_port(self.port, false);
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.dir.join("data");
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(pg_bin("pg_ctl"))
            .args(["-D", data.to_str().unwrap(), "-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn analytics_hold_their_buffer_through_a_postgres_outage_and_end_exact() {
    let observed = Observed::install();
    run(async {
        let port = free_port();
        let pg = Postgres::init(port);
        let flush_size = 500;
        let h = Harness::start_with(HashMap::new(), |f| {
            f.merge(("store.kind", "postgres"))
                .merge((
                    "store.postgres.url",
                    format!("postgres://postgres@127.0.0.1:{port}/postgres"),
                ))
                .merge(("store.postgres.statement_timeout", "2s"))
                .merge(("store.postgres.acquire_timeout", "1s"))
                .merge(("analytics.flush_size", flush_size))
                .merge(("supervisor.max_backoff", "500ms"))
                .merge(("ownership.lease_ttl", "30s"))
        })
        .await;
        let c = h.campaign("pg-outage").await;
        let first = h.intake.enqueue(&c, (0..2_000).map(row)).await.unwrap();
        h.sink.wait_for(1_000, Duration::from_secs(60)).await;

        // The second half arrives while Postgres is down.
        pg.stop();
        let second = h.intake.enqueue(&c, (2_000..4_000).map(row)).await.unwrap();
        tokio::time::sleep(Duration::from_secs(3)).await;
        pg.start();

        h.wait_finished(&[(c.id, first.accepted + second.accepted)])
            .await;
        let s = h.stats(c.id).await;
        assert_eq!((s.delivered, s.injected), (4_000, 4_000));
        let counts = per_recipient(&h.sink.received());
        assert_eq!(counts.len(), 4_000);
        assert!(
            counts.values().all(|n| *n == 1),
            "a recipient got two messages"
        );
        h.engine.shutdown().await;
    });
    let (counters, maxima) = observed.take();
    let held = maxima
        .get("maily_analytics_buffered_events")
        .copied()
        .unwrap_or(0.0);
    assert!(held > 0.0, "the buffer was measured");
    assert!(
        held <= 500.0,
        "analytics held {held} events, more than its buffer"
    );
    let held_off = counters
        .get("maily_analytics_flush_failures_total")
        .copied()
        .unwrap_or(0)
        + counters
            .get("maily_analytics_store_waits_total")
            .copied()
            .unwrap_or(0);
    assert!(held_off > 0, "analytics never waited for the store");
}
