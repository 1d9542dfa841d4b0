//! Fitting a scorecard through the vertical binning protocol and writing it
//! as a model file.
//!
//! What each side learns: the lender learns good/bad counts per initial bin
//! of every party feature (and, as the model's author, the merged bins and
//! points); parties learn nothing about labels, and the final bins of their
//! own features (they are in the model they approve). Weights: points are
//! `factor × WoE` with every feature weight fixed at 1 — the scorecard is
//! the naive-Bayes log-odds of being good. Fitting logistic-regression
//! weights on the WoE features would need per-row products across parties,
//! which the binning round does not reveal; that is left out rather than
//! leaking per-row values.

use std::fmt::Write;

use jointscore_binning::{
    BinAssignment, BinCounts, Lender, NumericBins, merge_monotone, party_sums, plain_counts, woe_iv,
};

use super::data::{Column, Study};
use crate::CliError;

/// Scale: points to double the odds, and the score at the base odds.
pub(crate) struct Scale {
    pub(crate) pdo: f64,
    pub(crate) base_score: f64,
    pub(crate) base_odds: f64,
}

/// Initial equal-frequency bins per numeric feature.
const INITIAL_BINS: usize = 10;
/// Smallest share of training rows in a final bin.
const MIN_SHARE: f64 = 0.05;
/// Features below this information value are left out.
const MIN_IV: f64 = 0.02;

/// One fitted feature: its final bins (as model-file TOML lines), points per
/// bin, and IV.
pub(crate) struct Fitted {
    pub(crate) name: String,
    pub(crate) iv: f64,
    pub(crate) selected: bool,
}

/// The outcome of fitting: the model file's text and per-feature IV.
pub(crate) struct Fit {
    pub(crate) toml: String,
    pub(crate) features: Vec<Fitted>,
}

/// A feature's initial binning over all rows, as the owning party sets it
/// up without the labels: every initial bin holds at least `min_rows`
/// training rows (small bins would tell the lender a few rows' labels).
struct Initial {
    assign: Vec<u32>,
    /// Bins in their natural order (numeric), then one slot for missing
    /// values (empty when missing values joined bin 0 or there are none).
    ordered: usize,
    /// Numeric: the upper edges of the ordered bins.
    edges: Vec<f64>,
    /// Categorical: the categories in each ordered bin.
    categories: Vec<Vec<usize>>,
    /// Whether missing values were too few for a bin of their own and
    /// joined bin 0.
    missing_joined: bool,
}

impl Initial {
    fn count(&self) -> u32 {
        self.ordered as u32 + 1
    }
}

fn initial_bins(column: &Column, train: &[usize], min_rows: usize) -> Initial {
    let missing_train = |is_missing: &dyn Fn(usize) -> bool| train.iter().filter(|&&i| is_missing(i)).count();
    match column {
        Column::Numeric { values, .. } => {
            let as_f64: Vec<Option<f64>> = values.iter().map(|v| v.map(|x| x as f64)).collect();
            let train_values: Vec<Option<f64>> = train.iter().map(|&i| as_f64[i]).collect();
            let mut bins = NumericBins::fit(&train_values, INITIAL_BINS);
            // Merge bins below the minimum into their upper neighbour.
            loop {
                let sizes: Vec<usize> = (0..=bins.edges.len())
                    .map(|k| train_values.iter().flatten().filter(|&&v| bins.bin(Some(v)) as usize == k).count())
                    .collect();
                let Some(k) = sizes.iter().position(|&n| n < min_rows) else { break };
                if bins.edges.is_empty() {
                    break;
                }
                bins.edges.remove(k.min(bins.edges.len() - 1));
            }
            let ordered = bins.edges.len() + 1;
            let missing = missing_train(&|i| values[i].is_none());
            let missing_joined = missing > 0 && missing < min_rows;
            let assign = as_f64
                .iter()
                .map(|&v| match v {
                    None if missing_joined => 0,
                    None => ordered as u32,
                    Some(x) => bins.bin(Some(x)),
                })
                .collect();
            Initial { assign, ordered, edges: bins.edges, categories: Vec::new(), missing_joined }
        }
        Column::Categorical { categories, values } => {
            // Frequent categories get a bin each; rare ones share one bin,
            // which joins the smallest frequent bin if it is still small.
            let freq: Vec<usize> =
                (0..categories.len()).map(|c| train.iter().filter(|&&i| values[i] == Some(c)).count()).collect();
            let mut bins: Vec<Vec<usize>> =
                (0..categories.len()).filter(|&c| freq[c] >= min_rows).map(|c| vec![c]).collect();
            let rare: Vec<usize> = (0..categories.len()).filter(|&c| freq[c] < min_rows).collect();
            if !rare.is_empty() {
                let rare_rows: usize = rare.iter().map(|&c| freq[c]).sum();
                match bins.iter_mut().min_by_key(|b| b.iter().map(|&c| freq[c]).sum::<usize>()) {
                    Some(smallest) if rare_rows < min_rows => smallest.extend(rare),
                    _ => bins.push(rare),
                }
            }
            let bin_of: Vec<u32> =
                (0..categories.len()).map(|c| bins.iter().position(|b| b.contains(&c)).unwrap_or(0) as u32).collect();
            let ordered = bins.len();
            let missing = missing_train(&|i| values[i].is_none());
            let missing_joined = missing > 0 && missing < min_rows;
            let assign = values
                .iter()
                .map(|v| match v {
                    Some(c) => bin_of[*c],
                    None if missing_joined => 0,
                    None => ordered as u32,
                })
                .collect();
            Initial { assign, ordered, edges: Vec::new(), categories: bins, missing_joined }
        }
    }
}

/// Runs the binning round for every feature: party features through the
/// protocol (the lender encrypts the training labels once), the lender's
/// own features in the clear.
fn counts(study: &Study, initial: &[Initial]) -> Result<Vec<Vec<BinCounts>>, CliError> {
    let labels: Vec<bool> = study.train.iter().map(|&i| study.labels[i]).collect();
    let (lender, public, cts) = Lender::encrypt(&labels);
    let mut out = vec![Vec::new(); study.features.len()];
    for party in &study.parties {
        let own: Vec<usize> = (0..study.features.len()).filter(|&f| &study.features[f].party == party).collect();
        let assignments: Vec<BinAssignment> = own
            .iter()
            .map(|&f| BinAssignment {
                bins: study.train.iter().map(|&i| initial[f].assign[i]).collect(),
                count: initial[f].count(),
            })
            .collect();
        let got = if party == "lender" {
            assignments.iter().map(|a| plain_counts(a, &labels)).collect()
        } else {
            let sums = party_sums(&public, &cts, &assignments).map_err(|e| CliError::Usage(e.to_string()))?;
            lender.decrypt(&sums).map_err(|e| CliError::Usage(e.to_string()))?
        };
        for (f, c) in own.into_iter().zip(got) {
            out[f] = c;
        }
    }
    Ok(out)
}

/// Fits the scorecard and writes the model file text.
pub(crate) fn fit(study: &Study, scale: &Scale, name: &str) -> Result<Fit, CliError> {
    let factor = scale.pdo / std::f64::consts::LN_2;
    let min_rows = ((study.train.len() as f64 * MIN_SHARE).ceil() as usize).max(1);
    let initial: Vec<Initial> =
        study.features.iter().map(|f| initial_bins(&f.column, &study.train, min_rows)).collect();
    let counts = counts(study, &initial)?;

    let train_total = BinCounts {
        rows: study.train.len() as u64,
        bad: study.train.iter().filter(|&&i| study.labels[i]).count() as u64,
    };
    let mut fitted = Vec::new();
    let mut feature_toml = Vec::new();
    for (f, feature) in study.features.iter().enumerate() {
        let init = &initial[f];
        let c = &counts[f];
        // Order the bins to merge: numeric bins as they are; categorical
        // bins by their WoE, so that merging groups similar categories.
        let mut order: Vec<usize> = (0..init.ordered).collect();
        if matches!(feature.column, Column::Categorical { .. }) {
            let (w, _) = woe_iv(&c[..init.ordered]);
            order.sort_by(|&a, &b| w[a].total_cmp(&w[b]));
        }
        let mut reordered: Vec<BinCounts> = order.iter().map(|&i| c[i]).collect();
        let has_missing = c[init.ordered].rows > 0;
        if has_missing {
            reordered.push(c[init.ordered]);
        }
        let groups = merge_monotone(&reordered, init.ordered, MIN_SHARE);
        let merged: Vec<BinCounts> = groups.iter().map(|g| reordered[g.clone()].iter().sum()).collect();
        let (woe, iv) = woe_iv(&merged);
        let points: Vec<i64> = woe.iter().map(|w| (factor * w).round() as i64).collect();
        fitted.push(Fitted { name: feature.name.clone(), iv, selected: false });

        let n_ordered_groups = groups.iter().filter(|g| g.start < init.ordered).count();
        // Missing values score as their own bin, as the bin they joined, or
        // (never seen in training) as the worst bin.
        let group_of = |bin: usize| {
            let pos = order.iter().position(|&b| b == bin).unwrap_or(0);
            groups.iter().position(|g| g.contains(&pos)).unwrap_or(0)
        };
        let missing_points = if has_missing {
            points[n_ordered_groups]
        } else if init.missing_joined {
            points[group_of(0)]
        } else {
            *points[..n_ordered_groups].iter().min().unwrap_or(&0)
        };
        let mut t = String::new();
        let _ = writeln!(t, "[[features]]\nname = {}\nparty = {}", quote(&feature.name), quote(&feature.party));
        match &feature.column {
            Column::Numeric { values, decimals } => {
                let present = values.iter().flatten();
                let (min, max) = (present.clone().min().copied().unwrap_or(0), present.max().copied().unwrap_or(0));
                let unit = if *decimals == 0 { "value".to_string() } else { format!("value x 10^{decimals}") };
                let _ = writeln!(
                    t,
                    "unit = {}\nrange = [{min}, {max}]\nmissing = {{ points = {missing_points} }}\nbins = [",
                    quote(&unit)
                );
                for (g, group) in groups.iter().enumerate().take(n_ordered_groups) {
                    if g + 1 == n_ordered_groups {
                        let _ = writeln!(t, "  {{ points = {} }},", points[g]);
                    } else {
                        let hi = init.edges[group.end - 1] as i64;
                        let _ = writeln!(t, "  {{ max = {}, points = {} }},", hi.max(min), points[g]);
                    }
                }
            }
            Column::Categorical { categories, .. } => {
                let _ = writeln!(
                    t,
                    "unit = \"category\"\ncategories = {}\nmissing = {{ points = {missing_points} }}\nbins = [",
                    quote_list(categories.iter())
                );
                for (g, group) in groups.iter().enumerate().take(n_ordered_groups) {
                    let cats = group.clone().flat_map(|k| init.categories[order[k]].iter().map(|&c| &categories[c]));
                    let _ = writeln!(t, "  {{ categories = {}, points = {} }},", quote_list(cats), points[g]);
                }
            }
        }
        t.push_str("]\n");
        feature_toml.push(t);
    }

    // Select by IV (at least the best feature).
    let best = fitted.iter().enumerate().max_by(|a, b| a.1.iv.total_cmp(&b.1.iv)).map(|(i, _)| i);
    for (i, f) in fitted.iter_mut().enumerate() {
        f.selected = f.iv >= MIN_IV || Some(i) == best;
    }
    let used: Vec<usize> = (0..fitted.len()).filter(|&i| fitted[i].selected).collect();
    let parties: Vec<&String> =
        study.parties.iter().filter(|p| used.iter().any(|&f| &&study.features[f].party == p)).collect();

    let offset = scale.base_score - factor * scale.base_odds.ln();
    let prior = (train_total.good() as f64 / train_total.bad.max(1) as f64).ln();
    let base = (offset + factor * prior).round() as i64;

    let mut toml = String::new();
    let _ = writeln!(
        toml,
        "# Fitted by `jointscore study` through the vertical binning protocol.\n# Points = round({:.4} x WoE); base {} = offset + factor x ln(train good/bad).\nformat = \"jointscore.model.v1\"\nname = \"{name}\"\nversion = \"study\"\nparties = {}\nbase_points = {base}\n",
        factor,
        base,
        quote_list(parties.into_iter())
    );
    for &f in &used {
        toml.push_str(&feature_toml[f]);
        toml.push('\n');
    }
    Ok(Fit { toml, features: fitted })
}

/// A TOML string literal, escaped by the `toml` crate.
fn quote(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// A TOML array of string literals.
fn quote_list<'a>(items: impl Iterator<Item = &'a String>) -> String {
    let items: Vec<String> = items.map(|s| quote(s)).collect();
    format!("[{}]", items.join(", "))
}

/// Appends cutoffs, bands and outputs chosen from training-score quantiles:
/// approve the better half, refer the next 20%, four bands by quartile.
pub(crate) fn decision_section(train_scores: &[i64]) -> String {
    let mut s = train_scores.to_vec();
    s.sort_unstable();
    let q = |p: f64| s[((s.len() - 1) as f64 * p).round() as usize];
    let (approve, refer) = (q(0.5), q(0.3));
    let mut t = format!("[cutoffs]\napprove = {approve}\nrefer = {}\n\n", refer.min(approve));
    let mut mins: Vec<i64> = [q(0.75), q(0.5), q(0.25)].to_vec();
    mins.dedup();
    for (i, m) in mins.iter().enumerate() {
        let _ = writeln!(
            t,
            "[[bands]]\nname = \"{}\"\nmin_score = {m}\nrate_tier = \"T{}\"\n",
            (b'A' + i as u8) as char,
            i + 1
        );
    }
    let _ = writeln!(t, "[[bands]]\nname = \"{}\"\nrate_tier = \"none\"\n", (b'A' + mins.len() as u8) as char);
    t.push_str("[reasons]\ncount = 0\n\n[outputs]\nreveal = [\"decision\", \"band\", \"score\"]\n");
    t
}
