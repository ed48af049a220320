//! Maily's edges. Campaign intake, authentication ([`auth`]: API keys and JWTs) and
//! the public gRPC API for senders ([`grpc`]) live here now; admin REST, tracking and
//! inbound SMTP join them, all calling the same intake and authenticating through
//! [`auth::Authenticator`].

pub mod auth;
pub mod grpc;
pub mod intake;

pub use intake::{EnqueueReport, Intake, IntakeError, RowError};
