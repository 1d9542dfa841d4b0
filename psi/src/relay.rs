//! The relay's step of a multi-responder session: the coordinator merges
//! the responders' messages so that the requester cannot tell which
//! responder contributed a point.

use rand_core::{CryptoRng, RngCore};
use rand08::seq::SliceRandom;

use crate::error::{Error, Result};
use crate::group::POINT_BYTES;
use crate::protocol::MAX_ITEMS;

/// The union of the responders' encoded sets, shuffled, so that set
/// positions say nothing about which responder a point came from. Refuses
/// a union larger than [`MAX_ITEMS`].
pub fn merge_sets<R: RngCore + CryptoRng>(
    sets: Vec<Vec<[u8; POINT_BYTES]>>,
    rng: &mut R,
) -> Result<Vec<[u8; POINT_BYTES]>> {
    let len = sets.iter().map(Vec::len).sum();
    if len > MAX_ITEMS {
        return Err(Error::TooLarge { what: "merged responder sets", len, limit: MAX_ITEMS });
    }
    let mut union = Vec::with_capacity(len);
    for set in sets {
        union.extend(set);
    }
    union.shuffle(rng);
    Ok(union)
}

/// Every responder's answers to one batch, item-major: for query point
/// `j`, the `answers.len()` points `answers[i][j]` in a fresh random order,
/// so the requester's counts cannot be tied to a responder. Every
/// responder must have answered the whole batch.
pub fn interleave<R: RngCore + CryptoRng>(
    answers: &[Vec<[u8; POINT_BYTES]>],
    rng: &mut R,
) -> Result<Vec<[u8; POINT_BYTES]>> {
    let Some(items) = answers.first().map(Vec::len) else {
        return Err(Error::Mismatch("no responder answered".into()));
    };
    if let Some(short) = answers.iter().position(|a| a.len() != items) {
        return Err(Error::Mismatch(format!(
            "responder {short} answered {} points, the first {items}",
            answers[short].len()
        )));
    }
    let mut out = Vec::with_capacity(items * answers.len());
    let mut order: Vec<usize> = (0..answers.len()).collect();
    let mut columns: Vec<_> = answers.iter().map(|a| a.iter().copied()).collect();
    for _ in 0..items {
        order.shuffle(rng);
        for &i in &order {
            out.extend(columns[i].next());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    use super::*;

    fn point(tag: u8, i: usize) -> [u8; POINT_BYTES] {
        let mut p = [tag; POINT_BYTES];
        p[..8].copy_from_slice(&(i as u64).to_le_bytes());
        p
    }

    #[test]
    fn interleaves_item_major_and_hides_the_responder_order() {
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let answers: Vec<Vec<_>> = (0..3u8).map(|r| (0..50).map(|j| point(r, j)).collect()).collect();
        let out = interleave(&answers, &mut rng).expect("interleave");
        assert_eq!(out.len(), 150);
        let mut first_responder = std::collections::HashSet::new();
        for (j, item) in out.chunks(3).enumerate() {
            let mut tags: Vec<u8> = item.iter().map(|p| p[31]).collect();
            first_responder.insert(tags[0]);
            tags.sort_unstable();
            assert_eq!(tags, [0, 1, 2], "item {j} has one answer per responder");
            assert!(item.iter().all(|p| p[..8] == (j as u64).to_le_bytes()), "item {j} holds only its answers");
        }
        assert_eq!(first_responder.len(), 3, "the order within an item varies");
    }

    #[test]
    fn refuses_uneven_or_missing_answers_and_oversized_unions() {
        let mut rng = ChaCha20Rng::seed_from_u64(4);
        let e = interleave(&[vec![point(0, 0); 2], vec![point(1, 0); 3]], &mut rng).unwrap_err();
        assert!(e.to_string().contains("responder 1 answered 3 points, the first 2"), "{e}");
        assert!(matches!(interleave(&[], &mut rng), Err(Error::Mismatch(_))));
        let big = vec![vec![[1u8; POINT_BYTES]; MAX_ITEMS / 2 + 1], vec![[2u8; POINT_BYTES]; MAX_ITEMS / 2]];
        assert!(matches!(merge_sets(big, &mut rng), Err(Error::TooLarge { .. })));
        let union = merge_sets(vec![vec![point(0, 1)], vec![], vec![point(2, 1), point(2, 2)]], &mut rng).unwrap();
        assert_eq!(union.len(), 3);
    }
}
