//! A coordinator that deviates from the protocol, over real gRPC: it
//! serves parties a key set of its own, forges, tampers with and replays
//! lender requests, and asks for the coordinator-side plan nobody approved.
//! Every attempt is refused by the party itself with a precise status, and
//! the party's own log shows that it encrypted under no key set but the
//! one its lender signed.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use jointscore_identity::{KeyRegistration, LenderRequest, NodeKey};
use jointscore_party::{ContributionRecord, LogKind, verify_entries};
use jointscore_proto::v1::coordinator_server::{Coordinator, CoordinatorServer};
use jointscore_proto::v1::party_client::PartyClient;
use jointscore_proto::v1::{
    AuditChunk, AuditLogRequest, Chunk, DecideRequest, DecideResponse, FetchResultRequest, GetJobRequest,
    GetPublicKeyRequest, Job, JobResult, KeyRegistrationInfo, RegisterKeysResponse, RegisterPartyResponse,
    RunStatsRequest, StatsJob, WaitJobRequest,
};
use jointscore_testkit::cluster::{LENDER, Membership, init_consortium};
use tonic::Streaming;

use super::*;

type Chunks = Pin<Box<dyn Stream<Item = Result<Chunk, Status>> + Send>>;
type Audit = Pin<Box<dyn Stream<Item = Result<AuditChunk, Status>> + Send>>;

/// The coordinator's side of the key sets it serves: what a rogue
/// coordinator controls completely.
#[derive(Default)]
struct Rogue {
    keys: Mutex<HashMap<String, (Vec<u8>, KeyRegistrationInfo)>>,
}

fn refused<T>() -> Result<T, Status> {
    Err(Status::unimplemented("not part of this rogue"))
}

#[tonic::async_trait]
impl Coordinator for Rogue {
    type GetPublicKeyStream = Chunks;
    type FetchResultStream = Chunks;
    type PsiOpenStream = PsiStream;
    type FitStream = FitStream;

    async fn fit(&self, _: Request<tonic::Streaming<FitFrame>>) -> Result<Response<FitStream>, Status> {
        Err(Status::unimplemented("no fits"))
    }

    async fn record_alerts(
        &self,
        _: Request<jointscore_proto::v1::RecordAlertsRequest>,
    ) -> Result<Response<jointscore_proto::v1::RecordAlertsReply>, Status> {
        Err(Status::unimplemented("no monitoring"))
    }

    type PsiQueryStream = Chunks;
    type AuditLogStream = Audit;
    type AwaitResultStream = Pin<Box<dyn Stream<Item = Result<JobResult, Status>> + Send>>;

    async fn register_party(
        &self,
        _: Request<RegisterPartyRequest>,
    ) -> Result<Response<RegisterPartyResponse>, Status> {
        Ok(Response::new(RegisterPartyResponse {}))
    }
    async fn register_keys(&self, _: Request<Streaming<KeyUpload>>) -> Result<Response<RegisterKeysResponse>, Status> {
        refused()
    }
    async fn get_public_key(&self, r: Request<GetPublicKeyRequest>) -> Result<Response<Chunks>, Status> {
        let keys = self.keys.lock().expect("keys");
        let (bytes, _) = keys.get(&r.get_ref().key_id).ok_or_else(|| Status::not_found("no such key set"))?;
        let chunk = Chunk { data: bytes.clone() };
        Ok(Response::new(Box::pin(tokio_stream::iter(vec![Ok(chunk)]))))
    }
    async fn get_key_registration(
        &self,
        r: Request<GetPublicKeyRequest>,
    ) -> Result<Response<KeyRegistrationInfo>, Status> {
        let keys = self.keys.lock().expect("keys");
        let (_, info) = keys.get(&r.get_ref().key_id).ok_or_else(|| Status::not_found("no such key set"))?;
        Ok(Response::new(info.clone()))
    }
    async fn decide(&self, _: Request<DecideRequest>) -> Result<Response<DecideResponse>, Status> {
        refused()
    }
    async fn get_job(&self, _: Request<GetJobRequest>) -> Result<Response<Job>, Status> {
        refused()
    }
    async fn wait_job(&self, _: Request<WaitJobRequest>) -> Result<Response<Job>, Status> {
        refused()
    }
    async fn fetch_result(&self, _: Request<FetchResultRequest>) -> Result<Response<Chunks>, Status> {
        refused()
    }
    async fn await_result(&self, _: Request<WaitJobRequest>) -> Result<Response<Self::AwaitResultStream>, Status> {
        refused()
    }
    async fn run_stats(&self, _: Request<RunStatsRequest>) -> Result<Response<StatsJob>, Status> {
        refused()
    }
    async fn wait_stats(&self, _: Request<WaitJobRequest>) -> Result<Response<StatsJob>, Status> {
        refused()
    }
    async fn psi_open(&self, _: Request<PsiOpenRequest>) -> Result<Response<PsiStream>, Status> {
        refused()
    }
    async fn psi_query(&self, _: Request<PsiQueryRequest>) -> Result<Response<Chunks>, Status> {
        refused()
    }
    async fn psi_close(&self, _: Request<PsiCloseRequest>) -> Result<Response<PsiCloseReply>, Status> {
        refused()
    }
    async fn audit_log(&self, _: Request<AuditLogRequest>) -> Result<Response<Audit>, Status> {
        refused()
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// What the rogue sends a party: a lender request (signed by `signer`, or
/// not at all) wrapped in a contribution request for `plan`.
fn contribute(request: &LenderRequest, signer: Option<&NodeKey>, plan: PlanKind) -> ContributeRequest {
    ContributeRequest {
        job_id: format!("job-{}", request.request_id),
        subject: request.subject.clone(),
        model_id: request.model_id.clone(),
        model_toml: CROSS_BORDER_SELLER.into(),
        plan: jointscore_net::plan_to_wire(plan),
        key_id: request.key_id.clone(),
        absent: request.absent.clone(),
        request_id: request.request_id.clone(),
        lender: request.lender.clone(),
        time_ms: request.time_ms,
        salt: request.salt.clone(),
        signature: signer.map(|k| request.sign(k).to_vec()).unwrap_or_default(),
    }
}

/// Sends one contribution request; answers the ciphertext bytes or the
/// party's status.
async fn ask(
    party: &mut PartyClient<tonic::transport::Channel>,
    request: ContributeRequest,
) -> Result<Vec<u8>, Status> {
    let mut stream = party.contribute(request).await?.into_inner();
    let mut bytes = Vec::new();
    while let Some(chunk) = tokio_stream::StreamExt::next(&mut stream).await {
        if let Some(Part::Data(d)) = chunk?.part {
            bytes.extend(d);
        }
    }
    Ok(bytes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rogue_coordinator_gets_no_ciphertext_under_a_key_set_the_lender_did_not_sign() {
    let dir = tempfile::tempdir().expect("tempdir");
    let identities = dir.path().join("identities");
    let model = Model::cross_border_seller();
    let consortium = init_consortium(
        &identities,
        &Membership {
            name: "rogue-test".into(),
            parties: model.parties().to_vec(),
            lenders: vec![LENDER.into(), "other-lender".into()],
            revoked: Vec::new(),
            mtls: false,
            proof_blocks: None,
        },
    )
    .expect("consortium");
    let read = |name: &str| NodeKey::read(&identities.join(format!("{name}.key"))).expect("key");
    let (lender, other, coordinator) = (read(LENDER), read("other-lender"), read("coordinator"));

    // The rogue serves three key sets: the lender's own, signed by it; the
    // same keys claimed by another lender; and a key set of the
    // coordinator's own making, "registered" under the lender's name with a
    // signature the coordinator made.
    let rogue = Arc::new(Rogue::default());
    let (honest, foreign) = (keys(), other_keys());
    let info = |key_id: &str, lender: &str, signature: Vec<u8>| KeyRegistrationInfo {
        key_id: key_id.into(),
        lender: lender.into(),
        consortium: consortium.name.clone(),
        signature,
    };
    let statement = |key_id: &str, lender: &str| KeyRegistration {
        key_id: key_id.into(),
        lender: lender.into(),
        consortium: consortium.name.clone(),
    };
    {
        let mut keys = rogue.keys.lock().expect("keys");
        let id = honest.id().to_string();
        let signed = statement(&id, LENDER).sign(&lender).to_vec();
        keys.insert(id.clone(), (honest.public.to_bytes().expect("public"), info(&id, LENDER, signed)));
        let own = foreign.id().to_string();
        let forged = statement(&own, LENDER).sign(&coordinator).to_vec();
        keys.insert(own.clone(), (foreign.public.to_bytes().expect("public"), info(&own, LENDER, forged)));
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    let serving = rogue.clone();
    let server = tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(CoordinatorServer::from_arc(serving))
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await;
    });

    // The real parties, with their consortium file, dialling the rogue.
    let book = sample::subjects(&model, 3, 7);
    let setup = PartySetup { identities: Some(identities.clone()), ..PartySetup::default() };
    let parties = start_parties(&model, &book, &url, dir.path(), &setup).await.expect("parties");
    let bank = parties.iter().find(|p| p.name == "bank").expect("bank");
    let address = format!("http://{}", bank.address().expect("running"));
    let mut party = PartyClient::connect(address).await.expect("connect").max_decoding_message_size(1 << 26);

    let subject = book[0].0.clone();
    let request = |id: &str, key_id: &str| LenderRequest {
        request_id: id.into(),
        lender: LENDER.into(),
        key_id: key_id.into(),
        model_id: model.id().into(),
        plan: "pushdown".into(),
        subject: subject.clone(),
        absent: Vec::new(),
        time_ms: now_ms(),
        salt: LenderRequest::fresh_salt(),
    };
    let honest_id = honest.id().to_string();
    let own_id = foreign.id().to_string();
    let push = PlanKind::Pushdown;

    // 1. The coordinator's own key set, with a request the lender signed.
    let e = ask(&mut party, contribute(&request("r-own-key", &own_id), Some(&lender), push)).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{}", e.message());
    assert!(e.message().contains("not one a current lender registered"), "{}", e.message());

    // 2. A request the lender never made: unsigned, signed by the
    //    coordinator in the lender's name, or altered after signing.
    let e = ask(&mut party, contribute(&request("r-unsigned", &honest_id), None, push)).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{}", e.message());
    assert!(e.message().contains("did not sign"), "{}", e.message());
    let e = ask(&mut party, contribute(&request("r-forged", &honest_id), Some(&coordinator), push)).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{}", e.message());
    let mut altered = contribute(&request("r-altered", &honest_id), Some(&lender), push);
    altered.subject = book[1].0.clone();
    let e = ask(&mut party, altered).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{}", e.message());

    // 3. Another lender's request under this lender's key set.
    let mut theirs = request("r-theirs", &honest_id);
    theirs.lender = "other-lender".into();
    let e = ask(&mut party, contribute(&theirs, Some(&other), push)).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{}", e.message());
    assert!(e.message().contains("belongs to `lender`"), "{}", e.message());

    // 4. The coordinator-side plan, which sends raw features: not approved.
    let mut raw = request("r-raw", &honest_id);
    raw.plan = "coordinator-side".into();
    let raw = contribute(&raw, Some(&lender), PlanKind::CoordinatorSide);
    let e = ask(&mut party, raw).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{}", e.message());
    assert!(e.message().contains("coordinator-side plan"), "{}", e.message());

    // 5. A stale request, signed by the lender ten minutes ago.
    let mut stale = request("r-stale", &honest_id);
    stale.time_ms -= 600_000;
    let e = ask(&mut party, contribute(&stale, Some(&lender), push)).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{}", e.message());
    assert!(e.message().contains("outside the 300 s"), "{}", e.message());

    // 6. The lender's genuine request is answered once. Replayed into
    //    another job, refused; asked again by the same job (a coordinator
    //    that lost the answer in a restart), the very bytes sent before:
    //    no new encryption, nothing the coordinator did not have.
    let genuine = contribute(&request("r-genuine", &honest_id), Some(&lender), push);
    let bytes = ask(&mut party, genuine.clone()).await.expect("the lender's own request is answered");
    assert!(!bytes.is_empty());
    let mut replayed = genuine.clone();
    replayed.job_id = "job-elsewhere".into();
    let e = ask(&mut party, replayed).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{}", e.message());
    assert!(e.message().contains("replayed"), "{}", e.message());
    let again = ask(&mut party, genuine).await.expect("the same job asking again");
    assert_eq!(again, bytes, "the same answer, byte for byte");

    // The party's own log: one contribution, under the key set the lender
    // signed, for the request it signed; every attempt above refused.
    let log = bank.store.log_entries(0).expect("log");
    verify_entries(&log).expect("the chain holds");
    let contributed: Vec<ContributionRecord> = log
        .iter()
        .filter(|e| e.kind == LogKind::Contribution)
        .map(|e| serde_json::from_value(e.body.clone()).expect("contribution record"))
        .collect();
    assert_eq!(contributed.len(), 1, "{contributed:?}");
    assert_eq!(contributed[0].envelope.key_id, honest_id);
    assert_eq!(contributed[0].request.request_id, "r-genuine");
    assert_eq!(contributed[0].envelope.subject, contributed[0].request.subject_commitment());
    let refusals = log.iter().filter(|e| e.kind == LogKind::Refusal).count();
    assert_eq!(refusals, 8, "every refused attempt is in the party's log");
    server.abort();
}
