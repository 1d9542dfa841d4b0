//! The coordinator: a registry of parties and lender key sets, decision
//! requests as durable jobs, fan-out to parties, TFHE evaluation, and results
//! kept for the lender to fetch.
//!
//! A job moves `accepted → collecting → evaluating → done`, or to `failed`
//! with a gRPC status code and a reason. Every transition is written to the
//! [`JobStore`] before the work it announces starts, and on start the
//! coordinator re-runs every job the store holds in a non-terminal state, so
//! an accepted job completes or fails visibly across restarts; it is never
//! lost. Each contribution received is kept until the job ends, so a
//! recovered job asks only the parties that had not answered; a party asked
//! again by the same job sends the very answer it made, while the lender's
//! request is fresh (`request_max_age_s`). A job recovered later than that
//! fails naming the stale request, and the lender asks again under a new
//! request id.
//!
//! It also relays private set intersection sessions (`jointscore-psi`):
//! lenders align their subject lists with each party, and consortium
//! lenders check assets against every other lender's registry, the
//! coordinator seeing only blinded points.
//!
//! The coordinator never holds a secret key and never logs a plaintext: what
//! it sees are ciphertexts, key material that cannot decrypt, subject ids and
//! model ids.

mod access;
mod aggregate;
mod alerts;
mod commit;
mod config;
mod decisions;
mod drain;
mod engine;
mod error;
mod fit;
mod job;
mod keys;
mod ledger;
mod psi;
mod server;
mod service;
mod statistics;
mod store;
mod wire;
mod worker;

pub use config::{CoordinatorConfig, Evaluation};
pub use drain::Drained;
pub use error::{CoordinatorError, Result};
pub use job::{
    Attestation, DroppedParty, JobRecord, JobState, NewJob, NewStatsJob, SignedContribution, StatsEntry,
    StatsJobRecord, StatsOutcome, Timings,
};
pub use keys::SignedRegistration;
pub use server::CoordinatorNode;
pub use service::CoordinatorService;
pub use store::{
    Inserted, JobStore, KeptContribution, PgStore, PrivateServer, SqliteStore, TestDatabase, Write, open_store,
    postgres_url,
};
pub use worker::CoordinatorWorker;

/// The time in unix seconds (0 if the clock is before the epoch), for
/// membership expiry checks.
pub(crate) fn now_s() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
