//! Message rates as operators write them: `<messages>/<unit>`, e.g. `50/s` or
//! `3000/m`. Delivery throttles and the API's tenant quotas both use them.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// A message rate: `messages` per `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub messages: u32,
    pub per: Duration,
}

impl Rate {
    /// The time between two messages at this rate.
    pub fn interval(&self) -> Duration {
        self.per / self.messages.max(1)
    }
}

/// Why a rate could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "bad rate {input:?}: expected <messages>/<unit> with unit s, m or h (e.g. \"50/s\", \"3000/m\")"
)]
pub struct RateParseError {
    pub input: String,
}

impl FromStr for Rate {
    type Err = RateParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || RateParseError {
            input: s.to_string(),
        };
        let (n, unit) = s.trim().split_once('/').ok_or_else(bad)?;
        let messages: u32 = n.trim().parse().map_err(|_| bad())?;
        let per = match unit.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            _ => return Err(bad()),
        };
        if messages == 0 {
            return Err(bad());
        }
        Ok(Rate { messages, per })
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.per.as_secs() {
            1 => "s",
            60 => "m",
            3600 => "h",
            _ => return write!(f, "{}/{}ms", self.messages, self.per.as_millis()),
        };
        write!(f, "{}/{unit}", self.messages)
    }
}
