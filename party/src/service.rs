//! The party's gRPC service: contribution requests in, encrypted
//! contributions out.

use std::collections::{HashMap, HashSet};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jointscore_circuits::PlanKind;
use jointscore_circuits::fhe::PublicKey;
use jointscore_circuits::proof::Crs;
use jointscore_circuits::wire::PUBLIC_KEY_LIMIT;
use jointscore_identity::{Consortium, KeyRegistration, NodeKey, Role};
use jointscore_monitor::Compiled;
use jointscore_net::{NodeTls, Target};
use jointscore_proto::v1::contribute_chunk::Part;
use jointscore_proto::v1::coordinator_client::CoordinatorClient;
use jointscore_proto::v1::party_server::Party;
use jointscore_proto::v1::{
    ContributeChunk, ContributeRequest, FitFrame, GetPublicKeyRequest, PsiAnswer, PsiCloseReply, PsiCloseRequest,
    PsiOpenChunk, PsiOpenRequest, PsiQueryRequest, SecAggAdvertiseReply, SecAggAdvertiseRequest,
    SecAggConsistencyReply, SecAggConsistencyRequest, SecAggMaskedInputReply, SecAggMaskedInputRequest,
    SecAggShareKeysReply, SecAggShareKeysRequest, SecAggUnmaskReply, SecAggUnmaskRequest,
};
use jointscore_proto::{MESSAGE_LIMIT, chunks, collect, psi_open_messages};
use jointscore_psi::points_to_bytes;
use tokio_stream::Stream;
use tonic::{Code, Request, Response, Status};

use crate::aggregate::Rounds;
use crate::config::PartyConfig;
use crate::error::{PartyError, Result};
use crate::fit::Fits;
use crate::psi::PsiSessions;
use crate::store::RecordStore;

mod contribute;
mod wire;

use crate::aggregate::Invitation;
use crate::psi::OpenRequest;
use contribute::ContributionRequest;

/// How long a party waits for the coordinator when fetching a key.
const COORDINATOR_TIMEOUT: Duration = Duration::from_secs(30);

type ChunkStream = Pin<Box<dyn Stream<Item = std::result::Result<ContributeChunk, Status>> + Send>>;
type PsiStream = Pin<Box<dyn Stream<Item = std::result::Result<PsiOpenChunk, Status>> + Send>>;
type FitStream = Pin<Box<dyn Stream<Item = std::result::Result<FitFrame, Status>> + Send>>;

/// The contribution service of one party node.
pub struct PartyService {
    name: String,
    /// The node's configuration: approvals, windows and limits.
    config: PartyConfig,
    /// Approved models served although their lint fails (named by the operator).
    lint_override: HashSet<String>,
    coordinator: String,
    store: Arc<RecordStore>,
    /// Key sets checked once: the public key and the lender that signed
    /// its registration.
    keys: Mutex<HashMap<String, (PublicKey, String)>>,
    plans: Mutex<HashMap<(String, PlanKind), Arc<Compiled>>>,
    /// Per model id, the parties its revealed outputs depend on.
    output_parties: Mutex<HashMap<String, Arc<Vec<String>>>>,
    rounds: Rounds,
    psi: PsiSessions,
    /// Fit sessions (`crate::fit`).
    fits: Arc<Fits>,
    /// Fault injection for tests of dropouts (`crate::fault`, test builds
    /// only): the node never answers step 2 of an aggregation
    /// round, so a test can kill it between sharing keys and masking.
    stall_masked_input: bool,
    /// The node's identity key, which signs contributions.
    identity: Option<Arc<NodeKey>>,
    /// Fewest parties (this one included) that must contribute to a
    /// decision for this one to.
    min_present_parties: usize,
    /// Mutual TLS as a consortium member: then only the consortium's
    /// coordinator is answered.
    tls: Option<NodeTls>,
    /// Strict mode: the consortium's CRS, and every contribution is proven.
    crs: Option<Arc<Crs>>,
    /// The consortium file: who the current lenders and parties are, and
    /// their keys. Every signature a request carries is checked against it.
    consortium: Option<Arc<Consortium>>,
}

impl PartyService {
    /// A service answering as `config.name` from `store`.
    pub fn new(config: &PartyConfig, store: Arc<RecordStore>) -> PartyService {
        PartyService {
            config: config.clone(),
            name: config.name.clone(),
            lint_override: config.lint_override.iter().cloned().collect(),
            coordinator: config.coordinator.clone(),
            store: store.clone(),
            keys: Mutex::new(HashMap::new()),
            plans: Mutex::new(HashMap::new()),
            output_parties: Mutex::new(HashMap::new()),
            rounds: Rounds::new(&config.name, &config.approved_stats, store.clone()),
            psi: PsiSessions::new(config, store.clone()),
            fits: Arc::new(Fits::new(
                &config.name,
                &config.approved_fits,
                store.clone(),
                config.request_max_age_s,
                crate::fault::stall_fit_gram(),
            )),
            stall_masked_input: crate::fault::stall_masked_input(),
            identity: None,
            min_present_parties: config.min_present_parties,
            tls: None,
            crs: None,
            consortium: None,
        }
    }

    /// The same service in a strict-mode consortium: every contribution is
    /// encrypted with zero-knowledge proofs against `crs`, bound to its
    /// request.
    pub fn with_crs(mut self, crs: Arc<Crs>) -> PartyService {
        self.crs = Some(crs);
        self
    }

    /// The same service in a consortium: lenders' signatures on key sets
    /// and requests, and parties' signatures on aggregation rosters, are
    /// checked against `consortium`.
    pub fn with_consortium(mut self, consortium: Arc<Consortium>) -> PartyService {
        self.rounds.set_consortium(consortium.clone());
        self.psi.set_consortium(consortium.clone());
        if let Some(fits) = Arc::get_mut(&mut self.fits) {
            fits.set_consortium(consortium.clone());
        }
        self.consortium = Some(consortium);
        self
    }

    /// The same service over mutual TLS: it dials the coordinator with
    /// `tls` and answers only the consortium's coordinator.
    pub fn with_tls(mut self, tls: NodeTls) -> PartyService {
        self.tls = Some(tls);
        self
    }

    /// Refuses a request that does not come from the consortium's
    /// coordinator, under mutual TLS. Every call to a party is the
    /// coordinator's.
    fn admit<T>(&self, request: &Request<T>) -> std::result::Result<(), Status> {
        match &self.tls {
            Some(tls) => tls.admit(request, &[Role::Coordinator]).map(|_| ()),
            None => Ok(()),
        }
    }

    /// The same service, signing every contribution, and its keys and
    /// survivor lists in aggregation rounds, with `key`.
    pub fn with_identity(mut self, key: Arc<NodeKey>) -> PartyService {
        self.rounds.set_identity(key.clone());
        if let Some(fits) = Arc::get_mut(&mut self.fits) {
            fits.set_identity(key.clone());
        }
        self.identity = Some(key);
        self
    }

    /// The lender's public key, fetched from the coordinator once and
    /// checked: it is the key set asked for (its id recomputed from the
    /// keys), and, with a consortium, a current lender signed its
    /// registration in this consortium. Answered only to `lender`, the
    /// lender that signed the request: a party never encrypts under a key
    /// set its requester does not own.
    async fn public_key(&self, key_id: &str, lender: &str) -> Result<PublicKey> {
        let not_theirs = |owner: &str| PartyError::Unauthenticated {
            party: self.name.clone(),
            request_id: String::new(),
            reason: format!("key set {key_id} belongs to `{owner}`, not to the requesting lender `{lender}`"),
        };
        // Without a consortium nothing says who a lender is: ownership is
        // checked only where names are authenticated.
        let owns = |owner: &str| self.consortium.is_none() || owner == lender;
        if let Some((key, owner)) = lock(&self.keys)?.get(key_id) {
            return if owns(owner) { Ok(key.clone()) } else { Err(not_theirs(owner)) };
        }
        let unreachable = |e: &dyn std::fmt::Display| PartyError::Coordinator {
            address: self.coordinator.clone(),
            message: e.to_string(),
        };
        let channel = Target::new(self.coordinator.clone(), self.tls.clone())
            .endpoint()
            .map_err(|e| unreachable(&e))?
            .connect_timeout(COORDINATOR_TIMEOUT)
            .timeout(COORDINATOR_TIMEOUT)
            .connect()
            .await
            .map_err(|e| unreachable(&e))?;
        let mut client = CoordinatorClient::new(channel).max_decoding_message_size(MESSAGE_LIMIT);
        let not_registered =
            || PartyError::Key { key_id: key_id.into(), message: "not registered at the coordinator".into() };
        let registration = match client.get_key_registration(GetPublicKeyRequest { key_id: key_id.into() }).await {
            Ok(r) => r.into_inner(),
            Err(s) if s.code() == Code::NotFound => return Err(not_registered()),
            Err(s) => return Err(unreachable(&s.message())),
        };
        let owner = registration.lender.clone();
        if let Some(consortium) = &self.consortium {
            let statement = KeyRegistration {
                key_id: key_id.into(),
                lender: registration.lender.clone(),
                consortium: registration.consortium.clone(),
            };
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
            statement.verify(consortium, &registration.signature, now).map_err(|e| PartyError::Unauthenticated {
                party: self.name.clone(),
                request_id: String::new(),
                reason: format!("key set {key_id} is not one a current lender registered: {e}"),
            })?;
        }
        let stream = match client.get_public_key(GetPublicKeyRequest { key_id: key_id.into() }).await {
            Ok(r) => r.into_inner(),
            Err(s) if s.code() == Code::NotFound => return Err(not_registered()),
            Err(s) => return Err(unreachable(&s.message())),
        };
        let bytes = collect(stream, "public key", PUBLIC_KEY_LIMIT)
            .await
            .map_err(|s| PartyError::Key { key_id: key_id.into(), message: s.message().to_string() })?;
        let key = PublicKey::from_bytes(&bytes)
            .map_err(|e| PartyError::Key { key_id: key_id.into(), message: e.to_string() })?;
        if key.id() != key_id {
            return Err(PartyError::Key {
                key_id: key_id.into(),
                message: format!("the coordinator returned key set {} instead", key.id()),
            });
        }
        lock(&self.keys)?.insert(key_id.to_string(), (key.clone(), owner.clone()));
        if !owns(&owner) {
            return Err(not_theirs(&owner));
        }
        Ok(key)
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> Result<std::sync::MutexGuard<'_, T>> {
    m.lock().map_err(|_| PartyError::Transport("cache lock poisoned by an earlier panic".into()))
}

#[tonic::async_trait]
impl Party for PartyService {
    type ContributeStream = ChunkStream;

    async fn contribute(
        &self,
        request: Request<ContributeRequest>,
    ) -> std::result::Result<Response<ChunkStream>, Status> {
        self.admit(&request)?;
        let request = ContributionRequest::try_from(request.into_inner())?;
        let job_id = request.job_id.clone();
        let contributed = self.contribution(request).await.map_err(|e| {
            tracing::info!(party = %self.name, job = %job_id, error = %e, "contribution refused");
            coarse(&self.name, e)
        })?;
        tracing::debug!(party = %self.name, job = %job_id, blocks = contributed.blocks, "contribution sent");
        let mut messages = vec![Ok(ContributeChunk { part: Some(Part::Header(contributed.header())) })];
        messages.extend(
            chunks(&contributed.bytes).into_iter().map(|c| Ok(ContributeChunk { part: Some(Part::Data(c.data)) })),
        );
        Ok(Response::new(Box::pin(tokio_stream::iter(messages))))
    }

    async fn sec_agg_advertise(
        &self,
        request: Request<SecAggAdvertiseRequest>,
    ) -> std::result::Result<Response<SecAggAdvertiseReply>, Status> {
        self.admit(&request)?;
        let request = request.into_inner();
        let round = request.round_id.clone();
        let invitation = Invitation::try_from(request).inspect_err(|e| self.refused(&round, e))?;
        let (keys, signature) = self.rounds.advertise(invitation).await.inspect_err(|e| self.refused(&round, e))?;
        Ok(Response::new(wire::advertise_reply(&self.name, &keys, signature)))
    }

    async fn sec_agg_share_keys(
        &self,
        request: Request<SecAggShareKeysRequest>,
    ) -> std::result::Result<Response<SecAggShareKeysReply>, Status> {
        self.admit(&request)?;
        let SecAggShareKeysRequest { round_id, roster } = request.into_inner();
        let shares = wire::roster(roster)
            .and_then(|roster| self.rounds.share_keys(&round_id, &roster))
            .inspect_err(|e| self.refused(&round_id, e))?;
        Ok(Response::new(wire::shares_reply(shares)))
    }

    async fn sec_agg_masked_input(
        &self,
        request: Request<SecAggMaskedInputRequest>,
    ) -> std::result::Result<Response<SecAggMaskedInputReply>, Status> {
        self.admit(&request)?;
        if self.stall_masked_input {
            tracing::warn!(party = %self.name, "fault injection: stalling masked_input");
            eprintln!("jointscore fault injection: party {} stalls masked_input", self.name);
            std::future::pending::<()>().await;
        }
        let SecAggMaskedInputRequest { round_id, inbox } = request.into_inner();
        let masked = wire::inbox(inbox)
            .and_then(|inbox| self.rounds.masked_input(&round_id, &inbox))
            .inspect_err(|e| self.refused(&round_id, e))?;
        Ok(Response::new(wire::masked_reply(masked)))
    }

    async fn sec_agg_unmask(
        &self,
        request: Request<SecAggUnmaskRequest>,
    ) -> std::result::Result<Response<SecAggUnmaskReply>, Status> {
        self.admit(&request)?;
        let SecAggUnmaskRequest { round_id, survivors, signatures } = request.into_inner();
        let signatures = wire::survivor_signatures(signatures);
        let unmask =
            self.rounds.unmask(&round_id, &survivors, &signatures).inspect_err(|e| self.refused(&round_id, e))?;
        Ok(Response::new(wire::unmask_reply(unmask)))
    }

    async fn sec_agg_consistency(
        &self,
        request: Request<SecAggConsistencyRequest>,
    ) -> std::result::Result<Response<SecAggConsistencyReply>, Status> {
        self.admit(&request)?;
        let SecAggConsistencyRequest { round_id, survivors } = request.into_inner();
        let signature = self.rounds.consistency(&round_id, &survivors).inspect_err(|e| self.refused(&round_id, e))?;
        Ok(Response::new(SecAggConsistencyReply { signature }))
    }

    type FitStream = FitStream;

    async fn fit(
        &self,
        request: Request<tonic::Streaming<FitFrame>>,
    ) -> std::result::Result<Response<FitStream>, Status> {
        self.admit(&request)?;
        let (out, rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(self.fits.clone().serve(request.into_inner(), out));
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    type PsiOpenStream = PsiStream;

    async fn psi_open(&self, request: Request<PsiOpenRequest>) -> std::result::Result<Response<PsiStream>, Status> {
        self.admit(&request)?;
        let request = OpenRequest::try_from(request.into_inner())?;
        let (opened, set) = self.psi.open(&request).await.inspect_err(|e| {
            let requester = crate::psi::bounded_id(&request.requester);
            tracing::info!(party = %self.name, %requester, error = %e, "PSI session refused");
        })?;
        let messages = psi_open_messages(opened.into(), &points_to_bytes(&set)).into_iter().map(Ok);
        Ok(Response::new(Box::pin(tokio_stream::iter(messages))))
    }

    async fn psi_close(
        &self,
        request: Request<PsiCloseRequest>,
    ) -> std::result::Result<Response<PsiCloseReply>, Status> {
        self.admit(&request)?;
        self.psi.close(&request.into_inner().session_id)?;
        Ok(Response::new(PsiCloseReply {}))
    }

    async fn psi_query(&self, request: Request<PsiQueryRequest>) -> std::result::Result<Response<PsiAnswer>, Status> {
        self.admit(&request)?;
        let PsiQueryRequest { session_id, points, batch, signature } = request.into_inner();
        let batch =
            crate::psi::Batch { session_id: &session_id, number: batch, signature: &signature, points: &points };
        let points = self.psi.query(batch).await.inspect_err(|e| {
            tracing::info!(party = %self.name, error = %e, "PSI query refused");
        })?;
        Ok(Response::new(PsiAnswer { points }))
    }
}

/// What the lender is told of a refusal. Whatever depends on the
/// subject's record (which feature is missing or out of range) stays in the
/// party's log: the lender learns only that the record could not be used.
/// Refusals about the request itself (approval, signatures, freshness,
/// limits) keep their message: they say nothing about the data.
fn coarse(party: &str, e: PartyError) -> Status {
    use jointscore_circuits::Error as C;
    match e {
        // Not which of subject, lender, purpose or dates failed.
        PartyError::NoConsent { .. } => Status::permission_denied(format!("party `{party}`: no consent")),
        PartyError::Circuits(C::Input { .. } | C::UnknownFeature(_)) => Status::failed_precondition(format!(
            "party `{party}`: refused: the subject's record cannot be used under this model (the party's log has \
             the detail)"
        )),
        other => other.into(),
    }
}

impl PartyService {
    fn refused(&self, round: &str, e: &PartyError) {
        tracing::info!(party = %self.name, %round, error = %e, "aggregation step refused");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lender_learns_that_a_record_cannot_be_used_but_not_which_feature() {
        let e = PartyError::Circuits(jointscore_circuits::Error::Input {
            feature: "gmv_12m_k".into(),
            message: "missing where the model requires it".into(),
        });
        let status = coarse("bank", e);
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert!(status.message().contains("party `bank`") && status.message().contains("cannot be used"));
        assert!(!status.message().contains("gmv_12m_k") && !status.message().contains("missing"), "{status:?}");
        // A refusal about the request itself keeps its reason.
        let unknown = coarse("bank", PartyError::UnknownSubject { subject: "s-1".into(), party: "bank".into() });
        assert_eq!(unknown.code(), Code::NotFound);
        assert!(unknown.message().contains("s-1"), "{unknown:?}");
    }
}
