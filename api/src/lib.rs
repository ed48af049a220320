//! Maily's edges. Campaign intake and authentication ([`auth`]: API keys and JWTs)
//! live here now; gRPC, admin REST, tracking and inbound SMTP join them, all calling
//! the same intake and authenticating through [`auth::Authenticator`].

pub mod auth;
pub mod intake;

pub use intake::{EnqueueReport, Intake, IntakeError, RowError};
