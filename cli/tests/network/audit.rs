//! The coordinator's audit ledger over the services: every member can
//! verify it from the consortium file, and tampering with the stored log is
//! found and located.

use jointscore_audit::{
    AuditError, EntryKind, Filter, PartyContribution, PartyLogCheck, PartyRecord, Status, filter, reconcile,
    verify_chain, verify_receipts, verify_with_head,
};
use jointscore_lender::fetch_ledger;

use super::*;

/// The coordinator's store as someone with write access to its file sees
/// it: the database's own guards on the ledger (append-only, each entry
/// after the previous one's hash) are triggers that such a person drops
/// first, so what is left to catch the tampering is the signed chain.
fn ledger_db(cluster: &Cluster) -> rusqlite::Connection {
    let db = rusqlite::Connection::open(cluster.dir().join("coordinator.sqlite")).expect("the coordinator's store");
    db.execute_batch(
        "DROP TRIGGER IF EXISTS ledger_chain; DROP TRIGGER IF EXISTS ledger_no_update;
         DROP TRIGGER IF EXISTS ledger_no_delete;",
    )
    .expect("drop the guards");
    db
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ledger_records_who_used_whose_data_and_tampering_is_located() {
    let (cluster, mut lender) = cluster(small()).await;
    let consortium = cluster.consortium.clone().expect("signed cluster");
    let mut jobs = Vec::new();
    for (i, subject) in ["seller-0001", "seller-0002"].iter().enumerate() {
        jobs.push(lender.decide(subject, &format!("audit-{i}")).await.expect("decision").job_id);
    }
    let e = lender.decide("nobody", "audit-refused").await.unwrap_err();
    assert_eq!(e.code(), Some(Code::NotFound), "{e}");

    let (entries, head) = fetch_ledger(&cluster.coordinator_url()).await.expect("ledger");
    verify_with_head(&entries, &head, &consortium).expect("the log verifies");
    let kinds: Vec<EntryKind> = entries.iter().map(|e| e.record.kind).collect();
    assert_eq!(kinds[0], EntryKind::KeyRegistration);
    let count = |k: EntryKind| kinds.iter().filter(|&&x| x == k).count();
    assert_eq!(count(EntryKind::DecisionRequest), 3);
    assert_eq!(count(EntryKind::Contribution), 6, "one per party per decision");
    assert_eq!(count(EntryKind::Result), 2);
    assert_eq!(count(EntryKind::Refusal), 1);
    // Who used the bank's data, and for what: each contribution carries the
    // bank's own signature over its envelope.
    let banks = filter(&entries, &Filter { party: Some("bank".into()), ..Filter::default() });
    let contributions: Vec<_> = banks.iter().filter(|e| e.record.kind == EntryKind::Contribution).collect();
    assert_eq!(contributions.len(), 2);
    assert!(contributions.iter().all(|e| e.record.attestations.len() == 1 && e.record.attestations[0].node == "bank"));
    assert!(contributions.iter().all(|e| e.record.lender.as_deref() == Some(LENDER)));
    // Every member reads the ledger, so it names no subject: only the
    // lender's commitments, which the lender opens with each request's salt.
    let text: String = entries.iter().map(|e| e.to_json()).collect();
    assert!(!text.contains("seller-000"), "a subject in the clear in the ledger");
    let job = lender.job(&jobs[1]).await.expect("job");
    let opened =
        jointscore_identity::LenderRequest { subject: "seller-0002".into(), salt: job.salt, ..Default::default() };
    let about = filter(&entries, &Filter { subject: Some(opened.subject_commitment()), ..Filter::default() });
    assert_eq!(about.len(), 5, "request, three contributions, result");
    assert!(jointscore_identity::opens_subject(
        about[0].record.subject.as_deref().unwrap_or_default(),
        "seller-0002",
        &opened.salt
    ));
    let receipts: Vec<_> = entries.iter().filter(|e| e.concerns("bank")).cloned().collect();

    // Edited in the store: located at its entry.
    let db = ledger_db(&cluster);
    let target = contributions[0].seq;
    let original: String =
        db.query_row("SELECT entry FROM ledger WHERE seq = ?1", [target as i64], |r| r.get(0)).expect("row");
    let edited = original.replace("\"bank\"", "\"bank2\"");
    assert_ne!(edited, original);
    db.execute("UPDATE ledger SET entry = ?1 WHERE seq = ?2", rusqlite::params![edited, target as i64]).expect("edit");
    let (tampered, _) = fetch_ledger(&cluster.coordinator_url()).await.expect("ledger");
    assert_eq!(verify_chain(&tampered, &consortium), Err(AuditError::Edited { seq: target }));
    db.execute("UPDATE ledger SET entry = ?1 WHERE seq = ?2", rusqlite::params![original, target as i64])
        .expect("undo");

    // Deleted: located where the sequence breaks; the bank's receipt for it
    // is missing.
    db.execute("DELETE FROM ledger WHERE seq = ?1", [target as i64]).expect("delete");
    let (tampered, _) = fetch_ledger(&cluster.coordinator_url()).await.expect("ledger");
    assert_eq!(verify_chain(&tampered, &consortium), Err(AuditError::OutOfOrder { index: target, seq: target + 1 }));
    assert_eq!(verify_receipts(&tampered, &receipts), Err(AuditError::MissingReceipt { seq: target }));
    db.execute("INSERT INTO ledger (seq, entry) VALUES (?1, ?2)", rusqlite::params![target as i64, original])
        .expect("undo");

    // Cut short: the rest verifies as a chain, but not against the head the
    // coordinator signs over the whole log.
    let last = entries.len() as u64 - 1;
    let tail: String =
        db.query_row("SELECT entry FROM ledger WHERE seq = ?1", [last as i64], |r| r.get(0)).expect("row");
    db.execute("DELETE FROM ledger WHERE seq = ?1", [last as i64]).expect("truncate");
    let (tampered, head) = fetch_ledger(&cluster.coordinator_url()).await.expect("ledger");
    verify_chain(&tampered, &consortium).expect("a shorter chain is still a chain");
    assert_eq!(
        verify_with_head(&tampered, &head, &consortium),
        Err(AuditError::Truncated { len: last, head_len: last + 1 })
    );
    db.execute("INSERT INTO ledger (seq, entry) VALUES (?1, ?2)", rusqlite::params![last as i64, tail]).expect("undo");

    // Restored, and it grows: new entries chain on, old receipts still hold.
    lender.decide("seller-0003", "audit-after").await.expect("decision");
    let (grown, head) = fetch_ledger(&cluster.coordinator_url()).await.expect("ledger");
    verify_with_head(&grown, &head, &consortium).expect("verifies");
    verify_receipts(&grown, &receipts).expect("receipts");
    assert!(grown.len() > entries.len());
    cluster.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_without_an_identity_keeps_no_ledger() {
    let (cluster, _) = cluster(ClusterOptions { signed: false, ..small() }).await;
    let e = fetch_ledger(&cluster.coordinator_url()).await.unwrap_err();
    assert_eq!(e.code(), Some(Code::FailedPrecondition), "{e}");
    assert!(e.to_string().contains("keeps no audit ledger"), "{e}");
    cluster.stop().await.expect("stop");
}

/// A party's log as `jointscore audit reconcile` takes it.
fn party_record(name: &str, store: &jointscore_party::RecordStore) -> PartyRecord {
    let log = store.log_entries(0).expect("the party's log");
    let n = jointscore_party::verify_entries(&log).expect("the party's log verifies");
    let contributions = log
        .iter()
        .filter_map(|entry| {
            let record = entry.contribution()?.expect("a contribution record");
            Some(PartyContribution { seq: entry.seq, envelope: record.envelope, signature: record.signature })
        })
        .collect();
    let head = log.last().map_or(jointscore_party::GENESIS, |e| e.hash.as_str()).to_string();
    PartyRecord { party: name.into(), log: PartyLogCheck::Verified { entries: n as u64, head }, contributions }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_finds_each_partys_contributions_in_the_ledger_and_one_left_out() {
    let (cluster, mut lender) = cluster(ClusterOptions { signed: true, ..small() }).await;
    let consortium = cluster.consortium.clone().expect("signed cluster");
    for (i, subject) in ["seller-0001", "seller-0002"].iter().enumerate() {
        lender.decide(subject, &format!("reconcile-{i}")).await.expect("decision");
    }
    let (entries, head) = fetch_ledger(&cluster.coordinator_url()).await.expect("ledger");
    verify_with_head(&entries, &head, &consortium).expect("the ledger verifies");
    for party in &cluster.parties {
        let outcome = reconcile(&party_record(&party.name, &party.store), &entries);
        let statuses: Vec<Status> = outcome.findings.iter().map(|f| f.status).collect();
        assert_eq!(statuses, [Status::Ok, Status::Ok], "{}: {outcome:?}", party.name);
        assert!(outcome.reconciled());
    }

    // The coordinator leaves the bank's first contribution out (a ledger
    // re-sealed without it would verify on its own).
    let bank = cluster.parties.iter().find(|p| p.name == "bank").expect("bank");
    let record = party_record("bank", &bank.store);
    let left_out = entries
        .iter()
        .position(|e| e.record.kind == EntryKind::Contribution && e.record.parties == ["bank"])
        .expect("a contribution by the bank");
    let mut cut = entries.clone();
    let removed = cut.remove(left_out);
    let outcome = reconcile(&record, &cut);
    let statuses: Vec<Status> = outcome.findings.iter().map(|f| f.status).collect();
    assert_eq!(statuses, [Status::Missing, Status::Ok], "{outcome:?}");
    assert!(!outcome.reconciled());
    assert_eq!(Some(outcome.findings[0].job_id.as_str()), removed.record.job_id.as_deref());
    assert!(outcome.findings[0].detail.contains("records the job's result"), "{}", outcome.findings[0].detail);
    // The other parties' records still reconcile against the cut ledger.
    let platform = cluster.parties.iter().find(|p| p.name == "platform").expect("platform");
    assert!(reconcile(&party_record("platform", &platform.store), &cut).reconciled());
    cluster.stop().await.expect("stop");
}
