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
//!
//! The module is laid out by responsibility: [`layout`] decides how values
//! are encoded, [`pushdown`] and [`coordinator_side`] define each plan's
//! wire contract (what a party sends and how the circuit reads it),
//! [`joint`] builds the circuit part both plans share, and the digit
//! gadgets they compose live beside the builder (`crate::circuit::gadgets`).

use serde::Serialize;

use self::layout::Layout;
use crate::circuit::{Builder, Circuit, CircuitStats, DIGIT_BASE, digits_for};
use crate::error::{Error, Result};
use crate::model::Model;
use crate::reference::{Bundle, Record, Verdict};

mod coordinator_side;
mod joint;
mod layout;
mod pushdown;
#[cfg(test)]
pub(crate) mod tests;

/// Which plan to build.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PlanKind {
    /// Parties compute their separable terms in the clear.
    Pushdown,
    /// Parties send raw features; everything runs under TFHE.
    CoordinatorSide,
    /// Not a model's plan: a monitor spec's alert plan
    /// ([`crate::alerts`]), asked for through the same requests. A model
    /// refuses it.
    Monitor,
}

impl PlanKind {
    /// Its name in configuration files, signed requests and messages:
    /// `pushdown` or `coordinator-side`.
    pub fn name(self) -> &'static str {
        match self {
            PlanKind::Pushdown => "pushdown",
            PlanKind::CoordinatorSide => "coordinator-side",
            PlanKind::Monitor => "monitor",
        }
    }

    /// The kind named `name` (as [`PlanKind::name`] spells it).
    pub fn parse(name: &str) -> Option<PlanKind> {
        [PlanKind::Pushdown, PlanKind::CoordinatorSide, PlanKind::Monitor].into_iter().find(|k| k.name() == name)
    }
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

impl Plan {
    /// Compiles a model.
    pub fn new(model: &Model, kind: PlanKind) -> Result<Plan> {
        if kind == PlanKind::Monitor {
            return Err(monitor_kind());
        }
        let layout = Layout::new(model, kind)?;
        let mut b = Builder::new();
        let parties = party_plans(model, kind, &layout);
        match kind {
            PlanKind::Pushdown => pushdown::circuit(model, &layout, &mut b)?,
            PlanKind::CoordinatorSide => coordinator_side::circuit(model, &layout, &mut b)?,
            PlanKind::Monitor => return Err(monitor_kind()),
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
            PlanKind::Pushdown => pushdown::contribution(m, l, party, &own, record, &mut out),
            PlanKind::CoordinatorSide => coordinator_side::contribution(m, l, &own, record, &mut out),
            PlanKind::Monitor => return Err(monitor_kind()),
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

/// A model asked to be planned as a monitor spec.
fn monitor_kind() -> Error {
    Error::Plan("a model is planned `pushdown` or `coordinator-side`; `monitor` plans a monitor spec".into())
}

/// Per party, in party order: its name and the slots it sends.
fn party_plans(m: &Model, kind: PlanKind, l: &Layout) -> Vec<PartyPlan> {
    (0..m.parties().len())
        .map(|p| {
            let slots = match kind {
                PlanKind::CoordinatorSide => coordinator_side::slots(m, l, p),
                // `Plan::new` refuses `Monitor` before any slot is laid out.
                PlanKind::Pushdown | PlanKind::Monitor => pushdown::slots(m, l, p),
            };
            PartyPlan { name: m.parties()[p].clone(), slots }
        })
        .collect()
}
