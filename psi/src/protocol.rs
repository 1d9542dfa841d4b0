//! The three-message protocol: requester, responder, and the optional
//! reveal that lets the responder learn the intersection too.

use std::collections::HashMap;

use rand_core::{CryptoRng, RngCore};
use rand08::seq::SliceRandom;
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::group::{POINT_BYTES, SessionKey, plausible_encoding};

/// Largest set a session accepts from either side (4,194,304 items, 128 MiB
/// of points): bounds memory and work a peer can impose.
pub const MAX_ITEMS: usize = 1 << 22;

/// What the requester learns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// Which of its items the responder also holds.
    Intersection,
    /// Only how many items the sets share.
    Cardinality,
}

/// Message 1, requester → responder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// The variant both sides run.
    pub variant: Variant,
    /// `H(x)^a` per distinct requester item.
    pub points: Vec<[u8; POINT_BYTES]>,
}

/// Message 2, responder → requester.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// The request's points raised to `b`: in request order for
    /// [`Variant::Intersection`], shuffled for [`Variant::Cardinality`].
    pub doubly: Vec<[u8; POINT_BYTES]>,
    /// `H(y)^b` per distinct responder item, shuffled.
    pub theirs: Vec<[u8; POINT_BYTES]>,
}

/// Optional message 3, requester → responder: which of the responder's
/// shuffled points matched, so the responder learns the intersection too.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reveal {
    /// Positions in [`Response::theirs`], ascending.
    pub positions: Vec<u32>,
}

/// What the requester learns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Positions in the requester's input list (duplicates included) of the
    /// items the responder also holds, ascending.
    Intersection(Vec<usize>),
    /// How many distinct items the sets share.
    Cardinality(usize),
}

/// Distinct items and, for each, its positions in the input.
fn distinct<T: AsRef<[u8]>>(items: &[T]) -> (Vec<&[u8]>, Vec<Vec<usize>>) {
    let mut index: HashMap<&[u8], usize> = HashMap::with_capacity(items.len());
    let mut unique = Vec::new();
    let mut positions: Vec<Vec<usize>> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let slot = *index.entry(item.as_ref()).or_insert_with(|| {
            unique.push(item.as_ref());
            positions.push(Vec::new());
            unique.len() - 1
        });
        positions[slot].push(i);
    }
    (unique, positions)
}

fn check_len(what: &'static str, len: usize) -> Result<()> {
    if len > MAX_ITEMS {
        return Err(Error::TooLarge { what, len, limit: MAX_ITEMS });
    }
    Ok(())
}

/// The side that learns the result. Holds its session key until
/// [`Requester::finish`].
#[derive(Debug)]
pub struct Requester {
    key: SessionKey,
    variant: Variant,
    positions: Vec<Vec<usize>>,
}

impl Requester {
    /// Starts a session over `items` (duplicates are collapsed).
    pub fn new<T: AsRef<[u8]> + Sync, R: RngCore + CryptoRng>(
        items: &[T],
        variant: Variant,
        rng: &mut R,
    ) -> Result<(Requester, Request)> {
        check_len("requester set", items.len())?;
        let (_, mut positions) = distinct(items);
        // Sent in random order, so a responder learns nothing from positions
        // (not even from a later `Reveal`).
        positions.shuffle(rng);
        let shuffled: Vec<&[u8]> = positions.iter().map(|p| items[p[0]].as_ref()).collect();
        let key = SessionKey::random(rng);
        let points = key.hash_and_raise(&shuffled);
        Ok((Requester { key, variant, positions }, Request { variant, points }))
    }

    /// Completes the session. For [`Variant::Intersection`] also returns
    /// the [`Reveal`] to send if the responder is to learn the result.
    pub fn finish(self, response: &Response) -> Result<(Outcome, Option<Reveal>)> {
        if response.doubly.len() != self.positions.len() {
            return Err(Error::Mismatch(format!(
                "{} answered points for {} requested",
                response.doubly.len(),
                self.positions.len()
            )));
        }
        check_len("responder set", response.theirs.len())?;
        // Cheap checks before the expensive exponentiation. Answered points
        // are only compared with this side's own encodings of valid,
        // non-identity points, never multiplied, so a byte-level check
        // stands in for a full decoding (a square root per item): a
        // canonical-looking non-point can never match, and reads as "not
        // held", as any wrong answer would. Repeats are refused: they could
        // only inflate a cardinality.
        let invalid = response.doubly.par_iter().position_first(|p| !plausible_encoding(p));
        let mut seen = std::collections::HashSet::with_capacity(response.doubly.len());
        let repeated = response.doubly.iter().position(|p| !seen.insert(p));
        if let Some(index) = invalid.into_iter().chain(repeated).min() {
            return Err(Error::InvalidPoint { what: "answered points", index });
        }
        let mut seen_theirs = std::collections::HashSet::with_capacity(response.theirs.len());
        if let Some(index) = response.theirs.iter().position(|p| !seen_theirs.insert(p)) {
            return Err(Error::InvalidPoint { what: "responder points", index });
        }
        let theirs = self.key.raise(&response.theirs, "responder points")?;
        let mine: HashMap<&[u8; POINT_BYTES], usize> =
            response.doubly.iter().enumerate().map(|(i, p)| (p, i)).collect();
        let matches: Vec<(usize, usize)> =
            theirs.iter().enumerate().filter_map(|(j, p)| mine.get(p).map(|&i| (i, j))).collect();
        match self.variant {
            Variant::Cardinality => Ok((Outcome::Cardinality(matches.len()), None)),
            Variant::Intersection => {
                let mut mine: Vec<usize> =
                    matches.iter().flat_map(|&(i, _)| self.positions[i].iter().copied()).collect();
                mine.sort_unstable();
                let mut positions: Vec<u32> = matches.iter().map(|&(_, j)| j as u32).collect();
                positions.sort_unstable();
                Ok((Outcome::Intersection(mine), Some(Reveal { positions })))
            }
        }
    }
}

/// The side that answers.
pub struct Responder;

/// What the responder keeps after answering, to learn the intersection from
/// a [`Reveal`]. Holds no key.
#[derive(Debug)]
pub struct ResponderState {
    variant: Variant,
    /// `theirs[j]` encodes distinct item `order[j]`.
    order: Vec<usize>,
    positions: Vec<Vec<usize>>,
}

impl Responder {
    /// Answers a request over `items` (duplicates are collapsed) with a
    /// fresh session key, which is dropped (and zeroized) before returning.
    /// `allowed` is the most the responder agrees to reveal: a request for
    /// the intersection is refused when only the cardinality is allowed.
    pub fn respond<T: AsRef<[u8]> + Sync, R: RngCore + CryptoRng>(
        items: &[T],
        request: &Request,
        allowed: Variant,
        rng: &mut R,
    ) -> Result<(Response, ResponderState)> {
        if allowed == Variant::Cardinality && request.variant == Variant::Intersection {
            return Err(Error::Mismatch("the intersection was requested; only the cardinality is allowed".into()));
        }
        check_len("request", request.points.len())?;
        check_len("responder set", items.len())?;
        let key = SessionKey::random(rng);
        let mut doubly = key.raise(&request.points, "request")?;
        if request.variant == Variant::Cardinality {
            doubly.shuffle(rng);
        }
        let (unique, positions) = distinct(items);
        let mut order: Vec<usize> = (0..unique.len()).collect();
        order.shuffle(rng);
        let shuffled: Vec<&[u8]> = order.iter().map(|&i| unique[i]).collect();
        let theirs = key.hash_and_raise(&shuffled);
        Ok((Response { doubly, theirs }, ResponderState { variant: request.variant, order, positions }))
    }
}

impl ResponderState {
    /// Positions in the responder's input list (duplicates included) of the
    /// items the requester also holds, ascending.
    pub fn learn(&self, reveal: &Reveal) -> Result<Vec<usize>> {
        if self.variant != Variant::Intersection {
            return Err(Error::Mismatch("a cardinality session reveals no intersection".into()));
        }
        if reveal.positions.len() > self.order.len() || reveal.positions.windows(2).any(|w| w[0] >= w[1]) {
            return Err(Error::Mismatch("revealed positions must be distinct and ascending".into()));
        }
        let mut out = Vec::new();
        for &j in &reveal.positions {
            let item = self
                .order
                .get(j as usize)
                .ok_or_else(|| Error::Mismatch(format!("revealed position {j} beyond {} points", self.order.len())))?;
            out.extend(self.positions[*item].iter().copied());
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;
    use sha2::{Digest, Sha256};

    use super::*;
    use crate::group::hash_to_group;

    fn run(
        x: &[Vec<u8>],
        y: &[Vec<u8>],
        variant: Variant,
        seed: u64,
    ) -> (Request, Response, Outcome, Option<Vec<usize>>) {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let (req, request) = Requester::new(x, variant, &mut rng).unwrap();
        let (response, state) = Responder::respond(y, &request, Variant::Intersection, &mut rng).unwrap();
        let (outcome, reveal) = req.finish(&response).unwrap();
        let learned = reveal.map(|r| state.learn(&r).unwrap());
        (request, response, outcome, learned)
    }

    fn small_items() -> impl Strategy<Value = Vec<Vec<u8>>> {
        // A small alphabet so that sets overlap and contain duplicates.
        proptest::collection::vec(proptest::collection::vec(0u8..6, 0..3), 0..40)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn outputs_equal_the_plain_intersection(x in small_items(), y in small_items(), seed in any::<u64>()) {
            let ys: BTreeSet<&Vec<u8>> = y.iter().collect();
            let xs: BTreeSet<&Vec<u8>> = x.iter().collect();
            let want_x: Vec<usize> = (0..x.len()).filter(|&i| ys.contains(&x[i])).collect();
            let want_y: Vec<usize> = (0..y.len()).filter(|&i| xs.contains(&y[i])).collect();

            let (_, _, outcome, learned) = run(&x, &y, Variant::Intersection, seed);
            prop_assert_eq!(outcome, Outcome::Intersection(want_x));
            prop_assert_eq!(learned, Some(want_y));

            let (_, response, outcome, learned) = run(&x, &y, Variant::Cardinality, seed);
            prop_assert_eq!(outcome, Outcome::Cardinality(xs.intersection(&ys).count()));
            prop_assert_eq!(learned, None);
            // Duplicates are collapsed: the requester sees one point per
            // distinct responder item.
            prop_assert_eq!(response.theirs.len(), ys.len());
        }
    }

    #[test]
    fn cardinality_hides_which_items_matched() {
        let x: Vec<Vec<u8>> = (0..64u32).map(|i| i.to_le_bytes().to_vec()).collect();
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        let (req, request) = Requester::new(&x, Variant::Cardinality, &mut rng).unwrap();
        let (response, state) = Responder::respond(&x, &request, Variant::Cardinality, &mut rng).unwrap();
        // The answer to a cardinality request is shuffled: not in the order
        // an intersection answer (which the requester could match) has.
        assert_eq!(response.doubly.len(), 64);
        let ordered_again = Responder::respond(
            &x,
            &Request { variant: Variant::Intersection, ..request.clone() },
            Variant::Intersection,
            &mut rng,
        )
        .unwrap()
        .0;
        assert_ne!(response.doubly, ordered_again.doubly);
        assert!(matches!(req.finish(&response).unwrap(), (Outcome::Cardinality(64), None)));
        assert!(matches!(state.learn(&Reveal { positions: vec![0] }), Err(Error::Mismatch(_))));
    }

    #[test]
    fn invalid_and_oversized_inputs_are_refused() {
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let items = vec![b"a".to_vec(), b"b".to_vec()];
        let (req, request) = Requester::new(&items, Variant::Intersection, &mut rng).unwrap();

        // Non-canonical field element, a non-point, and the identity.
        for (bad, what) in [([0xffu8; 32], "request"), ([1u8; 32], "request"), ([0u8; 32], "request")] {
            let mut forged = request.clone();
            forged.points[1] = bad;
            let err = Responder::respond(&items, &forged, Variant::Intersection, &mut rng).unwrap_err();
            assert_eq!(err, Error::InvalidPoint { what, index: 1 });
        }

        // A responder that allows only the cardinality refuses.
        assert!(matches!(
            Responder::respond(&items, &request, Variant::Cardinality, &mut rng),
            Err(Error::Mismatch(_))
        ));
        let (mut response, state) = Responder::respond(&items, &request, Variant::Intersection, &mut rng).unwrap();
        let mut short = response.clone();
        short.doubly.pop();
        assert!(matches!(
            Requester::new(&items, Variant::Intersection, &mut rng).unwrap().0.finish(&short),
            Err(Error::Mismatch(_))
        ));
        response.theirs[0] = [0xff; 32];
        assert_eq!(req.finish(&response).unwrap_err(), Error::InvalidPoint { what: "responder points", index: 0 });
        assert!(matches!(state.learn(&Reveal { positions: vec![9] }), Err(Error::Mismatch(_))));
        assert!(matches!(state.learn(&Reveal { positions: vec![1, 1] }), Err(Error::Mismatch(_))));
        assert!(matches!(state.learn(&Reveal { positions: vec![1, 0] }), Err(Error::Mismatch(_))));

        // Repeated points in an answer would inflate counts: refused.
        let (req2, request2) = Requester::new(&items, Variant::Cardinality, &mut rng).unwrap();
        let (mut answer, _) = Responder::respond(&items, &request2, Variant::Cardinality, &mut rng).unwrap();
        answer.theirs[1] = answer.theirs[0];
        assert_eq!(req2.finish(&answer).unwrap_err(), Error::InvalidPoint { what: "responder points", index: 1 });

        let huge = Request { variant: Variant::Cardinality, points: vec![[0u8; 32]; MAX_ITEMS + 1] };
        assert_eq!(
            Responder::respond(&items, &huge, Variant::Cardinality, &mut rng).unwrap_err(),
            Error::TooLarge { what: "request", len: MAX_ITEMS + 1, limit: MAX_ITEMS }
        );
    }

    #[test]
    fn empty_sets() {
        let none: Vec<Vec<u8>> = Vec::new();
        let some = vec![b"x".to_vec()];
        assert_eq!(run(&none, &some, Variant::Intersection, 1).2, Outcome::Intersection(vec![]));
        assert_eq!(run(&some, &none, Variant::Cardinality, 1).2, Outcome::Cardinality(0));
        assert_eq!(run(&none, &none, Variant::Intersection, 1).3, Some(vec![]));
    }

    /// Golden vectors: the hash to the group and a whole fixed-seed
    /// transcript. A change here breaks interoperability between versions.
    #[test]
    fn golden_vectors() {
        assert_eq!(hex::encode(hash_to_group(b"jointscore").compress().to_bytes()), GOLDEN_HASH,);
        let x: Vec<Vec<u8>> =
            ["invoice:acme:001", "invoice:acme:002", "order:shop:9"].map(|s| s.as_bytes().to_vec()).into();
        let y: Vec<Vec<u8>> =
            ["order:shop:9", "invoice:acme:002", "receipt:wh:5"].map(|s| s.as_bytes().to_vec()).into();
        let (request, response, outcome, learned) = run(&x, &y, Variant::Intersection, 2026);
        assert_eq!(outcome, Outcome::Intersection(vec![1, 2]));
        assert_eq!(learned, Some(vec![0, 1]));
        let mut h = Sha256::new();
        for p in request.points.iter().chain(&response.doubly).chain(&response.theirs) {
            h.update(p);
        }
        assert_eq!(hex::encode(h.finalize()), GOLDEN_TRANSCRIPT);
    }

    const GOLDEN_HASH: &str = "8448e389fd5090d58c8b74b49eb0f71a27a9eb1ef03af1fe0c4bb481a9567129";
    const GOLDEN_TRANSCRIPT: &str = "2eba572165af5bd997046e2c7a65a13dbc0ad2870d149d0733678130d18d7597";
}
