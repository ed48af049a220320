//! Maily configuration: typed settings layered from the embedded defaults, an
//! optional TOML file and `MAILY__SECTION__KEY` environment variables.
//!
//! Unknown keys and bad values stop start-up with an error naming the key.

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// The defaults, embedded so the binary needs no file to run.
pub const DEFAULT_TOML: &str = include_str!("../default.toml");

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration file {0} does not exist")]
    MissingFile(String),
    #[error("{0}")]
    Invalid(String),
    #[error("invalid value for {key}: {reason}")]
    BadValue { key: &'static str, reason: String },
}

/// All settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub engine: EngineSection,
    pub log: LogSection,
    pub ownership: OwnershipSection,
    pub store: StoreSection,
    pub hot: HotSection,
    pub smtp: SmtpSection,
    pub dkim: DkimSection,
    pub verp: VerpSection,
    pub tracking: TrackingSection,
    pub inbound: InboundSection,
    pub grpc: GrpcSection,
    pub admin: AdminSection,
    #[serde(default)]
    pub intake: IntakeSection,
    pub metrics: MetricsSection,
    pub auth: AuthSection,
    pub sender: SenderSection,
    pub bounce: BounceSection,
    pub analytics: AnalyticsSection,
    pub reward: RewardSection,
    pub anchor: AnchorSection,
    pub supervisor: SupervisorSection,
    #[serde(default)]
    pub retention: RetentionSection,
    #[serde(default)]
    pub launcher: LauncherSection,
}

/// `[launcher]`: how the leader moves staged recipients into the send topic.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LauncherSection {
    /// Recipients read from the store and produced per write to the log.
    pub chunk: usize,
    /// Recipients per shard when a campaign's shard count is chosen (at its first
    /// launch; at most one shard per partition).
    pub shard_size: u64,
}

impl Default for LauncherSection {
    fn default() -> Self {
        LauncherSection {
            chunk: 1000,
            shard_size: 2000,
        }
    }
}

/// `[retention]`: how long the store keeps what it no longer needs to work, so it does
/// not grow without bound. The leader deletes older rows every `interval`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionSection {
    /// Keyed sends (idempotency keys of `SendMessages`), from when they were accepted:
    /// a repeat of a key after this is a new send.
    #[serde(with = "humantime_serde")]
    pub keyed_sends: Duration,
    /// Recipients staged for a campaign, from when they were launched into the log.
    #[serde(with = "humantime_serde")]
    pub launched_recipients: Duration,
    /// Per-message states (status, events seen, last detail), from their last change.
    /// Campaign stats are kept whatever this is.
    #[serde(with = "humantime_serde")]
    pub messages: Duration,
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
}

impl Default for RetentionSection {
    fn default() -> Self {
        const DAY: u64 = 24 * 3600;
        RetentionSection {
            keyed_sends: Duration::from_secs(7 * DAY),
            launched_recipients: Duration::from_secs(7 * DAY),
            messages: Duration::from_secs(90 * DAY),
            interval: Duration::from_secs(600),
        }
    }
}

/// `[engine]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineSection {
    pub partitions: u32,
    /// A partition with waiting records and no progress for this long is reported.
    #[serde(with = "humantime_serde")]
    pub stall_after: Duration,
}

/// Which event-log adapter to run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogKind {
    /// Segment files in `[log.file] dir`: durable, no broker.
    File,
    /// In the process: lost with it (tests, `maily demo`).
    Memory,
    Kafka,
}

/// `[log]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSection {
    pub kind: LogKind,
    pub capacity_per_partition: usize,
    pub file: FileLogSection,
    pub kafka: KafkaSection,
}

/// When the file log forces written records to stable storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsyncMode {
    /// Before a produce is acknowledged.
    Always,
    /// Every `fsync_interval`, in the background.
    Interval,
    /// When the operating system writes back.
    Never,
}

/// `[log.file]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileLogSection {
    pub dir: String,
    pub fsync: FsyncMode,
    #[serde(with = "humantime_serde")]
    pub fsync_interval: Duration,
    pub segment_bytes: u64,
    pub cache_records_per_partition: usize,
    pub cache_bytes_per_partition: u64,
    pub retain_bytes_uncommitted: u64,
}

/// `[log.kafka]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSection {
    pub brokers: String,
    pub topic_prefix: String,
    pub group_prefix: String,
    pub replication_factor: i32,
    #[serde(with = "humantime_serde")]
    pub linger: Duration,
    pub batch_bytes: usize,
    pub compression: String,
    #[serde(with = "humantime_serde")]
    pub message_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub fetch_wait: Duration,
    pub properties: BTreeMap<String, String>,
}

/// `[ownership]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OwnershipSection {
    pub member: String,
    #[serde(with = "humantime_serde")]
    pub lease_ttl: Duration,
    #[serde(with = "humantime_serde")]
    pub renew_interval: Duration,
}

/// Which store adapter to run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    Sqlite,
    Postgres,
}

/// `[store]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSection {
    pub kind: StoreKind,
    pub path: String,
    pub max_connections: u32,
    #[serde(with = "humantime_serde")]
    pub busy_timeout: Duration,
    pub postgres: PostgresSection,
}

/// `[store.postgres]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresSection {
    pub url: String,
    pub schema: String,
    pub max_connections: u32,
    #[serde(with = "humantime_serde")]
    pub statement_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub acquire_timeout: Duration,
    pub batch_rows: usize,
    pub migrate_on_start: bool,
}

/// Which hot-state adapter to run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HotKind {
    Memory,
    Redis,
}

/// `[hot]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HotSection {
    pub kind: HotKind,
    pub redis: RedisSection,
}

/// `[hot.redis]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSection {
    pub url: String,
    pub key_prefix: String,
    pub pool_size: usize,
    pub auto_pipeline: bool,
    #[serde(with = "humantime_serde")]
    pub command_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub reconnect_max_delay: Duration,
}

/// `[smtp]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpSection {
    pub helo_name: String,
    pub max_connections_per_route: usize,
    pub max_messages_per_connection: usize,
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub command_timeout: Duration,
    /// "off", "opportunistic" or "required".
    pub tls: String,
    /// "none", "webpki" or the path of a CA PEM file.
    pub tls_verify: String,
    /// "static" or "dns".
    pub resolver: String,
    pub mx_port: u16,
    /// Connect to MX hosts on loopback or private addresses (off: refused, the
    /// message bounces).
    #[serde(default)]
    pub allow_private_mx: bool,
    /// Source-IP pool of tenants not in `tenant_pools`; empty for none.
    pub default_pool: String,
    pub routes: BTreeMap<String, String>,
    pub source_pools: BTreeMap<String, Vec<std::net::IpAddr>>,
    pub tenant_pools: BTreeMap<String, String>,
    pub limits: LimitsSection,
}

/// `[smtp.limits]`: defaults per kind of scope and limits of named scopes.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    /// Applies to each domain without limits of its own.
    #[serde(default)]
    pub domain: LimitSection,
    #[serde(default)]
    pub tenant: LimitSection,
    #[serde(default)]
    pub pool: LimitSection,
    #[serde(default)]
    pub domains: BTreeMap<String, LimitSection>,
    #[serde(default)]
    pub tenants: BTreeMap<String, LimitSection>,
    #[serde(default)]
    pub pools: BTreeMap<String, LimitSection>,
}

/// One scope's limits; an absent key is unlimited.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitSection {
    pub max_connections: Option<usize>,
    pub max_messages_per_connection: Option<usize>,
    /// "<messages>/<s|m|h>", e.g. "50/s".
    pub rate: Option<String>,
    pub burst: Option<u32>,
}

/// A secret value: never shown by `Debug`.
#[derive(Clone, Default, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() {
            "\"\""
        } else {
            "\"<redacted>\""
        })
    }
}

/// `[dkim]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DkimSection {
    pub keys: Vec<DkimKeySection>,
}

/// One `[[dkim.keys]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DkimKeySection {
    /// The sending (From) domain the key signs for (its `d=`).
    pub domain: String,
    pub selector: String,
    /// A PEM file: Ed25519 (PKCS#8) or RSA of at least 2048 bits.
    pub key_file: String,
    /// Also sign mail of From domains without a key of their own, as `d=<domain>`
    /// (such a signature does not align for DMARC). At most one key.
    #[serde(default)]
    pub fallback: bool,
}

/// `[verp]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerpSection {
    /// The domain of return paths; empty sends with the campaign's From as return path.
    pub domain: String,
    pub prefix: String,
    /// HMAC key (at least 16 bytes) that signs return paths.
    pub secret: Secret,
    /// Tenants' own return-path domains: `<tenant_label>.<sending domain>`, used once
    /// their MX (pointing at `mx_host`) is seen; empty keeps every return path on
    /// `domain`.
    #[serde(default)]
    pub tenant_label: String,
    /// The host tenants' return-path domains point their MX at (the inbound listener).
    #[serde(default)]
    pub mx_host: String,
}

/// `[tracking]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrackingSection {
    /// The tracking listener's public URL; empty turns tracking and the https
    /// unsubscribe link off.
    pub base_url: String,
    pub opens: bool,
    pub clicks: bool,
    pub key_id: u8,
    /// Hex HMAC key of at least 16 bytes.
    pub secret: Secret,
    /// Keys still accepted for tokens already sent.
    pub previous: Vec<PreviousKey>,
    /// An address that unsubscribes whoever writes to it; empty for none.
    pub unsubscribe_mailto: String,
    /// Whether this process runs the tracking listener.
    pub listen: bool,
    /// Where the tracking listener listens (plain HTTP).
    pub bind: std::net::SocketAddr,
    /// Opens and clicks recorded from one client address a minute; 0 for no limit.
    #[serde(default = "tracking_events_per_ip")]
    pub events_per_ip_per_minute: u32,
    /// Tenants' own tracking hosts: `<tenant_label>.<sending domain>`, a CNAME of the
    /// base URL's host, used once that CNAME is seen; empty keeps every link on
    /// `base_url`.
    #[serde(default)]
    pub tenant_label: String,
    /// Opens and clicks of tokens older than this are answered but not recorded.
    #[serde(default = "tracking_events_max_age", with = "humantime_serde")]
    pub events_max_age: Duration,
}

fn tracking_events_per_ip() -> u32 {
    600
}

fn tracking_events_max_age() -> Duration {
    Duration::from_secs(365 * 86_400)
}

/// A retired tracking key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreviousKey {
    pub id: u8,
    pub secret: Secret,
}

/// `[inbound]`: the SMTP listener for bounces and complaints.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InboundSection {
    pub enabled: bool,
    pub bind: std::net::SocketAddr,
    pub hostname: String,
    /// Feedback-loop addresses complaints arrive at.
    pub complaint_addresses: Vec<String>,
    pub max_message_size: usize,
    /// PEM certificate and key to offer STARTTLS; empty for none.
    pub tls_cert: String,
    pub tls_key: String,
    /// Connections open at once, in all and from one client address (421 beyond).
    #[serde(default = "inbound_max_connections")]
    pub max_connections: usize,
    #[serde(default = "inbound_max_connections_per_peer")]
    pub max_connections_per_peer: usize,
    /// Messages received at once (451 beyond): memory stays under about
    /// `max_concurrent_messages × max_message_size + max_connections × 64 KiB`.
    #[serde(default = "inbound_max_concurrent_messages")]
    pub max_concurrent_messages: usize,
    /// Messages received at once from one client address.
    #[serde(default = "inbound_max_concurrent_messages_per_peer")]
    pub max_concurrent_messages_per_peer: usize,
    /// A connection is closed after this long, whatever it does.
    #[serde(default = "inbound_session_timeout", with = "humantime_serde")]
    pub session_timeout: Duration,
    /// A connection silent this long is closed.
    #[serde(default = "inbound_idle_timeout", with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Message data slower than this (bytes a second, after 30 s) ends the connection.
    #[serde(default = "inbound_min_data_rate")]
    pub min_data_rate: u64,
    /// Reports one client address may hand in a minute (421 beyond); 0 for no limit.
    #[serde(default = "inbound_reports_per_minute")]
    pub reports_per_peer_per_minute: u32,
}

fn inbound_max_connections() -> usize {
    500
}
fn inbound_max_connections_per_peer() -> usize {
    20
}
fn inbound_max_concurrent_messages() -> usize {
    32
}
fn inbound_max_concurrent_messages_per_peer() -> usize {
    2
}
fn inbound_session_timeout() -> Duration {
    Duration::from_secs(600)
}
fn inbound_idle_timeout() -> Duration {
    Duration::from_secs(300)
}
fn inbound_min_data_rate() -> u64 {
    1024
}
fn inbound_reports_per_minute() -> u32 {
    600
}

/// A duration written like `30s` or `2h 5m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct HumanDuration(#[serde(with = "humantime_serde")] pub Duration);

/// `[sender]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SenderSection {
    pub batch_size: usize,
    pub concurrency: usize,
    #[serde(with = "humantime_serde")]
    pub flush_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub idle_wait: Duration,
    pub retry_tiers: Vec<HumanDuration>,
    pub retry_jitter: f64,
    pub max_attempts: u32,
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    #[serde(with = "humantime_serde")]
    pub idempotency_ttl: Duration,
    #[serde(with = "humantime_serde")]
    pub in_flight_timeout: Duration,
}

/// `[grpc]`: the public API for senders.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrpcSection {
    pub enabled: bool,
    pub bind: std::net::SocketAddr,
    #[serde(default)]
    pub quota: QuotaSection,
}

/// `[grpc.quota]`: messages each tenant may hand in (uploaded rows and keyed sends).
/// Without `rate`, tenants without an entry of their own are unlimited.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaSection {
    /// "<messages>/<s|m|h>", e.g. "2000/s".
    pub rate: Option<String>,
    /// Messages that may arrive back to back; one period's worth when absent.
    pub burst: Option<u32>,
    /// `[grpc.quota.tenants.<tenant>]`: a tenant's own quota instead of the default.
    #[serde(default)]
    pub tenants: BTreeMap<String, TenantQuotaSection>,
}

/// One tenant's quota.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantQuotaSection {
    pub rate: String,
    pub burst: Option<u32>,
}

/// `[metrics]`: the Prometheus scrape listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSection {
    pub enabled: bool,
    pub bind: std::net::SocketAddr,
    #[serde(with = "humantime_serde")]
    pub lag_interval: Duration,
}

/// `[intake]`: what campaigns the APIs accept.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntakeSection {
    /// A campaign's From domain must be a verified sending domain of its tenant (or
    /// below one); off only for a single-tenant installation.
    pub verified_domains_only: bool,
    /// The name servers (`ip` or `ip:port`) asked when a tenant's domain records are
    /// checked; empty: the system's (`/etc/resolv.conf`).
    #[serde(default)]
    pub dns_servers: Vec<String>,
}

impl IntakeSection {
    /// [`IntakeSection::dns_servers`] as addresses (port 53 unless given).
    pub fn dns_server_addrs(&self) -> Result<Vec<std::net::SocketAddr>, String> {
        self.dns_servers
            .iter()
            .map(|s| {
                s.parse::<std::net::SocketAddr>()
                    .or_else(|_| s.parse::<std::net::IpAddr>().map(|ip| (ip, 53).into()))
                    .map_err(|_| format!("{s:?} is not an address (ip or ip:port)"))
            })
            .collect()
    }
}

impl Default for IntakeSection {
    fn default() -> Self {
        IntakeSection {
            verified_domains_only: true,
            dns_servers: Vec::new(),
        }
    }
}

/// `[admin]`: the admin REST API for internal teams.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSection {
    pub enabled: bool,
    pub bind: std::net::SocketAddr,
}

/// `[auth]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSection {
    pub jwt: JwtSection,
}

/// `[auth.jwt]`: tokens from an identity provider, checked against its JWKS.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtSection {
    /// The key set's URL; empty turns JWTs off (API keys only).
    pub jwks_url: String,
    pub issuer: String,
    pub audience: String,
    #[serde(with = "humantime_serde")]
    pub leeway: Duration,
    pub roles_claim: String,
    /// The claim naming the tenant a token acts for; must not be empty.
    pub tenant_claim: String,
    /// The role that makes a token without a tenant an operator of every tenant; a
    /// token with neither is refused.
    pub operator_role: String,
}

/// `[bounce]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BounceSection {
    pub batch_size: usize,
    /// A TOML file of reply-text rules; empty uses the shipped rules.
    pub rules_file: String,
    /// Bounce reasons that suppress an address for good; `hard` stands for every hard
    /// bounce.
    #[serde(default = "hard_only")]
    pub suppress: Vec<String>,
    /// `[bounce.tenants.<tenant>]`: a tenant's own list instead of `suppress`.
    #[serde(default)]
    pub tenants: BTreeMap<String, BounceTenantSection>,
}

fn hard_only() -> Vec<String> {
    vec!["hard".into()]
}

/// One tenant's suppression list.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BounceTenantSection {
    pub suppress: Vec<String>,
}

/// `[analytics]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnalyticsSection {
    pub flush_size: usize,
    #[serde(with = "humantime_serde")]
    pub flush_interval: Duration,
}

/// `[reward]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RewardSection {
    #[serde(with = "humantime_serde")]
    pub epoch_interval: Duration,
    pub formula: FormulaSection,
    /// `[reward.payees]`: tenant → the EVM account its rewards are paid to on the
    /// chains with a reward distributor.
    #[serde(default)]
    pub payees: BTreeMap<String, String>,
}

/// `[reward.formula]`: weights in reward-token base units per message.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FormulaSection {
    pub per_delivered: u64,
    pub per_open: u64,
    pub per_click: u64,
    pub per_complaint_penalty: u64,
    pub per_bounce_penalty: u64,
}

/// `[anchor]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnchorSection {
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// The longest wait between attempts on a chain that keeps failing.
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    pub chains: Vec<String>,
    /// `[anchor.evm.<name>]`: the EVM chains named in `chains`.
    #[serde(default)]
    pub evm: BTreeMap<String, EvmSection>,
}

/// `[anchor.evm.<name>]`: one EVM chain.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvmSection {
    /// JSON-RPC endpoint, http or https.
    pub rpc_url: String,
    /// The chain id the endpoint must report.
    pub chain_id: u64,
    /// The AnchorRegistry contract's address.
    pub registry: String,
    /// The RewardDistributor contract's address (owned by the signer), if rewards are
    /// published on this chain.
    #[serde(default)]
    pub distributor: Option<String>,
    /// The signer's private key (hex). Prefer the environment:
    /// `MAILY__ANCHOR__EVM__<NAME>__SIGNER_KEY`.
    #[serde(default)]
    pub signer_key: Secret,
    /// The publisher whose roots `maily verify` reads when no key is configured.
    #[serde(default)]
    pub publisher: Option<String>,
    #[serde(default = "evm_defaults::confirmations")]
    pub confirmations: u64,
    /// Fee cap per gas, base fee and tip together: `"200 gwei"`, `"1.5 gwei"`, `"7 wei"`.
    #[serde(default = "evm_defaults::max_fee_per_gas")]
    pub max_fee_per_gas: String,
    /// Tip per gas.
    #[serde(default = "evm_defaults::priority_fee_per_gas")]
    pub priority_fee_per_gas: String,
    /// How long a transaction may stay unmined before it is resubmitted with higher fees.
    #[serde(default = "evm_defaults::bump_after", with = "humantime_serde")]
    pub bump_after: Duration,
    /// Fee raise per resubmission, percent (at least 10).
    #[serde(default = "evm_defaults::bump_percent")]
    pub bump_percent: u32,
    #[serde(default = "evm_defaults::poll_interval", with = "humantime_serde")]
    pub poll_interval: Duration,
    #[serde(default = "evm_defaults::rpc_timeout", with = "humantime_serde")]
    pub rpc_timeout: Duration,
}

mod evm_defaults {
    use std::time::Duration;
    pub fn confirmations() -> u64 {
        2
    }
    pub fn max_fee_per_gas() -> String {
        "200 gwei".into()
    }
    pub fn priority_fee_per_gas() -> String {
        "1.5 gwei".into()
    }
    pub fn bump_after() -> Duration {
        Duration::from_secs(60)
    }
    pub fn bump_percent() -> u32 {
        20
    }
    pub fn poll_interval() -> Duration {
        Duration::from_secs(1)
    }
    pub fn rpc_timeout() -> Duration {
        Duration::from_secs(10)
    }
}

/// Parses an amount of wei: `"200 gwei"`, `"1.5 gwei"`, `"7 wei"`, `"0.01 ether"`.
pub fn parse_wei(text: &str) -> Result<u128, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = (t[..split].trim(), t[split..].trim());
    let decimals: u32 = match unit.to_ascii_lowercase().as_str() {
        "wei" => 0,
        "gwei" => 9,
        "ether" | "eth" => 18,
        "" => return Err(format!("{text:?} has no unit (wei, gwei or ether)")),
        other => {
            return Err(format!(
                "{text:?}: unknown unit {other:?} (wei, gwei or ether)"
            ));
        }
    };
    let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && frac.is_empty() || frac.len() > decimals as usize {
        return Err(format!("{text:?} is not an amount of whole wei"));
    }
    let digits = format!("{whole}{frac:0<width$}", width = decimals as usize);
    digits
        .parse::<u128>()
        .map_err(|_| format!("{text:?} is not an amount of wei"))
}

/// Whether `text` is a 0x-prefixed 20-byte hex address.
pub fn is_address(text: &str) -> bool {
    text.strip_prefix("0x")
        .is_some_and(|h| h.len() == 40 && h.chars().all(|c| c.is_ascii_hexdigit()))
}

/// `[supervisor]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SupervisorSection {
    #[serde(with = "humantime_serde")]
    pub min_backoff: Duration,
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
}

impl Settings {
    /// Defaults, then `file` if given, then the process environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::from_figment(Self::figment(file)?.merge(env()))
    }

    /// The layers below the environment: defaults and the optional file.
    pub fn figment(file: Option<&Path>) -> Result<Figment, ConfigError> {
        let mut fig = Figment::from(Toml::string(DEFAULT_TOML));
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError::MissingFile(path.display().to_string()));
            }
            fig = fig.merge(Toml::file(path));
        }
        Ok(fig)
    }

    /// Extracts and validates settings from a prepared figment.
    pub fn from_figment(fig: Figment) -> Result<Self, ConfigError> {
        let settings: Settings = fig.extract().map_err(|e| {
            let msgs: Vec<String> = e.into_iter().map(|e| e.to_string()).collect();
            ConfigError::Invalid(msgs.join("; "))
        })?;
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let positive = |key: &'static str, v: usize| {
            if v == 0 {
                Err(ConfigError::BadValue {
                    key,
                    reason: "must be at least 1".into(),
                })
            } else {
                Ok(())
            }
        };
        positive("engine.partitions", self.engine.partitions as usize)?;
        positive(
            "log.capacity_per_partition",
            self.log.capacity_per_partition,
        )?;
        positive(
            "log.file.cache_records_per_partition",
            self.log.file.cache_records_per_partition,
        )?;
        self.validate_file_log()?;
        positive("store.max_connections", self.store.max_connections as usize)?;
        positive(
            "smtp.max_connections_per_route",
            self.smtp.max_connections_per_route,
        )?;
        positive(
            "smtp.max_messages_per_connection",
            self.smtp.max_messages_per_connection,
        )?;
        positive("sender.batch_size", self.sender.batch_size)?;
        positive("sender.concurrency", self.sender.concurrency)?;
        if self.sender.flush_interval.is_zero() {
            return Err(ConfigError::BadValue {
                key: "sender.flush_interval",
                reason: "must be longer than zero".into(),
            });
        }
        positive("sender.max_attempts", self.sender.max_attempts as usize)?;
        positive("bounce.batch_size", self.bounce.batch_size)?;
        positive("analytics.flush_size", self.analytics.flush_size)?;
        positive("anchor.chains", self.anchor.chains.len())?;
        if !self.auth.jwt.jwks_url.is_empty() {
            for (key, value) in [
                ("auth.jwt.tenant_claim", &self.auth.jwt.tenant_claim),
                ("auth.jwt.operator_role", &self.auth.jwt.operator_role),
            ] {
                if value.trim().is_empty() {
                    return Err(ConfigError::BadValue {
                        key,
                        reason: "must not be empty: tokens without a tenant would act for \
                                 every tenant"
                            .into(),
                    });
                }
            }
        }
        positive(
            "store.postgres.max_connections",
            self.store.postgres.max_connections as usize,
        )?;
        positive("store.postgres.batch_rows", self.store.postgres.batch_rows)?;
        positive("hot.redis.pool_size", self.hot.redis.pool_size)?;
        let one_of = |key: &'static str, value: &str, allowed: &[&str]| {
            if allowed.contains(&value) {
                Ok(())
            } else {
                Err(ConfigError::BadValue {
                    key,
                    reason: format!("{value:?} is not one of {allowed:?}"),
                })
            }
        };
        one_of(
            "smtp.tls",
            &self.smtp.tls,
            &["off", "opportunistic", "required"],
        )?;
        one_of("smtp.resolver", &self.smtp.resolver, &["static", "dns"])?;
        for (tenant, pool) in &self.smtp.tenant_pools {
            if !self.smtp.source_pools.contains_key(pool) {
                return Err(ConfigError::BadValue {
                    key: "smtp.tenant_pools",
                    reason: format!(
                        "tenant {tenant} uses pool {pool:?}, which smtp.source_pools lacks"
                    ),
                });
            }
        }
        if !self.smtp.default_pool.is_empty()
            && !self.smtp.source_pools.contains_key(&self.smtp.default_pool)
        {
            return Err(ConfigError::BadValue {
                key: "smtp.default_pool",
                reason: format!("{:?} is not in smtp.source_pools", self.smtp.default_pool),
            });
        }
        if let Some((name, _)) = self.smtp.source_pools.iter().find(|(_, a)| a.is_empty()) {
            return Err(ConfigError::BadValue {
                key: "smtp.source_pools",
                reason: format!("pool {name:?} has no addresses"),
            });
        }
        if let Err(reason) = self.intake.dns_server_addrs() {
            return Err(ConfigError::BadValue {
                key: "intake.dns_servers",
                reason,
            });
        }
        if self.dkim.keys.iter().filter(|k| k.fallback).count() > 1 {
            return Err(ConfigError::BadValue {
                key: "dkim.keys",
                reason: "more than one key has fallback = true".into(),
            });
        }
        if !self.verp.domain.is_empty() && self.verp.secret.0.len() < 16 {
            return Err(ConfigError::BadValue {
                key: "verp.secret",
                reason: "return paths are signed: set a secret of at least 16 characters (MAILY__VERP__SECRET)".into(),
            });
        }
        if !self.verp.tenant_label.is_empty()
            && (self.verp.domain.is_empty() || self.verp.mx_host.is_empty())
        {
            return Err(ConfigError::BadValue {
                key: "verp.tenant_label",
                reason: "tenants' return-path domains need verp.domain (the engine's own) and verp.mx_host (where their MX points)".into(),
            });
        }
        if !self.tracking.tenant_label.is_empty() && self.tracking.base_url.is_empty() {
            return Err(ConfigError::BadValue {
                key: "tracking.tenant_label",
                reason: "tenants' tracking hosts are CNAMEs of tracking.base_url's host: set it"
                    .into(),
            });
        }
        if !self.tracking.base_url.is_empty() && self.tracking.secret.0.len() < 32 {
            return Err(ConfigError::BadValue {
                key: "tracking.secret",
                reason: "tracking tokens are signed: set a hex key of at least 16 bytes (MAILY__TRACKING__SECRET)".into(),
            });
        }
        if self.tracking.listen && self.tracking.secret.0.len() < 32 {
            return Err(ConfigError::BadValue {
                key: "tracking.secret",
                reason: "the tracking listener verifies signed tokens: set the hex key they are signed with, at least 16 bytes (MAILY__TRACKING__SECRET)".into(),
            });
        }
        let jwt = &self.auth.jwt;
        if !jwt.jwks_url.is_empty() && (jwt.issuer.is_empty() || jwt.audience.is_empty()) {
            return Err(ConfigError::BadValue {
                key: "auth.jwt",
                reason: "with jwks_url set, issuer and audience are required".into(),
            });
        }
        if self.metrics.enabled {
            if self.metrics.lag_interval.is_zero() {
                return Err(ConfigError::BadValue {
                    key: "metrics.lag_interval",
                    reason: "must be above zero".into(),
                });
            }
            let taken = [
                (self.grpc.enabled, self.grpc.bind, "grpc.bind"),
                (self.tracking.listen, self.tracking.bind, "tracking.bind"),
                (self.admin.enabled, self.admin.bind, "admin.bind"),
            ];
            if let Some((_, _, key)) = taken
                .iter()
                .find(|(on, bind, _)| *on && *bind == self.metrics.bind)
            {
                return Err(ConfigError::BadValue {
                    key: "metrics.bind",
                    reason: format!("{} is {key} already", self.metrics.bind),
                });
            }
        }
        if self.admin.enabled {
            let taken = [
                (self.grpc.enabled, self.grpc.bind, "grpc.bind"),
                (self.tracking.listen, self.tracking.bind, "tracking.bind"),
            ];
            if let Some((_, _, key)) = taken
                .iter()
                .find(|(on, bind, _)| *on && *bind == self.admin.bind)
            {
                return Err(ConfigError::BadValue {
                    key: "admin.bind",
                    reason: format!("{} is {key} already", self.admin.bind),
                });
            }
        }
        if self.inbound.tls_cert.is_empty() != self.inbound.tls_key.is_empty() {
            return Err(ConfigError::BadValue {
                key: "inbound.tls_cert",
                reason: "set both inbound.tls_cert and inbound.tls_key, or neither".into(),
            });
        }
        if !(0.0..=1.0).contains(&self.sender.retry_jitter) {
            return Err(ConfigError::BadValue {
                key: "sender.retry_jitter",
                reason: format!("{} is not a fraction from 0 to 1", self.sender.retry_jitter),
            });
        }
        if self.sender.retry_tiers.is_empty() {
            return Err(ConfigError::BadValue {
                key: "sender.retry_tiers",
                reason: "needs at least one tier".into(),
            });
        }
        if self.reward.epoch_interval.is_zero() {
            return Err(ConfigError::BadValue {
                key: "reward.epoch_interval",
                reason: "must be longer than zero".into(),
            });
        }
        if !["none", "gzip", "snappy", "lz4", "zstd"].contains(&self.log.kafka.compression.as_str())
        {
            return Err(ConfigError::BadValue {
                key: "log.kafka.compression",
                reason: format!(
                    "{:?} is not one of none, gzip, snappy, lz4, zstd",
                    self.log.kafka.compression
                ),
            });
        }
        let wait = self.log.kafka.fetch_wait;
        if wait < Duration::from_millis(1) || wait > Duration::from_secs(300) {
            return Err(ConfigError::BadValue {
                key: "log.kafka.fetch_wait",
                reason: format!("{wait:?} is not between 1ms and 300s"),
            });
        }
        if self.ownership.renew_interval >= self.ownership.lease_ttl {
            return Err(ConfigError::BadValue {
                key: "ownership.renew_interval",
                reason: "must be shorter than ownership.lease_ttl".into(),
            });
        }
        self.validate_chains()?;
        if self.supervisor.min_backoff > self.supervisor.max_backoff {
            return Err(ConfigError::BadValue {
                key: "supervisor.min_backoff",
                reason: "is larger than supervisor.max_backoff".into(),
            });
        }
        Ok(())
    }
}

/// The smallest `log.file.segment_bytes`: below it a segment holds a handful of
/// records, and a value like `16` was surely meant in MiB.
const MIN_SEGMENT_BYTES: u64 = 4096;

impl Settings {
    fn validate_file_log(&self) -> Result<(), ConfigError> {
        let f = &self.log.file;
        let bad = |key: &'static str, reason: &str| {
            Err(ConfigError::BadValue {
                key,
                reason: reason.into(),
            })
        };
        if f.dir.trim().is_empty() {
            return bad("log.file.dir", "must name a folder");
        }
        if f.fsync_interval.is_zero() {
            return bad("log.file.fsync_interval", "must be above zero");
        }
        if f.segment_bytes < MIN_SEGMENT_BYTES {
            return Err(ConfigError::BadValue {
                key: "log.file.segment_bytes",
                reason: format!(
                    "{} is below the minimum of {MIN_SEGMENT_BYTES} bytes",
                    f.segment_bytes
                ),
            });
        }
        Ok(())
    }

    fn validate_chains(&self) -> Result<(), ConfigError> {
        let bad = |key: &'static str, reason: String| ConfigError::BadValue { key, reason };
        for name in &self.anchor.chains {
            if name != "ledger" && !self.anchor.evm.contains_key(name) {
                return Err(bad(
                    "anchor.chains",
                    format!("{name:?} is neither \"ledger\" nor configured in [anchor.evm.{name}]"),
                ));
            }
        }
        for (name, c) in &self.anchor.evm {
            if !self.anchor.chains.contains(name) {
                return Err(bad(
                    "anchor.evm",
                    format!(
                        "[anchor.evm.{name}] is configured but {name:?} is not in anchor.chains"
                    ),
                ));
            }
            for (what, value) in [
                ("registry", Some(&c.registry)),
                ("distributor", c.distributor.as_ref()),
                ("publisher", c.publisher.as_ref()),
            ] {
                if let Some(v) = value.filter(|v| !is_address(v)) {
                    return Err(bad(
                        "anchor.evm",
                        format!(
                            "anchor.evm.{name}.{what} {v:?} is not a 0x-prefixed 20-byte hex address"
                        ),
                    ));
                }
            }
            for (what, value) in [
                ("max_fee_per_gas", &c.max_fee_per_gas),
                ("priority_fee_per_gas", &c.priority_fee_per_gas),
            ] {
                parse_wei(value)
                    .map_err(|e| bad("anchor.evm", format!("anchor.evm.{name}.{what}: {e}")))?;
            }
        }
        for (tenant, account) in &self.reward.payees {
            if !is_address(account) {
                return Err(bad(
                    "reward.payees",
                    format!(
                        "tenant {tenant}: {account:?} is not a 0x-prefixed 20-byte hex address"
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// `MAILY__SECTION__KEY` variables as nested keys (`sender.batch_size`).
pub fn env() -> Env {
    Env::prefixed("MAILY__").split("__")
}

#[cfg(test)]
// figment's Jail fixes the closures' error type; its size is not ours to choose.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    #[test]
    fn defaults_load() {
        figment::Jail::expect_with(|_| {
            let s = Settings::load(None).expect("defaults are valid");
            assert_eq!(s.engine.partitions, 8);
            assert_eq!(s.sender.retry_tiers[0].0, Duration::from_secs(60));
            Ok(())
        });
    }

    #[test]
    fn environment_overrides_files_and_defaults() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("maily.toml", "[sender]\nconcurrency = 8\nbatch_size = 16\n")?;
            jail.set_env("MAILY__SENDER__CONCURRENCY", "128");
            let s = Settings::load(Some(Path::new("maily.toml"))).expect("valid");
            assert_eq!(s.sender.concurrency, 128);
            assert_eq!(s.sender.batch_size, 16);
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_are_named() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("maily.toml", "[sender]\nconcurency = 8\n")?;
            let err = Settings::load(Some(Path::new("maily.toml"))).unwrap_err();
            assert!(err.to_string().contains("concurency"), "{err}");
            jail.clear_env();
            jail.set_env("MAILY__ANALYTICS__FLUSH_EVERY", "1");
            let err = Settings::load(None).unwrap_err();
            assert!(err.to_string().contains("flush_every"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn bad_values_are_named() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("MAILY__ENGINE__PARTITIONS", "many");
            let err = Settings::load(None).unwrap_err().to_string();
            assert!(err.to_lowercase().contains("engine.partitions"), "{err}");
            jail.set_env("MAILY__ENGINE__PARTITIONS", "0");
            let err = Settings::load(None).unwrap_err().to_string();
            assert_eq!(
                err,
                "invalid value for engine.partitions: must be at least 1"
            );
            jail.set_env("MAILY__ENGINE__PARTITIONS", "4");
            jail.set_env("MAILY__SENDER__IDLE_WAIT", "soon");
            let err = Settings::load(None).unwrap_err().to_string();
            assert!(err.to_lowercase().contains("sender.idle_wait"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn the_tracking_listener_needs_the_key() {
        figment::Jail::expect_with(|jail| {
            let s = Settings::load(None).expect("defaults are valid");
            assert!(!s.tracking.listen);
            jail.set_env("MAILY__TRACKING__LISTEN", "true");
            let err = Settings::load(None).unwrap_err().to_string();
            assert!(
                err.starts_with("invalid value for tracking.secret: the tracking listener"),
                "{err}"
            );
            jail.set_env("MAILY__TRACKING__SECRET", "ab".repeat(16));
            jail.set_env("MAILY__TRACKING__BIND", "0.0.0.0:9090");
            let s = Settings::load(None).expect("valid");
            assert_eq!(s.tracking.bind.port(), 9090);
            jail.set_env("MAILY__TRACKING__BIND", "nowhere");
            let err = Settings::load(None).unwrap_err().to_string();
            assert!(err.to_lowercase().contains("tracking.bind"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn the_admin_api_is_off_by_default_and_its_bind_is_checked() {
        // Files, not environment variables: tests outside a Jail read the environment.
        figment::Jail::expect_with(|jail| {
            let s = Settings::load(None).expect("defaults are valid");
            assert!(!s.admin.enabled);
            assert_eq!(s.admin.bind.port(), 8081);
            let load = |jail: &mut figment::Jail, toml: &str| {
                jail.create_file("maily.toml", toml)?;
                Ok::<_, figment::Error>(Settings::load(Some(Path::new("maily.toml"))))
            };
            let err = load(jail, "[admin]\nenabled = true\nbind = \"nowhere\"\n")?
                .unwrap_err()
                .to_string();
            assert!(err.to_lowercase().contains("admin.bind"), "{err}");
            let err = load(
                jail,
                "[admin]\nenabled = true\nbind = \"127.0.0.1:50051\"\n[grpc]\nenabled = true\n",
            )?
            .unwrap_err()
            .to_string();
            assert_eq!(
                err,
                "invalid value for admin.bind: 127.0.0.1:50051 is grpc.bind already"
            );
            let s =
                load(jail, "[admin]\nenabled = true\nbind = \"0.0.0.0:9443\"\n")?.expect("valid");
            assert!(s.admin.enabled);
            assert_eq!(s.admin.bind.port(), 9443);
            Ok(())
        });
    }

    #[test]
    fn serve_runs_on_the_file_log_by_default_and_its_keys_are_checked() {
        figment::Jail::expect_with(|jail| {
            let s = Settings::load(None).expect("defaults are valid");
            assert_eq!(s.log.kind, LogKind::File);
            assert_eq!(s.log.file.fsync, FsyncMode::Always);
            let dir = Path::new(&s.log.file.dir);
            assert_eq!(dir.parent(), Path::new(&s.store.path).parent());
            jail.set_env("MAILY__LOG__FILE__FSYNC", "sometimes");
            let err = Settings::load(None).unwrap_err().to_string();
            assert!(err.to_lowercase().contains("log.file.fsync"), "{err}");
            assert!(err.contains("sometimes"), "{err}");
            jail.set_env("MAILY__LOG__FILE__FSYNC", "interval");
            jail.set_env("MAILY__LOG__FILE__FSYNC_INTERVAL", "0s");
            let err = Settings::load(None).unwrap_err().to_string();
            assert_eq!(
                err,
                "invalid value for log.file.fsync_interval: must be above zero"
            );
            jail.set_env("MAILY__LOG__FILE__FSYNC_INTERVAL", "250ms");
            jail.set_env("MAILY__LOG__FILE__SEGMENT_BYTES", "16");
            let err = Settings::load(None).unwrap_err().to_string();
            assert!(
                err.starts_with("invalid value for log.file.segment_bytes"),
                "{err}"
            );
            jail.set_env("MAILY__LOG__FILE__SEGMENT_BYTES", "1048576");
            jail.set_env("MAILY__LOG__FILE__DIR", " ");
            let err = Settings::load(None).unwrap_err().to_string();
            assert!(err.starts_with("invalid value for log.file.dir"), "{err}");
            jail.set_env("MAILY__LOG__FILE__DIR", "/var/lib/maily/log");
            jail.set_env("MAILY__LOG__KIND", "memory");
            let s = Settings::load(None).expect("valid");
            assert_eq!(s.log.kind, LogKind::Memory);
            assert_eq!(s.log.file.fsync_interval, Duration::from_millis(250));
            Ok(())
        });
    }

    #[test]
    fn the_production_profile_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("production.toml");
        let s = Settings::load(Some(&path)).expect("production.toml is valid");
        assert_eq!(s.log.kind, LogKind::Kafka);
        assert_eq!(s.log.kafka.compression, "zstd");
        assert_eq!(s.store.kind, StoreKind::Postgres);
        assert_eq!(s.hot.kind, HotKind::Redis);
    }

    #[test]
    fn a_missing_file_is_named() {
        let err = Settings::load(Some(Path::new("/nonexistent/maily.toml"))).unwrap_err();
        assert_eq!(
            err.to_string(),
            "configuration file /nonexistent/maily.toml does not exist"
        );
    }

    #[test]
    fn wei_amounts_parse_with_their_unit() {
        assert_eq!(parse_wei("200 gwei"), Ok(200_000_000_000));
        assert_eq!(parse_wei("1.5 gwei"), Ok(1_500_000_000));
        assert_eq!(parse_wei("7 wei"), Ok(7));
        assert_eq!(parse_wei("0.01 ether"), Ok(10_000_000_000_000_000));
        assert!(parse_wei("200").unwrap_err().contains("no unit"));
        assert!(parse_wei("1.5 wei").unwrap_err().contains("whole wei"));
        assert!(parse_wei("3 finney").unwrap_err().contains("unknown unit"));
    }

    #[test]
    fn evm_chains_are_checked_against_anchor_chains() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "maily.toml",
                "[anchor]\nchains = [\"ledger\", \"polygon\"]\n",
            )?;
            let err = Settings::load(Some(Path::new("maily.toml"))).unwrap_err();
            assert!(err.to_string().contains("[anchor.evm.polygon]"), "{err}");
            jail.create_file(
                "maily.toml",
                "[anchor]\nchains = [\"polygon\"]\n[anchor.evm.polygon]\nrpc_url = \"http://127.0.0.1:8546\"\nchain_id = 80002\nregistry = \"0x12\"\n",
            )?;
            let err = Settings::load(Some(Path::new("maily.toml"))).unwrap_err();
            assert!(
                err.to_string()
                    .contains("anchor.evm.polygon.registry \"0x12\""),
                "{err}"
            );
            jail.create_file(
                "maily.toml",
                "[anchor]\nchains = [\"polygon\"]\n[anchor.evm.polygon]\nrpc_url = \"http://127.0.0.1:8546\"\nchain_id = 80002\nregistry = \"0x5FbDB2315678afecb367f032d93F642f64180aa3\"\nmax_fee_per_gas = \"lots\"\n",
            )?;
            let err = Settings::load(Some(Path::new("maily.toml"))).unwrap_err();
            assert!(
                err.to_string()
                    .contains("anchor.evm.polygon.max_fee_per_gas"),
                "{err}"
            );
            jail.set_env("MAILY__ANCHOR__EVM__POLYGON__SIGNER_KEY", "0xabc");
            jail.create_file(
                "maily.toml",
                "[anchor]\nchains = [\"polygon\"]\n[anchor.evm.polygon]\nrpc_url = \"http://127.0.0.1:8546\"\nchain_id = 80002\nregistry = \"0x5FbDB2315678afecb367f032d93F642f64180aa3\"\n",
            )?;
            let s = Settings::load(Some(Path::new("maily.toml"))).expect("valid");
            let c = &s.anchor.evm["polygon"];
            assert_eq!(c.signer_key.0, "0xabc");
            assert_eq!(c.confirmations, 2);
            assert!(!format!("{s:?}").contains("0xabc"));
            Ok(())
        });
    }
}
