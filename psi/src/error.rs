//! The one error type of the PSI crate.

use thiserror::Error;

/// What can go wrong in a PSI session; no message carries an item.
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// A received point is not a canonical ristretto255 encoding.
    #[error("point {index} of {what} is not a valid ristretto255 encoding")]
    InvalidPoint {
        /// Which list.
        what: &'static str,
        /// Position in it.
        index: usize,
    },
    /// A list is longer than the session allows.
    #[error("{what} has {len} items; the limit is {limit}")]
    TooLarge {
        /// Which list.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// An asset identity that cannot be normalised.
    #[error("invalid asset id: {0}")]
    InvalidAsset(String),
    /// A message does not fit the session it is used in.
    #[error("message does not match the session: {0}")]
    Mismatch(String),
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
