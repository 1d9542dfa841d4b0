//! The one error type of the coordinator, and its gRPC status codes.

use tonic::{Code, Status};

/// Everything that can go wrong at the coordinator. Messages name the
/// party, key set, job or field at fault and never carry a plaintext.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CoordinatorError {
    /// The configuration file is missing or invalid.
    #[error("coordinator configuration: {0}")]
    Config(String),
    /// The job store failed.
    #[error("job store: {0}")]
    Store(String),
    /// A request is malformed: a field is missing, too long or
    /// inconsistent, or bytes do not decode.
    #[error("{0}")]
    Invalid(String),
    /// The request names a key set that is not registered, or one whose id
    /// does not match its key.
    #[error("{0}")]
    Precondition(String),
    /// No such job.
    #[error("job {0} does not exist")]
    UnknownJob(String),
    /// A request id already names a job with other content, or a key set
    /// is registered again with another evaluation key.
    #[error("{0} already exists with other content")]
    Conflict(String),
    /// The coordinator is shutting down (its store is closed); the call
    /// may be retried once it is back.
    #[error("the coordinator is shutting down; retry once it is back")]
    ShuttingDown,
    /// Too many decisions in flight.
    #[error("{0} decisions are in flight, the most this coordinator queues; retry later")]
    Busy(usize),
    /// A job is not finished yet.
    #[error("job {job} is {state}; its result is not ready")]
    NotReady {
        /// The job.
        job: String,
        /// Its state.
        state: &'static str,
    },
    /// A job failed; `code` is the status it failed with.
    #[error("{reason}")]
    JobFailed {
        /// The gRPC status code, as its integer.
        code: i32,
        /// Why.
        reason: String,
    },
    /// The caller may not do this (a duplicate-financing check from a
    /// requester that is not a consortium lender).
    #[error("{0}")]
    Denied(String),
    /// A signature a request must carry is missing or does not verify (a
    /// key set or a decision request not signed by a current lender).
    #[error("{0}")]
    Unauthenticated(String),
    /// A PSI query names a session the coordinator does not hold (never
    /// opened, or lost in a restart).
    #[error("no PSI session `{0}`; open a new one")]
    UnknownSession(String),
    /// A PSI query names a session that has expired.
    #[error("PSI session `{0}` has expired; open a new one")]
    SessionExpired(String),
    /// The PSI protocol refused a message (malformed points, an oversized
    /// batch, a responder's answer of the wrong size).
    #[error("PSI: {0}")]
    Psi(#[from] jointscore_psi::Error),
    /// Model, planner or TFHE refused the work.
    #[error(transparent)]
    Circuits(#[from] jointscore_circuits::Error),
    /// The gRPC server failed.
    #[error("transport: {0}")]
    Transport(String),
    /// The database refused a ledger entry that does not continue the
    /// chain: another writer (another front end on the same database)
    /// appended after the same entry first. The writer reseals and retries.
    #[error("audit ledger: {0}")]
    LedgerRace(String),
    /// A worker's lease on a job ran out and another worker claimed it:
    /// this one's end of the job is not written.
    #[error("job {0}: this worker's lease ran out and another worker took the job over")]
    LeaseLost(String),
}

impl From<rusqlite::Error> for CoordinatorError {
    fn from(e: rusqlite::Error) -> CoordinatorError {
        CoordinatorError::Store(e.to_string())
    }
}

impl From<jointscore_proto::ChunkError> for CoordinatorError {
    fn from(e: jointscore_proto::ChunkError) -> CoordinatorError {
        CoordinatorError::Invalid(e.to_string())
    }
}

impl CoordinatorError {
    /// The gRPC status code this error maps to.
    pub fn code(&self) -> Code {
        use jointscore_circuits::Error as C;
        match self {
            CoordinatorError::Invalid(_) => Code::InvalidArgument,
            CoordinatorError::Precondition(_) => Code::FailedPrecondition,
            CoordinatorError::UnknownJob(_) => Code::NotFound,
            CoordinatorError::Conflict(_) => Code::AlreadyExists,
            CoordinatorError::Busy(_) => Code::ResourceExhausted,
            CoordinatorError::ShuttingDown => Code::Unavailable,
            CoordinatorError::LedgerRace(_) | CoordinatorError::LeaseLost(_) => Code::Aborted,
            CoordinatorError::NotReady { .. } => Code::FailedPrecondition,
            CoordinatorError::Denied(_) => Code::PermissionDenied,
            CoordinatorError::Unauthenticated(_) => Code::Unauthenticated,
            CoordinatorError::UnknownSession(_) => Code::NotFound,
            CoordinatorError::SessionExpired(_) => Code::FailedPrecondition,
            CoordinatorError::Psi(_) => Code::InvalidArgument,
            CoordinatorError::JobFailed { code, .. } => Code::from_i32(*code),
            CoordinatorError::Circuits(
                C::Parse(_)
                | C::ModelTooLarge { .. }
                | C::ModelMismatch { .. }
                | C::Invalid { .. }
                | C::Plan(_)
                | C::UnknownParty(_)
                | C::Contribution { .. }
                | C::Proof(_)
                | C::Key(_)
                | C::Result(_),
            ) => Code::InvalidArgument,
            CoordinatorError::Circuits(_)
            | CoordinatorError::Config(_)
            | CoordinatorError::Store(_)
            | CoordinatorError::Transport(_) => Code::Internal,
        }
    }
}

impl From<CoordinatorError> for Status {
    fn from(e: CoordinatorError) -> Status {
        Status::new(e.code(), e.to_string())
    }
}

/// Result alias for this crate.
pub type Result<T, E = CoordinatorError> = std::result::Result<T, E>;
