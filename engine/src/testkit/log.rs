//! Contract suite of the event-log port.

use crate::partition::partition_for;
use crate::ports::{EventLog, LogError};
use std::time::Duration;

/// Generates the event-log contract tests for the adapter returned by `$make().await`.
#[macro_export]
macro_rules! event_log_contract {
    ($make:ident) => {
        mod event_log_contract {
            use $crate::testkit::log as suite;
            #[tokio::test]
            async fn records_are_partitioned_by_key_and_ordered() {
                suite::records_are_partitioned_by_key_and_ordered(&super::$make().await).await
            }
            #[tokio::test]
            async fn fetch_resumes_from_any_offset() {
                suite::fetch_resumes_from_any_offset(&super::$make().await).await
            }
            #[tokio::test]
            async fn fetch_returns_empty_when_nothing_arrives() {
                suite::fetch_returns_empty_when_nothing_arrives(&super::$make().await).await
            }
            #[tokio::test]
            async fn waiting_fetch_sees_a_later_record() {
                suite::waiting_fetch_sees_a_later_record(std::sync::Arc::new(super::$make().await))
                    .await
            }
            #[tokio::test]
            async fn a_position_past_the_end_is_an_error() {
                suite::a_position_past_the_end_is_an_error(&super::$make().await).await
            }
            #[tokio::test]
            async fn fetch_reads_again_and_moves_back() {
                suite::fetch_reads_again_and_moves_back(&super::$make().await).await
            }
            #[tokio::test]
            async fn a_backlog_is_read_to_the_end_in_large_fetches() {
                suite::a_backlog_is_read_to_the_end_in_large_fetches(&super::$make().await).await
            }
            #[tokio::test]
            async fn a_slow_reader_moved_back_reads_on() {
                suite::a_slow_reader_moved_back_reads_on(&super::$make().await).await
            }
            #[tokio::test]
            async fn commits_round_trip() {
                suite::commits_round_trip(&super::$make().await).await
            }
            #[tokio::test]
            async fn unknown_topics_are_errors() {
                suite::unknown_topics_are_errors(&super::$make().await).await
            }
        }
    };
}

/// Records land in their key's partition, in produce order, with consecutive offsets.
pub async fn records_are_partitioned_by_key_and_ordered(log: &impl EventLog) {
    log.ensure_topic("orders", 4).await.expect("create topic");
    log.ensure_topic("orders", 4)
        .await
        .expect("create is idempotent");
    assert_eq!(log.partitions("orders").await.expect("partitions"), 4);
    let records: Vec<crate::ports::KeyedPayload> = (0..100)
        .map(|i| {
            (
                format!("key-{}", i % 10).into_bytes(),
                format!("value-{i}").into_bytes(),
            )
        })
        .collect();
    let positions = log
        .produce("orders", records.clone())
        .await
        .expect("produce");
    assert_eq!(positions.len(), 100);
    for ((key, _), (partition, _)) in records.iter().zip(&positions) {
        assert_eq!(*partition, partition_for(key, 4), "record placed by key");
    }
    let mut seen = 0;
    for p in 0..4 {
        let got = fetch_all(log, "orders", p, 0).await;
        let expected: Vec<_> = records
            .iter()
            .filter(|(k, _)| partition_for(k, 4) == p)
            .collect();
        assert_eq!(got.len(), expected.len(), "partition {p} holds its keys");
        for (i, (rec, (key, value))) in got.iter().zip(expected).enumerate() {
            assert_eq!(rec.offset, i as u64);
            assert_eq!(rec.partition, p);
            assert_eq!(&rec.key, key);
            assert_eq!(&rec.payload, value);
        }
        assert_eq!(
            log.end_offset("orders", p).await.expect("end"),
            got.len() as u64
        );
        seen += got.len();
    }
    assert_eq!(seen, 100);
}

/// Everything from `offset` on, over as many fetches as it takes (a fetch may return
/// fewer records than are available).
pub async fn fetch_all(
    log: &impl EventLog,
    topic: &str,
    partition: u32,
    offset: u64,
) -> Vec<crate::ports::Record> {
    // Read up to the end offset the log reports now; an empty fetch only means nothing
    // arrived within the wait (a broker under load, a consumer still positioning), so
    // it is retried until a generous deadline rather than read as the end.
    let end = log.end_offset(topic, partition).await.expect("end offset");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut out: Vec<crate::ports::Record> = Vec::new();
    loop {
        let next = out.last().map_or(offset, |r| r.offset + 1);
        if next >= end || std::time::Instant::now() > deadline {
            return out;
        }
        let got = log
            .fetch(topic, partition, next, 1000, Duration::from_millis(500))
            .await
            .expect("fetch");
        out.extend(got);
    }
}

/// A fetch from offset n starts at record n and respects `max`. A fetch may return
/// fewer than `max` (what has arrived so far); reading on from where it ended gives
/// the rest in order.
pub async fn fetch_resumes_from_any_offset(log: &impl EventLog) {
    log.ensure_topic("resume", 1).await.expect("create topic");
    let records = (0..20u8).map(|i| (b"k".to_vec(), vec![i])).collect();
    log.produce("resume", records).await.expect("produce");
    // An empty fetch only means nothing arrived within the wait (a consumer still
    // positioning on a loaded broker).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut got = Vec::new();
    while got.len() < 3 && std::time::Instant::now() < deadline {
        let next = 5 + got.len() as u64;
        let max = 3 - got.len();
        let fetched = log
            .fetch("resume", 0, next, max, Duration::from_millis(500))
            .await
            .expect("fetch");
        assert!(fetched.len() <= max, "a fetch returns at most max records");
        got.extend(fetched);
    }
    assert_eq!(
        got.iter().map(|r| r.offset).collect::<Vec<_>>(),
        vec![5, 6, 7]
    );
    assert_eq!(got[0].payload, vec![5]);
}

/// A fetch at the end waits, then returns nothing.
pub async fn fetch_returns_empty_when_nothing_arrives(log: &impl EventLog) {
    log.ensure_topic("quiet", 2).await.expect("create topic");
    let got = log
        .fetch("quiet", 1, 0, 10, Duration::from_millis(50))
        .await
        .expect("fetch");
    assert!(got.is_empty());
}

/// A fetch waiting at the end returns a record produced meanwhile.
pub async fn waiting_fetch_sees_a_later_record<L: EventLog>(log: std::sync::Arc<L>) {
    log.ensure_topic("later", 1).await.expect("create topic");
    let reader = {
        let log = log.clone();
        tokio::spawn(async move {
            log.fetch("later", 0, 0, 10, Duration::from_secs(30))
                .await
                .expect("fetch")
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    log.produce("later", vec![(b"k".to_vec(), b"hello".to_vec())])
        .await
        .expect("produce");
    let got = reader.await.expect("reader task");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].payload, b"hello");
}

/// A fetch past the partition's end fails naming the end (a log recreated under a
/// consumer's stored offset); a fetch at the end waits.
pub async fn a_position_past_the_end_is_an_error(log: &impl EventLog) {
    log.ensure_topic("ends", 1).await.expect("create topic");
    let records = (0..3u8).map(|i| (b"k".to_vec(), vec![i])).collect();
    log.produce("ends", records).await.expect("produce");
    let err = log
        .fetch("ends", 0, 5, 10, Duration::from_millis(50))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            LogError::BeyondEnd {
                partition: 0,
                offset: 5,
                end: 3,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("ends"), "names the topic: {err}");
    let got = log
        .fetch("ends", 0, 3, 10, Duration::from_millis(50))
        .await
        .expect("fetch at the end");
    assert!(got.is_empty());
}

/// A fetch does not consume: the same offset reads the same records again, and a
/// reader that went ahead can move back (a worker restarted from its stored offset).
pub async fn fetch_reads_again_and_moves_back(log: &impl EventLog) {
    log.ensure_topic("again", 1).await.expect("create topic");
    let records = (0..30u8).map(|i| (b"k".to_vec(), vec![i])).collect();
    log.produce("again", records).await.expect("produce");
    let all = fetch_all(log, "again", 0, 0).await;
    assert_eq!(all.len(), 30);
    for from in [20u64, 20, 4, 25, 0] {
        // A fetch may return fewer records than asked for; the next goes on from there.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let mut got: Vec<crate::ports::Record> = Vec::new();
        while got.len() < 3 && std::time::Instant::now() < deadline {
            let next = got.last().map_or(from, |r| r.offset + 1);
            let more = log
                .fetch("again", 0, next, 3 - got.len(), Duration::from_millis(500))
                .await
                .expect("fetch");
            got.extend(more);
        }
        assert_eq!(
            got.iter().map(|r| r.offset).collect::<Vec<_>>(),
            vec![from, from + 1, from + 2],
            "fetch at {from}"
        );
        assert_eq!(got[0].payload, vec![from as u8]);
    }
}

/// Produces `n` records (payload: the big-endian index) to partition 0 of `topic`.
async fn produce_numbered(log: &impl EventLog, topic: &str, n: u64) {
    for chunk in 0..n.div_ceil(1_000) {
        let records = (chunk * 1_000..((chunk + 1) * 1_000).min(n))
            .map(|i| (b"k".to_vec(), i.to_be_bytes().to_vec()))
            .collect();
        log.produce(topic, records).await.expect("produce");
    }
}

/// Reads partition 0 of `topic` from 0 to `n` in fetches of up to `max`, checking
/// every record arrives once and in order.
async fn read_numbered(log: &impl EventLog, topic: &str, n: u64, max: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut next = 0u64;
    while next < n {
        assert!(
            std::time::Instant::now() < deadline,
            "stuck at {next} of {n} in {topic}"
        );
        let got = log
            .fetch(topic, 0, next, max, Duration::from_millis(500))
            .await
            .expect("fetch");
        for r in got {
            assert_eq!(r.offset, next);
            assert_eq!(r.payload, next.to_be_bytes());
            next += 1;
        }
    }
}

/// A backlog larger than an adapter's read-ahead, read in fetches that take all there
/// is (an analytics actor catching up after a restart), arrives whole and in order.
pub async fn a_backlog_is_read_to_the_end_in_large_fetches(log: &impl EventLog) {
    log.ensure_topic("backlog", 1).await.expect("create topic");
    produce_numbered(log, "backlog", 9_000).await;
    read_numbered(log, "backlog", 9_000, 5_000).await;
}

/// A reader that fell behind a large backlog (its adapter's read-ahead full) and is
/// then moved back to an earlier offset (a partition taken over by a new actor, which
/// resumes from the position stored with its aggregates) reads on from there to the end.
pub async fn a_slow_reader_moved_back_reads_on(log: &impl EventLog) {
    log.ensure_topic("moved", 1).await.expect("create topic");
    produce_numbered(log, "moved", 9_000).await;
    let first = log
        .fetch("moved", 0, 0, 100, Duration::from_secs(10))
        .await
        .expect("fetch");
    assert_eq!(first.first().map(|r| r.offset), Some(0));
    let next = first.len() as u64;
    log.fetch("moved", 0, next, 100, Duration::from_secs(10))
        .await
        .expect("fetch");
    // A slow reader: the adapter reads ahead meanwhile, as far as it will.
    tokio::time::sleep(Duration::from_secs(1)).await;
    read_numbered(log, "moved", 9_000, 1_000).await;
}

/// Committed offsets are per group.
pub async fn commits_round_trip(log: &impl EventLog) {
    log.ensure_topic("commits", 2).await.expect("create topic");
    let records = (0..10u8).map(|i| (vec![i], vec![i])).collect();
    log.produce("commits", records).await.expect("produce");
    assert_eq!(
        log.committed("g1", "commits", 0).await.expect("committed"),
        None
    );
    log.commit("g1", "commits", 0, 3).await.expect("commit");
    assert_eq!(
        log.committed("g1", "commits", 0).await.expect("committed"),
        Some(3)
    );
    assert_eq!(
        log.committed("g2", "commits", 0).await.expect("committed"),
        None
    );
}

/// Using a topic that was never created is an error naming it.
pub async fn unknown_topics_are_errors(log: &impl EventLog) {
    let err = log
        .produce("missing", vec![(b"k".to_vec(), b"v".to_vec())])
        .await
        .unwrap_err();
    assert!(
        matches!(err, LogError::UnknownTopic(ref t) if t.ends_with("missing")),
        "{err}"
    );
    assert!(log.fetch("missing", 0, 0, 1, Duration::ZERO).await.is_err());
}
