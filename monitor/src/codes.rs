//! Order-preserving codes: how two parties' values are compared under TFHE
//! at a cost that does not grow with the values.
//!
//! A comparison across parties, `left op right × percent / 100`, is
//! evaluated as `code(100 × left) op code(percent × right)`. Each party
//! computes its side's code in the clear. A code keeps the sign, the
//! binary exponent and the `precision` leading significant bits of the
//! value, truncated toward zero, so:
//!
//! - codes never reverse an order: `a ≤ b` implies `code(a) ≤ code(b)`.
//!   Hence `code(a) > code(b)` implies `a > b`: a strict comparison never
//!   raises an alert the exact one would not;
//! - two values that differ by more than one part in 2^(precision − 1)
//!   (0.8% at the default 8 bits) compare exactly; closer ones may compare
//!   as equal;
//! - magnitudes from 2⁶² up compare as equal (a scaled value that large is
//!   beyond any book a spec watches).
//!
//! The circuit compares codes with one bootstrap per base-4 digit: 7 at the
//! default precision, whatever the values' size. An exact comparison of
//! 64-bit amounts would need 32.
//!
//! Code 0 and the largest code are reserved for a side with no value (the
//! comparison then fails; see `jointscore_circuits::alerts`); real values
//! take `1 ..= 2·M + 1`, `M` the largest magnitude code.

use std::ops::RangeInclusive;

/// Significant bits a comparison keeps when the spec does not say.
pub const DEFAULT_PRECISION: u32 = 8;
/// Significant bits a spec may ask for.
pub const PRECISION: RangeInclusive<u32> = 2..=16;
/// Exponents codes distinguish: magnitudes up to 2⁶² − 1.
const EXPONENTS: u64 = 62;
/// The largest magnitude codes distinguish.
const MAGNITUDE_MAX: u128 = (1 << EXPONENTS) - 1;

/// The largest magnitude code at `precision` bits.
fn magnitude_codes(precision: u32) -> u64 {
    EXPONENTS << (precision - 1)
}

/// Base-4 digits of a code at `precision` significant bits (the two
/// reserved codes included).
pub fn digits(precision: u32) -> usize {
    let top = 2 * magnitude_codes(precision) + 2;
    let mut d = 1;
    while 4u64.pow(d as u32) - 1 < top {
        d += 1;
    }
    d
}

/// The code of `value` at `precision` significant bits: in
/// `1 ..= 2·M + 1`, non-decreasing in `value`.
pub fn code(value: i128, precision: u32) -> u64 {
    let p = precision.clamp(*PRECISION.start(), *PRECISION.end());
    let m = magnitude_codes(p);
    let magnitude = value.unsigned_abs().min(MAGNITUDE_MAX);
    let level = if magnitude == 0 {
        0
    } else {
        let e = 127 - magnitude.leading_zeros(); // floor(log2)
        let keep = p - 1;
        // The leading `p` bits, the top one implicit: truncated toward zero.
        let mantissa = if e >= keep { magnitude >> (e - keep) } else { magnitude << (keep - e) };
        let fraction = mantissa as u64 - (1 << keep);
        (u64::from(e) << keep) + fraction + 1
    };
    if value < 0 { m + 1 - level } else { m + 1 + level }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn widths_and_reserved_ends() {
        assert_eq!(digits(DEFAULT_PRECISION), 7);
        for p in PRECISION {
            let top = 4u64.pow(digits(p) as u32) - 1;
            let span = [i128::MIN, i128::from(i64::MIN), -1, 0, 1, i128::from(i64::MAX), i128::MAX];
            for v in span {
                let c = code(v, p);
                assert!(c >= 1 && c < top, "{v} at {p} bits is {c}, reserved ends 0 and {top}");
            }
        }
        assert_eq!(code(0, 8), magnitude_codes(8) + 1);
        // Small values keep every bit.
        assert!((0..300).all(|v| code(v, 8) < code(v + 1, 8) || v >= 255));
    }

    proptest! {
        #[test]
        fn codes_keep_order_and_resolve_values_apart(a in any::<i64>(), b in any::<i64>(), p in PRECISION) {
            let (a, b) = (i128::from(a), i128::from(b));
            if a <= b {
                prop_assert!(code(a, p) <= code(b, p));
            }
            // Values apart by more than 2^-(p-1) of the larger magnitude
            // compare exactly.
            let (lo, hi) = (a.min(b), a.max(b));
            let scale = lo.unsigned_abs().max(hi.unsigned_abs());
            if scale <= MAGNITUDE_MAX && (hi - lo) as u128 * (1 << (p - 1)) > scale {
                prop_assert!(code(lo, p) < code(hi, p), "{} and {} at {} bits", lo, hi, p);
            }
        }
    }
}
