//! Golden vectors and property tests of both plans against the reference,
//! and the generators (records, models) other modules' tests reuse.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::{Plan, PlanKind};
use crate::model::{FeatureKind, Missing, Model, Output};
use crate::reference::{self, RawValue, Record};

/// A record with values drawn around and beyond each feature's range.
pub(crate) fn arb_record(m: &Model) -> impl Strategy<Value = Record> + use<> {
    let m = m.clone();
    let per_feature: Vec<BoxedStrategy<Option<RawValue>>> = m
        .features()
        .iter()
        .map(|f| {
            let missing_ok = !matches!(f.missing, Missing::Reject);
            let value: BoxedStrategy<RawValue> = match &f.kind {
                FeatureKind::Integer { min, max } => {
                    let (min, max) = (*min, *max);
                    let edges: Vec<i64> = f
                        .bins
                        .iter()
                        .flat_map(|b| b.ranges.iter().flat_map(|&(lo, hi)| [lo, hi, lo - 1, hi + 1]))
                        .collect();
                    prop_oneof![
                        (min..=max).prop_map(RawValue::Int),
                        proptest::sample::select(edges).prop_map(RawValue::Int),
                        (min - 1000..min.saturating_add(1)).prop_map(RawValue::Int),
                        (max..max.saturating_add(100_000)).prop_map(RawValue::Int),
                    ]
                    .boxed()
                }
                FeatureKind::Categorical { categories } => {
                    proptest::sample::select(categories.clone()).prop_map(RawValue::Category).boxed()
                }
            };
            if missing_ok { proptest::option::weighted(0.8, value).boxed() } else { value.prop_map(Some).boxed() }
        })
        .collect();
    per_feature.prop_map(move |vals| {
        let raw: BTreeMap<usize, Option<RawValue>> = vals.into_iter().enumerate().collect();
        Record::from_raw(&m, raw).unwrap_or_else(|e| panic!("generated record must be valid: {e}"))
    })
}

/// A second model exercising what the shipped one does not: categorical
/// features, imputation, a single reason, every output revealed, line
/// bounds that differ by band, three-digit partials and multi-digit
/// lost-point codes.
pub(crate) const ALT_MODEL: &str = r#"
format = "jointscore.model.v1"
name = "alt"
version = "1"
parties = ["shop", "bank"]
base_points = 0

[[features]]
name = "region"
party = "shop"
unit = "region"
categories = ["eu", "us", "apac", "latam", "mena"]
missing = { points = 3 }
bins = [
  { categories = ["eu", "us"], points = 20 },
  { categories = ["apac"], points = 11 },
  { categories = ["latam", "mena"], points = 0 },
]

[[features]]
name = "sales"
party = "shop"
unit = "k"
range = [10, 400]
missing = { impute = 10 }
bins = [{ max = 49, points = 0 }, { max = 199, points = 7 }, { points = 19 }]

[[features]]
name = "debt"
party = "bank"
unit = "k"
range = [0, 1000]
missing = "reject"
bins = [{ max = 99, points = 30 }, { max = 499, points = 12 }, { points = 0 }]

[[knockouts]]
code = "K1"
when = ["region == mena", "debt >= 500"]

[[knockouts]]
code = "K2"
when = ["sales < 20"]

[cutoffs]
approve = 40
refer = 25

[[bands]]
name = "A"
min_score = 55
rate_tier = "a"
line_multiplier = 4

[[bands]]
name = "B"
min_score = 40
rate_tier = "b"
line_multiplier = 2

[[bands]]
name = "C"
min_score = 25
rate_tier = "c"
line_multiplier = 1

[[bands]]
name = "D"
min_score = 10
rate_tier = "d"

[[bands]]
name = "E"
rate_tier = "e"

[credit_line]
formula = "band_multiplier * sales / 3"
cap = 500
granularity = 10
unit = "k"

[reasons]
count = 1

[outputs]
reveal = ["decision", "band", "rate_tier", "credit_line", "reasons", "score"]
"#;

pub(crate) fn alt_model() -> Model {
    Model::from_toml(ALT_MODEL).unwrap_or_else(|e| panic!("alt model: {e}"))
}

/// A random valid model as TOML: 1-6 parties, 0-4 features each
/// (integer or categorical, every missing treatment), 1-8 bands,
/// knock-outs across parties, an optional line, 0-2 reasons, any policy.
pub(crate) fn arb_model() -> impl Strategy<Value = Model> {
    (any::<u64>(), 1usize..=6).prop_filter_map("model rejected by the validator", |(seed, parties)| {
        use std::fmt::Write;
        let mut s = seed;
        let mut next = move |n: u64| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (s >> 33) % n.max(1)
        };
        let mut t = String::from("format = \"jointscore.model.v1\"\nname = \"fuzz\"\nversion = \"1\"\n");
        let names: Vec<String> = (0..parties).map(|i| format!("p{i}")).collect();
        writeln!(t, "parties = {:?}\nbase_points = {}", names, next(100) as i64 - 50).ok()?;
        let unit = [1, 5, 10][next(3) as usize] as i64;
        let mut ints: Vec<(String, i64, i64, bool)> = Vec::new();
        let mut cats: Vec<(String, usize)> = Vec::new();
        let mut nfeat = 0;
        for party in &names {
            for _ in 0..next(5) {
                let name = format!("f{nfeat}");
                nfeat += 1;
                let pts = |next: &mut dyn FnMut(u64) -> u64| (next(9) as i64 - 2) * unit;
                let missing = match next(3) {
                    0 => "\"reject\"".to_string(),
                    1 => format!("{{ points = {} }}", pts(&mut next)),
                    _ => String::new(),
                };
                if next(5) == 0 {
                    let n = 1 + next(6) as usize;
                    let categories: Vec<String> = (0..n).map(|c| format!("c{c}")).collect();
                    let mut groups: Vec<Vec<String>> = vec![Vec::new(); 1 + next(n as u64) as usize];
                    for (i, c) in categories.iter().enumerate() {
                        let g = if i < groups.len() { i } else { next(groups.len() as u64) as usize };
                        groups[g].push(c.clone());
                    }
                    let missing = if missing.is_empty() { format!("{{ impute = \"c{}\" }}", next(n as u64)) } else { missing };
                    writeln!(t, "[[features]]\nname = \"{name}\"\nparty = \"{party}\"\nunit = \"u\"\ncategories = {categories:?}\nmissing = {missing}\nbins = [").ok()?;
                    for g in groups {
                        writeln!(t, "  {{ categories = {g:?}, points = {} }},", pts(&mut next)).ok()?;
                    }
                    t.push_str("]\n");
                    cats.push((name, n));
                } else {
                    let min = next(101) as i64 - 50;
                    let max = min + next(2000) as i64;
                    let scored_missing = missing.starts_with('{');
                    let missing = if missing.is_empty() { format!("{{ impute = {} }}", min + next((max - min + 1) as u64) as i64) } else { missing };
                    writeln!(t, "[[features]]\nname = \"{name}\"\nparty = \"{party}\"\nunit = \"u\"\nrange = [{min}, {max}]\nmissing = {missing}\nbins = [").ok()?;
                    let mut cuts: Vec<i64> = (0..next(5)).map(|_| min + 1 + next((max - min).max(1) as u64) as i64).filter(|&c| c <= max).collect();
                    cuts.sort();
                    cuts.dedup();
                    for c in &cuts {
                        writeln!(t, "  {{ max = {}, points = {} }},", c - 1, pts(&mut next)).ok()?;
                    }
                    writeln!(t, "  {{ points = {} }},\n]", pts(&mut next)).ok()?;
                    ints.push((name, min, max, scored_missing));
                }
            }
        }
        let all: Vec<String> = ints.iter().map(|f| f.0.clone()).chain(cats.iter().map(|c| c.0.clone())).collect();
        for r in 0..next(9) {
            let mut when = Vec::new();
            for _ in 0..1 + next(2) {
                if all.is_empty() {
                    break;
                }
                let f = &all[next(all.len() as u64) as usize];
                if let Some((_, min, max, _)) = ints.iter().find(|x| &x.0 == f) {
                    let op = ["<", "<=", ">", ">=", "==", "!="][next(6) as usize];
                    when.push(format!("{f} {op} {}", min - 5 + next((max - min + 11) as u64) as i64));
                } else if let Some((_, n)) = cats.iter().find(|x| &x.0 == f) {
                    when.push(format!("{f} {} c{}", ["==", "!="][next(2) as usize], next(*n as u64)));
                }
            }
            if !when.is_empty() {
                writeln!(t, "[[knockouts]]\ncode = \"K{r}\"\nwhen = {when:?}").ok()?;
            }
        }
        let lo = -150 + next(100) as i64;
        let refer = lo + next(200) as i64;
        writeln!(t, "[cutoffs]\napprove = {}\nrefer = {refer}", refer + next(60) as i64).ok()?;
        let line_feature = ints.iter().find(|f| f.1 >= 0 && !f.3).map(|f| f.0.clone());
        let nb = 1 + next(8) as i64;
        let mut score = lo + 250;
        for band in 0..nb {
            let mult = if line_feature.is_some() { next(5) } else { 0 };
            let min = if band + 1 == nb { String::new() } else { format!("min_score = {score}\n") };
            writeln!(t, "[[bands]]\nname = \"B{band}\"\n{min}rate_tier = \"T{band}\"\nline_multiplier = {mult}").ok()?;
            score -= 1 + next(60) as i64;
        }
        let reasons = next(3);
        writeln!(t, "[reasons]\ncount = {reasons}").ok()?;
        let mut outs = vec!["decision", "band", "rate_tier", "score"];
        if let Some(f) = &line_feature {
            let g = 1 + next(10);
            writeln!(t, "[credit_line]\nformula = \"band_multiplier * {f} / {}\"\ncap = {}\ngranularity = {g}\nunit = \"k\"", 1 + next(30), g * (1 + next(80))).ok()?;
            outs.push("credit_line");
        }
        if reasons > 0 {
            outs.push("reasons");
        }
        let reveal: Vec<&str> = outs.iter().copied().filter(|_| next(3) > 0).collect();
        let reveal = if reveal.is_empty() { vec!["decision"] } else { reveal };
        writeln!(t, "[outputs]\nreveal = {reveal:?}").ok()?;
        Model::from_toml(&t).ok()
    })
}

fn all_outputs(m: Model) -> Model {
    m.with_reveal(Output::ALL).unwrap()
}

/// Golden vector: what each party sends for examples/seller.json under
/// the pushdown plan, worked by hand (see the comments). A change here is
/// a change of the wire contract between parties and coordinator.
#[test]
fn golden_pushdown_contributions() {
    let m = Model::cross_border_seller();
    let plan = Plan::new(&m, PlanKind::Pushdown).unwrap();
    let seller: serde_json::Value = serde_json::from_str(include_str!("../../../examples/seller.json")).unwrap();
    let record = Record::from_json(&m, &seller).unwrap();
    let platform: [u8; 19] = [
        2, 2, // partial: 5 features x 10 points = 50 = 10 units -> digits 2, 2
        0, // no local knock-out (months_active 40 >= 6)
        0, // refund_rate_bp 650 is not > 1500
        0, 3, 3, // band A line: min(60, 3 * 1400 / 60 = 70) = 60 steps
        2, 3, 2, // band B: 2 * 1400 / 60 = 46 steps
        3, 1, 1, // band C: 1400 / 60 = 23 steps
        1, 1, 0, // reason 1: lost 5 (code 1), gmv_12m_k (own id 1)
        1, 2, 0, // reason 2: lost 5 (code 1), gmv_trend_pct (own id 2)
    ];
    let logistics: [u8; 6] = [2, 1, 1, 1, 1, 2]; // 30 points = 6 units; on_time (1), turnover (2)
    let bank: [u8; 10] = [
        3, 1, // 10 + 5 + 5 + 15 = 35 points = 7 units
        0, 0, // no violations; late_repayments 1 < 2
        2, 2, 0, // reason 1: lost 10 (code 2), late_repayments_12m (own id 2)
        2, 3, 0, // reason 2: lost 10 (code 2), outstanding_debt_k (own id 3)
    ];
    assert_eq!(plan.contribution(0, &record).unwrap(), platform);
    assert_eq!(plan.contribution(1, &record).unwrap(), logistics);
    assert_eq!(plan.contribution(2, &record).unwrap(), bank);
    assert_eq!(plan.stats().lookups, 59);
}

#[test]
fn shipped_model_plans_within_budget() {
    let m = Model::cross_border_seller();
    let plan = Plan::new(&m, PlanKind::Pushdown).unwrap();
    let stats = plan.stats();
    assert!(stats.lookups <= 80, "pushdown uses {} bootstraps", stats.lookups);
    let cs = Plan::new(&m, PlanKind::CoordinatorSide).unwrap();
    assert!(cs.stats().lookups > stats.lookups);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn pushdown_plain_equals_reference(record in arb_record(&Model::cross_border_seller())) {
        for m in [Model::cross_border_seller(), all_outputs(Model::cross_border_seller())] {
            let plan = Plan::new(&m, PlanKind::Pushdown).unwrap();
            let want = reference::evaluate(&m, &record).restricted(&m);
            prop_assert_eq!(plan.eval_plain(&record).unwrap(), want);
        }
    }

    /// Any output policy: only the revealed outputs come back, and they
    /// equal the reference.
    #[test]
    fn every_output_policy_equals_reference(
        record in arb_record(&Model::cross_border_seller()),
        mask in 1u8..64,
    ) {
        let m = Model::cross_border_seller()
            .with_reveal(Output::ALL.into_iter().enumerate().filter(|(i, _)| mask & (1 << i) != 0).map(|(_, o)| o))
            .unwrap();
        for kind in [PlanKind::Pushdown, PlanKind::CoordinatorSide] {
            let plan = Plan::new(&m, kind).unwrap();
            prop_assert_eq!(plan.eval_plain(&record).unwrap(), reference::evaluate(&m, &record).restricted(&m));
        }
    }

    #[test]
    fn alt_model_plans_equal_reference(record in arb_record(&alt_model())) {
        let m = alt_model();
        for kind in [PlanKind::Pushdown, PlanKind::CoordinatorSide] {
            let plan = Plan::new(&m, kind).unwrap();
            prop_assert_eq!(plan.eval_plain(&record).unwrap(), reference::evaluate(&m, &record).restricted(&m));
        }
    }

    #[test]
    fn alt_model_arbitrary_contributions_stay_in_bounds(seed in proptest::collection::vec(0u8..4, 97)) {
        let m = alt_model();
        let plan = Plan::new(&m, PlanKind::Pushdown).unwrap();
        let blocks: Vec<u8> = seed.iter().cycle().take(plan.circuit().input_count()).copied().collect();
        let b = plan.eval_contributions(&blocks).unwrap();
        prop_assert!((0..=69).contains(&b.score.unwrap()));
        // Each band's line is clamped to what sales of 400k could give.
        let bound = [530, 260, 130, 0, 0][b.band.unwrap()];
        prop_assert!(b.credit_line.unwrap() <= bound);
        prop_assert!(b.reasons.unwrap().len() <= 1);
    }

    #[test]
    fn coordinator_side_plain_equals_reference(record in arb_record(&Model::cross_border_seller())) {
        let m = all_outputs(Model::cross_border_seller());
        let plan = Plan::new(&m, PlanKind::CoordinatorSide).unwrap();
        let want = reference::evaluate(&m, &record).restricted(&m);
        prop_assert_eq!(plan.eval_plain(&record).unwrap(), want);
    }

    /// Whatever a party sends, the joint circuit stays inside every bound
    /// the encrypted run relies on, and its result is one a party could
    /// have caused by lying about its own data only within its range.
    #[test]
    fn arbitrary_contributions_stay_in_bounds(seed in proptest::collection::vec(0u8..4, 200)) {
        let m = all_outputs(Model::cross_border_seller());
        let plan = Plan::new(&m, PlanKind::Pushdown).unwrap();
        let n = plan.circuit().input_count();
        let blocks: Vec<u8> = seed.iter().cycle().take(n).copied().collect();
        let bundle = plan.eval_contributions(&blocks).unwrap();
        let score = bundle.score.unwrap();
        let lo = m.base_points() + m.features().iter().map(|f| f.worst_points()).sum::<i64>();
        let hi = m.base_points() + m.features().iter().map(|f| f.best_points()).sum::<i64>();
        prop_assert!(lo <= score && score <= hi);
        prop_assert!(bundle.credit_line.unwrap() <= m.credit_line().unwrap().cap);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1500))]

    /// Random valid models: both plans build and equal the reference on
    /// random records, and the pushdown circuit stays within its bounds
    /// on arbitrary contributions.
    #[test]
    fn random_models_plan_and_equal_reference(
        (m, records) in arb_model().prop_flat_map(|m| {
            let records = proptest::collection::vec(arb_record(&m), 4);
            (Just(m), records)
        }),
        junk in proptest::collection::vec(0u8..4, 64),
    ) {
        for kind in [PlanKind::Pushdown, PlanKind::CoordinatorSide] {
            let plan = match Plan::new(&m, kind) {
                Ok(plan) => plan,
                Err(e) => return Err(TestCaseError::fail(format!("{kind:?}: {e}"))),
            };
            for record in &records {
                prop_assert_eq!(plan.eval_plain(record).unwrap(), reference::evaluate(&m, record).restricted(&m));
            }
            if kind == PlanKind::Pushdown {
                let blocks: Vec<u8> = junk.iter().cycle().take(plan.circuit().input_count()).copied().collect();
                prop_assert!(plan.eval_contributions(&blocks).is_ok());
            }
        }
    }
}

/// `n` records of `m` drawn from [`arb_record`] with a fixed seed.
pub(crate) fn sample_records(m: &Model, n: usize) -> Vec<Record> {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::{Config, TestRng, TestRunner};
    let mut runner =
        TestRunner::new_with_rng(Config::default(), TestRng::deterministic_rng(Config::default().rng_algorithm));
    let strategy = arb_record(m);
    (0..n).map(|_| strategy.new_tree(&mut runner).expect("a record").current()).collect()
}

/// Lookups of one block share a bootstrap exactly when its range leaves
/// room for each one's sub-table, and every lookup is computed once.
#[test]
fn lookups_share_bootstraps_only_within_range() {
    use crate::circuit::Op;
    for m in [Model::cross_border_seller(), alt_model()] {
        for kind in [PlanKind::Pushdown, PlanKind::CoordinatorSide] {
            let plan = Plan::new(&m, kind).unwrap();
            let c = plan.circuit();
            let mut seen = vec![0; c.nodes.len()];
            for group in &c.bootstraps {
                let inputs: Vec<u32> = group
                    .iter()
                    .map(|&n| match c.nodes[n as usize].op {
                        Op::Lut { input, .. } => input,
                        _ => panic!("a bootstrap group holds a non-lookup"),
                    })
                    .collect();
                assert!(inputs.iter().all(|&i| i == inputs[0]), "one input per bootstrap");
                let max = usize::from(c.nodes[inputs[0] as usize].max);
                assert!(
                    group.len() == 1 || (group.len() <= 8 && group.len() * (max + 1) <= 16),
                    "{group:?} on max {max}"
                );
                group.iter().for_each(|&n| seen[n as usize] += 1);
            }
            for (i, n) in c.nodes.iter().enumerate() {
                assert_eq!(seen[i], usize::from(matches!(n.op, Op::Lut { .. })), "node {i}");
            }
            let s = plan.stats();
            assert_eq!(s.lookups, c.bootstraps.len());
            assert!(s.lookups <= s.tables);
        }
    }
    // The coordinator-side plan reads each feature's level index several
    // times: sharing saves bootstraps there.
    let cs = Plan::new(&Model::cross_border_seller(), PlanKind::CoordinatorSide).unwrap().stats();
    assert!(cs.lookups < cs.tables, "{} bootstraps for {} tables", cs.lookups, cs.tables);
}
