//! Authentication and authorisation for the public APIs (gRPC for senders, admin REST).
//!
//! Two kinds of bearer credentials are accepted, both in an `Authorization: Bearer …`
//! header (HTTP) or `authorization` metadata entry (gRPC):
//!
//! - **API keys** ([`keys`]): `mly_<key id>_<secret>`, issued per tenant with a set of
//!   [`Scope`]s, stored as a hash of the secret only, revocable. They authenticate a
//!   tenant's programs.
//! - **JWTs** ([`jwt`]) from an OpenID identity provider (Auth0 style), validated
//!   against the provider's JWKS. Roles in a configurable claim become scopes; an
//!   optional tenant claim ties the person to a tenant, and a token without one is an
//!   **operator**'s, who may act on every tenant within its scopes.
//!
//! Both end in a [`Principal`]: who is calling, for which tenant (or as operator), with
//! which scopes. Authentication failures are [`AuthError`]s (answer 401 /
//! `UNAUTHENTICATED`, or 503 / `UNAVAILABLE` when [`AuthError::is_unavailable`]);
//! authorisation failures are [`Denied`] (403 / `PERMISSION_DENIED`). Both carry the
//! precise reason for logs and a [`public_message`](AuthError::public_message) for the
//! caller that never tells an unknown key from a wrong secret.
//!
//! The transport layers call [`Authenticator::authenticate`] with the raw header value,
//! then [`Principal::authorize`] with the scope and tenant the call needs.

mod error;
pub mod jwt;
pub mod keys;
mod principal;

pub use error::{AuthError, Denied};
pub use jwt::{JwksValidator, JwtError, JwtSettings};
pub use keys::{KeyError, PlainApiKey, Scope, ScopeError};
pub use principal::{Principal, Subject};

use maily_engine::Timestamp;
use maily_engine::ports::TenantAccess;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::{debug, warn};

/// Longest bearer credential looked at; anything longer is malformed (JWTs from
/// identity providers are well under 4 KiB, API keys under 100 bytes).
pub const MAX_BEARER_LEN: usize = 8 * 1024;

/// The credential of an `Authorization` header value of the `Bearer` scheme
/// (RFC 6750; the scheme name is case-insensitive).
///
/// `None`, an empty or blank value is [`AuthError::Missing`]; another scheme, or a
/// credential with characters no API key or JWT holds, is [`AuthError::Malformed`].
pub fn bearer_token(authorization: Option<&str>) -> Result<&str, AuthError> {
    let value = authorization.map(str::trim).unwrap_or_default();
    if value.is_empty() {
        return Err(AuthError::Missing);
    }
    let Some((scheme, token)) = value.split_once(' ') else {
        if value.eq_ignore_ascii_case("bearer") {
            return Err(AuthError::Missing);
        }
        return Err(AuthError::Malformed(
            "authorization is not of the Bearer scheme",
        ));
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::Malformed(
            "authorization is not of the Bearer scheme",
        ));
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(AuthError::Missing);
    }
    if token.len() > MAX_BEARER_LEN {
        return Err(AuthError::Malformed("bearer credential is too long"));
    }
    let token68 = |c: char| c.is_ascii_alphanumeric() || "-._~+/=".contains(c);
    if !token.chars().all(token68) {
        return Err(AuthError::Malformed(
            "bearer credential holds characters no key or token has",
        ));
    }
    Ok(token)
}

/// Authenticates bearer credentials: API keys against the store, JWTs against the
/// identity provider's keys when one is configured.
///
/// Successful API-key authentications are recorded with [`TenantAccess::touch_api_key`] at
/// most once per key and `touch_interval` per process, so a busy sender does not turn
/// every call into a write; a failed touch is logged and never fails the call.
pub struct Authenticator {
    store: Arc<dyn TenantAccess>,
    jwt: Option<JwksValidator>,
    touch_interval: Duration,
    touched: Mutex<HashMap<String, Instant>>,
}

impl Authenticator {
    /// How often, at most, one key's `last_used_at` is written by default.
    pub const DEFAULT_TOUCH_INTERVAL: Duration = Duration::from_secs(60);

    /// An authenticator over `store`, accepting JWTs too when `jwt` is given.
    pub fn new(store: Arc<dyn TenantAccess>, jwt: Option<JwksValidator>) -> Self {
        Authenticator {
            store,
            jwt,
            touch_interval: Self::DEFAULT_TOUCH_INTERVAL,
            touched: Mutex::new(HashMap::new()),
        }
    }

    /// Sets how often, at most, one key's `last_used_at` is written (zero: every use).
    pub fn with_touch_interval(mut self, interval: Duration) -> Self {
        self.touch_interval = interval;
        self
    }

    /// Authenticates the value of an `Authorization` header (`None` when absent).
    pub async fn authenticate(&self, authorization: Option<&str>) -> Result<Principal, AuthError> {
        let token = bearer_token(authorization)?;
        self.authenticate_bearer(token).await
    }

    /// Authenticates a bearer credential taken from its header already.
    pub async fn authenticate_bearer(&self, token: &str) -> Result<Principal, AuthError> {
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        if token.starts_with(keys::PREFIX) {
            let principal = keys::verify(self.store.as_ref(), token).await?;
            if let Subject::ApiKey { id } = &principal.subject {
                self.touch(id).await;
            }
            return Ok(principal);
        }
        if token.split('.').count() == 3 {
            return match &self.jwt {
                Some(validator) => Ok(validator.validate(token).await?),
                None => Err(AuthError::Malformed(
                    "JWTs are not accepted: no identity provider is configured",
                )),
            };
        }
        Err(AuthError::Malformed(
            "bearer credential is neither a Maily API key nor a JWT",
        ))
    }

    async fn touch(&self, id: &str) {
        let now = Instant::now();
        {
            let Ok(mut touched) = self.touched.lock() else {
                return;
            };
            match touched.get(id) {
                Some(last) if now.duration_since(*last) < self.touch_interval => return,
                _ => {
                    touched.insert(id.to_string(), now);
                }
            }
        }
        match self.store.touch_api_key(id, Timestamp::now()).await {
            Ok(()) => debug!(key = id, "api key use recorded"),
            Err(e) => warn!(key = id, error = %e, "recording api key use failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_values_are_parsed_strictly() {
        assert_eq!(bearer_token(Some("Bearer abc.def")).unwrap(), "abc.def");
        assert_eq!(bearer_token(Some("bearer  mly_x_y ")).unwrap(), "mly_x_y");
        assert!(matches!(bearer_token(None), Err(AuthError::Missing)));
        assert!(matches!(bearer_token(Some("  ")), Err(AuthError::Missing)));
        assert!(matches!(
            bearer_token(Some("Bearer ")),
            Err(AuthError::Missing)
        ));
        assert!(matches!(
            bearer_token(Some("Basic dXNlcjpwYXNz")),
            Err(AuthError::Malformed(_))
        ));
        assert!(matches!(
            bearer_token(Some("Bearer a b")),
            Err(AuthError::Malformed(_))
        ));
        assert!(matches!(
            bearer_token(Some("mly_abc_def")),
            Err(AuthError::Malformed(_))
        ));
        let long = format!("Bearer {}", "a".repeat(MAX_BEARER_LEN + 1));
        assert!(matches!(
            bearer_token(Some(&long)),
            Err(AuthError::Malformed(_))
        ));
    }
}
