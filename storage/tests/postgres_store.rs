//! Behaviour of the Postgres store beyond the port contract: migrations, rejected
//! rows, the three flush methods, concurrency, error messages and large flushes.
//!
//! Needs a server: `MAILY_TEST_POSTGRES` (default
//! `postgres://postgres@127.0.0.1:5432/test`). Every test works in its own throwaway
//! schema.

mod common;

use maily_engine::ports::prelude::*;
use maily_engine::ports::{
    AggregateBatch, Fence, LedgerEntry, MessageState, StoreError, StoredOffset,
};
use maily_engine::testkit::{addr, sample_campaign};
use maily_engine::{Campaign, CampaignStats, MessageId, Timestamp};
use maily_storage::postgres::{FlushMethod, PostgresParams, PostgresStore};
use sqlx::{Connection, Executor, PgConnection};
use std::time::Duration;

fn url() -> String {
    std::env::var("MAILY_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

async fn connect(params: PostgresParams) -> PostgresStore {
    PostgresStore::connect(params)
        .await
        .expect("postgres store (is MAILY_TEST_POSTGRES reachable?)")
}

async fn temp_store() -> PostgresStore {
    connect(PostgresParams::temp(url())).await
}

/// A connection that bypasses the store, to inspect or damage its schema.
async fn raw(store: &PostgresStore) -> PgConnection {
    let mut conn = PgConnection::connect(&url()).await.expect("raw connection");
    let schema = store.schema().expect("test stores have a schema");
    conn.execute(format!("SET search_path TO \"{schema}\"").as_str())
        .await
        .unwrap();
    conn
}

async fn with_campaign(store: &PostgresStore) -> Campaign {
    let c = sample_campaign("acme");
    store.upsert_tenant(&c.tenant, "Acme").await.unwrap();
    store.insert_campaign(&c).await.unwrap();
    c
}

fn offset(partition: u32, next: u64) -> StoredOffset {
    StoredOffset {
        topic: "events".into(),
        partition,
        next,
    }
}

fn state(
    c: &Campaign,
    id: MessageId,
    mask: u32,
    status: &str,
    detail: Option<&str>,
) -> MessageState {
    MessageState {
        message_id: id,
        tenant: c.tenant.clone(),
        campaign: c.id,
        recipient: addr("ann@example.com"),
        mask,
        status: status.into(),
        detail: detail.map(String::from),
    }
}

fn flush(c: &Campaign, next: u64, injected: u64, messages: Vec<MessageState>) -> AggregateBatch {
    AggregateBatch {
        part: 0,
        group: "analytics".into(),
        fence: None,
        offsets: vec![offset(0, next)],
        stats: vec![(
            c.tenant.clone(),
            c.id,
            CampaignStats {
                injected,
                ..Default::default()
            },
        )],
        messages,
    }
}

const METHODS: [FlushMethod; 3] = [
    FlushMethod::Unnest,
    FlushMethod::Copy,
    FlushMethod::RowByRow,
];

#[tokio::test]
async fn reconnecting_keeps_data_and_applies_migrations_once() {
    let store = temp_store().await;
    let c = with_campaign(&store).await;
    store.migrate().await.unwrap();
    store.migrate().await.unwrap();
    let again = connect(PostgresParams {
        schema: store.schema().map(String::from),
        ..PostgresParams::new(url())
    })
    .await;
    assert_eq!(again.campaign(c.id).await.unwrap(), Some(c));

    let mut conn = raw(&store).await;
    let rows: Vec<(i64, String)> =
        sqlx::query_as("SELECT version, name FROM _maily_migrations ORDER BY version")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    assert_eq!(rows, common::shipped("postgres"));
    assert_eq!(rows[1], (2, "api_keys".to_string()));
    let product_tables: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()
         AND tablename IN ('api_keys', 'contacts', 'lists', 'list_members', 'segments')",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(product_tables, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_starting_together_migrate_once() {
    let params = PostgresParams::temp(url());
    let starts: Vec<_> = (0..4)
        .map(|_| tokio::spawn(PostgresStore::connect(params.clone())))
        .collect();
    let mut stores = Vec::new();
    for s in starts {
        stores.push(s.await.unwrap().expect("concurrent connect and migrate"));
    }
    let migrations: Vec<_> = stores
        .iter()
        .map(|s| {
            let s = s.clone();
            tokio::spawn(async move { s.migrate().await })
        })
        .collect();
    for m in migrations {
        m.await.unwrap().expect("concurrent migrate");
    }
    let mut conn = raw(&stores[0]).await;
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _maily_migrations")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(applied as usize, common::shipped("postgres").len());
}

#[tokio::test]
async fn a_changed_migration_is_refused_by_file_name() {
    let store = temp_store().await;
    let mut conn = raw(&store).await;
    conn.execute("UPDATE _maily_migrations SET checksum = 'edited' WHERE version = 1")
        .await
        .unwrap();
    match store.migrate().await.unwrap_err() {
        StoreError::Corrupt(msg) => assert!(msg.contains("0001_initial.sql"), "{msg}"),
        other => panic!("expected a corrupt-schema error, got {other:?}"),
    }
}

/// A NUL byte is valid in a Rust string but not in Postgres text, and an index entry
/// has a size limit: the rows Postgres rejects are named, everything else in the flush
/// is committed, whatever the method and wherever the bad rows fall among the chunks.
#[tokio::test]
async fn rejected_rows_are_named_and_the_rest_of_the_flush_commits() {
    for method in METHODS {
        let store = connect(PostgresParams {
            batch_rows: 2,
            ..PostgresParams::temp(url())
        })
        .await;
        let c = with_campaign(&store).await;
        let ids: Vec<MessageId> = (0..7).map(|_| MessageId::new()).collect();
        // An earlier flush stored ids[5]; its bad update below must leave it as it was.
        store
            .commit_aggregates_with(
                &flush(
                    &c,
                    1,
                    1,
                    vec![state(&c, ids[5], 1, "injected", Some("queued"))],
                ),
                method,
            )
            .await
            .unwrap();

        let mut messages: Vec<MessageState> = ids
            .iter()
            .map(|&id| state(&c, id, 0b11, "delivered", None))
            .collect();
        messages[2].status = "deli\0vered".into();
        messages[5].detail = Some("550\0 no such user".into());
        // Too big for the (campaign, status) index even compressed: random hex.
        messages[6].status = (0..400).map(|_| MessageId::new().to_string()).collect();
        let err = store
            .commit_aggregates_with(&flush(&c, 9, 7, messages), method)
            .await
            .unwrap_err();
        match &err {
            StoreError::RowsRejected {
                row,
                reason,
                rejected,
            } => {
                assert_eq!(row, &format!("message {}", ids[2]), "{method:?}");
                assert_eq!(*rejected, 3, "{method:?}: {reason}");
                assert!(err.to_string().contains("the rest was committed"), "{err}");
            }
            other => panic!("{method:?}: expected RowsRejected, got {other:?}"),
        }

        let masks = store.message_masks(&ids).await.unwrap();
        for (i, id) in ids.iter().enumerate() {
            let expected = match i {
                2 | 6 => None,
                5 => Some(1),
                _ => Some(0b11),
            };
            assert_eq!(masks.get(id).copied(), expected, "{method:?}: message {i}");
        }
        let injected = store.campaign_stats(c.id).await.unwrap().unwrap().injected;
        assert_eq!(injected, 7, "{method:?}: stats committed");
        let offsets = store.load_offsets("analytics", "events").await.unwrap();
        assert_eq!(offsets.get(&0), Some(&9), "{method:?}: offsets committed");
        let kept = store.messages_with_status(c.id, "injected").await.unwrap();
        assert_eq!(kept[0].detail.as_deref(), Some("queued"), "{method:?}");
    }
}

#[tokio::test]
async fn values_postgres_cannot_hold_refuse_the_whole_flush() {
    let store = temp_store().await;
    let c = with_campaign(&store).await;
    let m = MessageId::new();
    let mut batch = flush(&c, u64::MAX, 1, vec![state(&c, m, 1, "injected", None)]);
    batch.offsets[0].partition = 1;
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

/// The three write methods leave identical state, including text that means something
/// to COPY's format and details kept across updates.
#[tokio::test]
async fn every_flush_method_stores_the_same_state() {
    let awkward = [
        "tab\there",
        "line\nbreak",
        "carriage\rreturn",
        "back\\slash \\N",
        "ünïcødé ✉",
        "",
    ];
    let mut dumps = Vec::new();
    for method in METHODS {
        let store = connect(PostgresParams {
            batch_rows: 3,
            ..PostgresParams::temp(url())
        })
        .await;
        let c = with_campaign(&store).await;
        let ids: Vec<MessageId> = (0..awkward.len())
            .map(|i| MessageId::from_bytes([i as u8 + 1; 16]))
            .collect();
        let first: Vec<MessageState> = ids
            .iter()
            .zip(awkward)
            .map(|(&id, text)| state(&c, id, 1, "bounced_hard", Some(text)))
            .collect();
        store
            .commit_aggregates_with(&flush(&c, 1, 6, first), method)
            .await
            .unwrap();
        // Later states without detail keep the stored one; a duplicate in the batch
        // merges the same way.
        let mut later: Vec<MessageState> = ids
            .iter()
            .map(|&id| state(&c, id, 0b101, "bounced_hard", None))
            .collect();
        later.push(state(&c, ids[0], 0b111, "bounced_hard", None));
        store
            .commit_aggregates_with(&flush(&c, 2, 7, later), method)
            .await
            .unwrap();
        let stored = store
            .messages_with_status(c.id, "bounced_hard")
            .await
            .unwrap();
        let dump: Vec<(u32, Option<String>)> =
            stored.into_iter().map(|m| (m.mask, m.detail)).collect();
        assert_eq!(dump.len(), awkward.len(), "{method:?}");
        assert_eq!(dump[0], (0b111, Some(awkward[0].to_string())), "{method:?}");
        dumps.push((method, dump));
    }
    let (_, unnest) = &dumps[0];
    for (method, dump) in &dumps[1..] {
        assert_eq!(dump, unnest, "{method:?} differs from UNNEST");
    }
}

#[tokio::test]
async fn a_large_flush_commits_and_reads_back() {
    let store = temp_store().await;
    let c = with_campaign(&store).await;
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
        .commit_aggregates(&flush(&c, 50_000, 50_000, messages.clone()))
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
    assert_eq!(
        store.campaign_stats(c.id).await.unwrap().unwrap().injected,
        50_000
    );
}

#[tokio::test]
async fn errors_name_the_entity() {
    let store = temp_store().await;
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
    let nul = Campaign {
        id: maily_engine::CampaignId::new(),
        name: "Spring\0sale".into(),
        ..c.clone()
    };
    let err = store.insert_campaign(&nul).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::InvalidRow { row, .. } if *row == format!("campaign {}", nul.id)),
        "{err:?}"
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
    let store = temp_store().await;
    let c = with_campaign(&store).await;
    let mut conn = raw(&store).await;
    conn.execute("UPDATE campaigns SET from_addr = 'not an address'")
        .await
        .unwrap();
    match store.campaign(c.id).await.unwrap_err() {
        StoreError::Corrupt(msg) => {
            assert!(
                msg.contains("campaigns") && msg.contains(&c.id.to_string()),
                "{msg}"
            )
        }
        other => panic!("expected corrupt, got {other:?}"),
    }
    conn.execute("UPDATE campaigns SET template = '[1, 2]'")
        .await
        .unwrap();
    let err = store.campaign(c.id).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Corrupt(m) if m.contains("template")),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_cannot_both_chain_onto_the_head() {
    let store = temp_store().await;
    let first = LedgerEntry {
        epoch: 1,
        root: [1; 32],
        prev: [0; 32],
        hash: [11; 32],
        at: Timestamp(1),
    };
    store.append_ledger(&first).await.unwrap();
    // Different epochs too: without the table lock, two of them could both see
    // epoch 1 as the head and fork the chain.
    let tasks: Vec<_> = (0..8u8)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .append_ledger(&LedgerEntry {
                        epoch: 2 + u64::from(i % 2),
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
    assert_eq!(store.ledger_entries().await.unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_takeovers_of_an_expired_lease_elect_one_owner() {
    let store = temp_store().await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_acquisitions_elect_one_owner() {
    let store = temp_store().await;
    let ttl = Duration::from_secs(10);
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .acquire_lease("leader", &format!("engine-{i}"), Timestamp(0), ttl)
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
    assert_eq!(winners[0].epoch, 1);
}

#[tokio::test]
async fn fences_beyond_bigint_are_fenced_not_rejected() {
    let store = temp_store().await;
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
async fn an_unreachable_server_is_unavailable_without_leaking_the_password() {
    let err = PostgresStore::connect(PostgresParams {
        acquire_timeout: Duration::from_secs(2),
        ..PostgresParams::new("postgres://maily:s3cret@127.0.0.1:1/none")
    })
    .await
    .unwrap_err();
    match err {
        StoreError::Unavailable(msg) => assert!(!msg.contains("s3cret"), "{msg}"),
        other => panic!("expected unavailable, got {other:?}"),
    }
}
