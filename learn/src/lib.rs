//! Scorecard learning for jointscore: what `jointscore study` does, as a
//! library.
//!
//! - [`Study`] reads a CSV of labelled subjects, types its columns, gives
//!   each column to the party that holds it ([`PartySplit`]) and splits the
//!   rows into stratified training and test sets.
//! - [`fit()`] fits a scorecard on the training rows through the vertical
//!   binning protocol (`jointscore-binning`): bins, weight-of-evidence
//!   points, selection by information value, a base score, cutoffs and
//!   bands. It returns a validated [`jointscore_circuits::Model`], ready to
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

pub use data::{Column, Feature, LENDER, LoadOptions, MISSING, OTHER, PartySplit, Study};
pub use error::{Error, Result};
pub use fit::{FeatureFit, Fit, MIN_IV, Scale, fit};
pub use lr::{LogisticRegression, reference_lr};
pub use metrics::{auc, ks};
pub use plot::{Curve, distribution_svg, roc_svg};
