//! The ports: one trait per technology boundary. Adapters live in other crates
//! (see ARCHITECTURE.md); each port has an embedded adapter and a contract suite in
//! [`crate::testkit`].

pub mod chain;
pub mod content;
pub mod hot;
pub mod log;
pub mod resolver;
pub mod store;
pub mod transport;

pub use chain::{AnchorReceipt, Chain, ChainError};
pub use content::{ContentError, ContentModel, DraftBrief, Tone};
pub use hot::{Claim, HotError, HotState};
pub use log::{EventLog, KeyedPayload, LogError, Record};
pub use resolver::{ResolveError, Resolver, Route};
pub use store::{
    AggregateBatch, ApiKeyRecord, AudienceStore, CampaignStore, ChainSubmission, Cutoffs,
    DeferredSend, DeferredStore, DispatchStore, DomainKey, Fence, IdempotentSend, Lease,
    LeaseStore, LedgerEntry, LedgerStore, MessageState, NewApiKey, OutcomeStore, Pruned,
    RetentionStore, SenderDomain, Settlement, SettlementEntry, Store, StoreError, StoredOffset,
    StoredProof, SuppressionStore, TenantAccess, TenantDomain, TenantRecord, Transition,
};
pub use transport::{DeliveryOutcome, OutboundMessage, Pace, SendGuard, Transport};

/// The store's role traits, unnamed: `use maily_engine::ports::prelude::*;` makes
/// their methods callable on an `Arc<dyn Store>`.
pub mod prelude {
    pub use super::store::{
        AudienceStore as _, CampaignStore as _, DeferredStore as _, DispatchStore as _,
        LeaseStore as _, LedgerStore as _, OutcomeStore as _, RetentionStore as _,
        SuppressionStore as _, TenantAccess as _,
    };
}
