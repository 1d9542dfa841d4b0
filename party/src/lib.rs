//! A party node: the records a data owner holds, and the gRPC service that
//! turns them into encrypted contributions.
//!
//! The node answers a contribution request only for models its operator
//! approved (by model id, in its configuration). For an approved model it
//! reads the subject's record from its own SQLite store, computes its plan
//! inputs in the clear — nothing leaves the node unencrypted — and encrypts
//! them under the requesting lender's compact public key, which it fetches
//! from the coordinator by key id and checks against that id.
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
mod error;
mod fault;
mod psi;
mod server;
mod service;
mod store;

pub use config::PartyConfig;
pub use error::{PartyError, Result};
#[cfg(feature = "fault-injection")]
pub use fault::FAULT_ENV;
pub use psi::MAX_SESSIONS;
pub use server::PartyNode;
pub use service::PartyService;
pub use store::{AssetReport, ImportReport, RecordStore};
