//! The pushdown plan: each party evaluates its own terms in the clear and
//! sends them as base-4 digits; the coordinator clamps each value to what
//! the party's own data could produce before the joint part.
//!
//! The three functions here define one wire contract and must agree: the
//! slots a party sends ([`slots`]), what it puts in them
//! ([`contribution`]), and the order the circuit reads them in ([`circuit`]).

use std::collections::BTreeSet;

use super::Slot;
use super::joint::{Candidate, Joint, joint};
use super::layout::{Layout, feature_max, line_needed, party_range, rule_parties};
use crate::circuit::gadgets::{add_numbers, clamp_digits};
use crate::circuit::{Builder, DIGIT_BASE, Val, to_digits};
use crate::error::Result;
use crate::model::Model;
use crate::reference::{self, Record};

/// The values party `p` sends under the pushdown plan, in wire order.
pub(super) fn slots(m: &Model, l: &Layout, p: usize) -> Vec<Slot> {
    let mut slots = Vec::new();
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
        slots.push(Slot { what: format!("share of knock-out {}", m.knockouts()[r].code), digits: 1, max: 1 });
    }
    if let Some(line) = m.credit_line().filter(|_| line_needed(m))
        && m.features()[line.feature].party == p
    {
        let fmax = feature_max(m, line.feature);
        for &band in &l.line_bands {
            slots.push(Slot {
                what: format!("credit line if band {} (steps of {})", m.bands()[band].name, line.granularity),
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
    slots
}

/// What `party` sends for `record` under the pushdown plan: its own terms
/// (`own` are its features) evaluated in the clear, appended to `out` in
/// the order of [`slots`].
pub(super) fn contribution(m: &Model, l: &Layout, party: usize, own: &[usize], record: &Record, out: &mut Vec<u8>) {
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

/// The pushdown plan's circuit: reads every party's [`slots`], clamps them
/// and hands them to the [`joint`] part.
pub(super) fn circuit(m: &Model, l: &Layout, b: &mut Builder) -> Result<()> {
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
