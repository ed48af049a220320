//! The SMTP transport: a connection pool per route, one transaction per message.

use crate::connection::{ConnectOptions, Connection, SessionError, Step, TxResult, peer_name};
use crate::limits::{Scope, Throttles};
use crate::tls::{CertificateCheck, TlsMode, client_config};
use async_trait::async_trait;
use maily_engine::TenantId;
use maily_engine::ports::{
    DeliveryOutcome, OutboundMessage, Pace, ResolveError, Resolver, Route, Transport,
};
use maily_engine::reply::SmtpReply;
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tracing::{debug, warn};

/// Tuning for [`SmtpTransport`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpClientParams {
    /// The name we announce in EHLO/HELO.
    pub helo_name: String,
    /// Simultaneous connections (and so transactions) per route; 0 counts as 1.
    pub max_connections_per_route: usize,
    /// A connection is closed after this many transactions; 0 counts as 1.
    pub max_messages_per_connection: usize,
    /// Time allowed for the TCP connect.
    pub connect_timeout: Duration,
    /// Time allowed for each write and for each reply.
    pub command_timeout: Duration,
    /// When to use STARTTLS; certificates are checked as set with
    /// [`SmtpTransport::with_tls_config`] (by default not at all).
    pub tls: TlsMode,
    /// Source-IP pools: name -> local addresses, used in turn for new connections.
    pub source_pools: BTreeMap<String, Vec<IpAddr>>,
    /// The pool each listed tenant sends from.
    pub tenant_pools: BTreeMap<String, String>,
    /// The pool of every other tenant; `None` lets the system pick the address.
    pub default_pool: Option<String>,
}

impl Default for SmtpClientParams {
    fn default() -> Self {
        SmtpClientParams {
            helo_name: "localhost".into(),
            max_connections_per_route: 8,
            max_messages_per_connection: 100,
            connect_timeout: Duration::from_secs(30),
            // Shorter than RFC 5321's minutes-long timeouts: a stalled server should
            // not hold a delivery slot for long in a high-volume sender.
            command_timeout: Duration::from_secs(60),
            tls: TlsMode::Opportunistic,
            source_pools: BTreeMap::new(),
            tenant_pools: BTreeMap::new(),
            default_pool: None,
        }
    }
}

/// A source-IP pool's addresses and its round-robin position.
#[derive(Debug)]
struct SourcePool {
    addresses: Vec<IpAddr>,
    next: AtomicUsize,
}

/// Connections are pooled per route and source-IP pool.
type PoolKey = (Route, Option<String>);

/// The connections of one route from one source-IP pool.
///
/// A permit is held for each transaction, and a new connection is only opened by a
/// permit holder that found no idle one, so a route never has more live connections
/// than permits. Waiting for a permit is the back-pressure when a route is saturated.
struct RoutePool {
    route: Route,
    peer: String,
    source: Option<Arc<SourcePool>>,
    permits: Arc<Semaphore>,
    /// Last in, first out, so traffic concentrates on few warm connections.
    idle: Mutex<Vec<Connection>>,
}

/// Delivers messages over SMTP, pooling connections per route.
///
/// Safe to share: clone the `Arc` it lives in and call [`Transport::deliver`] from
/// many tasks at once.
pub struct SmtpTransport {
    resolver: Arc<dyn Resolver>,
    params: SmtpClientParams,
    connect: ConnectOptions,
    throttles: Arc<Throttles>,
    sources: HashMap<String, Arc<SourcePool>>,
    pools: Mutex<HashMap<PoolKey, Arc<RoutePool>>>,
}

impl SmtpTransport {
    /// A transport that asks `resolver` where each recipient domain's mail goes.
    pub fn new(resolver: Arc<dyn Resolver>, mut params: SmtpClientParams) -> Self {
        params.max_connections_per_route = params.max_connections_per_route.max(1);
        params.max_messages_per_connection = params.max_messages_per_connection.max(1);
        let connect = ConnectOptions {
            helo_name: params.helo_name.clone(),
            connect_timeout: params.connect_timeout,
            command_timeout: params.command_timeout,
            local: None,
            tls: params.tls,
            tls_config: client_config(&CertificateCheck::None)
                .expect("a TLS client without certificate checks always builds"),
        };
        let sources = params
            .source_pools
            .iter()
            .map(|(name, addresses)| {
                let pool = SourcePool {
                    addresses: addresses.clone(),
                    next: AtomicUsize::new(0),
                };
                (name.clone(), Arc::new(pool))
            })
            .collect();
        SmtpTransport {
            resolver,
            params,
            connect,
            throttles: Arc::new(Throttles::default()),
            sources,
            pools: Mutex::new(HashMap::new()),
        }
    }

    /// Checks server certificates with `config` (see [`crate::tls::client_config`]).
    pub fn with_tls_config(mut self, config: Arc<rustls::ClientConfig>) -> Self {
        self.connect.tls_config = config;
        self
    }

    /// Enforces `throttles`; keep a clone of the `Arc` to change limits at run time.
    pub fn with_throttles(mut self, throttles: Arc<Throttles>) -> Self {
        self.throttles = throttles;
        self
    }

    /// The limits in force, to change them at run time.
    pub fn throttles(&self) -> &Arc<Throttles> {
        &self.throttles
    }

    /// The source-IP pool `tenant` sends from.
    fn source_pool(&self, tenant: &str) -> Option<&str> {
        self.params
            .tenant_pools
            .get(tenant)
            .or(self.params.default_pool.as_ref())
            .map(String::as_str)
            .filter(|name| self.sources.contains_key(*name))
    }

    /// The limit scopes a message of `tenant` to `domain` belongs to, in the order
    /// they are taken: domain, tenant, then its source pool if it has one.
    fn scopes(&self, tenant: &str, domain: &str) -> Vec<Scope> {
        let mut scopes = vec![Scope::domain(domain), Scope::Tenant(tenant.to_string())];
        scopes.extend(
            self.source_pool(tenant)
                .map(|name| Scope::Pool(name.to_string())),
        );
        scopes
    }

    /// The parameters in effect.
    pub fn params(&self) -> &SmtpClientParams {
        &self.params
    }

    /// Connections currently idle in the pool, over all routes.
    pub fn idle_connections(&self) -> usize {
        lock(&self.pools)
            .values()
            .map(|pool| lock(&pool.idle).len())
            .sum()
    }

    /// Sends QUIT on every idle connection and closes it; for orderly shutdown.
    /// Connections in use are closed when their transaction ends and they are dropped.
    pub async fn close_idle(&self) {
        let idle: Vec<Connection> = lock(&self.pools)
            .values()
            .flat_map(|pool| std::mem::take(&mut *lock(&pool.idle)))
            .collect();
        let mut quits = JoinSet::new();
        for conn in idle {
            quits.spawn(conn.quit());
        }
        while quits.join_next().await.is_some() {}
    }

    fn pool(&self, route: &Route, source: Option<&str>) -> Arc<RoutePool> {
        let key = (route.clone(), source.map(str::to_string));
        let mut pools = lock(&self.pools);
        if let Some(pool) = pools.get(&key) {
            return Arc::clone(pool);
        }
        let pool = Arc::new(RoutePool {
            route: route.clone(),
            peer: peer_name(route),
            source: source.and_then(|name| self.sources.get(name)).cloned(),
            permits: Arc::new(Semaphore::new(self.params.max_connections_per_route)),
            idle: Mutex::new(Vec::new()),
        });
        pools.insert(key, Arc::clone(&pool));
        pool
    }

    async fn open(&self, pool: &RoutePool) -> Result<Connection, SessionError> {
        let mut options = self.connect.clone();
        options.local = pool.source.as_ref().and_then(|source| {
            let i = source.next.fetch_add(1, Ordering::Relaxed);
            source
                .addresses
                .get(i % source.addresses.len().max(1))
                .copied()
        });
        let conn = match Connection::open(&pool.route, &options).await {
            Err(SessionError::Handshake { peer, source })
                if options.tls == TlsMode::Opportunistic =>
            {
                // Opportunistic TLS never costs a delivery: try again in plain text.
                warn!(%peer, error = %source, "TLS handshake failed, delivering without TLS");
                metrics::counter!("maily_smtp_tls_fallbacks_total").increment(1);
                options.tls = TlsMode::Off;
                Connection::open(&pool.route, &options).await?
            }
            result => result?,
        };
        let tls = if conn.is_tls() { "yes" } else { "no" };
        metrics::counter!("maily_smtp_connections_opened_total", "tls" => tls).increment(1);
        let caps = conn.capabilities();
        debug!(
            peer = conn.peer(),
            local = ?options.local,
            tls = conn.is_tls(),
            pipelining = caps.pipelining,
            enhanced_status_codes = caps.enhanced_status_codes,
            "smtp connection opened"
        );
        Ok(conn)
    }

    async fn attempt(&self, message: &OutboundMessage) -> DeliveryOutcome {
        let domain = message.rcpt_to.domain();
        let routes = match self.resolver.resolve(domain).await {
            Ok(routes) if !routes.is_empty() => routes,
            Ok(_) | Err(ResolveError::NoRoute(_)) => return no_route(domain),
            Err(e @ ResolveError::Temporary { .. }) => {
                return DeliveryOutcome::Transient {
                    reply: None,
                    error: e.to_string(),
                };
            }
        };
        let source = self.source_pool(message.tenant.as_str());
        let scopes = self.scopes(message.tenant.as_str(), domain);
        let admission = self.throttles.admit(&scopes).await;
        let per_connection = admission
            .max_messages_per_connection
            .map_or(self.params.max_messages_per_connection, |n| {
                n.clamp(1, self.params.max_messages_per_connection)
            });
        let mut errors = Vec::new();
        let mut last_refusal = None;
        let mut not_public = 0;
        for route in &routes {
            let pool = self.pool(route, source);
            let permit = Arc::clone(&pool.permits)
                .acquire_owned()
                .await
                .expect("route semaphores are never closed");
            if let Some(guard) = &message.guard
                && !guard.may_send()
            {
                // Checked after the wait for a connection slot, which can be long.
                return DeliveryOutcome::Transient {
                    reply: None,
                    error: "the sender may no longer send this message".into(),
                };
            }
            let idle = lock(&pool.idle).pop();
            let (conn, reused) = match idle {
                Some(conn) => (conn, true),
                None => match self.open(&pool).await {
                    Ok(conn) => (conn, false),
                    Err(e) => {
                        warn!(peer = %pool.peer, error = %e, "smtp connection failed");
                        last_refusal = e.refusal().cloned();
                        not_public += usize::from(e.is_not_public());
                        errors.push(e.to_string());
                        continue;
                    }
                },
            };
            return self
                .transact(message, &pool, permit, conn, reused, per_connection)
                .await;
        }
        if not_public == routes.len() {
            // The domain's DNS points only at loopback or private networks: that will
            // not change by waiting, and connecting there is refused on purpose.
            return DeliveryOutcome::Permanent {
                reply: SmtpReply::new(
                    550,
                    format!(
                        "5.4.4 the mail servers of {domain} are not on the public internet: {}",
                        errors.join("; ")
                    ),
                ),
            };
        }
        DeliveryOutcome::Transient {
            reply: last_refusal,
            error: errors.join("; "),
        }
    }

    async fn transact(
        &self,
        message: &OutboundMessage,
        pool: &RoutePool,
        permit: OwnedSemaphorePermit,
        mut conn: Connection,
        mut reused: bool,
        per_connection: usize,
    ) -> DeliveryOutcome {
        loop {
            let result = conn.transact(message).await;
            // A server may drop a connection while it sits idle in our pool; that
            // shows on the first command, before any data went out, so one retry on a
            // fresh connection cannot deliver twice.
            let stale = reused
                && match &result {
                    Ok(TxResult::Rejected {
                        step: Step::Mail,
                        reply,
                    }) => reply.code == 421,
                    Err(e) => e.is_stale_connection(),
                    _ => false,
                };
            if stale {
                debug!(peer = %pool.peer, "pooled smtp connection was closed by the server, retrying");
                drop(conn);
                conn = match self.open(pool).await {
                    Ok(conn) => conn,
                    Err(e) => {
                        warn!(peer = %pool.peer, error = %e, "smtp connection failed");
                        return DeliveryOutcome::Transient {
                            reply: e.refusal().cloned(),
                            error: e.to_string(),
                        };
                    }
                };
                reused = false;
                continue;
            }
            return match result {
                Ok(TxResult::Delivered(reply)) => {
                    debug!(
                        message_id = %message.message_id,
                        peer = %pool.peer,
                        code = reply.code,
                        "message delivered"
                    );
                    self.release(pool, conn, permit, per_connection);
                    DeliveryOutcome::Delivered { reply }
                }
                Ok(TxResult::Rejected { step, reply }) => {
                    debug!(
                        message_id = %message.message_id,
                        peer = %pool.peer,
                        %step,
                        code = reply.code,
                        "message rejected"
                    );
                    // 421: the server is closing the connection anyway.
                    if reply.code != 421 && conn.reset().await {
                        self.release(pool, conn, permit, per_connection);
                    }
                    rejection(&pool.peer, step, reply)
                }
                Err(e) => {
                    warn!(
                        message_id = %message.message_id,
                        peer = %pool.peer,
                        error = %e,
                        "smtp transaction failed"
                    );
                    DeliveryOutcome::Transient {
                        reply: None,
                        error: e.to_string(),
                    }
                }
            };
        }
    }

    fn release(
        &self,
        pool: &RoutePool,
        conn: Connection,
        permit: OwnedSemaphorePermit,
        per_connection: usize,
    ) {
        if conn.transactions() >= per_connection {
            // QUIT off the delivery path. The permit goes along, so the route stays
            // within its connection limit until the socket is really closed.
            tokio::spawn(async move {
                conn.quit().await;
                drop(permit);
            });
        } else {
            lock(&pool.idle).push(conn);
            // Only after the push: a waiter that got the permit first would find no
            // idle connection and open one too many.
            drop(permit);
        }
    }
}

impl std::fmt::Debug for SmtpTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpTransport")
            .field("params", &self.params)
            .field("routes", &lock(&self.pools).len())
            .field("idle_connections", &self.idle_connections())
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Transport for SmtpTransport {
    async fn deliver(&self, message: &OutboundMessage) -> DeliveryOutcome {
        let outcome = self.attempt(message).await;
        let result = match &outcome {
            DeliveryOutcome::Delivered { .. } => "delivered",
            DeliveryOutcome::Transient { .. } => "transient",
            DeliveryOutcome::Permanent { .. } => "permanent",
        };
        metrics::counter!("maily_smtp_transactions_total", "result" => result).increment(1);
        outcome
    }

    fn pace(&self, tenant: &TenantId, domain: &str) -> Option<Pace> {
        if !self.throttles.any_rate() {
            return None;
        }
        self.throttles.pace(&self.scopes(tenant.as_str(), domain))
    }
}

/// A domain without a route cannot receive mail; report it like a server would
/// (RFC 3463 5.1.2, bad destination system address).
fn no_route(domain: &str) -> DeliveryOutcome {
    DeliveryOutcome::Permanent {
        reply: SmtpReply::new(550, format!("5.1.2 no route to domain {domain}")),
    }
}

fn rejection(peer: &str, step: Step, reply: SmtpReply) -> DeliveryOutcome {
    if reply.is_permanent() {
        DeliveryOutcome::Permanent { reply }
    } else {
        DeliveryOutcome::Transient {
            error: format!("{peer} answered {step} with {reply}"),
            reply: Some(reply),
        }
    }
}

/// Pool mutexes guard plain pushes and pops that cannot panic, so poisoning would
/// carry no meaning; take the data either way.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
