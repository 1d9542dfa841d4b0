//! Secure aggregation: the sum of many parties' vectors of counters, with no
//! party's own vector visible to anyone — the server included — and the sum
//! still coming out when parties drop out mid-round.
//!
//! The protocol follows Bonawitz et al., "Practical Secure Aggregation for
//! Privacy-Preserving Machine Learning" (CCS 2017), semi-honest variant, over
//! the complete graph of participants; it is built only from vetted
//! primitives:
//!
//! - key agreement: Diffie–Hellman on ristretto255 (`curve25519-dalek`), the
//!   shared point hashed with HKDF-SHA-256 under a domain-separation label,
//!   the session id and both party ids;
//! - masks: a ChaCha20 stream (`rand_chacha`) keyed by a 32-byte seed,
//!   expanded into the vector in Z_2^32;
//! - secret sharing: Shamir t-of-n over the ristretto255 scalar field
//!   (`curve25519-dalek`'s `Scalar` arithmetic), of each party's mask secret
//!   key and self-mask seed;
//! - shares travel through the server under ChaCha20-Poly1305, keyed by a
//!   second key agreement, with the sender and recipient bound in the nonce
//!   and associated data.
//!
//! Rounds ([`Client`] and [`Server`] are the two state machines):
//!
//! 0. **advertise** — each party sends two public keys (encryption, masking);
//! 1. **share keys** — each party Shamir-shares its masking secret key and a
//!    fresh self-mask seed among all advertisers, encrypting each share to its
//!    recipient;
//! 2. **masked input** — each party sends `x + PRG(b_u) + Σ±PRG(s_uv)`: its
//!    vector plus its self mask plus one pairwise mask per other party, with
//!    opposite signs on the two ends of each pair so they cancel in the sum;
//! 3. **unmask** — for every party that sent a masked input, the survivors
//!    reveal shares of its self-mask seed; for every party that shared keys
//!    but sent no input, shares of its masking key, so the server can remove
//!    the pairwise masks it left behind. A party never reveals both shares
//!    for the same party, which is why the server learns nothing but the sum.
//!
//! # Threat model and what each side learns
//!
//! Semi-honest server and parties (they follow the protocol, and try to learn
//! from what they see). With threshold `t`, the server learns the sum over
//! the parties whose masked input it received, and nothing else about any
//! party's vector, as long as it does not collude with `t` or more parties or
//! more; any coalition of fewer than `t` parties, with or without the server,
//! learns nothing beyond that sum and its own inputs. Parties learn the set
//! of participants in each round. The server learns which parties dropped
//! and when. A malicious server could invent parties, or lie about who
//! dropped to obtain both shares of one party; this crate does not stop it.
//! The network layer does, with the paper's active variant: parties sign
//! their advertised keys and the survivor list with their identity keys, and
//! check the others' signatures before sharing ([`Client::share_keys`]) and
//! before revealing ([`Client::check_survivors`], then [`Client::unmask`]);
//! see `party/src/aggregate.rs` and docs/secagg.md.
//!
//! Choosing `t`: it must exceed half the share holders (`t > n/2` on the
//! complete graph) so the server cannot ask two disjoint halves for the two
//! kinds of share of one party, and it bounds the dropouts tolerated: at
//! most `n - t` parties may drop over the whole round. [`Config::new`]
//! refuses `t ≤ n/2` and `t > n`.
//!
//! # SecAgg+ neighbourhoods
//!
//! [`Config::neighbourhood`] runs the same rounds on a sparse graph (Bell et
//! al., "Secure Single-Server Aggregation with (Poly)Logarithmic Overhead",
//! CCS 2020): each party agrees keys, masks pairwise and Shamir-shares its
//! secrets `t`-of-`k + 1` only with its `k` neighbours (and itself) on the
//! Harary graph H(k, n) over a permutation of the ids that SHA-256 of the
//! session id seeds ([`Graph`]); everyone computes the same graph from the
//! [`Config`], with no message. The messages, and the methods of [`Client`]
//! and [`Server`], are those of the complete graph, which is the case
//! `k = n − 1`. Every check that counts `t` parties counts them in the
//! neighbourhood concerned, and an abort names the party whose neighbourhood
//! fell short ([`Error::Abort`]); material for a non-neighbour is refused
//! ([`Error::NotNeighbour`]). [`Server::roster_for`] cuts a party's download
//! to its neighbourhood.
//!
//! Security is then probabilistic over the graph: Bell et al. bound the
//! chance that the corrupt parties hold `t` shares of an honest party, or
//! that the honest survivors' graph falls apart, when the graph is random
//! and independent of who is corrupt or drops. The graph is as random as the
//! session id: the coordinator, honest-but-curious, draws it fresh; one that
//! chose session ids to steer the graph is outside this model.
//! [`harary_parameters`] picks `k` and `t` for given rates of corrupt and
//! dropped parties; `t` stays a strict majority of `k + 1` for the reason
//! above. docs/secagg.md has the details and the measured costs.
//!
//! Arithmetic is modulo 2^32: counters must be reduced by the caller to fit
//! (a sum over many members of counts below 2^32 / n does not wrap).

mod client;
mod error;
mod graph;
mod keys;
mod prg;
mod server;
mod shamir;
mod simulate;
#[cfg(test)]
mod tests;

pub use client::Client;
pub use error::{Error, Result};
pub use graph::{Graph, harary_parameters};
pub use keys::{KeyPair, SessionId, agree, decode_public, open, seal};
pub use server::{Server, ServerView};
pub use simulate::{Dropouts, Outcome, simulate};

use std::collections::{BTreeMap, BTreeSet};

use graph::Topology;

/// A party's id in a round: 1..=n (0 is Shamir's secret position).
pub type PartyId = u32;

/// The parameters every participant of a round agrees on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Parties invited.
    pub n: u32,
    /// Shares needed to reconstruct a party's secret; also the fewest
    /// parties of each neighbourhood (a party and its neighbours) a round
    /// may continue with.
    pub threshold: u32,
    /// Length of every vector.
    pub dim: usize,
    /// Binds every key, share and mask to this round, and draws the graph.
    pub session: SessionId,
    /// Who masks with whom; private so only the constructors' checked
    /// values reach the state machines.
    graph: Graph,
}

impl Config {
    /// A round on the complete graph (Bonawitz et al.); refuses thresholds
    /// that are not a strict majority or exceed `n`, and empty vectors.
    pub fn new(n: u32, threshold: u32, dim: usize, session: SessionId) -> Result<Config> {
        if n < 2 || threshold > n || 2 * u64::from(threshold) <= u64::from(n) {
            return Err(Error::Config(format!(
                "threshold {threshold} must be a strict majority of {n} parties (and n ≥ 2)"
            )));
        }
        if dim == 0 {
            return Err(Error::Config("vectors must have at least one entry".into()));
        }
        Ok(Config { n, threshold, dim, session, graph: Graph::Complete })
    }

    /// A SecAgg+ round (Bell et al., CCS 2020): each party has `k`
    /// neighbours on the random Harary graph H(k, n) drawn from `session`,
    /// and shares its secrets `threshold`-of-`k + 1` among them and itself.
    /// Refuses an odd `k`, `k < 2` or `k ≥ n`, a threshold that is not a
    /// strict majority of `k + 1` or exceeds it, and empty vectors.
    /// `k = n − 1` is the complete graph. See [`harary_parameters`] for
    /// choosing `k` and `threshold`.
    pub fn neighbourhood(n: u32, k: u32, threshold: u32, dim: usize, session: SessionId) -> Result<Config> {
        if k == n.saturating_sub(1) {
            return Config::new(n, threshold, dim, session);
        }
        if k < 2 || k % 2 == 1 || k >= n {
            return Err(Error::Config(format!("the number of neighbours {k} must be even, at least 2 and below {n}")));
        }
        if threshold > k + 1 || 2 * threshold <= k + 1 {
            return Err(Error::Config(format!(
                "threshold {threshold} must be a strict majority of a neighbourhood of {} parties",
                k + 1
            )));
        }
        if dim == 0 {
            return Err(Error::Config("vectors must have at least one entry".into()));
        }
        Ok(Config { n, threshold, dim, session, graph: Graph::Harary { k } })
    }

    /// The round's graph.
    pub fn graph(&self) -> Graph {
        self.graph
    }

    /// `party`'s neighbours in ascending order: whom it agrees keys and
    /// masks with, and who holds its shares. Computing the graph costs
    /// O(n); the state machines do it once each.
    pub fn neighbours(&self, party: PartyId) -> Vec<PartyId> {
        self.topology().neighbours(party)
    }

    pub(crate) fn topology(&self) -> Topology {
        Topology::new(self.n, self.graph, &self.session)
    }
}

/// Round 0: a party's public keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Advertise {
    /// The sender.
    pub from: PartyId,
    /// Public key for encrypting shares (compressed ristretto255).
    pub encryption: [u8; 32],
    /// Public key for pairwise masks.
    pub masking: [u8; 32],
}

/// Round 0 → 1: every advertiser's keys, as the server relays them.
pub type Roster = BTreeMap<PartyId, Advertise>;

/// Round 1: a party's shares, one ciphertext per other advertiser.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shares {
    /// The sender.
    pub from: PartyId,
    /// Recipient → encrypted pair of shares.
    pub to: BTreeMap<PartyId, Vec<u8>>,
}

/// Round 1 → 2: the ciphertexts addressed to one party, by sender.
pub type Inbox = BTreeMap<PartyId, Vec<u8>>;

/// Round 2: a party's masked vector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Masked {
    /// The sender.
    pub from: PartyId,
    /// `x + masks` modulo 2^32.
    pub vector: Vec<u32>,
    /// Senders whose share pair failed authentication at this party. It
    /// did not mask with them, and the server counts them as dropped: a
    /// party that sends bad shares drops itself, not the round.
    pub rejected: BTreeSet<PartyId>,
}

/// Round 3: the shares a survivor reveals.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unmask {
    /// The sender.
    pub from: PartyId,
    /// For parties that sent a masked input: shares of their self-mask seed.
    pub seed_shares: BTreeMap<PartyId, [u8; 32]>,
    /// For parties that shared keys but sent no masked input: shares of
    /// their masking secret key.
    pub key_shares: BTreeMap<PartyId, [u8; 32]>,
}
