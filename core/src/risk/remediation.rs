//! From a finding to a rollout (issue 20): the shape a finding's tier proposes for the rollout
//! that remediates it, and the pre-deployment checklist that travels with the request.
//!
//! A scorecard's [`Tier`] proposes a [`Shape`]: tier 0 the emergency path (shorter soaks, the
//! canary first), tier 1 an accelerated rollout (halved soaks), tier 2 the standard plan,
//! tier 3 deferral to the next scheduled release (not dispatched now). The operator may choose
//! another shape; the request records both. [`shape_waves`] applies a shape to frozen waves.
//!
//! Not here: who approves (`rollout::approvals_satisfy`), storing requests (the app's), or the
//! clock.

use super::Tier;
use crate::rollout::WaveSpec;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The shape of a rollout that remediates a finding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Shape {
    /// Tier 0: the emergency path, the canary first, soaks a quarter of the plan's (at least
    /// [`EMERGENCY_MIN_SOAK_SECS`] where the plan had more).
    Emergency,
    /// Tier 1: the standard path with soaks halved.
    Accelerated,
    /// Tier 2: the standard path with the plan as it is.
    Standard,
    /// Tier 3: deferred to the next scheduled release; not dispatched now.
    Deferred,
}

/// The shortest soak the emergency shape shortens a wave to (a wave planned shorter keeps its).
pub const EMERGENCY_MIN_SOAK_SECS: i64 = 900;

impl Shape {
    pub const ALL: [Shape; 4] = [
        Shape::Emergency,
        Shape::Accelerated,
        Shape::Standard,
        Shape::Deferred,
    ];

    /// The shape a tier proposes.
    pub const fn for_tier(tier: Tier) -> Self {
        match tier {
            Tier::Emergency => Shape::Emergency,
            Tier::Accelerated => Shape::Accelerated,
            Tier::Canary => Shape::Standard,
            Tier::Hold => Shape::Deferred,
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Shape::Emergency => "emergency",
            Shape::Accelerated => "accelerated",
            Shape::Standard => "standard",
            Shape::Deferred => "deferred",
        }
    }

    /// The shape named `text` (`emergency`, `accelerated`, `standard`, `deferred`).
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text.trim())
    }

    /// What the shape does, in words.
    pub const fn words(self) -> &'static str {
        match self {
            Shape::Emergency => {
                "emergency path: the canary first, soaks a quarter of the plan's (at least 15 minutes), checklist required"
            }
            Shape::Accelerated => "accelerated: the standard path with soaks halved",
            Shape::Standard => "standard: the plan as it is",
            Shape::Deferred => {
                "deferred to the next scheduled release: not dispatched now unless the shape is changed"
            }
        }
    }

    /// Whether a rollout of this shape may be dispatched now.
    pub const fn dispatchable(self) -> bool {
        !matches!(self, Shape::Deferred)
    }

    /// A wave's soak under this shape.
    pub fn soak(self, soak_secs: i64) -> i64 {
        match self {
            Shape::Emergency => (soak_secs / 4).max(soak_secs.min(EMERGENCY_MIN_SOAK_SECS)),
            Shape::Accelerated => soak_secs / 2,
            Shape::Standard | Shape::Deferred => soak_secs,
        }
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Applies `shape` to frozen waves: their soaks, and for the emergency shape the canary first
/// (a wave named `canary` moved to the front, the others in their order).
pub fn shape_waves(shape: Shape, waves: &mut Vec<WaveSpec>) {
    if shape == Shape::Emergency
        && let Some(i) = waves.iter().position(|w| w.name == "canary")
    {
        let canary = waves.remove(i);
        waves.insert(0, canary);
    }
    for w in waves.iter_mut() {
        w.soak_secs = shape.soak(w.soak_secs);
    }
}

/// The longest text a checklist item holds, in characters.
pub const MAX_CHECKLIST_CHARS: usize = 1_000;

/// The pre-deployment checklist of a rollout request (issue 20): required on the emergency
/// path, shown in approvals and in the regulator draft. Every item is free text.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Checklist {
    /// Who owns the rollout until it is closed (a name and how to reach them).
    pub owner: String,
    /// The regression test that shows the fix (a test id, a CI run, a ticket).
    pub regression_test: String,
    /// How the rollout is undone if it goes wrong (A/B revert, rollback release, technicians).
    pub rollback_readiness: String,
    /// What support has been told (a link or the brief itself).
    pub support_brief: String,
}

/// Why a checklist is refused: the item and the reason.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("checklist.{item}: {reason}")]
pub struct ChecklistError {
    pub item: &'static str,
    pub reason: String,
}

impl Checklist {
    /// The items, by name, in order.
    pub fn items(&self) -> [(&'static str, &str); 4] {
        [
            ("owner", &self.owner),
            ("regression_test", &self.regression_test),
            ("rollback_readiness", &self.rollback_readiness),
            ("support_brief", &self.support_brief),
        ]
    }

    /// The items with no text, by name.
    pub fn missing(&self) -> Vec<&'static str> {
        self.items()
            .into_iter()
            .filter(|(_, v)| v.trim().is_empty())
            .map(|(k, _)| k)
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.missing().len() == self.items().len()
    }

    /// The checklist with every item trimmed.
    #[must_use]
    pub fn trimmed(&self) -> Self {
        Self {
            owner: self.owner.trim().to_owned(),
            regression_test: self.regression_test.trim().to_owned(),
            rollback_readiness: self.rollback_readiness.trim().to_owned(),
            support_brief: self.support_brief.trim().to_owned(),
        }
    }

    /// Checks every item: at most [`MAX_CHECKLIST_CHARS`] characters, no control character but
    /// a line break, and no bidirectional override (text that reads differently than it shows).
    pub fn validate(&self) -> Result<(), ChecklistError> {
        for (item, text) in self.items() {
            let chars = text.chars().count();
            if chars > MAX_CHECKLIST_CHARS {
                return Err(ChecklistError {
                    item,
                    reason: format!(
                        "{chars} characters, more than the {MAX_CHECKLIST_CHARS} an item holds"
                    ),
                });
            }
            if let Some((at, c)) = text.chars().enumerate().find(|(_, c)| {
                (c.is_control() && *c != '\n')
                    || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
            }) {
                return Err(ChecklistError {
                    item,
                    reason: format!(
                        "control or bidirectional character U+{:04X} at character {at}: plain text only",
                        u32::from(c)
                    ),
                });
            }
        }
        Ok(())
    }

    /// Refuses a checklist that misses an item, naming the first one missing.
    pub fn require_complete(&self) -> Result<(), ChecklistError> {
        match self.missing().first() {
            Some(item) => Err(ChecklistError {
                item,
                reason: "required on the emergency path (owner, regression_test, rollback_readiness, support_brief)".into(),
            }),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wave(name: &str, soak: i64) -> WaveSpec {
        WaveSpec {
            name: name.into(),
            device_ids: vec!["d".into()],
            soak_secs: soak,
        }
    }

    #[test]
    fn each_tier_proposes_its_shape() {
        assert_eq!(Shape::for_tier(Tier::Emergency), Shape::Emergency);
        assert_eq!(Shape::for_tier(Tier::Accelerated), Shape::Accelerated);
        assert_eq!(Shape::for_tier(Tier::Canary), Shape::Standard);
        assert_eq!(Shape::for_tier(Tier::Hold), Shape::Deferred);
        assert!(!Shape::Deferred.dispatchable());
        for s in Shape::ALL {
            assert_eq!(Shape::parse(s.as_str()), Some(s));
        }
        assert_eq!(Shape::parse("urgent"), None);
    }

    #[test]
    fn the_emergency_shape_puts_the_canary_first_and_shortens_soaks() {
        let mut waves = vec![
            wave("region", 86_400),
            wave("canary", 7_200),
            wave("fleet", 600),
        ];
        shape_waves(Shape::Emergency, &mut waves);
        let got: Vec<(&str, i64)> = waves
            .iter()
            .map(|w| (w.name.as_str(), w.soak_secs))
            .collect();
        // A quarter, at least 15 minutes, and a soak planned shorter keeps its length.
        assert_eq!(got, [("canary", 1_800), ("region", 21_600), ("fleet", 600)]);
        let mut waves = vec![wave("canary", 7_200), wave("fleet", 3_000)];
        shape_waves(Shape::Emergency, &mut waves);
        assert_eq!(waves[1].soak_secs, 900);
        let mut waves = vec![wave("canary", 7_200)];
        shape_waves(Shape::Accelerated, &mut waves);
        assert_eq!(waves[0].soak_secs, 3_600);
        shape_waves(Shape::Standard, &mut waves);
        assert_eq!(waves[0].soak_secs, 3_600);
    }

    #[test]
    fn a_checklist_names_what_is_missing_and_refuses_control_characters_and_long_items() {
        let full = Checklist {
            owner: "ana (on call)".into(),
            regression_test: "CI run 4411".into(),
            rollback_readiness: "A/B revert tested".into(),
            support_brief: "KB-77\nsent to tier 1".into(),
        };
        assert!(full.validate().is_ok());
        assert!(full.require_complete().is_ok());
        let partial = Checklist {
            regression_test: String::new(),
            ..full.clone()
        };
        let e = partial.require_complete().expect_err("missing");
        assert_eq!(e.item, "regression_test");
        assert_eq!(Checklist::default().missing().len(), 4);
        assert!(Checklist::default().is_empty());
        let escape = Checklist {
            owner: "ana\u{1b}[31m".into(),
            ..full.clone()
        };
        let e = escape.validate().expect_err("escape");
        assert_eq!(e.item, "owner");
        assert!(e.reason.contains("U+001B at character 3"), "{e}");
        let bidi = Checklist {
            support_brief: "ok\u{202E}gnp.exe".into(),
            ..full.clone()
        };
        assert_eq!(bidi.validate().expect_err("bidi").item, "support_brief");
        let long = Checklist {
            rollback_readiness: "x".repeat(MAX_CHECKLIST_CHARS + 1),
            ..full
        };
        let e = long.validate().expect_err("long");
        assert_eq!(
            e.to_string(),
            "checklist.rollback_readiness: 1001 characters, more than the 1000 an item holds"
        );
    }
}
