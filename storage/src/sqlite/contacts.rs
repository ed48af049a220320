//! Contacts, their lists and list memberships, and segments.
//!
//! Memberships reference both their list and their contact with the tenant in the
//! key, so deleting either deletes its memberships (ON DELETE CASCADE) and a list can
//! never hold another tenant's contact.

use super::rows::{RowReader, db_err, is_kind, placeholders, raw_text};
use crate::row_reader::map_json;
use maily_engine::ports::StoreError;
use maily_engine::{
    Contact, ContactList, EmailAddress, ListId, Segment, SegmentId, TenantId, Timestamp,
};
use sqlx::error::ErrorKind;
use sqlx::sqlite::SqliteRow;
use sqlx::{SqliteConnection, SqlitePool};
use std::collections::{BTreeSet, HashSet};

/// Contacts per multi-row upsert: 5 parameters each, far below SQLite's limit of
/// 32,766 parameters per statement.
const CONTACTS_PER_STATEMENT: usize = 1_000;

/// Addresses per `IN (...)` list or multi-row insert of memberships.
const EMAILS_PER_STATEMENT: usize = 1_000;

/// Refuses the first item whose tenant does not exist, naming it with `row`.
async fn check_tenants<'a, T: 'a>(
    conn: &mut SqliteConnection,
    items: impl IntoIterator<Item = &'a T>,
    tenant_of: impl Fn(&T) -> &TenantId,
    row: impl Fn(&T) -> String,
) -> Result<(), StoreError> {
    let mut known: HashSet<&str> = HashSet::new();
    for item in items {
        let tenant = tenant_of(item);
        if known.contains(tenant.as_str()) {
            continue;
        }
        let exists = sqlx::query("SELECT 1 FROM tenants WHERE id = ?")
            .bind(tenant.as_str())
            .fetch_optional(&mut *conn)
            .await
            .map_err(db_err)?
            .is_some();
        if !exists {
            return Err(StoreError::InvalidRow {
                row: row(item),
                reason: format!("tenant {tenant} does not exist"),
            });
        }
        known.insert(tenant.as_str());
    }
    Ok(())
}

pub(super) async fn upsert_contacts(
    pool: &SqlitePool,
    contacts: &[Contact],
) -> Result<(), StoreError> {
    if contacts.is_empty() {
        return Ok(());
    }
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.map_err(db_err)?;
    check_tenants(
        &mut tx,
        contacts,
        |c| &c.tenant,
        |c| format!("contact {}/{}", c.tenant, c.email),
    )
    .await?;
    for chunk in contacts.chunks(CONTACTS_PER_STATEMENT) {
        // Rows apply in order, so a contact given twice ends as the later one with
        // the first one's created_at, as if upserted one after the other.
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
        query.execute(&mut *tx).await.map_err(db_err)?;
    }
    tx.commit().await.map_err(db_err)
}

const CONTACT_COLUMNS: &str = "tenant, email, attributes, created_at, updated_at";

fn contact_row(row: &SqliteRow) -> Result<Contact, StoreError> {
    let key = format!("{}/{}", raw_text(row, "tenant"), raw_text(row, "email"));
    let r = RowReader::new(row, "contacts", key);
    Ok(Contact {
        tenant: r.tenant("tenant")?,
        email: r.parse("email")?,
        attributes: r.string_map("attributes")?,
        created_at: Timestamp(r.get("created_at")?),
        updated_at: Timestamp(r.get("updated_at")?),
    })
}

pub(super) async fn contact(
    pool: &SqlitePool,
    tenant: &TenantId,
    email: &EmailAddress,
) -> Result<Option<Contact>, StoreError> {
    let row = sqlx::query(&format!(
        "SELECT {CONTACT_COLUMNS} FROM contacts WHERE tenant = ? AND email = ?"
    ))
    .bind(tenant.as_str())
    .bind(email.as_str())
    .fetch_optional(pool)
    .await
    .map_err(db_err)?;
    row.as_ref().map(contact_row).transpose()
}

pub(super) async fn delete_contact(
    pool: &SqlitePool,
    tenant: &TenantId,
    email: &EmailAddress,
) -> Result<bool, StoreError> {
    let done = sqlx::query("DELETE FROM contacts WHERE tenant = ? AND email = ?")
        .bind(tenant.as_str())
        .bind(email.as_str())
        .execute(pool)
        .await
        .map_err(db_err)?;
    Ok(done.rows_affected() > 0)
}

pub(super) async fn contacts(
    pool: &SqlitePool,
    tenant: &TenantId,
    list: Option<ListId>,
    after: Option<&EmailAddress>,
    limit: usize,
) -> Result<Vec<Contact>, StoreError> {
    // Every address sorts after the empty string.
    let after = after.map_or("", EmailAddress::as_str);
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = match list {
        None => {
            sqlx::query(&format!(
                "SELECT {CONTACT_COLUMNS} FROM contacts
                 WHERE tenant = ? AND email > ? ORDER BY email LIMIT ?"
            ))
            .bind(tenant.as_str())
            .bind(after)
            .bind(limit)
            .fetch_all(pool)
            .await
        }
        Some(list) => {
            sqlx::query(
                "SELECT c.tenant, c.email, c.attributes, c.created_at, c.updated_at
                 FROM list_members m
                 JOIN contacts c ON c.tenant = m.tenant AND c.email = m.email
                 WHERE m.tenant = ? AND m.list_id = ? AND m.email > ?
                 ORDER BY m.email LIMIT ?",
            )
            .bind(tenant.as_str())
            .bind(list.to_string())
            .bind(after)
            .bind(limit)
            .fetch_all(pool)
            .await
        }
    }
    .map_err(db_err)?;
    rows.iter().map(contact_row).collect()
}

pub(super) async fn create_list(pool: &SqlitePool, list: &ContactList) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO lists (id, tenant, name, created_at) VALUES (?, ?, ?, ?)")
        .bind(list.id.to_string())
        .bind(list.tenant.as_str())
        .bind(&list.name)
        .bind(list.created_at.0)
        .execute(pool)
        .await
        .map_err(|e| {
            if is_kind(&e, ErrorKind::UniqueViolation) {
                StoreError::Conflict(format!("list {} already exists", list.id))
            } else if is_kind(&e, ErrorKind::ForeignKeyViolation) {
                StoreError::InvalidRow {
                    row: format!("list {}", list.id),
                    reason: format!("tenant {} does not exist", list.tenant),
                }
            } else {
                db_err(e)
            }
        })?;
    Ok(())
}

const LIST_COLUMNS: &str = "id, tenant, name, created_at";

fn list_row(row: &SqliteRow) -> Result<ContactList, StoreError> {
    let r = RowReader::new(row, "lists", raw_text(row, "id"));
    Ok(ContactList {
        id: r.parse("id")?,
        tenant: r.tenant("tenant")?,
        name: r.get("name")?,
        created_at: Timestamp(r.get("created_at")?),
    })
}

pub(super) async fn lists(
    pool: &SqlitePool,
    tenant: &TenantId,
) -> Result<Vec<ContactList>, StoreError> {
    let rows = sqlx::query(&format!(
        "SELECT {LIST_COLUMNS} FROM lists WHERE tenant = ? ORDER BY created_at, id"
    ))
    .bind(tenant.as_str())
    .fetch_all(pool)
    .await
    .map_err(db_err)?;
    rows.iter().map(list_row).collect()
}

async fn list_on(
    conn: &mut SqliteConnection,
    tenant: &TenantId,
    id: ListId,
) -> Result<Option<ContactList>, StoreError> {
    // The tenant is part of the key: another tenant's list matches no row.
    let row = sqlx::query(&format!(
        "SELECT {LIST_COLUMNS} FROM lists WHERE id = ? AND tenant = ?"
    ))
    .bind(id.to_string())
    .bind(tenant.as_str())
    .fetch_optional(conn)
    .await
    .map_err(db_err)?;
    row.as_ref().map(list_row).transpose()
}

pub(super) async fn list(
    pool: &SqlitePool,
    tenant: &TenantId,
    id: ListId,
) -> Result<Option<ContactList>, StoreError> {
    let mut conn = pool.acquire().await.map_err(db_err)?;
    list_on(&mut conn, tenant, id).await
}

pub(super) async fn delete_list(
    pool: &SqlitePool,
    tenant: &TenantId,
    id: ListId,
) -> Result<bool, StoreError> {
    let done = sqlx::query("DELETE FROM lists WHERE id = ? AND tenant = ?")
        .bind(id.to_string())
        .bind(tenant.as_str())
        .execute(pool)
        .await
        .map_err(db_err)?;
    Ok(done.rows_affected() > 0)
}

pub(super) async fn add_list_members(
    pool: &SqlitePool,
    tenant: &TenantId,
    list: ListId,
    emails: &[EmailAddress],
) -> Result<u64, StoreError> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.map_err(db_err)?;
    if list_on(&mut tx, tenant, list).await?.is_none() {
        return Err(StoreError::InvalidRow {
            row: format!("list {list}"),
            reason: format!("tenant {tenant} has no such list"),
        });
    }
    let list_text = list.to_string();
    let unique: Vec<&str> = emails
        .iter()
        .map(EmailAddress::as_str)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut known: HashSet<String> = HashSet::with_capacity(unique.len());
    for chunk in unique.chunks(EMAILS_PER_STATEMENT) {
        let sql = format!(
            "SELECT email FROM contacts WHERE tenant = ? AND email IN ({})",
            placeholders(chunk.len())
        );
        let mut query = sqlx::query_scalar(&sql).bind(tenant.as_str());
        for email in chunk {
            query = query.bind(*email);
        }
        known.extend(query.fetch_all(&mut *tx).await.map_err(db_err)?);
    }
    if let Some(missing) = emails.iter().find(|e| !known.contains(e.as_str())) {
        return Err(StoreError::InvalidRow {
            row: format!("list member {missing}"),
            reason: format!("{missing} is not a contact of tenant {tenant}"),
        });
    }
    let mut added = 0;
    for chunk in unique.chunks(EMAILS_PER_STATEMENT) {
        let sql = format!(
            "INSERT INTO list_members (tenant, list_id, email) VALUES {}
             ON CONFLICT (tenant, list_id, email) DO NOTHING",
            vec!["(?, ?, ?)"; chunk.len()].join(", ")
        );
        let mut query = sqlx::query(&sql);
        for email in chunk {
            query = query.bind(tenant.as_str()).bind(&list_text).bind(*email);
        }
        added += query
            .execute(&mut *tx)
            .await
            .map_err(db_err)?
            .rows_affected();
    }
    tx.commit().await.map_err(db_err)?;
    Ok(added)
}

pub(super) async fn remove_list_members(
    pool: &SqlitePool,
    tenant: &TenantId,
    list: ListId,
    emails: &[EmailAddress],
) -> Result<u64, StoreError> {
    if emails.is_empty() {
        return Ok(0);
    }
    let list_text = list.to_string();
    let mut removed = 0;
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.map_err(db_err)?;
    for chunk in emails.chunks(EMAILS_PER_STATEMENT) {
        let sql = format!(
            "DELETE FROM list_members WHERE tenant = ? AND list_id = ? AND email IN ({})",
            placeholders(chunk.len())
        );
        let mut query = sqlx::query(&sql).bind(tenant.as_str()).bind(&list_text);
        for email in chunk {
            query = query.bind(email.as_str());
        }
        removed += query
            .execute(&mut *tx)
            .await
            .map_err(db_err)?
            .rows_affected();
    }
    tx.commit().await.map_err(db_err)?;
    Ok(removed)
}

pub(super) async fn create_segment(pool: &SqlitePool, s: &Segment) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO segments (id, tenant, name, list_id, filter, created_at)
         VALUES (?, ?, ?, ?, ?, ?)",
    )
    .bind(s.id.to_string())
    .bind(s.tenant.as_str())
    .bind(&s.name)
    .bind(s.list.map(|l| l.to_string()))
    .bind(&s.filter)
    .bind(s.created_at.0)
    .execute(pool)
    .await
    .map_err(|e| {
        if is_kind(&e, ErrorKind::UniqueViolation) {
            StoreError::Conflict(format!("segment {} already exists", s.id))
        } else if is_kind(&e, ErrorKind::ForeignKeyViolation) {
            StoreError::InvalidRow {
                row: format!("segment {}", s.id),
                reason: format!("tenant {} does not exist", s.tenant),
            }
        } else {
            db_err(e)
        }
    })?;
    Ok(())
}

const SEGMENT_COLUMNS: &str = "id, tenant, name, list_id, filter, created_at";

fn segment_row(row: &SqliteRow) -> Result<Segment, StoreError> {
    let r = RowReader::new(row, "segments", raw_text(row, "id"));
    let list = r
        .get::<Option<String>>("list_id")?
        .map(|text| ListId::parse(&text).map_err(|e| r.corrupt("list_id", e)))
        .transpose()?;
    Ok(Segment {
        id: r.parse("id")?,
        tenant: r.tenant("tenant")?,
        name: r.get("name")?,
        list,
        filter: r.get("filter")?,
        created_at: Timestamp(r.get("created_at")?),
    })
}

pub(super) async fn segments(
    pool: &SqlitePool,
    tenant: &TenantId,
) -> Result<Vec<Segment>, StoreError> {
    let rows = sqlx::query(&format!(
        "SELECT {SEGMENT_COLUMNS} FROM segments WHERE tenant = ? ORDER BY created_at, id"
    ))
    .bind(tenant.as_str())
    .fetch_all(pool)
    .await
    .map_err(db_err)?;
    rows.iter().map(segment_row).collect()
}

pub(super) async fn segment(
    pool: &SqlitePool,
    tenant: &TenantId,
    id: SegmentId,
) -> Result<Option<Segment>, StoreError> {
    let row = sqlx::query(&format!(
        "SELECT {SEGMENT_COLUMNS} FROM segments WHERE id = ? AND tenant = ?"
    ))
    .bind(id.to_string())
    .bind(tenant.as_str())
    .fetch_optional(pool)
    .await
    .map_err(db_err)?;
    row.as_ref().map(segment_row).transpose()
}

pub(super) async fn delete_segment(
    pool: &SqlitePool,
    tenant: &TenantId,
    id: SegmentId,
) -> Result<bool, StoreError> {
    let done = sqlx::query("DELETE FROM segments WHERE id = ? AND tenant = ?")
        .bind(id.to_string())
        .bind(tenant.as_str())
        .execute(pool)
        .await
        .map_err(db_err)?;
    Ok(done.rows_affected() > 0)
}
