//! Wall-clock timestamps as plain values, so the core never reads a clock itself.

use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Text that is not an RFC 3339 date-time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an RFC 3339 date-time (like 2026-11-26T16:05:00Z): {0:?}")]
pub struct TimeError(String);

/// Milliseconds since the Unix epoch.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(transparent)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// The current time; only edges (adapters, actors) should call this.
    pub fn now() -> Self {
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        Timestamp(since.as_millis() as i64)
    }

    /// This timestamp moved forward by `d`.
    pub fn plus(self, d: Duration) -> Self {
        Timestamp(self.0.saturating_add(d.as_millis() as i64))
    }

    /// The RFC 3339 form in UTC with milliseconds, e.g. `2026-11-26T16:05:00.250Z`.
    pub fn to_rfc3339(self) -> String {
        let secs = self.0.div_euclid(1000);
        let ms = self.0.rem_euclid(1000);
        let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
        let rem = secs.rem_euclid(86_400);
        format!(
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z",
            rem / 3600,
            rem % 3600 / 60,
            rem % 60
        )
    }

    /// Parses an RFC 3339 date-time (`Z` or a numeric offset; fractions beyond
    /// milliseconds are cut off).
    pub fn parse_rfc3339(s: &str) -> Result<Timestamp, TimeError> {
        let bad = || TimeError(s.chars().take(64).collect());
        let b = s.as_bytes();
        if b.len() < 20 || !b.is_ascii() {
            return Err(bad());
        }
        let num = |r: std::ops::Range<usize>| -> Result<i64, TimeError> {
            let part = &s[r];
            if part.bytes().all(|c| c.is_ascii_digit()) {
                part.parse().map_err(|_| bad())
            } else {
                Err(bad())
            }
        };
        let sep = |i: usize, c: &[u8]| c.contains(&b[i]);
        if !(sep(4, b"-") && sep(7, b"-") && sep(10, b"Tt ") && sep(13, b":") && sep(16, b":")) {
            return Err(bad());
        }
        let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
        let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
        let days_in_month = match mo {
            1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
            4 | 6 | 9 | 11 => 30,
            2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
            2 => 28,
            _ => return Err(bad()),
        };
        if d < 1 || d > days_in_month || h > 23 || mi > 59 || sec > 60 {
            return Err(bad());
        }
        let mut i = 19;
        let mut ms = 0;
        if b[i] == b'.' {
            let start = i + 1;
            i = start;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            if i == start {
                return Err(bad());
            }
            let digits = &s[start..i.min(start + 3)];
            ms = digits.parse::<i64>().map_err(|_| bad())? * 10_i64.pow(3 - digits.len() as u32);
        }
        let offset = match &s[i..] {
            "Z" | "z" => 0,
            rest if rest.len() == 6 && (rest.starts_with('+') || rest.starts_with('-')) => {
                if &rest[3..4] != ":" {
                    return Err(bad());
                }
                let oh = num(i + 1..i + 3)?;
                let om = num(i + 4..i + 6)?;
                if oh > 23 || om > 59 {
                    return Err(bad());
                }
                let o = oh * 3600 + om * 60;
                if rest.starts_with('-') { -o } else { o }
            }
            _ => return Err(bad()),
        };
        let secs = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + sec.min(59) - offset;
        Ok(Timestamp(secs * 1000 + ms))
    }

    /// Time from `earlier` to `self`, zero if `earlier` is later.
    pub fn since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0).max(0) as u64)
    }
}

impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

/// Days since 1970-01-01 to (year, month, day); Howard Hinnant's algorithm.
pub(crate) fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// (year, month, day) to days since 1970-01-01; the inverse of [`civil_from_days`].
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod rfc3339_tests {
    use super::*;

    #[test]
    fn formats_and_parses_back() {
        for ms in [
            0,
            1_795_000_000_123,
            951_782_400_000,
            -86_400_000,
            4_102_444_799_999,
        ] {
            let t = Timestamp(ms);
            assert_eq!(Timestamp::parse_rfc3339(&t.to_rfc3339()), Ok(t), "{t}");
        }
        assert_eq!(
            Timestamp(1_795_000_000_000).to_rfc3339(),
            "2026-11-18T11:06:40.000Z"
        );
    }

    #[test]
    fn parses_offsets_and_fractions() {
        let z = Timestamp::parse_rfc3339("2026-11-18T11:06:40Z").unwrap();
        assert_eq!(z, Timestamp(1_795_000_000_000));
        assert_eq!(Timestamp::parse_rfc3339("2026-11-18T12:06:40+01:00"), Ok(z));
        assert_eq!(Timestamp::parse_rfc3339("2026-11-18T10:36:40-00:30"), Ok(z));
        assert_eq!(
            Timestamp::parse_rfc3339("2026-11-18T11:06:40.5Z"),
            Ok(Timestamp(1_795_000_000_500))
        );
        assert_eq!(
            Timestamp::parse_rfc3339("2026-11-18T11:06:40.123456789Z"),
            Ok(Timestamp(1_795_000_000_123))
        );
    }

    #[test]
    fn refuses_what_is_not_a_date_time() {
        for s in [
            "",
            "2026-11-18",
            "2026-11-18T11:06:40",
            "2026-13-18T11:06:40Z",
            "2026-02-29T11:06:40Z",
            "2026-11-18T24:00:00Z",
            "2026-11-18T11:06:40.Z",
            "2026-11-18T11:06:40+0100",
            "2026-11-18T11:06:40Zjunk",
            "２026-11-18T11:06:40Z",
            "tomorrow at noon",
        ] {
            assert!(Timestamp::parse_rfc3339(s).is_err(), "{s:?}");
        }
    }
}
