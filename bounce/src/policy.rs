//! Which bounces suppress an address for good: a list of reasons per tenant, with a
//! default for tenants without a list of their own.
//!
//! A list holds reasons as Sisimai spells them (`mailboxfull`, `blocked`...) and the
//! word `hard`, which stands for every hard bounce (an address or domain that does not
//! exist or moved). The default list is `["hard"]`. Complaints always suppress: they are
//! the recipient's own wish, not a delivery condition.

use maily_engine::BounceClass;
use maily_engine::TenantId;
use maily_engine::reply::{Reason, UnknownReason};
use std::collections::{HashMap, HashSet};

/// The word standing for every hard bounce in a list.
pub const HARD: &str = "hard";

/// One list: every hard bounce (when `hard`) and these reasons whatever their class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    pub hard: bool,
    pub reasons: HashSet<Reason>,
}

impl Selection {
    /// Hard bounces only.
    pub fn hard_only() -> Self {
        Selection {
            hard: true,
            reasons: HashSet::new(),
        }
    }

    /// Reads a list of reasons and `hard`; an unknown entry is an error naming it.
    pub fn parse<S: AsRef<str>>(items: &[S]) -> Result<Self, UnknownReason> {
        let mut out = Selection {
            hard: false,
            reasons: HashSet::new(),
        };
        for item in items {
            let item = item.as_ref().trim();
            if item.eq_ignore_ascii_case(HARD) {
                out.hard = true;
            } else {
                out.reasons.insert(item.parse()?);
            }
        }
        Ok(out)
    }

    /// Whether a bounce of `reason` and `class` suppresses under this list.
    pub fn suppresses(&self, reason: Reason, class: BounceClass) -> bool {
        (self.hard && class == BounceClass::Hard) || self.reasons.contains(&reason)
    }
}

/// The lists in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SuppressionPolicy {
    default: Selection,
    tenants: HashMap<TenantId, Selection>,
}

impl Default for SuppressionPolicy {
    fn default() -> Self {
        SuppressionPolicy::new(Selection::hard_only(), HashMap::new())
    }
}

impl SuppressionPolicy {
    pub fn new(default: Selection, tenants: HashMap<TenantId, Selection>) -> Self {
        SuppressionPolicy { default, tenants }
    }

    /// Whether a bounce of `reason` and `class` suppresses `tenant`'s address.
    pub fn suppresses(&self, tenant: &TenantId, reason: Reason, class: BounceClass) -> bool {
        self.tenants
            .get(tenant)
            .unwrap_or(&self.default)
            .suppresses(reason, class)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(s: &str) -> TenantId {
        TenantId::parse(s).unwrap()
    }

    #[test]
    fn the_default_suppresses_hard_bounces_only() {
        let p = SuppressionPolicy::default();
        let t = tenant("acme");
        assert!(p.suppresses(&t, Reason::UserUnknown, BounceClass::Hard));
        assert!(!p.suppresses(&t, Reason::MailboxFull, BounceClass::Soft));
        assert!(!p.suppresses(&t, Reason::Blocked, BounceClass::Soft));
    }

    #[test]
    fn a_tenant_list_replaces_the_default() {
        let strict = Selection::parse(&["hard", "MailboxFull", " suspend "]).unwrap();
        let lenient = Selection::parse(&["userunknown"]).unwrap();
        let p = SuppressionPolicy::new(
            Selection::hard_only(),
            HashMap::from([(tenant("strict"), strict), (tenant("lenient"), lenient)]),
        );
        assert!(p.suppresses(&tenant("strict"), Reason::MailboxFull, BounceClass::Soft));
        assert!(p.suppresses(&tenant("strict"), Reason::Suspend, BounceClass::Soft));
        assert!(p.suppresses(&tenant("lenient"), Reason::UserUnknown, BounceClass::Hard));
        // Without `hard`, only the listed reasons suppress.
        assert!(!p.suppresses(&tenant("lenient"), Reason::HostUnknown, BounceClass::Hard));
        assert!(!p.suppresses(&tenant("other"), Reason::MailboxFull, BounceClass::Soft));
    }

    #[test]
    fn unknown_entries_are_named() {
        let err = Selection::parse(&["hard", "mailbox-full"]).unwrap_err();
        assert!(err.to_string().contains("\"mailbox-full\""), "{err}");
    }
}
