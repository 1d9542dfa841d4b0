//! The coordinator's gRPC service: a thin adapter over the engine.
//!
//! Each RPC admits its caller (mutual TLS role check), converts the message
//! into a domain type (`crate::wire`, errors naming the field), calls the
//! engine's domain service (`decisions`, `keys`, `statistics`, `access`,
//! the ledger) and maps the one error type to a status
//! (`From<CoordinatorError> for Status`).

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use jointscore_circuits::wire::{EVALUATION_KEY_LIMIT, PUBLIC_KEY_LIMIT};
use jointscore_identity::Role;
use jointscore_proto::v1::audit_chunk;
use jointscore_proto::v1::coordinator_server::Coordinator;
use jointscore_proto::v1::key_upload::Part;
use jointscore_proto::v1::{
    self as pb, AuditChunk, AuditLogRequest, Chunk, DecideRequest, DecideResponse, FetchResultRequest, GetJobRequest,
    GetPublicKeyRequest, KeyUpload, PsiCloseReply, PsiCloseRequest, PsiOpenChunk, PsiOpenRequest, PsiQueryRequest,
    RegisterKeysResponse, RegisterPartyRequest, RegisterPartyResponse, RunStatsRequest, WaitJobRequest,
};
use jointscore_proto::{Assembler, chunks, job_result_messages, psi_open_messages};
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

use crate::decisions::DecisionRequest;
use crate::engine::Engine;
use crate::error::{CoordinatorError, Result};
use crate::job::JobState;
use crate::keys::{KeyRegistration, SignedRegistration};
use crate::psi::PsiRelay;
use crate::wire::{field, party_registration, stats_request};

/// Longest a WaitJob call holds, in milliseconds.
const WAIT_LIMIT_MS: u32 = 60_000;

type ChunkStream = Pin<Box<dyn Stream<Item = std::result::Result<Chunk, Status>> + Send>>;
type PsiStream = Pin<Box<dyn Stream<Item = std::result::Result<PsiOpenChunk, Status>> + Send>>;
type AuditStream = Pin<Box<dyn Stream<Item = std::result::Result<AuditChunk, Status>> + Send>>;
/// How often a front end reads a waiting request's job from the database
/// when workers run the jobs.
const EXTERNAL_POLL: Duration = Duration::from_millis(100);

type ResultStream = Pin<Box<dyn Stream<Item = std::result::Result<pb::JobResult, Status>> + Send>>;
type FitStream = Pin<Box<dyn Stream<Item = std::result::Result<pb::FitFrame, Status>> + Send>>;

/// The coordinator's gRPC service.
pub struct CoordinatorService {
    engine: Arc<Engine>,
    psi: PsiRelay,
}

impl CoordinatorService {
    /// The service over `engine`, relaying PSI sessions itself.
    pub(crate) fn new(engine: Arc<Engine>) -> CoordinatorService {
        CoordinatorService { engine, psi: PsiRelay::default() }
    }
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
                    self.engine.record_refusal(&member.name, status.code(), status.message());
                }
                Err(status)
            }
        }
    }
}

fn stream_of(bytes: &[u8]) -> ChunkStream {
    Box::pin(tokio_stream::iter(chunks(bytes).into_iter().map(Ok)))
}

impl CoordinatorService {
    /// The caller's decision job once it has ended or `wait_ms` has passed
    /// (another lender's job is `NOT_FOUND`): WaitJob's and AwaitResult's
    /// wait.
    async fn wait_own_job(&self, caller: Option<&str>, job_id: &str, wait_ms: u32) -> Result<crate::JobRecord> {
        self.long_poll(wait_ms, || {
            let job = self.engine.own_job(caller, job_id)?;
            Ok((job.state.is_terminal(), job))
        })
        .await
    }

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
            // Jobs that workers run end in another process: look again
            // every so often (one indexed read per waiting request).
            let until = if self.engine.external() {
                deadline.min(tokio::time::Instant::now() + EXTERNAL_POLL)
            } else {
                deadline
            };
            match tokio::time::timeout_at(until, ends.changed()).await {
                Ok(Ok(())) => continue,
                Err(_) if until < deadline => continue,
                // Time is up: the job as it is.
                _ => return Ok(job),
            }
        }
    }

    /// Reassembles a key upload (header first, then the public key's
    /// chunks, then the evaluation key's, each within its declared size and
    /// its limit) and registers it.
    async fn register_keys_inner(&self, mut upload: Streaming<KeyUpload>, caller: Option<String>) -> Result<String> {
        let next = |s: Status| CoordinatorError::Invalid(format!("key upload interrupted: {}", s.message()));
        let header = match upload.message().await.map_err(next)? {
            Some(KeyUpload { part: Some(Part::Header(h)) }) => h,
            _ => return Err(CoordinatorError::Invalid("a key upload starts with its header".into())),
        };
        field("key_id", &header.key_id)?;
        field("lender", &header.lender)?;
        self.engine.same_member(caller.as_deref(), "lender", &header.lender)?;
        self.engine.own_key_set(caller.as_deref(), &header.key_id)?;
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
        if !header.signature.is_empty() && header.signature.len() != jointscore_identity::SIGNATURE_BYTES {
            return Err(CoordinatorError::Invalid("`signature` of a key registration must be 64 bytes".into()));
        }
        if !header.consortium.is_empty() {
            field("consortium", &header.consortium)?;
        }
        let registration = KeyRegistration {
            key_id: header.key_id,
            lender: header.lender,
            public: public.finish()?,
            evaluation: evaluation.finish()?,
            signed: SignedRegistration { consortium: header.consortium, signature: hex::encode(&header.signature) },
        };
        self.engine.register_keys(registration).await
    }
}

#[tonic::async_trait]
impl Coordinator for CoordinatorService {
    type GetPublicKeyStream = ChunkStream;
    type FetchResultStream = ChunkStream;
    type PsiOpenStream = PsiStream;
    type AuditLogStream = AuditStream;
    type AwaitResultStream = ResultStream;

    async fn audit_log(&self, request: Request<AuditLogRequest>) -> std::result::Result<Response<AuditStream>, Status> {
        self.admit(&request, MEMBERS)?;
        let Some(ledger) = self.engine.ledger.clone() else {
            return Err(CoordinatorError::Precondition(
                "this coordinator keeps no audit ledger: it has no `identity` key configured".into(),
            )
            .into());
        };
        let from = request.into_inner().from_seq;
        // What was recorded before this call is in the log it reads.
        ledger.settle().await?;
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
    type FitStream = FitStream;

    async fn record_alerts(
        &self,
        request: Request<pb::RecordAlertsRequest>,
    ) -> std::result::Result<Response<pb::RecordAlertsReply>, Status> {
        let caller = self.admit(&request, &[Role::Lender])?;
        let pb::RecordAlertsRequest { job_id, alerts, lender, time_ms, signature } = request.into_inner();
        if alerts.len() > 64 || alerts.iter().any(|a| a.len() > 64) {
            return Err(Status::invalid_argument("an alert report names at most 64 alerts of at most 64 bytes"));
        }
        let report = jointscore_identity::AlertReport { job_id: job_id.clone(), lender, alerts, time_ms };
        self.engine.record_alerts(caller.as_deref(), report, signature).await?;
        Ok(Response::new(pb::RecordAlertsReply { job_id }))
    }

    async fn fit(&self, request: Request<Streaming<pb::FitFrame>>) -> std::result::Result<Response<FitStream>, Status> {
        let caller = self.admit(&request, &[Role::Lender])?;
        // A session holds one place of the queue while it runs.
        let permit = self.engine.reserve()?;
        let (out, rx) = tokio::sync::mpsc::channel(64);
        let engine = self.engine.clone();
        tokio::spawn(async move {
            engine.run_fit(request.into_inner(), out, caller).await;
            drop(permit);
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    async fn psi_open(&self, request: Request<PsiOpenRequest>) -> std::result::Result<Response<PsiStream>, Status> {
        // A consortium lender may run a party node too (its asset
        // registry), so any member may ask; `lenders` decides who checks
        // assets, by the name its certificate proves.
        let caller = self.admit(&request, MEMBERS)?;
        let request = request.into_inner();
        self.engine.same_member(caller.as_deref(), "requester", &request.requester)?;
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
        let (name, address) = party_registration(request.into_inner())?;
        self.engine.same_member(caller.as_deref(), "party", &name)?;
        self.engine.store.put_party(&name, &address)?;
        tracing::info!(party = %name, address = %address, "party registered");
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

    async fn get_key_registration(
        &self,
        request: Request<GetPublicKeyRequest>,
    ) -> std::result::Result<Response<pb::KeyRegistrationInfo>, Status> {
        self.admit(&request, &[Role::Party, Role::Lender])?;
        let key_id = request.into_inner().key_id;
        let (lender, signed) = self
            .engine
            .store
            .key_registration(&key_id)?
            .ok_or_else(|| Status::not_found(format!("key set {key_id} is not registered")))?;
        Ok(Response::new(pb::KeyRegistrationInfo {
            key_id,
            lender,
            consortium: signed.consortium,
            // Written by this coordinator as hex; an unreadable one is sent
            // empty and the party refuses the key set, loudly.
            signature: hex::decode(&signed.signature).unwrap_or_default(),
        }))
    }

    async fn decide(&self, request: Request<DecideRequest>) -> std::result::Result<Response<DecideResponse>, Status> {
        let caller = self.admit(&request, &[Role::Lender])?;
        let request = request.into_inner();
        // Whose key set it is comes first: a member deciding under another
        // lender's key set is refused as such, whatever else the request holds.
        self.engine.own_key_set(caller.as_deref(), &request.key_id)?;
        let request = DecisionRequest::try_from(request)?;
        let accepted = self.engine.decide(request).await.inspect_err(|e| {
            tracing::info!(error = %e, "decision request refused");
        })?;
        Ok(Response::new(accepted.into()))
    }

    async fn get_job(&self, request: Request<GetJobRequest>) -> std::result::Result<Response<pb::Job>, Status> {
        let caller = self.admit(&request, &[Role::Lender])?;
        let job_id = request.into_inner().job_id;
        let job = self.engine.own_job(caller.as_deref(), &job_id)?;
        Ok(Response::new((&job).into()))
    }

    async fn wait_job(&self, request: Request<WaitJobRequest>) -> std::result::Result<Response<pb::Job>, Status> {
        let caller = self.admit(&request, &[Role::Lender])?;
        let WaitJobRequest { job_id, wait_ms } = request.into_inner();
        let job = self.wait_own_job(caller.as_deref(), &job_id, wait_ms).await?;
        Ok(Response::new((&job).into()))
    }

    async fn run_stats(
        &self,
        request: Request<RunStatsRequest>,
    ) -> std::result::Result<Response<pb::StatsJob>, Status> {
        let caller = self.admit(&request, &[Role::Lender])?;
        let new = stats_request(request.into_inner(), caller)?;
        let job = self.engine.accept_stats(new).inspect_err(|e| {
            tracing::info!(error = %e, "statistics request refused");
        })?;
        Ok(Response::new((&job).into()))
    }

    async fn wait_stats(
        &self,
        request: Request<WaitJobRequest>,
    ) -> std::result::Result<Response<pb::StatsJob>, Status> {
        let caller = self.admit(&request, &[Role::Lender])?;
        let WaitJobRequest { job_id, wait_ms } = request.into_inner();
        let job = self
            .long_poll(wait_ms, || {
                let job = self.engine.own_stats_job(caller.as_deref(), &job_id)?;
                Ok((job.state.is_terminal(), job))
            })
            .await?;
        Ok(Response::new((&job).into()))
    }

    async fn fetch_result(
        &self,
        request: Request<FetchResultRequest>,
    ) -> std::result::Result<Response<ChunkStream>, Status> {
        let caller = self.admit(&request, &[Role::Lender])?;
        let job_id = request.into_inner().job_id;
        let store = &self.engine.store;
        let job = self.engine.own_job(caller.as_deref(), &job_id)?;
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

    async fn await_result(
        &self,
        request: Request<WaitJobRequest>,
    ) -> std::result::Result<Response<ResultStream>, Status> {
        let caller = self.admit(&request, &[Role::Lender])?;
        let WaitJobRequest { job_id, wait_ms } = request.into_inner();
        // Another lender's job is `NOT_FOUND`, as in WaitJob and FetchResult.
        let job = self.wait_own_job(caller.as_deref(), &job_id, wait_ms).await?;
        let result =
            match job.state {
                JobState::Done => Some(self.engine.store.result(&job_id)?.ok_or_else(|| {
                    CoordinatorError::Store(format!("job {job_id} is done but its result is missing"))
                })?),
                _ => None,
            };
        let messages = job_result_messages((&job).into(), result.as_deref());
        Ok(Response::new(Box::pin(tokio_stream::iter(messages.into_iter().map(Ok)))))
    }
}
