//! The `maily` binary's library: configuration wiring, the demo, `serve` and the admin
//! API's hold on the engine.

pub mod admin;
pub mod demo;
pub mod deploy;
pub mod domains;
pub mod inbound;
pub mod metrics;
pub mod serve;
pub mod verify;
pub mod wiring;
