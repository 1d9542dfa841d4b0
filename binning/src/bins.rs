//! Binning a party's own column in the clear, and the lender's statistics
//! on the counts: weight of evidence, information value, and merging for
//! monotone WoE with a minimum bin share.

use crate::protocol::{BinAssignment, BinCounts};

/// Equal-frequency bins of a numeric column: up to `max_bins` bins of about
/// equal size among the present values (ties never split), plus one bin for
/// missing values when there are any (the last index).
#[derive(Clone, Debug, PartialEq)]
pub struct NumericBins {
    /// Upper edges: value `v` is in the first bin `i` with `v <= edges[i]`;
    /// values above every edge are in the last numeric bin.
    pub edges: Vec<f64>,
    /// Whether a missing-value bin follows the numeric bins.
    pub missing: bool,
}

impl NumericBins {
    /// Fits bins to a column.
    pub fn fit(values: &[Option<f64>], max_bins: usize) -> NumericBins {
        let mut present: Vec<f64> = values.iter().flatten().copied().filter(|v| v.is_finite()).collect();
        present.sort_by(f64::total_cmp);
        let missing = present.len() < values.len();
        let mut edges = Vec::new();
        let n = present.len();
        for k in 1..max_bins.max(1) {
            let at = k * n / max_bins;
            if at == 0 || at >= n {
                continue;
            }
            // `v <= edge` keeps ties together; an edge equal to the previous
            // one or to the largest value would make an empty bin.
            let edge = present[at - 1];
            if edges.last().is_none_or(|&e| edge > e) && edge < present[n - 1] {
                edges.push(edge);
            }
        }
        NumericBins { edges, missing }
    }

    /// Number of bins, the missing bin included.
    pub fn count(&self) -> u32 {
        self.edges.len() as u32 + 1 + u32::from(self.missing)
    }

    /// Bin of one value.
    pub fn bin(&self, value: Option<f64>) -> u32 {
        match value.filter(|v| v.is_finite()) {
            None => self.edges.len() as u32 + 1,
            Some(v) => self.edges.iter().position(|&e| v <= e).unwrap_or(self.edges.len()) as u32,
        }
    }

    /// Assignment of a whole column.
    pub fn assign(&self, values: &[Option<f64>]) -> BinAssignment {
        BinAssignment { bins: values.iter().map(|&v| self.bin(v)).collect(), count: self.count() }
    }
}

/// Weight of evidence per bin, `ln((good_i / good) / (bad_i / bad))`, with
/// 0.5 added to empty cells so every bin has a finite value; and the
/// information value `sum((good_i/good - bad_i/bad) * woe_i)`.
pub fn woe_iv(bins: &[BinCounts]) -> (Vec<f64>, f64) {
    let good: f64 = bins.iter().map(|b| b.good() as f64).sum();
    let bad: f64 = bins.iter().map(|b| b.bad as f64).sum();
    let mut iv = 0.0;
    let woe = bins
        .iter()
        .map(|b| {
            let (g, d) = (b.good() as f64, b.bad as f64);
            let (g, d) = if g == 0.0 || d == 0.0 { (g + 0.5, d + 0.5) } else { (g, d) };
            let (pg, pb) = (g / good.max(1.0), d / bad.max(1.0));
            let w = (pg / pb).ln();
            iv += (pg - pb) * w;
            w
        })
        .collect();
    (woe, iv)
}

/// Merges adjacent bins (of the first `ordered` bins; any after them, such
/// as a missing bin, stay alone) until every bin holds at least `min_share`
/// of the rows and the WoE is monotone. Returns, per merged bin, the range
/// of original bins it covers.
pub fn merge_monotone(bins: &[BinCounts], ordered: usize, min_share: f64) -> Vec<std::ops::Range<usize>> {
    let total: u64 = bins.iter().map(|b| b.rows).sum();
    let mut groups: Vec<std::ops::Range<usize>> = (0..ordered.min(bins.len())).map(|i| i..i + 1).collect();
    let counts = |g: &std::ops::Range<usize>| bins[g.clone()].iter().sum::<BinCounts>();
    // Too-small bins join their smaller neighbour.
    while groups.len() > 1 {
        let Some(i) = (0..groups.len()).find(|&i| (counts(&groups[i]).rows as f64) < min_share * total as f64) else {
            break;
        };
        let j = if i == 0 {
            1
        } else if i + 1 == groups.len() || counts(&groups[i - 1]).rows <= counts(&groups[i + 1]).rows {
            i - 1
        } else {
            i + 1
        };
        let (a, b) = (i.min(j), i.max(j));
        groups[a] = groups[a].start..groups[b].end;
        groups.remove(b);
    }
    // Then merge the adjacent pair that breaks monotonicity with the
    // smallest WoE difference, until the WoE runs one way.
    loop {
        let merged: Vec<BinCounts> = groups.iter().map(counts).collect();
        let (woe, _) = woe_iv(&merged);
        let up = woe.windows(2).filter(|w| w[1] > w[0]).count();
        let down = woe.windows(2).filter(|w| w[1] < w[0]).count();
        if up == 0 || down == 0 || groups.len() <= 2 {
            break;
        }
        let rising = up >= down;
        let Some(i) = (0..woe.len() - 1)
            .filter(|&i| if rising { woe[i + 1] < woe[i] } else { woe[i + 1] > woe[i] })
            .min_by(|&a, &b| (woe[a + 1] - woe[a]).abs().total_cmp(&(woe[b + 1] - woe[b]).abs()))
        else {
            break;
        };
        groups[i] = groups[i].start..groups[i + 1].end;
        groups.remove(i + 1);
    }
    groups.extend((ordered.min(bins.len())..bins.len()).map(|i| i..i + 1));
    groups
}
