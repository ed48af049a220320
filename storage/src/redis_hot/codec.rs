//! How the Redis adapter names its keys and encodes its values.
//!
//! Everything here is pure, so the layout can be tested without a server.

use maily_engine::ports::{Claim, HotError};
use maily_engine::{CampaignId, CampaignStats, TenantId, Timestamp};
use std::time::Duration;

/// The longest time to live sent to Redis: a hundred years, far beyond any real use and
/// far below the server's overflow limit.
const MAX_TTL_MS: u128 = 100 * 365 * 24 * 3600 * 1000;

/// The key layout under one prefix.
#[derive(Debug, Clone)]
pub(super) struct Keys {
    prefix: String,
}

impl Keys {
    pub(super) fn new(prefix: &str) -> Self {
        Keys {
            prefix: prefix.to_string(),
        }
    }

    /// A string holding an idempotency key's state: `{prefix}idem:{key}`.
    pub(super) fn idempotency(&self, key: &str) -> String {
        format!("{}idem:{key}", self.prefix)
    }

    /// A set of suppressed addresses: `{prefix}supp:{tenant}`.
    pub(super) fn suppression(&self, tenant: &TenantId) -> String {
        format!("{}supp:{tenant}", self.prefix)
    }

    /// A hash of a campaign's live counters: `{prefix}live:{campaign}`.
    pub(super) fn live_stats(&self, campaign: &CampaignId) -> String {
        format!("{}live:{campaign}", self.prefix)
    }

    /// A hash holding a token bucket's level and refill time: `{prefix}bucket:{name}`.
    pub(super) fn bucket(&self, name: &str) -> String {
        format!("{}bucket:{name}", self.prefix)
    }
}

/// The value of a key claimed at `since` by the attempt `nonce`: `c:{since}:{nonce}`.
///
/// The nonce lets a claimer recognise its own write when the client re-sends a `SET`
/// whose reply was lost to a dropped connection.
pub(super) fn claimed(since: Timestamp, nonce: &str) -> String {
    format!("c:{}:{nonce}", since.0)
}

/// The value of a key whose work is done: `d:{outcome}`.
pub(super) fn done(outcome: &str) -> String {
    format!("d:{outcome}")
}

/// Reads a stored claim value back as the state it records; `instance` is the reader's
/// own nonce prefix, which tells its own claims from other processes'.
pub(super) fn decode_claim(key: &str, value: &str, instance: &str) -> Result<Claim, HotError> {
    if let Some(outcome) = value.strip_prefix("d:") {
        return Ok(Claim::Done {
            outcome: outcome.to_string(),
        });
    }
    let rest = value
        .strip_prefix("c:")
        .ok_or_else(|| corrupt(key, format!("not a claim: {value:?}")))?;
    let (since, nonce) = rest.split_once(':').unwrap_or((rest, ""));
    let since = since
        .parse::<i64>()
        .map_err(|_| corrupt(key, format!("not a claim: {value:?}")))?;
    let mine = nonce
        .split_once('.')
        .is_some_and(|(claimant, _)| claimant == instance);
    Ok(Claim::InFlight {
        since: Timestamp(since),
        mine,
    })
}

/// A time to live in whole milliseconds as `PX` takes it: at least one (zero is refused
/// by Redis), at most [`MAX_TTL_MS`].
pub(super) fn ttl_millis(ttl: Duration) -> i64 {
    ttl.as_millis().clamp(1, MAX_TTL_MS) as i64
}

/// The hash fields of part `part` of a campaign's live counters: `<part>.<counter>`.
pub(super) fn part_fields(part: u32, stats: &CampaignStats) -> [(String, String); 12] {
    let values = stats.to_array();
    std::array::from_fn(|i| {
        (
            format!("{part}.{}", CampaignStats::FIELDS[i]),
            values[i].to_string(),
        )
    })
}

/// A campaign's live counters from its whole hash: each part's twelve fields read
/// with [`decode_stats`] and the parts summed. Fields without a part (written before
/// parts existed) are one more part. `None` when the hash is empty.
pub(super) fn decode_parts(
    key: &str,
    fields: std::collections::HashMap<String, String>,
) -> Result<Option<CampaignStats>, HotError> {
    let mut parts: std::collections::BTreeMap<&str, Vec<Option<String>>> = Default::default();
    for (name, value) in &fields {
        let (part, counter) = name.rsplit_once('.').unwrap_or(("", name.as_str()));
        let Some(i) = CampaignStats::FIELDS.iter().position(|f| *f == counter) else {
            return Err(corrupt(key, format!("unknown field {name:?}")));
        };
        parts
            .entry(part)
            .or_insert_with(|| vec![None; CampaignStats::FIELDS.len()])[i] = Some(value.clone());
    }
    let mut sum: Option<CampaignStats> = None;
    for (_, values) in parts {
        if let Some(s) = decode_stats(key, values)? {
            sum.get_or_insert_with(CampaignStats::default).add(&s);
        }
    }
    Ok(sum)
}

/// Reads counters back from the values of [`CampaignStats::FIELDS`], in order; `None`
/// when the campaign has no live counters.
pub(super) fn decode_stats(
    key: &str,
    values: Vec<Option<String>>,
) -> Result<Option<CampaignStats>, HotError> {
    if values.iter().all(Option::is_none) {
        return Ok(None);
    }
    if values.len() != CampaignStats::FIELDS.len() {
        return Err(corrupt(key, format!("{} counters read", values.len())));
    }
    let mut counters = [0u64; 12];
    for ((slot, value), field) in counters.iter_mut().zip(values).zip(CampaignStats::FIELDS) {
        let value = value.ok_or_else(|| corrupt(key, format!("counter {field} is missing")))?;
        *slot = value
            .parse()
            .map_err(|_| corrupt(key, format!("counter {field} is {value:?}")))?;
    }
    Ok(Some(CampaignStats::from_array(counters)))
}

fn corrupt(key: &str, reason: String) -> HotError {
    HotError::Corrupt {
        key: key.to_string(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_round_trip() {
        assert_eq!(
            decode_claim("k", &claimed(Timestamp(1_234), "a1.7"), "a1").unwrap(),
            Claim::InFlight {
                since: Timestamp(1_234),
                mine: true
            }
        );
        assert_eq!(
            decode_claim("k", &claimed(Timestamp(-5), "b2.0"), "a1").unwrap(),
            Claim::InFlight {
                since: Timestamp(-5),
                mine: false
            }
        );
        // Outcomes are free text, colons included.
        assert_eq!(
            decode_claim("k", &done("bounced: 550 5.1.1"), "a1").unwrap(),
            Claim::Done {
                outcome: "bounced: 550 5.1.1".into()
            }
        );
    }

    #[test]
    fn foreign_values_are_corrupt() {
        for value in ["", "x", "c:", "c:abc:n", "delivered"] {
            assert!(
                matches!(
                    decode_claim("k", value, "a1"),
                    Err(HotError::Corrupt { ref key, .. }) if key == "k"
                ),
                "{value:?}"
            );
        }
    }

    #[test]
    fn ttls_stay_within_what_redis_accepts() {
        assert_eq!(ttl_millis(Duration::ZERO), 1);
        assert_eq!(ttl_millis(Duration::from_micros(1_500)), 1);
        assert_eq!(ttl_millis(Duration::from_secs(60)), 60_000);
        assert_eq!(ttl_millis(Duration::MAX), MAX_TTL_MS as i64);
    }

    #[test]
    fn stats_round_trip_including_the_largest_counter() {
        let stats = CampaignStats {
            injected: u64::MAX,
            delivered: 7,
            suppressed: 1,
            ..Default::default()
        };
        let values = part_fields(3, &stats)
            .into_iter()
            .map(|(_, v)| Some(v))
            .collect();
        assert_eq!(decode_stats("k", values).unwrap(), Some(stats));
        assert_eq!(decode_stats("k", vec![None; 12]).unwrap(), None);
        // Parts, and fields from before parts, are summed.
        let mut hash: std::collections::HashMap<String, String> =
            part_fields(3, &stats).into_iter().collect();
        let small = CampaignStats {
            delivered: 2,
            ..Default::default()
        };
        hash.extend(part_fields(12, &small));
        hash.extend(
            CampaignStats::FIELDS
                .iter()
                .map(|f| (f.to_string(), "1".to_string())),
        );
        let sum = decode_parts("k", hash).unwrap().unwrap();
        assert_eq!((sum.injected, sum.delivered, sum.opened), (u64::MAX, 10, 1));
        assert_eq!(decode_parts("k", Default::default()).unwrap(), None);
    }

    #[test]
    fn partial_or_garbled_stats_are_corrupt() {
        let mut values = vec![Some("1".to_string()); 12];
        values[3] = None;
        assert!(matches!(
            decode_stats("k", values),
            Err(HotError::Corrupt { .. })
        ));
        let mut values = vec![Some("1".to_string()); 12];
        values[0] = Some("-1".into());
        assert!(matches!(
            decode_stats("k", values),
            Err(HotError::Corrupt { .. })
        ));
    }

    #[test]
    fn kinds_of_state_never_share_a_key() {
        let keys = Keys::new("maily:");
        let tenant = TenantId::parse("acme").unwrap();
        let names = [
            keys.idempotency("acme"),
            keys.suppression(&tenant),
            keys.bucket("acme"),
        ];
        assert_eq!(names[0], "maily:idem:acme");
        assert!(names[1..].iter().all(|n| n != &names[0]) && names[1] != names[2]);
    }
}
