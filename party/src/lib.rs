//! A party node: the records a data owner holds, and the gRPC service that
//! turns them into encrypted contributions.
//!
//! The node does not trust the coordinator. It answers a contribution
//! request only when the request is the lender's own words — signed by a
//! current lender of its consortium file, fresh, never answered before —
//! under a key set the same lender signed, for a model (and plan kind) its
//! operator approved for that lender. It then reads the subject's record
//! from its own SQLite store, computes its plan inputs in the clear —
//! nothing leaves the node unencrypted — encrypts them under the lender's
//! compact public key, and records the request and its own signed envelope
//! in its hash-chained log (`log`). With `require_consent` it contributes
//! only for a subject that consented to the requesting lender, and names
//! the consent it relied on in its envelope (`consent`).
//!
//! For consortium statistics the node takes part in secure-aggregation
//! rounds (`jointscore-secagg`) for specs its operator approved: it tallies
//! its own book and sends only masked vectors and key shares.
//!
//! For private set intersection (`jointscore-psi`) the node answers as
//! responder: lenders align their subject lists with its subjects, and on a
//! consortium lender's node (`asset_registry`) other lenders check assets
//! against its registry of financed assets. Either way the node sends only
//! exponentiated hashes and learns only how many items were queried.

mod aggregate;
mod config;
mod consent;
mod error;
mod fault;
mod fit;
mod log;
mod psi;
mod server;
mod service;
mod store;

pub use config::{Approval, PartyConfig};
pub use consent::{Consent, ConsentReport, Purpose};
pub use error::{PartyError, Result};
#[cfg(feature = "fault-injection")]
pub use fault::FAULT_ENV;
pub use log::{Claim, ClaimLimits, ContributionRecord, GENESIS, LogBroken, LogEntry, LogKind, verify_entries};
pub use psi::MAX_SESSIONS;
pub use psi::store::date as utc_date;
pub use server::PartyNode;
pub use service::PartyService;
pub use store::{AssetReport, ImportReport, RecordStore};
