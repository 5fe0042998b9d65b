//! CVSS v4.0 metrics and score, by FIRST's MacroVector algorithm.
//!
//! The score is computed the way FIRST's calculator (`cvss_score.js`) and the reference
//! implementation (PyPI `cvss`, `cvss4.py`) compute it: the vector's effective metrics (modified
//! metrics override base ones, unset Exploit Maturity counts as Attacked and unset security
//! requirements as High) give six equivalence-class levels EQ1..EQ6, the MacroVector; FIRST's
//! table gives the MacroVector's score; the score is then lowered by the vector's mean
//! proportional severity distance from the MacroVector's highest-severity vectors, and rounded
//! half up to one decimal. The floating-point operations follow the reference in the same order,
//! so results agree bit for bit before rounding.
//!
//! Supplemental metrics (S, AU, R, V, RE, U) are parsed and kept but never change the score.

use super::v4_lookup::CVSS_LOOKUP;
use super::{MetricDef, Values, describe};

/// The metrics in the specification's vector order (base, threat, environmental, supplemental).
pub(super) const METRICS: [MetricDef; 32] = [
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
        "AT",
        "Attack Requirements",
        &[("N", "None"), ("P", "Present")],
    ),
    base(
        "PR",
        "Privileges Required",
        &[("N", "None"), ("L", "Low"), ("H", "High")],
    ),
    base(
        "UI",
        "User Interaction",
        &[("N", "None"), ("P", "Passive"), ("A", "Active")],
    ),
    base("VC", "Vulnerable System Confidentiality", HLN),
    base("VI", "Vulnerable System Integrity", HLN),
    base("VA", "Vulnerable System Availability", HLN),
    base("SC", "Subsequent System Confidentiality", HLN),
    base("SI", "Subsequent System Integrity", HLN),
    base("SA", "Subsequent System Availability", HLN),
    opt(
        "E",
        "Exploit Maturity",
        &[("A", "Attacked"), ("P", "POC"), ("U", "Unreported")],
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
        "MAT",
        "Modified Attack Requirements",
        &[("N", "None"), ("P", "Present")],
    ),
    opt(
        "MPR",
        "Modified Privileges Required",
        &[("N", "None"), ("L", "Low"), ("H", "High")],
    ),
    opt(
        "MUI",
        "Modified User Interaction",
        &[("N", "None"), ("P", "Passive"), ("A", "Active")],
    ),
    opt("MVC", "Modified Vulnerable System Confidentiality", HLN),
    opt("MVI", "Modified Vulnerable System Integrity", HLN),
    opt("MVA", "Modified Vulnerable System Availability", HLN),
    opt(
        "MSC",
        "Modified Subsequent System Confidentiality",
        &[("H", "High"), ("L", "Low"), ("N", "Negligible")],
    ),
    opt("MSI", "Modified Subsequent System Integrity", SAFETY_HLN),
    opt("MSA", "Modified Subsequent System Availability", SAFETY_HLN),
    opt("S", "Safety", &[("N", "Negligible"), ("P", "Present")]),
    opt("AU", "Automatable", &[("N", "No"), ("Y", "Yes")]),
    opt(
        "R",
        "Recovery",
        &[("A", "Automatic"), ("U", "User"), ("I", "Irrecoverable")],
    ),
    opt(
        "V",
        "Value Density",
        &[("D", "Diffuse"), ("C", "Concentrated")],
    ),
    opt(
        "RE",
        "Vulnerability Response Effort",
        &[("L", "Low"), ("M", "Moderate"), ("H", "High")],
    ),
    opt(
        "U",
        "Provider Urgency",
        &[
            ("Clear", "Clear"),
            ("Green", "Green"),
            ("Amber", "Amber"),
            ("Red", "Red"),
        ],
    ),
];

const HLN: &[(&str, &str)] = &[("H", "High"), ("L", "Low"), ("N", "None")];
const SAFETY_HLN: &[(&str, &str)] = &[
    ("S", "Safety"),
    ("H", "High"),
    ("L", "Low"),
    ("N", "Negligible"),
];
const REQUIREMENT: &[(&str, &str)] = &[("H", "High"), ("M", "Medium"), ("L", "Low")];

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

/// Base metrics are `METRICS[0..11]`; the modified metric of base metric `i` is at `i + 15`.
const BASE_COUNT: usize = 11;
const MODIFIED_OFFSET: usize = 15;
const E: usize = 11;
const CR: usize = 12;
const IR: usize = 13;
const AR: usize = 14;
/// Environmental metrics end here; supplemental ones follow and never affect the score.
const SCORED_COUNT: usize = 26;

/// The metric values that enter the score, as single-letter codes, after modified metrics
/// override base ones and defaults fill in unset threat and requirement metrics.
#[derive(Debug, Clone, Copy)]
struct Effective {
    av: u8,
    ac: u8,
    at: u8,
    pr: u8,
    ui: u8,
    vc: u8,
    vi: u8,
    va: u8,
    sc: u8,
    si: u8,
    sa: u8,
    e: u8,
    cr: u8,
    ir: u8,
    ar: u8,
}

/// First byte of the code of metric `idx`, or 0 when it is absent (or `X`).
fn code_byte(values: &Values, idx: usize) -> u8 {
    let v = usize::from(values[idx]);
    match v.checked_sub(1).and_then(|p| METRICS[idx].values.get(p)) {
        Some((code, _)) => code.as_bytes().first().copied().unwrap_or(0),
        None => 0,
    }
}

impl Effective {
    fn of(values: &Values) -> Self {
        let m = |i: usize| match code_byte(values, i + MODIFIED_OFFSET) {
            0 => code_byte(values, i),
            modified => modified,
        };
        let or = |i: usize, default: u8| match code_byte(values, i) {
            0 => default,
            c => c,
        };
        Self {
            av: m(0),
            ac: m(1),
            at: m(2),
            pr: m(3),
            ui: m(4),
            vc: m(5),
            vi: m(6),
            va: m(7),
            sc: m(8),
            si: m(9),
            sa: m(10),
            e: or(E, b'A'),
            cr: or(CR, b'H'),
            ir: or(IR, b'H'),
            ar: or(AR, b'H'),
        }
    }

    /// EQ1..EQ6 (specification section 8.2, Table 24).
    fn macro_vector(&self) -> [u8; 6] {
        let eq1 = if self.av == b'N' && self.pr == b'N' && self.ui == b'N' {
            0
        } else if (self.av == b'N' || self.pr == b'N' || self.ui == b'N') && self.av != b'P' {
            1
        } else {
            2
        };
        let eq2 = u8::from(!(self.ac == b'L' && self.at == b'N'));
        let eq3 = if self.vc == b'H' && self.vi == b'H' {
            0
        } else if self.vc == b'H' || self.vi == b'H' || self.va == b'H' {
            1
        } else {
            2
        };
        let eq4 = if self.si == b'S' || self.sa == b'S' {
            0
        } else if self.sc == b'H' || self.si == b'H' || self.sa == b'H' {
            1
        } else {
            2
        };
        let eq5 = match self.e {
            b'A' => 0,
            b'P' => 1,
            _ => 2,
        };
        let eq6 = u8::from(
            !((self.cr == b'H' && self.vc == b'H')
                || (self.ir == b'H' && self.vi == b'H')
                || (self.ar == b'H' && self.va == b'H')),
        );
        [eq1, eq2, eq3, eq4, eq5, eq6]
    }
}

// Severity levels of each metric value, as FIRST's calculator defines them (0.1 per step).
fn av_level(c: u8) -> f64 {
    match c {
        b'N' => 0.0,
        b'A' => 0.1,
        b'L' => 0.2,
        _ => 0.3,
    }
}
fn pr_level(c: u8) -> f64 {
    match c {
        b'N' => 0.0,
        b'L' => 0.1,
        _ => 0.2,
    }
}
fn ui_level(c: u8) -> f64 {
    match c {
        b'N' => 0.0,
        b'P' => 0.1,
        _ => 0.2,
    }
}
fn ac_level(c: u8) -> f64 {
    if c == b'L' { 0.0 } else { 0.1 }
}
fn at_level(c: u8) -> f64 {
    if c == b'N' { 0.0 } else { 0.1 }
}
/// VC, VI and VA.
fn v_level(c: u8) -> f64 {
    match c {
        b'H' => 0.0,
        b'L' => 0.1,
        _ => 0.2,
    }
}
/// SC, SI and SA (only SI and SA can be Safety, through MSI and MSA).
fn s_level(c: u8) -> f64 {
    match c {
        b'S' => 0.0,
        b'H' => 0.1,
        b'L' => 0.2,
        _ => 0.3,
    }
}
/// CR, IR and AR.
fn req_level(c: u8) -> f64 {
    match c {
        b'H' => 0.0,
        b'M' => 0.1,
        _ => 0.2,
    }
}

// The highest-severity vectors of each EQ level (`max_composed` in FIRST's calculator), tried in
// this order. EQ5 has one per level and no metric distance, so it is left out.
/// `(AV, PR, UI)` by EQ1 level.
const EQ1_MAX: [&[&[u8; 3]]; 3] = [&[b"NNN"], &[b"ANN", b"NLN", b"NNP"], &[b"PNN", b"ALP"]];
/// `(AC, AT)` by EQ2 level.
const EQ2_MAX: [&[&[u8; 2]]; 2] = [&[b"LN"], &[b"HN", b"LP"]];
/// `(VC, VI, VA, CR, IR, AR)` by EQ3 then EQ6 level; EQ3 2 with EQ6 0 cannot occur.
const EQ3_EQ6_MAX: [[&[&[u8; 6]]; 2]; 3] = [
    [&[b"HHHHHH"], &[b"HHLMMH", b"HHHMMM"]],
    [
        &[b"LHHHHH", b"HLHHHH"],
        &[b"LHLHMH", b"LHHHMM", b"HLHMHM", b"HLLMHH", b"LLHHHM"],
    ],
    [&[], &[b"LLLHHH"]],
];
/// `(SC, SI, SA)` by EQ4 level.
const EQ4_MAX: [&[&[u8; 3]]; 3] = [&[b"HSS"], &[b"HHH"], &[b"LLL"]];

// Depth of each EQ level in severity steps (`maxSeverity` in FIRST's calculator).
const EQ1_MAX_SEVERITY: [u8; 3] = [1, 4, 5];
const EQ2_MAX_SEVERITY: [u8; 2] = [1, 2];
/// By EQ3 then EQ6 level.
const EQ3_EQ6_MAX_SEVERITY: [[u8; 2]; 3] = [[7, 6], [8, 8], [10, 10]];
const EQ4_MAX_SEVERITY: [u8; 3] = [6, 5, 4];

/// The score of a MacroVector in FIRST's table, if it is one of the 270 that exist.
fn lookup(mv: [u8; 6]) -> Option<f64> {
    CVSS_LOOKUP
        .binary_search_by(|(key, _)| key.cmp(&mv))
        .ok()
        .map(|i| CVSS_LOOKUP[i].1)
}

/// The score with the values it was interpolated from.
pub(super) struct Scores {
    pub macro_vector: [u8; 6],
    /// The MacroVector's score in FIRST's table (`None` when no impact at all forces 0).
    pub table_score: Option<f64>,
    /// How much the severity distance lowered the table score.
    pub mean_distance: f64,
    pub base_tenths: u8,
}

/// Severity distances of one vector from one highest-severity vector, summed per EQ.
#[derive(Debug, Clone, Copy)]
struct Distances {
    eq1: f64,
    eq2: f64,
    eq3eq6: f64,
    eq4: f64,
}

/// Distances from the first highest-severity vector that the vector does not exceed in any
/// metric; if there is none, from the last one tried, as the reference does.
fn distances(e: &Effective, mv: [u8; 6]) -> Distances {
    let [eq1, eq2, eq3, eq4, _, eq6] = mv.map(usize::from);
    let mut last = None;
    for m1 in EQ1_MAX[eq1] {
        for m2 in EQ2_MAX[eq2] {
            for m36 in EQ3_EQ6_MAX[eq3][eq6] {
                for m4 in EQ4_MAX[eq4] {
                    let av = av_level(e.av) - av_level(m1[0]);
                    let pr = pr_level(e.pr) - pr_level(m1[1]);
                    let ui = ui_level(e.ui) - ui_level(m1[2]);
                    let ac = ac_level(e.ac) - ac_level(m2[0]);
                    let at = at_level(e.at) - at_level(m2[1]);
                    let vc = v_level(e.vc) - v_level(m36[0]);
                    let vi = v_level(e.vi) - v_level(m36[1]);
                    let va = v_level(e.va) - v_level(m36[2]);
                    let cr = req_level(e.cr) - req_level(m36[3]);
                    let ir = req_level(e.ir) - req_level(m36[4]);
                    let ar = req_level(e.ar) - req_level(m36[5]);
                    let sc = s_level(e.sc) - s_level(m4[0]);
                    let si = s_level(e.si) - s_level(m4[1]);
                    let sa = s_level(e.sa) - s_level(m4[2]);
                    let d = Distances {
                        eq1: av + pr + ui,
                        eq2: ac + at,
                        eq3eq6: vc + vi + va + cr + ir + ar,
                        eq4: sc + si + sa,
                    };
                    let all = [av, pr, ui, ac, at, vc, vi, va, sc, si, sa, cr, ir, ar];
                    if all.iter().all(|x| *x >= 0.0) {
                        return d;
                    }
                    last = Some(d);
                }
            }
        }
    }
    // Only EQ3 2 with EQ6 0 has no highest-severity vector, and no vector gives it.
    last.unwrap_or(Distances {
        eq1: 0.0,
        eq2: 0.0,
        eq3eq6: 0.0,
        eq4: 0.0,
    })
}

pub(super) fn score(values: &Values) -> Scores {
    let e = Effective::of(values);
    let mv = Effective::macro_vector(&e);
    let no_impact = [e.vc, e.vi, e.va, e.sc, e.si, e.sa]
        .iter()
        .all(|c| *c == b'N');
    let table_score = if no_impact { None } else { lookup(mv) };
    let Some(value) = table_score else {
        return Scores {
            macro_vector: mv,
            table_score,
            mean_distance: 0.0,
            base_tenths: 0,
        };
    };
    let [eq1, eq2, eq3, eq4, eq5, eq6] = mv;
    let next = |d: [u8; 6]| lookup(d);
    let lower_eq1 = next([eq1 + 1, eq2, eq3, eq4, eq5, eq6]);
    let lower_eq2 = next([eq1, eq2 + 1, eq3, eq4, eq5, eq6]);
    let lower_eq3eq6 = match (eq3, eq6) {
        (0 | 1, 1) => next([eq1, eq2, eq3 + 1, eq4, eq5, eq6]),
        (1, 0) => next([eq1, eq2, eq3, eq4, eq5, eq6 + 1]),
        (0, 0) => {
            let left = next([eq1, eq2, eq3, eq4, eq5, eq6 + 1]);
            let right = next([eq1, eq2, eq3 + 1, eq4, eq5, eq6]);
            // Python's max(left, right): NaN on the left wins, NaN on the right loses.
            match (left, right) {
                (Some(l), Some(r)) => Some(if r > l { r } else { l }),
                (l, _) => l,
            }
        }
        _ => next([eq1, eq2, eq3 + 1, eq4, eq5, eq6 + 1]),
    };
    let lower_eq4 = next([eq1, eq2, eq3, eq4 + 1, eq5, eq6]);
    let lower_eq5 = next([eq1, eq2, eq3, eq4, eq5 + 1, eq6]);

    let d = distances(&e, mv);
    let step = 0.1;
    let (eq1, eq2, eq3, eq4, eq6) = (
        usize::from(eq1),
        usize::from(eq2),
        usize::from(eq3),
        usize::from(eq4),
        usize::from(eq6),
    );
    let max_eq1 = f64::from(EQ1_MAX_SEVERITY[eq1]) * step;
    let max_eq2 = f64::from(EQ2_MAX_SEVERITY[eq2]) * step;
    let max_eq3eq6 = f64::from(EQ3_EQ6_MAX_SEVERITY[eq3][eq6]) * step;
    let max_eq4 = f64::from(EQ4_MAX_SEVERITY[eq4]) * step;

    let mut n_existing_lower = 0u32;
    // Each EQ with a lower MacroVector moves the score towards it in proportion to how far the
    // vector sits below the MacroVector's highest-severity vectors. EQ5 has no distance.
    let mut normalized = |lower: Option<f64>, current: f64, max: f64| -> f64 {
        match lower.map(|l| value - l) {
            Some(available) if available >= 0.0 => {
                n_existing_lower += 1;
                available * (current / max)
            }
            _ => 0.0,
        }
    };
    let n1 = normalized(lower_eq1, d.eq1, max_eq1);
    let n2 = normalized(lower_eq2, d.eq2, max_eq2);
    let n36 = normalized(lower_eq3eq6, d.eq3eq6, max_eq3eq6);
    let n4 = normalized(lower_eq4, d.eq4, max_eq4);
    let n5 = normalized(lower_eq5, 0.0, 1.0);
    let mean_distance = if n_existing_lower == 0 {
        0.0
    } else {
        (n1 + n2 + n36 + n4 + n5) / f64::from(n_existing_lower)
    };
    let final_value = (value - mean_distance).clamp(0.0, 10.0);
    Scores {
        macro_vector: mv,
        table_score,
        mean_distance,
        base_tenths: round_half_up_tenths(final_value + 1e-6),
    }
}

/// Rounds `x` (0 to about 10) half up to one decimal, returning tenths, exactly on the binary
/// value of `x` as the reference's `Decimal(x).quantize(Decimal("0.1"), ROUND_HALF_UP)` does.
/// `(x * 10.0).round()` would round the product first and could land on the other side of .5.
pub(super) fn round_half_up_tenths(x: f64) -> u8 {
    if x.is_nan() || x < 0.04 {
        return 0;
    }
    // x = mantissa * 2^exp exactly, with x >= 0.04 so exp >= -57 and everything fits in u128.
    let bits = x.to_bits();
    let raw_exp = ((bits >> 52) & 0x7ff) as i32;
    let mantissa = u128::from((bits & ((1 << 52) - 1)) | (1 << 52));
    let exp = raw_exp - 1075;
    // floor(10x + 1/2) = floor((20 * mantissa * 2^exp + 1) / 2)
    let tenths = if exp >= 0 {
        (10 * mantissa) << exp
    } else {
        let shift = (-exp) as u32;
        (20 * mantissa + (1u128 << shift)) >> (shift + 1)
    };
    tenths.min(100) as u8
}

pub(super) fn explain(values: &Values) -> Vec<String> {
    let mut lines = Vec::with_capacity(METRICS.len() + 4);
    for idx in 0..METRICS.len() {
        if let Some(line) = describe(&METRICS, values, idx) {
            let note = if idx >= SCORED_COUNT {
                " (supplemental, not scored)".to_owned()
            } else if idx >= MODIFIED_OFFSET {
                format!(
                    " (replaces {} in the score)",
                    METRICS[idx - MODIFIED_OFFSET].abbrev
                )
            } else if idx == E {
                " (threat, lowers the score unless Attacked)".to_owned()
            } else if idx >= BASE_COUNT {
                " (environmental, scored)".to_owned()
            } else {
                String::new()
            };
            lines.push(format!("{line}{note}"));
        }
    }
    let s = score(values);
    let mv = s.macro_vector;
    let digits: String = mv.iter().map(|d| char::from(b'0' + d)).collect();
    lines.push(format!(
        "MacroVector {digits} (EQ1 {}, EQ2 {}, EQ3 {}, EQ4 {}, EQ5 {}, EQ6 {})",
        mv[0], mv[1], mv[2], mv[3], mv[4], mv[5]
    ));
    match s.table_score {
        Some(t) => {
            lines.push(format!("MacroVector score {t:.1} (FIRST's lookup table)"));
            lines.push(format!(
                "Severity distance within the MacroVector lowers it by {:.2}",
                s.mean_distance
            ));
        }
        None => lines.push("No impact on any system: the score is 0".to_owned()),
    }
    lines.push(format!("Score {:.1}", f64::from(s.base_tenths) / 10.0));
    lines
}
