//! The lender: generates and keeps its TFHE key set, registers the public
//! and evaluation keys with the coordinator, asks for decisions, and
//! decrypts the results.
//!
//! Before asking about a subject, the lender aligns its subject list with
//! each party by private set intersection ([`PsiRequester::align`]), keeps
//! the answers ([`AlignmentStore`]), and names the parties that do not hold
//! a subject in its decision request, so those are never asked about it. A
//! consortium lender also checks assets for duplicate financing
//! ([`PsiRequester::check_assets`]).
//!
//! It also fits scorecards jointly with the parties over the services
//! ([`fit()`]): its labels never leave it unencrypted.
//!
//! The secret key never leaves the lender: it is written owner-only
//! (`0600`), held in memory that is wiped on drop, and nothing in this crate
//! sends it anywhere.

mod alignment;
mod audit;
mod client;
mod error;
mod fit;
mod keys;
mod monitor;
mod psi;
mod state;
mod stats;

pub use alignment::AlignmentStore;
pub use audit::{MAX_ENTRIES, fetch_ledger};
pub use client::{DEFAULT_WAIT, Decision, Lender, Phases};
pub use error::{LenderError, Result};
pub use fit::{FitEvent, FitIdentity, FitOutcome, fit};
pub use keys::{KeyFiles, LenderKeys};
pub use monitor::{
    DEFAULT_WINDOW, LoanOutcome, LoanResult, MonitorBook, Portfolio, RaisedAlert, RoundReport, Schedule, run_round,
};
pub use psi::{Alignment, AssetCheck, MAX_LENDERS, PsiRequester};
pub use state::JobStatus;
pub use stats::{StatsRequester, StatsResult};
/// gRPC status codes, as jobs and refusals carry them.
pub use tonic::Code;
