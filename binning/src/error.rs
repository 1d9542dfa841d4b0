//! The one error type of the binning crate.

use thiserror::Error;

/// What can go wrong in a binning round; messages carry no labels or values.
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// Bytes that are not a canonical encoding.
    #[error("invalid {0} encoding")]
    InvalidEncoding(&'static str),
    /// A decrypted sum is beyond the range the table was built for.
    #[error("decrypted value exceeds {0}: wrong key or tampered sums")]
    OutOfRange(u64),
    /// Inputs of mismatched shape.
    #[error("shape mismatch: {0}")]
    Shape(String),
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
