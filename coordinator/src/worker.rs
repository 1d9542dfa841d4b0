//! An evaluation worker (`jointscore coordinator worker`): a process
//! without a gRPC server that claims decision jobs from the PostgreSQL
//! store under a lease, asks the parties for their contributions,
//! evaluates, and writes each job's end exactly once.
//!
//! Why claims in the database rather than a job-queue library: the job
//! row is already the queue. Its state, kept contributions, result and
//! ledger entries live in the same database and are written in the same
//! transaction as its end; a separate queue (pgmq, apalis' or
//! graphile_worker's tables) would hold a second copy of "which jobs are
//! open" that has to agree with the jobs table, and its acknowledgement
//! would be a second write outside the job's transaction — exactly where
//! "one result, one ledger entry" breaks. So a worker claims with one
//! `UPDATE … WHERE seq = (SELECT … FOR UPDATE SKIP LOCKED)` that sets the
//! lease (`JobStore::claim_job`), renews it every third of `lease_ms`
//! (`JobStore::renew_lease`), and its end goes through the group commit
//! with a [`Write::Fence`] first: the transaction fails, writing nothing,
//! unless this worker still holds the lease. A worker that is killed stops
//! renewing; once its lease runs out another worker claims the job,
//! resumes it from the contributions kept, and writes its end.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::config::CoordinatorConfig;
use crate::drain::Drained;
use crate::engine::Engine;
use crate::error::{CoordinatorError, Result};
use crate::job::JobRecord;
use crate::server::{Assembled, assemble};
use crate::store::JobStore;

/// How long an idle worker waits before it looks for work again: a job
/// accepted meanwhile waits this long at most (one claim query per worker
/// per poll, which the claim rate measured by `bench claims` dwarfs).
const IDLE_POLL: Duration = Duration::from_millis(50);

/// A running evaluation worker.
pub struct CoordinatorWorker {
    engine: Arc<Engine>,
    name: String,
    grace: Duration,
}

impl CoordinatorWorker {
    /// A worker named `name` (unique among the workers on the database;
    /// e.g. host and process id) over `store`, with the coordinator's
    /// configuration: its consortium, identity key (to sign ledger entries
    /// and dial parties under mutual TLS), `eval_workers` (jobs run at
    /// once), `lease_ms` and `key_cache`.
    pub fn new(config: CoordinatorConfig, store: Arc<dyn JobStore>, name: String) -> Result<CoordinatorWorker> {
        if name.is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
            return Err(CoordinatorError::Config("a worker's name is 1 to 128 printable characters".into()));
        }
        let grace = config.shutdown_grace();
        let Assembled { engine, .. } = assemble(config, store, Some(name.clone()))?;
        Ok(CoordinatorWorker { engine, name, grace })
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Claims and runs jobs until `signal` completes; then takes no job any
    /// more, lets the running ones finish within `shutdown_grace_ms`, and
    /// stops the rest where they are (their leases run out and another
    /// worker resumes them). Closes the store.
    pub async fn run_until(self, signal: impl Future<Output = ()>) -> Result<Drained> {
        let engine = &self.engine;
        let lease = engine.config.lease_ms;
        let slots = Arc::new(Semaphore::new(engine.config.eval_workers));
        tracing::info!(worker = %self.name, lease_ms = lease, slots = engine.config.eval_workers, "worker claiming jobs");
        let mut signal = std::pin::pin!(signal);
        let mut refused = std::collections::HashSet::new();
        loop {
            let permit = tokio::select! {
                permit = slots.clone().acquire_owned() => permit
                    .map_err(|_| CoordinatorError::Store("the worker's slots closed".into()))?,
                () = &mut signal => break,
            };
            let claimed = {
                let (store, name) = (engine.store.clone(), self.name.clone());
                tokio::task::spawn_blocking(move || store.claim_job(&name, lease))
                    .await
                    .map_err(|e| CoordinatorError::Store(format!("a claim panicked: {e}")))?
            };
            let pause = match claimed {
                Ok(Some(job)) => {
                    tracing::info!(worker = %self.name, job = %job.job_id, state = job.state.as_str(), "claimed");
                    self.run_leased(job, permit);
                    continue;
                }
                Ok(None) => {
                    self.refuse_foreign(&mut refused).await;
                    IDLE_POLL
                }
                Err(e) => {
                    // The database is restarting or unreachable: nothing
                    // is lost (claims are in the database), try again.
                    tracing::warn!(worker = %self.name, error = %e, "cannot claim work; retrying");
                    Duration::from_secs(1)
                }
            };
            drop(permit);
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = &mut signal => break,
            }
        }
        let deadline = Instant::now() + self.grace;
        let (jobs_finished, jobs_interrupted) = engine.tasks.drain(deadline).await;
        let commits = engine.commits.clone();
        tokio::task::spawn_blocking(move || commits.close())
            .await
            .map_err(|e| CoordinatorError::Store(format!("the store's writer did not stop: {e}")))?;
        engine.store.close()?;
        tracing::info!(worker = %self.name, jobs_finished, jobs_interrupted, "worker stopped");
        Ok(Drained { jobs_finished, jobs_interrupted, jobs_unfinished: jobs_interrupted, calls_cut: false })
    }

    /// Says, once per job, which unfinished jobs this worker leaves alone
    /// because they were accepted under another tfhe release or parameter
    /// set than the one it evaluates with (its keys would not load here, or
    /// would compute garbage): a worker of that build has to take them.
    async fn refuse_foreign(&self, refused: &mut std::collections::HashSet<String>) {
        let store = self.engine.store.clone();
        let Ok(Ok(foreign)) = tokio::task::spawn_blocking(move || store.unclaimable(16)).await else { return };
        for (job_id, needs) in foreign {
            if refused.insert(job_id.clone()) {
                tracing::warn!(
                    worker = %self.name,
                    job = %job_id,
                    "refusing job {job_id}: it was accepted under `{needs}`, and this worker evaluates with `{}`; \
                     a worker of that build takes it",
                    crate::store::evaluation()
                );
            }
        }
    }

    /// Runs a claimed job while renewing its lease; abandons it when the
    /// lease is lost (another worker has it then).
    fn run_leased(&self, job: JobRecord, permit: tokio::sync::OwnedSemaphorePermit) {
        let engine = self.engine.clone();
        let (name, lease) = (self.name.clone(), engine.config.lease_ms);
        let job_id = job.job_id.clone();
        let heartbeat = {
            let (store, name, job_id) = (engine.store.clone(), name.clone(), job_id.clone());
            async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(lease / 3)).await;
                    let (store, name, job_id) = (store.clone(), name.clone(), job_id.clone());
                    match tokio::task::spawn_blocking(move || store.renew_lease(&job_id, &name, lease)).await {
                        Ok(Ok(true)) => {}
                        Ok(Ok(false)) => return,
                        // Unsure (the database is away): keep trying; the
                        // fence keeps a late end from being written twice.
                        Ok(Err(e)) => tracing::warn!(error = %e, "cannot renew a lease; retrying"),
                        Err(e) => tracing::warn!(error = %e, "a lease renewal panicked; retrying"),
                    }
                }
            }
        };
        let run = {
            let engine = engine.clone();
            async move { engine.run_claimed(job, permit).await }
        };
        let started = engine.tasks.spawn(async move {
            tokio::select! {
                () = run => {}
                () = heartbeat => {
                    tracing::warn!(worker = %name, job = %job_id, "lease lost: another worker has the job; abandoning it");
                }
            }
        });
        if !started {
            tracing::info!("draining: a claimed job is left to its lease");
        }
    }
}
