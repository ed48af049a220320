//! DKIM signing (RFC 6376) of outgoing messages with Ed25519-SHA256 (RFC 8463) or
//! RSA-SHA256 keys, one key per sending domain.
//!
//! - [`DkimKey`] is one private key with the domain (`d=`) and selector (`s=`) it signs
//!   for, loaded from a PEM file or string; the algorithm is read from the key itself:
//!   PKCS#8 (`-----BEGIN PRIVATE KEY-----`, what `openssl genpkey` writes) holding an
//!   Ed25519 or RSA key, or PKCS#1 (`-----BEGIN RSA PRIVATE KEY-----`). RSA keys need at
//!   least 2048 bits (ring signs with up to 4096). [`DkimKey::dns_record`] gives the TXT
//!   record to publish at [`DkimKey::dns_name`].
//! - [`DkimSigner`] holds the keys by sending domain, plus an optional fallback key used
//!   for every other domain (typically the platform's own domain, so `d=` then differs
//!   from the From domain and does not align for DMARC). [`DkimSigner::sign`] returns the
//!   message with a `DKIM-Signature:` header prepended.
//!
//! Signatures are relaxed/relaxed and cover the headers of [`SIGNED_HEADERS`] that the
//! message has (all their instances), with `From` signed once more than it appears so
//! that no second From header can be added without breaking the signature. Parsing a key
//! is the expensive part and happens once, at load; signing then costs one hash of the
//! body and one signature. Both types are `Send + Sync`: share a signer in an `Arc`.
//!
//! The crypto is ring's, through the `mail-auth` crate; this module does no DNS.

use base64::Engine as _;
use mail_auth::common::crypto::{
    Algorithm, Ed25519Key, HashContext, HashImpl, HashOutput, RsaKey, Sha256,
    SigningKey as MailAuthSigningKey,
};
use mail_auth::common::headers::{HeaderWriter, Writable, Writer};
use mail_auth::dkim::{Canonicalization, DkimSigner as MailAuthSigner};
use rustls_pki_types::pem::{PemObject, SectionKind};
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// The headers a signature covers when the message has them, in this order of
/// preference. `From` is always required; the rest are signed only when present.
pub const SIGNED_HEADERS: &[&str] = &[
    "From",
    "Reply-To",
    "To",
    "Cc",
    "Subject",
    "Date",
    "Message-ID",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    // Gmail's feedback loop only trusts a DKIM-signed Feedback-ID.
    "Feedback-ID",
];

/// The smallest RSA modulus accepted, in bits (RFC 8301 requires at least 1024 and
/// recommends 2048; receivers increasingly demand 2048).
pub const MIN_RSA_BITS: usize = 2048;

/// A DKIM signing algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DkimAlgorithm {
    /// Ed25519 over a SHA-256 hash (`a=ed25519-sha256`, RFC 8463).
    Ed25519,
    /// RSASSA-PKCS1-v1_5 with SHA-256 (`a=rsa-sha256`), with a modulus of at least
    /// 2048 bits ([`DkimKey::bits`] tells the actual size).
    Rsa2048,
}

impl DkimAlgorithm {
    /// The `a=` tag value of the signatures.
    pub fn signature_algorithm(self) -> &'static str {
        match self {
            Self::Ed25519 => "ed25519-sha256",
            Self::Rsa2048 => "rsa-sha256",
        }
    }

    /// The `k=` tag value of the DNS record.
    pub fn key_type(self) -> &'static str {
        match self {
            Self::Ed25519 => "ed25519",
            Self::Rsa2048 => "rsa",
        }
    }
}

impl fmt::Display for DkimAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Ed25519 => "Ed25519",
            Self::Rsa2048 => "RSA",
        })
    }
}

/// Why a key could not be loaded or a message not be signed. Each variant names the
/// key (`selector._domainkey.domain`) and, for loading, where the PEM came from.
#[derive(Debug, thiserror::Error)]
pub enum DkimError {
    #[error("DKIM key {selector}._domainkey.{domain}: cannot read {}: {source}", path.display())]
    Unreadable {
        domain: String,
        selector: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("DKIM key {selector}._domainkey.{domain} ({origin}): not a PEM private key: {reason}")]
    NotPem {
        domain: String,
        selector: String,
        origin: String,
        reason: String,
    },
    #[error(
        "DKIM key {selector}._domainkey.{domain} ({origin}): unsupported key algorithm {found}; \
         use Ed25519 or RSA of at least 2048 bits"
    )]
    UnsupportedAlgorithm {
        domain: String,
        selector: String,
        origin: String,
        found: String,
    },
    #[error(
        "DKIM key {selector}._domainkey.{domain} ({origin}): RSA key of {bits} bits is too \
         short, DKIM keys need at least {MIN_RSA_BITS}"
    )]
    RsaKeyTooShort {
        domain: String,
        selector: String,
        origin: String,
        bits: usize,
    },
    #[error(
        "DKIM key {selector}._domainkey.{domain} ({origin}): invalid {algorithm} key: {reason}"
    )]
    InvalidKey {
        domain: String,
        selector: String,
        origin: String,
        algorithm: DkimAlgorithm,
        reason: String,
    },
    #[error("DKIM key {selector:?} for {domain:?}: invalid {field}: {reason}")]
    InvalidName {
        domain: String,
        selector: String,
        field: &'static str,
        reason: &'static str,
    },
    #[error("DKIM: two keys for the sending domain {domain} (selectors {existing} and {added})")]
    DuplicateDomain {
        domain: String,
        existing: String,
        added: String,
    },
    #[error("DKIM signing with {selector}._domainkey.{domain} failed: {reason}")]
    Sign {
        domain: String,
        selector: String,
        reason: String,
    },
}

/// The parsed private key, ready to sign.
enum KeyPair {
    Ed25519(Ed25519Key),
    Rsa(RsaKey<Sha256>),
}

/// Lends a [`KeyPair`] to mail-auth's signer without moving it.
struct KeyRef<'a>(&'a KeyPair);

impl MailAuthSigningKey for KeyRef<'_> {
    type Hasher = Sha256;

    // mail-auth canonicalises byte by byte; both overrides batch those writes before
    // they reach ring's SHA-256 (a call per byte made hashing cost more than an
    // Ed25519 signature).

    fn hash(&self, data: impl Writable) -> HashOutput {
        let mut hasher = ChunkedSha256::new();
        data.write(&mut hasher);
        hasher.finish()
    }

    fn sign(&self, input: impl Writable) -> mail_auth::Result<Vec<u8>> {
        let mut data = Vec::with_capacity(1024);
        input.write(&mut data);
        match self.0 {
            KeyPair::Ed25519(key) => key.sign(data.as_slice()),
            KeyPair::Rsa(key) => key.sign(data.as_slice()),
        }
    }

    fn algorithm(&self) -> Algorithm {
        match self.0 {
            KeyPair::Ed25519(_) => Algorithm::Ed25519Sha256,
            KeyPair::Rsa(_) => Algorithm::RsaSha256,
        }
    }
}

/// SHA-256 fed in chunks of up to 4 KiB however small the writes are.
struct ChunkedSha256 {
    context: <Sha256 as HashImpl>::Context,
    buf: [u8; 4096],
    len: usize,
}

impl ChunkedSha256 {
    fn new() -> Self {
        Self {
            context: Sha256::hasher(),
            buf: [0; 4096],
            len: 0,
        }
    }

    fn finish(mut self) -> HashOutput {
        self.context.write(&self.buf[..self.len]);
        self.context.complete()
    }
}

impl Writer for ChunkedSha256 {
    fn write(&mut self, data: &[u8]) {
        if self.len + data.len() > self.buf.len() {
            self.context.write(&self.buf[..self.len]);
            self.len = 0;
        }
        if data.len() > self.buf.len() {
            self.context.write(data);
        } else {
            self.buf[self.len..self.len + data.len()].copy_from_slice(data);
            self.len += data.len();
        }
    }
}

// Compile-time guarantee that keys and signers can be shared across threads.
const _: () = {
    const fn shareable<T: Send + Sync>() {}
    shareable::<DkimKey>();
    shareable::<DkimSigner>();
};

/// One DKIM private key and the domain and selector it signs for.
pub struct DkimKey {
    domain: String,
    selector: String,
    algorithm: DkimAlgorithm,
    bits: usize,
    /// The `p=` bytes: SubjectPublicKeyInfo DER for RSA, the raw 32 bytes for Ed25519.
    public_key: Vec<u8>,
    pair: KeyPair,
}

impl fmt::Debug for DkimKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the private key.
        f.debug_struct("DkimKey")
            .field("domain", &self.domain)
            .field("selector", &self.selector)
            .field("algorithm", &self.algorithm)
            .field("bits", &self.bits)
            .finish_non_exhaustive()
    }
}

impl DkimKey {
    /// Loads a key from a PEM string. `domain` is the `d=` of the signatures (stored
    /// lower-case; an internationalised domain must be given in its `xn--` form) and
    /// `selector` the `s=`.
    pub fn from_pem(domain: &str, selector: &str, pem: &str) -> Result<DkimKey, DkimError> {
        Self::load(domain, selector, pem.as_bytes(), "PEM string")
    }

    /// Makes a new key for `domain` and `selector`: Ed25519, or RSA of
    /// [`MIN_RSA_BITS`] (what every receiver verifies; Ed25519 is not verified by all).
    /// Returns it with its private key as PKCS#8 PEM, to store. RSA key generation
    /// takes a fraction of a second: call it off an async runtime's workers.
    pub fn generate(
        domain: &str,
        selector: &str,
        algorithm: DkimAlgorithm,
    ) -> Result<(DkimKey, String), DkimError> {
        let failed = |reason: String| DkimError::InvalidKey {
            domain: domain.to_string(),
            selector: selector.to_string(),
            origin: "generated".into(),
            algorithm,
            reason,
        };
        let der = match algorithm {
            DkimAlgorithm::Ed25519 => {
                let rng = ring::rand::SystemRandom::new();
                ring::signature::Ed25519KeyPair::generate_pkcs8(&rng)
                    .map_err(|e| failed(e.to_string()))?
                    .as_ref()
                    .to_vec()
            }
            DkimAlgorithm::Rsa2048 => {
                use rsa::pkcs8::EncodePrivateKey as _;
                let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, MIN_RSA_BITS)
                    .map_err(|e| failed(e.to_string()))?;
                key.to_pkcs8_der()
                    .map_err(|e| failed(e.to_string()))?
                    .as_bytes()
                    .to_vec()
            }
        };
        let pem = pem_private_key(&der);
        let key = Self::load(domain, selector, pem.as_bytes(), "generated")?;
        Ok((key, pem))
    }

    /// Loads a key from a PEM file (see [`DkimKey::from_pem`]).
    pub fn from_file(
        domain: &str,
        selector: &str,
        path: impl AsRef<Path>,
    ) -> Result<DkimKey, DkimError> {
        let path = path.as_ref();
        let pem = std::fs::read(path).map_err(|source| DkimError::Unreadable {
            domain: domain.to_string(),
            selector: selector.to_string(),
            path: path.to_path_buf(),
            source,
        })?;
        Self::load(domain, selector, &pem, &format!("file {}", path.display()))
    }

    fn load(domain: &str, selector: &str, pem: &[u8], origin: &str) -> Result<DkimKey, DkimError> {
        let domain = domain.trim().trim_end_matches('.').to_ascii_lowercase();
        let selector = selector.trim().to_string();
        validate_name(&domain, &selector, "domain", &domain)?;
        validate_name(&domain, &selector, "selector", &selector)?;
        let ctx = Ctx {
            domain: &domain,
            selector: &selector,
            origin,
        };

        let (kind, der) = private_key_section(pem).map_err(|reason| ctx.not_pem(reason))?;
        let (algorithm, bits, pair, public_key) = match kind {
            SectionKind::RsaPrivateKey => {
                let bits = rsa_private_key_bits(&der)
                    .ok_or_else(|| ctx.not_pem("the RSA PRIVATE KEY section is not PKCS#1 DER"))?;
                ctx.check_rsa_bits(bits)?;
                let key = RsaKey::<Sha256>::from_der(&der)
                    .map_err(|e| ctx.invalid(DkimAlgorithm::Rsa2048, e))?;
                let public_key = rsa_spki(&key.public_key());
                (DkimAlgorithm::Rsa2048, bits, KeyPair::Rsa(key), public_key)
            }
            SectionKind::PrivateKey => match pkcs8_algorithm(&der) {
                Some(Pkcs8Key::Ed25519) => {
                    // openssl writes PKCS#8 v1 (no public key in the document), which
                    // ring only reads through the "maybe unchecked" constructor; it
                    // still derives and checks the key pair.
                    let key = Ed25519Key::from_pkcs8_maybe_unchecked_der(&der)
                        .map_err(|e| ctx.invalid(DkimAlgorithm::Ed25519, e))?;
                    let public_key = key.public_key();
                    (
                        DkimAlgorithm::Ed25519,
                        256,
                        KeyPair::Ed25519(key),
                        public_key,
                    )
                }
                Some(Pkcs8Key::Rsa { bits }) => {
                    ctx.check_rsa_bits(bits)?;
                    let key = RsaKey::<Sha256>::from_pkcs8_der(&der)
                        .map_err(|e| ctx.invalid(DkimAlgorithm::Rsa2048, e))?;
                    let public_key = rsa_spki(&key.public_key());
                    (DkimAlgorithm::Rsa2048, bits, KeyPair::Rsa(key), public_key)
                }
                Some(Pkcs8Key::Other(found)) => return Err(ctx.unsupported(found)),
                None => return Err(ctx.not_pem("the PRIVATE KEY section is not PKCS#8 DER")),
            },
            SectionKind::EcPrivateKey => {
                return Err(ctx.unsupported("EC (an EC PRIVATE KEY section)".to_string()));
            }
            _ => return Err(ctx.not_pem("no private key section")),
        };
        Ok(DkimKey {
            domain,
            selector,
            algorithm,
            bits,
            public_key,
            pair,
        })
    }

    /// The signing domain (`d=`), lower-case.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The selector (`s=`).
    pub fn selector(&self) -> &str {
        &self.selector
    }

    pub fn algorithm(&self) -> DkimAlgorithm {
        self.algorithm
    }

    /// The key size in bits: the RSA modulus, or 256 for Ed25519.
    pub fn bits(&self) -> usize {
        self.bits
    }

    /// Where the public key is published: `selector._domainkey.domain`.
    pub fn dns_name(&self) -> String {
        format!("{}._domainkey.{}", self.selector, self.domain)
    }

    /// The TXT record value to publish at [`DkimKey::dns_name`], e.g.
    /// `v=DKIM1; k=ed25519; p=...`. RSA keys give SubjectPublicKeyInfo (what
    /// `openssl pkey -pubout` prints); a 2048-bit record is longer than 255 bytes, so it
    /// must be published as several strings of one TXT record (DNS providers' UIs
    /// usually split it themselves).
    pub fn dns_record(&self) -> String {
        format!(
            "v=DKIM1; k={}; p={}",
            self.algorithm.key_type(),
            base64::engine::general_purpose::STANDARD.encode(&self.public_key)
        )
    }

    /// Signs `message` (CRLF line ends, headers then body) and returns the
    /// `DKIM-Signature:` header line, folded and ending in CRLF, to put before it.
    pub fn signature_header(&self, message: &[u8]) -> Result<Vec<u8>, DkimError> {
        let mut out = Vec::with_capacity(512 + self.bits / 6);
        self.write_signature_header(message, &mut out)?;
        Ok(out)
    }

    fn write_signature_header(&self, message: &[u8], out: &mut Vec<u8>) -> Result<(), DkimError> {
        let headers = headers_to_sign(message);
        if headers.first() != Some(&"From") {
            return Err(self.sign_error("the message has no From header".to_string()));
        }
        let signature = MailAuthSigner::from_key(KeyRef(&self.pair))
            .domain(self.domain.as_str())
            .selector(self.selector.as_str())
            .headers(headers)
            .header_canonicalization(Canonicalization::Relaxed)
            .body_canonicalization(Canonicalization::Relaxed)
            .sign(message)
            .map_err(|e| self.sign_error(e.to_string()))?;
        signature.write_header(out);
        Ok(())
    }

    fn sign_error(&self, reason: String) -> DkimError {
        DkimError::Sign {
            domain: self.domain.clone(),
            selector: self.selector.clone(),
            reason,
        }
    }
}

/// The names to put in `h=`: those of [`SIGNED_HEADERS`] the message has, then `From`
/// once more (an instance that does not exist, so none can be added). mail-auth lists
/// each present header as often as it occurs and appends the names it did not find.
fn headers_to_sign(message: &[u8]) -> Vec<&'static str> {
    let mut present = [false; SIGNED_HEADERS.len()];
    for name in header_names(message) {
        if let Some(i) = SIGNED_HEADERS
            .iter()
            .position(|h| name.eq_ignore_ascii_case(h.as_bytes()))
        {
            present[i] = true;
        }
    }
    let mut names: Vec<&'static str> = SIGNED_HEADERS
        .iter()
        .zip(present)
        .filter_map(|(name, found)| found.then_some(*name))
        .collect();
    if present[0] {
        names.push("From");
    }
    names
}

/// The names of the header fields of `message`, up to the empty line.
fn header_names(message: &[u8]) -> impl Iterator<Item = &[u8]> {
    message
        .split(|&b| b == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
        .take_while(|line| !line.is_empty())
        .filter(|line| !matches!(line.first(), Some(b' ' | b'\t')))
        .filter_map(|line| {
            let colon = line.iter().position(|&b| b == b':')?;
            Some(line[..colon].trim_ascii_end())
        })
}

/// Sending domain -> key, with an optional fallback key for every other domain.
#[derive(Debug, Default)]
pub struct DkimSigner {
    keys: HashMap<String, DkimKey>,
    fallback: Option<DkimKey>,
}

impl DkimSigner {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the key of its domain ([`DkimKey::domain`]); a second key for the same
    /// domain is refused.
    pub fn add_key(&mut self, key: DkimKey) -> Result<(), DkimError> {
        match self.keys.entry(key.domain.clone()) {
            std::collections::hash_map::Entry::Occupied(existing) => {
                Err(DkimError::DuplicateDomain {
                    domain: key.domain,
                    existing: existing.get().selector.clone(),
                    added: key.selector,
                })
            }
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(key);
                Ok(())
            }
        }
    }

    /// Sets the key that signs mail from domains without a key of their own; its
    /// signatures carry its own `d=`.
    pub fn set_fallback(&mut self, key: DkimKey) {
        self.fallback = Some(key);
    }

    /// Whether no key at all is configured.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty() && self.fallback.is_none()
    }

    /// The key that signs mail from `from_domain` (case and a trailing dot ignored):
    /// the domain's own key, else the fallback.
    pub fn key_for(&self, from_domain: &str) -> Option<&DkimKey> {
        let domain = from_domain.trim().trim_end_matches('.');
        let own = if domain.bytes().any(|b| b.is_ascii_uppercase()) {
            self.keys.get(&domain.to_ascii_lowercase())
        } else {
            self.keys.get(domain)
        };
        own.or(self.fallback.as_ref())
    }

    /// Signs `message` with the key for `from_domain` (the domain of its From address)
    /// and returns it with the `DKIM-Signature:` header prepended, or `None` when no key
    /// applies. `message` must use CRLF line ends, as `maily_engine::message::build`
    /// writes them.
    pub fn sign(&self, from_domain: &str, message: &[u8]) -> Result<Option<Vec<u8>>, DkimError> {
        let Some(key) = self.key_for(from_domain) else {
            return Ok(None);
        };
        let mut out = Vec::with_capacity(message.len() + 512 + key.bits / 6);
        key.write_signature_header(message, &mut out)?;
        out.extend_from_slice(message);
        Ok(Some(out))
    }
}

/// What the error constructors of one load need to name the key.
struct Ctx<'a> {
    domain: &'a str,
    selector: &'a str,
    origin: &'a str,
}

impl Ctx<'_> {
    fn not_pem(&self, reason: impl Into<String>) -> DkimError {
        DkimError::NotPem {
            domain: self.domain.to_string(),
            selector: self.selector.to_string(),
            origin: self.origin.to_string(),
            reason: reason.into(),
        }
    }

    fn unsupported(&self, found: String) -> DkimError {
        DkimError::UnsupportedAlgorithm {
            domain: self.domain.to_string(),
            selector: self.selector.to_string(),
            origin: self.origin.to_string(),
            found,
        }
    }

    fn invalid(&self, algorithm: DkimAlgorithm, e: mail_auth::Error) -> DkimError {
        DkimError::InvalidKey {
            domain: self.domain.to_string(),
            selector: self.selector.to_string(),
            origin: self.origin.to_string(),
            algorithm,
            reason: e.to_string(),
        }
    }

    fn check_rsa_bits(&self, bits: usize) -> Result<(), DkimError> {
        if bits < MIN_RSA_BITS {
            return Err(DkimError::RsaKeyTooShort {
                domain: self.domain.to_string(),
                selector: self.selector.to_string(),
                origin: self.origin.to_string(),
                bits,
            });
        }
        Ok(())
    }
}

/// Checks a domain or selector: dot-separated labels of letters, digits, `-` and `_`,
/// so nothing in them can break the signature header or the DNS name.
fn validate_name(
    domain: &str,
    selector: &str,
    field: &'static str,
    value: &str,
) -> Result<(), DkimError> {
    let reason = if value.is_empty() {
        Some("it is empty")
    } else if value.len() > 253 {
        Some("it is longer than 253 characters")
    } else if !value.is_ascii() {
        Some("it is not ASCII (give an internationalised domain in its xn-- form)")
    } else if value
        .bytes()
        .any(|b| !(b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.'))
    {
        Some("only letters, digits, '-', '_' and '.' are allowed")
    } else if value
        .split('.')
        .any(|label| label.is_empty() || label.len() > 63)
    {
        Some("it has an empty label or one longer than 63 characters")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(DkimError::InvalidName {
            domain: domain.to_string(),
            selector: selector.to_string(),
            field,
            reason,
        }),
        None => Ok(()),
    }
}

/// The first private key section of a PEM document, or why there is none.
/// PKCS#8 DER as a `PRIVATE KEY` PEM section (base64 in lines of 64).
fn pem_private_key(der: &[u8]) -> String {
    let text = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::with_capacity(text.len() + text.len() / 64 + 64);
    pem.push_str("-----BEGIN PRIVATE KEY-----\n");
    for line in text.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        pem.push('\n');
    }
    pem.push_str("-----END PRIVATE KEY-----\n");
    pem
}

fn private_key_section(pem: &[u8]) -> Result<(SectionKind, Vec<u8>), String> {
    let mut other = Vec::new();
    for item in <(SectionKind, Vec<u8>) as PemObject>::pem_slice_iter(pem) {
        let (kind, der) = item.map_err(|e| format!("malformed PEM: {e}"))?;
        match kind {
            SectionKind::PrivateKey | SectionKind::RsaPrivateKey | SectionKind::EcPrivateKey => {
                return Ok((kind, der));
            }
            other_kind => other.push(format!("{other_kind:?}")),
        }
    }
    let text = String::from_utf8_lossy(pem);
    Err(if text.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----") {
        "the key is encrypted; store it unencrypted (openssl pkey -in KEY -out PLAIN)".to_string()
    } else if other.iter().any(|k| k == "PublicKey") {
        "it holds a public key, not the private key".to_string()
    } else if !other.is_empty() {
        format!("no private key section (found: {})", other.join(", "))
    } else if text.contains("-----BEGIN ") {
        "no private key section".to_string()
    } else {
        "no -----BEGIN ...----- line".to_string()
    })
}

/// The algorithm of a PKCS#8 key.
enum Pkcs8Key {
    Ed25519,
    Rsa { bits: usize },
    Other(String),
}

const OID_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
const OID_ED25519: &[u8] = &[0x2b, 0x65, 0x70];

/// Reads the AlgorithmIdentifier of a PKCS#8 PrivateKeyInfo (and the modulus size of an
/// RSA key); `None` when the DER is not PrivateKeyInfo.
fn pkcs8_algorithm(der: &[u8]) -> Option<Pkcs8Key> {
    let mut info = Der(der).expect(TAG_SEQUENCE)?;
    info.expect(TAG_INTEGER)?; // version
    let mut alg = info.expect(TAG_SEQUENCE)?;
    let oid = alg.expect(TAG_OID)?.0;
    let private_key = info.expect(TAG_OCTET_STRING)?.0;
    Some(match oid {
        OID_ED25519 => Pkcs8Key::Ed25519,
        OID_RSA => Pkcs8Key::Rsa {
            bits: rsa_private_key_bits(private_key)?,
        },
        other => Pkcs8Key::Other(oid_name(other)),
    })
}

/// The modulus size of a PKCS#1 RSAPrivateKey.
fn rsa_private_key_bits(der: &[u8]) -> Option<usize> {
    let mut key = Der(der).expect(TAG_SEQUENCE)?;
    key.expect(TAG_INTEGER)?; // version
    let modulus = key.expect(TAG_INTEGER)?.0;
    let first = modulus.iter().position(|&b| b != 0)?;
    Some((modulus.len() - first) * 8 - modulus[first].leading_zeros() as usize)
}

fn oid_name(oid: &[u8]) -> String {
    let name = match oid {
        [0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01] => "EC",
        [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a] => "RSASSA-PSS",
        [0x2a, 0x86, 0x48, 0xce, 0x38, 0x04, 0x01] => "DSA",
        [0x2b, 0x65, 0x71] => "Ed448",
        [0x2b, 0x65, 0x6e] => "X25519",
        [0x2b, 0x65, 0x6f] => "X448",
        _ => "",
    };
    let dotted = oid_dotted(oid);
    if name.is_empty() {
        format!("OID {dotted}")
    } else {
        format!("{name} (OID {dotted})")
    }
}

fn oid_dotted(oid: &[u8]) -> String {
    let mut arcs: Vec<u64> = Vec::new();
    let mut value: u64 = 0;
    for &b in oid {
        value = (value << 7) | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            if arcs.is_empty() {
                let first = (value / 40).min(2);
                arcs.push(first);
                arcs.push(value - first * 40);
            } else {
                arcs.push(value);
            }
            value = 0;
        }
    }
    arcs.iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(".")
}

/// Wraps a PKCS#1 RSAPublicKey in a SubjectPublicKeyInfo (rsaEncryption, NULL).
fn rsa_spki(rsa_public_key: &[u8]) -> Vec<u8> {
    let mut algorithm = vec![TAG_OID];
    push_len(&mut algorithm, OID_RSA.len());
    algorithm.extend_from_slice(OID_RSA);
    algorithm.extend_from_slice(&[0x05, 0x00]);

    let mut body = vec![TAG_SEQUENCE];
    push_len(&mut body, algorithm.len());
    body.extend_from_slice(&algorithm);
    body.push(TAG_BIT_STRING);
    push_len(&mut body, rsa_public_key.len() + 1);
    body.push(0); // no unused bits
    body.extend_from_slice(rsa_public_key);

    let mut spki = vec![TAG_SEQUENCE];
    push_len(&mut spki, body.len());
    spki.extend_from_slice(&body);
    spki
}

fn push_len(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
}

const TAG_INTEGER: u8 = 0x02;
const TAG_BIT_STRING: u8 = 0x03;
const TAG_OCTET_STRING: u8 = 0x04;
const TAG_OID: u8 = 0x06;
const TAG_SEQUENCE: u8 = 0x30;

/// A cursor over DER bytes, just enough to read the headers of key documents.
struct Der<'a>(&'a [u8]);

impl<'a> Der<'a> {
    /// Reads one element with tag `tag` and returns a cursor over its contents.
    fn expect(&mut self, tag: u8) -> Option<Der<'a>> {
        let (&actual, rest) = self.0.split_first()?;
        if actual != tag {
            return None;
        }
        let (&first, mut rest) = rest.split_first()?;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 || rest.len() < n {
                return None;
            }
            let (len_bytes, after) = rest.split_at(n);
            rest = after;
            len_bytes
                .iter()
                .fold(0usize, |acc, &b| (acc << 8) | usize::from(b))
        };
        if rest.len() < len {
            return None;
        }
        let (contents, after) = rest.split_at(len);
        self.0 = after;
        Some(Der(contents))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RSA2048: &str = include_str!("../tests/data/dkim/rsa2048.pem");
    const RSA2048_PKCS1: &str = include_str!("../tests/data/dkim/rsa2048-pkcs1.pem");
    const RSA2048_PUB: &str = include_str!("../tests/data/dkim/rsa2048.pub.pem");
    const RSA1024: &str = include_str!("../tests/data/dkim/rsa1024.pem");
    const ED25519: &str = include_str!("../tests/data/dkim/ed25519.pem");
    const ED25519_PUB: &str = include_str!("../tests/data/dkim/ed25519.pub.pem");
    const EC_P256: &str = include_str!("../tests/data/dkim/ec-p256.pem");

    fn data(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/dkim")
            .join(name)
    }

    fn pem_body(pem: &str) -> String {
        pem.lines().filter(|l| !l.starts_with("-----")).collect()
    }

    const MESSAGE: &[u8] = b"From: News <news@shop.example>\r\nTo: <ann@example.com>\r\n\
        Subject: Hi\r\nX-Other: 1\r\n\r\nHello\r\n";

    #[test]
    fn generated_keys_load_back_and_differ() {
        for algorithm in [DkimAlgorithm::Ed25519, DkimAlgorithm::Rsa2048] {
            let (key, pem) = DkimKey::generate("shop.example", "m1", algorithm).unwrap();
            assert_eq!(key.algorithm(), algorithm);
            let again = DkimKey::from_pem("shop.example", "m1", &pem).unwrap();
            assert_eq!(again.dns_record(), key.dns_record(), "{algorithm}");
            let (other, _) = DkimKey::generate("shop.example", "m1", algorithm).unwrap();
            assert_ne!(
                other.dns_record(),
                key.dns_record(),
                "{algorithm}: fresh each time"
            );
            let signed = key.signature_header(MESSAGE).unwrap();
            let header = String::from_utf8(signed).unwrap();
            assert!(header.contains(&format!("a={}", algorithm.signature_algorithm())));
            assert!(header.contains("d=shop.example") && header.contains("s=m1"));
        }
        let (rsa, _) = DkimKey::generate("shop.example", "m1", DkimAlgorithm::Rsa2048).unwrap();
        assert_eq!(rsa.bits(), MIN_RSA_BITS);
    }

    #[test]
    fn loads_each_supported_format() {
        let ed = DkimKey::from_pem("Shop.Example.", "s1", ED25519).unwrap();
        assert_eq!(ed.algorithm(), DkimAlgorithm::Ed25519);
        assert_eq!(ed.domain(), "shop.example");
        assert_eq!(ed.dns_name(), "s1._domainkey.shop.example");
        assert!(ed.dns_record().starts_with("v=DKIM1; k=ed25519; p="));
        // The raw key is the last 32 bytes of the SubjectPublicKeyInfo openssl printed.
        let spki = base64::engine::general_purpose::STANDARD
            .decode(pem_body(ED25519_PUB))
            .unwrap();
        let p = ed.dns_record().split("p=").nth(1).unwrap().to_string();
        assert_eq!(
            base64::engine::general_purpose::STANDARD.decode(p).unwrap(),
            spki[spki.len() - 32..]
        );

        for pem in [RSA2048, RSA2048_PKCS1] {
            let rsa = DkimKey::from_pem("shop.example", "r1", pem).unwrap();
            assert_eq!(rsa.algorithm(), DkimAlgorithm::Rsa2048);
            assert_eq!(rsa.bits(), 2048);
            assert_eq!(
                rsa.dns_record(),
                format!("v=DKIM1; k=rsa; p={}", pem_body(RSA2048_PUB)),
                "p= must be the SubjectPublicKeyInfo openssl prints"
            );
        }

        let from_file = DkimKey::from_file("shop.example", "s1", data("ed25519.pem")).unwrap();
        assert_eq!(from_file.dns_record(), ed.dns_record());
        assert!(!format!("{from_file:?}").contains("pair"));
    }

    #[test]
    fn missing_file_names_path_and_key() {
        let err = DkimKey::from_file("shop.example", "s1", data("nope.pem")).unwrap_err();
        assert!(matches!(err, DkimError::Unreadable { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains("s1._domainkey.shop.example"), "{msg}");
        assert!(msg.contains("nope.pem"), "{msg}");
    }

    #[test]
    fn rejects_text_that_is_not_a_private_key() {
        for (pem, expected) in [
            ("hello", "no -----BEGIN"),
            (ED25519_PUB, "public key"),
            (
                "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
                "encrypted",
            ),
            (
                "-----BEGIN PRIVATE KEY-----\n!!!!\n-----END PRIVATE KEY-----\n",
                "malformed PEM",
            ),
            (
                "-----BEGIN PRIVATE KEY-----\nMAMCAQA=\n-----END PRIVATE KEY-----\n",
                "not PKCS#8",
            ),
        ] {
            let err = DkimKey::from_pem("shop.example", "s1", pem).unwrap_err();
            assert!(matches!(err, DkimError::NotPem { .. }), "{pem}: {err:?}");
            let msg = err.to_string();
            assert!(msg.contains(expected), "{pem}: {msg}");
            assert!(
                msg.contains("s1._domainkey.shop.example (PEM string)"),
                "{msg}"
            );
        }
    }

    #[test]
    fn rejects_unsupported_algorithms() {
        let err = DkimKey::from_pem("shop.example", "s1", EC_P256).unwrap_err();
        assert!(
            matches!(&err, DkimError::UnsupportedAlgorithm { found, .. } if found.starts_with("EC (OID 1.2.840.10045.2.1)")),
            "{err:?}"
        );
        assert!(err.to_string().contains("use Ed25519 or RSA"), "{err}");
    }

    #[test]
    fn rejects_short_rsa_keys() {
        let err = DkimKey::from_file("shop.example", "old", data("rsa1024.pem")).unwrap_err();
        assert!(
            matches!(err, DkimError::RsaKeyTooShort { bits: 1024, .. }),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(msg.contains("1024 bits is too short"), "{msg}");
        assert!(msg.contains("rsa1024.pem"), "{msg}");

        // The same key as PKCS#1: the RSAPrivateKey inside the PKCS#8 document.
        let der = base64::engine::general_purpose::STANDARD
            .decode(pem_body(RSA1024))
            .unwrap();
        let mut info = Der(&der).expect(TAG_SEQUENCE).unwrap();
        info.expect(TAG_INTEGER).unwrap();
        info.expect(TAG_SEQUENCE).unwrap();
        let pkcs1 = info.expect(TAG_OCTET_STRING).unwrap().0;
        let pem = format!(
            "-----BEGIN RSA PRIVATE KEY-----\n{}\n-----END RSA PRIVATE KEY-----\n",
            base64::engine::general_purpose::STANDARD.encode(pkcs1)
        );
        let err = DkimKey::from_pem("shop.example", "old", &pem).unwrap_err();
        assert!(
            matches!(err, DkimError::RsaKeyTooShort { bits: 1024, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn rejects_corrupt_keys() {
        // Flip a byte inside the Ed25519 seed's neighbourhood: the structure stays
        // PKCS#8 but ring refuses the document.
        let der = base64::engine::general_purpose::STANDARD
            .decode(pem_body(ED25519))
            .unwrap();
        let mut bad = der.clone();
        bad[15] ^= 0x01; // the inner OCTET STRING's length
        let pem = format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            base64::engine::general_purpose::STANDARD.encode(&bad)
        );
        let err = DkimKey::from_pem("shop.example", "s1", &pem).unwrap_err();
        assert!(
            matches!(
                err,
                DkimError::InvalidKey {
                    algorithm: DkimAlgorithm::Ed25519,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn rejects_bad_names() {
        for (domain, selector, field) in [
            ("", "s1", "domain"),
            ("shop.example", "", "selector"),
            ("shop.example", "s1;x=1", "selector"),
            ("shop.example", "s1\r\nBcc: x", "selector"),
            ("shop..example", "s1", "domain"),
            ("bücher.example", "s1", "domain"),
        ] {
            let err = DkimKey::from_pem(domain, selector, ED25519).unwrap_err();
            assert!(
                matches!(&err, DkimError::InvalidName { field: f, .. } if *f == field),
                "{domain:?}/{selector:?}: {err:?}"
            );
        }
    }

    #[test]
    fn signer_picks_key_by_domain_then_fallback() {
        let mut signer = DkimSigner::new();
        assert!(signer.is_empty());
        signer
            .add_key(DkimKey::from_pem("shop.example", "s1", ED25519).unwrap())
            .unwrap();
        let dup = signer
            .add_key(DkimKey::from_pem("SHOP.example", "s2", RSA2048).unwrap())
            .unwrap_err();
        assert!(dup.to_string().contains("s1 and s2"), "{dup}");

        assert_eq!(signer.key_for("Shop.Example").unwrap().selector(), "s1");
        assert!(signer.sign("other.example", MESSAGE).unwrap().is_none());

        signer.set_fallback(DkimKey::from_pem("maily.example", "fb", RSA2048).unwrap());
        assert_eq!(
            signer.key_for("other.example").unwrap().domain(),
            "maily.example"
        );

        let signed = signer.sign("shop.example", MESSAGE).unwrap().unwrap();
        assert!(signed.ends_with(MESSAGE));
        let header = String::from_utf8(signed[..signed.len() - MESSAGE.len()].to_vec()).unwrap();
        assert!(
            header.starts_with(
                "DKIM-Signature: v=1; a=ed25519-sha256; s=s1; d=shop.example; c=relaxed/relaxed;"
            ),
            "{header}"
        );
        assert!(header.ends_with(";\r\n"), "{header}");
        let h = header.replace("\r\n\t", "");
        assert!(h.contains("h=Subject:To:From:From;"), "{header}");
    }

    #[test]
    fn chunked_hash_equals_one_shot_hash() {
        let data: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
        let mut one_shot = Sha256::hasher();
        one_shot.write(&data);
        let expected = one_shot.complete();

        let mut chunked = ChunkedSha256::new();
        let (mut at, mut step) = (0, 1);
        while at < data.len() {
            let end = (at + step).min(data.len());
            chunked.write(&data[at..end]);
            at = end;
            // 1, 2, 3 ... bytes, then writes larger than the buffer.
            step = if step > 40 { 4_500 } else { step + 1 };
        }
        assert_eq!(chunked.finish().as_ref(), expected.as_ref());
    }

    #[test]
    fn lists_only_present_headers_and_oversigns_from() {
        assert_eq!(headers_to_sign(MESSAGE), ["From", "To", "Subject", "From"]);
        let key = DkimKey::from_pem("shop.example", "s1", ED25519).unwrap();
        let err = key
            .signature_header(b"To: <ann@example.com>\r\n\r\nbody\r\n")
            .unwrap_err();
        assert!(err.to_string().contains("no From header"), "{err}");
    }
}
