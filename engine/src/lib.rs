//! The Maily core: domain types, ports and pure logic.
//!
//! Nothing in this crate performs I/O. Adapters (Kafka, SQLite, SMTP, chains)
//! implement the traits in [`ports`] in their own crates; the root binary wires them.

pub mod bounce;
pub mod domain;
pub mod drafts;
pub mod merkle;
pub mod message;
pub mod partition;
pub mod ports;
pub mod rate;
pub mod records;
pub mod report;
pub mod reward;
pub mod segment;
pub mod template;
pub mod time;
pub mod tracking;
pub mod verp;

#[cfg(feature = "testkit")]
pub mod testkit;

pub use domain::{
    address::{AddressError, Domain, EmailAddress},
    campaign::{
        Campaign, CampaignState, CampaignStatus, Contact, ContactList, Recipient, Segment,
        StagedRecipient,
    },
    event::{BounceClass, EventKind},
    ids::{CampaignId, IdError, ListId, MessageId, SegmentId, TenantId},
    stats::{CampaignStats, ReasonCount, by_frequency},
};
pub use time::{TimeError, Timestamp};
