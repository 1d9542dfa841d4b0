//! Evaluation for the study: the plaintext reference logistic regression,
//! AUC and KS, and the SVG plots.

use std::fmt::Write;

use super::data::{Column, Study};

/// Area under the ROC curve of `scores` (higher = more likely bad) against
/// `bad`, by the rank-sum formula with ties averaged.
pub(crate) fn auc(scores: &[f64], bad: &[bool]) -> f64 {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let mut ranks = vec![0.0; scores.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j < idx.len() && scores[idx[j]].total_cmp(&scores[idx[i]]).is_eq() {
            j += 1;
        }
        for &k in &idx[i..j] {
            ranks[k] = (i + j + 1) as f64 / 2.0;
        }
        i = j;
    }
    let pos = bad.iter().filter(|&&b| b).count() as f64;
    let neg = bad.len() as f64 - pos;
    let rank_sum: f64 = ranks.iter().zip(bad).filter(|(_, b)| **b).map(|(r, _)| r).sum();
    (rank_sum - pos * (pos + 1.0) / 2.0) / (pos * neg)
}

/// Kolmogorov-Smirnov statistic between the score distributions of bad and
/// good rows.
pub(crate) fn ks(scores: &[f64], bad: &[bool]) -> f64 {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let pos = bad.iter().filter(|&&b| b).count() as f64;
    let neg = bad.len() as f64 - pos;
    let (mut fb, mut fg, mut best) = (0.0, 0.0, 0.0f64);
    let mut i = 0;
    while i < idx.len() {
        let s = scores[idx[i]];
        while i < idx.len() && scores[idx[i]].total_cmp(&s).is_eq() {
            if bad[idx[i]] {
                fb += 1.0 / pos
            } else {
                fg += 1.0 / neg
            }
            i += 1;
        }
        best = best.max((fb - fg).abs());
    }
    best
}

/// The reference: logistic regression on one-hot categoricals (a missing
/// category of its own) and standardised numerics (missing as the mean plus
/// an indicator), L2 penalty 1 (as scikit-learn's default `C = 1`), fitted by
/// Newton's method on the training rows. Returns P(bad) for the test rows.
pub(crate) fn reference_lr(study: &Study) -> Vec<f64> {
    // Training mean and standard deviation of each numeric column, once.
    let stats: Vec<(f64, f64)> = study
        .features
        .iter()
        .map(|f| match &f.column {
            Column::Numeric { values, .. } => {
                let present: Vec<f64> = study.train.iter().filter_map(|&r| values[r].map(|v| v as f64)).collect();
                let mean = present.iter().sum::<f64>() / present.len().max(1) as f64;
                let var = present.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / present.len().max(1) as f64;
                (mean, var.sqrt().max(1e-12))
            }
            Column::Categorical { .. } => (0.0, 1.0),
        })
        .collect();
    let design = |i: usize| -> Vec<f64> {
        let mut x = vec![1.0];
        for (f, &(mean, sd)) in study.features.iter().zip(&stats) {
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
    let xs: Vec<Vec<f64>> = study.train.iter().map(|&i| design(i)).collect();
    let ys: Vec<f64> = study.train.iter().map(|&i| f64::from(u8::from(study.labels[i]))).collect();
    let d = xs[0].len();
    let mut beta = vec![0.0; d];
    for _ in 0..25 {
        let mut grad = vec![0.0; d];
        let mut hess = vec![vec![0.0; d]; d];
        for (x, &y) in xs.iter().zip(&ys) {
            let z: f64 = x.iter().zip(&beta).map(|(a, b)| a * b).sum();
            let p = 1.0 / (1.0 + (-z).exp());
            let w = p * (1.0 - p);
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
            grad[j] += beta[j];
            hess[j][j] += 1.0;
        }
        hess[0][0] += 1e-9;
        let Some(step) = solve(hess, grad) else { break };
        let mut change = 0.0f64;
        for j in 0..d {
            beta[j] -= step[j];
            change = change.max(step[j].abs());
        }
        if change < 1e-9 {
            break;
        }
    }
    study
        .test
        .iter()
        .map(|&i| {
            let z: f64 = design(i).iter().zip(&beta).map(|(a, b)| a * b).sum();
            1.0 / (1.0 + (-z).exp())
        })
        .collect()
}

/// Solves `a x = b` for symmetric positive definite `a` (Cholesky).
fn solve(mut a: Vec<Vec<f64>>, b: Vec<f64>) -> Option<Vec<f64>> {
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

/// ROC curves (encrypted scorecard and reference) as an SVG.
pub(crate) fn roc_svg(curves: &[(&str, &str, &[f64])], bad: &[bool]) -> String {
    let size = 400.0;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"460\" height=\"460\" viewBox=\"-40 -20 460 460\" font-family=\"sans-serif\" font-size=\"12\">\n<rect x=\"0\" y=\"0\" width=\"{size}\" height=\"{size}\" fill=\"none\" stroke=\"#888\"/>\n<line x1=\"0\" y1=\"{size}\" x2=\"{size}\" y2=\"0\" stroke=\"#ccc\" stroke-dasharray=\"4\"/>\n<text x=\"150\" y=\"430\">false positive rate</text>\n<text x=\"-30\" y=\"200\" transform=\"rotate(-90 -30 200)\">true positive rate</text>\n"
    );
    for (k, (name, colour, scores)) in curves.iter().enumerate() {
        let mut idx: Vec<usize> = (0..scores.len()).collect();
        idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
        let pos = bad.iter().filter(|&&b| b).count() as f64;
        let neg = bad.len() as f64 - pos;
        let (mut tp, mut fp) = (0.0, 0.0);
        let mut points = String::from("0,400");
        for (k, &i) in idx.iter().enumerate() {
            if bad[i] {
                tp += 1.0
            } else {
                fp += 1.0
            }
            // One point per distinct score: tied rows move together.
            if idx.get(k + 1).is_none_or(|&n| !scores[n].total_cmp(&scores[i]).is_eq()) {
                let _ = write!(points, " {:.1},{:.1}", fp / neg * size, size - tp / pos * size);
            }
        }
        let _ = writeln!(svg, "<polyline points=\"{points}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\"/>");
        let _ = writeln!(
            svg,
            "<text x=\"220\" y=\"{}\" fill=\"{colour}\">{name}: AUC {:.3}</text>",
            340 + 18 * k,
            auc(scores, bad)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// Score histograms of good and bad test rows as an SVG.
pub(crate) fn distribution_svg(scores: &[i64], bad: &[bool]) -> String {
    let (lo, hi) = (scores.iter().min().copied().unwrap_or(0), scores.iter().max().copied().unwrap_or(1));
    let buckets = 20usize;
    let width = ((hi - lo) as f64 / buckets as f64).max(1.0);
    let mut counts = vec![[0u32; 2]; buckets];
    for (&s, &b) in scores.iter().zip(bad) {
        let k = (((s - lo) as f64 / width) as usize).min(buckets - 1);
        counts[k][usize::from(b)] += 1;
    }
    let top = counts.iter().flat_map(|c| c.iter()).copied().max().unwrap_or(1).max(1) as f64;
    let mut svg = String::from(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"520\" height=\"320\" font-family=\"sans-serif\" font-size=\"12\">\n<text x=\"20\" y=\"16\">test scores: good (blue), bad (red)</text>\n",
    );
    for (k, c) in counts.iter().enumerate() {
        for (side, colour) in [(0usize, "#3366cc"), (1, "#cc3333")] {
            let h = f64::from(c[side]) / top * 250.0;
            let x = 20.0 + k as f64 * 24.0 + side as f64 * 11.0;
            let _ = writeln!(
                svg,
                "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"10\" height=\"{h:.1}\" fill=\"{colour}\"/>",
                290.0 - h
            );
        }
    }
    let _ = writeln!(svg, "<text x=\"20\" y=\"308\">{lo}</text><text x=\"470\" y=\"308\">{hi}</text>\n</svg>");
    svg
}
