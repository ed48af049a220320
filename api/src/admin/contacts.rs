//! A tenant's contacts: one by one by address, a page at a time, and the streamed CSV
//! import ([`super::import`]).

use super::access::tenant_for;
use super::extract::{Caller, Json, Query, is_csv};
use super::import::{self, ContactSink, ImportReport};
use super::problem::{self, Problem};
use super::{State, json, no_content, ok, run};
use crate::auth::Scope;
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use maily_engine::{Contact, EmailAddress, ListId, Timestamp};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use tracing::info;
use utoipa::{IntoParams, ToSchema};

/// The largest CSV import accepted.
pub const MAX_IMPORT_BYTES: usize = 1024 * 1024 * 1024;
/// Contacts per page by default, and at most.
pub const DEFAULT_PAGE: u32 = 100;
pub const MAX_PAGE: u32 = 1000;
/// Attributes of one contact at most.
pub const MAX_ATTRIBUTES: usize = 100;

/// `{tenant}` and `{email}`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub struct ContactPath {
    /// The tenant's id.
    pub tenant: String,
    /// The contact's address.
    pub email: String,
}

/// A contact.
#[derive(Debug, Serialize, ToSchema)]
pub struct ContactBody {
    pub email: String,
    pub attributes: BTreeMap<String, String>,
    pub created_at: String,
    pub updated_at: String,
}

impl From<&Contact> for ContactBody {
    fn from(c: &Contact) -> Self {
        ContactBody {
            email: c.email.to_string(),
            attributes: c.attributes.clone(),
            created_at: c.created_at.to_rfc3339(),
            updated_at: c.updated_at.to_rfc3339(),
        }
    }
}

/// A contact's attributes, replacing those it had.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ContactInput {
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}

/// A page of contacts, ordered by address.
#[derive(Debug, Serialize, ToSchema)]
pub struct ContactPage {
    pub contacts: Vec<ContactBody>,
    /// Pass as `after` for the next page; absent on the last one.
    pub next_after: Option<String>,
}

/// Paging of contacts.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Start after this address (the previous page's `next_after`).
    pub after: Option<String>,
    /// Contacts per page, 1-1000 (default 100).
    pub limit: Option<u32>,
}

/// Paging of contacts, optionally of one list.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ContactQuery {
    /// Start after this address (the previous page's `next_after`).
    pub after: Option<String>,
    /// Contacts per page, 1-1000 (default 100).
    pub limit: Option<u32>,
    /// Only members of this list.
    pub list: Option<String>,
}

/// Parses a contact's address from the path.
pub(super) fn path_email(email: &str) -> Result<EmailAddress, Problem> {
    EmailAddress::parse(email.trim()).map_err(|e| Problem::bad_field("email", e.to_string()))
}

/// Reads a page of a tenant's contacts (of `list`'s members when given).
pub(super) async fn page(
    s: &State,
    tenant: &maily_engine::TenantId,
    list: Option<ListId>,
    after: Option<String>,
    limit: Option<u32>,
) -> Result<ContactPage, Problem> {
    let limit = limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(Problem::bad_field(
            "limit",
            format!("must be 1 to {MAX_PAGE}"),
        ));
    }
    let after = after
        .map(|a| {
            EmailAddress::parse(a.trim()).map_err(|e| Problem::bad_field("after", e.to_string()))
        })
        .transpose()?;
    let contacts = s
        .store
        .contacts(tenant, list, after.as_ref(), limit as usize)
        .await
        .map_err(problem::store)?;
    let next_after = (contacts.len() == limit as usize)
        .then(|| contacts.last().map(|c| c.email.to_string()))
        .flatten();
    Ok(ContactPage {
        contacts: contacts.iter().map(ContactBody::from).collect(),
        next_after,
    })
}

#[utoipa::path(
    get,
    path = "/v1/tenants/{tenant}/contacts",
    tag = "contacts",
    operation_id = "listContacts",
    params(super::tenants::TenantPath, ContactQuery),
    responses((status = 200, description = "A page of contacts", body = ContactPage))
)]
/// Lists the tenant's contacts a page at a time (`read`).
pub async fn list(
    state: web::Data<State>,
    caller: Caller,
    path: web::Path<String>,
    query: Query<ContactQuery>,
) -> Result<HttpResponse, Problem> {
    let tenant = path.into_inner();
    let q = query.0;
    let list = q
        .list
        .map(|l| ListId::parse(l.trim()).map_err(|e| Problem::bad_field("list", e.to_string())))
        .transpose()?;
    let page = run(&state, move |s| async move {
        let tenant = tenant_for(&s, &caller.0, Scope::Read, &tenant).await?;
        if let Some(id) = list
            && s.store
                .list(&tenant, id)
                .await
                .map_err(problem::store)?
                .is_none()
        {
            return Err(Problem::not_found(format!("list {id} not found")));
        }
        page(&s, &tenant, list, q.after, q.limit).await
    })
    .await?;
    Ok(ok(&page))
}

#[utoipa::path(
    get,
    path = "/v1/tenants/{tenant}/contacts/{email}",
    tag = "contacts",
    operation_id = "getContact",
    params(ContactPath),
    responses((status = 200, description = "The contact", body = ContactBody))
)]
/// One contact (`read`).
pub async fn get(
    state: web::Data<State>,
    caller: Caller,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, Problem> {
    let (tenant, email) = path.into_inner();
    let email = path_email(&email)?;
    let contact = run(&state, move |s| async move {
        let tenant = tenant_for(&s, &caller.0, Scope::Read, &tenant).await?;
        s.store
            .contact(&tenant, &email)
            .await
            .map_err(problem::store)?
            .ok_or_else(|| Problem::not_found(format!("contact {email} not found")))
    })
    .await?;
    Ok(ok(&ContactBody::from(&contact)))
}

#[utoipa::path(
    put,
    path = "/v1/tenants/{tenant}/contacts/{email}",
    tag = "contacts",
    operation_id = "putContact",
    params(ContactPath),
    request_body = ContactInput,
    responses(
        (status = 201, description = "Created", body = ContactBody),
        (status = 200, description = "Attributes replaced", body = ContactBody),
    )
)]
/// Creates a contact or replaces its attributes (`send`).
pub async fn put(
    state: web::Data<State>,
    caller: Caller,
    path: web::Path<(String, String)>,
    body: Json<ContactInput>,
) -> Result<HttpResponse, Problem> {
    let (tenant, email) = path.into_inner();
    let email = path_email(&email)?;
    let attributes = body.into_inner().attributes;
    if attributes.len() > MAX_ATTRIBUTES {
        return Err(Problem::invalid(
            "attributes",
            format!("at most {MAX_ATTRIBUTES} attributes"),
        ));
    }
    if let Some(name) = attributes.keys().find(|k| k.trim().is_empty()) {
        return Err(Problem::invalid(
            "attributes",
            format!("attribute name {name:?} is blank"),
        ));
    }
    let (created, contact) = run(&state, move |s| async move {
        let tenant = tenant_for(&s, &caller.0, Scope::Send, &tenant).await?;
        let existed = s
            .store
            .contact(&tenant, &email)
            .await
            .map_err(problem::store)?
            .is_some();
        let now = Timestamp::now();
        let contact = Contact {
            tenant: tenant.clone(),
            email: email.clone(),
            attributes,
            created_at: now,
            updated_at: now,
        };
        s.store
            .upsert_contacts(std::slice::from_ref(&contact))
            .await
            .map_err(|e| match e {
                maily_engine::ports::StoreError::InvalidRow { reason, .. } => {
                    Problem::invalid("attributes", reason)
                }
                e => problem::store(e),
            })?;
        let stored = s
            .store
            .contact(&tenant, &email)
            .await
            .map_err(problem::store)?
            .unwrap_or(contact);
        Ok((!existed, stored))
    })
    .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(json(status, &ContactBody::from(&contact)))
}

#[utoipa::path(
    delete,
    path = "/v1/tenants/{tenant}/contacts/{email}",
    tag = "contacts",
    operation_id = "deleteContact",
    params(ContactPath),
    responses((status = 204, description = "Deleted, with its list memberships"))
)]
/// Deletes a contact and its list memberships (`send`).
pub async fn delete(
    state: web::Data<State>,
    caller: Caller,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, Problem> {
    let (tenant, email) = path.into_inner();
    let email = path_email(&email)?;
    run(&state, move |s| async move {
        let tenant = tenant_for(&s, &caller.0, Scope::Send, &tenant).await?;
        if s.store
            .delete_contact(&tenant, &email)
            .await
            .map_err(problem::store)?
        {
            Ok(())
        } else {
            Err(Problem::not_found(format!("contact {email} not found")))
        }
    })
    .await?;
    Ok(no_content())
}

#[utoipa::path(
    post,
    path = "/v1/tenants/{tenant}/contacts/import",
    tag = "contacts",
    operation_id = "importContacts",
    params(super::tenants::TenantPath),
    request_body(
        description = "A CSV, streamed (at most 1 GiB): the header row is `email` followed by attribute names; each row upserts one contact, replacing its attributes; an empty cell leaves that attribute out",
        content((String = "text/csv", example = "email,plan,country\nann@example.org,pro,DE\n"))
    ),
    responses((status = 200, description = "What was stored and which rows were refused", body = ImportReport))
)]
/// Imports contacts from a CSV, streamed (`send`): stored in batches of 1000 as the
/// body arrives, with per-row errors.
pub async fn import(
    state: web::Data<State>,
    caller: Caller,
    path: web::Path<String>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, Problem> {
    if !is_csv(&req) {
        return Err(Problem::unsupported_media_type("text/csv"));
    }
    let tenant = path.into_inner();
    let subject = caller.0.subject.clone();
    let tenant = run(&state, move |s| async move {
        tenant_for(&s, &caller.0, Scope::Send, &tenant).await
    })
    .await?;
    let sink = ContactSink::new(tenant.clone());
    let report = import::csv(&state, &req, payload, sink, MAX_IMPORT_BYTES).await?;
    info!(tenant = %tenant, rows = report.rows, accepted = report.accepted,
        rejected = report.rejected, caller = %subject, "contacts imported");
    Ok(ok(&report))
}
