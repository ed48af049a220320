//! Builds the adapters named in the settings and the engine settings for the actors.

use anyhow::{Context as _, bail};
use maily_actors::Ports;
use maily_actors::analytics::AnalyticsSettings;
use maily_actors::anchor::AnchorSettings;
use maily_actors::compose::{Composer, MessageSigner};
use maily_actors::engine::EngineSettings;
use maily_actors::ownership::OwnershipSettings;
use maily_actors::sender::{RenderPool, SenderSettings};
use maily_actors::supervisor::RestartPolicy;
use maily_bounce::Rules;
use maily_bounce::policy::{Selection, SuppressionPolicy};
use maily_chain::{Address, EvmChain, EvmParams, LedgerChain, SignerKey};
use maily_config::parse_wei;
use maily_config::{
    EvmSection, FsyncMode, HotKind, LimitSection, LimitsSection, LogKind, Settings, SmtpSection,
    StoreKind,
};
use maily_engine::TenantId;
use maily_engine::ports::{Chain, EventLog, HotState, Resolver, Store};
use maily_engine::reward::{Account, RewardFormula};
use maily_engine::tracking::{TokenKey, TokenKeys, Tracking};
use maily_engine::verp::VerpCodec;
use maily_engine::{Domain, EmailAddress};
use maily_eventlog::{FileLog, FileParams, Fsync, MemoryLog};
#[cfg(feature = "kafka")]
use maily_eventlog::{KafkaLog, KafkaParams};
use maily_smtp::tls::client_config;
use maily_smtp::{
    CertificateCheck, DkimKey, DkimSigner, Limit, MxOptions, MxResolver, Rate, RoutingResolver,
    Scope, ScopeKind, SmtpClientParams, SmtpTransport, StaticRoutes, ThrottleTable, Throttles,
    TlsMode,
};
#[cfg(feature = "postgres")]
use maily_storage::postgres::{PostgresParams, PostgresStore};
#[cfg(feature = "redis")]
use maily_storage::redis_hot::{RedisHotState, RedisParams};
use maily_storage::{MemoryHotState, SqliteParams, SqliteStore};
use std::collections::HashMap;
use std::sync::Arc;

/// Opens the configured store (running its migrations).
pub async fn open_store(settings: &Settings) -> anyhow::Result<Arc<dyn Store>> {
    match settings.store.kind {
        StoreKind::Sqlite => {
            let store = SqliteStore::open(SqliteParams {
                url_or_path: settings.store.path.clone(),
                max_connections: settings.store.max_connections,
                busy_timeout: settings.store.busy_timeout,
            })
            .await
            .with_context(|| format!("opening SQLite store {}", settings.store.path))?;
            Ok(Arc::new(store))
        }
        StoreKind::Postgres => {
            let pg = &settings.store.postgres;
            open_postgres(settings, pg.max_connections, pg.migrate_on_start).await
        }
    }
}

/// The Postgres store `[store.postgres]` names, with a pool of `connections`, its
/// schema brought up to date if `migrate`.
#[cfg(feature = "postgres")]
async fn open_postgres(
    settings: &Settings,
    connections: u32,
    migrate: bool,
) -> anyhow::Result<Arc<dyn Store>> {
    let pg = &settings.store.postgres;
    let store = PostgresStore::connect(PostgresParams {
        url: pg.url.clone(),
        schema: (!pg.schema.is_empty()).then(|| pg.schema.clone()),
        max_connections: connections,
        statement_timeout: pg.statement_timeout,
        acquire_timeout: pg.acquire_timeout,
        batch_rows: pg.batch_rows,
    })
    .await
    .with_context(|| format!("connecting to Postgres at {}", redact(&pg.url)))?;
    if migrate {
        store
            .migrate()
            .await
            .context("migrating the Postgres store")?;
    }
    Ok(Arc::new(store))
}

#[cfg(not(feature = "postgres"))]
async fn open_postgres(_: &Settings, _: u32, _: bool) -> anyhow::Result<Arc<dyn Store>> {
    anyhow::bail!(without("store.kind = \"postgres\"", "postgres"))
}

/// The Redis hot state `[hot.redis]` names.
#[cfg(feature = "redis")]
async fn open_redis(settings: &Settings) -> anyhow::Result<Arc<dyn HotState>> {
    let r = &settings.hot.redis;
    Ok(Arc::new(
        RedisHotState::connect(RedisParams {
            url: r.url.clone(),
            key_prefix: r.key_prefix.clone(),
            pool_size: r.pool_size,
            auto_pipeline: r.auto_pipeline,
            command_timeout: r.command_timeout,
            reconnect_max_delay: r.reconnect_max_delay,
        })
        .await
        .with_context(|| format!("connecting to Redis at {}", redact(&r.url)))?,
    ))
}

#[cfg(not(feature = "redis"))]
async fn open_redis(_: &Settings) -> anyhow::Result<Arc<dyn HotState>> {
    anyhow::bail!(without("hot.kind = \"redis\"", "redis"))
}

/// Why a configured backend cannot be used: this build left it out.
#[cfg(not(all(feature = "postgres", feature = "redis", feature = "kafka")))]
fn without(setting: &str, feature: &str) -> String {
    format!(
        "{setting} needs the `{feature}` feature, which this build of maily was compiled \
         without; rebuild with `--features {feature}` (it is on by default) or choose an \
         embedded backend"
    )
}

/// Applies the store's migrations whatever `migrate_on_start` says.
pub async fn migrate_store(settings: &Settings) -> anyhow::Result<()> {
    if settings.store.kind == StoreKind::Postgres {
        return open_postgres(settings, 1, true).await.map(|_| ());
    }
    open_store(settings).await.map(|_| ())
}

/// A connection URL without its password, for messages.
#[cfg(any(feature = "postgres", feature = "redis"))]
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            let user = creds.split(':').next().unwrap_or("");
            format!("{}{user}@{}", &url[..scheme + 3], &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

/// Builds every port from the settings.
pub async fn build_ports(settings: &Settings) -> anyhow::Result<Ports> {
    Ok(build(settings).await?.0)
}

/// What operators change while the engine runs.
#[derive(Clone)]
pub struct Controls {
    /// The delivery limits the transport enforces; changes apply to the next
    /// transaction.
    pub throttles: Arc<Throttles>,
    /// A reader of the event log for the API's event feed: the same log, read by a
    /// consumer of its own so following it never disturbs the actors' positions.
    pub feed_log: Arc<dyn EventLog>,
}

/// The event log `[log]` names.
async fn open_log(settings: &Settings) -> anyhow::Result<Arc<dyn EventLog>> {
    Ok(match settings.log.kind {
        LogKind::File => {
            let f = &settings.log.file;
            Arc::new(
                FileLog::open(FileParams {
                    dir: f.dir.clone().into(),
                    fsync: match f.fsync {
                        FsyncMode::Always => Fsync::Always,
                        FsyncMode::Interval => Fsync::Interval(f.fsync_interval),
                        FsyncMode::Never => Fsync::Never,
                    },
                    segment_bytes: f.segment_bytes,
                    cache_records: f.cache_records_per_partition,
                    cache_bytes: f.cache_bytes_per_partition,
                    retain_bytes_uncommitted: f.retain_bytes_uncommitted,
                })
                .await
                .with_context(|| format!("opening the event log in {} (log.file.dir)", f.dir))?,
            )
        }
        LogKind::Memory => Arc::new(MemoryLog::new(settings.log.capacity_per_partition)),
        LogKind::Kafka => open_kafka(settings)?,
    })
}

/// The Kafka log `[log.kafka]` names.
#[cfg(feature = "kafka")]
fn open_kafka(settings: &Settings) -> anyhow::Result<Arc<dyn EventLog>> {
    let k = &settings.log.kafka;
    Ok(Arc::new(
        KafkaLog::connect(KafkaParams {
            brokers: k.brokers.clone(),
            topic_prefix: k.topic_prefix.clone(),
            group_prefix: k.group_prefix.clone(),
            replication_factor: k.replication_factor,
            linger: k.linger,
            batch_bytes: k.batch_bytes,
            compression: k.compression.clone(),
            message_timeout: k.message_timeout,
            request_timeout: k.request_timeout,
            fetch_wait: k.fetch_wait,
            extra: k.properties.clone(),
        })
        .with_context(|| format!("connecting to Kafka at {}", k.brokers))?,
    ))
}

#[cfg(not(feature = "kafka"))]
fn open_kafka(_: &Settings) -> anyhow::Result<Arc<dyn EventLog>> {
    anyhow::bail!(without("log.kind = \"kafka\"", "kafka"))
}

/// The ports, and the run-time controls of their adapters.
pub async fn build(settings: &Settings) -> anyhow::Result<(Ports, Controls)> {
    let store = open_store(settings).await?;
    let log = open_log(settings).await?;
    // The API's event feed reads with a consumer of its own, never the actors'; an
    // embedded log serves any number of readers (and its folder one process).
    let feed_log = match settings.log.kind {
        LogKind::File | LogKind::Memory => Arc::clone(&log),
        LogKind::Kafka => open_log(settings).await?,
    };
    let hot: Arc<dyn HotState> = match settings.hot.kind {
        HotKind::Memory => Arc::new(MemoryHotState::new()),
        HotKind::Redis => open_redis(settings).await?,
    };
    let transport = build_transport(&settings.smtp)?;
    let chains = build_chains(settings, &store)?;
    let controls = Controls {
        throttles: Arc::clone(transport.throttles()),
        feed_log,
    };
    let ports = Ports {
        log,
        store,
        hot,
        transport: Arc::new(transport),
        chains,
    };
    Ok((ports, controls))
}

/// The chains of `anchor.chains`: the local ledger and `[anchor.evm.<name>]` entries.
pub fn build_chains(
    settings: &Settings,
    store: &Arc<dyn Store>,
) -> anyhow::Result<Vec<Arc<dyn Chain>>> {
    let mut chains: Vec<Arc<dyn Chain>> = Vec::new();
    for name in &settings.anchor.chains {
        if name == "ledger" {
            chains.push(Arc::new(LedgerChain::new("ledger", store.clone())));
            continue;
        }
        let section = settings
            .anchor
            .evm
            .get(name)
            .with_context(|| format!("anchor.chains: {name:?} has no [anchor.evm.{name}]"))?;
        if section.signer_key.0.trim().is_empty() {
            bail!(
                "anchor.evm.{name}: no signer key; set MAILY__ANCHOR__EVM__{}__SIGNER_KEY",
                name.to_ascii_uppercase()
            );
        }
        let chain = EvmChain::new(evm_params(name, section)?)?.with_journal(store.clone());
        chains.push(Arc::new(chain));
    }
    Ok(chains)
}

/// One `[anchor.evm.<name>]` section as the adapter's parameters.
pub fn evm_params(name: &str, c: &EvmSection) -> anyhow::Result<EvmParams> {
    let address = |what: &str, v: &str| -> anyhow::Result<Address> {
        v.parse()
            .with_context(|| format!("anchor.evm.{name}.{what} {v:?} is not an address"))
    };
    let wei = |what: &str, v: &str| -> anyhow::Result<u128> {
        parse_wei(v).map_err(|e| anyhow::anyhow!("anchor.evm.{name}.{what}: {e}"))
    };
    Ok(EvmParams {
        name: name.to_string(),
        rpc_url: c.rpc_url.clone(),
        chain_id: c.chain_id,
        registry: address("registry", &c.registry)?,
        distributor: c
            .distributor
            .as_deref()
            .map(|d| address("distributor", d))
            .transpose()?,
        signer_key: SignerKey::new(c.signer_key.0.clone()),
        confirmations: c.confirmations,
        max_fee_per_gas: wei("max_fee_per_gas", &c.max_fee_per_gas)?,
        priority_fee_per_gas: wei("priority_fee_per_gas", &c.priority_fee_per_gas)?,
        bump_after: c.bump_after,
        bump_percent: c.bump_percent,
        poll_interval: c.poll_interval,
        rpc_timeout: c.rpc_timeout,
    })
}

/// `[reward.payees]` as tenant → account.
pub fn payees(s: &Settings) -> anyhow::Result<HashMap<TenantId, Account>> {
    s.reward
        .payees
        .iter()
        .map(|(tenant, account)| {
            let t = TenantId::parse(tenant)
                .with_context(|| format!("reward.payees: {tenant:?} is not a tenant id"))?;
            let a: Address = account.parse().with_context(|| {
                format!("reward.payees.{tenant}: {account:?} is not an address")
            })?;
            Ok((t, a.into_array()))
        })
        .collect()
}

/// The SMTP transport: routes, TLS, source-IP pools and limits from `[smtp]`.
pub fn build_transport(smtp: &SmtpSection) -> anyhow::Result<SmtpTransport> {
    let routes = StaticRoutes::from_entries(&smtp.routes).context("smtp.routes")?;
    let resolver: Arc<dyn Resolver> = match smtp.resolver.as_str() {
        "dns" => {
            let mx = MxResolver::from_system_conf(&MxOptions {
                port: smtp.mx_port,
                allow_private: smtp.allow_private_mx,
                ..MxOptions::default()
            })
            .context("smtp.resolver = \"dns\": reading the system's DNS configuration")?;
            let routing = RoutingResolver::new(routes, mx);
            if !routing.consults_fallback() {
                bail!(
                    "smtp.resolver = \"dns\" but smtp.routes has a \"*\" smart host, so DNS would never be asked; remove one of them"
                );
            }
            Arc::new(routing)
        }
        _ => Arc::new(routes),
    };
    let tls: TlsMode = smtp
        .tls
        .parse()
        .map_err(|e: String| anyhow::anyhow!("smtp.tls: {e}"))?;
    let check = match smtp.tls_verify.as_str() {
        "none" => CertificateCheck::None,
        "webpki" => CertificateCheck::WebPki,
        path => CertificateCheck::CaFile(path.into()),
    };
    let tls_config = client_config(&check).context("smtp.tls_verify")?;
    let transport = SmtpTransport::new(
        resolver,
        SmtpClientParams {
            helo_name: smtp.helo_name.clone(),
            max_connections_per_route: smtp.max_connections_per_route,
            max_messages_per_connection: smtp.max_messages_per_connection,
            connect_timeout: smtp.connect_timeout,
            command_timeout: smtp.command_timeout,
            tls,
            source_pools: smtp.source_pools.clone(),
            tenant_pools: smtp.tenant_pools.clone(),
            default_pool: (!smtp.default_pool.is_empty()).then(|| smtp.default_pool.clone()),
        },
    )
    .with_tls_config(tls_config)
    .with_throttles(Arc::new(Throttles::new(throttle_table(&smtp.limits)?)));
    Ok(transport)
}

/// `[smtp.limits]` as the transport's table; errors name the entry.
pub fn throttle_table(limits: &LimitsSection) -> anyhow::Result<ThrottleTable> {
    fn limit(key: &str, l: &LimitSection) -> anyhow::Result<Limit> {
        let rate = l
            .rate
            .as_deref()
            .map(str::parse::<Rate>)
            .transpose()
            .with_context(|| format!("smtp.limits.{key}.rate"))?;
        Ok(Limit {
            max_connections: l.max_connections,
            max_messages_per_connection: l.max_messages_per_connection,
            rate,
            burst: l.burst,
        })
    }
    let mut table = ThrottleTable::default();
    for (kind, key, l) in [
        (ScopeKind::Domain, "domain", &limits.domain),
        (ScopeKind::Tenant, "tenant", &limits.tenant),
        (ScopeKind::Pool, "pool", &limits.pool),
    ] {
        if *l != LimitSection::default() {
            table.defaults.insert(kind, limit(key, l)?);
        }
    }
    for (name, l) in &limits.domains {
        let key = format!("domains.{name:?}");
        table.scopes.insert(Scope::domain(name), limit(&key, l)?);
    }
    for (name, l) in &limits.tenants {
        let key = format!("tenants.{name}");
        table
            .scopes
            .insert(Scope::Tenant(name.clone()), limit(&key, l)?);
    }
    for (name, l) in &limits.pools {
        let key = format!("pools.{name}");
        table
            .scopes
            .insert(Scope::Pool(name.clone()), limit(&key, l)?);
    }
    Ok(table)
}

/// DKIM signing through the SMTP crate's signer.
struct Dkim(DkimSigner);

impl MessageSigner for Dkim {
    fn sign(&self, from_domain: &str, message: &[u8]) -> anyhow::Result<Option<Vec<u8>>> {
        Ok(self.0.sign(from_domain, message)?)
    }
}

/// The tracking keys: `[tracking] key_id` and `secret` sign, `previous` still verify.
pub fn token_keys(s: &Settings) -> anyhow::Result<TokenKeys> {
    let t = &s.tracking;
    let current = TokenKey::from_hex(t.key_id, &t.secret.0).context("tracking.secret")?;
    let previous = t
        .previous
        .iter()
        .map(|k| TokenKey::from_hex(k.id, &k.secret.0))
        .collect::<Result<Vec<_>, _>>()
        .context("tracking.previous")?;
    TokenKeys::new(current, previous).context("tracking keys")
}

/// The sender's composition: VERP, tracking and DKIM from their sections.
pub fn composer(s: &Settings) -> anyhow::Result<Composer> {
    let verp = if s.verp.domain.is_empty() {
        None
    } else {
        let domain = Domain::parse(&s.verp.domain).context("verp.domain")?;
        let mut codec =
            VerpCodec::new(&s.verp.prefix, domain, s.verp.secret.0.as_bytes()).context("verp")?;
        if !s.verp.tenant_label.is_empty() {
            codec = codec
                .with_tenant_label(&s.verp.tenant_label)
                .context("verp.tenant_label")?;
        }
        Some(Arc::new(codec))
    };
    let tracking = if s.tracking.base_url.is_empty() {
        None
    } else {
        let t = &s.tracking;
        let mut tracking = Tracking::new(&t.base_url, token_keys(s)?)
            .context("tracking.base_url")?
            .with_opens(t.opens)
            .with_clicks(t.clicks);
        if !t.tenant_label.is_empty() {
            tracking = tracking
                .with_tenant_label(&t.tenant_label)
                .context("tracking.tenant_label")?;
        }
        Some(Arc::new(tracking))
    };
    let unsubscribe_mailto = if s.tracking.unsubscribe_mailto.is_empty() {
        None
    } else {
        Some(
            EmailAddress::parse(&s.tracking.unsubscribe_mailto)
                .context("tracking.unsubscribe_mailto")?,
        )
    };
    let signer: Option<Arc<dyn MessageSigner>> = if s.dkim.keys.is_empty() {
        None
    } else {
        let mut signer = DkimSigner::new();
        for k in &s.dkim.keys {
            let key = DkimKey::from_file(&k.domain, &k.selector, &k.key_file)
                .with_context(|| format!("dkim.keys: domain {}", k.domain))?;
            tracing::info!(
                name = %key.dns_name(),
                record = %key.dns_record(),
                "DKIM key loaded; publish this TXT record"
            );
            if k.fallback {
                let again = DkimKey::from_file(&k.domain, &k.selector, &k.key_file)
                    .with_context(|| format!("dkim.keys: domain {}", k.domain))?;
                signer.set_fallback(again);
            }
            signer
                .add_key(key)
                .with_context(|| format!("dkim.keys: domain {}", k.domain))?;
        }
        Some(Arc::new(Dkim(signer)))
    };
    Ok(Composer {
        verp,
        tracking,
        unsubscribe_mailto,
        signer,
        domain_signers: Some(Arc::new(crate::domains::TenantKeys::default())),
    })
}

/// The bounce rules: the configured file, or the shipped ones.
pub fn bounce_rules(s: &Settings) -> anyhow::Result<Arc<Rules>> {
    if s.bounce.rules_file.is_empty() {
        return Ok(Arc::new(Rules::defaults().clone()));
    }
    let path = &s.bounce.rules_file;
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("bounce.rules_file: reading {path}"))?;
    let rules = Rules::from_toml(&text).with_context(|| format!("bounce.rules_file {path}"))?;
    Ok(Arc::new(rules))
}

/// The suppression policy of `[bounce] suppress` and `[bounce.tenants]`.
pub fn suppression(s: &Settings) -> anyhow::Result<SuppressionPolicy> {
    let default = Selection::parse(&s.bounce.suppress).context("bounce.suppress")?;
    let mut tenants = std::collections::HashMap::new();
    for (name, section) in &s.bounce.tenants {
        let key = format!("bounce.tenants.{name}");
        let tenant = maily_engine::TenantId::parse(name)
            .map_err(|e| anyhow::anyhow!("{key}: not a tenant id: {e}"))?;
        let list =
            Selection::parse(&section.suppress).with_context(|| format!("{key}.suppress"))?;
        tenants.insert(tenant, list);
    }
    Ok(SuppressionPolicy::new(default, tenants))
}

/// The actors' settings.
pub fn engine_settings(s: &Settings) -> anyhow::Result<EngineSettings> {
    let f = s.reward.formula;
    Ok(EngineSettings {
        partitions: s.engine.partitions,
        sender: SenderSettings {
            batch_size: s.sender.batch_size,
            concurrency: s.sender.concurrency,
            flush_interval: s.sender.flush_interval,
            pacer: Arc::default(),
            idle_wait: s.sender.idle_wait,
            retry_tiers: s.sender.retry_tiers.iter().map(|d| d.0).collect(),
            retry_jitter: s.sender.retry_jitter,
            max_attempts: s.sender.max_attempts,
            max_age: s.sender.max_age,
            idempotency_ttl: s.sender.idempotency_ttl,
            in_flight_timeout: s.sender.in_flight_timeout,
            composer: composer(s)?,
            renderer: Arc::new(RenderPool::per_core()),
            verified_domains_only: s.intake.verified_domains_only,
        },
        bounce_batch_size: s.bounce.batch_size,
        bounce_rules: bounce_rules(s)?,
        suppression: Arc::new(suppression(s)?),
        analytics: AnalyticsSettings {
            flush_size: s.analytics.flush_size,
            message_cache: (maily_actors::analytics::MESSAGE_CACHE_TOTAL
                / s.engine.partitions.max(1) as usize)
                .max(1_000),
            flush_interval: s.analytics.flush_interval,
            idle_wait: s.sender.idle_wait,
        },
        reward_formula: RewardFormula {
            per_delivered: f.per_delivered,
            per_open: f.per_open,
            per_click: f.per_click,
            per_complaint_penalty: f.per_complaint_penalty,
            per_bounce_penalty: f.per_bounce_penalty,
        },
        epoch_interval: s.reward.epoch_interval,
        anchor: AnchorSettings {
            interval: s.anchor.interval,
            max_backoff: s.anchor.max_backoff,
            payees: Arc::new(payees(s)?),
        },
        launcher: maily_actors::launcher::LauncherSettings {
            chunk: s.launcher.chunk.max(1),
            shard_size: s.launcher.shard_size.max(1),
            retention: maily_actors::launcher::Retention {
                keyed_sends: s.retention.keyed_sends,
                launched_recipients: s.retention.launched_recipients,
                messages: s.retention.messages,
                interval: s.retention.interval,
            },
            ..Default::default()
        },
        restart: RestartPolicy {
            min_backoff: s.supervisor.min_backoff,
            max_backoff: s.supervisor.max_backoff,
        },
        ownership: OwnershipSettings {
            member: member_id(&s.ownership.member),
            lease_ttl: s.ownership.lease_ttl,
            renew_interval: s.ownership.renew_interval,
        },
        stall_after: s.engine.stall_after,
    })
}

/// The configured member id, or `<hostname>-<pid>`.
fn member_id(configured: &str) -> String {
    if !configured.is_empty() {
        return configured.to_string();
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "maily".into());
    format!("{host}-{}", std::process::id())
}
