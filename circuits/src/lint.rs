//! What each revealed output of a model can tell the lender about the
//! parties' data, checked before a party approves the model.
//!
//! A lender writes the model; a party approves its id. A model whose
//! revealed output is, in effect, one party's raw feature (a credit line
//! with divisor 1 and granularity 1 over a wide range, say) would let the
//! lender read that feature through the decision. [`lint`] reports, per
//! revealed output, an upper bound on how many distinct values it takes,
//! which parties' features it depends on, and whether a single feature
//! determines it exactly over a wide range ([`Revealing`]).

use std::collections::BTreeSet;

use crate::model::{FeatureKind, Model, Output};

/// Fewest distinct values over which an output that one feature determines
/// counts as revealing that feature.
pub const WIDE_RANGE: u64 = 16;

/// One revealed output, as the lint sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputLint {
    /// The output.
    pub output: Output,
    /// An upper bound on the distinct values it takes.
    pub values: u64,
    /// The parties whose features it depends on, in model order.
    pub parties: Vec<String>,
    /// The features it depends on, in model order.
    pub features: Vec<String>,
    /// Where one feature determines it exactly over a wide range.
    pub revealing: Option<Revealing>,
}

/// An output that one feature determines exactly over a wide range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revealing {
    /// The feature.
    pub feature: String,
    /// Its owner.
    pub party: String,
    /// How many distinct values of the output it maps onto.
    pub values: u64,
    /// Why, for a person.
    pub detail: String,
}

/// The lint of a model's revealed outputs, in [`Output::ALL`] order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lint {
    /// One entry per revealed output.
    pub outputs: Vec<OutputLint>,
}

impl Lint {
    /// Whether no revealed output gives a party's feature away.
    pub fn passes(&self) -> bool {
        self.outputs.iter().all(|o| o.revealing.is_none())
    }
}

/// Lints `model`'s revealed outputs.
pub fn lint(model: &Model) -> Lint {
    let features = model.features();
    // Features whose points vary move the score, hence every output that
    // depends on it; knock-out conditions move the decision.
    let scored: BTreeSet<usize> =
        (0..features.len()).filter(|&f| features[f].point_values().collect::<BTreeSet<_>>().len() > 1).collect();
    let knocked: BTreeSet<usize> = model.knockouts().iter().flat_map(|k| k.when.iter().map(|c| c.feature)).collect();
    let decided: BTreeSet<usize> = scored.union(&knocked).copied().collect();
    let score_values = (scored.iter().map(|&f| features[f].best_points() - features[f].worst_points()).sum::<i64>())
        .unsigned_abs()
        .saturating_add(1);
    let tiers = model.bands().iter().map(|b| b.rate_tier.as_str()).collect::<BTreeSet<_>>().len() as u64;

    let mut outputs = Vec::new();
    for output in Output::ALL.into_iter().filter(|&o| model.reveals(o)) {
        let (values, depends, revealing) = match output {
            Output::Decision => (3, decided.clone(), None),
            Output::Band => (model.bands().len() as u64, decided.clone(), None),
            // A declined applicant has no tier.
            Output::RateTier => (tiers + 1, decided.clone(), None),
            Output::CreditLine => credit_line(model, &decided),
            Output::Reasons => {
                let n = scored.len() as u64;
                let values = (0..model.reasons()).fold(1u64, |acc, _| acc.saturating_mul(n.saturating_add(1)));
                (values, scored.clone(), None)
            }
            Output::Score => {
                let only: Vec<usize> = scored.iter().copied().collect();
                let revealing = match only[..] {
                    [f] if score_values >= WIDE_RANGE => Some(revealed_by(
                        model,
                        f,
                        score_values,
                        "the score moves with this feature's points alone".into(),
                    )),
                    _ => None,
                };
                (score_values, scored.clone(), revealing)
            }
        };
        let parties: BTreeSet<usize> = depends.iter().map(|&f| features[f].party).collect();
        outputs.push(OutputLint {
            output,
            values,
            parties: parties.into_iter().map(|p| model.parties()[p].clone()).collect(),
            features: depends.iter().map(|&f| features[f].name.clone()).collect(),
            revealing,
        });
    }
    Lint { outputs }
}

/// The credit line: per band, a function of the line's feature alone,
/// `multiplier × value / divisor`, floored to the granularity and capped.
/// Within a band it reveals the feature to one step of `divisor ×
/// granularity / multiplier` units, up to the cap.
fn credit_line(model: &Model, decided: &BTreeSet<usize>) -> (u64, BTreeSet<usize>, Option<Revealing>) {
    let Some(line) = model.credit_line() else { return (1, decided.clone(), None) };
    let mut depends = decided.clone();
    depends.insert(line.feature);
    let values = line.cap / line.granularity + 1;
    let top = match &model.features()[line.feature].kind {
        FeatureKind::Integer { max, .. } => (*max).max(0).unsigned_abs(),
        FeatureKind::Categorical { .. } => 0,
    };
    let step = u128::from(line.divisor) * u128::from(line.granularity);
    let revealing = model
        .bands()
        .iter()
        .filter(|b| b.line_multiplier > 0)
        .map(|b| {
            let m = u128::from(b.line_multiplier);
            let steps = (m * u128::from(top) / step).min(u128::from(line.cap / line.granularity)) + 1;
            (b, m, u64::try_from(steps).unwrap_or(u64::MAX))
        })
        .filter(|&(_, m, steps)| steps >= WIDE_RANGE && step <= m)
        .max_by_key(|&(_, _, steps)| steps)
        .map(|(band, _, steps)| {
            let feature = &model.features()[line.feature];
            revealed_by(
                model,
                line.feature,
                steps,
                format!(
                    "in band {}, the line is {} × {} / {} in steps of {}: every unit of the feature shows, over {steps} \
                     values",
                    band.name, band.line_multiplier, feature.name, line.divisor, line.granularity
                ),
            )
        });
    (values, depends, revealing)
}

/// `feature` of `model`, named with its owner, as what an output reveals.
fn revealed_by(model: &Model, feature: usize, values: u64, detail: String) -> Revealing {
    let f = &model.features()[feature];
    Revealing { feature: f.name.clone(), party: model.parties()[f.party].clone(), values, detail }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CROSS_BORDER_SELLER;

    #[test]
    fn the_shipped_model_passes_and_names_what_each_output_depends_on() {
        let model = Model::cross_border_seller();
        let lint = lint(&model);
        assert!(lint.passes(), "{lint:?}");
        let outputs: Vec<Output> = lint.outputs.iter().map(|o| o.output).collect();
        let revealed: Vec<Output> = Output::ALL.into_iter().filter(|&o| model.reveals(o)).collect();
        assert_eq!(outputs, revealed);
        let decision = &lint.outputs[0];
        assert_eq!(decision.output, Output::Decision);
        assert_eq!(decision.values, 3);
        assert_eq!(decision.parties, model.parties(), "every party's data moves the decision");
        let line = lint.outputs.iter().find(|o| o.output == Output::CreditLine).expect("the line is revealed");
        assert!(line.features.iter().any(|f| f == "gmv_12m_k"), "{line:?}");
    }

    #[test]
    fn a_credit_line_of_divisor_one_and_granularity_one_reveals_its_feature() {
        let source = CROSS_BORDER_SELLER
            .replace("formula = \"band_multiplier * gmv_12m_k / 12\"", "formula = \"band_multiplier * gmv_12m_k / 1\"")
            .replace("granularity = 5", "granularity = 1");
        assert_ne!(source, CROSS_BORDER_SELLER, "the test edits the shipped model");
        let model = Model::from_toml(&source).expect("valid model");
        let lint = lint(&model);
        assert!(!lint.passes());
        let line = lint.outputs.iter().find(|o| o.output == Output::CreditLine).expect("line");
        let revealing = line.revealing.as_ref().expect("the line reveals gmv");
        assert_eq!(revealing.feature, "gmv_12m_k");
        assert!(revealing.values >= WIDE_RANGE, "{revealing:?}");
        assert!(revealing.detail.contains("every unit"), "{}", revealing.detail);
    }

    #[test]
    fn outputs_the_model_does_not_reveal_are_not_linted() {
        let model = Model::cross_border_seller().with_reveal([Output::Decision]).expect("valid");
        let lint = lint(&model);
        assert_eq!(lint.outputs.len(), 1);
        assert!(lint.passes());
    }
}
