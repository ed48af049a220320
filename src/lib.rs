//! The `maily` binary's library: configuration wiring, the demo and `serve`.

pub mod demo;
pub mod inbound;
pub mod serve;
pub mod wiring;
