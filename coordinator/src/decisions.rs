//! Decision requests: the rules a request must pass before it becomes a
//! durable job, and the ledger entry that records it.
//!
//! The gRPC adapter converts a `DecideRequest` into a [`DecisionRequest`]
//! (every field checked and named on error) and calls [`Engine::decide`];
//! nothing here sees a protobuf type.

use std::sync::Arc;

use jointscore_audit::{EntryKind, Event};
use jointscore_monitor::Compiled;
use tokio::sync::oneshot;

use crate::commit::Group;
use crate::engine::Engine;
use crate::error::{CoordinatorError, Result};
use crate::job::{JobRecord, JobState, NewJob};
use crate::store::{Write, job_id_for};

/// A lender's decision request, its fields checked for form.
#[derive(Clone, Debug)]
pub(crate) struct DecisionRequest {
    /// What the job will hold; `absent` sorted, no repeats.
    pub(crate) job: NewJob,
    /// The model file, as sent; checked against `job.model_id` here.
    pub(crate) model_toml: String,
}

/// The job a request was accepted as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Accepted {
    /// The job's id.
    pub(crate) job_id: String,
    /// Its state when answered.
    pub(crate) state: JobState,
    /// Whether the request id already named this job (a retry).
    pub(crate) existing: bool,
}

impl Engine {
    /// Accepts `request` as a job and starts it, or answers the job its
    /// request id already names.
    ///
    /// Refused: a request id reused for other content (`ALREADY_EXISTS`), a
    /// key set that is not registered (`FAILED_PRECONDITION`), a model file
    /// too large, malformed or not the model its id names, a model the plan
    /// cannot compile, absent lists naming every party or a stranger
    /// (`INVALID_ARGUMENT`), and a full queue (`RESOURCE_EXHAUSTED`). A
    /// retry is answered even when the queue is full. Nothing is stored for
    /// a refused request.
    pub(crate) async fn decide(self: &Arc<Self>, request: DecisionRequest) -> Result<Accepted> {
        let DecisionRequest { job: new, model_toml } = request;
        if let Some(job) = self.store.job_by_request(&new.request_id)? {
            return existing(job, &new);
        }
        let Some(owner) = self.store.key_owner(&new.key_id)? else {
            return Err(CoordinatorError::Precondition(format!(
                "key set {} is not registered; the lender registers it first (`jointscore lender register`)",
                new.key_id
            )));
        };
        self.check_attestation(&new, &owner)?;
        let plan = Compiled::new(&model_toml, &new.model_id, new.plan)?;
        let parties = plan.party_names().to_vec();
        if new.absent.len() == parties.len() && new.absent.iter().all(|p| parties.contains(p)) {
            return Err(CoordinatorError::Invalid(
                "every party of the model is named absent: no party holds the subject, so there is nothing to decide on"
                    .into(),
            ));
        }
        if let Some(stranger) = new.absent.iter().find(|p| !parties.contains(p)) {
            return Err(CoordinatorError::Invalid(format!(
                "`absent` names `{stranger}`, which is not a party of model {}",
                new.model_id
            )));
        }
        let permit = self.reserve()?;
        self.remember_model(&new.model_id, &model_toml, plan)?;
        let job = JobRecord::accepted(job_id_for(&new.request_id), new.clone());
        // Every member reads the ledger: the subject and the absent list
        // appear only as the lender's commitments.
        let signed = new.lender_request();
        let event = Event {
            kind: EntryKind::DecisionRequest,
            lender: Some(owner),
            subject: Some(signed.subject_commitment()),
            job_id: Some(job.job_id.clone()),
            model_id: Some(new.model_id.clone()),
            key_id: Some(new.key_id.clone()),
            detail: format!("request {}; absent {}", new.request_id, signed.absent_commitment()),
            ..Event::default()
        };
        // The model, the job and its ledger entry in one transaction,
        // durable before the lender is answered. The job asks its parties
        // while that commit waits for the disk; it writes nothing unless
        // the commit succeeds.
        let group = Group::default()
            .write(Write::Model { model_id: new.model_id.clone(), toml: model_toml })
            .write(Write::InsertJob { job_id: job.job_id.clone(), job: new.clone() })
            .event(event);
        let commit = self.commits.submit(group);
        let (stored, was_stored) = oneshot::channel();
        let accepted = Accepted { job_id: job.job_id.clone(), state: job.state, existing: false };
        self.spawn(job, permit, Some(was_stored));
        let committed = commit.wait().await;
        let _ = stored.send(committed.is_ok());
        if let Err(e) = committed {
            // Lost a race with the same request id (nothing was written),
            // or the store failed.
            return match self.store.job_by_request(&new.request_id)? {
                Some(job) => existing(job, &new),
                None => Err(e),
            };
        }
        tracing::info!(job = %accepted.job_id, key_id = %new.key_id, "decision accepted");
        Ok(accepted)
    }
}

impl Engine {
    /// In a consortium, a request is the lender's words: signed by a
    /// current lender, the same lender that registered the key set. (The
    /// parties check the same; checking here first gives the lender a
    /// precise refusal before anything is stored.)
    fn check_attestation(&self, new: &NewJob, owner: &str) -> Result<()> {
        let Some(consortium) = &self.consortium else { return Ok(()) };
        let attestation = &new.attestation;
        let signature = hex::decode(&attestation.signature).unwrap_or_default();
        if signature.is_empty() || attestation.lender.is_empty() {
            return Err(CoordinatorError::Unauthenticated(format!(
                "request {} is not signed: in a consortium a lender signs each request with its identity key",
                new.request_id
            )));
        }
        new.lender_request()
            .verify(consortium, &signature, crate::now_s())
            .map_err(|e| CoordinatorError::Unauthenticated(format!("request {}: {e}", new.request_id)))?;
        if owner == attestation.lender {
            return Ok(());
        }
        Err(CoordinatorError::Denied(format!(
            "key set {} is not registered by `{}`: a lender decides only under its own key sets",
            new.key_id, attestation.lender
        )))
    }
}

/// The job a retried request names, if it asked for the same thing.
fn existing(job: JobRecord, asked: &NewJob) -> Result<Accepted> {
    if !job.request.same_request(asked) {
        return Err(CoordinatorError::Conflict(format!(
            "request id {} (a job for another key set, model, subject, plan or set of absent parties)",
            asked.request_id
        )));
    }
    Ok(Accepted { job_id: job.job_id, state: job.state, existing: true })
}
