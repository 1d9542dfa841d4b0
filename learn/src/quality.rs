//! The quality bar of the jointly fitted scorecard: German Credit with the
//! README's split, generated data with correlated features across
//! parties, and joint weights equal to the plaintext fit of the same
//! binned data.

use std::collections::BTreeMap;

use jointscore_binning::gram::{self, Columns, Gram, Layout, Participant, Sealed};
use jointscore_circuits::reference;
use jointscore_secagg::{PartyId, SessionId};
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use rand_core::OsRng;

use crate::data::{LoadOptions, PartySplit, Study};
use crate::fit::{Fit, FitOptions, Weighting, fit};
use crate::lr::reference_lr;
use crate::metrics::auc;
use crate::weights::fit_weights;

/// Test AUC of a fitted scorecard (risk = minus the reference score).
fn test_auc(study: &Study, fitted: &Fit) -> f64 {
    let m = &fitted.model;
    let risk: Vec<f64> = study
        .test()
        .iter()
        .map(|&i| -(reference::evaluate(m, &study.record(m, i).unwrap()).score.unwrap() as f64))
        .collect();
    let bad: Vec<bool> = study.test().iter().map(|&i| study.labels()[i]).collect();
    auc(&risk, &bad).unwrap()
}

fn reference_auc(study: &Study) -> f64 {
    let bad: Vec<bool> = study.test().iter().map(|&i| study.labels()[i]).collect();
    auc(&reference_lr(study), &bad).unwrap()
}

fn fit_with(study: &Study, weighting: Weighting) -> Fit {
    fit(study, &FitOptions { weighting, ..FitOptions::default() }, "q", &mut |_| {}).unwrap()
}

#[test]
fn german_credit_with_joint_weights_is_within_a_hundredth_of_the_reference() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../data/german_credit.csv");
    let options = LoadOptions {
        label: "creditability".into(),
        bad: "bad".into(),
        good: None,
        parties: "platform=duration_in_month,credit_amount,purpose,installment_rate_in_percentage_of_disposable_income;logistics=property,housing,present_residence_since,job;bank=status_of_existing_checking_account,credit_history,savings_account_and_bonds,other_installment_plans,number_of_existing_credits_at_this_bank"
            .parse::<PartySplit>()
            .unwrap(),
        test_fraction: 0.3,
        seed: 42,
    };
    let study = Study::load(std::path::Path::new(path), &options).unwrap();
    let joint = fit_with(&study, Weighting::Joint);
    let (got, reference) = (test_auc(&study, &joint), reference_auc(&study));
    let naive = test_auc(&study, &fit_with(&study, Weighting::WoeNaive));
    eprintln!("German Credit test AUC: joint {got:.4}, woe-naive {naive:.4}, reference {reference:.4}");
    assert!(got >= reference - 0.01, "joint {got:.3} vs reference {reference:.3}");
    let w = joint.weights.as_ref().unwrap();
    assert!(!w.iterations.is_empty() && w.kept.iter().any(|k| *k));
    // Bytes went through every role; the phases were timed.
    assert!(joint.cost.lender.sent > 0 && joint.cost.coordinator.sent > 0);
    assert!(joint.cost.parties.values().all(|b| b.sent > 0 && b.received > 0), "{:?}", joint.cost);
    assert_eq!(joint.cost.phases.iter().map(|p| p.0).collect::<Vec<_>>(), ["binning", "gram", "weights"]);
}

/// Rows where one party holds three near-copies of one signal and another
/// party an independent signal of equal strength: weights fixed at 1 count
/// the first signal three times.
fn correlated(rows: usize, seed: u64) -> String {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut s = String::from("a1,a2,a3,b,c,label\n");
    let normal = |rng: &mut StdRng| -> f64 {
        // Box–Muller.
        let (u, v): (f64, f64) = (rng.random_range(1e-12..1.0), rng.random());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    };
    for _ in 0..rows {
        let (u, v, w) = (normal(&mut rng), normal(&mut rng), normal(&mut rng));
        let z = -1.0 + 1.0 * u + 1.0 * v + 0.5 * w;
        let label = if rng.random::<f64>() < 1.0 / (1.0 + (-z).exp()) { "bad" } else { "good" };
        let copy = |rng: &mut StdRng| ((u + 0.15 * normal(rng)) * 100.0).round();
        let (a1, a2, a3) = (copy(&mut rng), copy(&mut rng), copy(&mut rng));
        s.push_str(&format!("{a1},{a2},{a3},{},{},{label}\n", (v * 100.0).round(), (w * 100.0).round()));
    }
    s
}

#[test]
fn correlated_features_across_parties_fail_naive_weights_and_pass_joint_ones() {
    let options = LoadOptions {
        label: "label".into(),
        bad: "bad".into(),
        good: Some("good".into()),
        parties: "platform=a1,a2;logistics=a3;bank=b".parse::<PartySplit>().unwrap(),
        test_fraction: 0.3,
        seed: 7,
    };
    let study = Study::read(correlated(6000, 11).as_bytes(), &options).unwrap();
    let reference = reference_auc(&study);
    let naive = test_auc(&study, &fit_with(&study, Weighting::WoeNaive));
    let joint = test_auc(&study, &fit_with(&study, Weighting::Joint));
    eprintln!("correlated test AUC: joint {joint:.4}, woe-naive {naive:.4}, reference {reference:.4}");
    assert!(naive < reference - 0.01, "naive {naive:.3} should fall short of {reference:.3}");
    assert!(joint >= reference - 0.01, "joint {joint:.3} vs reference {reference:.3} (naive {naive:.3})");
}

/// Runs the Gram round over `parts` (the last is the lender's, label last).
fn joint_gram(parts: &[Vec<Vec<f64>>]) -> Gram {
    let rows = parts[0][0].len();
    let layout = Layout { rows, columns: parts.iter().map(Vec::len).collect() };
    let deals = gram::deal(&layout, &mut OsRng).unwrap();
    let session = SessionId([9; 16]);
    let mut people: Vec<Participant> = parts
        .iter()
        .enumerate()
        .map(|(i, c)| {
            Participant::new(session, &layout, i as PartyId, Columns::encode(rows, c).unwrap(), &mut OsRng).unwrap()
        })
        .collect();
    let keys: BTreeMap<PartyId, [u8; 32]> =
        people.iter().enumerate().map(|(i, p)| (i as PartyId, p.public_key())).collect();
    for p in &mut people {
        p.set_keys(&keys).unwrap();
    }
    let mail: Vec<Sealed> = people.iter().zip(&deals).flat_map(|(p, d)| p.masked(d).unwrap()).collect();
    let lender = (parts.len() - 1) as PartyId;
    let contributions: Vec<Sealed> = people
        .iter()
        .zip(&deals)
        .enumerate()
        .map(|(i, (p, d))| {
            let inbox: Vec<Sealed> = mail.iter().filter(|m| m.to == i as PartyId).cloned().collect();
            p.contribution(d, &inbox, lender).unwrap()
        })
        .collect();
    people[lender as usize].assemble(&contributions).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    /// On any small binned data split over two parties and the lender, the
    /// jointly fitted weights equal the weights fitted in the clear on the
    /// same WoE columns to 1e-9 (both see the same fixed-point matrix), and
    /// every iteration alike.
    #[test]
    fn joint_weights_equal_the_plaintext_fit(seed in any::<u64>(), rows in 60usize..200) {
        let mut rng = StdRng::seed_from_u64(seed);
        // Three binned features, WoE-like values per bin, labels that
        // depend on them.
        let bins: Vec<Vec<f64>> = (0..3).map(|_| (0..4).map(|_| rng.random_range(-1.5..1.5)).collect()).collect();
        let mut cols = vec![Vec::new(); 3];
        let mut label = Vec::new();
        for _ in 0..rows {
            let mut z = 0.3;
            for (f, b) in bins.iter().enumerate() {
                let v = b[rng.random_range(0..4)];
                cols[f].push(v);
                z += v;
            }
            label.push(f64::from(u8::from(rng.random::<f64>() < 1.0 / (1.0 + (-z).exp()))));
        }
        prop_assume!(label.contains(&1.0) && label.contains(&0.0));
        let parts = vec![vec![cols[0].clone(), cols[1].clone()], vec![cols[2].clone()], vec![label.clone()]];
        let joint = joint_gram(&parts);
        let plain = Gram::plain(&[cols[0].clone(), cols[1].clone(), cols[2].clone(), label]).unwrap();
        prop_assert_eq!(&joint, &plain);
        let a = fit_weights(&joint, &[1, 2, 3], 4, 1.0, &mut |_| {});
        let b = fit_weights(&plain, &[1, 2, 3], 4, 1.0, &mut |_| {});
        match (a, b) {
            (Ok(a), Ok(b)) => {
                prop_assert_eq!(&a.kept, &b.kept);
                prop_assert!((a.intercept - b.intercept).abs() < 1e-9);
                for (x, y) in a.weights.iter().zip(&b.weights) {
                    prop_assert!((x - y).abs() < 1e-9, "{:?} vs {:?}", a.weights, b.weights);
                }
                prop_assert_eq!(a.iterations.len(), b.iterations.len());
            }
            (a, b) => prop_assert_eq!(a.is_err(), b.is_err()),
        }
    }
}
