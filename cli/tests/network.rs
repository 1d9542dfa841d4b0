//! The system over real gRPC on 127.0.0.1: a coordinator, party nodes and a
//! lender, with every bad input the services must survive.
//!
//! One TFHE key set serves the whole binary (generation takes seconds);
//! each test starts its own cluster, so one test's broken party cannot
//! affect another.

use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use jointscore::cluster::{Cluster, ClusterOptions, PartySetup, party_view, start_parties};
use jointscore::sample;
use jointscore_circuits::fhe::CONTRIBUTION_SIZE_LIMIT;
use jointscore_circuits::wire::EVALUATION_KEY_LIMIT;
use jointscore_circuits::{CROSS_BORDER_SELLER, Model, PlanKind};
use jointscore_lender::{Code, Lender, LenderError, LenderKeys};
use jointscore_proto::v1::contribute_chunk::Part;
use jointscore_proto::v1::coordinator_client::CoordinatorClient;
use jointscore_proto::v1::key_upload::Part as KeyPart;
use jointscore_proto::v1::party_server::{Party, PartyServer};
use jointscore_proto::v1::{
    ContributeChunk, ContributeRequest, ContributionHeader, KeyHeader, KeyUpload, PsiAnswer, PsiCloseReply,
    PsiCloseRequest, PsiOpenChunk, PsiOpenRequest, PsiQueryRequest, RegisterPartyRequest, SecAggAdvertiseReply,
    SecAggAdvertiseRequest, SecAggMaskedInputReply, SecAggMaskedInputRequest, SecAggSealed, SecAggShare,
    SecAggShareKeysReply, SecAggShareKeysRequest, SecAggUnmaskReply, SecAggUnmaskRequest,
};
use tokio::net::TcpListener;
use tokio_stream::Stream;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};

#[path = "network/audit.rs"]
mod audit;
#[path = "network/proofs.rs"]
mod proofs;
#[path = "network/psi.rs"]
mod psi;
#[path = "network/signed.rs"]
mod signed;
#[path = "network/tls.rs"]
mod tls;

fn keys() -> Arc<LenderKeys> {
    static KEYS: OnceLock<Arc<LenderKeys>> = OnceLock::new();
    KEYS.get_or_init(|| Arc::new(LenderKeys::generate().expect("key generation"))).clone()
}

/// A second key set, for an attacker's evaluation key.
fn other_keys() -> Arc<LenderKeys> {
    static KEYS: OnceLock<Arc<LenderKeys>> = OnceLock::new();
    KEYS.get_or_init(|| Arc::new(LenderKeys::generate().expect("key generation"))).clone()
}

const WAIT: Duration = Duration::from_secs(120);

/// Held by the strict-mode test, which proves on every core for seconds,
/// and by the tests whose deadlines are short, so the two never overlap:
/// those deadlines are about a slow party, not a loaded machine.
static CPU_HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn cluster(options: ClusterOptions) -> (Cluster, Lender) {
    let cluster = Cluster::start(&options).await.expect("cluster starts");
    let mut lender = cluster.lender(keys(), PlanKind::Pushdown).await.expect("lender connects");
    lender.register("test-lender").await.expect("keys register");
    (cluster, lender)
}

fn small() -> ClusterOptions {
    ClusterOptions { sellers: 3, ..ClusterOptions::default() }
}

/// Submits a decision and waits for it to fail; returns the code and reason.
async fn failure(lender: &mut Lender, subject: &str, request_id: &str) -> (Code, String) {
    let job = lender.submit(subject, request_id).await.expect("accepted").job_id;
    match lender.wait(&job, WAIT).await {
        Err(LenderError::JobFailed { code, reason, .. }) => (code, reason),
        other => panic!("expected a failed job, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_match_the_reference_and_request_ids_are_idempotent() {
    let (cluster, mut lender) = cluster(small()).await;
    for (i, (subject, _)) in cluster.book.iter().enumerate() {
        let d = lender.decide(subject, &format!("r-{i}")).await.expect("decision");
        assert_eq!(d.bundle, cluster.reference(subject).expect("reference"), "{subject}");
        assert!(d.pbs > 0 && d.result_bytes > 0);
    }
    // The same request again names the same job; no second job runs.
    let first = lender.submit("seller-0001", "r-0").await.expect("retry");
    assert!(first.existing);
    let job = lender.job(&first.job_id).await.expect("job");
    assert_eq!(job.subject, "seller-0001");
    let again = lender.submit("seller-0001", "r-0").await.expect("retry");
    assert_eq!(again.job_id, first.job_id);
    // The same request id for another subject is refused.
    let e = lender.submit("seller-0002", "r-0").await.unwrap_err();
    assert_eq!(e.code(), Some(Code::AlreadyExists), "{e}");
    // Unknown jobs.
    let e = lender.job("job-0000000000000000").await.unwrap_err();
    assert_eq!(e.code(), Some(Code::NotFound), "{e}");
    let e = lender.fetch("job-0000000000000000").await.unwrap_err();
    assert_eq!(e.code(), Some(Code::NotFound), "{e}");
    cluster.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_subject_fails_not_found_naming_subject_and_party() {
    let (mut cluster, mut lender) = cluster(small()).await;
    // Known to two parties, not to the bank.
    let record = cluster.book[0].1.clone();
    let model = cluster.model.clone();
    for (index, name) in ["platform", "logistics"].into_iter().enumerate() {
        let party = cluster.party(name).expect("party");
        party.store.put_all(&[("newcomer".into(), party_view(&model, index, &record))]).expect("store");
    }
    let (code, reason) = failure(&mut lender, "newcomer", "nc-1").await;
    assert_eq!(code, Code::NotFound, "{reason}");
    assert!(reason.contains("`newcomer`") && reason.contains("`bank`"), "{reason}");
    assert!(!reason.contains("platform"), "{reason}");
    // Fetching a failed job's result answers with its code and reason.
    let job = lender.submit("newcomer", "nc-1").await.expect("same job").job_id;
    let e = lender.fetch(&job).await.unwrap_err();
    assert_eq!(e.code(), Some(Code::NotFound), "{e}");
    // Unknown to everyone: every party is named.
    let (code, reason) = failure(&mut lender, "nobody", "nc-2").await;
    assert_eq!(code, Code::NotFound);
    for name in ["platform", "logistics", "bank"] {
        assert!(reason.contains(name), "{reason}");
    }
    // A record that does not fit the model: the party names the feature,
    // never the value.
    for name in ["platform", "logistics", "bank"] {
        let party = cluster.party(name).expect("party");
        party.store.put_all(&[("incomplete".into(), serde_json::json!({}))]).expect("store");
    }
    let (code, reason) = failure(&mut lender, "incomplete", "nc-5").await;
    assert_eq!(code, Code::FailedPrecondition, "{reason}");
    assert!(reason.contains("gmv_12m_k") && reason.contains("missing"), "{reason}");
    // Bad subject ids never reach a party.
    let e = lender.submit("line\nbreak", "nc-6").await.unwrap_err();
    assert_eq!(e.code(), Some(Code::InvalidArgument), "{e}");
    let e = lender.submit("", "nc-3").await.unwrap_err();
    assert_eq!(e.code(), Some(Code::InvalidArgument), "{e}");
    let e = lender.submit(&"x".repeat(10_000), "nc-4").await.unwrap_err();
    assert_eq!(e.code(), Some(Code::InvalidArgument), "{e}");
    cluster.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_party_that_is_down_fails_the_job_unavailable_and_is_used_again_once_back() {
    let (mut cluster, mut lender) = cluster(small()).await;
    cluster.party("logistics").expect("party").stop().await.expect("stop");
    let (code, reason) = failure(&mut lender, "seller-0001", "down-1").await;
    assert_eq!(code, Code::Unavailable, "{reason}");
    assert!(reason.contains("`logistics`"), "{reason}");
    cluster.party("logistics").expect("party").start().await.expect("restart");
    let d = lender.decide("seller-0001", "down-2").await.expect("decision once back");
    assert_eq!(d.bundle, cluster.reference("seller-0001").expect("reference"));
    cluster.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_the_party_has_not_approved_is_permission_denied() {
    let options = ClusterOptions { unapproved: vec!["bank".into()], ..small() };
    let (cluster, mut lender) = cluster(options).await;
    let (code, reason) = failure(&mut lender, "seller-0001", "perm-1").await;
    assert_eq!(code, Code::PermissionDenied, "{reason}");
    assert!(reason.contains("`bank`") && reason.contains("approved_models"), "{reason}");
    cluster.stop().await.expect("stop");
}

fn upload(header: KeyHeader, public: &[u8], evaluation: &[u8]) -> Vec<KeyUpload> {
    let mut messages = vec![KeyUpload { part: Some(KeyPart::Header(header)) }];
    messages.extend(public.chunks(1 << 20).map(|c| KeyUpload { part: Some(KeyPart::PublicChunk(c.to_vec())) }));
    messages.extend(evaluation.chunks(1 << 20).map(|c| KeyUpload { part: Some(KeyPart::EvaluationChunk(c.to_vec())) }));
    messages
}

fn header(key_id: &str, public: &[u8], evaluation: &[u8]) -> KeyHeader {
    KeyHeader {
        key_id: key_id.into(),
        lender: "test".into(),
        public_len: public.len() as u64,
        evaluation_len: evaluation.len() as u64,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_mismatched_and_malformed_keys_are_refused_and_the_coordinator_keeps_serving() {
    let cluster = Cluster::start(&small()).await.expect("cluster");
    let mut lender = cluster.lender(keys(), PlanKind::Pushdown).await.expect("lender");
    // Not registered yet.
    let e = lender.submit("seller-0001", "k-1").await.unwrap_err();
    assert_eq!(e.code(), Some(Code::FailedPrecondition), "{e}");
    assert!(e.to_string().contains(keys().id()), "{e}");

    let mut raw = CoordinatorClient::connect(cluster.coordinator_url()).await.expect("connect");
    let k = keys();
    let public = k.public.to_bytes().expect("public bytes");
    let evaluation = &k.evaluation;
    let id = k.id();
    let mut cut_header = header(id, &public, evaluation);
    cut_header.evaluation_len += 10;
    let mut big = header(id, &public, evaluation);
    big.evaluation_len = EVALUATION_KEY_LIMIT + 1;
    let cases: Vec<(&str, Vec<KeyUpload>, Code)> = vec![
        (
            "mismatched key id",
            upload(header("00ff00ff00ff00ff", &public, evaluation), &public, evaluation),
            Code::FailedPrecondition,
        ),
        (
            "garbage public key",
            upload(header(id, b"garbage", evaluation), b"garbage", evaluation),
            Code::InvalidArgument,
        ),
        (
            "truncated public key",
            upload(header(id, &public[..public.len() / 2], evaluation), &public[..public.len() / 2], evaluation),
            Code::InvalidArgument,
        ),
        ("garbage evaluation key", upload(header(id, &public, &public), &public, &public), Code::InvalidArgument),
        ("fewer bytes than declared", upload(cut_header, &public, evaluation), Code::InvalidArgument),
        ("oversized evaluation key", upload(big, &public, b""), Code::InvalidArgument),
        (
            "no header",
            upload(header(id, &public, evaluation), &public, evaluation)[1..].to_vec(),
            Code::InvalidArgument,
        ),
    ];
    for (what, messages, want) in cases {
        let e = raw.register_keys(tokio_stream::iter(messages)).await.expect_err(what);
        assert_eq!(e.code(), want, "{what}: {}", e.message());
    }
    // Evaluation-key chunks before the public key's.
    let mut interleaved = upload(header(id, &public, evaluation), &public, evaluation);
    let first_public = interleaved.remove(1);
    interleaved.push(first_public);
    let e = raw.register_keys(tokio_stream::iter(interleaved)).await.expect_err("out of order");
    assert_eq!(e.code(), Code::InvalidArgument, "{}", e.message());
    // More bytes than declared.
    let mut over = upload(header(id, &public, evaluation), &public, evaluation);
    over.push(KeyUpload { part: Some(KeyPart::PublicChunk(vec![0])) });
    let e = raw.register_keys(tokio_stream::iter(over)).await.expect_err("overrun");
    assert_eq!(e.code(), Code::InvalidArgument, "{}", e.message());

    // Still serving: the real keys register and a decision completes.
    lender.register("test-lender").await.expect("register");
    lender.register("test-lender").await.expect("registering the same keys again is harmless");
    // Nobody can swap another evaluation key in under this key set's id.
    let swapped = &other_keys().evaluation;
    let e = raw
        .register_keys(tokio_stream::iter(upload(header(id, &public, swapped), &public, swapped)))
        .await
        .expect_err("swapped evaluation key");
    assert_eq!(e.code(), Code::AlreadyExists, "{}", e.message());
    // Decision requests whose model does not hold together.
    let model_id = Model::cross_border_seller().id().to_string();
    for (what, model_id, toml) in [
        ("model id of another model", "ab".repeat(32), CROSS_BORDER_SELLER.to_string()),
        ("invalid model", model_id.clone(), CROSS_BORDER_SELLER.replace("parties =", "partys =")),
    ] {
        let request = jointscore_proto::v1::DecideRequest {
            request_id: format!("bad-model-{what}"),
            key_id: id.into(),
            model_id,
            model_toml: toml,
            subject: "seller-0001".into(),
            plan: jointscore_proto::plan_to_wire(PlanKind::Pushdown),
            absent: Vec::new(),
        };
        let e = raw.decide(request).await.expect_err(what);
        assert_eq!(e.code(), Code::InvalidArgument, "{what}: {}", e.message());
    }
    let d = lender.decide("seller-0001", "k-2").await.expect("decision");
    assert_eq!(d.bundle, cluster.reference("seller-0001").expect("reference"));
    // A party asked for a key set the coordinator does not know.
    let e = raw
        .get_public_key(jointscore_proto::v1::GetPublicKeyRequest { key_id: "00ff00ff00ff00ff".into() })
        .await
        .expect_err("unknown key");
    assert_eq!(e.code(), Code::NotFound);
    cluster.stop().await.expect("stop");
}

/// A party that misbehaves in one chosen way.
#[derive(Clone, Copy, Debug)]
enum Rogue {
    Garbage,
    Truncated,
    Oversized,
    Impostor,
    Slow,
    /// Answers with a status only the coordinator itself may use.
    Overloaded,
}

type ChunkStream = Pin<Box<dyn Stream<Item = Result<ContributeChunk, Status>> + Send>>;
type PsiStream = Pin<Box<dyn Stream<Item = Result<PsiOpenChunk, Status>> + Send>>;

#[tonic::async_trait]
impl Party for Rogue {
    type ContributeStream = ChunkStream;
    type PsiOpenStream = PsiStream;

    async fn psi_open(&self, _: Request<PsiOpenRequest>) -> Result<Response<PsiStream>, Status> {
        Err(Status::unimplemented("no PSI"))
    }

    async fn psi_query(&self, _: Request<PsiQueryRequest>) -> Result<Response<PsiAnswer>, Status> {
        Err(Status::unimplemented("no PSI"))
    }

    async fn psi_close(&self, _: Request<PsiCloseRequest>) -> Result<Response<PsiCloseReply>, Status> {
        Err(Status::unimplemented("no PSI"))
    }

    async fn contribute(&self, _: Request<ContributeRequest>) -> Result<Response<ChunkStream>, Status> {
        let head = |party: &str, len: u64| ContributeChunk {
            part: Some(Part::Header(ContributionHeader {
                party: party.into(),
                len,
                blocks: 1,
                encrypt_us: 1,
                ..Default::default()
            })),
        };
        let data = |bytes: &[u8]| ContributeChunk { part: Some(Part::Data(bytes.to_vec())) };
        let messages = match self {
            Rogue::Garbage => vec![head("bank", 10), data(b"0123456789")],
            Rogue::Truncated => vec![head("bank", 1000), data(b"0123456789")],
            Rogue::Oversized => vec![head("bank", CONTRIBUTION_SIZE_LIMIT + 1), data(b"0")],
            Rogue::Impostor => vec![head("platform", 1), data(b"0")],
            Rogue::Overloaded => return Err(Status::resource_exhausted("x".repeat(100_000))),
            Rogue::Slow => {
                tokio::time::sleep(Duration::from_secs(6)).await;
                vec![head("bank", 1), data(b"0")]
            }
        };
        Ok(Response::new(Box::pin(tokio_stream::iter(messages.into_iter().map(Ok)))))
    }

    async fn sec_agg_advertise(
        &self,
        _: Request<SecAggAdvertiseRequest>,
    ) -> Result<Response<SecAggAdvertiseReply>, Status> {
        Err(Status::unimplemented("rogue"))
    }

    async fn sec_agg_share_keys(
        &self,
        _: Request<SecAggShareKeysRequest>,
    ) -> Result<Response<SecAggShareKeysReply>, Status> {
        Err(Status::unimplemented("rogue"))
    }

    async fn sec_agg_masked_input(
        &self,
        _: Request<SecAggMaskedInputRequest>,
    ) -> Result<Response<SecAggMaskedInputReply>, Status> {
        Err(Status::unimplemented("rogue"))
    }

    async fn sec_agg_unmask(&self, _: Request<SecAggUnmaskRequest>) -> Result<Response<SecAggUnmaskReply>, Status> {
        Err(Status::unimplemented("rogue"))
    }
}

/// Serves `rogue` and registers it with the coordinator as the bank.
async fn impersonate_bank(coordinator: &str, rogue: Rogue) -> tokio::task::JoinHandle<()> {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = format!("http://{}", listener.local_addr().expect("address"));
    let server = tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(PartyServer::new(rogue))
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await;
    });
    let mut client = CoordinatorClient::connect(coordinator.to_string()).await.expect("connect");
    client.register_party(RegisterPartyRequest { name: "bank".into(), address }).await.expect("register");
    server
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_contributions_and_slow_parties_fail_the_job_naming_the_party() {
    let _quiet = CPU_HEAVY.lock().await;
    // Unsigned: the rogues' bytes are to reach the decoder (signature
    // failures are tested on their own).
    let options = ClusterOptions { party_deadline: Duration::from_secs(4), signed: false, ..small() };
    let (mut cluster, mut lender) = cluster(options).await;
    // The honest parties fetch the lender's key once: a warm-up, so that
    // under a loaded machine they answer well within the deadline below.
    // A cold first fetch may itself miss the deadline; the key is cached
    // all the same, so the warm-up is tried again.
    for attempt in 0.. {
        match lender.decide("seller-0002", &format!("rogue-warm-{attempt}")).await {
            Ok(_) => break,
            Err(e) if attempt < 2 => eprintln!("warm-up {attempt}: {e}"),
            Err(e) => panic!("the honest parties never answered within the deadline: {e}"),
        }
    }
    for (i, (rogue, want, says)) in [
        (Rogue::Garbage, Code::InvalidArgument, "malformed"),
        (Rogue::Truncated, Code::InvalidArgument, "truncated"),
        (Rogue::Oversized, Code::InvalidArgument, "exceeds the limit"),
        (Rogue::Impostor, Code::InvalidArgument, "answered as `platform`"),
        (Rogue::Slow, Code::DeadlineExceeded, "did not answer within 4000 ms"),
        (Rogue::Overloaded, Code::Unavailable, "failed (ResourceExhausted)"),
    ]
    .into_iter()
    .enumerate()
    {
        let server = impersonate_bank(&cluster.coordinator_url(), rogue).await;
        let (code, reason) = failure(&mut lender, "seller-0001", &format!("rogue-{i}")).await;
        assert_eq!(code, want, "{rogue:?}: {reason}");
        assert!(reason.contains("`bank`") && reason.contains(says), "{rogue:?}: {reason}");
        assert!(reason.len() < 2000, "a party's message is bounded: {} bytes", reason.len());
        server.abort();
    }
    // The real bank registers again (a restart) and the coordinator, still
    // serving, decides correctly.
    let bank = cluster.party("bank").expect("bank");
    bank.stop().await.expect("stop");
    bank.start().await.expect("start");
    let d = lender.decide("seller-0001", "rogue-after").await.expect("decision");
    assert_eq!(d.bundle, cluster.reference("seller-0001").expect("reference"));
    cluster.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_is_resource_exhausted_and_retries_still_find_their_job() {
    // Unsigned, so the rogue's bytes reach the decoder and are refused there.
    let options = ClusterOptions { queue_capacity: 1, signed: false, ..small() };
    let (cluster, mut lender) = cluster(options).await;
    let _slow = impersonate_bank(&cluster.coordinator_url(), Rogue::Slow).await;
    let first = lender.submit("seller-0001", "q-1").await.expect("accepted");
    let e = lender.submit("seller-0002", "q-2").await.unwrap_err();
    assert_eq!(e.code(), Some(Code::ResourceExhausted), "{e}");
    let retry = lender.submit("seller-0001", "q-1").await.expect("a retry is not refused");
    assert!(retry.existing && retry.job_id == first.job_id);
    let e = lender.fetch(&first.job_id).await.unwrap_err();
    assert_eq!(e.code(), Some(Code::FailedPrecondition), "a result before the job ends: {e}");
    // Once the slow job ends (the rogue's bytes are refused), there is room.
    let e = lender.wait(&first.job_id, WAIT).await.unwrap_err();
    assert_eq!(e.code(), Some(Code::InvalidArgument), "{e}");
    lender.submit("seller-0002", "q-2").await.expect("accepted once there is room");
    cluster.stop().await.expect("stop");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("address").port()
}

fn spawn_coordinator(config: &std::path::Path) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_jointscore"))
        .args(["coordinator", "serve", "--config"])
        .arg(config)
        .env("RUST_LOG", "warn")
        .spawn()
        .expect("coordinator process starts")
}

async fn connect_when_up(url: &str, keys: Arc<LenderKeys>) -> Lender {
    for _ in 0..200 {
        if let Ok(lender) = Lender::connect(url, keys.clone(), CROSS_BORDER_SELLER.into(), PlanKind::Pushdown).await {
            return lender;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("coordinator at {url} did not come up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_coordinator_finishes_every_accepted_job_after_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let config = dir.path().join("coordinator.toml");
    std::fs::write(&config, format!("listen = \"127.0.0.1:{port}\"\nstore = \"coordinator.sqlite\"\n"))
        .expect("config");
    let mut process = spawn_coordinator(&config);
    let mut lender = connect_when_up(&url, keys()).await;
    lender.register("test-lender").await.expect("register");

    let model = Model::cross_border_seller();
    let book = sample::subjects(&model, 4, 99);
    let mut parties = start_parties(&model, &book, &url, dir.path(), &PartySetup::default()).await.expect("parties");

    let mut jobs = Vec::new();
    for (i, (subject, _)) in book.iter().enumerate() {
        jobs.push((subject.clone(), lender.submit(subject, &format!("restart-{i}")).await.expect("accepted").job_id));
    }
    let mut in_flight = 0;
    for (_, job) in &jobs {
        use jointscore_proto::v1::JobState;
        let state = JobState::try_from(lender.job(job).await.expect("job").state).expect("state");
        in_flight += usize::from(matches!(state, JobState::Accepted | JobState::Collecting | JobState::Evaluating));
    }
    process.kill().expect("kill");
    process.wait().expect("reaped");
    assert!(in_flight > 0, "every job finished before the kill; the test proves nothing");

    let mut process = spawn_coordinator(&config);
    let mut lender = connect_when_up(&url, keys()).await;
    // Every party is up, so every job must complete, not merely end.
    for (subject, job) in &jobs {
        match lender.wait(job, WAIT).await {
            Ok(_) => {
                let result = lender.fetch(job).await.expect("result");
                let bundle = lender.decrypt(&result).expect("decrypt");
                let record = jointscore_circuits::Record::from_json(
                    &model,
                    &book.iter().find(|(s, _)| s == subject).expect("subject").1,
                )
                .expect("record");
                let want = jointscore_circuits::reference::evaluate(&model, &record).restricted(&model);
                assert_eq!(bundle, want, "{subject}");
            }
            Err(LenderError::JobFailed { reason, .. }) => {
                assert!(!reason.is_empty(), "{subject} failed without a reason")
            }
            Err(e) => panic!("{subject}: {e}"),
        }
    }
    process.kill().expect("kill");
    process.wait().expect("reaped");
    for p in &mut parties {
        p.stop().await.expect("stop");
    }
}

/// Child processes killed when the test ends, pass or fail.
struct Processes(Vec<std::process::Child>);

impl Drop for Processes {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn run(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_jointscore")).args(args).output().expect("jointscore runs")
}

fn spawn(args: &[&str]) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_jointscore"))
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("jointscore starts")
}

fn text(o: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[test]
fn the_command_line_runs_the_system_as_separate_processes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
    let port = free_port();
    let url = format!("https://127.0.0.1:{port}");
    // Identities and certificates for every node and the consortium file
    // (mutual TLS on), as an operator would make them.
    let out = run(&[
        "consortium",
        "init",
        "--dir",
        &path(""),
        "--party",
        "platform",
        "--party",
        "logistics",
        "--party",
        "bank",
        "--lender",
        "lender",
    ]);
    assert!(out.status.success() && text(&out).contains("bank         party"), "{}", text(&out));
    assert!(text(&out).contains("lender       lender"), "{}", text(&out));
    let out = run(&["consortium", "init", "--dir", &path(""), "--party", "bank"]);
    assert!(
        !out.status.success() && text(&out).contains("never replaced"),
        "keys are never overwritten: {}",
        text(&out)
    );
    let out = run(&["consortium", "init", "--dir", &path("bad"), "--party", "bank", "--party", "../x"]);
    assert!(!out.status.success() && text(&out).contains("names a key file"), "{}", text(&out));
    assert!(!dir.path().join("bad").join("coordinator.key").exists(), "a refused list writes no key");
    std::fs::write(
        path("coordinator.toml"),
        format!(
            "listen = \"127.0.0.1:{port}\"\nstore = \"coordinator.sqlite\"\nlenders = [\"bank\", \"lender\"]\n\
             consortium = \"consortium.toml\"\nidentity = \"coordinator.key\"\n"
        ),
    )
    .expect("config");
    let mut processes = Processes(vec![spawn(&["coordinator", "serve", "--config", &path("coordinator.toml")])]);

    let model = Model::cross_border_seller();
    let book = sample::subjects(&model, 3, 5);
    let registry = |name: &str| if name == "bank" { "asset_registry = true\n" } else { "" };
    for (index, name) in model.parties().iter().enumerate() {
        let config = path(&format!("{name}.toml"));
        std::fs::write(
            &config,
            format!(
                "name = \"{name}\"\nlisten = \"127.0.0.1:0\"\ncoordinator = \"{url}\"\nstore = \"{name}.sqlite\"\napproved_models = [\"{}\"]\nidentity = \"{name}.key\"\nconsortium = \"consortium.toml\"\n{}",
                model.id(),
                registry(name)
            ),
        )
        .expect("party config");
        let columns: Vec<&str> =
            model.features().iter().filter(|f| f.party == index).map(|f| f.name.as_str()).collect();
        let mut csv = format!("subject,{}\n", columns.join(","));
        for (subject, record) in &book {
            let view = party_view(&model, index, record);
            let cells: Vec<String> = columns
                .iter()
                .map(|c| match &view[*c] {
                    serde_json::Value::Null => String::new(),
                    serde_json::Value::String(s) => s.clone(),
                    v => v.to_string(),
                })
                .collect();
            csv.push_str(&format!("{subject},{}\n", cells.join(",")));
        }
        std::fs::write(path(&format!("{name}.csv")), csv).expect("csv");
        let out = run(&["party", "import", "--config", &config, &path(&format!("{name}.csv"))]);
        assert!(out.status.success() && text(&out).contains("3 subjects added"), "{}", text(&out));
        processes.0.push(spawn(&["party", "serve", "--config", &config]));
    }

    let keys_dir = path("lender-keys");
    let out = run(&["lender", "keygen", "--keys", &keys_dir]);
    assert!(out.status.success(), "{}", text(&out));
    let consortium_file = path("consortium.toml");
    let lender_key = path("lender.key");
    let member = ["--coordinator", url.as_str(), "--consortium", consortium_file.as_str(), "--identity", &lender_key];
    let lender = [&member[..], &["--keys", keys_dir.as_str()]].concat();
    let mut registered = false;
    for _ in 0..100 {
        let out = run(&[&["lender", "register"][..], &lender].concat());
        if out.status.success() {
            registered = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(registered, "the lender could not register");
    // Under mutual TLS a client must prove a member's identity, in the
    // role the call is for.
    let plain = ["lender", "register", "--coordinator", &url, "--keys", &keys_dir, "--consortium", &consortium_file];
    let out = run(&plain);
    assert!(!out.status.success() && text(&out).contains("pass this member's key with --identity"), "{}", text(&out));
    let out = run(&[&plain[..], &["--identity", &path("bank.key")]].concat());
    assert!(
        !out.status.success() && text(&out).contains("`bank` is a party in the consortium; this call is for: lender"),
        "{}",
        text(&out)
    );

    // Without an alignment the lender refuses to ask, rather than tell a
    // party about a subject it may not hold.
    let alignment = path("alignment.sqlite");
    let out =
        run(&[&["lender", "decide", "--subject", "seller-0001", "--alignment", &alignment][..], &lender].concat());
    assert!(!out.status.success() && text(&out).contains("run `jointscore lender align"), "{}", text(&out));

    // Parties register as they come up; retry until all three align.
    let applicants = path("applicants.csv");
    std::fs::write(&applicants, "subject\nseller-0001\nseller-0002\nnobody\n").expect("applicants");
    let align =
        [&["lender", "align", "--as", "lender", "--subjects", &applicants, "--alignment", &alignment][..], &member]
            .concat();
    let mut aligned = None;
    for _ in 0..40 {
        let out = run(&align);
        if out.status.success() {
            aligned = Some(String::from_utf8_lossy(&out.stdout).into_owned());
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let aligned = aligned.expect("alignment through the command line");
    for (line, party) in aligned.lines().zip(&model.parties()) {
        let v: serde_json::Value = serde_json::from_str(line).expect("one JSON line per party");
        assert_eq!(
            (v["party"].as_str(), v["asked"].as_u64(), v["held"].as_u64()),
            (Some(party.as_str()), Some(3), Some(2))
        );
        assert_eq!(v["party_holds"], 3, "{line}");
    }

    let mut decided = None;
    for attempt in 0..40 {
        let id = format!("cli-{attempt}");
        let out = run(&[
            &["lender", "decide", "--subject", "seller-0001", "--request-id", &id, "--alignment", &alignment][..],
            &lender,
        ]
        .concat());
        if out.status.success() {
            decided = Some(String::from_utf8_lossy(&out.stdout).into_owned());
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let decided = decided.expect("a decision through the command line");
    let line: serde_json::Value = serde_json::from_str(decided.trim()).expect("one JSON line");
    let record = jointscore_circuits::Record::from_json(&model, &book[0].1).expect("record");
    let want = jointscore_circuits::reference::evaluate(&model, &record).restricted(&model);
    assert_eq!(line["decision"], want.describe(&model), "{decided}");

    let job = line["job_id"].as_str().expect("job id").to_string();
    let out = run(&[&["lender", "show", &job][..], &lender].concat());
    assert!(out.status.success(), "{}", text(&out));
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(shown["state"], "done");
    assert_eq!(shown["decision"], want.describe(&model));

    // Aligned, a subject nobody holds is not asked about at all; unaligned,
    // the parties are asked and refuse it.
    let out = run(&[&["lender", "decide", "--subject", "nobody", "--alignment", &alignment][..], &lender].concat());
    assert!(!out.status.success());
    assert!(text(&out).contains("no party of the model holds this subject; no party was asked"), "{}", text(&out));
    let out = run(&[&["lender", "decide", "--subject", "nobody", "--unaligned"][..], &lender].concat());
    assert!(!out.status.success());
    assert!(text(&out).contains("NotFound") && text(&out).contains("nobody"), "{}", text(&out));

    // Duplicate financing: the bank records a financing; the lender checks
    // a variant spelling of it and an asset nobody financed.
    let bank = path("bank.toml");
    let out = run(&["lender", "register-asset", "--config", &bank, "--id", "invoice:ACME Trading:INV-0001"]);
    assert!(out.status.success() && text(&out).contains("1 asset(s) added, 0 already registered"), "{}", text(&out));
    let assets = path("assets.csv");
    std::fs::write(
        &assets,
        "kind,issuer,number,reference\ninv,acme trading,0001-b,L2\ninvoice,ACME Trading,inv 0001,L3\n",
    )
    .expect("assets");
    let out = run(&["lender", "register-asset", "--config", &bank, "--file", &assets]);
    assert!(
        out.status.success() && text(&out).contains("1 asset(s) added, 1 already registered; 2 held"),
        "{}",
        text(&out)
    );
    let check = [&["lender", "check-asset", "--as", "lender", "--count"][..], &member].concat();
    let out = run(&[&check[..], &["--id", "inv:acme trading.:inv-0001", "--id", "po:acme trading:1"]].concat());
    assert!(out.status.success(), "{}", text(&out));
    let lines: Vec<serde_json::Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).expect("JSON line")).collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(
        lines[0],
        serde_json::json!({"asset": "invoice:acme trading:inv0001", "financed": true, "financed_by": 1})
    );
    assert_eq!(lines[1], serde_json::json!({"asset": "order:acme trading:1", "financed": false, "financed_by": 0}));
    // Refusals: a registry that is off, a malformed asset, a stranger.
    let out = run(&["lender", "register-asset", "--config", &path("platform.toml"), "--id", "po:a:1"]);
    assert!(!out.status.success() && text(&out).contains("`asset_registry` is off"), "{}", text(&out));
    let out = run(&[&check[..], &["--id", "invoice:acme"]].concat());
    assert!(!out.status.success() && text(&out).contains("expected KIND:ISSUER:NUMBER"), "{}", text(&out));
    std::fs::write(&assets, "kind,issuer,number\ninv,acme,1\nbond,acme,2\n").expect("assets");
    let out = run(&["lender", "register-asset", "--config", &bank, "--file", &assets]);
    assert!(
        !out.status.success() && text(&out).contains("line 3: invalid asset id: unknown asset kind `bond`"),
        "{}",
        text(&out)
    );
    let out = run(&[&["lender", "check-asset", "--as", "stranger", "--id", "po:a:1"][..], &member].concat());
    assert!(
        !out.status.success() && text(&out).contains("the requester `stranger` is not the caller `lender`"),
        "{}",
        text(&out)
    );
    // The bank's node key asks as the bank (a consortium lender); its one
    // other lender runs no node here, so the check fails naming it.
    let as_bank = ["--coordinator", &url, "--consortium", &consortium_file, "--identity", &path("bank.key")];
    let out = run(&[&["lender", "check-asset", "--as", "bank", "--id", "po:a:1"][..], &as_bank].concat());
    assert!(
        !out.status.success() && text(&out).contains("party `lender` is not registered with the coordinator"),
        "{}",
        text(&out)
    );

    // The audit ledger, checked by a member with the consortium file alone.
    let ledger = &as_bank;
    let receipts = path("bank.receipts");
    let out = run(&[&["audit", "receipts", "--as", "bank", "--out", &receipts][..], ledger].concat());
    assert!(out.status.success() && text(&out).contains("receipts for `bank`"), "{}", text(&out));
    let out = run(&[&["audit", "verify", "--receipts", &receipts][..], ledger].concat());
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("entries verified") && text(&out).contains("receipts are in it"), "{}", text(&out));
    let out = run(&[&["audit", "show", "--party", "bank", "--subject", "seller-0001"][..], ledger].concat());
    assert!(out.status.success(), "{}", text(&out));
    let shown: Vec<serde_json::Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).expect("JSON line")).collect();
    assert!(shown.iter().any(|e| e["record"]["kind"] == "contribution"), "{shown:?}");
    assert!(shown.iter().all(|e| e["record"]["subject"] == "seller-0001"), "{shown:?}");
    // Under another consortium's file the coordinator's certificate is not
    // the one listed: the client refuses it in the handshake.
    let other = path("other");
    assert!(run(&["consortium", "init", "--dir", &other, "--party", "bank"]).status.success());
    let out = run(&[
        "audit",
        "verify",
        "--coordinator",
        &url,
        "--consortium",
        &format!("{other}/consortium.toml"),
        "--identity",
        &format!("{other}/bank.key"),
    ]);
    assert!(!out.status.success() && text(&out).contains("certificate"), "{}", text(&out));
    drop(processes);
}

// ------------------------------------------------------------ statistics

const STATS_SPEC: &str = r#"
name = "book-health"
deadline_ms = 2000

[[counter]]
name = "records"
kind = "count"

[[counter]]
name = "debt_k"
kind = "sum"
column = "outstanding_debt_k"
segment = { column = "late_repayments_12m", bands = [1, 3] }

[[counter]]
name = "gmv_k"
kind = "sum"
column = "gmv_12m_k"

[[counter]]
name = "on_time_bp"
kind = "sum"
column = "on_time_rate_bp"
"#;

fn stats_spec() -> jointscore_stats::StatsSpec {
    jointscore_stats::StatsSpec::from_toml(STATS_SPEC).expect("valid spec")
}

/// The sums over `parties` copies of the model's party views of `book`,
/// computed directly from the book (not through the tally code).
fn expected_sums(book: &[(String, serde_json::Value)], honest_parties: u64) -> Vec<u64> {
    let int = |r: &serde_json::Value, c: &str| r.get(c).and_then(serde_json::Value::as_i64);
    let mut want = vec![0u64; 7];
    want[0] = honest_parties * book.len() as u64;
    for (_, r) in book {
        if let Some(debt) = int(r, "outstanding_debt_k") {
            let slot = match int(r, "late_repayments_12m") {
                None => 4,
                Some(l) if l < 1 => 1,
                Some(l) if l < 3 => 2,
                Some(_) => 3,
            };
            want[slot] += debt as u64;
        }
        want[5] += int(r, "gmv_12m_k").map_or(0, |x| x as u64);
        want[6] += int(r, "on_time_rate_bp").map_or(0, |x| x as u64);
    }
    want
}

fn values(result: &jointscore_lender::StatsResult) -> Vec<u64> {
    result.entries.iter().map(|(_, v)| *v).collect()
}

/// A party node that runs the real protocol but breaks one step.
#[derive(Clone, Copy, Debug)]
enum StatsFault {
    /// Advertises a masking key that is not a ristretto255 point.
    BadKey,
    /// Answers the advertise step as another party.
    Impostor,
    /// Sends shares addressed to a party outside the round.
    StrangerShares,
    /// Sends its masked vector one entry short.
    ShortVector,
    /// Sends its masked vector twice over (too long).
    LongVector,
    /// Does not answer the masked-input step in time.
    Slow,
    /// Reveals a masking-key share for a party whose vector arrived (which
    /// would unmask that party's vector).
    RevealsTooMuch,
    /// Seals garbage for every recipient: no one can open its shares.
    TamperedShare,
}

struct StatsRogue {
    inner: jointscore_party::PartyService,
    fault: StatsFault,
}

#[tonic::async_trait]
impl Party for StatsRogue {
    type ContributeStream = ChunkStream;
    type PsiOpenStream = PsiStream;

    async fn psi_open(&self, _: Request<PsiOpenRequest>) -> Result<Response<PsiStream>, Status> {
        Err(Status::unimplemented("no PSI"))
    }

    async fn psi_query(&self, _: Request<PsiQueryRequest>) -> Result<Response<PsiAnswer>, Status> {
        Err(Status::unimplemented("no PSI"))
    }

    async fn psi_close(&self, _: Request<PsiCloseRequest>) -> Result<Response<PsiCloseReply>, Status> {
        Err(Status::unimplemented("no PSI"))
    }

    async fn contribute(&self, _: Request<ContributeRequest>) -> Result<Response<ChunkStream>, Status> {
        Err(Status::unimplemented("stats only"))
    }

    async fn sec_agg_advertise(
        &self,
        request: Request<SecAggAdvertiseRequest>,
    ) -> Result<Response<SecAggAdvertiseReply>, Status> {
        let mut reply = self.inner.sec_agg_advertise(request).await?.into_inner();
        match self.fault {
            StatsFault::BadKey => reply.masking_key = vec![0xff; 32],
            StatsFault::Impostor => reply.party = "bank".into(),
            _ => {}
        }
        Ok(Response::new(reply))
    }

    async fn sec_agg_share_keys(
        &self,
        request: Request<SecAggShareKeysRequest>,
    ) -> Result<Response<SecAggShareKeysReply>, Status> {
        let mut reply = self.inner.sec_agg_share_keys(request).await?.into_inner();
        match self.fault {
            StatsFault::StrangerShares => reply.shares.push(SecAggSealed { party_id: 99, ciphertext: vec![0; 96] }),
            StatsFault::TamperedShare => {
                for sealed in &mut reply.shares {
                    sealed.ciphertext.iter_mut().for_each(|b| *b = 7);
                }
            }
            _ => {}
        }
        Ok(Response::new(reply))
    }

    async fn sec_agg_masked_input(
        &self,
        request: Request<SecAggMaskedInputRequest>,
    ) -> Result<Response<SecAggMaskedInputReply>, Status> {
        let mut reply = self.inner.sec_agg_masked_input(request).await?.into_inner();
        match self.fault {
            StatsFault::ShortVector => reply.vector.truncate(reply.vector.len() - 4),
            StatsFault::LongVector => reply.vector = reply.vector.repeat(2),
            StatsFault::Slow => tokio::time::sleep(Duration::from_secs(4)).await,
            _ => {}
        }
        Ok(Response::new(reply))
    }

    async fn sec_agg_unmask(
        &self,
        request: Request<SecAggUnmaskRequest>,
    ) -> Result<Response<SecAggUnmaskReply>, Status> {
        let survivors = request.get_ref().survivors.clone();
        let mut reply = self.inner.sec_agg_unmask(request).await?.into_inner();
        if let StatsFault::RevealsTooMuch = self.fault {
            let other = survivors.into_iter().find(|&id| id != 4).expect("another survivor");
            reply.key_shares.push(SecAggShare { party_id: other, share: vec![1; 32] });
        }
        Ok(Response::new(reply))
    }
}

/// Serves a rogue stats party named `zz-rogue` (so its id is 4, after the
/// three real parties) holding a book of its own, and registers it.
async fn start_stats_rogue(coordinator: &str, fault: StatsFault) -> tokio::task::JoinHandle<()> {
    let store = Arc::new(jointscore_party::RecordStore::in_memory().expect("store"));
    store.import_csv("subject,gmv_12m_k\nr1,1000\nr2,2000\n".as_bytes()).expect("rogue book");
    let config = jointscore_party::PartyConfig {
        name: "zz-rogue".into(),
        listen: "127.0.0.1:0".into(),
        advertise: None,
        coordinator: coordinator.into(),
        store: "unused".into(),
        approved_models: Vec::new(),
        approved_stats: vec![stats_spec().id()],
        asset_registry: false,
        psi_session_ttl_s: 600,
        min_present_parties: 2,
        identity: None,
        consortium: None,
    };
    let inner = jointscore_party::PartyService::new(&config, store);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = format!("http://{}", listener.local_addr().expect("address"));
    let server = tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(PartyServer::new(StatsRogue { inner, fault }))
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await;
    });
    let mut client = CoordinatorClient::connect(coordinator.to_string()).await.expect("connect");
    client.register_party(RegisterPartyRequest { name: "zz-rogue".into(), address }).await.expect("register");
    server
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_rounds_sum_the_books_and_a_misbehaving_party_only_drops_itself() {
    let _quiet = CPU_HEAVY.lock().await;
    let spec = stats_spec();
    let options = ClusterOptions { sellers: 6, approved_stats: vec![spec.id()], ..ClusterOptions::default() };
    let mut cluster = Cluster::start(&options).await.expect("cluster");
    let url = cluster.coordinator_url();
    let mut requester = jointscore_lender::StatsRequester::connect(&url).await.expect("connect");

    // Every party in: the exact sums, labelled in the spec's order.
    let result = requester.run(STATS_SPEC, "stats-all", WAIT).await.expect("round");
    assert_eq!(values(&result), expected_sums(&cluster.book, 3));
    assert_eq!(result.entries.iter().map(|(l, _)| l.clone()).collect::<Vec<_>>(), spec.labels());
    assert_eq!(result.included, ["bank", "logistics", "platform"]);
    assert!(result.dropped.is_empty(), "{:?}", result.dropped);
    // Idempotent: the same request id names the same job; another spec
    // under it is refused.
    let again = requester.run(STATS_SPEC, "stats-all", WAIT).await.expect("same job");
    assert_eq!(again, result);
    // A party holds the coordinator to the spec's threshold.
    let bank = format!("http://{}", cluster.parties[0].address().expect("running"));
    let mut party = jointscore_proto::v1::party_client::PartyClient::connect(bank).await.expect("connect");
    let lowered = SecAggAdvertiseRequest {
        round_id: "lowered".into(),
        spec_id: spec.id(),
        spec_toml: STATS_SPEC.into(),
        party: "platform".into(),
        party_id: 1,
        parties: 3,
        threshold: 1,
        session: vec![0; 16],
    };
    let e = party.sec_agg_advertise(lowered).await.expect_err("threshold below the spec's");
    assert_eq!(e.code(), Code::InvalidArgument, "{}", e.message());
    assert!(e.message().contains("threshold 1 is below the spec's 2"), "{}", e.message());
    let other = STATS_SPEC.replace("bands = [1, 3]", "bands = [2]");
    let e = requester.submit(&other, "stats-all").await.expect_err("other spec, same id");
    assert_eq!(e.code(), Some(Code::AlreadyExists), "{e}");

    // A member that is down drops at the first step; the others' sums come
    // out (its column, on-time rate, then sums to nothing).
    cluster.party("logistics").expect("party").stop().await.expect("stop");
    let result = requester.run(STATS_SPEC, "stats-down", WAIT).await.expect("round");
    let mut want = expected_sums(&cluster.book, 2);
    want[6] = 0;
    assert_eq!(values(&result), want);
    let [(party, at, reason)] = &result.dropped[..] else { panic!("{:?}", result.dropped) };
    assert_eq!((party.as_str(), at.as_str()), ("logistics", "advertise"), "{reason}");
    assert!(reason.contains("unreachable at http://127.0.0.1:"), "{reason}");
    cluster.party("logistics").expect("party").start().await.expect("restart");

    // A fourth party that misbehaves at one step is dropped, named with
    // the step and why, and the sum of the three others still comes out.
    for (i, (fault, step, says)) in [
        (StatsFault::BadKey, "advertise", "invalid public key"),
        (StatsFault::Impostor, "advertise", "answered as `bank`"),
        (StatsFault::StrangerShares, "share_keys", "material for party 99, which is not its neighbour"),
        (StatsFault::ShortVector, "masked_input", "masked vector of 24 bytes; the round aggregates 7 entries"),
        (StatsFault::LongVector, "masked_input", "masked vector of 56 bytes"),
        (StatsFault::Slow, "masked_input", "no answer within 2000 ms"),
    ]
    .into_iter()
    .enumerate()
    {
        let rogue = start_stats_rogue(&url, fault).await;
        let result = requester.run(STATS_SPEC, &format!("stats-rogue-{i}"), WAIT).await.expect("round");
        assert_eq!(values(&result), expected_sums(&cluster.book, 3), "{fault:?}");
        assert_eq!(result.included, ["bank", "logistics", "platform"], "{fault:?}");
        let [(party, at, reason)] = &result.dropped[..] else { panic!("{fault:?}: {:?}", result.dropped) };
        assert_eq!((party.as_str(), at.as_str()), ("zz-rogue", step), "{fault:?}: {reason}");
        assert!(reason.contains(says), "{fault:?}: `{reason}` should say `{says}`");
        rogue.abort();
    }

    // Faults after the masked vector arrived: the rogue's own vector is in
    // the sum (its book holds gmv 3000), and the round still completes.
    let mut with_rogue = expected_sums(&cluster.book, 3);
    with_rogue[0] += 2;
    with_rogue[5] += 3000;
    let rogue = start_stats_rogue(&url, StatsFault::RevealsTooMuch).await;
    let result = requester.run(STATS_SPEC, "stats-reveal", WAIT).await.expect("round");
    assert_eq!(values(&result), with_rogue);
    let [(party, at, reason)] = &result.dropped[..] else { panic!("{:?}", result.dropped) };
    assert_eq!((party.as_str(), at.as_str()), ("zz-rogue", "unmask"), "{reason}");
    assert!(reason.contains("revealed a key share for 1, not a dropped sharer"), "{reason}");
    rogue.abort();
    // Shares that fail authentication at their recipients: they report it,
    // do not mask with the sender, and the sender alone drops out.
    let rogue = start_stats_rogue(&url, StatsFault::TamperedShare).await;
    let result = requester.run(STATS_SPEC, "stats-tampered", WAIT).await.expect("round");
    assert_eq!(values(&result), expected_sums(&cluster.book, 3));
    let [(party, at, reason)] = &result.dropped[..] else { panic!("{:?}", result.dropped) };
    assert_eq!((party.as_str(), at.as_str()), ("zz-rogue", "share_keys"), "{reason}");
    assert!(reason.contains("failed authentication at `bank`, `logistics`, `platform`"), "{reason}");
    rogue.abort();
    cluster.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_requests_that_cannot_run_are_refused_precisely() {
    let spec = stats_spec();
    // No party approves the spec: all three drop at the first step.
    let options = ClusterOptions { sellers: 2, ..ClusterOptions::default() };
    let mut cluster = Cluster::start(&options).await.expect("cluster");
    let url = cluster.coordinator_url();
    let mut requester = jointscore_lender::StatsRequester::connect(&url).await.expect("connect");
    match requester.run(STATS_SPEC, "unapproved", WAIT).await {
        Err(LenderError::JobFailed { code, reason, .. }) => {
            assert_eq!(code, Code::Unavailable, "{reason}");
            for party in ["bank", "logistics", "platform"] {
                assert!(reason.contains(&format!("`{party}` at advertise: PermissionDenied")), "{reason}");
            }
            assert!(reason.contains("approved_stats"), "{reason}");
        }
        other => panic!("expected a failed round, got {other:?}"),
    }

    // Malformed requests never become jobs.
    let mut raw = CoordinatorClient::connect(url.clone()).await.expect("connect");
    for (what, spec_id, toml, want) in [
        ("wrong id", "ab".repeat(32), STATS_SPEC.to_string(), Code::InvalidArgument),
        ("invalid spec", spec.id(), STATS_SPEC.replace("kind = \"sum\"", "kind = \"max\""), Code::InvalidArgument),
        ("oversized spec", spec.id(), "#".repeat(100_000), Code::InvalidArgument),
    ] {
        let request =
            jointscore_proto::v1::RunStatsRequest { request_id: format!("bad-{what}"), spec_id, spec_toml: toml };
        let e = raw.run_stats(request).await.expect_err(what);
        assert_eq!(e.code(), want, "{what}: {}", e.message());
    }
    let e = raw
        .wait_stats(jointscore_proto::v1::WaitJobRequest { job_id: "stats-nope".into(), wait_ms: 10 })
        .await
        .expect_err("unknown job");
    assert_eq!(e.code(), Code::NotFound);

    // A party asked a step of a round it does not hold refuses.
    let bank = cluster.party("bank").expect("bank");
    let address = format!("http://{}", bank.address().expect("running"));
    let mut party = jointscore_proto::v1::party_client::PartyClient::connect(address).await.expect("connect");
    let e = party
        .sec_agg_share_keys(SecAggShareKeysRequest { round_id: "never-started".into(), roster: Vec::new() })
        .await
        .expect_err("unknown round");
    assert_eq!(e.code(), Code::NotFound, "{}", e.message());
    cluster.stop().await.expect("stop");
}

const CONSORTIUM_SPEC: &str = r#"
name = "consortium-q4"
deadline_ms = 5000

[[counter]]
name = "loans"
kind = "sum"
column = "loans"

[[counter]]
name = "defaults"
kind = "sum"
column = "defaults"

[[counter]]
name = "exposure_k"
kind = "sum"
column = "exposure_k"
segment = { column = "segment", values = ["retail", "sme"] }
"#;

/// Member `p`'s book: five loans files, as CSV, and its vector computed
/// by hand (loans, defaults, exposure retail, sme, other).
fn member_book(p: u64) -> (String, [u64; 5]) {
    let segments = ["retail", "sme", "corporate"];
    let mut csv = String::from("subject,loans,defaults,exposure_k,segment\n");
    let mut sums = [0u64; 5];
    for i in 0..5u64 {
        let (loans, defaults, exposure) = (10 * p + i, i % 3, 100 * p + 7 * i);
        csv.push_str(&format!("m{p}-s{i},{loans},{defaults},{exposure},{}\n", segments[(i % 3) as usize]));
        sums[0] += loans;
        sums[1] += defaults;
        sums[2 + (i % 3) as usize] += exposure;
    }
    (csv, sums)
}

/// Starts `party serve --config CONFIG` with the fault hook that stalls it
/// at the masked-input step; the receiver gets a message each time it
/// stalls in a round.
fn spawn_stalling_party(config: &str) -> (std::process::Child, std::sync::mpsc::Receiver<()>) {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_jointscore"))
        .args(["party", "serve", "--config", config])
        .env("RUST_LOG", "warn")
        .env(jointscore_party::FAULT_ENV, "stall-masked-input")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the stalling party starts");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("stalls masked_input") {
                let _ = tx.send(());
            }
        }
    });
    (child, rx)
}

/// A statistics requester, once the coordinator at `url` accepts connections.
async fn stats_requester_when_up(url: &str) -> jointscore_lender::StatsRequester {
    for _ in 0..200 {
        if let Ok(requester) = jointscore_lender::StatsRequester::connect(url).await {
            return requester;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("coordinator at {url} did not come up");
}

fn stats_json(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(out)))
}

fn sums_of(result: &serde_json::Value) -> Vec<u64> {
    result["entries"].as_array().expect("entries").iter().map(|e| e["value"].as_u64().expect("value")).collect()
}

#[test]
fn a_stats_round_over_processes_survives_a_party_killed_mid_round() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    std::fs::write(
        path("coordinator.toml"),
        format!("listen = \"127.0.0.1:{port}\"\nstore = \"coordinator.sqlite\"\n"),
    )
    .expect("config");
    let mut processes = Processes(vec![spawn(&["coordinator", "serve", "--config", &path("coordinator.toml")])]);
    std::fs::write(path("stats.toml"), CONSORTIUM_SPEC).expect("spec");
    let out = run(&["stats", "check", "--spec", &path("stats.toml")]);
    assert!(out.status.success(), "{}", text(&out));
    let id = jointscore_stats::StatsSpec::from_toml(CONSORTIUM_SPEC).expect("spec").id();
    assert!(text(&out).contains(&format!("id: {id}")), "{}", text(&out));
    assert!(text(&out).contains("exposure_k[segment=sme]"), "{}", text(&out));

    let members = ["alpha", "beta", "gamma"];
    let mut books = Vec::new();
    for (p, name) in members.iter().enumerate() {
        let config = path(&format!("{name}.toml"));
        std::fs::write(
            &config,
            format!(
                "name = \"{name}\"\nlisten = \"127.0.0.1:0\"\ncoordinator = \"{url}\"\nstore = \"{name}.sqlite\"\napproved_stats = [\"{id}\"]\n"
            ),
        )
        .expect("party config");
        let (csv, sums) = member_book(p as u64);
        std::fs::write(path(&format!("{name}.csv")), csv).expect("csv");
        let out = run(&["party", "import", "--config", &config, &path(&format!("{name}.csv"))]);
        assert!(out.status.success(), "{}", text(&out));
        books.push(sums);
        processes.0.push(spawn(&["party", "serve", "--config", &config]));
    }
    let total =
        |members: &[usize]| -> Vec<u64> { (0..5).map(|k| members.iter().map(|&p| books[p][k]).sum()).collect() };
    let stats = |request_id: &str| {
        let args = ["stats", "run", "--spec", &path("stats.toml"), "--coordinator", &url, "--request-id", request_id];
        [&args[..], &["--json"]].concat().into_iter().map(String::from).collect::<Vec<_>>()
    };

    // Parties register as they come up: retry until all three are in.
    let mut all = None;
    for attempt in 0..60 {
        let out = run(&stats(&format!("all-{attempt}")).iter().map(String::as_str).collect::<Vec<_>>());
        if out.status.success() {
            let result = stats_json(&out);
            if result["included"].as_array().is_some_and(|a| a.len() == 3) {
                all = Some(result);
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let all = all.expect("a round with every member");
    assert_eq!(sums_of(&all), total(&[0, 1, 2]), "{all}");

    // gamma restarts with a fault that stalls it at the masked-input step;
    // once it stalls, its process is killed, mid-round.
    let mut first = processes.0.pop().expect("gamma");
    first.kill().expect("stop gamma");
    first.wait().expect("reaped");
    let mut gamma = Processes(Vec::new());
    let (stalled, rx) = spawn_stalling_party(&path("gamma.toml"));
    gamma.0.push(stalled);
    let mut killed = None;
    for attempt in 0..20 {
        let args = stats(&format!("kill-{attempt}"));
        let round = std::process::Command::new(env!("CARGO_BIN_EXE_jointscore"))
            .args(&args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("stats run starts");
        if rx.recv_timeout(Duration::from_secs(8)).is_ok() {
            let mut child = gamma.0.pop().expect("gamma");
            child.kill().expect("kill gamma");
            child.wait().expect("reaped");
            killed = Some(round.wait_with_output().expect("round ends"));
            break;
        }
        // gamma had not re-registered yet: it dropped at advertise. Again.
        let _ = round.wait_with_output();
    }
    let out = killed.expect("gamma stalled in a round and was killed");
    assert!(out.status.success(), "{}", text(&out));
    let result = stats_json(&out);
    assert_eq!(sums_of(&result), total(&[0, 1]), "{result}");
    assert_eq!(result["included"], serde_json::json!(["alpha", "beta"]), "{result}");
    let dropped = &result["dropped"][0];
    assert_eq!(
        (dropped["party"].as_str(), dropped["step"].as_str()),
        (Some("gamma"), Some("masked_input")),
        "{result}"
    );
    drop(processes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statistics_job_in_flight_when_the_coordinator_is_killed_reruns_after_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let config = dir.path().join("coordinator.toml");
    std::fs::write(&config, format!("listen = \"127.0.0.1:{port}\"\nstore = \"coordinator.sqlite\"\n"))
        .expect("config");
    let coordinator = Processes(vec![spawn_coordinator(&config)]);
    let id = jointscore_stats::StatsSpec::from_toml(CONSORTIUM_SPEC).expect("spec").id();
    let party_config = |name: &str| {
        format!(
            "name = \"{name}\"\nlisten = \"127.0.0.1:0\"\ncoordinator = \"{url}\"\nstore = \"{name}.sqlite\"\napproved_stats = [\"{id}\"]\n"
        )
    };
    // alpha and beta in this process; gamma a process that stalls at the
    // masked-input step, so a round is in flight when the coordinator dies.
    let mut nodes = Vec::new();
    let mut books = Vec::new();
    for (p, name) in ["alpha", "beta", "gamma"].iter().enumerate() {
        let (csv, sums) = member_book(p as u64);
        books.push(sums);
        std::fs::write(path(&format!("{name}.toml")), party_config(name)).expect("party config");
        std::fs::write(path(&format!("{name}.csv")), csv).expect("csv");
        let config =
            jointscore_party::PartyConfig::load(std::path::Path::new(&path(&format!("{name}.toml")))).expect("load");
        let store = Arc::new(jointscore_party::RecordStore::open(&config.store).expect("store"));
        store.import_file(std::path::Path::new(&path(&format!("{name}.csv")))).expect("import");
        if *name != "gamma" {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let node = jointscore_party::PartyNode::start(&config, store, listener, Duration::from_secs(20))
                .await
                .expect("party node");
            nodes.push(node);
        }
    }
    let (gamma, rx) = spawn_stalling_party(&path("gamma.toml"));
    let gamma = Processes(vec![gamma]);
    let mut requester = stats_requester_when_up(&url).await;
    // Until gamma has registered, rounds finish without it: try again.
    let mut in_flight = None;
    for attempt in 0..20 {
        let job = requester.submit(CONSORTIUM_SPEC, &format!("restart-{attempt}")).await.expect("accepted").job_id;
        // The wait blocks this thread; the nodes keep the other worker.
        if tokio::task::block_in_place(|| rx.recv_timeout(Duration::from_secs(8))).is_ok() {
            in_flight = Some(job);
            break;
        }
    }
    let job = in_flight.expect("a round stalled at gamma");
    let mut raw = CoordinatorClient::connect(url.clone()).await.expect("connect");
    let state = raw
        .wait_stats(jointscore_proto::v1::WaitJobRequest { job_id: job.clone(), wait_ms: 0 })
        .await
        .expect("job")
        .into_inner()
        .state;
    assert_eq!(state, jointscore_proto::v1::JobState::Collecting as i32);
    drop(coordinator);
    drop(gamma);

    let _coordinator = Processes(vec![spawn_coordinator(&config)]);
    let mut requester = stats_requester_when_up(&url).await;
    // The job runs a fresh round: gamma is gone, so it drops at the first
    // step, and the sum is alpha's and beta's.
    let result = requester.wait(&job, WAIT).await.expect("the job completes after the restart");
    let want: Vec<u64> = (0..5).map(|k| books[0][k] + books[1][k]).collect();
    assert_eq!(result.entries.iter().map(|(_, v)| *v).collect::<Vec<_>>(), want);
    assert_eq!(result.included, ["alpha", "beta"]);
    assert_eq!(result.dropped.len(), 1, "{:?}", result.dropped);
    assert_eq!((result.dropped[0].0.as_str(), result.dropped[0].1.as_str()), ("gamma", "advertise"));
    for node in nodes {
        node.stop().await.expect("stop");
    }
}
