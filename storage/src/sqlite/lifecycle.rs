//! Campaign lifecycle on SQLite: the shared SQL of [`crate::sql::lifecycle`], and its
//! bulk inserts in SQLite's form.

use crate::row_reader::map_json;

crate::sql::lifecycle::lifecycle!(
    sqlx::SqlitePool,
    sqlx::SqliteConnection,
    sqlx::sqlite::SqliteRow,
    crate::sql::sqlite
);

/// Stages `chunk` (at most the store's `batch_rows` recipients, distinct message
/// ids) of `campaign` with one multi-row INSERT.
async fn insert_staged(
    conn: &mut sqlx::SqliteConnection,
    campaign: &str,
    chunk: &[&maily_engine::StagedRecipient],
) -> Result<(), sqlx::Error> {
    // REPLACE deletes a row staged before under the same message id and inserts a new
    // one, with a new (last) seq: re-staged messages go to the end, pending. An upsert
    // could not move it, seq being the rowid.
    let sql = format!(
        "INSERT OR REPLACE INTO staged_recipients (message_id, campaign, email, vars, state)
         VALUES {}",
        vec!["(?, ?, ?, ?, 'pending')"; chunk.len()].join(", ")
    );
    let mut query = sqlx::query(&sql);
    for r in chunk {
        query = query
            .bind(r.message_id.to_string())
            .bind(campaign)
            .bind(r.email.as_str())
            .bind(map_json(&r.vars));
    }
    query.execute(conn).await?;
    Ok(())
}

/// Stores each of `sends` whose `(tenant, key)` is new, one INSERT each in the given
/// order, so of a key given twice the first is stored. Statements cost no round trip
/// here, and one row per statement needs no limit on parameters.
async fn insert_sends(
    conn: &mut sqlx::SqliteConnection,
    sends: &[maily_engine::ports::IdempotentSend],
) -> Result<(), sqlx::Error> {
    for s in sends {
        sqlx::query(
            "INSERT INTO idempotent_sends (tenant, idem_key, campaign, message_id, email,
                 fingerprint, accepted_at, enqueued)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (tenant, idem_key) DO NOTHING",
        )
        .bind(s.tenant.as_str())
        .bind(&s.key)
        .bind(s.campaign.to_string())
        .bind(s.message_id.to_string())
        .bind(s.email.as_str())
        .bind(s.fingerprint.as_slice())
        .bind(s.accepted_at.0)
        .bind(s.enqueued)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}
