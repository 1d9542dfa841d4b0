//! The one error type of the circuits crate.

use thiserror::Error;

/// Everything that can go wrong while reading a model, planning it, building
/// contributions or evaluating a circuit.
///
/// Messages name the field (and, for model files, the line) so a person can
/// act on them; they never carry feature values, scores or ciphertexts.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// The model file is not valid TOML or does not match the schema.
    #[error("model file does not parse: {0}")]
    Parse(String),

    /// A model file sent with a request is larger than the nodes accept
    /// ([`crate::MODEL_FILE_LIMIT`]); it was not parsed.
    #[error("model file is {len} bytes, more than the {limit} a node accepts")]
    ModelTooLarge {
        /// Its size in bytes.
        len: usize,
        /// The limit.
        limit: usize,
    },

    /// A model file sent with a request means another model than the id
    /// the request names.
    #[error("model id {named} does not match the model sent, whose id is {actual}")]
    ModelMismatch {
        /// The id the request names.
        named: String,
        /// The id of the model actually sent.
        actual: String,
    },

    /// The model parses but is inconsistent; `field` names where, `line` is
    /// 1-based in the model file (0 when the model was not read from a file).
    #[error("model is invalid at line {line}, `{field}`: {message}")]
    Invalid {
        /// Dotted path of the offending field.
        field: String,
        /// 1-based line in the model source.
        line: usize,
        /// What is wrong and how to fix it.
        message: String,
    },

    /// An input for a feature has the wrong type, is missing where the model
    /// requires it, or does not fit the feature's width.
    #[error("input for feature `{feature}` is rejected: {message}")]
    Input {
        /// The feature the input was given for.
        feature: String,
        /// Why it was rejected.
        message: String,
    },

    /// An input names a feature the model does not have.
    #[error("input names unknown feature `{0}`")]
    UnknownFeature(String),

    /// A party name that the model does not declare.
    #[error("unknown party `{0}`")]
    UnknownParty(String),

    /// The model cannot be compiled to a circuit of the requested plan.
    #[error("model cannot be planned: {0}")]
    Plan(String),

    /// A contribution does not have the shape the plan expects.
    #[error("contribution from party `{party}` is malformed: {message}")]
    Contribution {
        /// The contributing party.
        party: String,
        /// What is wrong with it.
        message: String,
    },

    /// The output policy forbids decrypting what was asked for.
    #[error("output `{0}` is not revealed by this model's output policy")]
    Forbidden(String),

    /// A key's bytes are malformed, use other parameters, or do not belong
    /// to the key set they are presented with.
    #[error("key rejected: {0}")]
    Key(String),

    /// An encrypted result's bytes do not have the shape its plan declares.
    #[error("encrypted result is malformed: {0}")]
    Result(String),

    /// A contribution's zero-knowledge proof does not verify, is missing
    /// where the consortium requires one, or the CRS is unusable.
    #[error("proof refused: {0}")]
    Proof(String),
    /// An error reported by the TFHE library.
    #[error("TFHE operation failed: {0}")]
    Fhe(String),

    /// An internal invariant of the circuit failed; this is a bug.
    #[error("internal circuit invariant violated: {0}")]
    Internal(String),
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
