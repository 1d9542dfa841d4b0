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
    /// Too few parties remain for the threshold: the round is over, and no
    /// sum comes out.
    #[error("round aborted in {round}: {have} parties remain, the threshold is {need}")]
    Abort {
        /// The round that could not complete.
        round: &'static str,
        /// Parties left.
        have: usize,
        /// The threshold.
        need: usize,
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

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
