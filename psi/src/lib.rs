//! ECDH private set intersection over ristretto255.
//!
//! Two parties, a **requester** holding set `X` and a **responder** holding
//! set `Y`, learn about `X ∩ Y` and nothing else, in three messages:
//!
//! 1. requester → responder: `H(x)^a` for each of its items, in its order;
//! 2. responder → requester: those points raised to `b` (`H(x)^ab`), and
//!    `H(y)^b` for each of its items, shuffled;
//! 3. the requester raises the latter to `a` and matches `H(y)^ba` against
//!    `H(x)^ab`.
//!
//! `H` hashes an item to ristretto255 with SHA-512 under a
//! domain-separation tag ([`DOMAIN`]); `a` and `b` are fresh random scalars
//! per session ([`SessionKey`], zeroized on drop). Exponentiations run in
//! parallel on the rayon pool.
//!
//! # Variants and what each side learns
//!
//! | variant | requester learns | responder learns |
//! | --- | --- | --- |
//! | [`Variant::Intersection`] (also: membership of the requester's items in the responder's set) | which of its items are in `Y`; `|Y|` | `|X|` |
//! | [`Variant::Cardinality`] | `|X ∩ Y|`; `|Y|` | `|X|` |
//! | [`Variant::Intersection`] + [`Reveal`] (both learn) | as Intersection | which of its items are in `X`, and nothing else of `X` beyond `|X|` |
//! | batched multi-responder count ([`RequesterSession`], [`ResponderSession`]) | per queried item, how many of the `k` responders hold it (not which); `Σ|Y_i|`; `k` | each: `|X|` (the number of items queried, in batches); the relay: only blinded points and their numbers |
//!
//! In the cardinality variant the responder shuffles its answer to message 1
//! too, so the requester cannot tell which of its items matched; the
//! responder decides the most it reveals (`allowed` in
//! [`Responder::respond`]) and refuses an intersection request when only the
//! cardinality is allowed. The requester sends its points in random order,
//! so neither message 1 nor a later [`Reveal`] ties a point to a position in
//! its list. Every point a side multiplies by its key is decoded strictly
//! (canonical, a group element, not the identity); a point it only compares
//! with its own encodings is checked from its bytes (canonical, not the
//! identity; a non-point can never match). Repeated points are refused.
//! Set sizes are visible to both sides; pad sets with random dummy items
//! where sizes are sensitive.
//!
//! The batched multi-responder count is the services' form of the protocol
//! (stated in full in `psi/src/session.rs`): each responder keeps its `b_i`
//! for a whole session and sends its encoded set once; the relay (coordinator)
//! shuffles the union of those sets, forwards the requester's batches of at
//! most [`MAX_BATCH`] points to every responder, and shuffles each item's
//! `k` answers, so the requester learns per-item counts of holders.
//!
//! # Security
//!
//! Semi-honest parties (each follows the protocol; either may try to learn
//! more from what it sees). Security rests on the decisional Diffie-Hellman
//! assumption in the prime-order ristretto255 group, with `H` modelled as a
//! random oracle. A malicious responder could answer with other points than
//! it should (for example exponentiate only a subset), which changes the
//! requester's result but reveals nothing more of `X`; detecting that is out
//! of scope. Every received point that is multiplied by a secret key is
//! decoded with ristretto's canonical decoding first (non-canonical or
//! invalid encodings are refused), and multiplied in constant time.

mod asset;
mod error;
mod group;
mod protocol;
mod relay;
mod session;

pub use asset::{AssetId, AssetKind, ISSUER_LIMIT, NUMBER_LIMIT};
pub use error::{Error, Result};
pub use group::{DOMAIN, POINT_BYTES, SessionKey, hash_to_group};
pub use protocol::{MAX_ITEMS, Outcome, Request, Requester, Responder, ResponderState, Response, Reveal, Variant};
pub use relay::{interleave, merge_sets};
pub use session::{MAX_BATCH, RequesterSession, ResponderSession, points_from_bytes, points_to_bytes};
