//! Conversions between `jointscore.v1` messages and the party's domain
//! types. A refused field is `INVALID_ARGUMENT` naming it.

use jointscore_net::plan_from_wire;
use jointscore_proto::v1 as pb;

use super::contribute::{Contributed, ContributionRequest};
use crate::psi::{OpenRequest, Opened, Purpose};
use crate::error::PartyError;
use crate::store::check_subject;

impl TryFrom<pb::ContributeRequest> for ContributionRequest {
    type Error = PartyError;

    fn try_from(r: pb::ContributeRequest) -> Result<ContributionRequest, PartyError> {
        let plan =
            plan_from_wire(r.plan).ok_or_else(|| PartyError::BadRequest(format!("unknown plan kind {}", r.plan)))?;
        check_subject(&r.subject).map_err(|m| PartyError::BadRequest(format!("`subject`: {m}")))?;
        Ok(ContributionRequest {
            job_id: r.job_id,
            subject: r.subject,
            model_id: r.model_id,
            model_toml: r.model_toml,
            key_id: r.key_id,
            plan,
            absent: r.absent,
        })
    }
}

impl TryFrom<pb::PsiOpenRequest> for OpenRequest {
    type Error = PartyError;

    fn try_from(r: pb::PsiOpenRequest) -> Result<OpenRequest, PartyError> {
        let purpose = match pb::PsiPurpose::try_from(r.purpose) {
            Ok(pb::PsiPurpose::Align) => Purpose::Align,
            Ok(pb::PsiPurpose::Assets) => Purpose::Assets,
            _ => return Err(PartyError::BadRequest(format!("unknown PSI purpose {}", r.purpose))),
        };
        Ok(OpenRequest { requester: r.requester, purpose })
    }
}

impl From<Opened> for pb::PsiSession {
    fn from(o: Opened) -> pb::PsiSession {
        // One answer point per queried item: this responder encodes one
        // point per item of its set.
        pb::PsiSession { session_id: o.session_id, set_len: o.set_len, per_item: 1, expires_in_ms: o.expires_in_ms }
    }
}

impl Contributed {
    /// The header of the stream that carries this contribution; the bytes
    /// follow it in chunks.
    pub(crate) fn header(&self) -> pb::ContributionHeader {
        pb::ContributionHeader {
            party: self.party.clone(),
            len: self.bytes.len() as u64,
            blocks: self.blocks,
            encrypt_us: self.encrypt_us,
            signature: self.signature.clone(),
            signed_ms: self.signed_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> pb::ContributeRequest {
        pb::ContributeRequest {
            job_id: "j".into(),
            subject: "seller-1".into(),
            model_id: "m".into(),
            model_toml: String::new(),
            key_id: "k".into(),
            plan: pb::PlanKind::Pushdown as i32,
            absent: Vec::new(),
        }
    }

    #[test]
    fn a_psi_open_names_a_known_purpose() {
        let r = pb::PsiOpenRequest { requester: "lender".into(), purpose: pb::PsiPurpose::Assets as i32, ..Default::default() };
        assert_eq!(OpenRequest::try_from(r).expect("assets").purpose, Purpose::Assets);
        for purpose in [pb::PsiPurpose::Unspecified as i32, 42] {
            let r = pb::PsiOpenRequest { requester: "lender".into(), purpose, ..Default::default() };
            let err = OpenRequest::try_from(r).expect_err("unknown");
            assert!(err.to_string().contains(&format!("unknown PSI purpose {purpose}")), "{err}");
        }
    }

    #[test]
    fn a_well_formed_request_converts() {
        let converted = ContributionRequest::try_from(request()).expect("well formed");
        assert_eq!(converted.subject, "seller-1");
    }

    #[test]
    fn an_unknown_plan_and_a_bad_subject_are_named() {
        let mut r = request();
        r.plan = 7;
        let err = ContributionRequest::try_from(r).expect_err("plan");
        assert!(err.to_string().contains("unknown plan kind 7"), "{err}");
        let mut r = request();
        r.subject = String::new();
        let err = ContributionRequest::try_from(r).expect_err("subject");
        assert!(matches!(err, PartyError::BadRequest(_)) && err.to_string().contains("`subject`"), "{err}");
    }
}
