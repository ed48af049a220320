//! Contract suites: the behaviour every adapter of a port must show.
//!
//! Each suite is a set of async functions plus a macro that turns them into tests for
//! one adapter, so the Kafka, Postgres and Redis adapters run the very same checks as
//! the embedded ones:
//!
//! ```text
//! async fn new_log() -> MemoryLog { MemoryLog::new(1024) }
//! maily_engine::event_log_contract!(new_log);
//! ```
//!
//! Factories must return fresh state (own topic prefix, schema or key prefix).

pub mod hot;
pub mod log;
pub mod store;

use crate::{Campaign, CampaignId, EmailAddress, TenantId, template::Template};

/// A campaign for contract tests.
pub fn sample_campaign(tenant: &str) -> Campaign {
    Campaign {
        id: CampaignId::new(),
        tenant: TenantId::parse(tenant).expect("valid tenant"),
        name: "Spring sale".into(),
        from: EmailAddress::parse("news@shop.example").expect("valid address"),
        from_name: Some("Shop".into()),
        template: Template {
            subject: "Hello {{ first_name }}".into(),
            text: Some("Hi {{ first_name }}".into()),
            html: None,
        },
    }
}

/// An address for contract tests.
pub fn addr(s: &str) -> EmailAddress {
    EmailAddress::parse(s).expect("valid test address")
}
