//! What the sender adds to a rendered message before it goes on the wire: the VERP
//! return path, tracked links and the open pixel, `List-Unsubscribe`, and a DKIM
//! signature.

use maily_engine::message::{Envelope, MessageLinks, build_with};
use maily_engine::ports::DomainKey;
use maily_engine::template::Rendered;
use maily_engine::tracking::Tracking;
use maily_engine::verp::{VerpCodec, VerpTag};
use maily_engine::{Campaign, Domain, EmailAddress, MessageId, TenantId, Timestamp};
use std::fmt;
use std::sync::Arc;

/// Signs a built message, e.g. with DKIM; implemented by the SMTP crate's signer.
pub trait MessageSigner: Send + Sync + 'static {
    /// The message with its signature header prepended, or `None` when there is no key
    /// for `from_domain`.
    fn sign(&self, from_domain: &str, message: &[u8]) -> anyhow::Result<Option<Vec<u8>>>;
}

/// Makes signers of tenants' own domain keys (see [`maily_engine::ports::DomainKey`]);
/// implemented with the SMTP crate's DKIM.
pub trait DomainSigners: Send + Sync + 'static {
    /// A signer that signs every message with `key`, as `d=<domain>`.
    fn signer(&self, domain: &Domain, key: &DomainKey) -> anyhow::Result<Arc<dyn MessageSigner>>;
}

/// The sender's composition settings; everything is optional.
#[derive(Clone, Default)]
pub struct Composer {
    /// Return paths that encode tenant, campaign, message and recipient; without it
    /// the campaign's From address is the return path.
    pub verp: Option<Arc<VerpCodec>>,
    /// Tracked links, open pixel and the https unsubscribe URL.
    pub tracking: Option<Arc<Tracking>>,
    /// An address that unsubscribes whoever writes to it (`List-Unsubscribe` mailto).
    pub unsubscribe_mailto: Option<EmailAddress>,
    /// The operator's keys (`[dkim]`): they sign mail whose tenant has no key of its
    /// own for the From domain.
    pub signer: Option<Arc<dyn MessageSigner>>,
    /// Signers of the tenants' own keys of their sending domains.
    pub domain_signers: Option<Arc<dyn DomainSigners>>,
}

impl fmt::Debug for Composer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Composer")
            .field("verp", &self.verp.as_ref().map(|v| v.domain().to_string()))
            .field("tracking", &self.tracking.as_ref().map(|t| t.base_url()))
            .field("unsubscribe_mailto", &self.unsubscribe_mailto)
            .field("signer", &self.signer.is_some())
            .field("domain_signers", &self.domain_signers.is_some())
            .finish()
    }
}

/// What a tenant has of its own for a campaign's From domain (a verified sending
/// domain of its): the key that signs, the return-path domain bounces go to, the
/// tracking host its links use.
#[derive(Clone, Default)]
pub struct Own {
    pub signer: Option<Arc<dyn MessageSigner>>,
    pub return_path: Option<Domain>,
    pub tracking: Option<Arc<Tracking>>,
}

/// A message ready for the transport.
pub struct Composed {
    pub mail_from: EmailAddress,
    pub data: Vec<u8>,
}

impl Composer {
    /// Builds, links and signs one message with the operator's keys.
    pub fn compose(
        &self,
        tenant: &TenantId,
        campaign: &Campaign,
        message_id: MessageId,
        to: &EmailAddress,
        rendered: &Rendered,
    ) -> anyhow::Result<Composed> {
        self.compose_as(tenant, campaign, message_id, to, rendered, &Own::default())
    }

    /// Builds, links and signs one message with what the tenant has of its own for the
    /// From domain, the operator's keys and bounce domain otherwise.
    pub fn compose_as(
        &self,
        tenant: &TenantId,
        campaign: &Campaign,
        message_id: MessageId,
        to: &EmailAddress,
        rendered: &Rendered,
        own: &Own,
    ) -> anyhow::Result<Composed> {
        let envelope = Envelope {
            message_id,
            campaign: campaign.id,
            from: &campaign.from,
            from_name: campaign.from_name.as_deref(),
            to,
            date: Timestamp::now(),
        };
        let tracking = own.tracking.as_deref().or(self.tracking.as_deref());
        let links = MessageLinks {
            tenant,
            tracking,
            unsubscribe_mailto: self.unsubscribe_mailto.as_ref(),
        };
        let linked = tracking.is_some() || self.unsubscribe_mailto.is_some();
        let mut data = build_with(&envelope, rendered, linked.then_some(&links));
        let signer = own.signer.as_deref().or(self.signer.as_deref());
        if let Some(signer) = signer
            && let Some(signed) = signer.sign(campaign.from.domain(), &data)?
        {
            data = signed;
        }
        let mail_from = match &self.verp {
            Some(verp) => {
                let tag = VerpTag {
                    tenant: tenant.clone(),
                    campaign: campaign.id,
                    message_id,
                    recipient: to.clone(),
                };
                match &own.return_path {
                    Some(domain) => verp.encode_on(&tag, domain)?,
                    None => verp.encode(&tag)?,
                }
                .to_email_address()?
            }
            None => campaign.from.clone(),
        };
        Ok(Composed { mail_from, data })
    }
}
