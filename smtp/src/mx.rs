//! DNS routing: the [`Resolver`] port from MX records, with hickory-resolver.
//!
//! [`MxResolver`] turns a recipient domain into routes the way RFC 5321 5.1 says:
//!
//! - the domain's MX records, lowest preference first; hosts of equal preference come
//!   in a random order on every lookup, so load spreads over them;
//! - no MX records at all: the *implicit MX*, the domain itself, when it has an A or
//!   AAAA record (and no route when it has neither);
//! - a *null MX* (RFC 7505: the single exchange `.`): the domain accepts no mail, so
//!   there is no route;
//! - a domain that does not exist (NXDOMAIN): no route;
//! - a failing name server (SERVFAIL, REFUSED, a timeout, a network error): a temporary
//!   failure, so the message is retried later.
//!
//! The port's [`ResolveError`] only tells "no route" from "temporary"; why a domain
//! has no route is logged, and [`MxResolver::lookup`] returns it as an [`MxError`].
//!
//! **Routes name hosts, not addresses.** Each route's host is the MX exchange name
//! (without its trailing dot); the transport resolves it when it connects, trying
//! each of its addresses in turn. Resolving exchanges to IP addresses here would lose
//! the name that STARTTLS needs to check the server's certificate (and that MTA-STS
//! or DANE would need later), would key connection pools by address instead of by
//! server, and would log addresses where operators look for host names. The cost is
//! that exchange addresses come from the system resolver (`/etc/resolv.conf`, `/etc/hosts`)
//! even when this resolver was pointed at other name servers.
//!
//! hickory keeps a TTL-respecting cache of answers (positive and negative), sized by
//! [`MxOptions::cache_size`].
//!
//! [`RoutingResolver`] puts a [`StaticRoutes`] table in front of another resolver
//! (normally an `MxResolver`): listed domains go where the table says, the rest
//! through DNS. A table with a `*` smart host routes every domain itself, so DNS is
//! then never asked.

use crate::routes::StaticRoutes;
use async_trait::async_trait;
use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::ProtoErrorKind;
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::Name;
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::{ResolveError as DnsError, TokioResolver};
use maily_engine::ports::{ResolveError, Resolver, Route};
use rand::seq::SliceRandom;
use std::net::SocketAddr;
use std::time::Duration;
use tracing::{debug, info, warn};

/// The port MX hosts take mail on.
pub const SMTP_PORT: u16 = 25;

/// Tuning for [`MxResolver`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MxOptions {
    /// The port of every route; 25 except in tests.
    pub port: u16,
    /// Time allowed for one query to one name server; `None` keeps the system's
    /// (`options timeout:` in resolv.conf) or hickory's default (5 s).
    pub timeout: Option<Duration>,
    /// Tries per query; `None` keeps the system's (`options attempts:`) or hickory's
    /// default (2).
    pub attempts: Option<usize>,
    /// Answers kept in hickory's cache (each for its TTL); 0 counts as 1.
    pub cache_size: usize,
    /// Offer EDNS0 (RFC 6891) with a 1232-byte UDP payload, so answers of up to that
    /// size need no TCP retry; larger ones come truncated and are asked again over TCP.
    pub edns0: bool,
    /// Connect to MX hosts whose addresses are loopback, private, link-local or
    /// otherwise not public. Off: a recipient domain must not be able to point the
    /// engine at the operator's own network.
    pub allow_private: bool,
}

impl Default for MxOptions {
    fn default() -> Self {
        MxOptions {
            port: SMTP_PORT,
            timeout: None,
            attempts: None,
            // hickory's default (32) is tiny for a sender that reaches thousands of
            // domains; an entry is one answer, a few hundred bytes.
            cache_size: 1024,
            edns0: true,
            allow_private: false,
        }
    }
}

impl MxOptions {
    fn apply(&self, opts: &mut ResolverOpts) {
        if let Some(timeout) = self.timeout {
            opts.timeout = timeout;
        }
        if let Some(attempts) = self.attempts {
            opts.attempts = attempts;
        }
        opts.cache_size = self.cache_size.max(1);
        opts.edns0 = self.edns0;
    }
}

/// The system's DNS configuration could not be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the system DNS configuration: {0}")]
pub struct MxSetupError(#[source] DnsError);

/// Why a domain has no route, or why its routes are not known now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MxError {
    /// The domain is not a name DNS can look up.
    #[error("{domain:?} is not a valid domain name: {reason}")]
    BadName { domain: String, reason: String },
    /// The domain does not exist (NXDOMAIN).
    #[error("domain {0:?} does not exist (NXDOMAIN)")]
    NoSuchDomain(String),
    /// The domain publishes a null MX (RFC 7505): it accepts no mail.
    #[error("domain {0:?} accepts no mail (null MX, RFC 7505)")]
    NullMx(String),
    /// The domain has no MX record, and no A or AAAA record for an implicit MX.
    #[error("domain {0:?} has no MX record and no A or AAAA record")]
    NoAddress(String),
    /// DNS did not answer usefully now (SERVFAIL, REFUSED, timeout, network error).
    #[error("looking up {record} of {domain:?} failed: {reason}")]
    Temporary {
        domain: String,
        record: &'static str,
        reason: String,
    },
}

impl MxError {
    /// The domain the error is about.
    pub fn domain(&self) -> &str {
        match self {
            MxError::BadName { domain, .. } | MxError::Temporary { domain, .. } => domain,
            MxError::NoSuchDomain(domain)
            | MxError::NullMx(domain)
            | MxError::NoAddress(domain) => domain,
        }
    }

    /// Whether retrying later may give a route.
    pub fn is_temporary(&self) -> bool {
        matches!(self, MxError::Temporary { .. })
    }

    fn label(&self) -> &'static str {
        match self {
            MxError::BadName { .. } => "bad_name",
            MxError::NoSuchDomain(_) => "nxdomain",
            MxError::NullMx(_) => "null_mx",
            MxError::NoAddress(_) => "no_address",
            MxError::Temporary { .. } => "temporary",
        }
    }
}

impl From<MxError> for ResolveError {
    /// Keeps the port's two cases; the reason stays in the [`MxError`] (and the log).
    fn from(error: MxError) -> Self {
        match error {
            MxError::Temporary { .. } => ResolveError::Temporary {
                domain: error.domain().to_string(),
                reason: error.to_string(),
            },
            other => ResolveError::NoRoute(other.domain().to_string()),
        }
    }
}

/// What a failed lookup means.
enum Failure {
    /// NOERROR without records of the asked type.
    NoRecords,
    /// NXDOMAIN.
    NoSuchDomain,
    /// Anything else, with its reason.
    Temporary(String),
}

fn classify(error: &DnsError) -> Failure {
    match error.proto().map(|proto| proto.kind()) {
        Some(ProtoErrorKind::NoRecordsFound { response_code, .. }) => match *response_code {
            ResponseCode::NoError => Failure::NoRecords,
            ResponseCode::NXDomain => Failure::NoSuchDomain,
            code => Failure::Temporary(format!("the name server answered {code}")),
        },
        _ => Failure::Temporary(error.to_string()),
    }
}

/// Routes from DNS MX records (see the [module docs](self)).
#[derive(Debug, Clone)]
pub struct MxResolver {
    dns: TokioResolver,
    port: u16,
    /// Routes are marked [`Route::public_only`] unless `allow_private`.
    public_only: bool,
}

impl MxResolver {
    /// A resolver that asks the system's name servers (`/etc/resolv.conf` on Unix),
    /// with its `timeout` and `attempts` unless `options` sets them.
    pub fn from_system_conf(options: &MxOptions) -> Result<Self, MxSetupError> {
        let mut builder = TokioResolver::builder_tokio().map_err(MxSetupError)?;
        options.apply(builder.options_mut());
        Ok(MxResolver {
            dns: builder.build(),
            port: options.port,
            public_only: !options.allow_private,
        })
    }

    /// A resolver that asks `servers` (over UDP, and TCP for truncated answers) and
    /// routes to `port`; default options otherwise.
    pub fn with_nameservers(servers: &[SocketAddr], port: u16) -> Self {
        Self::with_nameservers_and_options(
            servers,
            &MxOptions {
                port,
                ..MxOptions::default()
            },
        )
    }

    /// A resolver that asks `servers` (over UDP, and TCP for truncated answers).
    pub fn with_nameservers_and_options(servers: &[SocketAddr], options: &MxOptions) -> Self {
        let mut config = ResolverConfig::new();
        for &server in servers {
            config.add_name_server(NameServerConfig::new(server, Protocol::Udp));
            config.add_name_server(NameServerConfig::new(server, Protocol::Tcp));
        }
        let mut builder =
            TokioResolver::builder_with_config(config, TokioConnectionProvider::default());
        options.apply(builder.options_mut());
        MxResolver {
            dns: builder.build(),
            port: options.port,
            public_only: !options.allow_private,
        }
    }

    /// The port every route gets.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The routes for `domain`, most preferred first, or why there are none.
    pub async fn lookup(&self, domain: &str) -> Result<Vec<Route>, MxError> {
        let name = fqdn(domain)?;
        let records = match self.dns.mx_lookup(name.clone()).await {
            Ok(lookup) => lookup
                .iter()
                .map(|mx| (mx.preference(), mx.exchange().clone()))
                .collect::<Vec<_>>(),
            Err(e) => match classify(&e) {
                Failure::NoRecords => Vec::new(),
                Failure::NoSuchDomain => return Err(MxError::NoSuchDomain(domain.to_string())),
                Failure::Temporary(reason) => {
                    return Err(MxError::Temporary {
                        domain: domain.to_string(),
                        record: "MX",
                        reason,
                    });
                }
            },
        };
        if records.is_empty() {
            return self.implicit_mx(domain, &name).await;
        }
        let routes = order(records, self.port, self.public_only);
        if routes.is_empty() {
            // Every exchange is the root: a null MX. RFC 7505 allows only the single
            // record; a domain that also lists real hosts gets those (`order` drops
            // the root ones).
            return Err(MxError::NullMx(domain.to_string()));
        }
        Ok(routes)
    }

    /// The exchanges of the MX records at `name` (lower case, no trailing dot), in no
    /// order; empty when it has none (no implicit MX here).
    pub async fn mx_hosts(&self, name: &str) -> Result<Vec<String>, MxError> {
        let fq = fqdn(name)?;
        match self.dns.mx_lookup(fq).await {
            Ok(lookup) => Ok(lookup.iter().map(|mx| host_name(mx.exchange())).collect()),
            Err(e) => match classify(&e) {
                Failure::NoRecords | Failure::NoSuchDomain => Ok(Vec::new()),
                Failure::Temporary(reason) => Err(MxError::Temporary {
                    domain: name.to_string(),
                    record: "MX",
                    reason,
                }),
            },
        }
    }

    /// The target of the CNAME record at `name` (lower case, no trailing dot); empty
    /// when it has none.
    pub async fn cname_targets(&self, name: &str) -> Result<Vec<String>, MxError> {
        use hickory_resolver::proto::rr::{RData, RecordType};
        let fq = fqdn(name)?;
        match self.dns.lookup(fq, RecordType::CNAME).await {
            Ok(lookup) => Ok(lookup
                .record_iter()
                .filter_map(|r| match r.data() {
                    RData::CNAME(target) => Some(host_name(&target.0)),
                    _ => None,
                })
                .collect()),
            Err(e) => match classify(&e) {
                Failure::NoRecords | Failure::NoSuchDomain => Ok(Vec::new()),
                Failure::Temporary(reason) => Err(MxError::Temporary {
                    domain: name.to_string(),
                    record: "CNAME",
                    reason,
                }),
            },
        }
    }

    /// The TXT records at `name`, each one's strings joined (a long DKIM record is
    /// published as several strings of one record); empty when the name has none or
    /// does not exist. What a tenant published for a sending domain is read with it.
    pub async fn txt(&self, name: &str) -> Result<Vec<String>, MxError> {
        let fq = fqdn(name)?;
        match self.dns.txt_lookup(fq).await {
            Ok(lookup) => Ok(lookup
                .iter()
                .map(|txt| {
                    txt.txt_data()
                        .iter()
                        .map(|part| String::from_utf8_lossy(part))
                        .collect::<String>()
                })
                .collect()),
            Err(e) => match classify(&e) {
                Failure::NoRecords | Failure::NoSuchDomain => Ok(Vec::new()),
                Failure::Temporary(reason) => Err(MxError::Temporary {
                    domain: name.to_string(),
                    record: "TXT",
                    reason,
                }),
            },
        }
    }

    /// RFC 5321 5.1: without MX records the domain itself is the host, if it has an
    /// address. A and AAAA are asked separately so that one failing temporarily is
    /// not taken for "no address".
    async fn implicit_mx(&self, domain: &str, name: &Name) -> Result<Vec<Route>, MxError> {
        let (v4, v6) = tokio::join!(
            self.dns.ipv4_lookup(name.clone()),
            self.dns.ipv6_lookup(name.clone())
        );
        let v4 = v4.map(|found| found.iter().next().is_some());
        let v6 = v6.map(|found| found.iter().next().is_some());
        if matches!(v4, Ok(true)) || matches!(v6, Ok(true)) {
            return Ok(vec![Route {
                host: host_name(name),
                port: self.port,
                public_only: self.public_only,
            }]);
        }
        for (record, result) in [("A", &v4), ("AAAA", &v6)] {
            if let Err(e) = result
                && let Failure::Temporary(reason) = classify(e)
            {
                return Err(MxError::Temporary {
                    domain: domain.to_string(),
                    record,
                    reason,
                });
            }
        }
        Err(MxError::NoAddress(domain.to_string()))
    }
}

#[async_trait]
impl Resolver for MxResolver {
    async fn resolve(&self, domain: &str) -> Result<Vec<Route>, ResolveError> {
        match self.lookup(domain).await {
            Ok(routes) => {
                metrics::counter!("maily_mx_lookups_total", "result" => "routes").increment(1);
                debug!(domain, routes = routes.len(), "mx routes");
                Ok(routes)
            }
            Err(error) => {
                metrics::counter!("maily_mx_lookups_total", "result" => error.label()).increment(1);
                if error.is_temporary() {
                    warn!(domain, reason = %error, "mx lookup failed");
                } else {
                    info!(domain, reason = %error, "no mail route");
                }
                Err(error.into())
            }
        }
    }
}

/// `domain` as an absolute name (so no search domain is ever appended), IDNA-encoded.
fn fqdn(domain: &str) -> Result<Name, MxError> {
    let bad = |reason: String| MxError::BadName {
        domain: domain.to_string(),
        reason,
    };
    let mut name = Name::from_utf8(domain.trim()).map_err(|e| bad(e.to_string()))?;
    if name.is_root() {
        return Err(bad("the root is not a mail domain".into()));
    }
    name.set_fqdn(true);
    Ok(name)
}

/// A name as a host to connect to: lower-case ASCII (punycode), no trailing dot.
fn host_name(name: &Name) -> String {
    name.to_ascii().trim_end_matches('.').to_ascii_lowercase()
}

/// MX records as routes: lowest preference first, equal preferences shuffled, each
/// host once (at its best preference), root exchanges (null MX) left out.
fn order(mut records: Vec<(u16, Name)>, port: u16, public_only: bool) -> Vec<Route> {
    records.shuffle(&mut rand::rng());
    // Stable: the shuffle decides the order within a preference.
    records.sort_by_key(|(preference, _)| *preference);
    let mut routes: Vec<Route> = Vec::with_capacity(records.len());
    for (_, exchange) in records {
        if exchange.is_root() {
            continue;
        }
        let host = host_name(&exchange);
        if !routes.iter().any(|r| r.host == host) {
            routes.push(Route {
                host,
                port,
                public_only,
            });
        }
    }
    routes
}

/// Static routes first, another resolver (normally [`MxResolver`]) for the rest.
///
/// A domain listed in the table goes where the table says. When the table has a `*`
/// smart host, every domain is routed by the table and `fallback` is never asked;
/// [`RoutingResolver::consults_fallback`] tells which case this is.
#[derive(Debug, Clone)]
pub struct RoutingResolver<F = MxResolver> {
    routes: StaticRoutes,
    fallback: F,
}

impl<F: Resolver> RoutingResolver<F> {
    /// Routes from `routes`, else from `fallback`.
    pub fn new(routes: StaticRoutes, fallback: F) -> Self {
        RoutingResolver { routes, fallback }
    }

    /// False when the static table has a `*` smart host, so `fallback` is never used.
    pub fn consults_fallback(&self) -> bool {
        // The empty name is never a table key (keys are parsed domains), so only the
        // `*` default can answer it.
        self.routes.routes_for("").is_none()
    }

    /// The static table.
    pub fn routes(&self) -> &StaticRoutes {
        &self.routes
    }

    /// The resolver for domains the table does not list.
    pub fn fallback(&self) -> &F {
        &self.fallback
    }
}

#[async_trait]
impl<F: Resolver> Resolver for RoutingResolver<F> {
    async fn resolve(&self, domain: &str) -> Result<Vec<Route>, ResolveError> {
        match self.routes.routes_for(domain) {
            Some(routes) => Ok(routes.to_vec()),
            None => self.fallback.resolve(domain).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    fn hosts(routes: &[Route]) -> Vec<&str> {
        routes.iter().map(|r| r.host.as_str()).collect()
    }

    #[test]
    fn routes_go_by_preference_once_per_host_without_root() {
        let routes = order(
            vec![
                (20, name("b.example.")),
                (10, name("A.example.")),
                (30, name("a.example.")),
                (0, name(".")),
            ],
            2525,
            true,
        );
        assert_eq!(hosts(&routes), ["a.example", "b.example"]);
        assert!(routes.iter().all(|r| r.port == 2525 && r.public_only));
        assert!(order(vec![(0, Name::root())], 25, true).is_empty());
    }

    #[test]
    fn equal_preferences_come_in_both_orders() {
        let records = vec![
            (10, name("x.example.")),
            (10, name("y.example.")),
            (5, name("first.example.")),
        ];
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let routes = order(records.clone(), 25, true);
            assert_eq!(routes[0].host, "first.example");
            seen.insert(hosts(&routes[1..]).join(","));
        }
        assert_eq!(seen.len(), 2, "{seen:?}");
    }

    #[test]
    fn names_are_absolute_and_ascii() {
        let n = fqdn("Bücher.example").unwrap();
        assert!(n.is_fqdn());
        assert_eq!(host_name(&n), "xn--bcher-kva.example");
        assert_eq!(host_name(&fqdn("example.org.").unwrap()), "example.org");
        assert!(matches!(fqdn("."), Err(MxError::BadName { .. })));
        assert!(matches!(fqdn("a..b"), Err(MxError::BadName { .. })));
    }

    #[test]
    fn errors_map_to_the_port() {
        let temporary = MxError::Temporary {
            domain: "x.org".into(),
            record: "MX",
            reason: "timed out".into(),
        };
        assert_eq!(
            ResolveError::from(temporary),
            ResolveError::Temporary {
                domain: "x.org".into(),
                reason: "looking up MX of \"x.org\" failed: timed out".into()
            }
        );
        assert_eq!(
            ResolveError::from(MxError::NullMx("x.org".into())),
            ResolveError::NoRoute("x.org".into())
        );
        assert_eq!(
            MxError::NullMx("x.org".into()).to_string(),
            "domain \"x.org\" accepts no mail (null MX, RFC 7505)"
        );
    }
}
