//! Tenants (operators) and their API keys (operators, and each tenant's own `admin`
//! principals). A key's secret is in the answer to its creation only; the store keeps
//! its hash.

use super::access::{operator, tenant_for};
use super::extract::{Caller, Json};
use super::problem::{self, Problem, ProblemBody};
use super::{State, json, no_content, ok, run};
use crate::auth::{Scope, keys};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use maily_engine::TenantId;
use maily_engine::ports::{ApiKeyRecord, TenantRecord};
use serde::{Deserialize, Serialize};
use tracing::info;
use utoipa::{IntoParams, ToSchema};

/// Longest tenant name accepted, in characters.
pub const MAX_TENANT_NAME_CHARS: usize = 200;

/// The `{tenant}` path parameter.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct TenantPath {
    /// The tenant's id: 1-63 characters of a-z, 0-9 and '-'.
    #[allow(dead_code)]
    pub tenant: String,
}

/// `{tenant}` and `{key}`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct KeyPath {
    /// The tenant's id.
    #[allow(dead_code)]
    pub tenant: String,
    /// The key's public id (16 hex digits).
    #[allow(dead_code)]
    pub key: String,
}

/// A tenant.
#[derive(Debug, Serialize, ToSchema)]
pub struct Tenant {
    pub id: String,
    pub name: String,
    /// RFC 3339.
    pub created_at: String,
}

impl From<&TenantRecord> for Tenant {
    fn from(t: &TenantRecord) -> Self {
        Tenant {
            id: t.id.to_string(),
            name: t.name.clone(),
            created_at: t.created_at.to_rfc3339(),
        }
    }
}

/// Every tenant.
#[derive(Debug, Serialize, ToSchema)]
pub struct TenantList {
    pub tenants: Vec<Tenant>,
}

/// A tenant to create or rename.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutTenant {
    /// What the tenant is called (1-200 characters, no control characters).
    pub name: String,
}

/// A scope of an API key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ScopeName {
    Send,
    Read,
    Admin,
}

impl From<ScopeName> for Scope {
    fn from(s: ScopeName) -> Scope {
        match s {
            ScopeName::Send => Scope::Send,
            ScopeName::Read => Scope::Read,
            ScopeName::Admin => Scope::Admin,
        }
    }
}

/// An API key to issue.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewApiKey {
    /// What the tenant calls the key (1-100 characters).
    pub name: String,
    /// What the key may do; at least one.
    pub scopes: Vec<ScopeName>,
}

/// An API key, without its secret.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiKey {
    /// The public id (in the key after `mly_`).
    pub id: String,
    pub tenant: String,
    pub name: String,
    pub scopes: Vec<String>,
    pub created_at: String,
    /// When the key last authenticated a request (recorded at most once a minute).
    pub last_used_at: Option<String>,
    /// When the key was revoked; a revoked key never authenticates again.
    pub revoked_at: Option<String>,
    /// The tenant key that issued it (absent when an operator did): revoking that
    /// key revoked or will revoke this one too.
    pub issued_by: Option<String>,
}

impl From<&ApiKeyRecord> for ApiKey {
    fn from(k: &ApiKeyRecord) -> Self {
        ApiKey {
            id: k.id.clone(),
            tenant: k.tenant.to_string(),
            name: k.name.clone(),
            scopes: k.scopes.clone(),
            created_at: k.created_at.to_rfc3339(),
            last_used_at: k.last_used_at.map(|t| t.to_rfc3339()),
            revoked_at: k.revoked_at.map(|t| t.to_rfc3339()),
            issued_by: k.issued_by.clone(),
        }
    }
}

/// A new API key with its secret: shown this once, never again.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedApiKey {
    /// The whole key, `mly_<id>_<secret>`, to send as `Authorization: Bearer <key>`.
    pub key: String,
    pub id: String,
    pub tenant: String,
    pub name: String,
    pub scopes: Vec<String>,
    pub created_at: String,
}

/// A tenant's API keys.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiKeyList {
    pub keys: Vec<ApiKey>,
}

#[utoipa::path(
    get,
    path = "/v1/tenants",
    tag = "tenants",
    operation_id = "listTenants",
    responses((status = 200, description = "Every tenant, by id", body = TenantList))
)]
/// Lists every tenant (operators, `admin`).
pub async fn list(state: web::Data<State>, caller: Caller) -> Result<HttpResponse, Problem> {
    operator(&caller.0, Scope::Admin)?;
    let tenants = run(&state, |s| async move {
        s.store.tenants().await.map_err(problem::store)
    })
    .await?;
    Ok(ok(&TenantList {
        tenants: tenants.iter().map(Tenant::from).collect(),
    }))
}

#[utoipa::path(
    get,
    path = "/v1/tenants/{tenant}",
    tag = "tenants",
    operation_id = "getTenant",
    params(TenantPath),
    responses((status = 200, description = "The tenant", body = Tenant))
)]
/// One tenant (`read`; a tenant's principals see their own).
pub async fn get(
    state: web::Data<State>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, Problem> {
    let tenant = path.into_inner();
    let record = run(&state, |s| async move {
        let id = tenant_for(&s, &caller.0, Scope::Read, &tenant).await?;
        s.store
            .tenant(&id)
            .await
            .map_err(problem::store)?
            .ok_or_else(|| Problem::not_found(format!("tenant {id} not found")))
    })
    .await?;
    Ok(ok(&Tenant::from(&record)))
}

#[utoipa::path(
    put,
    path = "/v1/tenants/{tenant}",
    tag = "tenants",
    operation_id = "putTenant",
    params(TenantPath),
    request_body = PutTenant,
    responses(
        (status = 201, description = "Created", body = Tenant),
        (status = 200, description = "Renamed", body = Tenant),
    )
)]
/// Creates a tenant, or renames it (operators, `admin`).
pub async fn put(
    state: web::Data<State>,
    caller: Caller,
    path: web::Path<String>,
    body: Json<PutTenant>,
) -> Result<HttpResponse, Problem> {
    operator(&caller.0, Scope::Admin)?;
    let id = TenantId::parse(&path.into_inner())
        .map_err(|e| Problem::bad_field("tenant", e.to_string()))?;
    let name = body.into_inner().name.trim().to_string();
    if name.is_empty()
        || name.chars().count() > MAX_TENANT_NAME_CHARS
        || name.chars().any(char::is_control)
    {
        return Err(Problem::invalid(
            "name",
            format!("must be 1-{MAX_TENANT_NAME_CHARS} characters without control characters"),
        ));
    }
    let (created, record) = run(&state, move |s| async move {
        let existed = s.store.tenant(&id).await.map_err(problem::store)?.is_some();
        s.store
            .upsert_tenant(&id, &name)
            .await
            .map_err(problem::store)?;
        let record = s
            .store
            .tenant(&id)
            .await
            .map_err(problem::store)?
            .ok_or_else(|| Problem::internal(format!("tenant {id} vanished after its upsert")))?;
        Ok((!existed, record))
    })
    .await?;
    info!(tenant = %record.id, created, caller = %caller.0.subject, "tenant stored");
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(json(status, &Tenant::from(&record)))
}

#[utoipa::path(
    post,
    path = "/v1/tenants/{tenant}/api-keys",
    tag = "tenants",
    operation_id = "createApiKey",
    params(TenantPath),
    request_body = NewApiKey,
    responses((status = 201, description = "The key, with its secret (shown once)", body = CreatedApiKey))
)]
/// Issues an API key for the tenant (`admin`: operators, or the tenant's own; only
/// operators issue keys with the `admin` scope).
pub async fn create_key(
    state: web::Data<State>,
    caller: Caller,
    path: web::Path<String>,
    body: Json<NewApiKey>,
) -> Result<HttpResponse, Problem> {
    let tenant = path.into_inner();
    let NewApiKey { name, scopes } = body.into_inner();
    let scopes: Vec<Scope> = scopes.into_iter().map(Scope::from).collect();
    let created = run(&state, move |s| async move {
        let tenant = tenant_for(&s, &caller.0, Scope::Admin, &tenant).await?;
        // A tenant's admin key may issue keys that send and read, never another admin
        // key: that would outlive the issuer's revocation.
        if scopes.contains(&Scope::Admin) && !caller.0.is_operator() {
            return Err(Problem::forbidden(
                "only an operator issues keys with the admin scope",
            ));
        }
        let (mut record, plain) = keys::generate(&tenant, &name, &scopes).map_err(|e| match e {
            keys::KeyError::InvalidName => Problem::invalid("name", e.to_string()),
            keys::KeyError::NoScopes => Problem::invalid("scopes", e.to_string()),
            keys::KeyError::Random(_) => Problem::internal(e),
        })?;
        // A key issued by a tenant key dies with it: revoking the issuer revokes it.
        if let crate::auth::Subject::ApiKey { id } = &caller.0.subject {
            record.issued_by = Some(id.clone());
        }
        s.store
            .create_api_key(&record)
            .await
            .map_err(problem::store)?;
        info!(key = %record.id, tenant = %tenant, caller = %caller.0.subject, "api key issued");
        Ok(CreatedApiKey {
            key: plain.into_string(),
            id: record.id,
            tenant: tenant.to_string(),
            name: record.name,
            scopes: record.scopes,
            created_at: record.created_at.to_rfc3339(),
        })
    })
    .await?;
    Ok(json(StatusCode::CREATED, &created))
}

#[utoipa::path(
    get,
    path = "/v1/tenants/{tenant}/api-keys",
    tag = "tenants",
    operation_id = "listApiKeys",
    params(TenantPath),
    responses((status = 200, description = "The tenant's keys, revoked ones included, without secrets", body = ApiKeyList))
)]
/// Lists the tenant's API keys (`admin`).
pub async fn list_keys(
    state: web::Data<State>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, Problem> {
    let tenant = path.into_inner();
    let keys = run(&state, move |s| async move {
        let tenant = tenant_for(&s, &caller.0, Scope::Admin, &tenant).await?;
        s.store.api_keys(&tenant).await.map_err(problem::store)
    })
    .await?;
    Ok(ok(&ApiKeyList {
        keys: keys.iter().map(ApiKey::from).collect(),
    }))
}

#[utoipa::path(
    delete,
    path = "/v1/tenants/{tenant}/api-keys/{key}",
    tag = "tenants",
    operation_id = "revokeApiKey",
    params(KeyPath),
    responses(
        (status = 204, description = "Revoked, with the keys it issued (revoking again keeps the first time)"),
        (status = 404, description = "The tenant has no such key", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
/// Revokes an API key of the tenant (`admin`) and every key it issued; they fail from
/// the next request on.
pub async fn revoke_key(
    state: web::Data<State>,
    caller: Caller,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, Problem> {
    let (tenant, key) = path.into_inner();
    run(&state, move |s| async move {
        let tenant = tenant_for(&s, &caller.0, Scope::Admin, &tenant).await?;
        let revoked = s
            .store
            .revoke_api_key(&tenant, &key, maily_engine::Timestamp::now())
            .await
            .map_err(problem::store)?;
        if !revoked {
            return Err(Problem::not_found(format!("API key {key} not found")));
        }
        info!(key = %key, tenant = %tenant, caller = %caller.0.subject, "api key revoked");
        Ok(())
    })
    .await?;
    Ok(no_content())
}
