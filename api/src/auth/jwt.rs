//! JWT validation against an identity provider's JWKS (Auth0 style).
//!
//! [`JwksValidator::validate`] accepts a token only if all of these hold:
//!
//! - its header names an algorithm of the allow-list, RS256 or ES256: `none`, every
//!   HMAC algorithm (whose "key" would be the public key, the classic confusion attack)
//!   and everything else are refused before any key is touched; headers marking
//!   extensions as critical (`crit`) are refused too, and `jku`/`x5u`/`jwk` headers are
//!   ignored: keys only ever come from the configured JWKS URL;
//! - its header names a key id (`kid`) present in the JWKS, of the algorithm's key
//!   type (RSA for RS256, EC P-256 for ES256); keys of the set that name another
//!   `alg`, or are meant for encryption, are never used;
//! - its signature verifies with that key;
//! - `iss` is the configured issuer and `aud` holds the configured audience;
//! - `exp` is present and not passed, and `nbf` (when present) is reached, both give or
//!   take the configured leeway; `sub` is present.
//!
//! The key set is fetched over HTTPS (plain HTTP only for loopback hosts, for tests)
//! and cached by `kid`. A token with a `kid` the cache lacks triggers a refresh, at most
//! once per [`JwtSettings::refresh_interval`], so unknown-key floods cannot hammer the
//! provider; the set is also refetched once it is older than
//! [`JwtSettings::max_key_age`], so keys the provider removed stop validating. If a
//! refresh fails while cached keys exist, the cached keys stay in use.
//!
//! Roles in [`JwtSettings::roles_claim`] (an array of strings, or one space-separated
//! string) map to scopes: `admin`, `read` and `send`; other roles are ignored. A token
//! carrying [`JwtSettings::tenant_claim`] acts for that tenant; one carrying the role
//! [`JwtSettings::operator_role`] instead is an operator of every tenant. Authorization
//! fails closed: a token with neither is refused, and so is one with both.

use super::keys::Scope;
use super::principal::{Principal, Subject};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use maily_engine::TenantId;
use serde_json::{Map, Value};
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// Largest JWKS document read.
const MAX_JWKS_BYTES: usize = 256 * 1024;
/// Longest header value quoted in an error (they come from the caller).
const MAX_QUOTED: usize = 40;

/// Where the identity provider publishes its keys and what its tokens must say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtSettings {
    /// The JWKS document, e.g. `https://example.eu.auth0.com/.well-known/jwks.json`.
    /// Must be `https`, except for loopback hosts.
    pub jwks_url: String,
    /// The exact `iss` of valid tokens (Auth0's ends with `/`).
    pub issuer: String,
    /// The audience valid tokens must name in `aud` (the API identifier).
    pub audience: String,
    /// Clock skew allowed on `exp` and `nbf`, in whole seconds.
    pub leeway: Duration,
    /// The claim holding the roles, e.g. `https://maily.dev/roles` or `roles`.
    pub roles_claim: String,
    /// The claim holding the tenant id; must not be empty.
    pub tenant_claim: String,
    /// The role (in `roles_claim`) that makes a token without a tenant an operator's;
    /// must not be empty.
    pub operator_role: String,
    /// The least time between two fetches of the key set.
    pub refresh_interval: Duration,
    /// Cached keys older than this are refetched before use.
    pub max_key_age: Duration,
    /// How long one fetch of the key set may take.
    pub fetch_timeout: Duration,
}

impl JwtSettings {
    /// Settings for an Auth0-style provider: 60 s leeway, roles in
    /// `https://maily.dev/roles`, tenant in `https://maily.dev/tenant`, operators by the
    /// role `operator`, refreshes at
    /// most every 30 s, keys refetched after 10 minutes, 5 s fetch timeout.
    pub fn new(
        jwks_url: impl Into<String>,
        issuer: impl Into<String>,
        audience: impl Into<String>,
    ) -> Self {
        JwtSettings {
            jwks_url: jwks_url.into(),
            issuer: issuer.into(),
            audience: audience.into(),
            leeway: Duration::from_secs(60),
            roles_claim: "https://maily.dev/roles".into(),
            tenant_claim: "https://maily.dev/tenant".into(),
            operator_role: "operator".into(),
            refresh_interval: Duration::from_secs(30),
            max_key_age: Duration::from_secs(600),
            fetch_timeout: Duration::from_secs(5),
        }
    }
}

/// Why a JWT was not accepted, or the validator could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    #[error("token algorithm {0:?} is not accepted (only RS256 and ES256 are)")]
    Algorithm(String),
    #[error("token header marks extensions as critical, which are not supported")]
    CriticalHeader,
    #[error("token header names no key id (kid)")]
    MissingKid,
    #[error("key {kid:?} is not in the identity provider's key set, even after a refresh")]
    UnknownKey { kid: String },
    #[error("key {kid:?} cannot verify {alg:?} tokens: {reason}")]
    KeyMismatch {
        kid: String,
        alg: String,
        reason: &'static str,
    },
    #[error("token signature does not verify with key {kid:?}")]
    BadSignature { kid: String },
    #[error("token expired (exp passed, beyond the leeway)")]
    Expired,
    #[error("token not valid yet (nbf ahead, beyond the leeway)")]
    NotYetValid,
    #[error("token audience does not include {expected:?}")]
    WrongAudience { expected: String },
    #[error("token issuer is not {expected:?}")]
    WrongIssuer { expected: String },
    #[error("token lacks the {0} claim")]
    MissingClaim(String),
    #[error("token acts for no tenant: it carries neither the {claim} claim nor the role {role:?}")]
    NoTenant { claim: String, role: String },
    #[error("token claim {claim} is invalid: {reason}")]
    InvalidClaim { claim: String, reason: String },
    #[error("identity provider keys unavailable from {url}: {reason}")]
    KeySetUnavailable { url: String, reason: String },
    #[error("JWT settings: {0}")]
    Settings(String),
}

impl JwtError {
    /// What to tell the caller.
    pub fn public_message(&self) -> &'static str {
        match self {
            JwtError::Expired => "token expired",
            JwtError::NotYetValid => "token not valid yet",
            // Only a token that verified gets this far: telling why is safe.
            JwtError::NoTenant { .. } => {
                "token acts for no tenant: it carries neither the tenant claim nor the operator role"
            }
            JwtError::KeySetUnavailable { .. } | JwtError::Settings(_) => {
                "authentication is temporarily unavailable"
            }
            _ => "invalid token",
        }
    }

    /// Whether the failure is ours (the provider's keys cannot be had), not the token's.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            JwtError::KeySetUnavailable { .. } | JwtError::Settings(_)
        )
    }
}

/// The key types the allowed algorithms need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyKind {
    Rsa,
    EcP256,
}

/// One usable key of the set.
struct VerifyKey {
    kind: KeyKind,
    key: DecodingKey,
}

#[derive(Default)]
struct Cache {
    keys: HashMap<String, Arc<VerifyKey>>,
    fetched_at: Option<Instant>,
}

/// Validates JWTs of one identity provider; share one per process (it caches keys).
pub struct JwksValidator {
    settings: JwtSettings,
    url: reqwest::Url,
    http: reqwest::Client,
    rs256: Validation,
    es256: Validation,
    cache: RwLock<Cache>,
    /// When the key set was last fetched (or tried); held across a fetch so that
    /// concurrent callers missing a key wait for one fetch instead of each starting one.
    last_fetch: tokio::sync::Mutex<Option<Instant>>,
    fetches: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for JwksValidator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksValidator")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl JwksValidator {
    /// A validator for `settings`. Nothing is fetched yet: the first token (or
    /// [`JwksValidator::refresh`], to fail fast at startup) fetches the key set.
    pub fn new(settings: JwtSettings) -> Result<Self, JwtError> {
        let url = reqwest::Url::parse(&settings.jwks_url)
            .map_err(|e| JwtError::Settings(format!("jwks_url {:?}: {e}", settings.jwks_url)))?;
        let loopback = url.host_str().is_some_and(|host| {
            let bare = host.trim_start_matches('[').trim_end_matches(']');
            host.eq_ignore_ascii_case("localhost")
                || bare
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        });
        match url.scheme() {
            "https" => {}
            "http" if loopback => {}
            _ => {
                return Err(JwtError::Settings(format!(
                    "jwks_url {:?} must be https (plain http only on loopback)",
                    settings.jwks_url
                )));
            }
        }
        for (name, value) in [
            ("issuer", &settings.issuer),
            ("audience", &settings.audience),
        ] {
            if value.trim().is_empty() {
                return Err(JwtError::Settings(format!("{name} must not be empty")));
            }
        }
        for (name, value) in [
            ("roles_claim", &settings.roles_claim),
            ("tenant_claim", &settings.tenant_claim),
            ("operator_role", &settings.operator_role),
        ] {
            if value.trim().is_empty() {
                return Err(JwtError::Settings(format!("{name} must not be empty")));
            }
        }
        let http = reqwest::Client::builder()
            .timeout(settings.fetch_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .https_only(!loopback)
            .user_agent(concat!("maily/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| JwtError::Settings(format!("building the HTTP client: {e}")))?;
        let validation = |alg| {
            let mut v = Validation::new(alg);
            v.algorithms = vec![alg];
            v.leeway = settings.leeway.as_secs();
            v.validate_exp = true;
            v.validate_nbf = true;
            v.validate_aud = true;
            v.set_issuer(&[&settings.issuer]);
            v.set_audience(&[&settings.audience]);
            v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
            v
        };
        Ok(JwksValidator {
            rs256: validation(Algorithm::RS256),
            es256: validation(Algorithm::ES256),
            settings,
            url,
            http,
            cache: RwLock::new(Cache::default()),
            last_fetch: tokio::sync::Mutex::new(None),
            fetches: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// The settings the validator was built with.
    pub fn settings(&self) -> &JwtSettings {
        &self.settings
    }

    /// How many times the key set was fetched (or tried), for tests and metrics.
    pub fn fetch_count(&self) -> u64 {
        self.fetches.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Fetches the key set now, regardless of the refresh interval; returns how many
    /// usable keys it holds.
    pub async fn refresh(&self) -> Result<usize, JwtError> {
        let mut last = self.last_fetch.lock().await;
        *last = Some(Instant::now());
        let keys = self.fetch().await?;
        Ok(self.install(keys))
    }

    /// Validates `token` and returns who it names.
    pub async fn validate(&self, token: &str) -> Result<Principal, JwtError> {
        let header = Header::parse(token)?;
        let (validation, kind) = match header.alg.as_str() {
            "RS256" => (&self.rs256, KeyKind::Rsa),
            "ES256" => (&self.es256, KeyKind::EcP256),
            other => return Err(JwtError::Algorithm(quote(other))),
        };
        if header.crit {
            return Err(JwtError::CriticalHeader);
        }
        let kid = header.kid.ok_or(JwtError::MissingKid)?;
        let key = self.key(&kid).await?;
        if key.kind != kind {
            return Err(JwtError::KeyMismatch {
                kid: quote(&kid),
                alg: header.alg,
                reason: match key.kind {
                    KeyKind::Rsa => "it is an RSA key",
                    KeyKind::EcP256 => "it is an EC P-256 key",
                },
            });
        }
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, validation)
            .map_err(|e| self.map_error(e.kind(), &kid))?;
        self.principal(data.claims)
    }

    fn map_error(&self, kind: &ErrorKind, kid: &str) -> JwtError {
        match kind {
            ErrorKind::InvalidSignature => JwtError::BadSignature { kid: quote(kid) },
            ErrorKind::ExpiredSignature => JwtError::Expired,
            ErrorKind::ImmatureSignature => JwtError::NotYetValid,
            ErrorKind::InvalidAudience => JwtError::WrongAudience {
                expected: self.settings.audience.clone(),
            },
            ErrorKind::InvalidIssuer => JwtError::WrongIssuer {
                expected: self.settings.issuer.clone(),
            },
            ErrorKind::MissingRequiredClaim(claim) => JwtError::MissingClaim(claim.clone()),
            ErrorKind::InvalidClaimFormat(claim) => JwtError::InvalidClaim {
                claim: claim.clone(),
                reason: "wrong type".into(),
            },
            ErrorKind::InvalidAlgorithm => JwtError::KeyMismatch {
                kid: quote(kid),
                alg: "(header)".into(),
                reason: "the key does not fit the algorithm",
            },
            ErrorKind::InvalidEcdsaKey
            | ErrorKind::InvalidRsaKey(_)
            | ErrorKind::InvalidKeyFormat => JwtError::KeyMismatch {
                kid: quote(kid),
                alg: "(header)".into(),
                reason: "the provider's key is unusable",
            },
            ErrorKind::Base64(_) => JwtError::Malformed("a part is not base64url"),
            ErrorKind::Json(_) => JwtError::Malformed("the claims are not a JSON object"),
            ErrorKind::Utf8(_) => JwtError::Malformed("the claims are not UTF-8"),
            _ => JwtError::Malformed("the token does not decode"),
        }
    }

    /// The principal named by validated claims.
    fn principal(&self, claims: Map<String, Value>) -> Result<Principal, JwtError> {
        let sub = match claims.get("sub") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            _ => return Err(JwtError::MissingClaim("sub".into())),
        };
        let claim = &self.settings.roles_claim;
        let invalid = |reason: &str| JwtError::InvalidClaim {
            claim: claim.clone(),
            reason: reason.into(),
        };
        let roles: Vec<&str> = match claims.get(claim) {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(s)) => s.split_whitespace().collect(),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| v.as_str().ok_or_else(|| invalid("roles must be strings")))
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(invalid("must be an array of strings or a string")),
        };
        let scopes: BTreeSet<Scope> = roles.iter().filter_map(|r| r.parse().ok()).collect();
        let operator = roles.contains(&self.settings.operator_role.as_str());
        let tenant_claim = &self.settings.tenant_claim;
        let tenant = match claims.get(tenant_claim) {
            None | Some(Value::Null) => None,
            Some(Value::String(t)) => {
                Some(TenantId::parse(t).map_err(|e| JwtError::InvalidClaim {
                    claim: tenant_claim.clone(),
                    reason: e.to_string(),
                })?)
            }
            Some(_) => {
                return Err(JwtError::InvalidClaim {
                    claim: tenant_claim.clone(),
                    reason: "must be a string".into(),
                });
            }
        };
        // Fails closed: only an explicit operator role acts for every tenant.
        match (tenant, operator) {
            (Some(_), true) => Err(JwtError::InvalidClaim {
                claim: claim.clone(),
                reason: format!(
                    "a token acting for a tenant may not also carry the role {:?}",
                    self.settings.operator_role
                ),
            }),
            (None, false) => Err(JwtError::NoTenant {
                claim: tenant_claim.clone(),
                role: self.settings.operator_role.clone(),
            }),
            (tenant, _) => Ok(Principal {
                tenant,
                scopes,
                subject: Subject::User { sub },
            }),
        }
    }

    /// The cached key `kid`, whether the cache is fresh, and whether a key set was
    /// ever fetched.
    fn cached(&self, kid: &str) -> (Option<Arc<VerifyKey>>, bool, bool) {
        let Ok(cache) = self.cache.read() else {
            return (None, false, false);
        };
        let fresh = cache
            .fetched_at
            .is_some_and(|at| at.elapsed() < self.settings.max_key_age);
        (
            cache.keys.get(kid).cloned(),
            fresh,
            cache.fetched_at.is_some(),
        )
    }

    /// The key `kid`, refreshing the set when it lacks the key or is stale.
    async fn key(&self, kid: &str) -> Result<Arc<VerifyKey>, JwtError> {
        if let (Some(key), true, _) = self.cached(kid) {
            return Ok(key);
        }
        let mut last = self.last_fetch.lock().await;
        // Whoever held the lock before may just have fetched what we need.
        let (found, fresh, ever_fetched) = self.cached(kid);
        if let (Some(key), true) = (&found, fresh) {
            return Ok(key.clone());
        }
        let may_fetch = last.is_none_or(|at| at.elapsed() >= self.settings.refresh_interval);
        if may_fetch {
            *last = Some(Instant::now());
            match self.fetch().await {
                Ok(keys) => {
                    self.install(keys);
                }
                Err(e) => {
                    if let Some(key) = found {
                        warn!(error = %e, "refreshing identity provider keys failed; using the cached ones");
                        return Ok(key);
                    }
                    return Err(e);
                }
            }
        } else if !ever_fetched {
            return Err(JwtError::KeySetUnavailable {
                url: self.settings.jwks_url.clone(),
                reason: "no key set fetched yet; the last attempt failed moments ago".into(),
            });
        }
        drop(last);
        match self.cached(kid) {
            (Some(key), _, _) => Ok(key),
            _ => Err(JwtError::UnknownKey { kid: quote(kid) }),
        }
    }

    /// Replaces the cached keys; returns how many there are.
    fn install(&self, keys: HashMap<String, Arc<VerifyKey>>) -> usize {
        let n = keys.len();
        if let Ok(mut cache) = self.cache.write() {
            cache.keys = keys;
            cache.fetched_at = Some(Instant::now());
        }
        n
    }

    /// Fetches and parses the key set.
    async fn fetch(&self) -> Result<HashMap<String, Arc<VerifyKey>>, JwtError> {
        self.fetches
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let unavailable = |reason: String| JwtError::KeySetUnavailable {
            url: self.settings.jwks_url.clone(),
            reason,
        };
        let mut response = self
            .http
            .get(self.url.clone())
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        if !response.status().is_success() {
            return Err(unavailable(format!("HTTP status {}", response.status())));
        }
        if response
            .content_length()
            .is_some_and(|n| n > MAX_JWKS_BYTES as u64)
        {
            return Err(unavailable(format!(
                "key set larger than {MAX_JWKS_BYTES} bytes"
            )));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| unavailable(e.to_string()))?
        {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(unavailable(format!(
                    "key set larger than {MAX_JWKS_BYTES} bytes"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        let keys = parse_jwks(&body).map_err(unavailable)?;
        info!(url = %self.settings.jwks_url, keys = keys.len(), "identity provider keys fetched");
        Ok(keys)
    }
}

/// The usable signing keys of a JWKS document, by kid. Keys for encryption, without a
/// kid, of other types or curves, or that do not parse are skipped (logged), so one
/// odd key does not take the others down.
fn parse_jwks(body: &[u8]) -> Result<HashMap<String, Arc<VerifyKey>>, String> {
    #[derive(serde::Deserialize)]
    struct RawSet {
        keys: Vec<Value>,
    }
    let set: RawSet =
        serde_json::from_slice(body).map_err(|e| format!("not a JWKS document: {e}"))?;
    let mut keys = HashMap::new();
    for raw in set.keys {
        let jwk: Jwk = match serde_json::from_value(raw) {
            Ok(jwk) => jwk,
            Err(e) => {
                debug!(error = %e, "skipping a JWK that does not parse");
                continue;
            }
        };
        let Some(kid) = jwk.common.key_id.clone() else {
            debug!("skipping a JWK without kid");
            continue;
        };
        if matches!(&jwk.common.public_key_use, Some(u) if *u != PublicKeyUse::Signature) {
            debug!(kid = %kid, "skipping a JWK not meant for signatures");
            continue;
        }
        let kind = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => KeyKind::Rsa,
            AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => {
                KeyKind::EcP256
            }
            _ => {
                debug!(kid = %kid, "skipping a JWK of a type no allowed algorithm uses");
                continue;
            }
        };
        // A key restricted to an algorithm must be restricted to the allowed one of
        // its type.
        let alg_fits = match jwk.common.key_algorithm {
            None => true,
            Some(KeyAlgorithm::RS256) => kind == KeyKind::Rsa,
            Some(KeyAlgorithm::ES256) => kind == KeyKind::EcP256,
            Some(_) => false,
        };
        if !alg_fits {
            debug!(kid = %kid, "skipping a JWK restricted to an algorithm we do not accept");
            continue;
        }
        match DecodingKey::from_jwk(&jwk) {
            Ok(key) => {
                keys.insert(kid, Arc::new(VerifyKey { kind, key }));
            }
            Err(e) => debug!(kid = %kid, error = %e, "skipping a JWK that is not a usable key"),
        }
    }
    if keys.is_empty() {
        warn!("the identity provider's key set holds no usable RS256 or ES256 key");
    }
    Ok(keys)
}

/// The parts of a JOSE header we act on, read before any key is chosen.
struct Header {
    alg: String,
    kid: Option<String>,
    crit: bool,
}

impl Header {
    fn parse(token: &str) -> Result<Self, JwtError> {
        let mut parts = token.split('.');
        let (Some(header), Some(_), Some(_), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JwtError::Malformed("a JWT has three dot-separated parts"));
        };
        let bytes = URL_SAFE_NO_PAD
            .decode(header)
            .map_err(|_| JwtError::Malformed("the header is not base64url"))?;
        let header: Map<String, Value> = serde_json::from_slice(&bytes)
            .map_err(|_| JwtError::Malformed("the header is not a JSON object"))?;
        let alg = match header.get("alg") {
            Some(Value::String(alg)) => alg.clone(),
            _ => return Err(JwtError::Malformed("the header names no algorithm")),
        };
        let kid = match header.get("kid") {
            None | Some(Value::Null) => None,
            Some(Value::String(kid)) => Some(kid.clone()),
            Some(_) => return Err(JwtError::Malformed("the header's kid is not a string")),
        };
        Ok(Header {
            alg,
            kid,
            crit: header.contains_key("crit"),
        })
    }
}

/// A caller-supplied header value, cut short for error messages.
fn quote(value: &str) -> String {
    value.chars().take(MAX_QUOTED).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> JwtSettings {
        JwtSettings::new(
            "https://idp.example/.well-known/jwks.json",
            "https://idp.example/",
            "maily",
        )
    }

    #[test]
    fn settings_refuse_plain_http_off_loopback_and_empty_values() {
        assert!(JwksValidator::new(settings()).is_ok());
        let http = JwtSettings {
            jwks_url: "http://idp.example/jwks.json".into(),
            ..settings()
        };
        assert!(matches!(
            JwksValidator::new(http),
            Err(JwtError::Settings(_))
        ));
        for url in [
            "http://127.0.0.1:9/jwks",
            "http://[::1]:9/jwks",
            "http://localhost:9/j",
        ] {
            let local = JwtSettings {
                jwks_url: url.into(),
                ..settings()
            };
            assert!(JwksValidator::new(local).is_ok(), "{url}");
        }
        let no_aud = JwtSettings {
            audience: " ".into(),
            ..settings()
        };
        assert!(matches!(
            JwksValidator::new(no_aud),
            Err(JwtError::Settings(_))
        ));
    }

    #[test]
    fn headers_are_read_before_any_key() {
        let enc = |json: &str| URL_SAFE_NO_PAD.encode(json);
        let token = |h: &str| format!("{}.e30.", enc(h));
        let h = Header::parse(&token(r#"{"alg":"none"}"#)).unwrap();
        assert_eq!((h.alg.as_str(), h.kid), ("none", None));
        assert!(
            Header::parse(&token(r#"{"alg":"RS256","kid":"k","crit":["b64"]}"#))
                .unwrap()
                .crit
        );
        assert!(matches!(Header::parse("a.b"), Err(JwtError::Malformed(_))));
        assert!(matches!(
            Header::parse("a.b.c.d"),
            Err(JwtError::Malformed(_))
        ));
        assert!(matches!(
            Header::parse("!!.b.c"),
            Err(JwtError::Malformed(_))
        ));
        assert!(matches!(
            Header::parse(&token(r#"{"kid":"k"}"#)),
            Err(JwtError::Malformed(_))
        ));
        assert!(matches!(
            Header::parse(&token(r#"{"alg":"RS256","kid":7}"#)),
            Err(JwtError::Malformed(_))
        ));
    }

    #[test]
    fn jwks_documents_keep_only_usable_signing_keys() {
        let doc = br#"{"keys":[
            {"kty":"oct","kid":"hmac","k":"c2VjcmV0"},
            {"kty":"EC","kid":"enc","use":"enc","crv":"P-256",
             "x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
             "y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty":"EC","kid":"ec","crv":"P-256",
             "x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
             "y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty":"EC","crv":"P-256",
             "x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
             "y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty":"RSA","kid":"odd","alg":"RSA-OAEP-999","n":"AQAB","e":"AQAB"},
            {"kty":"RSA","kid":"ps","alg":"PS256","n":"AQAB","e":"AQAB"},
            {"kty":"EC","kid":"mixed","alg":"RS256","crv":"P-256",
             "x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
             "y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty":"RSA","kid":"rsa","alg":"RS256","n":"AQAB","e":"AQAB"},
            {"kty":"weird","kid":"w"}
        ]}"#;
        let keys = parse_jwks(doc).unwrap();
        let mut kids: Vec<_> = keys.keys().map(String::as_str).collect();
        kids.sort();
        assert_eq!(kids, vec!["ec", "rsa"]);
        assert_eq!(keys["ec"].kind, KeyKind::EcP256);
        assert_eq!(keys["rsa"].kind, KeyKind::Rsa);
        assert!(parse_jwks(b"{}").is_err());
        assert!(parse_jwks(b"<html>").is_err());
    }
}
