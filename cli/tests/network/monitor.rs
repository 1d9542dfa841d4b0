//! Monitoring rounds over the services: the lender's portfolio, rounds
//! through the coordinator's job path, alerts equal to the plaintext
//! reference, a party that is down named per loan and asked again, a round
//! cut short resumed without losing a loan, and a spec a party has not
//! approved refused.

use jointscore_lender::{LoanResult, MonitorBook, RoundReport, Schedule, run_round};
use jointscore_monitor::{Day, MonitorPlan, SELLER_WATCH, Spec};
use jointscore_testkit::history::expected_alerts;

use super::*;

const SELLERS: usize = 8;

fn day() -> Day {
    Day::parse("2026-11-30").expect("day")
}

fn watch() -> MonitorPlan {
    MonitorPlan::new(&Spec::from_toml(SELLER_WATCH).expect("spec")).expect("plan")
}

async fn monitored(options: ClusterOptions) -> (Cluster, Lender, MonitorBook, jointscore_lender::Portfolio) {
    let options = ClusterOptions {
        sellers: SELLERS,
        approved_monitors: vec![watch().id().to_string()],
        history_until: Some(day()),
        ..options
    };
    let cluster = Cluster::start(&options).await.expect("cluster starts");
    let mut lender =
        cluster.lender_for(keys(), SELLER_WATCH.to_string(), PlanKind::Monitor).await.expect("lender connects");
    lender.register(LENDER).await.expect("keys register");
    let book = MonitorBook::open(&cluster.dir().join("monitor.sqlite")).expect("book");
    let subjects: Vec<String> = cluster.book.iter().map(|(s, _)| s.clone()).collect();
    let portfolio = book.add("watch", SELLER_WATCH, &subjects, Schedule::Daily).expect("portfolio");
    (cluster, lender, book, portfolio)
}

/// Every evaluated loan's alerts equal the reference's; returns how many
/// were evaluated.
fn check(cluster: &Cluster, report: &RoundReport) -> usize {
    let expected = expected_alerts(&watch(), &cluster.book, ClusterOptions::default().seed, day());
    let mut evaluated = 0;
    for (loan, want) in report.loans.iter().zip(&expected) {
        if let LoanResult::Evaluated { raised, .. } = &loan.result {
            assert_eq!(raised, want, "{}", loan.subject);
            evaluated += 1;
        }
    }
    evaluated
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_round_raises_the_reference_alerts_and_a_party_that_is_down_is_named_and_asked_again() {
    let (mut cluster, mut lender, book, portfolio) = monitored(small()).await;
    let report = run_round(&mut lender, &book, &portfolio, day(), 4, |_| {}).await.expect("round");
    assert_eq!(check(&cluster, &report), SELLERS, "{report:?}");
    // The sample's troubled sellers: each alert kind is raised at least once.
    let raised: Vec<&String> = report
        .loans
        .iter()
        .filter_map(|l| if let LoanResult::Evaluated { raised, .. } = &l.result { Some(raised) } else { None })
        .flatten()
        .collect();
    for alert in ["gmv_collapse", "flows_disagree", "collections_exceed_sales", "collections_interrupted"] {
        assert!(raised.iter().any(|r| *r == alert), "{alert} in {raised:?}");
    }
    assert_eq!(book.alerts(Some("watch"), false).expect("alerts").len(), raised.len());
    assert_eq!(report.unreported, 0);

    // Every loan's alerts are in the ledger, signed by the lender, under
    // the subject's commitment; the ledger verifies as any member's would.
    let (entries, head) =
        jointscore_lender::fetch_ledger(cluster.target(LENDER).expect("target")).await.expect("ledger");
    let consortium = cluster.consortium.clone().expect("signed cluster");
    jointscore_audit::verify_with_head(&entries, &head, &consortium).expect("the ledger verifies");
    let reported: Vec<_> = entries.iter().filter(|e| e.record.kind == jointscore_audit::EntryKind::Alert).collect();
    let alerted = report.alerted();
    assert_eq!(reported.len(), alerted, "{reported:?}");
    assert!(reported.iter().all(|e| e.record.attestations.len() == 1 && e.record.subject.is_some()));
    // Refused: alerts the spec does not have, and a job that is not a
    // monitoring job's.
    let job = reported[0].record.job_id.clone().expect("job");
    let err = lender.report_alerts(&job, &["made_up".into()]).await.expect_err("unknown alert");
    assert_eq!(err.code(), Some(Code::InvalidArgument), "{err}");
    let mut decider = cluster.lender(keys(), PlanKind::Pushdown).await.expect("decision lender");
    let decided = decider.decide("seller-0005", "decision-for-alerts").await.expect("decision");
    let err = lender.report_alerts(&decided.job_id, &["gmv_collapse".into()]).await.expect_err("a decision");
    assert_eq!(err.code(), Some(Code::FailedPrecondition), "{err}");

    // The next day, the logistics firm is down: every loan is named failed,
    // with the party at fault, and nothing is recorded as evaluated.
    let next = Day::from_number(day().number() + 1);
    cluster.party("logistics").expect("logistics").stop().await.expect("stop");
    let report = run_round(&mut lender, &book, &portfolio, next, 4, |_| {}).await.expect("round");
    assert_eq!(report.failed(), SELLERS);
    for loan in &report.loans {
        let LoanResult::Failed(reason) = &loan.result else { panic!("{loan:?}") };
        assert!(reason.contains("`logistics`"), "{reason}");
    }
    // The round stays due; run again once the party is back, it asks every
    // loan again (new request ids) and all are evaluated.
    assert_eq!(book.due(&portfolio, next).expect("due"), vec![next]);
    cluster.party("logistics").expect("logistics").start().await.expect("restart");
    let report = run_round(&mut lender, &book, &portfolio, next, 4, |_| {}).await.expect("again");
    assert_eq!((report.asked, report.failed()), (SELLERS, 0), "{report:?}");
    assert!(book.due(&portfolio, next).expect("due").is_empty());
    cluster.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_round_cut_short_is_resumed_without_losing_or_repeating_a_loan() {
    let (cluster, mut lender, book, portfolio) = monitored(small()).await;
    // The lender stops mid-round (a crash, a deploy): whatever it learned
    // is in the book.
    let seen = std::sync::atomic::AtomicUsize::new(0);
    let settled = |_: &jointscore_lender::LoanOutcome| {
        seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    };
    let two_settled = async {
        while seen.load(std::sync::atomic::Ordering::SeqCst) < 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::select! {
        done = run_round(&mut lender, &book, &portfolio, day(), 2, settled) => {
            panic!("the round finished before it could be cut short: {done:?}")
        }
        () = two_settled => {}
    }
    let seen = seen.load(std::sync::atomic::Ordering::SeqCst);
    let report = run_round(&mut lender, &book, &portfolio, day(), 2, |_| {}).await.expect("resumed");
    assert_eq!(check(&cluster, &report), SELLERS);
    assert!(report.asked < SELLERS && report.asked >= SELLERS - seen, "asked {} after {seen}", report.asked);
    cluster.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spec_a_party_has_not_approved_is_refused() {
    let (cluster, mut approved, book, _) = monitored(small()).await;
    let other = SELLER_WATCH.replacen("percent = 70", "percent = 60", 1);
    let subjects: Vec<String> = cluster.book.iter().map(|(s, _)| s.clone()).collect();
    let portfolio = book.add("other", &other, &subjects[..2], Schedule::Daily).expect("portfolio");
    let mut lender = cluster.lender_for(keys(), other, PlanKind::Monitor).await.expect("lender");
    let report = run_round(&mut lender, &book, &portfolio, day(), 2, |_| {}).await.expect("round");
    for loan in &report.loans {
        let LoanResult::Failed(reason) = &loan.result else { panic!("{loan:?}") };
        assert!(reason.contains("PermissionDenied") && reason.contains("has not approved"), "{reason}");
    }
    // A monitoring request must name the day: a bare subject is refused.
    let err = failure(&mut approved, "seller-0001", "no-day").await;
    assert_eq!(err.0, Code::InvalidArgument, "{}", err.1);
    cluster.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_is_read_from_two_secure_aggregation_rounds() {
    const DRIFT: &str = include_str!("../../../monitors/drift.toml");
    let spec = jointscore_stats::StatsSpec::from_toml(DRIFT).expect("drift spec");
    let options = ClusterOptions { sellers: 24, approved_stats: vec![spec.id()], ..ClusterOptions::default() };
    let mut cluster = Cluster::start(&options).await.expect("cluster");
    let mut requester =
        jointscore_lender::StatsRequester::connect(cluster.target(LENDER).expect("target")).await.expect("requester");
    let before = requester.run(DRIFT, "drift-1", WAIT).await.expect("baseline round");
    // The same books again: no drift.
    let same = requester.run(DRIFT, "drift-2", WAIT).await.expect("second round");
    let drifts = jointscore_monitor::drift::drift(&before.entries, &same.entries).expect("drift");
    assert_eq!(drifts.len(), 3, "{drifts:?}");
    assert!(drifts.iter().all(|d| d.psi.abs() < 1e-9 && d.reading == "stable"), "{drifts:?}");
    // The platform's sellers all sell ten times more: only that counter
    // shifts, significantly.
    let platform = cluster.party("platform").expect("platform");
    let index = cluster_model_index("platform");
    let rows: Vec<(String, serde_json::Value)> = cluster_book(24)
        .into_iter()
        .map(|(id, r)| {
            let mut view = party_view(&Model::cross_border_seller(), index, &r);
            if let Some(g) = view["gmv_12m_k"].as_i64() {
                view["gmv_12m_k"] = (g * 10).into();
            }
            (id, view)
        })
        .collect();
    platform.store.put_all(&rows).expect("new books");
    let after = requester.run(DRIFT, "drift-3", WAIT).await.expect("later round");
    let drifts = jointscore_monitor::drift::drift(&before.entries, &after.entries).expect("drift");
    let psi = |name: &str| drifts.iter().find(|d| d.counter == name).expect("counter").psi;
    assert!(psi("sellers_by_gmv") >= jointscore_monitor::drift::SIGNIFICANT, "{drifts:?}");
    assert!(psi("sellers_by_late_repayments").abs() < 1e-9 && psi("sellers_by_on_time").abs() < 1e-9);
    cluster.stop().await.expect("stop");
}

fn cluster_model_index(party: &str) -> usize {
    Model::cross_border_seller().parties().iter().position(|p| p == party).expect("party")
}

fn cluster_book(sellers: usize) -> Vec<(String, serde_json::Value)> {
    sample::subjects(&Model::cross_border_seller(), sellers, ClusterOptions::default().seed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_killed_mid_round_loses_no_loan() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut process, url, config) = sqlite_coordinator(dir.path());
    let connect = || connect_for_when_up(&url, keys(), SELLER_WATCH, PlanKind::Monitor);
    let mut lender = connect().await;
    lender.register(LENDER).await.expect("register");
    let model = Model::cross_border_seller();
    let seed = 99;
    let book_rows = sample::subjects(&model, SELLERS, seed);
    let setup = PartySetup {
        approved_monitors: vec![watch().id().to_string()],
        history: Some((day(), seed)),
        ..PartySetup::default()
    };
    let mut parties = start_parties(&model, &book_rows, &url, dir.path(), &setup).await.expect("parties");
    let book = MonitorBook::open(&dir.path().join("monitor.sqlite")).expect("book");
    let subjects: Vec<String> = book_rows.iter().map(|(s, _)| s.clone()).collect();
    let portfolio = book.add("watch", SELLER_WATCH, &subjects, Schedule::Daily).expect("portfolio");

    // The coordinator is killed once two loans are settled.
    let seen = std::sync::atomic::AtomicUsize::new(0);
    let first = run_round(&mut lender, &book, &portfolio, day(), 2, |_| {
        if seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 1 {
            let _ = process.kill();
        }
    })
    .await
    .expect("the round ends, naming what failed");
    let _ = process.wait();
    assert!(first.failed() > 0, "every loan settled before the kill; the test proves nothing");

    let mut process = spawn_with_config(&["coordinator", "serve"], &config);
    let mut lender = connect().await;
    // The same key set, registered again by the same lender: unchanged.
    lender.register(LENDER).await.expect("register again");
    let again = run_round(&mut lender, &book, &portfolio, day(), 2, |_| {}).await.expect("resumed");
    assert_eq!(again.asked, first.failed(), "only the loans not settled are asked again");
    assert_eq!(again.failed(), 0, "{again:?}");
    let expected = expected_alerts(&watch(), &book_rows, seed, day());
    for (loan, want) in again.loans.iter().zip(&expected) {
        let LoanResult::Evaluated { raised, .. } = &loan.result else { panic!("{loan:?}") };
        assert_eq!(raised, want, "{}", loan.subject);
    }
    process.kill().expect("kill");
    process.wait().expect("reaped");
    for p in &mut parties {
        p.stop().await.expect("stop");
    }
}
