//! Consortium statistics: what a secure-aggregation round counts.
//!
//! A [`StatsSpec`] (a TOML file) names a vector of counters — records held,
//! sums of a column, either overall or per segment (numeric bands or
//! category values) — and the round's deadline. Every party computes its own
//! vector from its own records with [`tally`]; the coordinator only ever
//! sees the masked vectors and their sum (see `jointscore-secagg`), and
//! [`StatsSpec::labels`] names each entry of that sum.
//!
//! A spec is identified by the SHA-256 of its canonical form
//! ([`StatsSpec::id`]); party operators approve statistics by id, as they
//! approve models, because a statistic decides what is learned about their
//! book.

mod error;
mod spec;
mod tally;

pub use error::{Result, StatsError};
pub use spec::{Counter, CounterKind, MAX_ENTRIES, Segment, StatsSpec};
pub use tally::{Tally, tally};
