//! Campaigns and their recipients.

use super::address::EmailAddress;
use super::ids::{CampaignId, ListId, MessageId, SegmentId, TenantId};
use crate::template::Template;
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One template sent by a tenant to many recipients.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Campaign {
    pub id: CampaignId,
    pub tenant: TenantId,
    pub name: String,
    /// Envelope and header sender.
    pub from: EmailAddress,
    /// Optional display name for the From header.
    pub from_name: Option<String>,
    pub template: Template,
}

impl Campaign {
    /// A campaign with what every campaign has; the optional fields start empty. Set
    /// them with struct update syntax (`Campaign { from_name, ..Campaign::new(..) }`),
    /// so that a field added later needs no change where campaigns are made.
    pub fn new(
        id: CampaignId,
        tenant: TenantId,
        name: impl Into<String>,
        from: EmailAddress,
        template: Template,
    ) -> Self {
        Campaign {
            id,
            tenant,
            name: name.into(),
            from,
            from_name: None,
            template,
        }
    }
}

/// Where a campaign is in its life.
///
/// Uploaded recipients wait in the store (staged) until the campaign runs; a paused
/// campaign's messages go back there; a cancelled campaign sends nothing more.
/// Messages sent one by one (transactional sends) go out in every status but
/// `Paused` (held) and `Cancelled` (refused).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CampaignStatus {
    /// Created; recipients are staged, nothing is launched.
    Draft,
    /// Starts by itself at its `scheduled_at`.
    Scheduled,
    /// Staged recipients are launched into the send topic.
    Running,
    /// Nothing is sent; messages reaching the sender are staged again.
    Paused,
    /// Final: nothing is sent, staged recipients are dropped.
    Cancelled,
}

impl CampaignStatus {
    /// Every status.
    pub const ALL: [CampaignStatus; 5] = [
        CampaignStatus::Draft,
        CampaignStatus::Scheduled,
        CampaignStatus::Running,
        CampaignStatus::Paused,
        CampaignStatus::Cancelled,
    ];

    /// The status's name, as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            CampaignStatus::Draft => "draft",
            CampaignStatus::Scheduled => "scheduled",
            CampaignStatus::Running => "running",
            CampaignStatus::Paused => "paused",
            CampaignStatus::Cancelled => "cancelled",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<CampaignStatus> {
        CampaignStatus::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

impl std::fmt::Display for CampaignStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A campaign's status with its schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CampaignState {
    pub status: CampaignStatus,
    /// When a scheduled campaign starts (kept after it started, for the record).
    pub scheduled_at: Option<Timestamp>,
    /// When the status last changed.
    pub updated_at: Timestamp,
}

/// A recipient waiting in the store for its campaign to run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StagedRecipient {
    /// Fixed at upload, so launching twice sends once.
    pub message_id: MessageId,
    pub email: EmailAddress,
    #[serde(default)]
    pub vars: BTreeMap<String, String>,
}

/// A tenant's contact: an address with attributes that segments filter on and
/// templates can use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contact {
    pub tenant: TenantId,
    pub email: EmailAddress,
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// A tenant's named list of contacts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactList {
    pub id: ListId,
    pub tenant: TenantId,
    pub name: String,
    pub created_at: Timestamp,
}

/// A saved filter over a tenant's contacts (all of them, or one list's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    pub id: SegmentId,
    pub tenant: TenantId,
    pub name: String,
    /// Only members of this list, when set.
    pub list: Option<ListId>,
    /// The filter expression (`crate::segment`), stored as written.
    pub filter: String,
    pub created_at: Timestamp,
}
