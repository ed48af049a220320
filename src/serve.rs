//! `maily serve` and `maily migrate`.

use crate::wiring::{build_ports, engine_settings, migrate_store};
use anyhow::Context as _;
use maily_config::Settings;
use std::path::Path;
use tracing::info;

/// Runs the engine until SIGINT or SIGTERM, then shuts down gracefully.
pub async fn run(config: Option<&Path>) -> anyhow::Result<()> {
    let settings = Settings::load(config).context("loading configuration")?;
    let ports = build_ports(&settings).await?;
    let engine_settings = engine_settings(&settings)?;
    let verp = engine_settings.sender.composer.verp.clone();
    let engine = maily_actors::start(ports.clone(), engine_settings).await?;
    let inbound = if settings.inbound.enabled {
        Some(crate::inbound::start(&settings.inbound, &ports, verp).await?)
    } else {
        None
    };
    info!(partitions = settings.engine.partitions, store = %settings.store.path, "maily serving");
    wait_for_signal().await?;
    info!("signal received, shutting down");
    // Stop taking reports first: a report acknowledged later could not be published.
    if let Some(listener) = inbound {
        listener.shutdown().await;
    }
    engine.shutdown().await;
    Ok(())
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
