//! Maily's SMTP adapter crate.
//!
//! - [`SmtpTransport`] implements the engine's [`Transport`](maily_engine::ports::Transport)
//!   port: a pooled ESMTP client that pipelines (RFC 2920) when the server allows it,
//!   enforces a per-route connection limit and maps replies to
//!   [`DeliveryOutcome`](maily_engine::ports::DeliveryOutcome)s.
//! - [`StaticRoutes`] implements the [`Resolver`](maily_engine::ports::Resolver) port
//!   from a fixed table (domain -> hosts, plus an optional `*` smart host).
//! - [`MxResolver`] implements it from DNS MX records (hickory-resolver), and
//!   [`RoutingResolver`] puts a static table in front of it.
//! - [`SmtpSink`] is a small in-process SMTP server that accepts (or rejects on demand)
//!   everything it is sent; the demo and the tests deliver into it.
//! - [`DkimSigner`] signs outgoing messages with DKIM (Ed25519 or RSA-SHA256), one
//!   [`DkimKey`] per sending domain.
//!
//! - [`Throttles`] holds the delivery limits per domain, tenant and source-IP pool;
//!   they change at run time.
//!
//! TLS is STARTTLS (RFC 3207) on rustls with the `ring` provider; there is no AUTH.

mod client;
mod connection;
pub mod dkim;
pub mod dot;
pub mod limits;
mod line;
pub mod mx;
pub mod routes;
pub mod sink;
mod stream;
pub mod tls;

pub use client::{SmtpClientParams, SmtpTransport};
pub use connection::is_public;
pub use dkim::{DkimAlgorithm, DkimError, DkimKey, DkimSigner};
pub use dot::{UnstuffError, Unstuffer, dot_stuff, dot_unstuff};
pub use limits::{Limit, Rate, Scope, ScopeKind, ThrottleTable, Throttles};
pub use mx::{MxError, MxOptions, MxResolver, MxSetupError, RoutingResolver};
pub use routes::{RouteErrorReason, RouteParseError, StaticRoutes, parse_target};
pub use sink::{
    MessageHandler, ReceivedMessage, SinkConfig, SinkHandle, SinkLimits, SinkReply, SmtpSink,
    Verdict,
};
pub use tls::{CertificateCheck, TlsMode};
