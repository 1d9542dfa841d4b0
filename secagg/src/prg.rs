//! Masks: a ChaCha20 keystream expanded into a vector over Z_2^32.

use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

/// Adds (`sign` = true) or subtracts the mask expanded from `seed` to
/// `vector`, entry by entry, modulo 2^32.
pub(crate) fn apply_mask(vector: &mut [u32], seed: [u8; 32], add: bool) {
    let mut stream = ChaCha20Rng::from_seed(seed);
    for v in vector.iter_mut() {
        let m = stream.next_u32();
        *v = if add { v.wrapping_add(m) } else { v.wrapping_sub(m) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
