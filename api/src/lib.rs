//! Maily's edges. Campaign intake, authentication ([`auth`]: API keys and JWTs), the
//! public gRPC API for senders ([`grpc`]), the admin REST API for internal teams
//! ([`admin`]) and the tracking listener ([`tracking`]: opens, clicks, unsubscribes)
//! live here, all calling the same intake and authenticating through
//! [`auth::Authenticator`].

pub mod admin;
pub mod auth;
pub mod events;
pub mod grpc;
pub mod intake;
pub mod quota;
pub mod tracking;

pub use intake::{EnqueueReport, Intake, IntakeError, RowError};
