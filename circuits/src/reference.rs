//! Inputs, the decision bundle and the plaintext reference evaluator.
//!
//! The reference is the definition of what a model means. Every encrypted
//! path must reproduce it exactly, for in-range and out-of-range inputs.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::model::{Condition, Feature, FeatureKind, Missing, Model, Output};

/// Largest magnitude accepted for an integer input; anything larger does not
/// fit the width the encrypted paths use and is rejected rather than clamped.
pub const INPUT_LIMIT: i64 = 1 << 40;

/// One subject's feature values, checked against a model: every feature has
/// a value clamped to its domain, or is missing with a points treatment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    values: Vec<Option<i64>>,
}

impl Record {
    /// Reads inputs given as a JSON object `{feature: value}`. Integers for
    /// integer features, category names for categorical ones, `null` or an
    /// absent key for a missing value. Values outside a feature's range are
    /// clamped to it; values that do not fit `±2^40` are rejected.
    pub fn from_json(model: &Model, json: &Value) -> Result<Record> {
        let Value::Object(map) = json else {
            return Err(Error::Input { feature: "*".into(), message: "inputs must be a JSON object".into() });
        };
        for key in map.keys() {
            if model.feature_index(key).is_none() {
                return Err(Error::UnknownFeature(key.clone()));
            }
        }
        let mut raw = BTreeMap::new();
        for (i, f) in model.features().iter().enumerate() {
            let value = match map.get(&f.name) {
                None | Some(Value::Null) => None,
                Some(v) => Some(RawValue::from_json(&f.name, &f.kind, v)?),
            };
            raw.insert(i, value);
        }
        Record::from_raw(model, raw)
    }

    /// Builds a record from raw values by feature index (`None` = missing).
    pub fn from_raw(model: &Model, raw: BTreeMap<usize, Option<RawValue>>) -> Result<Record> {
        let values = model
            .features()
            .iter()
            .enumerate()
            .map(|(i, f)| checked(f, raw.get(&i).cloned().flatten()))
            .collect::<Result<_>>()?;
        Ok(Record { values })
    }

    /// Reads one party's own inputs from a JSON object, as a party node
    /// does from its store: only the features the model assigns to `party`
    /// are read and checked; other keys are ignored (a party's book holds
    /// columns no model uses) and other parties' features are left missing,
    /// which [`crate::Plan::contribution`] never reads.
    pub fn for_party(model: &Model, party: usize, json: &Value) -> Result<Record> {
        let Value::Object(map) = json else {
            return Err(Error::Input { feature: "*".into(), message: "inputs must be a JSON object".into() });
        };
        if party >= model.parties().len() {
            return Err(Error::UnknownParty(format!("#{party}")));
        }
        let values = model
            .features()
            .iter()
            .map(|f| {
                if f.party != party {
                    return Ok(None);
                }
                let raw = match map.get(&f.name) {
                    None | Some(Value::Null) => None,
                    Some(v) => Some(RawValue::from_json(&f.name, &f.kind, v)?),
                };
                checked(f, raw)
            })
            .collect::<Result<_>>()?;
        Ok(Record { values })
    }

    /// The clamped domain value of a feature, `None` when missing.
    pub fn value(&self, feature: usize) -> Option<i64> {
        self.values[feature]
    }

    /// Every feature's value, by feature index (`None` = missing).
    pub fn values(&self) -> &[Option<i64>] {
        &self.values
    }
}

/// One feature's value checked against its declaration: clamped to its
/// range, a category resolved to its index, a missing value treated as the
/// model says.
fn checked(f: &Feature, raw: Option<RawValue>) -> Result<Option<i64>> {
    match raw {
        Some(RawValue::Int(x)) => {
            let FeatureKind::Integer { min, max } = f.kind else {
                return Err(Error::Input { feature: f.name.clone(), message: "expected a category name".into() });
            };
            if x.abs() > INPUT_LIMIT {
                return Err(Error::Input { feature: f.name.clone(), message: "integer does not fit ±2^40".into() });
            }
            Ok(Some(x.clamp(min, max)))
        }
        Some(RawValue::Category(c)) => {
            let FeatureKind::Categorical { categories } = &f.kind else {
                return Err(Error::Input { feature: f.name.clone(), message: "expected an integer".into() });
            };
            match categories.iter().position(|x| *x == c) {
                Some(idx) => Ok(Some(idx as i64)),
                None => Err(Error::Input {
                    feature: f.name.clone(),
                    message: format!("unknown category; declared: {}", categories.join(", ")),
                }),
            }
        }
        None => match f.missing {
            Missing::Reject => Err(Error::Input {
                feature: f.name.clone(),
                message: "value is missing and the model requires it".into(),
            }),
            Missing::Impute(v) => Ok(Some(v)),
            Missing::Points(_) => Ok(None),
        },
    }
}

/// A raw input value before it is checked against a feature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RawValue {
    /// An integer.
    Int(i64),
    /// A category name.
    Category(String),
}

impl RawValue {
    fn from_json(name: &str, kind: &FeatureKind, v: &Value) -> Result<RawValue> {
        let wrong = |m: &str| Error::Input { feature: name.to_string(), message: m.to_string() };
        match (kind, v) {
            (FeatureKind::Integer { .. }, Value::Number(n)) => match n.as_i64() {
                Some(x) => Ok(RawValue::Int(x)),
                None if n.is_f64() => Err(wrong("expected an integer, got a fraction")),
                None => Err(wrong("integer does not fit ±2^40")),
            },
            (FeatureKind::Integer { .. }, _) => Err(wrong("expected an integer")),
            (FeatureKind::Categorical { .. }, Value::String(s)) => Ok(RawValue::Category(s.clone())),
            (FeatureKind::Categorical { .. }, _) => Err(wrong("expected a category name")),
        }
    }
}

/// Approve, refer or decline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Declined, by score or by a knock-out.
    Decline = 0,
    /// Sent to manual review.
    Refer = 1,
    /// Approved.
    Approve = 2,
}

impl Verdict {
    /// From the encrypted circuit's encoding.
    pub fn from_code(code: u64) -> Option<Verdict> {
        match code {
            0 => Some(Verdict::Decline),
            1 => Some(Verdict::Refer),
            2 => Some(Verdict::Approve),
            _ => None,
        }
    }
}

/// What a lender learns: each field is present only when the model's output
/// policy reveals it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Bundle {
    /// The decision.
    pub decision: Option<Verdict>,
    /// Index of the score band in [`Model::bands`].
    pub band: Option<usize>,
    /// Index of the band whose rate tier is offered; `Some(None)` when
    /// declined (no tier).
    pub rate_tier: Option<Option<usize>>,
    /// Credit line in the model's line unit; zero when declined.
    pub credit_line: Option<u64>,
    /// Feature indices that lost the most points, worst first.
    pub reasons: Option<Vec<usize>>,
    /// The raw total score.
    pub score: Option<i64>,
}

impl Bundle {
    /// Keeps only the outputs the model reveals.
    pub fn restricted(mut self, model: &Model) -> Bundle {
        if !model.reveals(Output::Decision) {
            self.decision = None;
        }
        if !model.reveals(Output::Band) {
            self.band = None;
        }
        if !model.reveals(Output::RateTier) {
            self.rate_tier = None;
        }
        if !model.reveals(Output::CreditLine) {
            self.credit_line = None;
        }
        if !model.reveals(Output::Reasons) {
            self.reasons = None;
        }
        if !model.reveals(Output::Score) {
            self.score = None;
        }
        self
    }

    /// A human-readable JSON rendering with names instead of indices.
    pub fn describe(&self, model: &Model) -> Value {
        let mut out = serde_json::Map::new();
        if let Some(d) = self.decision {
            out.insert("decision".into(), serde_json::to_value(d).unwrap_or(Value::Null));
        }
        if let Some(b) = self.band {
            out.insert("band".into(), model.bands().get(b).map(|b| b.name.clone()).into());
        }
        if let Some(t) = &self.rate_tier {
            let tier = t.and_then(|b| model.bands().get(b)).map(|b| b.rate_tier.clone());
            out.insert("rate_tier".into(), tier.into());
        }
        if let Some(l) = self.credit_line {
            out.insert("credit_line".into(), l.into());
            if let Some(cl) = model.credit_line() {
                out.insert("credit_line_unit".into(), cl.unit.clone().into());
            }
        }
        if let Some(r) = &self.reasons {
            let names: Vec<Value> = r
                .iter()
                .map(|&i| model.features().get(i).map(|f| format!("{} ({})", f.reason, f.name)).into())
                .collect();
            out.insert("reasons".into(), names.into());
        }
        if let Some(s) = self.score {
            out.insert("score".into(), s.into());
        }
        Value::Object(out)
    }
}

/// Points a feature awards for a record value (`None` = missing, which a
/// [`Record`] only holds for features scored when missing).
pub(crate) fn points(model: &Model, feature: usize, value: Option<i64>) -> i64 {
    let f = &model.features()[feature];
    match (value, &f.missing) {
        (Some(v), _) => f.bins[f.bin_of(v)].points,
        (None, Missing::Points(p)) => *p,
        (None, _) => unreachable!("a record has values for features that cannot be missing"),
    }
}

/// Whether a knock-out condition holds; a missing value satisfies it.
pub fn condition_holds(c: &Condition, value: Option<i64>) -> bool {
    value.is_none_or(|v| c.op.holds(v, c.value))
}

/// The credit line for a band before the decline rule: the model's formula,
/// floored to the granularity and capped; in line units of `granularity`.
pub fn line_steps(model: &Model, band: usize, value: i64) -> u64 {
    let Some(line) = model.credit_line() else { return 0 };
    let m = u128::from(model.bands()[band].line_multiplier);
    let raw = m * value.max(0) as u128 / u128::from(line.divisor) / u128::from(line.granularity);
    raw.min(u128::from(line.cap / line.granularity)) as u64
}

/// Evaluates the whole model in the clear. Returns every output; use
/// [`Bundle::restricted`] for what a lender may see.
pub fn evaluate(model: &Model, record: &Record) -> Bundle {
    let n = model.features().len();
    let pts: Vec<i64> = (0..n).map(|f| points(model, f, record.value(f))).collect();
    let score = model.base_points() + pts.iter().sum::<i64>();

    let knocked = model.knockouts().iter().any(|k| k.when.iter().all(|c| condition_holds(c, record.value(c.feature))));
    let decision = if knocked {
        Verdict::Decline
    } else if score >= model.approve_at() {
        Verdict::Approve
    } else if score >= model.refer_at() {
        Verdict::Refer
    } else {
        Verdict::Decline
    };

    let band =
        model.bands().iter().position(|b| b.min_score.is_none_or(|m| score >= m)).unwrap_or(model.bands().len() - 1);
    let offered = decision != Verdict::Decline;
    let rate_tier = offered.then_some(band);
    let credit_line = match (model.credit_line(), offered) {
        (Some(line), true) => {
            let v = record.value(line.feature).unwrap_or(0);
            line_steps(model, band, v) * line.granularity
        }
        _ => 0,
    };

    // Rank by points lost against the feature's best, then party order, then
    // feature order; features that lost nothing are never reasons.
    let mut lost: Vec<(i64, usize, usize)> = (0..n)
        .map(|f| (model.features()[f].best_points() - pts[f], model.features()[f].party, f))
        .filter(|&(l, _, _)| l > 0)
        .collect();
    lost.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    let reasons = lost.iter().take(model.reasons()).map(|&(_, _, f)| f).collect();

    Bundle {
        decision: Some(decision),
        band: Some(band),
        rate_tier: Some(rate_tier),
        credit_line: Some(credit_line),
        reasons: Some(reasons),
        score: Some(score),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_party_reads_only_its_own_features() {
        let m = Model::cross_border_seller();
        let full = Record::from_json(&m, &seller()).expect("full record");
        let mut own = seller();
        // A party's book holds columns no model uses, and bad values in
        // other parties' columns are not its business.
        own["internal_note"] = json!("vip");
        own["outstanding_debt_k"] = json!("not a number");
        let platform = Record::for_party(&m, 0, &own).expect("platform record");
        for (i, f) in m.features().iter().enumerate() {
            let want = if f.party == 0 { full.value(i) } else { None };
            assert_eq!(platform.value(i), want, "{}", f.name);
        }
        let bank = m.party_index("bank").expect("bank");
        let e = Record::for_party(&m, bank, &own).unwrap_err();
        assert!(e.to_string().contains("outstanding_debt_k"), "{e}");
        assert!(Record::for_party(&m, 9, &own).is_err());
        assert!(Record::for_party(&m, 0, &json!([1])).is_err());
    }

    fn seller() -> Value {
        json!({
            "gmv_12m_k": 1400, "gmv_trend_pct": 12, "refund_rate_bp": 650, "months_active": 40,
            "store_rating_x10": 44, "on_time_rate_bp": 9550, "inventory_turnover_days": 70,
            "overseas_stock_k": 120, "collection_cycle_days": 21, "late_repayments_12m": 1,
            "outstanding_debt_k": 300, "major_violations": 0
        })
    }

    /// Worked by hand from models/cross_border_seller.toml: nine features in
    /// their 10-point bin, late repayments and debt at 5, no violations at
    /// 15: 420 + 115 = 535, band B (>= 530), line 2 * 1400 / 12 = 233 -> 230.
    #[test]
    fn hand_computed_seller() {
        let m = Model::cross_border_seller();
        let b = evaluate(&m, &Record::from_json(&m, &seller()).unwrap());
        assert_eq!(b.score, Some(535));
        assert_eq!(b.decision, Some(Verdict::Approve));
        assert_eq!(b.band, Some(1));
        assert_eq!(b.rate_tier, Some(Some(1)));
        assert_eq!(b.credit_line, Some(230));
        let late = m.feature_index("late_repayments_12m").unwrap();
        let debt = m.feature_index("outstanding_debt_k").unwrap();
        assert_eq!(b.reasons, Some(vec![late, debt]));
        // The default policy hides the raw score.
        assert_eq!(b.clone().restricted(&m).score, None);
        assert_eq!(b.restricted(&m).decision, Some(Verdict::Approve));
    }

    #[test]
    fn knock_outs_and_out_of_range_values() {
        let m = Model::cross_border_seller();
        let mut v = seller();
        v["major_violations"] = json!(1);
        let b = evaluate(&m, &Record::from_json(&m, &v).unwrap());
        assert_eq!((b.decision, b.rate_tier, b.credit_line), (Some(Verdict::Decline), Some(None), Some(0)));

        // Cross-party rule: heavy refunds alone do not knock out; with late
        // repayments they do.
        let mut v = seller();
        v["refund_rate_bp"] = json!(2000);
        assert_ne!(evaluate(&m, &Record::from_json(&m, &v).unwrap()).score, None);
        v["late_repayments_12m"] = json!(2);
        assert_eq!(evaluate(&m, &Record::from_json(&m, &v).unwrap()).decision, Some(Verdict::Decline));

        // Values beyond the range are clamped to it: a GMV of 10^9 scores and
        // lends like the range's top.
        let mut v = seller();
        v["gmv_12m_k"] = json!(1_000_000_000i64);
        let r = Record::from_json(&m, &v).unwrap();
        assert_eq!(r.value(0), Some(50_000));
        assert_eq!(evaluate(&m, &r).credit_line, Some(300));
    }

    #[test]
    fn bad_inputs_name_the_feature() {
        let m = Model::cross_border_seller();
        let cases = [
            ("gmv_12m_k", json!("lots"), "expected an integer"),
            ("gmv_12m_k", json!(12.5), "fraction"),
            ("gmv_12m_k", json!(1i64 << 50), "does not fit"),
            ("gmv_12m_k", json!(u64::MAX), "does not fit"),
            ("months_active", Value::Null, "missing"),
        ];
        for (feature, value, want) in cases {
            let mut v = seller();
            v[feature] = value;
            match Record::from_json(&m, &v) {
                Err(Error::Input { feature: f, message }) => {
                    assert_eq!(f, feature);
                    assert!(message.contains(want), "{message}");
                }
                other => panic!("{feature}: expected an input error, got {other:?}"),
            }
        }
        let mut v = seller();
        v["credit_score"] = json!(700);
        assert!(matches!(Record::from_json(&m, &v), Err(Error::UnknownFeature(f)) if f == "credit_score"));
        assert!(matches!(Record::from_json(&m, &json!([1, 2])), Err(Error::Input { .. })));
        // A missing value with a points treatment is fine.
        let mut v = seller();
        v["store_rating_x10"] = Value::Null;
        assert_eq!(Record::from_json(&m, &v).unwrap().value(4), None);
    }
}
