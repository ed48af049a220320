//! A Redis outage against a `redis-server` of the test's own: calls fail promptly with
//! [`HotError::Unavailable`] while it is down and succeed again once it is back on the
//! same port, through the same adapter.

use maily_engine::ports::{HotError, HotState};
use maily_engine::{CampaignId, CampaignStats, EmailAddress, TenantId, Timestamp};
use maily_storage::redis_hot::{RedisHotState, RedisParams};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const COMMAND_TIMEOUT: Duration = Duration::from_millis(500);

/// A throwaway `redis-server` without persistence, killed when dropped.
struct RedisServer {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl RedisServer {
    fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut server = RedisServer {
            port,
            dir: tempfile::tempdir().unwrap(),
            child: None,
        };
        server.restart();
        server
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts the server (again) on its port and waits until it accepts connections.
    fn restart(&mut self) {
        assert!(self.child.is_none(), "server already running");
        self.child = Some(spawn_redis(self.port, self.dir.path()));
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server the hard way (SIGKILL), as a crash would.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn spawn_redis(port: u16, dir: &Path) -> Child {
    Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server on the PATH")
}

/// Makes every kind of call once, each bounded well above the command timeout so a
/// hang shows up as a failure rather than a stuck test.
async fn every_call(hot: &RedisHotState, round: &str) -> Vec<(&'static str, Result<(), HotError>)> {
    let ttl = Duration::from_secs(60);
    let key = format!("m-{round}");
    let tenant = TenantId::parse("acme").unwrap();
    let ann = EmailAddress::parse("ann@example.com").unwrap();
    let campaign = CampaignId::new();
    let stats = CampaignStats {
        delivered: 1,
        ..Default::default()
    };
    let bucket = format!("b-{round}");
    let mut results = Vec::new();
    macro_rules! call {
        ($name:literal, $call:expr) => {
            let result = tokio::time::timeout(COMMAND_TIMEOUT * 4, $call)
                .await
                .unwrap_or_else(|_| panic!("{} hung", $name));
            results.push(($name, result.map(drop)));
        };
    }
    call!("claim", hot.claim(&key, Timestamp(1), ttl));
    call!("release", hot.release(&key));
    call!("complete", hot.complete(&key, "delivered", ttl));
    call!("suppress", hot.suppress(&tenant, &ann));
    call!("is_suppressed", hot.is_suppressed(&tenant, &ann));
    call!("set_live_stats", hot.set_live_stats(&campaign, 0, &stats));
    call!("live_stats", hot.live_stats(&campaign));
    call!("take_tokens", hot.take_tokens(&bucket, 10.0, 5, 1));
    results
}

async fn outage_and_recovery(auto_pipeline: bool) {
    let mut server = RedisServer::start();
    let hot = RedisHotState::connect(RedisParams {
        key_prefix: "outage:".into(),
        pool_size: 2,
        auto_pipeline,
        command_timeout: COMMAND_TIMEOUT,
        reconnect_max_delay: Duration::from_millis(200),
        ..RedisParams::new(server.url())
    })
    .await
    .unwrap();
    for (name, result) in every_call(&hot, "before").await {
        assert!(result.is_ok(), "{name}: {result:?}");
    }

    server.kill();
    let named = format!("127.0.0.1:{}", server.port);
    for (name, result) in every_call(&hot, "during").await {
        assert!(
            matches!(&result, Err(HotError::Unavailable(m)) if m.contains(&named)),
            "{name}: {result:?}"
        );
    }

    server.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    while let Err(e) = hot
        .is_suppressed(
            &TenantId::parse("acme").unwrap(),
            &EmailAddress::parse("a@b.c").unwrap(),
        )
        .await
    {
        assert!(Instant::now() < deadline, "no reconnection: {e}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The restarted server has an empty script cache: the scripts are sent again.
    for (name, result) in every_call(&hot, "after").await {
        assert!(result.is_ok(), "{name}: {result:?}");
    }
}

#[tokio::test]
async fn pipelined_calls_fail_fast_during_an_outage_and_recover_after_it() {
    outage_and_recovery(true).await;
}

#[tokio::test]
async fn exclusive_calls_fail_fast_during_an_outage_and_recover_after_it() {
    outage_and_recovery(false).await;
}
