//! Mutual TLS: every connection proves a consortium member's identity with
//! the certificate the consortium file lists, and each call is for the
//! roles that need it.

use jointscore_identity::{Member, MemberVerifier, NodeKey, Role};
use jointscore_net::{NodeTls, Target};
use jointscore_party::PartyService;
use jointscore_proto::v1::party_client::PartyClient;
use jointscore_proto::v1::{DecideRequest, GetJobRequest, PsiPurpose};
use jointscore_proto::{collect, collect_psi_open};
use jointscore_testkit::cluster::LENDER;
use tonic::Code;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use super::*;

/// A second lender member, with no party node.
const OTHER_LENDER: &str = "other-lender";

fn tls() -> ClusterOptions {
    ClusterOptions { tls: true, lenders: vec![OTHER_LENDER.into()], approved_stats: vec![stats_spec().id()], ..small() }
}

async fn tls_cluster(options: ClusterOptions) -> (Cluster, Lender) {
    let cluster = Cluster::start(&options).await.expect("cluster starts");
    let mut lender = cluster.lender(keys(), PlanKind::Pushdown).await.expect("lender connects");
    lender.register(LENDER).await.expect("keys register");
    (cluster, lender)
}

/// A raw coordinator client, over mutual TLS as `member`.
async fn client_as(cluster: &Cluster, member: &str) -> CoordinatorClient<Channel> {
    let endpoint = cluster.target(member).expect("target").endpoint().expect("endpoint");
    CoordinatorClient::new(endpoint.connect().await.expect("connect"))
}

/// The identity key of a member of the cluster's consortium.
fn member_key(cluster: &Cluster, member: &str) -> NodeKey {
    NodeKey::read(&cluster.dir().join("identities").join(format!("{member}.key"))).expect("member key")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_are_authenticated_and_held_to_their_roles() {
    let (cluster, mut lender) = tls_cluster(tls()).await;
    let url = cluster.coordinator_url();
    assert!(url.starts_with("https://"), "{url}");
    let d = lender.decide("seller-0001", "tls-0").await.expect("a decision over mutual TLS");
    assert_eq!(d.bundle, cluster.reference("seller-0001").expect("reference"));
    let job = || GetJobRequest { job_id: d.job_id.clone() };
    let consortium = cluster.consortium.clone().expect("signed");

    // Plaintext gets nowhere.
    let plain = async {
        let mut c = CoordinatorClient::connect(url.replace("https://", "http://")).await.map_err(|e| e.to_string())?;
        c.get_job(job()).await.map_err(|s| s.to_string())
    };
    plain.await.expect_err("a plaintext client is answered");

    // TLS without a client certificate: UNAUTHENTICATED.
    let verifier = MemberVerifier::new(&consortium, "coordinator", Role::Coordinator, 0).expect("verifier");
    let anonymous = Endpoint::from_shared(url.clone())
        .expect("url")
        .tls_config_with_verifier(ClientTlsConfig::new(), verifier)
        .expect("tls");
    let mut anonymous = CoordinatorClient::new(anonymous.connect().await.expect("connect"));
    let e = anonymous.get_job(job()).await.expect_err("no certificate");
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    assert!(e.message().contains("no client certificate"), "{e:?}");

    // A certificate the consortium file does not list fails the handshake,
    // although the stranger's own file trusts the real coordinator.
    let stranger_key = NodeKey::generate();
    let mut theirs = (*consortium).clone();
    theirs.members.push(Member {
        name: "stranger".into(),
        role: Role::Lender,
        public_key: stranger_key.public_hex(),
        address: None,
        revoked: false,
        expires: None,
        certificate: Some(stranger_key.certificate("stranger").expect("certificate")),
    });
    let stranger = NodeTls::new(&stranger_key, "stranger", Arc::new(theirs)).expect("tls").expect("mtls");
    let refused = async {
        let channel =
            Target::new(url.clone(), Some(stranger)).endpoint()?.connect().await.map_err(|e| e.to_string())?;
        CoordinatorClient::new(channel).get_job(job()).await.map_err(|s| s.to_string())
    };
    let e = refused.await.expect_err("a stranger's certificate is accepted");
    // The connection fails (the server's `UnknownCA` alert, or the close
    // that follows it, depending on timing): no handler ever runs.
    assert!(!e.contains("Unauthenticated") && !e.contains("PermissionDenied"), "a handler answered: {e}");

    // A member in the wrong role: PERMISSION_DENIED, naming both roles.
    let mut bank = client_as(&cluster, "bank").await;
    let e = bank.get_job(job()).await.expect_err("a party reads a lender's job");
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("`bank` is a party in the consortium; this call is for: lender"), "{e:?}");
    let e = bank.decide(DecideRequest::default()).await.expect_err("a party asks for a decision");
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");

    // A member acts only under its own name: the platform cannot move the
    // bank's address, and the lender cannot register keys as another.
    let mut platform = client_as(&cluster, "platform").await;
    let e = platform
        .register_party(RegisterPartyRequest { name: "bank".into(), address: "https://127.0.0.1:9".into() })
        .await
        .expect_err("the platform registers as the bank");
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("the party `bank` is not the caller `platform`"), "{e:?}");
    let e = lender.register("someone-else").await.expect_err("keys under another lender's name");
    assert!(e.to_string().contains("the lender `someone-else` is not the caller `lender`"), "{e}");

    // Party nodes answer the coordinator only.
    let bank_url = format!("https://{}", cluster.parties[2].address().expect("running"));
    let as_lender = NodeTls::new(&member_key(&cluster, LENDER), LENDER, consortium.clone()).expect("tls").expect("on");
    let channel = as_lender.endpoint(&bank_url, "bank", Role::Party).expect("endpoint").connect().await.expect("tls");
    let e = PartyClient::new(channel)
        .psi_close(PsiCloseRequest { session_id: "x".into() })
        .await
        .expect_err("a lender calls a party node directly");
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("`lender` is a lender in the consortium; this call is for: coordinator"), "{e:?}");

    // A PSI session is its opener's: another member cannot query or close it.
    let mut raw = client_as(&cluster, LENDER).await;
    let open = crate::psi::signed_open(&member_key(&cluster, LENDER), PsiPurpose::Align, LENDER, "platform", 0);
    let stream = raw.psi_open(open.clone()).await.expect("open").into_inner();
    let (header, set) = collect_psi_open(stream, 1 << 22).await.expect("session");
    let query =
        crate::psi::signed_query(&member_key(&cluster, LENDER), &open, &header.session_id, 0, set[..32].to_vec());
    let e = bank.psi_query(query.clone()).await.expect_err("another member's session");
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    bank.psi_close(PsiCloseRequest { session_id: header.session_id.clone() }).await.expect("closing is idempotent");
    let answer = raw.psi_query(query).await.expect("the opener's session is intact").into_inner();
    assert_eq!(collect(answer, "answer", 1 << 20).await.expect("answer").len(), 32);
    let e =
        raw.psi_open(PsiOpenRequest { requester: "bank".into(), ..open }).await.expect_err("asking under another name");
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");

    // A job is its lender's: another lender member cannot read, wait on or
    // fetch it (NOT_FOUND, as for a job that does not exist), nor decide
    // or register under its key set.
    let mut other = client_as(&cluster, OTHER_LENDER).await;
    let e = other.get_job(job()).await.expect_err("another lender's job");
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    let e = other
        .wait_job(jointscore_proto::v1::WaitJobRequest { job_id: d.job_id.clone(), wait_ms: 0 })
        .await
        .expect_err("another lender's job");
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    let e = other
        .fetch_result(jointscore_proto::v1::FetchResultRequest { job_id: d.job_id.clone() })
        .await
        .expect_err("another lender's result");
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    let e = other
        .await_result(jointscore_proto::v1::WaitJobRequest { job_id: d.job_id.clone(), wait_ms: 0 })
        .await
        .expect_err("another lender's job and result in one call");
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    let theirs = DecideRequest { key_id: lender.key_id().to_string(), ..DecideRequest::default() };
    let e = other.decide(theirs).await.expect_err("a decision under another lender's key set");
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("was registered by another lender, not `other-lender`"), "{e:?}");

    // So is a statistics job: another lender waiting on it gets NOT_FOUND,
    // and reusing its request id ALREADY_EXISTS without learning more.
    let spec = stats_spec();
    let ask = jointscore_proto::v1::RunStatsRequest {
        request_id: "tls-stats".into(),
        spec_id: spec.id(),
        spec_toml: STATS_SPEC.into(),
    };
    let mine = client_as(&cluster, LENDER).await.run_stats(ask.clone()).await.expect("stats").into_inner();
    let wait = |job_id: String| jointscore_proto::v1::WaitJobRequest { job_id, wait_ms: 0 };
    let e = other.wait_stats(wait(mine.job_id.clone())).await.expect_err("another lender's statistics");
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    let e = other.run_stats(ask).await.expect_err("another lender's request id");
    assert_eq!(e.code(), Code::AlreadyExists, "{e:?}");
    client_as(&cluster, LENDER).await.wait_stats(wait(mine.job_id)).await.expect("the requester reads its job");

    let d = lender.decide("seller-0002", "tls-1").await.expect("the bank's registration is its own");
    assert_eq!(d.bundle, cluster.reference("seller-0002").expect("reference"));

    // Every refusal of a member is in the ledger, naming it; the anonymous
    // and the stranger are not (nothing attributes them).
    let (entries, head) =
        jointscore_lender::fetch_ledger(cluster.target(LENDER).expect("target")).await.expect("ledger");
    jointscore_audit::verify_with_head(&entries, &head, &consortium).expect("the ledger verifies");
    let refusals: Vec<(Vec<String>, Option<String>, String)> = entries
        .iter()
        .filter(|e| e.record.kind == jointscore_audit::EntryKind::Refusal)
        .map(|e| (e.record.parties.clone(), e.record.lender.clone(), e.record.detail.clone()))
        .collect();
    let refused = |who: &str, says: &str| {
        refusals.iter().any(|(parties, lender, detail)| {
            (parties.iter().any(|p| p == who) || lender.as_deref() == Some(who)) && detail.contains(says)
        })
    };
    assert!(refused("bank", "PermissionDenied: `bank` is a party in the consortium"), "{refusals:?}");
    assert!(refused("platform", "the party `bank` is not the caller `platform`"), "{refusals:?}");
    assert!(refused(LENDER, "the lender `someone-else` is not the caller `lender`"), "{refusals:?}");
    assert!(refused(LENDER, "the requester `bank` is not the caller `lender`"), "{refusals:?}");
    assert!(refused(OTHER_LENDER, "was registered by another lender"), "{refusals:?}");
    assert!(!refusals.iter().any(|(_, _, d)| d.contains("no client certificate")), "{refusals:?}");
    cluster.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_party_address_serving_another_certificate_is_not_trusted() {
    let (mut cluster, mut lender) = tls_cluster(tls()).await;
    lender.decide("seller-0001", "swap-0").await.expect("decision");
    let consortium = cluster.consortium.clone().expect("signed");
    let platform = NodeTls::new(&member_key(&cluster, "platform"), "platform", consortium).expect("tls").expect("on");

    // Someone holding the platform's key takes over the bank's address and
    // serves the bank's own data: the coordinator expects the bank's
    // certificate there and refuses to send it anything.
    let bank = cluster.party("bank").expect("bank");
    let address = bank.address().expect("running");
    bank.stop().await.expect("stop");
    let service = PartyService::new(&bank.config, bank.store.clone());
    let listener = jointscore_testkit::cluster::rebind(address).await.expect("the bank's address");
    let server = tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .tls_config(platform.server_config())
            .expect("tls")
            .add_service(PartyServer::new(service))
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await;
    });
    let (code, reason) = failure(&mut lender, "seller-0002", "swap-1").await;
    assert_eq!(code, Code::Unavailable, "{reason}");
    assert!(reason.contains("party `bank` is unreachable") && reason.contains("certificate"), "{reason}");
    server.abort();

    // The real bank, back on a new port, is trusted again.
    cluster.party("bank").expect("bank").start().await.expect("restart");
    let d = lender.decide("seller-0002", "swap-2").await.expect("decision");
    assert_eq!(d.bundle, cluster.reference("seller-0002").expect("reference"));
    cluster.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_lender_is_refused_by_name() {
    let options = ClusterOptions { revoked: vec![LENDER.into()], ..tls() };
    let cluster = Cluster::start(&options).await.expect("cluster starts");
    let mut lender = cluster.lender(keys(), PlanKind::Pushdown).await.expect("the handshake still completes");
    let e = lender.register(LENDER).await.expect_err("a revoked lender registers keys");
    assert!(e.to_string().contains("the identity of `lender` is revoked"), "{e}");
    cluster.stop().await.expect("stop");
}
