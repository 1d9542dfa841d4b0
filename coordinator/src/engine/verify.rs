//! Checks of a party's contribution before it is evaluated: its signature
//! over exactly these bytes for exactly this request (with a consortium),
//! and in strict mode its proofs.

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use jointscore_circuits::fhe::{Contribution, PublicKey};
use jointscore_circuits::proof::Crs;
use jointscore_identity::{Consortium, ContributionBinding, IdentityError, ciphertext_sha256};
use jointscore_monitor::Compiled;
use jointscore_proto::v1::ContributionHeader;
use tonic::Code;

use super::{failed, micros};
use crate::error::{CoordinatorError, Result};
use crate::job::SignedContribution;

/// The party's signed envelope over exactly these bytes for exactly
/// this request. With a consortium, a missing or invalid signature fails
/// the contribution: UNAUTHENTICATED for a signature that does not
/// verify, PERMISSION_DENIED for a signer that is not a current party
/// member. Without one, a signature is passed on unchecked.
pub(super) fn check_signature(
    consortium: Option<&Consortium>,
    name: &str,
    binding: &ContributionBinding,
    header: &ContributionHeader,
    bytes: &[u8],
) -> Result<Option<SignedContribution>> {
    let envelope = binding.clone().envelope(ciphertext_sha256(bytes), header.signed_ms);
    if let Some(consortium) = consortium {
        if header.signature.is_empty() {
            return Err(failed(
                Code::Unauthenticated,
                format!("party `{name}` sent an unsigned contribution; the consortium requires signatures"),
            ));
        }
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        envelope.verify(consortium, &header.signature, now).map_err(|e| {
            let code = match e {
                IdentityError::BadSignature { .. } => Code::Unauthenticated,
                _ => Code::PermissionDenied,
            };
            failed(code, format!("contribution of party `{name}` refused: {e}"))
        })?;
    }
    Ok((!header.signature.is_empty()).then(|| SignedContribution {
        party: envelope.party,
        ciphertext_sha256: envelope.ciphertext_sha256,
        signed_ms: envelope.time_ms,
        signature: hex::encode(&header.signature),
        consent: envelope.consent,
    }))
}

/// Party `name`'s contribution decoded against the plan and key, and the
/// microseconds its proofs took to verify. In strict mode (`crs`), its
/// proofs must verify for `binding`'s request, off the async workers; a
/// contribution whose proofs do not is refused with INVALID_ARGUMENT.
pub(super) async fn decode(
    crs: Option<&Arc<Crs>>,
    name: &str,
    bytes: Vec<u8>,
    binding: ContributionBinding,
    plan: &Arc<Compiled>,
    index: usize,
    public: &PublicKey,
) -> Result<(Contribution, u64)> {
    Ok(match crs {
        None => (Contribution::from_bytes(&bytes, plan, index, public)?, 0),
        Some(crs) => {
            // Verifying is CPU work (a fraction of a second per
            // proof): off the async workers.
            let (crs, plan, public) = (crs.clone(), plan.clone(), public.clone());
            tokio::task::spawn_blocking(move || {
                let start = Instant::now();
                let metadata = binding.proof_metadata();
                Contribution::from_proven_bytes(&bytes, &plan, index, &public, &crs, &metadata)
                    .map(|c| (c, micros(start.elapsed())))
            })
            .await
            .map_err(|e| CoordinatorError::Transport(format!("verification task failed: {e}")))?
            .map_err(|e| failed(Code::InvalidArgument, format!("contribution of party `{name}` refused: {e}")))?
        }
    })
}
