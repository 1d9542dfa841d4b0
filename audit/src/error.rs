//! The one error type of the audit crate.

use jointscore_identity::IdentityError;

/// What verification or decoding of the ledger found. Every variant about an
/// entry names the first entry at fault, so an auditor knows where the log
/// stops being trustworthy.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuditError {
    /// The entry's content no longer matches its hash: it was edited after
    /// sealing.
    #[error("entry {seq} was edited: its content does not match its hash")]
    Edited {
        /// The edited entry.
        seq: u64,
    },
    /// The coordinator's signature on the entry does not verify: the entry
    /// was forged, or edited and re-sealed by another key.
    #[error("entry {seq} is not signed by the coordinator")]
    Unsigned {
        /// The entry.
        seq: u64,
    },
    /// An attestation carried by the entry does not verify: its signer is
    /// not a current member with the stated role at the entry's time, or it
    /// did not sign those bytes.
    #[error("entry {seq}: the attestation by `{node}` does not verify: {source}")]
    Attestation {
        /// The entry.
        seq: u64,
        /// The claimed attester.
        node: String,
        /// Why it does not verify.
        source: IdentityError,
    },
    /// The entry's `prev` is not the hash of the entry before it: an entry
    /// was deleted, inserted or moved before `seq` and the rest renumbered.
    #[error("the chain is broken before entry {seq}: its `prev` is not the previous entry's hash")]
    Broken {
        /// The first entry whose link does not hold.
        seq: u64,
    },
    /// The entry at position `index` carries another sequence number: an
    /// entry was deleted, inserted or moved before it.
    #[error("the entry at position {index} carries sequence number {seq}")]
    OutOfOrder {
        /// Its position in the log.
        index: u64,
        /// The sequence number it carries.
        seq: u64,
    },
    /// The log is shorter than a signed head says it was.
    #[error("the log has {len} entries but the coordinator's head says {head_len}: it was truncated")]
    Truncated {
        /// Entries present.
        len: u64,
        /// Entries the head vouches for.
        head_len: u64,
    },
    /// The entry at `len - 1` is not the one the head vouches for: the log
    /// was rewritten from there or earlier.
    #[error("the log's first {len} entries are not the ones the coordinator's head vouches for")]
    HeadMismatch {
        /// The head's length.
        len: u64,
    },
    /// An entry a node kept as a receipt is not in the log at its sequence
    /// number with the same content: it was deleted or rewritten.
    #[error("the receipt for entry {seq} is not in the log")]
    MissingReceipt {
        /// The receipt's sequence number.
        seq: u64,
    },
    /// An entry or head could not be decoded or has a malformed field.
    #[error("malformed audit data: {0}")]
    Malformed(String),
    /// An identity check outside an attestation failed: no coordinator in
    /// the consortium, or a head's signature does not verify.
    #[error(transparent)]
    Identity(#[from] IdentityError),
}

/// Result alias for this crate.
pub type Result<T, E = AuditError> = std::result::Result<T, E>;
