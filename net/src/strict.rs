//! A consortium's strict mode, as nodes load it.

use std::path::Path;

use jointscore_circuits::proof::Crs;
use jointscore_identity::Consortium;

/// The CRS of `consortium` (read from the file at `path`) when it runs
/// strict mode: the file its `[proofs]` section names, next to the
/// consortium file, checked against the hash the section pins. `None` when
/// the consortium does not require proofs.
pub fn strict_crs(consortium: &Consortium, path: &Path) -> Result<Option<Crs>, jointscore_circuits::Error> {
    let (Some(crs_path), Some(proofs)) = (consortium.crs_path(path), &consortium.proofs) else {
        return Ok(None);
    };
    Crs::read(&crs_path, &proofs.crs_sha256).map(Some)
}
