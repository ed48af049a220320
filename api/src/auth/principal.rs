//! Who is calling: the result of authentication, and the checks calls make on it.

use super::error::Denied;
use super::keys::Scope;
use maily_engine::TenantId;
use std::collections::BTreeSet;
use std::fmt;

/// The credential a principal authenticated with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// An API key, by its public id.
    ApiKey { id: String },
    /// A person or client of the identity provider, by the token's `sub`.
    User { sub: String },
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subject::ApiKey { id } => write!(f, "api key {id}"),
            Subject::User { sub } => write!(f, "user {sub}"),
        }
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The tenant it acts for; `None` is an operator, who may act for every tenant.
    pub tenant: Option<TenantId>,
    /// What it may do. Scopes do not imply each other: `admin` does not grant `send`.
    pub scopes: BTreeSet<Scope>,
    pub subject: Subject,
}

impl Principal {
    /// Whether this is an operator (no tenant of its own).
    pub fn is_operator(&self) -> bool {
        self.tenant.is_none()
    }

    /// Whether the principal holds `scope`.
    pub fn has(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }

    /// Refuses unless the principal holds `scope`.
    pub fn require(&self, scope: Scope) -> Result<(), Denied> {
        if self.has(scope) {
            Ok(())
        } else {
            Err(Denied::MissingScope {
                subject: self.subject.to_string(),
                scope,
            })
        }
    }

    /// Refuses unless the principal may act for `tenant`: its own, or any for an
    /// operator.
    pub fn require_tenant(&self, tenant: &TenantId) -> Result<(), Denied> {
        match &self.tenant {
            Some(own) if own != tenant => Err(Denied::OtherTenant {
                subject: self.subject.to_string(),
                own: own.clone(),
                requested: tenant.clone(),
            }),
            _ => Ok(()),
        }
    }

    /// Both checks a tenant-scoped call makes: [`Principal::require`] `scope`, then
    /// [`Principal::require_tenant`] `tenant`.
    pub fn authorize(&self, scope: Scope, tenant: &TenantId) -> Result<(), Denied> {
        self.require(scope)?;
        self.require_tenant(tenant)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(tenant: Option<&str>, scopes: &[Scope]) -> Principal {
        Principal {
            tenant: tenant.map(|t| TenantId::parse(t).unwrap()),
            scopes: scopes.iter().copied().collect(),
            subject: Subject::ApiKey { id: "k1".into() },
        }
    }

    #[test]
    fn tenants_act_for_themselves_and_operators_for_all() {
        let acme = TenantId::parse("acme").unwrap();
        let beta = TenantId::parse("beta").unwrap();
        let sender = principal(Some("acme"), &[Scope::Send]);
        assert_eq!(sender.authorize(Scope::Send, &acme), Ok(()));
        assert_eq!(
            sender.authorize(Scope::Read, &acme),
            Err(Denied::MissingScope {
                subject: "api key k1".into(),
                scope: Scope::Read
            })
        );
        let denied = sender.authorize(Scope::Send, &beta).unwrap_err();
        assert_eq!(denied.public_message(), "not allowed for this tenant");
        assert!(
            denied
                .to_string()
                .contains("acts for tenant acme, not for tenant beta")
        );

        let operator = principal(None, &[Scope::Admin]);
        assert!(operator.is_operator());
        assert_eq!(operator.authorize(Scope::Admin, &beta), Ok(()));
        assert!(
            operator.require(Scope::Send).is_err(),
            "admin does not imply send"
        );
    }
}
