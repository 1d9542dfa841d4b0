//! Decisions over the services: results equal to the reference,
//! idempotent request ids, and the failures of an ordinary job (unknown
//! subject, a party down, a model a party has not approved).

use super::*;

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
    let e = lender.job_and_result("job-0000000000000000").await.unwrap_err();
    assert_eq!(e.code(), Some(Code::NotFound), "{e}");
    // A done job and its result in one call (`AwaitResult`), the same
    // result `FetchResult` sends.
    let (job, result) = lender.job_and_result(&first.job_id).await.expect("job and result");
    assert_eq!((job.job_id.as_str(), job.state), (first.job_id.as_str(), jointscore_proto::v1::JobState::Done as i32));
    let result = result.expect("a done job comes with its result");
    assert_eq!(
        result.to_bytes().expect("bytes"),
        lender.fetch(&first.job_id).await.expect("fetch").to_bytes().expect("bytes")
    );
    let bundle = lender.decrypt(&result).expect("decrypt");
    assert_eq!(bundle, cluster.reference("seller-0001").expect("reference"));
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
    // Asked in one call, a failed job comes alone, with its code and reason.
    let (failed, result) = lender.job_and_result(&job).await.expect("the job");
    assert_eq!((failed.state, failed.code), (jointscore_proto::v1::JobState::Failed as i32, Code::NotFound as i32));
    assert!(failed.reason.contains("`newcomer`") && result.is_none(), "{}", failed.reason);
    // Unknown to everyone: every party is named.
    let (code, reason) = failure(&mut lender, "nobody", "nc-2").await;
    assert_eq!(code, Code::NotFound);
    for name in ["platform", "logistics", "bank"] {
        assert!(reason.contains(name), "{reason}");
    }
    // A record that does not fit the model: the lender learns only that it
    // cannot be used; the party's own log names the feature, never the
    // value.
    for name in ["platform", "logistics", "bank"] {
        let party = cluster.party(name).expect("party");
        party.store.put_all(&[("incomplete".into(), serde_json::json!({}))]).expect("store");
    }
    let (code, reason) = failure(&mut lender, "incomplete", "nc-5").await;
    assert_eq!(code, Code::FailedPrecondition, "{reason}");
    assert!(reason.contains("cannot be used") && !reason.contains("gmv_12m_k"), "{reason}");
    let log = cluster.party("platform").expect("party").store.log_entries(0).expect("log");
    let refusal = log.iter().rev().find(|e| e.kind == jointscore_party::LogKind::Refusal).expect("refusal logged");
    assert!(refusal.body["reason"].as_str().unwrap_or_default().contains("gmv_12m_k"), "{:?}", refusal.body);
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
