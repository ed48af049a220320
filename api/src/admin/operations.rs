//! Operators' controls: the delivery limits in force (changed at once, for the next
//! transaction) and the engine's status.

use super::access::operator;
use super::control::{ThrottleEntry, ThrottleKind, ThrottleLimit, ThrottleTable};
use super::extract::{Caller, Json};
use super::problem::Problem;
use super::{EngineStatusReport, State, no_content, ok, run};
use crate::auth::Scope;
use actix_web::{HttpResponse, web};
use maily_engine::{Domain, TenantId};
use serde::Deserialize;
use tracing::info;
use utoipa::IntoParams;

/// Longest source-IP pool name accepted.
const MAX_POOL_CHARS: usize = 64;

/// `{kind}`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub struct KindPath {
    /// `domain`, `tenant` or `pool`.
    pub kind: ThrottleKind,
}

/// `{kind}` and `{name}`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub struct ScopePath {
    /// `domain`, `tenant` or `pool`.
    pub kind: ThrottleKind,
    /// The domain, tenant id or pool name.
    pub name: String,
}

fn path_kind(kind: &str) -> Result<ThrottleKind, Problem> {
    ThrottleKind::parse(kind)
        .ok_or_else(|| Problem::bad_field("kind", "expected domain, tenant or pool"))
}

/// A scope's name, checked (and for domains lower-cased) for its kind.
fn scope_name(kind: ThrottleKind, name: &str) -> Result<String, Problem> {
    let bad = |reason: String| Problem::bad_field("name", reason);
    match kind {
        ThrottleKind::Domain => Domain::parse(name)
            .map(|d| d.to_string())
            .map_err(|e| bad(e.to_string())),
        ThrottleKind::Tenant => TenantId::parse(name)
            .map(|t| t.to_string())
            .map_err(|e| bad(e.to_string())),
        ThrottleKind::Pool => {
            let ok = !name.is_empty()
                && name.chars().count() <= MAX_POOL_CHARS
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
            if ok {
                Ok(name.to_string())
            } else {
                Err(bad(format!(
                    "pool names are 1-{MAX_POOL_CHARS} characters of letters, digits, '-', '_' and '.'"
                )))
            }
        }
    }
}

/// Checks a limit's values; the rate's syntax is `<messages>/<s|m|h>`.
fn check_limit(limit: &ThrottleLimit) -> Result<(), Problem> {
    let mut problem: Option<Problem> = None;
    let mut refuse = |field: &str, reason: &str| {
        let p = problem
            .take()
            .unwrap_or_else(|| Problem::new(super::problem::Kind::Validation, "invalid limit"));
        problem = Some(p.with_field(field, reason));
    };
    for (field, value) in [
        ("max_connections", limit.max_connections),
        (
            "max_messages_per_connection",
            limit.max_messages_per_connection,
        ),
        ("burst", limit.burst),
    ] {
        if value == Some(0) {
            refuse(field, "must be at least 1 (leave it out for no limit)");
        }
    }
    if let Some(rate) = &limit.rate {
        let ok = rate.trim().split_once('/').is_some_and(|(n, unit)| {
            n.trim().parse::<u32>().is_ok_and(|n| n > 0) && ["s", "m", "h"].contains(&unit.trim())
        });
        if !ok {
            refuse(
                "rate",
                "expected <messages>/<unit> with unit s, m or h, e.g. \"50/s\"",
            );
        }
    }
    match problem {
        Some(p) => Err(p),
        None => Ok(()),
    }
}

fn apply(
    state: &State,
    kind: ThrottleKind,
    name: Option<String>,
    limit: ThrottleLimit,
    caller: &Caller,
) -> Result<HttpResponse, Problem> {
    check_limit(&limit)?;
    state
        .throttles
        .set(kind, name.as_deref(), &limit)
        .map_err(|e| Problem::invalid(e.field, e.reason))?;
    info!(kind = %kind, name = name.as_deref().unwrap_or("*"), caller = %caller.0.subject,
        limit = ?limit, "throttle set");
    Ok(ok(&ThrottleEntry { kind, name, limit }))
}

#[utoipa::path(
    get,
    path = "/v1/throttles",
    tag = "operations",
    operation_id = "listThrottles",
    responses((status = 200, description = "Every limit in force", body = ThrottleTable))
)]
/// The delivery limits in force (operators, `admin`).
pub async fn throttles(state: web::Data<State>, caller: Caller) -> Result<HttpResponse, Problem> {
    operator(&caller.0, Scope::Admin)?;
    Ok(ok(&state.throttles.limits()))
}

#[utoipa::path(
    put,
    path = "/v1/throttles/{kind}",
    tag = "operations",
    operation_id = "setDefaultThrottle",
    params(KindPath),
    request_body = ThrottleLimit,
    responses((status = 200, description = "The default now in force for every scope of the kind without a limit of its own", body = ThrottleEntry))
)]
/// Sets the default limit of a kind of scope (operators, `admin`); `{}` lifts it.
pub async fn set_default(
    state: web::Data<State>,
    caller: Caller,
    path: web::Path<String>,
    body: Json<ThrottleLimit>,
) -> Result<HttpResponse, Problem> {
    operator(&caller.0, Scope::Admin)?;
    let kind = path_kind(&path.into_inner())?;
    apply(&state, kind, None, body.into_inner(), &caller)
}

#[utoipa::path(
    put,
    path = "/v1/throttles/{kind}/{name}",
    tag = "operations",
    operation_id = "setThrottle",
    params(ScopePath),
    request_body = ThrottleLimit,
    responses((status = 200, description = "The scope's limit, in force from the next transaction", body = ThrottleEntry))
)]
/// Sets one scope's limit, replacing its kind's default for it (operators, `admin`).
pub async fn set_throttle(
    state: web::Data<State>,
    caller: Caller,
    path: web::Path<(String, String)>,
    body: Json<ThrottleLimit>,
) -> Result<HttpResponse, Problem> {
    operator(&caller.0, Scope::Admin)?;
    let (kind, name) = path.into_inner();
    let kind = path_kind(&kind)?;
    let name = scope_name(kind, &name)?;
    apply(&state, kind, Some(name), body.into_inner(), &caller)
}

#[utoipa::path(
    delete,
    path = "/v1/throttles/{kind}/{name}",
    tag = "operations",
    operation_id = "clearThrottle",
    params(ScopePath),
    responses((status = 204, description = "The kind's default applies to the scope again"))
)]
/// Removes one scope's own limit (operators, `admin`).
pub async fn clear_throttle(
    state: web::Data<State>,
    caller: Caller,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, Problem> {
    operator(&caller.0, Scope::Admin)?;
    let (kind, name) = path.into_inner();
    let kind = path_kind(&kind)?;
    let name = scope_name(kind, &name)?;
    if !state.throttles.clear(kind, &name) {
        return Err(Problem::not_found(format!(
            "{kind} {name} has no limit of its own"
        )));
    }
    info!(kind = %kind, name = %name, caller = %caller.0.subject, "throttle cleared");
    Ok(no_content())
}

#[utoipa::path(
    get,
    path = "/v1/status",
    tag = "operations",
    operation_id = "engineStatus",
    responses((status = 200, description = "The engine as this process sees it", body = EngineStatusReport))
)]
/// Owned partitions, leadership, actor restarts and queue depths (operators, `admin`).
pub async fn status(state: web::Data<State>, caller: Caller) -> Result<HttpResponse, Problem> {
    operator(&caller.0, Scope::Admin)?;
    let report = run(&state, |s| async move {
        s.status.status().await.map_err(|e| {
            tracing::warn!(error = %e, "engine status unavailable");
            Problem::unavailable(e.to_string())
        })
    })
    .await?;
    Ok(ok(&report))
}
