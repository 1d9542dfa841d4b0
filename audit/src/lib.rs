//! The jointscore audit ledger: an append-only, hash-chained log that the
//! coordinator signs and every member can verify.
//!
//! The coordinator appends one [`Entry`] per event — key registrations,
//! model approvals, decision requests, contributions, results, aggregation
//! rounds, PSI sessions, refusals. [`Entry::seal`] gives it the next
//! sequence number, the previous entry's hash, a SHA-256 over its canonical
//! form and the coordinator's ed25519 signature over that hash. An entry may
//! carry [`Attestation`]s: signatures that parties or lenders made over their
//! own messages (a party's signed contribution envelope), so anyone can check
//! who vouched for what. This crate is the protocol only; where the entries
//! are stored is the coordinator's business.
//!
//! # What it guarantees
//!
//! - With only the consortium file, any member can check the whole log
//!   ([`verify_chain`]): no entry was edited, inserted, deleted or moved
//!   without the coordinator's key, each entry is signed by the coordinator,
//!   and each attestation was made by a member holding the stated role —
//!   neither revoked nor expired at the entry's time. Errors name the first
//!   entry at fault.
//! - A node that keeps the entries concerning it ([`Entry::concerns`]) as
//!   receipts can check they are all still in the log, unchanged
//!   ([`verify_receipts`]), even if the coordinator re-sealed the rest.
//! - A member that keeps the latest signed [`Head`] detects a log cut short
//!   or rewritten before that point ([`verify_with_head`]).
//! - A party that keeps its own log of what it contributed finds a
//!   contribution the coordinator left out of the ledger, or holds in
//!   another form, and one in its name it never made ([`reconcile`]).
//!
//! # What it does not
//!
//! - The coordinator can omit an event entirely, or rewrite the log and
//!   re-sign it all with its own key: only receipts held by the nodes
//!   concerned, heads held by members, and the parties' own logs
//!   ([`reconcile`]) catch that. Without a head, a truncated log verifies.
//! - Entry times are the coordinator's clock; attestations are checked
//!   against membership at that time, so a coordinator that back-dates an
//!   entry can make an attestation by a since-expired member pass (revocation
//!   is not time-bound and is always enforced against the current file).
//! - The log holds names, ids and hashes, not ciphertexts, features or
//!   scores. But subject ids are in it, with which lender asked about whom
//!   under which model: the ledger is as sensitive as the coordinator's job
//!   store and must be protected like it.
//!
//! # Formats
//!
//! An entry's hash is over the length-prefixed [`ENTRY_DOMAIN`] and the
//! compact JSON of `{seq, prev, record}` (see [`Entry::compute_hash`]); the
//! coordinator signs the hash's hex digits under [`ENTRY_DOMAIN`], and a head
//! (length, 8 bytes little endian, then the hash's hex digits) under
//! [`HEAD_DOMAIN`]. Both tags carry the version. On the wire and on disk an
//! entry is one line of JSON ([`Entry::to_json`]), decoded strictly and
//! bounded by [`ENTRY_LIMIT`] ([`Entry::from_json`]).

mod chain;
mod entry;
mod error;
mod reconcile;
#[cfg(test)]
mod tests;

pub use chain::{Filter, HEAD_DOMAIN, Head, filter, verify_chain, verify_receipts, verify_with_head};
pub use entry::{Attestation, DETAIL_LIMIT, ENTRY_DOMAIN, ENTRY_LIMIT, Entry, EntryKind, Event, GENESIS};
pub use error::{AuditError, Result};
pub use reconcile::{Finding, PartyContribution, PartyLogCheck, PartyRecord, Reconciliation, Status, reconcile};
