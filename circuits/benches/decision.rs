//! Criterion benchmark of the joint circuit: pushdown and coordinator-side
//! plans of `cross_border_seller`, one coordinator evaluation per iteration
//! (contributions encrypted once, outside the timed loop).

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use jointscore_circuits::fhe::{Contribution, KeySet};
use jointscore_circuits::{Model, Plan, PlanKind, Record};
use serde_json::json;

fn subject(m: &Model) -> Record {
    let inputs = json!({
        "gmv_12m_k": 1400, "gmv_trend_pct": 12, "refund_rate_bp": 650, "months_active": 40,
        "store_rating_x10": 44, "on_time_rate_bp": 9550, "inventory_turnover_days": 70,
        "overseas_stock_k": 120, "collection_cycle_days": 21, "late_repayments_12m": 1,
        "outstanding_debt_k": 300, "major_violations": 0
    });
    Record::from_json(m, &inputs).expect("valid sample inputs")
}

fn joint_circuit(c: &mut Criterion) {
    let keys = KeySet::generate().expect("key generation");
    let m = Model::cross_border_seller();
    let record = subject(&m);
    let mut group = c.benchmark_group("joint_circuit");
    group.sample_size(10);
    for (name, kind, time) in
        [("pushdown", PlanKind::Pushdown, 10), ("coordinator_side", PlanKind::CoordinatorSide, 60)]
    {
        let plan = Plan::new(&m, kind).expect("plan");
        let contributions: Vec<Contribution> = (0..plan.parties().len())
            .map(|p| {
                Contribution::encrypt(&plan, p, &plan.contribution(p, &record).expect("contribution"), &keys.public)
                    .expect("encrypt")
            })
            .collect();
        group.measurement_time(Duration::from_secs(time));
        group.bench_function(name, |b| b.iter(|| keys.evaluation.evaluate(&plan, &contributions).expect("evaluate")));
    }
    group.finish();
}

// The macro defines an undocumented public function.
#[allow(missing_docs)]
mod group {
    use super::*;
    criterion_group!(benches, joint_circuit);
}
criterion_main!(group::benches);
