//! A tenant's named lists of contacts and their members.

use super::access::tenant_for;
use super::contacts::{ContactPage, PageQuery, page, path_email};
use super::extract::{Caller, Json, Query};
use super::problem::{self, Problem};
use super::{State, json, no_content, ok, run};
use crate::auth::Scope;
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use maily_engine::ports::StoreError;
use maily_engine::{ContactList, EmailAddress, ListId, TenantId, Timestamp};
use serde::{Deserialize, Serialize};
use tracing::info;
use utoipa::{IntoParams, ToSchema};

/// Longest list or segment name accepted, in characters.
pub const MAX_NAME_CHARS: usize = 200;
/// Addresses added per call at most.
pub const MAX_MEMBERS_PER_CALL: usize = 1000;

/// `{tenant}` and `{list}`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub struct ListPath {
    /// The tenant's id.
    pub tenant: String,
    /// The list's id (a UUID).
    pub list: String,
}

/// `{tenant}`, `{list}` and `{email}`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub struct MemberPath {
    /// The tenant's id.
    pub tenant: String,
    /// The list's id (a UUID).
    pub list: String,
    /// The member's address.
    pub email: String,
}

/// A list.
#[derive(Debug, Serialize, ToSchema)]
pub struct ListBody {
    pub id: String,
    pub name: String,
    pub created_at: String,
}

impl From<&ContactList> for ListBody {
    fn from(l: &ContactList) -> Self {
        ListBody {
            id: l.id.to_string(),
            name: l.name.clone(),
            created_at: l.created_at.to_rfc3339(),
        }
    }
}

/// A tenant's lists.
#[derive(Debug, Serialize, ToSchema)]
pub struct Lists {
    pub lists: Vec<ListBody>,
}

/// A list to create.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewList {
    /// 1-200 characters.
    pub name: String,
}

/// Contacts to add to a list.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MembersInput {
    /// Addresses of existing contacts (at most 1000).
    pub emails: Vec<String>,
}

/// How many addresses became members.
#[derive(Debug, Serialize, ToSchema)]
pub struct MembersAdded {
    /// Addresses that were not members yet.
    pub added: u64,
}

/// Checks a list or segment name.
pub(super) fn check_name(name: &str) -> Result<String, Problem> {
    let name = name.trim();
    if name.is_empty()
        || name.chars().count() > MAX_NAME_CHARS
        || name.chars().any(char::is_control)
    {
        return Err(Problem::invalid(
            "name",
            format!("must be 1-{MAX_NAME_CHARS} characters without control characters"),
        ));
    }
    Ok(name.to_string())
}

/// Parses a list id from the path.
pub(super) fn path_list(id: &str) -> Result<ListId, Problem> {
    ListId::parse(id.trim()).map_err(|e| Problem::bad_field("list", e.to_string()))
}

/// The tenant's list `id`; another tenant's is 404 like an unknown one.
pub(super) async fn list_of(
    s: &State,
    tenant: &TenantId,
    id: ListId,
) -> Result<ContactList, Problem> {
    s.store
        .list(tenant, id)
        .await
        .map_err(problem::store)?
        .ok_or_else(|| Problem::not_found(format!("list {id} not found")))
}

#[utoipa::path(
    post,
    path = "/v1/tenants/{tenant}/lists",
    tag = "lists",
    operation_id = "createList",
    params(super::tenants::TenantPath),
    request_body = NewList,
    responses((status = 201, description = "Created", body = ListBody))
)]
/// Creates a list (`send`).
pub async fn create(
    state: web::Data<State>,
    caller: Caller,
    path: web::Path<String>,
    body: Json<NewList>,
) -> Result<HttpResponse, Problem> {
    let tenant = path.into_inner();
    let name = check_name(&body.into_inner().name)?;
    let list = run(&state, move |s| async move {
        let tenant = tenant_for(&s, &caller.0, Scope::Send, &tenant).await?;
        let list = ContactList {
            id: ListId::new(),
            tenant,
            name,
            created_at: Timestamp::now(),
        };
        s.store.create_list(&list).await.map_err(problem::store)?;
        info!(list = %list.id, tenant = %list.tenant, "list created");
        Ok(list)
    })
    .await?;
    Ok(json(StatusCode::CREATED, &ListBody::from(&list)))
}

#[utoipa::path(
    get,
    path = "/v1/tenants/{tenant}/lists",
    tag = "lists",
    operation_id = "listLists",
    params(super::tenants::TenantPath),
    responses((status = 200, description = "The tenant's lists, oldest first", body = Lists))
)]
/// Lists the tenant's lists (`read`).
pub async fn list(
    state: web::Data<State>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, Problem> {
    let tenant = path.into_inner();
    let lists = run(&state, move |s| async move {
        let tenant = tenant_for(&s, &caller.0, Scope::Read, &tenant).await?;
        s.store.lists(&tenant).await.map_err(problem::store)
    })
    .await?;
    Ok(ok(&Lists {
        lists: lists.iter().map(ListBody::from).collect(),
    }))
}

#[utoipa::path(
    get,
    path = "/v1/tenants/{tenant}/lists/{list}",
    tag = "lists",
    operation_id = "getList",
    params(ListPath),
    responses((status = 200, description = "The list", body = ListBody))
)]
/// One list (`read`).
pub async fn get(
    state: web::Data<State>,
    caller: Caller,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, Problem> {
    let (tenant, id) = path.into_inner();
    let id = path_list(&id)?;
    let list = run(&state, move |s| async move {
        let tenant = tenant_for(&s, &caller.0, Scope::Read, &tenant).await?;
        list_of(&s, &tenant, id).await
    })
    .await?;
    Ok(ok(&ListBody::from(&list)))
}

#[utoipa::path(
    delete,
    path = "/v1/tenants/{tenant}/lists/{list}",
    tag = "lists",
    operation_id = "deleteList",
    params(ListPath),
    responses((status = 204, description = "Deleted with its memberships (the contacts stay)"))
)]
/// Deletes a list and its memberships, not the contacts (`send`).
pub async fn delete(
    state: web::Data<State>,
    caller: Caller,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, Problem> {
    let (tenant, id) = path.into_inner();
    let id = path_list(&id)?;
    run(&state, move |s| async move {
        let tenant = tenant_for(&s, &caller.0, Scope::Send, &tenant).await?;
        if s.store
            .delete_list(&tenant, id)
            .await
            .map_err(problem::store)?
        {
            Ok(())
        } else {
            Err(Problem::not_found(format!("list {id} not found")))
        }
    })
    .await?;
    Ok(no_content())
}

#[utoipa::path(
    get,
    path = "/v1/tenants/{tenant}/lists/{list}/members",
    tag = "lists",
    operation_id = "listMembers",
    params(ListPath, PageQuery),
    responses((status = 200, description = "A page of the list's members", body = ContactPage))
)]
/// Lists a list's members a page at a time (`read`).
pub async fn members(
    state: web::Data<State>,
    caller: Caller,
    path: web::Path<(String, String)>,
    query: Query<PageQuery>,
) -> Result<HttpResponse, Problem> {
    let (tenant, id) = path.into_inner();
    let id = path_list(&id)?;
    let q = query.0;
    let page = run(&state, move |s| async move {
        let tenant = tenant_for(&s, &caller.0, Scope::Read, &tenant).await?;
        list_of(&s, &tenant, id).await?;
        page(&s, &tenant, Some(id), q.after, q.limit).await
    })
    .await?;
    Ok(ok(&page))
}

#[utoipa::path(
    post,
    path = "/v1/tenants/{tenant}/lists/{list}/members",
    tag = "lists",
    operation_id = "addMembers",
    params(ListPath),
    request_body = MembersInput,
    responses((status = 200, description = "How many became members", body = MembersAdded))
)]
/// Adds existing contacts to a list (`send`); all or none: an address that is not a
/// contact refuses the call.
pub async fn add_members(
    state: web::Data<State>,
    caller: Caller,
    path: web::Path<(String, String)>,
    body: Json<MembersInput>,
) -> Result<HttpResponse, Problem> {
    let (tenant, id) = path.into_inner();
    let id = path_list(&id)?;
    let input = body.into_inner().emails;
    if input.len() > MAX_MEMBERS_PER_CALL {
        return Err(Problem::invalid(
            "emails",
            format!("at most {MAX_MEMBERS_PER_CALL} addresses per call"),
        ));
    }
    let mut emails = Vec::with_capacity(input.len());
    let mut invalid = None;
    for (i, e) in input.iter().enumerate() {
        match EmailAddress::parse(e.trim()) {
            Ok(e) => emails.push(e),
            Err(err) => {
                let p = invalid.unwrap_or_else(|| {
                    Problem::new(problem::Kind::Validation, "some addresses are invalid")
                });
                invalid = Some(p.with_field(format!("emails[{i}]"), err.to_string()));
            }
        }
    }
    if let Some(p) = invalid {
        return Err(p);
    }
    let added = run(&state, move |s| async move {
        let tenant = tenant_for(&s, &caller.0, Scope::Send, &tenant).await?;
        list_of(&s, &tenant, id).await?;
        s.store
            .add_list_members(&tenant, id, &emails)
            .await
            .map_err(|e| match e {
                StoreError::InvalidRow { row, reason } => {
                    Problem::invalid("emails", format!("{row}: {reason}"))
                }
                e => problem::store(e),
            })
    })
    .await?;
    Ok(ok(&MembersAdded { added }))
}

#[utoipa::path(
    delete,
    path = "/v1/tenants/{tenant}/lists/{list}/members/{email}",
    tag = "lists",
    operation_id = "removeMember",
    params(MemberPath),
    responses((status = 204, description = "No longer a member (the contact stays)"))
)]
/// Removes a contact from a list (`send`); 404 if it was not a member.
pub async fn remove_member(
    state: web::Data<State>,
    caller: Caller,
    path: web::Path<(String, String, String)>,
) -> Result<HttpResponse, Problem> {
    let (tenant, id, email) = path.into_inner();
    let id = path_list(&id)?;
    let email = path_email(&email)?;
    run(&state, move |s| async move {
        let tenant = tenant_for(&s, &caller.0, Scope::Send, &tenant).await?;
        list_of(&s, &tenant, id).await?;
        let removed = s
            .store
            .remove_list_members(&tenant, id, std::slice::from_ref(&email))
            .await
            .map_err(problem::store)?;
        if removed == 0 {
            return Err(Problem::not_found(format!(
                "{email} is not a member of list {id}"
            )));
        }
        Ok(())
    })
    .await?;
    Ok(no_content())
}
