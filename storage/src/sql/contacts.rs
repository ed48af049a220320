//! Contacts, their lists and list memberships, and segments, one SQL text for both
//! dialects.
//!
//! Memberships reference both their list and their contact with the tenant in the
//! key, so deleting either deletes its memberships (ON DELETE CASCADE) and a list can
//! never hold another tenant's contact.

/// The contact functions for one backend (see [`super::domains::domains`] for the
/// parameters; `$conn` is its connection type). Its `rows` also names how a write
/// transaction begins (`BEGIN_WRITE`), how a column matches a list of values
/// (`any_of`, `bind_all`, at most `ANY_OF_CHUNK` per statement) and which errors reject
/// a row's values (`row_err`).
///
/// The module that expands it writes the one statement whose form differs between the
/// dialects, the bulk upsert (multi-row VALUES in SQLite, UNNEST arrays in Postgres):
/// `insert_contacts(conn, chunk) -> Result<(), sqlx::Error>` upserts a chunk of
/// contacts with distinct `(tenant, email)`, replacing attributes and `updated_at` and
/// keeping an existing contact's `created_at`.
macro_rules! contacts {
    ($pool:ty, $conn:ty, $row:ty, $sql:path) => {
        use super::rows::{
            ANY_OF_CHUNK, BEGIN_WRITE, RowReader, any_of, bind_all, db_err, raw_text, row_err,
        };
        use crate::sql::rows::insert_err;
        use maily_engine::ports::StoreError;
        use maily_engine::{
            Contact, ContactList, EmailAddress, ListId, Segment, SegmentId, TenantId, Timestamp,
        };
        use sqlx::Row;
        use std::collections::{BTreeSet, HashMap, HashSet};

        /// Refuses the first of `contacts` whose tenant does not exist, naming that contact
        /// rather than a whole chunk.
        async fn check_tenants(conn: &mut $conn, contacts: &[Contact]) -> Result<(), StoreError> {
            let tenants: BTreeSet<&str> = contacts.iter().map(|c| c.tenant.as_str()).collect();
            let tenants: Vec<String> = tenants.into_iter().map(str::to_string).collect();
            let mut known: HashSet<String> = HashSet::with_capacity(tenants.len());
            for chunk in tenants.chunks(ANY_OF_CHUNK) {
                let sql = $sql(&format!(
                    "SELECT id FROM tenants WHERE {}",
                    any_of("id", 1, chunk.len(), "text")
                ))
                .into_owned();
                let rows = bind_all(sqlx::query(&sql), chunk)
                    .fetch_all(&mut *conn)
                    .await
                    .map_err(db_err)?;
                for row in &rows {
                    known.insert(row.try_get("id").map_err(db_err)?);
                }
            }
            match contacts.iter().find(|c| !known.contains(c.tenant.as_str())) {
                Some(c) => Err(StoreError::InvalidRow {
                    row: format!("contact {}/{}", c.tenant, c.email),
                    reason: format!("tenant {} does not exist", c.tenant),
                }),
                None => Ok(()),
            }
        }

        /// `contacts` as if upserted one after the other: one row per `(tenant, email)`,
        /// with the first row's `created_at` and the last row's attributes and
        /// `updated_at`. One Postgres statement cannot upsert a key twice.
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

        /// Upserts `contacts`, all or none, with one statement per `chunk_rows` of them.
        pub(crate) async fn upsert_contacts(
            pool: &$pool,
            contacts: &[Contact],
            chunk_rows: usize,
        ) -> Result<(), StoreError> {
            if contacts.is_empty() {
                return Ok(());
            }
            let mut tx = pool.begin_with(BEGIN_WRITE).await.map_err(db_err)?;
            check_tenants(&mut tx, contacts).await?;
            for chunk in merged(contacts).chunks(chunk_rows.max(1)) {
                // e.g. a NUL character in an attribute, which JSONB cannot hold.
                insert_contacts(&mut tx, chunk).await.map_err(|e| {
                    row_err(e, || {
                        let (first, last) = (&chunk[0], &chunk[chunk.len() - 1]);
                        format!(
                            "contacts {}/{} to {}/{}",
                            first.tenant, first.email, last.tenant, last.email
                        )
                    })
                })?;
            }
            tx.commit().await.map_err(db_err)
        }

        const CONTACT_COLUMNS: &str =
            "c.tenant, c.email, c.attributes::text AS attributes, c.created_at, c.updated_at";

        fn contact_row(row: &$row) -> Result<Contact, StoreError> {
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

        pub(crate) async fn contact(
            pool: &$pool,
            tenant: &TenantId,
            email: &EmailAddress,
        ) -> Result<Option<Contact>, StoreError> {
            let row = sqlx::query(&$sql(&format!(
                "SELECT {CONTACT_COLUMNS} FROM contacts c WHERE c.tenant = $1 AND c.email = $2"
            )))
            .bind(tenant.as_str())
            .bind(email.as_str())
            .fetch_optional(pool)
            .await
            .map_err(db_err)?;
            row.as_ref().map(contact_row).transpose()
        }

        pub(crate) async fn delete_contact(
            pool: &$pool,
            tenant: &TenantId,
            email: &EmailAddress,
        ) -> Result<bool, StoreError> {
            let done = sqlx::query(&$sql(
                "DELETE FROM contacts WHERE tenant = $1 AND email = $2",
            ))
            .bind(tenant.as_str())
            .bind(email.as_str())
            .execute(pool)
            .await
            .map_err(db_err)?;
            Ok(done.rows_affected() > 0)
        }

        pub(crate) async fn contacts(
            pool: &$pool,
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
                    sqlx::query(&$sql(&format!(
                        "SELECT {CONTACT_COLUMNS} FROM contacts c
                         WHERE c.tenant = $1 AND c.email > $2 ORDER BY c.email LIMIT $3"
                    )))
                    .bind(tenant.as_str())
                    .bind(after)
                    .bind(limit)
                    .fetch_all(pool)
                    .await
                }
                Some(list) => {
                    sqlx::query(&$sql(&format!(
                        "SELECT {CONTACT_COLUMNS} FROM list_members m
                         JOIN contacts c ON c.tenant = m.tenant AND c.email = m.email
                         WHERE m.tenant = $1 AND m.list_id = $2::uuid AND m.email > $3
                         ORDER BY m.email LIMIT $4"
                    )))
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

        pub(crate) async fn create_list(
            pool: &$pool,
            list: &ContactList,
        ) -> Result<(), StoreError> {
            let row = || format!("list {}", list.id);
            sqlx::query(&$sql(
                "INSERT INTO lists (id, tenant, name, created_at) VALUES ($1::uuid, $2, $3, $4)",
            ))
            .bind(list.id.to_string())
            .bind(list.tenant.as_str())
            .bind(&list.name)
            .bind(list.created_at.0)
            .execute(pool)
            .await
            .map_err(|e| {
                insert_err(
                    e,
                    row,
                    &list.tenant,
                    || format!("list {} already exists", list.id),
                    |e| row_err(e, row),
                )
            })?;
            Ok(())
        }

        const LIST_COLUMNS: &str = "id::text AS id, tenant, name, created_at";

        fn list_row(row: &$row) -> Result<ContactList, StoreError> {
            let r = RowReader::new(row, "lists", raw_text(row, "id"));
            Ok(ContactList {
                id: r.parse("id")?,
                tenant: r.tenant("tenant")?,
                name: r.get("name")?,
                created_at: Timestamp(r.get("created_at")?),
            })
        }

        pub(crate) async fn lists(
            pool: &$pool,
            tenant: &TenantId,
        ) -> Result<Vec<ContactList>, StoreError> {
            let rows = sqlx::query(&$sql(&format!(
                "SELECT {LIST_COLUMNS} FROM lists WHERE tenant = $1 ORDER BY created_at, lists.id"
            )))
            .bind(tenant.as_str())
            .fetch_all(pool)
            .await
            .map_err(db_err)?;
            rows.iter().map(list_row).collect()
        }

        async fn list_on(
            conn: &mut $conn,
            tenant: &TenantId,
            id: ListId,
        ) -> Result<Option<ContactList>, StoreError> {
            // The tenant is part of the key: another tenant's list matches no row.
            let row = sqlx::query(&$sql(&format!(
                "SELECT {LIST_COLUMNS} FROM lists WHERE id = $1::uuid AND tenant = $2"
            )))
            .bind(id.to_string())
            .bind(tenant.as_str())
            .fetch_optional(conn)
            .await
            .map_err(db_err)?;
            row.as_ref().map(list_row).transpose()
        }

        pub(crate) async fn list(
            pool: &$pool,
            tenant: &TenantId,
            id: ListId,
        ) -> Result<Option<ContactList>, StoreError> {
            let mut conn = pool.acquire().await.map_err(db_err)?;
            list_on(&mut conn, tenant, id).await
        }

        pub(crate) async fn delete_list(
            pool: &$pool,
            tenant: &TenantId,
            id: ListId,
        ) -> Result<bool, StoreError> {
            let done = sqlx::query(&$sql(
                "DELETE FROM lists WHERE id = $1::uuid AND tenant = $2",
            ))
            .bind(id.to_string())
            .bind(tenant.as_str())
            .execute(pool)
            .await
            .map_err(db_err)?;
            Ok(done.rows_affected() > 0)
        }

        pub(crate) async fn add_list_members(
            pool: &$pool,
            tenant: &TenantId,
            list: ListId,
            emails: &[EmailAddress],
        ) -> Result<u64, StoreError> {
            let mut tx = pool.begin_with(BEGIN_WRITE).await.map_err(db_err)?;
            if list_on(&mut tx, tenant, list).await?.is_none() {
                return Err(StoreError::InvalidRow {
                    row: format!("list {list}"),
                    reason: format!("tenant {tenant} has no such list"),
                });
            }
            let unique: BTreeSet<&str> = emails.iter().map(EmailAddress::as_str).collect();
            let unique: Vec<String> = unique.into_iter().map(str::to_string).collect();
            let mut known: HashSet<String> = HashSet::with_capacity(unique.len());
            for chunk in unique.chunks(ANY_OF_CHUNK) {
                // KEY SHARE, as the foreign key check would take: on Postgres a contact
                // found here cannot be deleted before the memberships are committed. On
                // SQLite the write lock held since BEGIN keeps every other writer out.
                let sql = $sql(&format!(
                    "SELECT email FROM contacts WHERE tenant = $1 AND {} FOR KEY SHARE",
                    any_of("email", 2, chunk.len(), "text")
                ))
                .into_owned();
                let rows = bind_all(sqlx::query(&sql).bind(tenant.as_str()), chunk)
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(db_err)?;
                for row in &rows {
                    known.insert(row.try_get("email").map_err(db_err)?);
                }
            }
            if let Some(missing) = emails.iter().find(|e| !known.contains(e.as_str())) {
                return Err(StoreError::InvalidRow {
                    row: format!("list member {missing}"),
                    reason: format!("{missing} is not a contact of tenant {tenant}"),
                });
            }
            let list_text = list.to_string();
            let mut added = 0;
            for chunk in unique.chunks(ANY_OF_CHUNK) {
                // The contacts just found, so every address is one of them, each once.
                let sql = $sql(&format!(
                    "INSERT INTO list_members (tenant, list_id, email)
                     SELECT tenant, $2::uuid, email FROM contacts WHERE tenant = $1 AND {}
                     ON CONFLICT (tenant, list_id, email) DO NOTHING",
                    any_of("email", 3, chunk.len(), "text")
                ))
                .into_owned();
                added += bind_all(
                    sqlx::query(&sql).bind(tenant.as_str()).bind(&list_text),
                    chunk,
                )
                .execute(&mut *tx)
                .await
                .map_err(db_err)?
                .rows_affected();
            }
            tx.commit().await.map_err(db_err)?;
            Ok(added)
        }

        pub(crate) async fn remove_list_members(
            pool: &$pool,
            tenant: &TenantId,
            list: ListId,
            emails: &[EmailAddress],
        ) -> Result<u64, StoreError> {
            if emails.is_empty() {
                return Ok(0);
            }
            let list_text = list.to_string();
            let mut removed = 0;
            let mut tx = pool.begin_with(BEGIN_WRITE).await.map_err(db_err)?;
            for chunk in emails.chunks(ANY_OF_CHUNK) {
                let chunk: Vec<String> = chunk.iter().map(|e| e.as_str().to_string()).collect();
                let sql = $sql(&format!(
                    "DELETE FROM list_members WHERE tenant = $1 AND list_id = $2::uuid AND {}",
                    any_of("email", 3, chunk.len(), "text")
                ))
                .into_owned();
                removed += bind_all(
                    sqlx::query(&sql).bind(tenant.as_str()).bind(&list_text),
                    &chunk,
                )
                .execute(&mut *tx)
                .await
                .map_err(db_err)?
                .rows_affected();
            }
            tx.commit().await.map_err(db_err)?;
            Ok(removed)
        }

        pub(crate) async fn create_segment(pool: &$pool, s: &Segment) -> Result<(), StoreError> {
            let row = || format!("segment {}", s.id);
            sqlx::query(&$sql(
                "INSERT INTO segments (id, tenant, name, list_id, filter, created_at)
                 VALUES ($1::uuid, $2, $3, $4::uuid, $5, $6)",
            ))
            .bind(s.id.to_string())
            .bind(s.tenant.as_str())
            .bind(&s.name)
            .bind(s.list.map(|l| l.to_string()))
            .bind(&s.filter)
            .bind(s.created_at.0)
            .execute(pool)
            .await
            .map_err(|e| {
                insert_err(
                    e,
                    row,
                    &s.tenant,
                    || format!("segment {} already exists", s.id),
                    |e| row_err(e, row),
                )
            })?;
            Ok(())
        }

        const SEGMENT_COLUMNS: &str =
            "id::text AS id, tenant, name, list_id::text AS list_id, filter, created_at";

        fn segment_row(row: &$row) -> Result<Segment, StoreError> {
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

        pub(crate) async fn segments(
            pool: &$pool,
            tenant: &TenantId,
        ) -> Result<Vec<Segment>, StoreError> {
            let rows = sqlx::query(&$sql(&format!(
                "SELECT {SEGMENT_COLUMNS} FROM segments WHERE tenant = $1
                 ORDER BY created_at, segments.id"
            )))
            .bind(tenant.as_str())
            .fetch_all(pool)
            .await
            .map_err(db_err)?;
            rows.iter().map(segment_row).collect()
        }

        pub(crate) async fn segment(
            pool: &$pool,
            tenant: &TenantId,
            id: SegmentId,
        ) -> Result<Option<Segment>, StoreError> {
            let row = sqlx::query(&$sql(&format!(
                "SELECT {SEGMENT_COLUMNS} FROM segments WHERE id = $1::uuid AND tenant = $2"
            )))
            .bind(id.to_string())
            .bind(tenant.as_str())
            .fetch_optional(pool)
            .await
            .map_err(db_err)?;
            row.as_ref().map(segment_row).transpose()
        }

        pub(crate) async fn delete_segment(
            pool: &$pool,
            tenant: &TenantId,
            id: SegmentId,
        ) -> Result<bool, StoreError> {
            let done = sqlx::query(&$sql(
                "DELETE FROM segments WHERE id = $1::uuid AND tenant = $2",
            ))
            .bind(id.to_string())
            .bind(tenant.as_str())
            .execute(pool)
            .await
            .map_err(db_err)?;
            Ok(done.rows_affected() > 0)
        }
    };
}

pub(crate) use contacts;
