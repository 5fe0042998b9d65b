//! Component versions: dotted numeric versions such as `2.4.1`, ordered numerically.
//!
//! Firmware, bootloader and modem versions are compared component by component, so `2.10.0` is
//! newer than `2.9.3`. Pre-release labels and build metadata are not modelled: a device reports
//! what is installed, and a release names exactly what it carries.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// A dotted numeric version with one to four parts (`3`, `2.0`, `2.4.1`, `1.2.3.4`).
/// Missing parts count as zero for ordering and equality, so `2.0` equals `2.0.0`.
#[derive(Clone, Copy, Default)]
pub struct Version {
    parts: [u32; 4],
    len: u8,
}

impl Version {
    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        Self {
            parts: [major, minor, patch, 0],
            len: 3,
        }
    }

    pub const fn major(&self) -> u32 {
        self.parts[0]
    }

    pub const fn minor(&self) -> u32 {
        self.parts[1]
    }

    pub const fn patch(&self) -> u32 {
        self.parts[2]
    }

    /// The numeric parts as written (one to four of them).
    pub fn parts(&self) -> &[u32] {
        &self.parts[..usize::from(self.len)]
    }
}

impl PartialEq for Version {
    fn eq(&self, other: &Self) -> bool {
        self.parts == other.parts
    }
}
impl Eq for Version {}
impl std::hash::Hash for Version {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.parts.hash(state);
    }
}
impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Version {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.parts.cmp(&other.parts)
    }
}

/// A version string that is not one to four dot-separated numbers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid version {0:?}: expected one to four dot-separated numbers such as 2.4.1")]
pub struct VersionError(pub String);

impl FromStr for Version {
    type Err = VersionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let t = t.strip_prefix('v').unwrap_or(t);
        let mut parts = [0u32; 4];
        let mut len = 0u8;
        for piece in t.split('.') {
            if len == 4 || piece.is_empty() || !piece.bytes().all(|b| b.is_ascii_digit()) {
                return Err(VersionError(s.to_owned()));
            }
            parts[usize::from(len)] = piece.parse().map_err(|_| VersionError(s.to_owned()))?;
            len += 1;
        }
        Ok(Self { parts, len })
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.parts().iter().enumerate() {
            if i > 0 {
                f.write_str(".")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Version({self})")
    }
}

impl Serialize for Version {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Version {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        s.parse().expect(s)
    }

    #[test]
    fn orders_numerically() {
        assert!(v("2.10.0") > v("2.9.3"));
        assert!(v("1.0.0.1") > v("1.0"));
        assert_eq!(v("2.0"), v("2.0.0"));
        assert_eq!(v("v3.1.4").to_string(), "3.1.4");
        assert_eq!(v("2.0").to_string(), "2.0");
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "1..2",
            "1.2.3.4.5",
            "1.x",
            "-1",
            "1.2-rc1",
            "99999999999",
        ] {
            assert!(bad.parse::<Version>().is_err(), "{bad}");
        }
    }
}
