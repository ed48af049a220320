//! The bounce actor: classifies failure replies and reports from the inbound topic,
//! suppresses hard bounces and emits bounce events.

use crate::common::{Cursor, Outbox, Ports, decode_or_dead_letter, save_positions};
use crate::worker::{Step, Worker};
use anyhow::Context as _;
use maily_engine::bounce::classify_reply;
use maily_engine::ports::Fence;
use maily_engine::records::{EventRecord, InboundRecord, topics};
use maily_engine::{BounceClass, EventKind, Timestamp};
use std::time::Duration;
use tracing::info;

const GROUP: &str = "bounce";

/// The bounce actor of one partition.
pub struct BounceWorker {
    ports: Ports,
    partition: u32,
    batch_size: usize,
    idle_wait: Duration,
    cursor: Option<Cursor>,
    fence: Option<Fence>,
}

impl BounceWorker {
    /// A bounce worker for `partition`.
    pub fn new(
        ports: Ports,
        partition: u32,
        batch_size: usize,
        idle_wait: Duration,
        fence: Option<Fence>,
    ) -> Self {
        BounceWorker {
            ports,
            partition,
            batch_size,
            idle_wait,
            cursor: None,
            fence,
        }
    }
}

impl Worker for BounceWorker {
    type Command = ();
    type Reply = ();

    fn name(&self) -> String {
        format!("bounce/{}", self.partition)
    }

    async fn load(&mut self) -> anyhow::Result<()> {
        self.cursor = Cursor::load(&self.ports, GROUP, topics::INBOUND, [self.partition])
            .await?
            .pop();
        Ok(())
    }

    async fn step(&mut self) -> anyhow::Result<Step> {
        let log = self.ports.log.clone();
        let cursor = self.cursor.as_mut().context("bounce worker not loaded")?;
        let records = cursor
            .fetch(log.as_ref(), self.batch_size, self.idle_wait)
            .await?;
        if records.is_empty() {
            return Ok(Step::Busy);
        }
        let mut outbox = Outbox::default();
        for record in &records {
            cursor.next = record.offset + 1;
            let Some(inbound) = decode_or_dead_letter::<InboundRecord>(
                log.as_ref(),
                topics::INBOUND,
                "inbound",
                record,
            )
            .await?
            else {
                continue;
            };
            match inbound {
                InboundRecord::SyncReply {
                    message_id,
                    tenant,
                    campaign,
                    recipient,
                    reply,
                } => {
                    let verdict = classify_reply(&reply);
                    metrics::counter!("maily_bounces_total", "reason" => verdict.reason.as_str(), "class" => match verdict.class { BounceClass::Hard => "hard", BounceClass::Soft => "soft" }).increment(1);
                    if verdict.class == BounceClass::Hard {
                        let why = format!("hard bounce: {}", verdict.reason);
                        self.ports
                            .store
                            .suppress(&tenant, &recipient, &why)
                            .await
                            .context("storing suppression")?;
                        self.ports
                            .hot
                            .suppress(&tenant, &recipient)
                            .await
                            .context("caching suppression")?;
                        info!(tenant = %tenant, recipient = %recipient, reason = %verdict.reason, "suppressed after hard bounce");
                    }
                    let event = EventRecord {
                        message_id,
                        tenant,
                        campaign,
                        recipient,
                        at: Timestamp::now(),
                        kind: EventKind::Bounced {
                            class: verdict.class,
                            reason: verdict.reason,
                            status: reply.enhanced.map(|e| e.to_string()),
                            reply: reply.to_string(),
                        },
                    };
                    outbox.push(topics::EVENTS, &campaign, &event);
                }
            }
        }
        outbox.send(log.as_ref(), &[topics::EVENTS]).await?;
        save_positions(&self.ports, GROUP, &[&*cursor], self.fence.as_ref()).await?;
        Ok(Step::Busy)
    }

    async fn command(&mut self, _: ()) -> anyhow::Result<()> {
        Ok(())
    }

    async fn shutdown(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
}
