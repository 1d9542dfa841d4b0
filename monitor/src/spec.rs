//! Monitor specs: the `jointscore.monitor.v1` file, validated, with an id
//! parties approve.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use toml::Spanned;

use crate::error::{Error, Result};
use crate::window::{Aggregate, Window};

/// The format line every monitor spec starts with.
pub const MONITOR_FORMAT: &str = "jointscore.monitor.v1";
/// Longest window, and furthest offset, in days (ten years).
pub const MAX_DAYS: u32 = 3660;
/// Most conditions in one alert.
pub const MAX_CONDITIONS: usize = 8;
/// Largest magnitude of a constant in a condition.
pub const LIMIT: i64 = 1 << 40;

/// How serious an alert is, least first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Worth a look.
    Info,
    /// Needs attention this period.
    Warning,
    /// Needs action.
    High,
    /// Needs action now.
    Critical,
}

/// A comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// `<`
    #[serde(rename = "<")]
    Lt,
    /// `<=`
    #[serde(rename = "<=")]
    Le,
    /// `>`
    #[serde(rename = ">")]
    Gt,
    /// `>=`
    #[serde(rename = ">=")]
    Ge,
}

impl Op {
    /// Whether `a op b` holds.
    pub fn holds(self, a: i128, b: i128) -> bool {
        match self {
            Op::Lt => a < b,
            Op::Le => a <= b,
            Op::Gt => a > b,
            Op::Ge => a >= b,
        }
    }
}

/// A windowed feature a party computes from its own history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct WindowSpec {
    /// Its name in the spec.
    pub name: String,
    /// The party that holds the history.
    pub party: String,
    /// What to compute.
    pub window: Window,
}

/// What a condition's window is compared with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum Right {
    /// A constant.
    Value(i64),
    /// Another window, scaled by a percentage: `left op right × percent / 100`.
    Window {
        /// The other window's name.
        name: String,
        /// The scale, in percent.
        percent: u32,
        /// Significant bits each side keeps when the two windows belong to
        /// different parties (see [`crate::codes`]); a comparison of one
        /// party's windows is exact and has none.
        precision: Option<u32>,
    },
}

/// One comparison: `left op right`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Condition {
    /// The window on the left.
    pub left: String,
    /// The comparison.
    pub op: Op,
    /// What it is compared with.
    pub right: Right,
}

/// An alert: raised for a loan when every one of its conditions holds; a
/// condition on a window with no value (no history) does not hold.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Alert {
    /// Its name.
    pub name: String,
    /// How serious it is.
    pub severity: Severity,
    /// Every one must hold.
    pub conditions: Vec<Condition>,
}

/// A validated monitor spec.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Spec {
    /// Its name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// For people.
    pub description: String,
    /// The parties whose histories it reads.
    pub parties: Vec<String>,
    /// The windowed features.
    pub windows: Vec<WindowSpec>,
    /// The alerts.
    pub alerts: Vec<Alert>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    format: Spanned<String>,
    name: Spanned<String>,
    version: String,
    #[serde(default)]
    description: String,
    parties: Spanned<Vec<Spanned<String>>>,
    windows: Spanned<Vec<Spanned<RawWindow>>>,
    alerts: Spanned<Vec<Spanned<RawAlert>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWindow {
    name: Spanned<String>,
    party: Spanned<String>,
    field: Spanned<String>,
    aggregate: Aggregate,
    days: Spanned<u32>,
    #[serde(default)]
    offset_days: Option<Spanned<u32>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAlert {
    name: Spanned<String>,
    severity: Severity,
    conditions: Spanned<Vec<Spanned<RawCondition>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCondition {
    left: Spanned<String>,
    op: Op,
    value: Option<Spanned<i64>>,
    right: Option<Spanned<String>>,
    percent: Option<Spanned<u32>>,
    precision: Option<Spanned<u32>>,
}

/// A name as specs write them: a letter, then letters, digits and `_`.
fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && s.len() <= 64
}

struct Validator<'a> {
    source: &'a str,
}

impl Validator<'_> {
    fn err<T>(&self, field: &str, span: std::ops::Range<usize>, message: impl Into<String>) -> Result<T> {
        let end = span.start.min(self.source.len());
        let line = self.source[..end].bytes().filter(|&b| b == b'\n').count() + 1;
        Err(Error::Invalid { field: field.to_string(), line, message: message.into() })
    }

    fn name(&self, field: &str, s: &Spanned<String>) -> Result<String> {
        if !is_name(s.get_ref()) {
            return self.err(
                field,
                s.span(),
                format!("`{}` is not a name: a letter, then letters, digits and `_`, at most 64", s.get_ref()),
            );
        }
        Ok(s.get_ref().clone())
    }

    fn spec(&self, raw: RawSpec) -> Result<Spec> {
        if raw.format.get_ref() != MONITOR_FORMAT {
            return self.err(
                "format",
                raw.format.span(),
                format!("unsupported format `{}`; this version reads `{MONITOR_FORMAT}`", raw.format.get_ref()),
            );
        }
        if raw.name.get_ref().trim().is_empty() {
            return self.err("name", raw.name.span(), "must not be empty");
        }
        let mut parties: Vec<String> = Vec::new();
        for p in raw.parties.get_ref() {
            let name = self.name("parties", p)?;
            if parties.contains(&name) {
                return self.err("parties", p.span(), format!("party `{name}` is listed twice"));
            }
            parties.push(name);
        }
        if parties.is_empty() {
            return self.err("parties", raw.parties.span(), "at least one party is required");
        }
        let mut windows: Vec<WindowSpec> = Vec::new();
        for (i, w) in raw.windows.get_ref().iter().enumerate() {
            let at = |f: &str| format!("windows[{i}].{f}");
            let w = w.get_ref();
            let name = self.name(&at("name"), &w.name)?;
            if windows.iter().any(|x| x.name == name) {
                return self.err(&at("name"), w.name.span(), format!("window `{name}` is defined twice"));
            }
            if !parties.contains(w.party.get_ref()) {
                return self.err(&at("party"), w.party.span(), format!("`{}` is not in `parties`", w.party.get_ref()));
            }
            if w.field.get_ref().trim().is_empty() {
                return self.err(&at("field"), w.field.span(), "must not be empty");
            }
            let days = *w.days.get_ref();
            if !(1..=MAX_DAYS).contains(&days) {
                return self.err(&at("days"), w.days.span(), format!("{days}: a window is 1 to {MAX_DAYS} days"));
            }
            let offset_days = match &w.offset_days {
                Some(o) if *o.get_ref() > MAX_DAYS => {
                    return self.err(&at("offset_days"), o.span(), format!("{}: at most {MAX_DAYS}", o.get_ref()));
                }
                Some(o) => *o.get_ref(),
                None => 0,
            };
            windows.push(WindowSpec {
                name,
                party: w.party.get_ref().clone(),
                window: Window { field: w.field.get_ref().clone(), aggregate: w.aggregate, days, offset_days },
            });
        }
        if windows.is_empty() {
            return self.err("windows", raw.windows.span(), "at least one window is required");
        }
        let mut alerts: Vec<Alert> = Vec::new();
        for (i, a) in raw.alerts.get_ref().iter().enumerate() {
            let a = a.get_ref();
            let name = self.name(&format!("alerts[{i}].name"), &a.name)?;
            if alerts.iter().any(|x| x.name == name) {
                return self.err(
                    &format!("alerts[{i}].name"),
                    a.name.span(),
                    format!("alert `{name}` is defined twice"),
                );
            }
            let conditions = a.conditions.get_ref();
            if conditions.is_empty() || conditions.len() > MAX_CONDITIONS {
                return self.err(
                    &format!("alerts[{i}].conditions"),
                    a.conditions.span(),
                    format!("{} conditions: an alert has 1 to {MAX_CONDITIONS}", conditions.len()),
                );
            }
            let mut out = Vec::new();
            for (k, c) in conditions.iter().enumerate() {
                let at = |f: &str| format!("alerts[{i}].conditions[{k}].{f}");
                let (span, c) = (c.span(), c.get_ref());
                let known = |s: &Spanned<String>, field: &str| -> Result<String> {
                    if windows.iter().any(|w| &w.name == s.get_ref()) {
                        Ok(s.get_ref().clone())
                    } else {
                        self.err(&at(field), s.span(), format!("no window is named `{}`", s.get_ref()))
                    }
                };
                let left = known(&c.left, "left")?;
                let right = match (&c.value, &c.right, &c.percent) {
                    (Some(_), None, None) if c.precision.is_some() => {
                        return self.err(&at("precision"), span, "applies to a comparison of two windows");
                    }
                    (Some(v), None, None) => {
                        if v.get_ref().abs() > LIMIT {
                            return self.err(&at("value"), v.span(), format!("beyond ±{LIMIT}"));
                        }
                        Right::Value(*v.get_ref())
                    }
                    (None, Some(r), percent) => {
                        let name = known(r, "right")?;
                        if name == left {
                            return self.err(&at("right"), r.span(), "compares a window with itself");
                        }
                        let percent = match percent {
                            Some(p) if !(1..=100_000).contains(p.get_ref()) => {
                                return self.err(&at("percent"), p.span(), "1 to 100000");
                            }
                            Some(p) => *p.get_ref(),
                            None => 100,
                        };
                        let party = |n: &str| windows.iter().find(|w| w.name == n).map(|w| w.party.clone());
                        let joint = party(&name) != party(&left);
                        let precision = match (&c.precision, joint) {
                            (None, true) => Some(crate::codes::DEFAULT_PRECISION),
                            (None, false) => None,
                            (Some(p), true) if crate::codes::PRECISION.contains(p.get_ref()) => Some(*p.get_ref()),
                            (Some(p), true) => {
                                return self.err(
                                    &at("precision"),
                                    p.span(),
                                    format!(
                                        "{}: significant bits are {} to {}",
                                        p.get_ref(),
                                        crate::codes::PRECISION.start(),
                                        crate::codes::PRECISION.end()
                                    ),
                                );
                            }
                            (Some(p), false) => {
                                return self.err(
                                    &at("precision"),
                                    p.span(),
                                    "both windows are one party's: the party compares them exactly",
                                );
                            }
                        };
                        Right::Window { name, percent, precision }
                    }
                    _ => {
                        return self.err(
                            &format!("alerts[{i}].conditions[{k}]"),
                            span,
                            "needs either `value` or `right` (with an optional `percent`), not both",
                        );
                    }
                };
                out.push(Condition { left, op: c.op, right });
            }
            alerts.push(Alert { name, severity: a.severity, conditions: out });
        }
        if alerts.is_empty() {
            return self.err("alerts", raw.alerts.span(), "at least one alert is required");
        }
        Ok(Spec {
            name: raw.name.get_ref().clone(),
            version: raw.version,
            description: raw.description,
            parties,
            windows,
            alerts,
        })
    }
}

impl Spec {
    /// Reads and validates a `jointscore.monitor.v1` file; the first problem
    /// is named with its field and line.
    pub fn from_toml(source: &str) -> Result<Spec> {
        let raw: RawSpec = toml::from_str(source).map_err(|e| Error::Parse(e.to_string()))?;
        Validator { source }.spec(raw)
    }

    /// The spec's id: SHA-256 over its canonical JSON (what it computes, not
    /// how the file is laid out), in hex. Parties approve this id.
    pub fn id(&self) -> String {
        // Serialising plain structs and enums into a string cannot fail.
        let canonical = serde_json::to_vec(self).unwrap_or_default();
        hex::encode(Sha256::digest([MONITOR_FORMAT.as_bytes(), b"\n", &canonical].concat()))
    }

    /// The window named `name`.
    pub fn window(&self, name: &str) -> Option<&WindowSpec> {
        self.windows.iter().find(|w| w.name == name)
    }

    /// The parties each alert reads, by alert name: one party means the
    /// alert is that party's own (it can compute it in the clear); several
    /// mean a joint alert (computed under the lender's key).
    pub fn alert_parties(&self) -> BTreeMap<String, BTreeSet<String>> {
        self.alerts
            .iter()
            .map(|a| {
                let mut parties = BTreeSet::new();
                for c in &a.conditions {
                    let names = std::iter::once(&c.left).chain(match &c.right {
                        Right::Window { name, .. } => Some(name),
                        Right::Value(_) => None,
                    });
                    parties.extend(names.filter_map(|n| self.window(n)).map(|w| w.party.clone()));
                }
                (a.name.clone(), parties)
            })
            .collect()
    }

    /// What the spec's alert bits can tell the lender about one party's
    /// values: per window compared with constants, the distinct thresholds;
    /// per pair of windows compared with each other, the distinct
    /// percentages (`left ÷ right`, the left window's party named). Each
    /// round reveals, per loan, which side of each threshold the value (or
    /// the ratio) lies on; one compared against many thresholds is read
    /// almost exactly. Those with at least `limit` thresholds are returned
    /// as findings (party, window or ratio, thresholds).
    pub fn lint(&self, limit: usize) -> Vec<(String, String, Vec<i64>)> {
        let mut thresholds: BTreeMap<String, (String, BTreeSet<i64>)> = BTreeMap::new();
        for a in &self.alerts {
            for c in &a.conditions {
                let Some(party) = self.window(&c.left).map(|w| w.party.clone()) else { continue };
                let (key, threshold) = match &c.right {
                    Right::Value(v) => (c.left.clone(), *v),
                    Right::Window { name, percent, .. } => (format!("{} ÷ {name}", c.left), i64::from(*percent)),
                };
                thresholds.entry(key).or_insert_with(|| (party, BTreeSet::new())).1.insert(threshold);
            }
        }
        thresholds
            .into_iter()
            .filter(|(_, (_, t))| t.len() >= limit)
            .map(|(w, (party, t))| (party, w, t.into_iter().collect()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The built-in example spec.
    const EXAMPLE: &str = crate::SELLER_WATCH;

    #[test]
    fn the_example_validates_with_a_stable_id() {
        let spec = Spec::from_toml(EXAMPLE).expect("example");
        assert_eq!(spec.name, "seller_watch");
        assert_eq!(spec.id().len(), 64);
        // Layout and comments do not change the id; a threshold does.
        let spaced = EXAMPLE.replace("\n[[", "\n\n# comment\n[[");
        assert_eq!(Spec::from_toml(&spaced).expect("spaced").id(), spec.id());
        let other = EXAMPLE.replacen("percent = 70", "percent = 60", 1);
        assert_ne!(Spec::from_toml(&other).expect("other").id(), spec.id());
        // One single-party alert and one joint alert across the three flows.
        let parties = spec.alert_parties();
        assert_eq!(parties["gmv_collapse"].len(), 1);
        assert_eq!(parties["flows_disagree"].len(), 3);
        assert!(spec.lint(3).is_empty());
    }

    fn invalid(source: &str) -> (String, usize, String) {
        match Spec::from_toml(source) {
            Err(Error::Invalid { field, line, message }) => (field, line, message),
            other => panic!("expected an invalid field, got {other:?}"),
        }
    }

    #[test]
    fn bad_specs_are_refused_with_field_and_line() {
        let (field, line, _) = invalid(&EXAMPLE.replacen(MONITOR_FORMAT, "jointscore.monitor.v9", 1));
        assert_eq!((field.as_str(), line), ("format", 1));
        let bad_party = EXAMPLE.replacen("party = \"bank\"", "party = \"insurer\"", 1);
        let (field, line, message) = invalid(&bad_party);
        assert!(field.ends_with(".party") && message.contains("insurer"), "{field} {message}");
        let want = bad_party.lines().position(|l| l.contains("insurer")).expect("line") + 1;
        assert_eq!(line, want);
        let (field, _, message) = invalid(&EXAMPLE.replacen("left = \"gmv_30d\"", "left = \"gmv_7d\"", 1));
        assert!(field.ends_with(".left") && message.contains("gmv_7d"), "{field} {message}");
        let (field, _, _) = invalid(&EXAMPLE.replacen("days = 30", "days = 0", 1));
        assert!(field.ends_with(".days"), "{field}");
        let (_, _, message) = invalid(&EXAMPLE.replacen("percent = 70", "percent = 70, value = 3", 1));
        assert!(message.contains("not both"), "{message}");
        // Unknown fields and variants are parse errors that name the line.
        let e = Spec::from_toml(&EXAMPLE.replacen("aggregate = \"sum\"", "aggregate = \"median\"", 1)).expect_err("x");
        assert!(e.to_string().contains("median") && e.to_string().contains("line"), "{e}");
        let e = Spec::from_toml(&EXAMPLE.replacen("severity = \"high\"", "severity = \"high\"\ncolour = \"red\"", 1))
            .expect_err("x");
        assert!(e.to_string().contains("colour"), "{e}");
        assert!(matches!(Spec::from_toml("not toml ["), Err(Error::Parse(_))));
    }

    #[test]
    fn lint_names_windows_probed_by_many_thresholds() {
        let mut probing = EXAMPLE.to_string();
        for (k, t) in [1000, 2000, 4000].iter().enumerate() {
            probing.push_str(&format!(
                "\n[[alerts]]\nname = \"probe{k}\"\nseverity = \"info\"\nconditions = [{{ left = \"gmv_30d\", op = \"<\", value = {t} }}]\n"
            ));
        }
        let spec = Spec::from_toml(&probing).expect("valid");
        let findings = spec.lint(3);
        assert_eq!(findings, [("platform".to_string(), "gmv_30d".to_string(), vec![1000, 2000, 4000])]);
        // A ratio of two parties' windows probed at many percentages.
        let mut ratio = EXAMPLE.to_string();
        for (k, p) in [50, 100, 200].iter().enumerate() {
            ratio.push_str(&format!(
                "\n[[alerts]]\nname = \"ratio{k}\"\nseverity = \"info\"\nconditions = [{{ left = \"collections_30d\", op = \">\", right = \"gmv_30d\", percent = {p} }}]\n"
            ));
        }
        let findings = Spec::from_toml(&ratio).expect("valid").lint(3);
        assert_eq!(findings, [("bank".to_string(), "collections_30d ÷ gmv_30d".to_string(), vec![50, 100, 150, 200])]);
    }
}
