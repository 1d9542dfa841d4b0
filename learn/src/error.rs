//! The one error type of the learn crate.

use std::path::PathBuf;

use thiserror::Error;

/// Everything that can go wrong while loading study data, fitting a
/// scorecard or measuring it.
///
/// Messages name the column, the CSV line or the setting at fault, so a
/// person can fix the input; they never carry a row's values beyond the one
/// offending cell.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// A setting is out of range (test fraction, scale).
    #[error("{setting}: {message}")]
    Setting {
        /// The setting, e.g. `test fraction`.
        setting: &'static str,
        /// What is wrong with it.
        message: String,
    },

    /// The party split (`platform=colA,colB;bank=colC`) is malformed or
    /// does not fit the data.
    #[error("party split: {0}")]
    Parties(String),

    /// The data file cannot be opened or read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: csv::Error,
    },

    /// A line of the CSV is malformed (unterminated quote, a row whose
    /// number of cells differs from the header).
    #[error("CSV line {line}: {message}")]
    Csv {
        /// 1-based line in the file (the header is line 1).
        line: u64,
        /// What is wrong.
        message: String,
    },

    /// The CSV has no header or no data rows.
    #[error("the CSV is empty: {0}")]
    Empty(String),

    /// The label column is absent, or holds a value that is neither the
    /// good nor the bad label, or only one class.
    #[error("label column `{column}` {message}")]
    Label {
        /// The label column.
        column: String,
        /// What is wrong, with the line where one cell is at fault.
        message: String,
    },

    /// A feature column cannot be used.
    #[error("column `{column}` {message}")]
    Column {
        /// The column's header.
        column: String,
        /// What is wrong, with the line where one cell is at fault.
        message: String,
    },

    /// Two columns turn into the same feature name.
    #[error("columns `{first}` and `{second}` both become feature `{feature}`; rename one")]
    FeatureName {
        /// The earlier column.
        first: String,
        /// The later column.
        second: String,
        /// The feature name both become.
        feature: String,
    },

    /// The stratified split leaves a side with one class only.
    #[error("the {side} rows hold only one class of `{label}`; use more data or another test fraction")]
    Split {
        /// `training` or `test`.
        side: &'static str,
        /// The label column.
        label: String,
    },

    /// A metric is undefined for its input (one class only, no rows,
    /// lengths that differ).
    #[error("{metric} is undefined: {message}")]
    Metric {
        /// `AUC` or `KS`.
        metric: &'static str,
        /// Why.
        message: String,
    },

    /// A fit spec (`jointscore lender fit --spec`) is malformed.
    #[error("fit spec: {0}")]
    Spec(String),

    /// What another role sent in a fit over the services does not fit the
    /// spec or the rows (bin descriptions, counts, WoE tables).
    #[error("fit: {0}")]
    Remote(String),

    /// The binning protocol refused its inputs.
    #[error("binning protocol: {0}")]
    Binning(#[from] jointscore_binning::Error),

    /// The fitted model does not validate, or a row cannot be read as
    /// inputs of it.
    #[error(transparent)]
    Model(#[from] jointscore_circuits::Error),
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
