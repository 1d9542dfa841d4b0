//! Fitting a scorecard through the vertical binning protocol and, by
//! default, jointly fitted weights.
//!
//! What each side learns: the lender learns good/bad counts per initial bin
//! of every party feature (and, as the model's author, the merged bins and
//! points) and, with [`Weighting::Joint`], the Gram matrix of the selected
//! features' WoE columns and the label (one sum over all rows per pair of
//! columns; [`jointscore_binning::gram`]); parties learn nothing about
//! labels or about each other's values, and the final bins and points of
//! their own features (they are in the model they approve). The
//! coordinator, as relay and dealer, sees only ciphertexts, sealed
//! messages and random masks.
//!
//! Weights: with [`Weighting::Joint`] points are `factor × w × WoE` with
//! logistic-regression weights `w` ([`crate::weights`]); with
//! [`Weighting::WoeNaive`] every weight is 1 — the naive-Bayes log-odds,
//! which double-counts correlated features.
//!
//! The result is a validated [`Model`], built as its file schema
//! ([`file::Model`]) and checked like any model file.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use jointscore_binning::gram::{self, Columns, Layout, Participant, Sealed, VALUE_LIMIT};
use jointscore_binning::{
    BinAssignment, BinCounts, CIPHERTEXT_BYTES, LabelHolder, NumericBins, merge_monotone, party_sums, plain_counts,
    woe_iv,
};
use jointscore_circuits::{Model, Output, file, reference};
use jointscore_secagg::{PartyId, SessionId};
use rand_core::{OsRng, RngCore};

use crate::data::{Column, LENDER, Study};
use crate::error::{Error, Result};
use crate::weights::{Iteration, Weights, fit_weights};

/// The points scale: points to double the odds, and the score at the base
/// odds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Scale {
    /// Points to double the odds (good : bad).
    pub pdo: f64,
    /// Score at the base odds.
    pub base_score: f64,
    /// Base odds (good : bad).
    pub base_odds: f64,
}

impl Default for Scale {
    /// 20 points to double the odds; 600 at odds of 50 : 1.
    fn default() -> Self {
        Scale { pdo: 20.0, base_score: 600.0, base_odds: 50.0 }
    }
}

/// Initial equal-frequency bins per numeric feature.
const INITIAL_BINS: usize = 10;
/// Smallest share of training rows in a final bin.
pub(crate) const MIN_SHARE: f64 = 0.05;
/// Features below this information value are left out.
pub const MIN_IV: f64 = 0.02;

/// How one feature fared: its information value and whether the model
/// keeps it.
#[derive(Clone, Debug, PartialEq)]
pub struct FeatureFit {
    /// Feature name.
    pub name: String,
    /// Information value of its final bins on the training rows.
    pub iv: f64,
    /// Whether the model uses it: IV at least [`MIN_IV`] (or the best
    /// feature) and, with joint weights, a positive weight.
    pub selected: bool,
    /// Its weight: 1 for every selected feature with
    /// [`Weighting::WoeNaive`], the fitted weight with [`Weighting::Joint`];
    /// 0 when not selected.
    pub weight: f64,
}

/// How feature weights are chosen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Weighting {
    /// Logistic-regression weights fitted jointly over the parties'
    /// columns ([`jointscore_binning::gram`], [`crate::weights`]).
    #[default]
    Joint,
    /// Every weight 1: the naive-Bayes WoE scorecard.
    WoeNaive,
}

/// Everything [`fit()`] can be told.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FitOptions {
    /// The points scale.
    pub scale: Scale,
    /// How weights are chosen.
    pub weighting: Weighting,
    /// L2 strength of the joint weights (per training row's loss summed,
    /// as the reference regression's).
    pub l2: f64,
}

impl Default for FitOptions {
    /// The default scale, joint weights, L2 strength 1.
    fn default() -> Self {
        FitOptions { scale: Scale::default(), weighting: Weighting::Joint, l2: 1.0 }
    }
}

/// Bytes one role sent and received during a fit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bytes {
    /// Sent.
    pub sent: u64,
    /// Received.
    pub received: u64,
}

/// What a fit cost: bytes per role (every message relayed by the
/// coordinator, as over the services) and time per phase.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Cost {
    /// The lender's bytes.
    pub lender: Bytes,
    /// The coordinator's bytes (relay and dealer).
    pub coordinator: Bytes,
    /// Each party's bytes, by name.
    pub parties: BTreeMap<String, Bytes>,
    /// Wall time per phase, in order: `binning`, `gram` (dealing,
    /// masking, shares, assembly), `weights`.
    pub phases: Vec<(&'static str, Duration)>,
}

impl Cost {
    /// Records a message from `from` to `to` through the coordinator.
    fn relay(&mut self, from: &str, to: &str, bytes: usize) {
        let b = bytes as u64;
        self.role(from).sent += b;
        self.role(to).received += b;
        self.coordinator.received += b;
        self.coordinator.sent += b;
    }

    /// Records a message the coordinator itself sends (the key list, a
    /// deal).
    fn dealt(&mut self, to: &str, bytes: usize) {
        self.coordinator.sent += bytes as u64;
        self.role(to).received += bytes as u64;
    }

    fn role(&mut self, name: &str) -> &mut Bytes {
        if name == LENDER { &mut self.lender } else { self.parties.entry(name.to_string()).or_default() }
    }
}

/// The outcome of fitting: the model and per-feature IV.
#[derive(Clone, Debug)]
pub struct Fit {
    /// The fitted, validated model: selected features, cutoffs and bands
    /// from training-score quantiles; it reveals decision, band and score.
    pub model: Model,
    /// Every feature, in study order.
    pub features: Vec<FeatureFit>,
    /// The joint weights' fit, iteration by iteration (`None` with
    /// [`Weighting::WoeNaive`]).
    pub weights: Option<Weights>,
    /// Bytes per role and time per phase.
    pub cost: Cost,
}

/// A feature's initial binning over all rows, as the owning party sets it
/// up without the labels: every initial bin holds at least `min_rows`
/// training rows (small bins would tell the lender a few rows' labels).
pub(crate) struct Initial {
    pub(crate) assign: Vec<u32>,
    /// Bins in their natural order (numeric), then one slot for missing
    /// values (empty when missing values joined bin 0 or there are none).
    pub(crate) ordered: usize,
    /// Numeric: the upper edges of the ordered bins.
    pub(crate) edges: Vec<f64>,
    /// Categorical: the categories in each ordered bin.
    pub(crate) categories: Vec<Vec<usize>>,
    /// Whether missing values were too few for a bin of their own and
    /// joined bin 0.
    pub(crate) missing_joined: bool,
}

impl Initial {
    fn count(&self) -> u32 {
        self.ordered as u32 + 1
    }
}

pub(crate) fn initial_bins(column: &Column, train: &[usize], min_rows: usize) -> Initial {
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
fn counts(study: &Study, initial: &[Initial], cost: &mut Cost) -> Result<Vec<Vec<BinCounts>>> {
    let labels: Vec<bool> = study.train().iter().map(|&i| study.labels()[i]).collect();
    let (lender, public, cts) = LabelHolder::encrypt(&labels);
    let features = study.features();
    let mut out = vec![Vec::new(); features.len()];
    for party in study.parties() {
        let own: Vec<usize> = (0..features.len()).filter(|&f| &features[f].party == party).collect();
        let assignments: Vec<BinAssignment> = own
            .iter()
            .map(|&f| BinAssignment {
                bins: study.train().iter().map(|&i| initial[f].assign[i]).collect(),
                count: initial[f].count(),
            })
            .collect();
        let got = if party == LENDER {
            assignments.iter().map(|a| plain_counts(a, &labels)).collect()
        } else {
            // The public key and one ciphertext per row go out; one sum and
            // one row count per bin come back.
            cost.relay(LENDER, party, 32 + cts.len() * CIPHERTEXT_BYTES);
            let bins: usize = assignments.iter().map(|a| a.count as usize).sum();
            cost.relay(party, LENDER, bins * (CIPHERTEXT_BYTES + 8));
            lender.decrypt(&party_sums(&public, &cts, &assignments)?)?
        };
        for (f, c) in own.into_iter().zip(got) {
            out[f] = c;
        }
    }
    Ok(out)
}

/// One feature after the binning round, at the lender: the merged bins
/// and their WoE, before weights.
pub(crate) struct Binned {
    /// Positions (into `order`, then the missing slot) grouped per final bin.
    pub(crate) groups: Vec<std::ops::Range<usize>>,
    /// The initial bins in merge order.
    pub(crate) order: Vec<usize>,
    /// WoE per final bin.
    pub(crate) woe: Vec<f64>,
    /// WoE per initial bin (the missing slot last): what the owning party
    /// needs to turn its rows into a WoE column.
    pub(crate) woe_of_initial: Vec<f64>,
    pub(crate) has_missing: bool,
}

pub(crate) fn merge(feature_column: &Column, init: &Initial, c: &[BinCounts]) -> (Binned, f64) {
    // Order the bins to merge: numeric bins as they are; categorical bins
    // by their WoE, so that merging groups similar categories.
    let mut order: Vec<usize> = (0..init.ordered).collect();
    if matches!(feature_column, Column::Categorical { .. }) {
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
    // Columns travel in fixed point with a bounded magnitude; a WoE beyond
    // it (a bin of almost one class) is clamped in the fit and the points
    // alike.
    let woe: Vec<f64> = woe.iter().map(|w| w.clamp(-VALUE_LIMIT, VALUE_LIMIT)).collect();
    let group_at = |pos: usize| groups.iter().position(|g| g.contains(&pos));
    let woe_of_initial = (0..=init.ordered)
        .map(|bin| {
            let pos =
                if bin == init.ordered { init.ordered } else { order.iter().position(|&b| b == bin).unwrap_or(0) };
            group_at(pos).map_or(0.0, |g| woe[g])
        })
        .collect();
    (Binned { groups, order, woe, woe_of_initial, has_missing }, iv)
}

/// The joint weights round, in process: each participant (every party with
/// a selected feature, and the lender with its selected features and the
/// label) turns its training rows into WoE columns, the coordinator deals,
/// the participants exchange masked columns and send shares, the lender
/// assembles the Gram matrix and fits the weights.
fn joint_weights(
    study: &Study,
    initial: &[Initial],
    binned: &[Binned],
    selected: &[usize],
    l2: f64,
    cost: &mut Cost,
    progress: &mut dyn FnMut(&Iteration),
) -> Result<Weights> {
    let started = Instant::now();
    let train = study.train();
    let features = study.features();
    // Participants: parties in study order, the lender last (it always
    // holds the label column).
    let mut members: Vec<(&str, Vec<usize>)> = study
        .parties()
        .iter()
        .filter(|p| p.as_str() != LENDER)
        .map(|p| (p.as_str(), selected.iter().copied().filter(|&f| features[f].party == *p).collect::<Vec<_>>()))
        .filter(|(_, fs)| !fs.is_empty())
        .collect();
    members.push((LENDER, selected.iter().copied().filter(|&f| features[f].party == LENDER).collect()));
    let column = |f: usize| -> Vec<f64> {
        train.iter().map(|&i| binned[f].woe_of_initial[initial[f].assign[i] as usize]).collect()
    };
    let label: Vec<f64> = train.iter().map(|&i| f64::from(u8::from(!study.labels()[i]))).collect();
    let layout = Layout {
        rows: train.len(),
        columns: members
            .iter()
            .enumerate()
            .map(|(i, (_, fs))| fs.len() + usize::from(i + 1 == members.len()))
            .collect(),
    };
    let mut session = [0u8; 16];
    OsRng.fill_bytes(&mut session);
    let session = SessionId(session);
    let deals = gram::deal(&layout, &mut OsRng)?;
    let mut people = Vec::with_capacity(members.len());
    for (i, (_, fs)) in members.iter().enumerate() {
        let mut cols: Vec<Vec<f64>> = fs.iter().map(|&f| column(f)).collect();
        if i + 1 == members.len() {
            cols.push(label.clone());
        }
        people.push(Participant::new(
            session,
            &layout,
            i as PartyId,
            Columns::encode(train.len(), &cols)?,
            &mut OsRng,
        )?);
    }
    let keys: BTreeMap<PartyId, [u8; 32]> =
        people.iter().enumerate().map(|(i, p)| (i as PartyId, p.public_key())).collect();
    // Each key goes to the coordinator; the list goes out to everyone.
    for (name, _) in &members {
        cost.role(name).sent += 32;
        cost.coordinator.received += 32;
    }
    for (name, _) in &members {
        cost.dealt(name, 32 * members.len());
    }
    for p in &mut people {
        p.set_keys(&keys)?;
    }
    for (deal, (name, _)) in deals.iter().zip(&members) {
        cost.dealt(name, deal.pairs.iter().map(|p| 36 + 8 * p.correction.len()).sum());
    }
    let mut mail: Vec<Sealed> = Vec::new();
    for (p, d) in people.iter().zip(&deals) {
        mail.extend(p.masked(d)?);
    }
    for m in &mail {
        cost.relay(members[m.from as usize].0, members[m.to as usize].0, m.bytes.len());
    }
    let lender = (members.len() - 1) as PartyId;
    let mut contributions = Vec::with_capacity(people.len());
    for (i, (p, d)) in people.iter().zip(&deals).enumerate() {
        let inbox: Vec<Sealed> = mail.iter().filter(|m| m.to == i as PartyId).cloned().collect();
        let c = p.contribution(d, &inbox, lender)?;
        if c.from != lender {
            cost.relay(members[i].0, LENDER, c.bytes.len());
        }
        contributions.push(c);
    }
    let g = people[lender as usize].assemble(&contributions)?;
    cost.phases.push(("gram", started.elapsed()));

    let started = Instant::now();
    // Gram columns of the selected features, in `selected` order.
    let mut index = BTreeMap::new();
    for (i, (_, fs)) in members.iter().enumerate() {
        for (k, &f) in fs.iter().enumerate() {
            index.insert(f, layout.offset(i) + k);
        }
    }
    let columns: Vec<usize> = selected.iter().map(|f| index[f]).collect();
    let label_column = layout.size() - 1;
    let weights = fit_weights(&g, &columns, label_column, l2, progress)?;
    cost.phases.push(("weights", started.elapsed()));
    Ok(weights)
}

/// Fits the scorecard named `name` on the study's training rows: bins and
/// WoE per feature, selection by IV, weights (joint by default), points,
/// the base score, then cutoffs and bands from the training scores (approve
/// the better half, refer the next 20%, four bands by quartile).
/// `progress` sees each weight-fitting iteration.
pub fn fit(study: &Study, options: &FitOptions, name: &str, progress: &mut dyn FnMut(&Iteration)) -> Result<Fit> {
    let scale = &options.scale;
    for (setting, v) in [("pdo", scale.pdo), ("base odds", scale.base_odds)] {
        if !(v.is_finite() && v > 0.0) {
            return Err(Error::Setting { setting, message: format!("{v} is not a positive number") });
        }
    }
    if !scale.base_score.is_finite() {
        return Err(Error::Setting { setting: "base score", message: "must be a finite number".into() });
    }
    if !(options.l2.is_finite() && options.l2 >= 0.0) {
        return Err(Error::Setting { setting: "l2", message: format!("{} is not a non-negative number", options.l2) });
    }
    let factor = scale.pdo / std::f64::consts::LN_2;
    let train = study.train();
    let min_rows = ((train.len() as f64 * MIN_SHARE).ceil() as usize).max(1);
    let mut cost = Cost::default();
    let started = Instant::now();
    let initial: Vec<Initial> = study.features().iter().map(|f| initial_bins(&f.column, train, min_rows)).collect();
    let counts = counts(study, &initial, &mut cost)?;
    let train_total =
        BinCounts { rows: train.len() as u64, bad: train.iter().filter(|&&i| study.labels()[i]).count() as u64 };

    let mut fits = Vec::new();
    let mut binned = Vec::new();
    for (f, feature) in study.features().iter().enumerate() {
        let (b, iv) = merge(&feature.column, &initial[f], &counts[f]);
        binned.push(b);
        fits.push(FeatureFit { name: feature.name.clone(), iv, selected: false, weight: 0.0 });
    }
    cost.phases.push(("binning", started.elapsed()));

    // Select by IV (at least the best feature).
    let best = fits.iter().enumerate().max_by(|a, b| a.1.iv.total_cmp(&b.1.iv)).map(|(i, _)| i);
    for (i, f) in fits.iter_mut().enumerate() {
        f.selected = f.iv >= MIN_IV || Some(i) == best;
    }
    let by_iv: Vec<usize> = (0..fits.len()).filter(|&f| fits[f].selected).collect();
    let prior = (train_total.good() as f64 / train_total.bad.max(1) as f64).ln();
    let (intercept, weights) = match options.weighting {
        Weighting::WoeNaive => {
            for &f in &by_iv {
                fits[f].weight = 1.0;
            }
            (prior, None)
        }
        Weighting::Joint => {
            let w = joint_weights(study, &initial, &binned, &by_iv, options.l2, &mut cost, progress)?;
            for (k, &f) in by_iv.iter().enumerate() {
                fits[f].selected = w.kept[k];
                fits[f].weight = w.weights[k];
            }
            (w.intercept, Some(w))
        }
    };

    let mut used = Vec::new();
    for (f, feature) in study.features().iter().enumerate().filter(|(f, _)| fits[*f].selected) {
        let (init, b) = (&initial[f], &binned[f]);
        let points: Vec<i64> = b.woe.iter().map(|w| (factor * fits[f].weight * w).round() as i64).collect();
        let groups = &b.groups;
        let order = &b.order;
        let n_ordered_groups = groups.iter().filter(|g| g.start < init.ordered).count();
        // Missing values score as their own bin, as the bin they joined, or
        // (never seen in training) as the worst bin.
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
        let (unit, range, categories, bins) = match &feature.column {
            Column::Numeric { values, decimals } => {
                let present = values.iter().flatten();
                let (min, max) = (present.clone().min().copied().unwrap_or(0), present.max().copied().unwrap_or(0));
                let unit = if *decimals == 0 { "value".to_string() } else { format!("value x 10^{decimals}") };
                let bins = ordered_groups
                    .enumerate()
                    .map(|(g, (group, &points))| file::Bin {
                        min: None,
                        max: (g + 1 < n_ordered_groups).then(|| (init.edges[group.end - 1] as i64).max(min)),
                        categories: None,
                        points,
                    })
                    .collect();
                (unit, Some([min, max]), None, bins)
            }
            Column::Categorical { categories, .. } => {
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
        used.push(file::Feature {
            name: feature.name.clone(),
            party: feature.party.clone(),
            unit,
            reason: None,
            range,
            categories,
            missing: file::Missing::Points(missing_points),
            bins,
        });
    }
    let parties: Vec<String> =
        study.parties().iter().filter(|p| used.iter().any(|f| &f.party == *p)).cloned().collect();

    let offset = scale.base_score - factor * scale.base_odds.ln();
    let base = (offset + factor * intercept).round() as i64;
    let how = match options.weighting {
        Weighting::Joint => format!(
            "Points = round({factor:.4} x weight x WoE) with logistic-regression weights fitted jointly (L2 {}); base {base} = offset + factor x intercept.",
            options.l2
        ),
        Weighting::WoeNaive => {
            format!("Points = round({factor:.4} x WoE); base {base} = offset + factor x ln(train good/bad).")
        }
    };

    // Cutoffs and bands from training-score quantiles, scored by the
    // reference of a provisional model with the same points.
    let mut file = file::Model {
        name: name.to_string(),
        version: "study".into(),
        description: format!("Fitted by `jointscore study` through the vertical binning protocol. {how}"),
        parties,
        base_points: base,
        features: used,
        knockouts: Vec::new(),
        cutoffs: file::Cutoffs { approve: 0, refer: 0 },
        bands: vec![file::Band { name: "all".into(), min_score: None, rate_tier: "-".into(), line_multiplier: 0 }],
        credit_line: None,
        reasons: Some(file::Reasons { count: 0 }),
        outputs: None,
    };
    let provisional = Model::from_file(&file)?;
    let train_scores = train
        .iter()
        .map(|&i| Ok(reference::evaluate(&provisional, &study.record(&provisional, i)?).score.unwrap_or(0)))
        .collect::<Result<Vec<i64>>>()?;
    let (cutoffs, bands) = decision(&train_scores);
    file.cutoffs = cutoffs;
    file.bands = bands;
    file.outputs = Some(file::Outputs { reveal: vec![Output::Decision, Output::Band, Output::Score] });
    Ok(Fit { model: Model::from_file(&file)?, features: fits, weights, cost })
}

/// Cutoffs and bands chosen from training-score quantiles: approve the
/// better half, refer the next 20%, four bands by quartile (fewer when
/// quartiles coincide).
fn decision(train_scores: &[i64]) -> (file::Cutoffs, Vec<file::Band>) {
    let mut s = train_scores.to_vec();
    s.sort_unstable();
    let q = |p: f64| s.get(((s.len().saturating_sub(1)) as f64 * p).round() as usize).copied().unwrap_or(0);
    let (approve, refer) = (q(0.5), q(0.3));
    let mut mins: Vec<i64> = [q(0.75), q(0.5), q(0.25)].to_vec();
    mins.dedup();
    let letter = |i: usize| char::from(b'A' + i as u8).to_string();
    let mut bands: Vec<file::Band> = mins
        .iter()
        .enumerate()
        .map(|(i, &m)| file::Band {
            name: letter(i),
            min_score: Some(m),
            rate_tier: format!("T{}", i + 1),
            line_multiplier: 0,
        })
        .collect();
    bands.push(file::Band { name: letter(mins.len()), min_score: None, rate_tier: "none".into(), line_multiplier: 0 });
    (file::Cutoffs { approve, refer: refer.min(approve) }, bands)
}

#[cfg(test)]
mod tests {
    use jointscore_circuits::{FeatureKind, Record};

    use super::*;
    use crate::data::{LoadOptions, PartySplit};

    /// `rows` generated rows: `risk` raises the bad rate, `safety` lowers
    /// it, `noise` does nothing; `region` is categorical with a risky
    /// category; a few `safety` cells are missing.
    fn generated(rows: usize) -> String {
        let mut s = String::from("risk,safety,noise,region,label\n");
        let mut x: u64 = 99;
        let mut next = || {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (x >> 33) as f64 / (1u64 << 31) as f64
        };
        for i in 0..rows {
            let (risk, safety, noise) = ((next() * 1000.0).round(), (next() * 50.0).round(), (next() * 10.0).round());
            let region = ["north", "south", "east \"x\""][(next() * 3.0) as usize];
            let p =
                0.05 + 0.5 * risk / 1000.0 + 0.3 * (1.0 - safety / 50.0) + if region == "south" { 0.1 } else { 0.0 };
            let label = if next() < p * 0.8 { "bad" } else { "good" };
            let safety = if i % 17 == 0 { String::new() } else { safety.to_string() };
            let region = region.replace('"', "\"\"");
            s.push_str(&format!("{risk},{safety},{noise},\"{region}\",{label}\n"));
        }
        s
    }

    fn study() -> Study {
        let options = LoadOptions {
            label: "label".into(),
            bad: "bad".into(),
            good: Some("good".into()),
            parties: "platform=risk,region;bank=safety".parse::<PartySplit>().unwrap(),
            test_fraction: 0.2,
            seed: 3,
        };
        Study::read(generated(2000).as_bytes(), &options).unwrap()
    }

    /// The model's score of a record that sets one feature and leaves the
    /// others at their first bin's lower end.
    fn score_with(m: &Model, feature: &str, value: i64) -> i64 {
        let mut inputs = serde_json::Map::new();
        for f in m.features() {
            let v = match &f.kind {
                FeatureKind::Integer { min, .. } => {
                    serde_json::Value::from(if f.name == feature { value } else { *min })
                }
                FeatureKind::Categorical { categories } => serde_json::Value::from(categories[0].clone()),
            };
            inputs.insert(f.name.clone(), v);
        }
        let record = Record::from_json(m, &serde_json::Value::Object(inputs)).unwrap();
        reference::evaluate(m, &record).score.unwrap()
    }

    #[test]
    fn the_fit_is_a_valid_model_whose_scores_follow_the_risk() {
        let study = study();
        let fit = fit(&study, &FitOptions::default(), "generated", &mut |_| {}).unwrap();
        let m = &fit.model;
        assert_eq!((m.name(), m.version()), ("generated", "study"));
        assert!(m.reveals(Output::Score) && m.reveals(Output::Decision) && !m.reveals(Output::CreditLine));
        // Written and read back: the same model.
        assert_eq!(Model::from_toml(&m.to_toml()).unwrap().id(), m.id());

        // The informative features are kept, the noise is not.
        let kept = |n: &str| fit.features.iter().find(|f| f.name == n).unwrap().selected;
        assert!(kept("risk") && kept("safety"), "{:?}", fit.features);
        assert!(!kept("noise"), "{:?}", fit.features);
        assert!(m.feature_index("noise").is_none());
        assert_eq!(m.parties(), ["platform", "bank"], "the lender holds only the dropped feature");

        // Points follow the WoE direction: more risk never scores higher,
        // more safety never lower, and both move the score.
        let risk: Vec<i64> = (0..=1000).step_by(50).map(|v| score_with(m, "risk", v)).collect();
        assert!(risk.windows(2).all(|w| w[0] >= w[1]), "{risk:?}");
        assert!(risk[0] > risk[risk.len() - 1], "{risk:?}");
        let safety: Vec<i64> = (0..=50).step_by(5).map(|v| score_with(m, "safety", v)).collect();
        assert!(safety.windows(2).all(|w| w[0] <= w[1]), "{safety:?}");
        assert!(safety[0] < safety[safety.len() - 1], "{safety:?}");

        // Cutoffs and bands come from the training scores, best band first.
        assert!(m.refer_at() <= m.approve_at());
        let mins: Vec<i64> = m.bands().iter().filter_map(|b| b.min_score).collect();
        assert!(mins.windows(2).all(|w| w[0] > w[1]) && !mins.is_empty(), "{mins:?}");
        let decided = |i: usize| study.record(m, i).map(|r| reference::evaluate(m, &r).score.unwrap_or(0));
        let approved = study.train().iter().filter(|&&i| decided(i).unwrap() >= m.approve_at()).count();
        assert!(approved * 2 >= study.train().len(), "the better half (ties included) is approved");
    }

    #[test]
    fn the_fit_is_deterministic_apart_from_the_protocol_randomness() {
        let study = study();
        let a = fit(&study, &FitOptions::default(), "x", &mut |_| {}).unwrap();
        let b = fit(&study, &FitOptions::default(), "x", &mut |_| {}).unwrap();
        assert_eq!(a.model.id(), b.model.id());
        assert_eq!(a.features, b.features);
        let options = FitOptions { scale: Scale { pdo: 40.0, ..Scale::default() }, ..FitOptions::default() };
        let other = fit(&study, &options, "x", &mut |_| {}).unwrap();
        assert_ne!(other.model.id(), a.model.id());
    }

    #[test]
    fn a_scale_that_is_not_positive_is_refused() {
        let options = FitOptions { scale: Scale { pdo: 0.0, ..Scale::default() }, ..FitOptions::default() };
        let e = fit(&study(), &options, "x", &mut |_| {}).unwrap_err();
        assert_eq!(e.to_string(), "pdo: 0 is not a positive number");
    }

    #[test]
    fn decision_bands_follow_the_quartiles() {
        let scores: Vec<i64> = (0..=100).collect();
        let (cutoffs, bands) = decision(&scores);
        assert_eq!((cutoffs.approve, cutoffs.refer), (50, 30));
        let mins: Vec<Option<i64>> = bands.iter().map(|b| b.min_score).collect();
        assert_eq!(mins, [Some(75), Some(50), Some(25), None]);
        assert_eq!(bands.iter().map(|b| b.name.as_str()).collect::<Vec<_>>(), ["A", "B", "C", "D"]);
        // Equal quartiles collapse into fewer bands.
        let (_, bands) = decision(&[7; 10]);
        assert_eq!(bands.len(), 2);
    }
}
