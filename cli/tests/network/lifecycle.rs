//! Nodes as an operator's tooling sees them: `grpc.health.v1` and server
//! reflection on every node, and a graceful shutdown (programmatic, and
//! SIGTERM to a coordinator process) that loses no decision.

use jointscore_coordinator::{CoordinatorConfig, CoordinatorNode, JobStore, SqliteStore};
use jointscore_proto::v1::JobState;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

use super::*;

const COORDINATOR: &str = "jointscore.v1.Coordinator";
const PARTY: &str = "jointscore.v1.Party";

async fn channel(url: &str) -> Channel {
    Endpoint::from_shared(url.to_string()).expect("url").connect().await.expect("connects")
}

async fn status(client: &mut HealthClient<Channel>, service: &str) -> Result<i32, tonic::Status> {
    Ok(client.check(HealthCheckRequest { service: service.into() }).await?.into_inner().status)
}

/// Waits until the node at `url` reports SERVING, as a supervisor's probe
/// would.
async fn serving(url: &str) {
    for _ in 0..400 {
        if let Ok(channel) = Endpoint::from_shared(url.to_string()).expect("url").connect().await
            && status(&mut HealthClient::new(channel), "").await.is_ok_and(|s| s == ServingStatus::Serving as i32)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{url} did not come up");
}

/// The services reflection lists over `channel`.
async fn listed(channel: Channel) -> Result<Vec<String>, tonic::Status> {
    let mut client = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = client.server_reflection_info(tokio_stream::iter([request])).await?.into_inner();
    match answers.message().await?.and_then(|a| a.message_response) {
        Some(MessageResponse::ListServicesResponse(list)) => Ok(list.service.into_iter().map(|s| s.name).collect()),
        other => panic!("expected a service list, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_answers_grpc_health_checks_and_reflection() {
    let (cluster, _lender) = cluster(small()).await;
    let party = format!("http://{}", cluster.parties[0].address().expect("running"));
    for (url, service) in [(cluster.coordinator_url(), COORDINATOR), (party, PARTY)] {
        let mut health = HealthClient::new(channel(&url).await);
        for name in ["", service] {
            assert_eq!(
                status(&mut health, name).await.expect("check"),
                ServingStatus::Serving as i32,
                "{url} {name:?}"
            );
        }
        let unknown = status(&mut health, "jointscore.v1.Nothing").await.expect_err("unknown service");
        assert_eq!(unknown.code(), tonic::Code::NotFound);
        let names = listed(channel(&url).await).await.expect("reflection");
        assert!(names.iter().any(|n| n == service), "{url}: {names:?}");
        assert!(names.iter().any(|n| n == "grpc.health.v1.Health"), "{url}: {names:?}");
        // A node lists its own service, not the other node's.
        let other = if service == COORDINATOR { PARTY } else { COORDINATOR };
        assert!(!names.iter().any(|n| n == other), "{url}: {names:?}");
    }
    // The descriptors behind the list: what grpcurl needs to call a method.
    let mut client = ServerReflectionClient::new(channel(&cluster.coordinator_url()).await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::FileContainingSymbol(format!("{COORDINATOR}.Decide"))),
    };
    let mut answers =
        client.server_reflection_info(tokio_stream::iter([request])).await.expect("reflection").into_inner();
    match answers.message().await.expect("answer").and_then(|a| a.message_response) {
        Some(MessageResponse::FileDescriptorResponse(files)) => {
            assert!(!files.file_descriptor_proto.is_empty());
        }
        other => panic!("expected descriptors, got {other:?}"),
    }
    cluster.stop().await.expect("stop");
}

/// Submits decisions until one is seen in flight (collecting or
/// evaluating); returns its subject, job id and request id.
async fn in_flight(
    lender: &mut Lender,
    book: &[(String, serde_json::Value)],
    prefix: &str,
) -> (String, String, String) {
    for (i, (subject, _)) in book.iter().enumerate() {
        let request_id = format!("{prefix}-{i}");
        let job = lender.submit(subject, &request_id).await.expect("accepted").job_id;
        loop {
            let state = JobState::try_from(lender.job(&job).await.expect("job").state).expect("state");
            match state {
                JobState::Collecting | JobState::Evaluating => return (subject.clone(), job, request_id),
                JobState::Accepted => tokio::time::sleep(Duration::from_millis(5)).await,
                _ => break,
            }
        }
    }
    panic!("every decision ended before it was seen in flight");
}

/// Waits for `job` and checks its decision against the reference.
async fn check_decision(
    lender: &mut Lender,
    model: &Model,
    book: &[(String, serde_json::Value)],
    subject: &str,
    job: &str,
) {
    lender.wait(job, WAIT).await.expect("the job completes");
    let result = lender.fetch(job).await.expect("result");
    let bundle = lender.decrypt(&result).expect("decrypt");
    let record = book.iter().find(|(s, _)| s == subject).expect("subject");
    let record = jointscore_circuits::Record::from_json(model, &record.1).expect("record");
    assert_eq!(bundle, jointscore_circuits::reference::evaluate(model, &record).restricted(model), "{subject}");
}

/// Exactly one job, done, for `request_id` in the store at `path`.
fn one_result(path: &std::path::Path, request_id: &str) {
    let conn = rusqlite::Connection::open(path).expect("store");
    let rows: Vec<(String, bool)> = conn
        .prepare("SELECT state, result IS NOT NULL FROM jobs WHERE request_id = ?1")
        .expect("query")
        .query_map([request_id], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("rows");
    assert_eq!(rows, [("done".to_string(), true)], "{request_id}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_shut_down_mid_decision_finishes_or_hands_back_the_job_and_loses_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("coordinator.sqlite");
    let config = CoordinatorConfig { listen: "127.0.0.1:0".into(), ..CoordinatorConfig::with_store(path.clone()) };
    let start = |listener| {
        let config = config.clone();
        let store = Arc::new(SqliteStore::open(&path).expect("store"));
        async move { CoordinatorNode::start(config, store, listener).await.expect("coordinator") }
    };
    let coordinator = start(TcpListener::bind("127.0.0.1:0").await.expect("bind")).await;
    let (url, address) = (coordinator.url(), coordinator.address());
    let model = Model::cross_border_seller();
    let book = sample::subjects(&model, 4, 41);
    let mut parties = start_parties(&model, &book, &url, dir.path(), &PartySetup::default()).await.expect("parties");
    let mut lender =
        Lender::connect(url.as_str(), keys(), CROSS_BORDER_SELLER.into(), PlanKind::Pushdown).await.expect("lender");
    lender.register(LENDER).await.expect("keys");

    // A watcher of the coordinator's health sees it stop serving.
    let mut health = HealthClient::new(channel(&url).await);
    let mut watch = health.watch(HealthCheckRequest { service: COORDINATOR.into() }).await.expect("watch").into_inner();
    assert_eq!(watch.message().await.expect("status").map(|r| r.status), Some(ServingStatus::Serving as i32));

    // No grace: the job in flight is stopped where it is and handed back.
    let (subject, job, request_id) = in_flight(&mut lender, &book, "handback").await;
    let drained = coordinator.shutdown_within(Duration::ZERO).await.expect("shutdown");
    assert_eq!((drained.jobs_interrupted, drained.jobs_unfinished), (1, 1), "{drained:?}");
    assert_eq!(watch.message().await.expect("status").map(|r| r.status), Some(ServingStatus::NotServing as i32));
    {
        let store = SqliteStore::open(&path).expect("store");
        let held = store.job(&job).expect("read").expect("kept");
        assert!(!held.state.is_terminal(), "a job stopped by the shutdown is not failed: {:?}", held.state);
    }

    // The next start on the same store resumes and completes it.
    let coordinator = start(jointscore_testkit::cluster::rebind(address).await.expect("rebind")).await;
    check_decision(&mut lender, &model, &book, &subject, &job).await;
    one_result(&path, &request_id);
    // A retried request finds the one job.
    let again = lender.submit(&subject, &request_id).await.expect("retry");
    assert!(again.existing && again.job_id == job, "{again:?}");

    // With time enough the job in flight finishes before the node stops.
    let (subject, job, request_id) = in_flight(&mut lender, &book[1..], "finish").await;
    let drained = coordinator.shutdown_within(WAIT).await.expect("shutdown");
    assert_eq!((drained.jobs_finished, drained.jobs_interrupted, drained.jobs_unfinished), (1, 0, 0), "{drained:?}");
    one_result(&path, &request_id);
    let coordinator = start(jointscore_testkit::cluster::rebind(address).await.expect("rebind")).await;
    check_decision(&mut lender, &model, &book, &subject, &job).await;
    coordinator.stop().await.expect("stop");
    for p in &mut parties {
        p.stop().await.expect("stop");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_to_a_coordinator_process_mid_decision_hands_the_job_to_its_next_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let config = dir.path().join("coordinator.toml");
    // No grace: the job in flight is handed back, not finished.
    std::fs::write(
        &config,
        format!("listen = \"127.0.0.1:{port}\"\nstore = \"coordinator.sqlite\"\nshutdown_grace_ms = 0\n"),
    )
    .expect("config");
    let spawn = |stderr: std::process::Stdio| {
        std::process::Command::new(env!("CARGO_BIN_EXE_jointscore"))
            .args(["coordinator", "serve", "--config"])
            .arg(&config)
            .env("RUST_LOG", "info")
            .stderr(stderr)
            .spawn()
            .expect("coordinator process starts")
    };
    let mut processes = Processes(vec![spawn(std::process::Stdio::piped())]);
    serving(&url).await;
    let mut lender =
        Lender::connect(url.as_str(), keys(), CROSS_BORDER_SELLER.into(), PlanKind::Pushdown).await.expect("lender");
    lender.register(LENDER).await.expect("keys");
    let model = Model::cross_border_seller();
    let book = sample::subjects(&model, 4, 43);
    let mut parties = start_parties(&model, &book, &url, dir.path(), &PartySetup::default()).await.expect("parties");

    let (subject, job, request_id) = in_flight(&mut lender, &book, "sigterm").await;
    let child = processes.0.pop().expect("coordinator");
    let pid = child.id().to_string();
    let sent = std::process::Command::new("kill").args(["-TERM", &pid]).status().expect("kill runs");
    assert!(sent.success());
    let out = tokio::task::spawn_blocking(move || child.wait_with_output()).await.expect("join").expect("exits");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "a SIGTERM is a clean exit: {:?}\n{log}", out.status);
    assert!(log.contains("signal=\"SIGTERM\"") || log.contains("signal=SIGTERM"), "{log}");
    assert!(log.contains("jobs_interrupted=1") && log.contains("jobs_unfinished=1"), "{log}");
    assert!(log.contains("store closed"), "{log}");
    assert!(!log.contains('\u{1b}'), "no colour codes when stderr is not a terminal: {log}");
    assert!(!dir.path().join("coordinator.sqlite-wal").exists(), "the store was closed (its log checkpointed)");
    {
        let store = SqliteStore::open(&dir.path().join("coordinator.sqlite")).expect("store");
        let held = store.job(&job).expect("read").expect("kept");
        assert!(!held.state.is_terminal(), "handed back, not failed: {:?}", held.state);
    }

    processes.0.push(spawn(std::process::Stdio::null()));
    serving(&url).await;
    check_decision(&mut lender, &model, &book, &subject, &job).await;
    one_result(&dir.path().join("coordinator.sqlite"), &request_id);
    drop(processes);
    for p in &mut parties {
        p.stop().await.expect("stop");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_mutual_tls_health_answers_any_tls_client_and_reflection_only_members() {
    use jointscore_identity::{MemberVerifier, Role};
    use tonic::transport::ClientTlsConfig;

    let cluster = Cluster::start(&ClusterOptions { tls: true, ..small() }).await.expect("cluster starts");
    let consortium = cluster.consortium.clone().expect("consortium");
    let party = &cluster.parties[0];
    let nodes = [
        (cluster.coordinator_url(), "coordinator".to_string(), Role::Coordinator, COORDINATOR),
        (format!("https://{}", party.address().expect("running")), party.name.clone(), Role::Party, PARTY),
    ];
    for (url, name, role, service) in nodes {
        // TLS that checks the node's certificate, without one of its own.
        let verifier = MemberVerifier::new(&consortium, &name, role, 0).expect("verifier");
        let anonymous = Endpoint::from_shared(url.clone())
            .expect("url")
            .tls_config_with_verifier(ClientTlsConfig::new(), verifier)
            .expect("tls")
            .connect()
            .await
            .expect("a TLS client without a certificate connects");
        let mut health = HealthClient::new(anonymous.clone());
        assert_eq!(status(&mut health, service).await.expect("check"), ServingStatus::Serving as i32, "{url}");
        let refused = listed(anonymous).await.expect_err("reflection is for members");
        assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{url}: {refused:?}");
        // A member (here the lender) is answered.
        let tls = cluster.target(jointscore_testkit::cluster::LENDER).expect("target").tls.expect("mutual TLS");
        let member = tls.endpoint(&url, &name, role).expect("endpoint").connect().await.expect("connect");
        let names = listed(member).await.expect("reflection for a member");
        assert!(names.iter().any(|n| n == service), "{url}: {names:?}");
    }
    cluster.stop().await.expect("stop");
}
