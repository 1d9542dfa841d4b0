//! Strict mode: every contribution carries zero-knowledge proofs, bound to
//! its request, that the coordinator verifies before evaluating.

use jointscore_audit::EntryKind;
use jointscore_lender::fetch_ledger;
use tonic::Code;

use super::signed::{Forgery, start_forger};
use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_mode_decides_on_proven_contributions_and_refuses_the_rest() {
    let _heavy = CPU_HEAVY.lock().await;
    // 16 blocks a proof: the platform's 19 blocks need two.
    let options = ClusterOptions { proof_blocks: Some(16), ..small() };
    let (mut cluster, mut lender) = cluster(options).await;
    let subject = cluster.book[0].0.clone();
    let d = lender.decide(&subject, "proven-0").await.expect("decision");
    assert_eq!(d.bundle, cluster.reference(&subject).expect("reference"));
    assert!(d.phases.verify > Duration::ZERO, "verification is timed: {:?}", d.phases);

    // The bank re-signs the proven list it made for one job as its answer
    // to the next: its signature verifies, the proof names the other job.
    let server = start_forger(&mut cluster, Forgery::ProofFromPreviousJob).await;
    lender.decide(&subject, "proof-source").await.expect("the first answer is honest");
    let (code, reason) = failure(&mut lender, &subject, "proof-target").await;
    assert_eq!(code, Code::InvalidArgument, "{reason}");
    assert!(reason.contains("party `bank`") && reason.contains("does not verify for this request"), "{reason}");
    server.abort();

    // A signed but unproven list is refused too.
    let server = start_forger(&mut cluster, Forgery::Unproven).await;
    let (code, reason) = failure(&mut lender, &subject, "unproven").await;
    assert_eq!(code, Code::InvalidArgument, "{reason}");
    assert!(reason.contains("not a well-formed proven contribution"), "{reason}");
    server.abort();

    // Both refusals are in the ledger, naming the bank.
    let (entries, _) = fetch_ledger(&cluster.coordinator_url()).await.expect("ledger");
    let refusals: Vec<&str> =
        entries.iter().filter(|e| e.record.kind == EntryKind::Refusal).map(|e| e.record.detail.as_str()).collect();
    assert_eq!(refusals.len(), 2, "{refusals:?}");
    assert!(refusals.iter().all(|r| r.contains("party `bank`")), "{refusals:?}");

    // A CRS file that is not the one the consortium pins keeps the node
    // from starting; the real one lets it serve again.
    let bank = cluster.party("bank").expect("bank");
    let crs_path = bank.config.consortium.as_deref().expect("consortium").with_file_name("crs.bin");
    let real = std::fs::read(&crs_path).expect("crs");
    std::fs::write(&crs_path, &real[..real.len() - 1]).expect("truncate");
    let e = bank.start().await.expect_err("refused");
    assert!(e.to_string().contains("pins"), "{e}");
    std::fs::write(&crs_path, &real).expect("restore");
    bank.start().await.expect("restart");
    let d = lender.decide(&subject, "proven-1").await.expect("decision");
    assert_eq!(d.bundle, cluster.reference(&subject).expect("reference"));
    cluster.stop().await.expect("stop");
}
