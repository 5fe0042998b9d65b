//! The findings use cases: read the scoring policy from a policy file, and the one-line
//! summaries (CVSS headline, blast radius) that `convoy score` prints and the console shows.
//!
//! Scoring itself is `convoy_core::{cvss, risk}`, not this module; storing findings and scores
//! is the store's.

use anyhow::{Context, Result, bail};
use convoy_core::cvss::Cvss;
use convoy_core::risk::{BlastRadius, ScoringPolicy};
use std::path::Path;

/// The top-level key of a policy file that holds the scoring policy. Other keys (`planning`,
/// `gates`) belong to other parts of Convoy and are left alone here.
pub const POLICY_SECTION: &str = "scoring";
/// Top-level keys of a policy file that Convoy knows; others draw a warning.
const KNOWN_SECTIONS: [&str; 3] = ["scoring", "planning", "gates"];

/// `CVSS 3.1 base score 9.8 (Critical)`: the first line of `convoy score cvss` and of the
/// console's live CVSS preview.
pub fn cvss_headline(cvss: &Cvss) -> String {
    format!(
        "CVSS {} base score {:.1} ({})",
        cvss.version(),
        cvss.base_score(),
        cvss.severity()
    )
}

/// The blast radius in one line, as the scorecard of `convoy score finding` and the console
/// show it.
pub fn blast_radius_summary(br: &BlastRadius) -> String {
    format!(
        "blast radius: {} of {} devices ({:.2}%), criticality-weighted {:.2}%, {} fragile now, {} unreachable",
        br.affected_devices,
        br.fleet_devices,
        br.affected_share * 100.0,
        br.criticality_weighted_share * 100.0,
        br.fragile_devices,
        br.unreachable_devices
    )
}

/// Reads the `scoring` section of a policy file (a JSON object whose other sections belong to
/// other parts of Convoy). A file without the section gives the default policy.
pub fn load_policy(path: &Path) -> Result<ScoringPolicy> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let value: serde_json::Value = convoy_core::strict_json::from_str(&text)
        .with_context(|| format!("parsing policy JSON {}", path.display()))?;
    let Some(object) = value.as_object() else {
        bail!(
            "policy file {} must hold a JSON object with a {POLICY_SECTION:?} key",
            path.display()
        );
    };
    for key in object.keys() {
        if !KNOWN_SECTIONS.contains(&key.as_str()) {
            eprintln!(
                "warning: policy file {} has an unknown section {key:?} (known: {})",
                path.display(),
                KNOWN_SECTIONS.join(", ")
            );
        }
    }
    let policy = match object.get(POLICY_SECTION) {
        Some(section) => {
            serde_json::from_value::<ScoringPolicy>(section.clone()).with_context(|| {
                format!(
                    "reading the {POLICY_SECTION:?} section of {}",
                    path.display()
                )
            })?
        }
        None => ScoringPolicy::default(),
    };
    policy
        .validate()
        .with_context(|| format!("checking the scoring policy in {}", path.display()))?;
    Ok(policy)
}
