//! Conversions between `jointscore.v1` messages and the coordinator's
//! domain types: the only place, beside the RPC handlers, that names a
//! protobuf type.
//!
//! Requests convert with `TryFrom`, checking the form of every field (not
//! empty, at most [`FIELD_LIMIT`] bytes, no control characters, known enum
//! values); a refusal is `INVALID_ARGUMENT` naming the field. What the
//! fields mean (is the key set registered, is the model the one its id
//! names) is the domain's to check.

use jointscore_net::{plan_from_wire, plan_to_wire};
use jointscore_proto::v1 as pb;

use crate::decisions::{Accepted, DecisionRequest};
use crate::error::{CoordinatorError, Result};
use jointscore_identity::{SALT_BYTES, SIGNATURE_BYTES};

use crate::job::{Attestation, JobRecord, JobState, NewJob, NewStatsJob, StatsJobRecord};

/// Longest id, name or address accepted in a request field, in bytes.
pub(crate) const FIELD_LIMIT: usize = 256;

/// `value`, if it is a well-formed `name` field.
pub(crate) fn field<'a>(name: &str, value: &'a str) -> Result<&'a str> {
    if value.is_empty() {
        return Err(CoordinatorError::Invalid(format!("`{name}` is empty")));
    }
    if value.len() > FIELD_LIMIT {
        return Err(CoordinatorError::Invalid(format!("`{name}` is longer than {FIELD_LIMIT} bytes")));
    }
    if value.chars().any(char::is_control) {
        return Err(CoordinatorError::Invalid(format!("`{name}` holds control characters")));
    }
    Ok(value)
}

impl TryFrom<pb::DecideRequest> for DecisionRequest {
    type Error = CoordinatorError;

    fn try_from(r: pb::DecideRequest) -> Result<DecisionRequest> {
        field("request_id", &r.request_id)?;
        field("subject", &r.subject)?;
        field("key_id", &r.key_id)?;
        let plan =
            plan_from_wire(r.plan).ok_or_else(|| CoordinatorError::Invalid(format!("unknown plan {}", r.plan)))?;
        let mut absent = r.absent;
        for name in &absent {
            field("absent", name)?;
        }
        absent.sort();
        absent.dedup();
        if r.salt.len() != 2 * SALT_BYTES || hex::decode(&r.salt).is_err() {
            return Err(CoordinatorError::Invalid(format!(
                "`salt` must be {} hex digits (a fresh random salt per request)",
                2 * SALT_BYTES
            )));
        }
        if !r.signature.is_empty() && r.signature.len() != SIGNATURE_BYTES {
            return Err(CoordinatorError::Invalid(format!("`signature` must be {SIGNATURE_BYTES} bytes")));
        }
        if !r.lender.is_empty() {
            field("lender", &r.lender)?;
        }
        let attestation =
            Attestation { lender: r.lender, time_ms: r.time_ms, salt: r.salt, signature: hex::encode(&r.signature) };
        let job = NewJob {
            request_id: r.request_id,
            key_id: r.key_id,
            model_id: r.model_id,
            subject: r.subject,
            plan,
            absent,
            attestation,
        };
        Ok(DecisionRequest { job, model_toml: r.model_toml })
    }
}

/// A statistics request from `owner` (the authenticated lender, if any).
pub(crate) fn stats_request(r: pb::RunStatsRequest, owner: Option<String>) -> Result<NewStatsJob> {
    field("request_id", &r.request_id)?;
    Ok(NewStatsJob { request_id: r.request_id, spec_id: r.spec_id, spec_toml: r.spec_toml, owner })
}

/// A party's registration: its name and the http(s) URL it serves on.
pub(crate) fn party_registration(r: pb::RegisterPartyRequest) -> Result<(String, String)> {
    field("name", &r.name)?;
    field("address", &r.address)?;
    if !r.address.starts_with("http://") && !r.address.starts_with("https://") {
        return Err(CoordinatorError::Invalid(format!("party address `{}` is not an http(s) URL", r.address)));
    }
    Ok((r.name, r.address))
}

/// The wire value of a job state.
pub(crate) fn state_to_wire(state: JobState) -> i32 {
    (match state {
        JobState::Accepted => pb::JobState::Accepted,
        JobState::Collecting => pb::JobState::Collecting,
        JobState::Evaluating => pb::JobState::Evaluating,
        JobState::Done => pb::JobState::Done,
        JobState::Failed => pb::JobState::Failed,
    }) as i32
}

impl From<Accepted> for pb::DecideResponse {
    fn from(a: Accepted) -> pb::DecideResponse {
        pb::DecideResponse { job_id: a.job_id, state: state_to_wire(a.state), existing: a.existing }
    }
}

impl From<&JobRecord> for pb::Job {
    fn from(job: &JobRecord) -> pb::Job {
        pb::Job {
            job_id: job.job_id.clone(),
            request_id: job.request.request_id.clone(),
            key_id: job.request.key_id.clone(),
            model_id: job.request.model_id.clone(),
            subject: job.request.subject.clone(),
            plan: plan_to_wire(job.request.plan),
            state: state_to_wire(job.state),
            code: job.code,
            reason: job.reason.clone(),
            timings: Some(pb::Timings {
                collect_us: job.timings.collect_us,
                party_encrypt_us: job.timings.party_encrypt_us,
                evaluate_us: job.timings.evaluate_us,
                pbs: job.timings.pbs,
                contribution_bytes: job.timings.contribution_bytes,
                verify_us: job.timings.verify_us,
            }),
            result_bytes: job.result_bytes,
            absent: job.request.absent.clone(),
            contributions: job
                .contributions
                .iter()
                .map(|c| pb::SignedContribution {
                    party: c.party.clone(),
                    ciphertext_sha256: c.ciphertext_sha256.clone(),
                    signed_ms: c.signed_ms,
                    // Written by this coordinator as hex; an unreadable one
                    // is sent empty and fails the lender's check, loudly.
                    signature: hex::decode(&c.signature).unwrap_or_default(),
                    consent: c.consent.clone(),
                })
                .collect(),
            salt: job.request.attestation.salt.clone(),
        }
    }
}

impl From<&StatsJobRecord> for pb::StatsJob {
    fn from(job: &StatsJobRecord) -> pb::StatsJob {
        pb::StatsJob {
            job_id: job.job_id.clone(),
            request_id: job.request.request_id.clone(),
            spec_id: job.request.spec_id.clone(),
            state: state_to_wire(job.state),
            code: job.code,
            reason: job.reason.clone(),
            entries: job
                .outcome
                .entries
                .iter()
                .map(|e| pb::StatsEntry { label: e.label.clone(), value: e.value })
                .collect(),
            included: job.outcome.included.clone(),
            dropped: job
                .outcome
                .dropped
                .iter()
                .map(|d| pb::DroppedParty { party: d.party.clone(), step: d.step.clone(), reason: d.reason.clone() })
                .collect(),
            round_us: job.outcome.round_us,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> pb::DecideRequest {
        pb::DecideRequest {
            request_id: "r-1".into(),
            key_id: "k".into(),
            model_id: "m".into(),
            model_toml: String::new(),
            subject: "seller-1".into(),
            plan: pb::PlanKind::Pushdown as i32,
            absent: vec!["bank".into(), "bank".into(), "a".into()],
            lender: "lender".into(),
            time_ms: 1,
            salt: "ab".repeat(32),
            signature: vec![],
        }
    }

    #[test]
    fn a_decide_request_converts_with_absent_sorted_once() {
        let converted = DecisionRequest::try_from(request()).expect("well formed");
        assert_eq!(converted.job.absent, ["a", "bank"]);
        assert_eq!(converted.job.subject, "seller-1");
    }

    #[test]
    fn a_bad_field_is_named() {
        for (name, edit) in [
            ("request_id", Box::new(|r: &mut pb::DecideRequest| r.request_id.clear()) as Box<dyn Fn(&mut _)>),
            ("subject", Box::new(|r: &mut pb::DecideRequest| r.subject = "x".repeat(FIELD_LIMIT + 1))),
            ("key_id", Box::new(|r: &mut pb::DecideRequest| r.key_id = "a\nb".into())),
            ("absent", Box::new(|r: &mut pb::DecideRequest| r.absent.push(String::new()))),
        ] {
            let mut r = request();
            edit(&mut r);
            let err = DecisionRequest::try_from(r).expect_err(name);
            assert!(matches!(err, CoordinatorError::Invalid(_)), "{err}");
            assert!(err.to_string().contains(&format!("`{name}`")), "{name}: {err}");
        }
        for (says, edit) in [
            ("`salt`", Box::new(|r: &mut pb::DecideRequest| r.salt = "ab".into()) as Box<dyn Fn(&mut _)>),
            ("`salt`", Box::new(|r: &mut pb::DecideRequest| r.salt = "zz".repeat(32))),
            ("`signature`", Box::new(|r: &mut pb::DecideRequest| r.signature = vec![1; 63])),
            ("`lender`", Box::new(|r: &mut pb::DecideRequest| r.lender = "a\u{7}".into())),
        ] {
            let mut r = request();
            edit(&mut r);
            let err = DecisionRequest::try_from(r).expect_err(says);
            assert!(err.to_string().contains(says), "{says}: {err}");
        }
        let mut r = request();
        r.plan = 99;
        assert!(DecisionRequest::try_from(r).expect_err("plan").to_string().contains("unknown plan 99"));
    }

    #[test]
    fn a_party_address_must_be_a_url() {
        let r = pb::RegisterPartyRequest { name: "bank".into(), address: "127.0.0.1:1".into() };
        assert!(party_registration(r).expect_err("no scheme").to_string().contains("http(s) URL"));
        let r = pb::RegisterPartyRequest { name: "bank".into(), address: "https://127.0.0.1:1".into() };
        assert_eq!(party_registration(r).expect("url").0, "bank");
    }
}
