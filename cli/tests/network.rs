//! The system over real gRPC on 127.0.0.1: a coordinator, party nodes and a
//! lender, with every bad input the services must survive.
//!
//! One TFHE key set serves the whole binary (generation takes seconds);
//! each test starts its own cluster, so one test's broken party cannot
//! affect another.
//!
//! Tests are grouped by theme in `network/`: ordinary decisions and their
//! failures, key registration, misbehaving parties and a full queue,
//! coordinator restarts, health checks, reflection and graceful shutdown
//! (SIGTERM), the command line as separate processes, the sellers' consent,
//! statistics rounds (in process and over processes), signatures, mutual
//! TLS, private set intersection, strict mode and the audit ledger. This
//! file holds what they share.

use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use jointscore_circuits::fhe::CONTRIBUTION_SIZE_LIMIT;
use jointscore_circuits::wire::EVALUATION_KEY_LIMIT;
use jointscore_circuits::{CROSS_BORDER_SELLER, Model, PlanKind};
use jointscore_lender::{Code, Lender, LenderError, LenderKeys};
use jointscore_proto::v1::contribute_chunk::Part;
use jointscore_proto::v1::coordinator_client::CoordinatorClient;
use jointscore_proto::v1::key_upload::Part as KeyPart;
use jointscore_proto::v1::party_server::{Party, PartyServer};
use jointscore_proto::v1::{
    ContributeChunk, ContributeRequest, ContributionHeader, FitFrame, KeyHeader, KeyUpload, PsiAnswer, PsiCloseReply,
    PsiCloseRequest, PsiOpenChunk, PsiOpenRequest, PsiQueryRequest, RegisterPartyRequest, SecAggAdvertiseReply,
    SecAggAdvertiseRequest, SecAggConsistencyReply, SecAggConsistencyRequest, SecAggMaskedInputReply,
    SecAggMaskedInputRequest, SecAggSealed, SecAggShare, SecAggShareKeysReply, SecAggShareKeysRequest,
    SecAggUnmaskReply, SecAggUnmaskRequest,
};
use jointscore_testkit::cluster::{Cluster, ClusterOptions, LENDER, PartySetup, party_view, start_parties};
use jointscore_testkit::sample;
use tokio::net::TcpListener;
use tokio_stream::Stream;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};

#[path = "network/audit.rs"]
mod audit;
#[path = "network/commands.rs"]
mod commands;
#[path = "network/consent.rs"]
mod consent;
#[path = "network/decisions.rs"]
mod decisions;
#[path = "network/fit.rs"]
mod fit;
#[path = "network/keys.rs"]
mod keys;
#[path = "network/lifecycle.rs"]
mod lifecycle;
#[path = "network/monitor.rs"]
mod monitor;
#[path = "network/proofs.rs"]
mod proofs;
#[path = "network/psi.rs"]
mod psi;
#[path = "network/restart.rs"]
mod restart;
#[path = "network/rogue.rs"]
mod rogue;
#[path = "network/rogue_coordinator.rs"]
mod rogue_coordinator;
#[path = "network/scale.rs"]
mod scale;
#[path = "network/signed.rs"]
mod signed;
#[path = "network/stats.rs"]
mod stats;
#[path = "network/stats_processes.rs"]
mod stats_processes;
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
    lender.register(LENDER).await.expect("keys register");
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

/// The streams a party node answers with, for the misbehaving parties.
type ChunkStream = Pin<Box<dyn Stream<Item = Result<ContributeChunk, Status>> + Send>>;
type PsiStream = Pin<Box<dyn Stream<Item = Result<PsiOpenChunk, Status>> + Send>>;
type FitStream = Pin<Box<dyn Stream<Item = Result<FitFrame, Status>> + Send>>;

/// A statistics spec over the sample book, for the statistics and mutual
/// TLS tests.
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

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("address").port()
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

/// `jointscore ARGS --config CONFIG` as a process of its own (a node that
/// serves until killed).
fn spawn_with_config(args: &[&str], config: &std::path::Path) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_jointscore"))
        .args(args)
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "warn")
        .spawn()
        .expect("process starts")
}

/// A lender connected to the coordinator at `url` once it answers.
async fn connect_when_up(url: &str, keys: Arc<LenderKeys>) -> Lender {
    connect_for_when_up(url, keys, CROSS_BORDER_SELLER, PlanKind::Pushdown).await
}

/// [`connect_when_up`] for another file and plan kind (a monitor spec).
async fn connect_for_when_up(url: &str, keys: Arc<LenderKeys>, source: &str, kind: PlanKind) -> Lender {
    for _ in 0..200 {
        if let Ok(lender) = Lender::connect(url, keys.clone(), source.into(), kind).await {
            return lender;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("coordinator at {url} did not come up");
}

/// A coordinator process on a SQLite store in `dir`, unsigned, on a free
/// port: the process, its URL and its configuration file (to start it
/// again on the same store).
fn sqlite_coordinator(dir: &std::path::Path) -> (std::process::Child, String, std::path::PathBuf) {
    coordinator_process(dir, "coordinator.sqlite", "")
}

/// A coordinator process on `store`, unsigned, on a free port, with
/// `extra` configuration lines: the process, its URL and its configuration
/// file (for restarts and worker processes).
fn coordinator_process(
    dir: &std::path::Path,
    store: &str,
    extra: &str,
) -> (std::process::Child, String, std::path::PathBuf) {
    let port = free_port();
    let config = dir.join("coordinator.toml");
    std::fs::write(&config, format!("listen = \"127.0.0.1:{port}\"\nstore = \"{store}\"\n{extra}")).expect("config");
    (spawn_with_config(&["coordinator", "serve"], &config), format!("http://127.0.0.1:{port}"), config)
}

/// Fetches and decrypts `job`'s result and checks it is the plaintext
/// reference decision for `subject` of `book`.
async fn assert_reference_decision(
    lender: &mut Lender,
    model: &Model,
    book: &[(String, serde_json::Value)],
    subject: &str,
    job: &str,
) {
    let result = lender.fetch(job).await.expect("result");
    let bundle = lender.decrypt(&result).expect("decrypt");
    let values = &book.iter().find(|(s, _)| s == subject).expect("subject").1;
    let record = jointscore_circuits::Record::from_json(model, values).expect("record");
    let want = jointscore_circuits::reference::evaluate(model, &record).restricted(model);
    assert_eq!(bundle, want, "{subject}");
}

fn text(o: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}
