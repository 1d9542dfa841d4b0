//! Where a decision job is, as the lender reads it from the coordinator.

use jointscore_proto::v1 as pb;

/// A decision job's state, as the coordinator reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobStatus {
    /// Recorded; work not started.
    Accepted,
    /// The parties are asked for contributions.
    Collecting,
    /// The joint circuit runs.
    Evaluating,
    /// The encrypted result is ready to fetch.
    Done,
    /// Ended with a status code and a reason.
    Failed,
    /// A value this lender does not know (a newer coordinator).
    Unknown,
}

impl JobStatus {
    /// The state of `job`.
    pub fn of(job: &pb::Job) -> JobStatus {
        match pb::JobState::try_from(job.state) {
            Ok(pb::JobState::Accepted) => JobStatus::Accepted,
            Ok(pb::JobState::Collecting) => JobStatus::Collecting,
            Ok(pb::JobState::Evaluating) => JobStatus::Evaluating,
            Ok(pb::JobState::Done) => JobStatus::Done,
            Ok(pb::JobState::Failed) => JobStatus::Failed,
            _ => JobStatus::Unknown,
        }
    }

    /// Its name, as `lender show` prints it.
    pub fn name(self) -> &'static str {
        match self {
            JobStatus::Accepted => "accepted",
            JobStatus::Collecting => "collecting",
            JobStatus::Evaluating => "evaluating",
            JobStatus::Done => "done",
            JobStatus::Failed => "failed",
            JobStatus::Unknown => "unknown",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_wire_state_has_its_name_and_an_unknown_one_is_unknown() {
        let job = |state: i32| pb::Job { state, ..pb::Job::default() };
        assert_eq!(JobStatus::of(&job(pb::JobState::Done as i32)).name(), "done");
        assert_eq!(JobStatus::of(&job(pb::JobState::Failed as i32)), JobStatus::Failed);
        assert_eq!(JobStatus::of(&job(pb::JobState::Collecting as i32)).name(), "collecting");
        assert_eq!(JobStatus::of(&job(99)), JobStatus::Unknown);
    }
}
