//! Deferred sends, one SQL text for both dialects: the per-destination queue a sender
//! moves messages to when their destination's limits would keep them waiting in its
//! window.
//!
//! A partition has one sender at a time (its lease), so taking rows needs no row
//! locks: `take_due` marks the rows it returns as taken, which keeps them out of the
//! next poll while they are in the window, and a new owner releases every taken row
//! of its partition when it starts (the previous owner's window died with it).

/// The deferred-send functions for one backend (see [`super::domains::domains`] for
/// the parameters; `$conn` is its connection type).
macro_rules! deferred {
    ($pool:ty, $conn:ty, $row:ty, $sql:path) => {
        use super::leases::check_fence;
        use super::rows::{
            ANY_OF_CHUNK, BEGIN_WRITE, RowReader, any_of, bind_all, db_err, raw_text,
        };
        use maily_engine::ports::{DeferredSend, Fence, StoreError};
        use maily_engine::{MessageId, Timestamp};
        use sqlx::Row as _;

        fn deferred_row(row: &$row) -> Result<DeferredSend, StoreError> {
            let r = RowReader::new(row, "deferred_sends", raw_text(row, "message_id"));
            Ok(DeferredSend {
                message_id: r.parse("message_id")?,
                partition: r.u32("part")?,
                destination: r.get("destination")?,
                due: Timestamp(r.get("due_at")?),
                key: r.get("record_key")?,
                payload: r.get("payload")?,
            })
        }

        pub(crate) async fn defer_sends(
            pool: &$pool,
            sends: &[DeferredSend],
            fence: Option<&Fence>,
        ) -> Result<(), StoreError> {
            if sends.is_empty() {
                return Ok(());
            }
            let mut tx = pool.begin_with(BEGIN_WRITE).await.map_err(db_err)?;
            check_fence(&mut tx, fence).await?;
            // One prepared statement per row: a flush defers a destination's overflow,
            // and the statement is bound, not parsed, after the first row.
            let upsert = $sql(
                "INSERT INTO deferred_sends
                     (message_id, part, destination, due_at, taken, record_key, payload)
                 VALUES ($1::uuid, $2, $3, $4, false, $5, $6)
                 ON CONFLICT (message_id) DO UPDATE SET
                     part = EXCLUDED.part, destination = EXCLUDED.destination,
                     due_at = EXCLUDED.due_at, taken = false,
                     record_key = EXCLUDED.record_key, payload = EXCLUDED.payload",
            );
            for s in sends {
                sqlx::query(&upsert)
                    .bind(s.message_id.to_string())
                    .bind(i64::from(s.partition))
                    .bind(&s.destination)
                    .bind(s.due.0)
                    .bind(&s.key)
                    .bind(&s.payload)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err)?;
            }
            tx.commit().await.map_err(db_err)
        }

        pub(crate) async fn take_due_sends(
            pool: &$pool,
            partition: u32,
            now: Timestamp,
            limit: usize,
        ) -> Result<Vec<DeferredSend>, StoreError> {
            if limit == 0 {
                return Ok(Vec::new());
            }
            let rows = sqlx::query(&$sql(
                "UPDATE deferred_sends SET taken = true WHERE message_id IN
                     (SELECT message_id FROM deferred_sends
                      WHERE part = $1 AND NOT taken AND due_at <= $2
                      ORDER BY due_at LIMIT $3)
                 RETURNING message_id::text AS message_id, part, destination, due_at,
                           record_key, payload",
            ))
            .bind(i64::from(partition))
            .bind(now.0)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(pool)
            .await
            .map_err(db_err)?;
            let mut sends = rows
                .iter()
                .map(deferred_row)
                .collect::<Result<Vec<_>, _>>()?;
            // RETURNING keeps no order.
            sends.sort_by_key(|s| s.due);
            Ok(sends)
        }

        pub(crate) async fn next_deferred_due(
            pool: &$pool,
            partition: u32,
        ) -> Result<Option<Timestamp>, StoreError> {
            let row = sqlx::query(&$sql(
                "SELECT min(due_at) AS due FROM deferred_sends WHERE part = $1 AND NOT taken",
            ))
            .bind(i64::from(partition))
            .fetch_one(pool)
            .await
            .map_err(db_err)?;
            let due: Option<i64> = row.try_get("due").map_err(db_err)?;
            Ok(due.map(Timestamp))
        }

        pub(crate) async fn release_deferred(
            pool: &$pool,
            partition: u32,
        ) -> Result<u64, StoreError> {
            let mut tx = pool.begin_with(BEGIN_WRITE).await.map_err(db_err)?;
            sqlx::query(&$sql(
                "UPDATE deferred_sends SET taken = false WHERE part = $1 AND taken",
            ))
            .bind(i64::from(partition))
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
            let row = sqlx::query(&$sql(
                "SELECT count(*) AS n FROM deferred_sends WHERE part = $1",
            ))
            .bind(i64::from(partition))
            .fetch_one(&mut *tx)
            .await
            .map_err(db_err)?;
            tx.commit().await.map_err(db_err)?;
            RowReader::new(
                &row,
                "deferred_sends",
                format_args!("of partition {partition}"),
            )
            .u64("n")
        }

        pub(crate) async fn forget_deferred(
            pool: &$pool,
            ids: &[MessageId],
        ) -> Result<(), StoreError> {
            if ids.is_empty() {
                return Ok(());
            }
            let mut tx = pool.begin_with(BEGIN_WRITE).await.map_err(db_err)?;
            for chunk in ids.chunks(ANY_OF_CHUNK) {
                let keys: Vec<String> = chunk.iter().map(MessageId::to_string).collect();
                let sql = $sql(&format!(
                    "DELETE FROM deferred_sends WHERE {}",
                    any_of("message_id", 1, keys.len(), "uuid")
                ))
                .into_owned();
                bind_all(sqlx::query(&sql), &keys)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err)?;
            }
            tx.commit().await.map_err(db_err)
        }
    };
}

pub(crate) use deferred;
