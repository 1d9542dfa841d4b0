//! Digit gadgets: small sub-circuits on base-4 numbers and bits that the
//! planner composes — comparisons against constants, clamps, carries,
//! additions and counts. They know nothing of models; each states the
//! bounds it needs of its inputs and keeps every block within
//! [`BLOCK_MAX`](super::BLOCK_MAX) and the noise budget.

use super::{Builder, DIGIT_BASE, NOISE_MAX, Val, digits_for, to_digits};
use crate::error::{Error, Result};

/// Whether code `a` outranks code `c` (digits, least significant first,
/// each with the bound its sender must respect): greater, or equal when
/// `ties` says `a` wins ties. One-digit codes are clamped to their bounds in
/// the same lookup; wider codes must arrive clamped.
pub(crate) fn outranks(b: &mut Builder, a: (&[Val], u64), c: (&[Val], u64), ties: bool) -> Result<Val> {
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
pub(crate) fn clamp_digits(b: &mut Builder, digits: &[Val], bound: u64) -> Result<Vec<Val>> {
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
pub(crate) fn columns_ge(b: &mut Builder, cols: &[Val], t: i64) -> Result<Val> {
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
pub(crate) fn fit_columns(b: &mut Builder, cols: &[Val]) -> Result<Vec<Val>> {
    if cols.iter().any(|&c| b.max(c) > 9) {
        return normalize(b, cols);
    }
    cols.iter().map(|&c| if b.noise(c) > NOISE_MAX - 1 { b.clean(c) } else { Ok(c) }).collect()
}

/// Propagates carries: clean base-4 digits of `sum(4^i * cols[i])`.
pub(crate) fn normalize(b: &mut Builder, cols: &[Val]) -> Result<Vec<Val>> {
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
pub(crate) fn add_numbers(b: &mut Builder, numbers: &[Vec<Val>]) -> Result<Vec<Val>> {
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
pub(crate) fn saturating_count(b: &mut Builder, bits: &[Val], cap: u8) -> Result<Val> {
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
pub(crate) fn all_set(b: &mut Builder, bits: &[Val]) -> Result<Val> {
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
pub(crate) fn nonzero_sum(b: &mut Builder, terms: &[Val]) -> Result<Val> {
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
