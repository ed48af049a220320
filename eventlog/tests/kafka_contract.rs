//! The event-log contract suite on a real Kafka-API broker.
//!
//! The broker comes from `scripts/kafka.sh start` (the test script starts it); point
//! `MAILY_TEST_KAFKA` at another one (`host:port`) to run against Apache Kafka or
//! Redpanda. Each test gets its own topic and group prefix.

use maily_eventlog::{KafkaLog, KafkaParams};
use std::time::Duration;

/// The broker the tests use.
pub fn brokers() -> String {
    std::env::var("MAILY_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

async fn new_log() -> KafkaLog {
    let mut params = KafkaParams::new(brokers());
    let prefix = format!("test-{}.", uuid::Uuid::new_v4().simple());
    params.topic_prefix = prefix.clone();
    params.group_prefix = prefix;
    params.request_timeout = Duration::from_secs(10);
    KafkaLog::connect(params).expect("kafka client (is the broker up? scripts/kafka.sh start)")
}

maily_engine::event_log_contract!(new_log);
