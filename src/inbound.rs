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
    MessageHandler, ReceivedMessage, SinkConfig, SinkHandle, SinkReply, SmtpSink, Verdict,
};
use std::path::Path;
use std::sync::Arc;
use tracing::{info, warn};

/// Answers the listener's SMTP questions with [`InboundReports`].
struct ReportHandler(InboundReports);

#[async_trait]
impl MessageHandler for ReportHandler {
    fn check_recipient(&self, address: &str) -> Result<(), SinkReply> {
        self.0
            .check_recipient(address)
            .map_err(|e| SinkReply::new(550, format!("5.1.1 {e}")))
    }

    async fn message(&self, message: ReceivedMessage) -> Verdict {
        match self.0.accept(&message.rcpt_to, &message.data).await {
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
    rules: Arc<maily_engine::bounce::rules::Rules>,
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
        handler: Some(Arc::new(ReportHandler(reports))),
    })
    .await
    .with_context(|| format!("inbound.bind: listening on {}", section.bind))?;
    info!(addr = %handle.addr(), "inbound listener for bounces and complaints");
    Ok(handle)
}
