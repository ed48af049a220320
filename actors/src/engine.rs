//! Starting, steering and stopping the actors of one engine process.

use crate::analytics::{AnalyticsPorts, AnalyticsSettings, AnalyticsWorker};
use crate::anchor::{AnchorNow, AnchorPorts, AnchorSettings, AnchorWorker};
use crate::bounce::{BouncePorts, BounceWorker};
use crate::common::{Feed, Ports};
use crate::faults::Faults;
use crate::launcher::{LauncherPorts, LauncherSettings, LauncherWorker};
use crate::ownership::{LEADER, LeaseGuard, OwnershipSettings, assignment, partition_resource};
use crate::reward::{CloseEpoch, RewardPorts, RewardWorker};
use crate::sender::{SenderPorts, SenderSettings, SenderWorker};
use crate::supervisor::{Factory, RestartCounter, RestartPolicy, supervise};
use crate::watchdog::Watchdog;
use crate::worker::{Command, Shutdown, Worker, WorkerActor};
use actix::{Actor, Addr};
use anyhow::{Context as _, anyhow};
use maily_bounce::Rules;
use maily_bounce::policy::SuppressionPolicy;
use maily_engine::Timestamp;
use maily_engine::ports::AnchorReceipt;
use maily_engine::ports::{Lease, LeaseStore};
use maily_engine::records::topics;
use maily_engine::reward::RewardFormula;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

/// Everything the actors are tuned with.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// Partitions of every topic.
    pub partitions: u32,
    pub sender: SenderSettings,
    pub bounce_batch_size: usize,
    /// Reply-text rules for classifying bounces.
    pub bounce_rules: Arc<Rules>,
    /// Which bounces suppress an address, per tenant.
    pub suppression: Arc<SuppressionPolicy>,
    pub analytics: AnalyticsSettings,
    pub reward_formula: RewardFormula,
    pub epoch_interval: Duration,
    pub anchor: AnchorSettings,
    /// Pacing of the leader's launcher (scheduled starts, staged recipients).
    pub launcher: LauncherSettings,
    pub restart: RestartPolicy,
    pub ownership: OwnershipSettings,
    /// A partition with waiting records whose stored position has not moved for this
    /// long is reported as stalled (`crate::watchdog`).
    pub stall_after: Duration,
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

    fn alive(&self) -> bool {
        !self.task.is_finished()
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

/// The actors of one owned partition.
struct PartitionActors {
    lease: Lease,
    guard: Arc<LeaseGuard>,
    sender: Slot<SenderWorker>,
    bounce: Slot<BounceWorker>,
    analytics: Slot<AnalyticsWorker>,
}

impl PartitionActors {
    fn alive(&self) -> bool {
        self.sender.alive() && self.bounce.alive() && self.analytics.alive()
    }

    async fn stop(self) {
        self.sender.stop().await;
        self.bounce.stop().await;
        self.analytics.stop().await;
    }
}

/// The actors of the leader role.
struct LeaderActors {
    lease: Lease,
    reward: Slot<RewardWorker>,
    anchor: Slot<AnchorWorker>,
    launcher: Slot<LauncherWorker>,
}

impl LeaderActors {
    fn alive(&self) -> bool {
        self.reward.alive() && self.anchor.alive() && self.launcher.alive()
    }

    async fn stop(self) {
        self.launcher.stop().await;
        self.reward.stop().await;
        self.anchor.stop().await;
    }
}

#[derive(Default)]
struct Owned {
    partitions: BTreeMap<u32, PartitionActors>,
    leader: Option<LeaderActors>,
    stopped: bool,
}

/// The ports of each role, handed out as the supervisor starts its workers.
struct RolePorts {
    sender: SenderPorts,
    bounce: BouncePorts,
    analytics: AnalyticsPorts,
    reward: RewardPorts,
    anchor: AnchorPorts,
    launcher: LauncherPorts,
    /// Partition and leader leases, and this process's heartbeat.
    leases: Arc<dyn LeaseStore>,
    /// What the watchdog compares: stored positions against the log's ends.
    watch: Feed,
}

impl From<&Ports> for RolePorts {
    fn from(ports: &Ports) -> Self {
        RolePorts {
            sender: ports.into(),
            bounce: ports.into(),
            analytics: ports.into(),
            reward: ports.into(),
            anchor: ports.into(),
            launcher: ports.into(),
            leases: ports.store.clone(),
            watch: ports.into(),
        }
    }
}

struct Inner {
    ports: RolePorts,
    settings: EngineSettings,
    sender_settings: Arc<SenderSettings>,
    sup: Supervision,
    faults: Arc<Faults>,
    owned: tokio::sync::Mutex<Owned>,
}

impl Inner {
    fn start_partition(&self, lease: Lease, p: u32) -> PartitionActors {
        let fence = lease.fence();
        let guard = LeaseGuard::new(lease.expires_at);
        let (ports, s, f, fe, g) = (
            self.ports.sender.clone(),
            self.sender_settings.clone(),
            self.faults.clone(),
            fence.clone(),
            guard.clone(),
        );
        let sender = self.sup.spawn(format!("sender/{p}"), move || {
            SenderWorker::new(
                ports.clone(),
                s.clone(),
                f.clone(),
                p,
                Some(fe.clone()),
                Some(g.clone()),
            )
        });
        let (ports, batch, idle, fe, rules, policy) = (
            self.ports.bounce.clone(),
            self.settings.bounce_batch_size,
            self.settings.sender.idle_wait,
            fence.clone(),
            Arc::clone(&self.settings.bounce_rules),
            Arc::clone(&self.settings.suppression),
        );
        let bounce = self.sup.spawn(format!("bounce/{p}"), move || {
            BounceWorker::new(
                ports.clone(),
                p,
                batch,
                idle,
                Some(fe.clone()),
                Arc::clone(&rules),
                Arc::clone(&policy),
            )
        });
        let (ports, a, f, fe) = (
            self.ports.analytics.clone(),
            self.settings.analytics.clone(),
            self.faults.clone(),
            fence,
        );
        let analytics = self.sup.spawn(format!("analytics/{p}"), move || {
            AnalyticsWorker::new(ports.clone(), a.clone(), f.clone(), p, Some(fe.clone()))
        });
        info!(partition = p, epoch = lease.epoch, "partition owned");
        metrics::gauge!("maily_owned_partitions").increment(1.0);
        PartitionActors {
            lease,
            guard,
            sender,
            bounce,
            analytics,
        }
    }

    fn start_leader(&self, lease: Lease) -> LeaderActors {
        let (ports, formula, epoch, fence) = (
            self.ports.reward.clone(),
            self.settings.reward_formula,
            self.settings.epoch_interval,
            lease.fence(),
        );
        let reward = self.sup.spawn("reward".into(), move || {
            RewardWorker::new(ports.clone(), formula, epoch, Some(fence.clone()))
        });
        let (ports, anchor) = (self.ports.anchor.clone(), self.settings.anchor.clone());
        let anchor = self.sup.spawn("anchor".into(), move || {
            AnchorWorker::new(ports.clone(), anchor.clone())
        });
        let (ports, launch) = (self.ports.launcher.clone(), self.settings.launcher);
        let launcher = self.sup.spawn("launcher".into(), move || {
            LauncherWorker::new(ports.clone(), launch)
        });
        info!(epoch = lease.epoch, "leader role taken");
        LeaderActors {
            lease,
            reward,
            anchor,
            launcher,
        }
    }

    /// One round: heartbeat, recompute the assignment, renew what we keep, stop and
    /// release what we must give up, take what is ours and free.
    async fn rebalance(&self) -> anyhow::Result<()> {
        let o = &self.settings.ownership;
        let store = &self.ports.leases;
        let now = Timestamp::now();
        store.heartbeat(&o.member, now).await.context("heartbeat")?;
        let since = Timestamp(now.0 - o.lease_ttl.as_millis() as i64);
        let members = store.live_members(since).await.context("listing members")?;
        let (desired, lead) = assignment(self.settings.partitions, &members, &o.member);
        let mut owned = self.owned.lock().await;
        if owned.stopped {
            return Ok(());
        }

        let held: Vec<u32> = owned.partitions.keys().copied().collect();
        for p in held {
            let set = owned.partitions.remove(&p).expect("held");
            let keep = desired.contains(&p) && set.alive();
            let renewed = if keep {
                match store
                    .acquire_lease(&partition_resource(p), &o.member, now, o.lease_ttl)
                    .await
                {
                    Ok(renewed) => renewed,
                    Err(e) => {
                        // Still ours to stop or renew next round: a set dropped here
                        // would leave its actors running beside the next round's.
                        owned.partitions.insert(p, set);
                        return Err(e).with_context(|| format!("renewing partition {p}"));
                    }
                }
            } else {
                None
            };
            match renewed {
                Some(lease) if lease.epoch == set.lease.epoch => {
                    set.guard.extend(lease.expires_at);
                    owned.partitions.insert(p, PartitionActors { lease, ..set });
                }
                Some(lease) => {
                    // We lost the lease and got it back: the old actors are fenced.
                    set.stop().await;
                    metrics::gauge!("maily_owned_partitions").decrement(1.0);
                    let fresh = self.start_partition(lease, p);
                    owned.partitions.insert(p, fresh);
                }
                None => {
                    let fence = set.lease.fence();
                    set.stop().await;
                    metrics::gauge!("maily_owned_partitions").decrement(1.0);
                    store
                        .release_lease(&fence)
                        .await
                        .context("releasing lease")?;
                    info!(
                        partition = p,
                        reassigned = !desired.contains(&p),
                        "partition given up"
                    );
                }
            }
        }
        for p in desired {
            if owned.partitions.contains_key(&p) {
                continue;
            }
            if let Some(lease) = store
                .acquire_lease(&partition_resource(p), &o.member, now, o.lease_ttl)
                .await?
            {
                let set = self.start_partition(lease, p);
                owned.partitions.insert(p, set);
            }
        }

        if let Some(leader) = owned.leader.take() {
            let renewed = if lead && leader.alive() {
                match store
                    .acquire_lease(LEADER, &o.member, now, o.lease_ttl)
                    .await
                {
                    Ok(renewed) => renewed,
                    Err(e) => {
                        // Kept, as above: never a second launcher beside this one.
                        owned.leader = Some(leader);
                        return Err(e).context("renewing the leader lease");
                    }
                }
            } else {
                None
            };
            match renewed {
                Some(lease) if lease.epoch == leader.lease.epoch => {
                    owned.leader = Some(LeaderActors { lease, ..leader });
                }
                other => {
                    let fence = leader.lease.fence();
                    leader.stop().await;
                    if other.is_none() {
                        store
                            .release_lease(&fence)
                            .await
                            .context("releasing leader lease")?;
                    }
                    info!("leader role given up");
                }
            }
        }
        if lead
            && owned.leader.is_none()
            && let Some(lease) = store
                .acquire_lease(LEADER, &o.member, now, o.lease_ttl)
                .await?
        {
            owned.leader = Some(self.start_leader(lease));
        }
        Ok(())
    }
}

/// A running engine; must be used on the actix system that started it.
pub struct EngineHandle {
    inner: Rc<Inner>,
    stop: watch::Sender<bool>,
    rebalancer: JoinHandle<()>,
    watchdog: JoinHandle<()>,
}

/// Creates the topics, takes this process's share of the partitions and starts their
/// actors under supervision, then keeps ownership up to date in the background. Must
/// run inside an actix system.
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
    let inner = Rc::new(Inner {
        sender_settings: Arc::new(settings.sender.clone()),
        sup: Supervision {
            policy: settings.restart,
            restarts: Arc::new(RestartCounter::default()),
            stopping: Arc::new(AtomicBool::new(false)),
        },
        faults: Faults::new(),
        owned: tokio::sync::Mutex::new(Owned::default()),
        ports: RolePorts::from(&ports),
        settings,
    });
    inner.rebalance().await.context("taking partitions")?;
    let (stop, mut stopped) = watch::channel(false);
    let every = inner.settings.ownership.renew_interval;
    let looped = inner.clone();
    let rebalancer = actix::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if let Err(e) = looped.rebalance().await {
                        warn!(error = %format!("{e:#}"), "ownership round failed");
                        metrics::counter!("maily_ownership_errors_total").increment(1);
                    }
                }
                _ = stopped.changed() => return,
            }
        }
    });
    let watched = inner.clone();
    let mut stopped = stop.subscribe();
    let watchdog = actix::spawn(async move {
        let mut dog = Watchdog::new(watched.settings.stall_after);
        let mut tick = tokio::time::interval(dog.interval());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let owned: Vec<u32> =
                        watched.owned.lock().await.partitions.keys().copied().collect();
                    dog.check(&watched.ports.watch, &owned).await;
                }
                _ = stopped.changed() => return,
            }
        }
    });
    let owned = inner.owned.lock().await;
    info!(
        member = %inner.settings.ownership.member,
        partitions = ?owned.partitions.keys().collect::<Vec<_>>(),
        leader = owned.leader.is_some(),
        "engine started"
    );
    drop(owned);
    Ok(EngineHandle {
        inner,
        stop,
        rebalancer,
        watchdog,
    })
}

impl EngineHandle {
    /// Settles an epoch now (if figures changed) and anchors every pending epoch.
    /// Returns the epoch covering the current figures and the new receipts. Only the
    /// leader can.
    pub async fn close_epoch(&self) -> anyhow::Result<(Option<u64>, Vec<AnchorReceipt>)> {
        let owned = self.inner.owned.lock().await;
        let leader = owned
            .leader
            .as_ref()
            .context("this engine process does not hold the leader role")?;
        let epoch = leader
            .reward
            .call(CloseEpoch)
            .await
            .context("closing epoch")?;
        let receipts = leader.anchor.call(AnchorNow).await.context("anchoring")?;
        Ok((epoch, receipts))
    }

    /// The partitions this process owns now.
    pub async fn owned_partitions(&self) -> Vec<u32> {
        self.inner
            .owned
            .lock()
            .await
            .partitions
            .keys()
            .copied()
            .collect()
    }

    /// Whether this process holds the leader role now.
    pub async fn is_leader(&self) -> bool {
        self.inner.owned.lock().await.leader.is_some()
    }

    /// Actor restarts since start.
    pub fn restarts(&self) -> u64 {
        self.inner.sup.restarts.get()
    }

    /// The fault switch (armed only in builds with the `fault-injection` feature).
    pub fn faults(&self) -> &Faults {
        &self.inner.faults
    }

    /// Stops intake first, then lets each stage finish: senders end their batch and
    /// store offsets, bounce and analytics drain and flush, then reward and anchor
    /// stop; finally the leases are released so other processes take over at once.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.rebalancer.await;
        let _ = self.watchdog.await;
        self.inner.sup.stopping.store(true, Ordering::Relaxed);
        let mut owned = self.inner.owned.lock().await;
        owned.stopped = true;
        let sets: Vec<PartitionActors> = std::mem::take(&mut owned.partitions)
            .into_values()
            .collect();
        let leader = owned.leader.take();
        drop(owned);
        let mut fences: Vec<_> = sets.iter().map(|s| s.lease.fence()).collect();
        let (mut senders, mut bounces, mut analytics) = (Vec::new(), Vec::new(), Vec::new());
        for s in sets {
            senders.push(s.sender);
            bounces.push(s.bounce);
            analytics.push(s.analytics);
        }
        futures::future::join_all(senders.into_iter().map(Slot::stop)).await;
        futures::future::join_all(bounces.into_iter().map(Slot::stop)).await;
        futures::future::join_all(analytics.into_iter().map(Slot::stop)).await;
        if let Some(l) = leader {
            fences.push(l.lease.fence());
            l.stop().await;
        }
        for f in fences {
            if let Err(e) = self.inner.ports.leases.release_lease(&f).await {
                warn!(resource = %f.resource, error = %e, "lease not released; it will expire");
            }
        }
        info!("engine stopped");
    }
}
