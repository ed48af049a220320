//! What the sender adds to a rendered message before it goes on the wire: the VERP
//! return path, tracked links and the open pixel, `List-Unsubscribe`, and a DKIM
//! signature.

use maily_engine::message::{Envelope, MessageLinks, build_with};
use maily_engine::template::Rendered;
use maily_engine::tracking::Tracking;
use maily_engine::verp::{VerpCodec, VerpTag};
use maily_engine::{Campaign, EmailAddress, MessageId, TenantId, Timestamp};
use std::fmt;
use std::sync::Arc;

/// Signs a built message, e.g. with DKIM; implemented by the SMTP crate's signer.
pub trait MessageSigner: Send + Sync + 'static {
    /// The message with its signature header prepended, or `None` when there is no key
    /// for `from_domain`.
    fn sign(&self, from_domain: &str, message: &[u8]) -> anyhow::Result<Option<Vec<u8>>>;
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
    pub signer: Option<Arc<dyn MessageSigner>>,
}

impl fmt::Debug for Composer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Composer")
            .field("verp", &self.verp.as_ref().map(|v| v.domain().to_string()))
            .field("tracking", &self.tracking.as_ref().map(|t| t.base_url()))
            .field("unsubscribe_mailto", &self.unsubscribe_mailto)
            .field("signer", &self.signer.is_some())
            .finish()
    }
}

/// A message ready for the transport.
pub struct Composed {
    pub mail_from: EmailAddress,
    pub data: Vec<u8>,
}

impl Composer {
    /// Builds, links and signs one message.
    pub fn compose(
        &self,
        tenant: &TenantId,
        campaign: &Campaign,
        message_id: MessageId,
        to: &EmailAddress,
        rendered: &Rendered,
    ) -> anyhow::Result<Composed> {
        let envelope = Envelope {
            message_id,
            campaign: campaign.id,
            from: &campaign.from,
            from_name: campaign.from_name.as_deref(),
            to,
            date: Timestamp::now(),
        };
        let links = MessageLinks {
            tenant,
            tracking: self.tracking.as_deref(),
            unsubscribe_mailto: self.unsubscribe_mailto.as_ref(),
        };
        let linked = self.tracking.is_some() || self.unsubscribe_mailto.is_some();
        let mut data = build_with(&envelope, rendered, linked.then_some(&links));
        if let Some(signer) = &self.signer
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
                verp.encode(&tag)?.to_email_address()?
            }
            None => campaign.from.clone(),
        };
        Ok(Composed { mail_from, data })
    }
}
