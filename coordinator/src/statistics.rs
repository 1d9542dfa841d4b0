//! Consortium statistics requests: the rules a request must pass before it
//! becomes a durable secure-aggregation job.

use std::sync::Arc;

use jointscore_stats::StatsSpec;

use crate::engine::Engine;
use crate::error::{CoordinatorError, Result};
use crate::job::{NewStatsJob, StatsJobRecord};
use crate::store::Inserted;

impl Engine {
    /// Accepts a statistics request as a job and starts its round, or
    /// answers the job its request id already names.
    ///
    /// Another requester's request id, or the same id for another spec, is
    /// `ALREADY_EXISTS` without saying whose job it names. A spec that does
    /// not parse or is not the spec its id names is `INVALID_ARGUMENT`; a
    /// full queue `RESOURCE_EXHAUSTED` (a retry is answered all the same).
    pub(crate) fn accept_stats(self: &Arc<Self>, new: NewStatsJob) -> Result<StatsJobRecord> {
        let existing = |job: StatsJobRecord| {
            if job.request.spec_id != new.spec_id || job.request.owner != new.owner {
                return Err(CoordinatorError::Conflict(format!("request id `{}`", new.request_id)));
            }
            Ok(job)
        };
        if let Some(job) = self.store.stats_job_by_request(&new.request_id)? {
            return existing(job);
        }
        let spec = StatsSpec::from_toml(&new.spec_toml).map_err(|e| CoordinatorError::Invalid(e.to_string()))?;
        if spec.id() != new.spec_id {
            return Err(CoordinatorError::Invalid(format!(
                "spec id {} does not match the spec sent, whose id is {}",
                new.spec_id,
                spec.id()
            )));
        }
        let permit = self.reserve()?;
        match self.store.insert_stats_job(&new)? {
            Inserted::New(job) => {
                tracing::info!(job = %job.job_id, spec = %new.spec_id, "statistics job accepted");
                self.spawn_stats(job.clone(), permit);
                Ok(job)
            }
            Inserted::Existing(job) => existing(job),
        }
    }

    /// The statistics job `job_id` as its requester may see it: another
    /// requester gets what a job that does not exist gets.
    pub(crate) fn own_stats_job(&self, caller: Option<&str>, job_id: &str) -> Result<StatsJobRecord> {
        let unknown = || CoordinatorError::UnknownJob(job_id.to_string());
        let job = self.store.stats_job(job_id)?.ok_or_else(unknown)?;
        if caller.is_some() && job.request.owner.as_deref() != caller {
            return Err(unknown());
        }
        Ok(job)
    }
}
