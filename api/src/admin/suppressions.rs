//! A tenant's suppression list: addresses that are never sent to.
//!
//! The store is the record; the hot state (which the sender asks first) is updated
//! with it. Adding writes the store, then the hot state (a hot-state failure is logged:
//! while it is out the sender reads the store). Removing clears the hot state first and
//! answers 503 if it cannot, so an address is never left suppressed there after the
//! store let it go.

use super::access::tenant_for;
use super::contacts::{DEFAULT_PAGE, MAX_PAGE, PageQuery, path_email};
use super::extract::{Caller, is_json, parse_json, read_body};
use super::problem::{self, Problem};
use super::{State, no_content, ok, run};
use crate::auth::Scope;
use actix_web::{HttpRequest, HttpResponse, web};
use maily_engine::EmailAddress;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};
use utoipa::{IntoParams, ToSchema};

/// The reason recorded when an add names none.
pub const DEFAULT_REASON: &str = "added by an operator";
/// The largest body an add takes.
const MAX_BODY_BYTES: usize = 4096;
/// Longest reason accepted, in characters.
pub const MAX_REASON_CHARS: usize = 200;

/// `{tenant}` and `{email}`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub struct SuppressionPath {
    /// The tenant's id.
    pub tenant: String,
    /// The address.
    pub email: String,
}

/// A suppressed address.
#[derive(Debug, Serialize, ToSchema)]
pub struct Suppression {
    pub email: String,
    /// Why (`unsubscribed`, a bounce or complaint, or what an operator gave).
    pub reason: String,
}

/// A page of a tenant's suppression list, ordered by address.
#[derive(Debug, Serialize, ToSchema)]
pub struct Suppressions {
    pub suppressions: Vec<Suppression>,
    /// Pass as `after` for the next page; absent on the last one.
    pub next_after: Option<String>,
}

/// Why an address is suppressed; the body may also be empty.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SuppressionInput {
    /// At most 200 characters.
    #[serde(default)]
    pub reason: Option<String>,
}

#[utoipa::path(
    get,
    path = "/v1/tenants/{tenant}/suppressions",
    tag = "suppressions",
    operation_id = "listSuppressions",
    params(super::tenants::TenantPath, PageQuery),
    responses((status = 200, description = "A page of the tenant's suppressed addresses", body = Suppressions))
)]
/// Lists the tenant's suppressed addresses (`read`), a page at a time.
pub async fn list(
    state: web::Data<State>,
    caller: Caller,
    path: web::Path<String>,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, Problem> {
    let tenant = path.into_inner();
    let PageQuery { after, limit } = query.into_inner();
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
    let list = run(&state, move |s| async move {
        let tenant = tenant_for(&s, &caller.0, Scope::Read, &tenant).await?;
        s.store
            .suppression_page(&tenant, after.as_ref(), limit as usize)
            .await
            .map_err(problem::store)
    })
    .await?;
    let next_after = (list.len() == limit as usize)
        .then(|| list.last().map(|(e, _)| e.to_string()))
        .flatten();
    Ok(ok(&Suppressions {
        suppressions: list
            .into_iter()
            .map(|(email, reason)| Suppression {
                email: email.to_string(),
                reason,
            })
            .collect(),
        next_after,
    }))
}

#[utoipa::path(
    put,
    path = "/v1/tenants/{tenant}/suppressions/{email}",
    tag = "suppressions",
    operation_id = "addSuppression",
    params(SuppressionPath),
    request_body(content = Option<SuppressionInput>, description = "Optional: why", content_type = "application/json"),
    responses((status = 204, description = "Suppressed (adding again is harmless)"))
)]
/// Suppresses an address for the tenant (`send`); takes effect for the next message.
pub async fn add(
    state: web::Data<State>,
    caller: Caller,
    path: web::Path<(String, String)>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, Problem> {
    let (tenant, email) = path.into_inner();
    let email = path_email(&email)?;
    let body = read_body(payload.into_inner(), MAX_BODY_BYTES).await?;
    let input = if body.iter().all(u8::is_ascii_whitespace) {
        SuppressionInput::default()
    } else if is_json(&req) {
        parse_json::<SuppressionInput>(&body)?
    } else {
        return Err(Problem::unsupported_media_type("application/json"));
    };
    let reason = input
        .reason
        .map(|r| r.trim().to_string())
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| DEFAULT_REASON.to_string());
    if reason.chars().count() > MAX_REASON_CHARS || reason.chars().any(char::is_control) {
        return Err(Problem::invalid(
            "reason",
            format!("at most {MAX_REASON_CHARS} characters without control characters"),
        ));
    }
    run(&state, move |s| async move {
        let tenant = tenant_for(&s, &caller.0, Scope::Send, &tenant).await?;
        s.store
            .suppress(&tenant, &email, &reason)
            .await
            .map_err(problem::store)?;
        if let Some(hot) = &s.hot
            && let Err(e) = hot.suppress(&tenant, &email).await
        {
            warn!(error = %e, tenant = %tenant, "hot state refused a suppression; the store has it");
        }
        info!(tenant = %tenant, caller = %caller.0.subject, "address suppressed");
        Ok(())
    })
    .await?;
    Ok(no_content())
}

#[utoipa::path(
    delete,
    path = "/v1/tenants/{tenant}/suppressions/{email}",
    tag = "suppressions",
    operation_id = "removeSuppression",
    params(SuppressionPath),
    responses((status = 204, description = "No longer suppressed"))
)]
/// Lets an address receive the tenant's mail again (`send`).
pub async fn remove(
    state: web::Data<State>,
    caller: Caller,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, Problem> {
    let (tenant, email) = path.into_inner();
    let email = path_email(&email)?;
    run(&state, move |s| async move {
        let tenant = tenant_for(&s, &caller.0, Scope::Send, &tenant).await?;
        if let Some(hot) = &s.hot {
            hot.unsuppress(&tenant, &email).await.map_err(|e| {
                warn!(error = %e, tenant = %tenant, "hot state refused an unsuppression");
                Problem::unavailable("the suppression cache is unavailable; retry later")
            })?;
        }
        if !s
            .store
            .unsuppress(&tenant, &email)
            .await
            .map_err(problem::store)?
        {
            return Err(Problem::not_found(format!("{email} is not suppressed")));
        }
        info!(tenant = %tenant, caller = %caller.0.subject, "address unsuppressed");
        Ok(())
    })
    .await?;
    Ok(no_content())
}
