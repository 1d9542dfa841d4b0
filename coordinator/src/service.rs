//! The coordinator's gRPC service, a thin adapter over the engine and store.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use jointscore_circuits::fhe::{EvaluationKey, PublicKey};
use jointscore_circuits::wire::{EVALUATION_KEY_LIMIT, PUBLIC_KEY_LIMIT};
use jointscore_circuits::{Model, Plan};
use jointscore_proto::v1::audit_chunk;
use jointscore_proto::v1::coordinator_server::{Coordinator, CoordinatorServer};
use jointscore_proto::v1::key_upload::Part;
use jointscore_proto::v1::{
    self as pb, AuditChunk, AuditLogRequest, Chunk, DecideRequest, DecideResponse, FetchResultRequest, GetJobRequest,
    GetPublicKeyRequest, KeyUpload, PsiCloseReply, PsiCloseRequest, PsiOpenChunk, PsiOpenRequest, PsiQueryRequest,
    RegisterKeysResponse, RegisterPartyRequest, RegisterPartyResponse, RunStatsRequest, WaitJobRequest,
};
use jointscore_proto::{
    Assembler, MAX_MESSAGE_SIZE, NodeTls, chunks, plan_from_wire, plan_to_wire, psi_open_messages, strict_crs,
};
use jointscore_stats::StatsSpec;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_stream::Stream;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::Server;
use tonic::{Request, Response, Status, Streaming};

use jointscore_audit::{EntryKind, Record};
use jointscore_identity::{Consortium, NodeKey, Role};

use crate::config::CoordinatorConfig;
use crate::engine::Engine;
use crate::error::{CoordinatorError, Result};
use crate::job::{JobRecord, JobState, NewJob, NewStatsJob, StatsJobRecord};
use crate::ledger::Ledger;
use crate::psi::PsiRelay;
use crate::store::{Inserted, JobStore};

/// Largest model file accepted with a decision request.
const MODEL_LIMIT: usize = 256 << 10;
/// Longest a WaitJob call holds, in milliseconds.
const WAIT_LIMIT_MS: u32 = 60_000;
/// Longest id, name or address accepted.
const FIELD_LIMIT: usize = 256;

type ChunkStream = Pin<Box<dyn Stream<Item = std::result::Result<Chunk, Status>> + Send>>;
type PsiStream = Pin<Box<dyn Stream<Item = std::result::Result<PsiOpenChunk, Status>> + Send>>;
type AuditStream = Pin<Box<dyn Stream<Item = std::result::Result<AuditChunk, Status>> + Send>>;

/// The coordinator's gRPC service.
pub struct CoordinatorService {
    engine: Arc<Engine>,
    psi: PsiRelay,
}

/// Every role: calls any member may make.
const MEMBERS: &[Role] = &[Role::Party, Role::Coordinator, Role::Lender];

impl CoordinatorService {
    /// Under mutual TLS, the member that made `request` if it has one of
    /// `roles` (UNAUTHENTICATED without a listed certificate,
    /// PERMISSION_DENIED for another role, a revoked or an expired
    /// identity); `None` without TLS, where callers are not authenticated.
    ///
    /// A member refused is recorded in the ledger: the refusal is
    /// attributable, unlike a caller without a listed certificate.
    fn admit<T>(&self, request: &Request<T>, roles: &[Role]) -> std::result::Result<Option<String>, Status> {
        let Some(tls) = &self.engine.tls else { return Ok(None) };
        match tls.admit(request, roles) {
            Ok(member) => Ok(Some(member.name.clone())),
            Err(status) => {
                if let Some(member) = tls.member_of(request) {
                    self.record_refusal(&member.name, status.code(), status.message());
                }
                Err(status)
            }
        }
    }

    /// Records in the ledger that the member `name` was refused.
    fn record_refusal(&self, name: &str, code: tonic::Code, message: &str) {
        let Some(ledger) = &self.engine.ledger else { return };
        let lender = self.engine.tls.as_ref().and_then(|t| t.consortium().member(name).ok()).map(|m| m.role);
        let (lender, parties) = match lender {
            Some(Role::Lender) => (Some(name.to_string()), Vec::new()),
            _ => (None, vec![name.to_string()]),
        };
        ledger.record(Record {
            kind: EntryKind::Refusal,
            lender,
            parties,
            detail: format!("{code:?}: {message}"),
            ..Record::default()
        });
    }

    /// Under mutual TLS, a job is its lender's: the member that registered
    /// the key set it is for. Another lender is told the job does not exist
    /// (`NOT_FOUND`), so job ids cannot be probed across lenders.
    fn own_job(&self, caller: Option<&str>, job: Option<JobRecord>, job_id: &str) -> Result<JobRecord> {
        let unknown = || CoordinatorError::UnknownJob(job_id.to_string());
        let job = job.ok_or_else(unknown)?;
        if let Some(caller) = caller
            && self.engine.store.key_owner(&job.request.key_id)?.as_deref() != Some(caller)
        {
            return Err(unknown());
        }
        Ok(job)
    }

    /// Under mutual TLS, only the lender that registered a key set asks for
    /// decisions under it or registers it again.
    fn own_key_set(&self, caller: Option<&str>, key_id: &str) -> Result<()> {
        let Some(caller) = caller else { return Ok(()) };
        match self.engine.store.key_owner(key_id)? {
            Some(owner) if owner != caller => {
                let message = format!("key set {key_id} was registered by another lender, not `{caller}`");
                self.record_refusal(caller, tonic::Code::PermissionDenied, &message);
                Err(CoordinatorError::Denied(message))
            }
            _ => Ok(()),
        }
    }

    /// [`same_member`], with a refusal recorded in the ledger.
    fn same_member(&self, caller: Option<&str>, what: &str, named: &str) -> Result<()> {
        same_member(caller, what, named).inspect_err(|e| {
            if let Some(caller) = caller {
                self.record_refusal(caller, tonic::Code::PermissionDenied, &e.to_string());
            }
        })
    }
}

/// Refuses a request whose `what` names another member than the
/// authenticated `caller`.
fn same_member(caller: Option<&str>, what: &str, named: &str) -> Result<()> {
    match caller {
        Some(caller) if caller != named => Err(CoordinatorError::Denied(format!(
            "the {what} `{}` is not the caller `{caller}`: a member acts only under its own name",
            named.chars().take(128).collect::<String>()
        ))),
        _ => Ok(()),
    }
}

fn field<'a>(name: &str, value: &'a str) -> Result<&'a str> {
    if value.is_empty() {
        return Err(CoordinatorError::Invalid(format!("`{name}` is empty")));
    }
    if value.len() > FIELD_LIMIT {
        return Err(CoordinatorError::Invalid(format!("`{name}` is longer than {FIELD_LIMIT} bytes")));
    }
    if value.chars().any(char::is_control) {
        return Err(CoordinatorError::Invalid(format!("`{name}` holds control characters")));
    }
    Ok(value)
}

fn stream_of(bytes: &[u8]) -> ChunkStream {
    Box::pin(tokio_stream::iter(chunks(bytes).into_iter().map(Ok)))
}

fn state_to_wire(state: JobState) -> i32 {
    (match state {
        JobState::Accepted => pb::JobState::Accepted,
        JobState::Collecting => pb::JobState::Collecting,
        JobState::Evaluating => pb::JobState::Evaluating,
        JobState::Done => pb::JobState::Done,
        JobState::Failed => pb::JobState::Failed,
    }) as i32
}

fn job_to_wire(job: &JobRecord) -> pb::Job {
    pb::Job {
        job_id: job.job_id.clone(),
        request_id: job.request.request_id.clone(),
        key_id: job.request.key_id.clone(),
        model_id: job.request.model_id.clone(),
        subject: job.request.subject.clone(),
        plan: plan_to_wire(job.request.plan),
        state: state_to_wire(job.state),
        code: job.code,
        reason: job.reason.clone(),
        timings: Some(pb::Timings {
            collect_us: job.timings.collect_us,
            party_encrypt_us: job.timings.party_encrypt_us,
            evaluate_us: job.timings.evaluate_us,
            pbs: job.timings.pbs,
            contribution_bytes: job.timings.contribution_bytes,
            verify_us: job.timings.verify_us,
        }),
        result_bytes: job.result_bytes,
        absent: job.request.absent.clone(),
        contributions: job
            .contributions
            .iter()
            .map(|c| pb::SignedContribution {
                party: c.party.clone(),
                ciphertext_sha256: c.ciphertext_sha256.clone(),
                signed_ms: c.signed_ms,
                signature: hex::decode(&c.signature).unwrap_or_default(),
            })
            .collect(),
    }
}

fn stats_job_to_wire(job: &StatsJobRecord) -> pb::StatsJob {
    pb::StatsJob {
        job_id: job.job_id.clone(),
        request_id: job.request.request_id.clone(),
        spec_id: job.request.spec_id.clone(),
        state: state_to_wire(job.state),
        code: job.code,
        reason: job.reason.clone(),
        entries: job
            .outcome
            .entries
            .iter()
            .map(|e| pb::StatsEntry { label: e.label.clone(), value: e.value })
            .collect(),
        included: job.outcome.included.clone(),
        dropped: job
            .outcome
            .dropped
            .iter()
            .map(|d| pb::DroppedParty { party: d.party.clone(), step: d.step.clone(), reason: d.reason.clone() })
            .collect(),
        round_us: job.outcome.round_us,
    }
}

impl CoordinatorService {
    /// Reads a job with `read` (which says whether it has ended) until it
    /// has ended or `wait_ms` (capped) has passed, waking on job ends rather
    /// than polling; answers the job as last read.
    async fn long_poll<J>(&self, wait_ms: u32, read: impl Fn() -> Result<(bool, J)>) -> Result<J> {
        let patience = Duration::from_millis(u64::from(wait_ms.min(WAIT_LIMIT_MS)));
        // Subscribe before reading, so an end between the read and the wait
        // is not missed.
        let mut ends = self.engine.job_ends();
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            let (ended, job) = read()?;
            if ended {
                return Ok(job);
            }
            match tokio::time::timeout_at(deadline, ends.changed()).await {
                Ok(Ok(())) => continue,
                // Time is up: the job as it is.
                _ => return Ok(job),
            }
        }
    }

    fn run_stats_inner(&self, r: RunStatsRequest, caller: Option<String>) -> Result<pb::StatsJob> {
        field("request_id", &r.request_id)?;
        let store = &self.engine.store;
        let new = NewStatsJob {
            request_id: r.request_id.clone(),
            spec_id: r.spec_id.clone(),
            spec_toml: r.spec_toml,
            owner: caller,
        };
        // Another lender's request id is taken, without saying whose job it
        // names or what it asked.
        let existing = |job: StatsJobRecord| {
            if job.request.spec_id != new.spec_id || job.request.owner != new.owner {
                return Err(CoordinatorError::Conflict(format!("request id `{}`", new.request_id)));
            }
            Ok(stats_job_to_wire(&job))
        };
        // A retried request finds its job even when the queue is full.
        if let Some(job) = store.stats_job_by_request(&new.request_id)? {
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
        let permit = self.engine.reserve()?;
        match store.insert_stats_job(&new)? {
            Inserted::New(job) => {
                tracing::info!(job = %job.job_id, spec = %new.spec_id, "statistics job accepted");
                let response = stats_job_to_wire(&job);
                self.engine.spawn_stats(job, permit);
                Ok(response)
            }
            Inserted::Existing(job) => existing(job),
        }
    }

    async fn register_keys_inner(&self, mut upload: Streaming<KeyUpload>, caller: Option<String>) -> Result<String> {
        let next = |s: Status| CoordinatorError::Invalid(format!("key upload interrupted: {}", s.message()));
        let header = match upload.message().await.map_err(next)? {
            Some(KeyUpload { part: Some(Part::Header(h)) }) => h,
            _ => return Err(CoordinatorError::Invalid("a key upload starts with its header".into())),
        };
        field("key_id", &header.key_id)?;
        field("lender", &header.lender)?;
        self.same_member(caller.as_deref(), "lender", &header.lender)?;
        self.own_key_set(caller.as_deref(), &header.key_id)?;
        let mut public = Assembler::new("public key", header.public_len, PUBLIC_KEY_LIMIT)?;
        let mut evaluation = Assembler::new("evaluation key", header.evaluation_len, EVALUATION_KEY_LIMIT)?;
        let _one_at_a_time = self.engine.registrations.lock().await;
        let mut evaluation_started = false;
        while let Some(message) = upload.message().await.map_err(next)? {
            match message.part {
                Some(Part::PublicChunk(_)) if evaluation_started => {
                    return Err(CoordinatorError::Invalid(
                        "the public key's chunks come before the evaluation key's".into(),
                    ));
                }
                Some(Part::PublicChunk(data)) => public.push(&data)?,
                Some(Part::EvaluationChunk(data)) => {
                    evaluation_started = true;
                    evaluation.push(&data)?;
                }
                _ => return Err(CoordinatorError::Invalid("a key upload has exactly one header".into())),
            }
        }
        let (public_bytes, evaluation_bytes) = (public.finish()?, evaluation.finish()?);
        let public = PublicKey::from_bytes(&public_bytes)?;
        if public.id() != header.key_id {
            return Err(CoordinatorError::Precondition(format!(
                "key id {} does not match the public key sent, whose id is {}",
                header.key_id,
                public.id()
            )));
        }
        let (evaluation, evaluation_bytes, public) = tokio::task::spawn_blocking(move || {
            EvaluationKey::from_compressed_bytes(&evaluation_bytes, &public).map(|k| (k, evaluation_bytes, public))
        })
        .await
        .map_err(|e| CoordinatorError::Transport(format!("key decompression task failed: {e}")))??;
        let key_id = public.id().to_string();
        // Nothing binds an evaluation key to its public key, so until
        // lenders are authenticated a key set, once registered, cannot be
        // replaced: otherwise anyone could swap in an evaluation key of
        // their own and the lender would decrypt garbage without noticing.
        let store = self.engine.store.clone();
        let (id, lender) = (key_id.clone(), header.lender.clone());
        let stored = tokio::task::spawn_blocking(move || match store.evaluation_key(&id)? {
            Some(existing) if existing == evaluation_bytes => Ok(false),
            Some(_) => Err(CoordinatorError::Conflict(format!("key set {id}"))),
            None => store.put_key_set(&id, &lender, &public_bytes, &evaluation_bytes).map(|()| true),
        })
        .await
        .map_err(|e| CoordinatorError::Transport(format!("key storage task failed: {e}")))??;
        if stored {
            self.engine.cache_keys(public, evaluation)?;
            if let Some(ledger) = &self.engine.ledger {
                ledger.append(Record {
                    kind: EntryKind::KeyRegistration,
                    lender: Some(header.lender.clone()),
                    key_id: Some(key_id.clone()),
                    ..Record::default()
                })?;
            }
        }
        tracing::info!(key_id = %key_id, lender = %header.lender, "key set registered");
        Ok(key_id)
    }

    fn decide_inner(&self, r: DecideRequest) -> Result<DecideResponse> {
        field("request_id", &r.request_id)?;
        field("subject", &r.subject)?;
        field("key_id", &r.key_id)?;
        let plan =
            plan_from_wire(r.plan).ok_or_else(|| CoordinatorError::Invalid(format!("unknown plan {}", r.plan)))?;
        let mut absent = r.absent.clone();
        for name in &absent {
            field("absent", name)?;
        }
        absent.sort();
        absent.dedup();
        let new = NewJob {
            request_id: r.request_id.clone(),
            key_id: r.key_id.clone(),
            model_id: r.model_id.clone(),
            subject: r.subject.clone(),
            plan,
            absent,
        };
        let store = &self.engine.store;
        // A retried request finds its job even when the queue is full.
        if let Some(job) = store.job_by_request(&new.request_id)? {
            return existing(job, &new);
        }
        if store.public_key(&r.key_id)?.is_none() {
            return Err(CoordinatorError::Precondition(format!(
                "key set {} is not registered; the lender registers it first (`jointscore lender register`)",
                r.key_id
            )));
        }
        if r.model_toml.len() > MODEL_LIMIT {
            return Err(CoordinatorError::Invalid(format!("model file is larger than {MODEL_LIMIT} bytes")));
        }
        let model = Model::from_toml(&r.model_toml)?;
        if model.id() != r.model_id {
            return Err(CoordinatorError::Invalid(format!(
                "model id {} does not match the model sent, whose id is {}",
                r.model_id,
                model.id()
            )));
        }
        Plan::new(&model, plan)?;
        if new.absent.len() == model.parties.len() && new.absent.iter().all(|p| model.parties.contains(p)) {
            return Err(CoordinatorError::Invalid(
                "every party of the model is named absent: no party holds the subject, so there is nothing to decide on"
                    .into(),
            ));
        }
        if let Some(stranger) = new.absent.iter().find(|p| !model.parties.contains(p)) {
            return Err(CoordinatorError::Invalid(format!(
                "`absent` names `{stranger}`, which is not a party of model {}",
                r.model_id
            )));
        }
        let permit = self.engine.reserve()?;
        store.put_model(&r.model_id, &r.model_toml)?;
        match store.insert_job(&new)? {
            Inserted::New(job) => {
                tracing::info!(job = %job.job_id, key_id = %new.key_id, "decision accepted");
                if let Some(ledger) = &self.engine.ledger {
                    ledger.record(Record {
                        kind: EntryKind::DecisionRequest,
                        lender: store.key_owner(&new.key_id)?,
                        subject: Some(new.subject.clone()),
                        parties: model.parties.iter().filter(|p| !new.absent.contains(p)).cloned().collect(),
                        job_id: Some(job.job_id.clone()),
                        model_id: Some(new.model_id.clone()),
                        key_id: Some(new.key_id.clone()),
                        detail: if new.absent.is_empty() {
                            String::new()
                        } else {
                            format!("absent: {}", new.absent.join(", "))
                        },
                        ..Record::default()
                    });
                }
                let response =
                    DecideResponse { job_id: job.job_id.clone(), state: state_to_wire(job.state), existing: false };
                self.engine.spawn(job, permit);
                Ok(response)
            }
            // Lost a race with the same request id.
            Inserted::Existing(job) => existing(job, &new),
        }
    }
}

fn existing(job: JobRecord, asked: &NewJob) -> Result<DecideResponse> {
    if &job.request != asked {
        return Err(CoordinatorError::Conflict(format!(
            "request id {} (a job for another key set, model, subject, plan or set of absent parties)",
            asked.request_id
        )));
    }
    Ok(DecideResponse { job_id: job.job_id.clone(), state: state_to_wire(job.state), existing: true })
}

#[tonic::async_trait]
impl Coordinator for CoordinatorService {
    type GetPublicKeyStream = ChunkStream;
    type FetchResultStream = ChunkStream;
    type PsiOpenStream = PsiStream;
    type AuditLogStream = AuditStream;

    async fn audit_log(&self, request: Request<AuditLogRequest>) -> std::result::Result<Response<AuditStream>, Status> {
        self.admit(&request, MEMBERS)?;
        let Some(ledger) = self.engine.ledger.clone() else {
            return Err(CoordinatorError::Precondition(
                "this coordinator keeps no audit ledger: it has no `identity` key configured".into(),
            )
            .into());
        };
        let from = request.into_inner().from_seq;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        // Reading pages from SQLite is blocking work; the stream is fed as
        // pages are read, so a long log is never held whole in memory.
        tokio::task::spawn_blocking(move || {
            let send = |part| tx.blocking_send(Ok(AuditChunk { part: Some(part) })).map_err(|_| ());
            let head = ledger.read(from, |rows| {
                for row in rows {
                    send(audit_chunk::Part::Entry(row))
                        .map_err(|()| CoordinatorError::Transport("the reader went away".into()))?;
                }
                Ok(())
            });
            let _ = match head {
                Ok(head) => send(audit_chunk::Part::Head(serde_json::to_string(&head).unwrap_or_default())),
                Err(e) => tx.blocking_send(Err(e.into())).map_err(|_| ()),
            };
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }
    type PsiQueryStream = ChunkStream;

    async fn psi_open(&self, request: Request<PsiOpenRequest>) -> std::result::Result<Response<PsiStream>, Status> {
        // A consortium lender may run a party node too (its asset
        // registry), so any member may ask; `lenders` decides who checks
        // assets, by the name its certificate proves.
        let caller = self.admit(&request, MEMBERS)?;
        let request = request.into_inner();
        self.same_member(caller.as_deref(), "requester", &request.requester)?;
        let (header, set) = self.psi.open(&self.engine, &request).await.inspect_err(|e| {
            let requester = crate::engine::bounded(&request.requester.chars().take(128).collect::<String>());
            tracing::info!(%requester, code = ?e.code(), error = %e, "PSI session refused");
        })?;
        Ok(Response::new(Box::pin(tokio_stream::iter(psi_open_messages(header, &set).into_iter().map(Ok)))))
    }

    async fn psi_close(
        &self,
        request: Request<PsiCloseRequest>,
    ) -> std::result::Result<Response<PsiCloseReply>, Status> {
        let caller = self.admit(&request, MEMBERS)?;
        self.psi.close(&self.engine, &request.into_inner().session_id, caller.as_deref()).await?;
        Ok(Response::new(PsiCloseReply {}))
    }

    async fn psi_query(&self, request: Request<PsiQueryRequest>) -> std::result::Result<Response<ChunkStream>, Status> {
        let caller = self.admit(&request, MEMBERS)?;
        let answers =
            self.psi.query(&self.engine, &request.into_inner(), caller.as_deref()).await.inspect_err(|e| {
                tracing::info!(code = ?e.code(), error = %e, "PSI query refused");
            })?;
        Ok(Response::new(stream_of(&answers)))
    }

    async fn register_party(
        &self,
        request: Request<RegisterPartyRequest>,
    ) -> std::result::Result<Response<RegisterPartyResponse>, Status> {
        let caller = self.admit(&request, &[Role::Party])?;
        let r = request.into_inner();
        field("name", &r.name)?;
        self.same_member(caller.as_deref(), "party", &r.name)?;
        field("address", &r.address)?;
        if !r.address.starts_with("http://") && !r.address.starts_with("https://") {
            return Err(
                CoordinatorError::Invalid(format!("party address `{}` is not an http(s) URL", r.address)).into()
            );
        }
        self.engine.store.put_party(&r.name, &r.address)?;
        tracing::info!(party = %r.name, address = %r.address, "party registered");
        Ok(Response::new(RegisterPartyResponse {}))
    }

    async fn register_keys(
        &self,
        request: Request<Streaming<KeyUpload>>,
    ) -> std::result::Result<Response<RegisterKeysResponse>, Status> {
        let caller = self.admit(&request, &[Role::Lender])?;
        let key_id = self.register_keys_inner(request.into_inner(), caller).await.inspect_err(|e| {
            tracing::info!(error = %e, "key registration refused");
        })?;
        Ok(Response::new(RegisterKeysResponse { key_id }))
    }

    async fn get_public_key(
        &self,
        request: Request<GetPublicKeyRequest>,
    ) -> std::result::Result<Response<ChunkStream>, Status> {
        self.admit(&request, &[Role::Party, Role::Lender])?;
        let key_id = request.into_inner().key_id;
        let bytes = self
            .engine
            .store
            .public_key(&key_id)?
            .ok_or_else(|| Status::not_found(format!("key set {key_id} is not registered")))?;
        Ok(Response::new(stream_of(&bytes)))
    }

    async fn decide(&self, request: Request<DecideRequest>) -> std::result::Result<Response<DecideResponse>, Status> {
        let caller = self.admit(&request, &[Role::Lender])?;
        let request = request.into_inner();
        self.own_key_set(caller.as_deref(), &request.key_id)?;
        let response = self.decide_inner(request).inspect_err(|e| {
            tracing::info!(error = %e, "decision request refused");
        })?;
        Ok(Response::new(response))
    }

    async fn get_job(&self, request: Request<GetJobRequest>) -> std::result::Result<Response<pb::Job>, Status> {
        let caller = self.admit(&request, &[Role::Lender])?;
        let job_id = request.into_inner().job_id;
        let job = self.own_job(caller.as_deref(), self.engine.store.job(&job_id)?, &job_id)?;
        Ok(Response::new(job_to_wire(&job)))
    }

    async fn wait_job(&self, request: Request<WaitJobRequest>) -> std::result::Result<Response<pb::Job>, Status> {
        let caller = self.admit(&request, &[Role::Lender])?;
        let WaitJobRequest { job_id, wait_ms } = request.into_inner();
        let job = self
            .long_poll(wait_ms, || {
                let job = self.own_job(caller.as_deref(), self.engine.store.job(&job_id)?, &job_id)?;
                Ok((job.state.is_terminal(), job))
            })
            .await?;
        Ok(Response::new(job_to_wire(&job)))
    }

    async fn run_stats(
        &self,
        request: Request<RunStatsRequest>,
    ) -> std::result::Result<Response<pb::StatsJob>, Status> {
        let caller = self.admit(&request, &[Role::Lender])?;
        let response = self.run_stats_inner(request.into_inner(), caller).inspect_err(|e| {
            tracing::info!(error = %e, "statistics request refused");
        })?;
        Ok(Response::new(response))
    }

    async fn wait_stats(
        &self,
        request: Request<WaitJobRequest>,
    ) -> std::result::Result<Response<pb::StatsJob>, Status> {
        let caller = self.admit(&request, &[Role::Lender])?;
        let WaitJobRequest { job_id, wait_ms } = request.into_inner();
        let job = self
            .long_poll(wait_ms, || {
                let unknown = || CoordinatorError::UnknownJob(job_id.clone());
                let job = self.engine.store.stats_job(&job_id)?.ok_or_else(unknown)?;
                // Under mutual TLS a statistics job is its requester's:
                // others get what a job that does not exist gets.
                if caller.is_some() && job.request.owner != caller {
                    return Err(unknown());
                }
                Ok((job.state.is_terminal(), job))
            })
            .await?;
        Ok(Response::new(stats_job_to_wire(&job)))
    }

    async fn fetch_result(
        &self,
        request: Request<FetchResultRequest>,
    ) -> std::result::Result<Response<ChunkStream>, Status> {
        let caller = self.admit(&request, &[Role::Lender])?;
        let job_id = request.into_inner().job_id;
        let store = &self.engine.store;
        let job = self.own_job(caller.as_deref(), store.job(&job_id)?, &job_id)?;
        match job.state {
            JobState::Done => {
                let bytes = store.result(&job_id)?.ok_or_else(|| {
                    CoordinatorError::Store(format!("job {job_id} is done but its result is missing"))
                })?;
                Ok(Response::new(stream_of(&bytes)))
            }
            JobState::Failed => Err(CoordinatorError::JobFailed { code: job.code, reason: job.reason }.into()),
            state => Err(CoordinatorError::NotReady { job: job_id, state: state.as_str() }.into()),
        }
    }
}

/// A running coordinator.
pub struct CoordinatorNode {
    address: SocketAddr,
    /// `https` under mutual TLS, `http` otherwise.
    scheme: &'static str,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::result::Result<(), tonic::transport::Error>>,
}

impl CoordinatorNode {
    /// Serves on `listener` over `store`, after re-running every job the
    /// store holds unfinished.
    pub async fn start(
        config: CoordinatorConfig,
        store: Arc<dyn JobStore>,
        listener: TcpListener,
    ) -> Result<CoordinatorNode> {
        let address = listener.local_addr().map_err(|e| CoordinatorError::Transport(e.to_string()))?;
        let consortium = config.consortium.as_deref().map(Consortium::load).transpose();
        let consortium = consortium.map_err(|e| CoordinatorError::Config(e.to_string()))?;
        let key = config.identity.as_deref().map(NodeKey::read).transpose();
        let key = key.map_err(|e| CoordinatorError::Config(e.to_string()))?;
        if let (Some(consortium), Some(key)) = (&consortium, &key) {
            let listed = consortium.coordinator().map_err(|e| CoordinatorError::Config(e.to_string()))?;
            if listed.public_key != key.public_hex() {
                return Err(CoordinatorError::Config(format!(
                    "the identity key is not the one the consortium file lists for coordinator `{}`",
                    listed.name
                )));
            }
        }
        let consortium = consortium.map(Arc::new);
        let tls = match (&consortium, &key) {
            (Some(consortium), Some(key)) => {
                let name = &consortium.coordinator().map_err(|e| CoordinatorError::Config(e.to_string()))?.name;
                NodeTls::new(key, name, consortium.clone()).map_err(|e| CoordinatorError::Config(e.to_string()))?
            }
            (Some(consortium), None) if consortium.mtls => {
                return Err(CoordinatorError::Config(
                    "the consortium runs mutual TLS (`mtls = true`), so the coordinator needs its `identity` key"
                        .into(),
                ));
            }
            _ => None,
        };
        let mut server = Server::builder();
        match &tls {
            Some(tls) => {
                server =
                    server.tls_config(tls.server_config()).map_err(|e| CoordinatorError::Transport(e.to_string()))?;
            }
            None => tracing::warn!("serving without TLS: callers are not authenticated"),
        }
        let scheme = if tls.is_some() { "https" } else { "http" };
        let ledger = key.map(|k| Ledger::open(k, store.clone())).transpose()?;
        let crs = match (&consortium, &config.consortium) {
            (Some(consortium), Some(path)) => {
                strict_crs(consortium, path).map_err(|e| CoordinatorError::Config(e.to_string()))?.map(Arc::new)
            }
            _ => None,
        };
        let engine = Engine::new(store, config, consortium, tls, ledger, crs);
        let resumed = engine.recover()?;
        let service = CoordinatorService { engine, psi: PsiRelay::default() };
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(
            server
                .add_service(
                    CoordinatorServer::new(service)
                        .max_decoding_message_size(MAX_MESSAGE_SIZE)
                        .max_encoding_message_size(MAX_MESSAGE_SIZE),
                )
                .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                    let _ = rx.await;
                }),
        );
        tracing::info!(%address, resumed, "coordinator serving");
        Ok(CoordinatorNode { address, scheme, shutdown: Some(tx), task })
    }

    /// The address it serves on.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Its URL for clients.
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.address)
    }

    /// Stops accepting requests and waits for the server to finish. Jobs in
    /// flight keep running on the runtime; whatever they have not finished
    /// when the process ends is resumed on the next start.
    pub async fn stop(mut self) -> Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        (&mut self.task)
            .await
            .map_err(|e| CoordinatorError::Transport(e.to_string()))?
            .map_err(|e| CoordinatorError::Transport(e.to_string()))
    }

    /// Serves until the server fails.
    pub async fn wait(mut self) -> Result<()> {
        (&mut self.task)
            .await
            .map_err(|e| CoordinatorError::Transport(e.to_string()))?
            .map_err(|e| CoordinatorError::Transport(e.to_string()))
    }
}
