//! The one error type of the identity crate.

/// What can go wrong with keys, the consortium file and signatures. No
/// message carries secret key material.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum IdentityError {
    /// A key file is missing, unreadable, malformed, readable by others, or
    /// would be overwritten.
    #[error("identity key: {0}")]
    Key(String),
    /// The consortium file is missing or invalid.
    #[error("consortium file: {0}")]
    Consortium(String),
    /// No member has this name.
    #[error("`{0}` is not a member of the consortium")]
    UnknownNode(String),
    /// The member exists with another role.
    #[error("`{node}` is a {role} in the consortium, not a {expected}")]
    WrongRole {
        /// The member.
        node: String,
        /// Its role.
        role: &'static str,
        /// The role required.
        expected: &'static str,
    },
    /// The member's identity is revoked.
    #[error("the identity of `{0}` is revoked")]
    Revoked(String),
    /// The member's identity has expired.
    #[error("the identity of `{node}` expired at {expires} (unix seconds)")]
    Expired {
        /// The member.
        node: String,
        /// When it expired.
        expires: u64,
    },
    /// A signature does not verify (over other bytes, by another key, or
    /// malformed).
    #[error("the signature of `{node}` on the {what} does not verify")]
    BadSignature {
        /// The claimed signer.
        node: String,
        /// What was signed.
        what: String,
    },
}

/// Result alias for this crate.
pub type Result<T, E = IdentityError> = std::result::Result<T, E>;
