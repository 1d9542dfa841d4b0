//! Scaled out on PostgreSQL: a front end with `evaluation = "workers"`
//! and worker processes claiming its jobs under leases. Runs against the
//! test PostgreSQL server (`JOINTSCORE_TEST_POSTGRES`), on a schema of its
//! own; skipped, saying so, where there is none (failed under CI=true).

use jointscore_coordinator::TestDatabase;

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_loses_its_jobs_to_another_that_finishes_each_once() {
    let Some(db) = TestDatabase::create("killed_worker") else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let (front, url, config) = coordinator_process(dir.path(), db.url(), "evaluation = \"workers\"\nlease_ms = 1500\n");
    let front = Processes(vec![front]);
    let mut lender = connect_when_up(&url, keys()).await;
    lender.register(LENDER).await.expect("register");
    let model = Model::cross_border_seller();
    let book = sample::subjects(&model, 3, 7);
    let mut parties = start_parties(&model, &book, &url, dir.path(), &PartySetup::default()).await.expect("parties");

    let mut first = spawn_with_config(&["coordinator", "worker", "--name", "first"], &config);
    let mut jobs = Vec::new();
    for (i, (subject, _)) in book.iter().enumerate() {
        jobs.push((subject.clone(), lender.submit(subject, &format!("scale-{i}")).await.expect("accepted").job_id));
    }
    // Kill the first worker once it is working on a job (claimed it and
    // asked the parties, or evaluating), before every job is done.
    let mut claimed = false;
    for _ in 0..600 {
        use jointscore_proto::v1::JobState;
        let mut states = Vec::new();
        for (_, job) in &jobs {
            states.push(JobState::try_from(lender.job(job).await.expect("job").state).expect("state"));
        }
        if states.iter().any(|s| matches!(s, JobState::Collecting | JobState::Evaluating)) {
            claimed = !states.iter().all(|s| matches!(s, JobState::Done | JobState::Failed));
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.kill().expect("kill");
    first.wait().expect("reaped");
    assert!(claimed, "the first worker claimed no job, or finished them all, before the kill; the test proves nothing");

    // A second worker takes the jobs over once the first one's leases run
    // out, and every job completes with the right result.
    let _second = Processes(vec![spawn_with_config(&["coordinator", "worker", "--name", "second"], &config)]);
    for (subject, job) in &jobs {
        lender.wait(job, WAIT).await.unwrap_or_else(|e| panic!("{subject}: {e}"));
        assert_reference_decision(&mut lender, &model, &book, subject, job).await;
    }
    // One job per request, and the killed worker's job was claimed again.
    assert_eq!(db.scalar("SELECT COUNT(*) FROM jobs").expect("count"), 3);
    let attempts = db.scalar("SELECT MAX(attempts)::BIGINT FROM jobs").expect("attempts");
    assert!(attempts >= 2, "no job was taken over from the killed worker (attempts {attempts})");
    let store = jointscore_coordinator::PgStore::open(db.url()).expect("store");
    use jointscore_coordinator::JobStore;
    assert!(store.unfinished().expect("read").is_empty());
    for (i, (_, job)) in jobs.iter().enumerate() {
        let held = store.job_by_request(&format!("scale-{i}")).expect("read").expect("job");
        assert_eq!(&held.job_id, job);
    }
    drop(front);
    for p in &mut parties {
        p.stop().await.expect("stop");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_of_another_tfhe_build_refuses_the_job_naming_why_and_leaves_it() {
    let Some(db) = TestDatabase::create("foreign_worker") else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let (front, url, config) = coordinator_process(dir.path(), db.url(), "evaluation = \"workers\"\n");
    let _front = Processes(vec![front]);
    let mut lender = connect_when_up(&url, keys()).await;
    lender.register(LENDER).await.expect("register");
    let job = lender.submit("seller-0001", "foreign-0").await.expect("accepted").job_id;
    // As if a front end of another tfhe release or parameter set had
    // accepted it.
    db.sql("UPDATE jobs SET evaluation = 'tfhe 9.9.9; OTHER_PARAMS 0123'").expect("foreign");
    let mut worker = std::process::Command::new(env!("CARGO_BIN_EXE_jointscore"))
        .args(["coordinator", "worker", "--name", "w", "--config"])
        .arg(&config)
        .env("RUST_LOG", "warn")
        .env("NO_COLOR", "1")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("worker");
    let stderr = worker.stderr.take().expect("stderr");
    let (lines, said) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr).lines().map_while(std::result::Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let refusal = tokio::task::block_in_place(|| {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match said.recv_timeout(left) {
                Ok(line) if line.contains("refusing job") => return Some(line),
                Ok(_) => {}
                Err(_) => break,
            }
        }
        None
    });
    let _ = worker.kill();
    let _ = worker.wait();
    let refusal = refusal.expect("the worker said why it refused the job");
    assert!(
        refusal.contains(&job) && refusal.contains("tfhe 9.9.9; OTHER_PARAMS 0123") && refusal.contains("tfhe 1.8.2"),
        "{refusal}"
    );
    use jointscore_proto::v1::JobState;
    let state = JobState::try_from(lender.job(&job).await.expect("job").state).expect("state");
    assert_eq!(state, JobState::Accepted, "left for a worker that can evaluate it");
}

/// The decision path, statistics and monitoring on PostgreSQL, evaluated
/// in the front end and then by a worker process: the same checks the
/// SQLite suite makes, on the other store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_statistics_monitoring_and_the_ledger_run_unchanged_on_postgres() {
    for workers in [0, 1] {
        let Some(db) = TestDatabase::create(&format!("unchanged_{workers}")) else { return };
        let watch = jointscore_monitor::MonitorPlan::new(
            &jointscore_monitor::Spec::from_toml(jointscore_monitor::SELLER_WATCH).expect("spec"),
        )
        .expect("plan");
        let day = jointscore_monitor::Day::parse("2026-11-30").expect("day");
        let options = ClusterOptions {
            sellers: 4,
            store: Some(db.url().to_string()),
            evaluation: if workers > 0 {
                jointscore_coordinator::Evaluation::Workers
            } else {
                jointscore_coordinator::Evaluation::Local
            },
            approved_stats: vec![stats_spec().id()],
            approved_monitors: vec![watch.id().to_string()],
            history_until: Some(day),
            ..ClusterOptions::default()
        };
        let cluster = Cluster::start(&options).await.expect("cluster on PostgreSQL");
        let _workers = Processes(
            (0..workers)
                .map(|k| {
                    spawn_with_config(&["coordinator", "worker", "--name", &format!("w{k}")], cluster.config_file())
                })
                .collect(),
        );
        let mut lender = cluster.lender(keys(), PlanKind::Pushdown).await.expect("lender");
        lender.register(LENDER).await.expect("register");
        for (i, (subject, _)) in cluster.book.iter().enumerate() {
            let d = lender.decide(subject, &format!("pg-{workers}-{i}")).await.expect("decision");
            assert_eq!(d.bundle, cluster.reference(subject).expect("reference"), "{subject} ({workers} workers)");
        }
        // The same request id again: the same job.
        let again = lender.submit(&cluster.book[0].0, &format!("pg-{workers}-0")).await.expect("retry");
        assert!(again.existing, "a retried request names its job");

        let mut monitor = cluster
            .lender_for(keys(), jointscore_monitor::SELLER_WATCH.to_string(), PlanKind::Monitor)
            .await
            .expect("monitoring lender");
        let book = jointscore_lender::MonitorBook::open(&cluster.dir().join("monitor.sqlite")).expect("book");
        let subjects: Vec<String> = cluster.book.iter().map(|(s, _)| s.clone()).collect();
        let portfolio = book
            .add("pg", jointscore_monitor::SELLER_WATCH, &subjects, jointscore_lender::Schedule::Daily)
            .expect("add");
        let report =
            jointscore_lender::run_round(&mut monitor, &book, &portfolio, day, 4, |_| {}).await.expect("round");
        let expected = jointscore_testkit::history::expected_alerts(&watch, &cluster.book, options.seed, day);
        for (loan, want) in report.loans.iter().zip(&expected) {
            let jointscore_lender::LoanResult::Evaluated { raised, .. } = &loan.result else { panic!("{loan:?}") };
            assert_eq!(raised, want, "{}", loan.subject);
        }

        let mut requester =
            jointscore_lender::StatsRequester::connect(cluster.target(LENDER).expect("target")).await.expect("stats");
        let result = requester.run(STATS_SPEC, &format!("pg-stats-{workers}"), WAIT).await.expect("round");
        assert_eq!(result.included.len(), 3, "{result:?}");

        let (entries, head) =
            jointscore_lender::fetch_ledger(cluster.target(LENDER).expect("target")).await.expect("ledger");
        let consortium = cluster.consortium.clone().expect("signed");
        jointscore_audit::verify_with_head(&entries, &head, &consortium).expect("one chain, verified");
        let results = entries.iter().filter(|e| e.record.kind == jointscore_audit::EntryKind::Result).count();
        assert_eq!(results, 2 * subjects.len(), "one result entry per decision and per loan ({workers} workers)");
        cluster.stop().await.expect("stop");
    }
}

/// PostgreSQL restarted while a worker evaluates: every accepted decision
/// still ends once, with the right result and one result entry in one
/// verified ledger chain. Runs on a private server (initdb, pg_ctl) so the
/// restart disturbs nobody else; skipped, saying so, without the server's
/// binaries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_restart_while_a_worker_evaluates_loses_no_decision_and_duplicates_no_entry() {
    let Some(server) = jointscore_coordinator::PrivateServer::start() else { return };
    let Some(db) = TestDatabase::create_at(&server.url(), "restart_workers") else { return };
    let options = ClusterOptions {
        sellers: 6,
        store: Some(db.url().to_string()),
        evaluation: jointscore_coordinator::Evaluation::Workers,
        ..ClusterOptions::default()
    };
    let cluster = Cluster::start(&options).await.expect("cluster on PostgreSQL");
    let _worker = Processes(vec![spawn_with_config(&["coordinator", "worker", "--name", "w"], cluster.config_file())]);
    let mut lender = cluster.lender(keys(), PlanKind::Pushdown).await.expect("lender");
    lender.register(LENDER).await.expect("register");
    let mut jobs = Vec::new();
    for (i, (subject, _)) in cluster.book.iter().enumerate() {
        jobs.push((
            subject.clone(),
            lender.submit(subject, &format!("pg-restart-{i}")).await.expect("accepted").job_id,
        ));
    }
    // Restart once the worker is evaluating: the first job has been
    // claimed (its state moved on).
    let mut claimed = false;
    for _ in 0..200 {
        use jointscore_proto::v1::JobState;
        let state = JobState::try_from(lender.job(&jobs[0].1).await.expect("job").state).expect("state");
        if state != JobState::Accepted {
            claimed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(claimed, "the worker claimed nothing");
    let restarted = tokio::task::spawn_blocking(move || {
        let outcome = server.ctl("restart");
        (server, outcome)
    });
    let (server, outcome) = restarted.await.expect("restart");
    outcome.expect("the server restarted");

    for (subject, job) in &jobs {
        // The front end may answer UNAVAILABLE while the server comes back.
        let mut done = None;
        for _ in 0..100 {
            match lender.wait(job, WAIT).await {
                Ok(job) => {
                    done = Some(job);
                    break;
                }
                Err(LenderError::Refused { code: Code::Unavailable | Code::Internal, .. }) => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("{subject}: {e}"),
            }
        }
        done.expect("the job ended");
        let result = lender.fetch(job).await.expect("result");
        assert_eq!(
            lender.decrypt(&result).expect("decrypt"),
            cluster.reference(subject).expect("reference"),
            "{subject}"
        );
    }
    let (entries, head) =
        jointscore_lender::fetch_ledger(cluster.target(LENDER).expect("target")).await.expect("ledger");
    jointscore_audit::verify_with_head(&entries, &head, &cluster.consortium.clone().expect("signed"))
        .expect("one chain");
    let results = entries.iter().filter(|e| e.record.kind == jointscore_audit::EntryKind::Result).count();
    assert_eq!(results, jobs.len(), "one result entry per decision");
    cluster.stop().await.expect("stop");
    drop(db);
    drop(server);
}
