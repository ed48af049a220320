use super::*;
use maily_engine::testkit::log::fetch_all;
use std::path::Path;
use tempfile::TempDir;

fn params(dir: &Path) -> FileParams {
    FileParams {
        dir: dir.to_path_buf(),
        fsync: Fsync::Always,
        segment_bytes: 1 << 20,
        cache_records: 1000,
        cache_bytes: 1 << 30,
        retain_bytes_uncommitted: 1 << 20,
    }
}

/// A log in a folder of its own, removed with it.
struct Scratch {
    log: FileLog,
    _dir: TempDir,
}

async fn new_log() -> Scratch {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = FileLog::open(params(dir.path())).await.expect("open");
    Scratch { log, _dir: dir }
}

#[async_trait]
impl EventLog for Scratch {
    async fn ensure_topic(&self, topic: &str, partitions: u32) -> Result<(), LogError> {
        self.log.ensure_topic(topic, partitions).await
    }
    async fn partitions(&self, topic: &str) -> Result<u32, LogError> {
        self.log.partitions(topic).await
    }
    async fn produce(
        &self,
        topic: &str,
        records: Vec<KeyedPayload>,
    ) -> Result<Vec<(u32, u64)>, LogError> {
        self.log.produce(topic, records).await
    }
    async fn fetch(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Record>, LogError> {
        self.log.fetch(topic, partition, offset, max, wait).await
    }
    async fn end_offset(&self, topic: &str, partition: u32) -> Result<u64, LogError> {
        self.log.end_offset(topic, partition).await
    }
    async fn commit(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
        offset: u64,
    ) -> Result<(), LogError> {
        self.log.commit(group, topic, partition, offset).await
    }
    async fn committed(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
    ) -> Result<Option<u64>, LogError> {
        self.log.committed(group, topic, partition).await
    }
}

maily_engine::event_log_contract!(new_log);

/// `n` records for one partition: key `k`, payload `i` as text padded to `size` bytes.
fn numbered(range: std::ops::Range<usize>, size: usize) -> Vec<KeyedPayload> {
    range
        .map(|i| (b"k".to_vec(), format!("{i:0size$}").into_bytes()))
        .collect()
}

fn payload_numbers(records: &[Record]) -> Vec<usize> {
    records
        .iter()
        .map(|r| String::from_utf8_lossy(&r.payload).parse().expect("number"))
        .collect()
}

/// The segment files of partition 0 of `topic`, oldest first.
fn segments(dir: &Path, topic: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join(topic).join("0"))
        .expect("partition folder")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    files.sort();
    files
}

#[tokio::test]
async fn reopening_keeps_records_commits_and_end_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let log = FileLog::open(params(dir.path())).await.unwrap();
    log.ensure_topic("orders", 3).await.unwrap();
    let records: Vec<KeyedPayload> = (0..60)
        .map(|i| {
            (
                format!("key-{}", i % 7).into_bytes(),
                format!("value-{i}").into_bytes(),
            )
        })
        .collect();
    let positions = log.produce("orders", records.clone()).await.unwrap();
    log.commit("g", "orders", 1, 4).await.unwrap();
    log.commit("h", "orders", 1, 2).await.unwrap();
    let mut before = Vec::new();
    for p in 0..3 {
        before.push(fetch_all(&log, "orders", p, 0).await);
    }
    drop(log);

    let log = FileLog::open(params(dir.path())).await.unwrap();
    assert_eq!(log.partitions("orders").await.unwrap(), 3);
    for p in 0..3 {
        let end = positions.iter().filter(|(q, _)| *q == p).count() as u64;
        assert_eq!(log.end_offset("orders", p).await.unwrap(), end);
        assert_eq!(fetch_all(&log, "orders", p, 0).await, before[p as usize]);
    }
    for ((key, payload), (p, offset)) in records.iter().zip(&positions) {
        let got = log
            .fetch("orders", *p, *offset, 1, Duration::ZERO)
            .await
            .unwrap();
        assert_eq!((&got[0].key, &got[0].payload), (key, payload));
    }
    assert_eq!(log.committed("g", "orders", 1).await.unwrap(), Some(4));
    assert_eq!(log.committed("h", "orders", 1).await.unwrap(), Some(2));
    assert_eq!(log.committed("g", "orders", 0).await.unwrap(), None);
    // Producing goes on where the log ended.
    let end = log.end_offset("orders", positions[0].0).await.unwrap();
    let again = log
        .produce("orders", vec![records[0].clone()])
        .await
        .unwrap();
    assert_eq!(again, vec![(positions[0].0, end)]);
}

/// Produces records 0..5 to a one-partition topic, closes the log, damages the last
/// segment with `damage`, reopens and checks that `kept` records survived and the next
/// record gets offset `kept`.
async fn recovers_from(damage: impl FnOnce(&Path, &mut Vec<u8>), kept: u64) {
    let dir = tempfile::tempdir().unwrap();
    let log = FileLog::open(params(dir.path())).await.unwrap();
    log.ensure_topic("t", 1).await.unwrap();
    log.produce("t", numbered(0..5, 8)).await.unwrap();
    log.commit("g", "t", 0, 2).await.unwrap();
    drop(log);
    let last = segments(dir.path(), "t").pop().unwrap();
    let mut bytes = std::fs::read(&last).unwrap();
    let whole = bytes.len();
    damage(dir.path(), &mut bytes);
    std::fs::write(&last, &bytes).unwrap();

    let log = FileLog::open(params(dir.path())).await.unwrap();
    assert_eq!(log.end_offset("t", 0).await.unwrap(), kept);
    let got = fetch_all(&log, "t", 0, 0).await;
    assert_eq!(
        payload_numbers(&got),
        (0..kept as usize).collect::<Vec<_>>()
    );
    let cut_to = std::fs::metadata(&last).unwrap().len() as usize;
    assert_eq!(
        cut_to,
        whole * kept as usize / 5,
        "cut back to the last good record"
    );
    assert_eq!(log.committed("g", "t", 0).await.unwrap(), Some(2));
    let next = log.produce("t", numbered(7..8, 8)).await.unwrap();
    assert_eq!(next, vec![(0, kept)]);
    let got = log.fetch("t", 0, kept, 10, Duration::ZERO).await.unwrap();
    assert_eq!(payload_numbers(&got), vec![7]);
    drop(log);
    // The repaired log reopens cleanly with the new record.
    let log = FileLog::open(params(dir.path())).await.unwrap();
    assert_eq!(log.end_offset("t", 0).await.unwrap(), kept + 1);
}

#[tokio::test]
async fn garbage_after_the_last_record_is_cut() {
    recovers_from(
        |dir, bytes| {
            bytes.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 5, 6, 7]);
            // A torn commit too: the commits before it stay.
            let commits = dir.join("t").join("0").join("commits");
            let mut c = std::fs::read(&commits).unwrap();
            c.extend_from_slice(&[9, 0, 0]);
            std::fs::write(&commits, c).unwrap();
        },
        5,
    )
    .await;
}

#[tokio::test]
async fn a_half_written_last_record_is_cut() {
    recovers_from(
        |_, bytes| {
            let frame = bytes.len() / 5;
            bytes.truncate(bytes.len() - frame / 2);
        },
        4,
    )
    .await;
}

#[tokio::test]
async fn a_last_record_with_a_flipped_byte_is_cut() {
    recovers_from(
        |_, bytes| {
            let at = bytes.len() - 3;
            bytes[at] ^= 0x20;
        },
        4,
    )
    .await;
}

#[tokio::test]
async fn a_whole_record_out_of_sequence_is_cut() {
    // A stale copy of an earlier frame after the last one: its CRC is good, its
    // offset is not the next.
    recovers_from(
        |_, bytes| {
            let frame = bytes.len() / 5;
            let copy = bytes[..frame].to_vec();
            bytes.extend_from_slice(&copy);
        },
        5,
    )
    .await;
}

#[tokio::test]
async fn commits_release_whole_segments_and_older_offsets_are_out_of_range() {
    let dir = tempfile::tempdir().unwrap();
    let small = FileParams {
        segment_bytes: 300,
        ..params(dir.path())
    };
    let log = FileLog::open(small.clone()).await.unwrap();
    log.ensure_topic("t", 1).await.unwrap();
    // 40-byte payloads make 69-byte frames: four per segment.
    log.produce("t", numbered(0..40, 40)).await.unwrap();
    assert_eq!(segments(dir.path(), "t").len(), 10);
    log.commit("slow", "t", 0, 9).await.unwrap();
    log.commit("fast", "t", 0, 30).await.unwrap();
    // The slowest group holds records 8 and up: segments 0 and 4 go.
    let left = segments(dir.path(), "t");
    assert_eq!(left.len(), 8);
    assert!(left[0].ends_with("00000000000000000008.log"), "{left:?}");
    let err = log.fetch("t", 0, 7, 10, Duration::ZERO).await.unwrap_err();
    assert_eq!(
        err,
        LogError::OffsetOutOfRange {
            topic: "t".into(),
            partition: 0,
            offset: 7,
            earliest: 8
        }
    );
    log.commit("slow", "t", 0, 40).await.unwrap();
    log.commit("fast", "t", 0, 40).await.unwrap();
    // Everyone is past every record: all but the active segment go.
    assert_eq!(segments(dir.path(), "t").len(), 1);
    let got = log.fetch("t", 0, 36, 10, Duration::ZERO).await.unwrap();
    assert_eq!(payload_numbers(&got), vec![36, 37, 38, 39]);
    drop(log);

    let log = FileLog::open(small).await.unwrap();
    assert_eq!(log.committed("slow", "t", 0).await.unwrap(), Some(40));
    assert!(matches!(
        log.fetch("t", 0, 0, 1, Duration::ZERO).await,
        Err(LogError::OffsetOutOfRange { earliest: 36, .. })
    ));
    assert_eq!(log.end_offset("t", 0).await.unwrap(), 40);
}

#[tokio::test]
async fn a_partition_nobody_commits_on_keeps_its_newest_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let log = FileLog::open(FileParams {
        segment_bytes: 300,
        retain_bytes_uncommitted: 600,
        ..params(dir.path())
    })
    .await
    .unwrap();
    log.ensure_topic("dead-letter", 1).await.unwrap();
    for i in 0..10 {
        log.produce("dead-letter", numbered(i * 4..i * 4 + 4, 40))
            .await
            .unwrap();
    }
    let kept: u64 = segments(dir.path(), "dead-letter")
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    assert!((600..600 + 300).contains(&kept), "{kept} bytes kept");
    let got = fetch_all(&log, "dead-letter", 0, 28).await;
    assert_eq!(payload_numbers(&got), (28..40).collect::<Vec<_>>());
    assert!(matches!(
        log.fetch("dead-letter", 0, 0, 1, Duration::ZERO).await,
        Err(LogError::OffsetOutOfRange { .. })
    ));
}

#[tokio::test]
async fn records_older_than_the_cache_are_read_from_disk() {
    let dir = tempfile::tempdir().unwrap();
    let p = FileParams {
        // Several segments, each with several index entries (2 KiB frames, an entry
        // per 64 KiB).
        segment_bytes: 300 << 10,
        cache_records: 5,
        ..params(dir.path())
    };
    records_behind_the_cache_read_right(p).await;
    // The same with the cache bounded by bytes (three 2 KiB records) instead.
    let dir = tempfile::tempdir().unwrap();
    let p = FileParams {
        segment_bytes: 300 << 10,
        cache_bytes: 3 * 2100,
        ..params(dir.path())
    };
    records_behind_the_cache_read_right(p).await;
}

async fn records_behind_the_cache_read_right(p: FileParams) {
    let log = FileLog::open(p.clone()).await.unwrap();
    log.ensure_topic("t", 1).await.unwrap();
    for chunk in 0..5 {
        log.produce("t", numbered(chunk * 100..chunk * 100 + 100, 2000))
            .await
            .unwrap();
    }
    assert!(segments(&p.dir, "t").len() > 2);
    let check = |got: Vec<Record>, from: usize, n: usize| {
        assert_eq!(payload_numbers(&got), (from..from + n).collect::<Vec<_>>());
        assert!(got.iter().all(|r| r.payload.len() == 2000 && r.key == b"k"));
        for (i, r) in got.iter().enumerate() {
            assert_eq!(r.offset, (from + i) as u64);
        }
    };
    let all = fetch_all(&log, "t", 0, 0).await;
    check(all, 0, 500);
    for from in [0, 1, 33, 147, 148, 299, 480, 494] {
        let got = log.fetch("t", 0, from, 3, Duration::ZERO).await.unwrap();
        check(got, from as usize, 3);
    }
    drop(log);
    // After reopening the older segments have no index until a read builds it.
    let log = FileLog::open(p).await.unwrap();
    for from in [350, 2, 147, 0, 420] {
        let got = log.fetch("t", 0, from, 4, Duration::ZERO).await.unwrap();
        check(got, from as usize, 4);
    }
    check(fetch_all(&log, "t", 0, 0).await, 0, 500);
}

#[tokio::test]
async fn a_folder_is_opened_by_one_log_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let log = FileLog::open(params(dir.path())).await.unwrap();
    let err = FileLog::open(params(dir.path())).await.err().unwrap();
    assert!(matches!(err, FileLogError::Locked(_)), "{err}");
    drop(log);
    FileLog::open(params(dir.path())).await.expect("free again");
}

#[tokio::test]
async fn closing_wakes_waiters_with_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(FileLog::open(params(dir.path())).await.unwrap());
    log.ensure_topic("t", 1).await.unwrap();
    let reader = {
        let log = log.clone();
        tokio::spawn(async move { log.fetch("t", 0, 0, 1, Duration::from_secs(60)).await })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    log.close();
    assert_eq!(reader.await.unwrap(), Err(LogError::Closed));
    assert_eq!(log.end_offset("t", 0).await, Err(LogError::Closed));
}

#[tokio::test]
async fn every_fsync_policy_keeps_what_it_acknowledged_across_a_reopen() {
    for fsync in [Fsync::Interval(Duration::from_millis(5)), Fsync::Never] {
        let dir = tempfile::tempdir().unwrap();
        let p = FileParams {
            fsync,
            segment_bytes: 300,
            ..params(dir.path())
        };
        let log = FileLog::open(p.clone()).await.unwrap();
        log.ensure_topic("t", 2).await.unwrap();
        let positions = log.produce("t", numbered(0..30, 40)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        log.close();
        drop(log);
        let log = FileLog::open(p).await.unwrap();
        // One key, so one partition.
        let partition = positions[0].0;
        assert_eq!(log.end_offset("t", partition).await.unwrap(), 30);
        let got = fetch_all(&log, "t", partition, 0).await;
        assert_eq!(payload_numbers(&got), (0..30).collect::<Vec<_>>());
    }
}

#[tokio::test]
async fn topic_names_must_be_safe_folder_names() {
    let log = new_log().await;
    for bad in ["", "..", "a/b", "über"] {
        assert!(log.ensure_topic(bad, 1).await.is_err(), "{bad:?}");
    }
    log.ensure_topic("retry.0", 1).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_producers_get_distinct_consecutive_offsets() {
    let log = Arc::new(new_log().await);
    log.ensure_topic("t", 1).await.unwrap();
    let producers: Vec<_> = (0..8)
        .map(|task| {
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                let mut offsets = Vec::new();
                for i in 0..25 {
                    let records = numbered(task * 100 + i..task * 100 + i + 1, 8);
                    offsets.push(log.produce("t", records).await.unwrap()[0].1);
                }
                offsets
            })
        })
        .collect();
    let mut offsets = Vec::new();
    for p in producers {
        offsets.extend(p.await.unwrap());
    }
    offsets.sort_unstable();
    assert_eq!(offsets, (0..200).collect::<Vec<u64>>());
    assert_eq!(fetch_all(&*log, "t", 0, 0).await.len(), 200);
}

#[tokio::test]
async fn an_empty_segment_left_by_a_roll_gives_way_to_the_one_before() {
    let dir = tempfile::tempdir().unwrap();
    let small = FileParams {
        segment_bytes: 300,
        ..params(dir.path())
    };
    let log = FileLog::open(small.clone()).await.unwrap();
    log.ensure_topic("t", 1).await.unwrap();
    log.produce("t", numbered(0..8, 40)).await.unwrap();
    drop(log);
    // A crash just after rolling: the new segment exists, empty, and the last frame
    // of the one before never fully reached the disk.
    let last = segments(dir.path(), "t").pop().unwrap();
    let bytes = std::fs::read(&last).unwrap();
    std::fs::write(&last, &bytes[..bytes.len() - 10]).unwrap();
    let empty = last.with_file_name(segment::segment_name(8));
    std::fs::write(&empty, b"").unwrap();

    let log = FileLog::open(small).await.unwrap();
    assert_eq!(log.end_offset("t", 0).await.unwrap(), 7);
    assert!(!empty.exists());
    assert_eq!(
        log.produce("t", numbered(9..10, 40)).await.unwrap(),
        vec![(0, 7)]
    );
    let got = fetch_all(&log, "t", 0, 0).await;
    assert_eq!(payload_numbers(&got), vec![0, 1, 2, 3, 4, 5, 6, 9]);
}
