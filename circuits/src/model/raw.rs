//! The model file's schema as read: every part that validation may refer
//! to carries its span, so an error names the line it sits on. Unknown
//! fields are refused.

use serde::Deserialize;
use toml::Spanned;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawModel {
    pub(super) format: Spanned<String>,
    pub(super) name: Spanned<String>,
    pub(super) version: String,
    #[serde(default)]
    pub(super) description: String,
    pub(super) parties: Spanned<Vec<Spanned<String>>>,
    pub(super) base_points: Spanned<i64>,
    pub(super) features: Spanned<Vec<Spanned<RawFeature>>>,
    #[serde(default)]
    pub(super) knockouts: Vec<Spanned<RawKnockout>>,
    pub(super) cutoffs: Spanned<RawCutoffs>,
    pub(super) bands: Spanned<Vec<Spanned<RawBand>>>,
    pub(super) credit_line: Option<Spanned<RawLine>>,
    #[serde(default)]
    pub(super) reasons: Option<Spanned<RawReasons>>,
    #[serde(default)]
    pub(super) outputs: Option<Spanned<RawOutputs>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFeature {
    pub(super) name: Spanned<String>,
    pub(super) party: Spanned<String>,
    pub(super) unit: String,
    #[serde(default)]
    pub(super) reason: Option<String>,
    pub(super) range: Option<Spanned<[i64; 2]>>,
    pub(super) categories: Option<Spanned<Vec<String>>>,
    pub(super) missing: Spanned<RawMissing>,
    pub(super) bins: Spanned<Vec<Spanned<RawBin>>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum RawMissing {
    Word(String),
    Table(RawMissingTable),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMissingTable {
    pub(super) impute: Option<toml::Value>,
    pub(super) points: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBin {
    pub(super) min: Option<i64>,
    pub(super) max: Option<i64>,
    pub(super) categories: Option<Vec<String>>,
    pub(super) points: i64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawKnockout {
    pub(super) code: String,
    #[serde(default)]
    pub(super) description: String,
    pub(super) when: Spanned<Vec<Spanned<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCutoffs {
    pub(super) approve: i64,
    pub(super) refer: i64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBand {
    pub(super) name: String,
    pub(super) min_score: Option<i64>,
    pub(super) rate_tier: String,
    #[serde(default)]
    pub(super) line_multiplier: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLine {
    pub(super) formula: Spanned<String>,
    pub(super) cap: u64,
    #[serde(default = "one")]
    pub(super) granularity: u64,
    pub(super) unit: String,
}

fn one() -> u64 {
    1
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawReasons {
    pub(super) count: Spanned<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOutputs {
    pub(super) reveal: Spanned<Vec<Spanned<String>>>,
}
