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

// The macros define undocumented public functions.
#[allow(missing_docs)]
mod group {
    use super::*;
    criterion_group!(benches, ledger);
}
criterion_main!(group::benches);
