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

/// A process that asks about a topic while another creates it (the lag probe at
/// start, a second engine process) must see the topic once it exists, not only after
/// its client's periodic metadata refresh.
#[tokio::test]
async fn a_topic_asked_about_before_it_existed_is_seen_once_created() {
    use maily_engine::ports::EventLog;
    let log = new_log().await;
    assert!(
        log.end_offset("late", 7).await.is_err(),
        "no such topic yet"
    );
    log.ensure_topic("late", 8).await.unwrap();
    assert_eq!(log.end_offset("late", 7).await.unwrap(), 0);
    log.commit("probe", "late", 7, 0).await.unwrap();
    assert_eq!(log.committed("probe", "late", 7).await.unwrap(), Some(0));
    log.produce("late", vec![(b"k".to_vec(), b"v".to_vec())])
        .await
        .unwrap();
    let mut records = 0;
    for p in 0..8 {
        records += log.end_offset("late", p).await.unwrap();
    }
    assert_eq!(records, 1);
}
