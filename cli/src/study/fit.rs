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

/// A feature's initial binning over all rows, and how its bins map to model
/// bins.
struct Initial {
    assign: Vec<u32>,
    count: u32,
    /// Bins in their natural order (numeric), the rest (missing) after.
    ordered: usize,
    missing_bin: Option<u32>,
}

fn initial_bins(column: &Column, train: &[usize]) -> (Initial, Option<NumericBins>) {
    match column {
        Column::Numeric { values, .. } => {
            let as_f64: Vec<Option<f64>> = values.iter().map(|v| v.map(|x| x as f64)).collect();
            let train_values: Vec<Option<f64>> = train.iter().map(|&i| as_f64[i]).collect();
            let bins = NumericBins::fit(&train_values, INITIAL_BINS);
            let mut bins_all = bins.clone();
            bins_all.missing = true;
            let assign = as_f64.iter().map(|&v| bins_all.bin(v)).collect();
            let ordered = bins.edges.len() + 1;
            (Initial { assign, count: ordered as u32 + 1, ordered, missing_bin: Some(ordered as u32) }, Some(bins))
        }
        Column::Categorical { categories, values } => {
            let n = categories.len() as u32;
            let assign = values.iter().map(|v| v.map_or(n, |c| c as u32)).collect();
            (Initial { assign, count: n + 1, ordered: n as usize, missing_bin: Some(n) }, None)
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
                count: initial[f].count,
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
    let prepared: Vec<(Initial, Option<NumericBins>)> =
        study.features.iter().map(|f| initial_bins(&f.column, &study.train)).collect();
    let initial: Vec<Initial> = prepared.iter().map(|(i, _)| Initial { assign: i.assign.clone(), ..*i }).collect();
    let counts = counts(study, &initial)?;

    let train_total: BinCounts = counts[0].iter().sum();
    let mut fitted = Vec::new();
    let mut feature_toml = Vec::new();
    for (f, feature) in study.features.iter().enumerate() {
        let init = &prepared[f].0;
        let c = &counts[f];
        // Order the bins to merge: numeric bins as they are; categories by
        // their WoE, so that merging groups similar categories.
        let mut order: Vec<usize> = (0..init.ordered).collect();
        if matches!(feature.column, Column::Categorical { .. }) {
            let (w, _) = woe_iv(&c[..init.ordered]);
            order.sort_by(|&a, &b| w[a].total_cmp(&w[b]));
        }
        let mut reordered: Vec<BinCounts> = order.iter().map(|&i| c[i]).collect();
        let has_missing = init.missing_bin.is_some_and(|m| c[m as usize].rows > 0);
        if has_missing {
            reordered.push(c[init.ordered]);
        }
        let groups = merge_monotone(&reordered, init.ordered, MIN_SHARE);
        let merged: Vec<BinCounts> = groups.iter().map(|g| reordered[g.clone()].iter().sum()).collect();
        let (woe, iv) = woe_iv(&merged);
        let points: Vec<i64> = woe.iter().map(|w| (factor * w).round() as i64).collect();
        fitted.push(Fitted { name: feature.name.clone(), iv, selected: false });

        let mut t = String::new();
        let _ = writeln!(t, "[[features]]\nname = \"{}\"\nparty = \"{}\"", feature.name, feature.party);
        let n_ordered_groups = groups.iter().filter(|g| g.start < init.ordered).count();
        let missing_points =
            if has_missing { points[n_ordered_groups] } else { *points[..n_ordered_groups].iter().min().unwrap_or(&0) };
        match &feature.column {
            Column::Numeric { values, decimals } => {
                let present = values.iter().flatten();
                let (min, max) = (present.clone().min().copied().unwrap_or(0), present.max().copied().unwrap_or(0));
                let edges = prepared[f].1.as_ref().map(|b| b.edges.clone()).unwrap_or_default();
                let unit = if *decimals == 0 { "value".to_string() } else { format!("value x 10^{decimals}") };
                let _ = writeln!(
                    t,
                    "unit = \"{unit}\"\nrange = [{min}, {max}]\nmissing = {{ points = {missing_points} }}\nbins = ["
                );
                for (g, group) in groups.iter().enumerate().take(n_ordered_groups) {
                    let hi = if group.end >= init.ordered { max } else { edges[group.end - 1] as i64 };
                    if g + 1 == n_ordered_groups {
                        let _ = writeln!(t, "  {{ points = {} }},", points[g]);
                    } else {
                        let _ = writeln!(t, "  {{ max = {}, points = {} }},", hi.max(min), points[g]);
                    }
                }
            }
            Column::Categorical { categories, .. } => {
                let _ = writeln!(
                    t,
                    "unit = \"category\"\ncategories = {categories:?}\nmissing = {{ points = {missing_points} }}\nbins = ["
                );
                for (g, group) in groups.iter().enumerate().take(n_ordered_groups) {
                    let cats: Vec<&String> = group.clone().map(|k| &categories[order[k]]).collect();
                    let _ = writeln!(t, "  {{ categories = {cats:?}, points = {} }},", points[g]);
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
    let mut parties: Vec<&String> =
        study.parties.iter().filter(|p| used.iter().any(|&f| &&study.features[f].party == p)).collect();
    parties.dedup();

    let offset = scale.base_score - factor * scale.base_odds.ln();
    let prior = (train_total.good() as f64 / train_total.bad.max(1) as f64).ln();
    let base = (offset + factor * prior).round() as i64;

    let mut toml = String::new();
    let _ = writeln!(
        toml,
        "# Fitted by `jointscore study` through the vertical binning protocol.\n# Points = round({:.4} x WoE); base {} = offset + factor x ln(train good/bad).\nformat = \"jointscore.model.v1\"\nname = \"{name}\"\nversion = \"study\"\nparties = {parties:?}\nbase_points = {base}\n",
        factor, base
    );
    for &f in &used {
        toml.push_str(&feature_toml[f]);
        toml.push('\n');
    }
    Ok(Fit { toml, features: fitted })
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
