//! Maily's supervised actors: the workers, their supervision and partition ownership.
//!
//! Per partition: a sender, a bounce actor and an analytics actor; per engine: a reward
//! actor and an anchor actor. Each is a [`worker::Worker`] driven by a
//! [`worker::WorkerActor`] under a [`supervisor`].

pub mod analytics;
pub mod anchor;
pub mod bounce;
pub mod common;
pub mod compose;
pub mod engine;
pub mod faults;
pub mod inbound;
pub mod launcher;
pub mod ownership;
pub mod reward;
pub mod sender;
pub mod supervisor;
pub mod watchdog;
pub mod worker;

pub use common::Ports;
pub use engine::{EngineHandle, EngineSettings, start};
pub use faults::{FaultPoint, Faults};
