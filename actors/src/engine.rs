//! Starting, steering and stopping the actors of one engine process.

use crate::analytics::{AnalyticsSettings, AnalyticsWorker};
use crate::anchor::{AnchorNow, AnchorWorker};
use crate::bounce::BounceWorker;
use crate::common::Ports;
use crate::faults::Faults;
use crate::reward::{CloseEpoch, RewardWorker};
use crate::sender::{SenderSettings, SenderWorker};
use crate::supervisor::{Factory, RestartCounter, RestartPolicy, supervise};
use crate::worker::{Command, Shutdown, Worker, WorkerActor};
use actix::{Actor, Addr};
use anyhow::{Context as _, anyhow};
use maily_engine::ports::AnchorReceipt;
use maily_engine::records::topics;
use maily_engine::reward::RewardFormula;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::info;

/// Everything the actors are tuned with.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// Partitions of every topic.
    pub partitions: u32,
    pub sender: SenderSettings,
    pub bounce_batch_size: usize,
    pub analytics: AnalyticsSettings,
    pub reward_formula: RewardFormula,
    pub epoch_interval: Duration,
    pub anchor_interval: Duration,
    pub restart: RestartPolicy,
}

/// One supervised actor: its current address and its supervisor task.
struct Slot<W: Worker> {
    addr: watch::Receiver<Option<Addr<WorkerActor<W>>>>,
    task: JoinHandle<()>,
}

impl<W: Worker> Slot<W> {
    async fn current(&self) -> anyhow::Result<Addr<WorkerActor<W>>> {
        let mut rx = self.addr.clone();
        let addr = rx
            .wait_for(|a| a.is_some())
            .await
            .map_err(|_| anyhow!("actor is gone"))?;
        addr.clone().context("actor is gone")
    }

    async fn call(&self, cmd: W::Command) -> anyhow::Result<W::Reply> {
        let addr = self.current().await?;
        addr.send(Command(cmd))
            .await
            .map_err(|e| anyhow!("actor mailbox: {e}"))?
            .map_err(|e| anyhow!(e))
    }

    async fn stop(self) {
        // Clone first: holding the watch guard across the await would block the
        // supervisor's update of the same channel.
        let addr = self.addr.borrow().clone();
        if let Some(addr) = addr {
            let _ = addr.send(Shutdown).await;
        }
        let _ = self.task.await;
    }
}

/// A running engine; must be used on the actix system that started it.
pub struct EngineHandle {
    senders: Vec<Slot<SenderWorker>>,
    bounces: Vec<Slot<BounceWorker>>,
    analytics: Vec<Slot<AnalyticsWorker>>,
    reward: Slot<RewardWorker>,
    anchor: Slot<AnchorWorker>,
    restarts: Arc<RestartCounter>,
    stopping: Arc<AtomicBool>,
    faults: Arc<Faults>,
}

/// Shared by the supervisors of one engine.
struct Supervision {
    policy: RestartPolicy,
    restarts: Arc<RestartCounter>,
    stopping: Arc<AtomicBool>,
}

impl Supervision {
    /// Starts the worker built by `make` under a supervisor that rebuilds it with
    /// `make` after a failure.
    fn spawn<W: Worker>(&self, name: String, make: impl Fn() -> W + 'static) -> Slot<W> {
        let (tx, rx) = watch::channel(None);
        let factory: Factory<WorkerActor<W>> =
            Box::new(move |exit| WorkerActor::new(make(), exit).start());
        let task = actix::spawn(supervise(
            name,
            factory,
            self.policy,
            self.restarts.clone(),
            self.stopping.clone(),
            tx,
        ));
        Slot { addr: rx, task }
    }
}

/// Creates the topics and starts every actor under supervision. Must run inside an
/// actix system.
pub async fn start(ports: Ports, settings: EngineSettings) -> anyhow::Result<EngineHandle> {
    let p = settings.partitions;
    let mut all_topics = vec![
        topics::SEND.to_string(),
        topics::EVENTS.to_string(),
        topics::INBOUND.to_string(),
        topics::STATS.to_string(),
        topics::DEAD_LETTER.to_string(),
    ];
    all_topics.extend((0..settings.sender.retry_tiers.len()).map(topics::retry));
    for t in &all_topics {
        ports
            .log
            .ensure_topic(t, p)
            .await
            .with_context(|| format!("creating topic {t}"))?;
    }
    let sup = Supervision {
        policy: settings.restart,
        restarts: Arc::new(RestartCounter::default()),
        stopping: Arc::new(AtomicBool::new(false)),
    };
    let faults = Faults::new();
    let sender_settings = Arc::new(settings.sender.clone());
    let (mut senders, mut bounces, mut analytics) = (Vec::new(), Vec::new(), Vec::new());
    for partition in 0..p {
        let (ports_s, s, f) = (ports.clone(), sender_settings.clone(), faults.clone());
        senders.push(sup.spawn(format!("sender/{partition}"), move || {
            SenderWorker::new(ports_s.clone(), s.clone(), f.clone(), partition)
        }));
        let (ports_b, batch, idle) = (
            ports.clone(),
            settings.bounce_batch_size,
            settings.sender.idle_wait,
        );
        bounces.push(sup.spawn(format!("bounce/{partition}"), move || {
            BounceWorker::new(ports_b.clone(), partition, batch, idle)
        }));
        let (ports_a, a, f) = (ports.clone(), settings.analytics.clone(), faults.clone());
        analytics.push(sup.spawn(format!("analytics/{partition}"), move || {
            AnalyticsWorker::new(ports_a.clone(), a.clone(), f.clone(), partition)
        }));
    }
    let (ports_r, formula, epoch) = (
        ports.clone(),
        settings.reward_formula,
        settings.epoch_interval,
    );
    let reward = sup.spawn("reward".into(), move || {
        RewardWorker::new(ports_r.clone(), formula, epoch)
    });
    let (ports_n, interval) = (ports.clone(), settings.anchor_interval);
    let anchor = sup.spawn("anchor".into(), move || {
        AnchorWorker::new(ports_n.clone(), interval)
    });
    info!(partitions = p, "engine started");
    Ok(EngineHandle {
        senders,
        bounces,
        analytics,
        reward,
        anchor,
        restarts: sup.restarts,
        stopping: sup.stopping,
        faults,
    })
}

impl EngineHandle {
    /// Settles an epoch now (if figures changed) and anchors every pending epoch.
    /// Returns the epoch covering the current figures and the new receipts.
    pub async fn close_epoch(&self) -> anyhow::Result<(Option<u64>, Vec<AnchorReceipt>)> {
        let epoch = self
            .reward
            .call(CloseEpoch)
            .await
            .context("closing epoch")?;
        let receipts = self.anchor.call(AnchorNow).await.context("anchoring")?;
        Ok((epoch, receipts))
    }

    /// Actor restarts since start.
    pub fn restarts(&self) -> u64 {
        self.restarts.get()
    }

    /// The fault switch (armed only in builds with the `fault-injection` feature).
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// Stops intake first, then lets each stage finish: senders end their batch and
    /// store offsets, bounce and analytics drain and flush, then reward and anchor stop.
    pub async fn shutdown(self) {
        self.stopping.store(true, Ordering::Relaxed);
        futures::future::join_all(self.senders.into_iter().map(Slot::stop)).await;
        futures::future::join_all(self.bounces.into_iter().map(Slot::stop)).await;
        futures::future::join_all(self.analytics.into_iter().map(Slot::stop)).await;
        self.reward.stop().await;
        self.anchor.stop().await;
        info!("engine stopped");
    }
}
