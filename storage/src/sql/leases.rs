//! Partition ownership, one SQL text for both dialects: leases with fencing epochs,
//! and engine membership.
//!
//! A lease names its holder and an epoch raised each time it changes hands. Writers
//! carry the epoch as a `Fence` that `check_fence` verifies inside the write's own
//! transaction. On Postgres the check holds a share lock on the lease row until the
//! commit: a takeover must update that row, so it waits for the fenced write to
//! commit, and a write that starts after the takeover committed reads the new epoch
//! and is refused. On SQLite a write transaction holds the database's write lock from
//! its first read (`BEGIN IMMEDIATE`), which makes a takeover and a stale writer's
//! flush just as impossible to interleave.

/// The lease functions for one backend (see [`super::domains::domains`] for the
/// parameters; `$conn` is its connection type). Row locks (`FOR UPDATE`, `FOR SHARE`)
/// are Postgres'; [`super::sqlite`] drops them, SQLite's lock being the write
/// transaction's (`rows::BEGIN_WRITE`).
macro_rules! leases {
    ($pool:ty, $conn:ty, $row:ty, $sql:path) => {
        use super::rows::{BEGIN_WRITE, RowReader, db_err, raw_text, to_i64};
        use maily_engine::Timestamp;
        use maily_engine::ports::{Fence, Lease, StoreError};
        use std::time::Duration;
        use tracing::{debug, info};

        /// How often a contender re-reads a lease another contender created under it.
        const INSERT_RACE_RETRIES: usize = 3;

        fn lease_row(row: &$row) -> Result<Lease, StoreError> {
            let r = RowReader::new(row, "leases", raw_text(row, "resource"));
            Ok(Lease {
                resource: r.get("resource")?,
                owner: r.get("owner")?,
                epoch: r.u64("epoch")?,
                expires_at: Timestamp(r.get("expires_at")?),
            })
        }

        /// Refuses the caller's transaction with [`StoreError::Fenced`] unless `fence`
        /// is `None` or its owner still holds its resource at its epoch.
        ///
        /// Expiry is deliberately ignored: an expired lease nobody took over still
        /// guards its holder's writes, since no one else can have written under it.
        pub(crate) async fn check_fence(
            conn: &mut $conn,
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
            // FOR SHARE blocks a takeover's UPDATE until this transaction ends; if a
            // takeover is already in flight, Postgres waits for it and re-checks the
            // row's new version.
            let held = sqlx::query(&$sql(
                "SELECT 1 FROM leases WHERE resource = $1 AND owner = $2 AND epoch = $3
                 FOR SHARE",
            ))
            .bind(&fence.resource)
            .bind(&fence.owner)
            .bind(epoch)
            .fetch_optional(conn)
            .await
            .map_err(db_err)?;
            held.map(|_| ()).ok_or_else(fenced)
        }

        pub(crate) async fn acquire_lease(
            pool: &$pool,
            resource: &str,
            owner: &str,
            now: Timestamp,
            ttl: Duration,
        ) -> Result<Option<Lease>, StoreError> {
            let expires_at = now.plus(ttl);
            let mut tx = pool.begin_with(BEGIN_WRITE).await.map_err(db_err)?;
            // The lock taken here makes the read and the write below one step: two
            // contenders for an expired lease queue on it, and the second reads the
            // first one's takeover.
            let mut current = None;
            for _ in 0..INSERT_RACE_RETRIES {
                let row = sqlx::query(&$sql(
                    "SELECT resource, owner, epoch, expires_at FROM leases WHERE resource = $1
                     FOR UPDATE",
                ))
                .bind(resource)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_err)?;
                if let Some(row) = row {
                    current = Some(lease_row(&row)?);
                    break;
                }
                // Nobody ever held it. A contender inserting at the same time makes
                // this insert do nothing; the next read then locks the row it created.
                let inserted = sqlx::query(&$sql(
                    "INSERT INTO leases (resource, owner, epoch, expires_at) VALUES ($1, $2, 1, $3)
                     ON CONFLICT (resource) DO NOTHING",
                ))
                .bind(resource)
                .bind(owner)
                .bind(expires_at.0)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?
                .rows_affected();
                if inserted == 1 {
                    tx.commit().await.map_err(db_err)?;
                    info!(resource, owner, epoch = 1, "lease acquired");
                    return Ok(Some(Lease {
                        resource: resource.to_string(),
                        owner: owner.to_string(),
                        epoch: 1,
                        expires_at,
                    }));
                }
            }
            let Some(held) = current else {
                return Err(StoreError::Unavailable(format!(
                    "lease {resource} kept appearing and vanishing while being acquired"
                )));
            };
            let epoch = if held.owner == owner {
                // A renewal, even of an expired lease: nobody took it, so the epoch stands.
                held.epoch
            } else if held.expires_at <= now {
                // Stored epochs fit 63 bits, so this cannot overflow; `to_i64` below
                // refuses the one value past them.
                held.epoch + 1
            } else {
                tx.rollback().await.map_err(db_err)?;
                return Ok(None);
            };
            let key = to_i64(epoch, format_args!("lease {resource}"), "epoch")?;
            sqlx::query(&$sql(
                "UPDATE leases SET owner = $2, epoch = $3, expires_at = $4 WHERE resource = $1",
            ))
            .bind(resource)
            .bind(owner)
            .bind(key)
            .bind(expires_at.0)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
            tx.commit().await.map_err(db_err)?;
            if held.owner == owner {
                debug!(resource, owner, epoch, "lease renewed");
            } else {
                info!(resource, owner, epoch, previous = %held.owner, "lease taken over");
            }
            Ok(Some(Lease {
                resource: resource.to_string(),
                owner: owner.to_string(),
                epoch,
                expires_at,
            }))
        }

        pub(crate) async fn release_lease(pool: &$pool, fence: &Fence) -> Result<(), StoreError> {
            let Ok(epoch) = i64::try_from(fence.epoch) else {
                return Ok(());
            };
            // Owner and epoch stay, so whoever takes the lease next raises the epoch and
            // this holder's fence stops working from then on.
            let released = sqlx::query(&$sql(
                "UPDATE leases SET expires_at = 0 WHERE resource = $1 AND owner = $2 AND epoch = $3",
            ))
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

        pub(crate) async fn leases(pool: &$pool) -> Result<Vec<Lease>, StoreError> {
            let rows = sqlx::query(&$sql(
                "SELECT resource, owner, epoch, expires_at FROM leases ORDER BY resource",
            ))
            .fetch_all(pool)
            .await
            .map_err(db_err)?;
            rows.iter().map(lease_row).collect()
        }

        pub(crate) async fn heartbeat(
            pool: &$pool,
            member: &str,
            now: Timestamp,
        ) -> Result<(), StoreError> {
            sqlx::query(&$sql(
                "INSERT INTO members (member, last_seen) VALUES ($1, $2)
                 ON CONFLICT (member) DO UPDATE SET last_seen = EXCLUDED.last_seen",
            ))
            .bind(member)
            .bind(now.0)
            .execute(pool)
            .await
            .map_err(db_err)?;
            Ok(())
        }

        pub(crate) async fn live_members(
            pool: &$pool,
            since: Timestamp,
        ) -> Result<Vec<String>, StoreError> {
            sqlx::query_scalar(&$sql(
                "SELECT member FROM members WHERE last_seen >= $1 ORDER BY member",
            ))
            .bind(since.0)
            .fetch_all(pool)
            .await
            .map_err(db_err)
        }
    };
}

pub(crate) use leases;
