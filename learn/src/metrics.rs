//! Discrimination metrics: AUC and the Kolmogorov-Smirnov statistic.
//!
//! Both take risk scores (higher = more likely bad) and labels (true = bad),
//! and both are undefined unless each class is present: they return an
//! error then, never NaN.

use crate::error::{Error, Result};

/// The class sizes, checked: same lengths, both classes present.
fn classes(metric: &'static str, scores: &[f64], bad: &[bool]) -> Result<(f64, f64)> {
    let refuse = |message: String| Err(Error::Metric { metric, message });
    if scores.len() != bad.len() {
        return refuse(format!("{} scores but {} labels", scores.len(), bad.len()));
    }
    if scores.iter().any(|s| s.is_nan()) {
        return refuse("a score is NaN".into());
    }
    let pos = bad.iter().filter(|&&b| b).count();
    let neg = bad.len() - pos;
    if pos == 0 || neg == 0 {
        return refuse(format!("it needs both classes; got {pos} bad and {neg} good"));
    }
    Ok((pos as f64, neg as f64))
}

/// Area under the ROC curve: the probability that a random bad row scores
/// above a random good one, ties counting one half (the rank-sum formula
/// with averaged ranks).
pub fn auc(scores: &[f64], bad: &[bool]) -> Result<f64> {
    let (pos, neg) = classes("AUC", scores, bad)?;
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
    let rank_sum: f64 = ranks.iter().zip(bad).filter(|(_, b)| **b).map(|(r, _)| r).sum();
    Ok((rank_sum - pos * (pos + 1.0) / 2.0) / (pos * neg))
}

/// Kolmogorov-Smirnov statistic: the largest gap between the cumulative
/// score distributions of bad and good rows, tied scores moving together.
pub fn ks(scores: &[f64], bad: &[bool]) -> Result<f64> {
    let (pos, neg) = classes("KS", scores, bad)?;
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
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
    Ok(best)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn auc_of_small_hand_computed_cases() {
        // Bad rows score 0.35 and 0.8, good rows 0.1 and 0.4: of the four
        // (bad, good) pairs, three have the bad row above.
        assert!(close(auc(&[0.1, 0.4, 0.35, 0.8], &[false, false, true, true]).unwrap(), 0.75));
        // Perfect and perfectly wrong orderings.
        assert!(close(auc(&[1.0, 2.0, 3.0], &[false, true, true]).unwrap(), 1.0));
        assert!(close(auc(&[3.0, 2.0, 1.0], &[false, true, true]).unwrap(), 0.0));
        // Ties count one half: every pair tied gives 0.5; one tied pair of
        // two gives (1 + 0.5) / 2.
        assert!(close(auc(&[5.0, 5.0, 5.0, 5.0], &[false, true, false, true]).unwrap(), 0.5));
        assert!(close(auc(&[1.0, 2.0, 2.0, 3.0], &[false, false, true, true]).unwrap(), 0.875));
    }

    #[test]
    fn ks_of_small_hand_computed_cases() {
        // Sorted: 0.1 g, 0.35 b, 0.4 g, 0.8 b. Gaps after each score:
        // 0.5, 0, 0.5, 0: KS 0.5.
        assert!(close(ks(&[0.1, 0.4, 0.35, 0.8], &[false, false, true, true]).unwrap(), 0.5));
        assert!(close(ks(&[1.0, 2.0, 3.0, 4.0], &[false, false, true, true]).unwrap(), 1.0));
        // A tie moves both classes at once: 2.0 holds one of each, so the
        // gap after it is |1/2 - 1| = 0.5, not the 1.0 a split tie shows.
        assert!(close(ks(&[1.0, 2.0, 2.0, 3.0], &[false, false, true, true]).unwrap(), 0.5));
        assert!(close(ks(&[7.0; 4], &[false, true, false, true]).unwrap(), 0.0));
    }

    #[test]
    fn one_class_empty_or_mismatched_input_is_an_error() {
        for (scores, bad) in [
            (&[0.1, 0.2][..], &[true, true][..]),
            (&[0.1, 0.2][..], &[false, false][..]),
            (&[][..], &[][..]),
            (&[0.1][..], &[true, false][..]),
            (&[f64::NAN, 0.2][..], &[true, false][..]),
        ] {
            let e = auc(scores, bad).unwrap_err();
            assert!(matches!(e, Error::Metric { metric: "AUC", .. }), "{e}");
            assert!(matches!(ks(scores, bad), Err(Error::Metric { metric: "KS", .. })));
        }
        assert_eq!(
            auc(&[0.1, 0.2], &[true, true]).unwrap_err().to_string(),
            "AUC is undefined: it needs both classes; got 2 bad and 0 good"
        );
    }
}
