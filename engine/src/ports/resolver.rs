//! The resolver port: where to deliver mail for a domain.

use async_trait::async_trait;

/// A host to connect to, in preference order.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Route {
    pub host: String,
    pub port: u16,
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
