//! The bounce actor: classifies failure replies and reports from the inbound topic,
//! suppresses hard bounces and complaints, and emits bounce and complaint events.

use crate::common::{Cursor, Feed, Outbox, Ports, decode_items_or_dead_letter, save_positions};
use crate::worker::{Step, Worker};
use anyhow::Context as _;
use maily_bounce::Rules;
use maily_bounce::policy::SuppressionPolicy;
use maily_engine::ports::{Fence, HotState, SuppressionStore};
use maily_engine::records::{EventRecord, InboundRecord, ReportKind, ReportVerdict, topics};
use maily_engine::reply::SmtpReply;
use maily_engine::{BounceClass, EmailAddress, EventKind, TenantId, Timestamp};
use std::sync::Arc;
use std::time::Duration;
use tracing::info;

const GROUP: &str = "bounce";

/// The ports a bounce worker uses: its feed (the inbound topic, and its positions),
/// the suppression list and its hot-state cache.
#[derive(Clone)]
pub struct BouncePorts {
    pub feed: Feed,
    pub suppressions: Arc<dyn SuppressionStore>,
    pub hot: Arc<dyn HotState>,
}

impl From<&Ports> for BouncePorts {
    fn from(ports: &Ports) -> Self {
        BouncePorts {
            feed: ports.into(),
            suppressions: ports.store.clone(),
            hot: ports.hot.clone(),
        }
    }
}

/// The bounce actor of one partition.
pub struct BounceWorker {
    ports: BouncePorts,
    partition: u32,
    batch_size: usize,
    idle_wait: Duration,
    cursor: Option<Cursor>,
    fence: Option<Fence>,
    rules: Arc<Rules>,
    policy: Arc<SuppressionPolicy>,
}

impl BounceWorker {
    /// A bounce worker for `partition`.
    pub fn new(
        ports: BouncePorts,
        partition: u32,
        batch_size: usize,
        idle_wait: Duration,
        fence: Option<Fence>,
        rules: Arc<Rules>,
        policy: Arc<SuppressionPolicy>,
    ) -> Self {
        BounceWorker {
            ports,
            partition,
            batch_size,
            idle_wait,
            cursor: None,
            fence,
            rules,
            policy,
        }
    }
}

impl BounceWorker {
    /// Classifies a failure reply (or takes the bounce analyser's verdict on a report,
    /// which saw the whole report); the tenant's suppression policy decides whether
    /// the address is suppressed (by default: hard bounces).
    async fn bounce(
        &self,
        tenant: &TenantId,
        recipient: &EmailAddress,
        reply: &SmtpReply,
        analysed: Option<&ReportVerdict>,
        source: &'static str,
    ) -> anyhow::Result<EventKind> {
        let (reason, class, status) = match analysed {
            Some(v) => (v.reason, v.class, v.status.clone()),
            None => {
                let v = self.rules.classify(reply);
                (v.reason, v.class, reply.enhanced.map(|e| e.to_string()))
            }
        };
        let verdict = Classified { reason, class };
        let class = match verdict.class {
            BounceClass::Hard => "hard",
            BounceClass::Soft => "soft",
        };
        metrics::counter!("maily_bounces_total", "reason" => verdict.reason.as_str(), "class" => class, "source" => source)
            .increment(1);
        if self
            .policy
            .suppresses(tenant, verdict.reason, verdict.class)
        {
            let why = format!("{class} bounce: {}", verdict.reason);
            self.suppress(tenant, recipient, &why).await?;
        }
        Ok(EventKind::Bounced {
            class: verdict.class,
            reason: verdict.reason,
            status,
            reply: reply.to_string(),
        })
    }

    /// Suppresses an address for good: the store first (the record), then the cache.
    async fn suppress(
        &self,
        tenant: &TenantId,
        recipient: &EmailAddress,
        why: &str,
    ) -> anyhow::Result<()> {
        self.ports
            .suppressions
            .suppress(tenant, recipient, why)
            .await
            .context("storing suppression")?;
        self.ports
            .hot
            .suppress(tenant, recipient)
            .await
            .context("caching suppression")?;
        info!(tenant = %tenant, recipient = %recipient, why, "address suppressed");
        Ok(())
    }
}

impl Worker for BounceWorker {
    type Command = ();
    type Reply = ();

    fn name(&self) -> String {
        format!("bounce/{}", self.partition)
    }

    async fn load(&mut self) -> anyhow::Result<()> {
        self.cursor = Cursor::load(&self.ports.feed, GROUP, topics::INBOUND, [self.partition])
            .await?
            .pop();
        Ok(())
    }

    async fn step(&mut self) -> anyhow::Result<Step> {
        let log = self.ports.feed.log.clone();
        // Worked on a copy: classification borrows the worker; on an error the actor is
        // rebuilt from the stored position anyway.
        let mut cursor = self.cursor.clone().context("bounce worker not loaded")?;
        let records = cursor
            .fetch(log.as_ref(), self.batch_size, self.idle_wait)
            .await?;
        if records.is_empty() {
            return Ok(Step::Busy);
        }
        let mut outbox = Outbox::default();
        for record in &records {
            cursor.next = record.offset + 1;
            let items = decode_items_or_dead_letter::<InboundRecord>(
                log.as_ref(),
                topics::INBOUND,
                "inbound",
                record,
            )
            .await?;
            for inbound in items {
                let event = match inbound {
                    InboundRecord::SyncReply {
                        message_id,
                        tenant,
                        campaign,
                        recipient,
                        reply,
                    } => {
                        let kind = self
                            .bounce(&tenant, &recipient, &reply, None, "sync")
                            .await?;
                        Some((message_id, tenant, campaign, recipient, kind))
                    }
                    InboundRecord::Report {
                        message_id,
                        tenant,
                        campaign,
                        recipient,
                        report,
                    } => {
                        metrics::counter!("maily_reports_total", "kind" => match &report.kind {
                            ReportKind::Bounce => "bounce",
                            ReportKind::Delay => "delay",
                            ReportKind::Complaint { .. } => "complaint",
                        }, "attributed_by" => report.attributed_by.clone())
                        .increment(1);
                        match &report.kind {
                            ReportKind::Bounce => {
                                let reply = report.reply.clone().unwrap_or_else(|| {
                                    SmtpReply::new(550, "5.0.0 bounce report without a status")
                                });
                                let kind = self
                                    .bounce(
                                        &tenant,
                                        &recipient,
                                        &reply,
                                        report.verdict.as_ref(),
                                        "report",
                                    )
                                    .await?;
                                Some((message_id, tenant, campaign, recipient, kind))
                            }
                            // A relay still trying tells nothing to act on yet.
                            ReportKind::Delay => None,
                            ReportKind::Complaint { feedback_type } => {
                                let why = format!("complaint: {feedback_type}");
                                self.suppress(&tenant, &recipient, &why).await?;
                                Some((
                                    message_id,
                                    tenant,
                                    campaign,
                                    recipient,
                                    EventKind::Complained,
                                ))
                            }
                        }
                    }
                };
                if let Some((message_id, tenant, campaign, recipient, kind)) = event {
                    let event = EventRecord {
                        message_id,
                        tenant,
                        campaign,
                        recipient,
                        at: Timestamp::now(),
                        kind,
                    };
                    outbox.push_keyed(topics::EVENTS, &record.key, &event);
                }
            }
        }
        outbox.send(log.as_ref(), &[topics::EVENTS]).await?;
        save_positions(&self.ports.feed, GROUP, &[&cursor], self.fence.as_ref()).await?;
        self.cursor = Some(cursor);
        Ok(Step::Busy)
    }

    async fn command(&mut self, _: ()) -> anyhow::Result<()> {
        Ok(())
    }

    async fn shutdown(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
}

/// A bounce's reason and class, whoever decided them.
struct Classified {
    reason: maily_engine::reply::Reason,
    class: BounceClass,
}
