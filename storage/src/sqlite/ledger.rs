//! The hash-chained anchor ledger, chain anchors and Merkle proofs.

use super::rows::{RowReader, db_err, placeholders, raw_text, stats_columns, stats_to_i64, to_i64};
use maily_engine::merkle::{CampaignLeaf, Hash32};
use maily_engine::ports::{ChainSubmission, LedgerEntry, StoreError, StoredProof};
use maily_engine::{CampaignId, CampaignStats, Timestamp};
use sqlx::sqlite::SqliteRow;
use sqlx::{SqliteConnection, SqlitePool};
use std::sync::LazyLock;
use tracing::{info, warn};

static UPSERT_PROOF: LazyLock<String> = LazyLock::new(|| {
    let updates: Vec<String> = CampaignStats::FIELDS
        .iter()
        .map(|f| format!("{f} = excluded.{f}"))
        .collect();
    format!(
        "INSERT INTO proofs (epoch, campaign, leaf_index, root, {}, reward_total, proof)
         VALUES (?, ?, ?, ?, {}, ?, ?)
         ON CONFLICT (epoch, campaign) DO UPDATE SET leaf_index = excluded.leaf_index,
             root = excluded.root, {}, reward_total = excluded.reward_total,
             proof = excluded.proof",
        stats_columns(),
        placeholders(CampaignStats::FIELDS.len()),
        updates.join(", ")
    )
});

static SELECT_PROOF: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT leaf_index, root, {}, reward_total, proof FROM proofs
         WHERE epoch = ? AND campaign = ?",
        stats_columns()
    )
});

const SELECT_HEAD: &str =
    "SELECT epoch, root, prev, hash, at FROM ledger ORDER BY epoch DESC LIMIT 1";
const SELECT_ENTRY: &str = "SELECT epoch, root, prev, hash, at FROM ledger WHERE epoch = ?";

fn ledger_row(row: &SqliteRow) -> Result<LedgerEntry, StoreError> {
    let r = RowReader::new(row, "ledger", raw_text(row, "epoch"));
    Ok(LedgerEntry {
        epoch: r.u64("epoch")?,
        root: r.hash("root")?,
        prev: r.hash("prev")?,
        hash: r.hash("hash")?,
        at: Timestamp(r.get("at")?),
    })
}

async fn head_on(conn: &mut SqliteConnection) -> Result<Option<LedgerEntry>, StoreError> {
    let row = sqlx::query(SELECT_HEAD)
        .fetch_optional(conn)
        .await
        .map_err(db_err)?;
    row.as_ref().map(ledger_row).transpose()
}

pub(super) async fn ledger_head(pool: &SqlitePool) -> Result<Option<LedgerEntry>, StoreError> {
    let mut conn = pool.acquire().await.map_err(db_err)?;
    head_on(&mut conn).await
}

pub(super) async fn append_ledger(pool: &SqlitePool, e: &LedgerEntry) -> Result<(), StoreError> {
    let epoch = to_i64(e.epoch, format_args!("ledger {}", e.epoch), "epoch")?;
    // IMMEDIATE: the head read below must still be the head when the insert commits,
    // so two appenders cannot both chain onto it.
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.map_err(db_err)?;
    let head = head_on(&mut tx).await?;
    let expected_prev = head.as_ref().map_or([0; 32], |h| h.hash);
    // Epochs are anchored in order, so the head is always the highest epoch and an
    // epoch at or below it is either recorded already or out of order.
    if let Some(h) = head.as_ref().filter(|h| e.epoch <= h.epoch) {
        return Err(StoreError::Conflict(format!(
            "ledger entry for epoch {} is not after the head, epoch {}",
            e.epoch, h.epoch
        )));
    }
    if e.prev != expected_prev {
        return Err(StoreError::Conflict(format!(
            "ledger entry for epoch {} chains to {} but the head is {}",
            e.epoch,
            hex::encode(e.prev),
            match &head {
                Some(h) => format!("epoch {} with hash {}", h.epoch, hex::encode(h.hash)),
                None => "empty (expected zeros)".into(),
            }
        )));
    }
    sqlx::query("INSERT INTO ledger (epoch, root, prev, hash, at) VALUES (?, ?, ?, ?, ?)")
        .bind(epoch)
        .bind(&e.root[..])
        .bind(&e.prev[..])
        .bind(&e.hash[..])
        .bind(e.at.0)
        .execute(&mut *tx)
        .await
        .map_err(|err| {
            super::rows::unique_err(err, || {
                format!(
                    "ledger already holds an entry with hash {}",
                    hex::encode(e.hash)
                )
            })
        })?;
    tx.commit().await.map_err(db_err)?;
    info!(epoch = e.epoch, hash = %hex::encode(e.hash), "ledger entry appended");
    Ok(())
}

pub(super) async fn ledger_entry(
    pool: &SqlitePool,
    epoch: u64,
) -> Result<Option<LedgerEntry>, StoreError> {
    let Ok(key) = i64::try_from(epoch) else {
        return Ok(None);
    };
    let row = sqlx::query(SELECT_ENTRY)
        .bind(key)
        .fetch_optional(pool)
        .await
        .map_err(db_err)?;
    row.as_ref().map(ledger_row).transpose()
}

pub(super) async fn ledger_entries(pool: &SqlitePool) -> Result<Vec<LedgerEntry>, StoreError> {
    let rows = sqlx::query("SELECT epoch, root, prev, hash, at FROM ledger ORDER BY epoch")
        .fetch_all(pool)
        .await
        .map_err(db_err)?;
    rows.iter().map(ledger_row).collect()
}

pub(super) async fn record_anchor(
    pool: &SqlitePool,
    chain: &str,
    epoch: u64,
    root: &Hash32,
    reference: &str,
) -> Result<(), StoreError> {
    let key = to_i64(epoch, format_args!("anchor {chain}/{epoch}"), "epoch")?;
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.map_err(db_err)?;
    let inserted = sqlx::query(
        "INSERT INTO anchors (chain, epoch, root, reference, anchored_at) VALUES (?, ?, ?, ?, ?)
         ON CONFLICT (chain, epoch) DO NOTHING",
    )
    .bind(chain)
    .bind(key)
    .bind(&root[..])
    .bind(reference)
    .bind(Timestamp::now().0)
    .execute(&mut *tx)
    .await
    .map_err(db_err)?
    .rows_affected();
    if inserted == 0 {
        // Recording the same anchor again is fine; a different root for the same
        // epoch means two different trees were published, which someone must see.
        let row = sqlx::query("SELECT root, reference FROM anchors WHERE chain = ? AND epoch = ?")
            .bind(chain)
            .bind(key)
            .fetch_one(&mut *tx)
            .await
            .map_err(db_err)?;
        let r = RowReader::new(&row, "anchors", format_args!("{chain}/{epoch}"));
        let stored = r.hash("root")?;
        if stored != *root {
            return Err(StoreError::Conflict(format!(
                "epoch {epoch} is already anchored on {chain} with root {}, not {}",
                hex::encode(stored),
                hex::encode(root)
            )));
        }
        let stored_ref: String = r.get("reference")?;
        if stored_ref != reference {
            warn!(chain, epoch, kept = %stored_ref, ignored = %reference, "epoch anchored twice; keeping the first reference");
        }
    }
    tx.commit().await.map_err(db_err)?;
    Ok(())
}

pub(super) async fn epochs_to_anchor(
    pool: &SqlitePool,
    chain: &str,
) -> Result<Vec<u64>, StoreError> {
    let epochs: Vec<i64> = sqlx::query_scalar(
        "SELECT s.epoch FROM settlements s
         WHERE NOT EXISTS (SELECT 1 FROM anchors a WHERE a.chain = ? AND a.epoch = s.epoch)
         ORDER BY s.epoch",
    )
    .bind(chain)
    .fetch_all(pool)
    .await
    .map_err(db_err)?;
    epochs
        .into_iter()
        .map(|e| {
            u64::try_from(e)
                .map_err(|_| StoreError::Corrupt(format!("settlements row {e}: negative epoch")))
        })
        .collect()
}

pub(super) async fn store_proofs(
    pool: &SqlitePool,
    proofs: &[StoredProof],
) -> Result<(), StoreError> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.map_err(db_err)?;
    for p in proofs {
        let row = format!("proof {}/{}", p.leaf.epoch, p.leaf.campaign);
        let path: Vec<u8> = p.proof.concat();
        let mut q = sqlx::query(UPSERT_PROOF.as_str())
            .bind(to_i64(p.leaf.epoch, &row, "epoch")?)
            .bind(p.leaf.campaign.to_string())
            .bind(i64::from(p.leaf_index))
            .bind(&p.root[..]);
        for c in stats_to_i64(&p.leaf.stats, &row)? {
            q = q.bind(c);
        }
        q.bind(p.leaf.reward_total.to_string())
            .bind(path)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
    }
    tx.commit().await.map_err(db_err)
}

pub(super) async fn proof(
    pool: &SqlitePool,
    epoch: u64,
    campaign: CampaignId,
) -> Result<Option<StoredProof>, StoreError> {
    let Ok(key) = i64::try_from(epoch) else {
        return Ok(None);
    };
    let row = sqlx::query(SELECT_PROOF.as_str())
        .bind(key)
        .bind(campaign.to_string())
        .fetch_optional(pool)
        .await
        .map_err(db_err)?;
    let Some(row) = row else { return Ok(None) };
    let r = RowReader::new(&row, "proofs", format_args!("{epoch}/{campaign}"));
    Ok(Some(StoredProof {
        leaf: CampaignLeaf {
            epoch,
            campaign,
            stats: r.stats()?,
            reward_total: r.parse("reward_total")?,
        },
        leaf_index: r.u32("leaf_index")?,
        root: r.hash("root")?,
        proof: r.hashes("proof")?,
    }))
}

pub(super) async fn save_submission(
    pool: &SqlitePool,
    s: &ChainSubmission,
) -> Result<(), StoreError> {
    let row = format!("submission {}/{}", s.chain, s.epoch);
    sqlx::query(
        "INSERT INTO chain_submissions (chain, epoch, nonce, hashes, raw, saved_at)
         VALUES (?, ?, ?, ?, ?, ?)
         ON CONFLICT (chain, epoch) DO UPDATE SET nonce = excluded.nonce,
             hashes = excluded.hashes, raw = excluded.raw, saved_at = excluded.saved_at",
    )
    .bind(&s.chain)
    .bind(to_i64(s.epoch, &row, "epoch")?)
    .bind(to_i64(s.nonce, &row, "nonce")?)
    .bind(s.hashes.concat())
    .bind(&s.raw)
    .bind(Timestamp::now().0)
    .execute(pool)
    .await
    .map_err(db_err)?;
    Ok(())
}

pub(super) async fn submission(
    pool: &SqlitePool,
    chain: &str,
    epoch: u64,
) -> Result<Option<ChainSubmission>, StoreError> {
    let Ok(key) = i64::try_from(epoch) else {
        return Ok(None);
    };
    let row = sqlx::query(
        "SELECT nonce, hashes, raw FROM chain_submissions WHERE chain = ? AND epoch = ?",
    )
    .bind(chain)
    .bind(key)
    .fetch_optional(pool)
    .await
    .map_err(db_err)?;
    let Some(row) = row else { return Ok(None) };
    RowReader::new(&row, "chain_submissions", format_args!("{chain}/{epoch}"))
        .chain_submission(chain, epoch)
        .map(Some)
}

pub(super) async fn clear_submission(
    pool: &SqlitePool,
    chain: &str,
    epoch: u64,
) -> Result<(), StoreError> {
    let Ok(key) = i64::try_from(epoch) else {
        return Ok(());
    };
    sqlx::query("DELETE FROM chain_submissions WHERE chain = ? AND epoch = ?")
        .bind(chain)
        .bind(key)
        .execute(pool)
        .await
        .map_err(db_err)?;
    Ok(())
}
