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
}
