//! Contacts, their lists and list memberships, and segments.
//!
//! Memberships reference both their list and their contact with the tenant in the
//! key, so deleting either deletes its memberships (ON DELETE CASCADE) and a list can
//! never hold another tenant's contact.

use super::rows::{RowReader, db_err, is_kind, raw_text, row_err};
use crate::row_reader::map_json;
use maily_engine::ports::StoreError;
use maily_engine::{
    Contact, ContactList, EmailAddress, ListId, Segment, SegmentId, TenantId, Timestamp,
};
use sqlx::error::ErrorKind;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, PgPool};
use std::collections::{BTreeSet, HashMap, HashSet};

/// Addresses per `= ANY($n)` array or UNNEST insert of memberships.
const EMAILS_PER_STATEMENT: usize = 10_000;

/// `contacts` as if upserted one after the other: one row per `(tenant, email)`,
/// with the first row's `created_at` and the last row's attributes and `updated_at`.
/// One statement cannot upsert a key twice.
fn merged(contacts: &[Contact]) -> Vec<Contact> {
    let mut at: HashMap<(&str, &str), usize> = HashMap::with_capacity(contacts.len());
    let mut out: Vec<Contact> = Vec::with_capacity(contacts.len());
    for c in contacts {
        match at.get(&(c.tenant.as_str(), c.email.as_str())) {
            Some(&i) => {
                out[i].attributes = c.attributes.clone();
                out[i].updated_at = c.updated_at;
            }
            None => {
                at.insert((c.tenant.as_str(), c.email.as_str()), out.len());
                out.push(c.clone());
            }
        }
    }
    out
}

pub(super) async fn upsert_contacts(
    pool: &PgPool,
    contacts: &[Contact],
    chunk_rows: usize,
) -> Result<(), StoreError> {
    if contacts.is_empty() {
        return Ok(());
    }
    let mut tx = pool.begin().await.map_err(db_err)?;
    // Name the first contact of a missing tenant rather than a whole chunk.
    let tenants: Vec<&str> = contacts
        .iter()
        .map(|c| c.tenant.as_str())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let known: HashSet<String> =
        sqlx::query_scalar::<_, String>("SELECT id FROM tenants WHERE id = ANY($1)")
            .bind(&tenants)
            .fetch_all(&mut *tx)
            .await
            .map_err(db_err)?
            .into_iter()
            .collect();
    if let Some(c) = contacts.iter().find(|c| !known.contains(c.tenant.as_str())) {
        return Err(StoreError::InvalidRow {
            row: format!("contact {}/{}", c.tenant, c.email),
            reason: format!("tenant {} does not exist", c.tenant),
        });
    }
    for chunk in merged(contacts).chunks(chunk_rows.max(1)) {
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
        .execute(&mut *tx)
        .await
        // e.g. a NUL character in an attribute, which JSONB cannot hold.
        .map_err(|e| {
            row_err(e, || {
                format!(
                    "contacts {}/{} to {}/{}",
                    chunk[0].tenant,
                    chunk[0].email,
                    chunk[chunk.len() - 1].tenant,
                    chunk[chunk.len() - 1].email
                )
            })
        })?;
    }
    tx.commit().await.map_err(db_err)
}

const CONTACT_COLUMNS: &str =
    "c.tenant, c.email, c.attributes::text AS attributes, c.created_at, c.updated_at";

fn contact_row(row: &PgRow) -> Result<Contact, StoreError> {
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
    pool: &PgPool,
    tenant: &TenantId,
    email: &EmailAddress,
) -> Result<Option<Contact>, StoreError> {
    let row = sqlx::query(&format!(
        "SELECT {CONTACT_COLUMNS} FROM contacts c WHERE c.tenant = $1 AND c.email = $2"
    ))
    .bind(tenant.as_str())
    .bind(email.as_str())
    .fetch_optional(pool)
    .await
    .map_err(db_err)?;
    row.as_ref().map(contact_row).transpose()
}

pub(super) async fn delete_contact(
    pool: &PgPool,
    tenant: &TenantId,
    email: &EmailAddress,
) -> Result<bool, StoreError> {
    let done = sqlx::query("DELETE FROM contacts WHERE tenant = $1 AND email = $2")
        .bind(tenant.as_str())
        .bind(email.as_str())
        .execute(pool)
        .await
        .map_err(db_err)?;
    Ok(done.rows_affected() > 0)
}

pub(super) async fn contacts(
    pool: &PgPool,
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
                "SELECT {CONTACT_COLUMNS} FROM contacts c
                 WHERE c.tenant = $1 AND c.email > $2 ORDER BY c.email LIMIT $3"
            ))
            .bind(tenant.as_str())
            .bind(after)
            .bind(limit)
            .fetch_all(pool)
            .await
        }
        Some(list) => {
            sqlx::query(&format!(
                "SELECT {CONTACT_COLUMNS} FROM list_members m
                 JOIN contacts c ON c.tenant = m.tenant AND c.email = m.email
                 WHERE m.tenant = $1 AND m.list_id = $2::uuid AND m.email > $3
                 ORDER BY m.email LIMIT $4"
            ))
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

pub(super) async fn create_list(pool: &PgPool, list: &ContactList) -> Result<(), StoreError> {
    let row = || format!("list {}", list.id);
    sqlx::query("INSERT INTO lists (id, tenant, name, created_at) VALUES ($1::uuid, $2, $3, $4)")
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
                    row: row(),
                    reason: format!("tenant {} does not exist", list.tenant),
                }
            } else {
                row_err(e, row)
            }
        })?;
    Ok(())
}

const LIST_COLUMNS: &str = "id::text AS id, tenant, name, created_at";

fn list_row(row: &PgRow) -> Result<ContactList, StoreError> {
    let r = RowReader::new(row, "lists", raw_text(row, "id"));
    Ok(ContactList {
        id: r.parse("id")?,
        tenant: r.tenant("tenant")?,
        name: r.get("name")?,
        created_at: Timestamp(r.get("created_at")?),
    })
}

pub(super) async fn lists(
    pool: &PgPool,
    tenant: &TenantId,
) -> Result<Vec<ContactList>, StoreError> {
    let rows = sqlx::query(&format!(
        "SELECT {LIST_COLUMNS} FROM lists WHERE tenant = $1 ORDER BY created_at, lists.id"
    ))
    .bind(tenant.as_str())
    .fetch_all(pool)
    .await
    .map_err(db_err)?;
    rows.iter().map(list_row).collect()
}

async fn list_on(
    conn: &mut PgConnection,
    tenant: &TenantId,
    id: ListId,
) -> Result<Option<ContactList>, StoreError> {
    // The tenant is part of the key: another tenant's list matches no row.
    let row = sqlx::query(&format!(
        "SELECT {LIST_COLUMNS} FROM lists WHERE id = $1::uuid AND tenant = $2"
    ))
    .bind(id.to_string())
    .bind(tenant.as_str())
    .fetch_optional(conn)
    .await
    .map_err(db_err)?;
    row.as_ref().map(list_row).transpose()
}

pub(super) async fn list(
    pool: &PgPool,
    tenant: &TenantId,
    id: ListId,
) -> Result<Option<ContactList>, StoreError> {
    let mut conn = pool.acquire().await.map_err(db_err)?;
    list_on(&mut conn, tenant, id).await
}

pub(super) async fn delete_list(
    pool: &PgPool,
    tenant: &TenantId,
    id: ListId,
) -> Result<bool, StoreError> {
    let done = sqlx::query("DELETE FROM lists WHERE id = $1::uuid AND tenant = $2")
        .bind(id.to_string())
        .bind(tenant.as_str())
        .execute(pool)
        .await
        .map_err(db_err)?;
    Ok(done.rows_affected() > 0)
}

pub(super) async fn add_list_members(
    pool: &PgPool,
    tenant: &TenantId,
    list: ListId,
    emails: &[EmailAddress],
) -> Result<u64, StoreError> {
    let mut tx = pool.begin().await.map_err(db_err)?;
    if list_on(&mut tx, tenant, list).await?.is_none() {
        return Err(StoreError::InvalidRow {
            row: format!("list {list}"),
            reason: format!("tenant {tenant} has no such list"),
        });
    }
    let unique: Vec<&str> = emails
        .iter()
        .map(EmailAddress::as_str)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut known: HashSet<String> = HashSet::with_capacity(unique.len());
    for chunk in unique.chunks(EMAILS_PER_STATEMENT) {
        // KEY SHARE, as the foreign key check would take: a contact found here cannot
        // be deleted before the memberships are committed.
        let found: Vec<String> = sqlx::query_scalar(
            "SELECT email FROM contacts WHERE tenant = $1 AND email = ANY($2) FOR KEY SHARE",
        )
        .bind(tenant.as_str())
        .bind(chunk)
        .fetch_all(&mut *tx)
        .await
        .map_err(db_err)?;
        known.extend(found);
    }
    if let Some(missing) = emails.iter().find(|e| !known.contains(e.as_str())) {
        return Err(StoreError::InvalidRow {
            row: format!("list member {missing}"),
            reason: format!("{missing} is not a contact of tenant {tenant}"),
        });
    }
    let list_text = list.to_string();
    let mut added = 0;
    for chunk in unique.chunks(EMAILS_PER_STATEMENT) {
        added += sqlx::query(
            "INSERT INTO list_members (tenant, list_id, email)
             SELECT $1, $2::uuid, e FROM UNNEST($3::text[]) AS t (e)
             ON CONFLICT (tenant, list_id, email) DO NOTHING",
        )
        .bind(tenant.as_str())
        .bind(&list_text)
        .bind(chunk)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?
        .rows_affected();
    }
    tx.commit().await.map_err(db_err)?;
    Ok(added)
}

pub(super) async fn remove_list_members(
    pool: &PgPool,
    tenant: &TenantId,
    list: ListId,
    emails: &[EmailAddress],
) -> Result<u64, StoreError> {
    if emails.is_empty() {
        return Ok(0);
    }
    let list_text = list.to_string();
    let mut removed = 0;
    let mut tx = pool.begin().await.map_err(db_err)?;
    for chunk in emails.chunks(EMAILS_PER_STATEMENT) {
        let chunk: Vec<&str> = chunk.iter().map(EmailAddress::as_str).collect();
        removed += sqlx::query(
            "DELETE FROM list_members WHERE tenant = $1 AND list_id = $2::uuid
                 AND email = ANY($3)",
        )
        .bind(tenant.as_str())
        .bind(&list_text)
        .bind(chunk)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?
        .rows_affected();
    }
    tx.commit().await.map_err(db_err)?;
    Ok(removed)
}

pub(super) async fn create_segment(pool: &PgPool, s: &Segment) -> Result<(), StoreError> {
    let row = || format!("segment {}", s.id);
    sqlx::query(
        "INSERT INTO segments (id, tenant, name, list_id, filter, created_at)
         VALUES ($1::uuid, $2, $3, $4::uuid, $5, $6)",
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
                row: row(),
                reason: format!("tenant {} does not exist", s.tenant),
            }
        } else {
            row_err(e, row)
        }
    })?;
    Ok(())
}

const SEGMENT_COLUMNS: &str =
    "id::text AS id, tenant, name, list_id::text AS list_id, filter, created_at";

fn segment_row(row: &PgRow) -> Result<Segment, StoreError> {
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

pub(super) async fn segments(pool: &PgPool, tenant: &TenantId) -> Result<Vec<Segment>, StoreError> {
    let rows = sqlx::query(&format!(
        "SELECT {SEGMENT_COLUMNS} FROM segments WHERE tenant = $1
         ORDER BY created_at, segments.id"
    ))
    .bind(tenant.as_str())
    .fetch_all(pool)
    .await
    .map_err(db_err)?;
    rows.iter().map(segment_row).collect()
}

pub(super) async fn segment(
    pool: &PgPool,
    tenant: &TenantId,
    id: SegmentId,
) -> Result<Option<Segment>, StoreError> {
    let row = sqlx::query(&format!(
        "SELECT {SEGMENT_COLUMNS} FROM segments WHERE id = $1::uuid AND tenant = $2"
    ))
    .bind(id.to_string())
    .bind(tenant.as_str())
    .fetch_optional(pool)
    .await
    .map_err(db_err)?;
    row.as_ref().map(segment_row).transpose()
}

pub(super) async fn delete_segment(
    pool: &PgPool,
    tenant: &TenantId,
    id: SegmentId,
) -> Result<bool, StoreError> {
    let done = sqlx::query("DELETE FROM segments WHERE id = $1::uuid AND tenant = $2")
        .bind(id.to_string())
        .bind(tenant.as_str())
        .execute(pool)
        .await
        .map_err(db_err)?;
    Ok(done.rows_affected() > 0)
}
