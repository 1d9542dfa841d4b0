//! Study data: a CSV read into typed columns, the party split and a
//! stratified train/test split. Every refusal names the column, the CSV line
//! or the setting at fault.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::Path;
use std::str::FromStr;

use jointscore_circuits::{MAX_CATEGORIES, Model, Record};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// Cells read as missing.
pub const MISSING: [&str; 5] = ["", "NA", "NaN", "?", "null"];

/// Largest number of decimal places kept when a numeric column is scaled to
/// integers for the model file.
const MAX_DECIMALS: u32 = 4;

/// Name of the category that gathers rare ones when a column has more
/// categories than a model can take.
pub const OTHER: &str = "(other)";

/// The party that holds every column the split does not give to a party,
/// and the label.
pub const LENDER: &str = "lender";

/// A feature column, typed.
#[derive(Clone, Debug, PartialEq)]
pub enum Column {
    /// Integers after scaling by `10^decimals`.
    Numeric {
        /// Each row's value; `None` when missing.
        values: Vec<Option<i64>>,
        /// How many decimal places the scaling kept.
        decimals: u32,
    },
    /// Category names, sorted (`(other)` last), and each row's index into
    /// them.
    Categorical {
        /// The categories.
        categories: Vec<String>,
        /// Each row's category; `None` when missing.
        values: Vec<Option<usize>>,
    },
}

/// A feature: name, owning party, column.
#[derive(Clone, Debug, PartialEq)]
pub struct Feature {
    /// Feature name: the header in lower case, letters, digits and `_`.
    pub name: String,
    /// The CSV header it came from.
    pub column_name: String,
    /// The party that holds the column.
    pub party: String,
    /// The values.
    pub column: Column,
}

/// Which party holds which columns: `platform=colA,colB:num;bank=colC:cat`.
/// A column may be declared `:num` or `:cat`; undeclared columns are typed
/// by their values. Columns no party is given stay with the lender.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PartySplit {
    parties: Vec<PartyColumns>,
}

/// One party's columns, each with its declared type (`Some(true)` numeric,
/// `Some(false)` categorical, `None` typed by its values).
#[derive(Clone, Debug, PartialEq, Eq)]
struct PartyColumns {
    party: String,
    columns: Vec<(String, Option<bool>)>,
}

impl FromStr for PartySplit {
    type Err = Error;

    fn from_str(spec: &str) -> Result<PartySplit> {
        let bad = |m: String| Err(Error::Parties(m));
        let mut parties: Vec<PartyColumns> = Vec::new();
        for part in spec.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let Some((party, cols)) = part.split_once('=') else {
                return bad(format!("`{part}` is not PARTY=COL,COL"));
            };
            let party = party.trim();
            if party.is_empty()
                || party == LENDER
                || !party.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return bad(format!("party name `{party}` must be letters, digits, `_` or `-` (and not `{LENDER}`)"));
            }
            if parties.iter().any(|p| p.party == party) {
                return bad(format!("party `{party}` is listed twice; give all its columns at once"));
            }
            let columns = cols
                .split(',')
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(|c| match c.rsplit_once(':') {
                    Some((n, "num")) => (n.to_string(), Some(true)),
                    Some((n, "cat")) => (n.to_string(), Some(false)),
                    _ => (c.to_string(), None),
                })
                .collect();
            parties.push(PartyColumns { party: party.to_string(), columns });
        }
        Ok(PartySplit { parties })
    }
}

/// How to read a study file.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// The label column.
    pub label: String,
    /// The label value that means bad (defaulted).
    pub bad: String,
    /// The label value that means good; when given, every label must be
    /// `good` or `bad`. When not, every present value other than `bad` is
    /// good. A missing label is refused either way.
    pub good: Option<String>,
    /// Who holds which columns.
    pub parties: PartySplit,
    /// Share of rows held out for testing, in (0, 1), stratified by class.
    pub test_fraction: f64,
    /// Seed of the split.
    pub seed: u64,
}

/// A loaded study: features, labels (true = bad), and the split.
#[derive(Clone, Debug)]
pub struct Study {
    features: Vec<Feature>,
    labels: Vec<bool>,
    train: Vec<usize>,
    test: Vec<usize>,
    parties: Vec<String>,
}

impl Study {
    /// Reads a CSV file.
    pub fn load(path: &Path, options: &LoadOptions) -> Result<Study> {
        let file = std::fs::File::open(path)
            .map_err(|e| Error::Read { path: path.to_path_buf(), source: csv::Error::from(e) })?;
        Study::read(file, options)
    }

    /// Reads CSV text: a header row, one row per subject.
    pub fn read(reader: impl Read, options: &LoadOptions) -> Result<Study> {
        let fraction = options.test_fraction;
        if fraction.is_nan() || fraction <= 0.0 || fraction >= 1.0 {
            return Err(Error::Setting { setting: "test fraction", message: "must be in (0, 1)".into() });
        }
        let (header, rows) = read_csv(reader)?;
        let label = &options.label;
        let label_at = header
            .iter()
            .position(|h| h == label)
            .ok_or_else(|| Error::Label { column: label.clone(), message: "is not in the CSV".into() })?;
        let labels = rows
            .iter()
            .map(|(line, r)| {
                let cell = r[label_at].as_str();
                let refuse = |message: String| Error::Label { column: label.clone(), message };
                if cell == options.bad {
                    Ok(true)
                } else if MISSING.contains(&cell) {
                    Err(refuse(format!("has no value on line {line}")))
                } else if let Some(good) = options.good.as_ref().filter(|g| *g != cell) {
                    Err(refuse(format!("holds `{cell}` on line {line}; expected `{good}` or `{}`", options.bad)))
                } else {
                    Ok(false)
                }
            })
            .collect::<Result<Vec<bool>>>()?;
        let bads = labels.iter().filter(|&&b| b).count();
        if bads == 0 || bads == labels.len() {
            return Err(Error::Label {
                column: label.clone(),
                message: format!("needs both `{}` and other values", options.bad),
            });
        }

        let mut owner: Vec<Option<(String, Option<bool>)>> = vec![None; header.len()];
        for PartyColumns { party, columns } in &options.parties.parties {
            for (col, numeric) in columns {
                let at = header.iter().position(|h| h == col).ok_or_else(|| {
                    Error::Parties(format!("the split names column `{col}`, which is not in the CSV"))
                })?;
                if at == label_at {
                    return Err(Error::Parties(format!(
                        "gives the label column `{col}` to {party}; the {LENDER} keeps the label"
                    )));
                }
                if owner[at].is_some() {
                    return Err(Error::Parties(format!("column `{col}` is given to two parties")));
                }
                owner[at] = Some((party.clone(), *numeric));
            }
        }

        let mut features: Vec<Feature> = Vec::new();
        for (at, name) in header.iter().enumerate().filter(|&(at, _)| at != label_at) {
            let (party, declared) = owner[at].clone().unwrap_or_else(|| (LENDER.to_string(), None));
            let cells: Vec<(u64, Option<&str>)> =
                rows.iter().map(|(line, r)| (*line, Some(r[at].as_str()).filter(|c| !MISSING.contains(c)))).collect();
            let numeric = declared.unwrap_or_else(|| {
                cells.iter().filter_map(|(_, c)| *c).all(|c| c.parse::<f64>().is_ok_and(f64::is_finite))
            });
            let column = if numeric { numeric_column(name, &cells)? } else { categorical_column(name, &cells)? };
            let distinct = match &column {
                Column::Numeric { values, .. } => values.iter().flatten().collect::<BTreeSet<_>>().len(),
                Column::Categorical { categories, .. } => categories.len(),
            };
            if distinct < 2 {
                return Err(column_error(name, "is constant; drop it or give it values"));
            }
            let feature_name = sanitize(name);
            if let Some(other) = features.iter().find(|f| f.name == feature_name) {
                return Err(Error::FeatureName {
                    first: other.column_name.clone(),
                    second: name.clone(),
                    feature: feature_name,
                });
            }
            features.push(Feature { name: feature_name, column_name: name.clone(), party, column });
        }
        if features.is_empty() {
            return Err(Error::Empty("no columns besides the label".into()));
        }
        let mut parties: Vec<String> = options.parties.parties.iter().map(|p| p.party.clone()).collect();
        if features.iter().any(|f| f.party == LENDER) {
            parties.push(LENDER.into());
        }

        let (train, test) = split(&labels, options.test_fraction, options.seed);
        for (side, rows) in [("training", &train), ("test", &test)] {
            let bads = rows.iter().filter(|&&i| labels[i]).count();
            if bads == 0 || bads == rows.len() {
                return Err(Error::Split { side, label: label.clone() });
            }
        }
        Ok(Study { features, labels, train, test, parties })
    }

    /// The features, in header order (the label left out).
    pub fn features(&self) -> &[Feature] {
        &self.features
    }

    /// Each row's label: true for bad.
    pub fn labels(&self) -> &[bool] {
        &self.labels
    }

    /// The training rows, ascending.
    pub fn train(&self) -> &[usize] {
        &self.train
    }

    /// The test rows, ascending.
    pub fn test(&self) -> &[usize] {
        &self.test
    }

    /// The parties that hold features: those of the split in its order,
    /// then the lender if it holds any.
    pub fn parties(&self) -> &[String] {
        &self.parties
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.labels.len()
    }

    /// Row `row`'s values of the model's features, as a plaintext record.
    pub fn record(&self, model: &Model, row: usize) -> Result<Record> {
        let mut map = Map::new();
        for f in self.features.iter().filter(|f| model.feature_index(&f.name).is_some()) {
            let v = match &f.column {
                Column::Numeric { values, .. } => values.get(row).copied().flatten().map_or(Value::Null, Value::from),
                Column::Categorical { categories, values } => values
                    .get(row)
                    .copied()
                    .flatten()
                    .and_then(|c| categories.get(c))
                    .map_or(Value::Null, |c| Value::from(c.clone())),
            };
            map.insert(f.name.clone(), v);
        }
        Ok(Record::from_json(model, &Value::Object(map))?)
    }
}

fn column_error(column: &str, message: impl Into<String>) -> Error {
    Error::Column { column: column.to_string(), message: message.into() }
}

/// The header and the data rows, each with its line and trimmed cells.
type Table = (Vec<String>, Vec<(u64, Vec<String>)>);

fn read_csv(reader: impl Read) -> Result<Table> {
    let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(reader);
    let header: Vec<String> = reader.headers().map_err(|e| csv_error(&e, 1))?.iter().map(str::to_string).collect();
    if header.iter().all(|h| h.trim().is_empty()) {
        return Err(Error::Empty("no header row".into()));
    }
    for (i, h) in header.iter().enumerate() {
        if header[..i].contains(h) {
            return Err(column_error(h, "appears twice in the header"));
        }
    }
    let mut rows = Vec::new();
    for (i, rec) in reader.records().enumerate() {
        let rec = rec.map_err(|e| csv_error(&e, i as u64 + 2))?;
        let line = rec.position().map_or(i as u64 + 2, |p| p.line());
        if rec.len() != header.len() {
            return Err(Error::Csv {
                line,
                message: format!("the row has {} cells, the header {}", rec.len(), header.len()),
            });
        }
        rows.push((line, rec.iter().map(|s| s.trim().to_string()).collect()));
    }
    if rows.is_empty() {
        return Err(Error::Empty("a header but no data rows".into()));
    }
    Ok((header, rows))
}

fn csv_error(e: &csv::Error, fallback_line: u64) -> Error {
    Error::Csv { line: e.position().map_or(fallback_line, |p| p.line()), message: e.to_string() }
}

/// Stratified split: the same share of each class goes to test.
fn split(labels: &[bool], test_fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
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
    (train, test)
}

/// Column names become feature names: letters, digits and `_`.
fn sanitize(name: &str) -> String {
    let s: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' }).collect();
    if s.is_empty() || s.starts_with(|c: char| c.is_ascii_digit()) { format!("f_{s}") } else { s }
}

fn numeric_column(name: &str, cells: &[(u64, Option<&str>)]) -> Result<Column> {
    let mut decimals = 0;
    for &(line, c) in cells {
        let Some(c) = c else { continue };
        if !c.parse::<f64>().is_ok_and(f64::is_finite) {
            return Err(column_error(name, format!("is numeric but row {line} holds `{c}`")));
        }
        if let Some((_, frac)) = c.split_once('.') {
            decimals = decimals.max(frac.trim_end_matches('0').len() as u32);
        }
    }
    // Keep as many decimals as the model's integer range allows (a range
    // may span at most 2^32 values).
    let parsed: Vec<Option<f64>> = cells.iter().map(|(_, c)| c.and_then(|c| c.parse::<f64>().ok())).collect();
    for decimals in (0..=decimals.min(MAX_DECIMALS)).rev() {
        let scale = 10f64.powi(decimals as i32);
        let values: Vec<Option<i64>> = parsed.iter().map(|v| v.map(|v| (v * scale).round() as i64)).collect();
        let lo = values.iter().flatten().min().copied().unwrap_or(0);
        let hi = values.iter().flatten().max().copied().unwrap_or(0);
        if lo.abs() <= 1 << 40 && hi.abs() <= 1 << 40 && hi - lo < 1 << 32 {
            return Ok(Column::Numeric { values, decimals });
        }
    }
    Err(column_error(name, "spans more than 2^32 integer values; rescale it"))
}

pub(crate) fn categorical_column(name: &str, cells: &[(u64, Option<&str>)]) -> Result<Column> {
    let mut freq: BTreeMap<&str, usize> = BTreeMap::new();
    for c in cells.iter().filter_map(|(_, c)| *c) {
        *freq.entry(c).or_default() += 1;
    }
    if freq.contains_key(OTHER) {
        return Err(column_error(name, format!("uses the reserved category `{OTHER}`")));
    }
    // Keep the most frequent categories; the rest share `(other)`.
    let mut by_count: Vec<(&str, usize)> = freq.into_iter().collect();
    by_count.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let keep = if by_count.len() > MAX_CATEGORIES { MAX_CATEGORIES - 1 } else { by_count.len() };
    let mut categories: Vec<String> = by_count[..keep].iter().map(|(c, _)| c.to_string()).collect();
    categories.sort();
    if by_count.len() > keep {
        categories.push(OTHER.to_string());
    }
    let values = cells
        .iter()
        .map(|(_, c)| c.map(|c| categories.iter().position(|x| x == c).unwrap_or(categories.len() - 1)))
        .collect();
    Ok(Column::Categorical { categories, values })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(label: &str, parties: &str) -> LoadOptions {
        LoadOptions {
            label: label.into(),
            bad: "bad".into(),
            good: None,
            parties: parties.parse().expect("split"),
            test_fraction: 0.25,
            seed: 1,
        }
    }

    /// Eight rows, four of each class: amount (numeric with a decimal and a
    /// missing cell), region (categorical), label.
    const CSV: &str = "amount,region,label\n\
        10.5,north,good\n20,south,bad\n,north,good\n40,east,bad\n\
        50,south,good\n60,north,bad\n70,east,good\n80,south,bad\n";

    fn read(text: &str, o: &LoadOptions) -> Result<Study> {
        Study::read(text.as_bytes(), o)
    }

    #[test]
    fn a_good_file_is_typed_split_and_owned() {
        let s = read(CSV, &options("label", "platform=region")).unwrap();
        assert_eq!(s.rows(), 8);
        assert_eq!(s.parties(), ["platform", "lender"]);
        assert_eq!((s.train().len(), s.test().len()), (6, 2));
        assert_eq!(s.test().iter().filter(|&&i| s.labels()[i]).count(), 1, "stratified");
        let amount = &s.features()[0];
        assert_eq!((amount.name.as_str(), amount.party.as_str()), ("amount", "lender"));
        assert_eq!(
            amount.column,
            Column::Numeric {
                values: vec![Some(105), Some(200), None, Some(400), Some(500), Some(600), Some(700), Some(800)],
                decimals: 1
            }
        );
        let Column::Categorical { categories, .. } = &s.features()[1].column else { panic!("categorical") };
        assert_eq!(categories, &["east", "north", "south"]);
        // The same seed gives the same split.
        assert_eq!(read(CSV, &options("label", "platform=region")).unwrap().test(), s.test());
    }

    fn refusal(text: &str, o: &LoadOptions) -> String {
        read(text, o).expect_err("refused").to_string()
    }

    #[test]
    fn a_missing_label_column_is_named() {
        let e = refusal(CSV, &options("outcome", ""));
        assert_eq!(e, "label column `outcome` is not in the CSV");
    }

    #[test]
    fn labels_outside_good_and_bad_name_the_line() {
        let mut o = options("label", "");
        o.good = Some("good".into());
        let text = CSV.replace("50,south,good", "50,south,maybe");
        let e = refusal(&text, &o);
        assert_eq!(e, "label column `label` holds `maybe` on line 6; expected `good` or `bad`");
        // Without `good`, other values are good, but a missing label is
        // never read as one.
        assert!(read(&text, &options("label", "")).is_ok());
        let e = refusal(&CSV.replace("70,east,good", "70,east,"), &options("label", ""));
        assert_eq!(e, "label column `label` has no value on line 8");
        let e = refusal(&CSV.replace(",bad", ",good"), &options("label", ""));
        assert!(e.contains("needs both `bad` and other values"), "{e}");
    }

    #[test]
    fn empty_files_are_refused() {
        assert_eq!(refusal("", &options("label", "")), "the CSV is empty: no header row");
        assert_eq!(refusal("amount,label\n", &options("label", "")), "the CSV is empty: a header but no data rows");
    }

    #[test]
    fn a_ragged_row_names_its_line() {
        let text = CSV.replace("40,east,bad", "40,east");
        assert_eq!(refusal(&text, &options("label", "")), "CSV line 5: the row has 2 cells, the header 3");
        // Line numbers count the lines a quoted cell spans.
        let text = CSV.replace("north,good\n20", "\"nor\nth\",good\n20").replace("40,east,bad", "40,east,bad,x");
        assert_eq!(refusal(&text, &options("label", "")), "CSV line 6: the row has 4 cells, the header 3");
    }

    #[test]
    fn bad_columns_and_splits_are_named() {
        let e = refusal(&CSV.replace("40,east", "abc,east"), &options("label", "platform=amount:num"));
        assert_eq!(e, "column `amount` is numeric but row 5 holds `abc`");
        let e = "p=amount;p=region".parse::<PartySplit>().unwrap_err().to_string();
        assert_eq!(e, "party split: party `p` is listed twice; give all its columns at once");
        assert!("=amount".parse::<PartySplit>().is_err() && "p:amount".parse::<PartySplit>().is_err());
        assert!(refusal(CSV, &options("label", "p=colour")).contains("column `colour`"));
        assert!(refusal(CSV, &options("label", "p=label")).contains("the lender keeps the label"));
        let e = refusal(&CSV.replace("amount,region", "amount,Amount"), &options("label", ""));
        assert_eq!(e, "columns `amount` and `Amount` both become feature `amount`; rename one");
        let mut o = options("label", "");
        o.test_fraction = 1.0;
        assert_eq!(refusal(CSV, &o), "test fraction: must be in (0, 1)");
        o.test_fraction = 0.01;
        assert!(refusal(CSV, &o).contains("the test rows hold only one class of `label`"));
    }

    #[test]
    fn many_categories_pool_the_rarest() {
        let mut text = String::from("city,label\n");
        for i in 0..40 {
            text.push_str(&format!("c{},{}\n", i % 20, if i % 2 == 0 { "good" } else { "bad" }));
        }
        let s = read(&text, &options("label", "")).unwrap();
        let Column::Categorical { categories, .. } = &s.features()[0].column else { panic!("categorical") };
        assert_eq!(categories.len(), MAX_CATEGORIES);
        assert_eq!(categories.last().map(String::as_str), Some(OTHER));
    }
}
