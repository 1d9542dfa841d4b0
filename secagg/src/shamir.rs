//! Shamir t-of-n secret sharing over the ristretto255 scalar field.

use curve25519_dalek::Scalar;
use rand_core::CryptoRngCore;
use zeroize::Zeroize;

use crate::PartyId;
use crate::error::{Error, Result};

/// Shares `secret` so that any `threshold` of the shares for `holders`
/// reconstruct it and fewer reveal nothing. Holders' ids are the x
/// coordinates (never 0).
pub(crate) fn share(
    secret: &Scalar,
    threshold: u32,
    holders: impl Iterator<Item = PartyId>,
    rng: &mut impl CryptoRngCore,
) -> Vec<(PartyId, Scalar)> {
    let mut coefficients: Vec<Scalar> =
        std::iter::once(*secret).chain((1..threshold).map(|_| Scalar::random(rng))).collect();
    let shares = holders
        .map(|x| {
            let x_s = Scalar::from(x);
            // Horner's rule from the highest coefficient.
            let y = coefficients.iter().rev().fold(Scalar::ZERO, |acc, c| acc * x_s + c);
            (x, y)
        })
        .collect();
    coefficients.zeroize();
    shares
}

/// The Lagrange coefficients that evaluate at 0 the polynomial through the
/// points `xs` (distinct, nonzero). The server reuses them for every secret
/// shared among the same holders, which makes each reconstruction linear in
/// the threshold instead of quadratic.
///
/// `λ_i = Π_{j≠i} x_j / (x_j − x_i) = P / (x_i · Π_{j≠i} (x_j − x_i))` with
/// `P = Π x_j`: one batch inversion. The products of differences, the
/// quadratic part, are formed in 128-bit integers as far as they fit (the
/// ids are small) and only then multiplied into the scalar: with SecAgg+
/// every secret has its own holders, and scalar products here were most of
/// the server's time.
pub(crate) fn lagrange_at_zero(xs: &[PartyId]) -> Result<Vec<Scalar>> {
    for (i, x) in xs.iter().enumerate() {
        if *x == 0 || xs[..i].contains(x) {
            return Err(Error::Protocol(format!("share point {x} is zero or repeated")));
        }
    }
    let largest = xs.iter().copied().max().unwrap_or(1);
    // Each difference is below 2^bits: this many fit in a u128.
    let bits = 32 - largest.leading_zeros();
    let per_word = (128 / bits.max(1)).max(1);
    let product = xs.iter().fold(Scalar::ONE, |acc, &x| acc * Scalar::from(x));
    let mut denominators: Vec<Scalar> = xs
        .iter()
        .enumerate()
        .map(|(i, &xi)| {
            let (mut acc, mut word, mut in_word, mut negative) = (Scalar::from(xi), 1u128, 0, false);
            for (j, &xj) in xs.iter().enumerate() {
                if i == j {
                    continue;
                }
                negative ^= xj < xi;
                word *= u128::from(xj.abs_diff(xi));
                in_word += 1;
                if in_word == per_word {
                    acc *= Scalar::from(word);
                    (word, in_word) = (1, 0);
                }
            }
            acc *= Scalar::from(word);
            if negative { -acc } else { acc }
        })
        .collect();
    Scalar::batch_invert(&mut denominators);
    Ok(denominators.into_iter().map(|d| product * d).collect())
}

/// The secret behind `shares` (Lagrange interpolation at 0), from the first
/// `threshold` of them. With fewer than `threshold` shares the result would
/// be unrelated to the secret, so that is an error. (The server inlines
/// this with cached coefficients; tests use it directly.)
#[cfg(test)]
pub(crate) fn reconstruct(shares: &[(PartyId, Scalar)], threshold: u32) -> Result<Scalar> {
    if shares.len() < threshold as usize {
        return Err(Error::Protocol(format!("{} shares, {threshold} needed", shares.len())));
    }
    let used = &shares[..threshold as usize];
    let xs: Vec<PartyId> = used.iter().map(|(x, _)| *x).collect();
    let coefficients = lagrange_at_zero(&xs)?;
    Ok(used.iter().zip(coefficients).map(|((_, y), c)| y * c).sum())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    use super::*;

    proptest! {
        #[test]
        fn any_threshold_subset_reconstructs(seed in any::<u64>(), n in 2u32..12, pick in any::<u64>()) {
            let mut rng = ChaCha20Rng::seed_from_u64(seed);
            let threshold = n / 2 + 1;
            let secret = Scalar::random(&mut rng);
            let mut shares = share(&secret, threshold, 1..=n, &mut rng);
            // A pseudo-random subset of exactly `threshold` shares.
            let mut order = ChaCha20Rng::seed_from_u64(pick);
            for i in (1..shares.len()).rev() {
                let j = (rand_core::RngCore::next_u32(&mut order) as usize) % (i + 1);
                shares.swap(i, j);
            }
            prop_assert_eq!(reconstruct(&shares[..threshold as usize], threshold).expect("enough"), secret);
            // One share fewer interpolates a polynomial of too low a degree.
            if threshold > 1 {
                let short = reconstruct(&shares[..threshold as usize - 1], threshold - 1).expect("count");
                prop_assert_ne!(short, secret);
            }
        }
    }

    #[test]
    fn refuses_too_few_or_repeated_points() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let shares = share(&Scalar::ONE, 3, 1..=5, &mut rng);
        assert!(reconstruct(&shares[..2], 3).is_err());
        let repeated = vec![shares[0], shares[0], shares[1]];
        assert!(reconstruct(&repeated, 3).is_err());
    }
}
