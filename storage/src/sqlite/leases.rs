//! Partition ownership: leases with fencing epochs, and engine membership.
//!
//! A lease names its holder and an epoch raised each time it changes hands. Writers
//! carry the epoch as a [`Fence`] that [`check_fence`] verifies inside the write's own
//! `BEGIN IMMEDIATE` transaction: holding the write lock from the check to the commit
//! is what makes a takeover and a stale writer's flush impossible to interleave.

use super::rows::{RowReader, db_err, raw_text, to_i64};
use maily_engine::Timestamp;
use maily_engine::ports::{Fence, Lease, StoreError};
use sqlx::sqlite::SqliteRow;
use sqlx::{SqliteConnection, SqlitePool};
use std::time::Duration;
use tracing::{debug, info};

const SELECT_LEASE: &str =
    "SELECT resource, owner, epoch, expires_at FROM leases WHERE resource = ?";

fn lease_row(row: &SqliteRow) -> Result<Lease, StoreError> {
    let r = RowReader::new(row, "leases", raw_text(row, "resource"));
    Ok(Lease {
        resource: r.get("resource")?,
        owner: r.get("owner")?,
        epoch: r.u64("epoch")?,
        expires_at: Timestamp(r.get("expires_at")?),
    })
}

/// Refuses the caller's transaction with [`StoreError::Fenced`] unless `fence` is
/// `None` or its owner still holds its resource at its epoch.
///
/// Expiry is deliberately ignored: an expired lease nobody took over still guards its
/// holder's writes, since no one else can have written under it.
pub(super) async fn check_fence(
    conn: &mut SqliteConnection,
    fence: Option<&Fence>,
) -> Result<(), StoreError> {
    let Some(fence) = fence else {
        return Ok(());
    };
    let fenced = || StoreError::Fenced {
        resource: fence.resource.clone(),
        owner: fence.owner.clone(),
        epoch: fence.epoch,
    };
    // No stored epoch exceeds i64::MAX, so a larger one cannot be held.
    let Ok(epoch) = i64::try_from(fence.epoch) else {
        return Err(fenced());
    };
    let held: Option<i64> =
        sqlx::query_scalar("SELECT 1 FROM leases WHERE resource = ? AND owner = ? AND epoch = ?")
            .bind(&fence.resource)
            .bind(&fence.owner)
            .bind(epoch)
            .fetch_optional(conn)
            .await
            .map_err(db_err)?;
    held.map(|_| ()).ok_or_else(fenced)
}

pub(super) async fn acquire_lease(
    pool: &SqlitePool,
    resource: &str,
    owner: &str,
    now: Timestamp,
    ttl: Duration,
) -> Result<Option<Lease>, StoreError> {
    let expires_at = now.plus(ttl);
    // IMMEDIATE: the holder read below must still hold the lease when the write
    // commits, so two contenders for an expired lease cannot both take it over.
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.map_err(db_err)?;
    let current = sqlx::query(SELECT_LEASE)
        .bind(resource)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_err)?
        .as_ref()
        .map(lease_row)
        .transpose()?;
    let epoch = match &current {
        None => 1,
        // A renewal, even of an expired lease: nobody took it, so the epoch stands.
        Some(held) if held.owner == owner => held.epoch,
        // Stored epochs fit 63 bits, so this cannot overflow; `to_i64` below refuses
        // the one value past them.
        Some(held) if held.expires_at <= now => held.epoch + 1,
        Some(_) => {
            tx.rollback().await.map_err(db_err)?;
            return Ok(None);
        }
    };
    let key = to_i64(epoch, format_args!("lease {resource}"), "epoch")?;
    sqlx::query(
        "INSERT INTO leases (resource, owner, epoch, expires_at) VALUES (?, ?, ?, ?)
         ON CONFLICT (resource) DO UPDATE SET owner = excluded.owner,
             epoch = excluded.epoch, expires_at = excluded.expires_at",
    )
    .bind(resource)
    .bind(owner)
    .bind(key)
    .bind(expires_at.0)
    .execute(&mut *tx)
    .await
    .map_err(db_err)?;
    tx.commit().await.map_err(db_err)?;
    match &current {
        Some(held) if held.owner == owner => {
            debug!(resource, owner, epoch, "lease renewed");
        }
        Some(held) => {
            info!(resource, owner, epoch, previous = %held.owner, "lease taken over");
        }
        None => info!(resource, owner, epoch, "lease acquired"),
    }
    Ok(Some(Lease {
        resource: resource.to_string(),
        owner: owner.to_string(),
        epoch,
        expires_at,
    }))
}

pub(super) async fn release_lease(pool: &SqlitePool, fence: &Fence) -> Result<(), StoreError> {
    let Ok(epoch) = i64::try_from(fence.epoch) else {
        return Ok(());
    };
    // Owner and epoch stay, so whoever takes the lease next raises the epoch and
    // this holder's fence stops working from then on.
    let released = sqlx::query(
        "UPDATE leases SET expires_at = 0 WHERE resource = ? AND owner = ? AND epoch = ?",
    )
    .bind(&fence.resource)
    .bind(&fence.owner)
    .bind(epoch)
    .execute(pool)
    .await
    .map_err(db_err)?;
    if released.rows_affected() > 0 {
        info!(
            resource = %fence.resource,
            owner = %fence.owner,
            epoch = fence.epoch,
            "lease released"
        );
    }
    Ok(())
}

pub(super) async fn leases(pool: &SqlitePool) -> Result<Vec<Lease>, StoreError> {
    let rows =
        sqlx::query("SELECT resource, owner, epoch, expires_at FROM leases ORDER BY resource")
            .fetch_all(pool)
            .await
            .map_err(db_err)?;
    rows.iter().map(lease_row).collect()
}

pub(super) async fn heartbeat(
    pool: &SqlitePool,
    member: &str,
    now: Timestamp,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO members (member, last_seen) VALUES (?, ?)
         ON CONFLICT (member) DO UPDATE SET last_seen = excluded.last_seen",
    )
    .bind(member)
    .bind(now.0)
    .execute(pool)
    .await
    .map_err(db_err)?;
    Ok(())
}

pub(super) async fn live_members(
    pool: &SqlitePool,
    since: Timestamp,
) -> Result<Vec<String>, StoreError> {
    sqlx::query_scalar("SELECT member FROM members WHERE last_seen >= ? ORDER BY member")
        .bind(since.0)
        .fetch_all(pool)
        .await
        .map_err(db_err)
}
