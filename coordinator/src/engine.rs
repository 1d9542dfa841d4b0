//! Runs decision jobs: fan-out to parties, evaluation, result storage.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jointscore_audit::{Attestation, EntryKind, Record as AuditRecord};
use jointscore_circuits::fhe::{CONTRIBUTION_SIZE_LIMIT, Contribution, EvaluationKey, PublicKey};
use jointscore_circuits::proof::Crs;
use jointscore_circuits::{Model, Plan, PlanKind, Record};
use jointscore_identity::{
    CONTRIBUTION_DOMAIN, Consortium, ContributionBinding, ContributionEnvelope, IdentityError, Role, ciphertext_sha256,
};
use jointscore_proto::v1::contribute_chunk::Part;
use jointscore_proto::v1::party_client::PartyClient;
use jointscore_proto::v1::{ContributeChunk, ContributeRequest, ContributionHeader};
use jointscore_proto::{Assembler, MAX_MESSAGE_SIZE, NodeTls, plan_to_wire};
use sha2::{Digest, Sha256};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status, Streaming};

use crate::config::CoordinatorConfig;
use crate::error::{CoordinatorError, Result};
use crate::job::{JobRecord, JobState, SignedContribution, Timings};
use crate::ledger::Ledger;
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
    /// Model files by id, as parties are sent them with every request.
    models: Mutex<HashMap<String, Arc<str>>>,
    /// Decompressing an evaluation key takes seconds: one at a time, so two
    /// jobs for a key not yet cached do not both pay for it.
    key_load: tokio::sync::Mutex<()>,
    /// Bumped whenever a job ends, so long polls wake without polling.
    ended: tokio::sync::watch::Sender<u64>,
    /// One HTTP/2 connection per party address, reused across jobs.
    channels: Mutex<HashMap<String, Channel>>,
    /// Key uploads are buffered whole (tens of MB) and decompressed: one at
    /// a time, so concurrent uploads cannot exhaust memory.
    pub(crate) registrations: tokio::sync::Mutex<()>,
    /// The consortium, when contributions must be signed.
    consortium: Option<Arc<Consortium>>,
    /// Mutual TLS, when the consortium runs it: parties are dialled only
    /// over it, and each must present its own listed certificate.
    pub(crate) tls: Option<NodeTls>,
    /// The audit ledger, when the coordinator has an identity key.
    pub(crate) ledger: Option<Arc<Ledger>>,
    /// Strict mode: the consortium's CRS; every contribution must carry
    /// proofs that verify against it for its request.
    crs: Option<Arc<Crs>>,
}

/// Connections are cached per party and address: under mutual TLS a
/// connection is bound to the party whose certificate it checked.
fn channel_key(name: &str, address: &str) -> String {
    format!("{name}\n{address}")
}

/// An endpoint for party `name` at `address`, over mutual TLS when `tls`.
fn party_endpoint(tls: Option<&NodeTls>, name: &str, address: &str) -> std::result::Result<Endpoint, String> {
    jointscore_proto::endpoint(address, tls, name, Role::Party)
}

/// A job's failure with the status code it ends with.
pub(crate) fn failed(code: Code, reason: String) -> CoordinatorError {
    CoordinatorError::JobFailed { code: code as i32, reason }
}

fn lock<T>(m: &Mutex<T>) -> Result<MutexGuard<'_, T>> {
    m.lock().map_err(|_| CoordinatorError::Store("cache lock poisoned by an earlier panic".into()))
}

impl Engine {
    pub(crate) fn new(
        store: Arc<dyn JobStore>,
        config: CoordinatorConfig,
        consortium: Option<Arc<Consortium>>,
        tls: Option<NodeTls>,
        ledger: Option<Ledger>,
        crs: Option<Arc<Crs>>,
    ) -> Arc<Engine> {
        Arc::new(Engine {
            queue: Arc::new(Semaphore::new(config.queue_capacity)),
            eval: Arc::new(Semaphore::new(config.eval_workers)),
            store,
            config,
            evaluation_keys: Mutex::new(HashMap::new()),
            public_keys: Mutex::new(HashMap::new()),
            plans: Mutex::new(HashMap::new()),
            models: Mutex::new(HashMap::new()),
            key_load: tokio::sync::Mutex::new(()),
            ended: tokio::sync::watch::Sender::new(0),
            channels: Mutex::new(HashMap::new()),
            registrations: tokio::sync::Mutex::new(()),
            consortium,
            tls,
            ledger: ledger.map(Arc::new),
            crs,
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
        let plan = Arc::new(Plan::new(&Model::from_toml(&self.model_toml(model_id)?)?, kind)?);
        lock(&self.plans)?.insert(cache_key, plan.clone());
        Ok(plan)
    }

    /// A stored model's file, read from the store once.
    fn model_toml(&self, model_id: &str) -> Result<Arc<str>> {
        if let Some(toml) = lock(&self.models)?.get(model_id) {
            return Ok(toml.clone());
        }
        let toml: Arc<str> = self
            .store
            .model(model_id)?
            .ok_or_else(|| {
                CoordinatorError::Store(format!("model {model_id} of an accepted job is missing from the store"))
            })?
            .into();
        lock(&self.models)?.insert(model_id.to_string(), toml.clone());
        Ok(toml)
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
        let (store, id) = (self.store.clone(), key_id.to_string());
        // Reading tens of MB and decompressing: off the async workers.
        let key = tokio::task::spawn_blocking(move || {
            let bytes = store.evaluation_key(&id)?.ok_or_else(|| unknown_key(&id))?;
            Ok::<_, CoordinatorError>(EvaluationKey::from_compressed_bytes(&bytes, &public)?)
        })
        .await
        .map_err(|e| CoordinatorError::Transport(format!("key decompression task failed: {e}")))??;
        let key = Arc::new(key);
        lock(&self.evaluation_keys)?.insert(key_id.to_string(), key.clone());
        Ok(key)
    }

    /// Runs a job to a terminal state in the background. `permit` is its
    /// place in the queue, released when it ends.
    pub(crate) fn spawn(self: &Arc<Self>, job: JobRecord, permit: OwnedSemaphorePermit) {
        let engine = self.clone();
        tokio::spawn(async move { engine.run(job, permit).await });
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
            for job in jobs {
                tracing::info!(job = %job.job_id, state = job.state.as_str(), "resuming job after restart");
                let Ok(permit) = engine.queue.clone().acquire_owned().await else { return };
                engine.spawn(job, permit);
            }
            // A round's secrets lived in the parties' memory for that round
            // only: a statistics job starts a fresh round.
            for job in stats {
                tracing::info!(job = %job.job_id, "restarting statistics round after restart");
                let Ok(permit) = engine.queue.clone().acquire_owned().await else { return };
                engine.spawn_stats(job, permit);
            }
        });
        Ok(n)
    }

    async fn run(&self, job: JobRecord, permit: OwnedSemaphorePermit) {
        let mut timings = Timings::default();
        let outcome = self.execute(&job, &mut timings).await;
        self.record_end(&job.job_id, || match &outcome {
            Ok((result, signed)) => self.store.complete(&job.job_id, result, &timings, signed),
            Err(e) => self.store.fail(&job.job_id, e.code() as i32, &e.to_string(), &timings),
        })
        .await;
        match &outcome {
            Ok(_) => tracing::debug!(job = %job.job_id, "job done"),
            Err(e) => tracing::info!(job = %job.job_id, code = ?e.code(), reason = %e, "job failed"),
        }
        if let Some(ledger) = &self.ledger {
            self.audit_end(ledger, &job, &outcome);
        }
        self.announce_end(permit);
    }

    /// Records a job's contributions (with each party's signature as an
    /// attestation) and its result or refusal in the ledger.
    fn audit_end(&self, ledger: &Ledger, job: &JobRecord, outcome: &Result<(Vec<u8>, Vec<SignedContribution>)>) {
        let request = &job.request;
        let lender = self.store.key_owner(&request.key_id).ok().flatten();
        let base = AuditRecord {
            lender,
            subject: Some(request.subject.clone()),
            job_id: Some(job.job_id.clone()),
            model_id: Some(request.model_id.clone()),
            key_id: Some(request.key_id.clone()),
            ..AuditRecord::default()
        };
        match outcome {
            Ok((result, signed)) => {
                for c in signed {
                    let envelope = ContributionEnvelope {
                        job_id: job.job_id.clone(),
                        subject: request.subject.clone(),
                        model_id: request.model_id.clone(),
                        key_id: request.key_id.clone(),
                        party: c.party.clone(),
                        ciphertext_sha256: c.ciphertext_sha256.clone(),
                        time_ms: c.signed_ms,
                    };
                    let signature = hex::decode(&c.signature).unwrap_or_default();
                    ledger.record(AuditRecord {
                        kind: EntryKind::Contribution,
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
                ledger.record(AuditRecord {
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
                ledger.record(AuditRecord { kind: EntryKind::Refusal, detail: format!("{:?}: {e}", e.code()), ..base })
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

    /// A connection to party `name`: the cached one, or a new lazy one that
    /// connects (within `deadline`) on its first call, so a party that is
    /// down costs its own call's deadline and never delays the others. The
    /// error is for an address that is not a URL, or (under mutual TLS) a
    /// party that is not a current member.
    pub(crate) fn party_channel(
        &self,
        name: &str,
        address: &str,
        deadline: Duration,
    ) -> std::result::Result<Channel, String> {
        let mut channels = lock(&self.channels).map_err(|e| e.to_string())?;
        if let Some(channel) = channels.get(&channel_key(name, address)) {
            return Ok(channel.clone());
        }
        let channel = party_endpoint(self.tls.as_ref(), name, address)?.connect_timeout(deadline).connect_lazy();
        channels.insert(channel_key(name, address), channel.clone());
        Ok(channel)
    }

    /// Drops a cached connection after a failure, so the next call dials
    /// afresh (the party may have moved or restarted).
    pub(crate) fn forget_channel(&self, name: &str, address: &str) {
        if let Ok(mut channels) = lock(&self.channels) {
            channels.remove(&channel_key(name, address));
        }
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

    /// Asks every party of the plan for its contribution, concurrently, each
    /// under the per-party deadline. The job fails with the first party's
    /// failure in model order; the others are named in the reason.
    async fn collect(
        &self,
        job: &JobRecord,
        plan: &Arc<Plan>,
        public: &PublicKey,
        timings: &mut Timings,
    ) -> Result<(Vec<Contribution>, Vec<SignedContribution>)> {
        let model_toml = self.model_toml(&job.request.model_id)?;
        let absent = self.absent_contributions(job, plan, public).await?;
        let mut tasks = JoinSet::new();
        for (index, name) in plan.model().parties().iter().enumerate() {
            if absent[index].is_some() {
                continue;
            }
            let request = ContributeRequest {
                job_id: job.job_id.clone(),
                subject: job.request.subject.clone(),
                model_id: job.request.model_id.clone(),
                model_toml: model_toml.to_string(),
                plan: plan_to_wire(job.request.plan),
                key_id: job.request.key_id.clone(),
                absent: job.request.absent.clone(),
            };
            let address = self.store.party_address(name)?;
            let cached = address.as_ref().and_then(|a| lock(&self.channels).ok()?.get(&channel_key(name, a)).cloned());
            let tried = address.clone();
            let (name, plan, public) = (name.clone(), plan.clone(), public.clone());
            let deadline = self.config.party_deadline();
            let consortium = self.consortium.clone();
            let tls = self.tls.clone();
            let crs = self.crs.clone();
            tasks.spawn(async move {
                let call = Call { name: &name, address, cached, deadline, consortium, tls, crs };
                let got = match tokio::time::timeout(deadline, call.contribution(request, &plan, index, &public)).await
                {
                    Ok(got) => got,
                    Err(_) => Err((
                        tried,
                        failed(
                            Code::DeadlineExceeded,
                            format!("party `{name}` did not answer within {} ms", deadline.as_millis()),
                        ),
                    )),
                };
                (index, got)
            });
        }
        let mut results: Vec<Option<Answer>> = (0..plan.model().parties().len()).map(|_| None).collect();
        while let Some(done) = tasks.join_next().await {
            let (index, got) =
                done.map_err(|e| CoordinatorError::Transport(format!("contribution task failed: {e}")))?;
            results[index] = Some(got);
        }
        let mut contributions = Vec::with_capacity(results.len());
        let mut signed = Vec::new();
        let mut channels = lock(&self.channels)?;
        let mut errors = Vec::new();
        for ((got, absent), name) in results.into_iter().zip(absent).zip(&plan.model().parties()) {
            let Some(got) = got else {
                contributions.extend(absent);
                continue;
            };
            match got {
                Ok(r) => {
                    channels.insert(channel_key(name, &r.address), r.channel);
                    timings.party_encrypt_us = timings.party_encrypt_us.max(r.encrypt_us);
                    timings.verify_us = timings.verify_us.max(r.verify_us);
                    timings.contribution_bytes += r.bytes;
                    contributions.push(r.contribution);
                    signed.extend(r.signed);
                }
                Err((address, e)) => {
                    // A fresh connection next time, in case the party moved
                    // or restarted.
                    if let Some(a) = address {
                        channels.remove(&channel_key(name, &a));
                    }
                    errors.push(e);
                }
            }
        }
        drop(channels);
        let mut errors = errors.into_iter();
        match errors.next() {
            None => Ok((contributions, signed)),
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

impl Engine {
    /// For every party the lender's alignment marked absent, the
    /// contribution of a record with all its features missing, encrypted
    /// here under the lender's public key (the values are the model's
    /// public missing treatment, so nothing secret is encrypted); `None` for
    /// the parties to ask. A feature whose treatment is `reject` fails the
    /// job: the model cannot decide without that party.
    async fn absent_contributions(
        &self,
        job: &JobRecord,
        plan: &Arc<Plan>,
        public: &PublicKey,
    ) -> Result<Vec<Option<Contribution>>> {
        let absent: Vec<bool> = plan.model().parties().iter().map(|p| job.request.absent.contains(p)).collect();
        if !absent.contains(&true) {
            return Ok(absent.iter().map(|_| None).collect());
        }
        let (plan, public) = (plan.clone(), public.clone());
        tokio::task::spawn_blocking(move || {
            absent
                .iter()
                .enumerate()
                .map(|(index, &is_absent)| {
                    if !is_absent {
                        return Ok(None);
                    }
                    let name = &plan.model().parties()[index];
                    let missing = |e: jointscore_circuits::Error| {
                        failed(
                            Code::FailedPrecondition,
                            format!(
                                "party `{name}` does not hold the subject (per the lender's alignment) and the \
                                 model cannot treat its features as missing: {e}"
                            ),
                        )
                    };
                    let record = Record::for_party(plan.model(), index, &serde_json::json!({})).map_err(missing)?;
                    let digits = plan.contribution(index, &record).map_err(missing)?;
                    Ok(Some(Contribution::encrypt(&plan, index, &digits, &public)?))
                })
                .collect()
        })
        .await
        .map_err(|e| CoordinatorError::Transport(format!("encryption task failed: {e}")))?
    }
}

/// One party's answer: its contribution, or the failure and the address
/// whose cached connection to drop.
type Answer = std::result::Result<Received, (Option<String>, CoordinatorError)>;

struct Received {
    contribution: Contribution,
    /// The party's signed envelope, when it sent a signature.
    signed: Option<SignedContribution>,
    encrypt_us: u64,
    /// Proof verification, in strict mode.
    verify_us: u64,
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
    consortium: Option<Arc<Consortium>>,
    tls: Option<NodeTls>,
    crs: Option<Arc<Crs>>,
}

impl Call<'_> {
    /// The party's signed envelope over exactly these bytes for exactly
    /// this request. With a consortium, a missing or invalid signature fails
    /// the contribution: UNAUTHENTICATED for a signature that does not
    /// verify, PERMISSION_DENIED for a signer that is not a current party
    /// member. Without one, a signature is passed on unchecked.
    fn check_signature(
        &self,
        binding: &ContributionBinding,
        header: &ContributionHeader,
        bytes: &[u8],
    ) -> Result<Option<SignedContribution>> {
        let name = self.name;
        let envelope = binding.clone().envelope(ciphertext_sha256(bytes), header.signed_ms);
        if let Some(consortium) = &self.consortium {
            if header.signature.is_empty() {
                return Err(failed(
                    Code::Unauthenticated,
                    format!("party `{name}` sent an unsigned contribution; the consortium requires signatures"),
                ));
            }
            let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
            envelope.verify(consortium, &header.signature, now).map_err(|e| {
                let code = match e {
                    IdentityError::BadSignature { .. } => Code::Unauthenticated,
                    _ => Code::PermissionDenied,
                };
                failed(code, format!("contribution of party `{name}` refused: {e}"))
            })?;
        }
        Ok((!header.signature.is_empty()).then(|| SignedContribution {
            party: envelope.party,
            ciphertext_sha256: envelope.ciphertext_sha256,
            signed_ms: envelope.time_ms,
            signature: hex::encode(&header.signature),
        }))
    }
}

/// A party's message as it may be stored, logged and shown to lenders:
/// at most 512 bytes, control characters replaced.
pub(crate) fn bounded(message: &str) -> String {
    let mut out: String = message.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    if out.len() > 512 {
        let mut end = 512;
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
        out.push('…');
    }
    out
}

fn unknown_key(key_id: &str) -> CoordinatorError {
    CoordinatorError::Precondition(format!(
        "key set {key_id} is not registered; the lender registers it first (`jointscore lender register`)"
    ))
}

pub(crate) fn micros(d: Duration) -> u64 {
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
        plan: &Arc<Plan>,
        index: usize,
        public: &PublicKey,
    ) -> Answer {
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
        let channel = match self.cached.clone() {
            Some(channel) => channel,
            None => party_endpoint(self.tls.as_ref(), self.name, &address)
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
                Code::Unavailable => unreachable(&bounded(s.message())),
                // Only the codes a party may end a job with pass through; a
                // party cannot make a job look like the coordinator's own
                // failure (RESOURCE_EXHAUSTED, ALREADY_EXISTS, INTERNAL, …).
                code @ (Code::NotFound
                | Code::PermissionDenied
                | Code::FailedPrecondition
                | Code::InvalidArgument
                | Code::DeadlineExceeded) => failed(code, format!("party `{name}`: {}", bounded(s.message()))),
                other => {
                    failed(Code::Unavailable, format!("party `{name}` failed ({other:?}): {}", bounded(s.message())))
                }
            };
            let mut stream: Streaming<ContributeChunk> =
                client.contribute(request.clone()).await.map_err(status)?.into_inner();
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
            let binding = ContributionBinding {
                job_id: request.job_id.clone(),
                subject: request.subject.clone(),
                model_id: request.model_id.clone(),
                key_id: request.key_id.clone(),
                party: name.to_string(),
            };
            let signed = self.check_signature(&binding, &header, &bytes)?;
            let len = bytes.len() as u64;
            let (contribution, verify_us) = match &self.crs {
                None => (Contribution::from_bytes(&bytes, plan, index, public)?, 0),
                Some(crs) => {
                    // Verifying is CPU work (a fraction of a second per
                    // proof): off the async workers.
                    let (crs, plan, public) = (crs.clone(), plan.clone(), public.clone());
                    tokio::task::spawn_blocking(move || {
                        let start = Instant::now();
                        let metadata = binding.proof_metadata();
                        Contribution::from_proven_bytes(&bytes, &plan, index, &public, &crs, &metadata)
                            .map(|c| (c, micros(start.elapsed())))
                    })
                    .await
                    .map_err(|e| CoordinatorError::Transport(format!("verification task failed: {e}")))?
                    .map_err(|e| {
                        failed(Code::InvalidArgument, format!("contribution of party `{name}` refused: {e}"))
                    })?
                }
            };
            Ok((contribution, signed, header.encrypt_us, verify_us, len))
        }
        .await;
        match received {
            Ok((contribution, signed, encrypt_us, verify_us, bytes)) => {
                Ok(Received { contribution, signed, encrypt_us, verify_us, bytes, address, channel })
            }
            Err(e) => Err((Some(address), e)),
        }
    }
}
