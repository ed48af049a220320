//! Maily's SMTP adapter crate.
//!
//! - [`SmtpTransport`] implements the engine's [`Transport`](maily_engine::ports::Transport)
//!   port: a pooled ESMTP client that pipelines (RFC 2920) when the server allows it,
//!   enforces a per-route connection limit and maps replies to
//!   [`DeliveryOutcome`](maily_engine::ports::DeliveryOutcome)s.
//! - [`StaticRoutes`] implements the [`Resolver`](maily_engine::ports::Resolver) port
//!   from a fixed table (domain -> hosts, plus an optional `*` smart host).
//! - [`SmtpSink`] is a small in-process SMTP server that accepts (or rejects on demand)
//!   everything it is sent; the demo and the tests deliver into it.
//!
//! The crate speaks plain-text SMTP only: no STARTTLS, no AUTH, no DNS MX lookups.

mod client;
mod connection;
pub mod dot;
mod line;
pub mod routes;
pub mod sink;

pub use client::{SmtpClientParams, SmtpTransport};
pub use dot::{UnstuffError, Unstuffer, dot_stuff, dot_unstuff};
pub use routes::{RouteErrorReason, RouteParseError, StaticRoutes, parse_target};
pub use sink::{ReceivedMessage, SinkConfig, SinkHandle, SinkReply, SmtpSink};
