//! Supervision: actors report why they stopped as a value, and a supervisor rebuilds
//! a failed actor from its factory (which reloads its state from the store) instead of
//! reusing a half-updated struct.

use actix::{Actor, Addr};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{oneshot, watch};
use tracing::{info, warn};

/// Why an actor stopped.
#[derive(Debug)]
pub enum ActorExit {
    /// Asked to stop and finished its work (flushed, offsets stored).
    Shutdown,
    /// An input it depends on is gone for good (the log closed).
    DownstreamClosed,
    /// Its partition's lease changed hands: another process owns the work now.
    LostOwnership,
    /// Returned an error it could not handle.
    Failed(anyhow::Error),
    /// Dropped without reporting an exit: a panic unwound through a handler.
    Panicked,
}

impl ActorExit {
    /// Whether the supervisor should build the actor again.
    pub fn should_restart(&self) -> bool {
        matches!(self, ActorExit::Failed(_) | ActorExit::Panicked)
    }
}

impl fmt::Display for ActorExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ActorExit::Shutdown => f.write_str("shut down"),
            ActorExit::DownstreamClosed => f.write_str("downstream closed"),
            ActorExit::LostOwnership => f.write_str("lost ownership"),
            ActorExit::Failed(e) => write!(f, "failed: {e:#}"),
            ActorExit::Panicked => f.write_str("panicked"),
        }
    }
}

/// Held by an actor; sends its exit to the supervisor exactly once. If the actor is
/// dropped without reporting (a panic), the drop reports [`ActorExit::Panicked`].
pub struct ExitReporter {
    tx: Option<oneshot::Sender<ActorExit>>,
}

impl ExitReporter {
    /// Reports the exit; later reports are ignored.
    pub fn report(&mut self, exit: ActorExit) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(exit);
        }
    }
}

impl Drop for ExitReporter {
    fn drop(&mut self) {
        self.report(ActorExit::Panicked);
    }
}

/// Restart back-off bounds.
#[derive(Debug, Clone, Copy)]
pub struct RestartPolicy {
    pub min_backoff: Duration,
    pub max_backoff: Duration,
}

/// Restart counters shared by all supervisors of an engine.
#[derive(Debug, Default)]
pub struct RestartCounter(AtomicU64);

impl RestartCounter {
    /// Restarts so far.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Builds a fresh actor, given the reporter it must hold.
pub type Factory<A> = Box<dyn Fn(ExitReporter) -> Addr<A>>;

/// Runs `factory`'s actor until it exits for good, rebuilding it after failures with
/// exponential back-off. The current address is published on `addr`.
pub fn supervise<A: Actor>(
    name: String,
    factory: Factory<A>,
    policy: RestartPolicy,
    restarts: Arc<RestartCounter>,
    stopping: Arc<AtomicBool>,
    addr: watch::Sender<Option<Addr<A>>>,
) -> Pin<Box<dyn Future<Output = ()>>> {
    Box::pin(async move {
        let mut backoff = policy.min_backoff;
        loop {
            let (tx, rx) = oneshot::channel();
            let actor = factory(ExitReporter { tx: Some(tx) });
            addr.send_replace(Some(actor));
            let exit = rx.await.unwrap_or(ActorExit::Panicked);
            addr.send_replace(None);
            if !exit.should_restart() || stopping.load(Ordering::Relaxed) {
                info!(actor = %name, %exit, "actor stopped");
                return;
            }
            restarts.0.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("maily_actor_restarts_total", "actor" => actor_kind(&name))
                .increment(1);
            warn!(actor = %name, %exit, backoff_ms = backoff.as_millis() as u64, "restarting actor");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(policy.max_backoff);
        }
    })
}

fn actor_kind(name: &str) -> String {
    name.split('/').next().unwrap_or(name).to_string()
}
