//! Campaign lifecycle on Postgres: the shared SQL of [`crate::sql::lifecycle`], and
//! its bulk inserts in Postgres' form.
//!
//! Each bulk insert is one INSERT from UNNEST: one array parameter per column whatever
//! the number of rows, so the statement is prepared once and thousands of rows go in
//! one round trip.

use crate::row_reader::map_json;

crate::sql::lifecycle::lifecycle!(
    sqlx::PgPool,
    sqlx::PgConnection,
    sqlx::postgres::PgRow,
    crate::sql::postgres
);

/// Stages `chunk` (recipients with distinct message ids) of `campaign`.
async fn insert_staged(
    conn: &mut sqlx::PgConnection,
    campaign: &str,
    chunk: &[&maily_engine::StagedRecipient],
) -> Result<(), sqlx::Error> {
    let ids: Vec<String> = chunk.iter().map(|r| r.message_id.to_string()).collect();
    let emails: Vec<&str> = chunk.iter().map(|r| r.email.as_str()).collect();
    let vars: Vec<String> = chunk.iter().map(|r| map_json(&r.vars)).collect();
    // Rows are inserted in ORDER BY order, so each takes its seq in the given order; a
    // re-staged id takes the seq its proposed row drew (EXCLUDED.seq), which moves it
    // to the end.
    sqlx::query(
        "INSERT INTO staged_recipients (message_id, campaign, email, vars, state)
         SELECT m, $1::uuid, e, v, 'pending'
         FROM UNNEST($2::uuid[], $3::text[], $4::text[]) WITH ORDINALITY AS t (m, e, v, n)
         ORDER BY n
         ON CONFLICT (message_id) DO UPDATE SET campaign = EXCLUDED.campaign,
             email = EXCLUDED.email, vars = EXCLUDED.vars, state = 'pending',
             seq = EXCLUDED.seq",
    )
    .bind(campaign)
    .bind(ids)
    .bind(emails)
    .bind(vars)
    .execute(conn)
    .await?;
    Ok(())
}

/// Stores each of `sends` whose `(tenant, key)` is new. Rows go in in the given order,
/// so of a key given twice the first one is stored; a concurrent request inserting
/// the same key makes this one wait for its commit, then do nothing.
async fn insert_sends(
    conn: &mut sqlx::PgConnection,
    sends: &[maily_engine::ports::IdempotentSend],
) -> Result<(), sqlx::Error> {
    let tenants: Vec<&str> = sends.iter().map(|s| s.tenant.as_str()).collect();
    let keys: Vec<&str> = sends.iter().map(|s| s.key.as_str()).collect();
    let campaigns: Vec<String> = sends.iter().map(|s| s.campaign.to_string()).collect();
    let ids: Vec<String> = sends.iter().map(|s| s.message_id.to_string()).collect();
    let emails: Vec<&str> = sends.iter().map(|s| s.email.as_str()).collect();
    let fingerprints: Vec<Vec<u8>> = sends.iter().map(|s| s.fingerprint.to_vec()).collect();
    let accepted: Vec<i64> = sends.iter().map(|s| s.accepted_at.0).collect();
    let enqueued: Vec<bool> = sends.iter().map(|s| s.enqueued).collect();
    sqlx::query(
        "INSERT INTO idempotent_sends (tenant, idem_key, campaign, message_id, email,
             fingerprint, accepted_at, enqueued)
         SELECT t, k, c, m, e, f, a, q
         FROM UNNEST($1::text[], $2::text[], $3::uuid[], $4::uuid[], $5::text[], $6::bytea[],
                     $7::bigint[], $8::boolean[]) WITH ORDINALITY AS u (t, k, c, m, e, f, a, q, n)
         ORDER BY n
         ON CONFLICT (tenant, idem_key) DO NOTHING",
    )
    .bind(tenants)
    .bind(keys)
    .bind(campaigns)
    .bind(ids)
    .bind(emails)
    .bind(fingerprints)
    .bind(accepted)
    .bind(enqueued)
    .execute(conn)
    .await?;
    Ok(())
}
