//! The Maily core: the engine's vocabulary and rules, with no I/O. Domain types,
//! campaign states, templates, message building, tracking and VERP tokens, topic
//! records, the ports the engine runs on, rewards and Merkle trees.
//!
//! Nothing in this crate performs I/O or reads the clock in its logic. Adapters
//! (event logs, stores, SMTP, chains) implement the traits in [`ports`] in their own
//! crates, bounce handling is `maily-bounce`, the workers are `maily-actors`, and the
//! root binary wires them.

pub mod domain;
pub mod drafts;
pub mod merkle;
pub mod message;
pub mod partition;
pub mod ports;
pub mod rate;
pub mod records;
pub mod reply;
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
        Campaign, CampaignState, CampaignStatus, Contact, ContactList, Segment, StagedRecipient,
    },
    event::{BounceClass, EventKind},
    ids::{CampaignId, IdError, ListId, MessageId, SegmentId, TenantId},
    recipient::Recipient,
    stats::{CampaignStats, ReasonCount, by_frequency},
};
pub use time::{TimeError, Timestamp};
