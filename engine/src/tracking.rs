//! Open, click and unsubscribe tracking: signed tokens and HTML link rewriting.
//!
//! # Tokens
//!
//! A token is the base64url (no padding) encoding of
//!
//! ```text
//! version (1) | purpose (1) | key id (1) | issued (4) | payload | tag (16)
//! ```
//!
//! `issued` is when the token was made, in seconds since the UNIX epoch (big-endian),
//! so the tracking listener can stop recording events of old mail
//! ([`TokenKeys::issued_at`]). Version 1 tokens, made before it existed, have no
//! `issued` bytes; they still verify, so links in mail already sent keep working.
//!
//! where `tag` is HMAC-SHA256, truncated to [`TAG_LEN`] bytes, over a fixed context
//! string followed by everything before the tag. The version and purpose bytes are
//! signed, so a click token can never pass as an unsubscribe token; the key id names
//! the key that signed it, so keys can rotate ([`TokenKeys`] verifies with the current
//! key and any previous one). Tags are compared in constant time (`hmac`'s `verify`).
//!
//! Payloads (integers big-endian, ids as their 16 raw bytes):
//!
//! - open: message id, campaign id, tenant (u8 length + bytes), recipient (u8 length
//!   + bytes)
//! - click: the open payload, link index (u16), URL (u16 length + bytes)
//!
//! Open and click tokens carry the recipient because every event record names it
//! (the tracking listener has no other way to learn it), at the cost of the address
//! being readable (base64url, signed, not encrypted) in tracked links, as it already
//! is in the unsubscribe link.
//! - unsubscribe: tenant (u8 length + bytes), campaign id, recipient (u8 length +
//!   bytes), message id
//!
//! A click token carries the exact URL the recipient is sent to. The redirect endpoint
//! must redirect only to the URL inside a token that verified, never to anything taken
//! from the request, so the tracking host cannot be used as an open redirect.
//!
//! # Rewriting
//!
//! [`rewrite_html`] is a small scanner, not an HTML parser: it finds `<a>` start tags
//! outside comments and raw-text elements (`script`, `style`, `title`, `textarea`),
//! reads their attributes (any order, single, double or no quotes, any case), decodes
//! HTML character references in `href`, and swaps http(s) links for tracking links.
//! `mailto:`, `tel:`, fragment-only and other non-http links, and links carrying a
//! `data-maily-notrack` attribute, are left as they are. Outlook conditional comments
//! (`<!--[if mso]>`) are scanned like markup, since Outlook renders their content.
//! The open pixel goes just before the first `</body>`, or at the end.
//!
//! Text parts are not rewritten: finding where a bare URL ends in free text (trailing
//! punctuation, brackets, wrapped lines) is guesswork, and a wrong guess breaks the
//! link the recipient sees.

use crate::domain::{
    address::EmailAddress,
    ids::{CampaignId, MessageId, TenantId},
};
use crate::time::Timestamp;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::fmt;

type HmacSha256 = Hmac<Sha256>;

/// The token format version this code writes; it also reads version 1.
pub const TOKEN_VERSION: u8 = 2;
/// Bytes of the truncated HMAC-SHA256 tag.
pub const TAG_LEN: usize = 16;
/// The shortest secret accepted for a token key.
pub const MIN_KEY_LEN: usize = 16;
/// The longest URL a click token carries.
pub const MAX_URL_LEN: usize = 2048;
/// The longest token string [`TokenKeys::verify`] looks at; longer ones are malformed.
pub const MAX_TOKEN_LEN: usize = 4096;

/// Signed before every token, so a key shared by mistake with another HMAC use can
/// never make a valid token out of someone else's MAC.
const MAC_CONTEXT: &[u8] = b"maily.tracking.token\0";
/// Version, purpose, key id and (from version 2) the issue time.
const HEADER_LEN: usize = 7;
const HEADER_LEN_V1: usize = 3;

/// What a token may be used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Purpose {
    Open,
    Click,
    Unsubscribe,
}

impl Purpose {
    fn byte(self) -> u8 {
        match self {
            Purpose::Open => 1,
            Purpose::Click => 2,
            Purpose::Unsubscribe => 3,
        }
    }

    fn from_byte(b: u8) -> Option<Self> {
        match b {
            1 => Some(Purpose::Open),
            2 => Some(Purpose::Click),
            3 => Some(Purpose::Unsubscribe),
            _ => None,
        }
    }

    /// The purpose's name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Purpose::Open => "open",
            Purpose::Click => "click",
            Purpose::Unsubscribe => "unsubscribe",
        }
    }
}

impl fmt::Display for Purpose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which message an open pixel was loaded for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenToken {
    pub message: MessageId,
    pub campaign: CampaignId,
    pub tenant: TenantId,
    pub recipient: EmailAddress,
}

/// Which link of which message was clicked, and where it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClickToken {
    pub message: MessageId,
    pub campaign: CampaignId,
    pub tenant: TenantId,
    pub recipient: EmailAddress,
    /// The link's position among the message's tracked links, from 0.
    pub link: u16,
    /// The http(s) URL to redirect to, exactly as it was signed.
    pub url: String,
}

/// Who asked to be unsubscribed from what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsubscribeToken {
    pub tenant: TenantId,
    pub campaign: CampaignId,
    pub recipient: EmailAddress,
    pub message: MessageId,
}

/// A verified token of any purpose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token {
    Open(OpenToken),
    Click(ClickToken),
    Unsubscribe(UnsubscribeToken),
}

impl Token {
    /// What the token is for.
    pub fn purpose(&self) -> Purpose {
        match self {
            Token::Open(_) => Purpose::Open,
            Token::Click(_) => Purpose::Click,
            Token::Unsubscribe(_) => Purpose::Unsubscribe,
        }
    }
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token is malformed: {0}")]
    Malformed(&'static str),
    #[error("token has version {0}, but only versions 1 to {TOKEN_VERSION} are understood")]
    UnsupportedVersion(u8),
    #[error("token was signed with key id {0}, which is not configured")]
    UnknownKey(u8),
    #[error("token signature does not verify")]
    BadSignature,
    #[error("token's purpose is {found}, but {expected} was expected")]
    WrongPurpose { expected: Purpose, found: Purpose },
    #[error("click URL is not usable: {0}")]
    BadUrl(#[from] UrlError),
}

/// Why a URL cannot be the target of a click token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("URL does not start with http:// or https://")]
    Scheme,
    #[error("URL has no host")]
    NoHost,
    #[error("URL is longer than {MAX_URL_LEN} bytes")]
    TooLong,
    #[error("URL contains whitespace or a control character")]
    ControlOrSpace,
    #[error("URL contains a backslash")]
    Backslash,
}

/// Checks that `url` is an absolute http(s) URL a click token may carry.
pub fn check_click_url(url: &str) -> Result<(), UrlError> {
    if url.len() > MAX_URL_LEN {
        return Err(UrlError::TooLong);
    }
    let rest = strip_http_scheme(url).ok_or(UrlError::Scheme)?;
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(UrlError::ControlOrSpace);
    }
    // Browsers read `\` as `/`, which makes the host ambiguous.
    if url.contains('\\') {
        return Err(UrlError::Backslash);
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit('@').next().unwrap_or("");
    if host.is_empty() || host.starts_with(':') {
        return Err(UrlError::NoHost);
    }
    Ok(())
}

/// The part after `http://` or `https://` (scheme case-insensitive), if either.
/// The host of a tracking base URL such as `https://t.example.com:8443/track`.
pub fn tracking_host(base_url: &str) -> &str {
    let base = base_url.trim();
    let rest = strip_http_scheme(base).unwrap_or(base);
    let authority = rest.split('/').next().unwrap_or(rest);
    match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    }
}

fn strip_http_scheme(url: &str) -> Option<&str> {
    ["https://", "http://"].iter().find_map(|scheme| {
        url.get(..scheme.len())
            .filter(|head| head.eq_ignore_ascii_case(scheme))
            .map(|_| &url[scheme.len()..])
    })
}

/// Why a token key or key set cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("token key {id} is {len} bytes long; at least {MIN_KEY_LEN} are required")]
    TooShort { id: u8, len: usize },
    #[error("token key {id} is not hex: {message}")]
    NotHex { id: u8, message: String },
    #[error("token key id {0} is configured twice")]
    DuplicateId(u8),
}

/// One HMAC key and the id tokens name it by.
#[derive(Clone)]
pub struct TokenKey {
    id: u8,
    secret: Vec<u8>,
}

impl TokenKey {
    /// A key from its raw secret (at least [`MIN_KEY_LEN`] bytes; 32 random bytes advised).
    pub fn new(id: u8, secret: impl Into<Vec<u8>>) -> Result<Self, KeyError> {
        let secret = secret.into();
        if secret.len() < MIN_KEY_LEN {
            return Err(KeyError::TooShort {
                id,
                len: secret.len(),
            });
        }
        Ok(TokenKey { id, secret })
    }

    /// A key from its secret written in hex, as configuration files hold it.
    pub fn from_hex(id: u8, secret_hex: &str) -> Result<Self, KeyError> {
        let secret = hex::decode(secret_hex.trim()).map_err(|e| KeyError::NotHex {
            id,
            message: e.to_string(),
        })?;
        Self::new(id, secret)
    }

    /// The id written into tokens signed with this key.
    pub fn id(&self) -> u8 {
        self.id
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
        let mut mac = <HmacSha256 as Mac>::new_from_slice(&self.secret)
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
        mac.update(MAC_CONTEXT);
        mac
    }
}

impl fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenKey")
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// The key that signs new tokens and the previous keys that still verify old ones.
#[derive(Debug, Clone)]
pub struct TokenKeys {
    current: TokenKey,
    previous: Vec<TokenKey>,
}

impl TokenKeys {
    /// A key set; every key id must be distinct.
    pub fn new(current: TokenKey, previous: Vec<TokenKey>) -> Result<Self, KeyError> {
        let mut seen = vec![current.id];
        for key in &previous {
            if seen.contains(&key.id) {
                return Err(KeyError::DuplicateId(key.id));
            }
            seen.push(key.id);
        }
        Ok(TokenKeys { current, previous })
    }

    /// The id of the key new tokens are signed with.
    pub fn current_id(&self) -> u8 {
        self.current.id
    }

    fn key(&self, id: u8) -> Option<&TokenKey> {
        std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|k| k.id == id)
    }

    fn seal(&self, purpose: Purpose, payload: &[u8]) -> String {
        self.seal_at(purpose, payload, Timestamp::now())
    }

    fn seal_at(&self, purpose: Purpose, payload: &[u8], issued: Timestamp) -> String {
        let mut bytes = Vec::with_capacity(HEADER_LEN + payload.len() + TAG_LEN);
        bytes.extend_from_slice(&[TOKEN_VERSION, purpose.byte(), self.current.id]);
        let seconds = u32::try_from(issued.0.max(0) / 1000).unwrap_or(u32::MAX);
        bytes.extend_from_slice(&seconds.to_be_bytes());
        bytes.extend_from_slice(payload);
        let mut mac = self.current.mac();
        mac.update(&bytes);
        let tag = mac.finalize().into_bytes();
        bytes.extend_from_slice(&tag[..TAG_LEN]);
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// Signs an open-pixel token, issued now.
    pub fn sign_open(&self, t: &OpenToken) -> String {
        self.sign_open_at(t, Timestamp::now())
    }

    /// Signs an open-pixel token issued at `issued`.
    pub fn sign_open_at(&self, t: &OpenToken, issued: Timestamp) -> String {
        let mut p = Vec::with_capacity(34 + t.tenant.as_str().len() + t.recipient.as_str().len());
        put_ids(&mut p, &t.message, &t.campaign, &t.tenant, &t.recipient);
        self.seal_at(Purpose::Open, &p, issued)
    }

    /// Signs a click token, issued now; the URL must pass [`check_click_url`].
    pub fn sign_click(&self, t: &ClickToken) -> Result<String, TokenError> {
        self.sign_click_at(t, Timestamp::now())
    }

    /// Signs a click token issued at `issued`.
    pub fn sign_click_at(&self, t: &ClickToken, issued: Timestamp) -> Result<String, TokenError> {
        check_click_url(&t.url)?;
        let mut p = Vec::with_capacity(
            38 + t.tenant.as_str().len() + t.recipient.as_str().len() + t.url.len(),
        );
        put_ids(&mut p, &t.message, &t.campaign, &t.tenant, &t.recipient);
        p.extend_from_slice(&t.link.to_be_bytes());
        // The URL is at most MAX_URL_LEN bytes, so its length fits in a u16.
        p.extend_from_slice(&(t.url.len() as u16).to_be_bytes());
        p.extend_from_slice(t.url.as_bytes());
        Ok(self.seal_at(Purpose::Click, &p, issued))
    }

    /// Signs an unsubscribe token.
    pub fn sign_unsubscribe(&self, t: &UnsubscribeToken) -> String {
        let recipient = t.recipient.as_str();
        let mut p = Vec::with_capacity(34 + t.tenant.as_str().len() + recipient.len());
        put_short(&mut p, t.tenant.as_str());
        p.extend_from_slice(t.campaign.as_bytes());
        put_short(&mut p, recipient);
        p.extend_from_slice(t.message.as_bytes());
        self.seal(Purpose::Unsubscribe, &p)
    }

    /// Verifies a token and checks that it was made for `expected`.
    pub fn verify(&self, token: &str, expected: Purpose) -> Result<Token, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed("too long"));
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(token)
            .map_err(|_| TokenError::Malformed("not base64url"))?;
        if bytes.len() < HEADER_LEN + TAG_LEN {
            return Err(TokenError::Malformed("too short"));
        }
        let (signed, tag) = bytes.split_at(bytes.len() - TAG_LEN);
        let header = match signed[0] {
            1 => HEADER_LEN_V1,
            TOKEN_VERSION if signed.len() >= HEADER_LEN => HEADER_LEN,
            TOKEN_VERSION => return Err(TokenError::Malformed("too short")),
            other => return Err(TokenError::UnsupportedVersion(other)),
        };
        let key = self
            .key(signed[2])
            .ok_or(TokenError::UnknownKey(signed[2]))?;
        let mut mac = key.mac();
        mac.update(signed);
        mac.verify_truncated_left(tag)
            .map_err(|_| TokenError::BadSignature)?;
        let found =
            Purpose::from_byte(signed[1]).ok_or(TokenError::Malformed("unknown purpose"))?;
        if found != expected {
            return Err(TokenError::WrongPurpose { expected, found });
        }
        let mut r = Reader(&signed[header..]);
        let token = match found {
            Purpose::Open => {
                let (message, campaign, tenant, recipient) = r.ids()?;
                Token::Open(OpenToken {
                    message,
                    campaign,
                    tenant,
                    recipient,
                })
            }
            Purpose::Click => {
                let (message, campaign, tenant, recipient) = r.ids()?;
                let link = u16::from_be_bytes(r.array()?);
                let len = u16::from_be_bytes(r.array()?) as usize;
                let url = std::str::from_utf8(r.take(len)?)
                    .map_err(|_| TokenError::Malformed("URL is not UTF-8"))?
                    .to_string();
                check_click_url(&url)?;
                Token::Click(ClickToken {
                    message,
                    campaign,
                    tenant,
                    recipient,
                    link,
                    url,
                })
            }
            Purpose::Unsubscribe => {
                let tenant = r.tenant()?;
                let campaign = CampaignId::from_bytes(r.array()?);
                let recipient = r.recipient()?;
                let message = MessageId::from_bytes(r.array()?);
                Token::Unsubscribe(UnsubscribeToken {
                    tenant,
                    campaign,
                    recipient,
                    message,
                })
            }
        };
        if !r.0.is_empty() {
            return Err(TokenError::Malformed("trailing bytes"));
        }
        Ok(token)
    }

    /// When a token was made: its signed issue time, or `None` for a version 1 token
    /// (or one that is not a token). Only meaningful for a token that verified.
    pub fn issued_at(&self, token: &str) -> Option<Timestamp> {
        let head = token.get(..12)?;
        let bytes = URL_SAFE_NO_PAD.decode(head).ok()?;
        if bytes.first() != Some(&TOKEN_VERSION) {
            return None;
        }
        let seconds = u32::from_be_bytes(bytes.get(3..7)?.try_into().ok()?);
        Some(Timestamp(i64::from(seconds) * 1000))
    }

    /// Verifies an open-pixel token.
    pub fn verify_open(&self, token: &str) -> Result<OpenToken, TokenError> {
        match self.verify(token, Purpose::Open)? {
            Token::Open(t) => Ok(t),
            other => Err(wrong(Purpose::Open, &other)),
        }
    }

    /// Verifies a click token; its URL is the only place the redirect may go.
    pub fn verify_click(&self, token: &str) -> Result<ClickToken, TokenError> {
        match self.verify(token, Purpose::Click)? {
            Token::Click(t) => Ok(t),
            other => Err(wrong(Purpose::Click, &other)),
        }
    }

    /// Verifies an unsubscribe token.
    pub fn verify_unsubscribe(&self, token: &str) -> Result<UnsubscribeToken, TokenError> {
        match self.verify(token, Purpose::Unsubscribe)? {
            Token::Unsubscribe(t) => Ok(t),
            other => Err(wrong(Purpose::Unsubscribe, &other)),
        }
    }
}

fn wrong(expected: Purpose, found: &Token) -> TokenError {
    TokenError::WrongPurpose {
        expected,
        found: found.purpose(),
    }
}

fn put_short(out: &mut Vec<u8>, s: &str) {
    // Tenants are at most 63 bytes and addresses at most 254: both fit in a u8.
    out.push(s.len() as u8);
    out.extend_from_slice(s.as_bytes());
}

fn put_ids(
    out: &mut Vec<u8>,
    message: &MessageId,
    campaign: &CampaignId,
    tenant: &TenantId,
    recipient: &EmailAddress,
) {
    out.extend_from_slice(message.as_bytes());
    out.extend_from_slice(campaign.as_bytes());
    put_short(out, tenant.as_str());
    put_short(out, recipient.as_str());
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], TokenError> {
        if self.0.len() < n {
            return Err(TokenError::Malformed("payload is truncated"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], TokenError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn short_str(&mut self) -> Result<&'a str, TokenError> {
        let [len] = self.array::<1>()?;
        std::str::from_utf8(self.take(len as usize)?)
            .map_err(|_| TokenError::Malformed("text is not UTF-8"))
    }

    fn tenant(&mut self) -> Result<TenantId, TokenError> {
        TenantId::parse(self.short_str()?).map_err(|_| TokenError::Malformed("bad tenant id"))
    }

    fn recipient(&mut self) -> Result<EmailAddress, TokenError> {
        EmailAddress::parse(self.short_str()?)
            .map_err(|_| TokenError::Malformed("recipient is not an address"))
    }

    fn ids(&mut self) -> Result<(MessageId, CampaignId, TenantId, EmailAddress), TokenError> {
        let message = MessageId::from_bytes(self.array()?);
        let campaign = CampaignId::from_bytes(self.array()?);
        let tenant = self.tenant()?;
        Ok((message, campaign, tenant, self.recipient()?))
    }
}

/// Why a tracking configuration is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrackingError {
    #[error("tracking base URL {url:?} {problem}")]
    BaseUrl { url: String, problem: &'static str },
    #[error("tracking host label {0:?} must be one DNS label: 1-63 characters of a-z, 0-9 and '-'")]
    Label(String),
}

/// Where tracking links point and how they are signed.
#[derive(Debug, Clone)]
pub struct Tracking {
    base: String,
    keys: TokenKeys,
    opens: bool,
    clicks: bool,
    /// The label of tenants' own tracking hosts (`<label>.<sending domain>`).
    tenant_label: Option<String>,
}

impl Tracking {
    /// Tracking through the listener at `base_url` (e.g. `https://t.example.com`, a path
    /// is allowed, no query or fragment), with open and click tracking on.
    pub fn new(base_url: &str, keys: TokenKeys) -> Result<Self, TrackingError> {
        let bad = |problem| TrackingError::BaseUrl {
            url: base_url.to_string(),
            problem,
        };
        let trimmed = base_url.trim();
        let rest = strip_http_scheme(trimmed)
            .ok_or_else(|| bad("must start with http:// or https://"))?
            .trim_end_matches('/');
        let base = trimmed.trim_end_matches('/');
        if rest.is_empty() || rest.starts_with('/') || rest.starts_with(':') {
            return Err(bad("has no host"));
        }
        // The URL goes into HTML attributes and `<...>` header values unescaped.
        if let Some(c) = base
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || "-._~:/%[]".contains(*c)))
        {
            return Err(bad(match c {
                '?' => "must not have a query",
                '#' => "must not have a fragment",
                '@' => "must not have user information",
                _ => "contains a character that is not allowed",
            }));
        }
        Ok(Tracking {
            base: base.to_string(),
            keys,
            opens: true,
            clicks: true,
            tenant_label: None,
        })
    }

    /// Tenants' own tracking hosts are `<label>.<sending domain>` (the label is
    /// lower-cased); without it [`Tracking::tenant_host`] answers `None`.
    pub fn with_tenant_label(mut self, label: &str) -> Result<Self, TrackingError> {
        let label = crate::Domain::label(label)
            .ok_or_else(|| TrackingError::Label(label.to_ascii_lowercase()))?;
        self.tenant_label = Some(label);
        Ok(self)
    }

    /// A tenant's own tracking host under its sending domain `parent`.
    pub fn tenant_host(&self, parent: &crate::Domain) -> Option<crate::Domain> {
        let label = self.tenant_label.as_deref()?;
        crate::Domain::parse(&format!("{label}.{parent}")).ok()
    }

    /// The host of the base URL (the name tenants' tracking hosts are a CNAME of).
    pub fn host(&self) -> &str {
        tracking_host(&self.base)
    }

    /// The same tracking on `host` (a tenant's own tracking host): the base URL with
    /// its host swapped, scheme, port and path kept.
    pub fn on_host(&self, host: &crate::Domain) -> Tracking {
        let scheme_len =
            self.base.len() - strip_http_scheme(&self.base).unwrap_or(&self.base).len();
        let (scheme, rest) = self.base.split_at(scheme_len);
        let after_host = &rest[self.host().len()..];
        Tracking {
            base: format!("{scheme}{host}{after_host}"),
            ..self.clone()
        }
    }

    /// Turns open tracking (the pixel) on or off.
    pub fn with_opens(mut self, on: bool) -> Self {
        self.opens = on;
        self
    }

    /// Turns click tracking (link rewriting) on or off.
    pub fn with_clicks(mut self, on: bool) -> Self {
        self.clicks = on;
        self
    }

    /// The listener's base URL, without a trailing slash.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// The keys tokens are signed and verified with.
    pub fn keys(&self) -> &TokenKeys {
        &self.keys
    }

    /// Whether the open pixel is added.
    pub fn opens(&self) -> bool {
        self.opens
    }

    /// Whether links are rewritten.
    pub fn clicks(&self) -> bool {
        self.clicks
    }

    /// Whether the listener is reached over https (RFC 8058 one-click needs it).
    pub fn is_https(&self) -> bool {
        self.base
            .get(..6)
            .is_some_and(|s| s.eq_ignore_ascii_case("https:"))
    }

    /// `{base}/o/{token}`.
    pub fn open_pixel_url(&self, t: &OpenToken) -> String {
        format!("{}/o/{}", self.base, self.keys.sign_open(t))
    }

    /// `{base}/c/{token}`; fails when the target is not an acceptable http(s) URL.
    pub fn click_url(&self, t: &ClickToken) -> Result<String, TokenError> {
        Ok(format!("{}/c/{}", self.base, self.keys.sign_click(t)?))
    }

    /// `{base}/u/{token}`.
    pub fn unsubscribe_url(&self, t: &UnsubscribeToken) -> String {
        format!("{}/u/{}", self.base, self.keys.sign_unsubscribe(t))
    }

    /// The `<img>` tag of the open pixel.
    pub fn open_pixel(&self, t: &OpenToken) -> String {
        format!(
            "<img src=\"{}\" width=\"1\" height=\"1\" alt=\"\" style=\"display:none\">",
            self.open_pixel_url(t)
        )
    }

    /// Rewrites an HTML body for the message `ids`: links when click tracking is on,
    /// the pixel when open tracking is on. Links whose URL cannot be signed stay as they are.
    pub fn track_html(&self, html: &str, ids: &OpenToken) -> String {
        let pixel = self.opens.then(|| self.open_pixel(ids));
        if self.clicks {
            rewrite_html(
                html,
                |link, url| {
                    self.click_url(&ClickToken {
                        message: ids.message,
                        campaign: ids.campaign,
                        tenant: ids.tenant.clone(),
                        recipient: ids.recipient.clone(),
                        link,
                        url: url.to_string(),
                    })
                    .ok()
                },
                pixel.as_deref(),
            )
        } else {
            rewrite_html(html, |_, _| None, pixel.as_deref())
        }
    }
}

/// Rewrites the `href` of trackable `<a>` tags and inserts `pixel` (raw HTML) before
/// the first `</body>`, or at the end when there is none.
///
/// `link(index, url)` is called for each http(s) link not marked `data-maily-notrack`,
/// with the link's position among those links and its URL with character references
/// decoded and surrounding whitespace removed; it returns the replacement URL (written
/// back HTML-escaped, in double quotes) or `None` to keep the link. Everything else is
/// copied unchanged. Links after the 65,536th are left alone.
pub fn rewrite_html<F>(html: &str, mut link: F, pixel: Option<&str>) -> String
where
    F: FnMut(u16, &str) -> Option<String>,
{
    let b = html.as_bytes();
    let mut out = String::with_capacity(html.len() + html.len() / 4 + 128);
    let mut copied = 0;
    let mut pixel = pixel;
    let mut next_index: u32 = 0;
    let mut i = 0;
    while let Some(off) = b[i..].iter().position(|&c| c == b'<') {
        let lt = i + off;
        let rest = &b[lt..];
        if rest.starts_with(b"<!--") {
            let body = lt + 4;
            if starts_with_ci(&b[body..], b"[if") {
                // Conditional comment: Outlook renders what is inside.
                i = body;
                continue;
            }
            i = match comment_end(b, body) {
                Some(end) => end,
                None => break,
            };
            continue;
        }
        if let Some(name) = ["script", "style", "title", "textarea"]
            .into_iter()
            .find(|n| is_tag(&rest[1..], n.as_bytes()))
        {
            match find_end_tag(b, lt + 1 + name.len(), name.as_bytes()) {
                Some(end) => {
                    i = end;
                    continue;
                }
                None => break,
            }
        }
        if is_tag(&rest[1..], b"a") {
            let Some(tag) = parse_tag(b, lt + 2) else {
                break;
            };
            if let (Some(href), false) = (tag.href, tag.notrack) {
                let raw = &html[href.value.0..href.value.1];
                let url = decode_entities(raw);
                let url = url.trim_matches(|c: char| c.is_ascii_whitespace());
                if strip_http_scheme(url).is_some() && next_index <= u16::MAX as u32 {
                    let index = next_index as u16;
                    next_index += 1;
                    if let Some(new) = link(index, url) {
                        out.push_str(&html[copied..href.span.0]);
                        out.push('"');
                        escape_attr(&mut out, &new);
                        out.push('"');
                        copied = href.span.1;
                    }
                }
            }
            i = tag.end;
            continue;
        }
        if rest.len() > 2
            && rest[1] == b'/'
            && is_tag(&rest[2..], b"body")
            && let Some(p) = pixel.take()
        {
            out.push_str(&html[copied..lt]);
            out.push_str(p);
            copied = lt;
        }
        i = lt + 1;
    }
    out.push_str(&html[copied..]);
    if let Some(p) = pixel {
        out.push_str(p);
    }
    out
}

struct Href {
    /// The whole value as written, quotes included.
    span: (usize, usize),
    /// The value without quotes.
    value: (usize, usize),
}

struct ATag {
    /// Just after the closing `>`.
    end: usize,
    href: Option<Href>,
    notrack: bool,
}

/// Reads the attributes of a start tag from `pos` (just after its name) to its `>`;
/// `None` when the tag is not closed.
fn parse_tag(b: &[u8], mut pos: usize) -> Option<ATag> {
    let ws = |c: u8| matches!(c, b' ' | b'\t' | b'\n' | b'\r' | b'\x0c');
    let mut href = None;
    let mut notrack = false;
    loop {
        while pos < b.len() && (ws(b[pos]) || b[pos] == b'/') {
            pos += 1;
        }
        if pos >= b.len() {
            return None;
        }
        if b[pos] == b'>' {
            return Some(ATag {
                end: pos + 1,
                href,
                notrack,
            });
        }
        let name_start = pos;
        pos += 1; // the first character is part of the name even if it is '='
        while pos < b.len() && !ws(b[pos]) && !matches!(b[pos], b'/' | b'>' | b'=') {
            pos += 1;
        }
        let name = &b[name_start..pos];
        while pos < b.len() && ws(b[pos]) {
            pos += 1;
        }
        let mut value = None;
        if pos < b.len() && b[pos] == b'=' {
            pos += 1;
            while pos < b.len() && ws(b[pos]) {
                pos += 1;
            }
            match b.get(pos) {
                None => return None,
                Some(&q) if q == b'"' || q == b'\'' => {
                    let close = pos + 1 + b[pos + 1..].iter().position(|&c| c == q)?;
                    value = Some(Href {
                        span: (pos, close + 1),
                        value: (pos + 1, close),
                    });
                    pos = close + 1;
                }
                Some(b'>') => {}
                Some(_) => {
                    let start = pos;
                    while pos < b.len() && !ws(b[pos]) && b[pos] != b'>' {
                        pos += 1;
                    }
                    value = Some(Href {
                        span: (start, pos),
                        value: (start, pos),
                    });
                }
            }
        }
        if name.eq_ignore_ascii_case(b"href") {
            // The first of duplicate attributes wins, as browsers do.
            if href.is_none() {
                href = Some(value.unwrap_or(Href {
                    span: (pos, pos),
                    value: (pos, pos),
                }));
            }
        } else if name.eq_ignore_ascii_case(b"data-maily-notrack") {
            notrack = true;
        }
    }
}

fn starts_with_ci(b: &[u8], prefix: &[u8]) -> bool {
    b.len() >= prefix.len() && b[..prefix.len()].eq_ignore_ascii_case(prefix)
}

/// Whether `b` starts with the tag name `name` followed by the end of the name.
fn is_tag(b: &[u8], name: &[u8]) -> bool {
    starts_with_ci(b, name)
        && b.get(name.len())
            .is_none_or(|c| matches!(c, b' ' | b'\t' | b'\n' | b'\r' | b'\x0c' | b'/' | b'>'))
}

/// The position after the comment whose text starts at `body` (just after `<!--`).
fn comment_end(b: &[u8], body: usize) -> Option<usize> {
    // `<!-->` and `<!--->` are complete (empty) comments.
    if b[body..].starts_with(b">") {
        return Some(body + 1);
    }
    if b[body..].starts_with(b"->") {
        return Some(body + 2);
    }
    b[body..]
        .windows(3)
        .position(|w| w == b"-->")
        .map(|p| body + p + 3)
}

/// The position after the `</name ...>` that closes a raw-text element.
fn find_end_tag(b: &[u8], mut pos: usize, name: &[u8]) -> Option<usize> {
    loop {
        pos += b[pos..].windows(2).position(|w| w == b"</")?;
        if is_tag(&b[pos + 2..], name) {
            return b[pos..]
                .iter()
                .position(|&c| c == b'>')
                .map(|p| pos + p + 1);
        }
        pos += 2;
    }
}

/// Decodes HTML character references: numeric ones and the few named ones URLs use.
/// Unknown or unterminated references stay as written.
pub fn decode_entities(s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        let decoded = rest[1..]
            .find(';')
            .filter(|&semi| semi <= 10)
            .and_then(|semi| Some((entity(&rest[1..1 + semi])?, semi + 2)));
        match decoded {
            Some((c, len)) => {
                out.push(c);
                rest = &rest[len..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

fn entity(name: &str) -> Option<char> {
    if let Some(num) = name.strip_prefix('#') {
        let (digits, radix) = match num.strip_prefix(['x', 'X']) {
            Some(hex) => (hex, 16),
            None => (num, 10),
        };
        if digits.is_empty() || !digits.bytes().all(|c| char::from(c).is_digit(radix)) {
            return None;
        }
        let code = u32::from_str_radix(digits, radix).unwrap_or(u32::MAX);
        // As browsers do: NUL, surrogates and out-of-range values become U+FFFD.
        return Some(
            char::from_u32(code)
                .filter(|&c| c != '\0')
                .unwrap_or('\u{FFFD}'),
        );
    }
    Some(match name {
        "amp" | "AMP" => '&',
        "lt" | "LT" => '<',
        "gt" | "GT" => '>',
        "quot" | "QUOT" => '"',
        "apos" => '\'',
        "sol" => '/',
        "colon" => ':',
        "quest" => '?',
        "equals" => '=',
        "num" => '#',
        "percnt" => '%',
        "plus" => '+',
        "period" => '.',
        "lowbar" => '_',
        "Tab" => '\t',
        "NewLine" => '\n',
        "nbsp" => '\u{a0}',
        _ => return None,
    })
}

fn escape_attr(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            _ => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> TokenKeys {
        TokenKeys::new(TokenKey::new(2, [7u8; 32]).unwrap(), vec![]).unwrap()
    }

    fn tenant() -> TenantId {
        TenantId::parse("acme").unwrap()
    }

    fn open() -> OpenToken {
        OpenToken {
            message: MessageId::new(),
            campaign: CampaignId::new(),
            tenant: tenant(),
            recipient: EmailAddress::parse("ann@example.org").unwrap(),
        }
    }

    fn click(url: &str) -> ClickToken {
        let o = open();
        ClickToken {
            message: o.message,
            campaign: o.campaign,
            tenant: o.tenant,
            recipient: o.recipient,
            link: 3,
            url: url.into(),
        }
    }

    fn unsubscribe() -> UnsubscribeToken {
        UnsubscribeToken {
            tenant: tenant(),
            campaign: CampaignId::new(),
            recipient: EmailAddress::parse("Ann.Lee+news@Example.COM").unwrap(),
            message: MessageId::new(),
        }
    }

    #[test]
    fn tokens_carry_their_signed_issue_time_and_version_1_still_verifies() {
        let k = keys();
        let at = Timestamp(1_700_000_000_000);
        let o = open();
        let token = k.sign_open_at(&o, at);
        assert_eq!(k.verify_open(&token).unwrap(), o);
        assert_eq!(k.issued_at(&token), Some(at));
        let now = k.sign_click(&click("https://shop.example/")).unwrap();
        let issued = k.issued_at(&now).unwrap();
        assert!((Timestamp::now().0 - issued.0).abs() < 5_000, "{issued:?}");

        // Made as version 1 wrote them: no issue time, same MAC.
        let mut v1 = vec![1, Purpose::Open.byte(), k.current_id()];
        put_ids(&mut v1, &o.message, &o.campaign, &o.tenant, &o.recipient);
        let mut mac = k.current.mac();
        mac.update(&v1);
        v1.extend_from_slice(&mac.finalize().into_bytes()[..TAG_LEN]);
        let v1 = URL_SAFE_NO_PAD.encode(v1);
        assert_eq!(k.verify_open(&v1).unwrap(), o);
        assert_eq!(k.issued_at(&v1), None);

        // The issue time is signed: changing it breaks the token.
        let mut bytes = URL_SAFE_NO_PAD.decode(&token).unwrap();
        bytes[6] ^= 1;
        let moved = URL_SAFE_NO_PAD.encode(bytes);
        assert_eq!(k.verify_open(&moved), Err(TokenError::BadSignature));
    }

    #[test]
    fn tokens_round_trip() {
        let k = keys();
        let o = open();
        assert_eq!(k.verify_open(&k.sign_open(&o)).unwrap(), o);
        let c = click("https://shop.example/p?a=1&b=2#top");
        assert_eq!(k.verify_click(&k.sign_click(&c).unwrap()).unwrap(), c);
        let u = unsubscribe();
        let token = k.sign_unsubscribe(&u);
        assert!(
            token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert_eq!(k.verify_unsubscribe(&token).unwrap(), u);
        assert_eq!(
            k.verify(&token, Purpose::Unsubscribe).unwrap().purpose(),
            Purpose::Unsubscribe
        );
    }

    #[test]
    fn tampering_any_byte_or_character_fails() {
        let k = keys();
        let token = k.sign_click(&click("https://a.example/x")).unwrap();
        let raw = URL_SAFE_NO_PAD.decode(&token).unwrap();
        for i in 0..raw.len() {
            for bit in 0..8 {
                let mut t = raw.clone();
                t[i] ^= 1 << bit;
                assert!(
                    k.verify(&URL_SAFE_NO_PAD.encode(&t), Purpose::Click)
                        .is_err(),
                    "flipping bit {bit} of byte {i} went unnoticed"
                );
            }
        }
        for i in 0..token.len() {
            let mut t = token.clone().into_bytes();
            t[i] = if t[i] == b'A' { b'B' } else { b'A' };
            let t = String::from_utf8(t).unwrap();
            assert!(k.verify(&t, Purpose::Click).is_err(), "changed char {i}");
        }
        assert!(k.verify(&token[..token.len() - 1], Purpose::Click).is_err());
        assert!(k.verify(&format!("{token}A"), Purpose::Click).is_err());
        let mut short = raw.clone();
        short.truncate(raw.len() - 1);
        assert!(
            k.verify(&URL_SAFE_NO_PAD.encode(&short), Purpose::Click)
                .is_err()
        );
    }

    #[test]
    fn errors_name_what_is_wrong() {
        let k = keys();
        let click_token = k.sign_click(&click("https://a.example/")).unwrap();
        assert_eq!(
            k.verify_unsubscribe(&click_token),
            Err(TokenError::WrongPurpose {
                expected: Purpose::Unsubscribe,
                found: Purpose::Click
            })
        );
        assert_eq!(
            k.verify_open(&click_token).unwrap_err().to_string(),
            "token's purpose is click, but open was expected"
        );
        assert_eq!(
            k.verify_open("not a token!"),
            Err(TokenError::Malformed("not base64url"))
        );
        assert_eq!(k.verify_open(""), Err(TokenError::Malformed("too short")));
        let mut raw = URL_SAFE_NO_PAD.decode(&click_token).unwrap();
        let last = raw.len() - 1;
        raw[last] ^= 1;
        assert_eq!(
            k.verify_click(&URL_SAFE_NO_PAD.encode(&raw)),
            Err(TokenError::BadSignature)
        );
        raw[0] = 9;
        assert_eq!(
            k.verify_click(&URL_SAFE_NO_PAD.encode(&raw)),
            Err(TokenError::UnsupportedVersion(9))
        );
        assert!(matches!(
            k.sign_click(&click("javascript:alert(1)")),
            Err(TokenError::BadUrl(UrlError::Scheme))
        ));
        assert!(matches!(
            k.sign_click(&click("https://a.example/a b")),
            Err(TokenError::BadUrl(UrlError::ControlOrSpace))
        ));
        assert!(matches!(
            k.sign_click(&click("https:///path")),
            Err(TokenError::BadUrl(UrlError::NoHost))
        ));
        assert!(matches!(
            k.sign_click(&click("https://evil.example\\@good.example")),
            Err(TokenError::BadUrl(UrlError::Backslash))
        ));
    }

    #[test]
    fn a_signed_bad_url_is_still_refused() {
        // A token forged with a leaked key but carrying a non-http URL is refused.
        let k = keys();
        let mut p = Vec::new();
        let o = open();
        put_ids(&mut p, &o.message, &o.campaign, &o.tenant, &o.recipient);
        p.extend_from_slice(&0u16.to_be_bytes());
        let url = b"javascript:alert(1)";
        p.extend_from_slice(&(url.len() as u16).to_be_bytes());
        p.extend_from_slice(url);
        let token = k.seal(Purpose::Click, &p);
        assert_eq!(
            k.verify_click(&token),
            Err(TokenError::BadUrl(UrlError::Scheme))
        );
    }

    #[test]
    fn rotated_keys_still_verify_and_unknown_ids_fail() {
        let old = TokenKeys::new(TokenKey::new(1, [1u8; 32]).unwrap(), vec![]).unwrap();
        let token = old.sign_open(&open());
        let rotated = TokenKeys::new(
            TokenKey::new(2, [2u8; 32]).unwrap(),
            vec![TokenKey::new(1, [1u8; 32]).unwrap()],
        )
        .unwrap();
        assert!(rotated.verify_open(&token).is_ok());
        assert_eq!(rotated.current_id(), 2);
        let new_token = rotated.sign_open(&open());
        assert_eq!(old.verify_open(&new_token), Err(TokenError::UnknownKey(2)));
        let retired = TokenKeys::new(TokenKey::new(3, [3u8; 32]).unwrap(), vec![]).unwrap();
        assert_eq!(retired.verify_open(&token), Err(TokenError::UnknownKey(1)));
        // Same id, different secret: the signature fails.
        let imposter = TokenKeys::new(TokenKey::new(1, [9u8; 32]).unwrap(), vec![]).unwrap();
        assert_eq!(imposter.verify_open(&token), Err(TokenError::BadSignature));
    }

    #[test]
    fn key_errors() {
        assert_eq!(
            TokenKey::new(1, [0u8; 8]).unwrap_err(),
            KeyError::TooShort { id: 1, len: 8 }
        );
        assert!(matches!(
            TokenKey::from_hex(4, "zz"),
            Err(KeyError::NotHex { id: 4, .. })
        ));
        let k = TokenKey::from_hex(4, &"ab".repeat(32)).unwrap();
        assert!(!format!("{k:?}").contains("ab"));
        assert_eq!(
            TokenKeys::new(k.clone(), vec![k]).unwrap_err(),
            KeyError::DuplicateId(4)
        );
    }

    #[test]
    fn tenant_tracking_hosts_keep_scheme_port_and_path() {
        let shop = crate::Domain::parse("shop.example").unwrap();
        let t = Tracking::new("https://t.maily.example:8443/track/", keys()).unwrap();
        assert_eq!(t.host(), "t.maily.example");
        assert_eq!(t.tenant_host(&shop), None, "off without a label");
        let t = t.with_tenant_label("Track").unwrap();
        let host = t.tenant_host(&shop).unwrap();
        assert_eq!(host.as_str(), "track.shop.example");
        let own = t.on_host(&host);
        assert_eq!(own.base_url(), "https://track.shop.example:8443/track");
        let o = open();
        let token = own
            .open_pixel_url(&o)
            .strip_prefix("https://track.shop.example:8443/track/o/")
            .unwrap()
            .to_string();
        assert_eq!(t.keys().verify_open(&token).unwrap(), o, "same keys");
        assert_eq!(
            Tracking::new("http://t.example.com", keys())
                .unwrap()
                .host(),
            "t.example.com"
        );
        assert!(matches!(
            t.clone().with_tenant_label("a.b"),
            Err(TrackingError::Label(_))
        ));
    }

    #[test]
    fn tracking_urls() {
        let t = Tracking::new("https://t.example.com/", keys()).unwrap();
        assert_eq!(t.base_url(), "https://t.example.com");
        assert!(t.is_https());
        let o = open();
        let url = t.open_pixel_url(&o);
        let token = url.strip_prefix("https://t.example.com/o/").unwrap();
        assert_eq!(t.keys().verify_open(token).unwrap(), o);
        let u = unsubscribe();
        let url = t.unsubscribe_url(&u);
        let token = url.strip_prefix("https://t.example.com/u/").unwrap();
        assert_eq!(t.keys().verify_unsubscribe(token).unwrap(), u);
        let c = click("http://x.example");
        let url = t.click_url(&c).unwrap();
        let token = url.strip_prefix("https://t.example.com/c/").unwrap();
        assert_eq!(t.keys().verify_click(token).unwrap(), c);
        assert!(
            !Tracking::new("http://t.example.com/track", keys())
                .unwrap()
                .is_https()
        );
        for (bad, why) in [
            ("t.example.com", "must start with http:// or https://"),
            ("https://", "has no host"),
            ("https://t.example.com/?a=1", "must not have a query"),
            ("https://t.example.com/a\"b", "contains a character"),
            ("https://u@t.example.com", "must not have user information"),
        ] {
            let err = Tracking::new(bad, keys()).unwrap_err().to_string();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    /// Rewrites with a marker so the tests can see what was passed and where.
    fn mark(html: &str) -> (String, Vec<(u16, String)>) {
        let mut seen = Vec::new();
        let out = rewrite_html(
            html,
            |i, url| {
                seen.push((i, url.to_string()));
                Some(format!("T{i}"))
            },
            None,
        );
        (out, seen)
    }

    #[test]
    fn rewrites_quotes_attribute_order_and_case() {
        let (out, seen) = mark(concat!(
            "<p><a href=\"https://a.example/1\">one</a> ",
            "<a class='x' href='http://b.example/2' title=\"t\">two</a> ",
            "<A HREF=https://c.example/3>three</A> ",
            "<a\n  target=_blank\n  HRef = \"https://d.example/4\" >four</a> ",
            "<abbr href=\"https://no.example\">not a link</abbr>",
            "<a href=\"https://e.example/5\" href=\"https://ignored.example\">5</a></p>"
        ));
        assert_eq!(
            out,
            concat!(
                "<p><a href=\"T0\">one</a> ",
                "<a class='x' href=\"T1\" title=\"t\">two</a> ",
                "<A HREF=\"T2\">three</A> ",
                "<a\n  target=_blank\n  HRef = \"T3\" >four</a> ",
                "<abbr href=\"https://no.example\">not a link</abbr>",
                "<a href=\"T4\" href=\"https://ignored.example\">5</a></p>"
            )
        );
        assert_eq!(seen[2], (2, "https://c.example/3".to_string()));
        assert_eq!(seen.len(), 5);
    }

    #[test]
    fn decodes_entities_in_urls() {
        let (_, seen) = mark(
            "<a href=\"https://a.example/?x=1&amp;y=2&#38;z=&#x33;&unknown;\">a</a>\
             <a href=' https://b.example/&quot;q&quot; '>b</a>",
        );
        assert_eq!(seen[0].1, "https://a.example/?x=1&y=2&z=3&unknown;");
        assert_eq!(seen[1].1, "https://b.example/\"q\"");
        assert_eq!(
            decode_entities("&#0;&#xD800;&#99999999;&#;&#+1;&amp"),
            "\u{FFFD}\u{FFFD}\u{FFFD}&#;&#+1;&amp"
        );
    }

    #[test]
    fn leaves_non_http_notrack_comments_and_scripts_alone() {
        let html = concat!(
            "<a href=\"mailto:a@b.example\">m</a>",
            "<a href=\"tel:+123\">t</a>",
            "<a href=\"#top\">anchor</a>",
            "<a href=\"/relative\">rel</a>",
            "<a name=\"x\">no href</a>",
            "<a href=\"https://a.example\" data-maily-notrack>nt</a>",
            "<a DATA-MAILY-NOTRACK=\"\" href=\"https://a.example\">nt</a>",
            "<!-- <a href=\"https://comment.example\"> -->",
            "<!--><a href=\"https://after-empty-comment.example\">e</a>",
            "<style>a[href=\"https://x\"] { } </style>",
            "<script>var s = '<a href=\"https://s.example\">';</script>",
            "<!--[if mso]><a href=\"https://mso.example\">o</a><![endif]-->",
        );
        let (out, seen) = mark(html);
        let urls: Vec<_> = seen.iter().map(|(_, u)| u.as_str()).collect();
        assert_eq!(
            urls,
            ["https://after-empty-comment.example", "https://mso.example"]
        );
        assert!(out.contains("mailto:a@b.example") && out.contains("data-maily-notrack>nt"));
    }

    #[test]
    fn unterminated_markup_is_copied() {
        for html in [
            "<a href=\"https://a.example",
            "<a href=",
            "<a",
            "<!-- <a href=https://x.example>",
            "<style><a href=https://x.example>",
        ] {
            assert_eq!(mark(html).0, html);
        }
    }

    #[test]
    fn pixel_goes_before_body_end_or_at_the_end() {
        let keep = |_: u16, _: &str| None;
        assert_eq!(
            rewrite_html("<html><BODY>x</BODY ></html>", keep, Some("<P>")),
            "<html><BODY>x<P></BODY ></html>"
        );
        assert_eq!(
            rewrite_html("<!-- </body> --><p>x", keep, Some("<P>")),
            "<!-- </body> --><p>x<P>"
        );
        assert_eq!(rewrite_html("x", keep, Some("<P>")), "x<P>");
    }

    #[test]
    fn tracked_html_links_verify_back_to_the_originals() {
        let t = Tracking::new("https://t.example.com", keys()).unwrap();
        let o = open();
        let html = "<body><a href=\"https://shop.example/?a=1&amp;b=2\">x</a>\
                    <a href='mailto:x@y.example'>m</a></body>";
        let out = t.track_html(html, &o);
        let start = out.find("https://t.example.com/c/").unwrap() + 24;
        let token = &out[start..start + out[start..].find('"').unwrap()];
        let c = t.keys().verify_click(token).unwrap();
        assert_eq!(c.url, "https://shop.example/?a=1&b=2");
        assert_eq!(
            (c.link, c.message, &c.tenant, &c.recipient),
            (0, o.message, &o.tenant, &o.recipient)
        );
        assert!(out.contains("mailto:x@y.example"));
        assert!(out.ends_with("style=\"display:none\"></body>"));
        let plain = Tracking::new("https://t.example.com", keys())
            .unwrap()
            .with_clicks(false)
            .with_opens(false);
        assert_eq!(plain.track_html(html, &o), html);
    }

    proptest::proptest! {
        #[test]
        fn verify_never_panics(s in "\\PC{0,200}", b in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let k = keys();
            for p in [Purpose::Open, Purpose::Click, Purpose::Unsubscribe] {
                let _ = k.verify(&s, p);
                let _ = k.verify(&URL_SAFE_NO_PAD.encode(&b), p);
            }
        }

        #[test]
        fn rewriting_never_panics_and_keeps_untouched_html(html in "(\\PC|<a href=|<!--|-->|&amp;|['\"<>/= ]){0,80}") {
            let out = rewrite_html(&html, |_, _| None, None);
            proptest::prop_assert_eq!(&out, &html);
            let _ = rewrite_html(&html, |i, u| Some(format!("{i}{u}")), Some("<img>"));
            let _ = decode_entities(&html);
        }
    }
}
