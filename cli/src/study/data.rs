//! Reading a study CSV: column types, missing values, the party split and a
//! stratified train/test split. Every refusal names the column.

use std::collections::BTreeSet;
use std::path::Path;

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

use crate::CliError;

/// Cells read as missing.
const MISSING: [&str; 5] = ["", "NA", "NaN", "?", "null"];

/// Largest number of decimal places kept when a numeric column is scaled to
/// integers for the model file.
const MAX_DECIMALS: u32 = 4;

/// A feature column, typed.
#[derive(Clone, Debug)]
pub(crate) enum Column {
    /// Integers after scaling by `10^decimals`.
    Numeric { values: Vec<Option<i64>>, decimals: u32 },
    /// Category names, sorted, and each row's index into them.
    Categorical { categories: Vec<String>, values: Vec<Option<usize>> },
}

/// A feature: name, owning party, column.
#[derive(Clone, Debug)]
pub(crate) struct Feature {
    pub(crate) name: String,
    /// The CSV header it came from.
    pub(crate) column_name: String,
    pub(crate) party: String,
    pub(crate) column: Column,
}

/// A loaded study: features, labels (true = bad), and the split.
pub(crate) struct Study {
    pub(crate) features: Vec<Feature>,
    pub(crate) labels: Vec<bool>,
    pub(crate) train: Vec<usize>,
    pub(crate) test: Vec<usize>,
    pub(crate) parties: Vec<String>,
}

fn bad(msg: String) -> CliError {
    CliError::Usage(msg)
}

/// `platform=colA,colB:num;logistics=colC:cat`: a column may be declared
/// `:num` or `:cat`; undeclared columns are typed by their values.
/// Per party, its columns and their declared type (`Some(true)` numeric).
type Spec = Vec<(String, Vec<(String, Option<bool>)>)>;

fn parse_spec(spec: &str) -> Result<Spec, CliError> {
    let mut out = Vec::new();
    for part in spec.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let (party, cols) =
            part.split_once('=').ok_or_else(|| bad(format!("--parties: `{part}` is not PARTY=COL,COL")))?;
        let party = party.trim();
        if party.is_empty()
            || party == "lender"
            || !party.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(bad(format!(
                "--parties: party name `{party}` must be letters, digits, `_` or `-` (and not `lender`)"
            )));
        }
        if out.iter().any(|(p, _): &(String, _)| p == party) {
            return Err(bad(format!("--parties: party `{party}` is listed twice; give all its columns at once")));
        }
        let mut columns = Vec::new();
        for c in cols.split(',').map(str::trim).filter(|c| !c.is_empty()) {
            let (name, numeric) = match c.rsplit_once(':') {
                Some((n, "num")) => (n, Some(true)),
                Some((n, "cat")) => (n, Some(false)),
                _ => (c, None),
            };
            columns.push((name.to_string(), numeric));
        }
        out.push((party.to_string(), columns));
    }
    Ok(out)
}

/// Reads the CSV and types its columns; `lender` holds every column the
/// spec does not give to a party.
pub(crate) fn load(
    path: &Path,
    label: &str,
    bad_value: &str,
    spec: &str,
    test_fraction: f64,
    seed: u64,
) -> Result<Study, CliError> {
    if !(0.0..1.0).contains(&test_fraction) || test_fraction <= 0.0 {
        return Err(bad("--test-fraction must be in (0, 1)".into()));
    }
    let mut reader = csv::Reader::from_path(path).map_err(|e| bad(format!("cannot read {}: {e}", path.display())))?;
    let header: Vec<String> =
        reader.headers().map_err(|e| bad(format!("CSV header: {e}")))?.iter().map(str::to_string).collect();
    let mut rows: Vec<Vec<String>> = Vec::new();
    for (i, rec) in reader.records().enumerate() {
        let rec = rec.map_err(|e| bad(format!("CSV row {}: {e}", i + 2)))?;
        if rec.len() != header.len() {
            return Err(bad(format!("CSV row {} has {} cells, the header {}", i + 2, rec.len(), header.len())));
        }
        rows.push(rec.iter().map(|s| s.trim().to_string()).collect());
    }
    for (i, h) in header.iter().enumerate() {
        if header[..i].contains(h) {
            return Err(bad(format!("column `{h}` appears twice in the header")));
        }
    }
    let label_at = header
        .iter()
        .position(|h| h == label)
        .ok_or_else(|| bad(format!("label column `{label}` is not in the CSV")))?;
    let labels: Vec<bool> = rows.iter().map(|r| r[label_at] == bad_value).collect();
    let bads = labels.iter().filter(|&&b| b).count();
    if bads == 0 || bads == labels.len() {
        return Err(bad(format!("label column `{label}` needs both `{bad_value}` and other values")));
    }

    let spec = parse_spec(spec)?;
    let mut owner: Vec<Option<(String, Option<bool>)>> = vec![None; header.len()];
    for (party, cols) in &spec {
        for (col, numeric) in cols {
            let at = header
                .iter()
                .position(|h| h == col)
                .ok_or_else(|| bad(format!("--parties names column `{col}`, which is not in the CSV")))?;
            if at == label_at {
                return Err(bad(format!(
                    "--parties gives the label column `{col}` to {party}; the lender keeps the label"
                )));
            }
            if owner[at].is_some() {
                return Err(bad(format!("column `{col}` is given to two parties")));
            }
            owner[at] = Some((party.clone(), *numeric));
        }
    }

    let mut features = Vec::new();
    for (at, name) in header.iter().enumerate().filter(|&(at, _)| at != label_at) {
        let (party, declared) = owner[at].clone().unwrap_or_else(|| ("lender".to_string(), None));
        let cells: Vec<Option<&str>> =
            rows.iter().map(|r| Some(r[at].as_str()).filter(|c| !MISSING.contains(c))).collect();
        let numeric =
            declared.unwrap_or_else(|| cells.iter().flatten().all(|c| c.parse::<f64>().is_ok_and(f64::is_finite)));
        let column = if numeric { numeric_column(name, &cells)? } else { categorical_column(name, &cells)? };
        let distinct = match &column {
            Column::Numeric { values, .. } => values.iter().flatten().collect::<BTreeSet<_>>().len(),
            Column::Categorical { categories, .. } => categories.len(),
        };
        if distinct < 2 {
            return Err(bad(format!("column `{name}` is constant; drop it or give it values")));
        }
        let feature_name = sanitize(name);
        if let Some(other) = features.iter().find(|f: &&Feature| f.name == feature_name) {
            return Err(bad(format!(
                "columns `{}` and `{name}` both become feature `{feature_name}`; rename one",
                other.column_name
            )));
        }
        features.push(Feature { name: feature_name, column_name: name.clone(), party, column });
    }
    if features.is_empty() {
        return Err(bad("the CSV has no columns besides the label".into()));
    }
    let mut parties: Vec<String> = spec.iter().map(|(p, _)| p.clone()).collect();
    if features.iter().any(|f| f.party == "lender") {
        parties.push("lender".into());
    }

    // Stratified split: the same share of each class goes to test.
    let mut rng = StdRng::seed_from_u64(seed);
    let (mut train, mut test) = (Vec::new(), Vec::new());
    for class in [false, true] {
        let mut idx: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] == class).collect();
        idx.shuffle(&mut rng);
        let k = ((idx.len() as f64) * test_fraction).round() as usize;
        test.extend_from_slice(&idx[..k]);
        train.extend_from_slice(&idx[k..]);
    }
    train.sort_unstable();
    test.sort_unstable();
    for (set, rows) in [("training", &train), ("test", &test)] {
        let bads = rows.iter().filter(|&&i| labels[i]).count();
        if bads == 0 || bads == rows.len() {
            return Err(bad(format!(
                "the {set} rows hold only one class of `{label}`; use more data or another --test-fraction"
            )));
        }
    }
    Ok(Study { features, labels, train, test, parties })
}

/// Column names become feature names: letters, digits and `_`.
fn sanitize(name: &str) -> String {
    let s: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' }).collect();
    if s.is_empty() || s.starts_with(|c: char| c.is_ascii_digit()) { format!("f_{s}") } else { s }
}

fn numeric_column(name: &str, cells: &[Option<&str>]) -> Result<Column, CliError> {
    let mut decimals = 0;
    for (row, c) in cells.iter().enumerate() {
        let Some(c) = c else { continue };
        if !c.parse::<f64>().is_ok_and(f64::is_finite) {
            return Err(bad(format!("column `{name}` is numeric but row {} holds `{c}`", row + 2)));
        }
        if let Some((_, frac)) = c.split_once('.') {
            decimals = decimals.max(frac.trim_end_matches('0').len() as u32);
        }
    }
    // Keep as many decimals as the model's integer range allows (a range
    // may span at most 2^32 values).
    let parsed: Vec<Option<f64>> = cells.iter().map(|c| c.and_then(|c| c.parse::<f64>().ok())).collect();
    for decimals in (0..=decimals.min(MAX_DECIMALS)).rev() {
        let scale = 10f64.powi(decimals as i32);
        let values: Vec<Option<i64>> = parsed.iter().map(|v| v.map(|v| (v * scale).round() as i64)).collect();
        let lo = values.iter().flatten().min().copied().unwrap_or(0);
        let hi = values.iter().flatten().max().copied().unwrap_or(0);
        if lo.abs() <= 1 << 40 && hi.abs() <= 1 << 40 && hi - lo < 1 << 32 {
            return Ok(Column::Numeric { values, decimals });
        }
    }
    Err(bad(format!("column `{name}` spans more than 2^32 integer values; rescale it")))
}

/// Name of the category that gathers rare ones when a column has more
/// categories than a model can take.
const OTHER: &str = "(other)";

fn categorical_column(name: &str, cells: &[Option<&str>]) -> Result<Column, CliError> {
    let mut freq: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
    for c in cells.iter().flatten() {
        *freq.entry(c).or_default() += 1;
    }
    if freq.contains_key(OTHER) {
        return Err(bad(format!("column `{name}` uses the reserved category `{OTHER}`")));
    }
    // Keep the most frequent categories; the rest share `(other)`.
    let max = jointscore_circuits::MAX_CATEGORIES;
    let mut by_count: Vec<(&str, usize)> = freq.into_iter().collect();
    by_count.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let keep = if by_count.len() > max { max - 1 } else { by_count.len() };
    let mut categories: Vec<String> = by_count[..keep].iter().map(|(c, _)| c.to_string()).collect();
    categories.sort();
    if by_count.len() > keep {
        categories.push(OTHER.to_string());
    }
    let values = cells
        .iter()
        .map(|c| c.map(|c| categories.iter().position(|x| x == c).unwrap_or(categories.len() - 1)))
        .collect();
    Ok(Column::Categorical { categories, values })
}
