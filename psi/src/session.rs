//! Batched, session-based PSI for the services: one requester, one or more
//! responders, a relay (the coordinator) between them, and answers merged so
//! that the requester learns per-item counts.
//!
//! # Protocol
//!
//! Set-up, once per session:
//!
//! 1. each responder `i` draws `b_i` ([`ResponderSession::new`]) and sends
//!    its encoded set `H(y)^b_i`, one point per distinct item, shuffled
//!    ([`ResponderSession::encode_set`]);
//! 2. the relay concatenates every responder's encoded set, shuffles the
//!    union, and hands it to the requester, which keeps `{H(y)^b_i}` as it
//!    is, sorted ([`RequesterSession::load_set`]: no exponentiation).
//!
//! Then, per batch of at most [`MAX_BATCH`] distinct items:
//!
//! 3. the requester sends `H(x)^a` for each item ([`RequesterSession::blind`]);
//! 4. the relay forwards the batch to every responder, which answers
//!    `H(x)^(a b_i)` for each point, in order ([`ResponderSession::answer`]);
//! 5. the relay regroups the answers item-major, shuffling each item's `k`
//!    answers so their order does not name the responder, and the requester
//!    unblinds every answer (raises it to `1/a`, giving `H(x)^b_i`) and
//!    counts, per item, how many are in the loaded set
//!    ([`RequesterSession::count`]). `H(x)^b_i` is in the set exactly when
//!    responder `i` holds `x`, so the count is the number of responders
//!    holding the item.
//!
//! The requester's exponentiations are thus two per queried item, whatever
//! the size of the set: a query of `m` items costs `O(m)` group operations
//! on both sides once the set is encoded. A responder may encode its set
//! once for many sessions of one requester (the services do so per
//! requester and UTC day where the party allows it; docs/psi.md says what
//! the requester can then link); the requester's side is the same either
//! way.
//!
//! Each responder keeps `b_i` for the session's lifetime (zeroized when the
//! [`ResponderSession`] is dropped), so that every batch of the requester
//! matches the one encoded set sent at set-up. Wire messages are plain
//! concatenations of 32-byte points ([`points_to_bytes`]); received bytes are
//! decoded with a bound on the number of points ([`points_from_bytes`]).
//!
//! # What each side learns
//!
//! - The **requester**: for each item it queries, how many responders hold
//!   it (not which); the total size of the responders' encoded sets (the
//!   sum of their distinct-item counts); and the number of answers per item,
//!   which is the number of responders.
//! - Each **responder**: how many items are queried, and in what batches;
//!   nothing of the requester's items, of the counts, or of the other
//!   responders' sets.
//! - The **relay**: only blinded points (`H(y)^b_i`, `H(x)^a`,
//!   `H(x)^(a b_i)`) and their numbers, so each responder's set size and the
//!   number of items queried; it cannot match them without `a`.
//!
//! The counts hide which responder matched only if the relay shuffles the
//! union set and each item's answers as above and does not collude with the
//! requester. Since `b_i` lives for the whole session, a responder answers
//! every point it is sent: the requester can test membership of any item it
//! chooses, which is the function being computed; responders see how many
//! items were asked and should bound that per session. Assumptions are those
//! of the crate (semi-honest parties, DDH in ristretto255, `H` a random
//! oracle). Every received point that is multiplied by a key (query points
//! at the responder, answers at the requester) is decoded strictly
//! (canonical, a group element, not the identity); the encoded set, which
//! the requester only compares with its unblinded answers, is checked from
//! its bytes (canonical, not the identity: a non-point can never match).
//! Repeated points are refused, since they could only inflate counts.

use std::collections::HashSet;
use std::fmt;

use rand_core::{CryptoRng, RngCore};
use rand08::seq::SliceRandom;
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::group::{POINT_BYTES, SessionKey, plausible_encoding};
use crate::protocol::MAX_ITEMS;

/// Most points in one query batch (32,768 points, 1 MiB on the wire).
pub const MAX_BATCH: usize = 1 << 15;

/// Names of the lists in errors.
const QUERY: &str = "query batch";
const SET: &str = "responder set";
const ANSWERS: &str = "answers";

fn check_len(what: &'static str, len: usize, limit: usize) -> Result<()> {
    if len > limit {
        return Err(Error::TooLarge { what, len, limit });
    }
    Ok(())
}

/// Position of the first point that equals an earlier one. The common case
/// (no repeat) is a parallel sort; the position is searched for only when
/// there is a repeat.
fn first_repeat(points: &[[u8; POINT_BYTES]]) -> Option<usize> {
    let mut sorted: Vec<&[u8; POINT_BYTES]> = points.par_iter().collect();
    sorted.par_sort_unstable();
    if !sorted.par_windows(2).any(|w| w[0] == w[1]) {
        return None;
    }
    let mut seen = HashSet::with_capacity(points.len());
    points.iter().position(|p| !seen.insert(p))
}

/// Position of the first point that cannot be an encoding of a
/// non-identity group element, judged from its bytes (for points that are
/// only compared, never multiplied).
fn first_implausible(points: &[[u8; POINT_BYTES]]) -> Option<usize> {
    points.par_iter().position_first(|p| !plausible_encoding(p))
}

/// The requester's side of a batched session: holds secret `a` (zeroized on
/// drop) and the responders' encoded set. `Debug` prints neither.
pub struct RequesterSession {
    key: SessionKey,
    /// `{H(y)^b_i}` as received, sorted for binary search.
    set: Vec<[u8; POINT_BYTES]>,
}

impl fmt::Debug for RequesterSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequesterSession").field("key", &self.key).field("set_len", &self.set.len()).finish()
    }
}

impl RequesterSession {
    /// A session with a fresh secret `a` and no set loaded.
    pub fn new<R: RngCore + CryptoRng>(rng: &mut R) -> RequesterSession {
        RequesterSession { key: SessionKey::random(rng), set: Vec::new() }
    }

    /// `H(x)^a` for each item, in order (the caller deduplicates and batches;
    /// refuses more than [`MAX_BATCH`] items with [`Error::TooLarge`]).
    pub fn blind<T: AsRef<[u8]> + Sync>(&self, items: &[T]) -> Result<Vec<[u8; POINT_BYTES]>> {
        check_len(QUERY, items.len(), MAX_BATCH)?;
        Ok(self.key.hash_and_raise(items))
    }

    /// Takes the responders' encoded set (the union of every responder's
    /// `H(y)^b_i`, in any order; at most [`MAX_ITEMS`] points) and keeps it
    /// for matching, replacing any set loaded before. No exponentiation:
    /// answers are unblinded to `H(x)^b_i` instead ([`RequesterSession::count`]),
    /// so loading costs a sort, and a query of `m` items `m`
    /// exponentiations whatever the set's size. The points are only
    /// compared, never multiplied, so they are checked from their bytes:
    /// non-canonical and identity encodings are refused
    /// ([`Error::InvalidPoint`] with the index), and so are repeated points;
    /// a canonical non-point can never match an unblinded answer. On error
    /// the session keeps its previous set.
    pub fn load_set(&mut self, points: &[[u8; POINT_BYTES]]) -> Result<()> {
        check_len(SET, points.len(), MAX_ITEMS)?;
        if let Some(index) = first_implausible(points).into_iter().chain(first_repeat(points)).min() {
            return Err(Error::InvalidPoint { what: SET, index });
        }
        let mut set = points.to_vec();
        set.par_sort_unstable();
        self.set = set;
        Ok(())
    }

    /// Number of points loaded.
    pub fn set_len(&self) -> usize {
        self.set.len()
    }

    /// Matches one batch of answers. `answers` holds `per_item` points for
    /// each of `items` blinded items, item-major
    /// (`answers[j*per_item .. (j+1)*per_item]` are the `H(x_j)^(a b_i)` of
    /// every responder, in any order). Each answer is unblinded (raised to
    /// `1/a`, giving `H(x_j)^b_i`) and looked up in the loaded set. Returns,
    /// per item, how many of its answers are in the set (all zero if none
    /// is loaded).
    ///
    /// Errors: `items` over [`MAX_BATCH`] ([`Error::TooLarge`]); `per_item`
    /// zero or `answers` not `items * per_item` long ([`Error::Mismatch`]);
    /// an invalid, non-canonical or identity answer point (decoded strictly:
    /// it is multiplied by `1/a`), or a point repeated anywhere within the
    /// batch ([`Error::InvalidPoint`] with the first such index: an honest
    /// responder never maps two distinct items, or two responders' keys, to
    /// one point).
    pub fn count(&self, items: usize, per_item: usize, answers: &[[u8; POINT_BYTES]]) -> Result<Vec<u32>> {
        check_len(ANSWERS, items, MAX_BATCH)?;
        if per_item == 0 {
            return Err(Error::Mismatch("zero answers per item".into()));
        }
        if items.checked_mul(per_item) != Some(answers.len()) {
            return Err(Error::Mismatch(format!(
                "{} answer points for {items} items with {per_item} answers each",
                answers.len()
            )));
        }
        // The repeat check first: it is cheap, and unblinding (a bijection)
        // would keep repeats repeated.
        let repeated = first_repeat(answers);
        let unblinded = match self.key.unblind(answers, ANSWERS) {
            Ok(points) => points,
            Err(Error::InvalidPoint { index, .. }) => {
                return Err(Error::InvalidPoint { what: ANSWERS, index: repeated.map_or(index, |r| r.min(index)) });
            }
            Err(e) => return Err(e),
        };
        if let Some(index) = repeated {
            return Err(Error::InvalidPoint { what: ANSWERS, index });
        }
        Ok(unblinded
            .par_chunks(per_item)
            .map(|chunk| {
                let hits = chunk.iter().filter(|p| self.set.binary_search(p).is_ok()).count();
                // At most `per_item`, and a batch that large is not in memory.
                u32::try_from(hits).unwrap_or(u32::MAX)
            })
            .collect())
    }
}

/// The responder's side: holds secret `b` for the session (zeroized on
/// drop; `Debug` does not print it).
#[derive(Debug)]
pub struct ResponderSession {
    key: SessionKey,
}

impl ResponderSession {
    /// A session with a fresh secret `b`.
    pub fn new<R: RngCore + CryptoRng>(rng: &mut R) -> ResponderSession {
        ResponderSession { key: SessionKey::random(rng) }
    }

    /// `H(y)^b` for each distinct item (duplicates collapsed), shuffled with
    /// `rng`. Refuses more than [`MAX_ITEMS`] items ([`Error::TooLarge`]).
    pub fn encode_set<T: AsRef<[u8]> + Sync, R: RngCore + CryptoRng>(
        &self,
        items: &[T],
        rng: &mut R,
    ) -> Result<Vec<[u8; POINT_BYTES]>> {
        check_len(SET, items.len(), MAX_ITEMS)?;
        let mut distinct: Vec<&[u8]> = items.par_iter().map(AsRef::as_ref).collect();
        distinct.par_sort_unstable();
        distinct.dedup();
        distinct.shuffle(rng);
        Ok(self.key.hash_and_raise(&distinct))
    }

    /// Raises a batch of the requester's points to `b`, in order. Refuses
    /// more than [`MAX_BATCH`] points ([`Error::TooLarge`]) and any invalid,
    /// non-canonical or identity encoding ([`Error::InvalidPoint`] naming its
    /// index). A refused batch leaves the session usable.
    pub fn answer(&self, points: &[[u8; POINT_BYTES]]) -> Result<Vec<[u8; POINT_BYTES]>> {
        check_len(QUERY, points.len(), MAX_BATCH)?;
        self.key.raise(points, QUERY)
    }
}

/// Decodes wire bytes into points: refuses a length that is not a multiple of
/// [`POINT_BYTES`] ([`Error::Mismatch`] saying so) and more than `limit`
/// points ([`Error::TooLarge`]). Checks only the framing: the points are
/// validated where they are used.
pub fn points_from_bytes(bytes: &[u8], what: &'static str, limit: usize) -> Result<Vec<[u8; POINT_BYTES]>> {
    if !bytes.len().is_multiple_of(POINT_BYTES) {
        return Err(Error::Mismatch(format!("{what}: {} bytes is not a multiple of {POINT_BYTES}", bytes.len())));
    }
    check_len(what, bytes.len() / POINT_BYTES, limit)?;
    Ok(bytes
        .chunks_exact(POINT_BYTES)
        .map(|chunk| {
            let mut point = [0u8; POINT_BYTES];
            point.copy_from_slice(chunk);
            point
        })
        .collect())
}

/// Concatenates points into wire bytes.
pub fn points_to_bytes(points: &[[u8; POINT_BYTES]]) -> Vec<u8> {
    points.as_flattened().to_vec()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use curve25519_dalek::ristretto::CompressedRistretto;
    use curve25519_dalek::traits::IsIdentity;
    use proptest::prelude::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::{RngCore as _, SeedableRng};

    use super::*;

    /// What the relay does: runs every batch of `queries` past every
    /// responder, regroups the answers item-major with each item's answers
    /// shuffled, and returns the requester's counts.
    fn merged_counts(
        sets: &[Vec<Vec<u8>>],
        queries: &[Vec<u8>],
        batch: usize,
        rng: &mut ChaCha20Rng,
    ) -> (RequesterSession, Vec<u32>) {
        let responders: Vec<ResponderSession> = sets.iter().map(|_| ResponderSession::new(rng)).collect();
        let mut union: Vec<[u8; POINT_BYTES]> = Vec::new();
        for (r, set) in responders.iter().zip(sets) {
            union.extend(r.encode_set(set, rng).unwrap());
        }
        union.shuffle(rng);
        let mut req = RequesterSession::new(rng);
        req.load_set(&union).unwrap();
        let mut counts = Vec::new();
        for chunk in queries.chunks(batch.max(1)) {
            let blinded = req.blind(chunk).unwrap();
            let per: Vec<Vec<[u8; POINT_BYTES]>> = responders.iter().map(|r| r.answer(&blinded).unwrap()).collect();
            let mut answers = Vec::with_capacity(chunk.len() * sets.len());
            for j in 0..chunk.len() {
                let mut mine: Vec<[u8; POINT_BYTES]> = per.iter().map(|a| a[j]).collect();
                mine.shuffle(rng);
                answers.extend(mine);
            }
            counts.extend(req.count(chunk.len(), sets.len(), &answers).unwrap());
        }
        (req, counts)
    }

    fn small_items() -> impl Strategy<Value = Vec<Vec<u8>>> {
        // A small alphabet so that sets overlap and contain duplicates.
        proptest::collection::vec(proptest::collection::vec(0u8..6, 0..3), 0..40)
    }

    fn distinct(items: &[Vec<u8>]) -> Vec<Vec<u8>> {
        items.iter().collect::<BTreeSet<_>>().into_iter().cloned().collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn one_responder_counts_membership(
            x in small_items(), y in small_items(), batch in 1usize..9, seed in any::<u64>()
        ) {
            let mut rng = ChaCha20Rng::seed_from_u64(seed);
            let queries = distinct(&x);
            let ys: BTreeSet<&Vec<u8>> = y.iter().collect();
            let (req, counts) = merged_counts(std::slice::from_ref(&y), &queries, batch, &mut rng);
            let want: Vec<u32> = queries.iter().map(|q| u32::from(ys.contains(q))).collect();
            prop_assert_eq!(counts, want);
            prop_assert_eq!(req.set_len(), ys.len());
        }

        #[test]
        fn several_responders_count_holders(
            sets in proptest::collection::vec(small_items(), 1..=4),
            x in small_items(),
            batch in 1usize..9,
            seed in any::<u64>(),
        ) {
            let mut rng = ChaCha20Rng::seed_from_u64(seed);
            let queries = distinct(&x);
            let (req, counts) = merged_counts(&sets, &queries, batch, &mut rng);
            let want: Vec<u32> = queries
                .iter()
                .map(|q| sets.iter().filter(|s| s.contains(q)).count() as u32)
                .collect();
            prop_assert_eq!(counts, want);
            prop_assert_eq!(req.set_len(), sets.iter().map(|s| distinct(s).len()).sum::<usize>());
        }
    }

    fn items(names: &[&str]) -> Vec<Vec<u8>> {
        names.iter().map(|s| s.as_bytes().to_vec()).collect()
    }

    /// The requester's view is the same whichever responder holds an item:
    /// same counts and same set size. This checks the outputs only; that the
    /// points themselves reveal nothing rests on DDH.
    #[test]
    fn counts_do_not_name_the_responder() {
        let queries = items(&["asset-1", "asset-2", "asset-3"]);
        let mut seen = Vec::new();
        for holder in 0..3 {
            let sets: Vec<Vec<Vec<u8>>> = (0..3)
                .map(|r| {
                    let mut set = items(&[&format!("own-{r}-a"), &format!("own-{r}-b")]);
                    if r == holder {
                        set.push(b"asset-2".to_vec());
                    } else {
                        set.push(format!("pad-{r}").into_bytes());
                    }
                    set
                })
                .collect();
            let mut rng = ChaCha20Rng::seed_from_u64(11);
            let (req, counts) = merged_counts(&sets, &queries, 2, &mut rng);
            assert_eq!(counts, vec![0, 1, 0]);
            seen.push((counts, req.set_len()));
        }
        assert!(seen.windows(2).all(|w| w[0] == w[1]));
    }

    /// Several responders holding one item answer with distinct points, and
    /// encode it to distinct points: nothing equal across responders for the
    /// relay or the requester to link.
    #[test]
    fn responders_answer_one_item_with_distinct_points() {
        let mut rng = ChaCha20Rng::seed_from_u64(12);
        let responders: Vec<ResponderSession> = (0..4).map(|_| ResponderSession::new(&mut rng)).collect();
        let req = RequesterSession::new(&mut rng);
        let blinded = req.blind(&[b"asset-9"]).unwrap();
        let answers: BTreeSet<[u8; POINT_BYTES]> = responders.iter().map(|r| r.answer(&blinded).unwrap()[0]).collect();
        assert_eq!(answers.len(), 4);
        assert!(!answers.contains(&blinded[0]));
        let encoded: BTreeSet<[u8; POINT_BYTES]> =
            responders.iter().map(|r| r.encode_set(&[b"asset-9"], &mut rng).unwrap()[0]).collect();
        assert_eq!(encoded.len(), 4);
    }

    /// `p = 2^255 - 19`, little-endian: a non-canonical field element.
    const FIELD_P: [u8; POINT_BYTES] = {
        let mut p = [0xffu8; POINT_BYTES];
        p[0] = 0xed;
        p[31] = 0x7f;
        p
    };

    #[test]
    fn bad_points_are_refused() {
        let mut rng = ChaCha20Rng::seed_from_u64(5);
        let resp = ResponderSession::new(&mut rng);
        let mut req = RequesterSession::new(&mut rng);
        let good = req.blind(&[b"a", b"b", b"c"]).unwrap();
        let want = resp.answer(&good).unwrap();

        let mut high_bit = good[1];
        high_bit[31] |= 0x80;
        // Canonical and even, so it passes the byte-level check, but not a
        // point: refused where it would be multiplied.
        let random = loop {
            let mut bytes = [0u8; POINT_BYTES];
            rng.fill_bytes(&mut bytes);
            bytes[31] &= 0x3f;
            bytes[0] &= 0xfe;
            if CompressedRistretto(bytes).decompress().is_none() {
                break bytes;
            }
        };
        let identity = [0u8; POINT_BYTES];
        for bad in [FIELD_P, high_bit, identity, random] {
            let mut batch = good.clone();
            batch[1] = bad;
            assert_eq!(resp.answer(&batch).unwrap_err(), Error::InvalidPoint { what: QUERY, index: 1 });
            let mut answers = want.clone();
            answers[2] = bad;
            assert_eq!(req.count(3, 1, &answers).unwrap_err(), Error::InvalidPoint { what: ANSWERS, index: 2 });
        }
        // The set is only compared with unblinded answers: what cannot be an
        // encoding is refused from its bytes; a canonical non-point is kept
        // and can never match.
        for bad in [FIELD_P, high_bit, identity] {
            let mut batch = good.clone();
            batch[1] = bad;
            assert_eq!(req.load_set(&batch).unwrap_err(), Error::InvalidPoint { what: SET, index: 1 });
        }
        req.load_set(&[random]).unwrap();
        assert_eq!(req.count(3, 1, &want).unwrap(), vec![0, 0, 0]);
        // The responder still answers correctly after refusing bad batches.
        assert_eq!(resp.answer(&good).unwrap(), want);

        // Repeated points: in the set, and within an answer batch (across
        // items or within one item's answers).
        let set = resp.encode_set(&[b"a", b"x", b"y"], &mut rng).unwrap();
        let repeated = vec![set[0], set[1], set[0]];
        assert_eq!(req.load_set(&repeated).unwrap_err(), Error::InvalidPoint { what: SET, index: 2 });
        assert_eq!(req.set_len(), 1, "a refused set leaves the one loaded before");
        req.load_set(&set).unwrap();
        assert_eq!(
            req.count(3, 1, &[want[0], want[1], want[0]]).unwrap_err(),
            Error::InvalidPoint { what: ANSWERS, index: 2 }
        );
        assert_eq!(req.count(1, 2, &[want[0], want[0]]).unwrap_err(), Error::InvalidPoint { what: ANSWERS, index: 1 });
        assert_eq!(req.count(3, 1, &want).unwrap(), vec![1, 0, 0]);
    }

    proptest! {
        /// The byte-level check never refuses an encoding that decodes to a
        /// non-identity point.
        #[test]
        fn every_valid_encoding_is_plausible(seed in any::<u64>(), bytes in any::<[u8; POINT_BYTES]>()) {
            let mut rng = ChaCha20Rng::seed_from_u64(seed);
            let point = RequesterSession::new(&mut rng).blind(&[seed.to_le_bytes()]).unwrap()[0];
            prop_assert!(plausible_encoding(&point));
            let decodes = CompressedRistretto(bytes).decompress().is_some_and(|p| !p.is_identity());
            prop_assert!(!decodes || plausible_encoding(&bytes));
        }
    }

    #[test]
    fn bad_shapes_are_refused() {
        let mut rng = ChaCha20Rng::seed_from_u64(6);
        let resp = ResponderSession::new(&mut rng);
        let mut req = RequesterSession::new(&mut rng);
        let blinded = req.blind(&[b"a", b"b"]).unwrap();
        let answers = resp.answer(&blinded).unwrap();

        let too_many = MAX_BATCH + 1;
        let big = TooLarge(too_many, MAX_BATCH);
        assert_eq!(req.blind(&vec![b""; too_many]).unwrap_err(), big.of(QUERY));
        assert_eq!(resp.answer(&vec![[0u8; POINT_BYTES]; too_many]).unwrap_err(), big.of(QUERY));
        assert_eq!(req.count(too_many, 1, &[]).unwrap_err(), big.of(ANSWERS));
        let huge = TooLarge(MAX_ITEMS + 1, MAX_ITEMS);
        assert_eq!(resp.encode_set(&vec![b""; MAX_ITEMS + 1], &mut rng).unwrap_err(), huge.of(SET));
        assert_eq!(req.load_set(&vec![[0u8; POINT_BYTES]; MAX_ITEMS + 1]).unwrap_err(), huge.of(SET));

        assert!(matches!(req.count(2, 0, &[]), Err(Error::Mismatch(_))));
        assert!(matches!(req.count(2, 1, &answers[..1]), Err(Error::Mismatch(_))));
        assert!(matches!(req.count(1, 1, &answers), Err(Error::Mismatch(_))));
        assert!(matches!(req.count(usize::MAX, 2, &answers), Err(Error::TooLarge { .. })));
        assert_eq!(req.count(0, 3, &[]).unwrap(), Vec::<u32>::new());
        // Nothing loaded yet: nothing matches.
        assert_eq!(req.count(2, 1, &answers).unwrap(), vec![0, 0]);
        req.load_set(&resp.encode_set(&[b"b"], &mut rng).unwrap()).unwrap();
        assert_eq!(req.count(2, 1, &answers).unwrap(), vec![0, 1]);
    }

    struct TooLarge(usize, usize);

    impl TooLarge {
        fn of(&self, what: &'static str) -> Error {
            Error::TooLarge { what, len: self.0, limit: self.1 }
        }
    }

    #[test]
    fn wire_framing() {
        let points = vec![[1u8; POINT_BYTES], [2u8; POINT_BYTES], [3u8; POINT_BYTES]];
        let bytes = points_to_bytes(&points);
        assert_eq!(bytes.len(), 3 * POINT_BYTES);
        assert_eq!(points_from_bytes(&bytes, "batch", 3).unwrap(), points);
        assert_eq!(points_from_bytes(&[], "batch", 0).unwrap(), Vec::<[u8; POINT_BYTES]>::new());
        assert_eq!(
            points_from_bytes(&bytes, "batch", 2).unwrap_err(),
            Error::TooLarge { what: "batch", len: 3, limit: 2 }
        );
        let err = points_from_bytes(&bytes[..95], "batch", 3).unwrap_err();
        assert_eq!(err, Error::Mismatch("batch: 95 bytes is not a multiple of 32".into()));
    }

    /// Golden vector: a change here breaks interoperability between versions.
    #[test]
    fn golden_vector() {
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        let req = RequesterSession::new(&mut rng);
        let resp = ResponderSession::new(&mut rng);
        let blinded = req.blind(&[b"subject-1"]).unwrap();
        let answer = resp.answer(&blinded).unwrap();
        assert_eq!(hex::encode(blinded[0]), GOLDEN_BLINDED);
        assert_eq!(hex::encode(answer[0]), GOLDEN_ANSWER);
    }

    const GOLDEN_BLINDED: &str = "d26ab2108300d332b642f0ee8bf6904544ce06315226e67fa9ab43265655b406";
    const GOLDEN_ANSWER: &str = "42e3b056eaa3ac3f901048523f7475fd292bc3495adb752d56f6feeb609b547c";
}
