//! The credit model file: schema, validation and the model id.
//!
//! A model is a TOML document (format `jointscore.model.v1`). Reading one
//! checks every cross-reference and range and reports the first problem with
//! the field and the line it sits on. A [`Model`] that exists is consistent:
//! the planner and the evaluators rely on that.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use toml::Spanned;

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
pub const CROSS_BORDER_SELLER: &str = include_str!("../../models/cross_border_seller.toml");

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

    fn parse(s: &str) -> Option<Output> {
        Output::ALL.into_iter().find(|o| o.name() == s)
    }
}

/// A validated credit model. Construct with [`Model::from_toml`].
#[derive(Clone, Debug, Serialize)]
pub struct Model {
    /// Model name, e.g. `cross_border_seller`.
    pub name: String,
    /// Free-form version string chosen by the model's author.
    pub version: String,
    /// Parties, in declaration order; indices into this list identify them.
    pub parties: Vec<String>,
    /// Points every applicant starts with.
    pub base_points: i64,
    /// Features in declaration order.
    pub features: Vec<Feature>,
    /// Knock-out rules: any rule whose conditions all hold forces a decline.
    pub knockouts: Vec<Knockout>,
    /// Score at or above which the decision is approve.
    pub approve_at: i64,
    /// Score at or above which the decision is at least refer.
    pub refer_at: i64,
    /// Bands from best to worst; the last one has no lower bound.
    pub bands: Vec<Band>,
    /// The credit line formula, if the model offers lines.
    pub credit_line: Option<CreditLine>,
    /// How many reason codes to report (0 to [`MAX_REASONS`]).
    pub reasons: usize,
    /// The outputs the lender may decrypt.
    pub reveal: BTreeSet<Output>,
    #[serde(skip)]
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
        let raw: RawModel = toml::from_str(source).map_err(|e| Error::Parse(e.to_string()))?;
        Validator { source }.model(raw)
    }

    /// The shipped `cross_border_seller` model.
    pub fn cross_border_seller() -> Model {
        Model::from_toml(CROSS_BORDER_SELLER).unwrap_or_else(|e| panic!("the shipped model must validate: {e}"))
    }

    /// The model id: hex SHA-256 of the canonical (validated, normalised)
    /// form, so two files that mean the same model share an id.
    pub fn id(&self) -> &str {
        &self.id
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

// ---------------------------------------------------------------------------
// Raw schema, as written in files.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModel {
    format: Spanned<String>,
    name: Spanned<String>,
    version: String,
    #[serde(default)]
    #[allow(dead_code)] // documentation for people; not part of the semantics
    description: String,
    parties: Spanned<Vec<Spanned<String>>>,
    base_points: Spanned<i64>,
    features: Spanned<Vec<Spanned<RawFeature>>>,
    #[serde(default)]
    knockouts: Vec<Spanned<RawKnockout>>,
    cutoffs: Spanned<RawCutoffs>,
    bands: Spanned<Vec<Spanned<RawBand>>>,
    credit_line: Option<Spanned<RawLine>>,
    #[serde(default)]
    reasons: Option<Spanned<RawReasons>>,
    #[serde(default)]
    outputs: Option<Spanned<RawOutputs>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFeature {
    name: Spanned<String>,
    party: Spanned<String>,
    unit: String,
    #[serde(default)]
    reason: Option<String>,
    range: Option<Spanned<[i64; 2]>>,
    categories: Option<Spanned<Vec<String>>>,
    missing: Spanned<RawMissing>,
    bins: Spanned<Vec<Spanned<RawBin>>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawMissing {
    Word(String),
    Table(RawMissingTable),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMissingTable {
    impute: Option<toml::Value>,
    points: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBin {
    min: Option<i64>,
    max: Option<i64>,
    categories: Option<Vec<String>>,
    points: i64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKnockout {
    code: String,
    #[serde(default)]
    #[allow(dead_code)] // documentation for people
    description: String,
    when: Spanned<Vec<Spanned<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCutoffs {
    approve: i64,
    refer: i64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBand {
    name: String,
    min_score: Option<i64>,
    rate_tier: String,
    #[serde(default)]
    line_multiplier: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLine {
    formula: Spanned<String>,
    cap: u64,
    #[serde(default = "one")]
    granularity: u64,
    unit: String,
}

fn one() -> u64 {
    1
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReasons {
    count: Spanned<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOutputs {
    reveal: Spanned<Vec<Spanned<String>>>,
}

// ---------------------------------------------------------------------------
// Validation.

/// Largest absolute value accepted for ranges, points and cutoffs; keeps every
/// sum comfortably inside `i64`.
const LIMIT: i64 = 1 << 40;

struct Validator<'a> {
    source: &'a str,
}

impl Validator<'_> {
    fn line(&self, span: std::ops::Range<usize>) -> usize {
        let end = span.start.min(self.source.len());
        self.source[..end].bytes().filter(|&b| b == b'\n').count() + 1
    }

    fn err<T>(&self, field: &str, span: std::ops::Range<usize>, msg: impl Into<String>) -> Result<T> {
        Err(Error::Invalid { field: field.to_string(), line: self.line(span), message: msg.into() })
    }

    fn model(&self, raw: RawModel) -> Result<Model> {
        if raw.format.get_ref() != MODEL_FORMAT {
            return self.err(
                "format",
                raw.format.span(),
                format!("unsupported format `{}`; this version reads `{MODEL_FORMAT}`", raw.format.get_ref()),
            );
        }
        if raw.name.get_ref().trim().is_empty() {
            return self.err("name", raw.name.span(), "must not be empty");
        }
        self.bounded("base_points", raw.base_points.span(), *raw.base_points.get_ref())?;

        let mut parties = Vec::new();
        for p in raw.parties.get_ref() {
            if p.get_ref().trim().is_empty() {
                return self.err("parties", p.span(), "party names must not be empty");
            }
            if parties.contains(p.get_ref()) {
                return self.err("parties", p.span(), format!("party `{}` is listed twice", p.get_ref()));
            }
            parties.push(p.get_ref().clone());
        }
        if parties.is_empty() {
            return self.err("parties", raw.parties.span(), "at least one party is required");
        }

        let mut features: Vec<Feature> = Vec::new();
        for (i, f) in raw.features.get_ref().iter().enumerate() {
            let feature = self.feature(i, f, &parties)?;
            if features.iter().any(|g| g.name == feature.name) {
                return self.err(
                    &format!("features[{i}].name"),
                    f.get_ref().name.span(),
                    format!("duplicate feature `{}`", feature.name),
                );
            }
            features.push(feature);
        }
        if features.is_empty() {
            return self.err("features", raw.features.span(), "at least one feature is required");
        }

        let mut knockouts = Vec::new();
        for (i, k) in raw.knockouts.iter().enumerate() {
            let mut when = Vec::new();
            for c in k.get_ref().when.get_ref() {
                when.push(self.condition(&format!("knockouts[{i}].when"), c, &features)?);
            }
            if when.is_empty() {
                return self.err(
                    &format!("knockouts[{i}].when"),
                    k.get_ref().when.span(),
                    "needs at least one condition",
                );
            }
            knockouts.push(Knockout { code: k.get_ref().code.clone(), when });
        }

        let cut = raw.cutoffs.get_ref();
        self.bounded("cutoffs.approve", raw.cutoffs.span(), cut.approve)?;
        self.bounded("cutoffs.refer", raw.cutoffs.span(), cut.refer)?;
        if cut.refer > cut.approve {
            return self.err("cutoffs", raw.cutoffs.span(), "refer must not be above approve");
        }

        let bands = self.bands(&raw.bands)?;
        let credit_line = match &raw.credit_line {
            Some(line) => Some(self.credit_line(line, &features)?),
            None => None,
        };
        if credit_line.is_none() && bands.iter().any(|b| b.line_multiplier > 0) {
            return self.err("bands", raw.bands.span(), "bands set line_multiplier but the model has no [credit_line]");
        }

        let reasons = match &raw.reasons {
            Some(r) => {
                let n = *r.get_ref().count.get_ref();
                if n > MAX_REASONS {
                    return self.err(
                        "reasons.count",
                        r.get_ref().count.span(),
                        format!("at most {MAX_REASONS} reason codes are supported"),
                    );
                }
                n
            }
            None => 2,
        };

        let reveal = match &raw.outputs {
            Some(o) => {
                let mut set = BTreeSet::new();
                for name in o.get_ref().reveal.get_ref() {
                    let Some(out) = Output::parse(name.get_ref()) else {
                        return self.err(
                            "outputs.reveal",
                            name.span(),
                            format!(
                                "`{}` is not an output a lender may decrypt; allowed: decision, band, rate_tier, credit_line, reasons, score (raw features are never outputs)",
                                name.get_ref()
                            ),
                        );
                    };
                    if !set.insert(out) {
                        return self.err("outputs.reveal", name.span(), format!("`{}` listed twice", name.get_ref()));
                    }
                }
                if set.contains(&Output::CreditLine) && credit_line.is_none() {
                    return self.err(
                        "outputs.reveal",
                        o.span(),
                        "reveals credit_line but the model has no [credit_line]",
                    );
                }
                if set.contains(&Output::Reasons) && reasons == 0 {
                    return self.err("outputs.reveal", o.span(), "reveals reasons but reasons.count is 0");
                }
                if set.is_empty() {
                    return self.err("outputs.reveal", o.span(), "reveals nothing");
                }
                set
            }
            None => {
                let mut set: BTreeSet<Output> = [Output::Decision, Output::Band, Output::RateTier].into();
                if credit_line.is_some() {
                    set.insert(Output::CreditLine);
                }
                if reasons > 0 {
                    set.insert(Output::Reasons);
                }
                set
            }
        };

        let mut model = Model {
            name: raw.name.get_ref().clone(),
            version: raw.version,
            parties,
            base_points: *raw.base_points.get_ref(),
            features,
            knockouts,
            approve_at: cut.approve,
            refer_at: cut.refer,
            bands,
            credit_line,
            reasons,
            reveal,
            id: String::new(),
        };
        let canonical = serde_json::to_vec(&model).map_err(|e| Error::Internal(e.to_string()))?;
        model.id = hex::encode(Sha256::digest(&canonical));
        Ok(model)
    }

    fn bounded(&self, field: &str, span: std::ops::Range<usize>, v: i64) -> Result<()> {
        if v.abs() > LIMIT {
            return self.err(field, span, format!("{v} is outside ±2^40"));
        }
        Ok(())
    }

    fn feature(&self, i: usize, f: &Spanned<RawFeature>, parties: &[String]) -> Result<Feature> {
        let raw = f.get_ref();
        let field = |name: &str| format!("features[{i}].{name}");
        let name = raw.name.get_ref().clone();
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return self.err(&field("name"), raw.name.span(), "use letters, digits and `_` only");
        }
        let Some(party) = parties.iter().position(|p| p == raw.party.get_ref()) else {
            return self.err(
                &field("party"),
                raw.party.span(),
                format!("unknown party `{}`; declared parties: {}", raw.party.get_ref(), parties.join(", ")),
            );
        };
        let kind = match (&raw.range, &raw.categories) {
            (Some(r), None) => {
                let [min, max] = *r.get_ref();
                self.bounded(&field("range"), r.span(), min)?;
                self.bounded(&field("range"), r.span(), max)?;
                if min > max {
                    return self.err(&field("range"), r.span(), format!("min {min} is above max {max}"));
                }
                if max - min >= 1 << 32 {
                    return self.err(&field("range"), r.span(), "a range may span at most 2^32 values");
                }
                FeatureKind::Integer { min, max }
            }
            (None, Some(c)) => {
                let cats = c.get_ref();
                if cats.is_empty() || cats.len() > MAX_CATEGORIES {
                    return self.err(
                        &field("categories"),
                        c.span(),
                        format!("declare 1 to {MAX_CATEGORIES} categories"),
                    );
                }
                let unique: BTreeSet<_> = cats.iter().collect();
                if unique.len() != cats.len() {
                    return self.err(&field("categories"), c.span(), "categories must be distinct");
                }
                FeatureKind::Categorical { categories: cats.clone() }
            }
            _ => return self.err(&field("range"), f.span(), "give exactly one of `range` (integer) or `categories`"),
        };

        let mut bins = Vec::new();
        match &kind {
            FeatureKind::Integer { min, max } => {
                let mut next = *min;
                for (b, bin) in raw.bins.get_ref().iter().enumerate() {
                    let rb = bin.get_ref();
                    let bfield = field(&format!("bins[{b}]"));
                    if rb.categories.is_some() {
                        return self.err(&bfield, bin.span(), "integer features bin by `min`/`max`, not categories");
                    }
                    self.bounded(&bfield, bin.span(), rb.points)?;
                    let lo = rb.min.unwrap_or(next);
                    let hi = rb.max.unwrap_or(*max);
                    if lo != next {
                        let what = if lo > next { "leaves a gap" } else { "overlaps the previous bin" };
                        return self.err(
                            &bfield,
                            bin.span(),
                            format!("starts at {lo} and {what}: expected it to start at {next}"),
                        );
                    }
                    if hi < lo {
                        return self.err(&bfield, bin.span(), format!("max {hi} is below min {lo}"));
                    }
                    if hi > *max {
                        return self.err(
                            &bfield,
                            bin.span(),
                            format!("max {hi} is beyond the feature's range end {max}"),
                        );
                    }
                    bins.push(Bin { ranges: vec![(lo, hi)], points: rb.points });
                    next = hi + 1;
                }
                if next != max + 1 {
                    return self.err(
                        &field("bins"),
                        raw.bins.span(),
                        format!("bins cover up to {} but the range ends at {max}", next - 1),
                    );
                }
            }
            FeatureKind::Categorical { categories } => {
                let mut seen = vec![false; categories.len()];
                for (b, bin) in raw.bins.get_ref().iter().enumerate() {
                    let rb = bin.get_ref();
                    let bfield = field(&format!("bins[{b}]"));
                    let Some(cats) = &rb.categories else {
                        return self.err(&bfield, bin.span(), "categorical features bin by `categories`");
                    };
                    if rb.min.is_some() || rb.max.is_some() {
                        return self.err(&bfield, bin.span(), "categorical bins take no `min`/`max`");
                    }
                    self.bounded(&bfield, bin.span(), rb.points)?;
                    let mut ranges = Vec::new();
                    for c in cats {
                        let Some(idx) = categories.iter().position(|x| x == c) else {
                            return self.err(&bfield, bin.span(), format!("unknown category `{c}`"));
                        };
                        if seen[idx] {
                            return self.err(&bfield, bin.span(), format!("category `{c}` is in two bins"));
                        }
                        seen[idx] = true;
                        ranges.push((idx as i64, idx as i64));
                    }
                    bins.push(Bin { ranges, points: rb.points });
                }
                if let Some(idx) = seen.iter().position(|s| !s) {
                    return self.err(
                        &field("bins"),
                        raw.bins.span(),
                        format!("category `{}` is in no bin", categories[idx]),
                    );
                }
            }
        }
        if bins.is_empty() || bins.len() > MAX_BINS {
            return self.err(&field("bins"), raw.bins.span(), format!("declare 1 to {MAX_BINS} bins"));
        }

        let missing = match raw.missing.get_ref() {
            RawMissing::Word(w) if w == "reject" => Missing::Reject,
            RawMissing::Word(w) => {
                return self.err(
                    &field("missing"),
                    raw.missing.span(),
                    format!("`{w}` is not a treatment; use \"reject\", {{ impute = VALUE }} or {{ points = N }}"),
                );
            }
            RawMissing::Table(t) => match (&t.impute, t.points) {
                (Some(v), None) => {
                    Missing::Impute(self.domain_value(&field("missing"), raw.missing.span(), &kind, v)?)
                }
                (None, Some(p)) => {
                    self.bounded(&field("missing"), raw.missing.span(), p)?;
                    Missing::Points(p)
                }
                _ => {
                    return self.err(&field("missing"), raw.missing.span(), "give exactly one of `impute` or `points`");
                }
            },
        };

        Ok(Feature {
            reason: raw.reason.clone().unwrap_or_else(|| name.replace('_', " ")),
            name,
            party,
            unit: raw.unit.clone(),
            kind,
            missing,
            bins,
        })
    }

    fn domain_value(
        &self,
        field: &str,
        span: std::ops::Range<usize>,
        kind: &FeatureKind,
        v: &toml::Value,
    ) -> Result<i64> {
        match (kind, v) {
            (FeatureKind::Integer { min, max }, toml::Value::Integer(x)) => {
                if x < min || x > max {
                    return self.err(field, span, format!("{x} is outside the range [{min}, {max}]"));
                }
                Ok(*x)
            }
            (FeatureKind::Categorical { categories }, toml::Value::String(s)) => {
                match categories.iter().position(|c| c == s) {
                    Some(i) => Ok(i as i64),
                    None => self.err(field, span, format!("unknown category `{s}`")),
                }
            }
            (FeatureKind::Integer { .. }, _) => self.err(field, span, "expected an integer"),
            (FeatureKind::Categorical { .. }, _) => self.err(field, span, "expected a category name"),
        }
    }

    fn condition(&self, field: &str, c: &Spanned<String>, features: &[Feature]) -> Result<Condition> {
        let text = c.get_ref().trim();
        let ops = [
            (">=", CmpOp::Ge),
            ("<=", CmpOp::Le),
            ("==", CmpOp::Eq),
            ("!=", CmpOp::Ne),
            (">", CmpOp::Gt),
            ("<", CmpOp::Lt),
        ];
        let Some((pos, sym, op)) = ops.iter().find_map(|&(sym, op)| text.find(sym).map(|p| (p, sym, op))) else {
            return self.err(
                field,
                c.span(),
                format!("`{text}` is not `FEATURE OP VALUE` with OP one of < <= > >= == !="),
            );
        };
        let name = text[..pos].trim();
        let value = text[pos + sym.len()..].trim();
        let Some(feature) = features.iter().position(|f| f.name == name) else {
            return self.err(field, c.span(), format!("unknown feature `{name}`"));
        };
        let value = match &features[feature].kind {
            FeatureKind::Integer { .. } => match value.parse::<i64>() {
                Ok(v) if v.abs() <= LIMIT => v,
                _ => return self.err(field, c.span(), format!("`{value}` is not an integer within ±2^40")),
            },
            FeatureKind::Categorical { categories } => {
                if !matches!(op, CmpOp::Eq | CmpOp::Ne) {
                    return self.err(field, c.span(), "categorical features compare only with == and !=");
                }
                let v = value.trim_matches('"');
                match categories.iter().position(|x| x == v) {
                    Some(i) => i as i64,
                    None => return self.err(field, c.span(), format!("unknown category `{v}` of `{name}`")),
                }
            }
        };
        Ok(Condition { feature, op, value })
    }

    fn bands(&self, raw: &Spanned<Vec<Spanned<RawBand>>>) -> Result<Vec<Band>> {
        let list = raw.get_ref();
        if list.is_empty() {
            return self.err("bands", raw.span(), "at least one band is required");
        }
        if list.len() > 8 {
            return self.err("bands", raw.span(), "at most 8 bands are supported");
        }
        let mut names = BTreeMap::new();
        let mut out = Vec::new();
        let mut previous: Option<i64> = None;
        for (i, b) in list.iter().enumerate() {
            let rb = b.get_ref();
            let field = format!("bands[{i}]");
            if names.insert(rb.name.clone(), i).is_some() {
                return self.err(&field, b.span(), format!("band `{}` is declared twice", rb.name));
            }
            let last = i + 1 == list.len();
            match (rb.min_score, last) {
                (Some(_), true) => {
                    return self.err(&field, b.span(), "the last band is the catch-all: leave out min_score");
                }
                (None, false) => return self.err(&field, b.span(), "every band but the last needs min_score"),
                (Some(m), false) => {
                    self.bounded(&field, b.span(), m)?;
                    if previous.is_some_and(|p| m >= p) {
                        return self.err(&field, b.span(), "bands go from best to worst: min_score must decrease");
                    }
                    previous = Some(m);
                }
                (None, true) => {}
            }
            if rb.line_multiplier > 1000 {
                return self.err(&field, b.span(), "line_multiplier above 1000 is not plausible");
            }
            out.push(Band {
                name: rb.name.clone(),
                min_score: rb.min_score,
                rate_tier: rb.rate_tier.clone(),
                line_multiplier: rb.line_multiplier,
            });
        }
        Ok(out)
    }

    fn credit_line(&self, raw: &Spanned<RawLine>, features: &[Feature]) -> Result<CreditLine> {
        let rl = raw.get_ref();
        let formula = rl.formula.get_ref();
        let span = rl.formula.span();
        let (product, divisor) = match formula.split_once('/') {
            Some((p, d)) => match d.trim().parse::<u64>() {
                Ok(d) if d > 0 && d <= 1 << 40 => (p, d),
                _ => {
                    return self.err(
                        "credit_line.formula",
                        span,
                        format!("divisor `{}` is not an integer in 1..=2^40", d.trim()),
                    );
                }
            },
            None => (formula.as_str(), 1),
        };
        let mut feature = None;
        let mut has_multiplier = false;
        let mut constant: u64 = 1;
        for term in product.split('*').map(str::trim) {
            if term == "band_multiplier" {
                if has_multiplier {
                    return self.err("credit_line.formula", span, "band_multiplier appears twice");
                }
                has_multiplier = true;
            } else if let Some(i) = features.iter().position(|f| f.name == term) {
                if let Some(j) = feature {
                    let (a, b): (&Feature, &Feature) = (&features[j], &features[i]);
                    return self.err(
                        "credit_line.formula",
                        span,
                        format!(
                            "multiplies two encrypted values (`{}` of {} and `{}` of {}); a line may scale one feature by constants only",
                            a.name, a.party, b.name, b.party
                        ),
                    );
                }
                feature = Some(i);
            } else if let Ok(c) = term.parse::<u64>() {
                constant = constant.saturating_mul(c);
            } else {
                return self.err(
                    "credit_line.formula",
                    span,
                    format!("unknown term `{term}`; use band_multiplier, a feature name or an integer"),
                );
            }
        }
        let Some(feature) = feature else {
            return self.err("credit_line.formula", span, "names no feature; the line must scale one party's feature");
        };
        if !has_multiplier {
            return self.err("credit_line.formula", span, "must include band_multiplier");
        }
        if constant != 1 {
            return self.err("credit_line.formula", span, "fold constant factors into the bands' line_multiplier");
        }
        let f = &features[feature];
        match f.kind {
            FeatureKind::Integer { min, .. } if min >= 0 => {}
            _ => {
                return self.err(
                    "credit_line.formula",
                    span,
                    format!("`{}` must be an integer feature with a non-negative range", f.name),
                );
            }
        }
        if matches!(f.missing, Missing::Points(_)) {
            return self.err(
                "credit_line.formula",
                span,
                format!("`{}` may be missing; a line feature must use \"reject\" or impute", f.name),
            );
        }
        if rl.granularity == 0 || rl.cap == 0 || !rl.cap.is_multiple_of(rl.granularity) {
            return self.err("credit_line", raw.span(), "cap must be a positive multiple of a positive granularity");
        }
        if rl.cap > 1 << 40 {
            return self.err("credit_line", raw.span(), "cap must be at most 2^40");
        }
        if rl.cap / rl.granularity > 4095 {
            return self.err("credit_line", raw.span(), "cap / granularity must be at most 4095 line steps");
        }
        Ok(CreditLine { feature, divisor, cap: rl.cap, granularity: rl.granularity, unit: rl.unit.clone() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shipped model with one line replaced; panics if `from` is absent
    /// so a test cannot silently test nothing.
    fn edited(from: &str, to: &str) -> String {
        assert!(CROSS_BORDER_SELLER.contains(from), "fixture text `{from}` not in the model");
        CROSS_BORDER_SELLER.replacen(from, to, 1)
    }

    fn line_of(text: &str, needle: &str) -> usize {
        text[..text.find(needle).expect("needle present")].matches('\n').count() + 1
    }

    fn invalid(text: &str) -> (String, usize, String) {
        match Model::from_toml(text) {
            Err(Error::Invalid { field, line, message }) => (field, line, message),
            other => panic!("expected an invalid-model error, got {other:?}"),
        }
    }

    #[test]
    fn shipped_model_is_valid_and_its_id_is_stable() {
        let m = Model::cross_border_seller();
        assert_eq!(m.features.len(), 12);
        assert_eq!(m.parties, ["platform", "logistics", "bank"]);
        assert_eq!(m.id().len(), 64);
        // Comments and layout do not change the id; semantics do.
        let reformatted =
            format!("# a comment\n{}", CROSS_BORDER_SELLER.replace("base_points = 420", "base_points    = 420"));
        assert_eq!(Model::from_toml(&reformatted).unwrap().id(), m.id());
        let changed = CROSS_BORDER_SELLER.replace("base_points = 420", "base_points = 421");
        assert_ne!(Model::from_toml(&changed).unwrap().id(), m.id());
        assert!(!m.reveals(Output::Score));
    }

    /// Asserts `text` is refused at `field`, on the line where `at` starts
    /// (when given), with a message containing `says`.
    fn assert_invalid(text: &str, field: &str, at: Option<&str>, says: &str) {
        let (got_field, line, msg) = invalid(text);
        assert_eq!(got_field, field, "{msg}");
        if let Some(at) = at {
            assert_eq!(line, line_of(text, at), "{msg}");
        }
        assert!(msg.contains(says), "{msg}");
    }

    #[test]
    fn unknown_party_names_field_and_line() {
        let text = edited("party = \"logistics\"", "party = \"warehouse\"");
        assert_invalid(&text, "features[5].party", Some("party = \"warehouse\""), "warehouse");
    }

    #[test]
    fn overlapping_gapped_and_short_bins_are_rejected() {
        let text = edited("  { max = 499, points = 5 },", "  { min = 90, max = 499, points = 5 },");
        assert_invalid(&text, "features[0].bins[1]", Some("{ min = 90"), "overlaps");
        let text = edited("  { max = 499, points = 5 },", "  { min = 150, max = 499, points = 5 },");
        assert_invalid(&text, "features[0].bins[1]", Some("{ min = 150"), "gap");
        let text = edited(
            "  { points = 15 },\n]\n\n[[features]]\nname = \"gmv_trend_pct\"",
            "  { max = 40000, points = 15 },\n]\n\n[[features]]\nname = \"gmv_trend_pct\"",
        );
        assert_invalid(&text, "features[0].bins", None, "range ends at 50000");
    }

    #[test]
    fn line_formula_multiplying_two_features_is_rejected() {
        let text = edited(
            "formula = \"band_multiplier * gmv_12m_k / 12\"",
            "formula = \"band_multiplier * gmv_12m_k * overseas_stock_k / 12\"",
        );
        assert_invalid(&text, "credit_line.formula", Some("formula ="), "two encrypted values");
    }

    #[test]
    fn forbidden_output_and_duplicate_feature_are_rejected() {
        let text = edited("reveal = [\"decision\",", "reveal = [\"gmv_12m_k\", \"decision\",");
        assert_invalid(&text, "outputs.reveal", Some("\"gmv_12m_k\", \"decision\""), "raw features are never outputs");
        let text = edited("name = \"gmv_trend_pct\"", "name = \"gmv_12m_k\"");
        let at = "name = \"gmv_12m_k\"\nparty = \"platform\"\nunit = \"percent";
        assert_invalid(&text, "features[1].name", Some(at), "duplicate");
    }

    #[test]
    fn other_inconsistencies_are_rejected() {
        let cases = [
            ("format = \"jointscore.model.v1\"", "format = \"jointscore.model.v9\"", "format"),
            ("approve = 530", "approve = 490", "cutoffs"),
            ("when = [\"months_active < 6\"]", "when = [\"months_activ < 6\"]", "knockouts[0].when"),
            ("when = [\"months_active < 6\"]", "when = [\"months_active ~ 6\"]", "knockouts[0].when"),
            ("count = 2", "count = 3", "reasons.count"),
            ("min_score = 530", "min_score = 570", "bands[1]"),
            ("cap = 300", "cap = 302", "credit_line"),
            ("missing = { points = 5 }", "missing = { impute = 9999 }", "features[1].missing"),
            ("missing = \"reject\"", "missing = \"ignore\"", "features[0].missing"),
            ("band_multiplier * gmv_12m_k", "band_multiplier * band_multiplier * gmv_12m_k", "credit_line.formula"),
            ("gmv_12m_k / 12\"", "gmv_12m_k / 9999999999999\"", "credit_line.formula"),
            ("cap = 300", "cap = 3000000000000000", "credit_line"),
            ("base_points = 420", "base_points = 9999999999999", "base_points"),
        ];
        for (from, to, want) in cases {
            let (field, _, _) = invalid(&edited(from, to));
            assert_eq!(field, want, "{from} -> {to}");
        }
    }

    #[test]
    fn syntax_errors_and_unknown_fields_report_the_parser_position() {
        let err = Model::from_toml("format = \"jointscore.model.v1\"\nname = \n").unwrap_err();
        assert!(matches!(err, Error::Parse(ref m) if m.contains("line 2")), "{err}");
        let err = Model::from_toml(&edited("base_points = 420", "base_points = 420\nbase_pionts = 1")).unwrap_err();
        assert!(matches!(err, Error::Parse(ref m) if m.contains("base_pionts")), "{err}");
    }
}
