//! What a request asks evaluated: a model's plan or a monitor spec's alert
//! plan. Decisions and monitoring share one request path (signed requests,
//! contributions, durable jobs, batched evaluation, sealed results, the
//! ledger); the plan kind says which file `model_toml` holds.

use jointscore_circuits::{
    CircuitStats, Error as CircuitsError, MODEL_FILE_LIMIT, PartyPlan, Plan, PlanKind, Program, Record, model_for_id,
};

use crate::plan::MonitorPlan;
use crate::spec::Spec;

/// A compiled request target. Held behind an `Arc` by every node (one per
/// model or spec), so the variants' sizes do not matter.
#[derive(Clone, Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Compiled {
    /// A credit model, planned pushdown or coordinator-side.
    Model(Plan),
    /// A monitor spec ([`PlanKind::Monitor`]).
    Monitor(MonitorPlan),
}

impl Compiled {
    /// The file `source`, sent under the id `id`, compiled for `kind`.
    ///
    /// Refused like a model file (`jointscore_circuits::model_for_id`): over
    /// [`MODEL_FILE_LIMIT`] before parsing, a file that does not parse or
    /// validate (a spec's errors name the field and line), and a file whose
    /// id is not `id`.
    pub fn new(source: &str, id: &str, kind: PlanKind) -> jointscore_circuits::Result<Compiled> {
        if kind != PlanKind::Monitor {
            return Ok(Compiled::Model(Plan::new(&model_for_id(source, id)?, kind)?));
        }
        if source.len() > MODEL_FILE_LIMIT {
            return Err(CircuitsError::ModelTooLarge { len: source.len(), limit: MODEL_FILE_LIMIT });
        }
        let spec = Spec::from_toml(source).map_err(|e| CircuitsError::Parse(e.to_string()))?;
        if spec.id() != id {
            return Err(CircuitsError::ModelMismatch { named: id.chars().take(64).collect(), actual: spec.id() });
        }
        MonitorPlan::new(&spec).map(Compiled::Monitor).map_err(|e| CircuitsError::Plan(e.to_string()))
    }

    /// A lender's own file, compiled for `kind` under the id it has.
    pub fn from_file(source: &str, kind: PlanKind) -> jointscore_circuits::Result<Compiled> {
        let id = match kind {
            PlanKind::Monitor => Spec::from_toml(source).map_err(|e| CircuitsError::Parse(e.to_string()))?.id(),
            PlanKind::Pushdown | PlanKind::CoordinatorSide => {
                jointscore_circuits::Model::from_toml(source)?.id().into()
            }
        };
        Compiled::new(source, &id, kind)
    }

    /// The model's or spec's id.
    pub fn id(&self) -> &str {
        match self {
            Compiled::Model(plan) => plan.model().id(),
            Compiled::Monitor(plan) => plan.id(),
        }
    }

    /// Which plan it is.
    pub fn kind(&self) -> PlanKind {
        match self {
            Compiled::Model(plan) => plan.kind(),
            Compiled::Monitor(_) => PlanKind::Monitor,
        }
    }

    /// The parties, in order.
    pub fn party_names(&self) -> &[String] {
        match self {
            Compiled::Model(plan) => plan.model().parties(),
            Compiled::Monitor(plan) => &plan.spec().parties,
        }
    }

    /// Static costs of the joint circuit.
    pub fn stats(&self) -> CircuitStats {
        self.circuit().stats()
    }

    /// What stands in for party `party` when the lender's alignment found
    /// it does not hold the subject: a model's contribution from an empty
    /// record (its features missing, treated as the model says), a spec's
    /// failing conditions.
    pub fn absent(&self, party: usize) -> jointscore_circuits::Result<Vec<u8>> {
        match self {
            Compiled::Model(plan) => {
                let record = Record::for_party(plan.model(), party, &serde_json::json!({}))?;
                plan.contribution(party, &record)
            }
            Compiled::Monitor(plan) => plan.absent(party).map_err(|e| CircuitsError::Plan(e.to_string())),
        }
    }
}

impl Program for Compiled {
    fn parties(&self) -> &[PartyPlan] {
        match self {
            Compiled::Model(plan) => plan.parties(),
            Compiled::Monitor(plan) => plan.parties(),
        }
    }

    fn circuit(&self) -> &jointscore_circuits::Circuit {
        match self {
            Compiled::Model(plan) => plan.circuit(),
            Compiled::Monitor(plan) => plan.alert_plan().circuit(),
        }
    }
}
