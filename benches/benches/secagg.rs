//! Secure-aggregation plane: one whole round in process (advertise keys,
//! share keys, masked input, unmask), with 0% and 30% of parties dropping
//! after sharing keys (the case that costs the server most). Criterion
//! reports the **server's** time per round, as the README does (the
//! clients' state machines run in the same process but are not counted).
//! Sizes: test 8 parties × 16 entries, 30% dropping; reduced 100 × 1,000,
//! 0% and 30%; full 500 × 100,000, complete graph 0% and 30%, SecAgg+ with
//! 142 neighbours 30% (each full round also runs all 500 clients, about two
//! minutes of client work on two cores: the full group takes about an hour).

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, SamplingMode, criterion_group, criterion_main};
use jointscore_benches::{Scale, secagg};

fn rounds(c: &mut Criterion) {
    let scale = Scale::from_env();
    // (parties, entries, neighbours, dropout share): the README's figures at
    // full size.
    let configs: Vec<(u32, usize, Option<u32>, f64)> = scale.pick(
        vec![(8, 16, None, 0.3)],
        vec![(100, 1_000, None, 0.0), (100, 1_000, None, 0.3)],
        vec![(500, 100_000, None, 0.0), (500, 100_000, None, 0.3), (500, 100_000, Some(142), 0.3)],
    );
    let mut group = c.benchmark_group("secagg");
    group.sample_size(10).sampling_mode(SamplingMode::Flat);
    for (parties, dim, neighbours, dropout) in configs {
        let round = secagg::round(parties, dim, dropout, neighbours).expect("round parameters");
        let graph = neighbours.map_or("complete".to_string(), |k| format!("k{k}"));
        let id = format!("{parties}x{dim}/{graph}/dropout{}", (dropout * 100.0).round());
        group.bench_function(BenchmarkId::new("server", id), |b| {
            b.iter_custom(|iters| {
                let mut server = Duration::ZERO;
                for _ in 0..iters {
                    let outcome = round.run().expect("secure aggregation round");
                    assert!(round.correct(&outcome), "the aggregate differs from the plain sum");
                    server += outcome.server;
                }
                server
            })
        });
    }
    group.finish();
}

// The macros define undocumented public functions.
#[allow(missing_docs)]
mod group {
    use super::*;
    criterion_group!(benches, rounds);
}
criterion_main!(group::benches);
