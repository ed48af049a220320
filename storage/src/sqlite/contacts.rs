//! Contacts, lists and segments on SQLite: the shared SQL of [`crate::sql::contacts`],
//! and the bulk upsert in SQLite's form.

use crate::row_reader::map_json;

crate::sql::contacts::contacts!(
    sqlx::SqlitePool,
    sqlx::SqliteConnection,
    sqlx::sqlite::SqliteRow,
    crate::sql::sqlite
);

/// Upserts `chunk` (at most the store's `batch_rows` contacts, distinct keys) with
/// one multi-row INSERT: SQLite has no arrays to bind a column at once.
async fn insert_contacts(
    conn: &mut sqlx::SqliteConnection,
    chunk: &[maily_engine::Contact],
) -> Result<(), sqlx::Error> {
    let sql = format!(
        "INSERT INTO contacts (tenant, email, attributes, created_at, updated_at)
         VALUES {}
         ON CONFLICT (tenant, email) DO UPDATE
             SET attributes = excluded.attributes, updated_at = excluded.updated_at",
        vec!["(?, ?, ?, ?, ?)"; chunk.len()].join(", ")
    );
    let mut query = sqlx::query(&sql);
    for c in chunk {
        query = query
            .bind(c.tenant.as_str())
            .bind(c.email.as_str())
            .bind(map_json(&c.attributes))
            .bind(c.created_at.0)
            .bind(c.updated_at.0);
    }
    query.execute(conn).await?;
    Ok(())
}
