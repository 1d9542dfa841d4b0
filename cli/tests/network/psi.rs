//! Private set intersection through the services: alignment feeding the
//! decision flow, duplicate-financing checks, who may open a session and
//! how much it may ask, and every bad input a PSI session must survive.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jointscore_circuits::{Record, reference};
use jointscore_identity::{NodeKey, PsiOpenStatement, PsiQueryStatement};
use jointscore_lender::{AlignmentStore, PsiRequester};
use jointscore_party::{LogKind, verify_entries};
use jointscore_proto::v1::{PsiCloseRequest, PsiOpenRequest, PsiPurpose, PsiQueryRequest};
use jointscore_proto::{collect, collect_psi_open};
use jointscore_psi::{AssetId, MAX_BATCH, RequesterSession, points_from_bytes, points_to_bytes};
use rand_core::OsRng;
use serde_json::Value;
use tonic::Code;

use super::*;

/// The built-in model, except that the logistics firm's and the bank's
/// features are imputed when missing: a subject they do not know can still
/// be decided.
fn bank_optional_toml() -> String {
    let (head, rest) = CROSS_BORDER_SELLER.split_once("# --- logistics").expect("logistics section");
    format!("{head}# --- logistics{}", rest.replace("missing = \"reject\"", "missing = { impute = 0 }"))
}

fn assets(ids: &[&str]) -> Vec<AssetId> {
    ids.iter().map(|s| AssetId::parse(s).expect("asset id")).collect()
}

async fn raw_client(url: &str) -> CoordinatorClient<tonic::transport::Channel> {
    CoordinatorClient::connect(url.to_string()).await.expect("connect")
}

/// An unsigned open.
fn open(purpose: PsiPurpose, requester: &str, party: &str) -> PsiOpenRequest {
    PsiOpenRequest { purpose: purpose as i32, requester: requester.into(), party: party.into(), ..Default::default() }
}

/// An open as `requester` signs it with `key`, `age_ms` ago, with a fresh
/// nonce.
pub(crate) fn signed_open(
    key: &NodeKey,
    purpose: PsiPurpose,
    requester: &str,
    party: &str,
    age_ms: u64,
) -> PsiOpenRequest {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_millis() as u64;
    let statement = PsiOpenStatement {
        requester: requester.into(),
        purpose: if purpose == PsiPurpose::Assets { "assets" } else { "align" }.into(),
        party: party.into(),
        time_ms: now - age_ms,
        nonce: PsiOpenStatement::fresh_nonce(),
    };
    PsiOpenRequest {
        purpose: purpose as i32,
        requester: statement.requester.clone(),
        party: statement.party.clone(),
        time_ms: statement.time_ms,
        nonce: statement.nonce.clone(),
        signature: statement.sign(key).to_vec(),
    }
}

/// Batch `batch` of the session `open` opened (`session_id` as the
/// coordinator named it), signed with `key` as the open's requester.
pub(crate) fn signed_query(
    key: &NodeKey,
    open: &PsiOpenRequest,
    session_id: &str,
    batch: u32,
    points: Vec<u8>,
) -> PsiQueryRequest {
    let statement = PsiQueryStatement::new(&open.requester, &open.nonce, batch, &points);
    PsiQueryRequest { session_id: session_id.into(), signature: statement.sign(key).to_vec(), points, batch }
}

/// An alignment with `party` as the cluster's lender opens it.
fn lender_open(cluster: &Cluster, party: &str) -> PsiOpenRequest {
    signed_open(&cluster.identity(LENDER).expect("key"), PsiPurpose::Align, LENDER, party, 0)
}

#[tokio::test(flavor = "multi_thread")]
async fn alignment_keeps_decisions_away_from_parties_without_the_subject() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(jointscore_coordinator::SqliteStore::open(&dir.path().join("c.sqlite")).expect("store"));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let config = jointscore_coordinator::CoordinatorConfig {
        listen: "127.0.0.1:0".into(),
        ..jointscore_coordinator::CoordinatorConfig::with_store(dir.path().join("c.sqlite"))
    };
    let coordinator =
        jointscore_coordinator::CoordinatorNode::start(config, store, listener).await.expect("coordinator");
    let url = coordinator.url();
    let model = Model::from_toml(&bank_optional_toml()).expect("valid model");
    let book = sample::subjects(&model, 3, 5);
    // The bank's features may be missing under this model, and the other
    // operators let a lender name it absent: alignment found it without
    // the subject.
    let setup = PartySetup { allow_absent: vec!["bank".into()], ..PartySetup::default() };
    let parties = start_parties(&model, &book, &url, dir.path(), &setup).await.expect("parties");
    // A newcomer the platform and logistics firm know, the bank does not.
    let newcomer = sample::subjects(&model, 1, 77).remove(0).1;
    for p in parties.iter().filter(|p| p.name != "bank") {
        let index = model.parties().iter().position(|n| *n == p.name).expect("party");
        p.store.put_all(&[("newcomer".into(), party_view(&model, index, &newcomer))]).expect("put");
    }
    let mut lender = Lender::connect(&url, keys(), bank_optional_toml(), PlanKind::Pushdown).await.expect("lender");
    lender.register("test-lender").await.expect("keys");

    let list: Vec<String> = vec![book[0].0.clone(), "newcomer".into(), "stranger".into()];
    let mut requester = PsiRequester::connect(&url, "test-lender").await.expect("requester");
    let aligned = AlignmentStore::in_memory().expect("store");
    for party in model.parties() {
        let a = requester.align(party, &list).await.expect("align");
        let want = if party == "bank" { [true, false, false] } else { [true, true, false] };
        assert_eq!(a.held, want, "{party}");
        assert_eq!(a.party_size, if party == "bank" { 3 } else { 4 }, "{party}");
        aligned.record(party, &list, &a.held).expect("record");
    }
    assert_eq!(aligned.absent(&book[0].0, model.parties()).expect("aligned"), Vec::<String>::new());
    let absent = aligned.absent("newcomer", model.parties()).expect("aligned");
    assert_eq!(absent, ["bank"]);

    // The bank is not asked (it would refuse an unknown subject, NOT_FOUND):
    // the decision treats its features as missing, exactly as the plaintext
    // reference does.
    let d = lender.decide_with("newcomer", "aligned-1", &absent).await.expect("decision without the bank");
    let mut without_bank = newcomer.clone();
    for f in model.features().iter().filter(|f| model.parties()[f.party] == "bank") {
        without_bank[&f.name] = Value::Null;
    }
    let record = Record::from_json(&model, &without_bank).expect("record");
    assert_eq!(d.bundle, reference::evaluate(&model, &record).restricted(&model));
    assert_eq!(lender.job(&d.job_id).await.expect("job").absent, ["bank"]);
    // The same request id with another absent set is another request.
    let e = lender.submit_with("newcomer", "aligned-1", &[]).await.unwrap_err();
    assert_eq!(e.code(), Some(Code::AlreadyExists), "{e}");
    // Unaligned, the bank is asked, learns the subject and refuses it.
    let e = lender.decide("newcomer", "unaligned-1").await.unwrap_err();
    assert_eq!(e.code(), Some(Code::NotFound), "{e}");
    assert!(e.to_string().contains("party `bank`"), "{e}");
    // A party contributes only with at least one other (its
    // `min_present_parties`): naming the others absent would make the
    // decision a function of its data alone.
    let alone = vec!["bank".to_string(), "logistics".to_string()];
    let e = lender.decide_with("newcomer", "alone-1", &alone).await.unwrap_err();
    assert_eq!(e.code(), Some(Code::PermissionDenied), "{e}");
    assert!(e.to_string().contains("party `platform` contributes only when at least 2 parties do"), "{e}");
    // Every party absent: nothing to decide on.
    let e = lender.submit_with("newcomer", "aligned-3", model.parties()).await.unwrap_err();
    assert_eq!(e.code(), Some(Code::InvalidArgument), "{e}");
    assert!(e.to_string().contains("every party of the model is named absent"), "{e}");
    // An absent party the model does not have is a bad request.
    let e = lender.submit_with("newcomer", "aligned-2", &["acme".into()]).await.unwrap_err();
    assert_eq!(e.code(), Some(Code::InvalidArgument), "{e}");
    assert!(e.to_string().contains("`acme`, which is not a party of model"), "{e}");
    for mut p in parties {
        p.stop().await.expect("stop");
    }
    coordinator.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_absent_party_whose_features_may_not_be_missing_fails_the_decision() {
    let (cluster, mut lender) = cluster(ClusterOptions { sellers: 1, ..ClusterOptions::default() }).await;
    let e = lender.decide_with("seller-0001", "absent-bank", &["bank".into()]).await.unwrap_err();
    assert_eq!(e.code(), Some(Code::FailedPrecondition), "{e}");
    assert!(e.to_string().contains("party `bank` does not hold the subject"), "{e}");
    assert!(e.to_string().contains("collection_cycle_days"), "{e}");
    // Every party asked: the decision goes through.
    lender.decide("seller-0001", "all-asked").await.expect("decision");
    cluster.stop().await.expect("stop");
}

fn consortium() -> ClusterOptions {
    ClusterOptions {
        sellers: 4,
        lenders: vec!["bank".into(), "platform".into(), "lender-x".into()],
        registries: vec!["bank".into(), "platform".into()],
        ..ClusterOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn duplicate_financing_counts_other_lenders_and_nothing_else() {
    let mut cluster = Cluster::start(&consortium()).await.expect("cluster");
    let url = cluster.coordinator_url();
    let register =
        |ids: &[&str]| -> Vec<(AssetId, String)> { assets(ids).into_iter().map(|a| (a, "loan".to_string())).collect() };
    let bank = cluster.party("bank").expect("bank").store.clone();
    let platform = cluster.party("platform").expect("platform").store.clone();
    bank.register_assets(&register(&["invoice:ACME:INV-1", "order:Lisbon Tiles:PO-55", "wr:Depot:9"]))
        .expect("register");
    platform.register_assets(&register(&["inv:acme:inv 1", "bl:Maersk:B/L 778"])).expect("register");

    let mut x = cluster.psi_requester("lender-x").await.expect("requester");
    let asked =
        ["Invoice:ACME.:INV-0-1", "invoice:acme:INV1", "order:lisbon tiles:po55", "bl:maersk:b-l-778", "po:nobody:1"];
    let checked = x.check_assets(&assets(&asked)).await.expect("check");
    // INV-0-1 normalises to inv01, not inv1: leading zeros are kept.
    assert_eq!(checked.financed_by, [0, 2, 1, 1, 0]);
    assert_eq!(checked.lenders, 2);
    assert_eq!(checked.registry_size, 5, "the two registries together, no per-lender sizes");
    // An empty list is a valid check of nothing.
    assert!(x.check_assets(&[]).await.expect("empty").financed_by.is_empty());

    // The bank asks: the consortium's other lenders include lender-x, whose
    // node is not registered; a partial answer would read "not financed",
    // so the check fails and names it.
    // The bank's node asks as the bank, signing with its party key.
    let mut b = cluster.psi_requester("bank").await.expect("requester");
    let e = b.check_assets(&assets(&["invoice:acme:inv1"])).await.unwrap_err();
    assert_eq!(e.code(), Some(Code::Unavailable), "{e}");
    assert!(e.to_string().contains("party `lender-x` is not registered"), "{e}");

    // Only consortium lenders ask; a data party is refused as a stranger is.
    for who in ["logistics", "stranger"] {
        let mut r = PsiRequester::connect(&url, who).await.expect("requester");
        let e = r.check_assets(&assets(&["invoice:acme:inv1"])).await.unwrap_err();
        assert_eq!(e.code(), Some(Code::PermissionDenied), "{who}: {e}");
        assert!(e.to_string().contains("is not a consortium lender"), "{e}");
    }

    // A lender that is down fails the check, naming it; once back, the
    // same check answers again.
    cluster.party("platform").expect("platform").stop().await.expect("stop");
    let e = x.check_assets(&assets(&["invoice:acme:inv1"])).await.unwrap_err();
    assert_eq!(e.code(), Some(Code::Unavailable), "{e}");
    assert!(e.to_string().contains("party `platform`"), "{e}");
    cluster.party("platform").expect("platform").start().await.expect("restart");
    assert_eq!(x.check_assets(&assets(&["invoice:acme:inv1"])).await.expect("check").financed_by, [2]);
    cluster.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread")]
async fn psi_sessions_refuse_bad_input_and_keep_serving() {
    let mut cluster = Cluster::start(&consortium()).await.expect("cluster");
    let url = cluster.coordinator_url();
    let mut raw = raw_client(&url).await;
    let subjects: Vec<String> = cluster.book.iter().map(|(s, _)| s.clone()).collect();

    // Bad opens.
    for (request, code, says) in [
        (lender_open(&cluster, "acme"), Code::Unavailable, "party `acme` is not registered"),
        (open(PsiPurpose::Unspecified, LENDER, "platform"), Code::InvalidArgument, "unknown PSI purpose"),
        (open(PsiPurpose::Align, "", "platform"), Code::InvalidArgument, "`requester` must have"),
        (open(PsiPurpose::Align, LENDER, ""), Code::InvalidArgument, "`party` must have"),
        // With a consortium the coordinator relays alignments for current
        // lenders only (the parties check the signature themselves).
        (open(PsiPurpose::Align, "l", "platform"), Code::PermissionDenied, "`l` is not a member"),
        (open(PsiPurpose::Align, "bank", "platform"), Code::PermissionDenied, "is a party in the consortium"),
        (open(PsiPurpose::Assets, "bank", "platform"), Code::InvalidArgument, "leave `party` empty"),
        (open(PsiPurpose::Assets, "stranger", ""), Code::PermissionDenied, "not a consortium lender"),
    ] {
        let e = raw.psi_open(request).await.expect_err(says);
        assert_eq!(e.code(), code, "{says}: {e:?}");
        assert!(e.message().contains(says), "{says}: {e:?}");
    }
    // A data party holds no registry: listed as a lender by mistake, it
    // refuses the check and the coordinator says which party did.
    {
        let mut options = consortium();
        options.lenders.push("logistics".into());
        let other = Cluster::start(&options).await.expect("cluster");
        let mut r = other.psi_requester("lender-x").await.expect("requester");
        let e = r.check_assets(&assets(&["po:a:1"])).await.unwrap_err();
        assert_eq!(e.code(), Some(Code::FailedPrecondition), "{e}");
        assert!(e.to_string().contains("party `logistics`: party `logistics` keeps no asset registry"), "{e}");
        // Each failed open closes the sessions the bank and the platform had
        // opened: more failures than a party's 32 places never exhaust them.
        for i in 0..40 {
            let e = r.check_assets(&assets(&["po:a:1"])).await.unwrap_err();
            assert_eq!(e.code(), Some(Code::FailedPrecondition), "check {i}: {e}");
        }
        let mut l = other.psi_requester(LENDER).await.expect("requester");
        l.align("platform", &["seller-0001".to_string()]).await.expect("the platform still has room");
        other.stop().await.expect("stop");
    }

    // One session, then every malformed query against it.
    let lender_key = cluster.identity(LENDER).expect("key");
    let opened = lender_open(&cluster, "platform");
    let stream = raw.psi_open(opened.clone()).await.expect("open").into_inner();
    let (header, set) = collect_psi_open(stream, 1 << 22).await.expect("session");
    assert_eq!((header.set_len, header.per_item), (4, 1));
    let query = |batch: u32, points: Vec<u8>| signed_query(&lender_key, &opened, &header.session_id, batch, points);
    let mut session = RequesterSession::new(&mut OsRng);
    session.load_set(&points_from_bytes(&set, "set", 1 << 22).expect("points")).expect("set");
    let good = session.blind(&subjects).expect("blind");
    for (points, code, says) in [
        (vec![7u8; 33], Code::InvalidArgument, "multiple of 32"),
        (vec![0u8; 32 * (MAX_BATCH + 1)], Code::InvalidArgument, "limit is 32768"),
        (points_to_bytes(&[good[0], [0xffu8; 32]]), Code::InvalidArgument, "point 1 of query batch"),
        (points_to_bytes(&[[0u8; 32]]), Code::InvalidArgument, "point 0 of query batch"),
    ] {
        let e = raw.psi_query(query(0, points)).await.expect_err(says);
        assert_eq!(e.code(), code, "{says}: {e:?}");
        assert!(e.message().contains(says), "{says}: {e:?}");
    }
    let e = raw
        .psi_query(PsiQueryRequest { session_id: "0".repeat(32), points: points_to_bytes(&good), ..Default::default() })
        .await
        .expect_err("unknown session");
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    // Nothing was spoiled: the session answers the real batch correctly.
    let answers =
        collect(raw.psi_query(query(0, points_to_bytes(&good))).await.expect("query").into_inner(), "a", 1 << 20)
            .await
            .expect("answers");
    let answers = points_from_bytes(&answers, "answers", good.len()).expect("points");
    assert_eq!(session.count(good.len(), 1, &answers).expect("count"), vec![1; good.len()]);

    // A party that restarts loses its key: the relayed session can no
    // longer be completed and says so, then is gone.
    cluster.party("platform").expect("platform").restart_in_place().await.expect("restart");
    let e = raw.psi_query(query(1, points_to_bytes(&good))).await.expect_err("lost key");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("holds no PSI session"), "{e:?}");
    let e = raw.psi_query(query(1, points_to_bytes(&good))).await.expect_err("session dropped");
    assert_eq!(e.code(), Code::NotFound, "{e:?}");

    // Sessions expire with the shortest responder lifetime.
    {
        let platform = cluster.party("platform").expect("platform");
        platform.stop().await.expect("stop");
        platform.config.psi_session_ttl_s = 1;
        platform.start().await.expect("restart");
    }
    let stream = raw.psi_open(lender_open(&cluster, "platform")).await.expect("open").into_inner();
    let (header, _) = collect_psi_open(stream, 1 << 22).await.expect("session");
    assert!(header.expires_in_ms <= 1000, "{}", header.expires_in_ms);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let e = raw
        .psi_query(PsiQueryRequest {
            session_id: header.session_id.clone(),
            points: points_to_bytes(&good),
            ..Default::default()
        })
        .await
        .expect_err("expired");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("has expired"), "{e:?}");

    // Sessions end when the requester is done with them: many alignments in
    // a row never exhaust a party's 32 places.
    let mut requester = cluster.psi_requester(LENDER).await.expect("requester");
    for i in 0..40 {
        let a = requester.align("bank", &subjects[..1]).await.unwrap_or_else(|e| panic!("alignment {i}: {e}"));
        assert_eq!(a.held, [true]);
    }
    // Sessions left open do: the 33rd is refused until one is closed.
    let mut open_ids = Vec::new();
    for _ in 0..32 {
        let stream = raw.psi_open(lender_open(&cluster, "bank")).await.expect("open").into_inner();
        open_ids.push(collect_psi_open(stream, 1 << 22).await.expect("session").0.session_id);
    }
    let e = raw.psi_open(lender_open(&cluster, "bank")).await.expect_err("full");
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(e.message().contains("party `bank`") && e.message().contains("32 PSI sessions"), "{e:?}");
    raw.psi_close(PsiCloseRequest { session_id: open_ids[0].clone() }).await.expect("close");
    let e = raw
        .psi_query(PsiQueryRequest {
            session_id: open_ids[0].clone(),
            points: points_to_bytes(&good),
            ..Default::default()
        })
        .await
        .expect_err("closed");
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    raw.psi_open(lender_open(&cluster, "bank")).await.expect("a place is free again");
    // Closing twice, or an unknown session, is not an error.
    raw.psi_close(PsiCloseRequest { session_id: open_ids[0].clone() }).await.expect("close again");

    // The services keep serving: a fresh alignment is exact.
    let mut list = subjects.clone();
    list.push("stranger".into());
    let a = requester.align("logistics", &list).await.expect("align");
    assert_eq!(a.held, [true, true, true, true, false]);
    cluster.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_party_slower_than_the_open_deadline_is_named() {
    let _quiet = CPU_HEAVY.lock().await;
    let options =
        ClusterOptions { sellers: 2, psi_open_deadline: Duration::from_millis(300), ..ClusterOptions::default() };
    let mut cluster = Cluster::start(&options).await.expect("cluster");
    // Enough subjects that encoding them takes far longer than 300 ms.
    let many: Vec<(String, Value)> = (0..60_000).map(|i| (format!("s-{i}"), serde_json::json!({}))).collect();
    cluster.party("bank").expect("bank").store.put_all(&many).expect("subjects");
    let mut requester = cluster.psi_requester(LENDER).await.expect("requester");
    let e = requester.align("bank", &["s-1".to_string()]).await.unwrap_err();
    assert_eq!(e.code(), Some(Code::DeadlineExceeded), "{e}");
    assert!(e.to_string().contains("party `bank` did not answer within 300 ms"), "{e}");
    // Once the bank's abandoned work has ended (it keeps its place until
    // then), a party with a small set answers in time.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let a = requester.align("platform", &["seller-0001".to_string()]).await.expect("align");
    assert_eq!(a.held, [true]);
    cluster.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread")]
async fn alignment_is_for_lenders_who_sign_and_within_a_budget() {
    let options = ClusterOptions { sellers: 4, lenders: vec!["lender-x".into()], ..ClusterOptions::default() };
    let mut cluster = Cluster::start(&options).await.expect("cluster");
    {
        let bank = cluster.party("bank").expect("bank");
        bank.stop().await.expect("stop");
        bank.config.psi_daily_budget = 10;
        bank.start().await.expect("restart");
    }
    let mut raw = raw_client(&cluster.coordinator_url()).await;
    let lender_key = cluster.identity(LENDER).expect("key");

    // The coordinator relays these (the requester is a current lender);
    // the bank refuses them itself: unsigned, signed with a party's key
    // under the lender's name, replayed, stale.
    let refused = |e: Status, code: Code, says: &str| {
        assert_eq!(e.code(), code, "{says}: {e:?}");
        assert!(e.message().contains("party `bank`") && e.message().contains(says), "{says}: {e:?}");
    };
    let e = raw.psi_open(open(PsiPurpose::Align, LENDER, "bank")).await.expect_err("unsigned");
    refused(e, Code::Unauthenticated, "the requester did not sign it");
    let platform_key = cluster.identity("platform").expect("key");
    let forged = signed_open(&platform_key, PsiPurpose::Align, LENDER, "bank", 0);
    let e = raw.psi_open(forged).await.expect_err("a party's key");
    refused(e, Code::Unauthenticated, "does not verify");
    let once = lender_open(&cluster, "bank");
    let stream = raw.psi_open(once.clone()).await.expect("a signed open").into_inner();
    let (header, _) = collect_psi_open(stream, 1 << 22).await.expect("session");
    raw.psi_close(PsiCloseRequest { session_id: header.session_id }).await.expect("close");
    let e = raw.psi_open(once).await.expect_err("replayed");
    refused(e, Code::PermissionDenied, "its nonce was used before");
    let stale = signed_open(&lender_key, PsiPurpose::Align, LENDER, "bank", 301_000);
    let e = raw.psi_open(stale).await.expect_err("stale");
    refused(e, Code::PermissionDenied, "outside the 300 s this party accepts");
    // An open signed for the platform is not one for the bank.
    let mut elsewhere = lender_open(&cluster, "platform");
    elsewhere.party = "bank".into();
    let e = raw.psi_open(elsewhere).await.expect_err("signed for another party");
    refused(e, Code::Unauthenticated, "does not verify");
    // A batch the coordinator makes up for a lender's session: its own
    // points, unsigned, or signed by anyone but the lender, are refused by
    // the bank, answered and counted nothing; the lender's own batch 0 is
    // answered after them.
    let opened = lender_open(&cluster, "bank");
    let stream = raw.psi_open(opened.clone()).await.expect("a signed open").into_inner();
    let (header, set) = collect_psi_open(stream, 1 << 22).await.expect("session");
    let mut session = RequesterSession::new(&mut OsRng);
    session.load_set(&points_from_bytes(&set, "set", 1 << 22).expect("points")).expect("set");
    let probe = points_to_bytes(&session.blind(&["seller-0001".to_string()]).expect("blind"));
    let forged = PsiQueryRequest { session_id: header.session_id.clone(), points: probe.clone(), ..Default::default() };
    let e = raw.psi_query(forged).await.expect_err("an unsigned batch");
    refused(e, Code::Unauthenticated, "query batch 0: the requester did not sign it");
    let e = raw
        .psi_query(signed_query(&platform_key, &opened, &header.session_id, 0, probe.clone()))
        .await
        .expect_err("a batch signed by a party");
    refused(e, Code::Unauthenticated, "does not verify");
    let answered = raw
        .psi_query(signed_query(&lender_key, &opened, &header.session_id, 0, probe.clone()))
        .await
        .expect("the lender's own batch")
        .into_inner();
    let answers = collect(answered, "answers", 1 << 20).await.expect("answers");
    let answers = points_from_bytes(&answers, "answers", 1).expect("points");
    assert_eq!(session.count(1, 1, &answers).expect("count"), [1]);
    // The coordinator cannot replay it.
    let e = raw
        .psi_query(signed_query(&lender_key, &opened, &header.session_id, 0, probe))
        .await
        .expect_err("a replayed batch");
    refused(e, Code::PermissionDenied, "not the session's next");
    raw.psi_close(PsiCloseRequest { session_id: header.session_id }).await.expect("close");

    // A budget of 10 ids a day (1 spent above): one alignment of 8
    // subjects, not two.
    let first: Vec<String> = (0..8).map(|i| format!("seller-{i:04}")).collect();
    let second: Vec<String> = (0..8).map(|i| format!("other-{i}")).collect();
    let mut lender = cluster.psi_requester(LENDER).await.expect("requester");
    let a = lender.align("bank", &first).await.expect("8 of 10 ids");
    assert_eq!(a.held.iter().filter(|&&h| h).count(), 4, "seller-0001 to seller-0004");
    let e = lender.align("bank", &second).await.expect_err("8 more would pass the budget");
    assert_eq!(e.code(), Some(Code::PermissionDenied), "{e}");
    assert!(e.to_string().contains("its PSI budget is 10 ids per requester per UTC day"), "{e}");
    assert!(e.to_string().contains("9 are used today"), "{e}");
    // The platform's budget is its own, and so is another lender's.
    lender.align("platform", &second).await.expect("the platform answers");
    let mut x = cluster.psi_requester("lender-x").await.expect("requester");
    x.align("bank", &second).await.expect("lender-x has a budget of its own");

    // The bank's log: every session, query and refusal, in an intact chain.
    let entries = cluster.party("bank").expect("bank").store.log_entries(0).expect("log");
    assert_eq!(verify_entries(&entries), Ok(entries.len()));
    let psi: Vec<&Value> = entries.iter().filter(|e| e.kind == LogKind::Psi).map(|e| &e.body).collect();
    let with = |event: &str| psi.iter().filter(|b| b["event"] == event).collect::<Vec<_>>();
    let opens = with("open");
    assert_eq!(opens.len(), 5, "{psi:?}");
    assert!(opens.iter().all(|b| b["purpose"] == "align" && b["set_len"] == 4 && b["signed"] == true), "{psi:?}");
    assert_eq!(opens.iter().filter(|b| b["requester"] == LENDER).count(), 4, "{psi:?}");
    let reasons: Vec<&str> = with("open refused").iter().map(|b| b["reason"].as_str().expect("reason")).collect();
    assert_eq!(reasons.len(), 5, "{reasons:?}");
    for says in ["did not sign", "does not verify", "nonce was used before", "outside the 300 s"] {
        assert!(reasons.iter().any(|r| r.contains(says)), "{says}: {reasons:?}");
    }
    let queries = with("query");
    assert_eq!(queries.len(), 3, "{psi:?}");
    let mine = queries.iter().rev().find(|b| b["requester"] == LENDER).expect("the lender's query");
    assert_eq!((mine["points"].as_u64(), mine["used"].as_u64(), mine["left"].as_u64()), (Some(8), Some(9), Some(1)));
    let theirs = queries.iter().find(|b| b["requester"] == "lender-x").expect("lender-x's query");
    assert_eq!((theirs["used"].as_u64(), theirs["left"].as_u64()), (Some(8), Some(2)));
    let over = with("query refused");
    assert_eq!(over.len(), 4, "{psi:?}");
    let reasons: Vec<&str> = over.iter().map(|b| b["reason"].as_str().expect("reason")).collect();
    for (i, says) in
        ["did not sign", "does not verify", "not the session's next", "`psi_daily_budget`"].iter().enumerate()
    {
        assert!(reasons[i].contains(says), "{says}: {reasons:?}");
    }
    assert_eq!((over[3]["requester"].as_str(), over[3]["points"].as_u64()), (Some(LENDER), Some(8)));
    cluster.stop().await.expect("stop");
}
