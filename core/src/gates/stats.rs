//! The statistics behind the gates: exact binomial tails and a normal tail, from scratch.
//!
//! Three one-sided tests, each of the null hypothesis "the updated cohort is at most
//! `max_ratio` times worse than the baseline", so that a gate rejects only a regression larger
//! than what the policy tolerates, not any difference at all:
//! - [`rate_ratio_p`]: two Poisson counts over exposures; conditional on the total, the updated
//!   count is binomial (the classical exact test for a rate ratio).
//! - [`proportion_p`]: a count of failures among `n` devices against a historical proportion.
//! - [`mean_ratio_p`]: two means with their variances (Welch z; the cohorts are large).
//!
//! The gates judge with the always-valid versions of these tests (e-values, see the second
//! half of this file): [`rate_evidence_step`] folds one event of a rate metric into a mixture
//! sequential probability ratio test of the same conditional binomial, [`proportion_e`] and
//! [`mean_e`] are mixture likelihood ratios of the proportion and the mean tests. An e-value
//! `E` of a nonnegative supermartingale under the null crosses `1/α` with probability at most
//! `α` however often it is looked at (Ville's inequality), which is what lets the gates look
//! whenever evidence moves. The fixed-sample p-values above stay for the reader's check and the
//! unit tests.
//!
//! Not a general statistics library: only what gate evaluation needs, accurate to ~1e-10 in the
//! tails that matter, in O(sqrt(n)) time at worst.

/// `ln Γ(x)` for `x > 0` (Lanczos, g = 7, n = 9; relative error below 1e-13).
pub fn ln_gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection keeps the series in its accurate range.
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = C[0];
    let t = x + G + 0.5;
    for (i, c) in C.iter().enumerate().skip(1) {
        a += c / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

/// The regularised incomplete beta function `I_x(a, b)`, by Lentz's continued fraction.
pub fn incomplete_beta(a: f64, b: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let ln_front = ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln();
    // The fraction converges fast for x < (a+1)/(a+b+2); use the symmetry otherwise.
    if x < (a + 1.0) / (a + b + 2.0) {
        ln_front.exp() * beta_fraction(a, b, x) / a
    } else {
        1.0 - ln_front.exp() * beta_fraction(b, a, 1.0 - x) / b
    }
}

// Numerical Recipes names (a, b, x, c, d, h) keep the recurrence checkable against the book.
#[allow(clippy::many_single_char_names)]
fn beta_fraction(a: f64, b: f64, x: f64) -> f64 {
    const TINY: f64 = 1e-300;
    const EPS: f64 = 1e-15;
    let (qab, qap, qam) = (a + b, a + 1.0, a - 1.0);
    let mut c = 1.0;
    let mut d = 1.0 - qab * x / qap;
    if d.abs() < TINY {
        d = TINY;
    }
    d = 1.0 / d;
    let mut h = d;
    for m in 1..10_000 {
        let m = f64::from(m);
        let m2 = 2.0 * m;
        let aa = m * (b - m) * x / ((qam + m2) * (a + m2));
        d = 1.0 + aa * d;
        if d.abs() < TINY {
            d = TINY;
        }
        c = 1.0 + aa / c;
        if c.abs() < TINY {
            c = TINY;
        }
        d = 1.0 / d;
        h *= d * c;
        let aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2));
        d = 1.0 + aa * d;
        if d.abs() < TINY {
            d = TINY;
        }
        c = 1.0 + aa / c;
        if c.abs() < TINY {
            c = TINY;
        }
        d = 1.0 / d;
        let del = d * c;
        h *= del;
        if (del - 1.0).abs() < EPS {
            break;
        }
    }
    h
}

/// `P(X >= k)` for `X ~ Binomial(n, p)`.
pub fn binomial_upper_tail(k: u64, n: u64, p: f64) -> f64 {
    if k == 0 {
        return 1.0;
    }
    if k > n {
        return 0.0;
    }
    if p <= 0.0 {
        return 0.0;
    }
    if p >= 1.0 {
        return 1.0;
    }
    incomplete_beta(k as f64, (n - k + 1) as f64, p).clamp(0.0, 1.0)
}

/// `P(Z >= z)` for a standard normal `Z` (via `erfc`, relative error below 1.2e-7).
pub fn normal_upper_tail(z: f64) -> f64 {
    0.5 * erfc(z / std::f64::consts::SQRT_2)
}

fn erfc(x: f64) -> f64 {
    // Numerical Recipes' Chebyshev fit, good to 1.2e-7 relative everywhere.
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let r = t * poly.exp();
    if x >= 0.0 { r } else { 2.0 - r }
}

/// One-sided p-value of "rate ratio updated/baseline <= `max_ratio`" given `updated_events`
/// over `updated_exposure` and `baseline_events` over `baseline_exposure` (same unit).
///
/// Conditional on the total count, the updated count is `Binomial(total, q)` with
/// `q = r·E1 / (r·E1 + E0)` at the boundary of the null.
pub fn rate_ratio_p(
    updated_events: u64,
    updated_exposure: f64,
    baseline_events: u64,
    baseline_exposure: f64,
    max_ratio: f64,
) -> f64 {
    if updated_exposure <= 0.0 || baseline_exposure <= 0.0 {
        return 1.0;
    }
    let weighted = max_ratio * updated_exposure;
    let q = weighted / (weighted + baseline_exposure);
    binomial_upper_tail(updated_events, updated_events + baseline_events, q)
}

/// One-sided p-value of "failure proportion <= `max_ratio` × `baseline`" given `failures` of
/// `n` devices.
pub fn proportion_p(failures: u64, n: u64, baseline: f64, max_ratio: f64) -> f64 {
    binomial_upper_tail(failures, n, (baseline * max_ratio).min(1.0))
}

/// Running sums of a per-sample value, enough for a mean and its variance.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MeanAgg {
    pub n: u64,
    pub sum: f64,
    pub sum_sq: f64,
}

impl MeanAgg {
    pub fn add(&mut self, x: f64) {
        self.n += 1;
        self.sum += x;
        self.sum_sq += x * x;
    }

    pub fn mean(&self) -> f64 {
        if self.n == 0 {
            0.0
        } else {
            self.sum / self.n as f64
        }
    }

    /// Sample variance (n - 1 in the denominator), 0 below two samples.
    pub fn variance(&self) -> f64 {
        if self.n < 2 {
            return 0.0;
        }
        let n = self.n as f64;
        ((self.sum_sq - self.sum * self.sum / n) / (n - 1.0)).max(0.0)
    }
}

/// One-sided p-value of "mean(updated) <= `max_ratio` × mean(baseline)" (Welch z on the
/// difference `mean1 - r·mean0`).
pub fn mean_ratio_p(updated: &MeanAgg, baseline: &MeanAgg, max_ratio: f64) -> f64 {
    if updated.n < 2 || baseline.n < 2 {
        return 1.0;
    }
    let diff = updated.mean() - max_ratio * baseline.mean();
    let se = (updated.variance() / updated.n as f64
        + max_ratio * max_ratio * baseline.variance() / baseline.n as f64)
        .sqrt();
    if se <= 0.0 {
        return if diff > 0.0 { 0.0 } else { 1.0 };
    }
    normal_upper_tail(diff / se)
}

// ---- Always-valid evidence (e-values) ----------------------------------------------------------

/// The alternatives of the rate and proportion mixtures, as multiples of the tolerated ratio:
/// from a little beyond it to a crash loop. Each weighs the same; a mixture of e-processes is
/// an e-process, and a grid this wide loses at most a factor of its length against the best
/// single alternative.
pub const RATIO_GRID: [f64; 8] = [1.25, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 100.0];

/// Folds `count` events of one rate metric into the running log likelihood ratios `log_lr`
/// (one per [`RATIO_GRID`] point) of the rate-ratio e-process.
///
/// Conditional on an event happening in either cohort, it is in the updated cohort with
/// probability `q(ρ) = ρ·π / (ρ·π + 1 − π)`, where `ρ` is the true rate ratio and `π` the
/// updated cohort's share of the exposure accruing at that moment (`updated_share`). Against
/// the null boundary `ρ = max_ratio` each grid point `ρⱼ = max_ratio × RATIO_GRID[j]` gains
/// `ln(q(ρⱼ)/q(max_ratio))` for an updated event and `ln((1−q(ρⱼ))/(1−q(max_ratio)))` for a
/// baseline one. Because `ρⱼ` is above the null, each factor has expectation at most 1 under
/// any ratio at most `max_ratio`, so `exp(log_lr)` is a supermartingale there.
pub fn rate_evidence_step(
    log_lr: &mut [f64],
    updated: bool,
    count: u64,
    updated_share: f64,
    max_ratio: f64,
) {
    if count == 0 || !(updated_share > 0.0 && updated_share < 1.0) {
        // With one cohort empty an event says nothing about the ratio.
        return;
    }
    let pi = updated_share;
    let q = |rho: f64| rho * pi / (rho * pi + 1.0 - pi);
    let q0 = q(max_ratio);
    let k = count as f64;
    for (l, m) in log_lr.iter_mut().zip(RATIO_GRID) {
        let qj = q(max_ratio * m);
        *l += if updated {
            k * (qj / q0).ln()
        } else {
            k * ((1.0 - qj) / (1.0 - q0)).ln()
        };
    }
}

/// Folds one sample of the updated cohort (`count` events over `exposure` device-hours) into
/// the running log likelihood ratios of the plug-in rate e-process: a Poisson test of the
/// updated rate against `null_rate` (events per device-hour), the tolerated ratio times an
/// upper confidence bound of the baseline rate known before the sample. Each grid point
/// `m = RATIO_GRID[j]` gains `count·ln(m) − (m − 1)·null_rate·exposure`, whose exponential has
/// expectation at most 1 while the updated rate is at most `null_rate`.
///
/// It complements [`rate_evidence_step`]: that one needs both cohorts reporting at once, this
/// one keeps working when nobody is left on the old version (the last wave), from the
/// baseline's history.
pub fn rate_plugin_step(log_lr: &mut [f64], count: u64, exposure: f64, null_rate: f64) {
    if !(exposure > 0.0 && null_rate > 0.0 && null_rate.is_finite()) {
        return;
    }
    let k = count as f64;
    for (l, m) in log_lr.iter_mut().zip(RATIO_GRID) {
        *l += k * m.ln() - (m - 1.0) * null_rate * exposure;
    }
}

/// A conservative upper bound of a Poisson rate from `events` over `exposure`: three standard
/// deviations above the count plus one, so the plug-in null is rarely below the true baseline.
pub fn rate_upper_bound(events: u64, exposure: f64) -> Option<f64> {
    if exposure <= 0.0 {
        return None;
    }
    let x = events as f64 + 1.0;
    Some((x + 3.0 * x.sqrt()) / exposure)
}

/// The equally weighted mixture `mean(exp(log_lr))`, computed without overflow.
pub fn mixture_e(log_lr: &[f64]) -> f64 {
    let Some(max) = log_lr.iter().copied().reduce(f64::max) else {
        return 1.0;
    };
    if !max.is_finite() {
        return if max > 0.0 { f64::INFINITY } else { 0.0 };
    }
    let sum: f64 = log_lr.iter().map(|l| (l - max).exp()).sum();
    (max + (sum / log_lr.len() as f64).ln()).exp()
}

/// The e-value of "failure proportion ≤ `max_ratio` × `baseline`" after `failures` of `n`
/// devices: the mixture over [`RATIO_GRID`] alternatives above the null of the Bernoulli
/// likelihood ratio, which depends on the outcomes only through `(failures, n)`.
pub fn proportion_e(failures: u64, n: u64, baseline: f64, max_ratio: f64) -> f64 {
    let p0 = (baseline * max_ratio).min(1.0);
    if n == 0 || p0 >= 1.0 || p0 <= 0.0 {
        return 1.0;
    }
    let (x, y) = (failures as f64, (n - failures.min(n)) as f64);
    // Alternatives from just above the null to near certainty: the grid's multiples where they
    // stay below 1, then points between the null and 1 so a crash loop (every device failing)
    // is weighed too.
    let mut alternatives: Vec<f64> = RATIO_GRID
        .iter()
        .map(|m| p0 * m)
        .filter(|p| *p < 0.999)
        .collect();
    for u in [0.5, 0.9, 0.99] {
        let p = p0 + (1.0 - p0) * u;
        if alternatives.len() < RATIO_GRID.len() + 3 {
            alternatives.push(p);
        }
    }
    let log_lr: Vec<f64> = alternatives
        .iter()
        .map(|p| x * (p / p0).ln() + y * ((1.0 - p) / (1.0 - p0)).ln())
        .collect();
    mixture_e(&log_lr)
}

/// The e-value of "mean(updated) ≤ `max_ratio` × mean(baseline)": Robbins' normal mixture
/// likelihood ratio (the mixture SPRT of Johari et al., "Always valid inference") of the
/// estimated difference `D = mean₁ − r·mean₀` with variance `V` (Welch), mixed over effects
/// `N(0, τ²)`: `sqrt(V / (V + τ²)) · exp(τ²·D² / (2·V·(V + τ²)))`, and 1 when `D ≤ 0` (the
/// one-sided null holds on its face). Valid as the samples grow (the normal approximation), as
/// the Welch test it replaces. `tau` is the effect size that matters, in the metric's unit.
pub fn mean_e(updated: &MeanAgg, baseline: &MeanAgg, max_ratio: f64, tau: f64) -> f64 {
    if updated.n < 2 || baseline.n < 2 || tau.is_nan() || tau <= 0.0 {
        return 1.0;
    }
    let d = updated.mean() - max_ratio * baseline.mean();
    if d <= 0.0 {
        return 1.0;
    }
    let v = updated.variance() / updated.n as f64
        + max_ratio * max_ratio * baseline.variance() / baseline.n as f64;
    if v <= 0.0 {
        return f64::INFINITY;
    }
    let t2 = tau * tau;
    (v / (v + t2)).sqrt() * (t2 * d * d / (2.0 * v * (v + t2))).exp()
}

/// The anytime-valid p-value of an e-value: `min(1, 1/E)`.
pub fn e_to_p(e: f64) -> f64 {
    if e <= 1.0 { 1.0 } else { 1.0 / e }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The binomial tail by direct summation of the pmf in log space: a different method from
    /// the incomplete beta, so agreement checks both.
    fn tail_by_sum(k: u64, n: u64, p: f64) -> f64 {
        (k..=n)
            .map(|i| {
                let ln_choose = ln_gamma(n as f64 + 1.0)
                    - ln_gamma(i as f64 + 1.0)
                    - ln_gamma((n - i) as f64 + 1.0);
                (ln_choose + i as f64 * p.ln() + (n - i) as f64 * (1.0 - p).ln()).exp()
            })
            .sum()
    }

    #[test]
    fn ln_gamma_matches_factorials() {
        let mut fact = 1.0f64;
        for n in 1..30u32 {
            fact *= f64::from(n);
            let rel = (ln_gamma(f64::from(n) + 1.0) - fact.ln()).abs() / fact.ln().max(1.0);
            assert!(rel < 1e-12, "n={n} rel={rel}");
        }
        // Γ(1/2) = sqrt(pi).
        assert!((ln_gamma(0.5) - std::f64::consts::PI.sqrt().ln()).abs() < 1e-12);
    }

    #[test]
    fn binomial_tail_agrees_with_direct_summation() {
        for &(k, n, p) in &[
            (1u64, 1u64, 0.3),
            (3, 10, 0.1),
            (5, 5, 0.01),
            (40, 100, 0.3),
            (2, 400, 0.001),
            (150, 1000, 0.12),
            (7, 2000, 0.001),
        ] {
            let exact = tail_by_sum(k, n, p);
            let fast = binomial_upper_tail(k, n, p);
            let rel = (exact - fast).abs() / exact;
            assert!(rel < 1e-8, "k={k} n={n} p={p}: {exact} vs {fast}");
        }
        // Closed forms: P(X >= n) = p^n, P(X >= 1) = 1 - (1-p)^n.
        assert!((binomial_upper_tail(5, 5, 0.01) - 1e-10).abs() < 1e-20);
        let one = 1.0 - 0.9f64.powi(20);
        assert!((binomial_upper_tail(1, 20, 0.1) - one).abs() < 1e-12);
        assert_eq!(binomial_upper_tail(0, 20, 0.1), 1.0);
        assert_eq!(binomial_upper_tail(21, 20, 0.1), 0.0);
    }

    #[test]
    fn normal_tail_matches_known_quantiles() {
        for (z, p) in [
            (0.0, 0.5),
            (1.644_853_6, 0.05),
            (2.326_347_9, 0.01),
            (3.090_232_3, 0.001),
        ] {
            let got = normal_upper_tail(z);
            assert!((got - p).abs() / p < 1e-6, "z={z}: {got} vs {p}");
        }
        assert!((normal_upper_tail(-1.644_853_6) - 0.95).abs() < 1e-6);
    }

    #[test]
    fn rate_ratio_test_rejects_only_beyond_the_tolerated_ratio() {
        // Same rate in both cohorts: nowhere near significant.
        assert!(rate_ratio_p(100, 1000.0, 1000, 10_000.0, 1.5) > 0.5);
        // Ten times the rate: overwhelming.
        assert!(rate_ratio_p(1000, 1000.0, 1000, 10_000.0, 1.5) < 1e-100);
        // 1.4x is inside the tolerated 1.5x, even with huge samples.
        assert!(rate_ratio_p(14_000, 100_000.0, 100_000, 1_000_000.0, 1.5) > 0.5);
        // No exposure: never significant.
        assert_eq!(rate_ratio_p(5, 0.0, 1, 10.0, 1.0), 1.0);
    }

    #[test]
    fn mean_test_and_running_sums() {
        let mut a = MeanAgg::default();
        for x in [1.0, 2.0, 3.0, 4.0] {
            a.add(x);
        }
        assert_eq!(a.mean(), 2.5);
        assert!((a.variance() - 5.0 / 3.0).abs() < 1e-12);
        let mut base = MeanAgg::default();
        let mut worse = MeanAgg::default();
        for i in 0..1000 {
            let wobble = f64::from(i % 10) / 10.0;
            base.add(10.0 + wobble);
            worse.add(30.0 + wobble);
        }
        assert!(mean_ratio_p(&worse, &base, 1.5) < 1e-12);
        assert!(mean_ratio_p(&base, &base, 1.5) > 0.999);
    }

    #[test]
    fn rate_evidence_grows_with_a_real_regression_and_shrinks_under_the_null() {
        // Equal cohorts (share 0.5); a tenfold rate sends ten updated events per baseline one.
        let mut bad = vec![0.0; RATIO_GRID.len()];
        for _ in 0..5 {
            rate_evidence_step(&mut bad, true, 10, 0.5, 1.5);
            rate_evidence_step(&mut bad, false, 1, 0.5, 1.5);
        }
        assert!(mixture_e(&bad) > 1e4, "{}", mixture_e(&bad));
        // Same rate in both: the evidence against the tolerated 1.5× falls below 1.
        let mut good = vec![0.0; RATIO_GRID.len()];
        for _ in 0..50 {
            rate_evidence_step(&mut good, true, 1, 0.5, 1.5);
            rate_evidence_step(&mut good, false, 1, 0.5, 1.5);
        }
        assert!(mixture_e(&good) < 0.1, "{}", mixture_e(&good));
        // An empty cohort says nothing.
        let mut none = vec![0.0; RATIO_GRID.len()];
        rate_evidence_step(&mut none, true, 5, 1.0, 1.5);
        rate_evidence_step(&mut none, false, 5, 0.0, 1.5);
        assert_eq!(mixture_e(&none), 1.0);
    }

    #[test]
    fn the_rate_e_process_keeps_its_level_under_continuous_monitoring() {
        // Ville: under the null boundary, the chance that E ever reaches 1/α is at most α.
        // 2,000 simulated sequences of 400 events each at ratio exactly 1.5 (share 0.3),
        // looked at after every event.
        let mut rng = crate::rng::SeededRng::new(5);
        let q0 = 1.5 * 0.3 / (1.5 * 0.3 + 0.7);
        let alpha = 0.05;
        let mut crossed = 0;
        for _ in 0..2000 {
            let mut l = vec![0.0; RATIO_GRID.len()];
            for _ in 0..400 {
                let updated = rng.next_f64() < q0;
                rate_evidence_step(&mut l, updated, 1, 0.3, 1.5);
                if mixture_e(&l) >= 1.0 / alpha {
                    crossed += 1;
                    break;
                }
            }
        }
        assert!(crossed <= 100, "{crossed} of 2000 crossed 1/α = 20");
    }

    #[test]
    fn proportion_and_mean_evidence() {
        // Five of five devices fail against 1% tolerated: overwhelming.
        assert!(proportion_e(5, 5, 0.005, 2.0) > 1e8);
        // None of fifty: no evidence.
        assert!(proportion_e(0, 50, 0.005, 2.0) < 1.0);
        assert_eq!(proportion_e(0, 0, 0.005, 2.0), 1.0);
        let mut base = MeanAgg::default();
        let mut worse = MeanAgg::default();
        for i in 0..200 {
            let wobble = f64::from(i % 10) / 10.0;
            base.add(1.0 + wobble);
            worse.add(5.0 + wobble);
        }
        assert!(mean_e(&worse, &base, 1.3, 0.3) > 1e12);
        assert_eq!(mean_e(&base, &base, 1.3, 0.3), 1.0);
        assert_eq!(e_to_p(0.5), 1.0);
        assert!((e_to_p(40.0) - 0.025).abs() < 1e-15);
    }
}
