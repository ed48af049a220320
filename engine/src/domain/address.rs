//! Email addresses and domains (RFC 5321 mailbox syntax, ASCII only).

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// Why a string is not a usable email address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("address is empty")]
    Empty,
    #[error("address has no '@'")]
    MissingAt,
    #[error("local part (before '@') is empty")]
    EmptyLocalPart,
    #[error("local part is longer than 64 characters")]
    LocalPartTooLong,
    #[error("local part contains the character {0:?}, which is not allowed")]
    InvalidLocalChar(char),
    #[error("local part starts or ends with a dot, or has two dots in a row")]
    MisplacedDot,
    #[error("address is longer than 254 characters")]
    TooLong,
    #[error("domain: {0}")]
    Domain(#[from] DomainError),
}

/// Why a string is not a usable domain name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    #[error("domain is empty")]
    Empty,
    #[error("domain is longer than 253 characters")]
    TooLong,
    #[error("domain has an empty label")]
    EmptyLabel,
    #[error("domain label {0:?} is longer than 63 characters")]
    LabelTooLong(String),
    #[error("domain label {0:?} starts or ends with '-'")]
    LabelHyphen(String),
    #[error("domain contains the character {0:?}, which is not allowed")]
    InvalidChar(char),
}

/// A lower-cased DNS domain name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Domain(String);

impl Domain {
    /// One DNS label (`bounces`, `track`), lower-cased: 1-63 letters, digits and
    /// hyphens, no hyphen at either end; `None` for anything else.
    pub fn label(input: &str) -> Option<String> {
        let label = input.to_ascii_lowercase();
        let ok = (1..=63).contains(&label.len())
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        ok.then_some(label)
    }

    /// Parses a domain name: letters, digits and hyphens in dot-separated labels.
    pub fn parse(input: &str) -> Result<Self, DomainError> {
        let s = input.strip_suffix('.').unwrap_or(input);
        if s.is_empty() {
            return Err(DomainError::Empty);
        }
        if s.len() > 253 {
            return Err(DomainError::TooLong);
        }
        for label in s.split('.') {
            if label.is_empty() {
                return Err(DomainError::EmptyLabel);
            }
            if label.len() > 63 {
                return Err(DomainError::LabelTooLong(label.to_string()));
            }
            if let Some(c) = label
                .chars()
                .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
            {
                return Err(DomainError::InvalidChar(c));
            }
            if label.starts_with('-') || label.ends_with('-') {
                return Err(DomainError::LabelHyphen(label.to_string()));
            }
        }
        Ok(Domain(s.to_ascii_lowercase()))
    }

    /// The domain as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A mailbox address `local@domain`; the domain is lower-cased, the local part kept as given.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EmailAddress {
    full: String,
    at: usize,
}

impl EmailAddress {
    /// Parses a dot-atom address. Quoted local parts and non-ASCII (SMTPUTF8) are refused.
    pub fn parse(input: &str) -> Result<Self, AddressError> {
        Self::parse_with(input, 64)
    }

    /// Parses a return path we generate ourselves (VERP): like [`EmailAddress::parse`]
    /// but the local part may pass RFC 5321's 64 octets, as servers accept in practice
    /// (RFC 5321 4.5.3.1 asks them to avoid such limits); the whole address still fits
    /// in 254.
    pub fn parse_return_path(input: &str) -> Result<Self, AddressError> {
        Self::parse_with(input, 253)
    }

    fn parse_with(input: &str, max_local: usize) -> Result<Self, AddressError> {
        let s = input.trim();
        if s.is_empty() {
            return Err(AddressError::Empty);
        }
        if s.len() > 254 {
            return Err(AddressError::TooLong);
        }
        let at = s.rfind('@').ok_or(AddressError::MissingAt)?;
        let (local, domain) = (&s[..at], &s[at + 1..]);
        if local.is_empty() {
            return Err(AddressError::EmptyLocalPart);
        }
        if local.len() > max_local {
            return Err(AddressError::LocalPartTooLong);
        }
        if let Some(c) = local.chars().find(|c| !is_atext(*c) && *c != '.') {
            return Err(AddressError::InvalidLocalChar(c));
        }
        if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
            return Err(AddressError::MisplacedDot);
        }
        let domain = Domain::parse(domain)?;
        let full = format!("{local}@{domain}");
        Ok(EmailAddress { full, at })
    }

    /// The part before the '@'.
    pub fn local_part(&self) -> &str {
        &self.full[..self.at]
    }

    /// The domain after the '@', lower-cased.
    pub fn domain(&self) -> &str {
        &self.full[self.at + 1..]
    }

    /// The whole address.
    pub fn as_str(&self) -> &str {
        &self.full
    }

    /// Whether both name the same mailbox: equal but for ASCII case, in the local part
    /// too. RFC 5321 lets a server treat local parts case-sensitively, but mailbox
    /// providers do not, and a report or an unsubscribe may come back in another case
    /// than the one sent.
    pub fn same_mailbox(&self, other: &EmailAddress) -> bool {
        self.full.eq_ignore_ascii_case(&other.full)
    }

    /// The form suppressions are kept and looked up in: the whole address in ASCII
    /// lower case (see [`EmailAddress::same_mailbox`]).
    pub fn mailbox_key(&self) -> EmailAddress {
        EmailAddress {
            full: self.full.to_ascii_lowercase(),
            at: self.at,
        }
    }
}

fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c)
}

impl fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

impl std::str::FromStr for Domain {
    type Err = DomainError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl std::str::FromStr for EmailAddress {
    type Err = AddressError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for EmailAddress {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.full)
    }
}

impl<'de> Deserialize<'de> for EmailAddress {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        EmailAddress::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_ordinary_addresses_and_lowercases_the_domain() {
        let a = EmailAddress::parse("Jane.Doe+news@Example.COM").unwrap();
        assert_eq!(a.as_str(), "Jane.Doe+news@example.com");
        assert_eq!(a.local_part(), "Jane.Doe+news");
        assert_eq!(a.domain(), "example.com");
    }

    #[test]
    fn names_what_is_wrong() {
        assert_eq!(EmailAddress::parse(""), Err(AddressError::Empty));
        assert_eq!(EmailAddress::parse("jane"), Err(AddressError::MissingAt));
        assert_eq!(
            EmailAddress::parse("@x.org"),
            Err(AddressError::EmptyLocalPart)
        );
        assert_eq!(
            EmailAddress::parse("a..b@x.org"),
            Err(AddressError::MisplacedDot)
        );
        assert_eq!(
            EmailAddress::parse("a b@x.org"),
            Err(AddressError::InvalidLocalChar(' '))
        );
        assert_eq!(
            EmailAddress::parse("a\r\nBcc: x@y.org"),
            Err(AddressError::InvalidLocalChar('\r'))
        );
        assert!(matches!(
            EmailAddress::parse("a@-x.org"),
            Err(AddressError::Domain(DomainError::LabelHyphen(_)))
        ));
        assert!(matches!(
            EmailAddress::parse("a@x..org"),
            Err(AddressError::Domain(DomainError::EmptyLabel))
        ));
    }

    proptest! {
        #[test]
        fn parsed_addresses_never_contain_line_breaks(s in "\\PC{0,80}") {
            if let Ok(a) = EmailAddress::parse(&s) {
                prop_assert!(!a.as_str().contains(['\r', '\n', ' ']));
                prop_assert_eq!(EmailAddress::parse(a.as_str()).unwrap(), a);
            }
        }
    }
}
