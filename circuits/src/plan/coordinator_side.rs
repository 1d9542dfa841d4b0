//! The coordinator-side plan: parties send raw features, clamped in the
//! circuit to their declared ranges, and every term of the model runs under
//! TFHE. Parties learn nothing of the model beyond the features it reads.

use std::collections::BTreeSet;

use super::Slot;
use super::joint::{Candidate, Joint, joint};
use super::layout::{Layout, feature_max, line_needed, needs_decision};
use crate::circuit::gadgets::{add_numbers, columns_ge};
use crate::circuit::{Builder, DIGIT_BASE, Val, digits_for, to_digits};
use crate::error::{Error, Result};
use crate::model::{Condition, Missing, Model, Output};
use crate::reference::{self, Record};

/// The values party `p` sends under the coordinator-side plan: its raw
/// features, in feature order.
pub(super) fn slots(m: &Model, l: &Layout, p: usize) -> Vec<Slot> {
    let mut slots = Vec::new();
    for (f, feat) in m.features().iter().enumerate().filter(|(_, f)| f.party == p) {
        let sentinel = u64::from(matches!(feat.missing, Missing::Points(_)));
        slots.push(Slot { what: format!("raw {}", feat.name), digits: l.raw_digits[f], max: feat.span() + sentinel });
    }
    slots
}

/// What a party sends for `record` under the coordinator-side plan: each
/// of its features (`own`) encoded and clamped to its slot's width,
/// appended to `out`.
pub(super) fn contribution(m: &Model, l: &Layout, own: &[usize], record: &Record, out: &mut Vec<u8>) {
    for &f in own {
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

/// The coordinator-side plan's circuit: every term of the model computed
/// under TFHE from the raw features, then the [`joint`] part.
pub(super) fn circuit(m: &Model, l: &Layout, b: &mut Builder) -> Result<()> {
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
        let conditions: Vec<(usize, &Condition)> = m
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
