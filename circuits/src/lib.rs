//! Credit models, the pushdown planner, the plaintext reference and TFHE
//! evaluation for jointscore.
//!
//! A [`Model`] is read from TOML and validated. [`reference::evaluate`]
//! defines what it means. A [`Plan`] splits it into what each party
//! computes in the clear and a joint [`Circuit`] that the coordinator
//! evaluates under TFHE ([`fhe`]); both plans reproduce the reference
//! exactly.
//!
//! [`alerts`] compiles monitoring alerts (conditions decided by one party in
//! the clear, comparisons across parties) into a circuit of the same kind,
//! run by the same evaluator.
//!
//! This crate has no network dependency: services wrap it.

pub mod alerts;
mod circuit;
mod error;
pub mod fhe;
pub mod lint;
mod model;
pub mod params;
mod plan;
mod program;
pub mod proof;
mod received;
pub mod reference;
pub mod wire;

pub use circuit::{Circuit, CircuitStats};
pub use error::{Error, Result};
pub use model::{
    Band, Bin, CROSS_BORDER_SELLER, CmpOp, Condition, CreditLine, Feature, FeatureKind, Knockout, MAX_BINS,
    MAX_CATEGORIES, MAX_REASONS, MODEL_FORMAT, Missing, Model, Output, file,
};
pub use plan::{PartyPlan, Plan, PlanKind, Slot};
pub use program::Program;
pub use received::{MODEL_FILE_LIMIT, model_for_id};
pub use reference::{Bundle, Record, Verdict};
