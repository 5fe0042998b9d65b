//! Gate thresholds: what a rollout tolerates, fixed before it starts and signed with the plan.
//!
//! A [`GatePolicy`] is plain data (serde, `deny_unknown_fields`) kept under the top-level key
//! `"gates"` of a shared policy file. It says nothing about how a test is computed; that is
//! [`crate::gates::stats`] and [`crate::gates::evaluate`].

use serde::{Deserialize, Serialize};

/// How long a device offered a boot-critical release may stay unheard before it is silent.
pub const BOOT_CRITICAL_SILENT_AFTER_SECS: i64 = 2 * 3600;

/// What a failing gate asks the rollout to do, from mildest to most severe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GateOutcome {
    /// Nothing wrong: carry on.
    Continue,
    /// Not enough evidence either way: extend the soak.
    Hold,
    /// Stop offering and wait for a human.
    Pause,
    /// Roll back the devices of the current wave, then wait for a human.
    RollBackWave,
    /// Roll back every device the rollout has touched and abort.
    RollBackAll,
}

impl GateOutcome {
    /// The outcome in words, for reasons and screens (never Rust's debug text).
    pub fn words(self) -> &'static str {
        match self {
            GateOutcome::Continue => "continue",
            GateOutcome::Hold => "hold",
            GateOutcome::Pause => "pause",
            GateOutcome::RollBackWave => "roll back the wave",
            GateOutcome::RollBackAll => "roll back every device",
        }
    }
}

/// How a metric is measured, which decides the statistical test used for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricKind {
    /// Events per device-hour (crashes, reconnect failures, support contacts): exact conditional
    /// binomial test of the Poisson rate ratio, updated cohort vs. baseline cohort.
    Rate,
    /// A per-sample value (seconds to reconnect, battery drain in %/h): one-sided Welch z-test
    /// of the mean ratio, updated cohort vs. baseline cohort.
    Mean,
    /// A per-device outcome of the update itself (install failed, boot failed, silent): exact
    /// binomial test against the historical proportion `baseline_ratio` from earlier releases.
    Proportion,
}

/// The threshold for one metric.
///
/// A gate fails only when all of these hold: enough sample (see [`GatePolicy`]), an observed
/// ratio above `max_ratio`, an absolute excess of at least `min_abs_diff`, and a one-sided test
/// of "the true ratio is at most `max_ratio`" rejected at the per-test significance level (an
/// always-valid test: see [`crate::gates::stats`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricGate {
    pub enabled: bool,
    /// Largest tolerated ratio updated/baseline (1.5 = up to 50% worse is not a stop).
    pub max_ratio: f64,
    /// Smallest absolute excess that may stop a rollout, in the metric's unit: events per
    /// 1,000 device-hours for rates, the value's unit for means, a fraction for proportions.
    pub min_abs_diff: f64,
    /// Proportion metrics only: the historical rate (e.g. 0.01 = 1% of installs fail).
    pub baseline_ratio: Option<f64>,
    /// What a failure of this gate triggers.
    pub on_fail: GateOutcome,
}

impl Default for MetricGate {
    fn default() -> Self {
        Self {
            enabled: true,
            max_ratio: 1.5,
            min_abs_diff: 0.0,
            baseline_ratio: None,
            on_fail: GateOutcome::Pause,
        }
    }
}

impl MetricGate {
    fn new(max_ratio: f64, min_abs_diff: f64, on_fail: GateOutcome) -> Self {
        Self {
            enabled: true,
            max_ratio,
            min_abs_diff,
            baseline_ratio: None,
            on_fail,
        }
    }

    fn proportion(
        baseline_ratio: f64,
        max_ratio: f64,
        min_abs_diff: f64,
        on_fail: GateOutcome,
    ) -> Self {
        Self {
            baseline_ratio: Some(baseline_ratio),
            ..Self::new(max_ratio, min_abs_diff, on_fail)
        }
    }
}

/// A user-defined metric, reported by devices in telemetry under `name`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomGate {
    pub name: String,
    /// `rate` (a count per period) or `mean` (a value per sample); `proportion` is not
    /// available for custom metrics because devices do not report update outcomes through them.
    pub kind: MetricKind,
    #[serde(default)]
    pub gate: MetricGate,
}

/// Every threshold and sampling rule of a rollout.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatePolicy {
    /// Family-wise false-stop budget per wave: the chance that a good wave is stopped by any
    /// gate at any look, bounded by Bonferroni over the tests (the tests are e-processes, so
    /// the number of looks does not enter).
    pub false_stop_budget_ratio: f64,
    /// No longer used (looks are free for always-valid tests since issue 18); still read, and
    /// checked to be at least 1, so that existing policy files stay valid.
    pub max_looks_per_wave: u32,
    /// Seconds between timed gate evaluations while a wave runs or soaks (silence, soak ends);
    /// evidence asks for looks in between.
    pub evaluate_every_secs: i64,
    /// Devices with telemetry in each cohort (updated and baseline) before any rate or mean
    /// gate is judged over a whole wave; devices with an outcome before a proportion is judged.
    pub min_devices: u32,
    /// The same minimum for one stratum (a rare hardware revision is judged on its own once it
    /// has this many devices).
    pub min_stratum_devices: u32,
    /// Device-hours in each cohort before a rate or mean gate is judged.
    pub min_exposure_device_hours: f64,
    /// Device attributes whose values together define a stratum (see `Device::attribute`).
    pub stratify_by: Vec<String>,
    /// A device offered the update that has not been heard from for this long is silent.
    pub silent_after_secs: i64,
    /// How long one hold extends a soak.
    pub hold_extension_secs: i64,
    /// Holds per wave before the rollout pauses for a human instead.
    pub max_holds: u32,
    /// How long after completion the whole rollout can still be rolled back.
    pub rollback_window_secs: i64,
    pub crash: MetricGate,
    pub boot_failure: MetricGate,
    pub install_failure: MetricGate,
    pub reconnect_failure: MetricGate,
    pub reconnect_time: MetricGate,
    pub battery_drain: MetricGate,
    pub support_contacts: MetricGate,
    pub silent: MetricGate,
    pub custom: Vec<CustomGate>,
}

impl Default for GatePolicy {
    fn default() -> Self {
        use GateOutcome::{Pause, RollBackWave};
        Self {
            false_stop_budget_ratio: 0.05,
            max_looks_per_wave: 96,
            evaluate_every_secs: 900,
            min_devices: 20,
            min_stratum_devices: 5,
            min_exposure_device_hours: 20.0,
            stratify_by: vec!["model".to_owned(), "hw_rev".to_owned()],
            silent_after_secs: 6 * 3600,
            hold_extension_secs: 4 * 3600,
            max_holds: 2,
            rollback_window_secs: 7 * 86_400,
            // Crashes per 1,000 device-hours; a crash loop is thousands.
            crash: MetricGate::new(1.5, 2.0, RollBackWave),
            boot_failure: MetricGate::proportion(0.005, 2.0, 0.02, RollBackWave),
            install_failure: MetricGate::proportion(0.02, 2.0, 0.03, Pause),
            reconnect_failure: MetricGate::new(1.5, 2.0, Pause),
            // Seconds.
            reconnect_time: MetricGate::new(1.5, 10.0, Pause),
            // Percent of battery per hour.
            battery_drain: MetricGate::new(1.3, 0.3, Pause),
            support_contacts: MetricGate::new(2.0, 0.5, Pause),
            silent: MetricGate::proportion(0.02, 2.0, 0.05, Pause),
            custom: Vec::new(),
        }
    }
}

impl GatePolicy {
    /// Checks that every number is in range, naming the first field that is not.
    pub fn validate(&self) -> Result<(), super::GateError> {
        use super::GateError::Invalid;
        let b = self.false_stop_budget_ratio;
        if !(b > 0.0 && b < 1.0) {
            return Err(Invalid {
                field: "false_stop_budget_ratio".into(),
                why: format!("must be in (0, 1), got {b}"),
            });
        }
        for (field, v) in [
            ("evaluate_every_secs", self.evaluate_every_secs),
            ("silent_after_secs", self.silent_after_secs),
            ("hold_extension_secs", self.hold_extension_secs),
        ] {
            if v <= 0 {
                return Err(Invalid {
                    field: field.into(),
                    why: format!("must be positive, got {v}"),
                });
            }
        }
        if self.max_looks_per_wave == 0 {
            return Err(Invalid {
                field: "max_looks_per_wave".into(),
                why: "must be at least 1".into(),
            });
        }
        let h = self.min_exposure_device_hours;
        if !(h.is_finite() && h >= 0.0) {
            return Err(Invalid {
                field: "min_exposure_device_hours".into(),
                why: format!("must be a non-negative number, got {h}"),
            });
        }
        let mut names: Vec<&str> = Vec::new();
        for (name, kind, gate) in self.metric_gates() {
            if !(gate.max_ratio.is_finite() && gate.max_ratio >= 1.0) {
                return Err(Invalid {
                    field: format!("{name}.max_ratio"),
                    why: format!("must be at least 1, got {}", gate.max_ratio),
                });
            }
            if !(gate.min_abs_diff.is_finite() && gate.min_abs_diff >= 0.0) {
                return Err(Invalid {
                    field: format!("{name}.min_abs_diff"),
                    why: format!("must be a non-negative number, got {}", gate.min_abs_diff),
                });
            }
            match (kind, gate.baseline_ratio) {
                (MetricKind::Proportion, Some(p)) if p > 0.0 && p < 1.0 => {}
                (MetricKind::Proportion, p) => {
                    return Err(Invalid {
                        field: format!("{name}.baseline_ratio"),
                        why: format!(
                            "a proportion gate needs a historical rate in (0, 1), got {p:?}"
                        ),
                    });
                }
                _ => {}
            }
            if names.contains(&name) {
                return Err(Invalid {
                    field: format!("custom.{name}"),
                    why: "metric name used twice".into(),
                });
            }
            names.push(name);
        }
        for c in &self.custom {
            if c.kind == MetricKind::Proportion {
                return Err(Invalid {
                    field: format!("custom.{}.kind", c.name),
                    why: "custom metrics are rate or mean".into(),
                });
            }
            if c.name.is_empty() {
                return Err(Invalid {
                    field: "custom.name".into(),
                    why: "must not be empty".into(),
                });
            }
        }
        Ok(())
    }

    /// The stricter gates for a release that installs the boot-critical `components`
    /// (`bootloader`, `modem`; issue 20), and each change in words. Never looser than `self`:
    /// every threshold is the tighter of the policy's and the boot-critical one, every failure
    /// outcome the more severe. A bootloader tightens the boot-failure gate; a modem the
    /// reconnect-failure and silence gates (a device that loses its link goes silent); both
    /// mark devices silent sooner.
    #[must_use]
    pub fn stricter_for_boot_critical(&self, components: &[&str]) -> (Self, Vec<String>) {
        fn tighten(
            name: &str,
            gate: &mut MetricGate,
            max_ratio: f64,
            min_abs_diff: f64,
            changes: &mut Vec<String>,
        ) {
            let before = (
                gate.enabled,
                gate.max_ratio,
                gate.min_abs_diff,
                gate.on_fail,
            );
            gate.enabled = true;
            gate.max_ratio = gate.max_ratio.min(max_ratio);
            gate.min_abs_diff = gate.min_abs_diff.min(min_abs_diff);
            gate.on_fail = gate.on_fail.max(GateOutcome::RollBackWave);
            let mut parts = Vec::new();
            if !before.0 {
                parts.push("enabled".to_owned());
            }
            if before.1 != gate.max_ratio {
                parts.push(format!("max_ratio {} -> {}", before.1, gate.max_ratio));
            }
            if before.2 != gate.min_abs_diff {
                parts.push(format!(
                    "min_abs_diff {} -> {}",
                    before.2, gate.min_abs_diff
                ));
            }
            if before.3 != gate.on_fail {
                parts.push(format!(
                    "on failure {} -> {}",
                    before.3.words(),
                    gate.on_fail.words()
                ));
            }
            if !parts.is_empty() {
                changes.push(format!("{name}: {}", parts.join(", ")));
            }
        }
        let mut out = self.clone();
        let mut changes = Vec::new();
        if components.is_empty() {
            return (out, changes);
        }
        if components.contains(&"bootloader") {
            tighten(
                "boot_failure",
                &mut out.boot_failure,
                1.2,
                0.005,
                &mut changes,
            );
            tighten(
                "install_failure",
                &mut out.install_failure,
                1.5,
                0.02,
                &mut changes,
            );
        }
        if components.contains(&"modem") {
            tighten(
                "reconnect_failure",
                &mut out.reconnect_failure,
                1.2,
                1.0,
                &mut changes,
            );
            tighten("silent", &mut out.silent, 1.5, 0.02, &mut changes);
        }
        let silent_after = out.silent_after_secs.min(BOOT_CRITICAL_SILENT_AFTER_SECS);
        if silent_after != out.silent_after_secs {
            changes.push(format!(
                "silent_after_secs: {} -> {silent_after}",
                out.silent_after_secs
            ));
            out.silent_after_secs = silent_after;
        }
        (out, changes)
    }

    /// Every gate with its metric name and kind, built-in ones first, then custom in order.
    pub fn metric_gates(&self) -> Vec<(&str, MetricKind, &MetricGate)> {
        use MetricKind::{Mean, Proportion, Rate};
        let mut all = vec![
            ("crash", Rate, &self.crash),
            ("reconnect_failure", Rate, &self.reconnect_failure),
            ("support_contacts", Rate, &self.support_contacts),
            ("reconnect_time", Mean, &self.reconnect_time),
            ("battery_drain", Mean, &self.battery_drain),
            ("boot_failure", Proportion, &self.boot_failure),
            ("install_failure", Proportion, &self.install_failure),
            ("silent", Proportion, &self.silent),
        ];
        for c in &self.custom {
            all.push((c.name.as_str(), c.kind, &c.gate));
        }
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_policy_is_valid_and_round_trips_through_json() {
        let p = GatePolicy::default();
        p.validate().expect("default policy validates");
        let text = serde_json::to_string(&p).expect("serialises");
        let back: GatePolicy = serde_json::from_str(&text).expect("parses");
        assert_eq!(back, p);
    }

    #[test]
    fn partial_json_takes_defaults_and_unknown_fields_are_rejected() {
        let p: GatePolicy =
            serde_json::from_str(r#"{"crash": {"max_ratio": 3.0}}"#).expect("parses");
        assert_eq!(p.crash.max_ratio, 3.0);
        assert_eq!(p.min_devices, GatePolicy::default().min_devices);
        let err = serde_json::from_str::<GatePolicy>(r#"{"crash_rate": {}}"#).expect_err("unknown");
        assert!(err.to_string().contains("crash_rate"), "{err}");
    }

    #[test]
    fn boot_critical_gates_are_tighter_and_never_looser() {
        let p = GatePolicy::default();
        let (same, none) = p.stricter_for_boot_critical(&[]);
        assert_eq!(same, p);
        assert!(none.is_empty());
        let (boot, changes) = p.stricter_for_boot_critical(&["bootloader"]);
        boot.validate().expect("valid");
        assert_eq!(boot.boot_failure.max_ratio, 1.2);
        assert_eq!(boot.boot_failure.min_abs_diff, 0.005);
        assert_eq!(boot.install_failure.on_fail, GateOutcome::RollBackWave);
        assert_eq!(
            boot.reconnect_failure, p.reconnect_failure,
            "a modem gate untouched"
        );
        assert_eq!(boot.silent_after_secs, 2 * 3600);
        assert!(
            changes
                .iter()
                .any(|c| c.starts_with("boot_failure: max_ratio 2 -> 1.2")),
            "{changes:?}"
        );
        let (modem, _) = p.stricter_for_boot_critical(&["modem"]);
        assert_eq!(modem.reconnect_failure.max_ratio, 1.2);
        assert_eq!(modem.silent.on_fail, GateOutcome::RollBackWave);
        // A policy already stricter stays as it is.
        let mut tight = GatePolicy::default();
        tight.boot_failure.max_ratio = 1.05;
        tight.boot_failure.on_fail = GateOutcome::RollBackAll;
        tight.silent_after_secs = 600;
        let (kept, _) = tight.stricter_for_boot_critical(&["bootloader"]);
        assert_eq!(kept.boot_failure.max_ratio, 1.05);
        assert_eq!(kept.boot_failure.on_fail, GateOutcome::RollBackAll);
        assert_eq!(kept.silent_after_secs, 600);
    }

    #[test]
    fn validate_names_the_bad_field() {
        let mut p = GatePolicy::default();
        p.battery_drain.max_ratio = 0.5;
        let e = p.validate().expect_err("ratio below 1");
        assert!(e.to_string().contains("battery_drain.max_ratio"), "{e}");
        let mut p = GatePolicy::default();
        p.silent.baseline_ratio = None;
        let e = p.validate().expect_err("no baseline");
        assert!(e.to_string().contains("silent.baseline_ratio"), "{e}");
        let mut p = GatePolicy::default();
        p.custom.push(CustomGate {
            name: "crash".into(),
            kind: MetricKind::Rate,
            gate: MetricGate::default(),
        });
        let e = p.validate().expect_err("duplicate");
        assert!(e.to_string().contains("custom.crash"), "{e}");
    }
}
