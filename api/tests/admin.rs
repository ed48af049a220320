//! The admin REST API end to end: the real actix-web server on a port-0 socket, a real
//! HTTP client, a fresh SQLite store, the embedded event log and hot state per test.
//!
//! Throttles and engine status are in-test implementations of the traits here (this
//! crate knows neither the transport nor the actors): these tests check the HTTP
//! mapping; `tests/admin.rs` of the root crate checks the real ones in `maily serve`.
//! Operators authenticate with JWTs signed by the test keys of `tests/fixtures/jwt/`,
//! served from a JWKS endpoint on 127.0.0.1 like in `tests/jwt.rs`.

use jsonwebtoken::jwk::{Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use maily_api::admin::{
    self, AdminDeps, EngineStatus, EngineStatusReport, StatusError, ThrottleControl, ThrottleEntry,
    ThrottleError, ThrottleKind, ThrottleLimit, ThrottleTable,
};
use maily_api::auth::{Authenticator, JwksValidator, JwtSettings, Scope, keys};
use maily_api::events::EventHub;
use maily_api::grpc::proto::GetCampaignStatsRequest;
use maily_api::grpc::proto::campaign_service_client::CampaignServiceClient;
use maily_api::intake::Intake;
use maily_engine::merkle::CampaignLeaf;
use maily_engine::ports::prelude::*;
use maily_engine::ports::{
    AggregateBatch, EventLog, HotState, LedgerEntry, Settlement, SettlementEntry, Store,
    StoredProof,
};
use maily_engine::records::topics;
use maily_engine::{CampaignId, CampaignStats, EmailAddress, TenantId, Timestamp};
use maily_eventlog::MemoryLog;
use maily_storage::{MemoryHotState, SqliteStore};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const PARTITIONS: u32 = 4;
const ISSUER: &str = "https://idp.maily.test/";
const AUDIENCE: &str = "https://admin.maily.test";
const ROLES: &str = "https://maily.dev/roles";
const TENANT_CLAIM: &str = "https://maily.dev/tenant";
const RSA_IDP: &[u8] = include_bytes!("fixtures/jwt/rsa-idp.pem");
const EC_IDP: &[u8] = include_bytes!("fixtures/jwt/ec-idp.pem");
const RSA_ATTACKER: &[u8] = include_bytes!("fixtures/jwt/rsa-attacker.pem");

// ---- the identity provider ----

struct SigningKey {
    kid: &'static str,
    alg: Algorithm,
    key: EncodingKey,
}

impl SigningKey {
    fn jwk(&self) -> Value {
        let mut jwk = Jwk::from_encoding_key(&self.key, self.alg).expect("public JWK");
        jwk.common.key_id = Some(self.kid.to_string());
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        serde_json::to_value(jwk).unwrap()
    }

    fn sign(&self, claims: &Value) -> String {
        let header = Header {
            kid: Some(self.kid.to_string()),
            ..Header::new(self.alg)
        };
        jsonwebtoken::encode(&header, claims, &self.key).expect("signing a test token")
    }
}

fn rsa_key() -> SigningKey {
    SigningKey {
        kid: "rsa-1",
        alg: Algorithm::RS256,
        key: EncodingKey::from_rsa_pem(RSA_IDP).unwrap(),
    }
}

fn ec_key() -> SigningKey {
    SigningKey {
        kid: "ec-1",
        alg: Algorithm::ES256,
        key: EncodingKey::from_ec_pem(EC_IDP).unwrap(),
    }
}

/// Signs with a key that is not in the JWKS, under a kid that is.
fn attacker_key() -> SigningKey {
    SigningKey {
        kid: "rsa-1",
        alg: Algorithm::RS256,
        key: EncodingKey::from_rsa_pem(RSA_ATTACKER).unwrap(),
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Claims of a valid token with `roles`, for `tenant` or (None) an operator, who also
/// carries the operator role.
fn claims(roles: &[&str], tenant: Option<&str>) -> Value {
    let mut roles: Vec<&str> = roles.to_vec();
    if tenant.is_none() {
        roles.push("operator");
    }
    let mut c = json!({
        "iss": ISSUER,
        "aud": [AUDIENCE],
        "sub": "auth0|ops",
        "iat": now(),
        "exp": now() + 600,
        ROLES: roles,
    });
    if let Some(t) = tenant {
        c[TENANT_CLAIM] = json!(t);
    }
    c
}

/// Serves a JWKS of the RSA and EC keys on 127.0.0.1; returns its URL.
async fn start_idp() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/.well-known/jwks.json",
        listener.local_addr().unwrap()
    );
    let body = json!({ "keys": [rsa_key().jwk(), ec_key().jwk()] }).to_string();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let body = body.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
                     connection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(response.as_bytes()).await;
                let _ = conn.shutdown().await;
            });
        }
    });
    url
}

// ---- in-test engine controls ----

/// Throttles kept in a table, as the transport would.
#[derive(Default)]
struct TableThrottles(Mutex<BTreeMap<(ThrottleKind, Option<String>), ThrottleLimit>>);

impl ThrottleControl for TableThrottles {
    fn limits(&self) -> ThrottleTable {
        let mut table = ThrottleTable::default();
        for ((kind, name), limit) in self.0.lock().unwrap().iter() {
            let entry = ThrottleEntry {
                kind: *kind,
                name: name.clone(),
                limit: limit.clone(),
            };
            match name {
                None => table.defaults.push(entry),
                Some(_) => table.scopes.push(entry),
            }
        }
        table
    }

    fn set(
        &self,
        kind: ThrottleKind,
        name: Option<&str>,
        limit: &ThrottleLimit,
    ) -> Result<(), ThrottleError> {
        if limit.rate.as_deref() == Some("7/h") {
            return Err(ThrottleError {
                field: "rate",
                reason: "the transport refuses 7/h".into(),
            });
        }
        self.0
            .lock()
            .unwrap()
            .insert((kind, name.map(str::to_string)), limit.clone());
        Ok(())
    }

    fn clear(&self, kind: ThrottleKind, name: &str) -> bool {
        self.0
            .lock()
            .unwrap()
            .remove(&(kind, Some(name.to_string())))
            .is_some()
    }
}

/// Status from the real log's offsets and fixed ownership.
struct LogStatus(Arc<MemoryLog>);

#[async_trait::async_trait]
impl EngineStatus for LogStatus {
    async fn status(&self) -> Result<EngineStatusReport, StatusError> {
        let consumers = vec![("sender".to_string(), topics::SEND.to_string())];
        let queues = admin::control::queue_depths(&*self.0, &consumers, PARTITIONS)
            .await
            .map_err(|e| StatusError::Unavailable(e.to_string()))?;
        Ok(EngineStatusReport {
            member: "test-member".into(),
            partitions: PARTITIONS,
            owned_partitions: vec![0, 1, 2, 3],
            leader: true,
            actor_restarts: 0,
            queues,
        })
    }
}

// ---- the server ----

struct Server {
    base: String,
    http: reqwest::Client,
    store: Arc<SqliteStore>,
    log: Arc<MemoryLog>,
    hot: Arc<MemoryHotState>,
    auth: Arc<Authenticator>,
    /// Tenant `metered` has an allowance of 100 at once, 1 an hour; others none.
    quotas: Arc<maily_api::quota::Quotas>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// A response: status, headers and the body as JSON (`Null` when empty).
struct Reply {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    body: Value,
    text: String,
}

impl Reply {
    /// The fields a problem names.
    fn fields(&self) -> Vec<String> {
        self.body["errors"]
            .as_array()
            .map(|e| {
                e.iter()
                    .map(|f| f["field"].as_str().unwrap().to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn is_problem(&self) -> bool {
        self.headers
            .get(CONTENT_TYPE)
            .is_some_and(|v| v == "application/problem+json")
            && self.body["status"] == self.status.as_u16()
            && self.body["type"]
                .as_str()
                .is_some_and(|t| t.starts_with("https://maily.dev/problems/"))
    }
}

impl Server {
    async fn start() -> Server {
        Self::start_with(None).await
    }

    async fn start_with(jwks_url: Option<String>) -> Server {
        let log = Arc::new(MemoryLog::new(10_000));
        for topic in [topics::SEND, topics::EVENTS] {
            log.ensure_topic(topic, PARTITIONS).await.unwrap();
        }
        let store = Arc::new(SqliteStore::open_temp().await.expect("sqlite store"));
        let hot = Arc::new(MemoryHotState::new());
        let jwt = jwks_url.map(|url| {
            JwksValidator::new(JwtSettings {
                roles_claim: ROLES.into(),
                tenant_claim: TENANT_CLAIM.into(),
                ..JwtSettings::new(url, ISSUER, AUDIENCE)
            })
            .unwrap()
        });
        let auth = Arc::new(Authenticator::new(store.clone(), jwt));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let quotas = Arc::new(maily_api::quota::Quotas::new(
            None,
            std::collections::HashMap::from([(
                TenantId::parse("metered").unwrap(),
                maily_api::quota::Quota {
                    rate: "1/h".parse().unwrap(),
                    burst: 100,
                },
            )]),
        ));
        let deps = AdminDeps {
            intake: Arc::new(Intake::new(log.clone(), store.clone())),
            store: store.clone(),
            hot: Some(hot.clone()),
            auth: auth.clone(),
            throttles: Arc::new(TableThrottles::default()),
            status: Arc::new(LogStatus(log.clone())),
            quotas: quotas.clone(),
            // No DNS here: the DNS check and keys are tested on `maily serve`
            // (tests/security.rs); operators verify with `?force=true`.
            domains: None,
            hosts: Default::default(),
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(admin::serve(listener, deps, async {
            let _ = stopped.await;
        }));
        Server {
            base,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            store,
            log,
            hot,
            auth,
            quotas,
            stop,
            task,
        }
    }

    async fn shut_down(self) {
        self.stop.send(()).unwrap();
        self.task.await.unwrap().expect("admin api stops cleanly");
    }

    /// Stores a tenant, with its verified sending domain: `shop.example` for acme,
    /// `<id>.example` for the others.
    async fn tenant(&self, id: &str) -> TenantId {
        let t = TenantId::parse(id).unwrap();
        self.store.upsert_tenant(&t, id).await.unwrap();
        maily_engine::testkit::sending_domain(self.store.as_ref(), &t, &sending_domain_of(id))
            .await;
        t
    }

    /// A new API key of `tenant`, stored directly.
    async fn key(&self, tenant: &str, scopes: &[Scope]) -> String {
        let (record, plain) =
            keys::generate(&TenantId::parse(tenant).unwrap(), "test", scopes).unwrap();
        self.store.create_api_key(&record).await.unwrap();
        plain.into_string()
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        credential: Option<&str>,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Reply {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .body(body);
        if let Some(c) = credential {
            req = req.header(AUTHORIZATION, format!("Bearer {c}"));
        }
        if let Some(t) = content_type {
            req = req.header(CONTENT_TYPE, t);
        }
        let response = req.send().await.expect("request");
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::Null)
        };
        Reply {
            status,
            headers,
            body,
            text,
        }
    }

    async fn get(&self, path: &str, credential: &str) -> Reply {
        self.send(Method::GET, path, Some(credential), None, Vec::new())
            .await
    }

    async fn delete(&self, path: &str, credential: &str) -> Reply {
        self.send(Method::DELETE, path, Some(credential), None, Vec::new())
            .await
    }

    async fn call(&self, method: Method, path: &str, credential: &str, body: Value) -> Reply {
        self.send(
            method,
            path,
            Some(credential),
            Some("application/json"),
            serde_json::to_vec(&body).unwrap(),
        )
        .await
    }

    async fn post(&self, path: &str, credential: &str, body: Value) -> Reply {
        self.call(Method::POST, path, credential, body).await
    }

    async fn put(&self, path: &str, credential: &str, body: Value) -> Reply {
        self.call(Method::PUT, path, credential, body).await
    }

    async fn csv(&self, path: &str, credential: &str, csv: &str) -> Reply {
        self.send(
            Method::POST,
            path,
            Some(credential),
            Some("text/csv"),
            csv.as_bytes().to_vec(),
        )
        .await
    }
}

/// The sending domain [`Server::tenant`] gives tenant `id`.
fn sending_domain_of(id: &str) -> String {
    if id == "acme" {
        "shop.example".into()
    } else {
        format!("{id}.example")
    }
}

fn campaign_input(name: &str) -> Value {
    json!({
        "name": name,
        "from": "news@shop.example",
        "from_name": "Shop",
        "template": { "subject": "Hello {{ first_name }}", "text": "Hi {{ first_name }}" }
    })
}

/// Creates a campaign of `tenant` with `key`; returns its id.
async fn campaign(s: &Server, tenant: &str, key: &str) -> String {
    let mut input = campaign_input("Spring sale");
    input["from"] = json!(format!("news@{}", sending_domain_of(tenant)));
    let r = s
        .post(&format!("/v1/tenants/{tenant}/campaigns"), key, input)
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    r.body["id"].as_str().unwrap().to_string()
}

// ---- the tests ----

#[tokio::test]
async fn the_openapi_document_is_valid_and_lists_every_route() {
    let s = Server::start().await;
    let health = s
        .send(Method::GET, "/healthz", None, None, Vec::new())
        .await;
    assert_eq!(health.status, StatusCode::OK);
    let r = s
        .send(Method::GET, "/openapi.json", None, None, Vec::new())
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let doc = &r.body;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for (method, path) in admin::ROUTES {
        assert!(
            doc["paths"][*path][*method].is_object(),
            "{method} {path} is registered but not documented"
        );
    }

    // An independent validator: openapi-spec-validator (scripts/python-tools.sh).
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, &r.text).unwrap();
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_string());
    let output = std::process::Command::new(&python)
        .args(["-m", "openapi_spec_validator"])
        .arg(&file)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python} ({e}): run scripts/python-tools.sh"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !stderr.contains("No module named openapi_spec_validator"),
        "openapi-spec-validator is missing for {python}: run scripts/python-tools.sh"
    );
    assert!(
        output.status.success(),
        "openapi-spec-validator refused the document:\n{stdout}\n{stderr}"
    );
    s.shut_down().await;
}

#[tokio::test]
async fn api_keys_show_their_secret_once_and_fail_once_revoked() {
    let s = Server::start().await;
    s.tenant("acme").await;
    let admin_key = s.key("acme", &[Scope::Admin, Scope::Read]).await;

    let none = s
        .send(Method::GET, "/v1/tenants/acme", None, None, Vec::new())
        .await;
    assert_eq!(none.status, StatusCode::UNAUTHORIZED);
    assert!(none.is_problem(), "{}", none.text);
    assert_eq!(none.headers[WWW_AUTHENTICATE], "Bearer realm=\"maily\"");

    let created = s
        .post(
            "/v1/tenants/acme/api-keys",
            &admin_key,
            json!({"name": "ci", "scopes": ["read", "send"]}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let secret = created.body["key"].as_str().unwrap().to_string();
    let id = created.body["id"].as_str().unwrap().to_string();
    assert!(secret.starts_with(&format!("mly_{id}_")));
    assert_eq!(created.body["scopes"], json!(["send", "read"]));

    let listed = s.get("/v1/tenants/acme/api-keys", &admin_key).await;
    assert_eq!(listed.status, StatusCode::OK);
    assert_eq!(listed.body["keys"].as_array().unwrap().len(), 2);
    let secret_part = secret.rsplit('_').next().unwrap();
    assert!(
        !listed.text.contains(secret_part),
        "a listing never holds a secret"
    );
    assert!(listed.body["keys"][1].get("key").is_none());

    assert_eq!(
        s.get("/v1/tenants/acme", &secret).await.status,
        StatusCode::OK
    );
    let bad_scopes = s
        .post(
            "/v1/tenants/acme/api-keys",
            &admin_key,
            json!({"name": "x", "scopes": ["root"]}),
        )
        .await;
    assert_eq!(bad_scopes.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad_scopes.fields(), ["scopes[0]"], "{}", bad_scopes.text);
    let no_scopes = s
        .post(
            "/v1/tenants/acme/api-keys",
            &admin_key,
            json!({"name": "x", "scopes": []}),
        )
        .await;
    assert_eq!(no_scopes.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(no_scopes.fields(), ["scopes"]);
    // A tenant's admin key cannot issue another admin key.
    let escalate = s
        .post(
            "/v1/tenants/acme/api-keys",
            &admin_key,
            json!({"name": "x", "scopes": ["admin", "read"]}),
        )
        .await;
    assert_eq!(escalate.status, StatusCode::FORBIDDEN, "{}", escalate.text);
    assert!(
        escalate.text.contains("only an operator"),
        "{}",
        escalate.text
    );
    // A key without admin cannot issue keys.
    let refused = s
        .post(
            "/v1/tenants/acme/api-keys",
            &secret,
            json!({"name": "x", "scopes": ["admin"]}),
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert!(
        refused.headers[WWW_AUTHENTICATE]
            .to_str()
            .unwrap()
            .contains("insufficient_scope")
    );

    let revoked = s
        .delete(&format!("/v1/tenants/acme/api-keys/{id}"), &admin_key)
        .await;
    assert_eq!(revoked.status, StatusCode::NO_CONTENT);
    let after = s.get("/v1/tenants/acme", &secret).await;
    assert_eq!(after.status, StatusCode::UNAUTHORIZED);
    assert_eq!(after.body["detail"], "API key revoked");
    assert!(
        after.headers[WWW_AUTHENTICATE]
            .to_str()
            .unwrap()
            .contains("invalid_token")
    );
    let unknown = s
        .delete("/v1/tenants/acme/api-keys/0123456789abcdef", &admin_key)
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    let listed = s.get("/v1/tenants/acme/api-keys", &admin_key).await;
    assert!(listed.body["keys"][1]["revoked_at"].is_string());
    s.shut_down().await;
}

/// A key issued by a tenant's admin key is revoked with it: revoking the admin key
/// (say, of someone who left) leaves no key it made behind. Keys an operator issued
/// are untouched.
#[tokio::test]
async fn revoking_a_key_revokes_the_keys_it_issued() {
    let s = Server::start().await;
    s.tenant("acme").await;
    let admin_key = s.key("acme", &[Scope::Admin, Scope::Read]).await;
    let other_admin = s.key("acme", &[Scope::Admin, Scope::Read]).await;
    let issue = |by: String, name: &'static str| {
        let s = &s;
        async move {
            let created = s
                .post(
                    "/v1/tenants/acme/api-keys",
                    &by,
                    json!({"name": name, "scopes": ["read", "send"]}),
                )
                .await;
            assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
            (
                created.body["key"].as_str().unwrap().to_string(),
                created.body["id"].as_str().unwrap().to_string(),
            )
        }
    };
    let (made, made_id) = issue(admin_key.clone(), "ci").await;
    let (kept, _) = issue(other_admin.clone(), "billing").await;
    let admin_id = admin_key
        .strip_prefix("mly_")
        .and_then(|k| k.split('_').next())
        .unwrap()
        .to_string();
    let listed = s.get("/v1/tenants/acme/api-keys", &other_admin).await;
    let entry = listed.body["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == made_id.as_str())
        .unwrap()
        .clone();
    assert_eq!(entry["issued_by"], admin_id.as_str(), "{entry}");

    let revoked = s
        .delete(
            &format!("/v1/tenants/acme/api-keys/{admin_id}"),
            &other_admin,
        )
        .await;
    assert_eq!(revoked.status, StatusCode::NO_CONTENT, "{}", revoked.text);
    for (key, works) in [
        (&admin_key, false),
        (&made, false),
        (&kept, true),
        (&other_admin, true),
    ] {
        let answer = s.get("/v1/tenants/acme", key).await;
        let expected = if works {
            StatusCode::OK
        } else {
            StatusCode::UNAUTHORIZED
        };
        assert_eq!(answer.status, expected, "{}", answer.text);
    }
    s.shut_down().await;
}

#[tokio::test]
async fn a_tenant_cannot_reach_another_tenants_campaigns() {
    let s = Server::start().await;
    s.tenant("acme").await;
    s.tenant("beta").await;
    let acme = s.key("acme", &[Scope::Send, Scope::Read]).await;
    let beta = s
        .key("beta", &[Scope::Send, Scope::Read, Scope::Admin])
        .await;
    let id = campaign(&s, "acme", &acme).await;
    let unknown = CampaignId::new().to_string();

    // Under beta's own tenant, acme's campaign answers exactly like an unknown one.
    for (method, suffix, body) in [
        (Method::GET, "", None),
        (Method::PUT, "", Some(campaign_input("Mine now"))),
        (Method::POST, "/pause", None),
        (Method::POST, "/cancel", None),
        (Method::GET, "/stats", None),
        (
            Method::POST,
            "/recipients",
            Some(json!([{"email": "x@example.org"}])),
        ),
    ] {
        let mut details = Vec::new();
        for campaign in [&id, &unknown] {
            let path = format!("/v1/tenants/beta/campaigns/{campaign}{suffix}");
            let r = match &body {
                Some(b) => s.call(method.clone(), &path, &beta, b.clone()).await,
                None => {
                    s.send(method.clone(), &path, Some(&beta), None, Vec::new())
                        .await
                }
            };
            assert_eq!(
                r.status,
                StatusCode::NOT_FOUND,
                "{method} {path}: {}",
                r.text
            );
            assert!(r.is_problem());
            details.push(
                r.body["detail"]
                    .as_str()
                    .unwrap()
                    .replace(campaign.as_str(), "ID"),
            );
        }
        assert_eq!(details[0], details[1], "{method} {suffix}");
    }
    // Naming acme is refused outright, whatever the route.
    for path in [
        format!("/v1/tenants/acme/campaigns/{id}"),
        "/v1/tenants/acme/campaigns".to_string(),
        "/v1/tenants/acme".to_string(),
        "/v1/tenants/acme/contacts".to_string(),
        "/v1/tenants/acme/api-keys".to_string(),
    ] {
        let r = s.get(&path, &beta).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{path}: {}", r.text);
        assert_eq!(r.body["detail"], "not allowed for this tenant");
    }
    let pause = s
        .send(
            Method::POST,
            &format!("/v1/tenants/acme/campaigns/{id}/pause"),
            Some(&beta),
            None,
            Vec::new(),
        )
        .await;
    assert_eq!(pause.status, StatusCode::FORBIDDEN);
    // A tenant admin is no operator.
    assert_eq!(
        s.get("/v1/tenants", &beta).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        s.get("/v1/throttles", &beta).await.status,
        StatusCode::FORBIDDEN
    );
    // Acme's campaign is untouched.
    let mine = s
        .get(&format!("/v1/tenants/acme/campaigns/{id}"), &acme)
        .await;
    assert_eq!(mine.body["status"], "draft");
    assert_eq!(mine.body["name"], "Spring sale");
    s.shut_down().await;
}

#[tokio::test]
async fn jwts_are_checked_and_roles_become_scopes() {
    let idp = start_idp().await;
    let s = Server::start_with(Some(idp)).await;
    s.tenant("acme").await;
    s.tenant("beta").await;

    let operator = rsa_key().sign(&claims(&["admin", "read", "send"], None));
    let tenants = s.get("/v1/tenants", &operator).await;
    assert_eq!(tenants.status, StatusCode::OK, "{}", tenants.text);
    assert_eq!(tenants.body["tenants"].as_array().unwrap().len(), 2);
    let created = s
        .put("/v1/tenants/gamma", &operator, json!({"name": "Gamma"}))
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    let renamed = s
        .put("/v1/tenants/gamma", &operator, json!({"name": "Gamma Ltd"}))
        .await;
    assert_eq!(renamed.status, StatusCode::OK);
    assert_eq!(renamed.body["name"], "Gamma Ltd");
    // Operators act on every tenant.
    let id = campaign(&s, "beta", &operator).await;
    let key = s
        .post(
            "/v1/tenants/beta/api-keys",
            &operator,
            json!({"name": "beta ops", "scopes": ["read"]}),
        )
        .await;
    assert_eq!(key.status, StatusCode::CREATED);

    // An ES256 token of a tenant user with the read role only.
    let reader = ec_key().sign(&claims(&["read", "billing"], Some("beta")));
    let got = s
        .get(&format!("/v1/tenants/beta/campaigns/{id}"), &reader)
        .await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.text);
    let paused = s
        .send(
            Method::POST,
            &format!("/v1/tenants/beta/campaigns/{id}/start"),
            Some(&reader),
            None,
            Vec::new(),
        )
        .await;
    assert_eq!(paused.status, StatusCode::FORBIDDEN, "no send role");
    assert_eq!(
        s.get("/v1/tenants/acme", &reader).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        s.get("/v1/status", &reader).await.status,
        StatusCode::FORBIDDEN
    );

    let mut expired = claims(&["admin"], None);
    expired["exp"] = json!(now() - 3600);
    let mut other_audience = claims(&["admin"], None);
    other_audience["aud"] = json!("https://grpc.maily.test");
    for (what, token, detail) in [
        ("expired", rsa_key().sign(&expired), "token expired"),
        (
            "wrong audience",
            rsa_key().sign(&other_audience),
            "invalid token",
        ),
        (
            "wrongly signed",
            attacker_key().sign(&claims(&["admin"], None)),
            "invalid token",
        ),
        ("not a token", "a.b.c".to_string(), "invalid token"),
    ] {
        let r = s.get("/v1/tenants", &token).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{what}: {}", r.text);
        assert_eq!(r.body["detail"], detail, "{what}");
        assert!(r.headers.contains_key(WWW_AUTHENTICATE), "{what}");
    }
    s.shut_down().await;
}

#[tokio::test]
async fn malformed_bodies_and_parameters_are_problems_naming_the_field() {
    let s = Server::start().await;
    s.tenant("acme").await;
    let key = s.key("acme", &[Scope::Send, Scope::Read]).await;
    let path = "/v1/tenants/acme/campaigns";

    let mut unknown = campaign_input("x");
    unknown["nmae"] = json!("typo");
    let r = s.post(path, &key, unknown).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.is_problem());
    assert_eq!(r.fields(), ["nmae"]);
    assert!(
        r.body["detail"]
            .as_str()
            .unwrap()
            .contains("unknown field `nmae`")
    );

    let mut nested = campaign_input("x");
    nested["template"]["subject"] = json!(42);
    let r = s.post(path, &key, nested).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.fields(), ["template.subject"]);
    assert!(r.body["detail"].as_str().unwrap().contains("line 1 column"));

    let mut missing = campaign_input("x");
    missing.as_object_mut().unwrap().remove("from");
    assert_eq!(s.post(path, &key, missing).await.fields(), ["from"]);

    let broken = s
        .send(
            Method::POST,
            path,
            Some(&key),
            Some("application/json"),
            b"{\"name\": ".to_vec(),
        )
        .await;
    assert_eq!(broken.status, StatusCode::BAD_REQUEST);
    assert!(
        broken.body["detail"]
            .as_str()
            .unwrap()
            .contains("not valid JSON")
    );

    let mut invalid = campaign_input("x");
    invalid["from"] = json!("not an address");
    let r = s.post(path, &key, invalid).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.fields(), ["from"]);
    let mut bad_template = campaign_input("x");
    bad_template["template"]["text"] = json!("{{ unclosed");
    let r = s.post(path, &key, bad_template).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.fields(), ["template.text"]);

    let form = s
        .send(
            Method::POST,
            path,
            Some(&key),
            Some("application/x-www-form-urlencoded"),
            b"name=x".to_vec(),
        )
        .await;
    assert_eq!(form.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(form.is_problem());
    let huge = s
        .send(
            Method::POST,
            path,
            Some(&key),
            Some("application/json"),
            vec![b' '; 2 * 1024 * 1024],
        )
        .await;
    assert_eq!(huge.status, StatusCode::PAYLOAD_TOO_LARGE);

    let query = s.get(&format!("{path}?status=sleeping"), &key).await;
    assert_eq!(query.status, StatusCode::BAD_REQUEST);
    assert_eq!(query.fields(), ["status"]);
    let extra = s.get(&format!("{path}?colour=red"), &key).await;
    assert_eq!(extra.fields(), ["colour"]);
    let bad_id = s.get(&format!("{path}/not-a-uuid"), &key).await;
    assert_eq!(bad_id.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad_id.fields(), ["campaign"]);
    let limit = s.get("/v1/tenants/acme/contacts?limit=many", &key).await;
    assert_eq!(limit.fields(), ["limit"]);

    let no_route = s.get("/v1/nothing-here", &key).await;
    assert_eq!(no_route.status, StatusCode::NOT_FOUND);
    assert!(no_route.is_problem());
    let wrong_method = s.delete(path, &key).await;
    assert_eq!(wrong_method.status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(wrong_method.is_problem());
    s.shut_down().await;
}

#[tokio::test]
async fn campaign_commands_follow_the_life_cycle() {
    let s = Server::start().await;
    s.tenant("acme").await;
    let key = s.key("acme", &[Scope::Send, Scope::Read]).await;
    let id = campaign(&s, "acme", &key).await;
    let base = format!("/v1/tenants/acme/campaigns/{id}");
    let command = |c: &'static str| {
        let path = format!("{base}/{c}");
        let s = &s;
        let key = key.clone();
        async move {
            s.send(Method::POST, &path, Some(&key), None, Vec::new())
                .await
        }
    };

    let r = command("pause").await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert!(r.is_problem());
    assert_eq!(r.body["campaign_status"], "draft");
    let past = s
        .post(
            &format!("{base}/schedule"),
            &key,
            json!({"start_at": "2001-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(past.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(past.fields(), ["start_at"]);
    let scheduled = s
        .post(
            &format!("{base}/schedule"),
            &key,
            json!({"start_at": "2099-01-01T09:00:00Z"}),
        )
        .await;
    assert_eq!(scheduled.status, StatusCode::OK, "{}", scheduled.text);
    assert_eq!(scheduled.body["status"], "scheduled");
    assert_eq!(
        scheduled.body["scheduled_at"],
        json!(
            Timestamp::parse_rfc3339("2099-01-01T09:00:00Z")
                .unwrap()
                .to_rfc3339()
        )
    );
    assert_eq!(command("start").await.body["status"], "running");
    assert_eq!(command("pause").await.body["status"], "paused");
    assert_eq!(command("resume").await.body["status"], "running");
    let running = s
        .get("/v1/tenants/acme/campaigns?status=running", &key)
        .await;
    assert_eq!(running.body["campaigns"].as_array().unwrap().len(), 1);
    let drafts = s.get("/v1/tenants/acme/campaigns?status=draft", &key).await;
    assert_eq!(drafts.body["campaigns"], json!([]));
    let updated = s.put(&base, &key, campaign_input("Summer sale")).await;
    assert_eq!(updated.status, StatusCode::OK);
    assert_eq!(updated.body["name"], "Summer sale");
    assert_eq!(command("cancel").await.body["status"], "cancelled");
    let again = command("cancel").await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert_eq!(again.body["campaign_status"], "cancelled");
    let frozen = s.put(&base, &key, campaign_input("Autumn sale")).await;
    assert_eq!(frozen.status, StatusCode::CONFLICT);
    let recipients = s
        .post(
            &format!("{base}/recipients"),
            &key,
            json!([{"email": "a@example.org"}]),
        )
        .await;
    assert_eq!(recipients.status, StatusCode::CONFLICT);
    let csv = s
        .csv(
            &format!("{base}/recipients"),
            &key,
            "email\na@example.org\n",
        )
        .await;
    assert_eq!(csv.status, StatusCode::CONFLICT);
    s.shut_down().await;
}

/// Uploads over REST draw on the same allowance as gRPC: what JSON and CSV uploads
/// staged is gone from the tenant's quota.
#[tokio::test]
async fn rest_uploads_spend_the_tenants_api_quota() {
    let s = Server::start().await;
    s.tenant("metered").await;
    let key = s.key("metered", &[Scope::Send, Scope::Read]).await;
    let id = campaign(&s, "metered", &key).await;
    let path = format!("/v1/tenants/metered/campaigns/{id}/recipients");
    let r = s
        .post(
            &path,
            &key,
            json!([{"email": "a@example.org", "vars": {"first_name": "A"}},
                   {"email": "b@example.org", "vars": {"first_name": "B"}},
                   {"email": "c@example.org", "vars": {"first_name": "C"}}]),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = s
        .csv(
            &path,
            &key,
            "email,first_name\nd@example.org,D\ne@example.org,E\n",
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let metered = TenantId::parse("metered").unwrap();
    let now = std::time::Instant::now();
    assert!(
        s.quotas.admit(&metered, 96, now).is_err(),
        "5 of the burst of 100 were spent by the uploads"
    );
    assert!(s.quotas.admit(&metered, 95, now).is_ok());
    s.shut_down().await;
}

#[tokio::test]
async fn recipients_are_staged_from_json_and_csv_with_row_errors() {
    let s = Server::start().await;
    s.tenant("acme").await;
    let key = s.key("acme", &[Scope::Send, Scope::Read]).await;
    let id = campaign(&s, "acme", &key).await;
    let path = format!("/v1/tenants/acme/campaigns/{id}/recipients");
    let json_rows = s
        .post(
            &path,
            &key,
            json!([
                {"email": "ann@example.org", "vars": {"first_name": "Ann"}},
                {"email": "not an address", "vars": {"first_name": "X"}},
                {"email": "bob@example.org", "vars": {"first_name": "Bob"}},
            ]),
        )
        .await;
    assert_eq!(json_rows.status, StatusCode::OK, "{}", json_rows.text);
    assert_eq!(json_rows.body["rows"], 3);
    assert_eq!(json_rows.body["accepted"], 2);
    assert_eq!(json_rows.body["errors"][0]["row"], 2);
    let csv = "email,first_name\r\ncid@example.org,Cid\r\nbroken,\"Q\"\r\ndee@example.org,Dee,extra\r\neve@example.org,\"Eve, \"\"E\"\"\"\r\n";
    let r = s.csv(&path, &key, csv).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        (
            r.body["rows"].as_u64(),
            r.body["accepted"].as_u64(),
            r.body["rejected"].as_u64()
        ),
        (Some(4), Some(2), Some(2)),
        "{}",
        r.text
    );
    let rows: Vec<(u64, u64)> = r.body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["row"].as_u64().unwrap(), e["line"].as_u64().unwrap()))
        .collect();
    assert_eq!(rows, [(2, 3), (3, 4)]);
    let id = CampaignId::parse(&id).unwrap();
    assert_eq!(s.store.staged_counts(id).await.unwrap(), (4, 0));
    let pending = s.store.pending_recipients(id, 10).await.unwrap();
    assert_eq!(pending[3].vars["first_name"], "Eve, \"E\"");
    let header = s.csv(&path, &key, "address,name\nx@example.org,X\n").await;
    assert_eq!(header.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(header.fields(), ["header"]);
    s.shut_down().await;
}

#[tokio::test]
async fn contacts_crud_and_a_streamed_import_with_row_errors() {
    let s = Server::start().await;
    s.tenant("acme").await;
    let key = s.key("acme", &[Scope::Send, Scope::Read]).await;
    let base = "/v1/tenants/acme/contacts";

    let created = s
        .put(
            &format!("{base}/ann@example.org"),
            &key,
            json!({"attributes": {"plan": "pro"}}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let replaced = s
        .put(
            &format!("{base}/ann@example.org"),
            &key,
            json!({"attributes": {"plan": "free", "country": "DE"}}),
        )
        .await;
    assert_eq!(replaced.status, StatusCode::OK);
    let got = s.get(&format!("{base}/ann@example.org"), &key).await;
    assert_eq!(
        got.body["attributes"],
        json!({"plan": "free", "country": "DE"})
    );
    let bad = s
        .put(&format!("{base}/not-an-address"), &key, json!({}))
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad.fields(), ["email"]);

    // 2500 good rows (three batches), a few bad ones, quoting and a duplicate.
    let mut csv = String::from("\u{feff}email,plan,country\n");
    for i in 0..2500 {
        csv.push_str(&format!(
            "p{i:04}@example.org,{},DE\n",
            if i % 2 == 0 { "pro" } else { "free" }
        ));
    }
    csv.push_str("not-an-address,pro,DE\n"); // row 2501
    csv.push_str("x@example.org,pro\n"); // row 2502: two fields
    csv.push_str("\"q@example.org\",\"Pro, \"\"Gold\"\"\",\"A\nT\"\n"); // row 2503, lines 2505-2506
    csv.push_str("p0000@example.org,gold,\n"); // row 2504: replaces row 1, no country
    let r = s.csv(&format!("{base}/import"), &key, &csv).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["rows"], 2504);
    assert_eq!(r.body["rejected"], 2);
    assert_eq!(r.body["accepted"], 2502);
    let errors: Vec<(u64, u64)> = r.body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["row"].as_u64().unwrap(), e["line"].as_u64().unwrap()))
        .collect();
    assert_eq!(errors, [(2501, 2502), (2502, 2503)]);
    assert!(
        r.body["errors"][1]["reason"]
            .as_str()
            .unwrap()
            .contains("2 fields")
    );
    let tenant = TenantId::parse("acme").unwrap();
    let q = s
        .store
        .contact(&tenant, &EmailAddress::parse("q@example.org").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(q.attributes["plan"], "Pro, \"Gold\"");
    assert_eq!(q.attributes["country"], "A\nT");
    let first = s.get(&format!("{base}/p0000@example.org"), &key).await;
    assert_eq!(first.body["attributes"], json!({"plan": "gold"}));

    // Paging through all of them.
    let mut after = None::<String>;
    let mut seen = 0;
    loop {
        let q = match &after {
            Some(a) => format!("{base}?limit=1000&after={a}"),
            None => format!("{base}?limit=1000"),
        };
        let page = s.get(&q, &key).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.text);
        seen += page.body["contacts"].as_array().unwrap().len();
        match page.body["next_after"].as_str() {
            Some(a) => after = Some(a.to_string()),
            None => break,
        }
    }
    assert_eq!(seen, 2502, "2500 imported, q@, and ann@");
    assert_eq!(
        s.delete(&format!("{base}/ann@example.org"), &key)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        s.get(&format!("{base}/ann@example.org"), &key).await.status,
        StatusCode::NOT_FOUND
    );
    let json_import = s.post(&format!("{base}/import"), &key, json!([])).await;
    assert_eq!(json_import.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let empty = s.csv(&format!("{base}/import"), &key, "").await;
    assert_eq!(empty.status, StatusCode::UNPROCESSABLE_ENTITY);
    s.shut_down().await;
}

#[tokio::test]
async fn an_import_cut_off_midway_keeps_the_complete_rows() {
    let s = Server::start().await;
    s.tenant("acme").await;
    let key = s.key("acme", &[Scope::Send, Scope::Read]).await;
    let addr = s.base.trim_start_matches("http://").to_string();
    let mut conn = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let mut sent = String::from("email,plan\n");
    for i in 0..1500 {
        sent.push_str(&format!("c{i:04}@example.org,pro\n"));
    }
    sent.push_str("cut@exam"); // the connection drops inside this row
    let head = format!(
        "POST /v1/tenants/acme/contacts/import HTTP/1.1\r\nhost: {addr}\r\n\
         authorization: Bearer {key}\r\ncontent-type: text/csv\r\n\
         content-length: {}\r\n\r\n",
        sent.len() + 10_000
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    conn.write_all(sent.as_bytes()).await.unwrap();
    conn.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(conn);

    let tenant = TenantId::parse("acme").unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let stored = s.store.contacts(&tenant, None, None, 5000).await.unwrap();
        if stored.len() == 1500 {
            assert!(stored.iter().all(|c| c.email.as_str() != "cut@exam"));
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of 1500 complete rows stored",
            stored.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    s.shut_down().await;
}

#[tokio::test]
async fn lists_and_segments_with_previews() {
    let s = Server::start().await;
    s.tenant("acme").await;
    let key = s.key("acme", &[Scope::Send, Scope::Read]).await;
    let base = "/v1/tenants/acme";
    let mut csv = String::from("email,plan,country,signups\n");
    for i in 0..30 {
        let plan = if i % 3 == 0 { "pro" } else { "free" };
        let country = if i < 10 { "DE" } else { "FR" };
        csv.push_str(&format!("u{i:02}@example.org,{plan},{country},{i}\n"));
    }
    assert_eq!(
        s.csv(&format!("{base}/contacts/import"), &key, &csv)
            .await
            .body["accepted"],
        30
    );

    let list = s
        .post(&format!("{base}/lists"), &key, json!({"name": "VIP"}))
        .await;
    assert_eq!(list.status, StatusCode::CREATED);
    let list_id = list.body["id"].as_str().unwrap().to_string();
    let members = format!("{base}/lists/{list_id}/members");
    let added = s
        .post(
            &members,
            &key,
            json!({"emails": ["u00@example.org", "u01@example.org", "u03@example.org"]}),
        )
        .await;
    assert_eq!(added.body["added"], 3, "{}", added.text);
    let stranger = s
        .post(&members, &key, json!({"emails": ["nobody@example.org"]}))
        .await;
    assert_eq!(
        stranger.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        stranger.text
    );
    let invalid = s
        .post(
            &members,
            &key,
            json!({"emails": ["u00@example.org", "oops"]}),
        )
        .await;
    assert_eq!(invalid.fields(), ["emails[1]"]);
    assert_eq!(
        s.get(&members, &key).await.body["contacts"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    assert_eq!(
        s.delete(&format!("{members}/u01@example.org"), &key)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        s.delete(&format!("{members}/u01@example.org"), &key)
            .await
            .status,
        StatusCode::NOT_FOUND
    );

    let bad = s
        .post(
            &format!("{base}/segments"),
            &key,
            json!({"name": "Broken", "filter": "plan = \"pro\" and"}),
        )
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(bad.fields(), ["filter"]);
    assert!(bad.text.contains("at character"), "{}", bad.text);

    let tried = s
        .post(
            &format!("{base}/segments/preview"),
            &key,
            json!({"filter": "country = \"DE\" and signups >= 5"}),
        )
        .await;
    assert_eq!(tried.status, StatusCode::OK, "{}", tried.text);
    assert_eq!(tried.body["count"], 5);
    assert_eq!(tried.body["scanned"], 30);
    assert_eq!(tried.body["samples"][0], "u05@example.org");

    let segment = s
        .post(
            &format!("{base}/segments"),
            &key,
            json!({"name": "Pro", "filter": "plan = \"pro\""}),
        )
        .await;
    assert_eq!(segment.status, StatusCode::CREATED, "{}", segment.text);
    let segment_id = segment.body["id"].as_str().unwrap();
    let preview = s
        .get(&format!("{base}/segments/{segment_id}/preview"), &key)
        .await;
    assert_eq!(preview.body["count"], 10);
    assert_eq!(preview.body["samples"].as_array().unwrap().len(), 10);

    let in_list = s
        .post(
            &format!("{base}/segments"),
            &key,
            json!({"name": "Pro VIPs", "filter": "plan = \"pro\"", "list": list_id}),
        )
        .await;
    assert_eq!(in_list.status, StatusCode::CREATED);
    let in_list_id = in_list.body["id"].as_str().unwrap();
    let preview = s
        .get(&format!("{base}/segments/{in_list_id}/preview"), &key)
        .await;
    assert_eq!(
        (
            preview.body["count"].as_u64(),
            preview.body["scanned"].as_u64()
        ),
        (Some(2), Some(2))
    );
    assert_eq!(
        s.get(&format!("{base}/segments"), &key).await.body["segments"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        s.delete(&format!("{base}/segments/{segment_id}"), &key)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        s.delete(&format!("{base}/lists/{list_id}"), &key)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        s.get(&format!("{base}/lists/{list_id}"), &key).await.status,
        StatusCode::NOT_FOUND
    );
    s.shut_down().await;
}

#[tokio::test]
async fn suppressions_are_added_listed_and_removed_in_store_and_hot_state() {
    let s = Server::start().await;
    let tenant = s.tenant("acme").await;
    let key = s.key("acme", &[Scope::Send, Scope::Read]).await;
    let reader = s.key("acme", &[Scope::Read]).await;
    let ann = EmailAddress::parse("ann@example.org").unwrap();
    let path = "/v1/tenants/acme/suppressions/ann@example.org";

    assert_eq!(
        s.put(path, &reader, json!({})).await.status,
        StatusCode::FORBIDDEN
    );
    let added = s.put(path, &key, json!({"reason": "asked by phone"})).await;
    assert_eq!(added.status, StatusCode::NO_CONTENT, "{}", added.text);
    let bare = s
        .send(
            Method::PUT,
            "/v1/tenants/acme/suppressions/bob@example.org",
            Some(&key),
            None,
            Vec::new(),
        )
        .await;
    assert_eq!(bare.status, StatusCode::NO_CONTENT, "an empty body is fine");
    assert!(s.hot.is_suppressed(&tenant, &ann).await.unwrap());
    let listed = s.get("/v1/tenants/acme/suppressions", &reader).await;
    assert_eq!(
        listed.body["suppressions"],
        json!([
            {"email": "ann@example.org", "reason": "asked by phone"},
            {"email": "bob@example.org", "reason": "added by an operator"},
        ])
    );
    assert_eq!(listed.body["next_after"], Value::Null);
    // A page at a time, resuming after the last address of the one before.
    let page = s
        .get("/v1/tenants/acme/suppressions?limit=1", &reader)
        .await;
    assert_eq!(page.body["suppressions"][0]["email"], "ann@example.org");
    assert_eq!(page.body["next_after"], "ann@example.org");
    let page = s
        .get(
            "/v1/tenants/acme/suppressions?limit=1&after=ann@example.org",
            &reader,
        )
        .await;
    assert_eq!(page.body["suppressions"][0]["email"], "bob@example.org");
    let bad = s
        .get("/v1/tenants/acme/suppressions?limit=0", &reader)
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.text);
    assert_eq!(s.delete(path, &key).await.status, StatusCode::NO_CONTENT);
    assert!(!s.hot.is_suppressed(&tenant, &ann).await.unwrap());
    assert!(!s.store.is_suppressed(&tenant, &ann).await.unwrap());
    assert_eq!(s.delete(path, &key).await.status, StatusCode::NOT_FOUND);
    s.shut_down().await;
}

#[tokio::test]
async fn throttles_and_status_for_operators() {
    let idp = start_idp().await;
    let s = Server::start_with(Some(idp)).await;
    let operator = rsa_key().sign(&claims(&["admin"], None));

    let set = s
        .put(
            "/v1/throttles/domain/Gmail.COM",
            &operator,
            json!({"max_connections": 2, "rate": "10/s", "burst": 5}),
        )
        .await;
    assert_eq!(set.status, StatusCode::OK, "{}", set.text);
    assert_eq!(set.body["name"], "gmail.com");
    let default = s
        .put("/v1/throttles/tenant", &operator, json!({"rate": "100/m"}))
        .await;
    assert_eq!(default.status, StatusCode::OK);
    let table = s.get("/v1/throttles", &operator).await;
    assert_eq!(
        table.body["scopes"],
        json!([{"kind": "domain", "name": "gmail.com", "limit": {
            "max_connections": 2, "max_messages_per_connection": null, "rate": "10/s", "burst": 5
        }}])
    );
    assert_eq!(table.body["defaults"][0]["kind"], "tenant");

    let bad = s
        .put(
            "/v1/throttles/domain/gmail.com",
            &operator,
            json!({"max_connections": 0, "rate": "fast"}),
        )
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(bad.fields(), ["max_connections", "rate"]);
    let refused = s
        .put("/v1/throttles/pool/main", &operator, json!({"rate": "7/h"}))
        .await;
    assert_eq!(refused.fields(), ["rate"]);
    let unknown = s
        .put(
            "/v1/throttles/domain/gmail.com",
            &operator,
            json!({"rte": "1/s"}),
        )
        .await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST);
    assert_eq!(unknown.fields(), ["rte"]);
    let kind = s
        .put("/v1/throttles/planet/mars", &operator, json!({}))
        .await;
    assert_eq!(kind.fields(), ["kind"]);
    assert_eq!(
        s.delete("/v1/throttles/domain/gmail.com", &operator)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        s.delete("/v1/throttles/domain/gmail.com", &operator)
            .await
            .status,
        StatusCode::NOT_FOUND
    );

    s.log
        .produce(topics::SEND, vec![(b"k".to_vec(), b"v".to_vec()); 3])
        .await
        .unwrap();
    let status = s.get("/v1/status", &operator).await;
    assert_eq!(status.status, StatusCode::OK, "{}", status.text);
    assert_eq!(status.body["owned_partitions"], json!([0, 1, 2, 3]));
    assert_eq!(status.body["queues"][0]["group"], "sender");
    assert_eq!(status.body["queues"][0]["depth"], 3);
    s.shut_down().await;
}

#[tokio::test]
async fn stats_over_rest_equal_what_grpc_says() {
    let s = Server::start().await;
    s.tenant("acme").await;
    let key = s.key("acme", &[Scope::Send, Scope::Read]).await;
    let id = campaign(&s, "acme", &key).await;
    let campaign_id = CampaignId::parse(&id).unwrap();
    let stats = CampaignStats {
        injected: 10,
        delivered: 7,
        deferred: 2,
        bounced_hard: 1,
        bounced_soft: 1,
        opened: 4,
        clicked: 2,
        unsubscribed: 1,
        suppressed: 1,
        ..Default::default()
    };
    s.store
        .commit_aggregates(&AggregateBatch {
            part: 0,
            group: "analytics".into(),
            fence: None,
            offsets: vec![],
            stats: vec![(TenantId::parse("acme").unwrap(), campaign_id, stats)],
            messages: [
                ("bounced_hard", "userunknown: 550 5.1.1 no such user"),
                ("bounced_soft", "mailboxfull: 552 5.2.2 mailbox full"),
            ]
            .into_iter()
            .map(|(status, detail)| maily_engine::ports::MessageState {
                message_id: maily_engine::MessageId::new(),
                tenant: TenantId::parse("acme").unwrap(),
                campaign: campaign_id,
                recipient: maily_engine::EmailAddress::parse("ann@example.com").unwrap(),
                mask: 0b1000,
                status: status.into(),
                detail: Some(detail.into()),
            })
            .collect(),
        })
        .await
        .unwrap();

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let grpc_addr = listener.local_addr().unwrap();
    let store: Arc<dyn Store> = s.store.clone();
    let deps = maily_api::grpc::GrpcDeps {
        intake: Arc::new(Intake::new(s.log.clone(), store.clone())),
        store,
        auth: s.auth.clone(),
        events: EventHub::start(s.log.clone()).await.unwrap(),
        quotas: Arc::new(maily_api::quota::Quotas::unlimited()),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let grpc = tokio::spawn(maily_api::grpc::serve(listener, deps, async {
        let _ = stopped.await;
    }));
    let mut client = CampaignServiceClient::connect(format!("http://{grpc_addr}"))
        .await
        .unwrap();
    let mut request = tonic::Request::new(GetCampaignStatsRequest {
        campaign_id: id.clone(),
    });
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    let answer = client
        .get_campaign_stats(request)
        .await
        .unwrap()
        .into_inner();
    let from_grpc = answer.stats.unwrap();
    let reasons: Vec<_> = answer
        .bounces_by_reason
        .iter()
        .map(|r| json!({"reason": r.reason, "class": r.class, "count": r.count}))
        .collect();
    let from_rest = s
        .get(&format!("/v1/tenants/acme/campaigns/{id}/stats"), &key)
        .await;
    assert_eq!(from_rest.status, StatusCode::OK);
    let grpc_json = json!({
        "injected": from_grpc.injected, "delivered": from_grpc.delivered,
        "deferred": from_grpc.deferred, "bounced_hard": from_grpc.bounced_hard,
        "bounced_soft": from_grpc.bounced_soft, "expired": from_grpc.expired,
        "opened": from_grpc.opened, "clicked": from_grpc.clicked,
        "unsubscribed": from_grpc.unsubscribed, "complained": from_grpc.complained,
        "rejected": from_grpc.rejected, "suppressed": from_grpc.suppressed,
        "finished": from_grpc.finished,
    });
    assert_eq!(from_rest.body["stats"], grpc_json);
    assert_eq!(from_rest.body["stats"]["finished"], 10);
    assert_eq!(
        from_rest.body["bounces_by_reason"],
        json!([
            {"reason": "mailboxfull", "class": "soft", "count": 1},
            {"reason": "userunknown", "class": "hard", "count": 1},
        ])
    );
    assert_eq!(from_rest.body["bounces_by_reason"], json!(reasons));
    stop.send(()).unwrap();
    grpc.await.unwrap().unwrap();
    s.shut_down().await;
}

#[tokio::test]
async fn anchors_proofs_and_settlements() {
    let idp = start_idp().await;
    let s = Server::start_with(Some(idp)).await;
    let acme = s.tenant("acme").await;
    s.tenant("beta").await;
    let key = s.key("acme", &[Scope::Send, Scope::Read]).await;
    let beta = s.key("beta", &[Scope::Read, Scope::Admin]).await;
    let operator = ec_key().sign(&claims(&["admin", "read"], None));
    let id = CampaignId::parse(&campaign(&s, "acme", &key).await).unwrap();
    let stats = CampaignStats {
        delivered: 5,
        ..Default::default()
    };
    s.store
        .commit_settlement(
            &Settlement {
                epoch: 1,
                settled_at: Timestamp::now(),
                group: "reward".into(),
                offsets: vec![],
                entries: vec![SettlementEntry {
                    tenant: acme.clone(),
                    campaign: id,
                    stats,
                    reward_total: 12_345_678_901_234_567_890,
                    reward_delta: 5,
                }],
            },
            None,
        )
        .await
        .unwrap();
    let root = [7u8; 32];
    s.store
        .append_ledger(&LedgerEntry {
            epoch: 1,
            root,
            prev: [0; 32],
            hash: [9; 32],
            at: Timestamp::now(),
        })
        .await
        .unwrap();
    s.store
        .store_proofs(&[StoredProof {
            leaf: CampaignLeaf {
                epoch: 1,
                campaign: id,
                stats,
                reward_total: 12_345_678_901_234_567_890,
            },
            leaf_index: 0,
            root,
            proof: vec![[1; 32]],
        }])
        .await
        .unwrap();

    let anchors = s.get("/v1/anchors", &operator).await;
    assert_eq!(anchors.status, StatusCode::OK, "{}", anchors.text);
    assert_eq!(
        anchors.body["anchors"][0]["root"],
        format!("0x{}", "07".repeat(32))
    );
    assert_eq!(
        s.get("/v1/anchors", &key).await.status,
        StatusCode::FORBIDDEN
    );
    let proof_path = format!("/v1/anchors/1/proofs/{id}");
    let proof = s.get(&proof_path, &key).await;
    assert_eq!(proof.status, StatusCode::OK, "{}", proof.text);
    assert_eq!(proof.body["reward_total"], "12345678901234567890");
    assert_eq!(proof.body["stats"]["delivered"], 5);
    assert_eq!(
        s.get(&proof_path, &beta).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(s.get(&proof_path, &operator).await.status, StatusCode::OK);
    assert_eq!(
        s.get(&format!("/v1/anchors/2/proofs/{id}"), &key)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let settlement = s.get("/v1/settlements/1", &operator).await;
    assert_eq!(settlement.status, StatusCode::OK);
    assert_eq!(settlement.body["entries"][0]["reward_delta"], "5");
    assert_eq!(settlement.body["entries"][0]["tenant"], "acme");
    assert_eq!(
        s.get("/v1/settlements/1", &beta).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        s.get("/v1/settlements/2", &operator).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        s.get("/v1/settlements/0", &operator).await.fields(),
        ["epoch"]
    );
    s.shut_down().await;
}

/// A tenant sends only From its own verified domains: another tenant's domain is
/// refused at intake (422, field `from`), a registered one stays refused until an
/// operator verified it, and a removed one is refused again. A domain belongs to one
/// tenant, and only operators verify.
#[tokio::test]
async fn campaigns_send_only_from_the_tenants_verified_domains() {
    let idp = start_idp().await;
    let s = Server::start_with(Some(idp)).await;
    s.tenant("acme").await;
    s.tenant("beta").await;
    let operator = rsa_key().sign(&claims(&["admin", "read", "send"], None));
    let beta = s
        .key("beta", &[Scope::Admin, Scope::Send, Scope::Read])
        .await;
    let create = |from: &str| {
        let mut input = campaign_input("From test");
        input["from"] = json!(from);
        input
    };
    let refused = s
        .post(
            "/v1/tenants/beta/campaigns",
            &beta,
            create("news@shop.example"),
        )
        .await;
    assert_eq!(
        refused.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        refused.text
    );
    assert_eq!(refused.fields(), ["from"], "{}", refused.text);
    assert!(
        refused
            .text
            .contains("is not a sending domain of tenant beta"),
        "{}",
        refused.text
    );

    // Acme's domain cannot be registered by beta either.
    let taken = s
        .post(
            "/v1/tenants/beta/domains",
            &beta,
            json!({"domain": "shop.example"}),
        )
        .await;
    assert_eq!(taken.status, StatusCode::CONFLICT, "{}", taken.text);
    let added = s
        .post(
            "/v1/tenants/beta/domains",
            &beta,
            json!({"domain": "Beta-Mail.example"}),
        )
        .await;
    assert_eq!(added.status, StatusCode::CREATED, "{}", added.text);
    assert_eq!(added.body["domain"], "beta-mail.example");
    assert_eq!(added.body["status"], "pending");
    assert_eq!(added.body["dns"][0]["name"], "_maily.beta-mail.example");
    assert!(
        added.body["dns"][0]["value"]
            .as_str()
            .unwrap()
            .starts_with("maily-verification=")
    );
    let pending = s
        .post(
            "/v1/tenants/beta/campaigns",
            &beta,
            create("news@beta-mail.example"),
        )
        .await;
    assert_eq!(
        pending.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        pending.text
    );
    assert!(
        pending.text.contains("not verified yet"),
        "{}",
        pending.text
    );
    let by_tenant = s
        .post(
            "/v1/tenants/beta/domains/beta-mail.example/verify?force=true",
            &beta,
            json!({}),
        )
        .await;
    assert_eq!(
        by_tenant.status,
        StatusCode::FORBIDDEN,
        "only operators may skip the DNS check: {}",
        by_tenant.text
    );
    let unchecked = s
        .post(
            "/v1/tenants/beta/domains/beta-mail.example/verify",
            &beta,
            json!({}),
        )
        .await;
    assert_eq!(
        unchecked.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "no DNS to check here: {}",
        unchecked.text
    );
    let verified = s
        .post(
            "/v1/tenants/beta/domains/beta-mail.example/verify?force=true",
            &operator,
            json!({}),
        )
        .await;
    assert_eq!(verified.status, StatusCode::OK, "{}", verified.text);
    assert_eq!(verified.body["status"], "verified");
    let sent = s
        .post(
            "/v1/tenants/beta/campaigns",
            &beta,
            create("news@beta-mail.example"),
        )
        .await;
    assert_eq!(sent.status, StatusCode::CREATED, "{}", sent.text);
    let listed = s.get("/v1/tenants/beta/domains", &beta).await;
    let names: Vec<&str> = listed.body["domains"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["domain"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["beta-mail.example", "beta.example"]);
    assert_eq!(
        s.delete("/v1/tenants/beta/domains/beta-mail.example", &beta)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    let removed = s
        .post(
            "/v1/tenants/beta/campaigns",
            &beta,
            create("news@beta-mail.example"),
        )
        .await;
    assert_eq!(
        removed.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        removed.text
    );
    s.shut_down().await;
}
