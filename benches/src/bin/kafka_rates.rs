//! Produce and consume rates of Maily's Kafka adapter for 1 KB records.
//!
//! `benches/kafka/run.sh` runs it beside the same workload from librdkafka's Python
//! client, against the same broker, and prints both.
//!
//! Usage: kafka-rates BROKERS RECORDS PARTITIONS

use maily_engine::ports::EventLog;
use maily_eventlog::{KafkaLog, KafkaParams};
use std::time::{Duration, Instant};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let brokers = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "127.0.0.1:9092".into());
    let n: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(50_000);
    let partitions: u32 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(8);
    let mut params = KafkaParams::new(brokers);
    params.topic_prefix = format!("bench-{}.", std::process::id());
    let log = KafkaLog::connect(params).expect("kafka client");
    log.ensure_topic("rates", partitions).await.expect("topic");

    let payload = vec![b'x'; 1024];
    let started = Instant::now();
    let mut ends = vec![0u64; partitions as usize];
    // As the intake does: chunks of 1,000 records, each awaited until acknowledged.
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let records = chunk
            .iter()
            .map(|i| (format!("key-{}", i % 1000).into_bytes(), payload.clone()))
            .collect();
        for (p, o) in log.produce("rates", records).await.expect("produce") {
            ends[p as usize] = ends[p as usize].max(o + 1);
        }
    }
    let produce = started.elapsed();

    // All partitions at once, as the actors read them, each up to its end.
    let log = std::sync::Arc::new(log);
    let started = Instant::now();
    let readers: Vec<_> = ends
        .iter()
        .enumerate()
        .map(|(p, end)| {
            let (log, end) = (log.clone(), *end);
            tokio::spawn(async move {
                let mut next = 0;
                let mut read = 0;
                while next < end {
                    let got = log
                        .fetch("rates", p as u32, next, 5000, Duration::from_secs(5))
                        .await
                        .expect("fetch");
                    next = got.last().map_or(next, |r| r.offset + 1);
                    read += got.len();
                }
                read
            })
        })
        .collect();
    let mut read = 0;
    for r in readers {
        read += r.await.expect("reader");
    }
    let consume = started.elapsed();
    assert_eq!(read, n, "every record read back");
    println!(
        "maily    produce {:>9.0} rec/s  consume {:>9.0} rec/s",
        n as f64 / produce.as_secs_f64(),
        n as f64 / consume.as_secs_f64()
    );
}
