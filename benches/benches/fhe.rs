//! The TFHE planes, in one target so that TFHE is linked into one benchmark
//! binary and the lender's key set is generated once for both groups:
//!
//! - `decision`: the coordinator's evaluation of the shipped
//!   `cross_border_seller` joint circuit in process (compact-list expansion
//!   included), contributions encrypted once outside the timed loop. Test
//!   and reduced: the pushdown plan; full: pushdown and coordinator-side.
//! - `e2e`: a whole decision over loopback gRPC (request sent → decision
//!   decrypted) against a coordinator and three party nodes with SQLite
//!   stores, under mutual TLS, signed contributions and the ledger, as the
//!   quickstart runs. Full adds 4 lenders deciding at once.
//!
//! Every result is checked against the plaintext reference.

use std::cell::{Cell, OnceCell, RefCell};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use jointscore_benches::{Scale, decision};
use jointscore_circuits::fhe::EvaluationKey;
use jointscore_circuits::{Model, Plan, PlanKind, reference};
use jointscore_lender::{Lender, LenderKeys};
use jointscore_testkit::cluster::{Cluster, ClusterOptions, LENDER};

/// The one key set of this process, generated on first use (seconds).
fn keys() -> Arc<LenderKeys> {
    static KEYS: OnceLock<Arc<LenderKeys>> = OnceLock::new();
    KEYS.get_or_init(|| Arc::new(LenderKeys::generate().expect("key generation"))).clone()
}

fn decision(c: &mut Criterion) {
    let scale = Scale::from_env();
    let model = Model::cross_border_seller();
    let record = decision::subjects(&model, 1, 1).expect("sample subject").remove(0);
    let expected = reference::evaluate(&model, &record).restricted(&model);
    // Decompressed on first use, so that a filter that skips this group
    // skips the work too.
    let evaluation: OnceCell<EvaluationKey> = OnceCell::new();
    let plans = scale.pick(
        vec![("pushdown", PlanKind::Pushdown, 15)],
        vec![("pushdown", PlanKind::Pushdown, 15)],
        vec![("pushdown", PlanKind::Pushdown, 15), ("coordinator_side", PlanKind::CoordinatorSide, 150)],
    );
    let mut group = c.benchmark_group("decision");
    group.sample_size(10).sampling_mode(SamplingMode::Flat);
    for (name, kind, seconds) in plans {
        let plan = Plan::new(&model, kind).expect("plan");
        group.measurement_time(Duration::from_secs(seconds));
        group.bench_function(name, |b| {
            let keys = keys();
            let evaluation = evaluation.get_or_init(|| {
                EvaluationKey::from_compressed_bytes(&keys.evaluation, &keys.public).expect("evaluation key")
            });
            let contributions = decision::contributions(&plan, &record, &keys.public).expect("contributions");
            let mut last = None;
            b.iter(|| last = Some(evaluation.evaluate(&plan, &contributions).expect("evaluate")));
            // Outside the timed loop: the last result decrypts to the reference.
            let (result, _) = last.expect("criterion ran the routine");
            assert_eq!(keys.secret.decrypt(&plan, &result).expect("decrypt"), expected, "{name} differs");
        });
    }
    group.finish();
}

/// A running cluster and a registered lender.
struct E2e {
    runtime: tokio::runtime::Runtime,
    cluster: Cluster,
    lender: RefCell<Lender>,
    subjects: Vec<String>,
    /// Request ids must be unique within the cluster's store.
    next: Cell<usize>,
}

impl E2e {
    fn start(scale: Scale) -> E2e {
        let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
        let options = ClusterOptions { sellers: 20, tls: true, ..ClusterOptions::default() };
        let (cluster, lender) = runtime.block_on(async {
            let cluster = Cluster::start(&options).await.expect("cluster");
            let mut lender = cluster.lender(keys(), PlanKind::Pushdown).await.expect("lender");
            lender.register(LENDER).await.expect("register the key set");
            (cluster, lender)
        });
        let subjects: Vec<String> = cluster.book.iter().map(|(s, _)| s.clone()).collect();
        let e2e = E2e { runtime, cluster, lender: RefCell::new(lender), subjects, next: Cell::new(0) };
        if scale != Scale::Test {
            // The first decision fetches the public key at every party.
            e2e.decide(&mut e2e.lender.borrow_mut());
        }
        e2e
    }

    /// One decision on the next sample subject, checked.
    fn decide(&self, lender: &mut Lender) {
        let i = self.next.get();
        self.next.set(i + 1);
        let subject = &self.subjects[i % self.subjects.len()];
        let d = self.runtime.block_on(lender.decide(subject, &format!("bench-{i}"))).expect("decision");
        assert_eq!(d.bundle, self.cluster.reference(subject).expect("reference"), "{subject} differs");
    }

    /// `n` decisions by `n` lenders at once, each with its own connection.
    fn decide_concurrently(&self, n: usize) -> Duration {
        let ids: Vec<(String, String)> = (0..n)
            .map(|_| {
                let i = self.next.get();
                self.next.set(i + 1);
                (self.subjects[i % self.subjects.len()].clone(), format!("bench-{i}"))
            })
            .collect();
        self.runtime.block_on(async {
            let mut lenders = Vec::new();
            for _ in 0..n {
                lenders.push(self.cluster.lender(keys(), PlanKind::Pushdown).await.expect("lender"));
            }
            let start = Instant::now();
            let mut tasks = tokio::task::JoinSet::new();
            for (mut lender, (subject, id)) in lenders.into_iter().zip(ids) {
                tasks.spawn(async move { (lender.decide(&subject, &id).await.expect("decision"), subject) });
            }
            while let Some(done) = tasks.join_next().await {
                let (d, subject) = done.expect("lender task");
                assert_eq!(d.bundle, self.cluster.reference(&subject).expect("reference"), "{subject} differs");
            }
            start.elapsed()
        })
    }
}

fn e2e(c: &mut Criterion) {
    let scale = Scale::from_env();
    let state: OnceCell<E2e> = OnceCell::new();
    let mut group = c.benchmark_group("e2e");
    group.sample_size(10).sampling_mode(SamplingMode::Flat).measurement_time(Duration::from_secs(20));
    group.bench_function("decide", |b| {
        let s = state.get_or_init(|| E2e::start(scale));
        let mut lender = s.lender.borrow_mut();
        b.iter(|| s.decide(&mut lender));
    });
    if scale == Scale::Full {
        let n = 4;
        group.throughput(Throughput::Elements(n as u64)).measurement_time(Duration::from_secs(60));
        group.bench_function(BenchmarkId::new("concurrent_lenders", n), |b| {
            let s = state.get_or_init(|| E2e::start(scale));
            b.iter_custom(|iters| (0..iters).map(|_| s.decide_concurrently(n)).sum());
        });
    }
    group.finish();
    if let Some(s) = state.into_inner() {
        drop(s.lender);
        s.runtime.block_on(s.cluster.stop()).expect("stop the cluster");
    }
}

// The macros define undocumented public functions.
#[allow(missing_docs)]
mod group {
    use super::*;
    criterion_group!(benches, decision, e2e);
}
criterion_main!(group::benches);
