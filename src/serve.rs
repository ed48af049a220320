//! `maily serve` and `maily migrate`.

use crate::wiring::{Controls, build, engine_settings, migrate_store, token_keys};
use anyhow::Context as _;
use maily_config::Settings;
use std::path::Path;
use tracing::info;

/// Runs the engine until SIGINT or SIGTERM, then shuts down gracefully.
pub async fn run(config: Option<&Path>) -> anyhow::Result<()> {
    let settings = Settings::load(config).context("loading configuration")?;
    let (ports, controls) = build(&settings).await?;
    let engine_settings = engine_settings(&settings)?;
    let verp = engine_settings.sender.composer.verp.clone();
    let engine = maily_actors::start(ports.clone(), engine_settings).await?;
    let inbound = if settings.inbound.enabled {
        Some(crate::inbound::start(&settings.inbound, &ports, verp).await?)
    } else {
        None
    };
    let grpc = if settings.grpc.enabled {
        Some(start_grpc(&settings, &ports, &controls).await?)
    } else {
        None
    };
    let tracking = if settings.tracking.listen {
        Some(start_tracking(&settings, &ports)?)
    } else {
        None
    };
    info!(partitions = settings.engine.partitions, store = %settings.store.path, "maily serving");
    wait_for_signal().await?;
    info!("signal received, shutting down");
    // Intake first: uploads in progress finish enqueueing before the log closes.
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
    Ok(())
}

type GrpcTask = tokio::task::JoinHandle<Result<(), maily_api::grpc::ServeError>>;

/// Starts the gRPC API on `[grpc] bind`; returns its stop switch and task.
async fn start_grpc(
    settings: &Settings,
    ports: &maily_actors::Ports,
    controls: &Controls,
) -> anyhow::Result<(tokio::sync::oneshot::Sender<()>, GrpcTask)> {
    use maily_api::auth::{Authenticator, JwksValidator, JwtSettings};
    use maily_api::events::EventHub;
    use maily_api::grpc::{GrpcDeps, serve};
    use std::sync::Arc;
    let jwt = &settings.auth.jwt;
    let validator = if jwt.jwks_url.is_empty() {
        None
    } else {
        let mut s = JwtSettings::new(&jwt.jwks_url, &jwt.issuer, &jwt.audience);
        s.leeway = jwt.leeway;
        s.roles_claim = jwt.roles_claim.clone();
        s.tenant_claim = (!jwt.tenant_claim.is_empty()).then(|| jwt.tenant_claim.clone());
        Some(JwksValidator::new(s).context("auth.jwt")?)
    };
    let listener = tokio::net::TcpListener::bind(settings.grpc.bind)
        .await
        .with_context(|| format!("grpc.bind: listening on {}", settings.grpc.bind))?;
    info!(addr = %settings.grpc.bind, jwt = validator.is_some(), "gRPC API listening");
    let deps = GrpcDeps {
        intake: Arc::new(maily_api::Intake::new(
            ports.log.clone(),
            ports.store.clone(),
        )),
        store: ports.store.clone(),
        auth: Arc::new(Authenticator::new(ports.store.clone(), validator)),
        events: EventHub::start(controls.feed_log.clone())
            .await
            .context("starting the event feed")?,
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(serve(listener, deps, async {
        let _ = stopped.await;
    }));
    Ok((stop, task))
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

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("waiting for SIGINT"),
        _ = term.recv() => Ok(()),
    }
}
