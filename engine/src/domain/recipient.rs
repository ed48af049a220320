//! A recipient: an address and the variables its message is personalised with.
//!
//! Its own module because both campaigns (which hold a template) and templates (which
//! render for a recipient) need it.

use super::address::EmailAddress;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A recipient with the variables its message is personalised with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipient {
    pub email: EmailAddress,
    #[serde(default)]
    pub vars: BTreeMap<String, String>,
}
