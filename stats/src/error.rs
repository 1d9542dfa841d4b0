//! The one error type of this crate.

/// What can be wrong with a spec or with a party's records for it. Messages
/// name the counter and column at fault and never a subject or a value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StatsError {
    /// The spec does not parse or breaks a rule.
    #[error("stats spec: {0}")]
    Spec(String),
    /// A record cannot be counted as the spec asks.
    #[error("counter `{counter}`: {message}")]
    Tally {
        /// The counter.
        counter: String,
        /// What is wrong, without subject ids or values.
        message: String,
    },
}

/// Result alias for this crate.
pub type Result<T, E = StatsError> = std::result::Result<T, E>;
