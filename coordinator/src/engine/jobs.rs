//! A decision job's life: spawned (or recovered after a restart), run to a
//! result or a failure, its end recorded in the store and the ledger, and
//! its queue place freed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use jointscore_audit::{Attestation, EntryKind, Event as AuditEvent};
use jointscore_identity::{CONTRIBUTION_DOMAIN, ContributionEnvelope, Role};
use sha2::{Digest, Sha256};
use tokio::sync::OwnedSemaphorePermit;

use super::{Engine, micros};
use crate::error::{CoordinatorError, Result};
use crate::job::{JobRecord, JobState, SignedContribution, Timings};
use crate::ledger::Ledger;

impl Engine {
    /// Runs a job to a terminal state in the background. `permit` is its
    /// place in the queue, released when it ends. While the node drains
    /// for shutdown the job is not started but left, accepted, in the
    /// store for the next start (`false`).
    pub(crate) fn spawn(self: &Arc<Self>, job: JobRecord, permit: OwnedSemaphorePermit) -> bool {
        let (engine, id) = (self.clone(), job.job_id.clone());
        let started = self.tasks.spawn(async move { engine.run(job, permit).await });
        if !started {
            tracing::info!(job = %id, "draining: job left for the next start");
        }
        started
    }

    /// A receiver that sees a change whenever a job ends.
    pub(crate) fn job_ends(&self) -> tokio::sync::watch::Receiver<u64> {
        self.ended.subscribe()
    }

    /// Re-runs every job the store holds unfinished (after a restart), in
    /// the order they were accepted; each waits for a place in the queue,
    /// so recovery respects `queue_capacity` too.
    pub(crate) fn recover(self: &Arc<Self>) -> Result<usize> {
        let jobs = self.store.unfinished()?;
        let stats = self.store.unfinished_stats()?;
        let n = jobs.len() + stats.len();
        let engine = self.clone();
        tokio::spawn(async move {
            // While the node drains, a job not started stays unfinished in
            // the store for the next start; so do the rest.
            for job in jobs {
                tracing::info!(job = %job.job_id, state = job.state.as_str(), "resuming job after restart");
                let Ok(permit) = engine.queue.clone().acquire_owned().await else { return };
                if !engine.spawn(job, permit) {
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

    async fn run(&self, job: JobRecord, permit: OwnedSemaphorePermit) {
        let mut timings = Timings::default();
        let outcome = self.execute(&job, &mut timings).await;
        // The ledger first: once the store says the job ended, a lender who
        // saw it end and reads the ledger finds the entry. (A crash between
        // the two re-runs the job at the next start, so its entries may
        // appear twice under one job id, never not at all.)
        if let Some(ledger) = &self.ledger {
            self.audit_end(ledger, &job, &outcome);
        }
        self.record_end(&job.job_id, || match &outcome {
            Ok((result, signed)) => self.store.complete(&job.job_id, result, &timings, signed),
            Err(e) => self.store.fail(&job.job_id, e.code() as i32, &e.to_string(), &timings),
        })
        .await;
        match &outcome {
            Ok(_) => tracing::debug!(job = %job.job_id, "job done"),
            Err(e) => tracing::info!(job = %job.job_id, code = ?e.code(), reason = %e, "job failed"),
        }
        self.announce_end(permit);
    }

    /// Records a job's contributions (with each party's signature as an
    /// attestation) and its result or refusal in the ledger.
    fn audit_end(&self, ledger: &Ledger, job: &JobRecord, outcome: &Result<(Vec<u8>, Vec<SignedContribution>)>) {
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
                    ledger.record(AuditEvent {
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
                ledger.record(AuditEvent {
                    kind: EntryKind::Result,
                    parties: signed.iter().map(|c| c.party.clone()).collect(),
                    digest: Some(hex::encode(Sha256::digest(result))),
                    detail: if request.absent.is_empty() {
                        String::new()
                    } else {
                        format!("absent: {}", request.absent.join(", "))
                    },
                    ..base
                });
            }
            Err(e) => {
                ledger.record(AuditEvent { kind: EntryKind::Refusal, detail: format!("{:?}: {e}", e.code()), ..base })
            }
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
    /// envelopes.
    async fn execute(&self, job: &JobRecord, timings: &mut Timings) -> Result<(Vec<u8>, Vec<SignedContribution>)> {
        let plan = self.plan(&job.request.model_id, job.request.plan)?;
        let public = self.public_key(&job.request.key_id)?;
        self.store.set_state(&job.job_id, JobState::Collecting)?;
        let start = Instant::now();
        let (contributions, signed) = self.collect(job, &plan, &public, timings).await?;
        timings.collect_us = micros(start.elapsed());

        self.store.set_state(&job.job_id, JobState::Evaluating)?;
        let key = self.evaluation_key(&job.request.key_id).await?;
        let _worker = self
            .eval
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| CoordinatorError::Transport("evaluation pool closed".into()))?;
        let plan_for_eval = plan.clone();
        // TFHE work runs on the blocking pool, never on the async workers;
        // the evaluation key is passed explicitly, not set per thread.
        let (result, report) = tokio::task::spawn_blocking(move || key.evaluate(&plan_for_eval, &contributions))
            .await
            .map_err(|e| CoordinatorError::Transport(format!("evaluation task failed: {e}")))??;
        timings.evaluate_us = micros(report.expand + report.circuit);
        timings.pbs = report.pbs;
        Ok((result.to_bytes()?, signed))
    }
}
