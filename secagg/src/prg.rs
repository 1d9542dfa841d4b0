//! Masks: a ChaCha20 keystream expanded into a vector over Z_2^32.

use rand_chacha::ChaCha20Core;
use rand_core::SeedableRng;
use rand_core::block::BlockRngCore;
use zeroize::Zeroize;

/// Adds (`add` = true) or subtracts the mask expanded from `seed` to
/// `vector`, entry by entry, modulo 2^32.
///
/// Entry `i` of the mask is the `i`-th little-endian 32-bit word of the
/// ChaCha20 keystream keyed by `seed` (nonce 0, block counter from 0): what
/// the `i`-th call of `ChaCha20Rng::next_u32` returns, so masks are the same
/// as with a per-word loop. The core writes four 64-byte blocks at a time
/// straight into a buffer of words (SIMD in `ppv-lite86`), and adding a
/// whole buffer vectorises; a `next_u32` call per entry did neither.
pub(crate) fn apply_mask(vector: &mut [u32], seed: [u8; 32], add: bool) {
    let mut core = ChaCha20Core::from_seed(seed);
    let mut buffer = <ChaCha20Core as BlockRngCore>::Results::default();
    for chunk in vector.chunks_mut(buffer.as_ref().len()) {
        core.generate(&mut buffer);
        let words = buffer.as_ref().iter();
        // Two loops rather than a branch per entry, so each vectorises.
        if add {
            chunk.iter_mut().zip(words).for_each(|(v, m)| *v = v.wrapping_add(*m));
        } else {
            chunk.iter_mut().zip(words).for_each(|(v, m)| *v = v.wrapping_sub(*m));
        }
    }
    // The buffer holds the end of the mask: do not leave it on the stack.
    buffer.as_mut().zeroize();
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::RngCore;

    use super::*;

    /// The mask expansion before it was vectorised: one `next_u32` per
    /// entry. The fast one must stay bit-identical to it, or every
    /// transcript changes.
    fn apply_mask_per_word(vector: &mut [u32], seed: [u8; 32], add: bool) {
        let mut stream = ChaCha20Rng::from_seed(seed);
        for v in vector.iter_mut() {
            let m = stream.next_u32();
            *v = if add { v.wrapping_add(m) } else { v.wrapping_sub(m) };
        }
    }

    #[test]
    fn add_then_subtract_is_identity_and_seeds_differ() {
        let x: Vec<u32> = (0..1000).collect();
        let mut y = x.clone();
        apply_mask(&mut y, [7; 32], true);
        assert_ne!(y, x);
        let mut z = y.clone();
        apply_mask(&mut z, [8; 32], false);
        assert_ne!(z, x);
        apply_mask(&mut y, [7; 32], false);
        assert_eq!(y, x);
    }

    proptest! {
        /// Lengths around the 64-word buffer and far beyond it.
        #[test]
        fn identical_to_the_per_word_expansion(
            seed in any::<[u8; 32]>(), len in prop_oneof![0usize..200, 4000usize..5000], add in any::<bool>(), start in any::<u32>(),
        ) {
            let x: Vec<u32> = (0..len as u32).map(|i| i.wrapping_mul(start)).collect();
            let (mut fast, mut slow) = (x.clone(), x);
            apply_mask(&mut fast, seed, add);
            apply_mask_per_word(&mut slow, seed, add);
            prop_assert_eq!(fast, slow);
        }
    }
}
