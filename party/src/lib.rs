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

mod aggregate;
mod config;
mod error;
mod service;
mod store;

pub use config::PartyConfig;
pub use error::{PartyError, Result};
pub use service::{FAULT_ENV, PartyNode, PartyService};
pub use store::{ImportReport, RecordStore};
