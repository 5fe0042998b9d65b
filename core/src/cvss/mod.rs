//! CVSS vectors: parsing and base scores for CVSS v3.0, v3.1 and v4.0, exactly as FIRST's
//! specifications define them.
//!
//! [`Cvss::parse`] validates a vector string (`CVSS:3.1/AV:N/AC:L/...`, `CVSS:4.0/AV:N/...`) and
//! computes its score once; the getters then read it. v3.x scores come from the specification's
//! formulas (v3.0 with its Roundup, v3.1 with the integer-based Roundup of its Appendix A); v4.0
//! scores come from FIRST's MacroVector table and the severity-distance interpolation of FIRST's
//! calculator, not from an approximation. Every score is checked against the reference
//! implementation (PyPI `cvss`) on thousands of vectors in `fixtures/cvss/`.
//!
//! What this module deliberately is not: it does not compute v3 temporal or environmental scores
//! (those metrics are parsed and validated, and kept in the normalised vector, but only the base
//! score is computed), it does not read CVSS v2 vectors, and it does not fetch or guess vectors.
//! For v4.0 the score of the whole vector is returned, as FIRST's calculator and the reference do:
//! Exploit Maturity (E) and the environmental metrics change it (CVSS-BT, CVSS-BE, CVSS-BTE), the
//! supplemental metrics never do.

mod v3;
mod v4;
mod v4_lookup;

#[cfg(test)]
mod tests;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// The CVSS versions this module scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CvssVersion {
    /// CVSS v3.0 (2015).
    V3_0,
    /// CVSS v3.1 (2019): same metrics as v3.0, integer-based Roundup.
    V3_1,
    /// CVSS v4.0 (2023): MacroVector scoring.
    V4_0,
}

impl CvssVersion {
    /// The version as written in the vector prefix: `3.0`, `3.1` or `4.0`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::V3_0 => "3.0",
            Self::V3_1 => "3.1",
            Self::V4_0 => "4.0",
        }
    }

    /// The metric table of this version, in the specification's vector order.
    fn metrics(self) -> &'static [MetricDef] {
        match self {
            Self::V3_0 | Self::V3_1 => &v3::METRICS,
            Self::V4_0 => &v4::METRICS,
        }
    }
}

impl fmt::Display for CvssVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for CvssVersion {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for CvssVersion {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.as_str() {
            "3.0" => Ok(Self::V3_0),
            "3.1" => Ok(Self::V3_1),
            "4.0" => Ok(Self::V4_0),
            other => Err(serde::de::Error::custom(format!(
                "unsupported CVSS version {other:?} (supported: 3.0, 3.1, 4.0)"
            ))),
        }
    }
}

/// Qualitative severity rating of a score, the same bands for v3.x and v4.0:
/// 0.0 None, 0.1-3.9 Low, 4.0-6.9 Medium, 7.0-8.9 High, 9.0-10.0 Critical.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Severity {
    None,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    /// The rating of a score given in tenths (0 to 100), which is how scores are kept here so
    /// that the band edges are compared exactly.
    const fn from_tenths(tenths: u8) -> Self {
        match tenths {
            0 => Self::None,
            1..=39 => Self::Low,
            40..=69 => Self::Medium,
            70..=89 => Self::High,
            _ => Self::Critical,
        }
    }

    /// The rating of a score between 0.0 and 10.0 (rounded to one decimal first).
    pub fn from_score(score: f64) -> Self {
        Self::from_tenths((score.clamp(0.0, 10.0) * 10.0).round() as u8)
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::None => "None",
            Self::Low => "Low",
            Self::Medium => "Medium",
            Self::High => "High",
            Self::Critical => "Critical",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a vector string is not a valid CVSS vector. Every message names the part that is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CvssError {
    /// The vector string is empty (or only whitespace).
    #[error("empty CVSS vector")]
    Empty,
    /// The vector does not start with a `CVSS:<version>` prefix.
    #[error(
        "CVSS vector must start with \"CVSS:3.0/\", \"CVSS:3.1/\" or \"CVSS:4.0/\", found {prefix:?}"
    )]
    MissingPrefix {
        /// The first part of the vector, as written.
        prefix: String,
    },
    /// The prefix names a CVSS version that is not scored here (2.0, 3.2, ...).
    #[error("unsupported CVSS version {version:?} in prefix (supported: 3.0, 3.1, 4.0)")]
    UnsupportedVersion {
        /// The version as written after `CVSS:`.
        version: String,
    },
    /// Nothing between two slashes, or a trailing slash.
    #[error("empty part {position} in CVSS vector (doubled or trailing \"/\")")]
    EmptyPart {
        /// 1-based position of the part after the prefix.
        position: usize,
    },
    /// A part that is not `METRIC:VALUE`.
    #[error("malformed part {part:?} in CVSS vector: expected METRIC:VALUE")]
    MalformedPart {
        /// The part as written.
        part: String,
    },
    /// A metric abbreviation that the version does not define.
    #[error("unknown metric {metric:?} for CVSS {version}")]
    UnknownMetric {
        /// The abbreviation as written.
        metric: String,
        version: CvssVersion,
    },
    /// A metric given twice.
    #[error("duplicate metric {metric:?} in CVSS vector")]
    DuplicateMetric {
        /// The repeated abbreviation.
        metric: &'static str,
    },
    /// A value that the metric does not allow.
    #[error("invalid value {value:?} for metric {metric:?} (CVSS {version} allows {allowed})")]
    InvalidValue {
        /// The metric's abbreviation.
        metric: &'static str,
        /// The value as written.
        value: String,
        version: CvssVersion,
        /// The allowed values, comma-separated.
        allowed: String,
    },
    /// A base metric that every vector of the version must give.
    #[error("missing mandatory metric {metric:?} for CVSS {version}")]
    MissingMetric {
        /// The first missing abbreviation, in the specification's order.
        metric: &'static str,
        version: CvssVersion,
    },
}

/// One metric of a version: its abbreviation, full name and allowed values.
#[derive(Debug)]
pub(crate) struct MetricDef {
    pub abbrev: &'static str,
    pub name: &'static str,
    /// Base metrics are mandatory and have no `X` (Not Defined) value; every other metric may be
    /// left out or written as `X`, which means the same.
    pub mandatory: bool,
    /// `(code, name)` of each allowed value, without `X`.
    pub values: &'static [(&'static str, &'static str)],
}

/// The most metrics a version defines (v4.0 has 32, v3.x 22).
const MAX_METRICS: usize = 32;

/// Metric values by position in the version's table: 0 is absent (or `X`), `i + 1` is
/// `MetricDef::values[i]`.
type Values = [u8; MAX_METRICS];

/// The code of metric `idx`, if it was given (and not `X`).
fn code_of(table: &'static [MetricDef], values: &Values, idx: usize) -> Option<&'static str> {
    let v = usize::from(values[idx]);
    if v == 0 {
        None
    } else {
        table[idx].values.get(v - 1).map(|(code, _)| *code)
    }
}

/// A parsed, valid CVSS vector with its base score.
///
/// Two vectors compare equal when they give the same metrics, whatever their order in the
/// original string, and whether or not they spelled out `X` values.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Cvss {
    version: CvssVersion,
    values: Values,
    /// The base score in tenths (0 to 100): band edges and equality stay exact.
    score_tenths: u8,
}

impl Cvss {
    /// Parses and validates a vector, and computes its base score.
    ///
    /// The `CVSS:3.0/`, `CVSS:3.1/` or `CVSS:4.0/` prefix is mandatory. Metrics may come in any
    /// order (as in the reference implementation; v4.0 asks for the specification's order, which
    /// [`Cvss::vector`] writes); each may be given once. Base metrics are mandatory; the others
    /// are optional and `X` means Not Defined. Surrounding whitespace is ignored.
    pub fn parse(vector: &str) -> Result<Self, CvssError> {
        let vector = vector.trim();
        if vector.is_empty() {
            return Err(CvssError::Empty);
        }
        let mut parts = vector.split('/');
        let prefix = parts.next().unwrap_or_default();
        let version = match prefix.strip_prefix("CVSS:") {
            Some("3.0") => CvssVersion::V3_0,
            Some("3.1") => CvssVersion::V3_1,
            Some("4.0") => CvssVersion::V4_0,
            Some(other) => {
                return Err(CvssError::UnsupportedVersion {
                    version: other.to_owned(),
                });
            }
            None => {
                return Err(CvssError::MissingPrefix {
                    prefix: prefix.to_owned(),
                });
            }
        };
        let table = version.metrics();
        let mut values: Values = [0; MAX_METRICS];
        let mut seen = [false; MAX_METRICS];
        for (i, part) in parts.enumerate() {
            if part.is_empty() {
                return Err(CvssError::EmptyPart { position: i + 1 });
            }
            let Some((metric, value)) = part.split_once(':') else {
                return Err(CvssError::MalformedPart {
                    part: part.to_owned(),
                });
            };
            if metric.is_empty() || value.is_empty() || value.contains(':') {
                return Err(CvssError::MalformedPart {
                    part: part.to_owned(),
                });
            }
            let Some(idx) = table.iter().position(|m| m.abbrev == metric) else {
                return Err(CvssError::UnknownMetric {
                    metric: metric.to_owned(),
                    version,
                });
            };
            let def = &table[idx];
            if seen[idx] {
                return Err(CvssError::DuplicateMetric { metric: def.abbrev });
            }
            seen[idx] = true;
            if !def.mandatory && value == "X" {
                continue;
            }
            match def.values.iter().position(|(code, _)| *code == value) {
                Some(v) => values[idx] = (v + 1) as u8,
                None => {
                    return Err(CvssError::InvalidValue {
                        metric: def.abbrev,
                        value: value.to_owned(),
                        version,
                        allowed: allowed_values(def),
                    });
                }
            }
        }
        if let Some(def) = table
            .iter()
            .zip(values.iter())
            .find(|(def, v)| def.mandatory && **v == 0)
            .map(|(def, _)| def)
        {
            return Err(CvssError::MissingMetric {
                metric: def.abbrev,
                version,
            });
        }
        let score_tenths = match version {
            CvssVersion::V3_0 => v3::score(v3::Roundup::V3_0, &values).base_tenths,
            CvssVersion::V3_1 => v3::score(v3::Roundup::V3_1, &values).base_tenths,
            CvssVersion::V4_0 => v4::score(&values).base_tenths,
        };
        Ok(Self {
            version,
            values,
            score_tenths,
        })
    }

    pub fn version(&self) -> CvssVersion {
        self.version
    }

    /// The base score, 0.0 to 10.0 with one decimal, rounded exactly as the version's
    /// specification rounds it. For v4.0 this is the score of the whole vector (see the module
    /// documentation).
    pub fn base_score(&self) -> f64 {
        f64::from(self.score_tenths) / 10.0
    }

    pub fn severity(&self) -> Severity {
        Severity::from_tenths(self.score_tenths)
    }

    /// The normalised vector: the prefix, then every given metric in the specification's order,
    /// leaving out `X` (Not Defined) values. Parsing it gives an equal [`Cvss`].
    pub fn vector(&self) -> String {
        let table = self.version.metrics();
        let mut out = String::with_capacity(16 + 6 * table.len());
        out.push_str("CVSS:");
        out.push_str(self.version.as_str());
        for (idx, def) in table.iter().enumerate() {
            if let Some(code) = code_of(table, &self.values, idx) {
                out.push('/');
                out.push_str(def.abbrev);
                out.push(':');
                out.push_str(code);
            }
        }
        out
    }

    /// The value of a metric given in the vector, by abbreviation: `metric("AV") == Some("N")`.
    /// `None` when the version has no such metric, or the vector leaves it out or gives `X`.
    pub fn metric(&self, abbrev: &str) -> Option<&str> {
        let table = self.version.metrics();
        let idx = table.iter().position(|m| m.abbrev == abbrev)?;
        code_of(table, &self.values, idx)
    }

    /// Human-readable lines that explain the score, one per metric or intermediate value.
    ///
    /// v3.x: each base metric with its weight (`AV:N Attack Vector Network (0.85)`), the impact
    /// and exploitability sub-scores, then the temporal and environmental metrics given (which
    /// the base score does not use). v4.0: each metric given, then the MacroVector (EQ1..EQ6),
    /// its score in FIRST's table, and how far the interpolation moved the score from it.
    pub fn explain(&self) -> Vec<String> {
        match self.version {
            CvssVersion::V3_0 => v3::explain(v3::Roundup::V3_0, &self.values),
            CvssVersion::V3_1 => v3::explain(v3::Roundup::V3_1, &self.values),
            CvssVersion::V4_0 => v4::explain(&self.values),
        }
    }

    /// The version, base score and severity, for JSON output.
    pub fn summary(&self) -> CvssSummary {
        CvssSummary {
            version: self.version,
            base_score: self.base_score(),
            severity: self.severity(),
        }
    }
}

/// `X` first for optional metrics, then the defined values, comma-separated.
fn allowed_values(def: &MetricDef) -> String {
    let mut out = String::new();
    if !def.mandatory {
        out.push('X');
    }
    for (code, _) in def.values {
        if !out.is_empty() {
            out.push_str(", ");
        }
        out.push_str(code);
    }
    out
}

/// `metric: name value` line used by both versions' explanations, e.g. `AV:N Attack Vector Network`.
fn describe(table: &'static [MetricDef], values: &Values, idx: usize) -> Option<String> {
    let def = &table[idx];
    let v = usize::from(values[idx]);
    let (code, name) = def.values.get(v.checked_sub(1)?)?;
    Some(format!("{}:{code} {} {name}", def.abbrev, def.name))
}

impl FromStr for Cvss {
    type Err = CvssError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for Cvss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.vector())
    }
}

/// A vector serialises as its normalised vector string.
impl Serialize for Cvss {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.vector())
    }
}

impl<'de> Deserialize<'de> for Cvss {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// What `convoy score cvss --json` prints: `{"version": "3.1", "base_score": 9.8, "severity": "Critical"}`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CvssSummary {
    pub version: CvssVersion,
    pub base_score: f64,
    pub severity: Severity,
}
