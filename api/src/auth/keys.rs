//! API keys: `mly_<key id>_<secret>`.
//!
//! - The **key id** is 16 lower-case hex digits (64 random bits). It is public: it names
//!   the key in listings, logs and revocations, and finds it in the store.
//! - The **secret** is 32 random bytes from the operating system, in unpadded base64url
//!   (43 characters). It is shown once, when the key is generated ([`generate`]), and
//!   never stored: the store keeps only its hash ([`hash_secret`]).
//!
//! Authentication ([`verify`], [`authenticate`]) parses the key, loads the record by
//! id, compares the hash of the presented secret with the stored one in constant time,
//! and only then looks at revocation, so only a holder of the secret learns that a key
//! was revoked. Unknown ids and wrong secrets are different errors for the logs but get
//! the same [`AuthError::public_message`].

use super::error::AuthError;
use super::principal::{Principal, Subject};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use maily_engine::ports::{NewApiKey, TenantAccess};
use maily_engine::{TenantId, Timestamp};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;
use subtle::ConstantTimeEq;
use tracing::warn;

/// What every Maily API key starts with.
pub const PREFIX: &str = "mly_";
/// Random bytes in a key id (hex-encoded: twice as many characters).
const ID_BYTES: usize = 8;
/// Random bytes in a secret.
const SECRET_BYTES: usize = 32;
/// Characters of a secret in unpadded base64url.
const SECRET_CHARS: usize = 43;
/// Longest key name accepted.
pub const MAX_NAME_CHARS: usize = 100;
/// Domain separation of the secret hash, so it matches no other SHA-256 use.
const HASH_CONTEXT: &[u8] = b"maily.api-key.v1\0";

/// What an API key or a role lets its holder do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// Create campaigns and enqueue recipients.
    Send,
    /// Read campaigns, stats, suppressions and message states.
    Read,
    /// Manage tenants and API keys.
    Admin,
}

impl Scope {
    /// Every scope, in order.
    pub const ALL: [Scope; 3] = [Scope::Send, Scope::Read, Scope::Admin];

    /// The scope's name, as stored and as given in roles.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Send => "send",
            Scope::Read => "read",
            Scope::Admin => "admin",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A scope name that is none of [`Scope::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown scope {0:?} (expected send, read or admin)")]
pub struct ScopeError(pub String);

impl FromStr for Scope {
    type Err = ScopeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scope::ALL
            .into_iter()
            .find(|scope| scope.as_str() == s)
            .ok_or_else(|| ScopeError(s.to_string()))
    }
}

/// Why a key could not be generated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("key name must be 1-{MAX_NAME_CHARS} characters without control characters")]
    InvalidName,
    #[error("a key needs at least one scope")]
    NoScopes,
    #[error("the operating system's random number generator failed: {0}")]
    Random(String),
}

/// A full API key as handed to its owner once, at creation.
///
/// Debug output hides it; read it with [`PlainApiKey::expose`] only to show it to the
/// owner.
#[derive(Clone, PartialEq, Eq)]
pub struct PlainApiKey(String);

impl PlainApiKey {
    /// The full key, `mly_<id>_<secret>`.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The full key, consumed.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Debug for PlainApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PlainApiKey(<redacted>)")
    }
}

/// Generates a key for `tenant`: the record to store (with the secret's hash only)
/// and the full key to show its owner once.
pub fn generate(
    tenant: &TenantId,
    name: &str,
    scopes: &[Scope],
) -> Result<(NewApiKey, PlainApiKey), KeyError> {
    let name = name.trim();
    if name.is_empty()
        || name.chars().count() > MAX_NAME_CHARS
        || name.chars().any(char::is_control)
    {
        return Err(KeyError::InvalidName);
    }
    let scopes: BTreeSet<Scope> = scopes.iter().copied().collect();
    if scopes.is_empty() {
        return Err(KeyError::NoScopes);
    }
    let mut id = [0u8; ID_BYTES];
    let mut secret = [0u8; SECRET_BYTES];
    getrandom::fill(&mut id).map_err(|e| KeyError::Random(e.to_string()))?;
    getrandom::fill(&mut secret).map_err(|e| KeyError::Random(e.to_string()))?;
    let id = hex::encode(id);
    let plain = PlainApiKey(format!("{PREFIX}{id}_{}", URL_SAFE_NO_PAD.encode(secret)));
    let record = NewApiKey {
        secret_hash: hash_secret(&id, &secret),
        id,
        tenant: tenant.clone(),
        name: name.to_string(),
        scopes: scopes.iter().map(|s| s.as_str().to_string()).collect(),
        created_at: Timestamp::now(),
        issued_by: None,
    };
    Ok((record, plain))
}

/// The hash stored for a key's secret: SHA-256 over a context string, the key id and
/// the secret's bytes.
///
/// A fast hash is the right tool here, unlike for passwords: the secret is 256 random
/// bits, so there is nothing to guess from its hash however many hashes per second an
/// attacker computes, and a slow KDF (argon2, bcrypt) would only add latency to every
/// API call and hand callers a cheap way to burn our CPU. Binding the id into the hash
/// makes a hash copied onto another key's row useless.
pub fn hash_secret(key_id: &str, secret: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(HASH_CONTEXT);
    h.update(key_id.as_bytes());
    h.update([0u8]);
    h.update(secret);
    h.finalize().into()
}

/// A presented key split into its id and secret.
struct Presented<'a> {
    id: &'a str,
    secret: [u8; 32],
}

/// Splits `mly_<id>_<secret>`, checking each part's shape (never echoing it).
fn parse(token: &str) -> Result<Presented<'_>, AuthError> {
    if token.is_empty() {
        return Err(AuthError::Missing);
    }
    let rest = token
        .strip_prefix(PREFIX)
        .ok_or(AuthError::Malformed("API keys start with mly_"))?;
    // The id is hex, so the first '_' ends it; the secret may hold '_' itself.
    let (id, secret) = rest
        .split_once('_')
        .ok_or(AuthError::Malformed("API keys are mly_<key id>_<secret>"))?;
    let hex_digit = |c: char| c.is_ascii_digit() || ('a'..='f').contains(&c);
    if id.len() != 2 * ID_BYTES || !id.chars().all(hex_digit) {
        return Err(AuthError::Malformed(
            "API key id is not 16 lower-case hex digits",
        ));
    }
    if secret.len() != SECRET_CHARS {
        return Err(AuthError::Malformed("API key secret has the wrong length"));
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(secret)
        .map_err(|_| AuthError::Malformed("API key secret is not base64url"))?;
    let secret: [u8; 32] = bytes
        .try_into()
        .map_err(|_| AuthError::Malformed("API key secret has the wrong length"))?;
    Ok(Presented { id, secret })
}

/// Checks an API key against the store without recording its use.
pub async fn verify(store: &dyn TenantAccess, token: &str) -> Result<Principal, AuthError> {
    let presented = parse(token)?;
    let key_id = presented.id.to_string();
    let Some(record) = store.api_key(presented.id).await? else {
        return Err(AuthError::UnknownKey { key_id });
    };
    let hash = hash_secret(presented.id, &presented.secret);
    if !bool::from(hash.ct_eq(&record.secret_hash)) {
        return Err(AuthError::WrongSecret { key_id });
    }
    if let Some(at) = record.revoked_at {
        return Err(AuthError::Revoked { key_id, at });
    }
    let mut scopes = BTreeSet::new();
    for name in &record.scopes {
        match name.parse::<Scope>() {
            Ok(scope) => {
                scopes.insert(scope);
            }
            // A scope of a newer build, or a hand edit: granting less is the safe side.
            Err(e) => warn!(key = %key_id, error = %e, "ignoring a stored scope"),
        }
    }
    Ok(Principal {
        tenant: Some(record.tenant),
        scopes,
        subject: Subject::ApiKey { id: key_id },
    })
}

/// Checks an API key against the store and records its use (best effort: a failed
/// write is logged, never returned). [`super::Authenticator`] does the same with the
/// writes throttled.
pub async fn authenticate(store: &dyn TenantAccess, token: &str) -> Result<Principal, AuthError> {
    let principal = verify(store, token).await?;
    if let Subject::ApiKey { id } = &principal.subject
        && let Err(e) = store.touch_api_key(id, Timestamp::now()).await
    {
        warn!(key = %id, error = %e, "recording api key use failed");
    }
    Ok(principal)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acme() -> TenantId {
        TenantId::parse("acme").unwrap()
    }

    #[test]
    fn scopes_parse_and_display() {
        for scope in Scope::ALL {
            assert_eq!(scope.to_string().parse::<Scope>(), Ok(scope));
        }
        assert_eq!(
            "Admin".parse::<Scope>(),
            Err(ScopeError("Admin".to_string()))
        );
    }

    #[test]
    fn generated_keys_have_the_documented_shape_and_only_their_hash_is_kept() {
        let (record, plain) =
            generate(&acme(), " CI sender ", &[Scope::Send, Scope::Send]).unwrap();
        let key = plain.expose();
        assert_eq!(key.len(), PREFIX.len() + 16 + 1 + 43, "{}", key.len());
        let parsed = parse(key).unwrap();
        assert_eq!(parsed.id, record.id);
        assert_eq!(record.secret_hash, hash_secret(parsed.id, &parsed.secret));
        assert_eq!(record.name, "CI sender");
        assert_eq!(record.scopes, vec!["send".to_string()]);
        let secret_text = &key[PREFIX.len() + 17..];
        let debug = format!("{record:?} {plain:?}");
        assert!(!debug.contains(secret_text), "{debug}");
        assert!(!debug.contains(&hex::encode(record.secret_hash)), "{debug}");

        let (other, _) = generate(&acme(), "other", &[Scope::Read]).unwrap();
        assert_ne!(other.id, record.id);
        assert_ne!(other.secret_hash, record.secret_hash);
    }

    #[test]
    fn bad_names_and_empty_scopes_are_refused() {
        assert_eq!(
            generate(&acme(), " ", &[Scope::Read]).unwrap_err(),
            KeyError::InvalidName
        );
        assert_eq!(
            generate(&acme(), "a\nb", &[Scope::Read]).unwrap_err(),
            KeyError::InvalidName
        );
        assert_eq!(
            generate(&acme(), &"x".repeat(101), &[Scope::Read]).unwrap_err(),
            KeyError::InvalidName
        );
        assert_eq!(generate(&acme(), "k", &[]).unwrap_err(), KeyError::NoScopes);
    }

    #[test]
    fn malformed_keys_are_named_without_echoing_them() {
        let secret = "A".repeat(43);
        let cases = [
            "sk_live_abc".to_string(),
            "mly_0123456789abcdef".to_string(),
            format!("mly_0123456789ABCDEF_{secret}"),
            format!("mly_0123_{secret}"),
            "mly_0123456789abcdef_short".to_string(),
            format!("mly_0123456789abcdef_{}", "*".repeat(43)),
        ];
        for case in cases {
            let err = parse(&case).err().expect(&case);
            assert!(matches!(err, AuthError::Malformed(_)), "{case}: {err}");
            assert!(!err.to_string().contains(&case), "{err}");
            assert_eq!(err.public_message(), "malformed credentials");
        }
        assert!(matches!(parse("").err(), Some(AuthError::Missing)));
        // A secret that holds '_' still parses: only the first '_' ends the id.
        let underscored = format!("mly_0123456789abcdef_{}A", "_".repeat(42));
        assert!(parse(&underscored).is_ok());
    }

    #[test]
    fn hashes_bind_the_key_id() {
        let secret = [7u8; 32];
        assert_ne!(
            hash_secret("0123456789abcdef", &secret),
            hash_secret("fedcba9876543210", &secret)
        );
    }
}
