//! The one error type of the aggregation protocol.

use crate::PartyId;

/// Why a message was refused or a round cannot go on. Errors that name a
/// party are that party's fault; the server counts the party as dropped and
/// the round goes on without it if enough remain.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// Parameters that cannot be used.
    #[error("secure aggregation configuration: {0}")]
    Config(String),
    /// Too few parties remain for the threshold, in the whole round or in
    /// one party's neighbourhood: the round is over, and no sum comes out.
    #[error("round aborted in {round}: {}", abort_detail(*party, *have, *need))]
    Abort {
        /// The round that could not complete.
        round: &'static str,
        /// The party whose neighbourhood (itself and its neighbours, or its
        /// neighbours alone for the holders of a dropped party's key) is
        /// short; `None` when the round as a whole is.
        party: Option<PartyId>,
        /// Parties left.
        have: usize,
        /// The threshold.
        need: usize,
    },
    /// Shares or unmasking material that involve a party outside the
    /// sender's neighbourhood in the round's graph.
    #[error("party {party} sent {round} material for party {other}, which is not its neighbour")]
    NotNeighbour {
        /// The sender.
        party: PartyId,
        /// The party it is not a neighbour of.
        other: PartyId,
        /// The round.
        round: &'static str,
    },
    /// A message from a party that is not a participant of this round.
    #[error("party {party} is not a participant of the {round} round")]
    NotInRound {
        /// The sender.
        party: PartyId,
        /// The round.
        round: &'static str,
    },
    /// A second message from a party in one round.
    #[error("party {party} already sent its {round} message")]
    Duplicate {
        /// The sender.
        party: PartyId,
        /// The round.
        round: &'static str,
    },
    /// A vector of the wrong length.
    #[error("party {party} sent {got} entries, the round aggregates {want}")]
    WrongLength {
        /// The sender.
        party: PartyId,
        /// Entries sent.
        got: usize,
        /// Entries expected.
        want: usize,
    },
    /// A public key that is not a canonical ristretto255 encoding, or the
    /// identity.
    #[error("party {party} advertised an invalid public key")]
    InvalidKey {
        /// The sender.
        party: PartyId,
    },
    /// A share ciphertext that fails authentication or does not hold what
    /// it should.
    #[error("the shares from party {party} fail authentication")]
    Authentication {
        /// The sender of the shares.
        party: PartyId,
    },
    /// A message that contradicts the round's state (a roster without the
    /// recipient, a survivor list naming unknown parties, missing shares).
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// Shares that do not reconstruct the advertised key.
    #[error("shares for party {party} do not reconstruct its advertised key")]
    Reconstruction {
        /// Whose key.
        party: PartyId,
    },
}

fn abort_detail(party: Option<PartyId>, have: usize, need: usize) -> String {
    match party {
        None => format!("{have} parties remain, the threshold is {need}"),
        Some(p) => format!("party {p}'s neighbourhood keeps {have} parties, the threshold is {need}"),
    }
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
