//! Binning plane: one vertical-binning round in process through the wire
//! encodings: the lender encrypts its labels (exponential ElGamal), the
//! party bins its features and sums the ciphertexts per bin, the lender
//! decrypts the counts. Sizes: test 200 rows × 2 features; reduced 10,000 ×
//! 5; full 100,000 × 20 (the README's figure). 10 initial bins.

use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use jointscore_benches::{Scale, binning};

fn rounds(c: &mut Criterion) {
    let scale = Scale::from_env();
    let (rows, features) = scale.pick((200, 2), (10_000, 5), (100_000, 20));
    let data = binning::data(rows, features, 5).expect("data");
    let mut group = c.benchmark_group("binning");
    group.sample_size(10).sampling_mode(SamplingMode::Flat).throughput(Throughput::Elements(rows as u64));
    group.bench_function(BenchmarkId::new("round", format!("{rows}x{features}")), |b| {
        b.iter(|| {
            let round = data.round(10).expect("binning round");
            assert!(data.correct(&round), "binning counts differ from the plain counts");
        })
    });
    group.finish();
}

// The macros define undocumented public functions.
#[allow(missing_docs)]
mod group {
    use super::*;
    criterion_group!(benches, rounds);
}
criterion_main!(group::benches);
