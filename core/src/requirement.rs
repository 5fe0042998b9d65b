//! What a release needs from a device before it may be offered: its prerequisites.
//!
//! A [`Requirement`] has one text form, used on the command line (`--requires`), in manifests
//! and in plans:
//!
//! | text | meaning | kind |
//! | --- | --- | --- |
//! | `bootloader>=2.0` (also `>`, `<=`, `<`, `==`, `!=`) | a component's installed version | component |
//! | `modem in 1.2.0,1.3.0` | a component's version is one of a set | component |
//! | `hw_rev in B,C` | the hardware revision is one of a set | hardware |
//! | `free_storage>=64MiB` (B, kB, KiB, MB, MiB, GB, GiB) | free storage | condition |
//! | `battery>=30` | battery charge in percent (devices without one pass) | condition |
//! | `power in mains,charging` | the power state is one of a set | condition |
//! | `no_roaming` | no download over a roaming link | condition |
//! | `metered_max<=50MB` | on a metered link, the download may not exceed this size | condition |
//!
//! Component requirements can be met by installing other releases first (prerequisites);
//! hardware requirements never change; conditions are transient and may pass later.

use crate::fleet::{Connectivity, Device, PowerState};
use crate::version::Version;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// A comparison on versions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CmpOp {
    Ge,
    Gt,
    Le,
    Lt,
    Eq,
    Ne,
}

impl CmpOp {
    const ALL: [(&'static str, CmpOp); 6] = [
        (">=", CmpOp::Ge),
        ("<=", CmpOp::Le),
        ("==", CmpOp::Eq),
        ("!=", CmpOp::Ne),
        (">", CmpOp::Gt),
        ("<", CmpOp::Lt),
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            CmpOp::Ge => ">=",
            CmpOp::Gt => ">",
            CmpOp::Le => "<=",
            CmpOp::Lt => "<",
            CmpOp::Eq => "==",
            CmpOp::Ne => "!=",
        }
    }

    pub fn holds<T: Ord>(self, left: &T, right: &T) -> bool {
        match self {
            CmpOp::Ge => left >= right,
            CmpOp::Gt => left > right,
            CmpOp::Le => left <= right,
            CmpOp::Lt => left < right,
            CmpOp::Eq => left == right,
            CmpOp::Ne => left != right,
        }
    }
}

/// A constraint on one component's installed version.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum VersionConstraint {
    Compare(CmpOp, Version),
    OneOf(Vec<Version>),
}

impl VersionConstraint {
    pub fn allows(&self, installed: Version) -> bool {
        match self {
            VersionConstraint::Compare(op, v) => op.holds(&installed, v),
            VersionConstraint::OneOf(set) => set.contains(&installed),
        }
    }
}

/// One prerequisite of a release.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Requirement {
    /// A component's installed version must satisfy a constraint.
    Component {
        name: String,
        constraint: VersionConstraint,
    },
    /// The hardware revision must be one of these.
    HwRev(Vec<String>),
    /// At least this much free storage.
    FreeStorage { min_bytes: u64 },
    /// At least this battery charge (devices without a battery pass).
    Battery { min_pct: u8 },
    /// The power state must be one of these.
    Power(Vec<PowerState>),
    /// No download over a roaming link.
    NoRoaming,
    /// On a metered link, the download may not exceed this many bytes.
    MeteredMax { max_bytes: u64 },
}

/// How a requirement can come to be met.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RequirementKind {
    /// Met by installing other releases first.
    Component,
    /// Never changes for a device: unmet means never eligible.
    Hardware,
    /// Transient device state: unmet now, may pass later.
    Condition,
}

/// Why a requirement does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequirementError {
    /// The text matches no known requirement form.
    #[error(
        "invalid requirement {0:?}: expected e.g. `bootloader>=2.0`, `modem in 1.2.0,1.3.0`, `hw_rev in B,C`, `free_storage>=64MiB`, `battery>=30`, `power in mains,charging`, `no_roaming` or `metered_max<=50MB`"
    )]
    Syntax(String),
    /// A version in the requirement is malformed.
    #[error("invalid version {version:?} in requirement {text:?}")]
    Version { text: String, version: String },
    /// A size or percentage is malformed or out of range.
    #[error("invalid amount {amount:?} in requirement {text:?}")]
    Amount { text: String, amount: String },
    /// A power state in the set is unknown.
    #[error(
        "invalid power state {state:?} in requirement {text:?}: expected mains, charging or battery"
    )]
    Power { text: String, state: String },
}

impl Requirement {
    pub fn kind(&self) -> RequirementKind {
        match self {
            Requirement::Component { .. } => RequirementKind::Component,
            Requirement::HwRev(_) => RequirementKind::Hardware,
            Requirement::FreeStorage { .. }
            | Requirement::Battery { .. }
            | Requirement::Power(_)
            | Requirement::NoRoaming
            | Requirement::MeteredMax { .. } => RequirementKind::Condition,
        }
    }

    /// Whether `device` meets this requirement for a download of `download_bytes`.
    /// A device that lacks the component a component requirement names does not meet it.
    pub fn is_met(&self, device: &Device, download_bytes: u64) -> bool {
        match self {
            Requirement::Component { name, constraint } => {
                device.component(name).is_some_and(|v| constraint.allows(v))
            }
            Requirement::HwRev(revs) => revs.iter().any(|r| *r == device.hw_rev),
            Requirement::FreeStorage { min_bytes } => device.free_storage_bytes >= *min_bytes,
            Requirement::Battery { min_pct } => device.battery_pct.is_none_or(|b| b >= *min_pct),
            Requirement::Power(states) => states.contains(&device.power),
            Requirement::NoRoaming => device.connectivity != Connectivity::Roaming,
            Requirement::MeteredMax { max_bytes } => {
                !device.metered || download_bytes <= *max_bytes
            }
        }
    }
}

/// Parses `64MiB`, `50MB`, `1.5GB`, `1024` (bytes).
pub fn parse_bytes(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let factor: f64 = match unit.trim() {
        "" | "B" => 1.0,
        "kB" | "KB" => 1e3,
        "KiB" => 1024.0,
        "MB" => 1e6,
        "MiB" => 1024.0 * 1024.0,
        "GB" => 1e9,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    let n: f64 = num.parse().ok()?;
    let bytes = (n * factor).round();
    (0.0..1.8e19).contains(&bytes).then_some(bytes as u64)
}

fn split_list(text: &str) -> Vec<&str> {
    text.trim()
        .trim_start_matches('{')
        .trim_end_matches('}')
        .split([',', '|'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect()
}

impl FromStr for Requirement {
    type Err = RequirementError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let text = s.trim();
        let syntax = || RequirementError::Syntax(s.to_owned());
        if text == "no_roaming" {
            return Ok(Requirement::NoRoaming);
        }
        // `subject in a,b,c`
        if let Some((subject, list)) = text.split_once(" in ") {
            let subject = subject.trim();
            let items = split_list(list);
            if items.is_empty() || !is_ident(subject) {
                return Err(syntax());
            }
            return match subject {
                "hw_rev" => Ok(Requirement::HwRev(
                    items.iter().map(|&i| i.to_owned()).collect(),
                )),
                "power" => items
                    .iter()
                    .map(|i| {
                        i.parse::<PowerState>()
                            .map_err(|_| RequirementError::Power {
                                text: s.to_owned(),
                                state: (*i).to_owned(),
                            })
                    })
                    .collect::<Result<_, _>>()
                    .map(Requirement::Power),
                name => {
                    let versions = items
                        .iter()
                        .map(|i| {
                            i.parse::<Version>().map_err(|_| RequirementError::Version {
                                text: s.to_owned(),
                                version: (*i).to_owned(),
                            })
                        })
                        .collect::<Result<_, _>>()?;
                    Ok(Requirement::Component {
                        name: name.to_owned(),
                        constraint: VersionConstraint::OneOf(versions),
                    })
                }
            };
        }
        let Some((subject, op, value)) = CmpOp::ALL
            .iter()
            .find_map(|(sym, op)| text.split_once(sym).map(|(l, r)| (l.trim(), *op, r.trim())))
        else {
            return Err(syntax());
        };
        if !is_ident(subject) || value.is_empty() {
            return Err(syntax());
        }
        let amount = || RequirementError::Amount {
            text: s.to_owned(),
            amount: value.to_owned(),
        };
        match (subject, op) {
            ("free_storage", CmpOp::Ge) => Ok(Requirement::FreeStorage {
                min_bytes: parse_bytes(value).ok_or_else(amount)?,
            }),
            ("battery", CmpOp::Ge) => {
                let pct: u8 = value.trim_end_matches('%').parse().map_err(|_| amount())?;
                if pct > 100 {
                    return Err(amount());
                }
                Ok(Requirement::Battery { min_pct: pct })
            }
            ("metered_max", CmpOp::Le) => Ok(Requirement::MeteredMax {
                max_bytes: parse_bytes(value).ok_or_else(amount)?,
            }),
            ("free_storage" | "battery" | "metered_max" | "hw_rev" | "power", _) => Err(syntax()),
            (name, op) => {
                let version = value
                    .parse::<Version>()
                    .map_err(|_| RequirementError::Version {
                        text: s.to_owned(),
                        version: value.to_owned(),
                    })?;
                Ok(Requirement::Component {
                    name: name.to_owned(),
                    constraint: VersionConstraint::Compare(op, version),
                })
            }
        }
    }
}

fn is_ident(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let join = |items: Vec<String>| items.join(",");
        match self {
            Requirement::Component {
                name,
                constraint: VersionConstraint::Compare(op, v),
            } => {
                write!(f, "{name}{}{v}", op.as_str())
            }
            Requirement::Component {
                name,
                constraint: VersionConstraint::OneOf(set),
            } => {
                write!(
                    f,
                    "{name} in {}",
                    join(set.iter().map(ToString::to_string).collect())
                )
            }
            Requirement::HwRev(revs) => write!(f, "hw_rev in {}", revs.join(",")),
            Requirement::FreeStorage { min_bytes } => write!(f, "free_storage>={min_bytes}"),
            Requirement::Battery { min_pct } => write!(f, "battery>={min_pct}"),
            Requirement::Power(states) => {
                write!(
                    f,
                    "power in {}",
                    join(states.iter().map(ToString::to_string).collect())
                )
            }
            Requirement::NoRoaming => f.write_str("no_roaming"),
            Requirement::MeteredMax { max_bytes } => write!(f, "metered_max<={max_bytes}"),
        }
    }
}

impl Serialize for Requirement {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Requirement {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_every_form() {
        for (text, printed) in [
            ("bootloader>=2.0", "bootloader>=2.0"),
            ("modem in 1.2.0,1.3.0", "modem in 1.2.0,1.3.0"),
            ("modem in {1.2.0, 1.3.0}", "modem in 1.2.0,1.3.0"),
            ("firmware < 3", "firmware<3"),
            ("hw_rev in B,C", "hw_rev in B,C"),
            ("free_storage>=64MiB", "free_storage>=67108864"),
            ("battery>=30%", "battery>=30"),
            ("power in mains|charging", "power in mains,charging"),
            ("no_roaming", "no_roaming"),
            ("metered_max<=50MB", "metered_max<=50000000"),
        ] {
            let r: Requirement = text.parse().expect(text);
            assert_eq!(r.to_string(), printed, "{text}");
            assert_eq!(
                printed.parse::<Requirement>().expect(printed),
                r,
                "{printed}"
            );
        }
    }

    #[test]
    fn errors_name_the_bad_part() {
        let cases = [
            ("bootloader>=two", "\"two\""),
            ("battery>=130", "\"130\""),
            ("power in mains,solar", "\"solar\""),
            ("free_storage>=lots", "\"lots\""),
            ("whatever", "expected e.g."),
            ("hw_rev>=B", "expected e.g."),
        ];
        for (text, needle) in cases {
            let err = text.parse::<Requirement>().expect_err(text).to_string();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }
}
