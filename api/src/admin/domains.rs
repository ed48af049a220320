//! Tenants' sending domains: a tenant sends From addresses of the domains it
//! registered and that were verified. A domain belongs to one tenant.
//!
//! Registering (`admin`) makes the tenant's own DKIM key for the domain and answers
//! the DNS records to publish: `TXT` at `_maily.<domain>`, which proves the tenant
//! holds the domain, and the key's `TXT` at `<selector>._domainkey.<domain>`.
//! `POST …/verify` looks both up in DNS and marks the domain verified when both are
//! there; an operator may instead vouch for it with `?force=true`. Until then the
//! domain is `pending` and nothing is sent From it.

use super::access::{operator, tenant_for};
use super::extract::{Caller, Json, Query};
use super::problem::{self, Problem};
use super::{DomainAuthority, DomainHosts, State, json, no_content, ok, run};
use crate::auth::Scope;
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use maily_engine::ports::{DomainKey, StoreError, TenantAccess, TenantDomain};
use maily_engine::{Domain, TenantId, Timestamp};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
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

/// The most sending domains one tenant may register (each has a key of its own).
pub const MAX_DOMAINS_PER_TENANT: usize = 100;

/// A domain to register.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewDomain {
    /// The domain the tenant's From addresses will use, e.g. `shop.example`.
    pub domain: String,
    /// The DKIM key made for it: `rsa` (2048 bits, the default: every receiver
    /// verifies it) or `ed25519`.
    #[serde(default)]
    pub dkim_algorithm: Option<String>,
}

/// `?force=true`: an operator marks the domain verified without the DNS check.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct VerifyQuery {
    #[serde(default)]
    pub force: bool,
}

/// A DNS record to publish.
#[derive(Debug, Serialize, ToSchema)]
pub struct DnsRecord {
    /// The record type, e.g. `TXT`.
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub value: String,
    /// `ownership` (proves the tenant holds the domain) or `dkim` (the public key
    /// that receivers check the tenant's signatures with).
    pub purpose: String,
    /// What the last check found: `published`, `missing` or `different`; absent
    /// when not checked in this answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
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
    /// What to publish: `ownership` and `dkim` records are needed to verify it; the
    /// optional `return-path` MX, once seen, makes its mail's bounces come back on
    /// the tenant's own domain (SPF alignment), the optional `tracking` CNAME its
    /// links use the tenant's own host.
    pub dns: Vec<DnsRecord>,
    /// The tenant's own return-path domain in use, once its MX was seen.
    pub return_path: Option<String>,
    /// The tenant's own tracking host its links use, once its CNAME was seen.
    pub tracking_host: Option<String>,
}

impl SendingDomain {
    /// The answer for `d`, with the records to publish under `hosts`.
    pub fn of(d: &TenantDomain, hosts: &DomainHosts) -> Self {
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
            dns: records(d, hosts),
            return_path: d.return_path.as_ref().map(ToString::to_string),
            tracking_host: d.tracking_host.as_ref().map(ToString::to_string),
        }
    }
}

/// The records `d`'s owner publishes.
fn records(d: &TenantDomain, hosts: &DomainHosts) -> Vec<DnsRecord> {
    let mut records = vec![DnsRecord {
        kind: "TXT".into(),
        name: ownership_name(&d.domain),
        value: ownership_value(&d.token),
        purpose: "ownership".into(),
        status: None,
    }];
    if let Some(key) = &d.dkim {
        records.push(DnsRecord {
            kind: "TXT".into(),
            name: key.dns_name(&d.domain),
            value: key.dns_record.clone(),
            purpose: "dkim".into(),
            status: None,
        });
    }
    if let Some(r) = &hosts.return_path {
        records.push(DnsRecord {
            kind: "MX".into(),
            name: format!("{}.{}", r.label, d.domain),
            value: format!("10 {}", r.target),
            purpose: "return-path".into(),
            status: None,
        });
    }
    if let Some(r) = &hosts.tracking {
        records.push(DnsRecord {
            kind: "CNAME".into(),
            name: format!("{}.{}", r.label, d.domain),
            value: r.target.clone(),
            purpose: "tracking".into(),
            status: None,
        });
    }
    records
}

fn ownership_name(domain: &Domain) -> String {
    format!("_maily.{domain}")
}

fn ownership_value(token: &str) -> String {
    format!("maily-verification={token}")
}

/// The `p=` of a DKIM record, whitespace removed (a long record is often split or
/// folded by DNS providers).
fn dkim_public_key(record: &str) -> Option<String> {
    record.split(';').find_map(|tag| {
        let (name, value) = tag.split_once('=')?;
        (name.trim() == "p").then(|| value.split_whitespace().collect())
    })
}

/// How `found` (the TXT records, or MX hosts, at a name) compares with the record to
/// publish.
fn status_of(purpose: &str, expected: &str, found: &[String]) -> &'static str {
    let matches = |t: &String| match purpose {
        "dkim" => dkim_public_key(t).is_some() && dkim_public_key(t) == dkim_public_key(expected),
        "return-path" | "tracking" => expected
            .split_whitespace()
            .last()
            .is_some_and(|host| t.eq_ignore_ascii_case(host)),
        _ => t.trim() == expected,
    };
    if found.iter().any(matches) {
        "published"
    } else if found.is_empty() {
        "missing"
    } else {
        "different"
    }
}

/// The DKIM selector of a key made now: `maily` and the date, so a later key gets a
/// name of its own.
fn new_selector(now: Timestamp) -> String {
    let date: String = now
        .to_rfc3339()
        .chars()
        .take(10)
        .filter(char::is_ascii_digit)
        .collect();
    format!("maily{date}")
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
pub(crate) async fn list(
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
    let hosts = state.hosts.clone();
    Ok(ok(&SendingDomains {
        domains: domains
            .iter()
            .map(|d| SendingDomain::of(d, &hosts))
            .collect(),
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
/// Registers a sending domain for the tenant (`admin`) and makes its DKIM key.
pub(crate) async fn add(
    state: web::Data<State>,
    caller: Caller,
    path: web::Path<String>,
    body: Json<NewDomain>,
) -> Result<HttpResponse, Problem> {
    let tenant = path.into_inner();
    let body = body.into_inner();
    let domain = parse_domain("domain", &body.domain)?;
    let ed25519 = match body.dkim_algorithm.as_deref().map(str::trim) {
        None | Some("rsa") => false,
        Some("ed25519") => true,
        Some(other) => {
            return Err(Problem::invalid(
                "dkim_algorithm",
                format!("{other:?} is not a DKIM key algorithm: use \"rsa\" or \"ed25519\""),
            ));
        }
    };
    let created = run(&state, move |s| async move {
        let tenant = tenant_for(&s, &caller.0, Scope::Admin, &tenant).await?;
        let record = register(s.store.as_ref(), s.domains.clone(), &tenant, domain, ed25519)
            .await
            .map_err(Problem::from)?;
        info!(tenant = %tenant, domain = %record.domain, caller = %caller.0.subject, "sending domain registered");
        Ok(record)
    })
    .await?;
    Ok(json(
        StatusCode::CREATED,
        &SendingDomain::of(&created, &state.hosts),
    ))
}

#[utoipa::path(
    post,
    path = "/v1/tenants/{tenant}/domains/{domain}/verify",
    tag = "domains",
    operation_id = "verifyDomain",
    params(DomainPath, VerifyQuery),
    responses(
        (status = 200, description = "Verified: the tenant may send from it; `dns` tells what the check found", body = SendingDomain),
        (status = 422, description = "The DNS records are not (all) published yet; the detail names them"),
        (status = 503, description = "DNS did not answer, or this engine checks no DNS (an operator can force)")
    )
)]
/// Checks the domain's DNS records and marks it verified when they are published
/// (`admin`). `?force=true` skips the check (operators only).
pub(crate) async fn verify(
    state: web::Data<State>,
    caller: Caller,
    path: web::Path<(String, String)>,
    query: Query<VerifyQuery>,
) -> Result<HttpResponse, Problem> {
    let (tenant, domain) = path.into_inner();
    let domain = parse_domain("domain", &domain)?;
    let force = query.0.force;
    if force {
        operator(&caller.0, Scope::Admin)?;
    }
    let answer = run(&state, move |s| async move {
        let tenant = tenant_for(&s, &caller.0, Scope::Admin, &tenant).await?;
        let answer = check(
            s.store.as_ref(),
            s.domains.clone(),
            &s.hosts,
            &tenant,
            &domain,
            force,
        )
        .await
        .map_err(Problem::from)?;
        info!(tenant = %tenant, domain = %domain, caller = %caller.0.subject, force, return_path = ?answer.return_path, tracking_host = ?answer.tracking_host, "sending domain verified");
        Ok(answer)
    })
    .await?;
    Ok(ok(&answer))
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
pub(crate) async fn remove(
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

/// Why a sending-domain operation failed; the REST API and the CLI tell it alike.
#[derive(Debug, thiserror::Error)]
pub enum DomainOpError {
    #[error("tenant {tenant} has no domain {domain}")]
    NotFound { tenant: TenantId, domain: Domain },
    #[error("domain {0} is registered already")]
    Taken(Domain),
    #[error(
        "tenant {0} has {MAX_DOMAINS_PER_TENANT} sending domains, the most it may have; remove one first"
    )]
    TooMany(TenantId),
    /// The records are not (all) published; each is named with what was found.
    #[error("domain {domain} is not verified: {}", lacking.join("; "))]
    Unverified {
        domain: Domain,
        lacking: Vec<String>,
    },
    /// DNS cannot be asked now, or at all.
    #[error("{0}")]
    Unavailable(String),
    #[error("making the DKIM key failed: {0}")]
    Key(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<DomainOpError> for Problem {
    fn from(e: DomainOpError) -> Self {
        match e {
            DomainOpError::NotFound { .. } => Problem::not_found(e.to_string()),
            DomainOpError::Taken(_) | DomainOpError::TooMany(_) => Problem::conflict(e.to_string()),
            DomainOpError::Unverified { .. } => Problem::invalid("dns", e.to_string()),
            DomainOpError::Unavailable(_) => Problem::unavailable(e.to_string()),
            DomainOpError::Key(_) => Problem::internal(e),
            DomainOpError::Store(e) => problem::store(e),
        }
    }
}

/// Registers `domain` for `tenant`, `pending`, with a DKIM key of its own when
/// `authority` can make one (RSA-2048, or Ed25519).
pub async fn register(
    store: &dyn TenantAccess,
    authority: Option<Arc<dyn DomainAuthority>>,
    tenant: &TenantId,
    domain: Domain,
    ed25519: bool,
) -> Result<TenantDomain, DomainOpError> {
    if store.domains(tenant).await?.len() >= MAX_DOMAINS_PER_TENANT {
        return Err(DomainOpError::TooMany(tenant.clone()));
    }
    if store.domain(&domain).await?.is_some() {
        return Err(DomainOpError::Taken(domain));
    }
    let mut token = [0u8; 16];
    getrandom::fill(&mut token).map_err(|e| DomainOpError::Key(e.to_string()))?;
    let now = Timestamp::now();
    let dkim = match authority {
        Some(authority) => {
            let (d, selector) = (domain.clone(), new_selector(now));
            let key: DomainKey =
                tokio::task::spawn_blocking(move || authority.new_key(&d, &selector, ed25519))
                    .await
                    .map_err(|e| DomainOpError::Key(e.to_string()))?
                    .map_err(|e| DomainOpError::Key(e.to_string()))?;
            Some(key)
        }
        None => None,
    };
    let record = TenantDomain {
        domain,
        tenant: tenant.clone(),
        token: hex::encode(token),
        created_at: now,
        verified_at: None,
        dkim,
        return_path: None,
        tracking_host: None,
    };
    store.add_domain(&record).await.map_err(|e| match e {
        StoreError::Conflict(_) => DomainOpError::Taken(record.domain.clone()),
        e => DomainOpError::Store(e),
    })?;
    Ok(record)
}

/// Looks `tenant`'s `domain` up in DNS and marks it verified when its ownership and
/// key records are published, keeping the optional return-path and tracking hosts
/// that are; with `force`, marks it verified unchecked (the caller is an operator).
/// The answer's `dns` tells what the check found.
pub async fn check(
    store: &dyn TenantAccess,
    authority: Option<Arc<dyn DomainAuthority>>,
    hosts: &DomainHosts,
    tenant: &TenantId,
    domain: &Domain,
    force: bool,
) -> Result<SendingDomain, DomainOpError> {
    let not_found = || DomainOpError::NotFound {
        tenant: tenant.clone(),
        domain: domain.clone(),
    };
    let record = store
        .domain(domain)
        .await?
        .filter(|d| d.tenant == *tenant)
        .ok_or_else(not_found)?;
    let mut dns = records(&record, hosts);
    let (mut return_path, mut tracking_host) = (None, None);
    if !force {
        let authority = authority.ok_or_else(|| {
            DomainOpError::Unavailable(
                "this engine checks no DNS; an operator can verify the domain unchecked (force)"
                    .into(),
            )
        })?;
        for r in &mut dns {
            let found = match r.kind.as_str() {
                "MX" => authority.mx(&r.name).await,
                "CNAME" => authority.cname(&r.name).await,
                _ => authority.txt(&r.name).await,
            }
            .map_err(|e| {
                DomainOpError::Unavailable(format!("checking {}: {e}; retry later", r.name))
            })?;
            r.status = Some(status_of(&r.purpose, &r.value, &found).into());
        }
        let lacking: Vec<String> = dns
            .iter()
            .filter(|r| r.purpose == "ownership" || r.purpose == "dkim")
            .filter(|r| r.status.as_deref() != Some("published"))
            .map(|r| {
                format!(
                    "{} {} is {} (publish {:?})",
                    r.kind,
                    r.name,
                    r.status.as_deref().unwrap_or("missing"),
                    r.value
                )
            })
            .collect();
        if !lacking.is_empty() {
            info!(tenant = %tenant, domain = %domain, lacking = lacking.len(), "sending domain not verified: records missing");
            return Err(DomainOpError::Unverified {
                domain: domain.clone(),
                lacking,
            });
        }
        // The return path and tracking host are optional: used once their record is
        // seen, dropped when not.
        let seen = |purpose: &str| {
            dns.iter()
                .find(|r| r.purpose == purpose && r.status.as_deref() == Some("published"))
                .and_then(|r| Domain::parse(&r.name).ok())
        };
        return_path = seen("return-path");
        tracking_host = seen("tracking");
    }
    store
        .verify_domain(&record.domain, Timestamp::now())
        .await?;
    if !force {
        store
            .set_domain_hosts(&record.domain, return_path.as_ref(), tracking_host.as_ref())
            .await?;
    }
    let verified = store.domain(domain).await?.ok_or_else(not_found)?;
    let mut answer = SendingDomain::of(&verified, hosts);
    if !force {
        answer.dns = dns;
    }
    Ok(answer)
}
