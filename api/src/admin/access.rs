//! Who may call what: the authentication middleware in front of every `/v1` route, and
//! the checks handlers make on the caller.
//!
//! - `read` reads, `send` changes a tenant's campaigns, contacts, lists, segments and
//!   suppressions, `admin` manages tenants, API keys, throttles, and reads engine
//!   status, anchors and settlements. Scopes do not imply each other.
//! - Tenant routes are `/v1/tenants/{tenant}/…`. A tenant's principal may name only its
//!   own tenant (another one is 403, whether it exists or not); operators (principals
//!   without a tenant: JWTs without the tenant claim) may name any. A resource that is
//!   not the named tenant's answers 404, exactly like one that does not exist.
//! - Tenants, throttles, engine status, anchors and settlements are operators' only; a
//!   tenant's `admin` principal manages its own tenant's API keys.

use super::problem::{self, Problem};
use super::{State, run};
use crate::auth::{AuthError, Principal, Scope};
use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::Next;
use actix_web::{HttpMessage, ResponseError, web};
use maily_engine::TenantId;

/// Authenticates every request under `/v1` before its body is read: the principal goes
/// into the request's extensions (where [`super::extract::Caller`] finds it), a failure
/// is answered 401 (503 when the store or identity provider is out) at once.
pub(super) async fn authenticate(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let path = req.path();
    if !(path == "/v1" || path.starts_with("/v1/")) {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_left_body);
    }
    let Some(state) = req.app_data::<web::Data<State>>().cloned() else {
        let problem = Problem::internal("admin state missing from the app");
        return Ok(req
            .into_response(problem.error_response())
            .map_into_right_body());
    };
    let authorization = match req.headers().get(header::AUTHORIZATION) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .map(|v| Some(v.to_string()))
            .map_err(|_| AuthError::Malformed("authorization holds non-ASCII bytes")),
    };
    let result = match authorization {
        Err(e) => Err(problem::unauthenticated(&e)),
        Ok(value) => {
            run(&state, move |s| async move {
                s.auth
                    .authenticate(value.as_deref())
                    .await
                    .map_err(|e| problem::unauthenticated(&e))
            })
            .await
        }
    };
    match result {
        Ok(principal) => {
            req.extensions_mut().insert(principal);
            next.call(req)
                .await
                .map(ServiceResponse::map_into_left_body)
        }
        Err(problem) => Ok(req
            .into_response(problem.error_response())
            .map_into_right_body()),
    }
}

/// The tenant a tenant route names, if `caller` may act on it with `scope` and it
/// exists. The scope is checked first, so a caller without it learns nothing.
pub(super) async fn tenant_for(
    s: &State,
    caller: &Principal,
    scope: Scope,
    tenant: &str,
) -> Result<TenantId, Problem> {
    caller.require(scope).map_err(|e| problem::denied(&e))?;
    let tenant =
        TenantId::parse(tenant).map_err(|e| Problem::bad_field("tenant", e.to_string()))?;
    caller
        .require_tenant(&tenant)
        .map_err(|e| problem::denied(&e))?;
    if s.store
        .tenant(&tenant)
        .await
        .map_err(problem::store)?
        .is_none()
    {
        return Err(Problem::not_found(format!("tenant {tenant} not found")));
    }
    Ok(tenant)
}

/// Refuses unless `caller` is an operator holding `scope`.
pub(super) fn operator(caller: &Principal, scope: Scope) -> Result<(), Problem> {
    caller.require(scope).map_err(|e| problem::denied(&e))?;
    if !caller.is_operator() {
        tracing::info!(caller = %caller.subject, "operator route refused to a tenant principal");
        return Err(problem::operators_only(scope));
    }
    Ok(())
}
