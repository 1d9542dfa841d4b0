//! Runs decision jobs: fan-out to parties, evaluation, result storage.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use jointscore_circuits::fhe::{CONTRIBUTION_SIZE_LIMIT, Contribution, EvaluationKey, PublicKey};
use jointscore_circuits::{Model, Plan, PlanKind};
use jointscore_proto::v1::contribute_chunk::Part;
use jointscore_proto::v1::party_client::PartyClient;
use jointscore_proto::v1::{ContributeChunk, ContributeRequest};
use jointscore_proto::{Assembler, MAX_MESSAGE_SIZE, plan_to_wire};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status, Streaming};

use crate::config::CoordinatorConfig;
use crate::error::{CoordinatorError, Result};
use crate::job::{JobRecord, JobState, Timings};
use crate::store::JobStore;

/// Shared state of the running coordinator: the store, the bounds on work
/// in flight, and keys and plans decoded once.
pub(crate) struct Engine {
    pub(crate) store: Arc<dyn JobStore>,
    pub(crate) config: CoordinatorConfig,
    queue: Arc<Semaphore>,
    eval: Arc<Semaphore>,
    evaluation_keys: Mutex<HashMap<String, Arc<EvaluationKey>>>,
    public_keys: Mutex<HashMap<String, PublicKey>>,
    plans: Mutex<HashMap<(String, PlanKind), Arc<Plan>>>,
    /// Decompressing an evaluation key takes seconds: one at a time, so two
    /// jobs for a key not yet cached do not both pay for it.
    key_load: tokio::sync::Mutex<()>,
    /// Bumped whenever a job ends, so long polls wake without polling.
    ended: tokio::sync::watch::Sender<u64>,
    /// One HTTP/2 connection per party address, reused across jobs.
    channels: Mutex<HashMap<String, Channel>>,
}

/// A job's failure with the status code it ends with.
fn failed(code: Code, reason: String) -> CoordinatorError {
    CoordinatorError::JobFailed { code: code as i32, reason }
}

fn lock<T>(m: &Mutex<T>) -> Result<MutexGuard<'_, T>> {
    m.lock().map_err(|_| CoordinatorError::Store("cache lock poisoned by an earlier panic".into()))
}

impl Engine {
    pub(crate) fn new(store: Arc<dyn JobStore>, config: CoordinatorConfig) -> Arc<Engine> {
        Arc::new(Engine {
            queue: Arc::new(Semaphore::new(config.queue_capacity)),
            eval: Arc::new(Semaphore::new(config.eval_workers)),
            store,
            config,
            evaluation_keys: Mutex::new(HashMap::new()),
            public_keys: Mutex::new(HashMap::new()),
            plans: Mutex::new(HashMap::new()),
            key_load: tokio::sync::Mutex::new(()),
            ended: tokio::sync::watch::Sender::new(0),
            channels: Mutex::new(HashMap::new()),
        })
    }

    /// A place in the queue, or `Busy` when it is full.
    pub(crate) fn reserve(&self) -> Result<OwnedSemaphorePermit> {
        self.queue.clone().try_acquire_owned().map_err(|_| CoordinatorError::Busy(self.config.queue_capacity))
    }

    /// Caches keys decoded at registration, so the first job does not
    /// decompress them again.
    pub(crate) fn cache_keys(&self, public: PublicKey, evaluation: EvaluationKey) -> Result<()> {
        lock(&self.evaluation_keys)?.insert(public.id().to_string(), Arc::new(evaluation));
        lock(&self.public_keys)?.insert(public.id().to_string(), public);
        Ok(())
    }

    /// The plan for a stored model.
    pub(crate) fn plan(&self, model_id: &str, kind: PlanKind) -> Result<Arc<Plan>> {
        let cache_key = (model_id.to_string(), kind);
        if let Some(plan) = lock(&self.plans)?.get(&cache_key) {
            return Ok(plan.clone());
        }
        let toml = self.store.model(model_id)?.ok_or_else(|| {
            CoordinatorError::Store(format!("model {model_id} of an accepted job is missing from the store"))
        })?;
        let plan = Arc::new(Plan::new(&Model::from_toml(&toml)?, kind)?);
        lock(&self.plans)?.insert(cache_key, plan.clone());
        Ok(plan)
    }

    /// A registered key set's public key.
    pub(crate) fn public_key(&self, key_id: &str) -> Result<PublicKey> {
        if let Some(key) = lock(&self.public_keys)?.get(key_id) {
            return Ok(key.clone());
        }
        let bytes = self.store.public_key(key_id)?.ok_or_else(|| unknown_key(key_id))?;
        let key = PublicKey::from_bytes(&bytes)?;
        lock(&self.public_keys)?.insert(key_id.to_string(), key.clone());
        Ok(key)
    }

    /// A registered key set's evaluation key, decompressed once.
    async fn evaluation_key(&self, key_id: &str) -> Result<Arc<EvaluationKey>> {
        if let Some(key) = lock(&self.evaluation_keys)?.get(key_id) {
            return Ok(key.clone());
        }
        let _loading = self.key_load.lock().await;
        if let Some(key) = lock(&self.evaluation_keys)?.get(key_id) {
            return Ok(key.clone());
        }
        let public = self.public_key(key_id)?;
        let bytes = self.store.evaluation_key(key_id)?.ok_or_else(|| unknown_key(key_id))?;
        let key = tokio::task::spawn_blocking(move || EvaluationKey::from_compressed_bytes(&bytes, &public))
            .await
            .map_err(|e| CoordinatorError::Transport(format!("key decompression task failed: {e}")))??;
        let key = Arc::new(key);
        lock(&self.evaluation_keys)?.insert(key_id.to_string(), key.clone());
        Ok(key)
    }

    /// Runs a job to a terminal state in the background. `permit` is its
    /// place in the queue, released when it ends.
    pub(crate) fn spawn(self: &Arc<Self>, job: JobRecord, permit: Option<OwnedSemaphorePermit>) {
        let engine = self.clone();
        tokio::spawn(async move {
            let _permit = permit;
            engine.run(job).await;
        });
    }

    /// A receiver that sees a change whenever a job ends.
    pub(crate) fn job_ends(&self) -> tokio::sync::watch::Receiver<u64> {
        self.ended.subscribe()
    }

    /// Re-runs every job the store holds unfinished (after a restart).
    pub(crate) fn recover(self: &Arc<Self>) -> Result<usize> {
        let jobs = self.store.unfinished()?;
        let n = jobs.len();
        for job in jobs {
            tracing::info!(job = %job.job_id, state = job.state.as_str(), "resuming job after restart");
            let permit = self.queue.clone().try_acquire_owned().ok();
            self.spawn(job, permit);
        }
        Ok(n)
    }

    async fn run(&self, job: JobRecord) {
        let mut timings = Timings::default();
        let outcome = self.execute(&job, &mut timings).await;
        let written = match &outcome {
            Ok(result) => self.store.complete(&job.job_id, result, &timings),
            Err(e) => {
                tracing::info!(job = %job.job_id, code = ?e.code(), reason = %e, "job failed");
                self.store.fail(&job.job_id, e.code() as i32, &e.to_string(), &timings)
            }
        };
        self.ended.send_modify(|n| *n = n.wrapping_add(1));
        match written {
            Ok(()) if outcome.is_ok() => tracing::debug!(job = %job.job_id, "job done"),
            Ok(()) => {}
            // The job stays unfinished in the store and is resumed on the
            // next start; nothing else can be done from here.
            Err(e) => tracing::error!(job = %job.job_id, error = %e, "cannot record the end of a job"),
        }
    }

    async fn execute(&self, job: &JobRecord, timings: &mut Timings) -> Result<Vec<u8>> {
        let plan = self.plan(&job.request.model_id, job.request.plan)?;
        let public = self.public_key(&job.request.key_id)?;
        self.store.set_state(&job.job_id, JobState::Collecting)?;
        let start = Instant::now();
        let contributions = self.collect(job, &plan, &public, timings).await?;
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
        Ok(result.to_bytes()?)
    }

    /// Asks every party of the plan for its contribution, concurrently, each
    /// under the per-party deadline. The job fails with the first party's
    /// failure in model order; the others are named in the reason.
    async fn collect(
        &self,
        job: &JobRecord,
        plan: &Arc<Plan>,
        public: &PublicKey,
        timings: &mut Timings,
    ) -> Result<Vec<Contribution>> {
        let model_toml = self.store.model(&job.request.model_id)?.unwrap_or_default();
        let mut tasks = JoinSet::new();
        for (index, name) in plan.model().parties.iter().enumerate() {
            let request = ContributeRequest {
                job_id: job.job_id.clone(),
                subject: job.request.subject.clone(),
                model_id: job.request.model_id.clone(),
                model_toml: model_toml.clone(),
                plan: plan_to_wire(job.request.plan),
                key_id: job.request.key_id.clone(),
            };
            let address = self.store.party_address(name)?;
            let cached = address.as_ref().and_then(|a| lock(&self.channels).ok()?.get(a).cloned());
            let (name, plan, public) = (name.clone(), plan.clone(), public.clone());
            let deadline = self.config.party_deadline();
            tasks.spawn(async move {
                let call = Call { name: &name, address, cached, deadline };
                let got = match tokio::time::timeout(deadline, call.contribution(request, &plan, index, &public)).await
                {
                    Ok(got) => got,
                    Err(_) => Err((
                        None,
                        failed(
                            Code::DeadlineExceeded,
                            format!("party `{name}` did not answer within {} ms", deadline.as_millis()),
                        ),
                    )),
                };
                (index, got)
            });
        }
        let mut results: Vec<Option<std::result::Result<Received, (Option<String>, CoordinatorError)>>> = (0..plan.model().parties.len()).map(|_| None).collect();
        while let Some(done) = tasks.join_next().await {
            let (index, got) =
                done.map_err(|e| CoordinatorError::Transport(format!("contribution task failed: {e}")))?;
            results[index] = Some(got);
        }
        let mut contributions = Vec::with_capacity(results.len());
        let mut channels = lock(&self.channels)?;
        let mut errors = Vec::new();
        for got in results.into_iter().flatten() {
            match got {
                Ok(r) => {
                    channels.insert(r.address, r.channel);
                    timings.party_encrypt_us = timings.party_encrypt_us.max(r.encrypt_us);
                    timings.contribution_bytes += r.bytes;
                    contributions.push(r.contribution);
                }
                Err((address, e)) => {
                    // A fresh connection next time, in case the party moved
                    // or restarted.
                    if let Some(a) = address {
                        channels.remove(&a);
                    }
                    errors.push(e);
                }
            }
        }
        drop(channels);
        let mut errors = errors.into_iter();
        match errors.next() {
            None => Ok(contributions),
            Some(first) => {
                let rest: Vec<String> = errors.map(|e| e.to_string()).collect();
                if rest.is_empty() {
                    return Err(first);
                }
                Err(failed(first.code(), format!("{first}; also: {}", rest.join("; "))))
            }
        }
    }
}

struct Received {
    contribution: Contribution,
    encrypt_us: u64,
    bytes: u64,
    address: String,
    channel: Channel,
}

/// One contribution request to one party.
struct Call<'a> {
    name: &'a str,
    address: Option<String>,
    cached: Option<Channel>,
    deadline: Duration,
}

fn unknown_key(key_id: &str) -> CoordinatorError {
    CoordinatorError::Precondition(format!(
        "key set {key_id} is not registered; the lender registers it first (`jointscore lender register`)"
    ))
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl Call<'_> {
    /// One party's contribution: connect (or reuse the connection), request,
    /// read the header and the declared bytes, and decode them against the
    /// plan and key. An error carries the address whose connection should
    /// be dropped.
    async fn contribution(
        self,
        request: ContributeRequest,
        plan: &Plan,
        index: usize,
        public: &PublicKey,
    ) -> std::result::Result<Received, (Option<String>, CoordinatorError)> {
        let name = self.name;
        let Some(address) = self.address.clone() else {
            return Err((
                None,
                failed(Code::Unavailable, format!("party `{name}` is not registered with the coordinator")),
            ));
        };
        let unreachable = |e: &dyn std::fmt::Display| {
            failed(Code::Unavailable, format!("party `{name}` is unreachable at {address}: {e}"))
        };
        let channel = match self.cached {
            Some(channel) => channel,
            None => Endpoint::from_shared(address.clone())
                .map_err(|e| (None, unreachable(&e)))?
                .connect_timeout(self.deadline)
                .connect()
                .await
                .map_err(|e| {
                    let cause = std::error::Error::source(&e).map_or(e.to_string(), ToString::to_string);
                    (None, unreachable(&cause))
                })?,
        };
        let received = async {
            let mut client = PartyClient::new(channel.clone()).max_decoding_message_size(MAX_MESSAGE_SIZE);
            let status = |s: Status| match s.code() {
                // Connection failures (or a party saying it cannot serve):
                // say where we tried.
                Code::Unavailable => unreachable(&s.message()),
                _ => failed(s.code(), format!("party `{name}`: {}", s.message())),
            };
            let mut stream: Streaming<ContributeChunk> = client.contribute(request).await.map_err(status)?.into_inner();
            let header = match stream.message().await.map_err(status)? {
                Some(ContributeChunk { part: Some(Part::Header(h)) }) => h,
                _ => {
                    return Err(CoordinatorError::Invalid(format!(
                        "party `{name}` did not start its answer with a header"
                    )));
                }
            };
            if header.party != name {
                return Err(CoordinatorError::Invalid(format!("party `{name}` answered as `{}`", header.party)));
            }
            let bad = |e: jointscore_proto::ChunkError| CoordinatorError::Invalid(format!("party `{name}`: {e}"));
            let mut bytes = Assembler::new("contribution", header.len, CONTRIBUTION_SIZE_LIMIT).map_err(bad)?;
            while let Some(chunk) = stream.message().await.map_err(status)? {
                match chunk.part {
                    Some(Part::Data(data)) => bytes.push(&data).map_err(bad)?,
                    _ => return Err(CoordinatorError::Invalid(format!("party `{name}` sent a second header"))),
                }
            }
            let bytes = bytes.finish().map_err(bad)?;
            let contribution = Contribution::from_bytes(&bytes, plan, index, public)?;
            Ok((contribution, header.encrypt_us, bytes.len() as u64))
        }
        .await;
        match received {
            Ok((contribution, encrypt_us, bytes)) => {
                Ok(Received { contribution, encrypt_us, bytes, address, channel })
            }
            Err(e) => Err((Some(address), e)),
        }
    }
}
