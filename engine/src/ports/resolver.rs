//! The resolver port: where to deliver mail for a domain.

use async_trait::async_trait;

/// A host to connect to, in preference order.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Route {
    pub host: String,
    pub port: u16,
    /// Connect only to public addresses of `host`: set on routes a domain's DNS
    /// chose (MX), so a recipient domain cannot point the engine at loopback or a
    /// private network. Routes the operator configured are trusted.
    pub public_only: bool,
}

impl Route {
    /// A route the operator configured: any address of `host`.
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Route {
            host: host.into(),
            port,
            public_only: false,
        }
    }
}

/// Why a domain has no route.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    #[error("no route for domain {0:?}")]
    NoRoute(String),
    #[error("resolving {domain:?} failed temporarily: {reason}")]
    Temporary { domain: String, reason: String },
}

/// Maps a recipient domain to the hosts that accept its mail.
#[async_trait]
pub trait Resolver: Send + Sync + 'static {
    /// Routes for `domain`, most preferred first.
    async fn resolve(&self, domain: &str) -> Result<Vec<Route>, ResolveError>;
}
