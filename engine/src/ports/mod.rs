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
    AggregateBatch, ApiKeyRecord, ChainSubmission, DomainKey, Fence, IdempotentSend, Lease,
    LedgerEntry, MessageState, NewApiKey, SenderDomain, Settlement, SettlementEntry, Store,
    StoreError, StoredOffset, StoredProof, TenantDomain, TenantRecord, Transition,
};
pub use transport::{DeliveryOutcome, OutboundMessage, SendGuard, Transport};
