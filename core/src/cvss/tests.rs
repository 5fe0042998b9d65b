//! Tests for CVSS parsing and scoring: every fixture vector against the reference
//! implementation's score, error messages that name the wrong part, and round trips.

use super::{Cvss, CvssError, CvssVersion, Severity};
use proptest::prelude::*;

const V3_0: &str = include_str!("../../../fixtures/cvss/v3_0.csv");
const V3_1: &str = include_str!("../../../fixtures/cvss/v3_1.csv");
const V4_0: &str = include_str!("../../../fixtures/cvss/v4_0.csv");

/// Parses a fixture (`vector,base_score,severity` with a header) and returns the number of rows,
/// failing with the first mismatches, each naming its vector.
fn check_fixture(name: &str, csv: &str, version: CvssVersion) -> usize {
    let mut rows = 0;
    let mut mismatches = Vec::new();
    for (i, line) in csv.lines().enumerate().skip(1) {
        let mut fields = line.split(',');
        let (Some(vector), Some(score), Some(severity), None) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            panic!(
                "{name} line {}: not vector,base_score,severity: {line:?}",
                i + 1
            );
        };
        let want_score: f64 = score.parse().expect("fixture score is a number");
        rows += 1;
        match Cvss::parse(vector) {
            Err(e) => mismatches.push(format!("{vector}: does not parse: {e}")),
            Ok(c) => {
                if c.version() != version {
                    mismatches.push(format!("{vector}: version {}", c.version()));
                }
                if c.base_score() != want_score || c.severity().as_str() != severity {
                    mismatches.push(format!(
                        "{vector}: got {} {}, reference {want_score} {severity}",
                        c.base_score(),
                        c.severity()
                    ));
                }
            }
        }
    }
    assert!(
        mismatches.is_empty(),
        "{name}: {} of {rows} vectors differ from the reference, first ones:\n{}",
        mismatches.len(),
        mismatches
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    rows
}

#[test]
fn v3_0_matches_reference() {
    let rows = check_fixture("v3_0.csv", V3_0, CvssVersion::V3_0);
    // Every one of the 2,592 base metric combinations, plus random vectors.
    assert!(rows >= 3000, "only {rows} v3.0 vectors");
}

#[test]
fn v3_1_matches_reference() {
    let rows = check_fixture("v3_1.csv", V3_1, CvssVersion::V3_1);
    assert!(rows >= 3000, "only {rows} v3.1 vectors");
}

#[test]
fn v4_0_matches_reference() {
    let rows = check_fixture("v4_0.csv", V4_0, CvssVersion::V4_0);
    assert!(rows >= 3000, "only {rows} v4.0 vectors");
}

/// The fixtures are only worth as much as their coverage: check that they reach every v3 base
/// combination and every v4.0 MacroVector, with threat and environmental metrics present.
#[test]
fn fixtures_cover_the_scoring_space() {
    for (name, csv) in [("v3_0", V3_0), ("v3_1", V3_1)] {
        let mut bases = std::collections::BTreeSet::new();
        for line in csv.lines().skip(1) {
            let c =
                Cvss::parse(line.split(',').next().unwrap_or_default()).expect("fixture parses");
            let base: Vec<&str> = ["AV", "AC", "PR", "UI", "S", "C", "I", "A"]
                .iter()
                .map(|m| c.metric(m).expect("base metric present"))
                .collect();
            bases.insert(base.join("/"));
        }
        assert_eq!(bases.len(), 2592, "{name} base combinations");
    }
    let mut macros = std::collections::BTreeSet::new();
    let (mut with_e, mut with_env) = (0, 0);
    for line in V4_0.lines().skip(1) {
        let c = Cvss::parse(line.split(',').next().unwrap_or_default()).expect("fixture parses");
        macros.insert(super::v4::score(&c.values).macro_vector);
        with_e += usize::from(c.metric("E").is_some());
        with_env += usize::from(
            ["CR", "MAV", "MVC", "MSI"]
                .iter()
                .any(|m| c.metric(m).is_some()),
        );
    }
    assert_eq!(macros.len(), 270, "v4.0 MacroVectors covered");
    assert!(
        with_e > 1000 && with_env > 1000,
        "E in {with_e}, environmental in {with_env}"
    );
}

fn check(vector: &str, version: CvssVersion, score: f64, severity: Severity) {
    let c = Cvss::parse(vector).expect("valid vector");
    assert_eq!(
        (c.version(), c.base_score(), c.severity()),
        (version, score, severity),
        "{vector}"
    );
}

/// Examples from FIRST's specification documents (v3.1 section 8 "Scoring Examples" and the v4.0
/// calculator's default), as a readable spot check beside the generated fixtures.
#[test]
fn specification_examples() {
    use CvssVersion::{V3_0, V3_1, V4_0};
    check(
        "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",
        V3_1,
        9.8,
        Severity::Critical,
    );
    check(
        "CVSS:3.0/AV:N/AC:L/PR:N/UI:N/S:C/C:H/I:H/A:H",
        V3_0,
        10.0,
        Severity::Critical,
    );
    check(
        "CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:C/C:L/I:L/A:N",
        V3_1,
        6.1,
        Severity::Medium,
    );
    check(
        "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:N",
        V3_1,
        0.0,
        Severity::None,
    );
    check(
        "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:H/SI:H/SA:H",
        V4_0,
        10.0,
        Severity::Critical,
    );
    check(
        "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N",
        V4_0,
        9.3,
        Severity::Critical,
    );
    check(
        "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:N/VI:N/VA:N/SC:N/SI:N/SA:N",
        V4_0,
        0.0,
        Severity::None,
    );
}

fn err(vector: &str) -> (CvssError, String) {
    let e = Cvss::parse(vector).expect_err("invalid vector");
    let msg = e.to_string();
    (e, msg)
}

#[test]
fn invalid_vectors_name_the_wrong_part() {
    let cases: &[(&str, &str)] = &[
        ("", "empty CVSS vector"),
        ("AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", "\"AV:N\""),
        ("CVSS:2.0/AV:N/AC:L/Au:N/C:C/I:C/A:C", "\"2.0\""),
        (
            "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H/",
            "empty part 9",
        ),
        (
            "CVSS:3.1/AV:N//AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",
            "empty part 2",
        ),
        ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A", "\"A\""),
        (
            "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H:H",
            "\"A:H:H\"",
        ),
        (
            "CVSS:3.1/AV:N/AC:X/PR:N/UI:N/S:U/C:H/I:H/A:H",
            "invalid value \"X\" for metric \"AC\"",
        ),
        (
            "CVSS:3.1/AV:Z/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",
            "invalid value \"Z\" for metric \"AV\"",
        ),
        (
            "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H/E:Q",
            "metric \"E\" (CVSS 3.1 allows X, H, F, P, U)",
        ),
        (
            "CVSS:3.1/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",
            "missing mandatory metric \"AV\"",
        ),
        (
            "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/C:H/I:H/A:H",
            "missing mandatory metric \"S\"",
        ),
        (
            "CVSS:3.1/AV:N/AV:L/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",
            "duplicate metric \"AV\"",
        ),
        (
            "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H/E:X/E:H",
            "duplicate metric \"E\"",
        ),
        (
            "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H/AT:N",
            "unknown metric \"AT\" for CVSS 3.1",
        ),
        (
            "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:H/SI:H",
            "missing mandatory metric \"SA\"",
        ),
        (
            "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:H/SI:S/SA:H",
            "invalid value \"S\" for metric \"SI\"",
        ),
        (
            "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:H/SI:H/SA:H/E:F",
            "invalid value \"F\" for metric \"E\"",
        ),
        (
            "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:H/SI:H/SA:H/C:H",
            "unknown metric \"C\" for CVSS 4.0",
        ),
        (
            "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:H/SI:H/SA:H/U:red",
            "invalid value \"red\" for metric \"U\"",
        ),
    ];
    for (vector, needle) in cases {
        let (_, msg) = err(vector);
        assert!(
            msg.contains(needle),
            "{vector:?}: message {msg:?} lacks {needle:?}"
        );
    }
    assert_eq!(
        err("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H/XX:Y").0,
        CvssError::UnknownMetric {
            metric: "XX".to_owned(),
            version: CvssVersion::V3_1
        }
    );
    assert_eq!(
        err("cvss:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H").0,
        CvssError::MissingPrefix {
            prefix: "cvss:3.1".to_owned()
        }
    );
}

#[test]
fn metrics_and_normalised_vector() {
    // Any order in, the specification's order out; X values dropped.
    let c = Cvss::parse(" CVSS:3.1/A:H/I:H/C:H/S:U/UI:N/PR:N/AC:L/AV:N/RL:X/E:F\n").expect("valid");
    assert_eq!(
        c.vector(),
        "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H/E:F"
    );
    assert_eq!(c.to_string(), c.vector());
    assert_eq!(
        (
            c.metric("AV"),
            c.metric("E"),
            c.metric("RL"),
            c.metric("AT")
        ),
        (Some("N"), Some("F"), None, None)
    );
    let v4 =
        Cvss::parse("CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N/U:Amber/E:P")
            .expect("valid");
    assert_eq!(
        v4.vector(),
        "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N/E:P/U:Amber"
    );
    assert_eq!((v4.metric("E"), v4.metric("U")), (Some("P"), Some("Amber")));
    assert_eq!(
        "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"
            .parse::<Cvss>()
            .map(|c| c.base_score()),
        Ok(9.8)
    );
}

#[test]
fn explain_shows_weights_sub_scores_and_macro_vector() {
    let c = Cvss::parse("CVSS:3.1/AV:N/AC:L/PR:L/UI:N/S:C/C:H/I:H/A:H/E:P").expect("valid");
    let lines = c.explain();
    assert!(
        lines.contains(&"AV:N Attack Vector Network (0.85)".to_owned()),
        "{lines:?}"
    );
    // Privileges Required weighs 0.68, not 0.62, when the scope changes.
    assert!(
        lines.contains(&"PR:L Privileges Required Low (0.68)".to_owned()),
        "{lines:?}"
    );
    assert!(
        lines.contains(&"Impact sub-score 6.05".to_owned()),
        "{lines:?}"
    );
    assert!(
        lines.contains(&"Exploitability sub-score 3.11".to_owned()),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("Base score 9.9")),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("E:P Exploit Code Maturity Proof-of-Concept")),
        "{lines:?}"
    );

    let v4 = Cvss::parse("CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N")
        .expect("valid");
    let lines = v4.explain();
    assert!(
        lines.iter().any(|l| l.starts_with("MacroVector 000200 ")),
        "{lines:?}"
    );
    assert!(
        lines.contains(&"MacroVector score 9.3 (FIRST's lookup table)".to_owned()),
        "{lines:?}"
    );
    assert!(lines.contains(&"Score 9.3".to_owned()), "{lines:?}");

    // A modified metric moves the vector to another MacroVector: MAV:P takes EQ1 from 0 to 2.
    let env =
        Cvss::parse("CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N/MAV:P/E:U")
            .expect("valid");
    let lines = env.explain();
    assert!(
        lines.contains(
            &"MAV:P Modified Attack Vector Physical (replaces AV in the score)".to_owned()
        ),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("MacroVector 200220 ")),
        "{lines:?}"
    );
    assert!(env.base_score() < v4.base_score());
}

#[test]
fn summary_serialises_as_the_cli_prints_it() {
    let c = Cvss::parse("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H").expect("valid");
    let json = serde_json::to_string(&c.summary()).expect("serialises");
    assert_eq!(
        json,
        r#"{"version":"3.1","base_score":9.8,"severity":"Critical"}"#
    );
    let back: Cvss =
        serde_json::from_str(&serde_json::to_string(&c).expect("serialises")).expect("parses");
    assert_eq!(back, c);
    assert!(serde_json::from_str::<Cvss>(r#""CVSS:3.1/AV:N""#).is_err());
}

#[test]
fn severity_bands() {
    let bands = [
        (0.0, Severity::None),
        (0.1, Severity::Low),
        (3.9, Severity::Low),
        (4.0, Severity::Medium),
        (6.9, Severity::Medium),
        (7.0, Severity::High),
        (8.9, Severity::High),
        (9.0, Severity::Critical),
        (10.0, Severity::Critical),
    ];
    for (score, severity) in bands {
        assert_eq!(Severity::from_score(score), severity, "{score}");
    }
}

#[test]
fn round_half_up_is_exact_on_the_binary_value() {
    use super::v4::round_half_up_tenths as r;
    assert_eq!(r(0.0), 0);
    assert_eq!(r(1.45), 14, "1.45 is 1.4499999999999999556 in binary");
    assert_eq!(r(1.450_000_000_000_000_2), 15);
    assert_eq!(r(1.25), 13, "1.25 is exact: half up");
    assert_eq!(r(9.95), 99, "9.95 is 9.9499999999999992895 in binary");
    assert_eq!(r(10.000_001), 100);
    assert_eq!(r(0.05), 1, "0.05 is 0.050000000000000002776 in binary");
}

fn arb_vector(version: CvssVersion) -> impl Strategy<Value = String> {
    let table = version.metrics();
    let per_metric: Vec<BoxedStrategy<Option<String>>> = table
        .iter()
        .map(|def| {
            let mut codes: Vec<String> = def
                .values
                .iter()
                .map(|(c, _)| format!("{}:{c}", def.abbrev))
                .collect();
            if def.mandatory {
                proptest::sample::select(codes).prop_map(Some).boxed()
            } else {
                codes.push(format!("{}:X", def.abbrev));
                proptest::option::of(proptest::sample::select(codes)).boxed()
            }
        })
        .collect();
    (per_metric, any::<u64>()).prop_map(move |(parts, shuffle_seed)| {
        let mut parts: Vec<String> = parts.into_iter().flatten().collect();
        // A deterministic shuffle: metrics may come in any order.
        let mut rng = crate::rng::SeededRng::new(shuffle_seed);
        for i in (1..parts.len()).rev() {
            let j = (rng.next_u64() % (i as u64 + 1)) as usize;
            parts.swap(i, j);
        }
        format!("CVSS:{version}/{}", parts.join("/"))
    })
}

proptest! {
    #[test]
    fn parse_vector_parse_round_trips(
        vector in prop_oneof![arb_vector(CvssVersion::V3_0), arb_vector(CvssVersion::V3_1), arb_vector(CvssVersion::V4_0)]
    ) {
        let first = Cvss::parse(&vector).expect("generated vectors are valid");
        let normalised = first.vector();
        let second = Cvss::parse(&normalised).expect("normalised vector parses");
        prop_assert_eq!(&second, &first);
        prop_assert_eq!(second.vector(), normalised);
        prop_assert_eq!(second.base_score(), first.base_score());
        prop_assert!((0.0..=10.0).contains(&first.base_score()));
    }

    #[test]
    fn garbage_never_panics(s in "CVSS:[34]\\.[01]/[A-Z:/X]{0,60}") {
        let _ = Cvss::parse(&s);
    }
}
