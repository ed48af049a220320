//! Builds the adapters named in the settings and the engine settings for the actors.

use anyhow::{Context as _, bail};
use maily_actors::Ports;
use maily_actors::analytics::AnalyticsSettings;
use maily_actors::engine::EngineSettings;
use maily_actors::log::{KafkaLog, KafkaParams, MemoryLog};
use maily_actors::ownership::OwnershipSettings;
use maily_actors::sender::SenderSettings;
use maily_actors::supervisor::RestartPolicy;
use maily_chain::LedgerChain;
use maily_config::{HotKind, LogKind, Settings, StoreKind};
use maily_engine::ports::{Chain, EventLog, HotState, Store};
use maily_engine::reward::RewardFormula;
use maily_smtp::{SmtpClientParams, SmtpTransport, StaticRoutes};
use maily_storage::postgres::{PostgresParams, PostgresStore};
use maily_storage::redis_hot::{RedisHotState, RedisParams};
use maily_storage::{MemoryHotState, SqliteParams, SqliteStore};
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
            let store = PostgresStore::connect(PostgresParams {
                url: pg.url.clone(),
                schema: (!pg.schema.is_empty()).then(|| pg.schema.clone()),
                max_connections: pg.max_connections,
                statement_timeout: pg.statement_timeout,
                acquire_timeout: pg.acquire_timeout,
                batch_rows: pg.batch_rows,
            })
            .await
            .with_context(|| format!("connecting to Postgres at {}", redact(&pg.url)))?;
            if pg.migrate_on_start {
                store
                    .migrate()
                    .await
                    .context("migrating the Postgres store")?;
            }
            Ok(Arc::new(store))
        }
    }
}

/// Applies the store's migrations whatever `migrate_on_start` says.
pub async fn migrate_store(settings: &Settings) -> anyhow::Result<()> {
    if settings.store.kind == StoreKind::Postgres {
        let pg = &settings.store.postgres;
        let store = PostgresStore::connect(PostgresParams {
            url: pg.url.clone(),
            schema: (!pg.schema.is_empty()).then(|| pg.schema.clone()),
            max_connections: 1,
            statement_timeout: pg.statement_timeout,
            acquire_timeout: pg.acquire_timeout,
            batch_rows: pg.batch_rows,
        })
        .await
        .with_context(|| format!("connecting to Postgres at {}", redact(&pg.url)))?;
        store
            .migrate()
            .await
            .context("migrating the Postgres store")?;
        return Ok(());
    }
    open_store(settings).await.map(|_| ())
}

/// A connection URL without its password, for messages.
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
    let store = open_store(settings).await?;
    let log: Arc<dyn EventLog> = match settings.log.kind {
        LogKind::Memory => Arc::new(MemoryLog::new(settings.log.capacity_per_partition)),
        LogKind::Kafka => {
            let k = &settings.log.kafka;
            Arc::new(
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
                    extra: k.properties.clone(),
                })
                .with_context(|| format!("connecting to Kafka at {}", k.brokers))?,
            )
        }
    };
    let hot: Arc<dyn HotState> = match settings.hot.kind {
        HotKind::Memory => Arc::new(MemoryHotState::new()),
        HotKind::Redis => {
            let r = &settings.hot.redis;
            Arc::new(
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
            )
        }
    };
    let routes = StaticRoutes::from_entries(&settings.smtp.routes).context("smtp.routes")?;
    let transport = SmtpTransport::new(
        Arc::new(routes),
        SmtpClientParams {
            helo_name: settings.smtp.helo_name.clone(),
            max_connections_per_route: settings.smtp.max_connections_per_route,
            max_messages_per_connection: settings.smtp.max_messages_per_connection,
            connect_timeout: settings.smtp.connect_timeout,
            command_timeout: settings.smtp.command_timeout,
        },
    );
    let mut chains: Vec<Arc<dyn Chain>> = Vec::new();
    for name in &settings.anchor.chains {
        match name.as_str() {
            "ledger" => chains.push(Arc::new(LedgerChain::new("ledger", store.clone()))),
            other => bail!("anchor.chains: unknown chain {other:?} (available: \"ledger\")"),
        }
    }
    Ok(Ports {
        log,
        store,
        hot,
        transport: Arc::new(transport),
        chains,
    })
}

/// The actors' settings.
pub fn engine_settings(s: &Settings) -> EngineSettings {
    let f = s.reward.formula;
    EngineSettings {
        partitions: s.engine.partitions,
        sender: SenderSettings {
            batch_size: s.sender.batch_size,
            concurrency: s.sender.concurrency,
            idle_wait: s.sender.idle_wait,
            retry_tiers: s.sender.retry_tiers.iter().map(|d| d.0).collect(),
            max_attempts: s.sender.max_attempts,
            max_age: s.sender.max_age,
            idempotency_ttl: s.sender.idempotency_ttl,
            in_flight_timeout: s.sender.in_flight_timeout,
        },
        bounce_batch_size: s.bounce.batch_size,
        analytics: AnalyticsSettings {
            flush_size: s.analytics.flush_size,
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
        anchor_interval: s.anchor.interval,
        restart: RestartPolicy {
            min_backoff: s.supervisor.min_backoff,
            max_backoff: s.supervisor.max_backoff,
        },
        ownership: OwnershipSettings {
            member: member_id(&s.ownership.member),
            lease_ttl: s.ownership.lease_ttl,
            renew_interval: s.ownership.renew_interval,
        },
    }
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
