//! The joint part of the circuit that both plans share: cutoffs, bands,
//! decision, rate tier, line selection, reason selection and the score,
//! from what each plan's inputs reduce to ([`Joint`]).

use super::layout::{Layout, line_needed, needs_band, needs_decision};
use crate::circuit::gadgets::{all_set, columns_ge, fit_columns, nonzero_sum, normalize, outranks, saturating_count};
use crate::circuit::{Builder, Val, digits_for, to_digits};
use crate::error::{Error, Result};
use crate::model::{Model, Output};

/// A reason candidate: lost-points code digits (at most `code_max`, a
/// bound the circuit enforces) and feature-id digits in reason set `set`.
pub(super) struct Candidate {
    pub(super) set: usize,
    pub(super) code_max: u64,
    pub(super) code: Vec<Val>,
    pub(super) id: Vec<Val>,
}

/// What both plans hand to the shared joint circuit.
pub(super) struct Joint {
    /// Base-4 columns of T (the score in units above the minimum); a column
    /// may exceed 3.
    pub(super) score_cols: Vec<Val>,
    pub(super) score_max: u64,
    /// Any of these non-zero means a knock-out fired.
    pub(super) knock_terms: Vec<Val>,
    /// Credit line in steps, per line band (in layout order).
    pub(super) line_cands: Vec<Vec<Val>>,
    /// Clamp the selected line to this many steps (pushdown), if below the
    /// width's maximum.
    pub(super) line_clamp: Option<u64>,
    /// Reason candidates grouped by tie-break order: groups in order, slots
    /// in order within a group.
    pub(super) reason_groups: Vec<Vec<Candidate>>,
}

/// The joint part shared by both plans.
pub(super) fn joint(m: &Model, l: &Layout, b: &mut Builder, j: Joint) -> Result<()> {
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
