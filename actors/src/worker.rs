//! One actix actor shape for every partition worker.
//!
//! A worker's logic is a plain struct with async methods ([`Worker`]); [`WorkerActor`]
//! gives it a mailbox, a lifecycle and supervision. While a step runs the worker is
//! moved into the step's future and the mailbox waits (an atomic response), so
//! commands and shutdown always see the worker between steps, never halfway.

use crate::supervisor::{ActorExit, ExitReporter};
use actix::prelude::*;
use maily_engine::ports::{LogError, StoreError};
use std::future::Future;
use std::time::Duration;
use tracing::{debug, error, info, warn};

/// What a step achieved, so the actor knows when to run the next one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Work was done and more may be waiting: step again at once.
    Busy,
    /// Nothing to do: step again after this long.
    Idle(Duration),
}

/// The logic of an actor: load state, make progress, stop cleanly.
pub trait Worker: Sized + Unpin + 'static {
    /// Requests the worker answers between steps.
    type Command: Send + 'static;
    /// The answer to a command.
    type Reply: Send + 'static;

    /// Name used in logs and metrics, e.g. `sender/3`.
    fn name(&self) -> String;

    /// Loads state from the store; runs before the first step of every incarnation.
    fn load(&mut self) -> impl Future<Output = anyhow::Result<()>>;

    /// One unit of work (fetch a batch, process it, record progress).
    fn step(&mut self) -> impl Future<Output = anyhow::Result<Step>>;

    /// Answers a command.
    fn command(&mut self, cmd: Self::Command) -> impl Future<Output = anyhow::Result<Self::Reply>>;

    /// Finishes work that must not be cut (flushes, offsets) before stopping.
    fn shutdown(&mut self) -> impl Future<Output = anyhow::Result<()>>;
}

/// Drives a [`Worker`].
pub struct WorkerActor<W: Worker> {
    worker: Option<W>,
    name: String,
    exit: ExitReporter,
    loaded: bool,
}

impl<W: Worker> WorkerActor<W> {
    /// Wraps a freshly built worker.
    pub fn new(worker: W, exit: ExitReporter) -> Self {
        let name = worker.name();
        WorkerActor {
            worker: Some(worker),
            name,
            exit,
            loaded: false,
        }
    }

    fn fail(&mut self, ctx: &mut Context<Self>, err: anyhow::Error) {
        let closed = err
            .chain()
            .any(|c| matches!(c.downcast_ref::<LogError>(), Some(LogError::Closed)));
        let fenced = err.chain().any(|c| {
            matches!(
                c.downcast_ref::<StoreError>(),
                Some(StoreError::Fenced { .. })
            )
        });
        if closed {
            // Restarting cannot help: the log this actor reads or writes is gone.
            info!(actor = %self.name, "event log closed, stopping");
            self.exit.report(ActorExit::DownstreamClosed);
        } else if fenced {
            // Another process owns this partition now; its actors do the work.
            warn!(actor = %self.name, error = %format!("{err:#}"), "lease lost, stopping");
            self.exit.report(ActorExit::LostOwnership);
        } else {
            error!(actor = %self.name, error = %format!("{err:#}"), "actor failed");
            self.exit.report(ActorExit::Failed(err));
        }
        ctx.stop();
    }
}

impl<W: Worker> Actor for WorkerActor<W> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(64);
        ctx.notify(Pump);
    }
}

/// Internal: run the next step.
#[derive(Message)]
#[rtype(result = "()")]
struct Pump;

impl<W: Worker> Handler<Pump> for WorkerActor<W> {
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, _: Pump, _: &mut Context<Self>) -> Self::Result {
        let Some(mut worker) = self.worker.take() else {
            return AtomicResponse::new(Box::pin(actix::fut::ready(())));
        };
        let first = !self.loaded;
        let fut = async move {
            let result = if first {
                match worker.load().await {
                    Ok(()) => Ok(Step::Busy),
                    Err(e) => Err(e.context("loading state")),
                }
            } else {
                worker.step().await
            };
            (worker, result)
        };
        AtomicResponse::new(Box::pin(fut.into_actor(self).map(
            move |(worker, result), act, ctx| {
                act.worker = Some(worker);
                act.loaded = true;
                match result {
                    Ok(Step::Busy) => {
                        ctx.notify(Pump);
                    }
                    Ok(Step::Idle(wait)) => {
                        ctx.notify_later(Pump, wait);
                    }
                    Err(e) => act.fail(ctx, e),
                }
            },
        )))
    }
}

/// Ask the worker something between steps.
pub struct Command<W: Worker>(pub W::Command);

impl<W: Worker> Message for Command<W> {
    type Result = Result<W::Reply, String>;
}

impl<W: Worker> Handler<Command<W>> for WorkerActor<W> {
    type Result = AtomicResponse<Self, Result<W::Reply, String>>;

    fn handle(&mut self, cmd: Command<W>, _: &mut Context<Self>) -> Self::Result {
        let Some(mut worker) = self.worker.take() else {
            return AtomicResponse::new(Box::pin(actix::fut::ready(Err(
                "worker is busy".to_string()
            ))));
        };
        let fut = async move {
            let r = worker.command(cmd.0).await;
            (worker, r)
        };
        AtomicResponse::new(Box::pin(fut.into_actor(self).map(|(worker, r), act, _| {
            act.worker = Some(worker);
            r.map_err(|e| format!("{e:#}"))
        })))
    }
}

/// Stop after finishing in-flight work; answers once the worker is shut down.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown;

impl<W: Worker> Handler<Shutdown> for WorkerActor<W> {
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, _: Shutdown, _: &mut Context<Self>) -> Self::Result {
        let worker = self.worker.take();
        let fut = async move {
            match worker {
                Some(mut w) => {
                    let r = w.shutdown().await;
                    (Some(w), r)
                }
                None => (None, Ok(())),
            }
        };
        AtomicResponse::new(Box::pin(fut.into_actor(self).map(
            |(worker, r), act, ctx| {
                act.worker = worker;
                match r {
                    Ok(()) => {
                        debug!(actor = %act.name, "actor shut down");
                        act.exit.report(ActorExit::Shutdown);
                        ctx.stop();
                    }
                    Err(e) => {
                        // Stopping anyway: a shutdown is not retried by restarting.
                        error!(actor = %act.name, error = %format!("{e:#}"), "shutdown incomplete");
                        act.exit.report(ActorExit::Shutdown);
                        ctx.stop();
                    }
                }
            },
        )))
    }
}
