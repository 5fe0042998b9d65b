//! Health gates: the thresholds of a rollout and the test that judges a wave against them.
//!
//! A gate compares the cohort that has the update with a baseline — the same metric on the
//! rollout's devices not yet updated (rates and means), or the historical proportion from
//! earlier releases (install failures, boot failures, silence after an update) — overall and in
//! every stratum (model × hardware revision by default), so a rare revision that crash-loops
//! is caught even when the wave as a whole looks fine.
//!
//! Every test is always valid: its evidence is an e-value (a mixture likelihood ratio, see
//! [`stats`]) that may be looked at after every report without raising the false-stop rate, so
//! the rollout looks whenever evidence moves instead of on a timer. The false-stop budget is
//! split over the tests (metrics × scopes), never over looks.
//!
//! This module only judges aggregates handed to it; it keeps no state, reads no clock and never
//! sees individual devices. The running aggregates, and the running evidence of the rate tests
//! (which depends on the order of events), live in [`crate::rollout`], which updates them
//! incrementally as reports arrive, so a gate tick costs O(strata × metrics), not O(devices).
//! See docs/GATES.md for the method and its measured false-stop rate.

pub mod policy;
pub mod stats;

pub use policy::{CustomGate, GateOutcome, GatePolicy, MetricGate, MetricKind};

use serde::{Deserialize, Serialize};
use stats::MeanAgg;

/// What can be wrong with a gate policy or a gate input.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GateError {
    /// A policy field is out of range; `field` is its path in the policy, e.g. `crash.max_ratio`.
    #[error("invalid gate policy: {why} in field {field}")]
    Invalid { field: String, why: String },
}

/// Where each metric's running numbers live in a [`CohortAgg`]: rate metrics index `counts`,
/// mean metrics index `means`, both in [`GatePolicy::metric_gates`] order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricLayout {
    pub rate_names: Vec<String>,
    pub mean_names: Vec<String>,
}

impl MetricLayout {
    pub fn new(policy: &GatePolicy) -> Self {
        let pick = |kind| {
            policy
                .metric_gates()
                .into_iter()
                .filter(|(_, k, _)| *k == kind)
                .map(|(n, _, _)| n.to_owned())
                .collect()
        };
        Self {
            rate_names: pick(MetricKind::Rate),
            mean_names: pick(MetricKind::Mean),
        }
    }

    pub fn rate_slot(&self, name: &str) -> Option<usize> {
        self.rate_names.iter().position(|n| n == name)
    }

    pub fn mean_slot(&self, name: &str) -> Option<usize> {
        self.mean_names.iter().position(|n| n == name)
    }

    pub fn empty_cohort(&self) -> CohortAgg {
        CohortAgg {
            devices: 0,
            exposure_secs: 0.0,
            counts: vec![0; self.rate_names.len()],
            means: vec![MeanAgg::default(); self.mean_names.len()],
        }
    }
}

/// Running telemetry aggregates of one cohort (updated or baseline) in one stratum.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CohortAgg {
    /// Distinct devices that have sent telemetry while in this cohort.
    pub devices: u32,
    /// Device-seconds of telemetry.
    pub exposure_secs: f64,
    /// Event counts per rate metric slot.
    pub counts: Vec<u64>,
    /// Running sums per mean metric slot.
    pub means: Vec<MeanAgg>,
}

impl CohortAgg {
    pub fn add(&mut self, other: &CohortAgg) {
        self.devices += other.devices;
        self.exposure_secs += other.exposure_secs;
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        for (a, b) in self.means.iter_mut().zip(&other.means) {
            a.n += b.n;
            a.sum += b.sum;
            a.sum_sq += b.sum_sq;
        }
    }
}

/// Update outcomes of one wave in one stratum, for the proportion gates.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutcomeAgg {
    /// Devices offered the update in this wave (the install-failure denominator; 0 in
    /// aggregates built without it, which then count as before).
    #[serde(default)]
    pub offered: u32,
    /// Devices that finished installing and rebooted into the new version (whatever followed).
    /// The install-failure denominator: counting only finished devices would over-weight
    /// failures early in a wave, because a failed install reports sooner than a confirmed boot.
    pub installed: u32,
    pub healthy: u32,
    pub install_failed: u32,
    pub boot_failed: u32,
    pub silent: u32,
}

impl OutcomeAgg {
    fn add(&mut self, o: &OutcomeAgg) {
        self.offered += o.offered;
        self.installed += o.installed;
        self.healthy += o.healthy;
        self.install_failed += o.install_failed;
        self.boot_failed += o.boot_failed;
        self.silent += o.silent;
    }

    /// (failures, devices judged) for a proportion metric.
    pub fn proportion(&self, metric: &str) -> (u64, u64) {
        let installed = u64::from(self.installed);
        let healthy = u64::from(self.healthy);
        let install_failed = u64::from(self.install_failed);
        let boot_failed = u64::from(self.boot_failed);
        let silent = u64::from(self.silent);
        // Denominators count a device when it enters the question, not when it answers it, so
        // that outcomes which report sooner (a failed install before a reboot, a crash loop's
        // revert before a confirmation) cannot over-weight failures early in a wave, which the
        // gates, looking after every report, would otherwise see (issue 18: two good rollouts
        // in 2,000 paused on early install failures). Every device offered ends in a failed
        // install or a reboot, every device rebooted in a boot failure or a confirmation: the
        // failures so far are at most the failures at the end among the same devices, so the
        // e-value stays valid.
        match metric {
            "install_failure" => (
                install_failed,
                u64::from(self.offered).max(installed + install_failed),
            ),
            "boot_failure" => (boot_failed, installed.max(healthy + boot_failed)),
            // Devices with a final outcome; silence takes the longest to show, so early in a
            // wave this under-states it (the safe direction for a stop rule).
            _ => (silent, healthy + install_failed + boot_failed + silent),
        }
    }
}

/// The running evidence of the rate gates in one scope (a stratum or the whole wave): for
/// every rate metric slot, the log likelihood ratio of each [`stats::RATIO_GRID`] alternative
/// of two e-processes, the conditional one folded event by event by
/// [`stats::rate_evidence_step`] and the plug-in one folded sample by sample by
/// [`stats::rate_plugin_step`]. The gate's e-value is their mean (a mean of e-values is one).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RateEvidence {
    /// `slot * RATIO_GRID.len() + j`.
    pub log_lr: Vec<f64>,
    /// The same layout, for the plug-in e-process.
    #[serde(default)]
    pub log_lr_plugin: Vec<f64>,
}

impl RateEvidence {
    pub fn new(layout: &MetricLayout) -> Self {
        let n = layout.rate_names.len() * stats::RATIO_GRID.len();
        Self {
            log_lr: vec![0.0; n],
            log_lr_plugin: vec![0.0; n],
        }
    }

    /// Folds `count` events of rate slot `slot` seen in the updated cohort (`updated`) or the
    /// baseline, when the updated cohort accrues `updated_share` of the exposure.
    pub fn record(
        &mut self,
        slot: usize,
        updated: bool,
        count: u64,
        updated_share: f64,
        max_ratio: f64,
    ) {
        let g = stats::RATIO_GRID.len();
        if let Some(l) = self.log_lr.get_mut(slot * g..(slot + 1) * g) {
            stats::rate_evidence_step(l, updated, count, updated_share, max_ratio);
        }
    }

    /// Folds an updated sample of rate slot `slot` (`count` events over `exposure_hours`)
    /// against the null rate `null_per_hour`.
    pub fn record_plugin(
        &mut self,
        slot: usize,
        count: u64,
        exposure_hours: f64,
        null_per_hour: f64,
    ) {
        let g = stats::RATIO_GRID.len();
        if let Some(l) = self.log_lr_plugin.get_mut(slot * g..(slot + 1) * g) {
            stats::rate_plugin_step(l, count, exposure_hours, null_per_hour);
        }
    }

    /// The e-value of rate slot `slot` (1 when nothing was recorded).
    pub fn e_value(&self, slot: usize) -> f64 {
        let g = stats::RATIO_GRID.len();
        let e = |v: &Vec<f64>| {
            v.get(slot * g..(slot + 1) * g)
                .map_or(1.0, stats::mixture_e)
        };
        f64::midpoint(e(&self.log_lr), e(&self.log_lr_plugin))
    }
}

/// Everything one gate evaluation looks at, for the current wave.
#[derive(Clone, Copy, Debug)]
pub struct GateInput<'a> {
    pub policy: &'a GatePolicy,
    pub layout: &'a MetricLayout,
    /// Stratum names, in the order of the per-stratum slices.
    pub strata: &'a [String],
    pub baseline: &'a [CohortAgg],
    pub updated: &'a [CohortAgg],
    pub outcomes: &'a [OutcomeAgg],
    /// The rate tests' running evidence over the whole wave.
    pub evidence_whole: &'a RateEvidence,
    /// The same per stratum, in the order of `strata`.
    pub evidence: &'a [RateEvidence],
    /// Findings an operator has overridden for this wave, as (metric, stratum) pairs; a `None`
    /// stratum overrides the metric in every scope.
    pub overridden: &'a [(String, Option<String>)],
}

/// How one metric in one scope fared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingStatus {
    /// Below the minimum sample: not judged.
    NotEnoughData,
    /// Worse than tolerated on its face but not significant yet (whole wave only).
    Trending,
    /// A significant regression beyond the tolerated ratio and absolute excess.
    Fail,
    /// A failure an operator overrode, with a recorded reason.
    Overridden,
}

/// One non-passing gate result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    pub metric: String,
    /// `None` for the whole wave, else the stratum (e.g. `T300/C`).
    pub stratum: Option<String>,
    pub status: FindingStatus,
    /// The updated cohort's value (per 1,000 device-hours, mean, or proportion).
    pub observed: f64,
    /// The baseline's value in the same unit.
    pub baseline: f64,
    /// The anytime-valid p-value, `1/E` for the test's e-value `E` (at most 1): the chance
    /// under the null that the evidence would ever have grown this strong, at any look.
    pub p_value: f64,
    /// The significance level of the test (the budget split over the tests, not the looks).
    pub level: f64,
    /// Devices behind `observed`.
    pub sample: u64,
    /// For rate metrics, the raw counts behind the two rates: (updated events, updated
    /// device-hours, baseline events, baseline device-hours), so a reader can redo the test.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counts: Option<RateCounts>,
}

/// The events and exposure behind a rate finding.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct RateCounts {
    pub updated_events: u64,
    pub updated_device_hours: f64,
    pub baseline_events: u64,
    pub baseline_device_hours: f64,
}

/// The result of one gate evaluation.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GateReport {
    /// The most severe outcome any failing gate asks for (`Continue` if none).
    pub outcome: Option<GateOutcome>,
    /// Fail, trending, overridden and not-enough-data findings; passing gates are not listed.
    pub findings: Vec<Finding>,
    /// True when some whole-wave gate lacked its minimum sample.
    pub whole_wave_short_of_sample: bool,
    /// True when some whole-wave gate is trending.
    pub trending: bool,
}

impl GateReport {
    pub fn outcome(&self) -> GateOutcome {
        self.outcome.unwrap_or(GateOutcome::Continue)
    }

    pub fn failures(&self) -> impl Iterator<Item = &Finding> {
        self.findings
            .iter()
            .filter(|f| f.status == FindingStatus::Fail)
    }
}

/// The most outcomes a proportion gate waits for in a stratum before it is judged (fewer when
/// `min_stratum_devices` is lower).
pub const MIN_STRATUM_OUTCOMES: u32 = 3;

/// The anytime-valid p-value (`1/E`) below which a whole-wave regression beyond tolerance that
/// is not yet significant at the test's level counts as trending and extends the soak. A trend
/// never stops a rollout by itself: the evidence keeps accumulating through the hold, and a
/// real regression crosses the test's level during it.
pub const TREND_LEVEL: f64 = 0.05;

/// The per-test significance level: the wave's false-stop budget split (Bonferroni) over every
/// metric in every scope (whole wave plus each stratum). Not over looks: every test is an
/// e-process, whose chance of ever crossing `1/level` is at most `level` however often it is
/// looked at, so looking after every report costs nothing.
pub fn per_test_level(policy: &GatePolicy, strata: usize) -> f64 {
    let metrics = policy
        .metric_gates()
        .iter()
        .filter(|(_, _, g)| g.enabled)
        .count()
        .max(1);
    let tests = metrics * (strata + 1);
    policy.false_stop_budget_ratio / tests as f64
}

/// Judges every enabled gate over the whole wave and in every stratum.
///
/// Cost: O(strata × metrics) plus one binomial tail per judged test.
pub fn evaluate(input: &GateInput<'_>) -> GateReport {
    let policy = input.policy;
    let level = per_test_level(policy, input.strata.len());
    let mut all_base = input.layout.empty_cohort();
    let mut all_upd = input.layout.empty_cohort();
    let mut all_out = OutcomeAgg::default();
    for s in 0..input.strata.len() {
        all_base.add(&input.baseline[s]);
        all_upd.add(&input.updated[s]);
        all_out.add(&input.outcomes[s]);
    }
    let mut report = GateReport::default();
    let mut judge = |scope: Option<usize>, upd: &CohortAgg, base: &CohortAgg, out: &OutcomeAgg| {
        let min_devices = if scope.is_some() {
            policy.min_stratum_devices
        } else {
            policy.min_devices
        };
        let min_secs = if scope.is_some() {
            0.0
        } else {
            policy.min_exposure_device_hours * 3600.0
        };
        let stratum = scope.map(|s| input.strata[s].clone());
        let evidence = scope.map_or(input.evidence_whole, |s| {
            input.evidence.get(s).unwrap_or(input.evidence_whole)
        });
        for (name, kind, gate) in policy.metric_gates() {
            if !gate.enabled {
                continue;
            }
            let mut counts = None;
            let (observed, baseline, p, sample, enough) = match kind {
                MetricKind::Rate => {
                    let slot = input.layout.rate_slot(name).unwrap_or(0);
                    let (x1, x0) = (upd.counts[slot], base.counts[slot]);
                    let (e1, e0) = (upd.exposure_secs / 3600.0, base.exposure_secs / 3600.0);
                    counts = Some(RateCounts {
                        updated_events: x1,
                        updated_device_hours: e1,
                        baseline_events: x0,
                        baseline_device_hours: e0,
                    });
                    let enough = upd.devices >= min_devices
                        && base.devices >= min_devices
                        && upd.exposure_secs >= min_secs
                        && base.exposure_secs >= min_secs
                        && e1 > 0.0
                        && e0 > 0.0;
                    let r1 = if e1 > 0.0 {
                        1000.0 * x1 as f64 / e1
                    } else {
                        0.0
                    };
                    let r0 = if e0 > 0.0 {
                        1000.0 * x0 as f64 / e0
                    } else {
                        0.0
                    };
                    let p = if enough {
                        stats::e_to_p(evidence.e_value(slot))
                    } else {
                        1.0
                    };
                    (r1, r0, p, u64::from(upd.devices), enough)
                }
                MetricKind::Mean => {
                    let slot = input.layout.mean_slot(name).unwrap_or(0);
                    let (m1, m0) = (&upd.means[slot], &base.means[slot]);
                    let enough = upd.devices >= min_devices
                        && base.devices >= min_devices
                        && m1.n >= u64::from(min_devices.max(2))
                        && m0.n >= u64::from(min_devices.max(2));
                    // The effect that matters: the tolerated excess over the baseline, or the
                    // minimum excess when that is larger.
                    let tau = ((gate.max_ratio - 1.0) * m0.mean()).max(gate.min_abs_diff);
                    let p = if enough {
                        stats::e_to_p(stats::mean_e(m1, m0, gate.max_ratio, tau))
                    } else {
                        1.0
                    };
                    (m1.mean(), m0.mean(), p, u64::from(upd.devices), enough)
                }
                MetricKind::Proportion => {
                    let (x, n) = out.proportion(name);
                    let b = gate.baseline_ratio.unwrap_or(0.0);
                    // Each device is one independent outcome (no device weighs more than
                    // another, unlike a device with a high own crash rate), so in a stratum the
                    // e-value's level needs little help from a minimum sample: three outcomes
                    // at most, so that a rare revision with one of five devices lost to an
                    // install failure or silence is still judged on its own.
                    let min_n = if scope.is_some() {
                        min_devices.min(MIN_STRATUM_OUTCOMES)
                    } else {
                        min_devices
                    };
                    let enough = n >= u64::from(min_n) && n > 0;
                    let obs = if n > 0 { x as f64 / n as f64 } else { 0.0 };
                    let p = if enough {
                        stats::e_to_p(stats::proportion_e(x, n, b, gate.max_ratio))
                    } else {
                        1.0
                    };
                    (obs, b, p, n, enough)
                }
            };
            let beyond = observed > gate.max_ratio * baseline
                && observed - baseline >= gate.min_abs_diff
                && observed > 0.0;
            let status = if !enough {
                if scope.is_some() {
                    continue;
                }
                report.whole_wave_short_of_sample = true;
                FindingStatus::NotEnoughData
            } else if beyond && p < level {
                let overridden = input
                    .overridden
                    .iter()
                    .any(|(m, s)| m == name && (s.is_none() || *s == stratum));
                if overridden {
                    FindingStatus::Overridden
                } else {
                    report.outcome = report.outcome.max(Some(gate.on_fail));
                    FindingStatus::Fail
                }
            } else if beyond && p < TREND_LEVEL && scope.is_none() {
                report.trending = true;
                FindingStatus::Trending
            } else {
                continue;
            };
            report.findings.push(Finding {
                metric: name.to_owned(),
                stratum: stratum.clone(),
                status,
                observed,
                baseline,
                p_value: p,
                level,
                sample,
                counts,
            });
        }
    };
    judge(None, &all_upd, &all_base, &all_out);
    for s in 0..input.strata.len() {
        // A stratum too thin in the baseline is compared with the whole baseline instead.
        let base = if input.baseline[s].devices >= policy.min_stratum_devices {
            &input.baseline[s]
        } else {
            &all_base
        };
        judge(Some(s), &input.updated[s], base, &input.outcomes[s]);
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cohort(layout: &MetricLayout, devices: u32, hours: f64, crashes: u64) -> CohortAgg {
        let mut c = layout.empty_cohort();
        c.devices = devices;
        c.exposure_secs = hours * 3600.0;
        c.counts[layout.rate_slot("crash").expect("crash slot")] = crashes;
        c
    }

    fn outcome(healthy: u32, boot_failed: u32) -> OutcomeAgg {
        OutcomeAgg {
            installed: healthy + boot_failed,
            healthy,
            boot_failed,
            ..OutcomeAgg::default()
        }
    }

    #[test]
    fn a_rare_stratum_that_regresses_is_caught_while_the_wave_looks_fine() {
        let policy = GatePolicy::default();
        let layout = MetricLayout::new(&policy);
        let strata = vec!["T300/A".to_owned(), "T300/C".to_owned()];
        let baseline = vec![
            cohort(&layout, 5000, 50_000.0, 100),
            cohort(&layout, 150, 1500.0, 3),
        ];
        let updated = vec![cohort(&layout, 45, 450.0, 1), cohort(&layout, 0, 0.0, 0)];
        // 5 of 5 rev C devices failed to boot; 0 of 45 others. Whole wave: 5/50 = 10%.
        let outcomes = vec![outcome(45, 0), outcome(0, 5)];
        let whole = RateEvidence::new(&layout);
        let evidence = vec![RateEvidence::new(&layout); 2];
        let input = GateInput {
            policy: &policy,
            layout: &layout,
            strata: &strata,
            baseline: &baseline,
            updated: &updated,
            outcomes: &outcomes,
            evidence_whole: &whole,
            evidence: &evidence,
            overridden: &[],
        };
        let report = evaluate(&input);
        let failures: Vec<_> = report.failures().collect();
        assert_eq!(failures.len(), 1, "{report:?}");
        assert_eq!(failures[0].metric, "boot_failure");
        assert_eq!(failures[0].stratum.as_deref(), Some("T300/C"));
        // The anytime p-value is 1/E for the mixture over alternatives: the best one (p = 0.99)
        // alone gives (0.99/0.01)^5 ≈ 9.5e9, weighed by 1/11; the fixed-sample p was 0.01^5.
        let e = stats::proportion_e(5, 5, 0.005, 2.0);
        assert!(
            (failures[0].p_value - 1.0 / e).abs() < 1e-18 && e > 1e8,
            "{} vs 1/{e}",
            failures[0].p_value
        );
        assert_eq!(report.outcome(), GateOutcome::RollBackWave);
        // The whole wave alone would not have stopped: 5 of 50 against 1% tolerated is
        // evidence (p below 0.05) but not beyond the per-test level.
        let whole = report
            .findings
            .iter()
            .find(|f| f.metric == "boot_failure" && f.stratum.is_none())
            .expect("whole-wave boot failures are listed as trending");
        assert_eq!(whole.status, FindingStatus::Trending);

        // Overriding the metric (every stratum) turns the failure into a recorded override.
        let overridden = vec![("boot_failure".to_owned(), None)];
        let report = evaluate(&GateInput {
            overridden: &overridden,
            ..input
        });
        assert_eq!(report.outcome(), GateOutcome::Continue);
        assert!(
            report
                .findings
                .iter()
                .any(|f| f.status == FindingStatus::Overridden)
        );
    }

    #[test]
    fn below_the_minimum_sample_nothing_is_judged() {
        let policy = GatePolicy::default();
        let layout = MetricLayout::new(&policy);
        let strata = vec!["all".to_owned()];
        // Three devices, all crashing constantly: too few to judge.
        let baseline = vec![cohort(&layout, 5000, 50_000.0, 100)];
        let updated = vec![cohort(&layout, 3, 30.0, 300)];
        let outcomes = vec![outcome(3, 0)];
        let whole = RateEvidence::new(&layout);
        let report = evaluate(&GateInput {
            policy: &policy,
            layout: &layout,
            strata: &strata,
            baseline: &baseline,
            updated: &updated,
            outcomes: &outcomes,
            evidence_whole: &whole,
            evidence: std::slice::from_ref(&whole),
            overridden: &[],
        });
        assert_eq!(report.outcome(), GateOutcome::Continue);
        assert!(report.whole_wave_short_of_sample);
        assert!(
            report
                .findings
                .iter()
                .all(|f| f.status == FindingStatus::NotEnoughData)
        );
    }

    #[test]
    fn proportion_denominators_do_not_over_weight_early_failures() {
        // Early in a wave: 8 installs failed, 392 devices installed and rebooted, of which only
        // 12 have confirmed so far. The install-failure rate is 8 of 400, not 8 of 20.
        // Of 500 offered. The install-failure rate is 8 of the 500 offered (the failures so far
        // among devices that will all answer), and boot failures are over the 392 rebooted.
        let o = OutcomeAgg {
            offered: 500,
            installed: 392,
            healthy: 12,
            install_failed: 8,
            boot_failed: 0,
            silent: 3,
        };
        assert_eq!(o.proportion("install_failure"), (8, 500));
        assert_eq!(o.proportion("boot_failure"), (0, 392));
        assert_eq!(o.proportion("silent"), (3, 23));
        // Without the offered count (an aggregate built elsewhere), as before.
        let o = OutcomeAgg { offered: 0, ..o };
        assert_eq!(o.proportion("install_failure"), (8, 400));
    }

    #[test]
    fn per_test_level_splits_the_budget_over_tests_not_looks() {
        let policy = GatePolicy::default();
        // 8 built-in metrics × (whole wave + 3 strata); looks are free for e-processes.
        let level = per_test_level(&policy, 3);
        assert!((level - 0.05 / 32.0).abs() < 1e-15, "{level}");
    }

    #[test]
    fn a_rate_gate_fails_on_its_running_evidence_and_reports_the_raw_counts() {
        let policy = GatePolicy::default();
        let layout = MetricLayout::new(&policy);
        let strata = vec!["all".to_owned()];
        let baseline = vec![cohort(&layout, 500, 5000.0, 10)];
        let updated = vec![cohort(&layout, 50, 500.0, 30)];
        let outcomes = vec![outcome(50, 0)];
        let slot = layout.rate_slot("crash").expect("crash slot");
        let mut whole = RateEvidence::new(&layout);
        // The same counts, event by event, with the updated cohort a tenth of the exposure.
        for _ in 0..10 {
            whole.record(slot, false, 1, 1.0 / 11.0, 1.5);
            whole.record(slot, true, 3, 1.0 / 11.0, 1.5);
        }
        let evidence = vec![RateEvidence::new(&layout)];
        let report = evaluate(&GateInput {
            policy: &policy,
            layout: &layout,
            strata: &strata,
            baseline: &baseline,
            updated: &updated,
            outcomes: &outcomes,
            evidence_whole: &whole,
            evidence: &evidence,
            overridden: &[],
        });
        let crash = report
            .failures()
            .find(|f| f.metric == "crash" && f.stratum.is_none())
            .expect("a 30× crash rate fails the whole-wave crash gate");
        assert!(crash.p_value < crash.level, "{crash:?}");
        assert_eq!(crash.counts.map(|c| c.updated_events), Some(30));
        assert_eq!(report.outcome(), GateOutcome::RollBackWave);
    }
}
