//! The inbound SMTP listener: the built-in SMTP server, taking reports for the
//! bounce actor through [`InboundReports`].

use anyhow::Context as _;
use async_trait::async_trait;
use maily_actors::Ports;
use maily_actors::inbound::{InboundError, InboundReports};
use maily_config::InboundSection;
use maily_engine::verp::VerpCodec;
use maily_smtp::tls::server_config;
use maily_smtp::{
    MessageHandler, ReceivedMessage, SinkConfig, SinkHandle, SinkLimits, SinkReply, SmtpSink,
    Verdict,
};
use std::path::Path;
use std::sync::Arc;
use tracing::{info, warn};

/// Answers the listener's SMTP questions with [`InboundReports`].
struct ReportHandler {
    reports: InboundReports,
    per_peer: PeerRate,
}

/// Reports taken per client address in the current minute, so one address cannot
/// flood the bounce pipeline.
struct PeerRate {
    per_minute: u32,
    window: std::sync::Mutex<(
        std::time::Instant,
        std::collections::HashMap<std::net::IpAddr, u32>,
    )>,
}

impl PeerRate {
    fn new(per_minute: u32) -> Self {
        PeerRate {
            per_minute,
            window: std::sync::Mutex::new((std::time::Instant::now(), Default::default())),
        }
    }

    /// Counts one report from `ip`; false when the address is over its rate.
    fn take(&self, ip: std::net::IpAddr) -> bool {
        if self.per_minute == 0 {
            return true;
        }
        let mut w = self.window.lock().unwrap_or_else(|e| e.into_inner());
        if w.0.elapsed() >= std::time::Duration::from_secs(60) {
            *w = (std::time::Instant::now(), Default::default());
        }
        let n = w.1.entry(ip).or_insert(0);
        *n += 1;
        *n <= self.per_minute
    }
}

#[async_trait]
impl MessageHandler for ReportHandler {
    fn check_recipient(&self, address: &str) -> Result<(), SinkReply> {
        self.reports
            .check_recipient(address)
            .map_err(|e| SinkReply::new(550, format!("5.1.1 {e}")))
    }

    async fn message(&self, message: ReceivedMessage) -> Verdict {
        if !self.per_peer.take(message.peer.ip()) {
            metrics::counter!("maily_inbound_reports_total", "result" => "rate_limited")
                .increment(1);
            return Verdict::Refuse(SinkReply::new(
                451,
                "4.7.1 too many reports from your address, try again later",
            ));
        }
        match self.reports.accept(&message.rcpt_to, &message.data).await {
            Ok(_) => Verdict::Accept,
            Err(InboundError::Malformed(e)) => {
                info!(peer = %message.peer, error = %e, "inbound message refused");
                metrics::counter!("maily_inbound_reports_total", "result" => "malformed")
                    .increment(1);
                Verdict::Refuse(SinkReply::new(
                    554,
                    format!("5.6.0 not a usable report: {e}"),
                ))
            }
            Err(e @ InboundError::NotAReport) => {
                info!(peer = %message.peer, "inbound message refused: not a report");
                metrics::counter!("maily_inbound_reports_total", "result" => "not_a_report")
                    .increment(1);
                Verdict::Refuse(SinkReply::new(554, format!("5.6.0 {e}")))
            }
            Err(InboundError::Unattributable(why)) => {
                info!(peer = %message.peer, reason = %why, "inbound report refused");
                Verdict::Refuse(SinkReply::new(550, why))
            }
            Err(e @ InboundError::Unavailable(_)) => {
                warn!(peer = %message.peer, error = %e, "inbound report deferred");
                Verdict::Refuse(SinkReply::new(
                    451,
                    "4.3.0 the report cannot be stored right now, try again later",
                ))
            }
        }
    }
}

/// Starts the listener described by `[inbound]`.
pub async fn start(
    section: &InboundSection,
    ports: &Ports,
    verp: Option<Arc<VerpCodec>>,
    rules: Arc<maily_bounce::Rules>,
) -> anyhow::Result<SinkHandle> {
    let tls = if section.tls_cert.is_empty() {
        None
    } else {
        Some(
            server_config(Path::new(&section.tls_cert), Path::new(&section.tls_key))
                .context("inbound.tls_cert / inbound.tls_key")?,
        )
    };
    let reports = InboundReports::new(
        ports.log.clone(),
        ports.store.clone(),
        ports.store.clone(),
        verp,
        section.complaint_addresses.clone(),
    )
    .with_rules(rules);
    let handle = SmtpSink::start(SinkConfig {
        bind: section.bind,
        capture: false,
        rejections: Default::default(),
        hostname: section.hostname.clone(),
        max_message_size: section.max_message_size,
        tls,
        handler: Some(Arc::new(ReportHandler {
            reports,
            per_peer: PeerRate::new(section.reports_per_peer_per_minute),
        })),
        limits: SinkLimits {
            max_connections: section.max_connections,
            max_connections_per_peer: section.max_connections_per_peer,
            session_timeout: section.session_timeout,
            idle_timeout: section.idle_timeout,
            min_data_rate: section.min_data_rate,
            data_grace: std::time::Duration::from_secs(30),
            max_concurrent_messages: section.max_concurrent_messages,
            max_concurrent_messages_per_peer: section.max_concurrent_messages_per_peer,
        },
    })
    .await
    .with_context(|| format!("inbound.bind: listening on {}", section.bind))?;
    info!(addr = %handle.addr(), "inbound listener for bounces and complaints");
    Ok(handle)
}
