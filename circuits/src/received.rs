//! A model as a request carries it: bounded, parsed, validated and held to
//! the id the request names.
//!
//! The coordinator and every party receive a model file with each request,
//! next to the id a party approved. Both read it through [`model_for_id`],
//! so the size limit and the id check are written once.

use crate::error::{Error, Result};
use crate::model::Model;

/// Largest model file a node accepts from the network, in bytes. The
/// shipped model is under 8 KiB; this leaves room for large scorecards and
/// keeps a hostile request from making a node parse megabytes of TOML.
pub const MODEL_FILE_LIMIT: usize = 256 << 10;

/// The model in `source`, which a request sent under the id `model_id`.
///
/// Refuses a file over [`MODEL_FILE_LIMIT`] before parsing it
/// ([`Error::ModelTooLarge`]), any file that does not parse or validate,
/// and a model whose id is not `model_id` ([`Error::ModelMismatch`]): a
/// party approves ids, so a file that means another model must never be
/// evaluated under an approved one's name.
pub fn model_for_id(source: &str, model_id: &str) -> Result<Model> {
    if source.len() > MODEL_FILE_LIMIT {
        return Err(Error::ModelTooLarge { len: source.len(), limit: MODEL_FILE_LIMIT });
    }
    let model = Model::from_toml(source)?;
    if model.id() != model_id {
        return Err(Error::ModelMismatch {
            named: model_id.chars().take(64).collect(),
            actual: model.id().to_string(),
        });
    }
    Ok(model)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CROSS_BORDER_SELLER;

    #[test]
    fn the_model_sent_under_its_own_id_is_read() {
        let id = Model::cross_border_seller().id().to_string();
        let model = model_for_id(CROSS_BORDER_SELLER, &id).expect("its own id");
        assert_eq!(model.id(), id);
    }

    #[test]
    fn a_model_sent_under_another_id_is_refused_naming_both() {
        let err = model_for_id(CROSS_BORDER_SELLER, "00ff").expect_err("wrong id");
        assert!(matches!(err, Error::ModelMismatch { .. }), "{err}");
        let message = err.to_string();
        assert!(message.contains("00ff") && message.contains(Model::cross_border_seller().id()), "{message}");
    }

    #[test]
    fn an_oversized_model_file_is_refused_before_parsing() {
        let huge = format!("{CROSS_BORDER_SELLER}\n# {}\n", "x".repeat(MODEL_FILE_LIMIT));
        let err = model_for_id(&huge, Model::cross_border_seller().id()).expect_err("too large");
        assert!(matches!(err, Error::ModelTooLarge { limit: MODEL_FILE_LIMIT, .. }), "{err}");
    }

    #[test]
    fn a_malformed_model_file_is_a_parse_error() {
        let err = model_for_id("format = [", "00").expect_err("malformed");
        assert!(matches!(err, Error::Parse(_)), "{err}");
    }
}
