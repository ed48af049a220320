//! Compares the three ways the Postgres store can write an analytics flush (UNNEST
//! arrays, COPY through a staging table, one INSERT per row) on the same data.
//!
//! ```text
//! cargo run --release -p maily-storage --example pg_flush_bench [-- ROWS BATCH]
//! ```
//!
//! Connects to `MAILY_TEST_POSTGRES` (default `postgres://postgres@127.0.0.1:5432/test`)
//! and gives each method a fresh throwaway schema, dropped at the end. The data is
//! flushed twice: once as new messages (inserts), then again with every message's
//! state moved on and no detail (the update path, with the detail-keeping COALESCE).
//! Batches are sent round-robin across the methods, so background noise on a shared
//! machine (checkpoints, other builds) falls on all three alike.

use maily_engine::ports::{AggregateBatch, MessageState, StoredOffset};
use maily_engine::{CampaignId, CampaignStats, EmailAddress, MessageId, TenantId};
use maily_storage::postgres::{FlushMethod, PostgresParams, PostgresStore};
use sqlx::{Connection, Executor, PgConnection};
use std::time::{Duration, Instant};

const METHODS: [FlushMethod; 3] = [
    FlushMethod::Unnest,
    FlushMethod::Copy,
    FlushMethod::RowByRow,
];
const CAMPAIGNS: usize = 100;
const STATUSES: [&str; 5] = ["delivered", "deferred", "bounced_hard", "opened", "clicked"];

/// A small deterministic generator (splitmix64), so runs are comparable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn id_bytes(&mut self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&self.next().to_le_bytes());
        b[8..].copy_from_slice(&self.next().to_le_bytes());
        b
    }
}

/// The flushes of one pass: `rows` messages in batches of `batch`, each with the stats
/// of the campaigns it touched and its offset.
fn batches(
    messages: &[MessageState],
    campaigns: &[(TenantId, CampaignId)],
    batch: usize,
    first_offset: u64,
) -> Vec<AggregateBatch> {
    messages
        .chunks(batch)
        .enumerate()
        .map(|(i, chunk)| {
            let next = first_offset + ((i + 1) * batch) as u64;
            AggregateBatch {
                part: 0,
                group: "analytics".into(),
                fence: None,
                offsets: vec![StoredOffset {
                    topic: "events".into(),
                    partition: 0,
                    next,
                }],
                stats: campaigns
                    .iter()
                    .map(|(t, c)| {
                        let stats = CampaignStats {
                            injected: next,
                            delivered: next / 2,
                            ..Default::default()
                        };
                        (t.clone(), *c, stats)
                    })
                    .collect(),
                messages: chunk.to_vec(),
            }
        })
        .collect()
}

fn generate(rows: usize, batch: usize) -> (Vec<AggregateBatch>, Vec<AggregateBatch>) {
    let mut rng = Rng(42);
    let tenant = TenantId::parse("bench").expect("valid tenant");
    let campaigns: Vec<(TenantId, CampaignId)> = (0..CAMPAIGNS)
        .map(|_| (tenant.clone(), CampaignId::from_bytes(rng.id_bytes())))
        .collect();
    let first: Vec<MessageState> = (0..rows)
        .map(|i| {
            let bounced = rng.next() % 100 < 10;
            MessageState {
                message_id: MessageId::from_bytes(rng.id_bytes()),
                tenant: tenant.clone(),
                campaign: campaigns[i % CAMPAIGNS].1,
                recipient: EmailAddress::parse(&format!("user{i}@example{}.com", i % 97))
                    .expect("valid address"),
                mask: if bounced { 0b1001 } else { 0b11 },
                status: if bounced { "bounced_hard" } else { "delivered" }.into(),
                detail: bounced.then(|| "userunknown: 550 5.1.1 no such user".to_string()),
            }
        })
        .collect();
    let later: Vec<MessageState> = first
        .iter()
        .map(|m| MessageState {
            mask: m.mask | 0b1_0000,
            status: STATUSES[(rng.next() % STATUSES.len() as u64) as usize].into(),
            detail: None,
            ..m.clone()
        })
        .collect();
    let total = rows as u64;
    (
        batches(&first, &campaigns, batch, 0),
        batches(&later, &campaigns, batch, total),
    )
}

/// Flushes `pass` into every store round-robin; returns the time each method took.
async fn run_pass(stores: &[PostgresStore], pass: &[AggregateBatch]) -> Vec<Duration> {
    let mut took = vec![Duration::ZERO; METHODS.len()];
    for batch in pass {
        for (i, (store, method)) in stores.iter().zip(METHODS).enumerate() {
            let started = Instant::now();
            store
                .commit_aggregates_with(batch, method)
                .await
                .unwrap_or_else(|e| panic!("{method:?} flush failed: {e}"));
            took[i] += started.elapsed();
        }
    }
    took
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let rows: usize = args.next().map_or(200_000, |a| a.parse().expect("ROWS"));
    let batch: usize = args.next().map_or(5_000, |a| a.parse().expect("BATCH"));
    let url = std::env::var("MAILY_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());

    let generated = Instant::now();
    let (inserts, updates) = generate(rows, batch);
    println!(
        "{rows} message rows + {CAMPAIGNS} stats rows per flush, flushes of {batch} rows \
         ({} per pass), data generated in {:.1?}",
        inserts.len(),
        generated.elapsed()
    );

    let mut stores = Vec::new();
    for _ in METHODS {
        let params = PostgresParams {
            batch_rows: batch,
            max_connections: 1,
            ..PostgresParams::temp(url.clone())
        };
        stores.push(PostgresStore::connect(params).await.expect("bench store"));
    }

    let insert_took = run_pass(&stores, &inserts).await;
    let update_took = run_pass(&stores, &updates).await;

    let rate = |d: Duration| rows as f64 / d.as_secs_f64();
    let baseline_insert = rate(insert_took[2]);
    let baseline_update = rate(update_took[2]);
    println!();
    println!(
        "{:<12} {:>14} {:>10} {:>14} {:>10}",
        "method", "insert rows/s", "x row", "update rows/s", "x row"
    );
    for (i, method) in METHODS.iter().enumerate() {
        let (ins, upd) = (rate(insert_took[i]), rate(update_took[i]));
        println!(
            "{:<12} {:>14.0} {:>9.1}x {:>14.0} {:>9.1}x",
            format!("{method:?}"),
            ins,
            ins / baseline_insert,
            upd,
            upd / baseline_update
        );
    }
    println!();
    println!(
        "UNNEST / COPY: inserts {:.2}x, updates {:.2}x",
        rate(insert_took[0]) / rate(insert_took[1]),
        rate(update_took[0]) / rate(update_took[1])
    );

    let mut conn = PgConnection::connect(&url)
        .await
        .expect("cleanup connection");
    for store in &stores {
        store.close().await;
        let schema = store.schema().expect("bench stores have a schema");
        conn.execute(format!("DROP SCHEMA \"{schema}\" CASCADE").as_str())
            .await
            .expect("dropping bench schema");
    }
}
