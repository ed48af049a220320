//! Prometheus metrics: the exporter on `[metrics] bind`, every family's description,
//! and the probe that measures consumer lag and anchor lag into gauges.
//!
//! [`FAMILIES`] is the one list of what Maily exports; `docs/metrics.md` documents each
//! entry, and a test checks that every metric recorded in the code is listed here and
//! that every entry is documented.

use anyhow::Context as _;
use maily_actors::{EngineSettings, Ports};
use maily_config::MetricsSection;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use std::time::Duration;
use tracing::{debug, info};

/// What a family is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Every metric family: name, kind, help text.
pub const FAMILIES: &[(&str, Kind, &str)] = &[
    // Throughput and latency.
    (
        "maily_deliveries_total",
        Kind::Counter,
        "Delivery attempts by result (delivered, bounced, deferred) and recipient domain.",
    ),
    (
        "maily_delivery_seconds",
        Kind::Histogram,
        "Time from a message's turn in its batch to the destination's answer.",
    ),
    (
        "maily_smtp_transactions_total",
        Kind::Counter,
        "SMTP transactions by result.",
    ),
    (
        "maily_smtp_connections_opened_total",
        Kind::Counter,
        "SMTP connections opened, by whether TLS was used.",
    ),
    (
        "maily_smtp_tls_fallbacks_total",
        Kind::Counter,
        "Opportunistic STARTTLS handshakes that failed and fell back to plain text.",
    ),
    (
        "maily_mx_lookups_total",
        Kind::Counter,
        "MX resolutions by result.",
    ),
    (
        "maily_sender_batch_size",
        Kind::Histogram,
        "Messages finished per sender flush (events, retries and position written).",
    ),
    (
        "maily_sender_in_flight",
        Kind::Gauge,
        "Deliveries running in a partition's sender window.",
    ),
    (
        "maily_sender_deferred",
        Kind::Gauge,
        "Messages of a partition in the deferred queue, waiting for their destination.",
    ),
    (
        "maily_sender_deferred_total",
        Kind::Counter,
        "Messages moved out of the sender window to the deferred queue because their destination's rate limit would have held them back.",
    ),
    (
        "maily_sender_held_total",
        Kind::Counter,
        "Messages of paused campaigns staged again by the sender.",
    ),
    (
        "maily_sender_lease_waits_total",
        Kind::Counter,
        "Steps in which a sender started nothing because its partition lease was about to expire.",
    ),
    (
        "maily_sender_replayed_total",
        Kind::Counter,
        "Duplicate sends answered from the recorded result instead of sending again.",
    ),
    (
        "maily_sender_unclaimed_total",
        Kind::Counter,
        "Messages sent without an idempotency claim because hot state was down.",
    ),
    (
        "maily_stalled_partitions",
        Kind::Gauge,
        "Owned partitions of a stage with records waiting and no progress for engine.stall_after.",
    ),
    (
        "maily_sender_claims_taken_over_total",
        Kind::Counter,
        "In-flight claims of a process that lost the partition, taken over at once by its new owner.",
    ),
    (
        "maily_sender_renders_inline_total",
        Kind::Counter,
        "Templates rendered in place rather than on the render pool, because every render of their campaign so far was quick.",
    ),
    (
        "maily_sender_render_timeouts_total",
        Kind::Counter,
        "Template renders given up after the render timeout; their messages are rejected.",
    ),
    (
        "maily_sender_render_skipped_total",
        Kind::Counter,
        "Messages rejected unrendered because their campaign's renders kept running over budget.",
    ),
    // Throttles.
    (
        "maily_throttle_wait_seconds",
        Kind::Histogram,
        "Time a delivery waited for admission under its domain, tenant and pool limits.",
    ),
    (
        "maily_throttle_changes_total",
        Kind::Counter,
        "Run-time changes of delivery limits.",
    ),
    // Queues and lag.
    (
        "maily_consumer_lag",
        Kind::Gauge,
        "Records of a topic not yet processed by a consumer group (summed over partitions), measured every metrics.lag_interval.",
    ),
    (
        "maily_log_partition_depth",
        Kind::Gauge,
        "Records held per partition of the embedded log.",
    ),
    (
        "maily_log_records_total",
        Kind::Counter,
        "Records produced to the event log, per topic. Divided by maily_deliveries_total{result=\"delivered\"}: the records the log carries per delivered message.",
    ),
    (
        "maily_retention_deleted_total",
        Kind::Counter,
        "Rows the store deleted past their retention, by kind (keyed_sends, launched_recipients, messages).",
    ),
    (
        "maily_log_producer_waits_total",
        Kind::Counter,
        "Produce calls that waited because a partition was full (back-pressure).",
    ),
    (
        "maily_launched_total",
        Kind::Counter,
        "Staged recipients moved into the send topic.",
    ),
    (
        "maily_campaigns_started_total",
        Kind::Counter,
        "Campaigns started by their schedule.",
    ),
    (
        "maily_schedule_lateness_seconds",
        Kind::Histogram,
        "How late scheduled campaigns started.",
    ),
    (
        "maily_dead_letters_total",
        Kind::Counter,
        "Undecodable records moved to the dead-letter topic, by source topic.",
    ),
    // Analytics.
    (
        "maily_analytics_flush_seconds",
        Kind::Histogram,
        "Duration of analytics flushes to the store.",
    ),
    (
        "maily_analytics_flush_rows",
        Kind::Histogram,
        "Message states written per analytics flush.",
    ),
    (
        "maily_analytics_buffered_events",
        Kind::Histogram,
        "Events buffered by an analytics actor at each flush.",
    ),
    (
        "maily_analytics_duplicates_total",
        Kind::Counter,
        "Events already applied, skipped.",
    ),
    (
        "maily_analytics_rejected_rows_total",
        Kind::Counter,
        "Rows the store refused in a flush (the rest committed).",
    ),
    (
        "maily_analytics_flush_failures_total",
        Kind::Counter,
        "Analytics flushes that failed and will be retried.",
    ),
    (
        "maily_analytics_store_waits_total",
        Kind::Counter,
        "Times analytics stopped consuming while the store was down.",
    ),
    // Bounces and reports.
    (
        "maily_bounces_total",
        Kind::Counter,
        "Bounces by reason, class (hard, soft) and source (reply, report).",
    ),
    (
        "maily_reports_total",
        Kind::Counter,
        "Inbound reports handled by the bounce actor, by kind.",
    ),
    (
        "maily_inbound_reports_total",
        Kind::Counter,
        "Reports received by the inbound listener, by result.",
    ),
    (
        "maily_smtp_in_refused_connections_total",
        Kind::Counter,
        "Connections to the inbound listener refused (421) for being over a connection limit.",
    ),
    // Edges.
    (
        "maily_tracking_requests_total",
        Kind::Counter,
        "Tracking requests by kind (open, click, unsubscribe) and result.",
    ),
    (
        "maily_tracking_events_dropped_total",
        Kind::Counter,
        "Opens and clicks answered but not recorded, by kind and reason (repeat, rate).",
    ),
    (
        "maily_event_feed_errors_total",
        Kind::Counter,
        "Failed reads of the API's event feed (retried).",
    ),
    (
        "maily_event_feed_gaps_total",
        Kind::Counter,
        "Times the event feed fell behind the log's retention.",
    ),
    // Actors, ownership, state.
    (
        "maily_actor_restarts_total",
        Kind::Counter,
        "Actor restarts by the supervisor, by actor kind.",
    ),
    (
        "maily_owned_partitions",
        Kind::Gauge,
        "Partitions this process owns.",
    ),
    (
        "maily_ownership_errors_total",
        Kind::Counter,
        "Failed ownership rounds (store unreachable).",
    ),
    (
        "maily_hot_state_up",
        Kind::Gauge,
        "1 while the hot state (Redis) answers, 0 while the store stands in.",
    ),
    (
        "maily_hot_state_errors_total",
        Kind::Counter,
        "Failed hot-state calls.",
    ),
    // Rewards and anchoring.
    (
        "maily_reward_epochs_total",
        Kind::Counter,
        "Reward epochs settled.",
    ),
    (
        "maily_anchor_last_epoch",
        Kind::Gauge,
        "The last epoch anchored, per chain.",
    ),
    (
        "maily_anchor_lag_epochs",
        Kind::Gauge,
        "Settled epochs not yet anchored, per chain, measured every metrics.lag_interval.",
    ),
    (
        "maily_anchor_failures_total",
        Kind::Counter,
        "Failed anchoring attempts, per chain and kind (unavailable, misconfigured, underfunded, rejected, conflict).",
    ),
    (
        "maily_chain_transactions_total",
        Kind::Counter,
        "Transactions sent to EVM chains, per chain and kind (anchor, rewards); resubmissions not counted.",
    ),
    (
        "maily_chain_fee_bumps_total",
        Kind::Counter,
        "Stuck transactions resubmitted with higher fees, per chain.",
    ),
    (
        "maily_chain_reverts_total",
        Kind::Counter,
        "Transactions mined as reverted, per chain.",
    ),
];

const SECONDS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
const SIZES: &[f64] = &[
    1.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0,
];

/// Installs the Prometheus recorder and its scrape listener on `[metrics] bind`.
pub fn install(section: &MetricsSection) -> anyhow::Result<()> {
    let builder = PrometheusBuilder::new()
        .with_http_listener(section.bind)
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS)
        .context("metrics buckets")?
        .set_buckets_for_metric(Matcher::Suffix("_size".into()), SIZES)
        .context("metrics buckets")?
        .set_buckets_for_metric(Matcher::Suffix("_rows".into()), SIZES)
        .context("metrics buckets")?
        .set_buckets_for_metric(Matcher::Suffix("_events".into()), SIZES)
        .context("metrics buckets")?;
    builder
        .install()
        .with_context(|| format!("metrics.bind: serving metrics on {}", section.bind))?;
    for (name, kind, help) in FAMILIES {
        match kind {
            Kind::Counter => metrics::describe_counter!(*name, *help),
            Kind::Gauge => metrics::describe_gauge!(*name, *help),
            Kind::Histogram => metrics::describe_histogram!(*name, *help),
        }
    }
    info!(addr = %section.bind, "metrics listening");
    Ok(())
}

/// Measures consumer lag per group and topic, and anchor lag per chain, every
/// `interval` until the task is aborted.
pub fn spawn_lag_probe(
    ports: Ports,
    settings: &EngineSettings,
    interval: Duration,
) -> tokio::task::JoinHandle<()> {
    let consumers = crate::admin::consumers(settings);
    let partitions = settings.partitions;
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match maily_api::admin::control::queue_depths(
                ports.log.as_ref(),
                &consumers,
                partitions,
            )
            .await
            {
                Ok(queues) => {
                    for q in queues {
                        metrics::gauge!("maily_consumer_lag", "group" => q.group, "topic" => q.topic)
                            .set(q.depth as f64);
                    }
                }
                Err(e) => debug!(error = %e, "measuring consumer lag failed"),
            }
            for chain in &ports.chains {
                match ports.store.epochs_to_anchor(chain.name()).await {
                    Ok(pending) => {
                        metrics::gauge!("maily_anchor_lag_epochs", "chain" => chain.name().to_string())
                            .set(pending.len() as f64)
                    }
                    Err(e) => debug!(error = %e, "measuring anchor lag failed"),
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::path::Path;

    /// Metric names recorded anywhere in the workspace's sources.
    fn recorded() -> BTreeSet<String> {
        fn walk(dir: &Path, out: &mut BTreeSet<String>) {
            for entry in std::fs::read_dir(dir).unwrap().flatten() {
                let path = entry.path();
                let name = path.file_name().unwrap().to_string_lossy().to_string();
                if path.is_dir() {
                    if !["target", "tests", "fuzz", ".git"].contains(&name.as_str()) {
                        walk(&path, out);
                    }
                } else if name.ends_with(".rs") {
                    let text = std::fs::read_to_string(&path).unwrap();
                    for macro_name in ["counter!(", "gauge!(", "histogram!("] {
                        for (i, _) in text.match_indices(macro_name) {
                            let rest = text[i + macro_name.len()..].trim_start();
                            if let Some(rest) = rest.strip_prefix('"')
                                && let Some(end) = rest.find('"')
                                && rest[..end].starts_with("maily_")
                            {
                                out.insert(rest[..end].to_string());
                            }
                        }
                    }
                }
            }
        }
        let mut out = BTreeSet::new();
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        for dir in [
            "actors", "api", "bounce", "engine", "eventlog", "smtp", "storage", "chain", "src",
        ] {
            walk(&root.join(dir), &mut out);
        }
        out
    }

    #[test]
    fn every_recorded_metric_is_described_and_documented() {
        let listed: BTreeSet<String> = FAMILIES.iter().map(|(n, _, _)| n.to_string()).collect();
        let recorded = recorded();
        assert!(recorded.len() > 30, "found {recorded:?}");
        let missing: Vec<_> = recorded.difference(&listed).collect();
        assert!(
            missing.is_empty(),
            "recorded but not in FAMILIES: {missing:?}"
        );
        let docs =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/metrics.md"))
                .expect("docs/metrics.md");
        let undocumented: Vec<_> = listed
            .iter()
            .filter(|n| !docs.contains(&format!("`{n}`")))
            .collect();
        assert!(
            undocumented.is_empty(),
            "not in docs/metrics.md: {undocumented:?}"
        );
    }
}
