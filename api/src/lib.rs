//! Maily's edges. Campaign intake, authentication ([`auth`]: API keys and JWTs), the
//! public gRPC API for senders ([`grpc`]) and the tracking listener ([`tracking`]:
//! opens, clicks, unsubscribes) live here now; admin REST and inbound SMTP join them,
//! all calling the same intake and authenticating through [`auth::Authenticator`].

pub mod auth;
pub mod events;
pub mod grpc;
pub mod intake;
pub mod tracking;

pub use intake::{EnqueueReport, Intake, IntakeError, RowError};
