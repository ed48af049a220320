//! `maily serve` and `maily migrate`.

use crate::wiring::{Controls, build, engine_settings, migrate_store, token_keys};
use anyhow::Context as _;
use maily_api::auth::{Authenticator, JwksValidator, JwtSettings};
use maily_config::Settings;
use std::path::Path;
use std::sync::Arc;
use tracing::info;

/// Runs the engine until SIGINT or SIGTERM, then shuts down gracefully.
pub async fn run(config: Option<&Path>) -> anyhow::Result<()> {
    // First of all, so a SIGTERM or SIGINT during start-up (a deploy rolling on) is
    // taken too: the engine shuts down gracefully once it has started.
    let mut signals = Signals::install()?;
    let settings = Settings::load(config).context("loading configuration")?;
    // Before anything records, so no early figure is lost.
    if settings.metrics.enabled {
        crate::metrics::install(&settings.metrics)?;
    }
    let (ports, controls) = build(&settings).await?;
    let engine_settings = engine_settings(&settings)?;
    let verp = engine_settings.sender.composer.verp.clone();
    let engine = maily_actors::start(ports.clone(), engine_settings.clone()).await?;
    // After the engine made its topics: a probe asking for a topic while it is being
    // created would be answered that it does not exist.
    let lag_probe = settings.metrics.enabled.then(|| {
        crate::metrics::spawn_lag_probe(
            ports.clone(),
            &engine_settings,
            settings.metrics.lag_interval,
        )
    });
    let inbound = if settings.inbound.enabled {
        Some(
            crate::inbound::start(
                &settings.inbound,
                &ports,
                verp,
                engine_settings.bounce_rules.clone(),
            )
            .await?,
        )
    } else {
        None
    };
    // One authenticator (one JWKS cache), one intake and one set of tenant quotas for
    // both APIs, so a tenant's allowance is the same whichever API it uses.
    let apis = if settings.grpc.enabled || settings.admin.enabled {
        Some((
            Arc::new(Authenticator::new(
                ports.store.clone(),
                jwt_validator(&settings)?,
            )),
            Arc::new(intake(&settings, &ports)),
            Arc::new(quotas(&settings.grpc.quota)?),
        ))
    } else {
        None
    };
    let grpc = match &apis {
        Some((auth, intake, quotas)) if settings.grpc.enabled => Some(
            start_grpc(
                &settings,
                &ports,
                &controls,
                auth.clone(),
                intake.clone(),
                quotas.clone(),
            )
            .await?,
        ),
        _ => None,
    };
    let mut admin = match &apis {
        Some((auth, intake, quotas)) if settings.admin.enabled => Some(crate::admin::start(
            &settings,
            &engine_settings,
            &ports,
            controls.throttles.clone(),
            intake.clone(),
            auth.clone(),
            quotas.clone(),
        )?),
        _ => None,
    };
    let tracking = if settings.tracking.listen {
        Some(start_tracking(&settings, &ports)?)
    } else {
        None
    };
    info!(partitions = settings.engine.partitions, store = %settings.store.path, "maily serving");
    // Until a signal, answer the admin API's status requests (the engine handle stays on
    // this thread).
    let signal = signals.wait();
    tokio::pin!(signal);
    loop {
        let answered = async {
            match admin.as_mut() {
                Some(a) => a.requests.answer_next(&engine).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = &mut signal => {
                r?;
                break;
            }
            Some(()) = answered => {}
        }
    }
    info!("signal received, shutting down");
    // Intake first: uploads and imports in progress finish before the log closes.
    if let Some(crate::admin::AdminListener {
        stop,
        task,
        requests,
    }) = admin
    {
        // Status requests from now on fail at once instead of waiting for an answer.
        drop(requests);
        let _ = stop.send(());
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "admin API stopped with an error"),
            Err(e) => tracing::warn!(error = %e, "admin API task failed"),
        }
    }
    if let Some((stop, task)) = grpc {
        let _ = stop.send(());
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "gRPC server stopped with an error"),
            Err(e) => tracing::warn!(error = %e, "gRPC server task failed"),
        }
    }
    // Opens, clicks and unsubscribes in flight reach the log before it closes.
    if let Some((stop, task)) = tracking {
        let _ = stop.send(());
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "tracking listener stopped with an error"),
            Err(e) => tracing::warn!(error = %e, "tracking listener task failed"),
        }
    }
    // Stop taking reports first: a report acknowledged later could not be published.
    if let Some(listener) = inbound {
        listener.shutdown().await;
    }
    engine.shutdown().await;
    if let Some(probe) = lag_probe {
        probe.abort();
    }
    Ok(())
}

type GrpcTask = tokio::task::JoinHandle<Result<(), maily_api::grpc::ServeError>>;

/// The intake `[intake]` configures.
pub fn intake(settings: &Settings, ports: &maily_actors::Ports) -> maily_api::Intake {
    let intake = maily_api::Intake::new(ports.log.clone(), ports.store.clone());
    if settings.intake.verified_domains_only {
        intake
    } else {
        intake.any_sender_domain()
    }
}

/// The JWT validator `[auth.jwt]` configures, if any.
fn jwt_validator(settings: &Settings) -> anyhow::Result<Option<JwksValidator>> {
    let jwt = &settings.auth.jwt;
    if jwt.jwks_url.is_empty() {
        return Ok(None);
    }
    let mut s = JwtSettings::new(&jwt.jwks_url, &jwt.issuer, &jwt.audience);
    s.leeway = jwt.leeway;
    s.roles_claim = jwt.roles_claim.clone();
    s.tenant_claim = jwt.tenant_claim.clone();
    s.operator_role = jwt.operator_role.clone();
    Ok(Some(JwksValidator::new(s).context("auth.jwt")?))
}

/// Starts the gRPC API on `[grpc] bind`; returns its stop switch and task.
async fn start_grpc(
    settings: &Settings,
    ports: &maily_actors::Ports,
    controls: &Controls,
    auth: Arc<Authenticator>,
    intake: Arc<maily_api::Intake>,
    quotas: Arc<maily_api::quota::Quotas>,
) -> anyhow::Result<(tokio::sync::oneshot::Sender<()>, GrpcTask)> {
    use maily_api::events::EventHub;
    use maily_api::grpc::{GrpcDeps, serve};
    let listener = tokio::net::TcpListener::bind(settings.grpc.bind)
        .await
        .with_context(|| format!("grpc.bind: listening on {}", settings.grpc.bind))?;
    info!(addr = %settings.grpc.bind, jwt = !settings.auth.jwt.jwks_url.is_empty(), "gRPC API listening");
    let deps = GrpcDeps {
        store: ports.store.clone(),
        intake,
        auth,
        events: EventHub::start(controls.feed_log.clone())
            .await
            .context("starting the event feed")?,
        quotas,
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(serve(listener, deps, async {
        let _ = stopped.await;
    }));
    Ok((stop, task))
}

/// The tenants' API quotas of `[grpc.quota]`; a bad entry is an error naming its key.
pub fn quotas(section: &maily_config::QuotaSection) -> anyhow::Result<maily_api::quota::Quotas> {
    use maily_api::quota::{Quota, Quotas};
    use maily_engine::rate::Rate;
    fn quota(key: &str, rate: &str, burst: Option<u32>) -> anyhow::Result<Quota> {
        let rate: Rate = rate.parse().with_context(|| format!("{key}.rate"))?;
        match burst {
            Some(0) => anyhow::bail!("{key}.burst: must be at least 1"),
            Some(burst) => Ok(Quota { rate, burst }),
            None => Ok(Quota::per_period(rate)),
        }
    }
    let default = section
        .rate
        .as_deref()
        .map(|rate| quota("grpc.quota", rate, section.burst))
        .transpose()?;
    if default.is_none() && section.burst.is_some() {
        anyhow::bail!("grpc.quota.burst: set grpc.quota.rate too, a burst alone limits nothing");
    }
    let mut tenants = std::collections::HashMap::new();
    for (name, entry) in &section.tenants {
        let key = format!("grpc.quota.tenants.{name}");
        let tenant = maily_engine::TenantId::parse(name)
            .map_err(|e| anyhow::anyhow!("{key}: not a tenant id: {e}"))?;
        tenants.insert(tenant, quota(&key, &entry.rate, entry.burst)?);
    }
    Ok(Quotas::new(default, tenants))
}

type TrackingTask = tokio::task::JoinHandle<std::io::Result<()>>;

/// Starts the tracking listener on `[tracking] bind`; returns its stop switch and task.
fn start_tracking(
    settings: &Settings,
    ports: &maily_actors::Ports,
) -> anyhow::Result<(tokio::sync::oneshot::Sender<()>, TrackingTask)> {
    use maily_api::tracking::{TrackingDeps, serve};
    let bind = settings.tracking.bind;
    let listener = std::net::TcpListener::bind(bind)
        .with_context(|| format!("tracking.bind: listening on {bind}"))?;
    let deps = TrackingDeps {
        keys: token_keys(settings)?,
        log: ports.log.clone(),
        store: ports.store.clone(),
        hot: Some(ports.hot.clone()),
        events_per_ip_per_minute: settings.tracking.events_per_ip_per_minute,
        events_max_age: settings.tracking.events_max_age,
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(serve(listener, deps, async {
        let _ = stopped.await;
    }));
    Ok((stop, task))
}

/// Applies the store's migrations.
pub async fn migrate(config: Option<&Path>) -> anyhow::Result<()> {
    let settings = Settings::load(config).context("loading configuration")?;
    migrate_store(&settings).await?;
    println!("the {:?} store is migrated", settings.store.kind);
    Ok(())
}

/// SIGTERM and SIGINT, caught from the moment they are installed (a signal that
/// arrives before [`Signals::wait`] is kept for it).
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
        })
    }

    async fn wait(&mut self) -> anyhow::Result<()> {
        tokio::select! {
            _ = self.term.recv() => Ok(()),
            _ = self.int.recv() => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::quotas;
    use maily_config::{QuotaSection, TenantQuotaSection};
    use maily_engine::TenantId;
    use std::collections::BTreeMap;

    #[test]
    fn quotas_are_read_and_bad_entries_name_their_key() {
        let section = QuotaSection {
            rate: Some("100/s".into()),
            burst: None,
            tenants: BTreeMap::from([(
                "big".to_string(),
                TenantQuotaSection {
                    rate: "10000/m".into(),
                    burst: Some(500),
                },
            )]),
        };
        let q = quotas(&section).expect("valid");
        let small = q.quota_of(&TenantId::parse("small").unwrap()).unwrap();
        assert_eq!((small.rate.to_string(), small.burst), ("100/s".into(), 100));
        let big = q.quota_of(&TenantId::parse("big").unwrap()).unwrap();
        assert_eq!((big.rate.to_string(), big.burst), ("10000/m".into(), 500));
        assert!(
            quotas(&QuotaSection::default())
                .unwrap()
                .quota_of(&TenantId::parse("any").unwrap())
                .is_none()
        );

        let error = |section: QuotaSection| format!("{:#}", quotas(&section).unwrap_err());
        let bad_rate = error(QuotaSection {
            rate: Some("fast".into()),
            ..QuotaSection::default()
        });
        assert!(
            bad_rate.contains("grpc.quota.rate") && bad_rate.contains("\"fast\""),
            "{bad_rate}"
        );
        let zero = error(QuotaSection {
            rate: Some("1/s".into()),
            burst: Some(0),
            ..QuotaSection::default()
        });
        assert!(zero.contains("grpc.quota.burst"), "{zero}");
        let bad_tenant = error(QuotaSection {
            tenants: BTreeMap::from([(
                "x".to_string(),
                TenantQuotaSection {
                    rate: "1/d".into(),
                    burst: None,
                },
            )]),
            ..QuotaSection::default()
        });
        assert!(
            bad_tenant.contains("grpc.quota.tenants.x.rate"),
            "{bad_tenant}"
        );
    }
}
