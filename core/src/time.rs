//! Time as plain numbers: the core never reads a clock, callers pass `now` in.

use serde::{Deserialize, Serialize};

/// Seconds since the Unix epoch (UTC). The core only ever receives timestamps, never reads them.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub const fn from_secs(secs: i64) -> Self {
        Self(secs)
    }

    pub const fn secs(self) -> i64 {
        self.0
    }

    /// This timestamp moved forward by `secs` seconds (saturating).
    #[must_use]
    pub const fn plus_secs(self, secs: i64) -> Self {
        Self(self.0.saturating_add(secs))
    }

    /// Seconds elapsed from `earlier` to `self` (negative when `earlier` is later).
    pub const fn secs_since(self, earlier: Timestamp) -> i64 {
        self.0.saturating_sub(earlier.0)
    }

    /// Formats as RFC 3339 UTC, e.g. `2026-11-23T06:51:00Z`.
    pub fn to_rfc3339(self) -> String {
        let days = self.0.div_euclid(86_400);
        let rem = self.0.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        format!(
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
            rem / 3600,
            (rem % 3600) / 60,
            rem % 60
        )
    }

    /// Parses RFC 3339 timestamps such as `2026-11-23T06:51:00Z` or `2026-11-23T08:51:00+02:00`,
    /// and plain dates (`2026-11-23`, midnight UTC).
    pub fn parse_rfc3339(text: &str) -> Result<Self, TimeParseError> {
        let bad = || TimeParseError(text.to_owned());
        let t = text.trim();
        // Every field sits at a fixed byte offset; non-ASCII text would put a slice inside a
        // character, and no valid timestamp contains any.
        if !t.is_ascii() {
            return Err(bad());
        }
        let num = |s: &str| s.parse::<i64>().map_err(|_| bad());
        if t.len() == 10 {
            let (y, m, d) = (num(&t[0..4])?, num(&t[5..7])?, num(&t[8..10])?);
            if &t[4..5] != "-"
                || &t[7..8] != "-"
                || !(1..=12).contains(&m)
                || !(1..=31).contains(&d)
            {
                return Err(bad());
            }
            return Ok(Self(days_from_civil(y, m, d) * 86_400));
        }
        if t.len() < 20 || !t.is_char_boundary(19) {
            return Err(bad());
        }
        let (date, rest) = t.split_at(10);
        let sep = &rest[0..1];
        if sep != "T" && sep != "t" && sep != " " {
            return Err(bad());
        }
        let Ok(Self(day_secs)) = Self::parse_rfc3339(date) else {
            return Err(bad());
        };
        let clock = &rest[1..9];
        if &clock[2..3] != ":" || &clock[5..6] != ":" {
            return Err(bad());
        }
        let (hh, mm, ss) = (num(&clock[0..2])?, num(&clock[3..5])?, num(&clock[6..8])?);
        if hh > 23 || mm > 59 || ss > 60 {
            return Err(bad());
        }
        let mut zone = &rest[9..];
        if let Some(frac) = zone.strip_prefix('.') {
            let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return Err(bad());
            }
            zone = &frac[digits..];
        }
        let offset = match zone {
            "Z" | "z" => 0,
            z if z.len() == 6 && (z.starts_with('+') || z.starts_with('-')) && &z[3..4] == ":" => {
                let mins = num(&z[1..3])? * 60 + num(&z[4..6])?;
                if z.starts_with('-') { -mins } else { mins }
            }
            _ => return Err(bad()),
        };
        Ok(Self(day_secs + hh * 3600 + mm * 60 + ss - offset * 60))
    }
}

impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

/// A timestamp that is not RFC 3339.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an RFC 3339 timestamp (expected e.g. 2026-11-23T06:00:00Z): {0:?}")]
pub struct TimeParseError(pub String);

// Howard Hinnant's civil-from-days algorithm: exact for the proleptic Gregorian calendar.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
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
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trips() {
        for (text, secs) in [
            ("1970-01-01T00:00:00Z", 0),
            ("2026-11-23T06:51:00Z", 1_795_416_660),
            ("2000-02-29T23:59:59Z", 951_868_799),
        ] {
            let t = Timestamp::parse_rfc3339(text).expect(text);
            assert_eq!(t.secs(), secs, "{text}");
            assert_eq!(t.to_rfc3339(), text);
        }
    }

    #[test]
    fn rfc3339_offsets_and_dates() {
        let a = Timestamp::parse_rfc3339("2026-11-23T08:51:00+02:00").expect("offset");
        let b = Timestamp::parse_rfc3339("2026-11-23T06:51:00.250Z").expect("fraction");
        assert_eq!(a, b);
        let d = Timestamp::parse_rfc3339("2026-11-23").expect("date");
        assert_eq!(d.to_rfc3339(), "2026-11-23T00:00:00Z");
        for bad in [
            "",
            "2026-13-01",
            "yesterday",
            "2026-11-23T25:00:00Z",
            "2026-11-23T06:51:00",
            "12€-1-01",
            "2026-11-2€06:51:00Z",
            "2026-11-23T06:51:00+0é00",
        ] {
            assert!(Timestamp::parse_rfc3339(bad).is_err(), "{bad}");
        }
    }
}
