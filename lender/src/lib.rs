//! The lender: generates and keeps its TFHE key set, registers the public
//! and evaluation keys with the coordinator, asks for decisions, and
//! decrypts the results.
//!
//! The secret key never leaves the lender: it is written owner-only
//! (`0600`), held in memory that is wiped on drop, and nothing in this crate
//! sends it anywhere.

mod client;
mod error;
mod keys;
mod stats;

pub use client::{DEFAULT_WAIT, Decision, Lender, Phases};
pub use error::{LenderError, Result};
pub use keys::{KeyFiles, LenderKeys};
pub use stats::{StatsRequester, StatsResult};
/// gRPC status codes, as jobs and refusals carry them.
pub use tonic::Code;
