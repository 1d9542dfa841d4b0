//! How a plan encodes party contributions and outputs ([`Layout`]), and the
//! facts about a model that decide it: which outputs need a score, a band or
//! a decision, and which parties each knock-out rule reads.

use std::collections::BTreeSet;

use super::PlanKind;
use crate::circuit::digits_for;
use crate::error::Result;
use crate::model::{FeatureKind, Knockout, Missing, Model, Output};

/// How party contributions and outputs are encoded.
#[derive(Clone, Debug)]
pub(super) struct Layout {
    /// Points are counted in multiples of this.
    pub(super) unit: i64,
    /// Score = offset + unit * T.
    pub(super) offset: i64,
    /// Per party: digits of its partial score (pushdown).
    pub(super) partial_digits: Vec<usize>,
    /// Bands with a line, in band order.
    pub(super) line_bands: Vec<usize>,
    pub(super) line_digits: usize,
    /// Distinct positive lost-point values, ascending; code = index + 1.
    pub(super) lost_levels: Vec<i64>,
    pub(super) code_digits: usize,
    /// Reason-id spaces: candidates name a feature by its position + 1 in
    /// one of these lists (0 = none). Pushdown: one per party, its own
    /// features, so a party can only ever name its own features.
    pub(super) reason_sets: Vec<Vec<usize>>,
    /// Per party: cross-party knock-outs it holds a literal of.
    pub(super) cross_rules: Vec<Vec<usize>>,
    /// Per party: whether it sends a local knock-out digit.
    pub(super) local_knock: Vec<bool>,
    /// Per feature: digits of the raw encoding (coordinator-side).
    pub(super) raw_digits: Vec<usize>,
}

impl Layout {
    pub(super) fn new(m: &Model, kind: PlanKind) -> Result<Layout> {
        let unit =
            m.features().iter().flat_map(|f| f.point_values().map(move |p| p - f.worst_points())).fold(0, gcd).max(1);
        let offset = m.base_points() + m.features().iter().map(|f| f.worst_points()).sum::<i64>();
        // Parties send partial scores only when a revealed output needs them.
        let needs_score = needs_decision(m) || needs_band(m) || m.reveals(Output::Score);
        let partial_digits = (0..m.parties().len())
            .map(|p| {
                let r = party_range(m, p, unit);
                if r == 0 || !needs_score { 0 } else { digits_for(r as u64) }
            })
            .collect();
        let line_bands: Vec<usize> = if line_needed(m) {
            (0..m.bands().len()).filter(|&b| m.bands()[b].line_multiplier > 0).collect()
        } else {
            Vec::new()
        };
        let line_digits = match m.credit_line() {
            Some(line) => digits_for(line.cap / line.granularity),
            None => 0,
        };
        let lost_levels: Vec<i64> = m
            .features()
            .iter()
            .flat_map(|f| f.point_values().map(move |p| f.best_points() - p))
            .filter(|&l| l > 0)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let code_digits = digits_for(lost_levels.len() as u64);
        let reason_sets = match kind {
            PlanKind::Pushdown => (0..m.parties().len())
                .map(|p| (0..m.features().len()).filter(|&f| m.features()[f].party == p).collect())
                .collect(),
            PlanKind::CoordinatorSide => vec![(0..m.features().len()).collect()],
            PlanKind::Monitor => return Err(super::monitor_kind()),
        };
        let mut cross_rules = vec![Vec::new(); m.parties().len()];
        let mut local_knock = vec![false; m.parties().len()];
        if kind == PlanKind::Pushdown && needs_decision(m) {
            for (r, k) in m.knockouts().iter().enumerate() {
                let parties = rule_parties(m, k);
                if parties.len() == 1 {
                    for p in parties {
                        local_knock[p] = true;
                    }
                } else {
                    for p in parties {
                        cross_rules[p].push(r);
                    }
                }
            }
        }
        let raw_digits = m
            .features()
            .iter()
            .map(|f| digits_for(f.span() + u64::from(matches!(f.missing, Missing::Points(_)))))
            .collect();
        Ok(Layout {
            unit,
            offset,
            partial_digits,
            line_bands,
            line_digits,
            lost_levels,
            code_digits,
            reason_sets,
            cross_rules,
            local_knock,
            raw_digits,
        })
    }

    /// Digits of an id in reason set `set`.
    pub(super) fn id_digits(&self, set: usize) -> usize {
        digits_for(self.reason_sets[set].len() as u64)
    }

    /// Id of feature `f` in reason set `set` (0 if absent).
    pub(super) fn local_id(&self, set: usize, f: usize) -> u64 {
        self.reason_sets[set].iter().position(|&x| x == f).map_or(0, |i| i as u64 + 1)
    }

    /// Whether party `p` sends reason candidates: reasons are revealed and it
    /// owns features to name.
    pub(super) fn sends_reasons(&self, m: &Model, p: usize) -> bool {
        m.reveals(Output::Reasons) && !self.reason_sets.get(p).is_none_or(Vec::is_empty)
    }

    /// Largest lost-points code party `p`'s own features can produce.
    pub(super) fn party_code_max(&self, m: &Model, p: usize) -> u64 {
        m.features()
            .iter()
            .filter(|f| f.party == p)
            .flat_map(|f| f.point_values().map(|pts| self.code(f.best_points() - pts)))
            .max()
            .unwrap_or(0)
    }

    /// Code of a positive lost-point value: its rank among all such values.
    pub(super) fn code(&self, lost: i64) -> u64 {
        self.lost_levels.iter().position(|&l| l == lost).map_or(0, |i| i as u64 + 1)
    }

    /// Score threshold `score >= at`, in circuit units of T.
    pub(super) fn threshold(&self, at: i64) -> i64 {
        (at - self.offset).div_euclid(self.unit) + i64::from((at - self.offset).rem_euclid(self.unit) != 0)
    }
}

/// The parties whose features a knock-out rule reads.
pub(super) fn rule_parties(m: &Model, k: &Knockout) -> BTreeSet<usize> {
    k.when.iter().map(|c| m.features()[c.feature].party).collect()
}

pub(super) fn line_needed(m: &Model) -> bool {
    m.credit_line().is_some() && m.reveals(Output::CreditLine)
}

pub(super) fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 { a.abs() } else { gcd(b, a % b) }
}

/// Largest partial score (in units above the party's worst) a party's own
/// data can produce.
pub(super) fn party_range(m: &Model, p: usize, unit: i64) -> i64 {
    m.features().iter().filter(|f| f.party == p).map(|f| (f.best_points() - f.worst_points()) / unit).sum()
}

/// Whether any revealed output depends on the decision.
pub(super) fn needs_decision(m: &Model) -> bool {
    m.reveals(Output::Decision) || m.reveals(Output::RateTier) || line_needed(m)
}

pub(super) fn needs_band(m: &Model) -> bool {
    m.reveals(Output::Band) || m.reveals(Output::RateTier) || line_needed(m)
}

pub(super) fn feature_max(m: &Model, f: usize) -> i64 {
    match m.features()[f].kind {
        FeatureKind::Integer { max, .. } => max,
        FeatureKind::Categorical { ref categories } => categories.len() as i64 - 1,
    }
}
