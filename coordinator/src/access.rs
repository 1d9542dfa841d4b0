//! Who may act on what, under mutual TLS: a job and a key set are their
//! lender's, a member acts only under its own name, and every refusal of a
//! known member is recorded in the ledger.
//!
//! `caller` is the member a node's TLS layer authenticated, or `None`
//! without mutual TLS, where callers are not authenticated and these rules
//! cannot apply.

use jointscore_audit::{EntryKind, Event};
use jointscore_identity::Role;
use tonic::Code;

use crate::engine::Engine;
use crate::error::{CoordinatorError, Result};
use crate::job::JobRecord;

impl Engine {
    /// Records in the ledger that the member `name` was refused with `code`.
    pub(crate) fn record_refusal(&self, name: &str, code: Code, message: &str) {
        let Some(ledger) = &self.ledger else { return };
        let role = self.tls.as_ref().and_then(|t| t.consortium().member(name).ok()).map(|m| m.role);
        let (lender, parties) = match role {
            Some(Role::Lender) => (Some(name.to_string()), Vec::new()),
            _ => (None, vec![name.to_string()]),
        };
        ledger.record(Event {
            kind: EntryKind::Refusal,
            lender,
            parties,
            detail: format!("{code:?}: {message}"),
            ..Event::default()
        });
    }

    /// A job is its lender's: the member that registered the key set it is
    /// for. Another lender is told the job does not exist (`NOT_FOUND`), so
    /// job ids cannot be probed across lenders.
    pub(crate) fn own_job(&self, caller: Option<&str>, job_id: &str) -> Result<JobRecord> {
        let unknown = || CoordinatorError::UnknownJob(job_id.to_string());
        let job = self.store.job(job_id)?.ok_or_else(unknown)?;
        if let Some(caller) = caller
            && self.store.key_owner(&job.request.key_id)?.as_deref() != Some(caller)
        {
            return Err(unknown());
        }
        Ok(job)
    }

    /// Only the lender that registered a key set asks for decisions under
    /// it or registers it again.
    pub(crate) fn own_key_set(&self, caller: Option<&str>, key_id: &str) -> Result<()> {
        let Some(caller) = caller else { return Ok(()) };
        match self.store.key_owner(key_id)? {
            Some(owner) if owner != caller => {
                let message = format!("key set {key_id} was registered by another lender, not `{caller}`");
                self.record_refusal(caller, Code::PermissionDenied, &message);
                Err(CoordinatorError::Denied(message))
            }
            _ => Ok(()),
        }
    }

    /// Refuses a request whose `what` names another member than the
    /// authenticated `caller`, recording the refusal.
    pub(crate) fn same_member(&self, caller: Option<&str>, what: &str, named: &str) -> Result<()> {
        match caller {
            Some(caller) if caller != named => {
                let error = CoordinatorError::Denied(format!(
                    "the {what} `{}` is not the caller `{caller}`: a member acts only under its own name",
                    named.chars().take(128).collect::<String>()
                ));
                self.record_refusal(caller, Code::PermissionDenied, &error.to_string());
                Err(error)
            }
            _ => Ok(()),
        }
    }
}
