//! PSI plane: one whole ECDH private-set-intersection session in process
//! (requester blinds, responder re-blinds and blinds its own, requester
//! finishes), intersection and cardinality variants, items per second per
//! side. Sizes: test 64; reduced 1,024; full 1,024 and 65,536 (2^20:
//! `jointscore bench psi --size 1048576`).

use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use jointscore_benches::{Scale, psi};
use jointscore_psi::Variant;

fn sessions(c: &mut Criterion) {
    let scale = Scale::from_env();
    let sizes = scale.pick(vec![64], vec![1 << 10], vec![1 << 10, 1 << 16]);
    let mut group = c.benchmark_group("psi");
    group.sample_size(10).sampling_mode(SamplingMode::Flat);
    for n in sizes {
        let (mine, theirs) = psi::sets(n).expect("set size");
        group.throughput(Throughput::Elements(n as u64));
        for (name, variant) in [("intersection", Variant::Intersection), ("cardinality", Variant::Cardinality)] {
            group.bench_with_input(BenchmarkId::new(name, n), &n, |b, &n| {
                b.iter(|| {
                    let run = psi::run(&mine, &theirs, variant).expect("PSI session");
                    assert!(psi::correct(&run.outcome, n), "wrong PSI result");
                })
            });
        }
    }
    group.finish();
}

// The macros define undocumented public functions.
#[allow(missing_docs)]
mod group {
    use super::*;
    criterion_group!(benches, sessions);
}
criterion_main!(group::benches);
