//! Static routing: a fixed table from recipient domain to SMTP hosts.

use async_trait::async_trait;
use maily_engine::domain::address::{Domain, DomainError};
use maily_engine::ports::{ResolveError, Resolver, Route};
use std::collections::HashMap;

/// The pattern that matches every domain without an entry of its own (a smart host).
pub const DEFAULT_PATTERN: &str = "*";

/// A route entry that could not be parsed; names the entry and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad route entry {pattern:?} = {target:?}: {reason}")]
pub struct RouteParseError {
    /// The domain pattern as given.
    pub pattern: String,
    /// The `host:port` target as given.
    pub target: String,
    /// What is wrong with it.
    pub reason: RouteErrorReason,
}

/// What is wrong with a route entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteErrorReason {
    #[error("domain pattern is neither \"*\" nor a domain: {0}")]
    Domain(#[from] DomainError),
    #[error("target is not host:port")]
    MissingPort,
    #[error("host is empty")]
    EmptyHost,
    #[error("an IPv6 host must be in brackets, e.g. [::1]:25")]
    UnbracketedIpv6,
    #[error("port {0:?} is not a number from 1 to 65535")]
    BadPort(String),
}

/// Parses a `host:port` target; an IPv6 host is written in brackets, `[::1]:25`.
pub fn parse_target(target: &str) -> Result<Route, RouteErrorReason> {
    let (host, port) = target
        .trim()
        .rsplit_once(':')
        .ok_or(RouteErrorReason::MissingPort)?;
    let host = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6,
        None if host.contains(':') => return Err(RouteErrorReason::UnbracketedIpv6),
        None => host,
    };
    if host.is_empty() {
        return Err(RouteErrorReason::EmptyHost);
    }
    let port = port
        .parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| RouteErrorReason::BadPort(port.to_string()))?;
    Ok(Route::new(host, port))
}

/// A fixed routing table: exact domains first, then an optional default route.
///
/// Several entries for one pattern are kept in the order given, which is the order
/// the transport tries them in.
#[derive(Debug, Clone, Default)]
pub struct StaticRoutes {
    domains: HashMap<String, Vec<Route>>,
    default: Vec<Route>,
}

impl StaticRoutes {
    /// An empty table: every domain has no route.
    pub fn new() -> Self {
        Self::default()
    }

    /// A table that sends every domain to one smart host.
    pub fn smart_host(route: Route) -> Self {
        StaticRoutes {
            domains: HashMap::new(),
            default: vec![route],
        }
    }

    /// Builds a table from `(pattern, "host:port")` entries; the pattern is a domain
    /// or `*` for the default route.
    pub fn from_entries<I, P, T>(entries: I) -> Result<Self, RouteParseError>
    where
        I: IntoIterator<Item = (P, T)>,
        P: AsRef<str>,
        T: AsRef<str>,
    {
        let mut routes = StaticRoutes::new();
        for (pattern, target) in entries {
            let (pattern, target) = (pattern.as_ref(), target.as_ref());
            let named = |reason| RouteParseError {
                pattern: pattern.to_string(),
                target: target.to_string(),
                reason,
            };
            let route = parse_target(target).map_err(named)?;
            routes.add(pattern, route).map_err(named)?;
        }
        Ok(routes)
    }

    /// Appends `route` to the routes for `pattern` (a domain, or `*`).
    pub fn add(&mut self, pattern: &str, route: Route) -> Result<(), RouteErrorReason> {
        let pattern = pattern.trim();
        if pattern == DEFAULT_PATTERN {
            self.default.push(route);
        } else {
            let domain = Domain::parse(pattern)?;
            self.domains
                .entry(domain.as_str().to_string())
                .or_default()
                .push(route);
        }
        Ok(())
    }

    /// The routes for `domain`, most preferred first; `None` when it has no route.
    pub fn routes_for(&self, domain: &str) -> Option<&[Route]> {
        let key = domain.trim_end_matches('.').to_ascii_lowercase();
        self.domains
            .get(&key)
            .map(Vec::as_slice)
            .or_else(|| (!self.default.is_empty()).then_some(self.default.as_slice()))
    }
}

#[async_trait]
impl Resolver for StaticRoutes {
    async fn resolve(&self, domain: &str) -> Result<Vec<Route>, ResolveError> {
        self.routes_for(domain)
            .map(<[Route]>::to_vec)
            .ok_or_else(|| ResolveError::NoRoute(domain.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(host: &str, port: u16) -> Route {
        Route::new(host, port)
    }

    #[tokio::test]
    async fn exact_domains_win_over_the_default() {
        let routes = StaticRoutes::from_entries([
            ("Example.COM", "mx1.example.com:25"),
            ("example.com", "mx2.example.com:2525"),
            ("*", "127.0.0.1:1025"),
        ])
        .unwrap();
        assert_eq!(
            routes.resolve("example.com").await.unwrap(),
            vec![route("mx1.example.com", 25), route("mx2.example.com", 2525)]
        );
        assert_eq!(
            routes.resolve("EXAMPLE.com.").await.unwrap().len(),
            2,
            "lookups ignore case and a trailing dot"
        );
        assert_eq!(
            routes.resolve("other.org").await.unwrap(),
            vec![route("127.0.0.1", 1025)]
        );
    }

    #[tokio::test]
    async fn builds_from_a_borrowed_config_map() {
        let map = std::collections::BTreeMap::from([
            ("*".to_string(), "relay.example:587".to_string()),
            ("example.com".to_string(), "mx.example.com:25".to_string()),
        ]);
        let routes = StaticRoutes::from_entries(&map).unwrap();
        assert_eq!(
            routes.resolve("x.org").await.unwrap(),
            vec![route("relay.example", 587)]
        );
        assert_eq!(
            routes.resolve("example.com").await.unwrap(),
            vec![route("mx.example.com", 25)]
        );
    }

    #[tokio::test]
    async fn unknown_domain_without_default_has_no_route() {
        let routes = StaticRoutes::from_entries([("example.com", "[::1]:25")]).unwrap();
        assert_eq!(
            routes.resolve("example.com").await.unwrap(),
            vec![route("::1", 25)]
        );
        assert_eq!(
            routes.resolve("other.org").await,
            Err(ResolveError::NoRoute("other.org".into()))
        );
        let smart = StaticRoutes::smart_host(route("relay", 587));
        assert_eq!(
            smart.resolve("any.where").await.unwrap(),
            vec![route("relay", 587)]
        );
    }

    #[test]
    fn parse_errors_name_the_entry() {
        let err =
            StaticRoutes::from_entries([("ok.org", "a:25"), ("bad.org", "nohost")]).unwrap_err();
        assert_eq!(err.pattern, "bad.org");
        assert_eq!(err.target, "nohost");
        assert_eq!(err.reason, RouteErrorReason::MissingPort);
        assert_eq!(
            err.to_string(),
            "bad route entry \"bad.org\" = \"nohost\": target is not host:port"
        );

        let reason = |p: &str, t: &str| StaticRoutes::from_entries([(p, t)]).unwrap_err().reason;
        assert_eq!(
            reason("x.org", "h:0"),
            RouteErrorReason::BadPort("0".into())
        );
        assert_eq!(
            reason("x.org", "h:99999"),
            RouteErrorReason::BadPort("99999".into())
        );
        assert_eq!(reason("x.org", ":25"), RouteErrorReason::EmptyHost);
        assert_eq!(reason("x.org", "::1:25"), RouteErrorReason::UnbracketedIpv6);
        assert!(matches!(
            reason("bad..org", "h:25"),
            RouteErrorReason::Domain(_)
        ));
        assert!(matches!(
            reason("*.org", "h:25"),
            RouteErrorReason::Domain(_)
        ));
    }
}
