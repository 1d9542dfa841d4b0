//! Logistic-regression weights for weight-of-evidence features, fitted by
//! the lender from the joint Gram matrix ([`jointscore_binning::gram`]).
//!
//! The loss is the logistic loss expanded to second order around the
//! training base rate, as in FATE's hetero-LR (which expands around 0):
//! with `p̄` the share of goods, `z₀ = logit p̄` and `s = p̄(1 − p̄)`,
//!
//! `ℓ(z) ≈ ℓ(z₀) + (p̄ − y)(z − z₀) + s/2 (z − z₀)²`,
//!
//! whose gradient is linear in the weights. Its minimum with an L2 penalty
//! `λ/2 |w|²` (intercept unpenalised) solves
//! `(s·H + λD) θ = c − (p̄ − s·z₀) H₀`, where `H = [1 X]ᵀ[1 X]`, `c = [1 X]ᵀy`
//! and `H₀` is `H`'s first column: every term is an entry of the joint Gram
//! matrix, so the lender needs nothing per row. Expanding at the base rate
//! rather than at 0 keeps the weights on the log-odds scale, so points stay
//! calibrated to the scorecard's PDO convention.
//!
//! Selection: a weight that is not positive means the feature's WoE points
//! the wrong way once the others are accounted for (a correlated feature
//! carries its information); the most negative one is dropped and the fit
//! repeated, one feature per iteration, as scorecard practice does.

use jointscore_binning::gram::Gram;

use crate::error::{Error, Result};
use crate::lr::solve;

/// One fitting iteration, reported as it completes.
#[derive(Clone, Debug, PartialEq)]
pub struct Iteration {
    /// 1-based.
    pub round: usize,
    /// Features in this iteration's fit.
    pub features: usize,
    /// The penalised surrogate loss per training row at this iteration's
    /// minimum.
    pub loss: f64,
    /// The feature (index into the caller's list) dropped after this
    /// iteration for a weight that is not positive; `None` on the last.
    pub dropped: Option<usize>,
}

/// Fitted weights.
#[derive(Clone, Debug, PartialEq)]
pub struct Weights {
    /// The intercept: log-odds of good with every WoE at 0.
    pub intercept: f64,
    /// One weight per feature of the caller's list; 0 for a dropped one.
    pub weights: Vec<f64>,
    /// Whether each feature is kept (its weight positive).
    pub kept: Vec<bool>,
    /// Every iteration, in order.
    pub iterations: Vec<Iteration>,
}

/// Fits weights for the Gram matrix's columns `features` (indices into
/// `gram`, 1-based as column 0 is the intercept) against the label column
/// `label` (1 = good), with L2 strength `l2`. `progress` sees each
/// iteration as it completes.
pub fn fit_weights(
    gram: &Gram,
    features: &[usize],
    label: usize,
    l2: f64,
    progress: &mut dyn FnMut(&Iteration),
) -> Result<Weights> {
    if !(l2.is_finite() && l2 >= 0.0) {
        return Err(Error::Setting { setting: "l2", message: format!("{l2} is not a non-negative number") });
    }
    if features.is_empty() || features.iter().chain([&label]).any(|&i| i == 0 || i >= gram.size) {
        return Err(Error::Setting {
            setting: "features",
            message: "no feature, or a column outside the matrix".into(),
        });
    }
    let n = gram.get(0, 0);
    let goods = gram.get(0, label);
    if !(goods > 0.0 && goods < n) {
        return Err(Error::Setting { setting: "labels", message: "the training rows hold one class only".into() });
    }
    let p = goods / n;
    let (s, z0) = (p * (1.0 - p), (p / (1.0 - p)).ln());
    let mut kept = vec![true; features.len()];
    let mut iterations = Vec::new();
    loop {
        let idx: Vec<usize> =
            std::iter::once(0).chain(features.iter().zip(&kept).filter(|(_, k)| **k).map(|(f, _)| *f)).collect();
        let h: Vec<Vec<f64>> = idx.iter().map(|&a| idx.iter().map(|&b| gram.get(a, b)).collect()).collect();
        let c: Vec<f64> = idx.iter().map(|&a| gram.get(a, label)).collect();
        let mut lhs: Vec<Vec<f64>> = h.iter().map(|row| row.iter().map(|v| s * v).collect()).collect();
        for (j, row) in lhs.iter_mut().enumerate().skip(1) {
            row[j] += l2;
        }
        // A tiny ridge on the intercept keeps the system definite when a
        // feature is constant over the training rows.
        lhs[0][0] += 1e-9 * n;
        let rhs: Vec<f64> = c.iter().zip(&h).map(|(ci, row)| ci - (p - s * z0) * row[0]).collect();
        let theta = solve(lhs, rhs).ok_or_else(|| Error::Setting {
            setting: "features",
            message: "their Gram matrix is singular (a feature that is a copy or a constant)".into(),
        })?;
        let quad: f64 = idx
            .iter()
            .enumerate()
            .map(|(a, _)| theta[a] * h[a].iter().zip(&theta).map(|(x, t)| x * t).sum::<f64>())
            .sum();
        let h0_theta: f64 = h[0].iter().zip(&theta).map(|(x, t)| x * t).sum();
        let c_theta: f64 = c.iter().zip(&theta).map(|(x, t)| x * t).sum();
        let penalty: f64 = theta[1..].iter().map(|t| t * t).sum::<f64>() * l2 / 2.0;
        let loss = (n * (1.0 + z0.exp()).ln() - z0 * goods + p * (h0_theta - n * z0) - (c_theta - z0 * goods)
            + s / 2.0 * (quad - 2.0 * z0 * h0_theta + n * z0 * z0)
            + penalty)
            / n;
        let positions: Vec<usize> = (0..features.len()).filter(|&f| kept[f]).collect();
        let worst = positions
            .iter()
            .zip(&theta[1..])
            .filter(|(_, w)| **w <= 0.0)
            .min_by(|a, b| a.1.total_cmp(b.1))
            .map(|(f, _)| *f)
            .filter(|_| positions.len() > 1);
        let iteration = Iteration { round: iterations.len() + 1, features: positions.len(), loss, dropped: worst };
        progress(&iteration);
        iterations.push(iteration);
        match worst {
            Some(f) => kept[f] = false,
            None => {
                let mut weights = vec![0.0; features.len()];
                for (f, w) in positions.iter().zip(&theta[1..]) {
                    weights[*f] = *w;
                }
                return Ok(Weights { intercept: theta[0], weights, kept, iterations });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};

    use super::*;
    use crate::lr::LogisticRegression;

    /// Rows of three WoE-like features, the second a noisy copy of the
    /// first, and labels from a logistic model on the first and third.
    fn data(rows: usize, seed: u64) -> (Vec<Vec<f64>>, Vec<bool>) {
        let mut rng = StdRng::seed_from_u64(seed);
        let (mut xs, mut ys) = (Vec::new(), Vec::new());
        for _ in 0..rows {
            let a: f64 = rng.random_range(-1.0..1.0);
            let b = a + rng.random_range(-0.2..0.2);
            let c: f64 = rng.random_range(-1.0..1.0);
            let z = 1.2 + 1.0 * a + 0.8 * c;
            ys.push(rng.random::<f64>() < 1.0 / (1.0 + (-z).exp()));
            xs.push(vec![a, b, c]);
        }
        (xs, ys)
    }

    fn gram(xs: &[Vec<f64>], ys: &[bool]) -> Gram {
        let mut columns: Vec<Vec<f64>> = (0..xs[0].len()).map(|j| xs.iter().map(|x| x[j]).collect()).collect();
        columns.push(ys.iter().map(|&y| f64::from(u8::from(y))).collect());
        Gram::plain(&columns).unwrap()
    }

    #[test]
    fn weights_approach_the_logistic_fit_and_selection_drops_the_copy() {
        let (xs, ys) = data(20_000, 1);
        let g = gram(&xs, &ys);
        let mut seen = Vec::new();
        let w = fit_weights(&g, &[1, 2, 3], 4, 1.0, &mut |i| seen.push(i.clone())).unwrap();
        assert_eq!(seen, w.iterations);
        // The exact logistic regression on the same columns.
        let design: Vec<Vec<f64>> = xs.iter().map(|x| [&[1.0][..], x].concat()).collect();
        let lr = LogisticRegression::fit(&design, &ys, 1.0).unwrap();
        let b = lr.coefficients();
        // Whether or not the copy is kept, the combined slope on the shared
        // signal and the other slope match the exact fit within 15%.
        let (shared, other) = (w.weights[0] + w.weights[1], w.weights[2]);
        assert!((shared - (b[1] + b[2])).abs() < 0.15 * (b[1] + b[2]).abs(), "{w:?} vs {b:?}");
        assert!((other - b[3]).abs() < 0.15 * b[3].abs(), "{w:?} vs {b:?}");
        assert!((w.intercept - b[0]).abs() < 0.15, "{w:?} vs {b:?}");
        assert!(w.kept.iter().zip(&w.weights).all(|(k, x)| !k || *x > 0.0));
        assert!(w.iterations.windows(2).all(|p| p[1].features + 1 == p[0].features));
    }

    #[test]
    fn a_negative_weight_is_dropped_one_iteration_at_a_time() {
        let (mut xs, ys) = data(5_000, 2);
        // Feature 3 turned against the label.
        for x in &mut xs {
            x[2] = -x[2];
        }
        let w = fit_weights(&gram(&xs, &ys), &[1, 2, 3], 4, 1.0, &mut |_| {}).unwrap();
        assert!(!w.kept[2] && w.weights[2] == 0.0, "{w:?}");
        assert_eq!(w.iterations[0].dropped, Some(2));
        assert_eq!(w.iterations.last().unwrap().dropped, None);
    }

    #[test]
    fn bad_settings_are_refused() {
        let (xs, ys) = data(200, 3);
        let g = gram(&xs, &ys);
        assert!(fit_weights(&g, &[1], 4, -1.0, &mut |_| {}).is_err());
        assert!(fit_weights(&g, &[], 4, 1.0, &mut |_| {}).is_err());
        assert!(fit_weights(&g, &[9], 4, 1.0, &mut |_| {}).is_err());
        let one_class = gram(&xs, &vec![true; ys.len()]);
        let e = fit_weights(&one_class, &[1], 4, 1.0, &mut |_| {}).unwrap_err();
        assert!(e.to_string().contains("one class"), "{e}");
    }
}
