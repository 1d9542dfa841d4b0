//! Post-loan monitoring for jointscore: what a monitor spec says, how a
//! party computes the windowed features it reads, and how a spec becomes an
//! alert circuit. No network.
//!
//! - [`Spec`] is a validated `jointscore.monitor.v1` file: windowed
//!   features per party ([`WindowSpec`]) and alerts ([`Alert`]) whose
//!   conditions compare a window with a constant or with another window
//!   (possibly another party's) scaled by a percentage. Its [`Spec::id`] is
//!   what parties approve. An alert's outputs are one bit per loan and its
//!   severity, never the values.
//! - [`Window`] computes one integer from a subject's dated history
//!   ([`Snapshot`]s), in the clear, at the party that holds it.
//! - [`MonitorPlan`] compiles a spec: each party decides its own
//!   conditions in the clear and sends a verdict per alert, cross-party
//!   comparisons travel as order-preserving [`codes`], and the alert circuit
//!   (`jointscore_circuits::alerts`) runs under the lender's key.
//!   [`reference`] is what every evaluation must equal.
//! - [`drift`] reads a portfolio's shift between two secure-aggregation
//!   rounds as population stability indices.

pub mod codes;
pub mod drift;
mod error;
mod plan;
mod program;
mod spec;
mod window;

pub use error::{Error, Result};
pub use plan::{MonitorPlan, Outcome, Values, outcome, reference};
pub use program::Compiled;

/// The built-in example spec, `seller_watch`: a sales collapse (one
/// party), collections interrupted (one party), the three flows disagreeing
/// and collections beyond sales (joint).
pub const SELLER_WATCH: &str = include_str!("../../monitors/seller_watch.toml");
pub use spec::{
    Alert, Condition, LIMIT, MAX_CONDITIONS, MAX_DAYS, MONITOR_FORMAT, Op, Right, Severity, Spec, WindowSpec,
};
pub use window::{Aggregate, Day, Snapshot, Window, days_from_civil, days_in_month};
