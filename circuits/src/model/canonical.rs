//! The model id: SHA-256 of the model's canonical form.
//!
//! The canonical form is the validated, normalised model as compact JSON:
//! parties and features by index, bins as inclusive ranges, defaults filled
//! in, outputs as a set. Comments, layout, descriptions and spelling choices
//! of the file (a bin's implied `min`, a category's quoting) do not reach
//! it, so two files that mean the same model share an id. Parties approve
//! ids: a change here changes every deployed id, so the golden test below
//! pins it.

use std::collections::BTreeSet;

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{Band, CreditLine, Feature, Knockout, Model, Output};
use crate::error::{Error, Result};

/// The fields that make up the id, in their canonical order.
#[derive(Serialize)]
struct Canonical<'a> {
    name: &'a str,
    version: &'a str,
    parties: &'a [String],
    base_points: i64,
    features: &'a [Feature],
    knockouts: &'a [Knockout],
    approve_at: i64,
    refer_at: i64,
    bands: &'a [Band],
    credit_line: Option<&'a CreditLine>,
    reasons: usize,
    reveal: &'a BTreeSet<Output>,
}

/// The hex id of a model whose fields are final.
pub(super) fn id(model: &Model) -> Result<String> {
    let canonical = Canonical {
        name: &model.name,
        version: &model.version,
        parties: &model.parties,
        base_points: model.base_points,
        features: &model.features,
        knockouts: &model.knockouts,
        approve_at: model.approve_at,
        refer_at: model.refer_at,
        bands: &model.bands,
        credit_line: model.credit_line.as_ref(),
        reasons: model.reasons,
        reveal: &model.reveal,
    };
    let bytes = serde_json::to_vec(&canonical).map_err(|e| Error::Internal(e.to_string()))?;
    Ok(hex::encode(Sha256::digest(&bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shipped model's id as deployed (README, ledger fixtures): the
    /// canonical form must not drift.
    const SHIPPED_ID: &str = "c51c325b5dc810010116c405b482f0fb05d996f0e45a5f947c13284716c75fe9";

    #[test]
    fn shipped_model_id_is_pinned() {
        assert_eq!(Model::cross_border_seller().id(), SHIPPED_ID);
    }

    #[test]
    fn descriptions_do_not_reach_the_id() {
        let mut file = Model::cross_border_seller().to_file();
        file.description = "another text".into();
        for k in &mut file.knockouts {
            k.description = "another reason".into();
        }
        let variant = Model::from_file(&file).expect("still valid");
        assert_eq!(variant.id(), SHIPPED_ID);
        assert_eq!(variant.description(), "another text");
    }
}
