//! Behaviour of the SQLite store beyond the port contract: migrations, atomicity,
//! concurrency, error messages and large flushes.

mod common;

use maily_engine::ports::prelude::*;
use maily_engine::ports::{
    AggregateBatch, Fence, LedgerEntry, MessageState, StoreError, StoredOffset,
};
use maily_engine::testkit::{addr, sample_campaign};
use maily_engine::{CampaignStats, MessageId, TenantId, Timestamp};
use maily_storage::{SqliteParams, SqliteStore};
use sqlx::{Connection, SqliteConnection};
use std::path::{Path, PathBuf};
use std::time::Duration;

fn db_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("data").join("maily.db")
}

async fn open(path: &Path) -> Result<SqliteStore, StoreError> {
    SqliteStore::open(SqliteParams::new(path.to_string_lossy())).await
}

/// A connection that bypasses the store, to inspect or damage the file.
async fn raw(path: &Path) -> SqliteConnection {
    SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .expect("raw connection")
}

#[tokio::test]
async fn reopening_keeps_data_and_applies_migrations_once() {
    let dir = tempfile::TempDir::new().unwrap();
    let path = db_path(&dir);
    let c = sample_campaign("acme");
    {
        let store = open(&path).await.unwrap();
        store.upsert_tenant(&c.tenant, "Acme").await.unwrap();
        store.insert_campaign(&c).await.unwrap();
        store.close().await;
    }
    let store = open(&path).await.unwrap();
    store.migrate().await.unwrap();
    assert_eq!(store.campaign(c.id).await.unwrap(), Some(c));
    store.close().await;

    let mut conn = raw(&path).await;
    let rows: Vec<(i64, String)> =
        sqlx::query_as("SELECT version, name FROM _maily_migrations ORDER BY version")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    assert_eq!(rows, common::shipped("sqlite"));
    assert_eq!(rows[1], (2, "leases".to_string()));
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(mode, "wal");
}

#[tokio::test]
async fn a_changed_migration_is_refused_by_file_name() {
    let dir = tempfile::TempDir::new().unwrap();
    let path = db_path(&dir);
    open(&path).await.unwrap().close().await;
    let mut conn = raw(&path).await;
    sqlx::query("UPDATE _maily_migrations SET checksum = 'edited' WHERE version = 1")
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();

    let err = open(&path).await.unwrap_err();
    match err {
        StoreError::Corrupt(msg) => assert!(msg.contains("0001_initial.sql"), "{msg}"),
        other => panic!("expected a corrupt-schema error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_large_flush_commits_and_reads_back() {
    let store = SqliteStore::open_temp().await.unwrap();
    let c = sample_campaign("acme");
    store.upsert_tenant(&c.tenant, "Acme").await.unwrap();
    store.insert_campaign(&c).await.unwrap();
    let messages: Vec<MessageState> = (0..50_000u32)
        .map(|i| MessageState {
            message_id: MessageId::new(),
            tenant: c.tenant.clone(),
            campaign: c.id,
            recipient: addr(&format!("user{i}@example.com")),
            mask: i % 4096,
            status: if i % 10 == 0 {
                "bounced_hard"
            } else {
                "delivered"
            }
            .into(),
            detail: (i % 10 == 0).then(|| "550 5.1.1 no such user".to_string()),
        })
        .collect();
    store
        .commit_aggregates(&AggregateBatch {
            part: 0,
            group: "analytics".into(),
            fence: None,
            offsets: vec![StoredOffset {
                topic: "events".into(),
                partition: 0,
                next: 50_000,
            }],
            stats: vec![(
                c.tenant.clone(),
                c.id,
                CampaignStats {
                    injected: 50_000,
                    ..Default::default()
                },
            )],
            messages: messages.clone(),
        })
        .await
        .unwrap();

    let ids: Vec<MessageId> = messages.iter().map(|m| m.message_id).collect();
    let masks = store.message_masks(&ids).await.unwrap();
    assert_eq!(masks.len(), messages.len());
    for m in &messages {
        assert_eq!(masks[&m.message_id], m.mask);
    }
    let bounced = store
        .messages_with_status(c.id, "bounced_hard")
        .await
        .unwrap();
    assert_eq!(bounced.len(), 5_000);
}

#[tokio::test]
async fn a_rejected_flush_leaves_no_trace() {
    let store = SqliteStore::open_temp().await.unwrap();
    let c = sample_campaign("acme");
    let m = MessageId::new();
    let batch = AggregateBatch {
        part: 0,
        group: "analytics".into(),
        fence: None,
        // Offsets are written last, so this one fails after stats and messages were
        // written inside the transaction.
        offsets: vec![StoredOffset {
            topic: "events".into(),
            partition: 1,
            next: u64::MAX,
        }],
        stats: vec![(
            c.tenant.clone(),
            c.id,
            CampaignStats {
                injected: 1,
                ..Default::default()
            },
        )],
        messages: vec![MessageState {
            message_id: m,
            tenant: c.tenant.clone(),
            campaign: c.id,
            recipient: addr("ann@example.com"),
            mask: 1,
            status: "injected".into(),
            detail: None,
        }],
    };
    let err = store.commit_aggregates(&batch).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::InvalidRow { row, .. } if row == "offset analytics/events/1"),
        "{err:?}"
    );
    assert!(store.message_masks(&[m]).await.unwrap().is_empty());
    assert!(
        store
            .load_offsets("analytics", "events")
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.campaign_stats(c.id).await.unwrap(), None);
}

#[tokio::test]
async fn errors_name_the_entity() {
    let store = SqliteStore::open_temp().await.unwrap();
    let c = sample_campaign("acme");
    let err = store.insert_campaign(&c).await.unwrap_err();
    assert_eq!(
        err,
        StoreError::InvalidRow {
            row: format!("campaign {}", c.id),
            reason: "tenant acme does not exist".into(),
        }
    );
    store.upsert_tenant(&c.tenant, "Acme").await.unwrap();
    store.insert_campaign(&c).await.unwrap();
    assert_eq!(
        store.insert_campaign(&c).await.unwrap_err(),
        StoreError::Conflict(format!("campaign {} already exists", c.id))
    );
    store
        .record_anchor("ledger", 3, &[1; 32], "a")
        .await
        .unwrap();
    let err = store
        .record_anchor("ledger", 3, &[2; 32], "b")
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict(ref m) if m.contains("epoch 3")),
        "{err:?}"
    );
}

#[tokio::test]
async fn undecodable_rows_are_corrupt_and_named() {
    let dir = tempfile::TempDir::new().unwrap();
    let path = db_path(&dir);
    let store = open(&path).await.unwrap();
    let c = sample_campaign("acme");
    store.upsert_tenant(&c.tenant, "Acme").await.unwrap();
    store.insert_campaign(&c).await.unwrap();
    let mut conn = raw(&path).await;
    sqlx::query("UPDATE campaigns SET from_addr = 'not an address'")
        .execute(&mut conn)
        .await
        .unwrap();
    let err = store.campaign(c.id).await.unwrap_err();
    match err {
        StoreError::Corrupt(msg) => {
            assert!(
                msg.contains("campaigns") && msg.contains(&c.id.to_string()),
                "{msg}"
            )
        }
        other => panic!("expected corrupt, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_cannot_both_chain_onto_the_head() {
    let store = SqliteStore::open_temp().await.unwrap();
    let first = LedgerEntry {
        epoch: 1,
        root: [1; 32],
        prev: [0; 32],
        hash: [11; 32],
        at: Timestamp(1),
    };
    store.append_ledger(&first).await.unwrap();
    let tasks: Vec<_> = (0..8u8)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .append_ledger(&LedgerEntry {
                        epoch: 2,
                        root: [2; 32],
                        prev: [11; 32],
                        hash: [100 + i; 32],
                        at: Timestamp(2),
                    })
                    .await
            })
        })
        .collect();
    let mut won = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(()) => won += 1,
            Err(StoreError::Conflict(_)) => {}
            Err(other) => panic!("unexpected error {other:?}"),
        }
    }
    assert_eq!(won, 1);
    assert_eq!(store.ledger_head().await.unwrap().unwrap().epoch, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_takeovers_of_an_expired_lease_elect_one_owner() {
    let store = SqliteStore::open_temp().await.unwrap();
    let ttl = Duration::from_secs(10);
    let old = store
        .acquire_lease("partition/0", "engine-old", Timestamp(0), ttl)
        .await
        .unwrap()
        .unwrap();
    let now = old.expires_at;
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .acquire_lease("partition/0", &format!("engine-{i}"), now, ttl)
                    .await
            })
        })
        .collect();
    let mut winners = Vec::new();
    for t in tasks {
        if let Some(lease) = t.await.unwrap().unwrap() {
            winners.push(lease);
        }
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    assert_eq!(winners[0].epoch, 2);
    assert_eq!(store.leases().await.unwrap(), winners);
}

#[tokio::test]
async fn fences_beyond_sqlite_integers_are_fenced_not_rejected() {
    let store = SqliteStore::open_temp().await.unwrap();
    let lease = store
        .acquire_lease("leader", "engine-a", Timestamp(0), Duration::from_secs(1))
        .await
        .unwrap()
        .unwrap();
    let huge = Fence {
        epoch: u64::MAX,
        ..lease.fence()
    };
    let err = store
        .save_offsets("sender", &[], Some(&huge))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Fenced {
                epoch: u64::MAX,
                ..
            }
        ),
        "{err:?}"
    );
    store.release_lease(&huge).await.unwrap();
    assert_eq!(store.leases().await.unwrap(), vec![lease]);
}

#[tokio::test]
async fn an_undecodable_lease_is_corrupt_and_named() {
    let dir = tempfile::TempDir::new().unwrap();
    let path = db_path(&dir);
    let store = open(&path).await.unwrap();
    let mut conn = raw(&path).await;
    sqlx::query(
        "INSERT INTO leases (resource, owner, epoch, expires_at)
         VALUES ('leader', 'x', 1, 'soon')",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    let err = store
        .acquire_lease("leader", "engine-a", Timestamp(0), Duration::from_secs(1))
        .await
        .unwrap_err();
    match err {
        StoreError::Corrupt(msg) => {
            assert!(msg.contains("leases") && msg.contains("leader"), "{msg}")
        }
        other => panic!("expected corrupt, got {other:?}"),
    }
}

#[tokio::test]
async fn an_in_memory_database_works() {
    let store = SqliteStore::open(SqliteParams::new("sqlite::memory:"))
        .await
        .unwrap();
    let t = TenantId::parse("acme").unwrap();
    store
        .suppress(&t, &addr("a@x.org"), "complaint")
        .await
        .unwrap();
    assert_eq!(store.suppressions(&t).await.unwrap().len(), 1);
}

/// Suppressions kept before they ignored case become one lower-cased row per mailbox,
/// keeping the oldest reason.
#[tokio::test]
async fn the_case_migration_merges_suppressions_of_one_mailbox() {
    let dir = tempfile::TempDir::new().unwrap();
    let path = db_path(&dir);
    let store = open(&path).await.unwrap();
    let t = TenantId::parse("acme").unwrap();
    store.upsert_tenant(&t, "Acme").await.unwrap();
    store.close().await;
    let mut conn = raw(&path).await;
    for (email, reason, at) in [
        ("Ann@x.test", "complaint", 1),
        ("ann@x.test", "bounce: userunknown", 2),
        ("ANN@x.test", "unsubscribe", 3),
        ("Bob@x.test", "complaint", 1),
    ] {
        sqlx::query(
            "INSERT INTO suppressions (tenant, email, reason, created_at) VALUES ('acme', ?, ?, ?)",
        )
        .bind(email)
        .bind(reason)
        .bind(at)
        .execute(&mut conn)
        .await
        .unwrap();
    }
    sqlx::raw_sql(include_str!(
        "../migrations/sqlite/0006_suppression_case.sql"
    ))
    .execute(&mut conn)
    .await
    .unwrap();
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT email, reason FROM suppressions ORDER BY email")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    assert_eq!(
        rows,
        [
            ("ann@x.test".to_string(), "complaint".to_string()),
            ("bob@x.test".to_string(), "complaint".to_string())
        ]
    );
    let store = open(&path).await.unwrap();
    assert!(store.is_suppressed(&t, &addr("ANN@X.TEST")).await.unwrap());
}
