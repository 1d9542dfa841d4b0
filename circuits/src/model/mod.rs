//! The credit model: its types, read-only accessors and the model id.
//!
//! A model is a TOML document (format `jointscore.model.v1`). Reading one
//! ([`Model::from_toml`]) checks every cross-reference and range and reports
//! the first problem with the field and the line it sits on. A [`Model`] that
//! exists is consistent and cannot be changed: the planner and the evaluators
//! rely on that, and its [`id`](Model::id), which parties approve, always
//! describes what it computes. A variant is a new model, made through
//! [`Model::from_file`] (or [`Model::with_reveal`]) and validated again.
//!
//! The pieces: `raw` is the file schema as read (with spans for error
//! lines), `validate` turns it into a [`Model`], [`file`] is the schema as
//! written ([`Model::to_toml`]), `canonical` computes the id.

mod canonical;
pub mod file;
mod raw;
#[cfg(test)]
mod tests;
mod validate;

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The only model format this version reads.
pub const MODEL_FORMAT: &str = "jointscore.model.v1";

/// Largest number of categories a categorical feature may declare; the
/// encrypted paths index categories (and a missing marker) within one 4-bit
/// block.
pub const MAX_CATEGORIES: usize = 15;

/// Largest number of scorecard bins per feature, for the same reason.
pub const MAX_BINS: usize = 15;

/// Largest number of reason codes a model may ask for.
pub const MAX_REASONS: usize = 2;

/// The `cross_border_seller` model shipped with jointscore.
pub const CROSS_BORDER_SELLER: &str = include_str!("../../../models/cross_border_seller.toml");

/// Which of a model's outputs the lender may decrypt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Output {
    /// Approve, refer or decline.
    Decision,
    /// The score band.
    Band,
    /// The rate tier of the band (none when declined).
    RateTier,
    /// The credit line (zero when declined).
    CreditLine,
    /// The features that lost the most points.
    Reasons,
    /// The raw total score.
    Score,
}

impl Output {
    /// Every output, in report order.
    pub const ALL: [Output; 6] =
        [Output::Decision, Output::Band, Output::RateTier, Output::CreditLine, Output::Reasons, Output::Score];

    /// The name used in model files and reports.
    pub fn name(self) -> &'static str {
        match self {
            Output::Decision => "decision",
            Output::Band => "band",
            Output::RateTier => "rate_tier",
            Output::CreditLine => "credit_line",
            Output::Reasons => "reasons",
            Output::Score => "score",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Output> {
        Output::ALL.into_iter().find(|o| o.name() == s)
    }
}

/// A validated credit model. Construct with [`Model::from_toml`] or
/// [`Model::from_file`]; it cannot be changed afterwards, so its
/// [`id`](Model::id) always describes it.
#[derive(Clone, Debug)]
pub struct Model {
    name: String,
    version: String,
    description: String,
    parties: Vec<String>,
    base_points: i64,
    features: Vec<Feature>,
    knockouts: Vec<Knockout>,
    approve_at: i64,
    refer_at: i64,
    bands: Vec<Band>,
    credit_line: Option<CreditLine>,
    reasons: usize,
    reveal: BTreeSet<Output>,
    id: String,
}

/// One input feature, owned by one party.
#[derive(Clone, Debug, Serialize)]
pub struct Feature {
    /// Name used in inputs and reports.
    pub name: String,
    /// Index of the owning party in [`Model::parties`].
    pub party: usize,
    /// Unit of the raw value, for people.
    pub unit: String,
    /// Text shown when this feature is a reason code.
    pub reason: String,
    /// Domain of the raw value.
    pub kind: FeatureKind,
    /// What happens when the value is absent.
    pub missing: Missing,
    /// Scorecard bins covering the whole domain, in domain order.
    pub bins: Vec<Bin>,
}

/// The domain of a feature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum FeatureKind {
    /// An integer in `[min, max]`; values outside are clamped to the range.
    Integer {
        /// Smallest value the model distinguishes.
        min: i64,
        /// Largest value the model distinguishes.
        max: i64,
    },
    /// One of a declared list of categories.
    Categorical {
        /// The categories, in declaration order.
        categories: Vec<String>,
    },
}

/// Treatment of an absent value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum Missing {
    /// An absent value is an input error.
    Reject,
    /// An absent value is replaced by this domain value (a category index for
    /// categorical features).
    Impute(i64),
    /// An absent value scores these points; knock-out conditions on the
    /// feature count as holding (the conservative reading).
    Points(i64),
}

/// A scorecard bin: an inclusive range of domain values (category indices for
/// categorical features) and its points.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Bin {
    /// Domain values in this bin, as inclusive ranges.
    pub ranges: Vec<(i64, i64)>,
    /// Points awarded.
    pub points: i64,
}

/// A knock-out rule: decline when every condition holds.
#[derive(Clone, Debug, Serialize)]
pub struct Knockout {
    /// Short code reported to people operating the model.
    pub code: String,
    /// What the rule is for, for people; not part of the model id.
    #[serde(skip)]
    pub description: String,
    /// Conditions; they may concern features of different parties.
    pub when: Vec<Condition>,
}

/// A comparison of one feature against a constant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Condition {
    /// Feature index.
    pub feature: usize,
    /// Comparison.
    pub op: CmpOp,
    /// Constant (a category index for categorical features).
    pub value: i64,
}

/// Comparison operators allowed in conditions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum CmpOp {
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `==`
    Eq,
    /// `!=`
    Ne,
}

impl CmpOp {
    /// The operator as written in model files.
    pub fn symbol(self) -> &'static str {
        match self {
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
            CmpOp::Eq => "==",
            CmpOp::Ne => "!=",
        }
    }

    /// Applies the comparison.
    pub fn holds(self, a: i64, b: i64) -> bool {
        match self {
            CmpOp::Lt => a < b,
            CmpOp::Le => a <= b,
            CmpOp::Gt => a > b,
            CmpOp::Ge => a >= b,
            CmpOp::Eq => a == b,
            CmpOp::Ne => a != b,
        }
    }
}

/// A score band.
#[derive(Clone, Debug, Serialize)]
pub struct Band {
    /// Name, e.g. `A`.
    pub name: String,
    /// Lowest score in the band; `None` for the last (catch-all) band.
    pub min_score: Option<i64>,
    /// Rate tier offered in this band when not declined.
    pub rate_tier: String,
    /// Multiplier in the credit line formula; 0 offers no line.
    pub line_multiplier: u32,
}

/// `line = min(cap, floor(band multiplier * feature / divisor))`, rounded
/// down to a multiple of `granularity`; zero when declined.
#[derive(Clone, Debug, Serialize)]
pub struct CreditLine {
    /// The feature the line is a multiple of.
    pub feature: usize,
    /// Divisor applied after the band multiplier.
    pub divisor: u64,
    /// Largest line offered.
    pub cap: u64,
    /// Lines are multiples of this.
    pub granularity: u64,
    /// Unit of the line, for people.
    pub unit: String,
}

impl Model {
    /// Parses and validates a model file.
    pub fn from_toml(source: &str) -> Result<Model> {
        let raw: raw::RawModel = toml::from_str(source).map_err(|e| Error::Parse(e.to_string()))?;
        validate::Validator::new(source).model(raw)
    }

    /// Validates a model written as its file schema (the way programs that
    /// fit or edit models build one). Errors name the line in the file's
    /// [`to_toml`](file::Model::to_toml) rendering.
    pub fn from_file(file: &file::Model) -> Result<Model> {
        Model::from_toml(&file.to_toml()?)
    }

    /// The shipped `cross_border_seller` model.
    pub fn cross_border_seller() -> Model {
        Model::from_toml(CROSS_BORDER_SELLER).unwrap_or_else(|e| panic!("the shipped model must validate: {e}"))
    }

    /// This model as its file schema, to edit into a variant (then
    /// [`Model::from_file`]) or to write.
    pub fn to_file(&self) -> file::Model {
        file::Model::from_model(self)
    }

    /// This model as a `jointscore.model.v1` file. Reading it back gives a
    /// model with the same [`id`](Model::id) and the same descriptions.
    pub fn to_toml(&self) -> String {
        // Validation bounds every integer by 2^40, well inside TOML's i64.
        self.to_file().to_toml().unwrap_or_else(|e| panic!("a validated model is writable: {e}"))
    }

    /// The same model with another output policy, validated again (for
    /// example, revealing a credit line needs a `[credit_line]`); the
    /// variant has its own id.
    pub fn with_reveal(&self, outputs: impl IntoIterator<Item = Output>) -> Result<Model> {
        let mut file = self.to_file();
        file.outputs =
            Some(file::Outputs { reveal: outputs.into_iter().collect::<BTreeSet<_>>().into_iter().collect() });
        Model::from_file(&file)
    }

    /// The model id: hex SHA-256 of the canonical (validated, normalised)
    /// form, so two files that mean the same model share an id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Model name, e.g. `cross_border_seller`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Free-form version string chosen by the model's author.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// What the model is for, for people; not part of the id.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// Parties, in declaration order; indices into this list identify them.
    pub fn parties(&self) -> &[String] {
        &self.parties
    }

    /// Points every applicant starts with.
    pub fn base_points(&self) -> i64 {
        self.base_points
    }

    /// Features in declaration order.
    pub fn features(&self) -> &[Feature] {
        &self.features
    }

    /// Knock-out rules: any rule whose conditions all hold forces a decline.
    pub fn knockouts(&self) -> &[Knockout] {
        &self.knockouts
    }

    /// Score at or above which the decision is approve.
    pub fn approve_at(&self) -> i64 {
        self.approve_at
    }

    /// Score at or above which the decision is at least refer.
    pub fn refer_at(&self) -> i64 {
        self.refer_at
    }

    /// Bands from best to worst; the last one has no lower bound.
    pub fn bands(&self) -> &[Band] {
        &self.bands
    }

    /// The credit line formula, if the model offers lines.
    pub fn credit_line(&self) -> Option<&CreditLine> {
        self.credit_line.as_ref()
    }

    /// How many reason codes to report (0 to [`MAX_REASONS`]).
    pub fn reasons(&self) -> usize {
        self.reasons
    }

    /// The outputs the lender may decrypt.
    pub fn reveal(&self) -> &BTreeSet<Output> {
        &self.reveal
    }

    /// Index of a feature by name.
    pub fn feature_index(&self, name: &str) -> Option<usize> {
        self.features.iter().position(|f| f.name == name)
    }

    /// Index of a party by name.
    pub fn party_index(&self, name: &str) -> Result<usize> {
        self.parties.iter().position(|p| p == name).ok_or_else(|| Error::UnknownParty(name.to_string()))
    }

    /// Whether the policy reveals this output.
    pub fn reveals(&self, output: Output) -> bool {
        self.reveal.contains(&output)
    }
}

impl Feature {
    /// Number of domain values minus one: the largest offset from the
    /// domain's start.
    pub fn span(&self) -> u64 {
        match &self.kind {
            FeatureKind::Integer { min, max } => (max - min) as u64,
            FeatureKind::Categorical { categories } => categories.len() as u64 - 1,
        }
    }

    /// Smallest domain value.
    pub fn domain_min(&self) -> i64 {
        match &self.kind {
            FeatureKind::Integer { min, .. } => *min,
            FeatureKind::Categorical { .. } => 0,
        }
    }

    /// Index of the bin holding a domain value; values outside the domain
    /// are clamped to it first.
    pub fn bin_of(&self, value: i64) -> usize {
        let value = value.clamp(self.domain_min(), self.domain_min() + self.span() as i64);
        self.bins
            .iter()
            .position(|b| b.ranges.iter().any(|&(lo, hi)| lo <= value && value <= hi))
            .unwrap_or_else(|| unreachable!("validated bins cover the domain"))
    }

    /// Best points this feature can award, the missing treatment included.
    pub fn best_points(&self) -> i64 {
        self.point_values().max().unwrap_or(0)
    }

    /// Worst points this feature can award, the missing treatment included.
    pub fn worst_points(&self) -> i64 {
        self.point_values().min().unwrap_or(0)
    }

    /// Every points value the feature can award.
    pub fn point_values(&self) -> impl Iterator<Item = i64> + '_ {
        let missing = match self.missing {
            Missing::Points(p) => Some(p),
            _ => None,
        };
        self.bins.iter().map(|b| b.points).chain(missing)
    }
}
