//! Why a caller was not authenticated ([`AuthError`]) or not allowed ([`Denied`]).
//!
//! The `Display` text of each error names exactly what was wrong and is meant for
//! logs; it never holds a secret (only public key ids and token header values). What
//! the caller is told is [`AuthError::public_message`] / [`Denied::public_message`].

use super::jwt::JwtError;
use super::keys::Scope;
use maily_engine::ports::StoreError;
use maily_engine::{TenantId, Timestamp};

/// Why a bearer credential did not authenticate.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No credentials at all.
    #[error("no bearer credentials were given")]
    Missing,
    /// Not shaped like any credential we issue or accept.
    #[error("malformed credentials: {0}")]
    Malformed(&'static str),
    /// An API key whose id is not in the store.
    #[error("API key {key_id} does not exist")]
    UnknownKey { key_id: String },
    /// An API key whose secret does not match the stored hash.
    #[error("API key {key_id} was presented with a wrong secret")]
    WrongSecret { key_id: String },
    /// A revoked API key, presented with its right secret.
    #[error("API key {key_id} was revoked at {} ms", at.0)]
    Revoked { key_id: String, at: Timestamp },
    /// A JWT that did not validate.
    #[error("JWT rejected: {0}")]
    Token(#[from] JwtError),
    /// The store could not be asked.
    #[error("reading API keys: {0}")]
    Store(#[from] StoreError),
}

impl AuthError {
    /// What to tell the caller. Unknown keys and wrong secrets get the same answer, so
    /// a caller cannot learn which key ids exist; other failures say what to fix.
    pub fn public_message(&self) -> &'static str {
        match self {
            AuthError::Missing => {
                "authentication required: send Authorization: Bearer <key or token>"
            }
            AuthError::Malformed(_) => "malformed credentials",
            AuthError::UnknownKey { .. } | AuthError::WrongSecret { .. } => "invalid API key",
            AuthError::Revoked { .. } => "API key revoked",
            AuthError::Token(e) => e.public_message(),
            AuthError::Store(_) => "authentication is temporarily unavailable",
        }
    }

    /// Whether the failure is ours, not the caller's (store or identity provider
    /// unreachable): answer 503 / `UNAVAILABLE` and let the caller retry, rather than
    /// 401 / `UNAUTHENTICATED`.
    pub fn is_unavailable(&self) -> bool {
        match self {
            AuthError::Store(e) => !matches!(
                e,
                StoreError::Conflict(_)
                    | StoreError::InvalidRow { .. }
                    | StoreError::RowsRejected { .. }
            ),
            AuthError::Token(e) => e.is_unavailable(),
            _ => false,
        }
    }
}

/// Why an authenticated principal may not do what it asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("{subject} lacks the {scope} scope")]
    MissingScope { subject: String, scope: Scope },
    #[error("{subject} acts for tenant {own}, not for tenant {requested}")]
    OtherTenant {
        subject: String,
        own: TenantId,
        requested: TenantId,
    },
}

impl Denied {
    /// What to tell the caller: the missing scope, but not whether another tenant
    /// exists.
    pub fn public_message(&self) -> String {
        match self {
            Denied::MissingScope { scope, .. } => format!("the {scope} scope is required"),
            Denied::OtherTenant { .. } => "not allowed for this tenant".to_string(),
        }
    }
}
