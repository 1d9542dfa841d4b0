//! Who masks with whom: the complete graph of Bonawitz et al., or the
//! random Harary graph of SecAgg+ (Bell et al., CCS 2020), derived from the
//! session so every participant computes the same one with no message.

use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use sha2::{Digest, Sha256};

use crate::PartyId;
use crate::keys::SessionId;

const GRAPH_LABEL: &[u8] = b"jointscore.secagg.v1.graph";

/// The communication graph of a round: a party agrees keys, masks pairwise
/// and shares its secrets only with its neighbours.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Graph {
    /// Every party is every other party's neighbour (Bonawitz et al.).
    Complete,
    /// The Harary graph H(k, n) over a permutation of the ids drawn from
    /// the session: parties sit on a ring in permuted order, and each is
    /// the neighbour of the `k / 2` parties on either side (`k` even,
    /// `2 ≤ k < n - 1`).
    Harary {
        /// Neighbours of each party.
        k: u32,
    },
}

/// The graph of one round, ready for neighbourhood queries.
#[derive(Clone, Debug)]
pub(crate) struct Topology {
    n: u32,
    /// `None` for the complete graph; else `k / 2`, the reach on the ring.
    half: Option<u32>,
    /// Ring position of each id (index 0 unused).
    position: Vec<u32>,
    /// Id at each ring position.
    order: Vec<PartyId>,
}

impl Topology {
    /// The graph of a round with `n` parties. A `Harary` graph whose `k`
    /// would reach all the way round the ring is the complete graph.
    pub(crate) fn new(n: u32, graph: Graph, session: &SessionId) -> Topology {
        let half = match graph {
            Graph::Harary { k } if k / 2 < n.saturating_sub(1) / 2 => Some(k / 2),
            _ => None,
        };
        let (mut position, mut order) = (Vec::new(), Vec::new());
        if let Some(half) = half {
            order = permutation(n, half, session);
            position = vec![0; n as usize + 1];
            for (p, &id) in order.iter().enumerate() {
                position[id as usize] = p as u32;
            }
        }
        Topology { n, half, position, order }
    }

    /// Whether `a` and `b` are distinct neighbours (false for ids outside
    /// `1..=n`).
    pub(crate) fn is_neighbour(&self, a: PartyId, b: PartyId) -> bool {
        if a == b || a == 0 || b == 0 || a > self.n || b > self.n {
            return false;
        }
        let Some(half) = self.half else { return true };
        let (pa, pb) = (self.position[a as usize], self.position[b as usize]);
        let d = pa.abs_diff(pb);
        d.min(self.n - d) <= half
    }

    /// `a`'s neighbours in ascending order (empty for an id outside
    /// `1..=n`).
    pub(crate) fn neighbours(&self, a: PartyId) -> Vec<PartyId> {
        if a == 0 || a > self.n {
            return Vec::new();
        }
        let Some(half) = self.half else { return (1..=self.n).filter(|&v| v != a).collect() };
        let p = self.position[a as usize];
        let mut out: Vec<PartyId> = (1..=half)
            .flat_map(|d| [(p + d) % self.n, (p + self.n - d) % self.n])
            .map(|q| self.order[q as usize])
            .collect();
        out.sort_unstable();
        out
    }

    /// Whether every party is every other's neighbour.
    pub(crate) fn is_complete(&self) -> bool {
        self.half.is_none()
    }
}

/// The ids `1..=n` in the ring order of the round: a Fisher–Yates shuffle
/// driven by ChaCha20 keyed with SHA-256 of a label, the session id and the
/// graph's parameters. Anyone holding the session id computes the same
/// order; it is as unpredictable as the session id is before the round.
fn permutation(n: u32, half: u32, session: &SessionId) -> Vec<PartyId> {
    let seed: [u8; 32] = Sha256::new()
        .chain_update(GRAPH_LABEL)
        .chain_update(session.0)
        .chain_update(n.to_be_bytes())
        .chain_update((2 * half).to_be_bytes())
        .finalize()
        .into();
    let mut rng = ChaCha20Rng::from_seed(seed);
    let mut order: Vec<PartyId> = (1..=n).collect();
    for i in (1..order.len()).rev() {
        let j = below(&mut rng, i as u64 + 1);
        order.swap(i, j as usize);
    }
    order
}

/// A uniform integer in `0..bound` (`bound` > 0): rejection sampling, since
/// a bare modulo would favour small values.
fn below(rng: &mut ChaCha20Rng, bound: u64) -> u64 {
    // The largest multiple of `bound` that fits: values below it are
    // uniform modulo `bound`.
    let limit = u64::MAX - u64::MAX % bound;
    loop {
        let x = rng.next_u64();
        if x < limit {
            return x % bound;
        }
    }
}

/// The smallest even `k` and a threshold `t` for a round of `n` parties of
/// which at most a fraction `corrupt` collude with the server and at most a
/// fraction `dropout` drop out, by the parameter search for SecAgg+ that
/// Google's implementation of Bell et al. (CCS 2020) runs
/// (`fcp/secagg/server/graph_parameter_finder.cc` in
/// google-parfait/federated-compute): statistical security
/// 2^-40 and failure probability 2^-20, plus this crate's own condition
/// that `t` be a strict majority of the `k + 1` share holders. `None` when
/// no `k < n - 1` qualifies: use the complete graph.
///
/// Conditions checked for each even `k`, with `h(N, K, k)` the
/// hypergeometric law of the number of marked parties among a party's `k`
/// neighbours when `K` of `N` are marked:
///
/// 1. the graph minus the corrupt and dropped parties stays connected
///    except with probability below 2^-41 (union bound over pairs of gaps
///    of `k / 2` consecutive bad parties on the ring);
/// 2. `t − 1 ≥ t1`, the smallest count of corrupt neighbours exceeded with
///    probability at most 2^-41 / n (`h(n, ⌊γn⌋, k)`);
/// 3. `t ≤ t2`, where fewer than `t2` surviving neighbours has probability at
///    most 2^-20 / n (`h(n, ⌈(1 − δ)n⌉, k)`);
/// 4. `2t > k + 1`.
///
/// The returned `t` is the smallest allowed, `max(t1 + 1, k / 2 + 1)`.
pub fn harary_parameters(n: u32, corrupt: f64, dropout: f64) -> Option<(u32, u32)> {
    if n < 4 || !(0.0..1.0).contains(&corrupt) || !(0.0..1.0).contains(&dropout) {
        return None;
    }
    let ln_factorial = ln_factorials(n);
    let ln_choose =
        |a: u32, b: u32| ln_factorial[a as usize] - ln_factorial[b as usize] - ln_factorial[(a - b) as usize];
    // Bounds on the bad parties; the small epsilon keeps float rounding
    // from moving a bound in the insecure direction.
    let nf = f64::from(n);
    let adversaries = ((corrupt + 1e-14) * nf).floor() as u32;
    let dropped = ((dropout + 1e-14) * nf).floor() as u32;
    let surviving = ((1.0 - dropout - 1e-14) * nf).ceil().min(nf) as u32;
    let bad = (adversaries + dropped).min(n);
    let security = -41.0 * std::f64::consts::LN_2;
    let correctness = -20.0 * std::f64::consts::LN_2 - nf.ln();
    let per_party_security = security - nf.ln();
    // ln Pr[X = x] for X ~ h(n, marked, k).
    let pmf = |marked: u32, k: u32, x: u32| -> f64 {
        if x > marked || x > k || k - x > n - marked {
            return f64::NEG_INFINITY;
        }
        ln_choose(marked, x) + ln_choose(n - marked, k - x) - ln_choose(n, k)
    };
    let mut k = 2;
    while k < n - 1 {
        // 1: some k/2 consecutive ring places all bad, in two places.
        let connected = k > bad || {
            let gaps = nf.ln() + f64::from(n - k - 1).ln() - std::f64::consts::LN_2;
            let all_bad = ln_factorial[bad as usize] + ln_factorial[(n - k) as usize]
                - ln_factorial[n as usize]
                - ln_factorial[(bad - k) as usize];
            gaps + all_bad < security
        };
        if connected {
            // 2: t1 = the smallest x with Pr[X > x] ≤ bound.
            let mut tail = 0.0f64;
            let mut t1 = k;
            while t1 > 0 && (tail + pmf(adversaries, k, t1).exp()).ln() <= per_party_security {
                tail += pmf(adversaries, k, t1).exp();
                t1 -= 1;
            }
            // 3: t2 = the largest x with Pr[X < x] ≤ bound.
            let mut head = 0.0f64;
            let mut t2 = 0;
            while t2 <= k && (head + pmf(surviving, k, t2).exp()).ln() <= correctness {
                head += pmf(surviving, k, t2).exp();
                t2 += 1;
            }
            let t = (t1 + 1).max(k / 2 + 1).max(2);
            if t <= t2 {
                return Some((k, t));
            }
        }
        k += 2;
    }
    None
}

/// `ln(i!)` for `i` in `0..=n`.
fn ln_factorials(n: u32) -> Vec<f64> {
    let mut out = Vec::with_capacity(n as usize + 1);
    let mut acc = 0.0;
    out.push(acc);
    for i in 1..=n {
        acc += f64::from(i).ln();
        out.push(acc);
    }
    out
}
