//! The model file's schema as written: what [`Model::to_toml`](crate::Model::to_toml)
//! produces and what programs that fit or edit models build, then validate
//! with [`Model::from_file`](crate::Model::from_file).
//!
//! The types mirror the `jointscore.model.v1` file field for field and are
//! plain data: nothing here is checked until [`Model::from_file`](crate::Model::from_file)
//! validates it, exactly as a file read from disk would be.

use serde::Serialize;

use super::{CmpOp, FeatureKind, MODEL_FORMAT, Output};
use crate::error::{Error, Result};

/// A model file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Model {
    /// Model name, e.g. `cross_border_seller`.
    pub name: String,
    /// Free-form version string.
    pub version: String,
    /// What the model is for, for people; not part of the id.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Party names, in declaration order.
    pub parties: Vec<String>,
    /// Points every applicant starts with.
    pub base_points: i64,
    /// Features, in declaration order.
    pub features: Vec<Feature>,
    /// Knock-out rules.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub knockouts: Vec<Knockout>,
    /// Approve and refer cutoffs.
    pub cutoffs: Cutoffs,
    /// Bands from best to worst; the last has no `min_score`.
    pub bands: Vec<Band>,
    /// The credit line, if the model offers one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credit_line: Option<CreditLine>,
    /// Reason codes; absent means two.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasons: Option<Reasons>,
    /// The output policy; absent means everything but the raw score.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outputs: Option<Outputs>,
}

/// A feature of a model file: exactly one of `range` and `categories`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Feature {
    /// Name: letters, digits and `_`.
    pub name: String,
    /// The owning party's name.
    pub party: String,
    /// Unit of the raw value, for people.
    pub unit: String,
    /// Reason-code text; absent means the name with spaces.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Inclusive integer range.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub range: Option<[i64; 2]>,
    /// Categories, in declaration order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub categories: Option<Vec<String>>,
    /// Treatment of an absent value.
    pub missing: Missing,
    /// Bins covering the whole domain, in domain order.
    pub bins: Vec<Bin>,
}

/// Treatment of an absent value, written `"reject"`, `{ impute = VALUE }` or
/// `{ points = N }`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Missing {
    /// An absent value is an input error.
    Reject,
    /// An absent value is replaced by this domain value.
    Impute(Value),
    /// An absent value scores these points.
    Points(i64),
}

/// A domain value: an integer, or a category name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Value {
    /// A value of an integer feature.
    Integer(i64),
    /// A category of a categorical feature.
    Category(String),
}

/// A scorecard bin. Integer features give `max` (and optionally `min`,
/// which defaults to the previous bin's end; the last bin's `max` defaults
/// to the range end); categorical features give `categories`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Bin {
    /// Smallest value in the bin.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min: Option<i64>,
    /// Largest value in the bin.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max: Option<i64>,
    /// The categories in the bin.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub categories: Option<Vec<String>>,
    /// Points awarded.
    pub points: i64,
}

/// A knock-out rule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Knockout {
    /// Short code.
    pub code: String,
    /// What the rule is for, for people.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Conditions, each `FEATURE OP VALUE` (see [`condition`]).
    pub when: Vec<String>,
}

/// The `[cutoffs]` table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Cutoffs {
    /// Score at or above which the decision is approve.
    pub approve: i64,
    /// Score at or above which the decision is at least refer.
    pub refer: i64,
}

/// A score band.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Band {
    /// Name, e.g. `A`.
    pub name: String,
    /// Lowest score in the band; absent on the last band only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_score: Option<i64>,
    /// Rate tier offered in the band.
    pub rate_tier: String,
    /// Multiplier in the credit line formula; 0 offers no line.
    #[serde(skip_serializing_if = "is_zero")]
    pub line_multiplier: u32,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

/// The `[credit_line]` table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CreditLine {
    /// `band_multiplier * FEATURE / DIVISOR`.
    pub formula: String,
    /// Largest line offered.
    pub cap: u64,
    /// Lines are multiples of this.
    pub granularity: u64,
    /// Unit of the line, for people.
    pub unit: String,
}

/// The `[reasons]` table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Reasons {
    /// How many reason codes to report.
    pub count: usize,
}

/// The `[outputs]` table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Outputs {
    /// The outputs the lender may decrypt.
    pub reveal: Vec<Output>,
}

/// A knock-out condition as written: `feature op value`, a categorical
/// value as a TOML string so that any category name reads back.
pub fn condition(feature: &str, op: CmpOp, value: &Value) -> String {
    let value = match value {
        Value::Integer(v) => v.to_string(),
        Value::Category(c) => toml::Value::String(c.clone()).to_string(),
    };
    format!("{feature} {} {value}", op.symbol())
}

/// The file with its format line first.
#[derive(Serialize)]
struct Versioned<'a> {
    format: &'static str,
    #[serde(flatten)]
    model: &'a Model,
}

impl Model {
    /// The file as TOML, with `format = "jointscore.model.v1"`. Fails only
    /// for values TOML cannot hold (an integer beyond `i64`).
    pub fn to_toml(&self) -> Result<String> {
        toml::to_string(&Versioned { format: MODEL_FORMAT, model: self }).map_err(|e| Error::Invalid {
            field: "model".into(),
            line: 0,
            message: format!("cannot be written as TOML: {e}"),
        })
    }

    /// The file of a validated model: every default spelt out, bins by their
    /// upper ends.
    pub(super) fn from_model(m: &super::Model) -> Model {
        let features = m
            .features
            .iter()
            .map(|f| {
                let (range, categories, bins) = match &f.kind {
                    FeatureKind::Integer { min, max } => {
                        let last = f.bins.len().saturating_sub(1);
                        let bins = f
                            .bins
                            .iter()
                            .enumerate()
                            .map(|(i, b)| Bin {
                                min: None,
                                max: (i < last).then(|| b.ranges.first().map_or(*max, |&(_, hi)| hi)),
                                categories: None,
                                points: b.points,
                            })
                            .collect();
                        (Some([*min, *max]), None, bins)
                    }
                    FeatureKind::Categorical { categories } => {
                        let bins = f
                            .bins
                            .iter()
                            .map(|b| Bin {
                                min: None,
                                max: None,
                                categories: Some(b.ranges.iter().map(|&(c, _)| category(categories, c)).collect()),
                                points: b.points,
                            })
                            .collect();
                        (None, Some(categories.clone()), bins)
                    }
                };
                let missing = match f.missing {
                    super::Missing::Reject => Missing::Reject,
                    super::Missing::Points(p) => Missing::Points(p),
                    super::Missing::Impute(v) => Missing::Impute(domain_value(&f.kind, v)),
                };
                Feature {
                    name: f.name.clone(),
                    party: m.parties[f.party].clone(),
                    unit: f.unit.clone(),
                    reason: Some(f.reason.clone()),
                    range,
                    categories,
                    missing,
                    bins,
                }
            })
            .collect();
        let knockouts = m
            .knockouts
            .iter()
            .map(|k| Knockout {
                code: k.code.clone(),
                description: k.description.clone(),
                when: k
                    .when
                    .iter()
                    .map(|c| {
                        let f = &m.features[c.feature];
                        condition(&f.name, c.op, &domain_value(&f.kind, c.value))
                    })
                    .collect(),
            })
            .collect();
        let credit_line = m.credit_line.as_ref().map(|l| {
            let feature = &m.features[l.feature].name;
            CreditLine {
                formula: if l.divisor == 1 {
                    format!("band_multiplier * {feature}")
                } else {
                    format!("band_multiplier * {feature} / {}", l.divisor)
                },
                cap: l.cap,
                granularity: l.granularity,
                unit: l.unit.clone(),
            }
        });
        Model {
            name: m.name.clone(),
            version: m.version.clone(),
            description: m.description.clone(),
            parties: m.parties.clone(),
            base_points: m.base_points,
            features,
            knockouts,
            cutoffs: Cutoffs { approve: m.approve_at, refer: m.refer_at },
            bands: m
                .bands
                .iter()
                .map(|b| Band {
                    name: b.name.clone(),
                    min_score: b.min_score,
                    rate_tier: b.rate_tier.clone(),
                    line_multiplier: b.line_multiplier,
                })
                .collect(),
            credit_line,
            reasons: Some(Reasons { count: m.reasons }),
            outputs: Some(Outputs { reveal: m.reveal.iter().copied().collect() }),
        }
    }
}

/// A domain value of a validated feature as written in files.
fn domain_value(kind: &FeatureKind, v: i64) -> Value {
    match kind {
        FeatureKind::Integer { .. } => Value::Integer(v),
        FeatureKind::Categorical { categories } => Value::Category(category(categories, v)),
    }
}

/// The name of category `index`; validated models only hold indices of
/// declared categories.
fn category(categories: &[String], index: i64) -> String {
    usize::try_from(index).ok().and_then(|i| categories.get(i)).cloned().unwrap_or_default()
}
