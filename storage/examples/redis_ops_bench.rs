//! Throughput of the Redis hot state for the per-message calls of the send path (claim,
//! suppression lookup, complete) from many concurrent senders, with auto-pipelining on
//! and off.
//!
//! ```text
//! cargo run --release -p maily-storage --example redis_ops_bench -- \
//!     [--tasks 64] [--messages 1000] [--pool 4] [--rounds 3]
//! ```
//!
//! Redis comes from `MAILY_BENCH_REDIS` (default `redis://127.0.0.1:6379`); every run
//! uses a fresh key prefix and removes what it wrote, except claims left to expire.

use fred::interfaces::{ClientLike, KeysInterface};
use fred::types::Builder;
use fred::types::config::Config;
use maily_engine::ports::{Claim, HotState};
use maily_engine::{CampaignId, EmailAddress, TenantId, Timestamp};
use maily_storage::redis_hot::{RedisHotState, RedisParams};
use std::error::Error;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Distinct recipients; one in ten is suppressed.
const ADDRESSES: usize = 1_000;
/// Calls per message: claim, is_suppressed, complete.
const CALLS_PER_MESSAGE: usize = 3;
/// Claims only need to outlive a round.
const CLAIM_TTL: Duration = Duration::from_secs(20);

struct Args {
    tasks: usize,
    messages: usize,
    pool: usize,
    rounds: usize,
}

impl Args {
    fn parse() -> Result<Self, Box<dyn Error>> {
        let mut args = Args {
            tasks: 64,
            messages: 1_000,
            pool: 4,
            rounds: 3,
        };
        let mut it = std::env::args().skip(1);
        while let Some(flag) = it.next() {
            let value: usize = it.next().ok_or(format!("{flag} needs a value"))?.parse()?;
            match flag.as_str() {
                "--tasks" => args.tasks = value,
                "--messages" => args.messages = value,
                "--pool" => args.pool = value,
                "--rounds" => args.rounds = value,
                other => return Err(format!("unknown flag {other}").into()),
            }
        }
        Ok(args)
    }
}

/// One measured run: calls a second and the latency of whole messages.
struct RunStats {
    ops_per_sec: f64,
    p50: Duration,
    p99: Duration,
}

/// Sends `messages` messages from each of `tasks` tasks.
async fn run(
    hot: &Arc<RedisHotState>,
    tenant: &TenantId,
    addresses: &Arc<Vec<EmailAddress>>,
    tasks: usize,
    messages: usize,
    tag: &str,
) -> Result<RunStats, Box<dyn Error>> {
    let start = Instant::now();
    let senders: Vec<_> = (0..tasks)
        .map(|t| {
            let (hot, tenant, addresses) = (hot.clone(), tenant.clone(), addresses.clone());
            let tag = tag.to_string();
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(messages);
                for i in 0..messages {
                    let began = Instant::now();
                    let key = format!("{tag}:{t}:{i}");
                    let claim = hot.claim(&key, Timestamp::now(), CLAIM_TTL).await?;
                    assert_eq!(claim, Claim::Acquired, "{key}");
                    let to = &addresses[(t * messages + i) % addresses.len()];
                    let suppressed = hot.is_suppressed(&tenant, to).await?;
                    let outcome = if suppressed {
                        "suppressed"
                    } else {
                        "delivered"
                    };
                    hot.complete(&key, outcome, CLAIM_TTL).await?;
                    latencies.push(began.elapsed());
                }
                Ok::<_, maily_engine::ports::HotError>(latencies)
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(tasks * messages);
    for sender in senders {
        latencies.extend(sender.await??);
    }
    let elapsed = start.elapsed();
    latencies.sort_unstable();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    Ok(RunStats {
        ops_per_sec: (tasks * messages * CALLS_PER_MESSAGE) as f64 / elapsed.as_secs_f64(),
        p50: at(0.5),
        p99: at(0.99),
    })
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let args = Args::parse()?;
    let url =
        std::env::var("MAILY_BENCH_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let prefix = format!("maily-bench:{}:", CampaignId::new());
    let connect = |auto_pipeline| {
        RedisHotState::connect(RedisParams {
            key_prefix: prefix.clone(),
            pool_size: args.pool,
            auto_pipeline,
            ..RedisParams::new(url.clone())
        })
    };
    let pipelined = Arc::new(connect(true).await?);
    let exclusive = Arc::new(connect(false).await?);

    let tenant = TenantId::parse("bench")?;
    let addresses: Vec<EmailAddress> = (0..ADDRESSES)
        .map(|i| EmailAddress::parse(&format!("user{i}@example.com")))
        .collect::<Result<_, _>>()?;
    for to in addresses.iter().step_by(10) {
        pipelined.suppress(&tenant, to).await?;
    }
    let addresses = Arc::new(addresses);

    println!(
        "{} tasks x {} messages x {CALLS_PER_MESSAGE} calls, pool of {} connections, {url}",
        args.tasks, args.messages, args.pool
    );
    // Warm up connections, scripts and the allocator before measuring.
    for (hot, tag) in [(&pipelined, "warm-p"), (&exclusive, "warm-e")] {
        run(hot, &tenant, &addresses, args.tasks, 50, tag).await?;
    }
    let (mut on, mut off) = (Vec::new(), Vec::new());
    // Alternate the modes so drift in the shared machine's load hits both alike.
    for round in 0..args.rounds {
        for (hot, label, results) in [
            (&pipelined, "pipelined", &mut on),
            (&exclusive, "exclusive", &mut off),
        ] {
            let tag = format!("r{round}-{label}");
            let stats = run(hot, &tenant, &addresses, args.tasks, args.messages, &tag).await?;
            println!(
                "round {round} {label:>9}: {:>9.0} ops/s  message p50 {:>8.2?}  p99 {:>8.2?}",
                stats.ops_per_sec, stats.p50, stats.p99
            );
            results.push(stats.ops_per_sec);
        }
    }
    let (on, off) = (median(on), median(off));
    println!(
        "auto-pipelining on : {on:>9.0} ops/s (median of {})",
        args.rounds
    );
    println!(
        "auto-pipelining off: {off:>9.0} ops/s (median of {})",
        args.rounds
    );
    println!("ratio on/off: {:.2}x", on / off);

    pipelined.close().await;
    exclusive.close().await;
    let raw = Builder::from_config(Config::from_url(&url)?).build()?;
    raw.init().await?;
    raw.del::<(), _>(format!("{prefix}supp:{tenant}")).await?;
    raw.quit().await?;
    Ok(())
}
