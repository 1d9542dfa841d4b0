//! The one error type of the lender.

use tonic::Code;

/// Everything that can go wrong at the lender.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LenderError {
    /// Key files are missing, unreadable or would be overwritten.
    #[error("key files: {0}")]
    Keys(String),
    /// The coordinator refused a call, or could not be reached.
    #[error("coordinator refused ({code:?}): {message}")]
    Refused {
        /// The status code.
        code: Code,
        /// Its message.
        message: String,
    },
    /// A decision job ended failed.
    #[error("job {job} failed ({code:?}): {reason}")]
    JobFailed {
        /// The job.
        job: String,
        /// The status code it failed with.
        code: Code,
        /// Why.
        reason: String,
    },
    /// A statistics spec that does not parse or breaks a rule.
    #[error("{0}")]
    Spec(String),
    /// A job did not end in time.
    #[error("job {0} did not finish in time")]
    Timeout(String),
    /// A PSI session refused a message or an input (an invalid asset id, a
    /// malformed answer, a list over the limits).
    #[error("PSI: {0}")]
    Psi(#[from] jointscore_psi::Error),
    /// A decision asked for a subject the lender has not aligned with a
    /// party of the model.
    #[error(
        "subject `{subject}` is not aligned with party `{party}`; run `jointscore lender align` with a list holding it"
    )]
    NotAligned {
        /// The subject.
        subject: String,
        /// The party without an alignment result for it.
        party: String,
    },
    /// The alignment store could not be opened, read or written.
    #[error("alignment store: {0}")]
    Alignment(String),
    /// A decision's signatures do not show that the parties asked
    /// contributed to exactly this job.
    #[error("job {job}: contributions not verified: {message}")]
    Unverified {
        /// The job.
        job: String,
        /// What is missing or wrong.
        message: String,
    },
    /// The coordinator's audit ledger could not be read as sent.
    #[error("audit ledger: {0}")]
    Audit(String),
    /// A background task failed.
    #[error("background task failed: {0}")]
    Task(String),
    /// Keys, model or result refused by the circuits crate.
    #[error(transparent)]
    Circuits(#[from] jointscore_circuits::Error),
    /// A client used for what it was not made for (a monitoring client
    /// asked for a decision, or the reverse).
    #[error("{0}")]
    Usage(String),
    /// The monitoring book (portfolios, rounds, alerts) could not be
    /// opened, read or written, or refused an entry.
    #[error("monitoring: {0}")]
    Monitor(String),
    /// The coordinator's URL is invalid or the connection failed.
    #[error("cannot reach the coordinator at {address}: {message}")]
    Connect {
        /// Its URL.
        address: String,
        /// What failed.
        message: String,
    },
}

impl LenderError {
    /// The gRPC status code behind this error, where there is one.
    pub fn code(&self) -> Option<Code> {
        match self {
            LenderError::Refused { code, .. } | LenderError::JobFailed { code, .. } => Some(*code),
            _ => None,
        }
    }
}

impl From<tonic::Status> for LenderError {
    fn from(s: tonic::Status) -> LenderError {
        LenderError::Refused { code: s.code(), message: s.message().to_string() }
    }
}

/// Result alias for this crate.
pub type Result<T, E = LenderError> = std::result::Result<T, E>;
