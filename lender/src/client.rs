//! The lender's side of the protocol: register keys, request decisions,
//! fetch and decrypt results.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jointscore_circuits::fhe::EncryptedResult;
use jointscore_circuits::wire::RESULT_LIMIT;
use jointscore_circuits::{Bundle, Plan, PlanKind};
use jointscore_monitor::Compiled;
use jointscore_net::Target;
use jointscore_net::plan_to_wire;
use jointscore_proto::v1::coordinator_client::CoordinatorClient;
use jointscore_proto::v1::key_upload::Part;
use jointscore_proto::v1::{
    DecideRequest, DecideResponse, FetchResultRequest, GetJobRequest, Job, JobResult, JobState, KeyHeader, KeyUpload,
    WaitJobRequest,
};
use jointscore_proto::{CHUNK_SIZE, MESSAGE_LIMIT, collect, collect_result, next_job};
use tonic::Code;
use tonic::Streaming;
use tonic::transport::Channel;

use jointscore_identity::{Consortium, ContributionEnvelope, KeyRegistration, LenderRequest, NodeKey};

use crate::error::{LenderError, Result};
use crate::keys::LenderKeys;

/// A lender connected to a coordinator, for one model and plan (or one
/// monitor spec, [`PlanKind::Monitor`]).
pub struct Lender {
    client: CoordinatorClient<Channel>,
    keys: Arc<LenderKeys>,
    model_toml: String,
    plan: Arc<Compiled>,
    /// When set, every decision must come with a valid signature by each
    /// party that was asked.
    consortium: Option<Arc<Consortium>>,
    /// Who this lender is, and the key it signs registrations and requests
    /// with.
    signer: Option<Signer>,
    /// The name it registered its key set under, which unsigned requests
    /// name (without a consortium nothing authenticates it).
    name: String,
}

/// A lender's consortium identity: its member name, identity key and the
/// consortium's name.
#[derive(Clone)]
struct Signer {
    name: String,
    key: Arc<NodeKey>,
    consortium: String,
}

/// Where one decision's time went, as the lender sees it.
#[derive(Clone, Debug, Default)]
pub struct Phases {
    /// Request sent to result ready (everything at the coordinator and
    /// parties, network included).
    pub remote: Duration,
    /// The slowest party's compute-and-encrypt time (reported by it).
    pub party_encrypt: Duration,
    /// Collection at the coordinator: connecting to parties, their work,
    /// and the transfer of their ciphertexts.
    pub collect: Duration,
    /// Strict mode: the slowest party's proof verification at the
    /// coordinator (part of `collect`).
    pub verify: Duration,
    /// Joint-circuit evaluation at the coordinator.
    pub evaluate: Duration,
    /// Downloading the encrypted result.
    pub fetch: Duration,
    /// Decrypting it.
    pub decrypt: Duration,
    /// Request sent to decision decrypted.
    pub total: Duration,
}

/// A decrypted decision.
#[derive(Clone, Debug)]
pub struct Decision {
    /// The coordinator's job.
    pub job_id: String,
    /// The decision bundle, restricted to what the model reveals.
    pub bundle: Bundle,
    /// Timing.
    pub phases: Phases,
    /// Bootstraps the coordinator ran.
    pub pbs: u64,
    /// Bytes of the encrypted result.
    pub result_bytes: u64,
}

/// A client of the coordinator `target` names (over mutual TLS when the
/// target has it), with the protocol's message limits.
pub(crate) async fn coordinator_client(target: &Target) -> Result<CoordinatorClient<Channel>> {
    let connect = |message: String| LenderError::Connect { address: target.address.clone(), message };
    let channel = target
        .endpoint()
        .map_err(connect)?
        .connect_timeout(Duration::from_secs(10))
        .connect()
        .await
        .map_err(|e| connect(std::error::Error::source(&e).map_or(e.to_string(), ToString::to_string)))?;
    Ok(CoordinatorClient::new(channel)
        .max_decoding_message_size(MESSAGE_LIMIT)
        .max_encoding_message_size(MESSAGE_LIMIT))
}

/// Longest a lender waits for one job by default.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(300);

impl Lender {
    /// Connects to the coordinator `target` names: a URL, or a
    /// [`Target`] with this lender's mutual TLS.
    pub async fn connect(
        target: impl Into<Target>,
        keys: Arc<LenderKeys>,
        model_toml: String,
        kind: PlanKind,
    ) -> Result<Lender> {
        let plan = Arc::new(Compiled::from_file(&model_toml, kind)?);
        let client = coordinator_client(&target.into()).await?;
        Ok(Lender { client, keys, model_toml, plan, consortium: None, signer: None, name: String::new() })
    }

    /// Signs every key registration and decision request as the consortium
    /// member `name` with `key`, and (as [`Lender::require_signatures`])
    /// checks every party's signature against `consortium`. Parties with a
    /// consortium file contribute only to requests a current lender signed,
    /// under a key set the same lender registered.
    pub fn sign_as(&mut self, name: &str, key: Arc<NodeKey>, consortium: Arc<Consortium>) {
        self.signer = Some(Signer { name: name.into(), key, consortium: consortium.name.clone() });
        self.consortium = Some(consortium);
    }

    /// Requires, for every decision, a valid signed envelope from each party
    /// that was asked, over this job, subject, model and key set.
    pub fn require_signatures(&mut self, consortium: Arc<Consortium>) {
        self.consortium = Some(consortium);
    }

    /// Checks a finished job's signed envelopes: one per party of the model
    /// not named absent in the job (callers that sent the request compare
    /// that list with their own first, as `decide_with` does), each
    /// verifying against the consortium. Does nothing when no consortium
    /// was given.
    pub fn check_signatures(&self, job: &Job) -> Result<()> {
        let Some(consortium) = &self.consortium else { return Ok(()) };
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let unverified = |m: String| LenderError::Unverified { job: job.job_id.clone(), message: m };
        let commitment =
            LenderRequest { subject: job.subject.clone(), salt: job.salt.clone(), ..LenderRequest::default() }
                .subject_commitment();
        let lender = self.signer.as_ref().map_or_else(|| self.name.clone(), |s| s.name.clone());
        for party in self.plan.party_names().iter().filter(|p| !job.absent.contains(p)) {
            let signed = job
                .contributions
                .iter()
                .find(|c| &c.party == party)
                .ok_or_else(|| unverified(format!("no signed contribution from party `{party}`")))?;
            // This lender's own model and key set, not the job's word.
            let envelope = ContributionEnvelope {
                request_id: job.request_id.clone(),
                lender: lender.clone(),
                job_id: job.job_id.clone(),
                subject: commitment.clone(),
                model_id: self.plan.id().to_string(),
                key_id: self.keys.id().to_string(),
                party: party.clone(),
                consent: signed.consent.clone(),
                ciphertext_sha256: signed.ciphertext_sha256.clone(),
                time_ms: signed.signed_ms,
            };
            envelope.verify(consortium, &signed.signature, now).map_err(|e| unverified(e.to_string()))?;
        }
        if job.model_id != self.plan.id() || job.key_id != self.keys.id() {
            return Err(unverified("the job is for another model or key set".into()));
        }
        Ok(())
    }

    /// The plan decisions are asked under; refused for a monitor spec.
    pub fn plan(&self) -> Result<&Plan> {
        match &*self.plan {
            Compiled::Model(plan) => Ok(plan),
            Compiled::Monitor(_) => Err(LenderError::Usage("this client asks for monitoring, not decisions".into())),
        }
    }

    /// The model's or monitor spec's compiled plan.
    pub fn compiled(&self) -> &Compiled {
        &self.plan
    }

    /// The key set's id.
    pub fn key_id(&self) -> &str {
        self.keys.id()
    }

    /// Uploads the public and compressed evaluation keys (never the secret
    /// key) under `lender`'s name.
    pub async fn register(&mut self, lender: &str) -> Result<String> {
        self.name = lender.to_string();
        let public = self.keys.public.to_bytes()?;
        let evaluation = &self.keys.evaluation;
        let (consortium, signature) = match &self.signer {
            Some(signer) => {
                let statement = KeyRegistration {
                    key_id: self.keys.id().to_string(),
                    lender: lender.to_string(),
                    consortium: signer.consortium.clone(),
                };
                (signer.consortium.clone(), statement.sign(&signer.key).to_vec())
            }
            None => (String::new(), Vec::new()),
        };
        let mut messages = vec![KeyUpload {
            part: Some(Part::Header(KeyHeader {
                key_id: self.keys.id().to_string(),
                lender: lender.to_string(),
                public_len: public.len() as u64,
                evaluation_len: evaluation.len() as u64,
                consortium,
                signature,
            })),
        }];
        messages.extend(public.chunks(CHUNK_SIZE).map(|c| KeyUpload { part: Some(Part::PublicChunk(c.to_vec())) }));
        messages
            .extend(evaluation.chunks(CHUNK_SIZE).map(|c| KeyUpload { part: Some(Part::EvaluationChunk(c.to_vec())) }));
        let response = self.client.register_keys(tokio_stream::iter(messages)).await?;
        Ok(response.into_inner().key_id)
    }

    /// Asks for a decision on `subject`, every party of the model asked;
    /// `request_id` makes retries safe.
    pub async fn submit(&mut self, subject: &str, request_id: &str) -> Result<DecideResponse> {
        self.submit_with(subject, request_id, &[]).await
    }

    /// Asks for a decision on `subject` without asking the `absent` parties
    /// (those the lender's alignment found not to hold it): their features
    /// count as missing.
    pub async fn submit_with(&mut self, subject: &str, request_id: &str, absent: &[String]) -> Result<DecideResponse> {
        let signed = LenderRequest {
            request_id: request_id.into(),
            lender: self.signer.as_ref().map_or_else(|| self.name.clone(), |s| s.name.clone()),
            key_id: self.keys.id().into(),
            model_id: self.plan.id().into(),
            plan: self.plan.kind().name().into(),
            subject: subject.into(),
            absent: absent.to_vec(),
            time_ms: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64),
            salt: LenderRequest::fresh_salt(),
        };
        let signature = self.signer.as_ref().map(|s| signed.sign(&s.key).to_vec()).unwrap_or_default();
        let request = DecideRequest {
            request_id: signed.request_id,
            key_id: signed.key_id,
            model_id: signed.model_id,
            model_toml: self.model_toml.clone(),
            subject: signed.subject,
            plan: plan_to_wire(self.plan.kind()),
            absent: signed.absent,
            lender: signed.lender,
            time_ms: signed.time_ms,
            salt: signed.salt,
            signature,
        };
        Ok(self.client.decide(request).await?.into_inner())
    }

    /// A job's state.
    pub async fn job(&mut self, job_id: &str) -> Result<Job> {
        Ok(self.client.get_job(GetJobRequest { job_id: job_id.into() }).await?.into_inner())
    }

    /// Waits for a job to end (long polls, so the result is seen as soon
    /// as it is ready); a failed job is an error carrying its code and
    /// reason.
    pub async fn wait(&mut self, job_id: &str, patience: Duration) -> Result<Job> {
        let deadline = Instant::now() + patience;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let wait_ms = u32::try_from(left.as_millis()).unwrap_or(u32::MAX).min(30_000);
            let job = self.client.wait_job(WaitJobRequest { job_id: job_id.into(), wait_ms }).await?.into_inner();
            if let Some(job) = settled(job_id, job, deadline)? {
                return Ok(job);
            }
        }
    }

    /// Downloads a finished job's encrypted result and checks its shape.
    pub async fn fetch(&mut self, job_id: &str) -> Result<EncryptedResult> {
        let stream = self.client.fetch_result(FetchResultRequest { job_id: job_id.into() }).await?.into_inner();
        let bytes = collect(stream, "encrypted result", RESULT_LIMIT).await?;
        Ok(EncryptedResult::from_bytes(&bytes, &*self.plan, self.keys.id())?)
    }

    /// A job as it stands and, if it is done, its encrypted result, in one
    /// call (`AwaitResult` without waiting); from a coordinator that does
    /// not serve that call, `GetJob` and then `FetchResult`.
    pub async fn job_and_result(&mut self, job_id: &str) -> Result<(Job, Option<EncryptedResult>)> {
        match self.await_result(job_id, 0).await {
            Ok((job, Some(rest))) => {
                let result = self.read_result(rest, &job).await?;
                Ok((job, Some(result)))
            }
            Ok((job, None)) => Ok((job, None)),
            Err(LenderError::Refused { code: Code::Unimplemented, .. }) => {
                let job = self.job(job_id).await?;
                let result = match JobState::try_from(job.state) {
                    Ok(JobState::Done) => Some(self.fetch(job_id).await?),
                    _ => None,
                };
                Ok((job, result))
            }
            Err(e) => Err(e),
        }
    }

    /// One `AwaitResult` call: the job once it has ended (or as it stands
    /// when `wait_ms` passes) and, for a done job, the stream its result
    /// follows on.
    async fn await_result(&mut self, job_id: &str, wait_ms: u32) -> Result<(Job, Option<Streaming<JobResult>>)> {
        let mut stream =
            self.client.await_result(WaitJobRequest { job_id: job_id.into(), wait_ms }).await?.into_inner();
        let job = next_job(&mut stream).await?;
        let done = JobState::try_from(job.state) == Ok(JobState::Done);
        Ok((job, done.then_some(stream)))
    }

    /// Reads the result that follows a done job on an `AwaitResult`
    /// stream, exactly the size the job declares, and checks its shape.
    async fn read_result(&self, rest: Streaming<JobResult>, job: &Job) -> Result<EncryptedResult> {
        let bytes = collect_result(rest, job.result_bytes, RESULT_LIMIT).await?;
        Ok(EncryptedResult::from_bytes(&bytes, &*self.plan, self.keys.id())?)
    }

    /// Waits for a job to end (long polls) and takes a done job's result on
    /// the same stream, so a decision costs no round trip after it ends; a
    /// failed job is an error carrying its code and reason. From a
    /// coordinator that does not serve `AwaitResult`, the job alone (and
    /// the caller fetches).
    async fn wait_with_result(
        &mut self,
        job_id: &str,
        patience: Duration,
    ) -> Result<(Job, Option<Streaming<JobResult>>)> {
        let deadline = Instant::now() + patience;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let wait_ms = u32::try_from(left.as_millis()).unwrap_or(u32::MAX).min(30_000);
            let (job, rest) = match self.await_result(job_id, wait_ms).await {
                Err(LenderError::Refused { code: Code::Unimplemented, .. }) => {
                    return Ok((self.wait(job_id, left).await?, None));
                }
                answer => answer?,
            };
            if let Some(job) = settled(job_id, job, deadline)? {
                return Ok((job, rest));
            }
        }
    }

    /// Decrypts a result into the decision bundle.
    pub fn decrypt(&self, result: &EncryptedResult) -> Result<Bundle> {
        Ok(self.keys.secret.decrypt(self.plan()?, result)?)
    }

    /// Records in the coordinator's ledger the alerts monitoring job
    /// `job_id` raised, signed by this lender when it signs requests.
    pub async fn report_alerts(&mut self, job_id: &str, alerts: &[String]) -> Result<()> {
        let report = jointscore_identity::AlertReport {
            job_id: job_id.into(),
            lender: self.signer.as_ref().map_or_else(|| self.name.clone(), |s| s.name.clone()),
            alerts: alerts.to_vec(),
            time_ms: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64),
        };
        let signature = self.signer.as_ref().map(|s| report.sign(&s.key).to_vec()).unwrap_or_default();
        self.client
            .record_alerts(jointscore_proto::v1::RecordAlertsRequest {
                job_id: report.job_id,
                alerts: report.alerts,
                lender: report.lender,
                time_ms: report.time_ms,
                signature,
            })
            .await?;
        Ok(())
    }

    /// Decrypts a monitoring result: whether each alert of the spec is
    /// raised, in spec order.
    pub fn decrypt_alerts(&self, result: &EncryptedResult) -> Result<Vec<bool>> {
        match &*self.plan {
            Compiled::Monitor(plan) => Ok(self.keys.secret.decrypt_alerts(plan.alert_plan(), result)?),
            Compiled::Model(_) => Err(LenderError::Usage("this client asks for decisions, not monitoring".into())),
        }
    }

    /// A whole decision, every party asked: submit, wait, fetch, decrypt.
    pub async fn decide(&mut self, subject: &str, request_id: &str) -> Result<Decision> {
        self.decide_with(subject, request_id, &[]).await
    }

    /// A whole decision without asking the `absent` parties (see
    /// [`Lender::submit_with`]).
    pub async fn decide_with(&mut self, subject: &str, request_id: &str, absent: &[String]) -> Result<Decision> {
        let start = Instant::now();
        let accepted = self.submit_with(subject, request_id, absent).await?;
        self.complete(&accepted, subject, request_id, absent, start).await
    }

    /// Finishes a decision submitted with [`Lender::submit_with`]: waits for
    /// its job, checks that the job is this request's and every envelope,
    /// takes its result (on the same stream as its end) and decrypts. Submitting many requests first and completing
    /// them afterwards lets the coordinator evaluate them together (it
    /// batches the jobs that are ready at once); `submitted` is when the
    /// request was sent, for the timings.
    pub async fn complete(
        &mut self,
        accepted: &DecideResponse,
        subject: &str,
        request_id: &str,
        absent: &[String],
        submitted: Instant,
    ) -> Result<Decision> {
        let (result, mut decision) = self.complete_result(accepted, subject, request_id, absent, submitted).await?;
        let decrypt_start = Instant::now();
        decision.bundle = self.decrypt(&result)?;
        decision.phases.decrypt = decrypt_start.elapsed();
        decision.phases.total = submitted.elapsed();
        Ok(decision)
    }

    /// Like [`Lender::complete`] for a monitoring request: the alert bits,
    /// in spec order.
    pub async fn complete_alerts(
        &mut self,
        accepted: &DecideResponse,
        subject: &str,
        request_id: &str,
        submitted: Instant,
    ) -> Result<Vec<bool>> {
        let (result, _) = self.complete_result(accepted, subject, request_id, &[], submitted).await?;
        self.decrypt_alerts(&result)
    }

    /// Waits for the job, checks it is this request's and its envelopes,
    /// and reads its encrypted result; the decision's bundle is left empty.
    async fn complete_result(
        &mut self,
        accepted: &DecideResponse,
        subject: &str,
        request_id: &str,
        absent: &[String],
        submitted: Instant,
    ) -> Result<(EncryptedResult, Decision)> {
        let start = submitted;
        let (job, rest) = self.wait_with_result(&accepted.job_id, DEFAULT_WAIT).await?;
        // The job must be the one this request made: an older job about the
        // same subject would carry valid envelopes too.
        if job.job_id != accepted.job_id || job.request_id != request_id {
            return Err(LenderError::Unverified {
                job: job.job_id,
                message: format!("the coordinator answered request {request_id} with request {}'s job", job.request_id),
            });
        }
        if job.subject != subject {
            return Err(LenderError::Unverified {
                job: job.job_id,
                message: format!("the coordinator answered for subject `{}`", job.subject),
            });
        }
        // The parties excused from signing are the ones this lender named,
        // not whatever list the coordinator reports.
        let mut sent: Vec<String> = absent.to_vec();
        sent.sort();
        sent.dedup();
        if job.absent != sent {
            return Err(LenderError::Unverified {
                job: job.job_id,
                message: format!("the job names absent {:?}; the lender named {sent:?}", job.absent),
            });
        }
        self.check_signatures(&job)?;
        let remote = start.elapsed();
        // The result follows the job on the same stream (already on its
        // way while the job was checked).
        let fetch_start = Instant::now();
        let result = match rest {
            Some(rest) => self.read_result(rest, &job).await?,
            None => self.fetch(&accepted.job_id).await?,
        };
        let fetch = fetch_start.elapsed();
        let t = job.timings.unwrap_or_default();
        let decision = Decision {
            job_id: accepted.job_id.clone(),
            bundle: Bundle::default(),
            phases: Phases {
                remote,
                party_encrypt: Duration::from_micros(t.party_encrypt_us),
                collect: Duration::from_micros(t.collect_us),
                verify: Duration::from_micros(t.verify_us),
                evaluate: Duration::from_micros(t.evaluate_us),
                fetch,
                decrypt: Duration::ZERO,
                total: start.elapsed(),
            },
            pbs: t.pbs,
            result_bytes: job.result_bytes,
        };
        Ok((result, decision))
    }
}

/// What a wait's latest answer means: the finished job, a failed job's
/// error, a timeout past `deadline`, or `None` to keep waiting.
fn settled(job_id: &str, job: Job, deadline: Instant) -> Result<Option<Job>> {
    match JobState::try_from(job.state) {
        Ok(JobState::Done) => Ok(Some(job)),
        Ok(JobState::Failed) => {
            Err(LenderError::JobFailed { job: job_id.into(), code: Code::from_i32(job.code), reason: job.reason })
        }
        _ if Instant::now() >= deadline => Err(LenderError::Timeout(job_id.into())),
        _ => Ok(None),
    }
}
