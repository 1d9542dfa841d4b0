//! Requesting consortium statistics: one secure-aggregation round over the
//! registered parties, run by the coordinator as a durable job.

use std::time::{Duration, Instant};

use jointscore_proto::v1::coordinator_client::CoordinatorClient;
use jointscore_proto::v1::{JobState, RunStatsRequest, StatsJob, WaitJobRequest};
use jointscore_stats::StatsSpec;
use tonic::Code;
use tonic::transport::Channel;

use jointscore_net::Target;

use crate::client::coordinator_client;
use crate::error::{LenderError, Result};

/// Whoever asks for statistics (a lender, a platform, a regulator).
pub struct StatsRequester {
    client: CoordinatorClient<Channel>,
}

/// A finished round.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatsResult {
    /// The coordinator's job.
    pub job_id: String,
    /// `(label, sum)` per entry, in the spec's order.
    pub entries: Vec<(String, u64)>,
    /// Parties whose vectors are in the sums.
    pub included: Vec<String>,
    /// `(party, step, reason)` for each party invited but not included.
    pub dropped: Vec<(String, String, String)>,
    /// The round's duration at the coordinator.
    pub round: Duration,
}

impl StatsRequester {
    /// Connects to the coordinator `target` names: a URL, or a [`Target`]
    /// with mutual TLS.
    pub async fn connect(target: impl Into<Target>) -> Result<StatsRequester> {
        Ok(StatsRequester { client: coordinator_client(&target.into()).await? })
    }

    /// Submits a round for `spec_toml` under `request_id` (the same id
    /// returns the same job), without waiting.
    pub async fn submit(&mut self, spec_toml: &str, request_id: &str) -> Result<StatsJob> {
        let spec = StatsSpec::from_toml(spec_toml).map_err(|e| LenderError::Spec(e.to_string()))?;
        let request =
            RunStatsRequest { request_id: request_id.into(), spec_id: spec.id(), spec_toml: spec_toml.into() };
        Ok(self.client.run_stats(request).await?.into_inner())
    }

    /// Waits for a job to end (long polls); a failed round is an error
    /// carrying its code and the reason, which names every party that
    /// dropped.
    pub async fn wait(&mut self, job_id: &str, patience: Duration) -> Result<StatsResult> {
        let deadline = Instant::now() + patience;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let wait_ms = u32::try_from(left.as_millis()).unwrap_or(u32::MAX).min(30_000);
            let job = self.client.wait_stats(WaitJobRequest { job_id: job_id.into(), wait_ms }).await?.into_inner();
            match JobState::try_from(job.state) {
                Ok(JobState::Done) => return Ok(result(job)),
                Ok(JobState::Failed) => {
                    return Err(LenderError::JobFailed {
                        job: job_id.into(),
                        code: Code::from_i32(job.code),
                        reason: job.reason,
                    });
                }
                _ if Instant::now() >= deadline => return Err(LenderError::Timeout(job_id.into())),
                _ => {}
            }
        }
    }

    /// Submits and waits.
    pub async fn run(&mut self, spec_toml: &str, request_id: &str, patience: Duration) -> Result<StatsResult> {
        let job = self.submit(spec_toml, request_id).await?;
        self.wait(&job.job_id, patience).await
    }
}

fn result(job: StatsJob) -> StatsResult {
    StatsResult {
        job_id: job.job_id,
        entries: job.entries.into_iter().map(|e| (e.label, e.value)).collect(),
        included: job.included,
        dropped: job.dropped.into_iter().map(|d| (d.party, d.step, d.reason)).collect(),
        round: Duration::from_micros(job.round_us),
    }
}
