//! The stats spec: counters, segments, deadline, and the layout of the
//! vector they make.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Result, StatsError};

/// Most entries a spec may make: the masked vector of one party is then at
/// most 16 KiB, and the labelled result fits one gRPC message.
pub const MAX_ENTRIES: usize = 4096;
/// Longest spec file parsed.
const SPEC_LIMIT: usize = 64 << 10;
/// Longest name (of the spec, a counter, a column or a category value).
const NAME_LIMIT: usize = 64;

/// A consortium statistic, as written in `stats.toml`:
///
/// ```toml
/// name = "portfolio-2026q4"
/// deadline_ms = 10000     # per round; a party that misses it is dropped
/// min_parties = 2         # optional; never below a strict majority
///
/// [[counter]]
/// name = "records"
/// kind = "count"          # records held
///
/// [[counter]]
/// name = "debt_k"
/// kind = "sum"
/// column = "outstanding_debt_k"
/// segment = { column = "late_repayments_12m", bands = [1, 3] }
///
/// [[counter]]
/// name = "by_region"
/// kind = "count"
/// segment = { column = "region", values = ["north", "south"] }
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatsSpec {
    /// A name for people; the id is what identifies the spec.
    pub name: String,
    /// How long each of the round's four steps may take; a party that does
    /// not answer a step within it is counted as dropped.
    #[serde(default = "default_deadline")]
    pub deadline_ms: u64,
    /// The fewest parties whose vectors must make it into the sum (the
    /// secret-sharing threshold). Raised to a strict majority of the
    /// parties invited when lower, since the protocol needs one.
    #[serde(default)]
    pub min_parties: Option<u32>,
    /// The counters, in the order their entries appear in the vector.
    #[serde(rename = "counter")]
    pub counters: Vec<Counter>,
}

/// One counter: a number of records, or a sum of one column, overall or
/// per segment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Counter {
    /// Its name; entries are labelled with it.
    pub name: String,
    /// What it counts.
    pub kind: CounterKind,
    /// For `sum`, the column summed (non-negative integers). For `count`,
    /// optional: only records holding a value in it are counted.
    #[serde(default)]
    pub column: Option<String>,
    /// Optional: one entry per segment instead of one in all.
    #[serde(default)]
    pub segment: Option<Segment>,
}

/// What a counter computes per record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CounterKind {
    /// 1 per record.
    Count,
    /// The record's value in `column`.
    Sum,
}

/// Splits a counter by the value of a column: into numeric bands (`bands`,
/// strictly increasing edges) or category values (`values`), plus one entry
/// for records outside them (missing value, or another category).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Segment {
    /// The column segmented on.
    pub column: String,
    /// Band edges: entries `< e1`, `[e1, e2)`, …, `≥ em`, then `missing`.
    #[serde(default)]
    pub bands: Vec<i64>,
    /// Category values: one entry each, then `other` (another value, or
    /// none).
    #[serde(default)]
    pub values: Vec<String>,
}

fn default_deadline() -> u64 {
    10_000
}

fn check_name(what: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= NAME_LIMIT
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(StatsError::Spec(format!(
            "{what} `{name}` must be 1–{NAME_LIMIT} characters of letters, digits, `_`, `-` or `.`"
        )))
    }
}

impl StatsSpec {
    /// Parses and checks a spec file.
    pub fn from_toml(text: &str) -> Result<StatsSpec> {
        if text.len() > SPEC_LIMIT {
            return Err(StatsError::Spec(format!("the file is larger than {SPEC_LIMIT} bytes")));
        }
        let spec: StatsSpec = toml::from_str(text).map_err(|e| StatsError::Spec(e.message().to_string()))?;
        spec.check()?;
        Ok(spec)
    }

    /// Checks every rule a parsed spec must keep.
    pub fn check(&self) -> Result<()> {
        check_name("spec name", &self.name)?;
        if !(100..=600_000).contains(&self.deadline_ms) {
            return Err(StatsError::Spec(format!(
                "deadline_ms {} is outside 100..=600000 (0.1 s to 10 min)",
                self.deadline_ms
            )));
        }
        if self.min_parties == Some(0) || self.min_parties == Some(1) {
            return Err(StatsError::Spec("min_parties must be at least 2: a sum of one is that party's vector".into()));
        }
        if self.counters.is_empty() {
            return Err(StatsError::Spec("no [[counter]]".into()));
        }
        let mut seen = std::collections::HashSet::new();
        for c in &self.counters {
            check_name("counter", &c.name)?;
            if !seen.insert(&c.name) {
                return Err(StatsError::Spec(format!("counter `{}` appears twice", c.name)));
            }
            if let Some(column) = &c.column {
                check_name("column", column)?;
            } else if c.kind == CounterKind::Sum {
                return Err(StatsError::Spec(format!("counter `{}` sums but names no `column`", c.name)));
            }
            if let Some(s) = &c.segment {
                check_name("column", &s.column)?;
                match (s.bands.is_empty(), s.values.is_empty()) {
                    (false, true) => {
                        if s.bands.windows(2).any(|w| w[0] >= w[1]) {
                            return Err(StatsError::Spec(format!(
                                "counter `{}`: bands must be strictly increasing",
                                c.name
                            )));
                        }
                    }
                    (true, false) => {
                        let mut values = std::collections::HashSet::new();
                        for v in &s.values {
                            check_name("segment value", v)?;
                            if !values.insert(v) {
                                return Err(StatsError::Spec(format!(
                                    "counter `{}`: segment value `{v}` appears twice",
                                    c.name
                                )));
                            }
                        }
                    }
                    _ => {
                        return Err(StatsError::Spec(format!(
                            "counter `{}`: a segment has either `bands` or `values`, not both or neither",
                            c.name
                        )));
                    }
                }
            }
        }
        let entries: usize = self.counters.iter().map(Counter::entries).sum();
        if entries > MAX_ENTRIES {
            return Err(StatsError::Spec(format!("{entries} entries; a spec makes at most {MAX_ENTRIES}")));
        }
        Ok(())
    }

    /// The spec's id: SHA-256 of its canonical form (JSON of the parsed
    /// spec), so formatting and comments do not change it.
    pub fn id(&self) -> String {
        let canonical = serde_json::to_string(self).unwrap_or_default();
        hex::encode(Sha256::digest(canonical.as_bytes()))
    }

    /// Length of the vector the spec makes.
    pub fn dim(&self) -> usize {
        self.counters.iter().map(Counter::entries).sum()
    }

    /// A label per entry, in vector order, e.g. `debt_k[late_repayments_12m<1]`.
    pub fn labels(&self) -> Vec<String> {
        let mut out = Vec::with_capacity(self.dim());
        for c in &self.counters {
            let Some(s) = &c.segment else {
                out.push(c.name.clone());
                continue;
            };
            let (name, col) = (&c.name, &s.column);
            if s.values.is_empty() {
                let mut lower: Option<i64> = None;
                for e in &s.bands {
                    out.push(match lower {
                        None => format!("{name}[{col}<{e}]"),
                        Some(l) => format!("{name}[{l}<={col}<{e}]"),
                    });
                    lower = Some(*e);
                }
                if let Some(l) = lower {
                    out.push(format!("{name}[{col}>={l}]"));
                }
                out.push(format!("{name}[{col} missing]"));
            } else {
                out.extend(s.values.iter().map(|v| format!("{name}[{col}={v}]")));
                out.push(format!("{name}[{col} other]"));
            }
        }
        out
    }

    /// The threshold for a round over `invited` parties: `min_parties`,
    /// raised to a strict majority, and at most `invited`.
    pub fn threshold(&self, invited: u32) -> u32 {
        self.min_parties.unwrap_or(0).max(invited / 2 + 1).min(invited)
    }
}

impl Counter {
    /// Entries this counter makes.
    pub fn entries(&self) -> usize {
        match &self.segment {
            None => 1,
            Some(s) if s.values.is_empty() => s.bands.len() + 2,
            Some(s) => s.values.len() + 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: &str = r#"
        name = "portfolio"
        [[counter]]
        name = "records"
        kind = "count"
        [[counter]]
        name = "debt_k"
        kind = "sum"
        column = "debt"
        segment = { column = "late", bands = [1, 3] }
        [[counter]]
        name = "regions"
        kind = "count"
        segment = { column = "region", values = ["north", "south"] }
    "#;

    #[test]
    fn layout_labels_and_id() {
        let spec = StatsSpec::from_toml(SPEC).expect("valid");
        assert_eq!(spec.deadline_ms, 10_000);
        assert_eq!(spec.dim(), 1 + 4 + 3);
        assert_eq!(
            spec.labels(),
            [
                "records",
                "debt_k[late<1]",
                "debt_k[1<=late<3]",
                "debt_k[late>=3]",
                "debt_k[late missing]",
                "regions[region=north]",
                "regions[region=south]",
                "regions[region other]",
            ]
        );
        // Comments and layout do not change the id; content does.
        let reformatted = format!("# a comment\n{}", SPEC.replace("        ", ""));
        assert_eq!(StatsSpec::from_toml(&reformatted).expect("valid").id(), spec.id());
        let other = StatsSpec::from_toml(&SPEC.replace("[1, 3]", "[1, 4]")).expect("valid");
        assert_ne!(other.id(), spec.id());
        assert_eq!(spec.id().len(), 64);
    }

    #[test]
    fn threshold_is_at_least_a_strict_majority() {
        let mut spec = StatsSpec::from_toml(SPEC).expect("valid");
        assert_eq!((spec.threshold(3), spec.threshold(4), spec.threshold(5)), (2, 3, 3));
        spec.min_parties = Some(4);
        assert_eq!((spec.threshold(3), spec.threshold(5)), (3, 4));
    }

    #[test]
    fn refuses_bad_specs() {
        for (text, want) in [
            ("name = \"x\"\n", "counter"),
            ("name = \"x\"\n[[counter]]\nname = \"a\"\nkind = \"sum\"\n", "names no `column`"),
            ("name = \"x\"\n[[counter]]\nname = \"a\"\nkind = \"max\"\n", "unknown variant"),
            ("name = \"x\"\nextra = 1\n[[counter]]\nname = \"a\"\nkind = \"count\"\n", "unknown field"),
            ("name = \"bad name\"\n[[counter]]\nname = \"a\"\nkind = \"count\"\n", "spec name"),
            ("name = \"x\"\ndeadline_ms = 5\n[[counter]]\nname = \"a\"\nkind = \"count\"\n", "deadline_ms"),
            ("name = \"x\"\nmin_parties = 1\n[[counter]]\nname = \"a\"\nkind = \"count\"\n", "at least 2"),
            (
                "name = \"x\"\n[[counter]]\nname = \"a\"\nkind = \"count\"\n[[counter]]\nname = \"a\"\nkind = \"count\"\n",
                "appears twice",
            ),
            (
                "name = \"x\"\n[[counter]]\nname = \"a\"\nkind = \"count\"\nsegment = { column = \"c\", bands = [3, 1] }\n",
                "strictly increasing",
            ),
            (
                "name = \"x\"\n[[counter]]\nname = \"a\"\nkind = \"count\"\nsegment = { column = \"c\" }\n",
                "either `bands` or `values`",
            ),
        ] {
            let e = StatsSpec::from_toml(text).expect_err(text);
            assert!(e.to_string().contains(want), "{e} should say {want}");
        }
        let huge: Vec<String> = (0..MAX_ENTRIES as i64).map(|i| i.to_string()).collect();
        let text = format!(
            "name = \"x\"\n[[counter]]\nname = \"a\"\nkind = \"count\"\nsegment = {{ column = \"c\", bands = [{}] }}\n",
            huge.join(",")
        );
        let e = StatsSpec::from_toml(&text).expect_err("too many entries");
        assert!(e.to_string().contains("at most 4096"), "{e}");
        let e = StatsSpec::from_toml(&" ".repeat(SPEC_LIMIT + 1)).expect_err("too large");
        assert!(e.to_string().contains("larger than"), "{e}");
    }
}
