//! What the admin API asks of the running engine, as traits the binary implements
//! (this crate knows neither the SMTP transport nor the actors): the delivery limits
//! ([`ThrottleControl`]) and the engine's status ([`EngineStatus`]). The queue depths
//! are computed here from the event log ([`queue_depths`]), the same for every adapter.

use maily_engine::ports::{EventLog, LogError};
use serde::{Deserialize, Serialize};
use std::fmt;
use utoipa::ToSchema;

/// What a delivery limit applies to.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum ThrottleKind {
    /// Mail to one recipient domain.
    Domain,
    /// Mail of one tenant.
    Tenant,
    /// Mail leaving through one source-IP pool.
    Pool,
}

impl ThrottleKind {
    /// The kind's name in paths and bodies.
    pub fn as_str(self) -> &'static str {
        match self {
            ThrottleKind::Domain => "domain",
            ThrottleKind::Tenant => "tenant",
            ThrottleKind::Pool => "pool",
        }
    }

    /// Parses a kind's name.
    pub fn parse(s: &str) -> Option<ThrottleKind> {
        [
            ThrottleKind::Domain,
            ThrottleKind::Tenant,
            ThrottleKind::Pool,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

impl fmt::Display for ThrottleKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The limits of one scope. An absent (or null) dimension is unlimited; a PUT replaces
/// all four.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ThrottleLimit {
    /// Transactions (and so connections) open at once; at least 1.
    #[schema(minimum = 1)]
    pub max_connections: Option<u32>,
    /// Transactions on one connection before it is closed (domain scopes only).
    #[schema(minimum = 1)]
    pub max_messages_per_connection: Option<u32>,
    /// Messages started per period: `<messages>/<unit>` with unit `s`, `m` or `h`.
    #[schema(example = "50/s")]
    pub rate: Option<String>,
    /// Messages that may start back to back after a quiet spell; at least 1.
    #[schema(minimum = 1)]
    pub burst: Option<u32>,
}

/// One limit in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ThrottleEntry {
    pub kind: ThrottleKind,
    /// The scope's name (a domain, a tenant id, a pool); absent for a kind's default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub limit: ThrottleLimit,
}

/// Every limit in force: defaults per kind of scope, and limits of named scopes, which
/// replace the default of their kind entirely.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct ThrottleTable {
    pub defaults: Vec<ThrottleEntry>,
    pub scopes: Vec<ThrottleEntry>,
}

/// Why a limit was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct ThrottleError {
    /// The offending field of [`ThrottleLimit`].
    pub field: &'static str,
    pub reason: String,
}

/// The delivery limits of the running transport. Changes apply to the next
/// transaction.
pub trait ThrottleControl: Send + Sync + 'static {
    /// Every limit in force.
    fn limits(&self) -> ThrottleTable;

    /// Sets the limit of the scope `name` of `kind`, or the default of `kind` when
    /// `name` is `None`. `name` was validated for its kind already.
    fn set(
        &self,
        kind: ThrottleKind,
        name: Option<&str>,
        limit: &ThrottleLimit,
    ) -> Result<(), ThrottleError>;

    /// Removes a scope's own limit, so its kind's default applies again; `false` if it
    /// had none.
    fn clear(&self, kind: ThrottleKind, name: &str) -> bool;
}

/// One partition of a consumed topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct PartitionLag {
    pub partition: u32,
    /// The offset the next record will get.
    pub end_offset: u64,
    /// The consumer group's committed position, if it committed one.
    pub committed: Option<u64>,
    /// Records not processed yet: `end_offset - committed`.
    pub lag: u64,
}

/// A consumed topic: how many records wait for its consumer group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct QueueStatus {
    /// The consumer group (stage): `sender`, `bounce`, `analytics`.
    pub group: String,
    pub topic: String,
    /// Records waiting, over all partitions.
    pub depth: u64,
    pub partitions: Vec<PartitionLag>,
}

/// The engine as this process sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct EngineStatusReport {
    /// This process's member id in partition ownership.
    pub member: String,
    /// Partitions of every topic.
    pub partitions: u32,
    /// The partitions this process owns now.
    pub owned_partitions: Vec<u32>,
    /// Whether this process holds the leader role (reward and anchor actors).
    pub leader: bool,
    /// Actor restarts since the process started.
    pub actor_restarts: u64,
    /// Every consumed topic and its lag, over all partitions (not only owned ones).
    pub queues: Vec<QueueStatus>,
}

/// Why the status could not be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StatusError {
    #[error("engine status unavailable: {0}")]
    Unavailable(String),
}

/// The running engine's status.
#[async_trait::async_trait]
pub trait EngineStatus: Send + Sync + 'static {
    async fn status(&self) -> Result<EngineStatusReport, StatusError>;
}

/// The depth of each `(group, topic)` queue over `partitions` partitions: the log's end
/// offsets against the group's committed positions, read concurrently.
pub async fn queue_depths(
    log: &dyn EventLog,
    consumers: &[(String, String)],
    partitions: u32,
) -> Result<Vec<QueueStatus>, LogError> {
    let mut queues = Vec::with_capacity(consumers.len());
    for (group, topic) in consumers {
        let reads = (0..partitions).map(|p| async move {
            let end_offset = log.end_offset(topic, p).await?;
            let committed = log.committed(group, topic, p).await?;
            Ok::<_, LogError>(PartitionLag {
                partition: p,
                end_offset,
                committed,
                lag: end_offset.saturating_sub(committed.unwrap_or(0)),
            })
        });
        let lags = futures_util::future::try_join_all(reads).await?;
        queues.push(QueueStatus {
            group: group.clone(),
            topic: topic.clone(),
            depth: lags.iter().map(|l| l.lag).sum(),
            partitions: lags,
        });
    }
    Ok(queues)
}

/// Why a sending-domain service failed.
#[derive(Debug, thiserror::Error)]
pub enum DomainServiceError {
    /// Making a DKIM key failed.
    #[error("making a DKIM key failed: {0}")]
    Key(String),
    /// DNS did not answer usefully now; the check can be retried.
    #[error("DNS lookup failed: {0}")]
    Dns(String),
}

/// What sending domains need from outside the API: DKIM keys made for them and the
/// TXT records their owners publish. Implemented by the binary with the SMTP crate's
/// DKIM and DNS resolver.
#[async_trait::async_trait]
pub trait DomainAuthority: Send + Sync + 'static {
    /// A new DKIM key for `domain`, published under `selector`; `ed25519` picks
    /// Ed25519, else RSA-2048. Blocking (RSA key generation takes a moment).
    fn new_key(
        &self,
        domain: &maily_engine::Domain,
        selector: &str,
        ed25519: bool,
    ) -> Result<maily_engine::ports::DomainKey, DomainServiceError>;

    /// The TXT records at `name` (each record's strings joined); empty when none.
    async fn txt(&self, name: &str) -> Result<Vec<String>, DomainServiceError>;

    /// The hosts of the MX records at `name` (lower case, no trailing dot); empty when
    /// none.
    async fn mx(&self, name: &str) -> Result<Vec<String>, DomainServiceError>;

    /// The target of the CNAME record at `name` (lower case, no trailing dot); empty
    /// when none.
    async fn cname(&self, name: &str) -> Result<Vec<String>, DomainServiceError>;
}

/// A host each verified sending domain `d` may have under it: `<label>.<d>`,
/// pointing at `target` (an MX exchange or a CNAME target).
#[derive(Debug, Clone)]
pub struct HostRule {
    pub label: String,
    pub target: String,
}

/// The tenants' own hosts that are on: return paths (`[verp] tenant_label`, an MX to
/// `mx_host`) and tracking hosts (`[tracking] tenant_label`, a CNAME of the tracking
/// base URL's host).
#[derive(Debug, Clone, Default)]
pub struct DomainHosts {
    pub return_path: Option<HostRule>,
    pub tracking: Option<HostRule>,
}
