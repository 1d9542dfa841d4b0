//! Decision jobs as the store keeps them.

use jointscore_circuits::PlanKind;
use jointscore_identity::LenderRequest;
use serde::{Deserialize, Serialize};

/// Where a job is. `Done` and `Failed` are terminal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobState {
    /// Recorded; work not started.
    Accepted,
    /// Asking the parties for contributions.
    Collecting,
    /// Running the joint circuit.
    Evaluating,
    /// The encrypted result is stored.
    Done,
    /// Ended with a status code and a reason.
    Failed,
}

impl JobState {
    /// Its name in the store and in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Accepted => "accepted",
            JobState::Collecting => "collecting",
            JobState::Evaluating => "evaluating",
            JobState::Done => "done",
            JobState::Failed => "failed",
        }
    }

    /// The state named `name`, if any.
    pub fn parse(name: &str) -> Option<JobState> {
        [JobState::Accepted, JobState::Collecting, JobState::Evaluating, JobState::Done, JobState::Failed]
            .into_iter()
            .find(|s| s.as_str() == name)
    }

    /// Whether the job will not change any more.
    pub fn is_terminal(self) -> bool {
        matches!(self, JobState::Done | JobState::Failed)
    }
}

/// What a lender asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewJob {
    /// The lender's idempotency key.
    pub request_id: String,
    /// The lender's key set.
    pub key_id: String,
    /// The model (its TOML is in the store under this id).
    pub model_id: String,
    /// The subject decided for.
    pub subject: String,
    /// Which plan.
    pub plan: PlanKind,
    /// Parties the lender's alignment found not to hold the subject: not
    /// asked, their features missing. Sorted, no repeats.
    pub absent: Vec<String>,
    /// The lender's attestation over the request, forwarded unchanged to
    /// the parties. Not part of what makes a retry "the same request": a
    /// retry signs afresh, and the first attestation stands.
    pub attestation: Attestation,
}

impl NewJob {
    /// Whether `other` asks for the same thing (its attestation aside).
    pub fn same_request(&self, other: &NewJob) -> bool {
        (&self.request_id, &self.key_id, &self.model_id, &self.subject, self.plan, &self.absent)
            == (&other.request_id, &other.key_id, &other.model_id, &other.subject, other.plan, &other.absent)
    }

    /// The request in the lender's words, as it signed it.
    pub fn lender_request(&self) -> LenderRequest {
        LenderRequest {
            request_id: self.request_id.clone(),
            lender: self.attestation.lender.clone(),
            key_id: self.key_id.clone(),
            model_id: self.model_id.clone(),
            plan: self.plan.name().into(),
            subject: self.subject.clone(),
            absent: self.absent.clone(),
            time_ms: self.attestation.time_ms,
            salt: self.attestation.salt.clone(),
        }
    }
}

/// What a lender adds to its request: who it is, when it asked, the salt
/// of the ledger's commitments, and its signature over all of it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attestation {
    /// The lender's consortium member name.
    pub lender: String,
    /// When it signed, in milliseconds since the unix epoch.
    pub time_ms: u64,
    /// The commitments' salt, 64 hex digits.
    pub salt: String,
    /// The ed25519 signature, hex; empty for a lender without an identity.
    pub signature: String,
}

/// A job as stored.
#[derive(Clone, Debug)]
pub struct JobRecord {
    /// Its id.
    pub job_id: String,
    /// What was asked.
    pub request: NewJob,
    /// Where it is.
    pub state: JobState,
    /// For a failed job, the gRPC status code; 0 otherwise.
    pub code: i32,
    /// For a failed job, why.
    pub reason: String,
    /// Costs measured while running it.
    pub timings: Timings,
    /// Size of the stored result.
    pub result_bytes: u64,
    /// Once done: the contributing parties' signed envelopes, as received.
    pub contributions: Vec<SignedContribution>,
}

impl JobRecord {
    /// A job just accepted, as the store holds it once inserted (so the
    /// insert need not read it back).
    pub(crate) fn accepted(job_id: String, request: NewJob) -> JobRecord {
        JobRecord {
            job_id,
            request,
            state: JobState::Accepted,
            code: 0,
            reason: String::new(),
            timings: Timings::default(),
            result_bytes: 0,
            contributions: Vec::new(),
        }
    }
}

/// A party's signature over its contribution envelope
/// (`jointscore_identity::ContributionEnvelope`); the envelope's other
/// fields are the job's own.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedContribution {
    /// The party.
    pub party: String,
    /// SHA-256 of its ciphertext list, hex.
    pub ciphertext_sha256: String,
    /// When it signed (unix milliseconds).
    pub signed_ms: u64,
    /// The ed25519 signature, hex.
    pub signature: String,
    /// The consent record the party relied on, empty where it keeps none.
    #[serde(default)]
    pub consent: String,
}

/// Costs of one job, all measured at the coordinator except
/// `party_encrypt_us`, which parties report.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timings {
    /// From the start of collection to the last contribution decoded.
    pub collect_us: u64,
    /// The slowest party's own compute-and-encrypt time.
    pub party_encrypt_us: u64,
    /// Expanding contributions and running the joint circuit.
    pub evaluate_us: u64,
    /// Bootstraps in the joint circuit (static count of the plan).
    pub pbs: u64,
    /// Bytes received from all parties.
    pub contribution_bytes: u64,
    /// Strict mode: the slowest party's proof verification (part of
    /// `collect_us`); 0 otherwise.
    #[serde(default)]
    pub verify_us: u64,
}

/// What a requester asked for: one secure-aggregation round for a spec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewStatsJob {
    /// The requester's idempotency key.
    pub request_id: String,
    /// The spec's id (SHA-256 of its canonical form).
    pub spec_id: String,
    /// The spec file, as sent.
    pub spec_toml: String,
    /// The lender member that asked, under mutual TLS (only it may read
    /// the job); `None` without it.
    pub owner: Option<String>,
}

/// A statistics job as stored. It moves `accepted → collecting → done`, or
/// to `failed`; `collecting` covers the whole round.
#[derive(Clone, Debug)]
pub struct StatsJobRecord {
    /// Its id.
    pub job_id: String,
    /// What was asked.
    pub request: NewStatsJob,
    /// Where it is.
    pub state: JobState,
    /// For a failed job, the gRPC status code; 0 otherwise.
    pub code: i32,
    /// For a failed job, why.
    pub reason: String,
    /// What the round produced (for a failed round: who dropped and why).
    pub outcome: StatsOutcome,
}

/// The end of a round: the labelled sum, who is in it, who dropped.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct StatsOutcome {
    /// One entry per counter entry, in the spec's order (done jobs only).
    pub entries: Vec<StatsEntry>,
    /// Parties whose vectors are in the sum.
    pub included: Vec<String>,
    /// Parties invited but not in the sum.
    pub dropped: Vec<DroppedParty>,
    /// Duration of the round at the coordinator.
    pub round_us: u64,
}

/// One labelled entry of a sum.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsEntry {
    /// The entry's label (see `jointscore_stats::StatsSpec::labels`).
    pub label: String,
    /// The sum over the included parties.
    pub value: u64,
}

/// A party that left a round, and where.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DroppedParty {
    /// The party's name.
    pub party: String,
    /// The step it did not complete: advertise, share_keys, masked_input
    /// or unmask.
    pub step: String,
    /// Why, as the coordinator saw it (bounded; never a value).
    pub reason: String,
}
