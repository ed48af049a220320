//! The SMTP transport: a connection pool per route, one transaction per message.

use crate::connection::{Connection, SessionError, Step, TxResult, peer_name};
use async_trait::async_trait;
use maily_engine::bounce::SmtpReply;
use maily_engine::ports::{
    DeliveryOutcome, OutboundMessage, ResolveError, Resolver, Route, Transport,
};
use std::collections::HashMap;
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
        }
    }
}

/// The connections of one route.
///
/// A permit is held for each transaction, and a new connection is only opened by a
/// permit holder that found no idle one, so a route never has more live connections
/// than permits. Waiting for a permit is the back-pressure when a route is saturated.
struct RoutePool {
    route: Route,
    peer: String,
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
    pools: Mutex<HashMap<Route, Arc<RoutePool>>>,
}

impl SmtpTransport {
    /// A transport that asks `resolver` where each recipient domain's mail goes.
    pub fn new(resolver: Arc<dyn Resolver>, mut params: SmtpClientParams) -> Self {
        params.max_connections_per_route = params.max_connections_per_route.max(1);
        params.max_messages_per_connection = params.max_messages_per_connection.max(1);
        SmtpTransport {
            resolver,
            params,
            pools: Mutex::new(HashMap::new()),
        }
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

    fn pool(&self, route: &Route) -> Arc<RoutePool> {
        let mut pools = lock(&self.pools);
        if let Some(pool) = pools.get(route) {
            return Arc::clone(pool);
        }
        let pool = Arc::new(RoutePool {
            route: route.clone(),
            peer: peer_name(route),
            permits: Arc::new(Semaphore::new(self.params.max_connections_per_route)),
            idle: Mutex::new(Vec::new()),
        });
        pools.insert(route.clone(), Arc::clone(&pool));
        pool
    }

    async fn open(&self, route: &Route) -> Result<Connection, SessionError> {
        let p = &self.params;
        let conn =
            Connection::open(route, &p.helo_name, p.connect_timeout, p.command_timeout).await?;
        metrics::counter!("maily_smtp_connections_opened_total").increment(1);
        let caps = conn.capabilities();
        debug!(
            peer = conn.peer(),
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
        let mut errors = Vec::new();
        let mut last_refusal = None;
        for route in &routes {
            let pool = self.pool(route);
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
                None => match self.open(route).await {
                    Ok(conn) => (conn, false),
                    Err(e) => {
                        warn!(peer = %pool.peer, error = %e, "smtp connection failed");
                        last_refusal = e.refusal().cloned();
                        errors.push(e.to_string());
                        continue;
                    }
                },
            };
            return self.transact(message, &pool, permit, conn, reused).await;
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
                conn = match self.open(&pool.route).await {
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
                    self.release(pool, conn, permit);
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
                        self.release(pool, conn, permit);
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

    fn release(&self, pool: &RoutePool, conn: Connection, permit: OwnedSemaphorePermit) {
        if conn.transactions() >= self.params.max_messages_per_connection {
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
