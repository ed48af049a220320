//! Identifiers: tenants are slugs, campaigns and messages are UUIDs.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use uuid::Uuid;

/// Why a string is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error(
        "tenant id must be 1-63 characters of a-z, 0-9 and '-', starting with a letter or digit: {0:?}"
    )]
    Tenant(String),
    #[error("{kind} id is not a UUID: {value:?}")]
    Uuid { kind: &'static str, value: String },
}

/// A tenant: one sending customer, the unit of isolation.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantId(String);

impl TenantId {
    /// Parses a tenant slug.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let ok = !s.is_empty()
            && s.len() <= 63
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !s.starts_with('-');
        if ok {
            Ok(TenantId(s.to_string()))
        } else {
            Err(IdError::Tenant(s.to_string()))
        }
    }

    /// The slug as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for TenantId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for TenantId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        TenantId::parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

macro_rules! uuid_id {
    ($name:ident, $kind:literal, $doc:literal) => {
        #[doc = $doc]
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
        )]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// A fresh id: a UUIDv7, its creation time in milliseconds then 74
            /// random bits. Ids made one after another sort together, so the store's
            /// indexes on them grow at one end and stay in cache, not scattered over
            /// the whole index (a million-recipient campaign's rows in SQLite).
            pub fn new() -> Self {
                $name(Uuid::now_v7())
            }

            /// Parses the hyphenated UUID form.
            pub fn parse(s: &str) -> Result<Self, IdError> {
                Uuid::parse_str(s).map($name).map_err(|_| IdError::Uuid {
                    kind: $kind,
                    value: s.to_string(),
                })
            }

            /// The 16 raw bytes, used in canonical encodings.
            pub fn as_bytes(&self) -> &[u8; 16] {
                self.0.as_bytes()
            }

            /// Builds the id from its 16 raw bytes.
            pub fn from_bytes(b: [u8; 16]) -> Self {
                $name(Uuid::from_bytes(b))
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.hyphenated().fmt(f)
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }
    };
}

uuid_id!(
    CampaignId,
    "campaign",
    "A campaign: one template sent to many recipients."
);
uuid_id!(ListId, "list", "A tenant's named list of contacts.");
uuid_id!(
    SegmentId,
    "segment",
    "A saved filter over a tenant's contacts."
);
uuid_id!(
    MessageId,
    "message",
    "One message to one recipient; also its idempotency key."
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_slugs() {
        assert!(TenantId::parse("acme-1").is_ok());
        assert!(TenantId::parse("Acme").is_err());
        assert!(TenantId::parse("-acme").is_err());
        assert!(TenantId::parse("").is_err());
    }

    #[test]
    fn uuid_ids_round_trip_and_name_the_kind() {
        let c = CampaignId::new();
        assert_eq!(CampaignId::parse(&c.to_string()).unwrap(), c);
        let err = MessageId::parse("nope").unwrap_err();
        assert_eq!(err.to_string(), "message id is not a UUID: \"nope\"");
    }
}
