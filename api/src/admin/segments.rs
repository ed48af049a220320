//! A tenant's segments: saved filters (`maily_engine::segment`) over its contacts, or
//! one list's members, with a preview of who matches.

use super::access::tenant_for;
use super::extract::{Caller, Json};
use super::lists::{check_name, list_of};
use super::problem::{self, Kind, Problem};
use super::{State, json, no_content, ok, run};
use crate::auth::Scope;
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use maily_engine::segment::Filter;
use maily_engine::{EmailAddress, ListId, Segment, SegmentId, TenantId, Timestamp};
use serde::{Deserialize, Serialize};
use tracing::info;
use utoipa::{IntoParams, ToSchema};

/// Contacts read per store call while previewing.
const PAGE: usize = 1000;
/// Matching addresses a preview shows.
pub const SAMPLES: usize = 10;

/// `{tenant}` and `{segment}`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub struct SegmentPath {
    /// The tenant's id.
    pub tenant: String,
    /// The segment's id (a UUID).
    pub segment: String,
}

/// A segment.
#[derive(Debug, Serialize, ToSchema)]
pub struct SegmentBody {
    pub id: String,
    pub name: String,
    /// Only members of this list, when set.
    pub list: Option<String>,
    /// The filter, as written.
    pub filter: String,
    pub created_at: String,
}

impl From<&Segment> for SegmentBody {
    fn from(s: &Segment) -> Self {
        SegmentBody {
            id: s.id.to_string(),
            name: s.name.clone(),
            list: s.list.map(|l| l.to_string()),
            filter: s.filter.clone(),
            created_at: s.created_at.to_rfc3339(),
        }
    }
}

/// A tenant's segments.
#[derive(Debug, Serialize, ToSchema)]
pub struct Segments {
    pub segments: Vec<SegmentBody>,
}

/// A segment to create.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSegment {
    /// 1-200 characters.
    pub name: String,
    /// A filter over contact attributes, e.g. `plan = "pro" and country in ("DE", "AT")`.
    #[schema(example = "plan = \"pro\" and not unsubscribed exists")]
    pub filter: String,
    /// Only members of this list.
    #[serde(default)]
    pub list: Option<String>,
}

/// A filter to try before saving it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FilterInput {
    pub filter: String,
    /// Only members of this list.
    #[serde(default)]
    pub list: Option<String>,
}

/// Who a filter matches now.
#[derive(Debug, Serialize, ToSchema)]
pub struct Preview {
    /// Contacts matching.
    pub count: u64,
    /// Contacts looked at (the tenant's, or the list's members).
    pub scanned: u64,
    /// The first matching addresses, by address (at most 10).
    pub samples: Vec<String>,
}

/// Parses a filter, answering 422 with the parser's position and reason.
fn parse_filter(text: &str) -> Result<Filter, Problem> {
    Filter::parse(text).map_err(|e| Problem::invalid("filter", e.to_string()))
}

fn body_list(list: Option<String>) -> Result<Option<ListId>, Problem> {
    list.map(|l| ListId::parse(l.trim()).map_err(|e| Problem::invalid("list", e.to_string())))
        .transpose()
}

/// Checks that a list a body names is the tenant's (422, not 404: the path exists).
async fn body_list_exists(s: &State, tenant: &TenantId, id: ListId) -> Result<(), Problem> {
    match list_of(s, tenant, id).await {
        Err(p) if p.kind() == Kind::NotFound => {
            Err(Problem::invalid("list", format!("list {id} not found")))
        }
        r => r.map(drop),
    }
}

/// Counts the contacts `filter` matches, a page of [`PAGE`] at a time.
async fn preview_of(
    s: &State,
    tenant: &TenantId,
    list: Option<ListId>,
    filter: &Filter,
) -> Result<Preview, Problem> {
    let mut preview = Preview {
        count: 0,
        scanned: 0,
        samples: Vec::new(),
    };
    let mut after: Option<EmailAddress> = None;
    loop {
        let page = s
            .store
            .contacts(tenant, list, after.as_ref(), PAGE)
            .await
            .map_err(problem::store)?;
        for c in &page {
            preview.scanned += 1;
            if filter.matches(c) {
                preview.count += 1;
                if preview.samples.len() < SAMPLES {
                    preview.samples.push(c.email.to_string());
                }
            }
        }
        if page.len() < PAGE {
            return Ok(preview);
        }
        after = page.last().map(|c| c.email.clone());
    }
}

#[utoipa::path(
    post,
    path = "/v1/tenants/{tenant}/segments",
    tag = "segments",
    operation_id = "createSegment",
    params(super::tenants::TenantPath),
    request_body = NewSegment,
    responses((status = 201, description = "Created", body = SegmentBody))
)]
/// Creates a segment (`send`); a filter that does not parse is 422 naming the position.
pub async fn create(
    state: web::Data<State>,
    caller: Caller,
    path: web::Path<String>,
    body: Json<NewSegment>,
) -> Result<HttpResponse, Problem> {
    let tenant = path.into_inner();
    let input = body.into_inner();
    let name = check_name(&input.name)?;
    parse_filter(&input.filter)?;
    let list = body_list(input.list)?;
    let segment = run(&state, move |s| async move {
        let tenant = tenant_for(&s, &caller.0, Scope::Send, &tenant).await?;
        if let Some(id) = list {
            body_list_exists(&s, &tenant, id).await?;
        }
        let segment = Segment {
            id: SegmentId::new(),
            tenant,
            name,
            list,
            filter: input.filter,
            created_at: Timestamp::now(),
        };
        s.store
            .create_segment(&segment)
            .await
            .map_err(problem::store)?;
        info!(segment = %segment.id, tenant = %segment.tenant, "segment created");
        Ok(segment)
    })
    .await?;
    Ok(json(StatusCode::CREATED, &SegmentBody::from(&segment)))
}

#[utoipa::path(
    get,
    path = "/v1/tenants/{tenant}/segments",
    tag = "segments",
    operation_id = "listSegments",
    params(super::tenants::TenantPath),
    responses((status = 200, description = "The tenant's segments, oldest first", body = Segments))
)]
/// Lists the tenant's segments (`read`).
pub async fn list(
    state: web::Data<State>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, Problem> {
    let tenant = path.into_inner();
    let segments = run(&state, move |s| async move {
        let tenant = tenant_for(&s, &caller.0, Scope::Read, &tenant).await?;
        s.store.segments(&tenant).await.map_err(problem::store)
    })
    .await?;
    Ok(ok(&Segments {
        segments: segments.iter().map(SegmentBody::from).collect(),
    }))
}

fn path_segment(id: &str) -> Result<SegmentId, Problem> {
    SegmentId::parse(id.trim()).map_err(|e| Problem::bad_field("segment", e.to_string()))
}

async fn segment_of(s: &State, tenant: &TenantId, id: SegmentId) -> Result<Segment, Problem> {
    s.store
        .segment(tenant, id)
        .await
        .map_err(problem::store)?
        .ok_or_else(|| Problem::not_found(format!("segment {id} not found")))
}

#[utoipa::path(
    get,
    path = "/v1/tenants/{tenant}/segments/{segment}",
    tag = "segments",
    operation_id = "getSegment",
    params(SegmentPath),
    responses((status = 200, description = "The segment", body = SegmentBody))
)]
/// One segment (`read`).
pub async fn get(
    state: web::Data<State>,
    caller: Caller,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, Problem> {
    let (tenant, id) = path.into_inner();
    let id = path_segment(&id)?;
    let segment = run(&state, move |s| async move {
        let tenant = tenant_for(&s, &caller.0, Scope::Read, &tenant).await?;
        segment_of(&s, &tenant, id).await
    })
    .await?;
    Ok(ok(&SegmentBody::from(&segment)))
}

#[utoipa::path(
    delete,
    path = "/v1/tenants/{tenant}/segments/{segment}",
    tag = "segments",
    operation_id = "deleteSegment",
    params(SegmentPath),
    responses((status = 204, description = "Deleted"))
)]
/// Deletes a segment (`send`).
pub async fn delete(
    state: web::Data<State>,
    caller: Caller,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, Problem> {
    let (tenant, id) = path.into_inner();
    let id = path_segment(&id)?;
    run(&state, move |s| async move {
        let tenant = tenant_for(&s, &caller.0, Scope::Send, &tenant).await?;
        if s.store
            .delete_segment(&tenant, id)
            .await
            .map_err(problem::store)?
        {
            Ok(())
        } else {
            Err(Problem::not_found(format!("segment {id} not found")))
        }
    })
    .await?;
    Ok(no_content())
}

#[utoipa::path(
    get,
    path = "/v1/tenants/{tenant}/segments/{segment}/preview",
    tag = "segments",
    operation_id = "previewSegment",
    params(SegmentPath),
    responses((status = 200, description = "Who the segment matches now", body = Preview))
)]
/// Counts the contacts a saved segment matches now, with a few of them (`read`).
pub async fn preview(
    state: web::Data<State>,
    caller: Caller,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, Problem> {
    let (tenant, id) = path.into_inner();
    let id = path_segment(&id)?;
    let preview = run(&state, move |s| async move {
        let tenant = tenant_for(&s, &caller.0, Scope::Read, &tenant).await?;
        let segment = segment_of(&s, &tenant, id).await?;
        let filter = Filter::parse(&segment.filter).map_err(|e| {
            Problem::internal(format!("stored filter of segment {id} does not parse: {e}"))
        })?;
        preview_of(&s, &tenant, segment.list, &filter).await
    })
    .await?;
    Ok(ok(&preview))
}

#[utoipa::path(
    post,
    path = "/v1/tenants/{tenant}/segments/preview",
    tag = "segments",
    operation_id = "tryFilter",
    params(super::tenants::TenantPath),
    request_body = FilterInput,
    responses((status = 200, description = "Who the filter matches now", body = Preview))
)]
/// Counts the contacts a filter matches now, before saving it as a segment (`read`).
pub async fn try_filter(
    state: web::Data<State>,
    caller: Caller,
    path: web::Path<String>,
    body: Json<FilterInput>,
) -> Result<HttpResponse, Problem> {
    let tenant = path.into_inner();
    let input = body.into_inner();
    let filter = parse_filter(&input.filter)?;
    let list = body_list(input.list)?;
    let preview = run(&state, move |s| async move {
        let tenant = tenant_for(&s, &caller.0, Scope::Read, &tenant).await?;
        if let Some(id) = list {
            body_list_exists(&s, &tenant, id).await?;
        }
        preview_of(&s, &tenant, list, &filter).await
    })
    .await?;
    Ok(ok(&preview))
}
