//! Contacts, lists and segments on Postgres: the shared SQL of
//! [`crate::sql::contacts`], and the bulk upsert in Postgres' form.

use crate::row_reader::map_json;

crate::sql::contacts::contacts!(
    sqlx::PgPool,
    sqlx::PgConnection,
    sqlx::postgres::PgRow,
    crate::sql::postgres
);

/// Upserts `chunk` (contacts with distinct keys) with one INSERT from UNNEST: five
/// array parameters whatever the chunk's length, so the statement is prepared once and
/// thousands of rows go in one round trip.
async fn insert_contacts(
    conn: &mut sqlx::PgConnection,
    chunk: &[maily_engine::Contact],
) -> Result<(), sqlx::Error> {
    let tenants: Vec<&str> = chunk.iter().map(|c| c.tenant.as_str()).collect();
    let emails: Vec<&str> = chunk.iter().map(|c| c.email.as_str()).collect();
    let attributes: Vec<String> = chunk.iter().map(|c| map_json(&c.attributes)).collect();
    let created: Vec<i64> = chunk.iter().map(|c| c.created_at.0).collect();
    let updated: Vec<i64> = chunk.iter().map(|c| c.updated_at.0).collect();
    sqlx::query(
        "INSERT INTO contacts (tenant, email, attributes, created_at, updated_at)
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::jsonb[], $4::bigint[],
                              $5::bigint[])
         ON CONFLICT (tenant, email) DO UPDATE
             SET attributes = EXCLUDED.attributes, updated_at = EXCLUDED.updated_at",
    )
    .bind(tenants)
    .bind(emails)
    .bind(attributes)
    .bind(created)
    .bind(updated)
    .execute(conn)
    .await?;
    Ok(())
}
