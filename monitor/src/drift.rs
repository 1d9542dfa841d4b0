//! Portfolio drift: the population stability index (PSI) between two
//! distributions over the same bins — a baseline (the fitting sample, or
//! an earlier period) and this period — each the consortium's counts per
//! bin from a secure-aggregation round (`jointscore stats`), so no party's
//! book is revealed, only the sums.
//!
//! `PSI = Σ (aᵢ − bᵢ) · ln(aᵢ / bᵢ)` over bins, with `a` and `b` the two
//! shares of each bin. A bin empty on one side is smoothed by half a count
//! on both, so one empty bin does not make the index infinite. The usual
//! reading: below 0.1 stable, 0.1 to 0.25 a moderate shift worth a look,
//! 0.25 and above a significant shift.

use serde::Serialize;

use crate::error::{Error, Result};

/// PSI at or above which a shift is significant.
pub const SIGNIFICANT: f64 = 0.25;
/// PSI at or above which a shift is moderate.
pub const MODERATE: f64 = 0.1;

/// One counter's drift.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Drift {
    /// The counter (the labels' prefix, e.g. `sellers_by_gmv`).
    pub counter: String,
    /// The population stability index.
    pub psi: f64,
    /// `stable`, `moderate` or `significant`.
    pub reading: &'static str,
    /// Per bin: its label, the baseline and current counts, and its share
    /// of the index.
    pub bins: Vec<(String, u64, u64, f64)>,
}

/// The counter an entry label belongs to: the text before `[`.
fn counter(label: &str) -> &str {
    label.split_once('[').map_or(label, |(c, _)| c)
}

/// PSI per binned counter (a counter with at least two labelled bins) of
/// two results of the same statistics spec, in spec order. Refused: the
/// two results' labels differ (not the same spec), or a counter has no
/// count at all on one side.
pub fn drift(baseline: &[(String, u64)], current: &[(String, u64)]) -> Result<Vec<Drift>> {
    let labels = |r: &[(String, u64)]| r.iter().map(|(l, _)| l.clone()).collect::<Vec<_>>();
    if labels(baseline) != labels(current) {
        return Err(Error::Drift(
            "the baseline and this period have different bins: not the same statistics spec".into(),
        ));
    }
    // Per counter: its bins' labels and both sides' counts.
    type Bins = Vec<(String, u64, u64)>;
    let mut groups: Vec<(String, Bins)> = Vec::new();
    for ((label, b), (_, c)) in baseline.iter().zip(current) {
        let name = counter(label);
        if !label.contains('[') {
            continue;
        }
        match groups.last_mut() {
            Some((n, bins)) if n == name => bins.push((label.clone(), *b, *c)),
            _ => groups.push((name.to_string(), vec![(label.clone(), *b, *c)])),
        }
    }
    groups
        .into_iter()
        .filter(|(_, bins)| bins.len() >= 2)
        .map(|(name, bins)| {
            let (tb, tc): (u64, u64) = bins.iter().fold((0, 0), |(x, y), (_, b, c)| (x + b, y + c));
            if tb == 0 || tc == 0 {
                return Err(Error::Drift(format!("counter `{name}` counts nothing in the baseline or this period")));
            }
            let k = bins.len() as f64;
            let share = |n: u64, total: u64| (n as f64 + 0.5) / (total as f64 + 0.5 * k);
            let bins: Vec<(String, u64, u64, f64)> = bins
                .into_iter()
                .map(|(l, b, c)| {
                    let (pb, pc) = (share(b, tb), share(c, tc));
                    (l, b, c, (pc - pb) * (pc / pb).ln())
                })
                .collect();
            let psi: f64 = bins.iter().map(|(.., x)| x).sum();
            let reading = if psi >= SIGNIFICANT {
                "significant"
            } else if psi >= MODERATE {
                "moderate"
            } else {
                "stable"
            };
            Ok(Drift { counter: name, psi, reading, bins })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(counts: &[u64]) -> Vec<(String, u64)> {
        let mut r = vec![("records".to_string(), counts.iter().sum())];
        r.extend(counts.iter().enumerate().map(|(i, &c)| (format!("by_gmv[bin {i}]"), c)));
        r
    }

    #[test]
    fn the_same_shares_do_not_drift_and_a_shift_does() {
        let d = drift(&result(&[100, 200, 300]), &result(&[10, 20, 30])).expect("drift");
        assert_eq!(d.len(), 1, "`records` has no bins");
        assert!(d[0].psi.abs() < 1e-3 && d[0].reading == "stable", "{d:?}");
        let d = drift(&result(&[100, 200, 300]), &result(&[300, 200, 100])).expect("drift");
        // By hand: 2 × (0.5 − 1/6) × ln 3 ≈ 0.732.
        assert!((d[0].psi - 0.732).abs() < 0.01 && d[0].reading == "significant", "{d:?}");
        // An empty bin is smoothed, not infinite.
        let d = drift(&result(&[100, 100, 0]), &result(&[100, 100, 5])).expect("drift");
        assert!(d[0].psi.is_finite() && d[0].psi > 0.0);
    }

    #[test]
    fn other_bins_or_nothing_counted_are_refused() {
        let mut other = result(&[1, 2, 3]);
        other[1].0 = "by_rate[bin 0]".into();
        assert!(drift(&result(&[1, 2, 3]), &other).expect_err("bins").to_string().contains("not the same"));
        assert!(drift(&result(&[0, 0, 0]), &result(&[1, 2, 3])).expect_err("empty").to_string().contains("nothing"));
    }
}
