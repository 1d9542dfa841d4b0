//! Decision jobs as the store keeps them.

use jointscore_circuits::PlanKind;
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
}
