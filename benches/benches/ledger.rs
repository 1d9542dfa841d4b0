//! Audit plane: the coordinator sealing ledger entries (hash chain and
//! ed25519 signature per entry) and a member verifying the whole chain
//! against the consortium file (every hash, link, coordinator signature and
//! party attestation). Entries are those of real decisions: per decision a
//! request, three contributions each carrying its party's signed envelope,
//! and a result. Sizes (entries): test 25; reduced 1,000; full 100,000.

use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use jointscore_benches::{Scale, ledger};

fn ledger(c: &mut Criterion) {
    let scale = Scale::from_env();
    let decisions = scale.pick(5, 200, 20_000);
    let ledger = ledger::Ledger::new().expect("consortium");
    let records = ledger.records(decisions);
    let entries = ledger.append(&records);
    ledger.verify(&entries).expect("the sealed chain verifies");
    let n = records.len();

    let mut group = c.benchmark_group("ledger");
    group.sample_size(10).sampling_mode(SamplingMode::Flat).throughput(Throughput::Elements(n as u64));
    group.bench_with_input(BenchmarkId::new("append", n), &records, |b, records| b.iter(|| ledger.append(records)));
    group.bench_with_input(BenchmarkId::new("verify", n), &entries, |b, entries| {
        b.iter(|| ledger.verify(entries).expect("verify"))
    });
    group.finish();
}

/// What checking that a request is the lender's own costs per decision,
/// beside evaluation: the lender signs once; the coordinator and each party
/// verify the signature; each party claims the request id in its store
/// (replay and per-subject limits, one SQLite transaction) and appends the
/// contribution to its hash-chained log (another), on a file-backed store
/// as in production.
fn attestation(c: &mut Criterion) {
    use jointscore_identity::{Consortium, LenderRequest, NodeKey};
    use jointscore_party::{LogKind, RecordStore};

    let lender = NodeKey::generate();
    let consortium = Consortium::from_toml(&format!(
        "name = \"bench\"\n[[member]]\nname = \"lender\"\nrole = \"lender\"\npublic_key = \"{}\"\n",
        lender.public_hex()
    ))
    .expect("consortium");
    let request = |i: u64| LenderRequest {
        request_id: format!("bench-{i}"),
        lender: "lender".into(),
        key_id: "ab".repeat(32),
        model_id: "cd".repeat(32),
        plan: "pushdown".into(),
        subject: format!("seller-{:04}", i % 1000),
        absent: Vec::new(),
        time_ms: 1_700_000_000_000,
        salt: LenderRequest::fresh_salt(),
    };
    let one = request(0);
    let signature = one.sign(&lender);
    let dir = tempfile::tempdir().expect("tempdir");
    let store = RecordStore::open(&dir.path().join("party.sqlite")).expect("store");

    let mut group = c.benchmark_group("attestation");
    group.sample_size(20);
    group.bench_function("lender_signs_request", |b| b.iter(|| one.sign(&lender)));
    group.bench_function("verify_request", |b| b.iter(|| one.verify(&consortium, &signature, 0).expect("verifies")));
    let mut i = 0u64;
    group.bench_function("party_claims_and_logs", |b| {
        b.iter(|| {
            i += 1;
            let r = request(i);
            let limits =
                jointscore_party::ClaimLimits { per_subject: u32::MAX, window_ms: 86_400_000, keep_ms: 300_000 };
            let claimed = store.claim_request(&r.lender, &r.request_id, "job", &r.subject, &limits);
            assert_eq!(claimed.expect("claim"), jointscore_party::Claim::New);
            store.log(LogKind::Contribution, serde_json::json!({ "request": r })).expect("log")
        })
    });
    group.finish();
}

// The macros define undocumented public functions.
#[allow(missing_docs)]
mod group {
    use super::*;
    criterion_group!(benches, ledger, attestation);
}
criterion_main!(group::benches);
