//! Tenants' sending domains: a tenant sends From addresses of the domains it
//! registered and that were verified. A domain belongs to one tenant.
//!
//! Registering (`admin`) answers the DNS record that proves the tenant holds the
//! domain (`TXT` at `_maily.<domain>`); an operator verifies it, after checking that
//! record, with `POST …/verify`. Until then the domain is `pending`.

use super::access::{operator, tenant_for};
use super::extract::{Caller, Json};
use super::problem::{self, Problem};
use super::{State, json, no_content, ok, run};
use crate::auth::Scope;
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use maily_engine::ports::TenantDomain;
use maily_engine::{Domain, Timestamp};
use serde::{Deserialize, Serialize};
use tracing::info;
use utoipa::{IntoParams, ToSchema};

/// `{tenant}` and `{domain}`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub struct DomainPath {
    /// The tenant's id.
    pub tenant: String,
    /// The domain, e.g. `shop.example`.
    pub domain: String,
}

/// A domain to register.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewDomain {
    /// The domain the tenant's From addresses will use, e.g. `shop.example`.
    pub domain: String,
}

/// A DNS record to publish.
#[derive(Debug, Serialize, ToSchema)]
pub struct DnsRecord {
    /// The record type, e.g. `TXT`.
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub value: String,
}

/// A sending domain of a tenant.
#[derive(Debug, Serialize, ToSchema)]
pub struct SendingDomain {
    pub domain: String,
    /// `pending` or `verified`: only verified domains may be sent from.
    pub status: String,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339, once verified.
    pub verified_at: Option<String>,
    /// What to publish to prove the tenant holds the domain.
    pub dns: Vec<DnsRecord>,
}

impl From<&TenantDomain> for SendingDomain {
    fn from(d: &TenantDomain) -> Self {
        SendingDomain {
            domain: d.domain.to_string(),
            status: if d.verified_at.is_some() {
                "verified"
            } else {
                "pending"
            }
            .into(),
            created_at: d.created_at.to_rfc3339(),
            verified_at: d.verified_at.map(|t| t.to_rfc3339()),
            dns: vec![DnsRecord {
                kind: "TXT".into(),
                name: format!("_maily.{}", d.domain),
                value: format!("maily-verification={}", d.token),
            }],
        }
    }
}

/// A tenant's sending domains.
#[derive(Debug, Serialize, ToSchema)]
pub struct SendingDomains {
    pub domains: Vec<SendingDomain>,
}

fn parse_domain(field: &str, text: &str) -> Result<Domain, Problem> {
    Domain::parse(text.trim()).map_err(|e| Problem::invalid(field, e.to_string()))
}

#[utoipa::path(
    get,
    path = "/v1/tenants/{tenant}/domains",
    tag = "domains",
    operation_id = "listDomains",
    params(super::tenants::TenantPath),
    responses((status = 200, description = "The tenant's sending domains", body = SendingDomains))
)]
/// Lists the tenant's sending domains (`read`).
pub async fn list(
    state: web::Data<State>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, Problem> {
    let tenant = path.into_inner();
    let domains = run(&state, move |s| async move {
        let tenant = tenant_for(&s, &caller.0, Scope::Read, &tenant).await?;
        s.store.domains(&tenant).await.map_err(problem::store)
    })
    .await?;
    Ok(ok(&SendingDomains {
        domains: domains.iter().map(SendingDomain::from).collect(),
    }))
}

#[utoipa::path(
    post,
    path = "/v1/tenants/{tenant}/domains",
    tag = "domains",
    operation_id = "addDomain",
    params(super::tenants::TenantPath),
    request_body = NewDomain,
    responses(
        (status = 201, description = "Registered, pending verification: publish `dns`", body = SendingDomain),
        (status = 409, description = "The domain is registered already (by this or another tenant)")
    )
)]
/// Registers a sending domain for the tenant (`admin`).
pub async fn add(
    state: web::Data<State>,
    caller: Caller,
    path: web::Path<String>,
    body: Json<NewDomain>,
) -> Result<HttpResponse, Problem> {
    let tenant = path.into_inner();
    let domain = parse_domain("domain", &body.into_inner().domain)?;
    let mut token = [0u8; 16];
    getrandom::fill(&mut token).map_err(Problem::internal)?;
    let created = run(&state, move |s| async move {
        let tenant = tenant_for(&s, &caller.0, Scope::Admin, &tenant).await?;
        let record = TenantDomain {
            domain,
            tenant: tenant.clone(),
            token: hex::encode(token),
            created_at: Timestamp::now(),
            verified_at: None,
        };
        s.store.add_domain(&record).await.map_err(|e| match e {
            maily_engine::ports::StoreError::Conflict(_) => Problem::conflict(format!(
                "domain {} is registered already",
                record.domain
            )),
            e => problem::store(e),
        })?;
        info!(tenant = %tenant, domain = %record.domain, caller = %caller.0.subject, "sending domain registered");
        Ok(record)
    })
    .await?;
    Ok(json(StatusCode::CREATED, &SendingDomain::from(&created)))
}

#[utoipa::path(
    post,
    path = "/v1/tenants/{tenant}/domains/{domain}/verify",
    tag = "domains",
    operation_id = "verifyDomain",
    params(DomainPath),
    responses((status = 200, description = "Verified: the tenant may send from it", body = SendingDomain))
)]
/// Marks a tenant's domain verified (`admin`, operators only: they check the
/// domain's `_maily` TXT record first).
pub async fn verify(
    state: web::Data<State>,
    caller: Caller,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, Problem> {
    let (tenant, domain) = path.into_inner();
    let domain = parse_domain("domain", &domain)?;
    operator(&caller.0, Scope::Admin)?;
    let verified = run(&state, move |s| async move {
        let tenant = tenant_for(&s, &caller.0, Scope::Admin, &tenant).await?;
        let not_found = || Problem::not_found(format!("tenant {tenant} has no domain {domain}"));
        let record = s
            .store
            .domain(&domain)
            .await
            .map_err(problem::store)?
            .filter(|d| d.tenant == tenant)
            .ok_or_else(not_found)?;
        s.store
            .verify_domain(&record.domain, Timestamp::now())
            .await
            .map_err(problem::store)?;
        info!(tenant = %tenant, domain = %domain, caller = %caller.0.subject, "sending domain verified");
        s.store
            .domain(&domain)
            .await
            .map_err(problem::store)?
            .ok_or_else(not_found)
    })
    .await?;
    Ok(ok(&SendingDomain::from(&verified)))
}

#[utoipa::path(
    delete,
    path = "/v1/tenants/{tenant}/domains/{domain}",
    tag = "domains",
    operation_id = "removeDomain",
    params(DomainPath),
    responses((status = 204, description = "Removed: campaigns from it are refused from now on"))
)]
/// Removes a sending domain of the tenant (`admin`).
pub async fn remove(
    state: web::Data<State>,
    caller: Caller,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, Problem> {
    let (tenant, domain) = path.into_inner();
    let domain = parse_domain("domain", &domain)?;
    run(&state, move |s| async move {
        let tenant = tenant_for(&s, &caller.0, Scope::Admin, &tenant).await?;
        if !s
            .store
            .remove_domain(&tenant, &domain)
            .await
            .map_err(problem::store)?
        {
            return Err(Problem::not_found(format!(
                "tenant {tenant} has no domain {domain}"
            )));
        }
        info!(tenant = %tenant, domain = %domain, caller = %caller.0.subject, "sending domain removed");
        Ok(())
    })
    .await?;
    Ok(no_content())
}
