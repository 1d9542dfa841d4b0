//! Scorecard learning for jointscore: what `jointscore study` does, as a
//! library.
//!
//! - [`Study`] reads a CSV of labelled subjects, types its columns, gives
//!   each column to the party that holds it ([`PartySplit`]) and splits the
//!   rows into stratified training and test sets.
//! - [`fit()`] fits a scorecard on the training rows through the vertical
//!   binning protocol (`jointscore-binning`): bins, weight-of-evidence,
//!   selection by information value, logistic-regression weights fitted
//!   jointly from the Gram matrix round ([`fit_weights`]), points, a base
//!   score, cutoffs and bands. It returns a validated [`jointscore_circuits::Model`], ready to
//!   be written ([`Model::to_toml`](jointscore_circuits::Model::to_toml)),
//!   approved and evaluated.
//! - [`reference_lr`] is the plaintext logistic regression the scorecard is
//!   compared with; [`auc`] and [`ks`] measure both; [`roc_svg`] and
//!   [`distribution_svg`] draw them.
//!
//! No network, no async: the study runs every role in one process.

mod data;
mod error;
mod fit;
mod lr;
mod metrics;
mod plot;
#[cfg(test)]
mod quality;
mod remote;
mod weights;

pub use data::{Column, Feature, LENDER, LoadOptions, MISSING, OTHER, PartySplit, Study};
pub use error::{Error, Result};
pub use fit::{Bytes, Cost, FeatureFit, Fit, FitOptions, MIN_IV, Scale, Weighting, fit};
pub use lr::{LogisticRegression, reference_lr};
pub use metrics::{auc, ks};
pub use plot::{Curve, distribution_svg, roc_svg};
pub use remote::{
    BinKind, CutoffSpec, FeatureBins, FeatureKind, FeatureSpec, FeatureValues, FitSpec, LENDER_NAME, MAX_ROWS,
    MIN_ROWS, PartyAnswer, PartyBinning, PartySpec, ScaleSpec, Selection, WoeTable, party_bins, read_labels,
    woe_column,
};
pub use weights::{Iteration, Weights, fit_weights};
