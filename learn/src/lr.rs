//! The reference model: an L2-penalised logistic regression fitted by
//! Newton's method, and the study's design matrix for it.

use crate::data::{Column, Study};

/// Largest number of Newton steps.
const MAX_STEPS: usize = 25;

/// A fitted logistic regression: `P(y) = 1 / (1 + exp(-x·β))`. The first
/// column of `x` is the intercept's 1 and is not penalised.
#[derive(Clone, Debug, PartialEq)]
pub struct LogisticRegression {
    coefficients: Vec<f64>,
}

impl LogisticRegression {
    /// Fits `β` minimising the negative log-likelihood plus `l2 / 2 · |β|²`
    /// (the intercept left out of the penalty). Rows must have the same
    /// length; `None` when there are no rows or the Hessian is singular at
    /// the start (a design with no information at all).
    pub fn fit(xs: &[Vec<f64>], ys: &[bool], l2: f64) -> Option<LogisticRegression> {
        let d = xs.first()?.len();
        if d == 0 || xs.len() != ys.len() || xs.iter().any(|x| x.len() != d) {
            return None;
        }
        let mut beta = vec![0.0; d];
        for step in 0..MAX_STEPS {
            let mut grad = vec![0.0; d];
            let mut hess = vec![vec![0.0; d]; d];
            for (x, &y) in xs.iter().zip(ys) {
                let p = sigmoid(dot(x, &beta));
                let w = p * (1.0 - p);
                let y = f64::from(u8::from(y));
                for j in 0..d {
                    grad[j] += (p - y) * x[j];
                    if x[j] != 0.0 {
                        for k in 0..d {
                            hess[j][k] += w * x[j] * x[k];
                        }
                    }
                }
            }
            for j in 1..d {
                grad[j] += l2 * beta[j];
                hess[j][j] += l2;
            }
            hess[0][0] += 1e-9;
            let Some(delta) = solve(hess, grad) else {
                if step == 0 {
                    return None;
                }
                break;
            };
            let mut change = 0.0f64;
            for j in 0..d {
                beta[j] -= delta[j];
                change = change.max(delta[j].abs());
            }
            if change < 1e-9 {
                break;
            }
        }
        Some(LogisticRegression { coefficients: beta })
    }

    /// `β`, the intercept first.
    pub fn coefficients(&self) -> &[f64] {
        &self.coefficients
    }

    /// `P(y)` for one row.
    pub fn predict(&self, x: &[f64]) -> f64 {
        sigmoid(dot(x, &self.coefficients))
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

/// The study's reference: logistic regression on one-hot categoricals (a
/// missing category of its own) and standardised numerics (missing as the
/// mean plus an indicator), L2 penalty 1 (as scikit-learn's default
/// `C = 1`), fitted on the training rows. Returns P(bad) for the test rows,
/// in [`Study::test`] order; 0.5 each when the fit has no information.
pub fn reference_lr(study: &Study) -> Vec<f64> {
    let train = study.train();
    // Training mean and standard deviation of each numeric column, once.
    let stats: Vec<(f64, f64)> = study
        .features()
        .iter()
        .map(|f| match &f.column {
            Column::Numeric { values, .. } => {
                let present: Vec<f64> = train.iter().filter_map(|&r| values[r].map(|v| v as f64)).collect();
                let mean = present.iter().sum::<f64>() / present.len().max(1) as f64;
                let var = present.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / present.len().max(1) as f64;
                (mean, var.sqrt().max(1e-12))
            }
            Column::Categorical { .. } => (0.0, 1.0),
        })
        .collect();
    let design = |i: usize| -> Vec<f64> {
        let mut x = vec![1.0];
        for (f, &(mean, sd)) in study.features().iter().zip(&stats) {
            match &f.column {
                Column::Numeric { values, .. } => {
                    x.push(values[i].map_or(0.0, |v| (v as f64 - mean) / sd));
                    x.push(f64::from(u8::from(values[i].is_none())));
                }
                Column::Categorical { categories, values } => {
                    for c in 0..=categories.len() {
                        x.push(f64::from(u8::from(values[i].unwrap_or(categories.len()) == c)));
                    }
                }
            }
        }
        x
    };
    let xs: Vec<Vec<f64>> = train.iter().map(|&i| design(i)).collect();
    let ys: Vec<bool> = train.iter().map(|&i| study.labels()[i]).collect();
    let model = LogisticRegression::fit(&xs, &ys, 1.0);
    study.test().iter().map(|&i| model.as_ref().map_or(0.5, |m| m.predict(&design(i)))).collect()
}

/// Solves `a x = b` for symmetric positive definite `a` (Cholesky).
pub(crate) fn solve(mut a: Vec<Vec<f64>>, b: Vec<f64>) -> Option<Vec<f64>> {
    let n = b.len();
    for j in 0..n {
        let s = a[j][j] - a[j][..j].iter().map(|v| v * v).sum::<f64>();
        // Not positive, or NaN: the matrix is not positive definite.
        if s.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) {
            return None;
        }
        a[j][j] = s.sqrt();
        for i in j + 1..n {
            let dot: f64 = a[i][..j].iter().zip(&a[j][..j]).map(|(x, y)| x * y).sum();
            a[i][j] = (a[i][j] - dot) / a[j][j];
        }
    }
    let mut y = vec![0.0; n];
    for i in 0..n {
        let s: f64 = a[i][..i].iter().zip(&y).map(|(l, v)| l * v).sum();
        y[i] = (b[i] - s) / a[i][i];
    }
    let mut x = vec![0.0; n];
    for i in (0..n).rev() {
        let s: f64 = (i + 1..n).map(|k| a[k][i] * x[k]).sum();
        x[i] = (y[i] - s) / a[i][i];
    }
    Some(x)
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};

    use super::*;

    #[test]
    fn recovers_known_coefficients() {
        let truth = [-0.5, 1.5, -2.0];
        let mut rng = StdRng::seed_from_u64(7);
        let (mut xs, mut ys) = (Vec::new(), Vec::new());
        for _ in 0..20_000 {
            let x = vec![1.0, rng.random_range(-2.0..2.0), rng.random_range(-1.0..1.0)];
            let p = sigmoid(dot(&x, &truth));
            ys.push(rng.random::<f64>() < p);
            xs.push(x);
        }
        // A negligible penalty on 20 000 rows: the MLE, which lands within
        // a few standard errors (about 0.03 here) of the truth.
        let m = LogisticRegression::fit(&xs, &ys, 1e-6).unwrap();
        for (got, want) in m.coefficients().iter().zip(truth) {
            assert!((got - want).abs() < 0.1, "{:?} vs {truth:?}", m.coefficients());
        }
        assert!((m.predict(&[1.0, 0.0, 0.0]) - sigmoid(-0.5)).abs() < 0.03);
        // A strong penalty shrinks the slopes towards zero, not the intercept.
        let shrunk = LogisticRegression::fit(&xs, &ys, 1e5).unwrap();
        assert!(shrunk.coefficients()[1].abs() < 0.5 * m.coefficients()[1].abs());
    }

    #[test]
    fn degenerate_inputs_give_no_model() {
        assert_eq!(LogisticRegression::fit(&[], &[], 1.0), None);
        assert_eq!(LogisticRegression::fit(&[vec![1.0, 2.0]], &[true, false], 1.0), None);
        assert_eq!(LogisticRegression::fit(&[vec![1.0, 2.0], vec![1.0]], &[true, false], 1.0), None);
    }

    #[test]
    fn solve_refuses_a_matrix_that_is_not_positive_definite() {
        assert_eq!(solve(vec![vec![1.0, 2.0], vec![2.0, 1.0]], vec![1.0, 1.0]), None);
        assert_eq!(solve(vec![vec![4.0, 0.0], vec![0.0, 4.0]], vec![8.0, 2.0]), Some(vec![2.0, 0.5]));
    }
}
