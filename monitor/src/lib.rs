//! Post-loan monitoring for jointscore: what a monitor spec says and how a
//! party computes the windowed features it reads. No network, no TFHE.
//!
//! - [`Spec`] is a validated `jointscore.monitor.v1` file: windowed
//!   features per party ([`WindowSpec`]) and alerts ([`Alert`]) whose
//!   conditions compare a window with a constant or with another window
//!   (possibly another party's) scaled by a percentage. Its [`Spec::id`] is
//!   what parties approve. An alert's outputs are one bit per loan and its
//!   severity, never the values.
//! - [`Window`] computes one integer from a subject's dated history
//!   ([`Snapshot`]s), in the clear, at the party that holds it.
//!
//! The encrypted evaluation of joint alerts, portfolios and monitoring
//! rounds are not built yet (docs/monitor.md).

mod error;
mod spec;
mod window;

pub use error::{Error, Result};

/// The built-in example spec, `seller_watch`: a sales collapse (one
/// party), collections interrupted (one party), the three flows disagreeing
/// and collections beyond sales (joint).
pub const SELLER_WATCH: &str = include_str!("../../monitors/seller_watch.toml");
pub use spec::{
    Alert, Condition, LIMIT, MAX_CONDITIONS, MAX_DAYS, MONITOR_FORMAT, Op, Right, Severity, Spec, WindowSpec,
};
pub use window::{Aggregate, Day, Snapshot, Window, days_from_civil, days_in_month};
