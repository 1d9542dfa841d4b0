//! The one error type of the monitor crate.

use thiserror::Error;

/// What can go wrong reading a monitor spec or evaluating a window.
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The file is not TOML of the spec's shape (the message names the line).
    #[error("monitor spec: {0}")]
    Parse(String),
    /// A field's value is invalid.
    #[error("monitor spec, `{field}` (line {line}): {message}")]
    Invalid {
        /// The field, e.g. `alerts[1].conditions[0].left`.
        field: String,
        /// 1-based line in the file.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A window cannot be computed from a history (a field that is not an
    /// integer, a sum beyond 64 bits).
    #[error("window over `{field}`: {message}")]
    Window {
        /// The record field.
        field: String,
        /// What is wrong, with the day where a value is at fault.
        message: String,
    },
    /// A spec that cannot be compiled into an alert circuit, or inputs
    /// that do not fit it.
    #[error("monitor plan: {0}")]
    Plan(String),
    /// Two statistics results that cannot be compared for drift.
    #[error("drift: {0}")]
    Drift(String),
    /// Text that is not a calendar date `YYYY-MM-DD`.
    #[error("`{0}` is not a calendar date (YYYY-MM-DD)")]
    Date(String),
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
