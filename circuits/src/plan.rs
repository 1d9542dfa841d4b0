//! The planner: a model becomes per-party contributions and a joint circuit.
//!
//! Two plans of the same model:
//!
//! * [`PlanKind::Pushdown`] — each party evaluates its own terms in the clear
//!   (its points, its local knock-outs, its share of cross-party knock-outs,
//!   the credit line for every band when it owns the line feature, and its
//!   reason-code candidates) and contributes only those, as base-4 digits of
//!   the smallest width their range allows. The coordinator clamps every
//!   contributed value to what the party's own data could produce, sums the
//!   partial scores, and evaluates cutoffs, bands, tiers, line selection,
//!   cross-party knock-outs and reason selection under TFHE.
//! * [`PlanKind::CoordinatorSide`] — parties send raw features (clamped in the
//!   circuit to their declared ranges) and everything runs under TFHE. Parties
//!   then learn nothing of the model beyond the features it reads.
//!
//! Both plans produce exactly [`reference::evaluate`]'s outputs; the outputs
//! the model's policy does not reveal are not computed at all.

use std::collections::BTreeSet;

use serde::Serialize;

use crate::circuit::{Builder, Circuit, CircuitStats, DIGIT_BASE, NOISE_MAX, Val, digits_for, to_digits};
use crate::error::{Error, Result};
use crate::model::{FeatureKind, Missing, Model, Output};
use crate::reference::{self, Bundle, Record, Verdict};

/// Which plan to build.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PlanKind {
    /// Parties compute their separable terms in the clear.
    Pushdown,
    /// Parties send raw features; everything runs under TFHE.
    CoordinatorSide,
}

/// One value a party contributes.
#[derive(Clone, Debug, Serialize)]
pub struct Slot {
    /// What the value is.
    pub what: String,
    /// Base-4 digits it is sent as.
    pub digits: usize,
    /// Largest honest value; the circuit clamps anything above.
    pub max: u64,
}

/// What one party computes and sends.
#[derive(Clone, Debug, Serialize)]
pub struct PartyPlan {
    /// Party name.
    pub name: String,
    /// Values contributed, in wire order.
    pub slots: Vec<Slot>,
}

impl PartyPlan {
    /// Number of encrypted blocks the party sends.
    pub fn blocks(&self) -> usize {
        self.slots.iter().map(|s| s.digits).sum()
    }
}

/// A compiled model: what each party contributes and the joint circuit.
#[derive(Clone, Debug)]
pub struct Plan {
    kind: PlanKind,
    model: Model,
    parties: Vec<PartyPlan>,
    circuit: Circuit,
    layout: Layout,
}

/// How party contributions and outputs are encoded.
#[derive(Clone, Debug)]
struct Layout {
    /// Points are counted in multiples of this.
    unit: i64,
    /// Score = offset + unit * T.
    offset: i64,
    /// Per party: digits of its partial score (pushdown).
    partial_digits: Vec<usize>,
    /// Bands with a line, in band order.
    line_bands: Vec<usize>,
    line_digits: usize,
    /// Distinct positive lost-point values, ascending; code = index + 1.
    lost_levels: Vec<i64>,
    code_digits: usize,
    /// Reason-id spaces: candidates name a feature by its position + 1 in
    /// one of these lists (0 = none). Pushdown: one per party, its own
    /// features, so a party can only ever name its own features.
    reason_sets: Vec<Vec<usize>>,
    /// Per party: cross-party knock-outs it holds a literal of.
    cross_rules: Vec<Vec<usize>>,
    /// Per party: whether it sends a local knock-out digit.
    local_knock: Vec<bool>,
    /// Per feature: digits of the raw encoding (coordinator-side).
    raw_digits: Vec<usize>,
}

impl Plan {
    /// Compiles a model.
    pub fn new(model: &Model, kind: PlanKind) -> Result<Plan> {
        let layout = Layout::new(model, kind)?;
        let mut b = Builder::new();
        let parties = party_plans(model, kind, &layout);
        match kind {
            PlanKind::Pushdown => pushdown(model, &layout, &mut b)?,
            PlanKind::CoordinatorSide => coordinator_side(model, &layout, &mut b)?,
        }
        let circuit = b.finish();
        let expected: usize = parties.iter().map(PartyPlan::blocks).sum();
        if circuit.input_count() != expected {
            return Err(Error::Internal(format!(
                "circuit reads {} blocks, parties send {expected}",
                circuit.input_count()
            )));
        }
        Ok(Plan { kind, model: model.clone(), parties, circuit, layout })
    }

    /// Which plan this is.
    pub fn kind(&self) -> PlanKind {
        self.kind
    }

    /// The model planned.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// Per-party contributions, in party order.
    pub fn parties(&self) -> &[PartyPlan] {
        &self.parties
    }

    /// The joint circuit.
    pub fn circuit(&self) -> &Circuit {
        &self.circuit
    }

    /// Static costs of the joint circuit.
    pub fn stats(&self) -> CircuitStats {
        self.circuit.stats()
    }

    /// Points are counted in multiples of this unit in the circuit.
    pub fn points_unit(&self) -> i64 {
        self.layout.unit
    }

    /// What `party` contributes for one subject: the clear computation on
    /// its own features, as base-4 digits in wire order. Only the party's own
    /// features of `record` are read.
    pub fn contribution(&self, party: usize, record: &Record) -> Result<Vec<u8>> {
        let m = &self.model;
        if party >= m.parties().len() {
            return Err(Error::UnknownParty(format!("#{party}")));
        }
        let l = &self.layout;
        let own: Vec<usize> = (0..m.features().len()).filter(|&f| m.features()[f].party == party).collect();
        let mut out = Vec::with_capacity(self.parties[party].blocks());
        match self.kind {
            PlanKind::Pushdown => {
                if l.partial_digits[party] > 0 {
                    let x: i64 = own
                        .iter()
                        .map(|&f| (reference::points(m, f, record.value(f)) - m.features()[f].worst_points()) / l.unit)
                        .sum();
                    out.extend(to_digits(x as u64, l.partial_digits[party]));
                }
                if l.local_knock[party] {
                    let fired = m
                        .knockouts()
                        .iter()
                        .filter(|k| rule_parties(m, k) == BTreeSet::from([party]))
                        .any(|k| k.when.iter().all(|c| reference::condition_holds(c, record.value(c.feature))));
                    out.push(u8::from(fired));
                }
                for &r in &l.cross_rules[party] {
                    let lit = m.knockouts()[r]
                        .when
                        .iter()
                        .filter(|c| m.features()[c.feature].party == party)
                        .all(|c| reference::condition_holds(c, record.value(c.feature)));
                    out.push(u8::from(lit));
                }
                if let Some(line) = m.credit_line().filter(|_| line_needed(m))
                    && m.features()[line.feature].party == party
                {
                    let v = record.value(line.feature).unwrap_or(0);
                    for &band in &l.line_bands {
                        out.extend(to_digits(reference::line_steps(m, band, v), l.line_digits));
                    }
                }
                if l.sends_reasons(m, party) {
                    let mut cands: Vec<(i64, usize)> = own
                        .iter()
                        .map(|&f| (m.features()[f].best_points() - reference::points(m, f, record.value(f)), f))
                        .filter(|&(lost, _)| lost > 0)
                        .collect();
                    cands.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
                    for slot in 0..m.reasons() {
                        let (code, id) = match cands.get(slot) {
                            Some(&(lost, f)) => (l.code(lost), l.local_id(party, f)),
                            None => (0, 0),
                        };
                        out.extend(to_digits(code, l.code_digits));
                        out.extend(to_digits(id, l.id_digits(party)));
                    }
                }
            }
            PlanKind::CoordinatorSide => {
                for &f in &own {
                    let feat = &m.features()[f];
                    let sentinel = i64::from(matches!(feat.missing, Missing::Points(_)));
                    let e = match record.value(f) {
                        None => 0,
                        Some(v) => v - feat.domain_min() + sentinel,
                    };
                    let top = (DIGIT_BASE.pow(l.raw_digits[f] as u32) - 1) as i64;
                    out.extend(to_digits(e.clamp(0, top) as u64, l.raw_digits[f]));
                }
            }
        }
        Ok(out)
    }

    /// Decodes the joint circuit's decrypted outputs (per output, per
    /// block, the decrypted parts) into a bundle.
    pub fn decode(&self, outputs: &[(String, Vec<Vec<u64>>)]) -> Result<Bundle> {
        let m = &self.model;
        let l = &self.layout;
        let bad = |what: &str| {
            Error::Fhe(format!(
                "decrypted {what} is out of range; was the bundle decrypted with the key it was made for?"
            ))
        };
        let mut bundle = Bundle::default();
        for (name, blocks) in outputs {
            let vals: Vec<u64> = blocks.iter().map(|parts| parts.iter().sum()).collect();
            let number = |vals: &[u64]| -> Result<u64> {
                vals.iter()
                    .rev()
                    .try_fold(0u64, |acc, &d| if d < DIGIT_BASE { Ok(acc * DIGIT_BASE + d) } else { Err(bad(name)) })
            };
            let single = vals.first().copied().ok_or_else(|| bad(name))?;
            match name.as_str() {
                "decision" => bundle.decision = Some(Verdict::from_code(single).ok_or_else(|| bad(name))?),
                "band" => {
                    let band =
                        usize::try_from(single).ok().filter(|&b| b < m.bands().len()).ok_or_else(|| bad(name))?;
                    bundle.band = Some(band);
                }
                "rate_tier" => {
                    let tier = match single {
                        0 => None,
                        t if (t as usize) <= m.bands().len() => Some(t as usize - 1),
                        _ => return Err(bad(name)),
                    };
                    bundle.rate_tier = Some(tier);
                }
                "credit_line" => {
                    let line = m.credit_line().ok_or_else(|| bad(name))?;
                    let steps = number(&vals)?;
                    if steps * line.granularity > line.cap {
                        return Err(bad(name));
                    }
                    bundle.credit_line = Some(steps * line.granularity);
                }
                "reasons" => {
                    // Ids are local to their set; an id naming no feature of
                    // its set (only a dishonest party can send one) is no
                    // reason at all.
                    let mut picked: Vec<Option<usize>> = vec![None; m.reasons()];
                    let mut at = 0;
                    for set in &l.reason_sets {
                        let n = digits_for(set.len() as u64);
                        let digits = vals.get(at..at + n).ok_or_else(|| bad(name))?;
                        at += n;
                        for (slot, pick) in picked.iter_mut().enumerate() {
                            let id =
                                digits.iter().rev().fold(0u64, |acc, &v| acc * DIGIT_BASE + ((v >> (2 * slot)) & 3));
                            if id > 0 && (id as usize) <= set.len() {
                                *pick = Some(set[id as usize - 1]);
                            }
                        }
                    }
                    if at != vals.len() || vals.iter().any(|&v| v > 15) {
                        return Err(bad(name));
                    }
                    bundle.reasons = Some(picked.into_iter().flatten().collect());
                }
                "score" => bundle.score = Some(l.offset + l.unit * number(&vals)? as i64),
                _ => return Err(Error::Internal(format!("unknown output `{name}`"))),
            }
        }
        Ok(bundle)
    }

    /// Runs the plan in the clear: each party's contribution, then the joint
    /// circuit on them. Equal to the reference restricted to the policy.
    pub fn eval_plain(&self, record: &Record) -> Result<Bundle> {
        let mut inputs = Vec::new();
        for p in 0..self.parties.len() {
            inputs.extend(self.contribution(p, record)?);
        }
        self.eval_contributions(&inputs)
    }

    /// Runs the joint circuit in the clear on contributed blocks (all
    /// parties, in party order), which need not come from honest parties.
    pub fn eval_contributions(&self, blocks: &[u8]) -> Result<Bundle> {
        if let Some(&b) = blocks.iter().find(|&&b| b > 3) {
            return Err(Error::Contribution {
                party: "*".into(),
                message: format!("block value {b} is not a base-4 digit"),
            });
        }
        let out = self.circuit.eval_plain(blocks)?;
        let out: Vec<(String, Vec<Vec<u64>>)> = out
            .into_iter()
            .map(|(n, d)| (n, d.into_iter().map(|p| p.into_iter().map(u64::from).collect()).collect()))
            .collect();
        self.decode(&out)
    }
}

/// The parties whose features a knock-out rule reads.
fn rule_parties(m: &Model, k: &crate::model::Knockout) -> BTreeSet<usize> {
    k.when.iter().map(|c| m.features()[c.feature].party).collect()
}

fn line_needed(m: &Model) -> bool {
    m.credit_line().is_some() && m.reveals(Output::CreditLine)
}

fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 { a.abs() } else { gcd(b, a % b) }
}

impl Layout {
    fn new(m: &Model, kind: PlanKind) -> Result<Layout> {
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
    fn id_digits(&self, set: usize) -> usize {
        digits_for(self.reason_sets[set].len() as u64)
    }

    /// Id of feature `f` in reason set `set` (0 if absent).
    fn local_id(&self, set: usize, f: usize) -> u64 {
        self.reason_sets[set].iter().position(|&x| x == f).map_or(0, |i| i as u64 + 1)
    }

    /// Whether party `p` sends reason candidates: reasons are revealed and it
    /// owns features to name.
    fn sends_reasons(&self, m: &Model, p: usize) -> bool {
        m.reveals(Output::Reasons) && !self.reason_sets.get(p).is_none_or(Vec::is_empty)
    }

    /// Largest lost-points code party `p`'s own features can produce.
    fn party_code_max(&self, m: &Model, p: usize) -> u64 {
        m.features()
            .iter()
            .filter(|f| f.party == p)
            .flat_map(|f| f.point_values().map(|pts| self.code(f.best_points() - pts)))
            .max()
            .unwrap_or(0)
    }

    /// Code of a positive lost-point value: its rank among all such values.
    fn code(&self, lost: i64) -> u64 {
        self.lost_levels.iter().position(|&l| l == lost).map_or(0, |i| i as u64 + 1)
    }

    /// Score threshold `score >= at`, in circuit units of T.
    fn threshold(&self, at: i64) -> i64 {
        (at - self.offset).div_euclid(self.unit) + i64::from((at - self.offset).rem_euclid(self.unit) != 0)
    }
}

/// Largest partial score (in units above the party's worst) a party's own
/// data can produce.
fn party_range(m: &Model, p: usize, unit: i64) -> i64 {
    m.features().iter().filter(|f| f.party == p).map(|f| (f.best_points() - f.worst_points()) / unit).sum()
}

/// Whether any revealed output depends on the decision.
fn needs_decision(m: &Model) -> bool {
    m.reveals(Output::Decision) || m.reveals(Output::RateTier) || line_needed(m)
}

fn needs_band(m: &Model) -> bool {
    m.reveals(Output::Band) || m.reveals(Output::RateTier) || line_needed(m)
}

fn party_plans(m: &Model, kind: PlanKind, l: &Layout) -> Vec<PartyPlan> {
    (0..m.parties().len())
        .map(|p| {
            let mut slots = Vec::new();
            match kind {
                PlanKind::Pushdown => {
                    if l.partial_digits[p] > 0 {
                        slots.push(Slot {
                            what: format!("partial score (units of {} points above the party's minimum)", l.unit),
                            digits: l.partial_digits[p],
                            max: party_range(m, p, l.unit) as u64,
                        });
                    }
                    if l.local_knock[p] {
                        slots.push(Slot { what: "local knock-out fired".into(), digits: 1, max: 1 });
                    }
                    for &r in &l.cross_rules[p] {
                        slots.push(Slot {
                            what: format!("share of knock-out {}", m.knockouts()[r].code),
                            digits: 1,
                            max: 1,
                        });
                    }
                    if let Some(line) = m.credit_line().filter(|_| line_needed(m))
                        && m.features()[line.feature].party == p
                    {
                        let fmax = feature_max(m, line.feature);
                        for &band in &l.line_bands {
                            slots.push(Slot {
                                what: format!(
                                    "credit line if band {} (steps of {})",
                                    m.bands()[band].name,
                                    line.granularity
                                ),
                                digits: l.line_digits,
                                max: reference::line_steps(m, band, fmax),
                            });
                        }
                    }
                    if l.sends_reasons(m, p) {
                        for slot in 0..m.reasons() {
                            slots.push(Slot {
                                what: format!("reason candidate {} lost-points code", slot + 1),
                                digits: l.code_digits,
                                max: l.lost_levels.len() as u64,
                            });
                            slots.push(Slot {
                                what: format!("reason candidate {} feature id", slot + 1),
                                digits: l.id_digits(p),
                                max: l.reason_sets[p].len() as u64,
                            });
                        }
                    }
                }
                PlanKind::CoordinatorSide => {
                    for (f, feat) in m.features().iter().enumerate().filter(|(_, f)| f.party == p) {
                        let sentinel = u64::from(matches!(feat.missing, Missing::Points(_)));
                        slots.push(Slot {
                            what: format!("raw {}", feat.name),
                            digits: l.raw_digits[f],
                            max: feat.span() + sentinel,
                        });
                    }
                }
            }
            PartyPlan { name: m.parties()[p].clone(), slots }
        })
        .collect()
}

fn feature_max(m: &Model, f: usize) -> i64 {
    match m.features()[f].kind {
        FeatureKind::Integer { max, .. } => max,
        FeatureKind::Categorical { ref categories } => categories.len() as i64 - 1,
    }
}

/// A reason candidate: lost-points code digits (at most `code_max`, a
/// bound the circuit enforces) and feature-id digits in reason set `set`.
struct Candidate {
    set: usize,
    code_max: u64,
    code: Vec<Val>,
    id: Vec<Val>,
}

/// What both plans hand to the shared joint circuit.
struct Joint {
    /// Base-4 columns of T (the score in units above the minimum); a column
    /// may exceed 3.
    score_cols: Vec<Val>,
    score_max: u64,
    /// Any of these non-zero means a knock-out fired.
    knock_terms: Vec<Val>,
    /// Credit line in steps, per line band (in layout order).
    line_cands: Vec<Vec<Val>>,
    /// Clamp the selected line to this many steps (pushdown), if below the
    /// width's maximum.
    line_clamp: Option<u64>,
    /// Reason candidates grouped by tie-break order: groups in order, slots
    /// in order within a group.
    reason_groups: Vec<Vec<Candidate>>,
}

fn pushdown(m: &Model, l: &Layout, b: &mut Builder) -> Result<()> {
    // Inputs first, party by party, in the order `contribution` writes them.
    struct PartyInputs {
        partial: Vec<Val>,
        knock: Option<Val>,
        literals: Vec<(usize, Val)>,
        lines: Vec<Vec<Val>>,
        reasons: Vec<Candidate>,
    }
    let mut inputs = Vec::new();
    for p in 0..m.parties().len() {
        let partial = b.input_digits(l.partial_digits[p]);
        let knock = l.local_knock[p].then(|| b.input(3));
        let literals = l.cross_rules[p].iter().map(|&r| (r, b.input(3))).collect();
        let owns_line = m.credit_line().is_some_and(|line| line_needed(m) && m.features()[line.feature].party == p);
        let lines =
            if owns_line { l.line_bands.iter().map(|_| b.input_digits(l.line_digits)).collect() } else { Vec::new() };
        let mut reasons = Vec::new();
        if l.sends_reasons(m, p) {
            for _ in 0..m.reasons() {
                let code = b.input_digits(l.code_digits);
                let id = b.input_digits(l.id_digits(p));
                reasons.push(Candidate { set: p, code, code_max: l.party_code_max(m, p), id });
            }
        }
        inputs.push(PartyInputs { partial, knock, literals, lines, reasons });
    }

    // Clamp each partial to what the party's data can produce, then add
    // column by column (no carries yet).
    b.phase("clamp partial scores");
    let mut clamped = Vec::new();
    let mut score_max = 0u64;
    for (p, pi) in inputs.iter().enumerate() {
        let r = party_range(m, p, l.unit) as u64;
        score_max += r;
        clamped.push(clamp_digits(b, &pi.partial, r)?);
    }
    let score_cols = add_numbers(b, &clamped)?;

    // Knock-outs: local digits count as fired when non-zero; a cross-party
    // rule fires when every party's literal is non-zero.
    b.phase("knock-outs");
    let mut knock_terms: Vec<Val> = inputs.iter().filter_map(|pi| pi.knock).collect();
    for r in 0..m.knockouts().len() {
        let lits: Vec<Val> =
            inputs.iter().flat_map(|pi| pi.literals.iter().filter(|(x, _)| *x == r).map(|(_, v)| *v)).collect();
        if lits.is_empty() {
            continue;
        }
        // A single literal already means "fired when non-zero".
        let mut acc = lits[0];
        for &lit in &lits[1..] {
            acc = b.lut_multi(&[acc, lit], |a| u8::from(a[0] != 0 && a[1] != 0))?;
        }
        knock_terms.push(acc);
    }

    // Credit line candidates; clamp once after selection when every band
    // shares one bound, else each candidate before it.
    b.phase("credit line");
    let (mut line_cands, mut line_clamp) = (Vec::new(), None);
    if let Some(line) = m.credit_line().filter(|_| line_needed(m)) {
        let fmax = feature_max(m, line.feature);
        let bounds: Vec<u64> = l.line_bands.iter().map(|&band| reference::line_steps(m, band, fmax)).collect();
        let owner = &inputs[m.features()[line.feature].party];
        let top = DIGIT_BASE.pow(l.line_digits as u32) - 1;
        if bounds.windows(2).all(|w| w[0] == w[1]) {
            line_cands = owner.lines.clone();
            line_clamp = bounds.first().copied().filter(|&bound| bound < top);
        } else {
            for (cand, &bound) in owner.lines.iter().zip(&bounds) {
                line_cands.push(clamp_digits(b, cand, bound)?);
            }
        }
    }

    // A party cannot claim more lost points than its own features can lose:
    // one-digit codes are clamped inside the comparisons, wider ones here.
    b.phase("reasons");
    let mut reason_groups = Vec::new();
    for pi in inputs {
        let mut group = Vec::new();
        for mut cand in pi.reasons {
            if cand.code.len() > 1 {
                cand.code = clamp_digits(b, &cand.code, cand.code_max)?;
            }
            group.push(cand);
        }
        if !group.is_empty() {
            reason_groups.push(group);
        }
    }
    joint(m, l, b, Joint { score_cols, score_max, knock_terms, line_cands, line_clamp, reason_groups })
}

fn coordinator_side(m: &Model, l: &Layout, b: &mut Builder) -> Result<()> {
    // Raw inputs, party by party, feature order within a party.
    let mut raw: Vec<Vec<Val>> = vec![Vec::new(); m.features().len()];
    for p in 0..m.parties().len() {
        for f in (0..m.features().len()).filter(|&f| m.features()[f].party == p) {
            raw[f] = b.input_digits(l.raw_digits[f]);
        }
    }
    // Each feature becomes a level index: how many of its cut points the
    // encoded value reaches. Everything but the line is a function of it.
    b.phase("raw features: levels, points, conditions, codes");
    let mut per_feature_units: Vec<Vec<Val>> = Vec::new();
    let mut cond_bits: Vec<Vec<Val>> = m.knockouts().iter().map(|_| Vec::new()).collect();
    let mut reason_groups = Vec::new();
    let mut score_max = 0u64;
    let mut order: Vec<usize> = (0..m.features().len()).collect();
    order.sort_by_key(|&f| (m.features()[f].party, f));
    for &f in &order {
        let feat = &m.features()[f];
        let sentinel = i64::from(matches!(feat.missing, Missing::Points(_)));
        let top = feat.span() as i64 + sentinel;
        let encode = |v: i64| v - feat.domain_min() + sentinel;
        let mut bin_cuts: BTreeSet<i64> = BTreeSet::new();
        if sentinel == 1 {
            bin_cuts.insert(1);
        }
        for bin in &feat.bins {
            for &(lo, hi) in &bin.ranges {
                bin_cuts.extend([encode(lo), encode(hi + 1)]);
            }
        }
        let conditions: Vec<(usize, &crate::model::Condition)> = m
            .knockouts()
            .iter()
            .enumerate()
            .flat_map(|(r, k)| k.when.iter().filter(|c| c.feature == f).map(move |c| (r, c)))
            .collect();
        let mut cond_cuts: Vec<BTreeSet<i64>> = conditions
            .iter()
            .map(|(_, c)| {
                let mut s: BTreeSet<i64> = [encode(c.value), encode(c.value + 1)].into();
                if sentinel == 1 {
                    s.insert(1);
                }
                s
            })
            .collect();
        let all: BTreeSet<i64> = bin_cuts.iter().chain(cond_cuts.iter().flatten()).copied().collect();
        // One level index serves everything when the cut points fit a block;
        // otherwise the bins get one and each condition its own.
        let shared = all.iter().filter(|&&c| c > 0 && c <= top).count() <= 15;
        if shared {
            bin_cuts = all;
            cond_cuts.iter_mut().for_each(|c| c.clone_from(&bin_cuts));
        }
        let rep = |cuts: &[i64], lv: u8| -> Option<i64> {
            let e = if lv == 0 { 0 } else { cuts[usize::from(lv) - 1] };
            (e >= sentinel).then(|| (e - sentinel + feat.domain_min()).min(feature_max(m, f)))
        };
        let level_of = |b: &mut Builder, cuts: &BTreeSet<i64>| -> Result<(Val, Vec<i64>)> {
            let cuts: Vec<i64> = cuts.iter().copied().filter(|&c| c > 0 && c <= top).collect();
            if cuts.len() > 15 {
                return Err(Error::Plan(format!("feature `{}` has more than 15 bins", feat.name)));
            }
            let bits = cuts.iter().map(|&c| columns_ge(b, &raw[f], c)).collect::<Result<Vec<_>>>()?;
            let level = b.sum(&bits, 0)?;
            Ok((b.clean(level)?, cuts))
        };
        let (level, cuts) = level_of(b, &bin_cuts)?;
        let rep_bin = |lv: u8| rep(&cuts, lv);
        let units = |lv: u8| ((reference::points(m, f, rep_bin(lv)) - feat.worst_points()) / l.unit) as u64;
        let umax = ((feat.best_points() - feat.worst_points()) / l.unit) as u64;
        score_max += umax;
        let digits = (0..digits_for(umax))
            .map(|i| b.lut(level, |lv| to_digits(units(lv), i + 1)[i]))
            .collect::<Result<Vec<_>>>()?;
        per_feature_units.push(digits);
        for ((r, c), ccuts) in conditions.iter().zip(&cond_cuts) {
            let (clevel, ccuts) = if shared { (level, cuts.clone()) } else { level_of(b, ccuts)? };
            let bit = b.lut(clevel, |lv| u8::from(reference::condition_holds(c, rep(&ccuts, lv))))?;
            cond_bits[*r].push(bit);
        }
        if m.reveals(Output::Reasons) {
            let code = (0..l.code_digits)
                .map(|i| {
                    b.lut(level, |lv| {
                        to_digits(l.code(feat.best_points() - reference::points(m, f, rep_bin(lv))), l.code_digits)[i]
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            // A feature that lost nothing carries id 0 ("none").
            let n = l.id_digits(0);
            let id = (0..n)
                .map(|i| {
                    b.lut(level, |lv| {
                        let lost = feat.best_points() - reference::points(m, f, rep_bin(lv));
                        to_digits(if lost > 0 { l.local_id(0, f) } else { 0 }, n)[i]
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            let code_max = feat.point_values().map(|p| l.code(feat.best_points() - p)).max().unwrap_or(0);
            reason_groups.push(vec![Candidate { set: 0, code, code_max, id }]);
        }
    }
    b.phase("add feature points");
    let score_cols = add_numbers(b, &per_feature_units)?;
    b.phase("knock-outs");

    let knock_terms = if needs_decision(m) {
        cond_bits
            .iter()
            .map(|bits| {
                let n = bits.len() as i16;
                let s = b.sum(bits, 0)?;
                b.lut(s, |x| u8::from(i16::from(x) == n))
            })
            .collect::<Result<Vec<_>>>()?
    } else {
        Vec::new()
    };

    let mut line_cands = Vec::new();
    b.phase("credit line");
    if let Some(line) = m.credit_line().filter(|_| line_needed(m)) {
        let feat = &m.features()[line.feature];
        for &band in &l.line_bands {
            line_cands.push(
                b.radix_line(
                    &raw[line.feature],
                    feat.span(),
                    feat.domain_min() as u64,
                    u64::from(m.bands()[band].line_multiplier),
                    line.divisor
                        .checked_mul(line.granularity)
                        .ok_or_else(|| Error::Plan("line divisor x granularity overflows".into()))?,
                    line.cap / line.granularity,
                    l.line_digits,
                ),
            );
        }
    }
    joint(m, l, b, Joint { score_cols, score_max, knock_terms, line_cands, line_clamp: None, reason_groups })
}

/// The joint part shared by both plans.
fn joint(m: &Model, l: &Layout, b: &mut Builder, j: Joint) -> Result<()> {
    b.phase("cutoffs and bands");
    let score_cols = fit_columns(b, &j.score_cols)?;
    let ge = |b: &mut Builder, at: i64| columns_ge(b, &score_cols, l.threshold(at));

    let band = if needs_band(m) {
        let mut bits = Vec::new();
        for band in m.bands() {
            if let Some(min) = band.min_score {
                bits.push(ge(b, min)?);
            }
        }
        // Band 0 is the best: the number of thresholds not reached.
        let reached = b.sum(&bits, 0)?;
        let n = bits.len() as u8;
        Some(b.lut(reached, move |x| n - x)?)
    } else {
        None
    };
    let decision = if needs_decision(m) {
        b.phase("knock-outs");
        let knocked = if j.knock_terms.is_empty() {
            Val::Const(0)
        } else {
            let s = nonzero_sum(b, &j.knock_terms)?;
            b.lut(s, |x| u8::from(x != 0))?
        };
        b.phase("cutoffs and bands");
        let refer = ge(b, m.refer_at())?;
        let approve = ge(b, m.approve_at())?;
        b.phase("decision");
        let passes = b.linear(&[(refer, 1), (approve, 1)], 0)?;
        Some(b.lut_multi(&[passes, knocked], |a| if a[1] != 0 { 0 } else { a[0] })?)
    } else {
        None
    };

    if let Some(d) = decision.filter(|_| m.reveals(Output::Decision)) {
        b.output("decision", vec![vec![d]]);
    }
    if let Some(band) = band.filter(|_| m.reveals(Output::Band)) {
        b.output("band", vec![vec![band]]);
    }
    if let (Some(band), Some(d)) = (band, decision) {
        if m.reveals(Output::RateTier) {
            b.phase("rate tier");
            let tier = by_band(b, band, d, |band, offered| if offered { band + 1 } else { 0 })?;
            b.output("rate_tier", vec![vec![tier]]);
        }
        if line_needed(m) {
            b.phase("credit line");
            let digits = line(b, l, band, d, &j)?;
            b.output("credit_line", digits.into_iter().map(|v| vec![v]).collect());
        }
    }
    if m.reveals(Output::Reasons) && m.reasons() > 0 {
        b.phase("reasons");
        let blocks = reasons(b, m, l, &j.reason_groups)?;
        b.output("reasons", blocks);
    }
    if m.reveals(Output::Score) {
        b.phase("score");
        let n = digits_for(j.score_max);
        let mut digits = normalize(b, &score_cols)?;
        digits.resize(n, Val::Const(0));
        b.output("score", digits.into_iter().take(n).map(|v| vec![v]).collect());
    }
    Ok(())
}

/// Selects the line candidate of the band (none when declined or the band
/// offers no line), clamped when the plan requires.
fn line(b: &mut Builder, l: &Layout, band: Val, decision: Val, j: &Joint) -> Result<Vec<Val>> {
    let bands = l.line_bands.clone();
    // 0: no line; i + 1: the i-th line band.
    let pick = by_band(b, band, decision, move |band, offered| {
        if !offered {
            return 0;
        }
        bands.iter().position(|&x| x == usize::from(band)).map_or(0, |i| i as u8 + 1)
    })?;
    let mut selected = Vec::new();
    for d in 0..l.line_digits {
        let mut terms = Vec::new();
        for (i, cand) in j.line_cands.iter().enumerate() {
            let me = i as u8 + 1;
            let t = match b.lut_multi(&[pick, cand[d]], |a| if a[0] == me { a[1] } else { 0 }) {
                Ok(t) => t,
                // Too many line bands to pack with a digit: one indicator each.
                Err(Error::Plan(_)) => {
                    let is_me = b.lut(pick, |x| u8::from(x == me))?;
                    b.lut_multi(&[is_me, cand[d]], |a| if a[0] != 0 { a[1] } else { 0 })?
                }
                Err(e) => return Err(e),
            };
            terms.push(t);
        }
        selected.push(b.bounded_sum(&terms, 3)?);
    }
    let Some(bound) = j.line_clamp else { return Ok(selected) };
    let over = {
        let cols = fit_columns(b, &selected)?;
        columns_ge(b, &cols, bound as i64 + 1)?
    };
    let cap = to_digits(bound, l.line_digits);
    selected
        .iter()
        .zip(cap)
        .map(|(&d, c)| {
            let d = b.clean(d)?;
            b.lut_multi(&[d, over], move |a| if a[1] != 0 { c } else { a[0] })
        })
        .collect()
}

/// `f(band, offered)` where offered means the decision is not decline: one
/// lookup on (band, decision) when they share a block, else through an
/// "offered" bit.
fn by_band(b: &mut Builder, band: Val, decision: Val, f: impl Fn(u8, bool) -> u8 + Clone) -> Result<Val> {
    let g = f.clone();
    match b.lut_multi(&[band, decision], move |a| g(a[0], a[1] != 0)) {
        Err(Error::Plan(_)) => {
            let offered = b.lut(decision, |x| u8::from(x != 0))?;
            b.lut_multi(&[band, offered], move |a| f(a[0], a[1] != 0))
        }
        other => other,
    }
}

/// Top-k (k <= 2) reason selection over groups of pre-ordered candidates.
///
/// Groups are in tie-break order; within a group, slot 0 outranks slot 1 by
/// construction (a party sorts its own candidates), so only heads compete
/// for first place, and second place goes to the best of the remaining heads
/// or the winner's second. The selection is well defined for any inputs:
/// exactly one candidate is first and at most one is second.
///
/// Output: per reason set, id digits, each block holding `first + 4 *
/// second` (only one set holds the first, only one the second).
fn reasons(b: &mut Builder, m: &Model, l: &Layout, groups: &[Vec<Candidate>]) -> Result<Vec<Vec<Val>>> {
    let n = groups.len();
    let k = m.reasons();
    // beats[p][q]: head of p outranks head of q.
    let mut head_beats = vec![vec![Val::Const(0); n]; n];
    for p in 0..n {
        for q in p + 1..n {
            let (hp, hq) = (&groups[p][0], &groups[q][0]);
            let bit = outranks(b, (&hp.code, hp.code_max), (&hq.code, hq.code_max), true)?;
            head_beats[p][q] = bit;
            head_beats[q][p] = b.linear(&[(bit, -1)], 1)?;
        }
    }
    // rank of each head among heads: how many heads outrank it, counted up
    // to 2 (only first and second matter).
    let ranks: Vec<Val> = (0..n)
        .map(|p| {
            let terms: Vec<Val> = (0..n).filter(|&q| q != p).map(|q| head_beats[q][p]).collect();
            saturating_count(b, &terms, 2)
        })
        .collect::<Result<_>>()?;

    // Per reason set, per id digit: the terms of that output block.
    let mut blocks: Vec<Vec<Vec<Val>>> = (0..l.reason_sets.len()).map(|s| vec![Vec::new(); l.id_digits(s)]).collect();
    let finish = |b: &mut Builder, blocks: Vec<Vec<Vec<Val>>>, bound: u8| -> Result<Vec<Vec<Val>>> {
        blocks.into_iter().flatten().map(|t| b.bounded_parts(&t, bound)).collect()
    };
    if k == 1 {
        for (p, g) in groups.iter().enumerate() {
            for (d, &digit) in g[0].id.iter().enumerate() {
                let t = b.lut_multi(&[ranks[p], digit], |a| if a[0] == 0 { a[1] } else { 0 })?;
                blocks[g[0].set][d].push(t);
            }
        }
        return finish(b, blocks, 3);
    }

    // second_wins[p]: p's head is first and p's second outranks every other
    // head (ties go to the earlier group).
    let mut second_wins = vec![Val::Const(0); n];
    for p in 0..n {
        let Some(second) = groups[p].get(1) else { continue };
        let mut terms = Vec::new();
        for q in (0..n).filter(|&q| q != p) {
            let hq = &groups[q][0];
            terms.push(outranks(b, (&second.code, second.code_max), (&hq.code, hq.code_max), p < q)?);
            terms.push(head_beats[p][q]);
        }
        second_wins[p] = all_set(b, &terms)?;
    }
    let any_second = b.bounded_sum(&second_wins, 1)?;
    for (p, g) in groups.iter().enumerate() {
        // 0: first; 1: second; 2: neither.
        let role = b.lut_multi(&[ranks[p], any_second], |a| match (a[0], a[1]) {
            (0, _) => 0,
            (1, 0) => 1,
            _ => 2,
        })?;
        for (d, &digit) in g[0].id.iter().enumerate() {
            let t = b.lut_multi(&[role, digit], |a| match a[0] {
                0 => a[1],
                1 => 4 * a[1],
                _ => 0,
            })?;
            blocks[g[0].set][d].push(t);
        }
        if let Some(second) = g.get(1) {
            for (d, &digit) in second.id.iter().enumerate() {
                let t = b.lut_multi(&[second_wins[p], digit], |a| if a[0] != 0 { 4 * a[1] } else { 0 })?;
                blocks[second.set][d].push(t);
            }
        }
    }
    finish(b, blocks, 15)
}

/// Whether code `a` outranks code `c` (digits, least significant first,
/// each with the bound its sender must respect): greater, or equal when
/// `ties` says `a` wins ties. One-digit codes are clamped to their bounds in
/// the same lookup; wider codes must arrive clamped.
fn outranks(b: &mut Builder, a: (&[Val], u64), c: (&[Val], u64), ties: bool) -> Result<Val> {
    let ((a, amax), (c, cmax)) = (a, c);
    let (amax, cmax) = (amax.min(u64::from(u8::MAX)) as u8, cmax.min(u64::from(u8::MAX)) as u8);
    let clamp_low = a.len() == 1;
    let mut acc = b.lut_multi(&[a[0], c[0]], move |x| {
        let (x0, y0) = if clamp_low { (x[0].min(amax), x[1].min(cmax)) } else { (x[0], x[1]) };
        u8::from(x0 > y0 || (ties && x0 == y0))
    })?;
    for i in 1..a.len() {
        // a[..=i] >= c[..=i]  <=>  a_i - c_i + acc >= 1
        let v = b.linear(&[(a[i], 1), (c[i], -1), (acc, 1)], 3)?;
        acc = b.lut(v, |x| u8::from(x >= 4))?;
    }
    Ok(acc)
}

/// Clamps a base-4 number to `bound`: identity when the width cannot exceed
/// it; one lookup per digit for narrow numbers; else a comparison and a
/// select per digit.
fn clamp_digits(b: &mut Builder, digits: &[Val], bound: u64) -> Result<Vec<Val>> {
    let top = DIGIT_BASE.pow(digits.len() as u32) - 1;
    if bound >= top {
        return Ok(digits.to_vec());
    }
    if digits.len() <= 2 {
        return (0..digits.len())
            .map(|i| {
                let n = digits.len();
                b.lut_multi(digits, move |a| {
                    let v = a.iter().rev().fold(0u64, |acc, &d| acc * DIGIT_BASE + u64::from(d));
                    to_digits(v.min(bound), n)[i]
                })
            })
            .collect();
    }
    let over = columns_ge(b, digits, bound as i64 + 1)?;
    let cap = to_digits(bound, digits.len());
    digits.iter().zip(cap).map(|(&d, c)| b.lut_multi(&[d, over], move |a| if a[1] != 0 { c } else { a[0] })).collect()
}

/// `[sum(4^i * cols[i]) >= t]`, by running the carries of `T + (4^n - t)`:
/// one lookup per column, the first shared among thresholds with the same
/// low digit. Columns must be at most 9 with noise at most 4 (see
/// [`fit_columns`]).
fn columns_ge(b: &mut Builder, cols: &[Val], t: i64) -> Result<Val> {
    let max: u64 = cols.iter().enumerate().map(|(i, &c)| u64::from(b.max(c)) << (2 * i)).sum();
    if t <= 0 {
        return Ok(Val::Const(1));
    }
    if t as u64 > max {
        return Ok(Val::Const(0));
    }
    let n = digits_for(max).max(cols.len());
    let u = to_digits(DIGIT_BASE.pow(n as u32) - t as u64, n);
    let col = |i: usize| cols.get(i).copied().unwrap_or(Val::Const(0));
    let mut carry = Val::Const(0);
    for i in 0..n {
        let v = b.linear(&[(col(i), 1), (carry, 1)], i16::from(u[i]))?;
        if (i + 1..n).all(|j| matches!(col(j), Val::Const(_))) {
            // The rest is constant: finish the carry chain in this lookup.
            let rest: Vec<u8> = (i + 1..n).map(|j| if let Val::Const(c) = col(j) { c + u[j] } else { 0 }).collect();
            return b.lut(v, move |x| {
                let mut c = x / 4;
                for r in &rest {
                    c = (r + c) / 4;
                }
                u8::from(c >= 1)
            });
        }
        carry = b.lut(v, |x| x / 4)?;
    }
    Err(Error::Internal("carry chain ended without a result".into()))
}

/// Columns fit for [`columns_ge`]: each at most 9 with noise at most 4;
/// normalised when too big, cleaned when too noisy.
fn fit_columns(b: &mut Builder, cols: &[Val]) -> Result<Vec<Val>> {
    if cols.iter().any(|&c| b.max(c) > 9) {
        return normalize(b, cols);
    }
    cols.iter().map(|&c| if b.noise(c) > NOISE_MAX - 1 { b.clean(c) } else { Ok(c) }).collect()
}

/// Propagates carries: clean base-4 digits of `sum(4^i * cols[i])`.
fn normalize(b: &mut Builder, cols: &[Val]) -> Result<Vec<Val>> {
    let mut out = Vec::new();
    let mut carry = Val::Const(0);
    let mut i = 0;
    while i < cols.len() || carry != Val::Const(0) {
        let c = cols.get(i).copied().unwrap_or(Val::Const(0));
        let fits = u32::from(b.max(c)) + u32::from(b.max(carry)) <= 15 && b.noise(c) + b.noise(carry) <= NOISE_MAX;
        if fits {
            let v = b.sum(&[c, carry], 0)?;
            out.push(b.lut(v, |x| x % 4)?);
            carry = b.lut(v, |x| x / 4)?;
        } else {
            // Split the column first: its own carry goes straight on.
            let (lo, hi) = (b.lut(c, |x| x % 4)?, b.lut(c, |x| x / 4)?);
            let carry_in = b.clean(carry)?;
            let v = b.sum(&[lo, carry_in], 0)?;
            out.push(b.lut(v, |x| x % 4)?);
            let up = b.lut(v, |x| x / 4)?;
            carry = b.sum(&[up, hi], 0)?;
        }
        i += 1;
        if i > 64 {
            return Err(Error::Internal("carry propagation does not terminate".into()));
        }
    }
    Ok(out)
}

/// Adds base-4 numbers column by column, normalising when a column would
/// grow past 9.
fn add_numbers(b: &mut Builder, numbers: &[Vec<Val>]) -> Result<Vec<Val>> {
    let mut acc: Vec<Val> = Vec::new();
    for num in numbers {
        let fits = num.iter().enumerate().all(|(i, &d)| {
            let a = acc.get(i).map_or(0, |&v| b.max(v));
            a + b.max(d) <= 9
        });
        if !fits {
            acc = normalize(b, &acc)?;
        }
        for (i, &d) in num.iter().enumerate() {
            if acc.len() <= i {
                acc.push(Val::Const(0));
            }
            acc[i] = b.sum(&[acc[i], d], 0)?;
        }
    }
    Ok(acc)
}

/// `min(sum(bits), cap)` of values in `0..=1`, in chunks that fit a block
/// and the noise budget; no lookup when the sum cannot exceed `cap`.
fn saturating_count(b: &mut Builder, bits: &[Val], cap: u8) -> Result<Val> {
    let mut acc: Vec<Val> = Vec::new();
    let (mut max, mut noise) = (0u32, 0u32);
    for &t in bits {
        let (tm, tn) = (u32::from(b.max(t)), u32::from(b.noise(t)));
        if !acc.is_empty() && (max + tm > 15 || noise + tn > u32::from(NOISE_MAX)) {
            let s = b.sum(&acc, 0)?;
            acc = vec![b.lut(s, move |x| x.min(cap))?];
            (max, noise) = (u32::from(cap), 1);
        }
        acc.push(t);
        (max, noise) = (max + tm, noise + tn);
    }
    let s = b.sum(&acc, 0)?;
    if max > u32::from(cap) { b.lut(s, move |x| x.min(cap)) } else { Ok(s) }
}

/// Whether every one of `bits` (values in `0..=1`) is 1.
fn all_set(b: &mut Builder, bits: &[Val]) -> Result<Val> {
    let mut chunks: Vec<Val> = Vec::new();
    let mut acc: Vec<Val> = Vec::new();
    let mut noise = 0;
    for &t in bits {
        if !acc.is_empty() && (acc.len() == 15 || noise + b.noise(t) > NOISE_MAX) {
            let n = acc.len() as u8;
            let s = b.sum(&acc, 0)?;
            chunks.push(b.lut(s, move |x| u8::from(x == n))?);
            acc.clear();
            noise = 0;
        }
        noise += b.noise(t);
        acc.push(t);
    }
    let n = acc.len() as u8;
    let s = b.sum(&acc, 0)?;
    let last = b.lut(s, move |x| u8::from(x == n))?;
    if chunks.is_empty() {
        return Ok(last);
    }
    chunks.push(last);
    all_set(b, &chunks)
}

/// A block that is non-zero exactly when one of `terms` is.
fn nonzero_sum(b: &mut Builder, terms: &[Val]) -> Result<Val> {
    let mut acc: Vec<Val> = Vec::new();
    for &t in terms {
        let total: u32 = acc.iter().map(|&v| u32::from(b.max(v))).sum::<u32>() + u32::from(b.max(t));
        if total > 15 {
            let s = b.sum(&acc, 0)?;
            acc = vec![b.lut(s, |x| u8::from(x != 0))?];
        }
        acc.push(t);
    }
    b.sum(&acc, 0)
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;
    use crate::reference::RawValue;

    /// A record with values drawn around and beyond each feature's range.
    pub(crate) fn arb_record(m: &Model) -> impl Strategy<Value = Record> + use<> {
        let m = m.clone();
        let per_feature: Vec<BoxedStrategy<Option<RawValue>>> = m
            .features()
            .iter()
            .map(|f| {
                let missing_ok = !matches!(f.missing, Missing::Reject);
                let value: BoxedStrategy<RawValue> = match &f.kind {
                    FeatureKind::Integer { min, max } => {
                        let (min, max) = (*min, *max);
                        let edges: Vec<i64> = f
                            .bins
                            .iter()
                            .flat_map(|b| b.ranges.iter().flat_map(|&(lo, hi)| [lo, hi, lo - 1, hi + 1]))
                            .collect();
                        prop_oneof![
                            (min..=max).prop_map(RawValue::Int),
                            proptest::sample::select(edges).prop_map(RawValue::Int),
                            (min - 1000..min.saturating_add(1)).prop_map(RawValue::Int),
                            (max..max.saturating_add(100_000)).prop_map(RawValue::Int),
                        ]
                        .boxed()
                    }
                    FeatureKind::Categorical { categories } => {
                        proptest::sample::select(categories.clone()).prop_map(RawValue::Category).boxed()
                    }
                };
                if missing_ok { proptest::option::weighted(0.8, value).boxed() } else { value.prop_map(Some).boxed() }
            })
            .collect();
        per_feature.prop_map(move |vals| {
            let raw: BTreeMap<usize, Option<RawValue>> = vals.into_iter().enumerate().collect();
            Record::from_raw(&m, raw).unwrap_or_else(|e| panic!("generated record must be valid: {e}"))
        })
    }

    /// A second model exercising what the shipped one does not: categorical
    /// features, imputation, a single reason, every output revealed, line
    /// bounds that differ by band, three-digit partials and multi-digit
    /// lost-point codes.
    pub(crate) const ALT_MODEL: &str = r#"
format = "jointscore.model.v1"
name = "alt"
version = "1"
parties = ["shop", "bank"]
base_points = 0

[[features]]
name = "region"
party = "shop"
unit = "region"
categories = ["eu", "us", "apac", "latam", "mena"]
missing = { points = 3 }
bins = [
  { categories = ["eu", "us"], points = 20 },
  { categories = ["apac"], points = 11 },
  { categories = ["latam", "mena"], points = 0 },
]

[[features]]
name = "sales"
party = "shop"
unit = "k"
range = [10, 400]
missing = { impute = 10 }
bins = [{ max = 49, points = 0 }, { max = 199, points = 7 }, { points = 19 }]

[[features]]
name = "debt"
party = "bank"
unit = "k"
range = [0, 1000]
missing = "reject"
bins = [{ max = 99, points = 30 }, { max = 499, points = 12 }, { points = 0 }]

[[knockouts]]
code = "K1"
when = ["region == mena", "debt >= 500"]

[[knockouts]]
code = "K2"
when = ["sales < 20"]

[cutoffs]
approve = 40
refer = 25

[[bands]]
name = "A"
min_score = 55
rate_tier = "a"
line_multiplier = 4

[[bands]]
name = "B"
min_score = 40
rate_tier = "b"
line_multiplier = 2

[[bands]]
name = "C"
min_score = 25
rate_tier = "c"
line_multiplier = 1

[[bands]]
name = "D"
min_score = 10
rate_tier = "d"

[[bands]]
name = "E"
rate_tier = "e"

[credit_line]
formula = "band_multiplier * sales / 3"
cap = 500
granularity = 10
unit = "k"

[reasons]
count = 1

[outputs]
reveal = ["decision", "band", "rate_tier", "credit_line", "reasons", "score"]
"#;

    pub(crate) fn alt_model() -> Model {
        Model::from_toml(ALT_MODEL).unwrap_or_else(|e| panic!("alt model: {e}"))
    }

    /// A random valid model as TOML: 1-6 parties, 0-4 features each
    /// (integer or categorical, every missing treatment), 1-8 bands,
    /// knock-outs across parties, an optional line, 0-2 reasons, any policy.
    pub(crate) fn arb_model() -> impl Strategy<Value = Model> {
        (any::<u64>(), 1usize..=6).prop_filter_map("model rejected by the validator", |(seed, parties)| {
            use std::fmt::Write;
            let mut s = seed;
            let mut next = move |n: u64| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                (s >> 33) % n.max(1)
            };
            let mut t = String::from("format = \"jointscore.model.v1\"\nname = \"fuzz\"\nversion = \"1\"\n");
            let names: Vec<String> = (0..parties).map(|i| format!("p{i}")).collect();
            writeln!(t, "parties = {:?}\nbase_points = {}", names, next(100) as i64 - 50).ok()?;
            let unit = [1, 5, 10][next(3) as usize] as i64;
            let mut ints: Vec<(String, i64, i64, bool)> = Vec::new();
            let mut cats: Vec<(String, usize)> = Vec::new();
            let mut nfeat = 0;
            for party in &names {
                for _ in 0..next(5) {
                    let name = format!("f{nfeat}");
                    nfeat += 1;
                    let pts = |next: &mut dyn FnMut(u64) -> u64| (next(9) as i64 - 2) * unit;
                    let missing = match next(3) {
                        0 => "\"reject\"".to_string(),
                        1 => format!("{{ points = {} }}", pts(&mut next)),
                        _ => String::new(),
                    };
                    if next(5) == 0 {
                        let n = 1 + next(6) as usize;
                        let categories: Vec<String> = (0..n).map(|c| format!("c{c}")).collect();
                        let mut groups: Vec<Vec<String>> = vec![Vec::new(); 1 + next(n as u64) as usize];
                        for (i, c) in categories.iter().enumerate() {
                            let g = if i < groups.len() { i } else { next(groups.len() as u64) as usize };
                            groups[g].push(c.clone());
                        }
                        let missing = if missing.is_empty() { format!("{{ impute = \"c{}\" }}", next(n as u64)) } else { missing };
                        writeln!(t, "[[features]]\nname = \"{name}\"\nparty = \"{party}\"\nunit = \"u\"\ncategories = {categories:?}\nmissing = {missing}\nbins = [").ok()?;
                        for g in groups {
                            writeln!(t, "  {{ categories = {g:?}, points = {} }},", pts(&mut next)).ok()?;
                        }
                        t.push_str("]\n");
                        cats.push((name, n));
                    } else {
                        let min = next(101) as i64 - 50;
                        let max = min + next(2000) as i64;
                        let scored_missing = missing.starts_with('{');
                        let missing = if missing.is_empty() { format!("{{ impute = {} }}", min + next((max - min + 1) as u64) as i64) } else { missing };
                        writeln!(t, "[[features]]\nname = \"{name}\"\nparty = \"{party}\"\nunit = \"u\"\nrange = [{min}, {max}]\nmissing = {missing}\nbins = [").ok()?;
                        let mut cuts: Vec<i64> = (0..next(5)).map(|_| min + 1 + next((max - min).max(1) as u64) as i64).filter(|&c| c <= max).collect();
                        cuts.sort();
                        cuts.dedup();
                        for c in &cuts {
                            writeln!(t, "  {{ max = {}, points = {} }},", c - 1, pts(&mut next)).ok()?;
                        }
                        writeln!(t, "  {{ points = {} }},\n]", pts(&mut next)).ok()?;
                        ints.push((name, min, max, scored_missing));
                    }
                }
            }
            let all: Vec<String> = ints.iter().map(|f| f.0.clone()).chain(cats.iter().map(|c| c.0.clone())).collect();
            for r in 0..next(9) {
                let mut when = Vec::new();
                for _ in 0..1 + next(2) {
                    if all.is_empty() {
                        break;
                    }
                    let f = &all[next(all.len() as u64) as usize];
                    if let Some((_, min, max, _)) = ints.iter().find(|x| &x.0 == f) {
                        let op = ["<", "<=", ">", ">=", "==", "!="][next(6) as usize];
                        when.push(format!("{f} {op} {}", min - 5 + next((max - min + 11) as u64) as i64));
                    } else if let Some((_, n)) = cats.iter().find(|x| &x.0 == f) {
                        when.push(format!("{f} {} c{}", ["==", "!="][next(2) as usize], next(*n as u64)));
                    }
                }
                if !when.is_empty() {
                    writeln!(t, "[[knockouts]]\ncode = \"K{r}\"\nwhen = {when:?}").ok()?;
                }
            }
            let lo = -150 + next(100) as i64;
            let refer = lo + next(200) as i64;
            writeln!(t, "[cutoffs]\napprove = {}\nrefer = {refer}", refer + next(60) as i64).ok()?;
            let line_feature = ints.iter().find(|f| f.1 >= 0 && !f.3).map(|f| f.0.clone());
            let nb = 1 + next(8) as i64;
            let mut score = lo + 250;
            for band in 0..nb {
                let mult = if line_feature.is_some() { next(5) } else { 0 };
                let min = if band + 1 == nb { String::new() } else { format!("min_score = {score}\n") };
                writeln!(t, "[[bands]]\nname = \"B{band}\"\n{min}rate_tier = \"T{band}\"\nline_multiplier = {mult}").ok()?;
                score -= 1 + next(60) as i64;
            }
            let reasons = next(3);
            writeln!(t, "[reasons]\ncount = {reasons}").ok()?;
            let mut outs = vec!["decision", "band", "rate_tier", "score"];
            if let Some(f) = &line_feature {
                let g = 1 + next(10);
                writeln!(t, "[credit_line]\nformula = \"band_multiplier * {f} / {}\"\ncap = {}\ngranularity = {g}\nunit = \"k\"", 1 + next(30), g * (1 + next(80))).ok()?;
                outs.push("credit_line");
            }
            if reasons > 0 {
                outs.push("reasons");
            }
            let reveal: Vec<&str> = outs.iter().copied().filter(|_| next(3) > 0).collect();
            let reveal = if reveal.is_empty() { vec!["decision"] } else { reveal };
            writeln!(t, "[outputs]\nreveal = {reveal:?}").ok()?;
            Model::from_toml(&t).ok()
        })
    }

    fn all_outputs(m: Model) -> Model {
        m.with_reveal(Output::ALL).unwrap()
    }

    /// Golden vector: what each party sends for examples/seller.json under
    /// the pushdown plan, worked by hand (see the comments). A change here is
    /// a change of the wire contract between parties and coordinator.
    #[test]
    fn golden_pushdown_contributions() {
        let m = Model::cross_border_seller();
        let plan = Plan::new(&m, PlanKind::Pushdown).unwrap();
        let seller: serde_json::Value = serde_json::from_str(include_str!("../../examples/seller.json")).unwrap();
        let record = Record::from_json(&m, &seller).unwrap();
        let platform: [u8; 19] = [
            2, 2, // partial: 5 features x 10 points = 50 = 10 units -> digits 2, 2
            0, // no local knock-out (months_active 40 >= 6)
            0, // refund_rate_bp 650 is not > 1500
            0, 3, 3, // band A line: min(60, 3 * 1400 / 60 = 70) = 60 steps
            2, 3, 2, // band B: 2 * 1400 / 60 = 46 steps
            3, 1, 1, // band C: 1400 / 60 = 23 steps
            1, 1, 0, // reason 1: lost 5 (code 1), gmv_12m_k (own id 1)
            1, 2, 0, // reason 2: lost 5 (code 1), gmv_trend_pct (own id 2)
        ];
        let logistics: [u8; 6] = [2, 1, 1, 1, 1, 2]; // 30 points = 6 units; on_time (1), turnover (2)
        let bank: [u8; 10] = [
            3, 1, // 10 + 5 + 5 + 15 = 35 points = 7 units
            0, 0, // no violations; late_repayments 1 < 2
            2, 2, 0, // reason 1: lost 10 (code 2), late_repayments_12m (own id 2)
            2, 3, 0, // reason 2: lost 10 (code 2), outstanding_debt_k (own id 3)
        ];
        assert_eq!(plan.contribution(0, &record).unwrap(), platform);
        assert_eq!(plan.contribution(1, &record).unwrap(), logistics);
        assert_eq!(plan.contribution(2, &record).unwrap(), bank);
        assert_eq!(plan.stats().lookups, 59);
    }

    #[test]
    fn shipped_model_plans_within_budget() {
        let m = Model::cross_border_seller();
        let plan = Plan::new(&m, PlanKind::Pushdown).unwrap();
        let stats = plan.stats();
        assert!(stats.lookups <= 80, "pushdown uses {} bootstraps", stats.lookups);
        let cs = Plan::new(&m, PlanKind::CoordinatorSide).unwrap();
        assert!(cs.stats().lookups > stats.lookups);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]

        #[test]
        fn pushdown_plain_equals_reference(record in arb_record(&Model::cross_border_seller())) {
            for m in [Model::cross_border_seller(), all_outputs(Model::cross_border_seller())] {
                let plan = Plan::new(&m, PlanKind::Pushdown).unwrap();
                let want = reference::evaluate(&m, &record).restricted(&m);
                prop_assert_eq!(plan.eval_plain(&record).unwrap(), want);
            }
        }

        /// Any output policy: only the revealed outputs come back, and they
        /// equal the reference.
        #[test]
        fn every_output_policy_equals_reference(
            record in arb_record(&Model::cross_border_seller()),
            mask in 1u8..64,
        ) {
            let m = Model::cross_border_seller()
                .with_reveal(Output::ALL.into_iter().enumerate().filter(|(i, _)| mask & (1 << i) != 0).map(|(_, o)| o))
                .unwrap();
            for kind in [PlanKind::Pushdown, PlanKind::CoordinatorSide] {
                let plan = Plan::new(&m, kind).unwrap();
                prop_assert_eq!(plan.eval_plain(&record).unwrap(), reference::evaluate(&m, &record).restricted(&m));
            }
        }

        #[test]
        fn alt_model_plans_equal_reference(record in arb_record(&alt_model())) {
            let m = alt_model();
            for kind in [PlanKind::Pushdown, PlanKind::CoordinatorSide] {
                let plan = Plan::new(&m, kind).unwrap();
                prop_assert_eq!(plan.eval_plain(&record).unwrap(), reference::evaluate(&m, &record).restricted(&m));
            }
        }

        #[test]
        fn alt_model_arbitrary_contributions_stay_in_bounds(seed in proptest::collection::vec(0u8..4, 97)) {
            let m = alt_model();
            let plan = Plan::new(&m, PlanKind::Pushdown).unwrap();
            let blocks: Vec<u8> = seed.iter().cycle().take(plan.circuit().input_count()).copied().collect();
            let b = plan.eval_contributions(&blocks).unwrap();
            prop_assert!((0..=69).contains(&b.score.unwrap()));
            // Each band's line is clamped to what sales of 400k could give.
            let bound = [530, 260, 130, 0, 0][b.band.unwrap()];
            prop_assert!(b.credit_line.unwrap() <= bound);
            prop_assert!(b.reasons.unwrap().len() <= 1);
        }

        #[test]
        fn coordinator_side_plain_equals_reference(record in arb_record(&Model::cross_border_seller())) {
            let m = all_outputs(Model::cross_border_seller());
            let plan = Plan::new(&m, PlanKind::CoordinatorSide).unwrap();
            let want = reference::evaluate(&m, &record).restricted(&m);
            prop_assert_eq!(plan.eval_plain(&record).unwrap(), want);
        }

        /// Whatever a party sends, the joint circuit stays inside every bound
        /// the encrypted run relies on, and its result is one a party could
        /// have caused by lying about its own data only within its range.
        #[test]
        fn arbitrary_contributions_stay_in_bounds(seed in proptest::collection::vec(0u8..4, 200)) {
            let m = all_outputs(Model::cross_border_seller());
            let plan = Plan::new(&m, PlanKind::Pushdown).unwrap();
            let n = plan.circuit().input_count();
            let blocks: Vec<u8> = seed.iter().cycle().take(n).copied().collect();
            let bundle = plan.eval_contributions(&blocks).unwrap();
            let score = bundle.score.unwrap();
            let lo = m.base_points() + m.features().iter().map(|f| f.worst_points()).sum::<i64>();
            let hi = m.base_points() + m.features().iter().map(|f| f.best_points()).sum::<i64>();
            prop_assert!(lo <= score && score <= hi);
            prop_assert!(bundle.credit_line.unwrap() <= m.credit_line().unwrap().cap);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1500))]

        /// Random valid models: both plans build and equal the reference on
        /// random records, and the pushdown circuit stays within its bounds
        /// on arbitrary contributions.
        #[test]
        fn random_models_plan_and_equal_reference(
            (m, records) in arb_model().prop_flat_map(|m| {
                let records = proptest::collection::vec(arb_record(&m), 4);
                (Just(m), records)
            }),
            junk in proptest::collection::vec(0u8..4, 64),
        ) {
            for kind in [PlanKind::Pushdown, PlanKind::CoordinatorSide] {
                let plan = match Plan::new(&m, kind) {
                    Ok(plan) => plan,
                    Err(e) => return Err(TestCaseError::fail(format!("{kind:?}: {e}"))),
                };
                for record in &records {
                    prop_assert_eq!(plan.eval_plain(record).unwrap(), reference::evaluate(&m, record).restricted(&m));
                }
                if kind == PlanKind::Pushdown {
                    let blocks: Vec<u8> = junk.iter().cycle().take(plan.circuit().input_count()).copied().collect();
                    prop_assert!(plan.eval_contributions(&blocks).is_ok());
                }
            }
        }
    }
}
