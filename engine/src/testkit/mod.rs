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

use crate::ports::{Store, StoreError, TenantDomain};
use crate::{Campaign, CampaignId, Domain, EmailAddress, TenantId, Timestamp, template::Template};

/// Registers `domain` as a verified sending domain of `tenant` (harmless when it
/// already is), so the tenant's campaigns may send From it.
pub async fn sending_domain<S: Store + ?Sized>(store: &S, tenant: &TenantId, domain: &str) {
    let record = TenantDomain {
        domain: Domain::parse(domain).expect("valid domain"),
        tenant: tenant.clone(),
        token: "test".into(),
        created_at: Timestamp::now(),
        verified_at: Some(Timestamp::now()),
        dkim: None,
        return_path: None,
        tracking_host: None,
    };
    match store.add_domain(&record).await {
        Ok(()) | Err(StoreError::Conflict(_)) => {}
        Err(e) => panic!("registering {domain} for {tenant}: {e}"),
    }
}

/// A campaign for contract tests.
pub fn sample_campaign(tenant: &str) -> Campaign {
    let template = Template {
        subject: "Hello {{ first_name }}".into(),
        text: Some("Hi {{ first_name }}".into()),
        html: None,
    };
    Campaign {
        from_name: Some("Shop".into()),
        ..Campaign::new(
            CampaignId::new(),
            TenantId::parse(tenant).expect("valid tenant"),
            "Spring sale",
            EmailAddress::parse("news@shop.example").expect("valid address"),
            template,
        )
    }
}

/// An address for contract tests.
pub fn addr(s: &str) -> EmailAddress {
    EmailAddress::parse(s).expect("valid test address")
}
