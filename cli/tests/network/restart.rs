//! A coordinator killed with jobs in flight: after a restart every
//! accepted decision job finishes, and a statistics job reruns its round.

use super::stats_processes::{CONSORTIUM_SPEC, member_book, spawn_stalling_party, stats_requester_when_up};
use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_coordinator_finishes_every_accepted_job_after_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut process, url, config) = sqlite_coordinator(dir.path());
    let mut lender = connect_when_up(&url, keys()).await;
    lender.register(LENDER).await.expect("register");

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

    let mut process = spawn_with_config(&["coordinator", "serve"], &config);
    let mut lender = connect_when_up(&url, keys()).await;
    // Every party is up, so every job must complete, not merely end.
    for (subject, job) in &jobs {
        match lender.wait(job, WAIT).await {
            Ok(_) => assert_reference_decision(&mut lender, &model, &book, subject, job).await,
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statistics_job_in_flight_when_the_coordinator_is_killed_reruns_after_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
    let (process, url, config) = sqlite_coordinator(dir.path());
    let coordinator = Processes(vec![process]);
    let id = jointscore_stats::StatsSpec::from_toml(CONSORTIUM_SPEC).expect("spec").id();
    let party_config = |name: &str| {
        format!(
            "name = \"{name}\"\nlisten = \"127.0.0.1:0\"\ncoordinator = \"{url}\"\nstore = \"{name}.sqlite\"\napproved_stats = [\"{id}\"]\ntrust_coordinator = true\n"
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

    let _coordinator = Processes(vec![spawn_with_config(&["coordinator", "serve"], &config)]);
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
