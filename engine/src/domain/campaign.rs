//! Campaigns and their recipients.

use super::address::EmailAddress;
use super::ids::{CampaignId, TenantId};
use crate::template::Template;
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

/// A recipient with the variables its message is personalised with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipient {
    pub email: EmailAddress,
    #[serde(default)]
    pub vars: BTreeMap<String, String>,
}
