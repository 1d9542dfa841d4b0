//! A decision job's life: spawned (or recovered after a restart), run to a
//! result or a failure, its end recorded in the store and the ledger, and
//! its queue place freed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use jointscore_audit::{Attestation, EntryKind, Event as AuditEvent};
use jointscore_identity::{CONTRIBUTION_DOMAIN, ContributionEnvelope, Role};
use jointscore_monitor::Compiled;
use sha2::{Digest, Sha256};
use tokio::sync::{OwnedSemaphorePermit, oneshot};

use super::fanout::Collected;
use super::{Engine, micros};
use crate::commit::Group;
use crate::error::{CoordinatorError, Result};
use crate::job::{JobRecord, JobState, SignedContribution, Timings};
use crate::store::Write;

/// How often a job is run again after the store failed under it (about a
/// minute of back-off in all) before it fails.
const STORE_RETRIES: u32 = 8;

impl Engine {
    /// Runs a job to a terminal state in the background. `permit` is its
    /// place in the queue, released when it ends. While the node drains
    /// for shutdown the job is not started but left, accepted, in the
    /// store for the next start (`false`).
    ///
    /// `stored`, for a job whose acceptance is still being committed, says
    /// whether it was: the job asks its parties meanwhile (so the commit's
    /// wait for the disk overlaps their work) but writes nothing, and ends
    /// silently, unless it was stored.
    pub(crate) fn spawn(
        self: &Arc<Self>,
        job: JobRecord,
        permit: OwnedSemaphorePermit,
        stored: Option<oneshot::Receiver<bool>>,
    ) -> bool {
        if self.external() {
            // A worker claims it from the store.
            drop(permit);
            return true;
        }
        let (engine, id) = (self.clone(), job.job_id.clone());
        let started = self.tasks.spawn(async move { engine.run(job, permit, stored).await });
        if !started {
            tracing::info!(job = %id, "draining: job left for the next start");
        }
        started
    }

    /// Runs a job a worker claimed (its lease renewed by the caller).
    pub(crate) async fn run_claimed(&self, job: JobRecord, permit: OwnedSemaphorePermit) {
        self.run(job, permit, None).await;
    }

    /// A receiver that sees a change whenever a job ends.
    pub(crate) fn job_ends(&self) -> tokio::sync::watch::Receiver<u64> {
        self.ended.subscribe()
    }

    /// Re-runs every job the store holds unfinished (after a restart), in
    /// the order they were accepted; each waits for a place in the queue,
    /// so recovery respects `queue_capacity` too.
    pub(crate) fn recover(self: &Arc<Self>) -> Result<usize> {
        // With workers, they claim the decision jobs.
        let jobs = if self.external() { Vec::new() } else { self.store.unfinished()? };
        let stats = self.store.unfinished_stats()?;
        let n = jobs.len() + stats.len();
        let engine = self.clone();
        tokio::spawn(async move {
            // While the node drains, a job not started stays unfinished in
            // the store for the next start; so do the rest.
            for job in jobs {
                tracing::info!(job = %job.job_id, state = job.state.as_str(), "resuming job after restart");
                let Ok(permit) = engine.queue.clone().acquire_owned().await else { return };
                if !engine.spawn(job, permit, None) {
                    return;
                }
            }
            // A round's secrets lived in the parties' memory for that round
            // only: a statistics job starts a fresh round.
            for job in stats {
                tracing::info!(job = %job.job_id, "restarting statistics round after restart");
                let Ok(permit) = engine.queue.clone().acquire_owned().await else { return };
                if !engine.spawn_stats(job, permit) {
                    return;
                }
            }
        });
        Ok(n)
    }

    async fn run(&self, job: JobRecord, permit: OwnedSemaphorePermit, stored: Option<oneshot::Receiver<bool>>) {
        let mut timings = Timings::default();
        let mut stored = stored;
        let mut attempt = 0;
        let outcome = loop {
            let outcome = self.execute(&job, &mut timings, stored.take()).await;
            // A store that failed under the job (the database restarting,
            // a connection cut) is not the job's fault: run it again from
            // what the store kept, as after a restart, before giving up.
            match &outcome {
                Some(Err(CoordinatorError::Store(e))) if attempt < STORE_RETRIES => {
                    attempt += 1;
                    tracing::warn!(job = %job.job_id, error = %e, attempt, "the store failed under the job; running it again");
                    tokio::time::sleep(Duration::from_millis(250 << attempt.min(5))).await;
                    timings = Timings::default();
                }
                _ => break outcome,
            }
        };
        let Some(outcome) = outcome else {
            // Its request was not stored (a store failure, or another call
            // with the same request id won): nothing to record.
            tracing::debug!(job = %job.job_id, "job not stored; dropped");
            self.announce_end(permit);
            return;
        };
        // The job's end and the ledger entries that record it (each
        // contribution, then the result or the refusal) are one
        // transaction: a lender who sees the job end finds its entries, and
        // a crash keeps both or neither.
        let mut group = self.audit_end(&job, &outcome);
        let job_id = job.job_id.clone();
        if let Some(worker) = &self.worker {
            // Written only while this worker holds the job's lease.
            group =
                Group::default().write(Write::Fence { job_id: job_id.clone(), worker: worker.clone() }).merge(group);
        }
        let group = match outcome {
            Ok((result, contributions)) => {
                tracing::debug!(job = %job_id, "job done");
                group.write(Write::Complete { job_id, result, timings, contributions })
            }
            Err(e) => {
                tracing::info!(job = %job_id, code = ?e.code(), reason = %e, "job failed");
                group.write(Write::Fail { job_id, code: e.code() as i32, reason: e.to_string(), timings })
            }
        };
        self.commit_end(&job.job_id, group).await;
        self.announce_end(permit);
    }

    /// The ledger events of a job's end: its contributions (with each
    /// party's signature as an attestation) and its result or refusal.
    /// (Without a ledger the writer drops them.)
    fn audit_end(&self, job: &JobRecord, outcome: &Result<(Vec<u8>, Vec<SignedContribution>)>) -> Group {
        let mut group = Group::default();
        if self.ledger.is_none() {
            return group;
        }
        let request = &job.request;
        let lender = self.store.key_owner(&request.key_id).ok().flatten();
        let commitment = request.lender_request().subject_commitment();
        let base = AuditEvent {
            lender,
            subject: Some(commitment.clone()),
            job_id: Some(job.job_id.clone()),
            model_id: Some(request.model_id.clone()),
            key_id: Some(request.key_id.clone()),
            ..AuditEvent::default()
        };
        match outcome {
            Ok((result, signed)) => {
                for c in signed {
                    let envelope = ContributionEnvelope {
                        request_id: request.request_id.clone(),
                        lender: request.attestation.lender.clone(),
                        job_id: job.job_id.clone(),
                        subject: commitment.clone(),
                        model_id: request.model_id.clone(),
                        key_id: request.key_id.clone(),
                        party: c.party.clone(),
                        consent: c.consent.clone(),
                        ciphertext_sha256: c.ciphertext_sha256.clone(),
                        time_ms: c.signed_ms,
                    };
                    let signature = hex::decode(&c.signature).unwrap_or_default();
                    group = group.event(AuditEvent {
                        kind: EntryKind::Contribution,
                        // The envelope's own lender and request: what the
                        // party signed, and what `audit verify` rebuilds.
                        lender: Some(request.attestation.lender.clone()),
                        request_id: Some(request.request_id.clone()),
                        consent: (!c.consent.is_empty()).then(|| c.consent.clone()),
                        parties: vec![c.party.clone()],
                        digest: Some(c.ciphertext_sha256.clone()),
                        attestations: vec![Attestation::new(
                            &c.party,
                            Role::Party,
                            CONTRIBUTION_DOMAIN,
                            &envelope.to_bytes(),
                            &signature,
                        )],
                        ..base.clone()
                    });
                }
                group.event(AuditEvent {
                    kind: EntryKind::Result,
                    parties: signed.iter().map(|c| c.party.clone()).collect(),
                    digest: Some(hex::encode(Sha256::digest(result))),
                    detail: if request.absent.is_empty() {
                        String::new()
                    } else {
                        format!("absent: {}", request.absent.join(", "))
                    },
                    ..base
                })
            }
            Err(e) => {
                group.event(AuditEvent { kind: EntryKind::Refusal, detail: format!("{:?}: {e}", e.code()), ..base })
            }
        }
    }

    /// Commits the end of a job, retried until the store takes it: giving
    /// up would leave an accepted job unfinished until the next restart. (A
    /// failed commit wrote nothing, so a retry duplicates nothing.)
    async fn commit_end(&self, job_id: &str, group: Group) {
        let mut pause = Duration::from_millis(100);
        while let Err(e) = self.commits.commit(group.clone()).await {
            if matches!(e, CoordinatorError::ShuttingDown) {
                // The store closed under a job the drain stopped waiting
                // for: it stays unfinished, for the next start.
                return;
            }
            if matches!(e, CoordinatorError::LeaseLost(_)) {
                // Another worker took the job over and writes its end.
                tracing::warn!(job = %job_id, "lease lost before the job's end was written; the new holder writes it");
                return;
            }
            tracing::error!(job = %job_id, error = %e, "cannot record the end of a job; retrying");
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(30));
        }
    }

    /// Writes the end of a job, retried until the store takes it: giving up
    /// would leave an accepted job unfinished until the next restart.
    pub(crate) async fn record_end(&self, job_id: &str, write: impl Fn() -> Result<()>) {
        let mut pause = Duration::from_millis(100);
        while let Err(e) = write() {
            tracing::error!(job = %job_id, error = %e, "cannot record the end of a job; retrying");
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(30));
        }
    }

    /// Frees a job's queue place, then wakes the long polls. In that order,
    /// so a client woken by the end can submit again at once.
    pub(crate) fn announce_end(&self, permit: OwnedSemaphorePermit) {
        drop(permit);
        self.ended.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Collects, evaluates and serializes; also returns the parties' signed
    /// envelopes. `None` when the job's acceptance was not stored (see
    /// [`Engine::spawn`]).
    async fn execute(
        &self,
        job: &JobRecord,
        timings: &mut Timings,
        stored: Option<oneshot::Receiver<bool>>,
    ) -> Option<Result<(Vec<u8>, Vec<SignedContribution>)>> {
        let plan = match self.plan(&job.request.model_id, job.request.plan) {
            Ok(plan) => plan,
            Err(e) => return self.stored(stored).await.then_some(Err(e)),
        };
        let public = match self.public_key(&job.request.key_id) {
            Ok(public) => public,
            Err(e) => return self.stored(stored).await.then_some(Err(e)),
        };
        let collecting = async {
            let start = Instant::now();
            let collected = self.collect(job, &plan, &public, timings).await;
            (collected, start.elapsed())
        };
        let stored = async {
            let stored = self.stored(stored).await;
            if stored {
                // Progress is announced without waiting for the disk: a job
                // a crash leaves `accepted` is re-run exactly as one left
                // `collecting`, and the writer commits in order, so the
                // state is durable before the job's end is.
                drop(self.commits.submit(
                    Group::default().write(Write::State { job_id: job.job_id.clone(), state: JobState::Collecting }),
                ));
            }
            stored
        };
        let (stored, (collected, collect_time)) = tokio::join!(stored, collecting);
        if !stored {
            return None;
        }
        Some(self.evaluate_collected(job, plan, collected, collect_time, timings).await)
    }

    /// Whether the job is stored: at once for a job read from the store,
    /// else once its acceptance has been committed (or has failed).
    async fn stored(&self, stored: Option<oneshot::Receiver<bool>>) -> bool {
        match stored {
            None => true,
            Some(commit) => commit.await.unwrap_or(false),
        }
    }

    /// Keeps the contributions collected and evaluates the circuit on them.
    async fn evaluate_collected(
        &self,
        job: &JobRecord,
        plan: Arc<Compiled>,
        collected: Result<Collected>,
        collect_time: Duration,
        timings: &mut Timings,
    ) -> Result<(Vec<u8>, Vec<SignedContribution>)> {
        let collected = collected?;
        timings.collect_us = micros(collect_time);
        // The contributions received are kept (so a job recovered after a
        // restart does not ask those parties again) while evaluation runs:
        // a crash before they reach the disk means asking again, and a
        // party asked again by the same job sends the very answer it made.
        drop(
            self.commits.submit(
                Group::default()
                    .writes(collected.keep)
                    .write(Write::State { job_id: job.job_id.clone(), state: JobState::Evaluating }),
            ),
        );
        let contributions = collected.contributions;
        let key = self.evaluation_key(&job.request.key_id).await?;
        // With the other jobs waiting under this key set, in one batch.
        let (result, report, wall) = self.evaluate(&job.request.key_id, key, plan, contributions).await?;
        timings.evaluate_us = micros(wall);
        timings.pbs = report.pbs;
        Ok((result.to_bytes()?, collected.signed))
    }
}
