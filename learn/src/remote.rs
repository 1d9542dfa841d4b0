//! Fitting over the services: the scorecard [`crate::fit()`] makes, with
//! each role's share of the work apart, for a lender and party nodes that
//! run in separate processes (`jointscore lender fit`, docs/learn.md "Over
//! the services").
//!
//! - The lender states the fit in a [`FitSpec`] (parties, their features,
//!   scale, L2, cutoffs) and holds the labels ([`read_labels`]).
//! - Each party bins its own features over the training rows
//!   ([`party_bins`]): the assignments stay with it, the bin descriptions
//!   ([`FeatureBins`]: edges or category groups, never a row's value) go to
//!   the lender with the encrypted per-bin sums. Once the lender has
//!   selected features, a party turns each selected one into its WoE column
//!   ([`woe_column`]) for the Gram round.
//! - The lender merges the bins, computes WoE and IV and selects features
//!   ([`Selection::new`]), then, with the Gram matrix's weights, writes the
//!   model ([`Selection::model`]). Cutoffs and bands come from the spec: the
//!   lender has no per-row scores to take quantiles of.
//!
//! On the same training rows, in the same order, with the features in the
//! same order, the bins, points and base score are those of
//! [`crate::fit()`].

use jointscore_binning::gram::VALUE_LIMIT;
use jointscore_binning::{BinAssignment, BinCounts};
use jointscore_circuits::{MAX_CATEGORIES, Model, Output, file};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::data::{Column, categorical_column};
use crate::error::{Error, Result};
use crate::fit::{Binned, FeatureFit, Initial, MIN_IV, MIN_SHARE, Scale, initial_bins, merge};
use crate::weights::Weights;

/// Fewest training rows a fit takes: below it a 5% bin is a handful of
/// rows.
pub const MIN_ROWS: usize = 40;
/// Most training rows a fit takes (the Gram round's limit).
pub const MAX_ROWS: usize = jointscore_binning::gram::MAX_ROWS;
/// The name the lender takes among the Gram round's participants when it
/// has no member name.
pub const LENDER_NAME: &str = "lender";

fn spec_error(message: impl Into<String>) -> Error {
    Error::Spec(message.into())
}

fn remote_error(message: impl Into<String>) -> Error {
    Error::Remote(message.into())
}

/// How a party's feature is binned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FeatureKind {
    /// Integer values, up to 10 equal-frequency bins.
    Numeric,
    /// Categories, one bin each (rare ones share).
    Categorical,
}

/// One feature of a party.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureSpec {
    /// The feature's name in the party's records (and in the model).
    pub name: String,
    /// How it is binned.
    pub kind: FeatureKind,
}

/// One party and the features it contributes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartySpec {
    /// The party's name, as the coordinator registered it.
    pub name: String,
    /// Its features, in order.
    pub features: Vec<FeatureSpec>,
}

/// Cutoffs and bands of the fitted model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CutoffSpec {
    /// Score at or above which the decision is approve.
    pub approve: i64,
    /// Score at or above which the decision is at least refer.
    pub refer: i64,
    /// Band minimums, best band first (strictly decreasing); one more band
    /// takes the scores below the last.
    pub bands: Vec<i64>,
}

/// What a lender asks a joint fit for, as a TOML file:
///
/// ```toml
/// name = "sme-card"
/// deadline_ms = 60000     # per step and party (default 60 s)
/// l2 = 1.0                # default 1
/// [scale]                 # default: 20 points to double, 600 at 50:1
/// pdo = 20.0
/// base_score = 600.0
/// base_odds = 50.0
/// [cutoffs]               # default: approve at the base score, refer
/// approve = 600           # one doubling below, bands a doubling apart
/// refer = 580
/// bands = [620, 600, 580]
/// [[party]]
/// name = "platform"
/// features = [{ name = "gmv", kind = "numeric" }, { name = "region", kind = "categorical" }]
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FitSpec {
    /// The model's name.
    pub name: String,
    /// Longest a party may take for one step, in milliseconds.
    #[serde(default = "default_deadline")]
    pub deadline_ms: u64,
    /// L2 strength of the weights (per training row's loss summed).
    #[serde(default = "default_l2")]
    pub l2: f64,
    /// The points scale.
    #[serde(default)]
    pub scale: Option<ScaleSpec>,
    /// Cutoffs and bands.
    #[serde(default)]
    pub cutoffs: Option<CutoffSpec>,
    /// The parties, in order.
    #[serde(rename = "party")]
    pub parties: Vec<PartySpec>,
}

/// The points scale as the spec writes it.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScaleSpec {
    /// Points to double the odds.
    pub pdo: f64,
    /// Score at the base odds.
    pub base_score: f64,
    /// Base odds (good : bad).
    pub base_odds: f64,
}

fn default_deadline() -> u64 {
    60_000
}

fn default_l2() -> f64 {
    1.0
}

/// Longest name or category accepted in a spec or a bin description.
const NAME_LIMIT: usize = 128;

fn check_name(what: &str, name: &str) -> Result<()> {
    if name.is_empty() || name.len() > NAME_LIMIT || name.chars().any(char::is_control) {
        return Err(spec_error(format!("{what} `{}` must be 1 to {NAME_LIMIT} printable bytes", name.escape_debug())));
    }
    Ok(())
}

impl FitSpec {
    /// Parses and checks a spec: at least one party, each with features,
    /// no name twice, no party named `lender`, a positive scale, L2 at
    /// least 0, refer at most approve and band minimums decreasing.
    pub fn from_toml(text: &str) -> Result<FitSpec> {
        let spec: FitSpec = toml::from_str(text).map_err(|e| spec_error(e.to_string()))?;
        check_name("name", &spec.name)?;
        if spec.parties.is_empty() {
            return Err(spec_error("names no `[[party]]`"));
        }
        let mut seen = std::collections::BTreeSet::new();
        for p in &spec.parties {
            check_name("party", &p.name)?;
            if p.name == LENDER_NAME {
                return Err(spec_error(format!("`{LENDER_NAME}` is the label holder, not a party")));
            }
            if !seen.insert(format!("party {}", p.name)) {
                return Err(spec_error(format!("party `{}` appears twice", p.name)));
            }
            if p.features.is_empty() {
                return Err(spec_error(format!("party `{}` lists no feature", p.name)));
            }
            for f in &p.features {
                check_name("feature", &f.name)?;
                if !seen.insert(format!("feature {}", f.name)) {
                    return Err(spec_error(format!("feature `{}` appears twice", f.name)));
                }
            }
        }
        if !(spec.deadline_ms > 0 && spec.deadline_ms <= 3_600_000) {
            return Err(spec_error("deadline_ms must be 1 to 3600000"));
        }
        if !(spec.l2.is_finite() && spec.l2 >= 0.0) {
            return Err(spec_error(format!("l2 {} is not a non-negative number", spec.l2)));
        }
        let scale = spec.scale();
        if !(scale.pdo.is_finite() && scale.pdo > 0.0 && scale.base_odds.is_finite() && scale.base_odds > 0.0) {
            return Err(spec_error("scale: pdo and base_odds must be positive numbers"));
        }
        if !scale.base_score.is_finite() {
            return Err(spec_error("scale: base_score must be a finite number"));
        }
        let cutoffs = spec.cutoffs();
        if cutoffs.refer > cutoffs.approve {
            return Err(spec_error(format!("cutoffs: refer {} is above approve {}", cutoffs.refer, cutoffs.approve)));
        }
        if cutoffs.bands.windows(2).any(|w| w[0] <= w[1]) {
            return Err(spec_error("cutoffs: band minimums must decrease strictly, best band first"));
        }
        if cutoffs.bands.len() + 1 > 26 {
            return Err(spec_error("cutoffs: at most 25 band minimums"));
        }
        Ok(spec)
    }

    /// The spec's id: SHA-256 (hex) of its canonical form (JSON of the
    /// parsed spec), what a party operator approves (`approved_fits`).
    pub fn id(&self) -> String {
        hex::encode(Sha256::digest(serde_json::to_vec(self).unwrap_or_default()))
    }

    /// The points scale (the default where the spec has none).
    pub fn scale(&self) -> Scale {
        self.scale.map_or_else(Scale::default, |s| Scale {
            pdo: s.pdo,
            base_score: s.base_score,
            base_odds: s.base_odds,
        })
    }

    /// The cutoffs: the spec's, or approve at the base score, refer one
    /// doubling of the odds below, and bands a doubling apart around it.
    pub fn cutoffs(&self) -> CutoffSpec {
        self.cutoffs.clone().unwrap_or_else(|| {
            let s = self.scale();
            let (base, pdo) = (s.base_score.round() as i64, s.pdo.round().max(1.0) as i64);
            CutoffSpec { approve: base, refer: base - pdo, bands: vec![base + pdo, base, base - pdo] }
        })
    }

    /// The spec of party `name`.
    pub fn party(&self, name: &str) -> Option<&PartySpec> {
        self.parties.iter().find(|p| p.name == name)
    }
}

/// Reads the lender's labels: a CSV with a header naming `subject` and
/// `label` columns, `label` 1 for bad and 0 for good. Refuses, naming the
/// line: a label that is not 0 or 1, an empty or repeated subject, a row
/// without its cells; and fewer than [`MIN_ROWS`] rows or one class only.
pub fn read_labels(reader: impl std::io::Read) -> Result<Vec<(String, bool)>> {
    let column = "label".to_string();
    let mut csv = csv::ReaderBuilder::new().has_headers(true).from_reader(reader);
    let headers = csv.headers().map_err(|e| Error::Csv { line: 1, message: e.to_string() })?.clone();
    let at = |name: &str| headers.iter().position(|h| h.trim() == name);
    let (Some(s), Some(l)) = (at("subject"), at("label")) else {
        return Err(Error::Label { column, message: "file needs a header with `subject` and `label` columns".into() });
    };
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for (k, record) in csv.records().enumerate() {
        let line = k as u64 + 2;
        let record = record.map_err(|e| Error::Csv { line, message: e.to_string() })?;
        let (Some(subject), Some(label)) = (record.get(s), record.get(l)) else {
            return Err(Error::Csv { line, message: "the row lacks its subject or label cell".into() });
        };
        let subject = subject.trim();
        if subject.is_empty() {
            return Err(Error::Csv { line, message: "the subject is empty".into() });
        }
        let bad = match label.trim() {
            "1" => true,
            "0" => false,
            other => {
                return Err(Error::Label {
                    column,
                    message: format!("line {line} holds `{}`; labels are 1 (bad) or 0 (good)", other.escape_debug()),
                });
            }
        };
        if !seen.insert(subject.to_string()) {
            return Err(Error::Csv { line, message: format!("subject `{subject}` appears twice") });
        }
        out.push((subject.to_string(), bad));
    }
    if out.len() < MIN_ROWS || out.len() > MAX_ROWS {
        return Err(Error::Label {
            column,
            message: format!("file holds {} rows; a fit takes {MIN_ROWS} to {MAX_ROWS}", out.len()),
        });
    }
    if out.iter().all(|r| r.1) || out.iter().all(|r| !r.1) {
        return Err(Error::Label { column, message: "holds one class only; a fit needs goods and bads".into() });
    }
    Ok(out)
}

/// A feature's values at its party.
#[derive(Clone, Debug, PartialEq)]
pub enum FeatureValues {
    /// Integers.
    Numeric {
        /// Every present value in the party's book (for the range).
        book: Vec<i64>,
        /// Each training row's value, in the lender's row order.
        train: Vec<Option<i64>>,
    },
    /// Categories.
    Categorical {
        /// Every present value in the party's book (for the categories).
        book: Vec<String>,
        /// Each training row's value, in the lender's row order.
        train: Vec<Option<String>>,
    },
}

/// A feature's initial bins as its party describes them to the lender:
/// no row's value, only the bins' bounds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FeatureBins {
    /// The feature.
    pub name: String,
    /// The bins.
    pub kind: BinKind,
    /// Missing values were too few for a bin of their own (under 5% of the
    /// training rows) and joined bin 0.
    pub missing_joined: bool,
}

/// The initial bins of one feature.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum BinKind {
    /// Ordered bins of integers.
    Numeric {
        /// Upper edges of the ordered bins but the last.
        edges: Vec<f64>,
        /// Smallest and largest value in the party's book.
        range: [i64; 2],
    },
    /// Groups of categories.
    Categorical {
        /// The categories (sorted; `(other)` last when rare ones are
        /// pooled).
        categories: Vec<String>,
        /// Each ordered bin's category indices.
        bins: Vec<Vec<usize>>,
    },
}

impl FeatureBins {
    /// Ordered bins (the missing slot comes after them).
    pub fn ordered(&self) -> usize {
        match &self.kind {
            BinKind::Numeric { edges, .. } => edges.len() + 1,
            BinKind::Categorical { bins, .. } => bins.len(),
        }
    }

    /// Bins including the missing slot: what the party sums over.
    pub fn count(&self) -> usize {
        self.ordered() + 1
    }

    /// Checks a description from the wire: edges finite and increasing
    /// within the range, categories named once each and grouped into
    /// disjoint bins that cover them.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| remote_error(format!("feature `{}`: {m}", self.name));
        check_name("feature", &self.name)?;
        match &self.kind {
            BinKind::Numeric { edges, range } => {
                if edges.len() > 64 {
                    return Err(bad(format!("{} edges", edges.len())));
                }
                if edges.iter().any(|e| !e.is_finite()) || edges.windows(2).any(|w| w[0] >= w[1]) {
                    return Err(bad("edges that are not finite and increasing".into()));
                }
                if range[0] > range[1] {
                    return Err(bad("a range whose minimum is above its maximum".into()));
                }
            }
            BinKind::Categorical { categories, bins } => {
                if categories.is_empty() || categories.len() > MAX_CATEGORIES {
                    return Err(bad(format!("{} categories; a model takes 1 to {MAX_CATEGORIES}", categories.len())));
                }
                let mut names = std::collections::BTreeSet::new();
                for c in categories {
                    check_name("category", c)?;
                    if !names.insert(c) {
                        return Err(bad(format!("category `{c}` twice")));
                    }
                }
                let mut covered = vec![false; categories.len()];
                for &c in bins.iter().flatten() {
                    match covered.get_mut(c) {
                        Some(seen @ false) => *seen = true,
                        _ => return Err(bad("bins that do not partition the categories".into())),
                    }
                }
                if bins.is_empty() || bins.iter().any(Vec::is_empty) || covered.contains(&false) {
                    return Err(bad("bins that do not partition the categories".into()));
                }
            }
        }
        Ok(())
    }

    fn initial(&self) -> Initial {
        let (edges, categories) = match &self.kind {
            BinKind::Numeric { edges, .. } => (edges.clone(), Vec::new()),
            BinKind::Categorical { bins, .. } => (Vec::new(), bins.clone()),
        };
        Initial { assign: Vec::new(), ordered: self.ordered(), edges, categories, missing_joined: self.missing_joined }
    }
}

/// A party's binning of its features over the training rows.
#[derive(Clone, Debug, PartialEq)]
pub struct PartyBinning {
    /// What goes to the lender, per feature.
    pub bins: Vec<FeatureBins>,
    /// Each feature's bin per training row: stays with the party.
    pub assignments: Vec<BinAssignment>,
}

/// The party's step: initial bins of each feature over the training rows,
/// each bin at least 5% of them, as [`crate::fit()`] makes them.
pub fn party_bins(features: &[(String, FeatureValues)]) -> Result<PartyBinning> {
    let mut out = PartyBinning { bins: Vec::new(), assignments: Vec::new() };
    for (name, values) in features {
        let (column, kind_of) = match values {
            FeatureValues::Numeric { book, train } => {
                let present = book.iter().chain(train.iter().flatten());
                let range = [present.clone().min().copied().unwrap_or(0), present.max().copied().unwrap_or(0)];
                (Column::Numeric { values: train.clone(), decimals: 0 }, Some(range))
            }
            FeatureValues::Categorical { book, train } => {
                let cells: Vec<(u64, Option<&str>)> =
                    book.iter().chain(train.iter().flatten()).map(|c| (0, Some(c.as_str()))).collect();
                let Column::Categorical { categories, .. } = categorical_column(name, &cells)? else {
                    return Err(remote_error(format!("feature `{name}` is not categorical")));
                };
                let last = categories.len().saturating_sub(1);
                let values = train
                    .iter()
                    .map(|v| v.as_ref().map(|c| categories.iter().position(|x| x == c).unwrap_or(last)))
                    .collect();
                (Column::Categorical { categories, values }, None)
            }
        };
        let rows = match &column {
            Column::Numeric { values, .. } => values.len(),
            Column::Categorical { values, .. } => values.len(),
        };
        if rows == 0 {
            return Err(remote_error(format!("feature `{name}`: no training rows")));
        }
        let train: Vec<usize> = (0..rows).collect();
        let min_rows = ((rows as f64 * MIN_SHARE).ceil() as usize).max(1);
        let init = initial_bins(&column, &train, min_rows);
        let kind = match (&column, kind_of) {
            (Column::Numeric { .. }, Some(range)) => BinKind::Numeric { edges: init.edges.clone(), range },
            (Column::Categorical { categories, .. }, _) => {
                BinKind::Categorical { categories: categories.clone(), bins: init.categories.clone() }
            }
            (Column::Numeric { .. }, None) => return Err(remote_error(format!("feature `{name}` has no range"))),
        };
        out.assignments.push(BinAssignment { bins: init.assign.clone(), count: init.ordered as u32 + 1 });
        out.bins.push(FeatureBins { name: name.clone(), kind, missing_joined: init.missing_joined });
    }
    Ok(out)
}

/// A party's WoE column for one selected feature: each row's initial
/// bin's WoE, as the lender sent them (one per bin, the missing slot
/// last, each within ±[`VALUE_LIMIT`]).
pub fn woe_column(assignment: &BinAssignment, woe: &[f64]) -> Result<Vec<f64>> {
    if woe.len() != assignment.count as usize {
        return Err(remote_error(format!("{} WoE values for {} bins", woe.len(), assignment.count)));
    }
    if woe.iter().any(|w| !(w.is_finite() && w.abs() <= VALUE_LIMIT)) {
        return Err(remote_error(format!("a WoE value beyond ±{VALUE_LIMIT} or not a number")));
    }
    assignment
        .bins
        .iter()
        .map(|&b| woe.get(b as usize).copied().ok_or_else(|| remote_error("a row's bin is outside the table")))
        .collect()
}

/// One party feature at the lender, after the binning round.
struct LenderFeature {
    party: String,
    bins: FeatureBins,
    init: Initial,
    binned: Binned,
}

/// The lender's state between the binning round and the model: every
/// feature's merged bins, WoE and IV, and which are selected.
pub struct Selection {
    spec: FitSpec,
    features: Vec<LenderFeature>,
    fits: Vec<FeatureFit>,
    selected: Vec<usize>,
    total: BinCounts,
}

/// One party's answer to the binning round at the lender: its name, its
/// features' bins and their decrypted counts.
pub type PartyAnswer = (String, Vec<FeatureBins>, Vec<Vec<BinCounts>>);

/// A selected feature's WoE table, for its party.
#[derive(Clone, Debug, PartialEq)]
pub struct WoeTable {
    /// The party.
    pub party: String,
    /// The feature.
    pub feature: String,
    /// WoE per initial bin, the missing slot last.
    pub woe: Vec<f64>,
}

impl Selection {
    /// Merges every party feature's bins (`answers`: per party of the
    /// spec, its bin descriptions and decrypted counts, in the spec's
    /// order) into final bins with monotone WoE, and selects features by
    /// IV (at least the best one). `labels` are the training labels
    /// (`true` = bad). Refuses descriptions or counts that do not fit the
    /// spec or the rows.
    pub fn new(spec: &FitSpec, labels: &[bool], answers: &[PartyAnswer]) -> Result<Selection> {
        let total = BinCounts { rows: labels.len() as u64, bad: labels.iter().filter(|&&b| b).count() as u64 };
        let mut features = Vec::new();
        let mut fits = Vec::new();
        for party in &spec.parties {
            let (_, bins, counts) = answers
                .iter()
                .find(|(p, _, _)| *p == party.name)
                .ok_or_else(|| remote_error(format!("party `{}` sent no bins", party.name)))?;
            let names: Vec<&str> = bins.iter().map(|b| b.name.as_str()).collect();
            let want: Vec<&str> = party.features.iter().map(|f| f.name.as_str()).collect();
            if names != want || counts.len() != bins.len() {
                return Err(remote_error(format!(
                    "party `{}` sent bins for {names:?}, not for its features {want:?}",
                    party.name
                )));
            }
            for ((b, c), f) in bins.iter().zip(counts).zip(&party.features) {
                b.validate()?;
                let categorical = matches!(b.kind, BinKind::Categorical { .. });
                if categorical != (f.kind == FeatureKind::Categorical) {
                    return Err(remote_error(format!("feature `{}` was binned as another kind", b.name)));
                }
                let sum: BinCounts = c.iter().sum();
                if c.len() != b.count() || sum != total || c.iter().any(|k| k.bad > k.rows) {
                    return Err(remote_error(format!(
                        "feature `{}`: the counts do not add up to the {} training rows",
                        b.name, total.rows
                    )));
                }
                let init = b.initial();
                let column = if categorical {
                    Column::Categorical { categories: Vec::new(), values: Vec::new() }
                } else {
                    Column::Numeric { values: Vec::new(), decimals: 0 }
                };
                let (binned, iv) = merge(&column, &init, c);
                fits.push(FeatureFit { name: b.name.clone(), iv, selected: false, weight: 0.0 });
                features.push(LenderFeature { party: party.name.clone(), bins: b.clone(), init, binned });
            }
        }
        let best = fits.iter().enumerate().max_by(|a, b| a.1.iv.total_cmp(&b.1.iv)).map(|(i, _)| i);
        for (i, f) in fits.iter_mut().enumerate() {
            f.selected = f.iv >= MIN_IV || Some(i) == best;
        }
        let selected = (0..fits.len()).filter(|&f| fits[f].selected).collect();
        Ok(Selection { spec: spec.clone(), features, fits, selected, total })
    }

    /// Every feature's IV, and whether it is selected so far.
    pub fn features(&self) -> &[FeatureFit] {
        &self.fits
    }

    /// The selected features' WoE tables, in spec order: what each party
    /// needs for its columns of the Gram round. Column `k + 1` of the Gram
    /// matrix is the `k`-th of them (participants are the parties in spec
    /// order, the lender with its label last).
    pub fn woe_tables(&self) -> Vec<WoeTable> {
        self.selected
            .iter()
            .map(|&f| WoeTable {
                party: self.features[f].party.clone(),
                feature: self.features[f].bins.name.clone(),
                woe: self.features[f].binned.woe_of_initial.clone(),
            })
            .collect()
    }

    /// The model, given the weights fitted for the selected features (in
    /// [`Selection::woe_tables`] order): points `round(factor × weight ×
    /// WoE)`, the base score from the intercept, and the spec's cutoffs
    /// and bands. Also every feature's fit.
    pub fn model(&self, weights: &Weights) -> Result<(Model, Vec<FeatureFit>)> {
        if weights.weights.len() != self.selected.len() || weights.kept.len() != self.selected.len() {
            return Err(remote_error("the weights do not match the selected features"));
        }
        let mut fits = self.fits.clone();
        for (k, &f) in self.selected.iter().enumerate() {
            fits[f].selected = weights.kept[k];
            fits[f].weight = weights.weights[k];
        }
        let scale = self.spec.scale();
        let factor = scale.pdo / std::f64::consts::LN_2;
        let mut used = Vec::new();
        for (f, feature) in self.features.iter().enumerate().filter(|(f, _)| fits[*f].selected) {
            used.push(feature_file(feature, factor * fits[f].weight));
        }
        let parties: Vec<String> = self
            .spec
            .parties
            .iter()
            .filter(|p| used.iter().any(|f| f.party == p.name))
            .map(|p| p.name.clone())
            .collect();
        let offset = scale.base_score - factor * scale.base_odds.ln();
        let base = (offset + factor * weights.intercept).round() as i64;
        let cutoffs = self.spec.cutoffs();
        let letter = |i: usize| char::from(b'A' + i as u8).to_string();
        let mut bands: Vec<file::Band> = cutoffs
            .bands
            .iter()
            .enumerate()
            .map(|(i, &m)| file::Band {
                name: letter(i),
                min_score: Some(m),
                rate_tier: format!("T{}", i + 1),
                line_multiplier: 0,
            })
            .collect();
        bands.push(file::Band {
            name: letter(cutoffs.bands.len()),
            min_score: None,
            rate_tier: "none".into(),
            line_multiplier: 0,
        });
        let file = file::Model {
            name: self.spec.name.clone(),
            version: "fit".into(),
            description: format!(
                "Fitted by `jointscore lender fit` over the services on {} training rows ({} bad). Points = \
                 round({factor:.4} x weight x WoE) with logistic-regression weights fitted jointly (L2 {}); base \
                 {base} = offset + factor x intercept. Cutoffs and bands from the fit spec.",
                self.total.rows, self.total.bad, self.spec.l2
            ),
            parties,
            base_points: base,
            features: used,
            knockouts: Vec::new(),
            cutoffs: file::Cutoffs { approve: cutoffs.approve, refer: cutoffs.refer },
            bands,
            credit_line: None,
            reasons: Some(file::Reasons { count: 0 }),
            outputs: Some(file::Outputs { reveal: vec![Output::Decision, Output::Band, Output::Score] }),
        };
        Ok((Model::from_file(&file)?, fits))
    }
}

/// A selected feature in the model file, with `scale` = factor × weight:
/// the same bins, points and missing treatment as [`crate::fit()`] writes.
fn feature_file(feature: &LenderFeature, scale: f64) -> file::Feature {
    let (init, b) = (&feature.init, &feature.binned);
    let points: Vec<i64> = b.woe.iter().map(|w| (scale * w).round() as i64).collect();
    let (groups, order) = (&b.groups, &b.order);
    let n_ordered_groups = groups.iter().filter(|g| g.start < init.ordered).count();
    let group_of = |bin: usize| {
        let pos = order.iter().position(|&b| b == bin).unwrap_or(0);
        groups.iter().position(|g| g.contains(&pos)).unwrap_or(0)
    };
    let missing_points = if b.has_missing {
        points[n_ordered_groups]
    } else if init.missing_joined {
        points[group_of(0)]
    } else {
        *points[..n_ordered_groups].iter().min().unwrap_or(&0)
    };
    let ordered_groups = groups.iter().zip(&points).take(n_ordered_groups);
    let (unit, range, categories, bins) = match &feature.bins.kind {
        BinKind::Numeric { range, .. } => {
            let min = range[0];
            let bins = ordered_groups
                .enumerate()
                .map(|(g, (group, &points))| file::Bin {
                    min: None,
                    max: (g + 1 < n_ordered_groups).then(|| (init.edges[group.end - 1] as i64).max(min)),
                    categories: None,
                    points,
                })
                .collect();
            ("value".to_string(), Some(*range), None, bins)
        }
        BinKind::Categorical { categories, .. } => {
            let bins = ordered_groups
                .map(|(group, &points)| file::Bin {
                    min: None,
                    max: None,
                    categories: Some(
                        group
                            .clone()
                            .flat_map(|k| init.categories[order[k]].iter().map(|&c| categories[c].clone()))
                            .collect(),
                    ),
                    points,
                })
                .collect();
            ("category".to_string(), None, Some(categories.clone()), bins)
        }
    };
    file::Feature {
        name: feature.bins.name.clone(),
        party: feature.party.clone(),
        unit,
        reason: None,
        range,
        categories,
        missing: file::Missing::Points(missing_points),
        bins,
    }
}
