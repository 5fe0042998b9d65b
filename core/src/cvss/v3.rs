//! CVSS v3.0 and v3.1 metrics and base score, from the formulas of FIRST's specifications
//! (v3.0 section 8.1, v3.1 section 7.1 and Appendix A).
//!
//! Only the base score is computed; temporal and environmental metrics are defined here so that
//! vectors carrying them parse and validate, but they do not enter the score.

use super::{MetricDef, Values, describe};

/// The metrics in the specification's vector order (base, temporal, environmental).
pub(super) const METRICS: [MetricDef; 22] = [
    base(
        "AV",
        "Attack Vector",
        &[
            ("N", "Network"),
            ("A", "Adjacent"),
            ("L", "Local"),
            ("P", "Physical"),
        ],
    ),
    base("AC", "Attack Complexity", &[("L", "Low"), ("H", "High")]),
    base(
        "PR",
        "Privileges Required",
        &[("N", "None"), ("L", "Low"), ("H", "High")],
    ),
    base(
        "UI",
        "User Interaction",
        &[("N", "None"), ("R", "Required")],
    ),
    base("S", "Scope", &[("U", "Unchanged"), ("C", "Changed")]),
    base(
        "C",
        "Confidentiality",
        &[("H", "High"), ("L", "Low"), ("N", "None")],
    ),
    base(
        "I",
        "Integrity",
        &[("H", "High"), ("L", "Low"), ("N", "None")],
    ),
    base(
        "A",
        "Availability",
        &[("H", "High"), ("L", "Low"), ("N", "None")],
    ),
    opt(
        "E",
        "Exploit Code Maturity",
        &[
            ("H", "High"),
            ("F", "Functional"),
            ("P", "Proof-of-Concept"),
            ("U", "Unproven"),
        ],
    ),
    opt(
        "RL",
        "Remediation Level",
        &[
            ("U", "Unavailable"),
            ("W", "Workaround"),
            ("T", "Temporary Fix"),
            ("O", "Official Fix"),
        ],
    ),
    opt(
        "RC",
        "Report Confidence",
        &[("C", "Confirmed"), ("R", "Reasonable"), ("U", "Unknown")],
    ),
    opt("CR", "Confidentiality Requirement", REQUIREMENT),
    opt("IR", "Integrity Requirement", REQUIREMENT),
    opt("AR", "Availability Requirement", REQUIREMENT),
    opt(
        "MAV",
        "Modified Attack Vector",
        &[
            ("N", "Network"),
            ("A", "Adjacent"),
            ("L", "Local"),
            ("P", "Physical"),
        ],
    ),
    opt(
        "MAC",
        "Modified Attack Complexity",
        &[("L", "Low"), ("H", "High")],
    ),
    opt(
        "MPR",
        "Modified Privileges Required",
        &[("N", "None"), ("L", "Low"), ("H", "High")],
    ),
    opt(
        "MUI",
        "Modified User Interaction",
        &[("N", "None"), ("R", "Required")],
    ),
    opt(
        "MS",
        "Modified Scope",
        &[("U", "Unchanged"), ("C", "Changed")],
    ),
    opt("MC", "Modified Confidentiality", CIA),
    opt("MI", "Modified Integrity", CIA),
    opt("MA", "Modified Availability", CIA),
];

const REQUIREMENT: &[(&str, &str)] = &[("H", "High"), ("M", "Medium"), ("L", "Low")];
const CIA: &[(&str, &str)] = &[("H", "High"), ("L", "Low"), ("N", "None")];

const fn base(
    abbrev: &'static str,
    name: &'static str,
    values: &'static [(&'static str, &'static str)],
) -> MetricDef {
    MetricDef {
        abbrev,
        name,
        mandatory: true,
        values,
    }
}

const fn opt(
    abbrev: &'static str,
    name: &'static str,
    values: &'static [(&'static str, &'static str)],
) -> MetricDef {
    MetricDef {
        abbrev,
        name,
        mandatory: false,
        values,
    }
}

// Positions in `METRICS` of the base metrics.
const AV: usize = 0;
const AC: usize = 1;
const PR: usize = 2;
const UI: usize = 3;
const S: usize = 4;
const C: usize = 5;
const I: usize = 6;
const A: usize = 7;
const BASE_COUNT: usize = 8;

// Weights by value position, in the order of the values in `METRICS` (specification section 7.4).
const AV_WEIGHTS: [f64; 4] = [0.85, 0.62, 0.55, 0.2];
const AC_WEIGHTS: [f64; 2] = [0.77, 0.44];
const PR_WEIGHTS_UNCHANGED: [f64; 3] = [0.85, 0.62, 0.27];
/// Privileges Required weighs more when the scope changes.
const PR_WEIGHTS_CHANGED: [f64; 3] = [0.85, 0.68, 0.5];
const UI_WEIGHTS: [f64; 2] = [0.85, 0.62];
const CIA_WEIGHTS: [f64; 3] = [0.56, 0.22, 0.0];

/// The two Roundup functions, the one thing that differs between v3.0 and v3.1 base scores.
#[derive(Debug, Clone, Copy)]
pub(super) enum Roundup {
    /// v3.0: "the smallest number, specified to one decimal place, that is equal to or higher
    /// than its input", as FIRST's v3.0 calculator computes it (`Math.ceil(x * 10) / 10`).
    V3_0,
    /// v3.1 Appendix A: round to five decimals as an integer first, so that floating-point noise
    /// such as 4.000000000000001 does not round up to 4.1.
    V3_1,
}

impl Roundup {
    /// Rounds `x` (0 to 10) up to one decimal, returning tenths.
    fn tenths(self, x: f64) -> u8 {
        match self {
            Self::V3_0 => (x * 10.0).ceil() as u8,
            Self::V3_1 => {
                let int_input = (x * 100_000.0).round() as u64;
                if int_input.is_multiple_of(10_000) {
                    (int_input / 10_000) as u8
                } else {
                    (int_input / 10_000 + 1) as u8
                }
            }
        }
    }
}

/// The base score and the sub-scores it is built from.
pub(super) struct Scores {
    pub impact: f64,
    pub exploitability: f64,
    pub base_tenths: u8,
}

/// Position of the value of mandatory metric `idx` (parsing guarantees it is present).
fn pos(values: &Values, idx: usize) -> usize {
    usize::from(values[idx].saturating_sub(1))
}

fn scope_changed(values: &Values) -> bool {
    pos(values, S) == 1
}

/// Base score per specification section 7.1, in the specification's order of operations.
pub(super) fn score(roundup: Roundup, values: &Values) -> Scores {
    let changed = scope_changed(values);
    let iss = 1.0
        - ((1.0 - CIA_WEIGHTS[pos(values, C)])
            * (1.0 - CIA_WEIGHTS[pos(values, I)])
            * (1.0 - CIA_WEIGHTS[pos(values, A)]));
    let impact = if changed {
        7.52 * (iss - 0.029) - 3.25 * (iss - 0.02).powf(15.0)
    } else {
        6.42 * iss
    };
    let pr_weights = if changed {
        &PR_WEIGHTS_CHANGED
    } else {
        &PR_WEIGHTS_UNCHANGED
    };
    let exploitability = 8.22
        * AV_WEIGHTS[pos(values, AV)]
        * AC_WEIGHTS[pos(values, AC)]
        * pr_weights[pos(values, PR)]
        * UI_WEIGHTS[pos(values, UI)];
    let base_tenths = if impact <= 0.0 {
        0
    } else if changed {
        roundup.tenths((1.08 * (impact + exploitability)).min(10.0))
    } else {
        roundup.tenths((impact + exploitability).min(10.0))
    };
    Scores {
        impact,
        exploitability,
        base_tenths,
    }
}

pub(super) fn explain(roundup: Roundup, values: &Values) -> Vec<String> {
    let changed = scope_changed(values);
    let pr_weights = if changed {
        &PR_WEIGHTS_CHANGED
    } else {
        &PR_WEIGHTS_UNCHANGED
    };
    let mut lines = Vec::with_capacity(METRICS.len() + 3);
    for idx in 0..BASE_COUNT {
        let Some(line) = describe(&METRICS, values, idx) else {
            continue;
        };
        let p = pos(values, idx);
        let weight = match idx {
            AV => Some(AV_WEIGHTS[p]),
            AC => Some(AC_WEIGHTS[p]),
            PR => Some(pr_weights[p]),
            UI => Some(UI_WEIGHTS[p]),
            C | I | A => Some(CIA_WEIGHTS[p]),
            _ => None,
        };
        lines.push(match weight {
            Some(w) => format!("{line} ({w})"),
            None => line,
        });
    }
    let s = score(roundup, values);
    lines.push(format!("Impact sub-score {:.2}", s.impact));
    lines.push(format!("Exploitability sub-score {:.2}", s.exploitability));
    let formula = if s.impact <= 0.0 {
        "impact is 0, so the base score is 0"
    } else if changed {
        "scope changed: Roundup(min(1.08 x (impact + exploitability), 10))"
    } else {
        "scope unchanged: Roundup(min(impact + exploitability, 10))"
    };
    lines.push(format!(
        "Base score {:.1} ({formula})",
        f64::from(s.base_tenths) / 10.0
    ));
    for idx in BASE_COUNT..METRICS.len() {
        if let Some(line) = describe(&METRICS, values, idx) {
            lines.push(format!("{line} (not part of the base score)"));
        }
    }
    lines
}
