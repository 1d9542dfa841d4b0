//! Validation: from the raw file schema to a [`Model`] whose every
//! cross-reference and range holds, or the first problem with the field and
//! the line it sits on.

use std::collections::{BTreeMap, BTreeSet};

use toml::Spanned;

use super::raw::{RawBand, RawFeature, RawLine, RawMissing, RawModel};
use super::{
    Band, Bin, CmpOp, Condition, CreditLine, Feature, FeatureKind, Knockout, MAX_BINS, MAX_CATEGORIES, MAX_REASONS,
    MODEL_FORMAT, Missing, Model, Output, canonical,
};
use crate::error::{Error, Result};

/// Largest absolute value accepted for ranges, points and cutoffs; keeps every
/// sum comfortably inside `i64`.
const LIMIT: i64 = 1 << 40;

/// Turns the raw schema into a [`Model`], checking as it goes; errors name
/// the field and its line in `source`.
pub(super) struct Validator<'a> {
    source: &'a str,
}

impl<'a> Validator<'a> {
    pub(super) fn new(source: &'a str) -> Self {
        Validator { source }
    }

    fn line(&self, span: std::ops::Range<usize>) -> usize {
        let end = span.start.min(self.source.len());
        self.source[..end].bytes().filter(|&b| b == b'\n').count() + 1
    }

    fn err<T>(&self, field: &str, span: std::ops::Range<usize>, msg: impl Into<String>) -> Result<T> {
        Err(Error::Invalid { field: field.to_string(), line: self.line(span), message: msg.into() })
    }

    pub(super) fn model(&self, raw: RawModel) -> Result<Model> {
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
            knockouts.push(Knockout {
                code: k.get_ref().code.clone(),
                description: k.get_ref().description.clone(),
                when,
            });
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
            description: raw.description,
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
        model.id = canonical::id(&model)?;
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
        // Feature names are letters, digits and `_`, so the name ends where
        // they do and the operator follows; the value is the rest (it may
        // itself hold operator characters, as a category name may).
        let name_end = text.find(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '_')).unwrap_or(text.len());
        let name = &text[..name_end];
        let rest = text[name_end..].trim_start();
        let Some((sym, op)) = ops.iter().copied().find(|(sym, _)| rest.starts_with(sym)) else {
            return self.err(
                field,
                c.span(),
                format!("`{text}` is not `FEATURE OP VALUE` with OP one of < <= > >= == !="),
            );
        };
        let value = rest[sym.len()..].trim();
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
                let v = category_literal(value);
                match categories.iter().position(|x| *x == v) {
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

/// The category a condition compares with: a TOML string (`"a > b"`,
/// `'say "hi"'`), as [`file`](super::file) writes them, or a bare word.
fn category_literal(value: &str) -> String {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Literal {
        v: String,
    }
    if value.starts_with(['"', '\''])
        && let Ok(l) = toml::from_str::<Literal>(&format!("v = {value}"))
    {
        return l.v;
    }
    value.trim_matches('"').to_string()
}
