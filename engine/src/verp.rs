//! Signed VERP return paths: who a bounce is about, read back from the address it came to.
//!
//! Every message is sent with its own envelope sender (MAIL FROM) on the bounce domain,
//! so an asynchronous bounce, which goes to that address, names the tenant, campaign,
//! message and recipient it is about even when the report itself is mangled:
//!
//! ```text
//! b+k5qvd3nhf4.<campaign:26>.<message:26>.acme.jane.doe=example.com@bounce.maily.example
//! ^ ^          ^             ^            ^    ^                    ^
//! | |          |             |            |    recipient, '@' -> '=' (classic VERP)
//! | |          |             |            tenant slug
//! | |          |             message id, 16 bytes in base32
//! | |          campaign id, 16 bytes in base32
//! | tag: 10 base32 characters (50 bits) of HMAC-SHA256 over all the fields
//! prefix, then '+' so a `recipient_delimiter = +` MTA delivers them all to one mailbox
//! ```
//!
//! Ids and the tag are lowercase base32 (RFC 4648 alphabet, no padding) because MTAs
//! are free to change the case of a local part; decoding ignores case in the prefix,
//! ids, tag and tenant. The tag is computed over the lower-cased recipient for the same
//! reason, so a relay that folds case does not turn a real bounce into a forgery. The
//! tag exists so that nobody can send us a bounce to a made-up return path and get an
//! arbitrary address suppressed: without the key, a valid tag for a new recipient has
//! to be guessed (one chance in 2^50 per try). The only thing a valid tag does not
//! pin down is the case of the recipient's local part.
//!
//! # Length
//!
//! The local part is about 70 octets plus the tenant and the recipient, so it is
//! usually longer than the 64 octets of RFC 5321 section 4.5.3.1.1. That is accepted on
//! purpose: it is what bulk senders have done for decades (mailing-list managers and the
//! large ESPs put the whole recipient into the return path, e.g.
//! `bounces+1234-jane=example.com@...`), and receiving MTAs accept long local parts in
//! MAIL FROM because they never deliver to it; the address only has to come back to
//! our own bounce MX, which we control. What is enforced is the whole path limit
//! (256 octets with the angle brackets, so 254 for the address): [`VerpCodec::encode`]
//! refuses longer addresses with [`VerpError::TooLong`] and the caller falls back to a
//! plain return path. [`EmailAddress::parse`] keeps RFC 5321's 64-octet local-part
//! limit for recipients; [`VerpAddress::to_email_address`] goes through
//! [`EmailAddress::parse_return_path`], which allows the long local part, so an encoded
//! return path can be used as an envelope sender.

use crate::domain::{
    address::{AddressError, Domain, EmailAddress},
    ids::{CampaignId, MessageId, TenantId},
};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::fmt;

/// Number of base32 characters of the HMAC kept in the address (50 bits).
pub const TAG_LEN: usize = 10;
/// Base32 characters of a 16-byte id.
const ID_LEN: usize = 26;
/// The longest address RFC 5321 allows in a path (256 octets less the angle brackets).
pub const MAX_ADDRESS_LEN: usize = 254;
/// Separates the prefix from the fields, as a sub-address.
const PREFIX_SEP: char = '+';
/// Shortest accepted HMAC key.
pub const MIN_KEY_LEN: usize = 16;
/// Domain separation for the MAC input.
const MAC_CONTEXT: &[u8] = b"maily.verp.v1\0";

/// What a return path tells us about a bounce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerpTag {
    pub tenant: TenantId,
    pub campaign: CampaignId,
    pub message_id: MessageId,
    pub recipient: EmailAddress,
}

/// Why an address is not a return path of ours, or a codec cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerpError {
    #[error("prefix {0:?} must be 1-32 characters of a-z, 0-9, '-' and '_'")]
    InvalidPrefix(String),
    #[error("return-path label {0:?} must be one DNS label: 1-63 characters of a-z, 0-9 and '-'")]
    InvalidLabel(String),
    #[error("HMAC key has {0} bytes; at least {MIN_KEY_LEN} are required")]
    KeyTooShort(usize),
    #[error("return path would be {len} characters, more than the {MAX_ADDRESS_LEN} allowed")]
    TooLong { len: usize },
    #[error("address has no '@'")]
    MissingAt,
    #[error("domain {found:?} is not the bounce domain {expected:?}")]
    NotOurDomain { found: String, expected: String },
    #[error("local part does not start with the prefix {expected:?} and '+'")]
    BadPrefix { expected: String },
    #[error("malformed return path: {0}")]
    Malformed(&'static str),
    #[error("return path names an invalid {field}: {value:?}")]
    BadField { field: &'static str, value: String },
    #[error("signature does not match the fields (forged or altered return path)")]
    BadSignature,
}

/// An encoded return path, `local@domain`. The local part may exceed 64 octets (see the
/// module documentation), which is why this is not an [`EmailAddress`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VerpAddress {
    full: String,
    at: usize,
}

impl VerpAddress {
    /// The whole address, for MAIL FROM.
    pub fn as_str(&self) -> &str {
        &self.full
    }

    /// The part before the '@'.
    pub fn local_part(&self) -> &str {
        &self.full[..self.at]
    }

    /// The bounce domain.
    pub fn domain(&self) -> &str {
        &self.full[self.at + 1..]
    }

    /// The address as an [`EmailAddress`] (through
    /// [`EmailAddress::parse_return_path`], which accepts the long local part), for
    /// use as MAIL FROM.
    pub fn to_email_address(&self) -> Result<EmailAddress, AddressError> {
        EmailAddress::parse_return_path(&self.full)
    }

    /// The address as an owned string.
    pub fn into_string(self) -> String {
        self.full
    }
}

impl fmt::Display for VerpAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

/// Encodes and verifies signed return paths for one bounce domain and key.
#[derive(Clone)]
pub struct VerpCodec {
    prefix: String,
    domain: Domain,
    key: Vec<u8>,
    /// The label of tenants' return-path domains (`<label>.<sending domain>`).
    tenant_label: Option<String>,
}

impl fmt::Debug for VerpCodec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerpCodec")
            .field("prefix", &self.prefix)
            .field("domain", &self.domain)
            .field("tenant_label", &self.tenant_label)
            .field("key", &"<redacted>")
            .finish()
    }
}

impl VerpCodec {
    /// A codec for `prefix+...@domain`, signing with `key` (at least 16 bytes). The
    /// prefix is lower-cased.
    pub fn new(prefix: &str, domain: Domain, key: impl Into<Vec<u8>>) -> Result<Self, VerpError> {
        let prefix = prefix.to_ascii_lowercase();
        let prefix_ok = (1..=32).contains(&prefix.len())
            && prefix
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !prefix_ok {
            return Err(VerpError::InvalidPrefix(prefix));
        }
        let key = key.into();
        if key.len() < MIN_KEY_LEN {
            return Err(VerpError::KeyTooShort(key.len()));
        }
        Ok(VerpCodec {
            prefix,
            domain,
            key,
            tenant_label: None,
        })
    }

    /// The bounce domain return paths are on.
    pub fn domain(&self) -> &Domain {
        &self.domain
    }

    /// The return path for one message, on the bounce domain.
    pub fn encode(&self, tag: &VerpTag) -> Result<VerpAddress, VerpError> {
        self.encode_on(tag, &self.domain)
    }

    /// The return path for one message on `domain` instead: a tenant's own return-path
    /// domain (see [`VerpCodec::tenant_domain`]), whose MX is the engine's too.
    pub fn encode_on(&self, tag: &VerpTag, domain: &Domain) -> Result<VerpAddress, VerpError> {
        let mac = self.mac(tag);
        let recipient = &tag.recipient;
        let local = format!(
            "{prefix}{PREFIX_SEP}{mac}.{campaign}.{message}.{tenant}.{user}={rdomain}",
            prefix = self.prefix,
            campaign = base32_encode(tag.campaign.as_bytes()),
            message = base32_encode(tag.message_id.as_bytes()),
            tenant = tag.tenant.as_str(),
            user = recipient.local_part(),
            rdomain = recipient.domain(),
        );
        let full = format!("{local}@{domain}");
        if full.len() > MAX_ADDRESS_LEN {
            return Err(VerpError::TooLong { len: full.len() });
        }
        Ok(VerpAddress {
            at: local.len(),
            full,
        })
    }

    /// A tenant's own return-path domain under its sending domain `parent`:
    /// `<label>.<parent>`, when tenant return paths are on ([`VerpCodec::with_tenant_label`]).
    pub fn tenant_domain(&self, parent: &Domain) -> Option<Domain> {
        let label = self.tenant_label.as_deref()?;
        Domain::parse(&format!("{label}.{parent}")).ok()
    }

    /// Also reads return paths on `<label>.<a tenant's sending domain>`, and makes
    /// [`VerpCodec::tenant_domain`] answer. The label is lower-cased.
    pub fn with_tenant_label(mut self, label: &str) -> Result<Self, VerpError> {
        let label = Domain::label(label)
            .ok_or_else(|| VerpError::InvalidLabel(label.to_ascii_lowercase()))?;
        self.tenant_label = Some(label);
        Ok(self)
    }

    /// Reads and verifies a return path on the bounce domain, or on a tenant's
    /// return-path domain when those are on. Accepts the address with or without angle
    /// brackets; ids, tag, prefix, tenant and domain are compared without regard to case.
    pub fn decode(&self, address: &str) -> Result<VerpTag, VerpError> {
        self.decode_on(address).map(|(tag, _)| tag)
    }

    /// Like [`VerpCodec::decode`], also telling the tenant sending domain whose
    /// return-path domain the address is on (`None`: the bounce domain). The caller
    /// checks that it is the tag's tenant's.
    pub fn decode_on(&self, address: &str) -> Result<(VerpTag, Option<Domain>), VerpError> {
        let address = address.trim();
        let address = address
            .strip_prefix('<')
            .and_then(|a| a.strip_suffix('>'))
            .unwrap_or(address);
        let (local, domain) = address.rsplit_once('@').ok_or(VerpError::MissingAt)?;
        let domain = domain.strip_suffix('.').unwrap_or(domain);
        let parent = if domain.eq_ignore_ascii_case(self.domain.as_str()) {
            None
        } else {
            let under_label = self.tenant_label.as_deref().and_then(|label| {
                let (first, parent) = domain.split_once('.')?;
                first.eq_ignore_ascii_case(label).then_some(parent)
            });
            match under_label.map(|p| Domain::parse(&p.to_ascii_lowercase())) {
                Some(Ok(parent)) => Some(parent),
                _ => {
                    return Err(VerpError::NotOurDomain {
                        found: domain.chars().take(255).collect(),
                        expected: self.domain.to_string(),
                    });
                }
            }
        };
        let rest = local
            .split_once(PREFIX_SEP)
            .filter(|(prefix, _)| prefix.eq_ignore_ascii_case(&self.prefix))
            .map(|(_, rest)| rest)
            .ok_or_else(|| VerpError::BadPrefix {
                expected: self.prefix.clone(),
            })?;
        let (fields, rdomain) = rest.rsplit_once('=').ok_or(VerpError::Malformed(
            "no '=' between the recipient's user and domain",
        ))?;
        let mut it = fields.splitn(5, '.');
        let mut next = |what: &'static str| {
            it.next()
                .filter(|s| !s.is_empty())
                .ok_or(VerpError::Malformed(what))
        };
        let mac = next("missing signature")?;
        let campaign = next("missing campaign id")?;
        let message = next("missing message id")?;
        let tenant = next("missing tenant")?;
        let user = next("missing recipient")?;

        let in_alphabet = |b: u8| matches!(b.to_ascii_lowercase(), b'a'..=b'z' | b'2'..=b'7');
        if mac.len() != TAG_LEN || !mac.bytes().all(in_alphabet) {
            return Err(VerpError::Malformed(
                "signature is not 10 base32 characters",
            ));
        }
        let campaign = CampaignId::from_bytes(decode_id(campaign, "campaign id")?);
        let message_id = MessageId::from_bytes(decode_id(message, "message id")?);
        let tenant =
            TenantId::parse(&tenant.to_ascii_lowercase()).map_err(|_| VerpError::BadField {
                field: "tenant",
                value: tenant.chars().take(64).collect(),
            })?;
        let recipient_text = format!("{user}@{rdomain}");
        let recipient = EmailAddress::parse(&recipient_text).map_err(|_| VerpError::BadField {
            field: "recipient",
            value: recipient_text.chars().take(255).collect(),
        })?;
        let tag = VerpTag {
            tenant,
            campaign,
            message_id,
            recipient,
        };
        let expected = self.mac(&tag);
        if !ct_eq(expected.as_bytes(), mac.to_ascii_lowercase().as_bytes()) {
            return Err(VerpError::BadSignature);
        }
        Ok((tag, parent))
    }

    /// The truncated, base32-encoded MAC over the tag's canonical form.
    fn mac(&self, tag: &VerpTag) -> String {
        // new_from_slice accepts keys of any length for HMAC.
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.key) else {
            unreachable!("HMAC accepts keys of every length")
        };
        mac.update(MAC_CONTEXT);
        mac.update(tag.tenant.as_str().as_bytes());
        mac.update(b"\0");
        mac.update(tag.campaign.as_bytes());
        mac.update(tag.message_id.as_bytes());
        mac.update(tag.recipient.as_str().to_ascii_lowercase().as_bytes());
        let digest = mac.finalize().into_bytes();
        let mut out = base32_encode(&digest[..7]);
        out.truncate(TAG_LEN);
        out
    }
}

fn decode_id(s: &str, field: &'static str) -> Result<[u8; 16], VerpError> {
    let bad = || VerpError::BadField {
        field,
        value: s.chars().take(64).collect(),
    };
    if s.len() != ID_LEN {
        return Err(bad());
    }
    let bytes = base32_decode(s).ok_or_else(bad)?;
    bytes.try_into().map_err(|_| bad())
}

/// Compares two byte strings in time independent of where they differ.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// RFC 4648 base32, lowercase, no padding.
fn base32_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &b in bytes {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(ALPHABET[((acc >> bits) & 31) as usize]));
        }
        acc &= (1 << bits) - 1;
    }
    if bits > 0 {
        out.push(char::from(ALPHABET[((acc << (5 - bits)) & 31) as usize]));
    }
    out
}

/// Decodes unpadded base32 in either case. Refuses non-canonical input (leftover bits
/// that are not zero, or a length no encoding produces), so each value has exactly one
/// spelling up to case.
fn base32_decode(s: &str) -> Option<Vec<u8>> {
    if matches!(s.len() % 8, 1 | 3 | 6) {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() * 5 / 8);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        let v = match c.to_ascii_lowercase() {
            c @ b'a'..=b'z' => c - b'a',
            c @ b'2'..=b'7' => c - b'2' + 26,
            _ => return None,
        };
        acc = (acc << 5) | u32::from(v);
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    (acc == 0).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn codec() -> VerpCodec {
        VerpCodec::new(
            "b",
            Domain::parse("bounce.maily.example").unwrap(),
            b"0123456789abcdef0123456789abcdef".to_vec(),
        )
        .unwrap()
    }

    fn tag(recipient: &str) -> VerpTag {
        VerpTag {
            tenant: TenantId::parse("acme-1").unwrap(),
            campaign: CampaignId::parse("6f1c7c1e-3b7a-4c55-9a55-0f3c1b2a9d10").unwrap(),
            message_id: MessageId::parse("0b4e2f9a-8d1c-4e7b-a3f0-5c6d7e8f9a0b").unwrap(),
            recipient: EmailAddress::parse(recipient).unwrap(),
        }
    }

    #[test]
    fn base32_matches_rfc4648_vectors() {
        for (raw, enc) in [
            ("", ""),
            ("f", "my"),
            ("fo", "mzxq"),
            ("foo", "mzxw6"),
            ("foob", "mzxw6yq"),
            ("fooba", "mzxw6ytb"),
            ("foobar", "mzxw6ytboi"),
        ] {
            assert_eq!(base32_encode(raw.as_bytes()), enc);
            assert_eq!(base32_decode(enc).unwrap(), raw.as_bytes());
            assert_eq!(base32_decode(&enc.to_uppercase()).unwrap(), raw.as_bytes());
        }
        assert_eq!(base32_decode("mz"), None, "non-zero leftover bits");
        assert_eq!(base32_decode("m"), None, "impossible length");
        assert_eq!(base32_decode("m1"), None, "outside the alphabet");
    }

    #[test]
    fn tenant_return_path_domains_decode_only_when_on() {
        let shop = Domain::parse("shop.example").unwrap();
        let t = tag("ann@example.com");
        let off = codec();
        assert_eq!(off.tenant_domain(&shop), None);
        let on = codec().with_tenant_label("Bounces").unwrap();
        let theirs = on.tenant_domain(&shop).unwrap();
        assert_eq!(theirs.as_str(), "bounces.shop.example");
        let a = on.encode_on(&t, &theirs).unwrap();
        assert_eq!(a.domain(), "bounces.shop.example");
        assert_eq!(on.decode_on(a.as_str()).unwrap(), (t.clone(), Some(shop)));
        let home = on.encode(&t).unwrap();
        assert_eq!(on.decode_on(home.as_str()).unwrap(), (t.clone(), None));
        assert!(
            matches!(off.decode(a.as_str()), Err(VerpError::NotOurDomain { .. })),
            "not read when tenant return paths are off"
        );
        let elsewhere = a.as_str().replace("@bounces.", "@mail.");
        assert!(matches!(
            on.decode(&elsewhere),
            Err(VerpError::NotOurDomain { .. })
        ));
        for bad in ["", "a.b", "-x", "x_y", &"x".repeat(64)] {
            assert!(
                matches!(
                    codec().with_tenant_label(bad),
                    Err(VerpError::InvalidLabel(_))
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn encodes_a_readable_signed_return_path() {
        let c = codec();
        let t = tag("Jane.Doe+news@Example.com");
        let a = c.encode(&t).unwrap();
        assert_eq!(a.domain(), "bounce.maily.example");
        let local = a.local_part();
        assert!(local.starts_with("b+"), "{local}");
        assert!(
            local.ends_with(".acme-1.Jane.Doe+news=example.com"),
            "{local}"
        );
        assert!(local.len() > 64, "documented: longer than RFC 5321's 64");
        assert!(
            EmailAddress::parse(a.as_str()).is_err(),
            "recipients keep the 64 limit"
        );
        assert_eq!(a.to_email_address().unwrap().as_str(), a.as_str());
        assert_eq!(c.decode(a.as_str()).unwrap(), t);
        assert_eq!(c.decode(&format!("<{a}>")).unwrap(), t);
    }

    #[test]
    fn decoding_ignores_case_of_ids_tag_prefix_and_domain() {
        let c = codec();
        let t = tag("jane@example.com");
        let a = c.encode(&t).unwrap();
        assert_eq!(
            c.decode(&a.as_str().to_uppercase()).unwrap().message_id,
            t.message_id
        );
        let upper = c.decode(&a.as_str().to_uppercase()).unwrap();
        assert_eq!(upper.tenant, t.tenant);
        assert_eq!(upper.recipient.as_str(), "JANE@example.com");
    }

    #[test]
    fn names_what_is_wrong() {
        let c = codec();
        let a = c.encode(&tag("jane@example.com")).unwrap();
        let s = a.as_str();
        assert_eq!(c.decode("jane"), Err(VerpError::MissingAt));
        assert!(matches!(
            c.decode(&s.replace("bounce.maily.example", "evil.example")),
            Err(VerpError::NotOurDomain { .. })
        ));
        assert!(matches!(
            c.decode(&s.replacen("b+", "x+", 1)),
            Err(VerpError::BadPrefix { .. })
        ));
        assert!(matches!(
            c.decode("b+abc@bounce.maily.example"),
            Err(VerpError::Malformed(_))
        ));
        let forged = s.replace("jane=example.com", "ceo=example.com");
        assert_eq!(c.decode(&forged), Err(VerpError::BadSignature));
        let other_key = VerpCodec::new(
            "b",
            Domain::parse("bounce.maily.example").unwrap(),
            b"another key, also 32 bytes long!".to_vec(),
        )
        .unwrap();
        assert_eq!(other_key.decode(s), Err(VerpError::BadSignature));
        assert!(matches!(
            VerpCodec::new("b+", c.domain().clone(), vec![0; 32]),
            Err(VerpError::InvalidPrefix(_))
        ));
        assert_eq!(
            VerpCodec::new("b", c.domain().clone(), vec![0; 8]).unwrap_err(),
            VerpError::KeyTooShort(8)
        );
        assert!(
            !format!("{c:?}").contains("0123456789abcdef"),
            "key is redacted"
        );
    }

    #[test]
    fn refuses_to_encode_past_the_path_limit() {
        let long = format!(
            "{}@{}.{}.example",
            "a".repeat(64),
            "d".repeat(63),
            "e".repeat(63)
        );
        let err = codec().encode(&tag(&long)).unwrap_err();
        assert!(matches!(err, VerpError::TooLong { len } if len > MAX_ADDRESS_LEN));
    }

    fn arb_tag() -> impl Strategy<Value = VerpTag> {
        (
            "[a-z0-9][a-z0-9-]{0,20}",
            any::<[u8; 16]>(),
            any::<[u8; 16]>(),
            "[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]{1,20}(\\.[A-Za-z0-9_=+-]{1,8}){0,2}",
            "[a-z0-9]{1,12}(\\.[a-z0-9]{1,10}){1,2}",
        )
            .prop_map(|(tenant, c, m, user, domain)| VerpTag {
                tenant: TenantId::parse(&tenant).unwrap(),
                campaign: CampaignId::from_bytes(c),
                message_id: MessageId::from_bytes(m),
                recipient: EmailAddress::parse(&format!("{user}@{domain}")).unwrap(),
            })
    }

    proptest! {
        #[test]
        fn encode_then_decode_round_trips(t in arb_tag()) {
            let c = codec();
            let a = c.encode(&t).unwrap();
            let as_address = a.to_email_address().unwrap();
            prop_assert_eq!(as_address.as_str(), a.as_str());
            prop_assert_eq!(c.decode(a.as_str()).unwrap(), t);
        }

        #[test]
        fn any_single_character_change_of_the_local_part_fails(
            t in arb_tag(),
            pos in any::<proptest::sample::Index>(),
            replacement in proptest::char::range('!', '~'),
        ) {
            let c = codec();
            let a = c.encode(&t).unwrap();
            let local: Vec<char> = a.local_part().chars().collect();
            let i = pos.index(local.len());
            prop_assume!(!local[i].eq_ignore_ascii_case(&replacement));
            let mut changed = local.clone();
            changed[i] = replacement;
            let changed: String = changed.into_iter().collect();
            let result = c.decode(&format!("{changed}@{}", a.domain()));
            prop_assert!(result.is_err(), "{} decoded as {:?}", changed, result);
        }

        #[test]
        fn decoding_arbitrary_text_never_panics(s in "\\PC{0,200}") {
            let _ = codec().decode(&s);
        }
    }
}
