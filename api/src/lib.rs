//! Maily's edges. Campaign intake lives here now; gRPC, admin REST, tracking and
//! inbound SMTP join it, all calling the same intake.

pub mod intake;

pub use intake::{EnqueueReport, Intake, IntakeError, RowError};
