//! PSI plane: one whole ECDH private-set-intersection session in process
//! (requester blinds, responder re-blinds and blinds its own, requester
//! finishes), intersection and cardinality variants, items per second per
//! side. Sizes: test 64; reduced 1,024; full 1,024 and 65,536 (2^20:
//! `jointscore bench psi --size 1048576`).
//!
//! `psi_query`: the batched sessions' query of a few ids (16) against a
//! responder set of `n`, both ways a party can serve it: `fresh` encodes the
//! set for the session (what every alignment costs without
//! `psi_daily_encoding`, `O(n + m)`), `daily` reuses the requester's
//! encoding of the day (`O(m)`: blind, answer, unblind and look up).

use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use jointscore_benches::{Scale, psi};
use jointscore_psi::{RequesterSession, ResponderSession, Variant};
use rand_core::OsRng;

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

/// Ids in one alignment query of a few applicants.
const FEW: usize = 16;

fn queries(c: &mut Criterion) {
    let scale = Scale::from_env();
    let sizes = scale.pick(vec![64], vec![1 << 10], vec![1 << 16]);
    let mut group = c.benchmark_group("psi_query");
    group.sample_size(10).sampling_mode(SamplingMode::Flat).throughput(Throughput::Elements(FEW as u64));
    for n in sizes {
        let (mine, theirs) = psi::sets(n).expect("set size");
        let few = &mine[mine.len() - FEW.min(mine.len())..];
        let query = |responder: &ResponderSession, set: &[[u8; 32]]| {
            let mut requester = RequesterSession::new(&mut OsRng);
            requester.load_set(set).expect("set");
            let blinded = requester.blind(few).expect("blind");
            let answers = responder.answer(&blinded).expect("answer");
            let counts = requester.count(few.len(), 1, &answers).expect("count");
            assert!(counts.iter().all(|&c| c == 1), "wrong PSI result");
        };
        group.bench_with_input(BenchmarkId::new("fresh", n), &n, |b, _| {
            b.iter(|| {
                let responder = ResponderSession::new(&mut OsRng);
                let set = responder.encode_set(&theirs, &mut OsRng).expect("encode");
                query(&responder, &set);
            })
        });
        let responder = ResponderSession::new(&mut OsRng);
        let set = responder.encode_set(&theirs, &mut OsRng).expect("encode");
        group.bench_with_input(BenchmarkId::new("daily", n), &n, |b, _| b.iter(|| query(&responder, &set)));
    }
    group.finish();
}

// The macros define undocumented public functions.
#[allow(missing_docs)]
mod group {
    use super::*;
    criterion_group!(benches, sessions, queries);
}
criterion_main!(group::benches);
