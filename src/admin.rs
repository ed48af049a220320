//! The admin API's hold on the running engine: its delivery limits
//! ([`TransportThrottles`] over the transport's [`Throttles`]) and its status
//! ([`EngineStatusBridge`] over the [`EngineHandle`] and the event log), and the start
//! of the admin listener for `maily serve`.
//!
//! The engine handle lives on the actix system's thread and cannot be shared with the
//! admin API's workers, so the bridge asks for partitions, leadership and restarts over
//! a channel that `maily serve`'s main loop answers ([`StatusRequests::answer_next`]);
//! the queue depths it reads from the log itself.

use anyhow::Context as _;
use maily_actors::{EngineHandle, EngineSettings, Ports};
use maily_api::admin::{
    self, AdminDeps, DomainHosts, EngineStatus, EngineStatusReport, HostRule, StatusError,
    ThrottleControl, ThrottleEntry, ThrottleError, ThrottleKind, ThrottleLimit, ThrottleTable,
};
use maily_api::auth::Authenticator;
use maily_api::intake::Intake;
use maily_config::Settings;
use maily_engine::ports::EventLog;
use maily_engine::records::topics;
use maily_smtp::{Limit, Rate, Scope, ScopeKind, Throttles};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tracing::info;

/// How long a status request waits for the engine's main loop.
const ASK_TIMEOUT: Duration = Duration::from_secs(5);

/// The transport's delivery limits, as the admin API changes them.
pub struct TransportThrottles(pub Arc<Throttles>);

fn scope_kind(kind: ThrottleKind) -> ScopeKind {
    match kind {
        ThrottleKind::Domain => ScopeKind::Domain,
        ThrottleKind::Tenant => ScopeKind::Tenant,
        ThrottleKind::Pool => ScopeKind::Pool,
    }
}

fn scope(kind: ThrottleKind, name: &str) -> Scope {
    match kind {
        ThrottleKind::Domain => Scope::domain(name),
        ThrottleKind::Tenant => Scope::Tenant(name.to_string()),
        ThrottleKind::Pool => Scope::Pool(name.to_string()),
    }
}

fn entry(scope: Option<&Scope>, kind: ScopeKind, limit: &Limit) -> ThrottleEntry {
    let (kind, name) = match (scope, kind) {
        (Some(Scope::Domain(n)), _) => (ThrottleKind::Domain, Some(n.clone())),
        (Some(Scope::Tenant(n)), _) => (ThrottleKind::Tenant, Some(n.clone())),
        (Some(Scope::Pool(n)), _) => (ThrottleKind::Pool, Some(n.clone())),
        (None, ScopeKind::Domain) => (ThrottleKind::Domain, None),
        (None, ScopeKind::Tenant) => (ThrottleKind::Tenant, None),
        (None, ScopeKind::Pool) => (ThrottleKind::Pool, None),
    };
    let count = |n: Option<usize>| n.map(|n| u32::try_from(n).unwrap_or(u32::MAX));
    ThrottleEntry {
        kind,
        name,
        limit: ThrottleLimit {
            max_connections: count(limit.max_connections),
            max_messages_per_connection: count(limit.max_messages_per_connection),
            rate: limit.rate.map(|r| r.to_string()),
            burst: limit.burst,
        },
    }
}

fn limit(l: &ThrottleLimit) -> Result<Limit, ThrottleError> {
    let rate = l
        .rate
        .as_deref()
        .map(str::parse::<Rate>)
        .transpose()
        .map_err(|e| ThrottleError {
            field: "rate",
            reason: e.to_string(),
        })?;
    Ok(Limit {
        max_connections: l.max_connections.map(|n| n as usize),
        max_messages_per_connection: l.max_messages_per_connection.map(|n| n as usize),
        rate,
        burst: l.burst,
    })
}

impl ThrottleControl for TransportThrottles {
    fn limits(&self) -> ThrottleTable {
        let table = self.0.table();
        ThrottleTable {
            defaults: table
                .defaults
                .iter()
                .map(|(kind, l)| entry(None, *kind, l))
                .collect(),
            scopes: table
                .scopes
                .iter()
                .map(|(scope, l)| entry(Some(scope), ScopeKind::Domain, l))
                .collect(),
        }
    }

    fn set(
        &self,
        kind: ThrottleKind,
        name: Option<&str>,
        l: &ThrottleLimit,
    ) -> Result<(), ThrottleError> {
        let l = limit(l)?;
        match name {
            Some(name) => self.0.set(scope(kind, name), l),
            None => self.0.set_default(scope_kind(kind), l),
        }
        Ok(())
    }

    fn clear(&self, kind: ThrottleKind, name: &str) -> bool {
        let scope = scope(kind, name);
        let had = self.0.table().scopes.contains_key(&scope);
        self.0.clear(&scope);
        had
    }
}

/// What only the engine handle knows.
#[derive(Debug, Clone)]
pub struct EngineFacts {
    pub owned_partitions: Vec<u32>,
    pub leader: bool,
    pub restarts: u64,
}

type Ask = oneshot::Sender<EngineFacts>;

/// The engine's status for the admin API.
pub struct EngineStatusBridge {
    asks: mpsc::Sender<Ask>,
    log: Arc<dyn EventLog>,
    /// `(group, topic)` of every consumer stage.
    consumers: Vec<(String, String)>,
    partitions: u32,
    member: String,
}

/// The requests of an [`EngineStatusBridge`], answered where the engine handle lives.
pub struct StatusRequests(mpsc::Receiver<Ask>);

impl StatusRequests {
    /// Waits for the next request and answers it from `engine`; `None` once every
    /// bridge is gone.
    pub async fn answer_next(&mut self, engine: &EngineHandle) -> Option<()> {
        let ask = self.0.recv().await?;
        let facts = EngineFacts {
            owned_partitions: engine.owned_partitions().await,
            leader: engine.is_leader().await,
            restarts: engine.restarts(),
        };
        let _ = ask.send(facts);
        Some(())
    }
}

/// The consumer stages and the topics they read. The group names are the actors'
/// (`maily_actors::{sender, bounce, analytics}`); the reward actor reads the stats
/// topic with offsets kept in its settlements, not as a log group.
pub(crate) fn consumers(settings: &EngineSettings) -> Vec<(String, String)> {
    let mut out = vec![("sender".to_string(), topics::SEND.to_string())];
    out.extend(
        (0..settings.sender.retry_tiers.len()).map(|t| ("sender".to_string(), topics::retry(t))),
    );
    out.push(("bounce".to_string(), topics::INBOUND.to_string()));
    out.push(("analytics".to_string(), topics::EVENTS.to_string()));
    out
}

/// A status bridge for the engine `settings` describe, and its requests.
pub fn engine_status(
    settings: &EngineSettings,
    log: Arc<dyn EventLog>,
) -> (EngineStatusBridge, StatusRequests) {
    let (asks, requests) = mpsc::channel(16);
    let bridge = EngineStatusBridge {
        asks,
        log,
        consumers: consumers(settings),
        partitions: settings.partitions,
        member: settings.ownership.member.clone(),
    };
    (bridge, StatusRequests(requests))
}

#[async_trait::async_trait]
impl EngineStatus for EngineStatusBridge {
    async fn status(&self) -> Result<EngineStatusReport, StatusError> {
        let (ask, answer) = oneshot::channel();
        let stopping = || StatusError::Unavailable("the engine is stopping".into());
        self.asks.send(ask).await.map_err(|_| stopping())?;
        let facts = tokio::time::timeout(ASK_TIMEOUT, answer)
            .await
            .map_err(|_| StatusError::Unavailable("the engine did not answer in time".into()))?
            .map_err(|_| stopping())?;
        let queues = admin::control::queue_depths(&*self.log, &self.consumers, self.partitions)
            .await
            .map_err(|e| StatusError::Unavailable(format!("event log: {e}")))?;
        Ok(EngineStatusReport {
            member: self.member.clone(),
            partitions: self.partitions,
            owned_partitions: facts.owned_partitions,
            leader: facts.leader,
            actor_restarts: facts.restarts,
            queues,
        })
    }
}

type AdminTask = tokio::task::JoinHandle<std::io::Result<()>>;

/// A running admin listener: its stop switch and task, and the status requests the
/// caller answers while it runs.
pub struct AdminListener {
    pub stop: oneshot::Sender<()>,
    pub task: AdminTask,
    pub requests: StatusRequests,
}

/// The tenants' own hosts that `[verp]` and `[tracking]` turn on.
pub fn domain_hosts(settings: &Settings) -> DomainHosts {
    let rule = |label: &str, target: &str| {
        (!label.is_empty()).then(|| HostRule {
            label: label.to_ascii_lowercase(),
            target: target.trim_end_matches('.').to_ascii_lowercase(),
        })
    };
    let tracking_host = maily_engine::tracking::tracking_host(&settings.tracking.base_url);
    DomainHosts {
        return_path: rule(&settings.verp.tenant_label, &settings.verp.mx_host),
        tracking: rule(&settings.tracking.tenant_label, tracking_host),
    }
}

/// Starts the admin API on `[admin] bind`.
pub fn start(
    settings: &Settings,
    engine: &EngineSettings,
    ports: &Ports,
    throttles: Arc<Throttles>,
    intake: Arc<Intake>,
    auth: Arc<Authenticator>,
    quotas: Arc<maily_api::quota::Quotas>,
) -> anyhow::Result<AdminListener> {
    let bind = settings.admin.bind;
    let listener = std::net::TcpListener::bind(bind)
        .with_context(|| format!("admin.bind: listening on {bind}"))?;
    let (status, requests) = engine_status(engine, ports.log.clone());
    let deps = AdminDeps {
        intake,
        store: ports.store.clone(),
        hot: Some(ports.hot.clone()),
        auth,
        throttles: Arc::new(TransportThrottles(throttles)),
        status: Arc::new(status),
        quotas,
        domains: Some(Arc::new(crate::domains::DnsDomains::from_settings(
            settings,
        ))),
        hosts: domain_hosts(settings),
    };
    info!(addr = %bind, "admin API listening");
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(admin::serve(listener, deps, async {
        let _ = stopped.await;
    }));
    Ok(AdminListener {
        stop,
        task,
        requests,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use maily_smtp::ThrottleTable as Table;

    #[test]
    fn limits_round_trip_through_the_transport_table() {
        let t = TransportThrottles(Arc::new(Throttles::new(Table::default())));
        let wanted = ThrottleLimit {
            max_connections: Some(3),
            max_messages_per_connection: None,
            rate: Some("50/s".into()),
            burst: Some(10),
        };
        t.set(ThrottleKind::Domain, Some("Example.COM"), &wanted)
            .unwrap();
        t.set(ThrottleKind::Pool, None, &ThrottleLimit::default())
            .unwrap();
        let table = t.limits();
        assert_eq!(
            table.scopes,
            [ThrottleEntry {
                kind: ThrottleKind::Domain,
                name: Some("example.com".into()),
                limit: wanted,
            }]
        );
        assert_eq!(table.defaults[0].kind, ThrottleKind::Pool);
        let bad = t.set(
            ThrottleKind::Tenant,
            Some("acme"),
            &ThrottleLimit {
                rate: Some("lots".into()),
                ..Default::default()
            },
        );
        assert_eq!(bad.unwrap_err().field, "rate");
        assert!(t.clear(ThrottleKind::Domain, "example.com"));
        assert!(!t.clear(ThrottleKind::Domain, "example.com"));
        assert!(t.limits().scopes.is_empty());
    }
}
