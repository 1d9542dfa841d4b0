//! The alerts a lender reports for its monitoring jobs, into the ledger.
//! The coordinator evaluates monitoring jobs on ciphertexts and cannot know
//! which alerts a result raised; the lender decrypts and reports them,
//! signed, so that every round's alerts are in the ledger as the lender's
//! word, under the subject's commitment.

use jointscore_audit::{Attestation, EntryKind, Event};
use jointscore_circuits::PlanKind;
use jointscore_identity::{ALERT_REPORT_DOMAIN, AlertReport, Role};
use jointscore_monitor::Compiled;

use crate::engine::Engine;
use crate::error::{CoordinatorError, Result};
use crate::job::JobState;

impl Engine {
    /// Records `report` (signed by `signature`) for the caller's job.
    ///
    /// Refused: a job that is not the caller's (`NOT_FOUND`), not a
    /// monitoring job, not done, or named under another lender
    /// (`FAILED_PRECONDITION` / `PERMISSION_DENIED`); no alert, or one its
    /// spec does not have (`INVALID_ARGUMENT`); in a consortium, a report
    /// the lender did not sign (`UNAUTHENTICATED`).
    pub(crate) async fn record_alerts(
        &self,
        caller: Option<&str>,
        report: AlertReport,
        signature: Vec<u8>,
    ) -> Result<()> {
        let job = self.own_job(caller, &report.job_id)?;
        if job.request.plan != PlanKind::Monitor {
            return Err(CoordinatorError::Precondition(format!("job {} is not a monitoring job", job.job_id)));
        }
        if job.state != JobState::Done {
            return Err(CoordinatorError::Precondition(format!("job {} has no result yet", job.job_id)));
        }
        let owner = self.store.key_owner(&job.request.key_id)?.unwrap_or_default();
        if let Some(caller) = caller
            && caller != report.lender
        {
            return Err(CoordinatorError::Denied(format!("`{caller}` reports alerts as `{}`", report.lender)));
        }
        let plan = self.plan(&job.request.model_id, PlanKind::Monitor)?;
        let Compiled::Monitor(plan) = &*plan else {
            return Err(CoordinatorError::Precondition(format!("job {} is not a monitoring job", job.job_id)));
        };
        let alerts = report.canonical_alerts();
        if alerts.is_empty() {
            return Err(CoordinatorError::Invalid("an alert report names at least one alert".into()));
        }
        if let Some(unknown) = alerts.iter().find(|a| !plan.alert_plan().alerts().contains(a)) {
            return Err(CoordinatorError::Invalid(format!(
                "`{}` is not an alert of monitor spec {}",
                unknown.chars().take(64).collect::<String>(),
                plan.id()
            )));
        }
        let mut attestations = Vec::new();
        if let Some(consortium) = &self.consortium {
            report
                .verify(consortium, &signature, crate::now_s())
                .map_err(|e| CoordinatorError::Unauthenticated(format!("alert report for job {}: {e}", job.job_id)))?;
            attestations.push(Attestation {
                node: report.lender.clone(),
                role: Role::Lender,
                domain: ALERT_REPORT_DOMAIN.into(),
                message: hex::encode(report.to_bytes()),
                signature: hex::encode(&signature),
            });
        }
        let Some(ledger) = &self.ledger else { return Ok(()) };
        ledger
            .append(Event {
                kind: EntryKind::Alert,
                lender: Some(owner),
                subject: Some(job.request.lender_request().subject_commitment()),
                job_id: Some(job.job_id.clone()),
                model_id: Some(job.request.model_id.clone()),
                key_id: Some(job.request.key_id.clone()),
                detail: format!("alerts {}", alerts.join(", ")),
                attestations,
                ..Event::default()
            })
            .await
    }
}
