//! The one error type of the party node, and its gRPC status codes.

use tonic::{Code, Status};

/// Everything that can go wrong at a party node. Messages never carry a
/// feature value or a ciphertext.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PartyError {
    /// The configuration file is missing or invalid.
    #[error("party configuration: {0}")]
    Config(String),
    /// The record store could not be opened, read or written.
    #[error("record store: {0}")]
    Store(String),
    /// A CSV import was refused; nothing from it was stored.
    #[error("import refused, nothing stored: {0}")]
    Import(String),
    /// The subject has no record at this party.
    #[error("subject `{subject}` is unknown to party `{party}`")]
    UnknownSubject {
        /// The subject asked about.
        subject: String,
        /// This party.
        party: String,
    },
    /// The model reveals one party's feature through an output (its lint
    /// fails) and the operator has not overridden that by name.
    #[error(
        "party `{party}` refuses model {model_id}: {detail}; its operator may allow it by adding the id to \
         `lint_override` after reading `jointscore model lint`"
    )]
    LintFailed {
        /// This party.
        party: String,
        /// The model asked for.
        model_id: String,
        /// Which output shows which feature.
        detail: String,
    },
    /// The operator has not approved the model, or not for this lender or
    /// this plan kind.
    #[error(
        "party `{party}` has not approved model {model_id}{scope}; its operator adds it to `approved_models` (a \
         monitor spec to `approved_monitors`) or an `[[approval]]`"
    )]
    NotApproved {
        /// This party.
        party: String,
        /// The model asked for.
        model_id: String,
        /// What is not approved: " for lender `x`", " for the coordinator-side plan", or "".
        scope: String,
    },
    /// A request's lender signature is missing or does not verify, or the
    /// key set it names was not registered by the same lender: the party
    /// contributes nothing to a request the lender did not make.
    #[error("party `{party}` refuses request {request_id}: {reason}")]
    Unauthenticated {
        /// This party.
        party: String,
        /// The request id as sent.
        request_id: String,
        /// What failed.
        reason: String,
    },
    /// A request the party answered already, or one signed too long ago (or
    /// in the future): a replay or a stale request.
    #[error("party `{party}` refuses request {request_id}: {reason}")]
    Replayed {
        /// This party.
        party: String,
        /// The request id as sent.
        request_id: String,
        /// Seen before, or how stale.
        reason: String,
    },
    /// The lender asked about the same subject more often than this party
    /// allows in its window.
    #[error(
        "party `{party}` refuses: too many decisions about this subject for lender `{lender}` ({limit} per {window_s} s)"
    )]
    RateLimited {
        /// This party.
        party: String,
        /// The lender.
        lender: String,
        /// Most decisions allowed per window.
        limit: u32,
        /// The window, in seconds.
        window_s: u64,
    },
    /// This party requires consent and holds none of the subject to the
    /// requesting lender for the purpose, valid at the request's time and
    /// not revoked. The message says no more than that (the lender is not
    /// told which of these failed); `detail` goes to the party's log.
    #[error("party `{party}`: no consent")]
    NoConsent {
        /// This party.
        party: String,
        /// Subject, lender, purpose and time looked up, for the party's log.
        detail: String,
    },
    /// The operator has not approved the statistics spec.
    #[error("party `{party}` has not approved stats spec {spec_id}; its operator adds the id to `approved_stats`")]
    StatsNotApproved {
        /// This party.
        party: String,
        /// The spec asked for.
        spec_id: String,
    },
    /// The operator has not approved the fit spec.
    #[error("party `{party}` has not approved fit spec {spec_id}; its operator adds the id to `approved_fits`")]
    FitNotApproved {
        /// This party.
        party: String,
        /// The spec asked for.
        spec_id: String,
    },
    /// Training subjects of a fit this party holds no record of.
    #[error("party `{party}` holds no record of {count} of the {rows} training subjects (first: {first})")]
    FitUnknownSubjects {
        /// This party.
        party: String,
        /// How many it lacks.
        count: usize,
        /// Training rows.
        rows: usize,
        /// The first few it lacks.
        first: String,
    },
    /// This party's records cannot be binned as the fit spec asks (a value
    /// of the wrong type, a feature no record holds).
    #[error("party `{party}` cannot bin its records for the fit: {message}")]
    FitData {
        /// This party.
        party: String,
        /// What is wrong (feature names and counts, no values).
        message: String,
    },
    /// A fit session step is malformed or out of order.
    #[error("fit session: {0}")]
    Fit(String),
    /// A secure-aggregation step names a round this node does not hold
    /// (never started, already finished, or lost in a restart).
    #[error("party `{party}` holds no aggregation round `{round}` at step {step}")]
    UnknownRound {
        /// This party.
        party: String,
        /// The round id.
        round: String,
        /// The step asked for.
        step: &'static str,
    },
    /// The coordinator relayed a secure-aggregation roster or survivor list
    /// the members did not sign as this node requires (a stranger, a revoked
    /// or expired member, a member of another role, a forged signature, too
    /// few signatures on the survivor list): the node leaves the round
    /// without sharing or revealing anything.
    #[error("aggregation round `{round}` refused: {reason}")]
    RoundRefused {
        /// The round id.
        round: String,
        /// What was not signed, naming the member.
        reason: String,
    },
    /// The spec is invalid, or this party's records cannot be counted as it
    /// asks.
    #[error(transparent)]
    Stats(#[from] jointscore_stats::StatsError),
    /// A PSI query names a session this node does not hold (never opened,
    /// or lost in a restart).
    #[error("party `{party}` holds no PSI session `{session}`; open a new one")]
    UnknownSession {
        /// This party.
        party: String,
        /// The session id asked for.
        session: String,
    },
    /// A PSI query names a session whose key has been dropped.
    #[error("PSI session `{session}` at party `{party}` has expired; open a new one")]
    SessionExpired {
        /// This party.
        party: String,
        /// The session id asked for.
        session: String,
    },
    /// A PSI query in a session whose daily encoding was for a UTC day that
    /// has ended: its key answers only within that day, so that everything
    /// it answers counts against that day's budget.
    #[error("PSI session `{session}` at party `{party}` was encoded for {day} (UTC), which has ended; open a new one")]
    PsiStaleDay {
        /// This party.
        party: String,
        /// The session id asked for.
        session: String,
        /// The session's day, `YYYY-MM-DD`.
        day: String,
    },
    /// With a consortium file: a PSI open the requester it names did not
    /// sign (unsigned, a forged or another member's signature, a member
    /// that is not a current lender, or for an asset check not a lender's
    /// registry node either): the coordinator's word for who asks is not
    /// taken.
    #[error("party `{party}` refuses a PSI session for `{requester}`: {reason}")]
    PsiUnauthenticated {
        /// This party.
        party: String,
        /// The requester as named.
        requester: String,
        /// What failed.
        reason: String,
    },
    /// A signed PSI open signed too long ago (or in the future), or one
    /// whose nonce this party has seen: stale or replayed.
    #[error("party `{party}` refuses a PSI session for `{requester}`: {reason}")]
    PsiReplayed {
        /// This party.
        party: String,
        /// The requester as named.
        requester: String,
        /// How stale, or seen before.
        reason: String,
    },
    /// A PSI query would take the requester past this party's daily
    /// budget of ids: refused whole, nothing answered.
    #[error(
        "party `{party}` refuses to answer {asked} more ids for `{requester}`: its PSI budget is {budget} ids per \
         requester per UTC day (`psi_daily_budget`), and {used} are used today"
    )]
    PsiBudget {
        /// This party.
        party: String,
        /// The requester.
        requester: String,
        /// Ids in the refused batch.
        asked: u64,
        /// Ids answered for the requester today.
        used: u64,
        /// The node's `psi_daily_budget`.
        budget: u64,
    },
    /// A duplicate-financing check reached a node without a registry.
    #[error("party `{party}` keeps no asset registry (`asset_registry` is off)")]
    NoRegistry {
        /// This party.
        party: String,
    },
    /// The PSI protocol refused a message (malformed or invalid points, an
    /// oversized batch).
    #[error("PSI: {0}")]
    Psi(#[from] jointscore_psi::Error),
    /// This node's set is larger than one PSI session carries.
    #[error("party `{party}` holds {items} items, more than a PSI session carries ({limit})")]
    TooManyItems {
        /// This party.
        party: String,
        /// Items in its set.
        items: usize,
        /// The session limit.
        limit: usize,
    },
    /// Too few parties would contribute to a decision for this one to.
    #[error(
        "party `{party}` contributes only when at least {required} parties do; the request leaves {present} present"
    )]
    TooFewPresent {
        /// This party.
        party: String,
        /// Parties that would contribute.
        present: usize,
        /// The node's `min_present_parties`.
        required: usize,
    },
    /// The node is at a limit; the caller may retry later.
    #[error("party busy: {0}")]
    Busy(String),
    /// The aggregation protocol refused a step.
    #[error("secure aggregation: {0}")]
    SecAgg(#[from] jointscore_secagg::Error),
    /// The request is malformed (wrong model id, unknown plan, oversized
    /// fields, a model that does not include this party).
    #[error("bad contribution request: {0}")]
    BadRequest(String),
    /// The requesting lender's key set is not known to the coordinator, or
    /// what it returned is not that key set.
    #[error("key set {key_id}: {message}")]
    Key {
        /// The key id in the request.
        key_id: String,
        /// What is wrong.
        message: String,
    },
    /// The coordinator could not be reached.
    #[error("coordinator at {address}: {message}")]
    Coordinator {
        /// Its URL.
        address: String,
        /// What failed.
        message: String,
    },
    /// The model, planner or encryption refused the work.
    #[error(transparent)]
    Circuits(#[from] jointscore_circuits::Error),
    /// The gRPC server failed.
    #[error("transport: {0}")]
    Transport(String),
}

impl From<rusqlite::Error> for PartyError {
    fn from(e: rusqlite::Error) -> PartyError {
        PartyError::Store(e.to_string())
    }
}

impl From<PartyError> for Status {
    fn from(e: PartyError) -> Status {
        use jointscore_circuits::Error as C;
        let code = match &e {
            PartyError::UnknownSubject { .. } => Code::NotFound,
            PartyError::NotApproved { .. }
            | PartyError::TooFewPresent { .. }
            | PartyError::LintFailed { .. }
            | PartyError::Replayed { .. } => Code::PermissionDenied,
            PartyError::Unauthenticated { .. } => Code::Unauthenticated,
            PartyError::RateLimited { .. } | PartyError::NoConsent { .. } => Code::PermissionDenied,
            PartyError::BadRequest(_) => Code::InvalidArgument,
            PartyError::Key { .. } => Code::FailedPrecondition,
            PartyError::StatsNotApproved { .. } => Code::PermissionDenied,
            PartyError::FitNotApproved { .. } => Code::PermissionDenied,
            PartyError::FitUnknownSubjects { .. } | PartyError::FitData { .. } => Code::FailedPrecondition,
            PartyError::Fit(_) => Code::InvalidArgument,
            PartyError::UnknownRound { .. } => Code::NotFound,
            PartyError::RoundRefused { .. } => Code::PermissionDenied,
            PartyError::Stats(jointscore_stats::StatsError::Spec(_)) => Code::InvalidArgument,
            // The party's own book cannot be counted as the spec asks.
            PartyError::Stats(_) => Code::FailedPrecondition,
            PartyError::SecAgg(jointscore_secagg::Error::Abort { .. }) => Code::FailedPrecondition,
            PartyError::SecAgg(_) => Code::InvalidArgument,
            PartyError::UnknownSession { .. } => Code::NotFound,
            PartyError::PsiUnauthenticated { .. } => Code::Unauthenticated,
            PartyError::PsiReplayed { .. } | PartyError::PsiBudget { .. } => Code::PermissionDenied,
            PartyError::SessionExpired { .. }
            | PartyError::PsiStaleDay { .. }
            | PartyError::NoRegistry { .. }
            | PartyError::TooManyItems { .. } => Code::FailedPrecondition,
            PartyError::Psi(_) => Code::InvalidArgument,
            PartyError::Busy(_) => Code::ResourceExhausted,
            PartyError::Coordinator { .. } => Code::Unavailable,
            PartyError::Circuits(
                C::Parse(_)
                | C::ModelTooLarge { .. }
                | C::ModelMismatch { .. }
                | C::Invalid { .. }
                | C::Plan(_)
                | C::UnknownParty(_),
            ) => Code::InvalidArgument,
            // The party's own record does not fit the model: the request is
            // fine, the data behind it is not.
            PartyError::Circuits(C::Input { .. } | C::UnknownFeature(_)) => Code::FailedPrecondition,
            PartyError::Circuits(_)
            | PartyError::Store(_)
            | PartyError::Config(_)
            | PartyError::Import(_)
            | PartyError::Transport(_) => Code::Internal,
        };
        Status::new(code, e.to_string())
    }
}

/// Result alias for this crate.
pub type Result<T, E = PartyError> = std::result::Result<T, E>;
