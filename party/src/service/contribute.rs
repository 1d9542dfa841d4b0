//! Contributions: the rules a party applies before it encrypts anything,
//! and the encryption itself. No protobuf type reaches this module; the
//! adapter converts a `ContributeRequest` first (`super::wire`).

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use jointscore_circuits::fhe::{Contribution, PublicKey};
use jointscore_circuits::{Plan, PlanKind, Record, model_for_id};
use jointscore_identity::{ContributionBinding, ciphertext_sha256};

use super::{PartyService, lock};
use crate::error::{PartyError, Result};

/// A contribution request from the coordinator, its fields checked for
/// form.
#[derive(Clone, Debug)]
pub(crate) struct ContributionRequest {
    /// The coordinator's job.
    pub(crate) job_id: String,
    /// Whose records are asked for.
    pub(crate) subject: String,
    /// The model, by id (what the operator approves).
    pub(crate) model_id: String,
    /// The model file sent with the request; must be `model_id`.
    pub(crate) model_toml: String,
    /// The lender's key set.
    pub(crate) key_id: String,
    /// Which plan's inputs to compute.
    pub(crate) plan: PlanKind,
    /// Parties named absent by the lender's alignment.
    pub(crate) absent: Vec<String>,
}

/// An encrypted, signed contribution.
pub(crate) struct Contributed {
    /// This party's name, as the model spells it.
    pub(crate) party: String,
    /// The serialized ciphertext list.
    pub(crate) bytes: Vec<u8>,
    /// How many ciphertext blocks it holds.
    pub(crate) blocks: u32,
    /// Time spent computing and encrypting, in microseconds.
    pub(crate) encrypt_us: u64,
    /// The party's signature over the envelope (empty without identity).
    pub(crate) signature: Vec<u8>,
    /// When it was signed, in milliseconds since the epoch.
    pub(crate) signed_ms: u64,
}

impl PartyService {
    /// The plan for an approved model, parsed once per model id and kind.
    fn plan(&self, model_id: &str, toml: &str, kind: PlanKind) -> Result<Arc<Plan>> {
        if !self.approved.contains(model_id) {
            return Err(PartyError::NotApproved { party: self.name.clone(), model_id: model_id.into() });
        }
        let cache_key = (model_id.to_string(), kind);
        if let Some(plan) = lock(&self.plans)?.get(&cache_key) {
            return Ok(plan.clone());
        }
        let model = model_for_id(toml, model_id)?;
        // A model whose revealed output is one party's feature in disguise
        // would hand that feature to the lender: refused unless the
        // operator named it.
        if !self.lint_override.contains(model_id) {
            let lint = jointscore_circuits::lint::lint(&model);
            if let Some((output, r)) = lint.outputs.iter().find_map(|o| o.revealing.as_ref().map(|r| (o.output, r))) {
                return Err(PartyError::LintFailed {
                    party: self.name.clone(),
                    model_id: model_id.into(),
                    detail: format!("its {} shows {}'s `{}` ({})", output.name(), r.party, r.feature, r.detail),
                });
            }
        }
        let plan = Arc::new(Plan::new(&model, kind)?);
        lock(&self.plans)?.insert(cache_key, plan.clone());
        Ok(plan)
    }

    /// Refuses to contribute when it is named absent, or when too few
    /// parties would contribute: a decision on this party's data with the
    /// others named absent would be a function of this party's data alone.
    fn check_present(&self, plan: &Plan, absent: &[String]) -> Result<()> {
        if absent.contains(&self.name) {
            return Err(PartyError::BadRequest(format!("party `{}` is asked while named absent", self.name)));
        }
        let parties = plan.model().parties();
        let present = parties.iter().filter(|p| !absent.contains(p)).count();
        let required = self.min_present_parties.min(parties.len());
        if present < required {
            return Err(PartyError::TooFewPresent { party: self.name.clone(), present, required });
        }
        Ok(())
    }

    /// Computes, encrypts and signs this party's contribution to one
    /// request.
    ///
    /// Refused before any record is read: a model this party has not
    /// approved, a model file that is not the approved id, a model whose
    /// lint fails (unless overridden by name), a plan the model
    /// cannot compile, a model without this party, a request naming this
    /// party absent or leaving too few parties present, and a key set the
    /// coordinator cannot show. An unknown subject is `NOT_FOUND`.
    pub(crate) async fn contribution(&self, request: ContributionRequest) -> Result<Contributed> {
        let plan = self.plan(&request.model_id, &request.model_toml, request.plan)?;
        let party = plan.model().party_index(&self.name).map_err(|_| {
            PartyError::BadRequest(format!("model {} has no party named `{}`", request.model_id, self.name))
        })?;
        self.check_present(&plan, &request.absent)?;
        let key: PublicKey = self.public_key(&request.key_id).await?;
        let identity = self.identity.clone();
        let crs = self.crs.clone();
        let record = self
            .store
            .get(&request.subject)?
            .ok_or_else(|| PartyError::UnknownSubject { subject: request.subject.clone(), party: self.name.clone() })?;
        // Encryption is CPU work: keep it off the async workers.
        tokio::task::spawn_blocking(move || {
            let start = Instant::now();
            let record = Record::for_party(plan.model(), party, &record)?;
            let digits = plan.contribution(party, &record)?;
            let name = plan.model().parties()[party].clone();
            let binding = ContributionBinding {
                job_id: request.job_id,
                subject: request.subject,
                model_id: request.model_id,
                key_id: request.key_id,
                party: name.clone(),
            };
            let contribution = match &crs {
                Some(crs) => Contribution::encrypt_proven(&plan, party, &digits, &key, crs, &binding.proof_metadata())?,
                None => Contribution::encrypt(&plan, party, &digits, &key)?,
            };
            let bytes = contribution.to_bytes()?;
            let signed_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
            let signature = identity.map_or_else(Vec::new, |key| {
                binding.envelope(ciphertext_sha256(&bytes), signed_ms).sign(&key).to_vec()
            });
            Ok(Contributed {
                party: name,
                blocks: u32::try_from(contribution.len()).unwrap_or(u32::MAX),
                encrypt_us: u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX),
                bytes,
                signature,
                signed_ms,
            })
        })
        .await
        .map_err(|e| PartyError::Transport(format!("encryption task failed: {e}")))?
    }
}

#[cfg(test)]
mod tests {
    use jointscore_circuits::{CROSS_BORDER_SELLER, Model, PlanKind};

    use super::*;
    use crate::config::PartyConfig;
    use crate::store::RecordStore;

    /// The shipped model with a credit line that shows `gmv_12m_k` unit by
    /// unit (divisor 1, granularity 1).
    fn leaky() -> (String, String) {
        let toml = CROSS_BORDER_SELLER
            .replace("formula = \"band_multiplier * gmv_12m_k / 12\"", "formula = \"band_multiplier * gmv_12m_k / 1\"")
            .replace("granularity = 5", "granularity = 1");
        let id = Model::from_toml(&toml).expect("valid model").id().to_string();
        (toml, id)
    }

    fn service(extra: &str) -> PartyService {
        let (_, id) = leaky();
        let text = format!(
            "name = \"platform\"\ncoordinator = \"http://127.0.0.1:7100\"\nstore = \"p.sqlite\"\napproved_models = \
             [\"{id}\"]\n{extra}"
        );
        let config = PartyConfig::from_toml(&text).expect("config");
        PartyService::new(&config, Arc::new(RecordStore::in_memory().expect("store")))
    }

    #[test]
    fn an_approved_model_whose_lint_fails_is_refused_unless_overridden_by_name() {
        let (toml, id) = leaky();
        let err = service("").plan(&id, &toml, PlanKind::Pushdown).expect_err("lint fails");
        assert!(matches!(err, PartyError::LintFailed { .. }), "{err}");
        let message = err.to_string();
        assert_eq!(tonic::Status::from(err).code(), tonic::Code::PermissionDenied);
        assert!(message.contains("credit_line") && message.contains("gmv_12m_k"), "{message}");
        assert!(message.contains("lint_override"), "{message}");

        let overridden = service(&format!("lint_override = [\"{id}\"]\n"));
        overridden.plan(&id, &toml, PlanKind::Pushdown).expect("the operator named it");
    }

    #[test]
    fn the_shipped_model_passes_the_lint_at_the_party() {
        let model = Model::cross_border_seller();
        let text = format!(
            "name = \"platform\"\ncoordinator = \"http://127.0.0.1:7100\"\nstore = \"p.sqlite\"\napproved_models = \
             [\"{}\"]\n",
            model.id()
        );
        let config = PartyConfig::from_toml(&text).expect("config");
        let service = PartyService::new(&config, Arc::new(RecordStore::in_memory().expect("store")));
        service.plan(model.id(), CROSS_BORDER_SELLER, PlanKind::Pushdown).expect("no lint finding");
    }
}
